"""Shared loading for the transformers experts: hub id or local directory, safetensors only,
device and dtype as for the backends, and a clear error before a run starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ModelUnavailable
from ..torchdev import resolve_device, resolve_dtype
from .base import Expert, require

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig


class ExpertUnavailable(ModelUnavailable):
    """Raised by ``setup()`` when an expert's model cannot be loaded (before a run starts)."""

    kind = "ExpertUnavailable"  # as messages named it before it joined the user-error family


def load_pretrained(
    expert: str,
    model_id: str,
    model_class: str,
    processor_class: str = "AutoProcessor",
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> tuple[Any, Any, str, Any]:
    """``(processor, model, device, torch_dtype)`` from a hub id or a local directory.

    Loads safetensors only. Fails with :class:`ExpertUnavailable` naming the model, the
    reason, and how to point pixscribe at a local copy.
    """
    transformers = require("transformers", "transformers")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kw["revision"] = revision
    try:
        processor = getattr(transformers, processor_class).from_pretrained(model_id, **kw)
        model = getattr(transformers, model_class).from_pretrained(model_id, use_safetensors=True, dtype=torch_dtype, **kw)
    except (OSError, ValueError, EnvironmentError) as exc:
        reason = str(exc).strip().splitlines()[0].rstrip(". ") if str(exc).strip() else type(exc).__name__
        raise ExpertUnavailable(
            f"{expert}: could not load model {model_id!r}: {reason}. "
            f"If the Hugging Face hub is unreachable (offline, HF_HUB_OFFLINE=1), download it on a connected machine "
            f"(`hf download {model_id} --local-dir DIR`) and point pixscribe at the copy: "
            f"`expert_models: {{{expert}: DIR}}` in the YAML config. See docs/experts.md."
        ) from exc
    model.to(dev)
    model.eval()
    return processor, model, dev, torch_dtype


def _to_device(batch: Any, device: str, dtype: Any) -> Any:
    """Move a BatchFeature to the device; floating tensors take the model dtype."""
    out = {}
    for k, v in batch.items():
        if hasattr(v, "to"):
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out



class TransformersExpert(Expert):
    """An expert backed by a transformers model and its processor."""

    default_model = ""
    model_class = "AutoModel"
    hub_weights = True  # its weights come from the hub or a local copy (``caption --dry-run`` looks for them)
    processor_class = "AutoProcessor"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        revision: str | None = None,
        batch_size: int = 4,
    ) -> None:
        self.model = model or self.default_model
        self.device_pref, self.dtype_pref = device, dtype
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.batch_size = max(1, int(batch_size))
        self.processor: Any = None
        self.net: Any = None
        self.device = "cpu"
        self.torch_dtype: Any = None

    @classmethod
    def from_config(cls, config: "RunConfig") -> "TransformersExpert":
        return cls(config.expert_models.get(cls.name, cls.default_model), device=config.device, dtype=config.dtype,
                   trust_remote_code=config.trust_remote_code)  # fmt: skip

    def setup(self) -> None:
        if self.net is None:
            self.processor, self.net, self.device, self.torch_dtype = load_pretrained(
                self.name, self.model, self.model_class, self.processor_class, device=self.device_pref,
                dtype=self.dtype_pref, trust_remote_code=self.trust_remote_code, revision=self.revision,
            )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {"expert": self.name, "model": self.model, "revision": self.revision}
