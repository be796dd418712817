"""Region prompting: CPU overhead per region (crop, outline, marks, JPEG encode) for ``focal`` and
``som`` at 1 and 50 regions per image, and regions per second behind a backend of fixed latency.

On a real photo at pixscribe's default pixel budget (about 1 MP), with mask regions (discs of
varied sizes, given as COCO RLE, decoded as the method would). For each mode and count:

- ``prep``: :func:`build_prompts` (mask scaling, focal crop + upscale + outline; or marks);
- ``encode``: JPEG encoding of every image of the requests (what the HTTP backend sends);
- ``regions/s``: prompts + one batched ``Backend.generate`` call to a scripted backend that
  sleeps ``--latency`` seconds per call, + reading the answers.

Then the same through the whole engine (``--method region``: read a jsonl of image rows,
decode, parse the RLE masks, prompt, generate, write parquet), ``--images`` images of that
size with 1 or 50 regions each, behind the same backend: regions per second, the region
stage's own time per region (parsing the masks, prompts, answers: its time minus the
backend's sleeps) and the whole run's (wall time minus the sleeps: also reading, decoding,
writing and the run's fixed start-up, which few regions cannot amortise), per region.

    python bench/p_region.py [--repeats 5] [--latency 0.2] [--images 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult
from pixscribe.experts import rle
from pixscribe.imaging import encode_jpeg
from pixscribe.methods.region import PromptOptions, build_prompts, read_answer, regions_from_columns
from pixscribe.testing import sample_photo


class FixedLatency(Backend):
    """Answers every request after a fixed delay per call; som requests get their JSON."""

    name = "fixed-latency"

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.model = "fixed-latency"
        self.latency = latency
        self.slept = 0.0

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        time.sleep(self.latency)
        self.slept += self.latency
        out = []
        for r in requests:
            keys = list((r.json_schema or {}).get("properties", {}))
            out.append(GenerationResult(text=json.dumps(dict.fromkeys(keys, "a thing")) if keys else "a thing"))
        return out


def make_regions(image: Image.Image, n: int, seed: int = 0) -> list[dict]:
    """``n`` disc masks, radius 12..90 px, as COCO RLE dicts."""
    rng = np.random.default_rng(seed)
    w, h = image.size
    yy, xx = np.ogrid[:h, :w]
    items = []
    for i in range(n):
        r = int(rng.integers(12, 90))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        items.append({"id": f"r{i}", "mask": rle.encode((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)})
    return items


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(mode: str, image: Image.Image, n: int, repeats: int, latency: float) -> dict[str, float]:
    items = make_regions(image, n)
    regions = regions_from_columns({"regions": items}, image.width, image.height)
    opts = PromptOptions(task="dense")
    prep, prompts = timed(lambda: build_prompts(mode, image, regions, opts), repeats)
    enc, _ = timed(lambda: [encode_jpeg(im) for p in prompts for im in p.images], repeats)  # type: ignore[union-attr]
    be = FixedLatency(latency)

    def full() -> int:
        ps = build_prompts(mode, image, regions, opts)
        res = be.generate([p.request() for p in ps])
        return sum(len(read_answer(p, r)) for p, r in zip(ps, res))

    total, answered = timed(full, repeats)
    assert answered == n
    return {"requests": len(prompts), "prep_ms": prep * 1000 / n, "encode_ms": enc * 1000 / n,  # type: ignore[arg-type]
            "regions_per_s": n / total}  # fmt: skip


def engine_inputs(d: Path, image: Image.Image, n_images: int, per_image: int) -> Path:
    """``n_images`` distinct JPEGs (a pixel changed each) and a jsonl of image rows with their regions."""
    rows = []
    for k in range(n_images):
        im = image.copy()
        im.putpixel((k, 0), (k % 256, 0, 0))
        im.save(d / f"im{k}.jpg", quality=90)
        rows.append({"id": f"im{k}", "path": f"im{k}.jpg", "regions": make_regions(image, per_image, seed=k)})
    src = d / f"rows-{per_image}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def run_engine(mode: str, src: Path, out: Path, latency: float) -> tuple[float, float, float, int]:
    """(wall seconds, backend sleep seconds, seconds in the region stage, regions) of one run."""
    from pixscribe.config import RunConfig
    from pixscribe.engine.context import BuildContext
    from pixscribe.engine.runner import Runner

    cfg = RunConfig(inputs=[str(src)], output=str(out), progress=False, vlm="fixed-latency",
                    stages={"region": {"prompt_mode": mode}})  # fmt: skip
    ctx = BuildContext(cfg)
    be = FixedLatency(latency)
    ctx.pool.put(ctx.spec("vlm"), be)
    method = ctx.build("region")
    stage = method.stages[0]
    timed = {"s": 0.0}

    class Timed(type(stage)):  # type: ignore[misc]
        def __call__(self, records):  # the stage's own time (parse, prompts, answers, the backend's sleep)
            t0 = time.perf_counter()
            try:
                return super().__call__(records)
            finally:
                timed["s"] += time.perf_counter() - t0

    stage.__class__ = Timed
    t = time.perf_counter()
    s = Runner(cfg, method).run()
    wall = time.perf_counter() - t
    assert s.error_rows == 0, s.to_dict()
    return wall, be.slept, timed["s"], stage.counts["captioned"]


def engine_table(image: Image.Image, n_images: int, repeats: int, latency: float) -> None:
    print(f"\nthrough the engine (--method region, {n_images} images of {image.width}x{image.height}, batch 8, "
          f"backend {latency * 1000:.0f} ms per call, median of {repeats})")  # fmt: skip
    print(f"{'mode':6} {'regions/image':>13} {'regions':>7} {'wall s':>7} {'backend s':>9} "
          f"{'stage ms/region':>16} {'engine ms/region':>17} {'regions/s':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for mode in ("focal", "som"):
            for per in (1, 50):
                src = engine_inputs(d, image, n_images, per)
                runs = [run_engine(mode, src, d / f"out-{mode}-{per}-{i}", latency) for i in range(repeats)]
                wall, slept, staged, n = sorted(runs)[len(runs) // 2]
                print(f"{mode:6} {per:13d} {n:7d} {wall:7.2f} {slept:9.2f} {(staged - slept) * 1000 / n:16.2f} "
                      f"{(wall - slept) * 1000 / n:17.2f} {n / wall:10.1f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per backend call")
    ap.add_argument("--images", type=int, default=8, help="images per engine run")
    a = ap.parse_args()
    photo = sample_photo("astronaut")  # 512x512
    image = photo.resize((1152, 864), Image.Resampling.BICUBIC)  # ~1 MP, the default --max-pixels
    print(f"image {image.width}x{image.height}, backend latency {a.latency * 1000:.0f} ms per call, "
          f"median of {a.repeats}")  # fmt: skip
    print(f"{'mode':6} {'regions':>7} {'requests':>8} {'prep ms/region':>15} {'encode ms/region':>17} "
          f"{'overhead ms/region':>19} {'regions/s':>10}")  # fmt: skip
    for mode in ("focal", "som"):
        for n in (1, 50):
            r = run(mode, image, n, a.repeats, a.latency)
            print(f"{mode:6} {n:7d} {r['requests']:8d} {r['prep_ms']:15.2f} {r['encode_ms']:17.2f} "
                  f"{r['prep_ms'] + r['encode_ms']:19.2f} {r['regions_per_s']:10.1f}")  # fmt: skip
    engine_table(image, a.images, a.repeats, a.latency)


if __name__ == "__main__":
    main()
