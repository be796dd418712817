"""What two batches in flight buy the vLLM offline engine (``--backend vllm``): one run, one engine.

Run it with the vLLM venv's python (``dev/vllm-venv``)::

    $PIXSCRIBE_VLLM_PYTHON bench/vllm_offline.py [--batches 6 --batch 16 --side 1000 --tokens 64]

A tiny Qwen2.5-VL (``pixscribe.testing.tiny``, built on the spot) with the real Qwen2.5-VL
processor; batches of ~1 MP images, every reply forced to ``--tokens`` tokens (``ignore_eos``).
vLLM renders each prompt (chat template, image processor) on the caller's thread, then the
engine core (its own process) runs the model. Two passes over different images (vLLM caches
processor outputs by image content):

- ``blocking``: one ``LLM.chat`` per batch, batches one after another (pixscribe before this
  change; the engine idles while the next batch is rendered);
- ``overlapped``: two batches in flight from two threads, as the pipeline runs them
  (``max_inflight_batches = 2``: ``enqueue_chat`` renders the next batch while the engine runs).

It prints img/s of each pass, their ratio and the render time per image on the caller's
thread. A model-busy fraction is not printed: the way to get the model's own time (the same
images again, processor cache hits, prefix caching off) gave fractions above 1 on a loaded
2-core box, where passes a minute apart see different loads. CPU figures from a tiny model: the
ratio of render to model time is nothing like a GPU's; what carries over is that rendering
overlaps the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import tempfile
import threading
import time

for k, v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1",
             "VLLM_NO_USAGE_STATS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(k, v)


def images(n: int, side: int, seed: int) -> list:
    """Distinct photo-sized images (the processor cache is keyed by content), sizes varying."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = side + 8 * (i % 5), side - 8 * (i % 3)
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        out.append(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR))
    return out


def run_pass(backend, batches: list[list], threads: int) -> float:
    work: "queue.Queue" = queue.Queue()
    for b in batches:
        work.put(b)

    def worker() -> None:
        while True:
            try:
                reqs = work.get_nowait()
            except queue.Empty:
                return
            res = backend.generate(reqs)
            bad = [r.error for r in res if not r.ok]
            assert not bad, bad[:2]

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--side", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--model-dir", default=None)
    a = ap.parse_args()

    from pixscribe.backends import vllm_backend as vb
    from pixscribe.backends.base import GenerationRequest, Sampling
    from pixscribe.testing.tiny import build_tiny_qwen2_5_vl

    model = a.model_dir or str(build_tiny_qwen2_5_vl(tempfile.mkdtemp(prefix="pixscribe-bench-")))
    plain = vb.sampling_params

    def fixed_length(vllm, req):  # every reply exactly --tokens long
        sp = plain(vllm, req)
        sp.ignore_eos = True
        sp.min_tokens = req.sampling.max_new_tokens
        return sp

    vb.sampling_params = fixed_length
    backend = vb.VLLMBackend(model, max_pixels=a.side * a.side + 50_000, dtype="fp32",
                             engine_kwargs={"enforce_eager": True, "max_model_len": 2048})
    t0 = time.perf_counter()
    backend.check()
    startup = time.perf_counter() - t0
    s = Sampling(max_new_tokens=a.tokens)

    def batches(seed: int) -> list[list]:
        imgs = images(a.batches * a.batch, a.side, seed)
        return [[GenerationRequest.simple("Describe.", [im], sampling=s) for im in imgs[i:i + a.batch]]
                for i in range(0, len(imgs), a.batch)]

    run_pass(backend, batches(0)[:1], 1)  # warm-up
    driver = backend._driver
    fig: dict = {"startup_s": round(startup, 1), "images": a.batches * a.batch, "batch": a.batch,
                 "side": a.side, "tokens": a.tokens, "cpus": os.cpu_count()}
    driver.overlaps = False
    t_block = run_pass(backend, batches(1), 1)
    driver.overlaps = True
    render = []
    enqueue = driver._enqueue

    def timed(convs, params):
        t = time.perf_counter()
        try:
            return enqueue(convs, params)
        finally:
            render.append((time.perf_counter() - t) / len(convs))

    driver._enqueue = timed
    over = batches(2)
    t_over = run_pass(backend, over, 2)
    driver._enqueue = enqueue
    n = fig["images"]
    fig.update({
        "blocking_img_s": round(n / t_block, 2), "overlapped_img_s": round(n / t_over, 2),
        "overlapped_over_blocking": round(t_block / t_over, 3),
        "render_ms_per_image": round(1000 * sum(render) / len(render), 1),
    })
    print(f"vLLM offline, tiny Qwen2.5-VL on CPU, {n} images of ~{a.side}x{a.side} in batches of {a.batch}, "
          f"{a.tokens} tokens each")
    print(f"  blocking   (LLM.chat per batch)      {fig['blocking_img_s']:7.2f} img/s")
    print(f"  overlapped (2 batches in flight)     {fig['overlapped_img_s']:7.2f} img/s  x{fig['overlapped_over_blocking']:.2f}")
    print(f"  render on the caller's thread        {fig['render_ms_per_image']:7.1f} ms/image")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
