"""Real-size Grounding DINO with random weights, from the published configs (no hub, no weights).

For tests and benchmarks where size matters (the cost of the Swin backbone against the
text-fused encoder, memory per (image, phrase) pair). The sizes are those of the released
checkpoints' ``config.json`` and ``preprocessor_config.json``:

- ``tiny`` (IDEA-Research/grounding-dino-tiny): Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24,
  window 7, 224 px pre-training);
- ``base`` (IDEA-Research/grounding-dino-base): Swin-B (embed 128, depths 2-2-18-2, heads 4-8-16-32,
  window 12, 384 px);
- both: BERT-base-uncased text encoder (12 layers, 768 wide, vocabulary 30522), d_model 256, 6 encoder
  layers (FFN 2048, 8 heads, 4 sampling points, 4 feature levels from backbone stages 2-4), 6 decoder
  layers, 900 queries, two-stage, ``max_text_len`` 256; images resized to a shortest edge of 800 and a
  longest edge of 1333, ImageNet mean and std.

The tokenizer is a stand-in with BERT-base-uncased's ids where the model depends on them ([PAD] 0,
[UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, "." 1012, "?" 1029: Grounding DINO splits phrases
at these ids) and a small word list elsewhere.
"""

from __future__ import annotations

from typing import Any

from . import CORPUS

SWIN = {
    "tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "image_size": 224},
    "base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12,
             "image_size": 384},
}  # fmt: skip
BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029, ",": 1010}
BERT_VOCAB_SIZE = 30522
SHORTEST_EDGE, LONGEST_EDGE = 800, 1333


def grounding_dino_config(size: str = "tiny") -> Any:
    """The published ``GroundingDinoConfig`` of grounding-dino-``size`` ("tiny" or "base")."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    if size not in SWIN:
        raise ValueError(f"unknown Grounding DINO size {size!r}; choose one of {', '.join(SWIN)}")
    swin = SwinConfig(**SWIN[size], patch_size=4, mlp_ratio=4.0, drop_path_rate=0.1, out_indices=[2, 3, 4])
    bert = BertConfig(vocab_size=BERT_VOCAB_SIZE, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)  # fmt: skip
    return GroundingDinoConfig(
        backbone_config=swin, text_config=bert, d_model=256, num_queries=900, max_text_len=256,
        encoder_layers=6, encoder_ffn_dim=2048, encoder_attention_heads=8, encoder_n_points=4,
        decoder_layers=6, decoder_ffn_dim=2048, decoder_attention_heads=8, decoder_n_points=4,
        num_feature_levels=4, two_stage=True, embedding_init_target=True, decoder_bbox_embed_share=True,
        two_stage_bbox_embed_share=False, positional_embedding_temperature=20, activation_function="relu",
        dropout=0.1, fusion_droppath=0.1, layer_norm_eps=1e-5,
    )  # fmt: skip


def bert_uncased_tokenizer() -> Any:
    """A ``BertTokenizer`` with BERT-base-uncased's special and punctuation ids (see the module docstring)."""
    from transformers import BertTokenizer

    ids = dict(BERT_IDS)
    words = sorted({w for s in CORPUS for w in s.lower().replace(",", " ").replace(".", " ").split()})
    free = (i for i in range(1996, BERT_VOCAB_SIZE) if i not in ids.values())
    ids.update({w: next(free) for w in words if w not in ids})
    taken = {i: t for t, i in ids.items()}
    vocab = {taken.get(i, f"[unused{i}]"): i for i in range(BERT_VOCAB_SIZE)}
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)


def grounding_dino_processor(shortest_edge: int = SHORTEST_EDGE, longest_edge: int = LONGEST_EDGE) -> Any:
    from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor

    ip = GroundingDinoImageProcessor(size={"shortest_edge": shortest_edge, "longest_edge": longest_edge},
                                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])  # fmt: skip
    return GroundingDinoProcessor(image_processor=ip, tokenizer=bert_uncased_tokenizer())


def real_size_grounding_dino(size: str = "tiny", *, shortest_edge: int = SHORTEST_EDGE,
                             longest_edge: int = LONGEST_EDGE, seed: int = 0, **expert_kw: Any) -> Any:
    """A :class:`GroundingDinoExpert` holding a random-weight grounding-dino-``size`` on the CPU,
    ready to run (nothing written to disk: 172M parameters for tiny)."""
    import torch
    from transformers import GroundingDinoForObjectDetection

    from ..experts.detection import GroundingDinoExpert

    torch.manual_seed(seed)
    det = GroundingDinoExpert(f"random-weight grounding-dino-{size}", device="cpu", **expert_kw)
    det.net = GroundingDinoForObjectDetection(grounding_dino_config(size)).eval()
    det.processor = grounding_dino_processor(shortest_edge, longest_edge)
    det.device, det.torch_dtype = "cpu", torch.float32
    return det


__all__ = ["SWIN", "bert_uncased_tokenizer", "grounding_dino_config", "grounding_dino_processor",
           "real_size_grounding_dino"]  # fmt: skip
