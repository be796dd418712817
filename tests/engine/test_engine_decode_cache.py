"""Identical image bytes are decoded once per run (an image repeated on every row of its
regions), concurrently or not; a failure is not shared; memory stays bounded."""

from __future__ import annotations

import io
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_engine import ScriptedBackend

from pixscribe import imaging
from pixscribe.config import RunConfig
from pixscribe.engine.prepare import DecodeCache
from pixscribe.engine.runner import Runner
from pixscribe.testing.methods import method_with
from pixscribe.testing import sample_photo


def _jpeg(name: str) -> bytes:
    b = io.BytesIO()
    sample_photo(name).save(b, "JPEG", quality=85)
    return b.getvalue()


class _Img:
    def __init__(self, w: int, h: int):
        self.image = type("I", (), {"width": w, "height": h})()


def test_concurrent_requests_for_the_same_bytes_make_one_decode():
    cache = DecodeCache()
    calls = []
    gate = threading.Event()

    def make():
        calls.append(1)
        gate.wait(2)
        return _Img(10, 10)

    out = []
    threads = [threading.Thread(target=lambda: out.append(cache.get("same", make))) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and len(out) == 6 and all(o is out[0] for o in out)
    assert cache.decodes == 1 and cache.shared == 5


def test_a_failure_is_not_shared_and_the_cache_is_bounded():
    cache = DecodeCache(size=2, max_bytes=10**9)
    n = {"fail": 0}

    def bad():
        n["fail"] += 1
        raise ValueError(f"broken #{n['fail']}")

    for i in (1, 2):
        with pytest.raises(ValueError, match=f"broken #{i}"):  # each record decodes (and names itself)
            cache.get("bad", bad)
    for k in "abc":
        cache.get(k, lambda: _Img(4, 4))
    assert list(cache._done) == ["b", "c"]  # the oldest went
    small = DecodeCache(size=8, max_bytes=100)  # pixel budget: one 10x10 image (300 bytes) is kept alone
    small.get("x", lambda: _Img(10, 10))
    small.get("y", lambda: _Img(10, 10))
    assert list(small._done) == ["y"]


def test_rows_repeating_an_image_decode_it_once(tmp_path, monkeypatch):
    """12 rows over 3 distinct images (bytes repeated on the rows, interleaved): 3 decodes,
    and every row still gets its own caption of the right image."""
    names = ["astronaut", "coffee", "chelsea"]
    blobs = {n: _jpeg(n) for n in names}
    rows = [{"id": f"r{i}", "image": blobs[names[i % 3]], "which": names[i % 3]} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    count = []
    real = imaging.decode
    monkeypatch.setattr(imaging, "decode", lambda *a, **k: (count.append(1), real(*a, **k))[1])
    cfg = RunConfig(inputs=[str(tmp_path / "rows.parquet")], output=str(tmp_path / "out"), progress=False,
                    vlm="scripted", batch_size=4, decode_workers=3)
    s = Runner(cfg, method_with(cfg, ScriptedBackend())).run()
    assert s.rows_written == 12 and s.error_rows == 0
    assert len(count) == 3
    got = pq.read_table(tmp_path / "out").to_pylist()
    by_image = {}
    for r in got:
        by_image.setdefault(r["which"], set()).add(r["caption"])
    assert all(len(v) == 1 for v in by_image.values()) and len({c for v in by_image.values() for c in v}) == 3
