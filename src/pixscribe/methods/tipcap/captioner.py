"""Captioning with a trained TIPCap model: PIL images (+ optional prompts) -> captions.

    cap = TipCapCaptioner.load("runs/tipcap")
    cap.caption([img1, img2], prompts=[["dog", "frisbee"], None])

Per batch: CLIP image embedding -> ``v - mu`` (the inverse of the gap's mean shift, see
:mod:`.noise`) -> mapping network -> prompt interaction (rows with a prompt) -> LM
generation, greedy (``num_beams=1``) or beam search. :attr:`TipCapCaptioner.timings`
accumulates the seconds spent in CLIP, in the mapping and in generation, so a stage or a
benchmark can report where the time goes. The class holds no file or resume logic: an
engine stage wraps :meth:`TipCapCaptioner.caption` (or :meth:`caption_embeddings` when
the embeddings come from a cache).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...deps import require
from ...errors import InputFileError
from .embed import ClipEncoder
from .model import TipCapModel, TokenCodec
from .noise import GapNoise

torch = require("torch", extra="tipcap", what="TIPCap captioning")

Prompt = Sequence[str] | str | None


class TipCapCaptioner:
    """A loaded TIPCap model (CLIP + head + decoder) that captions batches of images."""

    def __init__(self, model: TipCapModel, codec: TokenCodec, clip: ClipEncoder | None, meta: dict[str, Any], *,
                 device: str = "cpu", max_new_tokens: int = 30, num_beams: int = 1):
        self.model, self.codec, self.clip, self.meta = model.eval(), codec, clip, meta
        self.device, self.max_new_tokens, self.num_beams = device, max_new_tokens, num_beams
        self.timings = {"clip": 0.0, "mapping": 0.0, "generation": 0.0, "images": 0}

    @classmethod
    def load(cls, directory: str | Path, *, clip: str | None = None, device: str = "cpu",
             max_new_tokens: int = 30, num_beams: int = 1, load_clip: bool = True) -> "TipCapCaptioner":
        """Load ``directory`` written by ``pixscribe tipcap train``; ``clip`` overrides the CLIP id/dir."""
        from .train import load_lm

        st = require("safetensors.torch", extra="tipcap", package="safetensors", what="TIPCap models")
        d = Path(directory)
        meta_path = d / "tipcap.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{d} is not a TIPCap model directory (no tipcap.json); train one with "
                                    "`pixscribe tipcap train`")
        meta = json.loads(meta_path.read_text())
        lm, tok = load_lm(str(d / "lm"), None, device)
        gap = GapNoise(meta["clip_dim"], meta["noise"], learnable=meta["learned_gap"])
        model = TipCapModel(lm, meta["clip_dim"], gap, meta["prefix_length"], meta["prompt_heads"])
        head = st.load_file(str(d / "tipcap.safetensors"))
        missing, unexpected = model.load_state_dict(head, strict=False)
        bad = [k for k in missing if not k.startswith("lm.")] + list(unexpected)
        if bad:
            raise InputFileError(f"{d}/tipcap.safetensors does not match tipcap.json: {bad[:5]}")
        clip_name = clip or meta["clip"]["model"]
        enc = ClipEncoder(clip_name, revision=None if clip else meta["clip"].get("revision"), device=device) \
            if load_clip else None
        if enc is not None and enc.dim != meta["clip_dim"]:
            raise InputFileError(f"CLIP {clip_name!r} gives {enc.dim}-d embeddings, the model was trained on "
                                 f"{meta['clip_dim']}-d ones")
        codec = TokenCodec(tok, meta["max_caption_tokens"], meta["max_prompt_tokens"])
        return cls(model.to(device), codec, enc, meta, device=device, max_new_tokens=max_new_tokens,
                   num_beams=num_beams)

    def embed(self, images: Sequence[Any]) -> np.ndarray:
        """CLIP image embeddings (unit rows) of RGB PIL images."""
        if self.clip is None:
            raise RuntimeError("this captioner was loaded without CLIP (load_clip=False): pass embeddings")
        t0 = time.perf_counter()
        emb = self.clip.embed_images(list(images))
        self.timings["clip"] += time.perf_counter() - t0
        return emb

    def caption(self, images: Sequence[Any], prompts: Sequence[Prompt] | None = None) -> list[str]:
        """One caption per image; ``prompts[i]`` is a list of tags, a text, or None (no prompt)."""
        return self.caption_embeddings(self.embed(images), prompts)

    def caption_embeddings(self, image_emb: np.ndarray, prompts: Sequence[Prompt] | None = None) -> list[str]:
        """Captions from precomputed (cached) CLIP image embeddings."""
        n = len(image_emb)
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} images")
        if n == 0:
            return []
        t0 = time.perf_counter()
        with torch.no_grad():
            v = torch.as_tensor(np.asarray(image_emb), dtype=torch.float32, device=self.device)
            v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            x = self.model.gap.invert(v)
            pr = self.codec.prompts(prompts) if prompts is not None else None
            p_ids, p_mask = (pr[0].to(self.device), pr[1].to(self.device)) if pr else (None, None)
            pre = self.model.prefix(x, p_ids, p_mask)
        t1 = time.perf_counter()
        ids = self._generate(pre)
        t2 = time.perf_counter()
        self.timings["mapping"] += t1 - t0
        self.timings["generation"] += t2 - t1
        self.timings["images"] += n
        return self.codec.decode(ids)

    def _generate(self, prefix: "torch.Tensor") -> "torch.Tensor":
        am = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        with torch.no_grad():
            return self.model.lm.generate(inputs_embeds=prefix, attention_mask=am,
                                          max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                          do_sample=False, eos_token_id=self.codec.eos, pad_token_id=self.codec.pad)

    def describe(self) -> dict[str, Any]:
        """What a stage records as provenance (model, settings)."""
        return {"clip": self.meta["clip"]["model"], "setting": self.meta["setting"], "noise": self.meta["noise"],
                "num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens}


__all__ = ["TipCapCaptioner"]
