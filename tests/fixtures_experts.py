"""Session fixture: tiny random-weight vision experts of the real architectures, built once."""

import pytest


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory):
    """name -> local directory (owlv2, grounding_dino, sam, depth_anything, dpt, florence2)."""
    from pixscribe.testing.tiny_experts import build_tiny_experts

    return build_tiny_experts(tmp_path_factory.mktemp("tiny_experts"))
