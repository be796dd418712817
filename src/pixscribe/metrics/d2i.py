"""D2I-Bench (Image Textualization): how well a caption lets a text-to-image model redraw the image.

    pixscribe eval --pred OUT --d2i GEN_DIR --images ORIG_DIR --clip-model openai/clip-vit-base-patch16
    pixscribe eval --pred OUT --d2i GEN_DIR --images ORIG_DIR --clip-model M --t2i MODEL [--t2i-seed 23]

For every prediction id, the cosine of CLIP image features between the image generated from
its caption (``GEN_DIR/<id>.png``, or .jpg/.jpeg/.webp) and the original (``ORIG_DIR/<id>.*``);
the corpus score is their mean (``d2i_clip``). IT generated with PixArt-Σ at 512×512 and a
fixed seed and compared with CLIP ViT-B/16. With ``--t2i MODEL`` the images are generated here
through diffusers (``pip install 'pixscribe[t2i]'``; ``DiffusionPipeline.from_pretrained``, a hub
id or a local directory, safetensors only), one seeded generator per image; images already in
GEN_DIR are kept, so an interrupted generation resumes. Ids without a generated or an original
image are counted as missing, not scored.

:func:`with_d2i` adds these options to the ``eval`` command (``--refs`` then becomes optional).
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import typer

from ..errors import ConfigError, InputFileError

EXTS = (".png", ".jpg", ".jpeg", ".webp")


def find_image(d: Path, id_: str) -> Path | None:
    for e in EXTS:
        p = d / f"{id_}{e}"
        if p.is_file():
            return p
    return None


def _file_name(id_: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in id_)
    return f"{safe}.png"


def generate_images(preds: dict[str, str], model: str, out_dir: Path, *, size: int = 512, seed: int = 23,
                    steps: int | None = None, device: str = "cpu") -> dict[str, str]:
    """Draw each caption with a diffusers pipeline into ``out_dir/<id>.png`` (skipping ids already
    drawn). Returns id -> error for captions that could not be drawn."""
    from ..deps import require

    diffusers = require("diffusers", "t2i", what="--t2i")
    import torch

    pipe = diffusers.DiffusionPipeline.from_pretrained(model, use_safetensors=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    for id_, caption in preds.items():
        target = out_dir / _file_name(id_)
        if target.is_file():
            continue
        kw: dict[str, Any] = {"height": size, "width": size, "generator": torch.Generator("cpu").manual_seed(seed)}
        if steps:
            kw["num_inference_steps"] = steps
        try:
            image = pipe(caption, **kw).images[0]
        except Exception as exc:  # noqa: BLE001 - one caption that cannot be drawn is reported, the rest go on
            errors[id_] = f"{type(exc).__name__}: {exc}"
            continue
        tmp = target.with_suffix(".tmp.png")
        image.save(tmp)
        tmp.replace(target)
    return errors


def d2i_scores(ids: list[str], gen_dir: Path, orig_dir: Path, clip_model: str, device: str = "cpu") -> dict[str, Any]:
    """Per id and corpus CLIP image-image cosine (see the module docstring)."""
    from PIL import Image

    from .embed import ClipScorer

    pairs: list[tuple[str, Path, Path]] = []
    missing: list[str] = []
    for i in ids:
        g = find_image(gen_dir, i) or find_image(gen_dir, Path(_file_name(i)).stem)
        o = find_image(orig_dir, i)
        if g and o:
            pairs.append((i, g, o))
        else:
            missing.append(i)
    if not pairs:
        raise InputFileError(f"--d2i {gen_dir}: no id has both a generated image there and an original in {orig_dir}")
    scorer = ClipScorer(clip_model, device=device)
    gen = scorer.embed_images([Image.open(g).convert("RGB") for _, g, _ in pairs])
    orig = scorer.embed_images([Image.open(o).convert("RGB") for _, _, o in pairs])
    cos = (gen * orig).sum(1)
    per = {i: float(c) for (i, _, _), c in zip(pairs, cos)}
    return {"corpus": {"d2i_clip": float(np.mean(cos))}, "per_image": per, "n_images": len(per),
            "missing": {"count": len(missing), "ids": missing[:100]}}


D2I_OPTIONS: list[tuple[str, Any, Any]] = [
    ("d2i", Optional[Path], typer.Option(None, "--d2i", help="D2I-Bench: directory of images generated from the "
                                         "captions (<id>.png); scored against --images by CLIP image cosine")),
    ("t2i", Optional[str], typer.Option(None, "--t2i", help="with --d2i: generate the images first with this "
                                        "diffusers model (hub id or local dir)")),
    ("t2i_seed", int, typer.Option(23, "--t2i-seed", help="with --t2i: the generator seed (IT: fixed)")),
    ("t2i_size", int, typer.Option(512, "--t2i-size", help="with --t2i: image side in pixels (IT: 512)")),
    ("t2i_steps", Optional[int], typer.Option(None, "--t2i-steps", help="with --t2i: inference steps "
                                              "(default: the pipeline's)")),
]


def run_d2i(pred: Path, column: str, images: Path | None, clip_model: str | None, output: Path | None,
            d2i: Path, t2i: str | None, t2i_seed: int, t2i_size: int, t2i_steps: int | None) -> dict[str, Any]:
    """The ``--d2i`` mode of ``pixscribe eval``: generate (with ``--t2i``), score, print, write."""
    from .io import read_predictions

    if images is None or clip_model is None:
        raise ConfigError("--d2i needs --images ORIG_DIR (the original images) and --clip-model (IT: "
                          "openai/clip-vit-base-patch16)")
    preds, _ = read_predictions(pred, column)
    report: dict[str, Any] = {"info": {"pred": str(pred), "column": column, "d2i": str(d2i), "clip_model": clip_model}}
    if t2i:
        report["info"].update({"t2i": t2i, "seed": t2i_seed, "size": t2i_size, "steps": t2i_steps})
        report["t2i_errors"] = generate_images(preds, t2i, d2i, size=t2i_size, seed=t2i_seed, steps=t2i_steps)
    report.update(d2i_scores(list(preds), d2i, images, clip_model))
    score = report["corpus"]["d2i_clip"]
    typer.echo(f"d2i_clip {score:.4f} over {report['n_images']} images"
               + (f"; {report['missing']['count']} without a generated or original image" if report["missing"]["count"]
                  else ""))
    if output is not None:
        from ..io.writers import atomic_write_bytes

        atomic_write_bytes(output, json.dumps(report, indent=1).encode())
        typer.echo(f"wrote {output}")
    return report


def with_d2i(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (the eval command) with the ``--d2i`` options; ``--refs`` becomes optional."""
    sig = inspect.signature(command)
    params = []
    for p in sig.parameters.values():
        if p.name == "refs":
            p = p.replace(default=typer.Option(None, "--refs", help="COCO captions annotation json, or "
                                               "jsonl/parquet {id, refs: [...]} (not with --d2i)"))
        params.append(p)
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in D2I_OPTIONS]

    @functools.wraps(command)
    def wrapped(**kw: Any) -> Any:
        extra = {n: kw.pop(n) for n, _, _ in D2I_OPTIONS}
        if extra["d2i"] is None:
            if extra["t2i"]:
                raise ConfigError("--t2i generates images for --d2i GEN_DIR: give --d2i too")
            if kw.get("refs") is None and kw.get("pope_labels") is None:
                raise ConfigError("--refs is required (or --pope-labels for POPE, or --d2i GEN_DIR for D2I-Bench)")
            return command(**kw)
        if kw.get("refs") is not None:
            raise ConfigError("--d2i scores generated images, not references: run pixscribe eval once with --refs "
                              "and once with --d2i")
        run_d2i(kw["pred"], kw["column"], kw.get("images"), kw.get("clip_model"), kw.get("output"), **extra)

    hints = dict(getattr(command, "__annotations__", {}))
    hints.update({n: a for n, a, _ in D2I_OPTIONS})
    wrapped.__annotations__ = hints
    wrapped.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    del wrapped.__wrapped__  # typer reads the signature above, not the wrapped function's
    return wrapped


__all__ = ["D2I_OPTIONS", "d2i_scores", "find_image", "generate_images", "run_d2i", "with_d2i"]
