"""Worker processes that turn requests into a transformers model's inputs ahead of the model.

Why processes: the model's thread needs the GIL to launch kernels, and the processor (chat
template, image resize and normalisation, patchify, tokenizer) is mostly Python and numpy
that would hold it; in threads it would slow the model down. Each worker loads the same
processor as the model's process (:class:`~pixscribe.backends.hf_inputs.ProcessorSpec`:
same source and revision, remote code only if asked) and runs
:meth:`~pixscribe.backends.hf_inputs.Encoder.encode` on one batch at a time.

How data travels (no pickled pixels through a pipe):

- to a worker: the batch's images are copied once into one shared-memory buffer (uint8,
  ``RGB``/``RGBA``/``L``; other modes are pickled as PIL images), messages are pickled;
- back: the tensors, floats cast to the model's dtype by the worker, are written into shared
  memory by the worker and arrive as memory maps (torch's multiprocessing reductions), so the
  model's process copies nothing before it moves them to the device.

Workers start with ``spawn`` (a forked process with torch and threads is unsafe), ignore
Ctrl-C (the run stops them when it stops), and leave when the parent dies (their pipe closes;
a watchdog checks the parent pid too), so ``kill -9`` of a run leaves no orphan. A worker that
dies while preparing a batch fails that batch (:class:`PrepareWorkerDied`) and is started
again for the next one; one that does not answer within ``task_timeout`` is killed the same way.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.connection as mpc
import os
import pickle
import queue
import threading
import time
from typing import Any

from .base import BackendUnavailable, GenerationRequest
from .hf_inputs import Encoder, ProcessorSpec, processor_info

_SHM_MODES = {"RGB": 3, "RGBA": 4, "L": 1}  # bytes per pixel of the modes sent as raw pixels
_STOP = object()


class PrepareWorkerDied(RuntimeError):
    """The worker preparing a batch died (or hung) before it answered."""


def default_prepare_workers(device: str) -> int:
    """Prepare workers for ``--prepare-workers`` left unset: none on the CPU, where the model's
    own threads use every core; on a GPU half the cores this process may use less one, between
    1 and 4. One worker runs the Qwen-VL fast processor at about 25 img/s on ~1 MP images,
    so 4 keep ahead of an 8B VLM on one H100 (its decode ceiling is near 50 img/s at 128
    tokens) and leave cores for decoding; more only cost memory (a processor per process)."""
    if device == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, (cores - 2) // 2))


def device_guess(device: str) -> str:
    """Where the model will run, without failing: loading is where a missing torch or CUDA is told."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch: load() says what to install
        return "cpu"


# ---- the wire format ------------------------------------------------------------------------
def pack_requests(reqs: list[GenerationRequest]) -> dict[str, Any]:
    """Messages (pickled) and images (raw pixels in one shared buffer) of a batch."""
    import numpy as np
    import torch

    metas: list[list[tuple]] = []
    total = 0
    for r in reqs:
        m = []
        for im in r.images:
            bpp = _SHM_MODES.get(getattr(im, "mode", None))
            if bpp is None:
                m.append(("pil", im))
            else:
                n = im.width * im.height * bpp
                m.append(("raw", im.mode, im.size, total, n))
                total += n
        metas.append(m)
    buf = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total)) if total else None
    if buf is not None:
        view = buf.numpy()
        for r, m in zip(reqs, metas):
            for im, meta in zip(r.images, m):
                if meta[0] == "raw":
                    data = im.tobytes()
                    if len(data) != meta[4]:
                        raise ValueError(f"a {im.mode} image of {im.width}x{im.height} gave {len(data)} bytes")
                    view[meta[3]: meta[3] + meta[4]] = np.frombuffer(data, dtype=np.uint8)
    return {"messages": [r.messages for r in reqs], "images": metas, "buffer": buf}


def unpack_requests(packed: dict[str, Any]) -> list[GenerationRequest]:
    from PIL import Image

    view = packed["buffer"].numpy() if packed["buffer"] is not None else None
    out = []
    for messages, metas in zip(packed["messages"], packed["images"]):
        images = []
        for meta in metas:
            if meta[0] == "pil":
                images.append(meta[1])
            else:
                _, mode, size, off, n = meta
                images.append(Image.frombytes(mode, size, view[off: off + n].tobytes()))
        out.append(GenerationRequest(messages=messages, images=images))
    return out


def pack_outputs(inputs: Any, dtype: Any) -> dict[str, Any]:
    """The batch's tensors in shared memory, floats cast to ``dtype`` on the way (one pass)."""
    import torch

    out: dict[str, Any] = {}
    for k, v in inputs.items():
        if torch.is_tensor(v):
            want = dtype if (dtype is not None and v.is_floating_point()) else v.dtype
            dst = torch.empty(0, dtype=want)
            storage = torch.UntypedStorage._new_shared(max(1, v.numel() * dst.element_size()))
            v = dst.set_(storage, 0, v.shape).copy_(v)
        out[k] = v
    return out


# ---- the worker process ---------------------------------------------------------------------
def _worker_main(conn: Any, spec: ProcessorSpec, dtype_name: str | None, parent_pid: int, threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it stops us
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    try:
        encoder = Encoder.load(spec)
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which stops the run
        _send(conn, ("fail", _portable(exc)))
        return
    if not _send(conn, ("ready", processor_info(encoder.processor))):
        return
    dtype = getattr(torch, dtype_name) if dtype_name else None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        try:
            reqs = unpack_requests(msg["requests"])
            inputs = encoder.encode(reqs, max_pixels=msg["max_pixels"], padding_side=msg["padding_side"])
            reply: tuple = ("ok", pack_outputs(inputs, dtype))
        except Exception as exc:  # noqa: BLE001 - the batch's error, raised in the parent
            reply = ("err", _portable(exc))
        if not _send(conn, reply):
            return


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _send(conn: Any, msg: tuple) -> bool:
    try:
        conn.send(msg)
        return True
    except (OSError, EOFError, ValueError):
        return False


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else a RuntimeError with the same message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(str(exc) or type(exc).__name__)


# ---- the pool, in the model's process -------------------------------------------------------
class PreparePool:
    """``workers`` processes preparing batches; :meth:`submit` returns a future of the inputs.
    Each worker is served by a thread of this process that sends it a batch and waits for the
    answer or its death, so a dead worker fails exactly the batch it held."""

    def __init__(self, spec: ProcessorSpec, workers: int, *, dtype: str | None = None, threads: int = 1,
                 task_timeout: float = 600.0, start_timeout: float = 300.0):
        if workers < 1:
            raise ValueError("a PreparePool needs at least one worker")
        self.spec, self.dtype, self.threads = spec, dtype, threads
        self.task_timeout, self.start_timeout = task_timeout, start_timeout
        self.restarts = 0  # workers started again after one died or hung
        self.batches = 0  # batches the workers prepared
        self.info: dict[str, Any] = {}
        self._ctx = multiprocessing.get_context("spawn")
        self._tasks: "queue.Queue[Any]" = queue.Queue()
        self._closed = threading.Event()
        self._slots = [_Slot(self, i) for i in range(workers)]

    def start(self) -> "PreparePool":
        """Start every worker (in parallel) without waiting for them; see :meth:`wait_ready`."""
        for s in self._slots:
            s.spawn()
        return self

    def wait_ready(self) -> "PreparePool":
        """Wait until every worker has loaded its processor; raises BackendUnavailable if one cannot."""
        try:
            for s in self._slots:
                s.await_ready()
        except PrepareWorkerDied as exc:
            self.close()
            raise BackendUnavailable(f"the prepare workers could not start: {exc}") from exc
        for s in self._slots:
            s.thread.start()
        return self

    def submit(self, reqs: list[GenerationRequest], max_pixels: int | None, padding_side: str) -> cf.Future:
        fut: cf.Future = cf.Future()
        if self._closed.is_set():
            fut.set_exception(RuntimeError("the prepare workers were stopped"))
        else:
            self._tasks.put((fut, reqs, max_pixels, padding_side))
        return fut

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.pid is not None]

    def close(self) -> None:
        """Stop the workers now (batches in flight fail) and the threads that serve them."""
        if self._closed.is_set():
            return
        self._closed.set()
        for _ in self._slots:
            self._tasks.put(_STOP)
        for s in self._slots:
            s.stop()
        while True:  # batches nobody will take
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item[0].set_running_or_notify_cancel():
                item[0].set_exception(RuntimeError("the prepare workers were stopped"))


class _Slot:
    """One worker process and the thread of this process that serves it."""

    def __init__(self, pool: PreparePool, index: int):
        self.pool, self.index = pool, index
        self.proc: Any = None
        self.conn: Any = None
        self.busy = False  # a batch was sent to the worker and is not answered yet
        self.thread = threading.Thread(target=self.serve, daemon=True, name=f"pixscribe-prepare-{index}")

    # -- lifecycle
    def spawn(self) -> None:
        p = self.pool
        parent, child = p._ctx.Pipe(duplex=True)
        self.proc = p._ctx.Process(target=_worker_main, args=(child, p.spec, p.dtype, os.getpid(), p.threads),
                                   daemon=True, name=f"pixscribe-prepare-{self.index}")
        self.proc.start()
        child.close()
        self.conn = parent

    def await_ready(self) -> None:
        kind, value = self._answer(self.pool.start_timeout, "starting")
        if kind == "fail":
            self._reap()
            raise PrepareWorkerDied(f"{type(value).__name__}: {value}")
        self.pool.info = value

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def restart(self) -> None:
        self._reap()
        if self.pool._closed.is_set():
            raise RuntimeError("the prepare workers were stopped")
        self.pool.restarts += 1
        self.spawn()
        self.await_ready()

    def stop(self) -> None:
        self._reap()

    def _reap(self) -> None:
        proc, conn, self.proc, self.conn = self.proc, self.conn, None, None
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        if conn is not None:
            conn.close()

    # -- serving batches
    def serve(self) -> None:
        pool = self.pool
        while True:
            item = pool._tasks.get()
            if item is _STOP:
                return
            fut, reqs, max_pixels, padding_side = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self.run(reqs, max_pixels, padding_side))
            except BaseException as exc:  # noqa: BLE001 - the batch's error
                fut.set_exception(exc)

    def run(self, reqs: list[GenerationRequest], max_pixels: int | None, padding_side: str) -> dict[str, Any]:
        if self.pool._closed.is_set():
            raise RuntimeError("the prepare workers were stopped")
        msg = {"requests": pack_requests(reqs), "max_pixels": max_pixels, "padding_side": padding_side}
        if not self.alive():
            self.restart()
        try:
            self.conn.send(msg)
        except (OSError, ValueError):  # died before taking it: not this batch's doing, so once more
            self.restart()
            self.conn.send(msg)
        self.busy = True
        try:
            kind, value = self._answer(self.pool.task_timeout, "preparing this batch")
        finally:
            self.busy = False
        if kind == "ok":
            self.pool.batches += 1
            return value
        raise value

    def _answer(self, timeout: float, doing: str) -> tuple[str, Any]:
        """The worker's next message, or PrepareWorkerDied if it dies or stays silent."""
        proc, conn = self.proc, self.conn
        pid = proc.pid
        ready = mpc.wait([conn, proc.sentinel], timeout=timeout)
        if not ready:
            self._reap()
            raise PrepareWorkerDied(f"the prepare worker (pid {pid}) did not answer in {timeout:.0f} s while {doing}; "
                                    "it was stopped")
        unreadable: Exception | None = None
        if conn in ready or conn.poll():
            try:
                return conn.recv()
            except Exception as exc:  # noqa: BLE001 - EOF: it died (its shared tensors went with it)
                unreadable = exc
        proc.join(timeout=5)
        code = None if proc.is_alive() else proc.exitcode
        self._reap()
        if code is None:
            raise PrepareWorkerDied(f"the prepare worker (pid {pid}) sent an answer that could not be read while "
                                    f"{doing} ({type(unreadable).__name__}: {unreadable}); it was stopped")
        raise PrepareWorkerDied(f"the prepare worker (pid {pid}) died while {doing} ({_how(code)})")


def _how(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
