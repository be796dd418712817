"""A tiny random-weight text-to-image pipeline of a real diffusers architecture, built locally.

``build_tiny_t2i(DIR)`` writes a :class:`diffusers.StableDiffusionPipeline` (a CLIP text
encoder with a tokenizer trained here, a two-block UNet, a two-block VAE, DDIM) with
safetensors weights, so ``DiffusionPipeline.from_pretrained(DIR)`` loads it offline, the
same way ``pixscribe eval --t2i`` loads PixArt-Σ. Its images are noise; the code path is real.
"""

from __future__ import annotations

from pathlib import Path

from . import train_tokenizer


def build_tiny_t2i(d: str | Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPTextConfig, CLIPTextModel

    d = Path(d)
    if (d / "model_index.json").is_file():
        return d
    tok = train_tokenizer(special_tokens=["<|startoftext|>", "<|endoftext|>"], bos_token="<|startoftext|>",
                          eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                          model_max_length=16)  # fmt: skip
    bos, eos = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16, bos_token_id=bos,
                                        eos_token_id=eos, pad_token_id=eos)).eval()  # fmt: skip
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=4)  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(d, safe_serialization=True)
    return d
