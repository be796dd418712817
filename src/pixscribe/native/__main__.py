"""The child of :class:`pixscribe.native.Isolated`: ``python -m pixscribe.native MODULE:FUNC``.

Reads length-prefixed JSON requests from stdin until EOF and answers each with
``{"result": FUNC(request)}`` or ``{"error": "..."}`` (a Python exception; a crash in C ends
this process, which the parent reports)."""

from __future__ import annotations

import importlib
import json
import os
import struct
import sys

_HEADER = struct.Struct("<Q")


def _limit_memory() -> None:
    """Cap the address space at what the imports took plus PIXSCRIBE_NATIVE_MAX_MEMORY bytes."""
    extra = int(os.environ.get("PIXSCRIBE_NATIVE_MAX_MEMORY") or 0)
    if extra <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + extra, resource.RLIM_INFINITY))
    except (OSError, ValueError, ImportError):
        pass  # not Linux: the validation before the call still bounds the work


def _read(f, n: int) -> bytes | None:
    data = f.read(n)
    return data if len(data) == n else None


def main(target: str) -> None:
    mod, _, name = target.partition(":")
    func = getattr(importlib.import_module(mod), name)
    _limit_memory()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _answer(stdout, {"ready": True})
    while (head := _read(stdin, _HEADER.size)) is not None:
        body = _read(stdin, _HEADER.unpack(head)[0])
        if body is None:
            return
        try:
            answer = {"result": func(json.loads(body))}
        except Exception as exc:  # noqa: BLE001 - a Python error is an answer, not a crash
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        _answer(stdout, answer)


def _answer(stdout, answer: dict) -> None:
    out = json.dumps(answer).encode()
    stdout.write(_HEADER.pack(len(out)) + out)
    stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
