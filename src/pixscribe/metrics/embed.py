"""BERTScore, CLIPScore and RefCLIPScore with any local (or hub) model.

Models load with ``from_pretrained`` (a hub id or a local directory; set
``HF_HUB_OFFLINE=1`` to stay offline); ``trust_remote_code`` is off.

- BERTScore (Zhang et al. 2020): contextual token embeddings of one hidden layer,
  greedy cosine matching; P = mean over candidate tokens of the best match, R = the
  same over reference tokens, F = 2PR/(P+R); max F over the references. No idf
  weighting and no baseline rescaling (so numbers are comparable only between runs of
  the same model and layer). Special tokens ([CLS]/[SEP]) are excluded.
- CLIPScore (Hessel et al. 2021): ``w * max(cos(image, caption), 0)`` with w = 2.5;
  RefCLIPScore = harmonic mean of CLIPScore and ``max(max_r cos(caption, ref_r), 0)``.

Long captions: CLIP's text tower reads 77 tokens. A caption that does not fit is
**chunked**: split on word boundaries into pieces that each fit, every piece is
embedded, the L2-normalised embeddings are averaged and renormalised. The number of
captions that needed chunking is reported (``clip_chunked``), so nothing is silently
truncated.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ModelUnavailable


def _torch():
    from ..deps import require

    require("transformers", extra="transformers", what="BERTScore/CLIPScore")
    return require("torch", extra="transformers", what="BERTScore/CLIPScore")


def _load(processor_class: str, model_class: str, model: str, revision: str | None, device: str, what: str) -> tuple[Any, Any]:
    """(processor or tokenizer, model in eval mode) from a hub id or a local directory; safetensors only."""
    import transformers

    try:
        proc = getattr(transformers, processor_class).from_pretrained(model, revision=revision)
        net = getattr(transformers, model_class).from_pretrained(model, revision=revision, use_safetensors=True)
    except Exception as exc:
        raise ModelUnavailable(f"{what} model {model!r} could not be loaded ({exc}); give a local directory "
                               "or a hub id that is cached (HF_HUB_OFFLINE=1 blocks downloads)") from exc
    return proc, net.to(device).eval()


class _Scorer:
    """What both scorers share: torch, the model name, device and batch size, unit vectors."""

    def __init__(self, model: str, device: str, batch_size: int):
        self._torch = _torch()
        self.name = model
        self.device = device
        self.batch_size = batch_size

    def _unit(self, e: Any) -> np.ndarray:
        """L2-normalised rows (last axis) of a model output, as float numpy."""
        return self._torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy()


class BertScorer(_Scorer):
    def __init__(self, model: str, layer: int | None = None, device: str = "cpu", batch_size: int = 32,
                 revision: str | None = None):
        super().__init__(model, device, batch_size)
        self.tok, self.model = _load("AutoTokenizer", "AutoModel", model, revision, device, "BERTScore")
        self.layer = layer

    def _embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        torch = self._torch
        out: list[np.ndarray] = []
        maxlen = getattr(self.tok, "model_max_length", 512)
        maxlen = 512 if not maxlen or maxlen > 100_000 else maxlen
        for s in range(0, len(texts), self.batch_size):
            chunk = list(texts[s:s + self.batch_size])
            enc = self.tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=maxlen,
                           return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask")
            with torch.no_grad():
                o = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
            hs = self._unit(o.hidden_states[self.layer if self.layer is not None else -1])
            keep = (enc["attention_mask"].bool() & ~special.bool()).numpy()
            for i in range(len(chunk)):
                out.append(hs[i][keep[i]])
        return out

    def score(self, cands: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        ce = self._embed(cands)
        flat = [r for rs in refs for r in rs]
        re_ = self._embed(flat)
        P = np.zeros(len(cands))
        R = np.zeros(len(cands))
        F = np.zeros(len(cands))
        k = 0
        for i, rs in enumerate(refs):
            best = (-1.0, 0.0, 0.0)
            for _ in rs:
                r = re_[k]
                k += 1
                c = ce[i]
                if len(c) == 0 or len(r) == 0:
                    p = rr = f = 0.0
                else:
                    sim = c @ r.T
                    p = float(sim.max(1).mean())
                    rr = float(sim.max(0).mean())
                    f = 2 * p * rr / (p + rr) if p + rr > 0 else 0.0
                if f > best[0]:
                    best = (f, p, rr)
            F[i], P[i], R[i] = best
        return {"bertscore_p": P, "bertscore_r": R, "bertscore_f1": F}


class ClipScorer(_Scorer):
    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32, w: float = 2.5,
                 revision: str | None = None):
        super().__init__(model, device, batch_size)
        self.processor, self.model = _load("CLIPProcessor", "CLIPModel", model, revision, device, "CLIPScore")
        self.w = w
        self.tok = self.processor.tokenizer
        mp = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        self.max_tokens = int(mp)
        self.chunked = 0

    def _chunks(self, text: str) -> list[str]:
        n = len(self.tok(text)["input_ids"])
        if n <= self.max_tokens:
            return [text]
        words = text.split()
        pieces: list[str] = []
        cur: list[str] = []
        for w in words:
            trial = " ".join(cur + [w])
            if cur and len(self.tok(trial)["input_ids"]) > self.max_tokens:
                pieces.append(" ".join(cur))
                cur = [w]
            else:
                cur.append(w)
        if cur:
            pieces.append(" ".join(cur))
        # a single over-long "word" is truncated by the tokenizer (max_length below)
        return pieces

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        pieces: list[str] = []
        owner: list[int] = []
        for i, t in enumerate(texts):
            ch = self._chunks(t)
            if len(ch) > 1:
                self.chunked += 1
            pieces.extend(ch)
            owner.extend([i] * len(ch))
        embs = []
        for s in range(0, len(pieces), self.batch_size):
            enc = self.tok(pieces[s:s + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_tokens)
            with torch.no_grad():
                e = self.model.get_text_features(**{k: v.to(self.device) for k, v in enc.items()})
            embs.append(self._unit(getattr(e, "pooler_output", e)))
        E = np.concatenate(embs) if embs else np.zeros((0, 1))
        out = np.zeros((len(texts), E.shape[1]))
        np.add.at(out, np.asarray(owner), E)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        torch = self._torch
        embs = []
        for s in range(0, len(images), self.batch_size):
            px = self.processor(images=list(images[s:s + self.batch_size]), return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                e = self.model.get_image_features(pixel_values=px.to(self.device))
            embs.append(self._unit(getattr(e, "pooler_output", e)))
        return np.concatenate(embs)

    def score(self, cands: Sequence[str], images: Sequence[Any],
              refs: Sequence[Sequence[str]] | None = None) -> dict[str, np.ndarray]:
        self.chunked = 0
        ce = self.embed_texts(cands)
        ie = self.embed_images(images)
        clip = self.w * np.maximum((ce * ie).sum(1), 0.0)
        out = {"clipscore": clip}
        if refs is not None:
            flat = [r for rs in refs for r in rs]
            re_ = self.embed_texts(flat)
            best = np.zeros(len(cands))
            k = 0
            for i, rs in enumerate(refs):
                sims = re_[k:k + len(rs)] @ ce[i]
                k += len(rs)
                best[i] = max(float(sims.max()) if len(sims) else 0.0, 0.0)
            hm = np.where(clip + best > 0, 2 * clip * best / np.maximum(clip + best, 1e-12), 0.0)
            out["refclipscore"] = hm
        return out


def load_images(ids: Sequence[str], image_dir: str, exts: Sequence[str] = (".jpg", ".jpeg", ".png", ".webp")) -> list:
    """Images named ``<id><ext>`` in ``image_dir`` (COCO's zero-padded names also tried)."""
    from pathlib import Path

    from PIL import Image

    d = Path(image_dir)
    out = []
    for i in ids:
        found = None
        names = [i] + ([f"COCO_val2014_{int(i):012d}", f"{int(i):012d}"] if i.isdigit() else [])
        for nm in names:
            for e in exts:
                p = d / f"{nm}{e}"
                if p.is_file():
                    found = p
                    break
            if found:
                break
        if found is None:
            raise FileNotFoundError(f"--images {d}: no image file for id {i!r} (tried {names[0]}{exts[0]} ...)")
        out.append(Image.open(found).convert("RGB"))
    return out
