"""Tiny random-weight models of REAL architectures, built locally for tests and offline smoke runs.

Each builder writes one directory holding safetensors weights, a config and a processor
(a real image processor plus a byte-level BPE tokenizer trained here with
:func:`pixscribe.testing.train_tokenizer`, and a real chat template that accepts the
Hugging Face content format ``[{"type": "image"}, {"type": "text", "text": ...}]``).
The directories load with the ordinary entry points, offline::

    AutoProcessor.from_pretrained(d); AutoModelForImageTextToText.from_pretrained(d)
    AutoTokenizer.from_pretrained(d); AutoModelForCausalLM.from_pretrained(d)   # text LLM

Families (none needs torchvision):

- ``llava``: :class:`LlavaForConditionalGeneration` (CLIP vision tower + Llama) with
  :class:`LlavaProcessor` (CLIP PIL image processor, 32 px, 16 image tokens).
- ``idefics3``: :class:`Idefics3ForConditionalGeneration` (the SmolVLM architecture:
  SigLIP-like vision tower, pixel shuffle connector, Llama) with :class:`Idefics3Processor`
  (image splitting on: up to 2x2 crops of 32 px plus the global image).
- :func:`build_tiny_text_llm`: :class:`Qwen2ForCausalLM` with a ChatML template.

Weights are random: outputs are gibberish, but every code path (templates, image
tokens, padding, generate, decode) is the real one. Building is idempotent: a directory
that already loads is reused. ``python -m pixscribe.testing.tiny DIR`` builds all.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Callable

from . import train_tokenizer

SEED = 0
_MARKER = "pixscribe_tiny.json"  # written last: a directory without it is rebuilt
_VERSION = 2  # bump whenever a builder changes, so reused directories are rebuilt

# Chat templates. Content may be a string or a list of {"type": "image"|"text"} parts.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_llama(vocab_size: int, *, bos: int | None, eos: int, pad: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )


def _loads(path: Path, kind: str) -> bool:
    """True when ``path`` holds a complete tiny model of this builder's version."""
    marker = path / _MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("kind") != kind or meta.get("version") != _VERSION:
        return False
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def _finish(path: Path, kind: str, model, processor_or_tokenizer) -> Path:
    import torch

    from transformers.utils import logging as hf_logging

    path.mkdir(parents=True, exist_ok=True)
    (path / _MARKER).unlink(missing_ok=True)
    model.to(torch.float32)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)  # safetensors (the default)
        processor_or_tokenizer.save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    (path / _MARKER).write_text(json.dumps({"kind": kind, "version": _VERSION, "class": type(model).__name__}))
    return path


def _seeded(offset: int = 0) -> None:
    import torch

    torch.manual_seed(SEED + offset)


def build_tiny_llava(root: str | Path, *, force: bool = False) -> Path:
    """A tiny LLaVA (CLIP vision 32 px / patch 8 + Llama) in ``root/llava``."""
    path = Path(root) / "llava"
    if not force and _loads(path, "llava"):
        return path
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = train_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tok.chat_template = LLAVA_CHAT_TEMPLATE
    image_size, patch = 32, 8
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
        projection_dim=32,
    )
    text = _tiny_llama(
        len(tok),
        bos=tok.bos_token_id,
        eos=tok.eos_token_id,
        pad=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    config.pad_token_id = tok.pad_token_id
    _seeded()
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return _finish(path, "llava", model, processor)


def build_tiny_idefics3(root: str | Path, *, force: bool = False) -> Path:
    """A tiny Idefics3 / SmolVLM-architecture model in ``root/idefics3``."""
    path = Path(root) / "idefics3"
    if not force and _loads(path, "idefics3"):
        return path
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
        "<global-img>",
        *grid,
    ]
    tok = train_tokenizer(
        specials,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = IDEFICS3_CHAT_TEMPLATE
    image_size, patch, scale = 32, 8, 2
    image_seq_len = ((image_size // patch) ** 2) // (scale**2)
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
    )
    text = _tiny_llama(len(tok), bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id)
    config = Idefics3Config(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    _seeded()
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    return _finish(path, "idefics3", model, processor)


def build_tiny_text_llm(root: str | Path, *, force: bool = False) -> Path:
    """A tiny Qwen2 causal LM with a ChatML template in ``root/text_llm``."""
    path = Path(root) / "text_llm"
    if not force and _loads(path, "text_llm"):
        return path
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = train_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,  # tied tiny models just repeat the last prompt token
    )
    _seeded(1)  # this seed gives varied output and an early EOS on short prompts
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return _finish(path, "text_llm", model, tok)


VLM_BUILDERS: dict[str, Callable[..., Path]] = {
    "llava": build_tiny_llava,
    "idefics3": build_tiny_idefics3,
}


def build_tiny_vlms(root: str | Path, *, force: bool = False) -> dict[str, Path]:
    """Build every tiny VLM family under ``root``; returns ``{family: directory}``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {name: build(root, force=force) for name, build in VLM_BUILDERS.items()}


def build_all(root: str | Path, *, force: bool = False) -> dict[str, Path]:
    out = build_tiny_vlms(root, force=force)
    out["text_llm"] = build_tiny_text_llm(root, force=force)
    return out


def dir_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pixscribe.testing.tiny",
        description="Build tiny random-weight models of real VLM/LLM architectures (offline).",
    )
    parser.add_argument("dir", help="directory to build into (one subdirectory per model)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a model is already there")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name, path in build_all(args.dir, force=args.force).items():
        print(f"{name}\t{path}\t{dir_size(path) / 1e6:.2f} MB")
    return 0


__all__ = [
    "VLM_BUILDERS",
    "build_all",
    "build_tiny_idefics3",
    "build_tiny_llava",
    "build_tiny_text_llm",
    "build_tiny_vlms",
    "dir_size",
]


if __name__ == "__main__":  # pragma: no cover - exercised by a subprocess test
    raise SystemExit(main())
