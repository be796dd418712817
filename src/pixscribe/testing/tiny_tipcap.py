"""Tiny random-weight CLIP and GPT-2 (real architectures) for TIPCap tests and benchmarks, built locally.

- :func:`build_tiny_clip`: :class:`CLIPModel` (text + vision towers, 16-d projection) with a
  :class:`CLIPProcessor` (CLIP PIL image processor at 32 px, a byte-level BPE tokenizer
  trained here that wraps texts as ``<|startoftext|> ... <|endoftext|>`` like CLIP's).
- :func:`build_tiny_gpt2`: :class:`GPT2LMHeadModel` with a BPE tokenizer trained on
  ``sentences`` (the shared test corpus by default), EOS ``<|endoftext|>``.

Both save safetensors and load offline with ``AutoModel``/``AutoProcessor`` and
``AutoModelForCausalLM``/``AutoTokenizer``. Building is idempotent (a marker is written last).

From the shell (the offline route of docs/tipcap.md)::

    python -m pixscribe.testing.tiny_tipcap models/ [--corpus captions.txt]   # models/clip, models/gpt2

``--corpus``: the decoder's tokenizer learns the words of these captions (one per line; the
first 3,000 distinct ones), so the captions a tiny model is trained on can be written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from . import CORPUS, train_tokenizer

_MARKER = "pixscribe_tiny_tipcap.json"
_VERSION = 1


def _done(path: Path, kind: str, tag: str) -> bool:
    try:
        meta = json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta == {"kind": kind, "version": _VERSION, "tag": tag}


def _mark(path: Path, kind: str, tag: str) -> Path:
    (path / _MARKER).write_text(json.dumps({"kind": kind, "version": _VERSION, "tag": tag}))
    return path


def build_tiny_clip(root: str | Path, *, name: str = "clip", seed: int = 0) -> Path:
    """A tiny CLIPModel + CLIPProcessor in ``root/name``."""
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    path = Path(root) / name
    if _done(path, "clip", str(seed)):
        return path
    tok = train_tokenizer(special_tokens=["<|startoftext|>", "<|endoftext|>"], bos_token="<|startoftext|>",
                          eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                          model_max_length=32)
    bos, eos = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    tok._tokenizer.post_processor = TemplateProcessing(  # CLIP pools at the first <|endoftext|>
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    CLIPModel(cfg).eval().save_pretrained(path)
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(path)
    return _mark(path, "clip", str(seed))


def build_tiny_gpt2(root: str | Path, *, name: str = "gpt2", sentences: Sequence[str] | None = None,
                    hidden: int = 32, layers: int = 2, vocab_size: int = 400, seed: int = 0) -> Path:
    """A tiny GPT2LMHeadModel + tokenizer (trained on ``sentences``) in ``root/name``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sents = list(sentences or CORPUS)
    tag = hashlib.sha256(json.dumps([sents, hidden, layers, vocab_size, seed]).encode()).hexdigest()[:16]
    path = Path(root) / name
    if _done(path, "gpt2", tag):
        return path
    tok = train_tokenizer(["<|endoftext|>"], vocab_size=vocab_size, sentences=sents, bos_token="<|endoftext|>",
                          eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=2, n_positions=128,
                     bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    model.generation_config.pad_token_id = eos
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return _mark(path, "gpt2", tag)


__all__ = ["build_tiny_clip", "build_tiny_gpt2"]


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Build a tiny random-weight CLIP and GPT-2 for TIPCap, offline.")
    p.add_argument("root", help="directory to build ROOT/clip and ROOT/gpt2 in")
    p.add_argument("--corpus", help="captions, one per line: the words the decoder's tokenizer learns")
    args = p.parse_args(argv)
    sentences = None
    if args.corpus:
        lines = Path(args.corpus).read_text(encoding="utf-8").splitlines()
        sentences = sorted({x.strip() for x in lines if x.strip()})[:3000] or None
    clip = build_tiny_clip(args.root)
    gpt2 = build_tiny_gpt2(args.root, sentences=sentences)
    print(f"tiny CLIP: {clip}\ntiny GPT-2: {gpt2}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
