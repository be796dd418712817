"""P2 with the real processor: is the model busy while the next batches are prepared?

The real engine (Runner, recap method), the real TransformersBackend and the real processors
of Qwen2.5-VL and Qwen3-VL (the tiny models of pixscribe.testing.tiny carry the real
checkpoints' processor settings: dynamic resolution within the pixel budget, patchify, merge),
on ~1 MP JPEGs, batch 16. Only the model's ``generate`` is replaced: it sleeps a fixed time per
batch (1 s and 0.5 s by default) and answers one EOS token per row.

BEFORE: ``prepare_workers=0`` (the processor runs on the model's thread, right before
generate: today's path). AFTER: ``prepare_workers=W`` (worker processes prepare the next
batches while one generates). Both in one run, on the same images.

busy = time inside the sleeping generate / wall time, both after warm-up. Warm-up is
everything up to the end of the first generate (the first batch cannot overlap anything);
the window runs from the end of the first generate to the end of the last one, and holds
every other generate whole, so busy = sum of their durations / the window. 1.0 means the
model never waited for its inputs. img/s is the rows of those batches / the window.

cpu/batch: the CPU seconds the run used per batch (this process with all its threads, plus
the prepare workers, from getrusage and /proc), a figure a loaded machine does not distort:
on C idle cores the work fits the model's time per batch only if cpu/batch < C x sleep.

Also printed: the processor's ms per image on one thread (the whole encode of batches of 16:
chat template, image processor, tokenizer), with the fast (torchvision) and the slow (PIL)
image processor.

    python bench/p2_processor.py [--batches 11] [--batch-size 16] [--latencies 1.0 0.5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _util import generate_jpegs  # noqa: E402

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
SIZE = (1152, 864)  # 995,328 px: ~1 MP, within the default 1,000,000 budget


def processor_ms(model_dir: Path, images: list, batch: int, backend: str | None) -> tuple[str, float, float]:
    """(image processor class, CPU ms per image, wall ms per image) of the whole encode on one
    thread. CPU time (this thread's clock) is what a loaded machine does not inflate."""
    import torch

    from pixscribe.backends import GenerationRequest
    from pixscribe.backends.hf_inputs import Encoder, ProcessorSpec

    enc = Encoder.load(ProcessorSpec(str(model_dir), image_backend=backend))
    reqs = [GenerationRequest.simple("Please describe this image in detail.", [im]) for im in images]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc.encode(reqs[:batch], max_pixels=1_000_000)  # warm up
        t0, c0 = time.perf_counter(), time.thread_time()
        for k in range(0, len(reqs), batch):
            enc.encode(reqs[k: k + batch], max_pixels=1_000_000)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    finally:
        torch.set_num_threads(threads)
    return type(enc.processor.image_processor).__name__, 1000 * cpu / len(reqs), 1000 * wall / len(reqs)


class SleepingGenerate:
    """Stands in for ``hf_model.generate``: sleeps ``latency`` per batch, answers EOS."""

    def __init__(self, eos: int):
        self.eos, self.latency, self.spans = eos, 1.0, []

    def __call__(self, **kw):
        import torch

        t0 = time.perf_counter()
        time.sleep(self.latency)
        self.spans.append((t0, time.perf_counter()))
        ids = kw["input_ids"]
        return torch.cat([ids, torch.full((ids.shape[0], 1), self.eos, dtype=ids.dtype)], dim=1)


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of this process (every thread) and of ``pids`` (the prepare workers) so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    total = ru.ru_utime + ru.ru_stime
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def busy_run(backend, fake: SleepingGenerate, inp: Path, out: Path, batch: int, latency: float,
             decode_workers: int) -> dict:
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner
    from pixscribe.testing.methods import method_with

    shutil.rmtree(out, ignore_errors=True)
    fake.latency, fake.spans = latency, []
    cfg = RunConfig(inputs=[str(inp)], output=str(out), progress=False, batch_size=batch, vlm=backend.model,
                    device="cpu", dtype="fp32", decode_workers=decode_workers, prepare_workers=backend.prepare_workers)
    pids = backend.pool.pids() if backend.pool is not None else []
    cpu0 = cpu_seconds(pids)
    s = Runner(cfg, method_with(cfg, backend)).run()
    cpu = cpu_seconds(pids) - cpu0
    assert s.error_rows == 0 and s.rows_written == len(list(inp.glob("*.jpg"))), s.to_dict()
    spans = sorted(fake.spans)
    window = spans[-1][1] - spans[0][1]
    inside = sum(b - a for a, b in spans[1:])
    return {"busy": inside / window, "img_s": batch * (len(spans) - 1) / window, "batches": len(spans),
            "busy_whole_run": sum(b - a for a, b in spans) / s.seconds, "cpu_per_batch": cpu / len(spans)}


def family_rows(name: str, model_dir: Path, inp: Path, work: Path, a: argparse.Namespace) -> list[dict]:
    from pixscribe.backends.transformers_backend import TransformersBackend

    rows = []
    for workers in (0, a.workers):
        be = TransformersBackend(str(model_dir), device="cpu", dtype="fp32", prepare_workers=workers).load()
        fake = SleepingGenerate(be.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        be.hf_model.generate = fake
        try:
            for latency in a.latencies:
                r = busy_run(be, fake, inp, work / "out", a.batch_size, latency, a.decode_workers)
                rows.append({"family": name, "sleep_s": latency, "prepare_workers": workers, **r})
        finally:
            be.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=11, help="batches per run (the first is warm-up)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--latencies", type=float, nargs="+", default=[1.0, 0.5], help="sleep per batch, seconds")
    ap.add_argument("--workers", type=int, default=2, help="prepare workers AFTER")
    ap.add_argument("--decode-workers", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pixscribe-bench" / "p2proc")
    a = ap.parse_args()
    from PIL import Image

    from pixscribe.imaging import decode
    from pixscribe.testing.tiny import QWEN_VL_BUILDERS

    n = a.batches * a.batch_size
    inp = a.data / f"jpegs-{n}"
    files = generate_jpegs(inp, n, SIZE)
    models = {f: QWEN_VL_BUILDERS[f](a.data / "tiny") for f in a.families}
    print(f"P2 with the real processor: {n} JPEGs of {SIZE[0]}x{SIZE[1]}, batch {a.batch_size}, "
          f"{a.decode_workers} decode threads, AFTER = {a.workers} prepare workers, {os.cpu_count()} CPUs")
    images = [decode(p.read_bytes(), max_pixels=1_000_000).image for p in files[:32]]
    assert all(isinstance(im, Image.Image) for im in images)
    print("processor ms per image, one thread (chat template + image processor + tokenizer, batches of 16), "
          "CPU time (wall time):")
    procs = {}
    for f, d in models.items():
        (fc, fast, fast_w), (sc, slow, slow_w) = (processor_ms(d, images, a.batch_size, b) for b in (None, "pil"))
        procs[f] = {"fast_class": fc, "fast_cpu_ms": round(fast, 1), "fast_wall_ms": round(fast_w, 1),
                    "slow_class": sc, "slow_cpu_ms": round(slow, 1), "slow_wall_ms": round(slow_w, 1)}
        print(f"  {f:<11} fast {fc}: {fast:6.1f} ms ({fast_w:.1f})   slow {sc}: {slow:6.1f} ms ({slow_w:.1f})")
    rows = []
    for f, d in models.items():
        rows += family_rows(f, d, inp, a.data, a)
    print("model busy (time in generate / wall, after the first batch):")
    print(f"  {'family':<11} {'sleep':>6} {'BEFORE busy':>12} {'AFTER busy':>11} {'img/s before':>13} "
          f"{'img/s after':>12} {'after/before':>13} {'cpu/batch before':>17} {'after':>6}")
    for f in models:
        for latency in a.latencies:
            b, w = (next(r for r in rows if r["family"] == f and r["sleep_s"] == latency
                         and r["prepare_workers"] == k) for k in (0, a.workers))
            print(f"  {f:<11} {latency:>5.1f}s {b['busy']:>12.3f} {w['busy']:>11.3f} {b['img_s']:>13.2f} "
                  f"{w['img_s']:>12.2f} {w['img_s'] / b['img_s']:>12.2f}x {b['cpu_per_batch']:>16.2f}s "
                  f"{w['cpu_per_batch']:>5.2f}s")
    print("target: AFTER busy >= 0.95 at 1.0 s per batch")
    print(json.dumps({"bench": "p2_processor", "cpus": os.cpu_count(), "images": n, "batch": a.batch_size,
                      "processor_ms": procs, "runs": [{k: round(v, 4) if isinstance(v, float) else v
                                                       for k, v in r.items()} for r in rows]}))


if __name__ == "__main__":
    main()
