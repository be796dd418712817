"""The run configuration: one validated object, loadable from YAML, overridden by the CLI.

The run writes it (resolved) to ``OUT_DIR/_run.json`` so a run can be reproduced, and
a resumed run refuses to continue when the fields that change the output differ
(:meth:`RunConfig.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_VLM = "Qwen/Qwen3-VL-8B-Instruct"
DEFAULT_LLM = "Qwen/Qwen3-8B"
RECAP_PROMPT = "Please generate a detailed caption of this image. Please be as descriptive as possible."
PIL_MAX_IMAGE_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS

# Fields that do not change what a row contains: a resumed run may change them freely.
RUNTIME_ONLY = {
    "inputs_note",
    "output",
    "shard",
    "limit",
    "batch_size",
    "overwrite",
    "retry_errors",
    "decode_workers",
    "prefetch_batches",
    "device",
    "dtype",
    "backend",
    "base_url",
    "api_key_env",
    "concurrency",
    "request_timeout",
    "request_deadline",
    "endpoint_down_timeout",
    "max_retries",
    "structured_output",
    "progress",
    "flush_rows",
    "flush_seconds",
    "allow_private_urls",
    "url_timeout",
    "url_max_bytes",
    "allow_url_hosts",
    "config",
}


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to read and where to write
    inputs: list[str] = Field(default_factory=list)
    output: str = ""
    format: Literal["parquet", "jsonl", "tar"] = "parquet"
    method: str = "recap"

    # sharding and resume
    shard: str | None = None  # "K/N"
    shard_size: int = Field(10_000, ge=1)
    limit: int | None = Field(None, ge=0)
    overwrite: bool = False
    retry_errors: bool = False

    # images
    max_pixels: int = Field(1_000_000, ge=64)
    max_side: int | None = Field(None, ge=8)
    max_image_pixels: int = Field(PIL_MAX_IMAGE_PIXELS, ge=1)
    allow_private_urls: bool = False
    url_timeout: float = Field(30.0, gt=0)
    url_max_bytes: int = Field(50 * 1024 * 1024, ge=1)
    allow_url_hosts: list[str] = Field(default_factory=list)  # fetched from even if private or cloud metadata

    # engine
    batch_size: int = Field(8, ge=1)
    decode_workers: int = Field(2, ge=1)
    prefetch_batches: int = Field(4, ge=1)
    progress: bool = True
    flush_rows: int = Field(1024, ge=1)  # rows buffered before an atomic batch file is written
    flush_seconds: float = Field(10.0, gt=0)  # ... or seconds since the last one

    # model backend
    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    vlm: str = DEFAULT_VLM
    llm: str | None = None  # text-only model for rewriting stages; defaults to the VLM
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    trust_remote_code: bool = False
    base_url: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    concurrency: int = Field(32, ge=1)
    request_timeout: float = Field(120.0, gt=0)
    # a request's whole life across retries and waits; None = 2 x (max_retries + 1) x request_timeout
    request_deadline: float | None = Field(None, gt=0)
    # stop the run (resumable) when every endpoint has been unreachable this long; 0 = never
    endpoint_down_timeout: float = Field(300.0, ge=0)
    max_retries: int = Field(5, ge=0)
    # how a JSON schema is sent to an OpenAI-compatible server (see docs/backends.md)
    structured_output: Literal["response_format", "vllm", "sglang", "none"] = "response_format"

    # generation
    prompt: str | None = None
    prompt_file: str | None = None
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)

    # experts and profiles
    experts: list[str] = Field(default_factory=list)
    profile: Literal["lite", "full"] | None = None
    expert_models: dict[str, str] = Field(default_factory=dict)
    expert_options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-expert settings
    queries: list[str] = Field(default_factory=list)  # text queries for the open-vocabulary detectors

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", v)
        if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
            raise ValueError(f"--shard must be K/N with 0 <= K < N, got {v!r}")
        return f"{int(m.group(1))}/{int(m.group(2))}"

    @field_validator("experts", "queries", "allow_url_hosts", mode="before")
    @classmethod
    def _split_experts(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("structured_output", mode="before")
    @classmethod
    def _removed_modes(cls, v: Any) -> Any:
        from .backends.structured import REMOVED_MODES

        if v in REMOVED_MODES:
            raise ValueError(REMOVED_MODES[v])
        return v

    @property
    def shard_k_n(self) -> tuple[int, int]:
        if not self.shard:
            return 0, 1
        k, n = self.shard.split("/")
        return int(k), int(n)

    def resolved_prompt(self, default: str) -> str:
        if self.prompt_file:
            p = Path(self.prompt_file)
            if not p.is_file():
                raise ValueError(f"--prompt-file {p}: no such file")
            return p.read_text(encoding="utf-8").strip()
        return self.prompt if self.prompt is not None else default

    def fingerprint_fields(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d = {k: v for k, v in d.items() if k not in RUNTIME_ONLY}
        if self.prompt_file:  # the prompt's text matters, not the file's name
            d["prompt"] = self.resolved_prompt("")
            d.pop("prompt_file", None)
        return d

    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(yaml_path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML first, then every option given on the command line (None = not given)."""
    data: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)) and len(v) == 0 and k in data:
            continue
        data[k] = v
    return RunConfig(**data)
