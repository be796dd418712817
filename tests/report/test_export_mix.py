"""Recap-DataComp-1B's caption mix per sample: the export writes both captions and the exported
``text`` (its epoch-0 draw, the same as before per-sample mixing existed); the loader-side
:class:`MixedCaption` draws again per epoch within a binomial bound, reproducibly and
independently of order. ``p`` is the original caption's share."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from fixtures_report import write_output
from pixscribe.report.export import ExportError, ExportOptions, export
from pixscribe.report.mix import MixedCaption, takes_original
from test_e2e_cli import cli

N = 2_000


def _out(tmp_path: Path, reverse: bool = False) -> Path:
    rows = [{"id": f"img-{i:05d}", "source": f"/nowhere/{i}.jpg", "method": "recap", "caption": f"new {i}",
             "org_caption": None if i % 10 == 0 else f"old {i}", "error": None} for i in range(N)]
    if reverse:
        rows.reverse()
    return write_output(tmp_path, rows)


def _rows(dest: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, dest.read_text().splitlines())}


def _legacy(id_: str, seed: int, p: float) -> bool:
    """The per-row rule as it was written before per-sample mixing (pixscribe export <= this release)."""
    h = hashlib.blake2b(f"{seed}\x00{id_}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64 < p


def test_per_sample_export_carries_both_captions_and_text_is_the_first_draw(tmp_path):
    out = _out(tmp_path / "out")
    export(out, tmp_path / "s.jsonl", ExportOptions(mix_original=0.8, seed=5))
    rows = _rows(tmp_path / "s.jsonl")
    mix = MixedCaption(p=0.8, seed=5)
    for i, r in rows.items():
        assert r["text_recaption"] == r["caption"] and r["text_original"] == r["org_caption"]
        assert r["text"] == mix(r, 0) == (r["org_caption"] if _legacy(i, 5, 0.8) and r["org_caption"] else r["caption"])
    # --mix-per row: the same text, without the candidates
    export(out, tmp_path / "r.jsonl", ExportOptions(mix_original=0.8, seed=5, mix_per="row"))
    by_row = _rows(tmp_path / "r.jsonl")
    assert {i: r["text"] for i, r in by_row.items()} == {i: r["text"] for i, r in rows.items()}
    assert not {"text_original", "text_recaption"} & set(next(iter(by_row.values())))


@pytest.mark.parametrize("p", [0.8, 0.2])
def test_draws_per_epoch_within_a_binomial_bound_and_independent_of_order(tmp_path, p):
    export(_out(tmp_path / "a"), tmp_path / "a.jsonl", ExportOptions(mix_original=p, seed=1))
    export(_out(tmp_path / "b", reverse=True), tmp_path / "b.jsonl", ExportOptions(mix_original=p, seed=1))
    rows, other = _rows(tmp_path / "a.jsonl"), _rows(tmp_path / "b.jsonl")
    mix = MixedCaption(p=p, seed=1)
    epochs = 10
    with_original = [r for r in rows.values() if r["text_original"]]
    draws = [[mix(r, e) == r["text_original"] for e in range(epochs)] for r in with_original]
    k, m = sum(map(sum, draws)), len(draws) * epochs
    assert abs(k - m * p) <= 4 * math.sqrt(m * p * (1 - p)), (k, m * p)
    # per sample, not per row: most rows take both captions over ten epochs
    assert sum(0 < sum(d) < epochs for d in draws) > len(draws) * (1 - p ** epochs - (1 - p) ** epochs) * 0.9
    # the same (seed, id, epoch) gives the same caption whatever the order; no original: always the new one
    assert all(mix(r, e) == mix(other[i], e) for i, r in rows.items() for e in (0, 3))
    assert all(mix(r, e) == r["caption"] for r in rows.values() if not r["text_original"] for e in range(3))


def test_p_is_the_share_of_the_original():
    assert not takes_original("x", 3, 0.0, epoch=2) and takes_original("x", 3, 1.0, epoch=2)
    mix = MixedCaption(p=1.0)
    assert mix({"id": "a", "text_original": "old", "text_recaption": "new"}, 7) == "old"
    assert MixedCaption(p=0.0)({"id": "a", "text_original": "old", "text_recaption": "new"}, 7) == "new"
    with pytest.raises(ValueError, match="share of the original"):
        MixedCaption(p=80)


def test_bad_mix_per_is_one_line(tmp_path):
    out = _out(tmp_path / "out")
    with pytest.raises(ExportError, match="--mix-per 'epoch'"):
        export(out, tmp_path / "x.jsonl", ExportOptions(mix_original=0.5, mix_per="epoch"))
    p = cli("export", str(out), "--to", "webdataset", str(tmp_path / "w"), "--text-only", "--mix-original", "0.5",
            "--mix-per", "epoch", check=False)
    assert p.returncode == 2 and "--mix-per 'epoch'" in p.stderr and "Traceback" not in p.stderr
    cli("export", str(out), "--to", "webdataset", str(tmp_path / "w"), "--text-only", "--mix-original", "0.5")
    marker = json.loads((tmp_path / "w" / "_export.json").read_text())
    assert marker["mix"] == {"original_share": 0.5, "seed": 0, "per": "sample"}
