"""The run configuration: one validated object, loadable from YAML, overridden by the CLI.

The run writes it (resolved) to ``OUT_DIR/_run.json`` so a run can be reproduced. What a
resumed run compares is not this object but the method's stage fingerprints (each stage's
model, prompt, sampling and thresholds; see ``engine/stage.py``) plus the output format and
the image budget: a field no stage uses (``--llm`` for recap, say) changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

DEFAULT_VLM = "Qwen/Qwen3-VL-8B-Instruct"
PIL_MAX_IMAGE_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS

# --structured-output modes that were removed, and what to use instead
REMOVED_MODES = {
    "vllm-legacy": (
        "--structured-output vllm-legacy (guided_json) was removed: vLLM >= 0.12 ignores guided_json and "
        "answers with unconstrained text; use response_format (the default, honoured by every vLLM >= 0.6) "
        "or vllm (structured_outputs, vLLM >= 0.10.2)"
    ),
}

# Fields that concern the models, recorded in _run.json only when a stage uses a model.
MODEL_FIELDS = ("backend", "vlm", "llm", "llm_backend", "llm_base_url", "revision", "device", "dtype",
                "trust_remote_code", "base_url", "api_key_env", "concurrency", "request_timeout", "max_retries",
                "request_deadline", "endpoint_down_timeout", "structured_output", "on_degenerate", "models",
                "vllm_engine", "prepare_workers")


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
    update: bool = False  # process exactly the new and changed inputs (see engine/manifest.py)
    verify: bool = False  # check finished parts' checksums, not only their size and footer
    wait: bool = False  # wait for another run holding our shards instead of failing
    lease_timeout: float = Field(60.0, gt=0)  # a claim whose owner is silent this long is dead
    executor: Literal["local", "ray"] = "local"
    # --executor ray (engine/ray/executor.py, docs/scale.md): where, and each stage group's actor pool
    ray_address: str | None = None  # a running cluster ("auto", "ray://host:10001", "host:6379"); None: a local one
    replicas: int = Field(1, ge=1)  # actors per stage group (the least, with max_replicas)
    max_replicas: int | None = Field(None, ge=1)  # autoscale between replicas and this
    num_gpus: float | None = Field(None, ge=0)  # per replica (fractions share a GPU); None: 1 for a local model on a GPU cluster
    replica_cpus: float = Field(1.0, ge=0)  # CPUs each replica holds
    ray_stages: dict[str, dict[str, Any]] = Field(default_factory=dict)  # stage -> {replicas, max_replicas, num_gpus, num_cpus}
    reuse: list[str] = Field(default_factory=list)  # output directories whose stage outputs may be reused
    no_reuse: bool = False  # --overwrite recomputes everything
    until: str | None = None  # run the method's stages up to this one

    # images
    max_pixels: int = Field(1_000_000, ge=64)
    max_side: int | None = Field(None, ge=8)
    max_image_pixels: int = Field(PIL_MAX_IMAGE_PIXELS, ge=1)
    allow_private_urls: bool = False
    allow_any_path: bool = False  # paths in lists/tables/symlinks may leave the input folders
    url_timeout: float = Field(30.0, gt=0)
    url_max_bytes: int = Field(50 * 1024 * 1024, ge=1)
    allow_url_hosts: list[str] = Field(default_factory=list)  # fetched from even if private or cloud metadata

    # engine
    batch_size: int = Field(8, ge=1)
    decode_workers: int = Field(2, ge=1)
    prefetch_batches: int = Field(4, ge=1)
    progress: bool = True
    log_every: float = Field(30.0, gt=0)  # not a terminal (a Slurm log): a progress line every this many seconds
    flush_rows: int = Field(1024, ge=1)  # rows buffered before an atomic batch file is written
    flush_seconds: float = Field(10.0, gt=0)  # ... or seconds since the first buffered row

    # models (roles: see engine/models.py)
    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    vlm: str = DEFAULT_VLM
    llm: str | None = None  # text model for text-only stages; default: the VLM itself
    llm_backend: Literal["transformers", "openai", "vllm"] | None = None
    llm_base_url: list[str] = Field(default_factory=list)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)  # role -> {model, backend, base_url, ...}
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    trust_remote_code: bool = False
    # transformers backend: processes running the processor ahead of generate (None: 0 on the
    # CPU, up to 4 on a GPU; 0: on the model's thread); see backends/transformers_backend.py
    prepare_workers: int | None = Field(None, ge=0)
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
    # a reply still looping after the loop guard's retries (backends/loops.py): the row is an
    # error ("degenerate: ...") or keeps the reply, flagged ``degenerate`` in provenance
    on_degenerate: Literal["error", "keep"] = "error"
    # --backend vllm: more vllm.LLM(...) arguments (max_model_len, gpu_memory_utilization, tensor_parallel_size...)
    vllm_engine: dict[str, Any] = Field(default_factory=dict)

    # generation: the method's main stage (None = the method's default); other stages: `stages`
    prompt: str | None = None
    prompt_file: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)  # stage name -> its options

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

    @field_validator("experts", "queries", "reuse", "allow_url_hosts", mode="before")
    @classmethod
    def _split_experts(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("structured_output", mode="before")
    @classmethod
    def _removed_modes(cls, v: Any) -> Any:
        if v in REMOVED_MODES:
            raise ValueError(REMOVED_MODES[v])
        return v

    @property
    def shard_k_n(self) -> tuple[int, int]:
        if not self.shard:
            return 0, 1
        k, n = self.shard.split("/")
        return int(k), int(n)

    def recorded(self, uses_models: bool = True) -> dict[str, Any]:
        """The configuration as _run.json records it (model fields only if a model is used)."""
        d = self.model_dump(mode="json")
        if not uses_models:
            for k in MODEL_FIELDS:
                d.pop(k, None)
        return d


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(yaml_path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML first, then every option given on the command line (None = not given). A value
    the configuration refuses is a :class:`ConfigError` naming the option (``--shard-size: ...``)."""
    data: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)) and len(v) == 0 and k in data:
            continue
        data[k] = v
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as the flags it concerns: ``--shard-size: Input should be ...``."""
    return "; ".join(
        f"--{'.'.join(str(x) for x in e['loc']).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
