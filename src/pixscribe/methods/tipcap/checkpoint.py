"""Checkpoints (resumable training) and the exported model directory, all in safetensors.

A checkpoint is ``OUT/checkpoint/``: ``model.safetensors`` (every weight, LM included),
``optimizer.safetensors`` (AdamW's tensors) and ``state.json`` (step, the settings'
fingerprint, the optimizer's scalars, the loss curve). It is written to
``checkpoint.tmp`` and swapped in by renames, so a crash leaves the previous one whole.

The exported model (what :class:`.captioner.TipCapCaptioner` loads)::

    OUT/tipcap.json          architecture, CLIP id, noise mode, versions
    OUT/tipcap.safetensors   mapping network, prompt module, gap (mean, Cholesky factor)
    OUT/gap.safetensors      the estimated mean and covariance (and the learned covariance)
    OUT/lm/                  the decoder (save_pretrained, safetensors) and its tokenizer
    OUT/training.json        every setting, the data sizes, the gap statistics, the loss curve
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ...deps import require
from ...errors import InputFileError

torch = require("torch", extra="tipcap", what="TIPCap")
st = require("safetensors.torch", extra="tipcap", package="safetensors", what="TIPCap checkpoints")

CKPT, TMP, OLD = "checkpoint", "checkpoint.tmp", "checkpoint.old"


def _optimizer_tensors(opt) -> tuple[dict[str, Any], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{pid}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        pid, k = name.split("/", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, kv in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(kv)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(out: Path, model, opt, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (directory renames)."""
    tmp = out / TMP
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    st.save_model(model, str(tmp / "model.safetensors"))
    tensors, meta = _optimizer_tensors(opt)
    st.save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer": meta}))
    cur, old = out / CKPT, out / OLD
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.replace(cur, old)
    os.replace(tmp, cur)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (``checkpoint``, or ``checkpoint.old`` after a crash mid-swap)."""
    for name in (CKPT, OLD):
        d = out / name
        if (d / "state.json").is_file() and (d / "model.safetensors").is_file():
            return d
    return None


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "state.json").read_text())


def load_checkpoint(ckpt: Path, model, opt) -> dict[str, Any]:
    """Restore weights and optimizer in place; returns the saved state (step, losses...)."""
    state = read_state(ckpt)
    missing, unexpected = st.load_model(model, str(ckpt / "model.safetensors"), strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise InputFileError(f"{ckpt}: checkpoint does not match the model (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]})")
    tensors = st.load_file(str(ckpt / "optimizer.safetensors"))
    opt.load_state_dict(_optimizer_state(tensors, state.pop("optimizer")))
    return state


def export_model(out: Path, model, tokenizer, meta: dict[str, Any], gap_arrays: dict[str, Any]) -> None:
    """Write the inference directory (see the module docstring)."""
    from .embed import quiet_hf

    lm_dir = out / "lm"
    with quiet_hf():
        model.lm.save_pretrained(lm_dir)  # safetensors (transformers' only format in v5)
        tokenizer.save_pretrained(lm_dir)
    head = {k: v.detach().cpu().contiguous() for k, v in model.head_state().items()}
    st.save_file(head, str(out / "tipcap.safetensors"))
    st.save_file({k: torch.as_tensor(v, dtype=torch.float32).contiguous() for k, v in gap_arrays.items()},
                 str(out / "gap.safetensors"))
    (out / "tipcap.json").write_text(json.dumps(meta, indent=1))


__all__ = ["export_model", "find_checkpoint", "load_checkpoint", "read_state", "save_checkpoint"]
