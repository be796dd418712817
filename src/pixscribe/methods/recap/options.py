"""The ``recap`` stage's options, declared once (read by -S, YAML, the fingerprint and the docs)."""

from __future__ import annotations

from dataclasses import dataclass

from ...api import StageOptions, option

RECAP_PROMPT = "Please generate a detailed caption of this image. Please be as descriptive as possible."


@dataclass(frozen=True)
class RecapOptions(StageOptions):
    """The VLM describes each image into ``re_caption``."""

    prompt: str = option(RECAP_PROMPT, "the request sent with each image (--prompt, --prompt-file)")
    max_new_tokens: int = option(128, "most tokens generated per caption (--max-new-tokens)")
    temperature: float = option(0.0, "sampling temperature; 0 is greedy (--temperature)")
    top_p: float = option(1.0, "nucleus sampling: the probability mass sampled from (--top-p)")
