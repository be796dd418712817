"""Tiny random-weight models of REAL architectures, built locally for tests and offline smoke runs.

Each builder writes one directory holding safetensors weights, a config and a processor
(a real image processor plus a byte-level BPE tokenizer trained here with
:func:`pixscribe.testing.train_tokenizer`, and a real chat template that accepts the
Hugging Face content format ``[{"type": "image"}, {"type": "text", "text": ...}]``).
The directories load with the ordinary entry points, offline::

    AutoProcessor.from_pretrained(d); AutoModelForImageTextToText.from_pretrained(d)
    AutoTokenizer.from_pretrained(d); AutoModelForCausalLM.from_pretrained(d)   # text LLM

Families that need no torchvision:

- ``llava``: :class:`LlavaForConditionalGeneration` (CLIP vision tower + Llama) with
  :class:`LlavaProcessor` (CLIP PIL image processor, 32 px, 16 image tokens).
- ``idefics3``: :class:`Idefics3ForConditionalGeneration` (the SmolVLM architecture:
  SigLIP-like vision tower, pixel shuffle connector, Llama) with :class:`Idefics3Processor`
  (image splitting on: up to 2x2 crops of 32 px plus the global image).
- :func:`build_tiny_text_llm`: :class:`Qwen2ForCausalLM` with a ChatML template.

Families that need torchvision (:data:`QWEN_VL_BUILDERS`, :func:`build_tiny_qwen_vlms`):

- ``qwen3_vl``: :class:`Qwen3VLForConditionalGeneration` (the default VLM's architecture:
  DeepStack vision tower, interleaved M-RoPE) with :class:`Qwen3VLProcessor`.
- ``qwen2_5_vl``: :class:`Qwen2_5_VLForConditionalGeneration` (window-attention vision
  tower) with :class:`Qwen2_5_VLProcessor`.

Both use the real :class:`Qwen2VLImageProcessor` with the real checkpoints' settings
(dynamic resolution within a pixel budget, one ``<|image_pad|>`` per 2x2 merged patch),
and chat templates written here that render the same text as the real ones
(:data:`QWEN3_VL_CHAT_TEMPLATE`, :data:`QWEN25_VL_CHAT_TEMPLATE`). The vocabulary is a
stand-in (Qwen's special tokens plus a small BPE), the towers are tiny.

Weights are random: outputs are gibberish, but every code path (templates, image
tokens, padding, generate, decode) is the real one. Building is idempotent: a directory
that already loads is reused. ``python -m pixscribe.testing.tiny DIR`` builds all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from . import train_tokenizer

SEED = 0
_MARKER = "pixscribe_tiny.json"  # written last: a directory without it is rebuilt
_VERSION = 4  # bump whenever a builder changes, so reused directories are rebuilt

# Text towers: 2 heads of 64 over a hidden size of 128. vLLM's CPU attention takes head sizes of
# 32 and up (it starts with 8 or 16 and dies on the first request), and its Qwen2 text model
# derives the head size from hidden_size / heads, so both must be set this way to be served.
TEXT = dict(hidden_size=128, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)

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


# Qwen chat templates, written here to render the same text as the real ones for every
# branch pixscribe can reach (system/user/assistant turns, images, text; no tools). Facts
# taken from the published templates: ChatML turns ``<|im_start|>ROLE\n...<|im_end|>\n``,
# each image part as ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands
# ``<|image_pad|>`` to one token per merged patch), ``Picture N: `` before it only with
# ``add_vision_id``, and the generation prompt ``<|im_start|>assistant\n``.
_QWEN_PARTS = (
    r"{%- for part in message['content'] -%}"
    r"{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    r"{%- set count.images = count.images + 1 -%}"
    r"{%- if add_vision_id -%}{{- 'Picture ' ~ count.images ~ ': ' -}}{%- endif -%}"
    r"{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    r"{%- elif part['type'] == 'video' or 'video' in part -%}"
    r"{%- set count.videos = count.videos + 1 -%}"
    r"{%- if add_vision_id -%}{{- 'Video ' ~ count.videos ~ ': ' -}}{%- endif -%}"
    r"{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    r"{%- elif 'text' in part -%}{{- part['text'] -}}"
    r"{%- endif -%}"
    r"{%- endfor -%}"
)
_QWEN_TEXT_PARTS = (
    r"{%- for part in message['content'] -%}"
    r"{%- if 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    r"{%- endfor -%}"
)
_QWEN_CONTENT = (
    r"{%- if message['content'] is string -%}{{- message['content'] -}}"
    r"{%- else -%}" + _QWEN_PARTS + r"{%- endif -%}"
)
_QWEN_GENERATION_PROMPT = r"{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"

# Qwen2.5-VL: every turn in order; "You are a helpful assistant." when the first turn is not
# a system turn.
QWEN25_VL_CHAT_TEMPLATE = (
    r"{%- set count = namespace(images=0, videos=0) -%}"
    r"{%- for message in messages -%}"
    r"{%- if loop.first and message['role'] != 'system' -%}"
    r"{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' -}}"
    r"{%- endif -%}"
    r"{{- '<|im_start|>' ~ message['role'] ~ '\n' -}}" + _QWEN_CONTENT + r"{{- '<|im_end|>\n' -}}"
    r"{%- endfor -%}" + _QWEN_GENERATION_PROMPT
)

# Qwen3-VL Instruct: no default system prompt; a leading system turn keeps only its text;
# user turns keep images and text, assistant turns only text; other system turns are dropped.
QWEN3_VL_CHAT_TEMPLATE = (
    r"{%- if messages and messages[0]['role'] == 'system' -%}"
    r"{%- set message = messages[0] -%}"
    r"{{- '<|im_start|>system\n' -}}"
    r"{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}" + _QWEN_TEXT_PARTS
    + r"{%- endif -%}{{- '<|im_end|>\n' -}}"
    r"{%- endif -%}"
    r"{%- set count = namespace(images=0, videos=0) -%}"
    r"{%- for message in messages -%}"
    r"{%- if message['role'] == 'user' -%}"
    r"{{- '<|im_start|>user\n' -}}" + _QWEN_CONTENT + r"{{- '<|im_end|>\n' -}}"
    r"{%- elif message['role'] == 'assistant' -%}"
    r"{{- '<|im_start|>assistant\n' -}}"
    r"{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}" + _QWEN_TEXT_PARTS
    + r"{%- endif -%}{{- '<|im_end|>\n' -}}"
    r"{%- endif -%}"
    r"{%- endfor -%}" + _QWEN_GENERATION_PROMPT
)

# Qwen's special tokens in the real vocabulary's order.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _tiny_llama(vocab_size: int, *, bos: int | None, eos: int, pad: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        **TEXT,
        num_hidden_layers=2,
        max_position_embeddings=2048,
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


def _finish(path: Path, kind: str, model, processor_or_tokenizer, *, rename: dict[str, str] | None = None) -> Path:
    """Save ``model`` and its processor; ``rename`` maps saved key prefixes to the ones the
    published checkpoints of the family use (what vLLM loads)."""
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
    if rename:
        _rename_keys(path / "model.safetensors", rename)
    (path / _MARKER).write_text(json.dumps({"kind": kind, "version": _VERSION, "class": type(model).__name__}))
    return path


def _rename_keys(file: Path, prefixes: dict[str, str]) -> None:
    from safetensors.torch import load_file, save_file

    def new(key: str) -> str:
        for old, repl in prefixes.items():
            if key.startswith(old) and not key.startswith(repl):
                return repl + key[len(old) :]
        return key

    tensors = load_file(file)
    save_file({new(k): v for k, v in tensors.items()}, file, metadata={"format": "pt"})


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
    # transformers 5 saves the CLIP tower as vision_tower.embeddings.*; the llava-hf checkpoints
    # (and so vLLM's loader, and transformers' own) have vision_tower.vision_model.embeddings.*
    return _finish(path, "llava", model, processor, rename={"vision_tower.": "vision_tower.vision_model."})


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
        **TEXT,
        num_hidden_layers=2,
        max_position_embeddings=2048,
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


def torchvision_missing() -> str | None:
    """Why the Qwen-VL builders cannot run here (their processors need torchvision), or None."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return (
            "torchvision is not installed: the Qwen-VL processors need it "
            "(pip install torch==2.14.1 torchvision==0.29.1)"
        )
    return None


def _qwen_tokenizer(chat_template: str):
    """A stand-in vocabulary with Qwen's special tokens; EOS <|im_end|>, pad <|endoftext|>."""
    tok = train_tokenizer(
        QWEN_SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    tok.chat_template = chat_template
    return tok


def _qwen_token_ids(tok) -> dict[str, int]:
    ids = tok.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _qwen_text(tok, *, head_dim: int, mrope_section: list[int], **extra) -> dict:
    """Text-tower settings shared by the Qwen-VL builders (M-RoPE scaled down to ``head_dim``)."""
    return dict(
        vocab_size=len(tok),
        **TEXT,
        num_hidden_layers=2,
        head_dim=head_dim,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section, **extra},
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def _qwen_finish(path: Path, kind: str, config, model_cls, processor, tok) -> Path:
    config.pad_token_id = tok.pad_token_id
    _seeded()
    model = model_cls(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.pad_token_id]  # as the real ones
    model.generation_config.bos_token_id = None
    return _finish(path, kind, model, processor)


def build_tiny_qwen3_vl(root: str | Path, *, force: bool = False) -> Path:
    """A tiny Qwen3-VL (the default VLM's architecture) in ``root/qwen3_vl``; needs torchvision.

    The image processor keeps the real Qwen3-VL preprocessor settings: patch 16, merge 2,
    a pixel budget of ``shortest_edge`` 65,536 to ``longest_edge`` 16,777,216, mean/std 0.5.
    """
    path = Path(root) / "qwen3_vl"
    if not force and _loads(path, "qwen3_vl"):
        return path
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tok = _qwen_tokenizer(QWEN3_VL_CHAT_TEMPLATE)
    text = _qwen_text(tok, head_dim=64, mrope_section=[12, 10, 10], mrope_interleaved=True)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text["hidden_size"],
        num_position_embeddings=64,  # an 8x8 grid, interpolated to each image's grid
        deepstack_visual_indexes=[0],
    )
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_token_ids(tok))
    half = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 65_536, "longest_edge": 16_777_216}, **half),
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": 4_096, "longest_edge": 25_165_824}, **half),
        tokenizer=tok,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    return _qwen_finish(path, "qwen3_vl", config, Qwen3VLForConditionalGeneration, processor, tok)


def build_tiny_qwen2_5_vl(root: str | Path, *, force: bool = False) -> Path:
    """A tiny Qwen2.5-VL in ``root/qwen2_5_vl``; needs torchvision.

    The image processor keeps the real Qwen2.5-VL settings: patch 14, merge 2, ``min_pixels``
    3,136 to ``max_pixels`` 12,845,056, CLIP mean/std; the vision tower keeps window attention
    (112 px windows) with one full-attention block.
    """
    path = Path(root) / "qwen2_5_vl"
    if not force and _loads(path, "qwen2_5_vl"):
        return path
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _qwen_tokenizer(QWEN25_VL_CHAT_TEMPLATE)
    text = _qwen_text(tok, head_dim=64, mrope_section=[8, 12, 12])
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        out_hidden_size=text["hidden_size"],
    )
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_token_ids(tok))
    patches = dict(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=3_136, max_pixels=12_845_056, **patches),
        video_processor=Qwen2VLVideoProcessor(**patches),
        tokenizer=tok,
        chat_template=QWEN25_VL_CHAT_TEMPLATE,
    )
    return _qwen_finish(path, "qwen2_5_vl", config, Qwen2_5_VLForConditionalGeneration, processor, tok)


QWEN_VL_BUILDERS: dict[str, Callable[..., Path]] = {
    "qwen3_vl": build_tiny_qwen3_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
}


def build_tiny_qwen_vlms(root: str | Path, *, force: bool = False) -> dict[str, Path]:
    """Build the tiny Qwen-VL families under ``root`` (needs torchvision); ``{family: directory}``."""
    reason = torchvision_missing()
    if reason:
        from ..deps import MissingDependency

        raise MissingDependency(reason)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {name: build(root, force=force) for name, build in QWEN_VL_BUILDERS.items()}


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
    """Every tiny model; the Qwen-VL families only where torchvision is installed."""
    out = build_tiny_vlms(root, force=force)
    out["text_llm"] = build_tiny_text_llm(root, force=force)
    if torchvision_missing() is None:
        out.update(build_tiny_qwen_vlms(root, force=force))
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
    reason = torchvision_missing()
    if reason:
        print(f"skipped {', '.join(QWEN_VL_BUILDERS)}: {reason}", file=sys.stderr)
    return 0


__all__ = [
    "QWEN_VL_BUILDERS",
    "VLM_BUILDERS",
    "build_all",
    "build_tiny_idefics3",
    "build_tiny_llava",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen3_vl",
    "build_tiny_qwen_vlms",
    "build_tiny_text_llm",
    "build_tiny_vlms",
    "dir_size",
    "torchvision_missing",
]


if __name__ == "__main__":  # pragma: no cover - exercised by a subprocess test
    raise SystemExit(main())
