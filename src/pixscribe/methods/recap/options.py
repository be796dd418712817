"""The recap method's stage options, declared once (read by -S, YAML, the fingerprint and the docs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...api import StageOptions, option
from ...stages.grounding import VerifyOptions

RECAP_PROMPT = "Please generate a detailed caption of this image. Please be as descriptive as possible."
SELECT_BY = ("first", "grounding")


@dataclass(frozen=True)
class RecapOptions(StageOptions):
    """The VLM describes each image into ``re_caption`` (or, with ``prompts``, one column per prompt)."""

    prompt: str = option(RECAP_PROMPT, "the request sent with each image (--prompt, --prompt-file)")
    max_new_tokens: int = option(128, "most tokens generated per caption (--max-new-tokens)")
    temperature: float = option(0.0, "sampling temperature; 0 is greedy (--temperature)")
    top_p: float = option(1.0, "nucleus sampling: the probability mass sampled from (--top-p)")
    prompts: dict[str, str] | list[Any] | str | None = option(
        None, "several prompts per image, each into its own column re_caption_NAME: NAME=PROMPT,NAME=PROMPT, "
        "a YAML mapping or list, or @FILE (a YAML file of one); replaces prompt (--prompts)",
        fingerprint="unless_default")
    n: int = option(1, "samples per prompt, into re_caption_NAME_samples; above 1 needs a temperature above 0 "
                       "(--n)", fingerprint="unless_default")


@dataclass(frozen=True)
class SelectOptions(VerifyOptions):
    """With n above 1: the sample each prompt's column keeps (the first, or the best grounded by Grounding DINO)."""

    by: str = option("first", "first (the first sample not failed) or grounding (the sample with the most of "
                               "its noun phrases grounded) (--select-by)", choices=SELECT_BY)
    max_phrases: int = option(16, "most noun phrases checked per sample (the first ones)")
