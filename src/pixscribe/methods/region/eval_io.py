"""The files of ``pixscribe eval-regions``, read through :mod:`pixscribe.metrics.files`: regular
files only, bounded sizes, UTF-8, and every malformed value an error naming the file and row.

Each prediction row gets a ``_where`` (``FILE line N`` / ``FILE row N``), so a region predicted
twice in one prompting mode is named at both places."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...metrics.files import MetricsInputError, rows
from ...metrics.io import MAX_CAPTION_CHARS, ref_texts, row_id, text


def read_region_predictions(path: str | Path, max_chars: int = MAX_CAPTION_CHARS) -> list[dict[str, Any]]:
    """Region rows from a pixscribe output directory or a ``.jsonl``/``.parquet`` file."""
    from .evaluate import explode_regions

    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--pred {p}: no such file or directory")
    files = sorted(p.rglob("part-*.parquet")) + sorted(p.rglob("part-*.jsonl")) if p.is_dir() else [p]
    if not files:
        raise MetricsInputError(f"--pred {p}: no part-*.parquet or part-*.jsonl files in this directory")
    out: list[dict[str, Any]] = []
    for f in files:
        for where, r in rows(f, "--pred"):
            at = f"--pred {f}: {where}"
            try:
                regions = explode_regions([r])
            except ValueError as exc:
                raise MetricsInputError(f"{at}: {exc}") from None
            for x in regions:
                rid = row_id(x, ("region_id", "id"), at)
                x["caption"] = text(x.get("caption"), f"the caption of region {rid!r}", at, max_chars)
                x["_where"] = f"{f} {where}"
            out.extend(regions)
    return out


def read_region_references(path: str | Path, max_chars: int = MAX_CAPTION_CHARS
                           ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``({region_id: [refs]}, {region_id: attribute})`` from ``.jsonl``/``.parquet`` rows with
    ``region_id`` (or ``id``), ``refs`` (a list or one string, or ``caption``) and optionally ``attribute``."""
    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--refs {p}: no such file")
    refs: dict[str, list[str]] = {}
    attrs: dict[str, str] = {}
    for where, r in rows(p, "--refs"):
        at = f"--refs {p}: {where}"
        v = r.get("refs") if r.get("refs") is not None else r.get("caption")
        if v is None:
            raise MetricsInputError(f"{at}: rows need 'region_id' (or 'id') and 'refs' (or 'caption'); "
                                    f"got {', '.join(sorted(r))}")  # fmt: skip
        rid = row_id(r, ("region_id", "id"), at)
        refs.setdefault(rid, []).extend(t for t in ref_texts(v, at, max_chars) if t)
        attr = text(r.get("attribute"), "the attribute", at, max_chars)
        if attr:
            attrs[rid] = attr
    if not any(refs.values()):
        raise MetricsInputError(f"--refs {p}: no reference captions found")
    return refs, attrs


__all__ = ["read_region_predictions", "read_region_references"]
