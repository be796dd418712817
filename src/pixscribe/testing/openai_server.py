"""A loopback OpenAI-compatible server for tests, benchmarks and offline smoke runs.

Run it in a subprocess; it prints its bound port on the first stdout line::

    python -m pixscribe.testing.openai_server --port 0 --mode echo --latency 0.2
    python -m pixscribe.testing.openai_server --port 0 --mode tiny --model-dir DIR

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models`` (with ``--root``, each entry's
``root`` as vLLM gives it), ``GET /stats`` (JSON
counters, including the most requests seen in flight at once and ``log``: the first 1000 answered
chat requests in the order they were answered, each with its images' sha256, its last user text and the chat
requests in flight when it arrived), ``POST /stats/reset`` and
``POST /admin`` (change options at run time, e.g. ``{"capacity": null}``). ``--hold K`` answers K chat
requests and holds later ones until ``/admin`` gives more passes (``{"hold": 1}``) or lifts the
hold (``{"hold": null}``): a test decides exactly when a batch ends.

Modes:

- ``echo``: after ``--latency`` seconds answers ``"echo: <last user text> [k image(s) WxH]"``;
  when the request asks for a JSON schema, a minimal valid object instead.
- ``tiny``: real generation from a tiny transformers model dir (``--model-dir``), with the
  data-URL images decoded.
- ``loop``: a model stuck in a repetition loop under greedy decoding, as Qwen-VL gets: it
  answers ``a cat on a mat a cat on a mat ...`` up to ``max_tokens`` (``finish_reason:
  "length"``; with a schema, ``{"objects": ["cat", "cat", ...``) until the request carries
  what ``--loop-until`` names: ``penalty`` (``frequency_penalty`` > 0, or ``repetition_penalty``
  > 1 where ``--owned-by vllm``), ``sampling`` (``temperature`` > 0: the penalties are
  ignored) or ``never``; then ``A cat sits on a mat by the window.`` (a minimal valid object
  with a schema). ``/stats`` counts ``loop_replies`` (looped, fixed), ``penalties`` (by
  field) and ``sampled`` requests.

``--owned-by`` is each ``/v1/models`` entry's ``owned_by`` (``vllm`` makes the server look
like vLLM's, which takes ``repetition_penalty``); any other server answers a request that
carries ``repetition_penalty`` with 400, as the OpenAI API does with unknown fields.

Like a real vLLM (>= 0.12) server, it honours ``response_format`` json_schema and
``structured_outputs`` (the echo reply is then a minimal valid object), and *ignores* the
removed ``guided_json`` field: 200 with unconstrained text and a warning on stderr (counted
in ``/stats`` as ``ignored_fields``). Replies are cut at ``max_tokens`` (echo mode counts
whitespace-separated words as tokens) with ``finish_reason: "length"``, else ``"stop"``.

Faults are deterministic. A request's *key* is a hash of its non-system message text and images, so
a retry (and the stricter schema retry, which only adds a system message) is the next
*attempt* of the same key:

- ``--faults 429,500,drop``: attempt 1 of every key gets 429, attempt 2 gets 500, attempt 3
  a dropped connection, attempt 4 is answered. ``--fault-share 0.5`` limits this to a
  deterministic half of the keys.
- ``--permanent 500 --permanent-share 0.25``: a quarter of the keys always fail.
- A prompt may carry its own directives: ``[[faults:429,503]]`` or ``[[always:wrong_schema]]``.
- ``--capacity K``: a request arriving while K are already in flight gets 429 (a 429 storm
  for concurrency above K).
- ``--api-key KEY``: requests without ``Authorization: Bearer KEY`` get 401.

Fault kinds: any HTTP status (``429``, ``500``, ``503``, ``401``, ``403``, ``400``...),
``overloaded`` (529 with an "overloaded" body), ``slow`` (answers after ``--slow`` s),
``drop`` (closes the socket mid-response), ``malformed`` (repairable broken JSON content),
``garbage`` (prose instead of JSON), ``wrong_schema`` (valid JSON of the wrong shape),
``huge`` (a 200 whose content is ``--huge-bytes`` long, with a Content-Length) and
``huge_stream`` (the same without a Content-Length, streamed until the client hangs up).
429 and 503 carry ``Retry-After: --retry-after`` (``--retry-after-date`` sends an HTTP date).

Scripted replies (``--replies FILE``, a JSON list of rules; ``/admin`` ``{"replies": [...]}``
changes them at run time) answer with exact text, as a real server once did: the first rule
whose conditions all hold gives the reply's ``content`` and ``finish_reason`` ("stop" unless
given; a "length" reply reports ``max_tokens`` completion tokens). Conditions: ``when`` (a
substring of the request's non-system text, or a list of them, all present), ``system`` (a
substring of its system text), ``attempt`` (the 1-based attempt of the request's key),
``image`` (``"WxH"``, the size of one of its images), ``max_tokens_below`` and
``max_tokens_at_least`` (on the request's ``max_tokens``). ``/stats`` counts the rules
used (``by_reply``, by rule index) and keeps the ``max_tokens`` of the first 1000 requests.
Faults come first; a scripted reply replaces the mode's answer. For example, vLLM's cut
extraction reply, then the full one once the limit is raised::

    [{"when": "objects", "max_tokens_below": 512, "content": "{\"objects\"\n\n  ", "finish_reason": "length"},
     {"when": "objects", "content": "{\"objects\": [\"cat\"]}"}]
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DIRECTIVE = re.compile(r"\[\[(faults|always):([A-Za-z0-9_,]+)\]\]")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _hash_fraction(key: str, salt: str) -> float:
    h = hashlib.sha256((salt + key).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


IGNORED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")  # removed in vLLM 0.12


def _schema_of_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the reply must follow, from the fields vLLM >= 0.12 honours."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema") or {}
    so = body.get("structured_outputs")
    if isinstance(so, dict) and "json" in so:
        return so["json"]
    return None


def _cut(text: str, max_tokens: Any) -> tuple[str, int, str]:
    """Echo mode's token limit: (text cut to max_tokens words, tokens, finish_reason)."""
    words = text.split()
    limit = int(max_tokens) if isinstance(max_tokens, int) and max_tokens > 0 else None
    if limit is None or len(words) <= limit:
        return text, len(words), "stop"
    return " ".join(words[:limit]), limit, "length"


class State:
    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.lock = threading.Lock()
        self.gen_lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.inflight = 0
        self.generator: Any = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.stats: dict[str, Any] = {
                "requests": 0,
                "chat_requests": 0,
                "model_requests": 0,
                "ok": 0,
                "by_status": {},
                "by_fault": {},
                "max_inflight": 0,
                "images": 0,
                "max_image_pixels": 0,
                "image_formats": [],
                "image_sha256": [],  # of the bytes each data URL carried (the first 1000)
                "auth_failures": 0,
                "structured_requests": 0,
                "structured_fields": [],
                "ignored_fields": [],
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "by_reply": {},
                "max_tokens": [],  # of the first 1000 chat requests
                # the first 1000 answered chat requests, in order: the sha256 of each image's bytes,
                # the last user text and how many chat requests were in flight on arrival (itself too)
                "log": [],
            }
            self.attempts.clear()

    def bump(self, name: str, sub: str | None = None) -> None:
        with self.lock:
            if sub is None:
                self.stats[name] = self.stats.get(name, 0) + 1
            else:
                d = self.stats.setdefault(name, {})
                d[sub] = d.get(sub, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall
    server_version = "pixscribe-test-openai/1"
    state: State  # set on the class by make_server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---- plumbing -------------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.state.bump("by_status", str(status))

    def _error(self, status: int, message: str, etype: str = "error", headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": etype, "code": status}}, headers)

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # ---- routes ---------------------------------------------------------------------
    def do_GET(self) -> None:
        st = self.state
        st.bump("requests")
        if self.path.rstrip("/") == "/v1/models":
            st.bump("model_requests")
            if not self._authorized():
                return
            now = int(time.time())
            roots = list(st.opts.root or [])  # like vLLM's: the path or hub id the served name stands for
            data = [{"id": m, "object": "model", "created": now, "owned_by": st.opts.owned_by,
                     **({"root": roots[i]} if i < len(roots) and roots[i] else {})}
                    for i, m in enumerate(st.opts.model)]
            self._send(200, {"object": "list", "data": data})
        elif self.path.rstrip("/") == "/stats":
            with st.lock:
                payload = json.loads(json.dumps(st.stats))
                payload["inflight"] = st.inflight
                payload["keys"] = len(st.attempts)
            self._send(200, payload)
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        st = self.state
        st.bump("requests")
        raw = self._read_body()
        path = self.path.rstrip("/")
        if path == "/stats/reset":
            st.reset()
            self._send(200, {"ok": True})
            return
        if path == "/admin":
            changes = json.loads(raw or b"{}")
            unknown = [k for k in changes if not hasattr(st.opts, k)]
            if unknown:  # answered outside st.lock: _send counts the status under it
                self._error(400, f"unknown option {unknown[0]}")
                return
            with st.lock:
                for k, v in changes.items():
                    setattr(st.opts, k, v)
            self._send(200, {"ok": True})
            return
        if path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        st.bump("chat_requests")
        with st.lock:
            st.inflight += 1
            st.stats["max_inflight"] = max(st.stats["max_inflight"], st.inflight)
            over = st.opts.capacity is not None and st.inflight > int(st.opts.capacity)
            self.arrived_with = st.inflight
        try:
            if over:
                st.bump("by_fault", "capacity")
                self._error(429, "server at capacity", "rate_limit", self._retry_after())
                return
            _wait_for_pass(st)
            self._chat(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with st.lock:
                st.inflight -= 1

    # ---- chat -----------------------------------------------------------------------
    def _authorized(self) -> bool:
        key = self.state.opts.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self.state.bump("auth_failures")
            self._error(401, "invalid or missing API key", "authentication_error")
            return False
        return True

    def _retry_after(self) -> dict[str, str]:
        ra = float(self.state.opts.retry_after)
        if self.state.opts.retry_after_date:
            return {"Retry-After": email.utils.formatdate(time.time() + ra, usegmt=True)}
        return {"Retry-After": f"{ra:g}"}

    def _chat(self, raw: bytes) -> None:
        st = self.state
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._error(400, "request body is not JSON")
            return
        if not self._authorized():
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._error(400, "messages must be a non-empty list")
            return
        if body.get("model") not in st.opts.model:
            self._error(404, f"model {body.get('model')!r} not found", "not_found_error")
            return
        user_text = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") != "system")
        # the key covers the images too: many requests share one prompt (recap) but not one image
        h = hashlib.sha256(user_text.encode())
        for m in messages:
            if m.get("role") != "system" and isinstance(m.get("content"), list):
                for part in m["content"]:
                    if isinstance(part, dict) and part.get("type") == "image_url":
                        h.update(str((part.get("image_url") or {}).get("url", "")).encode())
        key = h.hexdigest()
        with st.lock:
            attempt = st.attempts.get(key, 0)
            st.attempts[key] = attempt + 1
        fault = self._pick_fault(key, user_text, attempt)
        schema = self._note_structured(body)
        if not self._note_penalties(body):
            return
        with st.lock:
            if len(st.stats["max_tokens"]) < 1000:
                st.stats["max_tokens"].append(body.get("max_tokens"))
        if fault:
            st.bump("by_fault", fault)
            if fault.isdigit():
                status = int(fault)
                headers = self._retry_after() if status in (429, 503) else None
                etype = {401: "authentication_error", 403: "permission_error", 429: "rate_limit"}.get(status, "error")
                self._error(status, f"injected fault {status}", etype, headers)
                return
            if fault == "overloaded":
                self._error(529, "Overloaded", "overloaded_error")
                return
            if fault == "drop":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(b'{"id": "chatcmpl-drop", "choi')
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault in ("huge", "huge_stream"):
                self._huge(body, fault == "huge")
                return
            if fault == "slow":
                time.sleep(float(st.opts.slow))
        images = self._images(messages)
        self._log(messages, [hashlib.sha256(b).hexdigest() for b in self.image_bytes])
        try:
            text, n_in, n_out, finish = self._generate(body, messages, images, schema)
        except Exception as exc:  # a model failure is a 500, like a real server
            self._error(500, f"generation failed: {type(exc).__name__}: {exc}")
            return
        scripted = scripted_reply(st.opts.replies, body, messages, attempt + 1, images)
        if scripted is not None:
            st.bump("by_reply", str(scripted[0]))
            text, finish = scripted[1], scripted[2]
            n_out = int(body.get("max_tokens") or 0) if finish == "length" else len(text.split())
        if fault == "malformed":
            obj = json.loads(text) if schema is not None else {"caption": text}
            text = "```json\n" + json.dumps(obj).replace('"', "'")[:-1] + ",}\n```"
        elif fault == "garbage":
            text = "Sure! Here is a description of the image, as you asked."
        elif fault == "wrong_schema":
            text = json.dumps({"unexpected": True, "items": [1, 2]})
        with st.lock:
            st.stats["ok"] += 1
            st.stats["prompt_tokens"] += n_in
            st.stats["completion_tokens"] += n_out
        self._send(
            200,
            {
                "id": "chatcmpl-" + key[:12],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
            },
        )

    def _note_penalties(self, body: dict[str, Any]) -> bool:
        """Count the penalty fields and sampled requests; refuse ``repetition_penalty`` unless
        the server is vLLM (False: answered 400)."""
        st = self.state
        for f in ("frequency_penalty", "repetition_penalty"):
            if body.get(f) is not None:
                st.bump("penalties", f)
        if float(body.get("temperature") or 0) > 0:
            st.bump("sampled")
        if body.get("repetition_penalty") is not None and st.opts.owned_by != "vllm":
            self._error(400, "Unrecognized request argument supplied: repetition_penalty", "invalid_request_error")
            return False
        return True

    def _log(self, messages: list[dict[str, Any]], shas: list[str]) -> None:
        st = self.state
        last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        with st.lock:
            if len(st.stats["log"]) < 1000:
                st.stats["log"].append({"images": shas, "text": last_user[:200], "inflight": self.arrived_with})

    def _note_structured(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Count the structured-output fields; warn, like vLLM, about the ignored ones."""
        st = self.state
        schema = _schema_of_body(body)
        ignored = [f for f in IGNORED_FIELDS if f in body]
        with st.lock:
            for f in ("response_format", "structured_outputs", *IGNORED_FIELDS):
                if f in body and f not in st.stats["structured_fields"]:
                    st.stats["structured_fields"].append(f)
            for f in ignored:
                if f not in st.stats["ignored_fields"]:
                    st.stats["ignored_fields"].append(f)
        if ignored:
            print(
                f"WARNING: Request contains the removed guided-decoding field(s) {ignored}, which are ignored; "
                "output will NOT be constrained. Use `structured_outputs` (or `response_format`) instead.",
                file=sys.stderr, flush=True,
            )
        if schema is not None:
            st.bump("structured_requests")
        return schema

    def _huge(self, body: dict[str, Any], with_length: bool) -> None:
        """A 200 chat reply whose content is --huge-bytes long (an unbounded server)."""
        n = int(self.state.opts.huge_bytes)
        head = json.dumps({"id": "chatcmpl-huge", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]})
        prefix, suffix = head.split('"content": ""')
        start = (prefix + '"content": "').encode()
        end = ('"' + suffix).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if with_length:
            self.send_header("Content-Length", str(len(start) + n + len(end)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(start)
        block = b"a" * 65536
        left = n
        while left > 0:
            self.wfile.write(block[: min(left, len(block))])
            left -= len(block)
        self.wfile.write(end)
        self.state.bump("by_status", "200")

    def _pick_fault(self, key: str, user_text: str, attempt: int) -> str | None:
        o = self.state.opts
        m = _DIRECTIVE.findall(user_text)
        for kind, arg in m:
            if kind == "always":
                return arg
        for kind, arg in m:
            if kind == "faults":
                seq = [x for x in arg.split(",") if x]
                return seq[attempt] if attempt < len(seq) else None
        if o.permanent and _hash_fraction(key, "permanent") < float(o.permanent_share):
            return str(o.permanent)
        seq = [x for x in (o.faults or "").split(",") if x]
        if seq and attempt < len(seq) and _hash_fraction(key, "faults") < float(o.fault_share):
            return seq[attempt]
        return None

    def _images(self, messages: list[dict[str, Any]]) -> list[Any]:
        from PIL import Image

        out = []
        self.image_bytes: list[bytes] = []
        for m in messages:
            content = m.get("content")
            if not isinstance(content, list):
                continue
            for p in content:
                if isinstance(p, dict) and p.get("type") == "image_url":
                    url = (p.get("image_url") or {}).get("url", "")
                    header, _, b64 = url.partition(",")
                    if not header.startswith("data:image/") or ";base64" not in header:
                        raise ValueError("only base64 data URLs are supported by the test server")
                    raw = base64.b64decode(b64)
                    self.image_bytes.append(raw)
                    img = Image.open(io.BytesIO(raw))
                    out.append(img)
                    with self.state.lock:
                        if len(self.state.stats["image_sha256"]) < 1000:
                            self.state.stats["image_sha256"].append(hashlib.sha256(raw).hexdigest())
                        self.state.stats["images"] += 1
                        px = img.width * img.height
                        self.state.stats["max_image_pixels"] = max(self.state.stats["max_image_pixels"], px)
                        if img.format not in self.state.stats["image_formats"]:
                            self.state.stats["image_formats"].append(img.format)
        return out

    def _loop(self, body: dict[str, Any], schema: dict[str, Any] | None) -> tuple[str, int, int, str]:
        fixed = loop_ends(body, self.state.opts.loop_until)
        self.state.bump("loop_replies", "fixed" if fixed else "looped")
        if fixed:
            from ..backends.structured import example_for

            text = json.dumps(example_for(schema)) if schema is not None else LOOP_FIXED
        else:
            text = _loop_text(body, schema)
        text, n_out, finish = _cut(text, body.get("max_tokens"))
        return text, 16, n_out, finish

    def _generate(
        self, body: dict[str, Any], messages: list[dict[str, Any]], images: list[Any], schema: dict[str, Any] | None
    ) -> tuple[str, int, int, str]:
        """(text, prompt tokens, completion tokens, finish_reason)."""
        st = self.state
        if st.opts.mode == "tiny":
            return st.generator(body, messages, images)
        if st.opts.mode == "loop":
            return self._loop(body, schema)
        if st.opts.latency:
            time.sleep(float(st.opts.latency))
        last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if schema is not None:
            from ..backends.structured import example_for

            text = json.dumps(example_for(schema))
        else:
            dims = ",".join(f"{im.width}x{im.height}" for im in images)
            text = f"echo: {last_user}" + (f" [{len(images)} image(s) {dims}]" if images else "")
        n_in = len(" ".join(_text_of(m.get("content")) for m in messages).split()) + 16 * len(images)
        text, n_out, finish = _cut(text, body.get("max_tokens"))
        return text, n_in, n_out, finish


LOOP_UNIT = "a cat on a mat"
LOOP_FIXED = "A cat sits on a mat by the window."


def loop_ends(body: dict[str, Any], until: str) -> bool:
    """Whether ``--mode loop`` answers this request without looping (see the module doc)."""
    if until == "penalty":
        return float(body.get("frequency_penalty") or 0) > 0 or float(body.get("repetition_penalty") or 1) > 1
    return until == "sampling" and float(body.get("temperature") or 0) > 0


def _loop_text(body: dict[str, Any], schema: dict[str, Any] | None) -> str:
    limit = int(body.get("max_tokens") or 64)
    if schema is not None:
        return '{"objects": [' + " ".join(['"cat",'] * limit)
    return " ".join((LOOP_UNIT.split() * (limit // 5 + 1))[:limit + 1])


def _wait_for_pass(st: State) -> None:
    """``--hold K``: K more chat requests are answered, later ones wait until ``/admin`` gives
    more passes (``{"hold": 1}``) or lifts the hold (``{"hold": null}``)."""
    while True:
        with st.lock:
            left = st.opts.hold
            if left is None or left > 0:
                if left is not None:
                    st.opts.hold = left - 1
                return
        time.sleep(0.02)


# ---- scripted replies ------------------------------------------------------------------------


def _holds(rule: dict[str, Any], body: dict[str, Any], messages: list[dict[str, Any]], attempt: int,
           sizes: list[str]) -> bool:
    user = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") != "system")
    system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    limit = body.get("max_tokens")
    limit = int(limit) if isinstance(limit, int) else None
    checks = (
        all(str(w) in user for w in ([rule["when"]] if isinstance(rule.get("when"), str) else rule.get("when", []))),
        "system" not in rule or str(rule["system"]) in system,
        "attempt" not in rule or int(rule["attempt"]) == attempt,
        "image" not in rule or str(rule["image"]) in sizes,
        "max_tokens_below" not in rule or (limit is not None and limit < int(rule["max_tokens_below"])),
        "max_tokens_at_least" not in rule or (limit is not None and limit >= int(rule["max_tokens_at_least"])),
    )
    return all(checks)


def scripted_reply(rules: Any, body: dict[str, Any], messages: list[dict[str, Any]], attempt: int,
                   images: list[Any] = ()) -> tuple[int, str, str] | None:
    """(rule index, content, finish_reason) of the first rule that holds, or None."""
    sizes = [f"{im.width}x{im.height}" for im in images]
    for i, rule in enumerate(rules or []):
        if _holds(rule, body, messages, attempt, sizes):
            return i, str(rule["content"]), str(rule.get("finish_reason") or "stop")
    return None


def _load_replies(path: str | None) -> list[dict[str, Any]]:
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        rules = json.load(f)
    if not isinstance(rules, list) or not all(isinstance(r, dict) and "content" in r for r in rules):
        raise SystemExit(f"--replies {path}: expected a JSON list of rules, each with a 'content'")
    return rules


# ---- the tiny-model generator ------------------------------------------------------------


def _to_hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = []
            for p in content or []:
                if p.get("type") == "image_url":
                    parts.append({"type": "image"})
                elif p.get("type") == "text":
                    parts.append({"type": "text", "text": p.get("text", "")})
        out.append({"role": m.get("role", "user"), "content": parts})
    return out


def make_tiny_generator(model_dir: str, lock: threading.Lock):
    """Real generation with a local transformers model dir (CPU), through pixscribe's own
    transformers backend, so the server answers exactly what in-process generation would."""
    from ..backends.base import GenerationRequest, Sampling
    from ..backends.transformers_backend import TransformersBackend
    from ..config import RunConfig

    backend = TransformersBackend.from_config(RunConfig(vlm=model_dir, device="cpu", dtype="fp32"))
    backend.load()

    def gen(body: dict[str, Any], messages: list[dict[str, Any]], images: list[Any]) -> tuple[str, int, int, str]:
        req = GenerationRequest(
            messages=_to_hf_messages(messages),
            images=[im.convert("RGB") for im in images],
            sampling=Sampling(max_new_tokens=int(body.get("max_tokens") or 16), temperature=0.0),
        )
        with lock:
            (res,) = backend.generate([req])
        if not res.ok:
            raise RuntimeError(res.error)
        return res.text or "", res.tokens_in, res.tokens_out, res.finish_reason or "stop"

    return gen


# ---- server setup ----------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pixscribe.testing.openai_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=["echo", "tiny", "loop"], default="echo")
    ap.add_argument("--loop-until", choices=["penalty", "sampling", "never"], default="penalty",
                    help="loop mode: what ends the loop (see the module doc)")
    ap.add_argument("--owned-by", default="pixscribe", help="/v1/models owned_by (vllm: looks like vLLM's server)")
    ap.add_argument("--model", action="append", default=None, help="served model name (repeatable)")
    ap.add_argument("--model-dir", default=None, help="tiny mode: a local transformers model dir")
    ap.add_argument("--root", action="append", default=None,
                    help="the /v1/models 'root' of the i-th --model (vLLM reports the loaded path or hub id there)")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--hold", type=int, default=None, help="answer this many chat requests, hold later ones "
                    "until /admin gives more ({\"hold\": 1}) or lifts the hold ({\"hold\": null})")
    ap.add_argument("--faults", default="")
    ap.add_argument("--fault-share", type=float, default=1.0)
    ap.add_argument("--permanent", default=None)
    ap.add_argument("--permanent-share", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=None)
    ap.add_argument("--retry-after", type=float, default=1.0)
    ap.add_argument("--retry-after-date", action="store_true")
    ap.add_argument("--slow", type=float, default=30.0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--huge-bytes", type=int, default=20_000_000, help="content size of the huge faults")
    ap.add_argument("--replies", default=None, help="a JSON file of scripted reply rules (see the module doc)")
    o = ap.parse_args(argv)
    o.replies = _load_replies(o.replies)
    if o.mode == "tiny" and not o.model_dir:
        ap.error("--mode tiny needs --model-dir")
    if not o.model:
        o.model = [o.model_dir] if o.mode == "tiny" else ["pixscribe-test"]
    return o


def make_server(opts: argparse.Namespace) -> tuple[_Server, State]:
    state = State(opts)
    if opts.mode == "tiny":
        state.generator = make_tiny_generator(opts.model_dir, state.gen_lock)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = _Server((opts.host, opts.port), handler)
    return server, state


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    server, _ = make_server(opts)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---- a handle for tests and benches --------------------------------------------------------


class ServerProcess:
    """``with ServerProcess("--mode", "echo") as srv: srv.url, srv.stats()``."""

    def __init__(self, *args: str, startup_timeout: float = 120.0, env: dict[str, str] | None = None):
        import os

        cmd = [sys.executable, "-m", "pixscribe.testing.openai_server", "--port", "0", *args]
        full_env = dict(os.environ)
        full_env.setdefault("HF_HUB_OFFLINE", "1")
        full_env.update(env or {})
        import tempfile

        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=full_env)
        line: list[str] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(startup_timeout)
        if not line or not line[0].strip().isdigit():
            self.proc.kill()
            self.proc.wait()
            self._stderr.seek(0)
            err = self._stderr.read()
            raise RuntimeError(f"test server did not start ({' '.join(cmd)}): {err[-2000:]}")
        self.port = int(line[0])
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.base + "/stats", timeout=10).json()

    def log(self) -> str:
        """What the server wrote to stderr so far (warnings such as ignored fields)."""
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read()
        self._stderr.seek(0, 2)
        return text

    def reset(self) -> None:
        import httpx

        httpx.post(self.base + "/stats/reset", timeout=10)

    def admin(self, **changes: Any) -> None:
        import httpx

        r = httpx.post(self.base + "/admin", json=changes, timeout=10)
        r.raise_for_status()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    """A port with nothing listening on it (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
