"""`pixscribe caption --backend openai` end to end: a real server subprocess on loopback,
real generation (tiny mode), faults turned into rows, --retry-errors, usage in the summary."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from pixscribe.testing.openai_server import ServerProcess
from test_e2e_cli import cli


def _summary(out):
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def test_openai_backend_tiny_server_end_to_end(tiny_vlms, tmp_path, photo_dir):
    with ServerProcess("--mode", "tiny", "--model-dir", str(tiny_vlms["llava"]), "--model", "tiny-llava") as srv:
        out = tmp_path / "out"
        p = cli("caption", str(photo_dir), "-o", str(out), "--backend", "openai", "--base-url", srv.url,
                "--vlm", "tiny-llava", "--max-new-tokens", "6", "--concurrency", "4", "--no-progress")
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == 6 and all(r["error"] is None and isinstance(r["caption"], str) for r in rows)
        assert {r["model"] for r in rows} == {"tiny-llava"}
        usage = _summary(out)["usage"]["vlm:tiny-llava"]
        assert usage["requests"] == 6 and usage["tokens_in"] > 0 and usage["latency_p95"] is not None
        assert "vlm:tiny-llava: latency p50 / p95" in p.stderr and " s / " in p.stderr
        assert srv.stats()["requests"] >= 6


def test_faults_become_rows_and_retry_errors_redoes_them(tmp_path, photo_dir):
    # every request first meets a 503 then a dropped connection (transient), and a
    # deterministic share of images always gets 500 (permanent for this run)
    with ServerProcess("--mode", "echo", "--model", "m", "--faults", "503,drop", "--retry-after", "0",
                       "--permanent", "500", "--permanent-share", "0.5") as srv:
        out = tmp_path / "out"
        args = ["caption", str(photo_dir), "-o", str(out), "--backend", "openai", "--base-url", srv.url, "--vlm", "m",
                "--concurrency", "8", "--max-retries", "3", "--no-progress"]
        p = cli(*args)
        assert p.returncode == 0
        rows = pq.read_table(out).to_pylist()
        assert len(rows) == 6
        bad = [r for r in rows if r["error"]]
        good = [r for r in rows if not r["error"]]
        assert bad and good, "the seeded permanent share should hit some images, not all"
        assert all("500" in r["error"] for r in bad)
        assert all(r["caption"].startswith("echo:") for r in good)
        s = _summary(out)
        assert s["errors"] == {"generate": len(bad)} and s["usage"]["vlm:m"]["retries"] >= 2 * len(rows)
        # the server recovers; --retry-errors redoes only the failed rows
        srv.admin(permanent="")
        before = srv.stats()["requests"]
        cli(*args, "--retry-errors")
        rows2 = pq.read_table(out).to_pylist()
        assert len(rows2) == 6 and all(r["error"] is None for r in rows2)
        assert _summary(out)["rows_written"] == len(bad)
        assert {r["id"]: r["caption"] for r in rows2 if r["id"] in {g["id"] for g in good}} == {
            g["id"]: g["caption"] for g in good
        }
        assert srv.stats()["requests"] > before


def test_unreachable_server_fails_before_the_run(tmp_path, photo_dir):
    from pixscribe.testing.openai_server import free_port

    out = tmp_path / "out"
    url = f"http://127.0.0.1:{free_port()}/v1"
    p = cli("caption", str(photo_dir), "-o", str(out), "--backend", "openai", "--base-url", url, "--vlm", "m",
            check=False)
    assert p.returncode == 2 and url.split("/v1")[0] in p.stderr
    assert not out.exists()  # a run that fails before it starts leaves nothing behind
