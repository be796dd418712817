"""Make the output folders of tests/engine/test_reuse_compat.py with the pixscribe of commit 44eff38
(see README.md here), before rows recorded what their stages read (issue 23, point 2).

Run from the repository root, with that commit's code first on the path:

    PYTHONPATH=src python tests/compat/make_fixture.py tests/compat/v44eff38

It writes DEST/in (the inputs) and three output folders made by the real command:

- out_region_rows: --method region, one row per region (a box, attribute and instruction
  per row), --region-prompt focal, answered by the loopback echo server (focal: box prompts
  of newer code record the model's box convention, which changes their fingerprint);
- out_region_images: --method region, one row per image with a ``regions`` list;
- out_scripted_partial: the test plugin's two-stage method over a keyed table, cut short
  with --limit (shard 0 done, shard 1 in batch files, shard 2 not started), for a plain resume.

Sources in the rows and paths in the manifests are absolute paths of the machine that made
them; the test relocates a copy (see ``relocate`` there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pixscribe.testing.openai_server import ServerProcess

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


def scene(path: Path, colours: list[tuple[int, int, int]]) -> None:
    arr = np.full((48, 64, 3), 128, np.uint8)
    for k, c in enumerate(colours):
        arr[8:24, 4 + 20 * k: 20 + 20 * k] = c
    Image.fromarray(arr).save(path)


def inputs(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    scene(d / "scene.png", [(255, 0, 0), (0, 0, 255)])
    scene(d / "photo.png", [(0, 200, 0), (250, 250, 0), (0, 0, 0)])
    rows = [{"image_id": "s", "path": "scene.png", "region_id": "s-red", "box": [4, 8, 20, 24], "attribute": "color"},
            {"image_id": "s", "path": "scene.png", "region_id": "s-blue", "box": [24, 8, 40, 24],
             "instruction": "What is it made of?"},
            {"image_id": "p", "path": "photo.png", "region_id": "p-green", "box": [4, 8, 20, 24]}]
    (d / "regions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    imgs = [{"id": "s", "path": "scene.png", "regions": [{"id": "s-a", "box": [4, 8, 20, 24]},
                                                         {"id": "s-b", "box": [24, 8, 40, 24], "attribute": "color"}]},
            {"id": "p", "path": "photo.png", "regions": [{"id": "p-a", "box": [44, 8, 60, 24]}]}]
    (d / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in imgs))
    rng = np.random.default_rng(7)
    (d / "imgs").mkdir(exist_ok=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, size=(8, 12, 3), dtype=np.uint8)).save(d / "imgs" / f"i{i:02d}.png")
    # keyed rows: ids that do not depend on where the folder lies (a loose file's id hashes its path)
    (d / "imgs.jsonl").write_text("".join(json.dumps({"id": f"i{i:02d}", "path": f"imgs/i{i:02d}.png"}) + "\n"
                                          for i in range(12)))


def cli(*args: str, env: dict[str, str] | None = None) -> None:
    r = subprocess.run([sys.executable, "-m", "pixscribe.cli", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"pixscribe {' '.join(args)} failed:\n{r.stderr}")


def plugin_env(tmp: Path) -> dict[str, str]:
    import shutil

    src = tmp / "src"  # a copy: pip's build files stay out of tests/
    shutil.copytree(TESTS / "plugin_pkg", src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(tmp / "site"), str(src)], check=True)
    return {"PYTHONPATH": os.pathsep.join([str(tmp / "site"), os.environ.get("PYTHONPATH", "")])}


def main(dest: Path) -> None:
    import tempfile

    inp = dest / "in"
    inputs(inp)
    with ServerProcess("--mode", "echo") as srv:
        model = ["--backend", "openai", "--base-url", srv.url, "--vlm", "pixscribe-test", "--no-progress"]
        cli("caption", str(inp / "regions.jsonl"), "-o", str(dest / "out_region_rows"), "--method", "region",
            "--region-prompt", "focal", *model)
        cli("caption", str(inp / "images.jsonl"), "-o", str(dest / "out_region_images"), "--method", "region",
            "--region-prompt", "focal", *model)
    with tempfile.TemporaryDirectory() as t:
        env = plugin_env(Path(t))
        cli("caption", str(inp / "imgs.jsonl"), "-o", str(dest / "out_scripted_partial"), "--method", "scripted",
            "--shard-size", "5", "--batch-size", "1", "--flush-rows", "1", "--limit", "7", "--no-progress", env=env)
    for leftover in dest.glob("out_*/_state/leases/*"):
        leftover.unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
