"""TIPCap captioning throughput on CPU: images per second and the share of time in CLIP, the mapping and generation.

A model is trained for one step through the real ``train`` path (random weights otherwise)
on real-architecture models built locally, then :class:`TipCapCaptioner` captions real
photos (scikit-image / matplotlib samples) in batches, greedy and with beam search.
Random decoders rarely emit EOS, so nearly every caption runs to ``--max-new-tokens``:
the figures are for that length.

    python bench/tipcap_throughput.py                 # tiny CLIP (32 px) + tiny GPT-2 (32-d)
    python bench/tipcap_throughput.py --size base     # CLIP ViT-B/32 + GPT-2 small architectures (random)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_base(root: Path) -> tuple[Path, Path]:
    """CLIP ViT-B/32 and GPT-2 small (124M) architectures with random weights, saved locally (no download)."""
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, GPT2Config, GPT2LMHeadModel

    from pixscribe.testing import train_tokenizer

    clip, gpt = root / "clip_base", root / "gpt2_base"
    if not (clip / "model.safetensors").exists():
        tok = train_tokenizer(["<|startoftext|>", "<|endoftext|>"], bos_token="<|startoftext|>",
                              eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                              model_max_length=77)
        bos, eos = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
        tok._tokenizer.post_processor = TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>",
            special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
        cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
                         vision_config=dict(patch_size=32), projection_dim=512)
        torch.manual_seed(0)
        CLIPModel(cfg).save_pretrained(clip)
        CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tok).save_pretrained(clip)
    if not (gpt / "model.safetensors").exists():
        tok = train_tokenizer(["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                              unk_token="<|endoftext|>")
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                                   eos_token_id=tok.eos_token_id)).save_pretrained(gpt)
        tok.save_pretrained(gpt)
    return clip, gpt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="/tmp/tipcap_throughput")
    p.add_argument("--size", choices=("tiny", "base"), default="tiny")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    import torch

    from pixscribe.testing import CORPUS, sample_photos
    from pixscribe.testing.tiny_tipcap import build_tiny_clip, build_tiny_gpt2
    from pixscribe.methods.tipcap.captioner import TipCapCaptioner
    from pixscribe.methods.tipcap.config import TrainConfig
    from pixscribe.methods.tipcap.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work) / args.size
    work.mkdir(parents=True, exist_ok=True)
    clip, gpt = build_base(work) if args.size == "base" else (build_tiny_clip(work), build_tiny_gpt2(work))
    (work / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    model_dir = work / "model"
    train(TrainConfig(output=str(model_dir), texts=[str(work / "corpus.txt")], clip=str(clip), lm=str(gpt), steps=1,
                      batch_size=4, progress=False))
    photos = list(sample_photos().values())
    images = [photos[i % len(photos)] for i in range(args.images)]
    print(f"{args.size}: {len(images)} real photos, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'decoding':<10}{'img/s':>8}{'CLIP':>8}{'mapping':>9}{'generation':>12}")
    for beams in (1, 3):
        cap = TipCapCaptioner.load(model_dir, num_beams=beams, max_new_tokens=args.max_new_tokens)
        cap.caption(images[: args.batch_size])  # warm-up
        cap.timings = {"clip": 0.0, "mapping": 0.0, "generation": 0.0, "images": 0}
        t0 = time.perf_counter()
        for s in range(0, len(images), args.batch_size):
            cap.caption(images[s:s + args.batch_size])
        wall = time.perf_counter() - t0
        t = cap.timings
        parts = t["clip"] + t["mapping"] + t["generation"]
        name = "greedy" if beams == 1 else f"beam {beams}"
        print(f"{name:<10}{len(images) / wall:>8.1f}{t['clip'] / parts:>8.1%}{t['mapping'] / parts:>9.1%}"
              f"{t['generation'] / parts:>12.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
