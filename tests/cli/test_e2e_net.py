"""`pixscribe caption` against loopback servers, through the CLI: the URL options, a model
server that answers 20 MB, a removed structured-output mode, and a model server killed
mid-run (error rows in bounded time, then a rerun that completes)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest

from pixscribe.testing import sample_photo
from pixscribe.testing.openai_server import ServerProcess
from test_e2e_cli import cli, jpeg
from test_fetch_limits import _Trickler


class _Images(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: dict[str, bytes] = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = self.files.get(self.path.lstrip("/"))
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture
def image_server():
    small = sample_photo("coffee")
    small.thumbnail((64, 64))
    import io

    b = io.BytesIO()
    small.save(b, "JPEG")
    _Images.files = {"small.jpg": b.getvalue(), "big.jpg": jpeg("astronaut")}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _rows(out):
    return {r["source"]: r for r in pq.read_table(out).to_pylist()}


def test_url_options_on_the_command_line(tmp_path, image_server):
    trickler = _Trickler()
    try:
        slow = f"http://127.0.0.1:{trickler.port}/slow.jpg"
        urls = [f"{image_server}/small.jpg", f"{image_server}/big.jpg", slow]
        with ServerProcess("--mode", "echo", "--model", "m") as srv:
            out = tmp_path / "out"
            t = time.perf_counter()
            cli("caption", *urls, "-o", str(out), "--backend", "openai", "--base-url", srv.url, "--vlm", "m",
                "--allow-url-host", "127.0.0.1", "--url-max-bytes", "20000", "--url-timeout", "1", "--no-progress")
            assert time.perf_counter() - t < 60
        rows = _rows(out)
        assert rows[urls[0]]["error"] is None and rows[urls[0]]["caption"].startswith("echo:")
        assert "over the limit of 20000 bytes" in rows[urls[1]]["error"]
        assert "whole-fetch deadline of 4 s" in rows[slow]["error"]  # 4 x --url-timeout
    finally:
        trickler.close()
    # without --allow-url-host (or --allow-private-urls) loopback URLs are refused
    out2 = tmp_path / "out2"
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        cli("caption", urls[0], "-o", str(out2), "--backend", "openai", "--base-url", srv.url, "--vlm", "m",
            "--no-progress")
    assert "--allow-private-urls" in _rows(out2)[urls[0]]["error"]


def test_removed_structured_mode_fails_before_the_run(tmp_path, photo_dir):
    p = cli("caption", str(photo_dir), "-o", str(tmp_path / "o"), "--backend", "openai", "--base-url",
            "http://127.0.0.1:9/v1", "--structured-output", "vllm-legacy", check=False)
    assert p.returncode == 2 and "guided_json" in p.stderr and "response_format" in p.stderr


def test_a_20mb_caption_is_an_error_row_never_a_20mb_row(tmp_path, photo_dir):
    with ServerProcess("--mode", "echo", "--model", "m") as srv:
        out = tmp_path / "out"
        cli("caption", str(photo_dir), "-o", str(out), "--backend", "openai", "--base-url", srv.url, "--vlm", "m",
            "--prompt", "describe [[always:huge_stream]]", "--no-progress")
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6
    assert all(r["caption"] is None and "byte limit" in r["error"] for r in rows)
    assert max(len(json.dumps(r, default=str)) for r in rows) < 10_000


def test_server_killed_mid_run_gives_error_rows_in_bounded_time_then_a_rerun_completes(tmp_path, photo_dir):
    srv = ServerProcess("--mode", "echo", "--model", "m", "--hold", "2")  # two answers, then it holds the rest
    out = tmp_path / "out"
    args = ["caption", str(photo_dir), "-o", str(out), "--backend", "openai", "--vlm", "m", "--concurrency", "2",
            "--batch-size", "2", "--request-deadline", "3", "--endpoint-down-timeout", "0", "--no-progress"]
    def kill_after_first_answers() -> None:  # however slow the machine is to start the CLI
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if srv.stats()["ok"] >= 2:  # two chat answers sent
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.05)
        srv.close()

    killer = threading.Thread(target=kill_after_first_answers)
    killer.start()
    t = time.perf_counter()
    p = cli(*args, "--base-url", srv.url, check=False)
    elapsed = time.perf_counter() - t
    killer.join()
    assert p.returncode == 0, p.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6
    failed = [r for r in rows if r["error"]]
    assert failed and all("request deadline of 3 s" in r["error"] for r in failed)
    assert elapsed < 300  # startup + one 3 s deadline, not hours
    with ServerProcess("--mode", "echo", "--model", "m") as srv2:
        cli(*args, "--base-url", srv2.url, "--retry-errors")
    rows2 = pq.read_table(out).to_pylist()
    assert len(rows2) == 6 and all(r["error"] is None for r in rows2)
    assert len({r["id"] for r in rows2}) == 6


def test_every_endpoint_down_stops_the_run_cleanly_and_it_resumes(tmp_path, photo_dir):
    """--endpoint-down-timeout: the run stops (exit 3, one clear line, no traceback), keeps
    what it wrote, and a rerun against a live server completes exactly once."""
    srv = ServerProcess("--mode", "echo", "--model", "m", "--hold", "5")  # five answers, then it holds the sixth
    out = tmp_path / "out"
    args = ["caption", str(photo_dir), "-o", str(out), "--backend", "openai", "--vlm", "m", "--concurrency", "1",
            "--batch-size", "1", "--flush-rows", "1", "--endpoint-down-timeout", "2", "--no-progress"]

    def kill_after_first_answers() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if srv.stats()["ok"] >= 5:  # the first batch (4 requests: the backend's batch) is done
                    break
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)
        srv.close()

    killer = threading.Thread(target=kill_after_first_answers)
    killer.start()
    p = cli(*args, "--base-url", srv.url, check=False)
    killer.join()
    assert p.returncode == 3, p.stderr
    assert "the run stopped" in p.stderr and "resume" in p.stderr and "Traceback" not in p.stderr
    done_before = pq.read_table(out).num_rows if any(out.glob("part-*")) else 0
    assert 2 <= done_before < 6, p.stderr
    with ServerProcess("--mode", "echo", "--model", "m") as srv2:
        cli(*args, "--base-url", srv2.url)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6 and all(r["error"] is None for r in rows)
