"""``pixscribe export --to hub``: a folder that ``datasets.load_dataset(DEST)`` reads as it is,
and that ``hf upload REPO DEST --repo-type dataset`` publishes as it is.

::

    DEST/README.md                              the dataset card, YAML header first
    DEST/data/train-00000-of-00002.parquet      the rows (images inside, as datasets' Image)
    DEST/data/test-00000-of-00001.parquet       with --test-fraction
    DEST/_export.json                           pixscribe's marker (--overwrite)

The parquet files are the layout ``datasets`` itself writes for the Hub (``push_to_hub``): the
``image`` column a struct of ``bytes`` (the original file) and ``path`` (a file name, no
folder), the features in the schema's ``huggingface`` metadata, row groups of 100 rows when
they hold images (what the Hub's viewer pages by), a new file past ``--shard-size`` rows or
500 MB. The card's YAML names the ``default`` config's data files per split and carries the
features, the split sizes and the byte counts, as ``datasets`` writes them; pyarrow writes
everything, so the layout needs no extra.

A row goes to ``test`` when blake2b(seed, "split", id) is below ``--test-fraction``: the same
rows whatever the order or sharding, and independent of the caption mix's choice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .captions import uniform
from .card import card
from .stems import stem_of

if TYPE_CHECKING:
    from .export import _Exporter

__all__ = ["write_hub", "SHARD_BYTES"]

SHARD_BYTES = 500 * 1024 * 1024
_TYPES = {"width": ("int32", pa.int32()), "height": ("int32", pa.int32()), "seconds": ("float64", pa.float64())}
_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _schema(names: list[str]) -> tuple[pa.Schema, list[dict[str, str]]]:
    """The arrow schema (with datasets' features in its metadata) and the card's feature list."""
    fields, yaml_feats, hf = [], [], {}
    for c in names:
        if c == "image":
            fields.append(pa.field(c, _IMAGE))
            yaml_feats.append({"name": c, "dtype": "image"})
            hf[c] = {"_type": "Image"}
            continue
        dtype, typ = _TYPES.get(c, ("string", pa.string()))
        fields.append(pa.field(c, typ))
        yaml_feats.append({"name": c, "dtype": dtype})
        hf[c] = {"dtype": dtype, "_type": "Value"}
    meta = {"huggingface": json.dumps({"info": {"features": hf}})}
    return pa.schema(fields, metadata=meta), yaml_feats


class _Split:
    """The parquet files of one split, ``<split>-NNNNN.parquet`` until :meth:`finish` names
    them ``-of-MMMMM``."""

    def __init__(self, root: Path, name: str, schema: pa.Schema, max_rows: int, group_rows: int):
        self.root, self.name, self.schema = root, name, schema
        self.max_rows, self.group_rows = max(1, max_rows), group_rows
        self.files: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows_in_file = self.bytes_in_file = 0
        self.buffer: list[dict[str, Any]] = []
        self.rows = self.nbytes = 0

    def add(self, rec: dict[str, Any], size: int) -> None:
        if self.rows_in_file and (self.rows_in_file >= self.max_rows or self.bytes_in_file >= SHARD_BYTES):
            self._close_file()
        self.buffer.append(rec)
        self.rows_in_file += 1
        self.bytes_in_file += size
        self.rows += 1
        if len(self.buffer) >= self.group_rows:
            self._write()

    def _write(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            self.files.append(self.root / f"{self.name}-{len(self.files):05d}.parquet")
            self.writer = pq.ParquetWriter(self.files[-1], self.schema)
        table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        self.nbytes += table.nbytes
        self.writer.write_table(table, row_group_size=self.group_rows)
        self.buffer = []

    def _close_file(self) -> None:
        self._write()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.rows_in_file = self.bytes_in_file = 0

    def empty(self) -> None:
        self.files.append(self.root / f"{self.name}-00000.parquet")
        pq.write_table(self.schema.empty_table(), self.files[-1])

    def finish(self) -> None:
        self._close_file()
        n = len(self.files)
        for i, f in enumerate(self.files):
            os.replace(f, f.with_name(f"{self.name}-{i:05d}-of-{n:05d}.parquet"))


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "1B<n<10B")


def _meta(splits: dict[str, _Split], feats: list[dict[str, str]], out_name: str, data: Path) -> dict[str, Any]:
    used = {k: s for k, s in splits.items() if s.files}
    files = [{"split": k, "path": f"data/{k}-*"} for k in used]
    size = sum(f.stat().st_size for f in data.glob("*.parquet"))
    return {"pretty_name": f"pixscribe export of {out_name}",
            "size_categories": [_size_category(sum(s.rows for s in used.values()))],
            "configs": [{"config_name": "default", "data_files": files}],
            "dataset_info": {"features": feats,
                             "splits": [{"name": k, "num_bytes": s.nbytes, "num_examples": s.rows} for k, s in used.items()],
                             "download_size": size, "dataset_size": sum(s.nbytes for s in used.values())}}


def write_hub(ex: _Exporter, tmp: Path) -> None:
    from .export import feature_names, record

    names = feature_names(ex)
    schema, feats = _schema(names)
    data = tmp / "data"
    data.mkdir(parents=True)
    group = 100 if "image" in names else 1000
    splits = {k: _Split(data, k, schema, ex.opts.shard_size, group) for k in ("train", "test")}
    p, seed = ex.opts.test_fraction, ex.opts.seed
    for row, img in ex.with_images():
        rec = record(row, [c for c in names if c != "image"])
        if img is not None:
            rec["image"] = {"bytes": img[1], "path": f"{stem_of(row.get('id'))}.{img[0]}"}
        split = "test" if p and uniform(row.get("id"), seed, "split") < p else "train"
        splits[split].add(rec, len(img[1]) if img is not None else 0)
        ex.wrote(row)
    if not any(s.rows for s in splits.values()):
        splits["train"].empty()  # no rows: still a loadable dataset
    for s in splits.values():
        s.finish()
    ex.res.splits = {k: s.rows for k, s in splits.items() if s.rows}
    extra = [f"- splits: {', '.join(f'{k} {n}' for k, n in ex.res.splits.items()) or 'train 0'}"
             + (f" (a row is in test when blake2b({seed}, 'split', id) / 2^64 < {p})" if p else "")]
    meta = _meta(splits, feats, ex.out.path.name, data)
    (tmp / "README.md").write_text(card(ex, names, meta, extra), encoding="utf-8")
