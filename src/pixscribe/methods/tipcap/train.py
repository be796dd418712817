"""``pixscribe tipcap train``: train TIPCap's decoder on text, with the gap model of the chosen setting.

Each step takes a batch of texts, adds a gap sample to their CLIP embeddings
(:class:`.noise.GapNoise`), maps them to a prefix, fuses the prompt (the caption's own
nouns, with dropout) by cross-attention, and minimises the captions' cross-entropy; in
settings 2 and 4 with full noise, ``kl_weight * KL / d`` keeps the learned covariance near
its prior. Everything random in a step is seeded by ``(seed, step)``, so a resumed run
continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...deps import require
from ...errors import InputFileError, ModelUnavailable
from .checkpoint import export_model, find_checkpoint, load_checkpoint, read_state, save_checkpoint
from .config import TrainConfig
from .embed import quiet_hf
from .model import TipCapModel, TokenCodec
from .noise import GapNoise
from .nouns import extract_nouns
from .prepare import Prepared, prepare

torch = require("torch", extra="tipcap", what="TIPCap training")

FORMAT_VERSION = 1


class TrainingMismatch(InputFileError):
    """The output directory holds a run with other settings."""

    kind = "TrainingMismatch"  # as error rows and messages named it before it joined the family


def load_lm(name: str, revision: str | None, device: str):
    """Any Hugging Face causal LM and its tokenizer (safetensors only, no remote code)."""
    tf = require("transformers", extra="tipcap", what="TIPCap's decoder")
    kw = {"revision": revision, "trust_remote_code": False}
    try:
        with quiet_hf():
            tok = tf.AutoTokenizer.from_pretrained(name, **kw)
            lm = tf.AutoModelForCausalLM.from_pretrained(name, use_safetensors=True, **kw)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"the decoder {name!r} could not be loaded ({exc}); pass a hub id or a local directory "
                               "with safetensors weights") from exc
    return lm.to(device).float(), tok


def build_model(cfg: TrainConfig, data: Prepared):
    """The LM, the trainable head and the gap noise loaded with the estimated gap."""
    lm, tok = load_lm(cfg.lm, cfg.lm_revision, cfg.device)
    gap = GapNoise(data.dim, cfg.noise, learnable=cfg.learns_gap)
    chol = data.gap.cholesky()
    gap.set_gap(data.gap.mean, chol, isotropic_variance=_isotropic_variance(cfg, data))
    torch.manual_seed(cfg.seed)
    model = TipCapModel(lm, data.dim, gap, cfg.prefix_length, cfg.prompt_heads).to(cfg.device)
    if cfg.freeze_lm:
        model.lm.requires_grad_(False)
    return model, tok


def _isotropic_variance(cfg: TrainConfig, data: Prepared) -> float:
    """CapDec's sigma^2: ``--noise-variance``, else the estimated gap's mean variance, else 0.016."""
    if cfg.noise_variance is not None:
        return cfg.noise_variance
    return float(np.trace(data.gap.cov)) / data.dim


class _Batches:
    """Deterministic batches: epoch ``e`` is a permutation seeded by ``(seed, e)``; step ``s`` is a slice."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs, self.seed = n, batch_size, seed
        self._perm: dict[int, np.ndarray] = {}

    def _epoch(self, e: int) -> np.ndarray:
        if e not in self._perm:
            self._perm = {e: np.random.default_rng([self.seed, e]).permutation(self.n)}
        return self._perm[e]

    def indices(self, step: int) -> np.ndarray:
        start = step * self.bs
        return np.array([self._epoch((start + i) // self.n)[(start + i) % self.n] for i in range(self.bs)])


def _prompts(nouns: list[list[str]], rng: np.random.Generator, cfg: TrainConfig) -> list[list[str]]:
    """Training prompts: the caption's nouns, dropped whole or one by one, in random order."""
    out = []
    for ns in nouns:
        if not ns or rng.random() < cfg.prompt_dropout:
            out.append([])
            continue
        kept = [n for n in ns if rng.random() >= cfg.noun_dropout]
        out.append([kept[i] for i in rng.permutation(len(kept))])
    return out


def _step_loss(model, codec: TokenCodec, cfg: TrainConfig, data: Prepared, nouns, idx, step: int):
    torch.manual_seed(cfg.seed * 1_000_003 + step)
    rng = np.random.default_rng([cfg.seed, step, 7])
    dev = cfg.device
    t = torch.from_numpy(data.text_emb[idx]).to(dev)
    cap_ids, cap_mask = codec.captions([data.texts[i] for i in idx])
    pr = codec.prompts(_prompts([nouns[i] for i in idx], rng, cfg))
    p_ids, p_mask = (pr[0].to(dev), pr[1].to(dev)) if pr else (None, None)
    ce = model.caption_loss(model.gap.sample(t), cap_ids.to(dev), cap_mask.to(dev), p_ids, p_mask)
    kl = model.gap.kl() / data.dim
    return ce + cfg.kl_weight * kl, ce, kl


def _optimizer(model, cfg: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _progress(cfg: TrainConfig, console: Any):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("tipcap train"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=not cfg.progress, transient=False)


class _Curve:
    """Mean loss per window of steps (window = steps // 200, at least 1)."""

    def __init__(self, steps: int, saved: list | None = None):
        self.window = max(1, steps // 200)
        self.points: list[list[float]] = list(saved or [])
        self._acc: list[float] = []

    def add(self, step: int, loss: float) -> None:
        self._acc.append(loss)
        if (step + 1) % self.window == 0:
            self.points.append([step + 1, float(np.mean(self._acc))])
            self._acc = []


def _resume(out: Path, cfg: TrainConfig, model, opt) -> tuple[int, list]:
    ckpt = find_checkpoint(out)
    if ckpt is None:
        return 0, []
    state = load_checkpoint(ckpt, model, opt)  # train() checked the settings' fingerprint
    return int(state["step"]), state.get("curve", [])


def _loop(model, codec, cfg: TrainConfig, data: Prepared, out: Path, console: Any) -> dict[str, Any]:
    opt = _optimizer(model, cfg)
    step, saved_curve = _resume(out, cfg, model, opt)
    start_step = step
    curve = _Curve(cfg.steps, saved_curve)
    nouns = [extract_nouns(t) for t in data.texts]
    batches = _Batches(len(data.texts), cfg.batch_size, cfg.seed)
    model.train()
    last = {"loss": math.nan, "ce": math.nan, "kl": 0.0}
    t0 = time.monotonic()

    def checkpoint() -> None:
        save_checkpoint(out, model, opt, {"step": step, "fingerprint": cfg.fingerprint(), "curve": curve.points})

    with _progress(cfg, console) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, loss="-")
        try:
            while step < cfg.steps:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
                loss, ce, kl = _step_loss(model, codec, cfg, data, nouns, batches.indices(step), step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = {"loss": loss.item(), "ce": ce.item(), "kl": kl.item()}
                curve.add(step, last["loss"])
                step += 1
                bar.update(task, completed=step, loss=f"{last['loss']:.4f}")
                if step % cfg.save_every == 0 and step < cfg.steps:
                    checkpoint()
        except KeyboardInterrupt:
            checkpoint()
            raise
    checkpoint()
    return {"start_step": start_step, "steps": step, "seconds": round(time.monotonic() - t0, 3),
            "last": last, "curve": curve.points,
            "nouns": {"texts_with_nouns": sum(bool(n) for n in nouns), "texts": len(nouns)}}


def _gap_report(data: Prepared, model) -> tuple[dict[str, Any], dict[str, Any]]:
    stats = {"estimated": data.gap.summary()}
    arrays = {"mean": data.gap.mean, "cov_estimated": data.gap.cov}
    learned = model.gap.covariance().detach().cpu().double().numpy()
    arrays["cov_used"] = learned
    ev = np.linalg.eigvalsh(learned) if model.gap.mode != "none" else np.zeros(1)
    stats["used"] = {"mode": model.gap.mode, "learned": model.gap.learnable, "cov_trace": float(np.trace(learned)),
                     "cov_eig_min": float(ev[0]), "cov_eig_max": float(ev[-1]),
                     "isotropic_sigma": float(model.gap.sigma), "kl_to_prior": float(model.gap.kl().detach())}
    return stats, arrays


def _meta(cfg: TrainConfig, data: Prepared, model, tok) -> dict[str, Any]:
    import transformers

    return {"format": "pixscribe-tipcap", "version": FORMAT_VERSION, "clip": data.clip, "lm_source": cfg.lm,
            "lm_revision": cfg.lm_revision, "clip_dim": data.dim, "hidden": model.hidden,
            "prefix_length": cfg.prefix_length, "prompt_heads": cfg.prompt_heads, "noise": cfg.noise,
            "learned_gap": cfg.learns_gap, "setting": cfg.setting, "max_caption_tokens": cfg.max_caption_tokens,
            "max_prompt_tokens": cfg.max_prompt_tokens, "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizer": type(tok).__name__}


def _check_output(cfg: TrainConfig) -> Path:
    out = Path(cfg.output)
    if cfg.overwrite and out.exists():
        for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp", "lm"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = find_checkpoint(out)
    if ckpt is not None and read_state(ckpt).get("fingerprint") != cfg.fingerprint():
        raise TrainingMismatch(f"{out} holds a TIPCap run with other settings ({ckpt}/state.json); "
                               "use another -o directory, the same settings, or --overwrite")
    return out


def train(cfg: TrainConfig, console: Any = None) -> dict[str, Any]:
    """Run (or resume) training into ``cfg.output``; returns the content of ``training.json``."""
    _check_output(cfg)  # fail before CLIP runs
    return train_prepared(cfg, prepare(cfg, console), console)


def train_prepared(cfg: TrainConfig, data: Prepared, console: Any = None) -> dict[str, Any]:
    """Train from already embedded texts and an estimated gap (embeddings from elsewhere, e.g. a bench)."""
    out = _check_output(cfg)
    model, tok = build_model(cfg, data)
    codec = TokenCodec(tok, cfg.max_caption_tokens, cfg.max_prompt_tokens)
    run = _loop(model, codec, cfg, data, out, console)
    model.eval()
    gap_stats, gap_arrays = _gap_report(data, model)
    report = {"settings": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "data": data.sizes,
              "skipped": data.problems.summary(), "gap": gap_stats, "clip": data.clip, "training": run}
    export_model(out, model, tok, _meta(cfg, data, model, tok), gap_arrays)
    (out / "training.json").write_text(json.dumps(report, indent=1, default=float))
    return report


__all__ = ["TrainingMismatch", "build_model", "load_lm", "train", "train_prepared"]
