"""TIPCap's trainable parts around a Hugging Face causal LM (GPT-2 by default).

- :class:`MappingNetwork`: the (noised) CLIP embedding -> ``prefix_length`` vectors of the
  LM's hidden size (a ClipCap-style MLP: Linear -> Tanh -> Linear).
- :class:`PromptInteraction`: cross-attention from the prefix (queries) to the prompt's
  token embeddings (keys/values, the LM's own input embeddings), added to the prefix as a
  residual. Rows without a prompt get exactly their prefix back (the no-op path), and a
  batch without any prompt skips the module.
- :class:`TipCapModel`: prefix + caption tokens through the LM (``inputs_embeds``) and the
  caption loss (generation from a prefix is in :mod:`.captioner`).
- :class:`TokenCodec`: captions and prompts to padded token ids for any tokenizer.
"""

from __future__ import annotations

import math
from typing import Sequence

from ...deps import require
from .noise import GapNoise

torch = require("torch", extra="tipcap", what="TIPCap")
nn = torch.nn


class MappingNetwork(nn.Module):
    """CLIP embedding (B, d) -> prefix (B, prefix_length, hidden)."""

    def __init__(self, clip_dim: int, hidden: int, prefix_length: int):
        super().__init__()
        self.prefix_length, self.hidden = prefix_length, hidden
        mid = max((hidden * prefix_length) // 2, hidden)
        self.net = nn.Sequential(nn.Linear(clip_dim, mid), nn.Tanh(), nn.Linear(mid, hidden * prefix_length))

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.net(x).view(x.shape[0], self.prefix_length, self.hidden)


def _heads_for(hidden: int, wanted: int) -> int:
    return math.gcd(hidden, max(1, wanted))


class PromptInteraction(nn.Module):
    """``prefix + CrossAttn(LN(prefix), LN(prompt))`` for rows that have a prompt; identity otherwise."""

    def __init__(self, hidden: int, heads: int = 8):
        super().__init__()
        self.heads = _heads_for(hidden, heads)
        self.norm_q = nn.LayerNorm(hidden)
        self.norm_kv = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, self.heads, batch_first=True)

    def forward(self, prefix: "torch.Tensor", prompt: "torch.Tensor | None" = None,
                prompt_mask: "torch.Tensor | None" = None) -> "torch.Tensor":
        if prompt is None or prompt.shape[1] == 0:
            return prefix
        valid = prompt_mask.bool() if prompt_mask is not None else torch.ones(prompt.shape[:2], dtype=torch.bool,
                                                                               device=prompt.device)
        has = valid.any(1)
        if not bool(has.any()):
            return prefix
        valid = valid.clone()
        valid[~has, 0] = True  # rows without a prompt attend to one dummy key; their update is zeroed below
        kv = self.norm_kv(prompt)
        upd, _ = self.attn(self.norm_q(prefix), kv, kv, key_padding_mask=~valid, need_weights=False)
        return prefix + upd * has[:, None, None].to(upd.dtype)


class TokenCodec:
    """Token ids for captions (+ EOS, truncated) and prompts (tags joined by ", ")."""

    def __init__(self, tokenizer, max_caption_tokens: int = 40, max_prompt_tokens: int = 32):
        self.tok = tokenizer
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise ValueError("the decoder's tokenizer has no EOS token; TIPCap needs one to end captions")
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.max_caption, self.max_prompt = max_caption_tokens, max_prompt_tokens

    def _pad(self, seqs: list[list[int]]) -> tuple["torch.Tensor", "torch.Tensor"]:
        n = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def captions(self, texts: Sequence[str]) -> tuple["torch.Tensor", "torch.Tensor"]:
        return self._pad([self._ids(t)[: self.max_caption - 1] + [self.eos] for t in texts])

    def prompts(self, tags: Sequence[Sequence[str] | str | None]) -> tuple["torch.Tensor", "torch.Tensor"] | None:
        """Padded prompt ids, or None when no row has a prompt. Tags are data: only embedded, never instructions."""
        seqs = []
        for t in tags:
            text = t if isinstance(t, str) else ", ".join(x for x in (t or []) if x)
            seqs.append(self._ids(text.strip())[: self.max_prompt] if text and text.strip() else [])
        if not any(seqs):
            return None
        return self._pad(seqs)

    def decode(self, ids: "torch.Tensor") -> list[str]:
        out = []
        for row in ids.tolist():
            if self.eos in row:
                row = row[: row.index(self.eos)]
            out.append(self.tok.decode(row, skip_special_tokens=True).strip())
        return out


class TipCapModel(nn.Module):
    """Mapping network + prompt interaction + gap noise + the causal LM."""

    def __init__(self, lm, clip_dim: int, gap: GapNoise, prefix_length: int = 10, prompt_heads: int = 8):
        super().__init__()
        self.lm = lm
        self.hidden = int(lm.get_input_embeddings().embedding_dim)
        self.mapper = MappingNetwork(clip_dim, self.hidden, prefix_length)
        self.prompt = PromptInteraction(self.hidden, prompt_heads)
        self.gap = gap
        self.prefix_length = prefix_length

    def head_state(self) -> dict[str, "torch.Tensor"]:
        """Everything but the LM (saved next to the LM's own directory)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}

    def prefix(self, x: "torch.Tensor", prompt_ids: "torch.Tensor | None" = None,
               prompt_mask: "torch.Tensor | None" = None) -> "torch.Tensor":
        p = self.mapper(x)
        if prompt_ids is None:
            return p
        return self.prompt(p, self.lm.get_input_embeddings()(prompt_ids), prompt_mask)

    def caption_loss(self, x: "torch.Tensor", cap_ids: "torch.Tensor", cap_mask: "torch.Tensor",
                     prompt_ids: "torch.Tensor | None" = None, prompt_mask: "torch.Tensor | None" = None
                     ) -> "torch.Tensor":
        """Mean token cross-entropy of the captions given the prefix of ``x`` (already noised)."""
        pre = self.prefix(x, prompt_ids, prompt_mask)
        emb = torch.cat([pre, self.lm.get_input_embeddings()(cap_ids)], dim=1)
        ones = torch.ones(pre.shape[:2], dtype=cap_mask.dtype, device=cap_mask.device)
        labels = torch.cat([torch.full_like(ones, -100), cap_ids.masked_fill(cap_mask == 0, -100)], dim=1)
        return self.lm(inputs_embeds=emb, attention_mask=torch.cat([ones, cap_mask], 1), labels=labels).loss


__all__ = ["MappingNetwork", "PromptInteraction", "TipCapModel", "TokenCodec"]
