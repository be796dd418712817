"""The settings of one TIPCap training run (all of them land in ``training.json``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

NOISE_MODES = ("full", "isotropic", "none")
# The paper's four data settings, each needing less paired data than the one before.
SETTINGS = {
    "1": "paired",  # a small set of high-quality pairs + a text corpus
    "2": "web",  # web-crawled (noisy) pairs + a text corpus
    "3": "unpaired",  # images and texts that are not paired
    "4": "text",  # text only
}
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_LM = "openai-community/gpt2"

# Settings that do not change what is learned (so a resumed run may change them).
# max_text_chars only decides which malformed corpus lines are skipped (the corpus's content is
# not fingerprinted either), so raising it to let a long line in does not refuse a resume
_RUNTIME_ONLY = {"steps", "save_every", "progress", "overwrite", "device", "embed_batch_size", "cache_dir",
                 "max_text_chars"}


def canonical_setting(value: str) -> str:
    """``"1"``..``"4"`` or a name (paired, web, unpaired, text) -> the name."""
    v = str(value).strip().lower()
    if v in SETTINGS:
        return SETTINGS[v]
    if v in SETTINGS.values():
        return v
    raise ConfigError(f"unknown setting {value!r}: 1|paired, 2|web, 3|unpaired or 4|text")


@dataclass
class TrainConfig:
    """Every knob of ``pixscribe tipcap train``; defaults follow ClipCap/CapDec where the paper is silent."""

    output: str
    texts: list[str] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    setting: str = "text"
    noise: str = "full"
    clip: str = DEFAULT_CLIP
    clip_revision: str | None = None
    lm: str = DEFAULT_LM
    lm_revision: str | None = None
    text_column: str | None = None
    caption_column: str = "caption"
    prefix_length: int = 10
    prompt_heads: int = 8
    steps: int = 10_000
    batch_size: int = 40
    lr: float = 2e-5
    warmup_steps: int = 500
    weight_decay: float = 0.0
    kl_weight: float = 1.0
    noise_variance: float | None = None
    shrinkage: str = "ledoit_wolf"
    prompt_dropout: float = 0.5
    noun_dropout: float = 0.3
    max_caption_tokens: int = 40
    max_prompt_tokens: int = 32
    max_text_chars: int = 2000  # a corpus caption longer than this is skipped (tipcap.data.MAX_TEXT_CHARS)
    freeze_lm: bool = False
    save_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    embed_batch_size: int = 64
    cache_dir: str | None = None
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.setting = canonical_setting(self.setting)
        if self.noise not in NOISE_MODES:
            raise ConfigError(f"unknown noise {self.noise!r}: one of {', '.join(NOISE_MODES)}")
        if not self.texts:
            raise ConfigError("no text corpus: pass --text FILE (txt, jsonl or parquet)")
        if self.setting in ("paired", "web") and not self.pairs:
            raise ConfigError(f"setting {self.setting} needs image-caption pairs: pass --pairs INPUT")
        if self.setting not in ("paired", "web") and self.pairs:
            raise ConfigError(f"--pairs is used by settings 1 (paired) and 2 (web) only, not {self.setting}")
        if self.setting == "unpaired" and not self.images:
            raise ConfigError("setting unpaired needs unpaired images: pass --images INPUT")
        if self.setting != "unpaired" and self.images:
            raise ConfigError(f"--images is used by setting 3 (unpaired) only, not {self.setting}")
        for name in ("steps", "batch_size", "prefix_length", "save_every", "max_caption_tokens", "max_text_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("prompt_dropout", "noun_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be within [0, 1]")
        if self.noise_variance is not None and self.noise_variance <= 0:
            raise ConfigError("--noise-variance must be > 0")

    @property
    def learns_gap(self) -> bool:
        """Settings 2 and 4 learn the covariance (under the KL regulariser) when the noise is full."""
        return self.noise == "full" and self.setting in ("web", "text")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the settings that change what is learned; a resumed run must match it."""
        d = {k: v for k, v in self.to_dict().items() if k not in _RUNTIME_ONLY and k != "output"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["DEFAULT_CLIP", "DEFAULT_LM", "NOISE_MODES", "SETTINGS", "TrainConfig", "canonical_setting"]
