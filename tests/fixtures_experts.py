"""Session fixture: tiny random-weight vision experts of the real architectures, built once."""

import pytest


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory):
    """name -> local directory (owlv2, grounding_dino, sam, depth_anything, dpt, florence2)."""
    from pixscribe.testing.tiny_experts import build_tiny_experts

    return build_tiny_experts(tmp_path_factory.mktemp("tiny_experts"))


def textualize_experts(tiny_experts: dict) -> dict:
    """The config of textualize's experts on the tiny models (Florence-2 with fixed regions,
    SAM, Depth Anything, Grounding DINO, OWLv2), on the CPU."""
    return {
        "expert_models": {"dense": str(tiny_experts["florence2_regions"]), "sam": str(tiny_experts["sam"]),
                          "depth": str(tiny_experts["depth_anything"]),
                          "grounding_dino": str(tiny_experts["grounding_dino"]), "owlv2": str(tiny_experts["owlv2"])},
        "expert_options": {"dense": {"num_beams": 1, "max_new_tokens": 24}},
        "device": "cpu",
    }
