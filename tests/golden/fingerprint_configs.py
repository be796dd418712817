"""Configurations whose stage fingerprints must never change (tests/engine/test_fingerprint_stability.py).

``python tests/golden/fingerprint_configs.py > tests/golden/fingerprints.json`` wrote the
golden file with the code of c44a9c2 (main before issue 24's redesign, importing
``build_method`` from ``pixscribe.engine.stage`` there); run it again only to add
configurations, never to change a value. Main's 887eef9 changed region's default on purpose
(own_attribute on unless --task is given; runs made before resume with --task dense): the four
region values without a task are that commit's, computed with its own code. Building a method
loads no model.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"
SERVED = dict(backend="openai", base_url=["http://127.0.0.1:9/v1"], vlm="served")


def configs(tipcap_dir: str) -> dict[str, dict]:
    tip = dict(method="tipcap", stages={"tipcap": {"model": tipcap_dir}})
    return {
        "recap": dict(method="recap"),
        "recap_openai": dict(method="recap", **SERVED),
        "recap_prompt": dict(method="recap", prompt="Say it.", max_new_tokens=64, temperature=0.7, top_p=0.9),
        "recap_stage_option": dict(method="recap", stages={"recap": {"temperature": 0, "max_new_tokens": 77}}),
        "recap_revision_fp16": dict(method="recap", revision="abc", dtype="fp16", device="cpu"),
        "experts": dict(method="experts"),
        "lite": dict(method="experts", profile="lite"),
        "experts_some": dict(method="experts", experts=["stats", "faces", "ocr"]),
        "experts_queries": dict(method="experts", experts=["grounding_dino", "sam"], queries=["cat", "dog"]),
        "experts_full": dict(method="experts", profile="full", vlm=QWEN),
        "experts_full_prompt": dict(method="experts", profile="full", prompt="Short.", **SERVED),
        "textualize": dict(method="textualize", vlm=QWEN),
        "textualize_nouns": dict(method="textualize", stages={"objects": {"extractor": "nouns"}}),
        "textualize_llm": dict(method="textualize", vlm=QWEN, llm="Qwen/Qwen3-8B"),
        "textualize_flags": dict(method="textualize", vlm=QWEN, stages={
            "describe": {"prompt": "Say."}, "objects": {"max_phrases": 8},
            "verify": {"mode": "consensus", "box_threshold": 0.3, "text_threshold": 0.2},
            "rewrite": {"max_objects": 5, "max_new_tokens": 512}}),
        "textualize_column": dict(method="textualize", vlm=QWEN, stages={"describe": {"column": "caption"}}),
        "textualize_ocr": dict(method="textualize", vlm=QWEN, experts=["ocr"], prompt="Describe it."),
        "panoptic": dict(method="panoptic", vlm=QWEN),
        "panoptic_openai": dict(method="panoptic", **SERVED),
        "panoptic_official": dict(method="panoptic", vlm=QWEN, stages={"caption": {"prompt_set": "official"}}),
        "panoptic_structured": dict(method="panoptic", vlm=QWEN, stages={"caption": {"structured": True}}),
        "panoptic_experts": dict(method="panoptic", vlm=QWEN, stages={"caption": {"entities": "experts"}}),
        "panoptic_experts_vlm_tagger": dict(method="panoptic", vlm=QWEN, stages={
            "caption": {"entities": "experts"}, "proposals": {"task": "<REGION_PROPOSAL>"},
            "redetect": {"detectors": ["grounding_dino", "owlv2"], "box_threshold": {"owlv2": 0.2}}}),
        "panoptic_consistency": dict(method="panoptic", vlm=QWEN, models={"consistency": {"model": "judge"}}),
        "panoptic_options": dict(method="panoptic", vlm=QWEN, max_new_tokens=2048, stages={
            "localize": {"pad": False, "retry_max_new_tokens": 4096}, "tag": {"preamble": "Look."}}),
        "region": dict(method="region", vlm=QWEN),
        "region_box": dict(method="region", vlm=QWEN, stages={"region": {"prompt_mode": "box"}}),
        "region_flags": dict(method="region", vlm=QWEN, stages={"region": {
            "prompt_mode": "som", "task": "attribute", "attribute": "color", "outline": False,
            "box_to_mask": "sam", "regions": "objects", "requests_per_call": 8}}),
        "region_auto": dict(method="region", vlm=QWEN, stages={"region": {"regions": "auto"}}),
        "region_auto_gdino": dict(method="region", vlm=QWEN, queries=["cat"], stages={
            "region": {"regions": "auto", "propose": "grounding_dino", "max_regions": 5}}),
        "region_global": dict(method="region", **SERVED, stages={"region": {"task": "global", "dim": 0.5}}),
        "tipcap": tip,
        "tipcap_column": {**tip, "stages": {"tipcap": {"model": tipcap_dir, "prompt_column": "tags",
                                                       "num_beams": 3}}},
        "tipcap_experts": {**tip, "stages": {"tipcap": {"model": tipcap_dir, "prompt_experts": "dense"}}},
    }


def tipcap_model(d: Path) -> str:
    """A TIPCap model directory with fixed contents (its identity hashes them)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "tipcap.json").write_text(json.dumps({"setting": "text", "clip_dim": 8}))
    (d / "tipcap.safetensors").write_bytes(b"fixed weights for the fingerprint test")
    return str(d)


def fingerprints(tmp: Path) -> dict[str, dict[str, str]]:
    from pixscribe.config import RunConfig
    from pixscribe.engine.context import build_method
    from pixscribe.engine.run import image_options

    out = {}
    for name, kw in configs(tipcap_model(tmp / "tipcap")).items():
        cfg = RunConfig(inputs=["x"], output=str(tmp / "out"), **kw)
        out[name] = build_method(cfg.method, cfg).with_fingerprints(image_options(cfg)).fingerprints
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as t:
        json.dump(fingerprints(Path(t)), sys.stdout, indent=1, sort_keys=True)
        print()
