"""``pixscribe tipcap train``: the command line of TIPCap training.

The main CLI calls :func:`register` on its Typer app (see ``pixscribe.cli._register_optional``).
Nothing heavy is imported until the command runs, so ``pixscribe --help`` stays fast and
works without torch.
"""

from __future__ import annotations

from typing import Optional

import typer

tipcap_app = typer.Typer(name="tipcap", help="TIPCap: a light captioner trained from text (arXiv 2403.19193).",
                         no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@tipcap_app.command("train")
def train_command(
    output: str = typer.Option(..., "-o", "--output", help="Model directory (checkpoints, training.json, the model)."),
    text: list[str] = typer.Option(..., "--text", help="Text corpus: .txt (a caption per line), .jsonl or .parquet "
                                   "(repeatable)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column of jsonl/parquet corpora "
                                              "(default: caption, text, sentence or raw)."),
    max_text_chars: int = typer.Option(2000, "--max-text-chars", help="Longest caption of the corpus, in characters: a "
                                       "longer line is skipped and reported (the decoder learns 40 tokens)."),
    pairs: Optional[list[str]] = typer.Option(None, "--pairs", help="Image-caption pairs: any pixscribe input with "
                                              "a caption column (settings 1-2; repeatable)."),
    caption_column: str = typer.Option("caption", "--caption-column", help="Caption column of --pairs."),
    images: Optional[list[str]] = typer.Option(None, "--images", help="Unpaired images: any pixscribe input "
                                               "(setting 3; repeatable)."),
    setting: str = typer.Option("4", "--setting", help="1|paired, 2|web, 3|unpaired or 4|text (default)."),
    noise: str = typer.Option("full", "--noise", help="full (TIPCap), isotropic (CapDec) or none."),
    clip: str = typer.Option("openai/clip-vit-base-patch32", "--clip", help="CLIP hub id or local directory."),
    clip_revision: Optional[str] = typer.Option(None, "--clip-revision"),
    lm: str = typer.Option("openai-community/gpt2", "--lm", help="Causal LM decoder: hub id or local directory."),
    lm_revision: Optional[str] = typer.Option(None, "--lm-revision"),
    steps: int = typer.Option(10_000, "--steps", help="Optimizer steps (a rerun resumes; a larger value extends)."),
    batch_size: int = typer.Option(40, "--batch-size"),
    lr: float = typer.Option(2e-5, "--lr"),
    warmup_steps: int = typer.Option(500, "--warmup-steps"),
    prefix_length: int = typer.Option(10, "--prefix-length"),
    kl_weight: float = typer.Option(1.0, "--kl-weight", help="Weight of KL/d (settings 2 and 4 with full noise)."),
    noise_variance: Optional[float] = typer.Option(None, "--noise-variance", help="Isotropic sigma^2 and text-only "
                                                   "prior variance (default 0.016, CapDec)."),
    shrinkage: str = typer.Option("ledoit_wolf", "--shrinkage", help="Covariance shrinkage: ledoit_wolf or none."),
    prompt_dropout: float = typer.Option(0.5, "--prompt-dropout", help="Share of training rows without a prompt."),
    noun_dropout: float = typer.Option(0.3, "--noun-dropout", help="Share of a caption's nouns dropped."),
    freeze_lm: bool = typer.Option(False, "--freeze-lm", help="Train only the mapping and prompt modules."),
    save_every: int = typer.Option(1000, "--save-every", help="Checkpoint every N steps."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="CLIP embedding cache (default OUT/_cache)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Train TIPCap on a text corpus (+ pairs or unpaired images, by setting); resumable."""
    from rich.console import Console

    from .config import TrainConfig

    err = Console(stderr=True)
    try:
        cfg = TrainConfig(
            output=output, texts=list(text), pairs=list(pairs or []), images=list(images or []), setting=setting,
            noise=noise, clip=clip, clip_revision=clip_revision, lm=lm, lm_revision=lm_revision,
            text_column=text_column, max_text_chars=max_text_chars, caption_column=caption_column,
            prefix_length=prefix_length, steps=steps,
            batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, kl_weight=kl_weight,
            noise_variance=noise_variance, shrinkage=shrinkage, prompt_dropout=prompt_dropout,
            noun_dropout=noun_dropout, freeze_lm=freeze_lm, save_every=save_every, seed=seed, device=device,
            cache_dir=cache_dir, progress=not no_progress, overwrite=overwrite)
        from .train import train

        report = train(cfg, console=err)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: the last step is checkpointed; rerun the same command to resume[/]")
        raise typer.Exit(130)
    t = report["training"]
    err.print(f"trained {t['steps']} steps ({t['steps'] - t['start_step']} this run) on "
              f"{report['data']['train_texts']} texts; last loss {t['last']['loss']:.4f}; model in {output}",
              highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``tipcap`` command group to a Typer app."""
    app.add_typer(tipcap_app, name="tipcap")


__all__ = ["register", "tipcap_app", "train_command"]
