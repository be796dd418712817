"""Recap-DataComp-1B's mix of original and new captions, per sample, reproducible.

The paper mixes at training time: each time a sample is drawn, it takes the original caption
with probability ``p``, else the recaption. An export cannot draw at training time, so it
writes both captions (``text_original``, ``text_recaption``) and :class:`MixedCaption` draws
in the training loader, per sample and epoch. ``p`` is always **the share of the original
caption**: ``p = 0.8`` means 80 % original, 20 % new.

Every draw is ``blake2b(seed, id[, epoch]) / 2^64 < p``: the same (seed, id, epoch) always
gives the same caption, whatever the order, sharding, workers or which rows are loaded, and
different epochs draw independently. Epoch 0 is the draw ``--mix-per row`` fixes in ``text``,
so the exported ``text`` is what the loader gives in the first epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

MIX_PER = ("sample", "row")
ORIGINAL, RECAPTION = "text_original", "text_recaption"


def draw(id_: Any, seed: int, epoch: int = 0) -> float:
    """A uniform number in [0, 1) for (seed, id, epoch)."""
    key = f"{seed}\x00{id_}" if epoch == 0 else f"{seed}\x00{id_}\x00{epoch}"
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def takes_original(id_: Any, seed: int, p: float, epoch: int = 0) -> bool:
    """Whether sample ``id_`` takes its original caption in ``epoch``."""
    return draw(id_, seed, epoch) < p


@dataclass(frozen=True)
class MixedCaption:
    """The caption a training loader should use for an exported sample in an epoch::

        mix = MixedCaption(p=0.8, seed=0)
        caption = mix(sample, epoch)  # sample: the exported row ({key}.json in webdataset, a row in hf/jsonl)

    A sample without an original caption always gives the new one."""

    p: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p={self.p}: the share of the original caption, between 0 and 1")

    def __call__(self, sample: Mapping[str, Any], epoch: int = 0) -> str | None:
        org = sample.get(ORIGINAL)
        if isinstance(org, str) and org.strip() and takes_original(sample.get("id"), self.seed, self.p, epoch):
            return org
        return sample.get(RECAPTION)


__all__ = ["MIX_PER", "ORIGINAL", "RECAPTION", "MixedCaption", "draw", "takes_original"]
