"""Tiny random-weight models of the REAL vision-expert architectures, built locally.

Each builder writes one directory with safetensors weights, a config and the real
processor (image processor + a tokenizer trained here), so the experts load it with the
same ``from_pretrained`` code they use for hub ids, offline:

- ``owlv2``: :class:`Owlv2ForObjectDetection` + :class:`Owlv2Processor` (64 px, BPE tokenizer)
- ``grounding_dino``: :class:`GroundingDinoForObjectDetection` (Swin + BERT, 2 decoder
  layers: fewer breaks weight tying) + :class:`GroundingDinoProcessor` (a ``BertTokenizer``
  built from a word vocabulary: v5's ``vocab_file=`` path silently loses the vocabulary)
- ``sam``: :class:`SamModel` + :class:`SamProcessor` (64 px input, 16 px low-res masks)
- ``depth_anything``: :class:`DepthAnythingForDepthEstimation` (DINOv2 backbone) + DPT image processor
- ``dpt``: :class:`DPTForDepthEstimation` (ViT backbone) + DPT image processor
- ``florence2``: :class:`Florence2ForConditionalGeneration` (DaViT + BART) + :class:`Florence2Processor`
  with ``<loc_0>..<loc_999>`` tokens and the post-processor config ``post_process_generation`` needs.
- ``florence2_regions``: the same, with a decoder set to always answer two regions (a
  "cat" and a "dog" box), so region-based stages have regions to work on.

Weights are random, so outputs are meaningless, but every processor, forward and
post-processing path is the real one. Building is idempotent (a marker file is written
last). ``python -m pixscribe.testing.tiny_experts DIR`` builds them all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from . import CORPUS, train_tokenizer

SEED = 0
_MARKER = "pixscribe_tiny_expert.json"
_VERSION = 2

FLORENCE_EXTRA_TOKENS = [
    "<od>", "</od>", "<ocr>", "</ocr>", "<poly>", "</poly>", "<sep>", "<cap>", "</cap>", "<ncap>", "</ncap>",
    "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>", "<region_cap>", "</region_cap>",
    "<proposal>", "</proposal>", "<and>",
]  # fmt: skip

# As in the released Florence-2 processor configs.
FLORENCE_POST_PROCESSOR_CONFIG = {
    "NUM_BBOX_HEIGHT_BINS": 1000,
    "NUM_BBOX_WIDTH_BINS": 1000,
    "ocr": {
        "PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "AREA_THRESHOLD": 0.0,
    },
    "phrase_grounding": {"FILTER_BY_SCORES": False, "banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def _word_vocab(specials: list[str]) -> dict[str, int]:
    words: list[str] = []
    for s in CORPUS:
        for w in s.replace(",", " , ").replace(".", " . ").split():
            if w not in words:
                words.append(w)
    toks = list(dict.fromkeys(specials + [".", ","] + sorted(words)))
    return {t: i for i, t in enumerate(toks)}


def build_owlv2(d: Path) -> None:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    tok = train_tokenizer(
        special_tokens=["<|startoftext|>", "<|endoftext|>", "!"],
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="!", unk_token="<|endoftext|>",
        model_max_length=16,
    )  # fmt: skip
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=64, patch_size=16)  # fmt: skip
    _seed()
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    proc = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": 64, "width": 64}), tokenizer=tok)
    model.save_pretrained(d)
    proc.save_pretrained(d)


def build_grounding_dino(d: Path) -> None:
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessorPil, GroundingDinoProcessor, SwinConfig)  # fmt: skip

    tok = BertTokenizer(vocab=_word_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]), do_lower_case=True,
                        model_max_length=64)  # fmt: skip
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_indices=[2, 3, 4])  # fmt: skip
    text = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    cfg = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, num_queries=20, encoder_layers=1, decoder_layers=2,
        d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        num_feature_levels=4, encoder_n_points=2, decoder_n_points=2, max_text_len=64,
    )  # fmt: skip
    _seed()
    model = GroundingDinoForObjectDetection(cfg).eval()
    # 128 px and up: a square image's last feature level is then 2x2 (at 64 px, 1x1, where the
    # extra level's GroupNorm has one value per group and fails on every square image)
    ip = GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 192})
    model.save_pretrained(d)
    GroundingDinoProcessor(image_processor=ip, tokenizer=tok).save_pretrained(d)


def build_sam(d: Path) -> None:
    from transformers import (SamConfig, SamImageProcessorPil, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)  # fmt: skip

    vision = SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                             mlp_dim=64, image_size=64, patch_size=8, global_attn_indexes=[1], window_size=4,
                             num_pos_feats=8)  # fmt: skip
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                   iou_head_hidden_dim=16)  # fmt: skip
    _seed()
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    ip = SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                              mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})  # fmt: skip
    model.save_pretrained(d)
    SamProcessor(image_processor=ip).save_pretrained(d)


def _dpt_image_processor():
    from transformers import DPTImageProcessorPil

    return DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                do_pad=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])  # fmt: skip


def build_depth_anything(d: Path) -> None:
    from transformers import Dinov2Config, DepthAnythingConfig, DepthAnythingForDepthEstimation

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
                            image_size=56, patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                            reshape_hidden_states=False)  # fmt: skip
    cfg = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                              neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                              depth_estimation_type="relative")  # fmt: skip
    _seed()
    model = DepthAnythingForDepthEstimation(cfg).eval()
    model.save_pretrained(d)
    _dpt_image_processor().save_pretrained(d)


def build_dpt(d: Path) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                    neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, use_auxiliary_head=False)  # fmt: skip
    _seed()
    model = DPTForDepthEstimation(cfg).eval()
    model.save_pretrained(d)
    DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(d)


def build_florence2(d: Path) -> None:
    from transformers import (BartConfig, CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)  # fmt: skip

    locs = [f"<loc_{i}>" for i in range(1000)]
    tok = train_tokenizer(
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"] + FLORENCE_EXTRA_TOKENS + locs,
        vocab_size=1500, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", extra_special_tokens={"image_token": "<image>"}, model_max_length=128,
    )  # fmt: skip
    text = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=160,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=tok.bos_token_id)  # fmt: skip
    vision = Florence2VisionConfig(depths=[1, 1, 1, 1], embed_dim=[16, 16, 32, 32], num_heads=[1, 1, 2, 2],
                                   num_groups=[1, 1, 2, 2], window_size=2, projection_dim=32,
                                   max_position_embeddings=16, max_temporal_embeddings=4)  # fmt: skip
    _seed()
    model = Florence2ForConditionalGeneration(
        Florence2Config(text_config=text, vision_config=vision, image_token_id=tok.image_token_id)
    ).eval()
    # 64x64 input: the DaViT strides (4*2*2*2) give 2x2 tokens, plus one pooled token = 5 image tokens
    ip = CLIPImageProcessorPil(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64},
                               do_center_crop=False, image_seq_length=5, image_mean=[0.485, 0.456, 0.406],
                               image_std=[0.229, 0.224, 0.225])  # fmt: skip
    proc = Florence2Processor(image_processor=ip, tokenizer=tok, post_processor_config=FLORENCE_POST_PROCESSOR_CONFIG)
    model.save_pretrained(d)
    proc.save_pretrained(d)


# what the "florence2_regions" model answers to every image: two regions, as Florence-2 writes them
FLORENCE_REGIONS = [("cat", (100, 150, 400, 600)), ("dog", (500, 300, 900, 950))]


def build_florence2_regions(d: Path) -> None:
    """The tiny Florence-2 above, but with a decoder set (not random) so that it always answers
    :data:`FLORENCE_REGIONS` (``" cat<loc_100>...<loc_600> dog<loc_500>...</s>"``).

    Random weights give no parseable regions, so nothing downstream of the region captioner
    (SAM on region boxes, depth per mask, a rewrite with objects) would run on tiny models.
    Here every decoder layer's attention and feed-forward outputs are zeroed (so a step's
    hidden state depends only on the previous token), and an untied ``lm_head`` maps each
    token of the answer to the next. Vision tower, processor and post-processing are the real ones.
    """
    import torch
    from transformers import AutoProcessor, Florence2Config, Florence2ForConditionalGeneration

    build_florence2(d)
    proc = AutoProcessor.from_pretrained(d)
    cfg = Florence2Config.from_pretrained(d)
    cfg.tie_word_embeddings = cfg.text_config.tie_word_embeddings = False
    _seed()
    model = Florence2ForConditionalGeneration(cfg).eval()
    lm = model.model.language_model
    vocab = proc.tokenizer.get_vocab()
    seq = ["</s>", "<s>"]
    for word, box in FLORENCE_REGIONS:
        seq += ["\u0120" + word] + [f"<loc_{b}>" for b in box]
    ids = [vocab[t] for t in seq + ["</s>"]]
    with torch.no_grad():
        for layer in lm.decoder.layers:
            for mod in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                mod.weight.zero_()
                mod.bias.zero_()
        lm.decoder.embed_positions.weight.zero_()
        from . import sample_photo

        inputs = proc(text=["<DENSE_REGION_CAPTION>"], images=[sample_photo("coffee")], return_tensors="pt")
        out = model(**inputs, decoder_input_ids=torch.tensor([ids[:-1]]), output_hidden_states=True)
        hidden = out.decoder_hidden_states[-1][0]
        head = torch.zeros_like(model.lm_head.weight)
        for k in range(len(ids) - 1):
            head[ids[k + 1]] = 10 * hidden[k]
        model.lm_head.weight.copy_(head)
    model.save_pretrained(d)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "owlv2": build_owlv2,
    "grounding_dino": build_grounding_dino,
    "sam": build_sam,
    "depth_anything": build_depth_anything,
    "dpt": build_dpt,
    "florence2": build_florence2,
    "florence2_regions": build_florence2_regions,
}


def build_tiny_expert(name: str, root: str | Path) -> Path:
    """Build (or reuse) one tiny expert under ``root/name``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny expert {name!r}; available: {', '.join(BUILDERS)}")
    d = Path(root) / name
    marker = d / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("version") == _VERSION:
                return d
        except (OSError, ValueError):
            pass
    d.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](d)
    marker.write_text(json.dumps({"name": name, "version": _VERSION, "seed": SEED}))
    return d


def build_tiny_experts(root: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build every tiny expert (or ``names``) under ``root``; returns name -> directory."""
    return {n: build_tiny_expert(n, root) for n in (names or list(BUILDERS))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pixscribe.testing.tiny_experts",
                                 description="Build tiny random-weight vision experts for offline tests.")  # fmt: skip
    ap.add_argument("directory")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BUILDERS)}")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.only.split(",") if n.strip()] or None
    for name, path in build_tiny_experts(a.directory, names).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
