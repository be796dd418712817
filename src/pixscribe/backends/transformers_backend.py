"""A local Hugging Face transformers model as a :class:`Backend`.

Vision-language models load with ``AutoProcessor`` + ``AutoModelForImageTextToText``;
text-only models (no vision part in their config) with ``AutoTokenizer`` +
``AutoModelForCausalLM``. Weights must be safetensors; remote code runs only when asked
(``trust_remote_code=True``).

Requests are grouped (same sampling, with/without images), prompts are built with the
model's own chat template, batched with LEFT padding, generated under
``torch.inference_mode()`` and only the new tokens are decoded. If a batch fails (out
of memory, one unreadable image), each request is retried alone so the error stays
with the request that caused it.

``max_pixels`` (``--max-pixels``) is the visual budget. Images arrive already decoded
within it; for processors that resize dynamically to a pixel budget (the Qwen-VL family:
Qwen2-VL, Qwen2.5-VL, Qwen3-VL) it is also passed as their ``size={"longest_edge": ...}``
so the number of image tokens follows it (``shortest_edge`` is lowered to it if larger).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..deps import MissingDependency, pip_hint
from ..record import format_error
from ..torchdev import resolve_device, resolve_dtype  # noqa: F401 (re-exported)
from .base import Backend, BackendUnavailable, GenerationRequest, GenerationResult

if TYPE_CHECKING:  # pragma: no cover
    from ..api.models import ModelSpec
    from ..config import RunConfig


JSON_INSTRUCTION = (
    "\n\nAnswer only with a JSON object (no prose, no code fences) that matches this JSON schema:\n{schema}"
)


def _looks_like_path(model: str) -> bool:
    if model.startswith(("/", "./", "../", "~", ".\\")) or model in (".", ".."):
        return True
    # a hub id is "name" or "org/name"; anything deeper is a local path
    return model.count("/") > 1 or "\\" in model


def _unavailable(model: str, reason: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"cannot load model {model!r}: {reason.rstrip('. ')}. "
        f"Point to a local copy with --vlm /path/to/dir (make one on a machine with access using "
        f"`hf download {model if not _looks_like_path(model) else '<hub-id>'} --local-dir DIR`), "
        f"or use a server with --backend openai --base-url http://host:8000/v1."
    )


def _missing(model: str, exc: ImportError) -> MissingDependency:
    """A package the model's processor or class needs is not installed (e.g. torchvision)."""
    if "torchvision" in str(exc).lower():
        reason, package = "its processor needs torchvision, which is not installed", "torchvision"
    else:
        reason, package = f"a package it needs is not installed ({_short(exc)})", None
    return MissingDependency(f"cannot load model {model!r}: {reason}: {pip_hint('transformers', package)}")


def _is_vision_config(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if getattr(config, "model_type", None) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return True
    auto_map = getattr(config, "auto_map", None) or {}
    if any(k in auto_map for k in ("AutoModelForImageTextToText", "AutoModelForVision2Seq")):
        return True
    return getattr(config, "vision_config", None) is not None


def _with_schema_instruction(req: GenerationRequest) -> GenerationRequest:
    """Append 'answer with JSON matching this schema' to the last user turn."""
    if req.json_schema is None:
        return req
    text = JSON_INSTRUCTION.format(schema=json.dumps(req.json_schema, sort_keys=True))
    messages = copy.deepcopy(req.messages)
    for msg in reversed(messages):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                msg["content"] = content + text
            else:
                parts = list(content or [])
                for part in reversed(parts):
                    if part.get("type") == "text":
                        part["text"] = str(part.get("text", "")) + text
                        break
                else:
                    parts.append({"type": "text", "text": text.lstrip()})
                msg["content"] = parts
            break
    else:
        messages.append({"role": "user", "content": [{"type": "text", "text": text.lstrip()}]})
    return GenerationRequest(
        messages=messages, images=req.images, sampling=req.sampling, json_schema=req.json_schema, id=req.id
    )


def _count_placeholders(messages: list[dict[str, Any]]) -> int:
    n = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            n += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image")
    return n


# Image processors whose ``size`` is a pixel budget (``shortest_edge``/``longest_edge`` in
# pixels, resized by ``smart_resize``) rather than a side length: the Qwen-VL family.
_PIXEL_BUDGET_PROCESSORS = ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil")


def pixel_budget_kwargs(image_processor: Any, max_pixels: int | None) -> dict[str, Any]:
    """``images_kwargs`` that hold a pixel-budget image processor to ``max_pixels``; else ``{}``."""
    if not max_pixels or image_processor is None:
        return {}
    if not any(c.__name__ in _PIXEL_BUDGET_PROCESSORS for c in type(image_processor).__mro__):
        return {}
    size = getattr(image_processor, "size", None)
    shortest = getattr(size, "shortest_edge", None)
    if shortest is None and isinstance(size, dict):
        shortest = size.get("shortest_edge")
    shortest = min(int(shortest), int(max_pixels)) if shortest else int(max_pixels)
    return {"size": {"shortest_edge": shortest, "longest_edge": int(max_pixels)}}


def _check_request(req: GenerationRequest) -> str | None:
    """Reasons a request cannot be generated at all (checked before batching)."""
    from PIL import Image

    n = _count_placeholders(req.messages)
    if n != len(req.images):
        return f"the messages have {n} image placeholder(s) but {len(req.images)} image(s) were given"
    for i, im in enumerate(req.images):
        if not isinstance(im, Image.Image):
            return f"image {i} is a {type(im).__name__}, not a PIL image"
        if im.width < 1 or im.height < 1:
            return f"image {i} is empty ({im.width}x{im.height})"
    return None


class TransformersBackend(Backend):
    """Generate with a local transformers model (hub id or local directory)."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_batch_size: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__()
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1 or None")
        self.model = str(model)
        self.requested_revision = revision
        self.revision = None  # the resolved commit hash once loaded
        self.device_request = device
        self.dtype_request = dtype
        self.trust_remote_code = trust_remote_code
        self.max_batch_size = max_batch_size
        self.max_pixels = max_pixels  # the visual budget, for processors that take one
        self.processor: Any = None  # AutoProcessor (VLM) or AutoTokenizer (text model)
        self.tokenizer: Any = None
        self.hf_model: Any = None
        self.is_vlm: bool | None = None
        self.padding_side = "left"  # generation appends on the right, so prompts pad on the left
        self.device: str | None = None
        self.torch_dtype: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: "ModelSpec", config: "RunConfig", *, max_batch_size: int | None = None):
        """The model of ``spec`` (its revision, dtype and device), with the run's settings."""
        return cls(
            spec.model,
            revision=spec.revision,
            device=spec.device,
            dtype=spec.dtype,
            trust_remote_code=config.trust_remote_code,
            max_batch_size=max_batch_size,
            max_pixels=config.max_pixels,
        )

    @classmethod
    def from_config(cls, config: "RunConfig", *, model: str | None = None, max_batch_size: int | None = None):
        """From a :class:`~pixscribe.config.RunConfig`'s VLM (``model`` overrides ``config.vlm``)."""
        from ..api.models import resolve_spec

        spec = resolve_spec(config, "vlm")
        return cls.from_spec(dataclasses.replace(spec, model=model) if model else spec, config,
                             max_batch_size=max_batch_size)

    # ---- loading ------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.hf_model is not None

    def _source(self) -> tuple[str, dict[str, Any]]:
        """Where to load from, and the hub kwargs; raises BackendUnavailable for a missing dir."""
        p = Path(self.model).expanduser()
        if p.exists():
            if not p.is_dir():
                raise _unavailable(self.model, f"{p} is a file, expected a model directory")
            if not (p / "config.json").is_file():
                raise _unavailable(self.model, f"{p} has no config.json, so it is not a transformers model directory")
            return str(p), {}
        if _looks_like_path(self.model):
            raise _unavailable(self.model, f"no such directory {p}")
        kw: dict[str, Any] = {}
        if self.requested_revision:
            kw["revision"] = self.requested_revision
        return self.model, kw

    def load(self) -> "TransformersBackend":
        """Load processor and model (idempotent). Raises BackendUnavailable when unreachable."""
        with self._lock:
            if self.hf_model is not None:
                return self
            self._load()
        return self

    def _load(self) -> None:
        from ..deps import require

        require("torch", extra="transformers", what="--backend transformers")
        transformers = require("transformers", extra="transformers", what="--backend transformers")
        from transformers import AutoConfig

        src, hub_kw = self._source()
        trc = bool(self.trust_remote_code)
        try:
            config = AutoConfig.from_pretrained(src, trust_remote_code=trc, **hub_kw)
        except OSError as exc:  # not on disk, hub unreachable/offline, unknown id, gated
            reason = _short(exc)
            if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
                reason = f"HF_HUB_OFFLINE is set and it is not in the local cache ({reason})"
            raise _unavailable(self.model, reason) from exc
        except ValueError as exc:  # e.g. an architecture needing trust_remote_code
            raise _unavailable(self.model, _short(exc) + " (remote code is only run with --trust-remote-code)") from exc
        self.device = resolve_device(self.device_request)
        self.torch_dtype = resolve_dtype(self.dtype_request, self.device)
        self.is_vlm = _is_vision_config(config)
        load_kw: dict[str, Any] = dict(trust_remote_code=trc, **hub_kw)
        try:
            if self.is_vlm:
                processor = transformers.AutoProcessor.from_pretrained(src, **load_kw)
                tokenizer = getattr(processor, "tokenizer", None)
                if tokenizer is None:
                    raise BackendUnavailable(f"model {self.model!r}: its processor has no tokenizer")
                model_cls = transformers.AutoModelForImageTextToText
            else:
                processor = tokenizer = transformers.AutoTokenizer.from_pretrained(src, **load_kw)
                model_cls = transformers.AutoModelForCausalLM
            if self.device != "cpu" and importlib.util.find_spec("accelerate") is not None:
                load_kw["device_map"] = self.device  # load straight onto the GPU
            model = model_cls.from_pretrained(src, dtype=self.torch_dtype, use_safetensors=True, **load_kw)
        except (BackendUnavailable, MissingDependency):
            raise
        except ImportError as exc:  # e.g. the Qwen-VL processors need torchvision
            raise _missing(self.model, exc) from exc
        except (OSError, ValueError) as exc:
            raise _unavailable(self.model, _short(exc)) from exc
        model.to(self.device).eval()
        tokenizer.padding_side = self.padding_side
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(tokenizer, "chat_template", None) is None and getattr(processor, "chat_template", None) is None:
            raise BackendUnavailable(
                f"model {self.model!r} has no chat template; use an instruction-tuned model "
                "(one whose tokenizer or processor defines chat_template)"
            )
        self.processor, self.tokenizer, self.hf_model = processor, tokenizer, model
        self.revision = getattr(model.config, "_commit_hash", None) or None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.loaded:
            d["device"] = self.device
            d["dtype"] = str(self.torch_dtype).replace("torch.", "")
        else:
            d["device"] = self.device_request
            d["dtype"] = self.dtype_request
        return d

    def close(self) -> None:
        self.hf_model = self.processor = self.tokenizer = None

    # ---- generation ---------------------------------------------------------------
    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        if any(r.json_schema is not None for r in requests):
            from .structured import generate_with_schema  # parse, repair, validate, one stricter retry

            prepared = [_with_schema_instruction(r) for r in requests]
            return generate_with_schema(prepared, self._generate_plain)
        return self._generate_plain(requests)

    def _generate_plain(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            reason = _check_request(req)
            if reason is None and req.images and not self.is_vlm:
                reason = f"model {self.model!r} is a text-only model and cannot read images"
            if reason is not None:
                results[i] = GenerationResult(error=f"input: {reason}")
                continue
            s = req.sampling
            key = (
                bool(req.images),
                s.max_new_tokens,
                s.greedy,
                None if s.greedy else s.temperature,
                None if s.greedy else s.top_p,
                None if s.greedy else s.seed,
            )
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            step = self.max_batch_size or len(idx)
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                for i, res in zip(chunk, self._run_chunk([requests[i] for i in chunk])):
                    results[i] = res
        return [r if r is not None else GenerationResult(error="generate: no result") for r in results]

    def _run_chunk(self, reqs: list[GenerationRequest]) -> list[GenerationResult]:
        try:
            return self._run_batch(reqs)
        except Exception as exc:
            if len(reqs) == 1:
                return [GenerationResult(error=format_error(exc, "generate"))]
            _free_cache()
        out = []
        for req in reqs:  # alone, so the error stays with the request that caused it
            try:
                res = self._run_batch([req])[0]
            except Exception as exc:  # noqa: BLE001 - any failure becomes this row's error
                res = GenerationResult(error=format_error(exc, "generate"))
            res.retries += 1
            out.append(res)
        return out

    def _prompt(self, req: GenerationRequest) -> str:
        return self.processor.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)

    def encode(self, reqs: list[GenerationRequest]) -> Any:
        """The model inputs for one batch: chat-templated prompts, LEFT padded, images processed."""
        import torch

        self.load()
        texts = [self._prompt(r) for r in reqs]
        bos = getattr(self.tokenizer, "bos_token", None)
        # a chat template that already writes BOS must not get a second one from the tokenizer
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        tok_kw: dict[str, Any] = dict(
            padding=True, padding_side=self.padding_side, return_tensors="pt", add_special_tokens=add_special
        )
        if self.is_vlm and any(r.images for r in reqs):
            budget = pixel_budget_kwargs(getattr(self.processor, "image_processor", None), self.max_pixels)
            inputs = self.processor(
                text=texts,
                images=[list(r.images) for r in reqs],  # nested: one list per request
                **({"images_kwargs": budget} if budget else {}),
                **tok_kw,
            )
        elif self.is_vlm:
            inputs = self.processor(text=texts, **tok_kw)
        else:
            inputs = self.tokenizer(texts, **tok_kw)
        inputs = inputs.to(self.device)
        for k, v in list(inputs.items()):
            if torch.is_tensor(v) and v.is_floating_point():
                inputs[k] = v.to(self.torch_dtype)
        return inputs

    def _run_batch(self, reqs: list[GenerationRequest]) -> list[GenerationResult]:
        import torch

        t0 = time.perf_counter()
        inputs = self.encode(reqs)
        s = reqs[0].sampling
        pad_id = self.tokenizer.pad_token_id
        gen_kw: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, do_sample=not s.greedy, pad_token_id=pad_id)
        if s.greedy:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        else:
            gen_kw.update(temperature=s.temperature, top_p=s.top_p)
            if s.seed is not None:
                torch.manual_seed(s.seed)
        with torch.inference_mode():
            out = self.hf_model.generate(**inputs, **gen_kw)
        n_in = inputs["input_ids"].shape[1]
        new = out[:, n_in:] if out.shape[1] >= n_in else out
        stop = _stop_ids(self.hf_model, self.tokenizer)
        texts_out = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        mask = inputs.get("attention_mask")
        took = time.perf_counter() - t0
        per = took / len(reqs)  # each request's share of the batch; each waited for all of it
        results = []
        for i, text in enumerate(texts_out):
            tokens_in = int(mask[i].sum()) if mask is not None else int(n_in)
            n_out, stopped = _n_generated(new[i], stop)
            truncated = not stopped and n_out >= s.max_new_tokens  # no stop token within max_new_tokens
            results.append(
                GenerationResult(
                    text=text.strip(), tokens_in=tokens_in, tokens_out=n_out, seconds=per, latency=took,
                    finish_reason="length" if truncated else "stop", truncated=truncated,
                )
            )
        return results


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in eos if isinstance(eos, (list, tuple)) else [eos]:
        if v is not None:
            ids.add(int(v))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _n_generated(row: Any, stop: set[int]) -> tuple[int, bool]:
    """New tokens up to and including the first stop token (the rest is padding), and
    whether a stop token was generated at all (if not, the reply was cut at the limit)."""
    for j, t in enumerate(row.tolist()):
        if t in stop:
            return j + 1, True
    return int(row.shape[0]), False


def _free_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


__all__ = ["TransformersBackend", "resolve_device", "resolve_dtype", "pixel_budget_kwargs", "JSON_INSTRUCTION"]
