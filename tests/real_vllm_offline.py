"""Run in the vLLM venv by tests/backends/test_real_vllm_offline.py: pixscribe's VLLMBackend (one
in-process ``vllm.LLM``) on a tiny Qwen-VL, through several request mixes, printing one JSON
object of what came back. Not collected by pytest (no test_ prefix).

    python tests/real_vllm_offline.py MODEL_DIR MAX_PIXELS PHOTO_DIR   # PHOTO_DIR/<name>.jpg of PHOTOS
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict

from pixscribe.backends.base import GenerationRequest, Sampling
from pixscribe.backends.vllm_backend import VLLMBackend
from pixscribe.testing.vllm import ANIMAL_SCHEMA as SCHEMA
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # 512x512, 600x400, 451x300, 427x640


def res(r) -> dict:
    d = asdict(r)
    d.pop("parsed", None)
    d["parsed"] = r.parsed
    return d


def main() -> None:
    model, max_pixels, photos = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    b = VLLMBackend(model, max_pixels=max_pixels, dtype="fp32", images_per_prompt=2, engine_kwargs={
        "enforce_eager": True, "max_model_len": 2048,
        # random weights pad constrained JSON with whitespace until the limit; real models do not
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}})
    out: dict = {"engine_kwargs": {k: v for k, v in b.engine_kwargs().items() if k != "model"}}
    imgs = {n: Image.open(f"{photos}/{n}.jpg").convert("RGB") for n in PHOTOS}
    short = Sampling(max_new_tokens=8)
    # a batch mixing image sizes, a two-image request and a text-only one
    batch = [GenerationRequest.simple("Describe.", [imgs[n]], sampling=short) for n in PHOTOS]
    batch.append(GenerationRequest.simple("Compare.", [imgs["coffee"], imgs["chelsea"]], sampling=short))
    batch.append(GenerationRequest.simple("Rewrite: a cat on a mat.", sampling=short))
    out["mixed"] = [res(r) for r in b.generate(batch)]
    out["sent_sizes"] = [[img.size for img in _sent(b, r)] for r in batch]
    out["schema"] = [res(r) for r in b.generate([
        GenerationRequest.simple("Which animal?", [imgs["chelsea"]], json_schema=SCHEMA,
                                 sampling=Sampling(max_new_tokens=40)),
        GenerationRequest.simple("Which animal?", json_schema=SCHEMA, sampling=Sampling(max_new_tokens=40)),
        GenerationRequest.simple("Which animal?", json_schema=SCHEMA, sampling=Sampling(max_new_tokens=3)),
        GenerationRequest.simple("Describe a cat at length.", sampling=Sampling(max_new_tokens=2)),
    ])]
    # two batches from two threads at once (as the pipeline keeps them in flight)
    got: dict = {}

    def one(k: int) -> None:
        got[k] = [res(r) for r in b.generate([GenerationRequest.simple(f"Describe {k}.", [imgs[PHOTOS[k]]],
                                                                        sampling=short) for _ in range(3)])]

    threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["threads"] = [got[0], got[1]]
    out["overlaps"] = b._driver.overlaps if b._driver else None
    out["loops"] = _loops(b, imgs)
    out["describe"] = b.describe()
    print("RESULT " + json.dumps(out))


def _loops(b: VLLMBackend, imgs: dict) -> dict:
    """The loop guard on the offline engine: the same greedy requests with and without the
    penalty (random weights loop by themselves), and a recap stage's rows and counters."""
    from pixscribe.backends.loops import find_loop, with_penalty
    from pixscribe.stages.generate import GenerateStage
    from pixscribe.record import Record

    long = Sampling(max_new_tokens=64)
    plain = [GenerationRequest.simple("Describe.", [imgs[n]], sampling=long) for n in PHOTOS]
    both = b.generate(plain + [with_penalty(q) for q in plain])
    stage = GenerateStage("recap", b, {"prompt": "Describe.", "max_new_tokens": 64}, provides="re_caption")
    recs = stage([Record(source=n, id=n, image=imgs[n]) for n in PHOTOS])
    return {"plain": [r.text for r in both[:4]], "penalised": [r.text for r in both[4:]],
            "plain_loops": [find_loop(r.text, r.truncated) is not None for r in both[:4]],
            "rows": [{"error": r.error, "provenance": r.provenance, "text": r.fields.get("re_caption")}
                     for r in recs], "summary": stage.summary()}


def _sent(b: VLLMBackend, req: GenerationRequest) -> list:
    from pixscribe.backends.vllm_backend import to_vllm_messages

    return [p["image_pil"] for m in to_vllm_messages(req, b.max_pixels, b.max_side) if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image_pil"]


if __name__ == "__main__":
    main()
