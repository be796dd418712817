"""The ``--backend vllm`` half of bench/gpu_recap.py: run with the python of an environment that has
vllm and pixscribe (on the CPU here: the venv ``dev/vllm-venv`` makes; on a GPU: ``pip install
'pixscribe[vllm]'``). Each measurement is a process of its own, so the GPU memory of one engine is
free before the next starts:

    python bench/gpu_recap_vllm.py model-only MODEL JPEGS WARMUP --n N --batch B --tokens T --max-pixels P ...
        vLLM's own offline throughput: the JPEGs decoded within the pixel budget beforehand (as
        pixscribe's decode pool hands them over), every conversation in ONE ``LLM.chat`` call (how
        vLLM's docs say to use it), timed around that call after a warm-up on other images. The
        ``LLM`` is made by pixscribe's ``VLLMBackend.engine()``, so its arguments are the same.
    python bench/gpu_recap_vllm.py caption ARGS...
        ``pixscribe caption ARGS...`` as the CLI runs it, with two additions: every reply is
        exactly max_new_tokens long (``min_tokens`` = ``max_tokens``, ``ignore_eos``: random
        weights say nothing about when to stop; the model-only pass gets the same), and, with
        PIXSCRIBE_BENCH_BUSY=FILE, the engine's busy time is written to FILE (:class:`BusyProbe`).

Both use the same ``SamplingParams`` (pixscribe's ``sampling_params`` plus the fixed length).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

for _k, _v in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)


def fix_reply_length() -> None:
    """Every reply exactly ``max_new_tokens`` long, in pixscribe's backend and in this file."""
    from pixscribe.backends import vllm_backend as vb

    plain = vb.sampling_params

    def fixed(vllm: Any, req: Any) -> Any:
        sp = plain(vllm, req)
        sp.min_tokens, sp.ignore_eos = sp.max_tokens, True
        return sp

    if getattr(plain, "__name__", "") != "fixed":
        vb.sampling_params = fixed


# ---- vLLM's own throughput ---------------------------------------------------------------------
def model_only(a: argparse.Namespace) -> dict[str, Any]:
    from pixscribe.backends import GenerationRequest, Sampling
    from pixscribe.backends import vllm_backend as vb
    from pixscribe.methods.recap import RECAP_PROMPT
    from pixscribe.imaging import decode

    fix_reply_length()
    be = vb.VLLMBackend(a.model, max_pixels=a.max_pixels, dtype=a.dtype, engine_kwargs=json.loads(a.engine))
    llm = be.engine()
    files = sorted(Path(a.jpegs).glob("*.jpg"))[: a.n]
    s = Sampling(max_new_tokens=a.tokens)

    def inputs(paths: list[Path]) -> tuple[list[Any], list[Any]]:
        reqs = [GenerationRequest.simple(RECAP_PROMPT, [decode(p.read_bytes(), max_pixels=a.max_pixels).image],
                                         sampling=s) for p in paths]
        return [vb.to_vllm_messages(r, a.max_pixels) for r in reqs], [vb.sampling_params(be.vllm, r) for r in reqs]

    convs, params = inputs(files)
    warm = inputs(sorted(Path(a.warmup).glob("*.jpg"))[: a.batch])  # other images: vLLM caches processor outputs
    llm.chat(*warm, use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.chat(convs, sampling_params=params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    image_id = llm.llm_engine.model_config.hf_config.image_token_id
    image_tokens = sum(t == image_id for t in outs[0].prompt_token_ids)
    return {"img_s": len(outs) / seconds, "seconds": seconds, "tokens_out": tokens, "image_tokens": image_tokens}


# ---- pixscribe caption, instrumented -------------------------------------------------------------
class BusyProbe:
    """When the engine held work, from the caller's side and the engine core's clock.

    A request is in the engine from the moment ``add_request`` returns to the engine core's
    timestamp of the step that finished it (both ``time.monotonic``, one machine). The engine is
    busy while it holds at least one request; a gap is time it held none: it waited for
    pixscribe. Busy is not full: ``mean_requests_held`` says how many requests it held on
    average (with two batches of B in flight, up to 2B). Also kept per batch: the time vLLM
    rendered it on the caller's thread (``enqueue_chat``: chat template, image processor,
    tokenizer, adding) and the time that batch waited for the driver's lock before that."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.batches: list[dict[str, float]] = []
        self._lock = threading.Lock()

    def attach(self, llm: Any, driver: Any) -> None:
        from pixscribe.backends.vllm_backend import _external

        eng, core = llm.llm_engine, llm.llm_engine.engine_core
        add, get, enqueue_chat, enqueue = eng.add_request, core.get_output, llm.enqueue_chat, driver._enqueue
        entered = threading.local()

        def add_request(request_id: str, *args: Any, **kw: Any) -> Any:
            out = add(request_id, *args, **kw)
            with self._lock:
                self.added[_external(request_id)] = time.monotonic()
            return out

        def get_output() -> Any:
            outs = get()
            with self._lock:
                for o in outs.outputs:
                    if o.finished:
                        self.finished[_external(o.request_id)] = outs.timestamp or time.monotonic()
            return outs

        def timed_chat(convs: Any, *args: Any, **kw: Any) -> Any:
            entered.t = time.monotonic()
            try:
                return enqueue_chat(convs, *args, **kw)
            finally:
                with self._lock:
                    self.batches.append({"n": len(convs), "render_s": time.monotonic() - entered.t,
                                         "lock_wait_s": entered.t - entered.asked})

        def timed_enqueue(convs: Any, params: Any) -> Any:
            entered.asked = time.monotonic()
            return enqueue(convs, params)

        eng.add_request, core.get_output, llm.enqueue_chat, driver._enqueue = (add_request, get_output, timed_chat,
                                                                               timed_enqueue)

    def figures(self) -> dict[str, Any]:
        spans = sorted((self.added[k], self.finished[k]) for k in self.added if k in self.finished)
        if not spans:
            return {"requests": 0}
        start = min(b for _, b in spans)  # warm-up: up to the first finished request
        end = max(b for _, b in spans)
        gaps, reach = [], start
        for a, b in spans:
            if b <= reach:
                continue
            if a > reach:
                gaps.append(a - reach)
            reach = b
        window = end - start
        held = sum(min(b, end) - max(a, start) for a, b in spans if b > start)  # request-seconds in the window
        images = sum(b["n"] for b in self.batches)
        return {"requests": len(spans), "window_s": window, "busy": 1 - sum(gaps) / window if window > 0 else 1.0,
                "gaps": len(gaps), "largest_gap_s": max(gaps, default=0.0),
                "mean_requests_held": held / window if window > 0 else 0.0,
                # steady state: the requests finished after the first reply, over that time
                "img_s_after_first_reply": sum(b > start for _, b in spans) / window if window > 0 else 0.0,
                "render_ms_per_image": 1000 * sum(b["render_s"] for b in self.batches) / max(images, 1),
                "lock_wait_ms_per_batch": 1000 * sum(b["lock_wait_s"] for b in self.batches)
                / max(len(self.batches), 1),
                "batches": len(self.batches)}


def caption(argv: list[str]) -> None:
    from pixscribe.backends import vllm_backend as vb
    from pixscribe.cli import app

    fix_reply_length()
    out = os.environ.get("PIXSCRIBE_BENCH_BUSY")
    probe = BusyProbe()
    if out:
        plain_driver = vb.EngineDriver

        class ProbedDriver(plain_driver):  # type: ignore[misc,valid-type]
            def __init__(self, llm: Any):
                super().__init__(llm)
                probe.attach(llm, self)

        vb.EngineDriver = ProbedDriver
    try:
        app(args=argv, prog_name="pixscribe")
    finally:
        if out:
            Path(out).write_text(json.dumps(probe.figures()))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "caption":
        return caption(sys.argv[1:])
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["model-only"])
    ap.add_argument("model")
    ap.add_argument("jpegs")
    ap.add_argument("warmup")
    for k in ("n", "batch", "tokens", "max_pixels"):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, required=True)
    ap.add_argument("--dtype", required=True)
    ap.add_argument("--engine", default="{}", help="LLM(...) arguments beyond pixscribe's, as JSON")
    print("RESULT " + json.dumps(model_only(ap.parse_args())), flush=True)


if __name__ == "__main__":
    main()
