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

``prepare_workers`` (``--prepare-workers``): the processor (chat template, image processor,
tokenizer) runs ahead of the model in that many worker processes
(:mod:`pixscribe.backends.prepare_pool`), and the engine keeps ``prepare_workers + 1`` batches
in flight: while one generates (``generate`` is serialised by a lock), the next ones are being
prepared, so the model's thread only moves tensors to the device (pinned, non-blocking on CUDA)
and generates. 0 prepares on the calling thread, right before ``generate``. The default is 0 on
the CPU (the model's own threads use every core) and, on a GPU, half the cores this process may
use less one, between 1 and 4 (:func:`default_prepare_workers`). A text-only model needs no
image processor: its batches are tokenized on their own threads, outside the lock.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..deps import MissingDependency, pip_hint
from ..record import format_error
from ..torchdev import resolve_device, resolve_dtype  # noqa: F401 (re-exported)
from .base import Backend, BackendUnavailable, GenerationRequest, GenerationResult
from .hf_inputs import (Encoder, ProcessorSpec, cast_floats, load_processor, pinned, pixel_budget_kwargs,
                        processor_info, to_device)
from .prepare_pool import default_prepare_workers, device_guess

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


class _Later:
    """A batch's inputs made when asked for, on the asking thread (a text-only model's)."""

    def __init__(self, fn: Any):
        self.fn = fn

    def result(self) -> Any:
        return self.fn()


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
        prepare_workers: int | None = None,
        image_backend: str | None = None,
    ) -> None:
        super().__init__()
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1 or None")
        if prepare_workers is not None and prepare_workers < 0:
            raise ValueError("prepare_workers must be >= 0 or None")
        self.model = str(model)
        self.requested_revision = revision
        self.revision = None  # the resolved commit hash once loaded
        self.device_request = device
        self.dtype_request = dtype
        self.trust_remote_code = trust_remote_code
        self.max_batch_size = max_batch_size
        self.max_pixels = max_pixels  # the visual budget, for processors that take one
        self.image_backend = image_backend  # None: transformers' choice (torchvision, the fast one, if installed)
        self.processor: Any = None  # AutoProcessor (VLM) or AutoTokenizer (text model)
        self.tokenizer: Any = None
        self.encoder: Encoder | None = None
        self.hf_model: Any = None
        self.is_vlm: bool | None = None
        self.padding_side = "left"  # generation appends on the right, so prompts pad on the left
        self.device: str | None = None
        self.torch_dtype: Any = None
        self.prepare_workers = (default_prepare_workers(device_guess(device)) if prepare_workers is None
                                else int(prepare_workers))
        # the engine keeps this many batches in flight: one generating, the others being prepared
        self.max_inflight_batches = self.prepare_workers + 1 if self.prepare_workers else 1
        self.pool: Any = None  # the PreparePool, once loaded (a VLM with prepare_workers > 0)
        self._lock = threading.Lock()
        self._gen_lock = threading.Lock()  # one generate at a time, however many batches are in flight

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
            prepare_workers=config.prepare_workers,
        )

    @classmethod
    def from_config(cls, config: "RunConfig", *, model: str | None = None, max_batch_size: int | None = None):
        """From a :class:`~pixscribe.config.RunConfig`'s VLM (``model`` overrides ``config.vlm``)."""
        from ..api.models import resolve_spec

        spec = resolve_spec(config, "vlm")
        return cls.from_spec(replace(spec, model=model) if model else spec, config,
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
        require("transformers", extra="transformers", what="--backend transformers")
        src, hub_kw = self._source()
        config = self._config(src, hub_kw)
        self.device = resolve_device(self.device_request)
        self.torch_dtype = resolve_dtype(self.dtype_request, self.device)
        self.is_vlm = _is_vision_config(config)
        spec = ProcessorSpec(src, hub_kw, bool(self.trust_remote_code), self.is_vlm, self.image_backend)
        with _worded(self.model):
            processor, tokenizer = load_processor(spec)
        _check_chat_template(self.model, processor, tokenizer)
        pool = self._start_pool(spec, config)  # the workers start while the weights load
        try:
            with _worded(self.model):
                model = self._load_model(src, hub_kw)
            model.to(self.device).eval()
            if pool is not None:
                pool.wait_ready()
        except BaseException:
            if pool is not None:
                pool.close()
            raise
        tokenizer.padding_side = self.padding_side
        self.processor, self.tokenizer, self.hf_model = processor, tokenizer, model
        self.encoder, self.pool = Encoder(processor, tokenizer, self.is_vlm), pool
        self.revision = getattr(model.config, "_commit_hash", None) or None

    def _config(self, src: str, hub_kw: dict[str, Any]) -> Any:
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(src, trust_remote_code=bool(self.trust_remote_code), **hub_kw)
        except OSError as exc:  # not on disk, hub unreachable/offline, unknown id, gated
            reason = _short(exc)
            if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
                reason = f"HF_HUB_OFFLINE is set and it is not in the local cache ({reason})"
            raise _unavailable(self.model, reason) from exc
        except ValueError as exc:  # e.g. an architecture needing trust_remote_code
            raise _unavailable(self.model, _short(exc) + " (remote code is only run with --trust-remote-code)") from exc

    def _load_model(self, src: str, hub_kw: dict[str, Any]) -> Any:
        import transformers

        load_kw: dict[str, Any] = dict(trust_remote_code=bool(self.trust_remote_code), **hub_kw)
        model_cls = transformers.AutoModelForImageTextToText if self.is_vlm else transformers.AutoModelForCausalLM
        if self.device != "cpu" and importlib.util.find_spec("accelerate") is not None:
            load_kw["device_map"] = self.device  # load straight onto the GPU
        return model_cls.from_pretrained(src, dtype=self.torch_dtype, use_safetensors=True, **load_kw)

    def _start_pool(self, spec: ProcessorSpec, config: Any) -> Any:
        """The prepare workers of a VLM (a text model's batches are only tokenized: no processes)."""
        if not self.prepare_workers or not self.is_vlm:
            return None
        from .prepare_pool import PreparePool

        commit = getattr(config, "_commit_hash", None)
        if commit and spec.source == self.model and not Path(spec.source).expanduser().exists():
            spec = replace(spec, hub_kw={**spec.hub_kw, "revision": commit})  # the very files loaded here
        dtype = str(self.torch_dtype).replace("torch.", "")
        return PreparePool(spec, self.prepare_workers, dtype=dtype).start()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.loaded:
            d["device"] = self.device
            d["dtype"] = str(self.torch_dtype).replace("torch.", "")
            d["processor"] = processor_info(self.processor)
        else:
            d["device"] = self.device_request
            d["dtype"] = self.dtype_request
        # worker processes running the processor (a loaded text model runs none)
        d["prepare_workers"] = self.prepare_workers if not self.loaded or self.pool is not None else 0
        return d

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()
        self.hf_model = self.processor = self.tokenizer = self.encoder = None

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
            groups.setdefault(_sampling_key(req), []).append(i)
        chunks = []
        for idx in groups.values():
            step = self.max_batch_size or len(idx)
            chunks += [idx[start: start + step] for start in range(0, len(idx), step)]
        # every chunk is handed to the prepare workers now: the next ones are ready when one ends
        ahead = [self._prepare_ahead([requests[i] for i in chunk]) for chunk in chunks]
        for chunk, prepared in zip(chunks, ahead):
            for i, res in zip(chunk, self._run_chunk([requests[i] for i in chunk], prepared)):
                results[i] = res
        return [r if r is not None else GenerationResult(error="generate: no result") for r in results]

    def _prepare_ahead(self, reqs: list[GenerationRequest]) -> Any:
        """Where a batch's inputs come from: a prepare worker (starting now), this thread outside
        the generate lock (a text model), or None: this thread, right before generate."""
        if not self.prepare_workers:
            return None
        pool = self.pool
        if pool is not None:
            return pool.submit(reqs, self.max_pixels, self.padding_side)
        return _Later(lambda: self._host_inputs(reqs))

    def _run_chunk(self, reqs: list[GenerationRequest], prepared: Any = None) -> list[GenerationResult]:
        try:
            return self._run_batch(reqs, prepared)
        except Exception as exc:
            if len(reqs) == 1:
                return [GenerationResult(error=format_error(exc, "generate"))]
            _free_cache()
        out = []
        alone = [self._prepare_ahead([req]) for req in reqs]
        for req, prep in zip(reqs, alone):  # alone, so the error stays with the request that caused it
            try:
                res = self._run_batch([req], prep)[0]
            except Exception as exc:  # noqa: BLE001 - any failure becomes this row's error
                res = GenerationResult(error=format_error(exc, "generate"))
            res.retries += 1
            out.append(res)
        return out

    def _encode_host(self, reqs: list[GenerationRequest]) -> Any:
        encoder = self.encoder
        if encoder is None:  # closed while this batch was in flight: the run is stopping
            raise RuntimeError("the model was closed")
        return encoder.encode(reqs, max_pixels=self.max_pixels, padding_side=self.padding_side)

    def _host_inputs(self, reqs: list[GenerationRequest]) -> dict[str, Any]:
        return cast_floats(dict(self._encode_host(reqs)), self.torch_dtype)

    def prepared(self, reqs: list[GenerationRequest]) -> dict[str, Any]:
        """One batch's inputs as the model's thread receives them: CPU tensors, floats in the
        model's dtype (from a prepare worker when there are some)."""
        self.load()
        ahead = self._prepare_ahead(reqs)
        return ahead.result() if ahead is not None else self._host_inputs(reqs)

    def encode(self, reqs: list[GenerationRequest]) -> dict[str, Any]:
        """The model inputs for one batch, prepared on this thread: chat-templated prompts, LEFT
        padded, images processed, on the model's device and in its dtype."""
        self.load()
        return self._on_device(self._encode_host(reqs))

    def _on_device(self, host: Any, non_blocking: bool = False) -> dict[str, Any]:
        return cast_floats(to_device(host, self.device, non_blocking), self.torch_dtype)

    def _run_batch(self, reqs: list[GenerationRequest], prepared: Any = None) -> list[GenerationResult]:
        start = time.perf_counter()
        if prepared is None:  # prepared here, right before generate (prepare_workers=0)
            inputs = self._on_device(self._encode_host(reqs))
            with self._gen_lock:
                t0 = start
                new, mask = self._generate_on(inputs, reqs[0].sampling)
        else:  # prepared elsewhere: this thread only moves the tensors and generates
            host = pinned(prepared.result(), self.device)
            with self._gen_lock:
                t0 = time.perf_counter()
                new, mask = self._generate_on(self._on_device(host, non_blocking=True), reqs[0].sampling)
        end = time.perf_counter()
        # seconds: the model's time (with preparing when it ran here), shared by the batch's requests
        return self._results(reqs, new, mask, took=end - t0, latency=end - start)

    def _generate_on(self, inputs: dict[str, Any], s: Any) -> tuple[Any, Any]:
        """The new tokens and the attention mask, on the CPU (copied before the lock is let go,
        so the next batch's kernels do not queue ahead of the copy)."""
        import torch

        model = self.hf_model
        if model is None:  # closed while this batch waited for the lock: the run is stopping
            raise RuntimeError("the model was closed")
        gen_kw: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, do_sample=not s.greedy,
                                      pad_token_id=self.tokenizer.pad_token_id)
        if s.greedy:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        else:
            gen_kw.update(temperature=s.temperature, top_p=s.top_p)
            if s.seed is not None:
                torch.manual_seed(s.seed)
        if s.repetition_penalty is not None:  # the loop guard's retry (backends/loops.py)
            gen_kw["repetition_penalty"] = s.repetition_penalty
        with torch.inference_mode():
            out = model.generate(**inputs, **gen_kw)
        n_in = inputs["input_ids"].shape[1]
        new = out[:, n_in:] if out.shape[1] >= n_in else out
        mask = inputs.get("attention_mask")
        return new.cpu(), (mask.cpu() if mask is not None else torch.ones(out.shape[0], n_in, dtype=torch.long))

    def _results(self, reqs: list[GenerationRequest], new: Any, mask: Any, *, took: float,
                 latency: float) -> list[GenerationResult]:
        s = reqs[0].sampling
        stop = _stop_ids(self.hf_model, self.tokenizer)
        texts_out = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        per = took / len(reqs)  # each request's share of the batch; each waited for all of it
        results = []
        for i, text in enumerate(texts_out):
            n_out, stopped = _n_generated(new[i], stop)
            truncated = not stopped and n_out >= s.max_new_tokens  # no stop token within max_new_tokens
            results.append(
                GenerationResult(
                    text=text.strip(), tokens_in=int(mask[i].sum()), tokens_out=n_out, seconds=per,
                    latency=latency, finish_reason="length" if truncated else "stop", truncated=truncated,
                )
            )
        return results


def _sampling_key(req: GenerationRequest) -> tuple:
    """Requests batch together when they have images or not alike and the same sampling."""
    s = req.sampling
    return (
        bool(req.images),
        s.max_new_tokens,
        s.greedy,
        None if s.greedy else s.temperature,
        None if s.greedy else s.top_p,
        None if s.greedy else s.seed,
        s.repetition_penalty,
    )


def _check_chat_template(model: str, processor: Any, tokenizer: Any) -> None:
    if getattr(tokenizer, "chat_template", None) is None and getattr(processor, "chat_template", None) is None:
        raise BackendUnavailable(
            f"model {model!r} has no chat template; use an instruction-tuned model "
            "(one whose tokenizer or processor defines chat_template)"
        )


@contextlib.contextmanager
def _worded(model: str) -> Iterator[None]:
    """Loader errors as BackendUnavailable / MissingDependency naming the model and what to do."""
    try:
        yield
    except (BackendUnavailable, MissingDependency):
        raise
    except ImportError as exc:  # e.g. the Qwen-VL processors need torchvision
        raise _missing(model, exc) from exc
    except (OSError, ValueError) as exc:
        raise _unavailable(model, _short(exc)) from exc


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


__all__ = ["TransformersBackend", "default_prepare_workers", "resolve_device", "resolve_dtype", "pixel_budget_kwargs",
           "JSON_INSTRUCTION"]
