"""Which text an export writes for a row: a caption column, a seeded mix, a prefix.

- ``--caption-column C`` (default ``caption``): the new caption is read from C (``re_caption``,
  panoptic's ``caption_plain``, any column a method writes).
- ``--mix-original P``: the original caption (``--original-column``) with probability P, else
  the new one; ``text_source`` is ``original`` or ``recaption`` (Recap-DataComp-1B's mix).
- ``--mix short=0.3,long=0.7`` (or ``short,long``, equal weights): one of several columns per
  row, with the weights renormalised over the columns that row has a value in; ``text_source``
  names the column taken. With ``--lines`` (trainer folders only) every column that has a
  value is written, one per line, for trainers that pick a random line per step.
- ``--prefix`` / ``--suffix``: put around every text as given (a trigger word: ``"ohwx, "``).

Every choice is a uniform number from blake2b(seed, id) (:func:`uniform`): the same (seed, id)
gives the same text whatever the order, the sharding or which rows are exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .mix import ORIGINAL, RECAPTION, draw, takes_original

__all__ = ["uniform", "takes_original", "parse_mix", "TextChoice", "one_line"]


def uniform(id_: Any, seed: int, salt: str = "") -> float:
    """A number in [0, 1) from blake2b(seed[, salt], id): reproducible per id. Without a salt it
    is :func:`pixscribe.report.mix.draw`'s epoch-0 draw, the one ``--mix-original`` takes."""
    return draw(f"{salt}\x00{id_}" if salt else id_, seed)


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """``"a=0.3,b=0.7"`` or ``"a,b"`` (equal weights) as [(column, weight)]; raises ValueError
    naming what is wrong (a weight that is not a number >= 0, a column named twice, all zero)."""
    out: list[tuple[str, float]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, eq, weight = part.partition("=")
        name = name.strip()
        try:
            w = float(weight) if eq else 1.0
        except ValueError:
            raise ConfigError(f"--mix {spec!r}: the weight of {name!r} is not a number") from None
        if not name or not (w >= 0.0) or w == float("inf"):
            raise ConfigError(f"--mix {spec!r}: expected COLUMN[=WEIGHT] items, weights >= 0")
        if name in (n for n, _ in out):
            raise ConfigError(f"--mix {spec!r}: {name!r} named twice")
        out.append((name, w))
    if not out or sum(w for _, w in out) <= 0:
        raise ConfigError(f"--mix {spec!r}: name at least one column with a weight above 0")
    return out


def _present(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclass
class TextChoice:
    """Sets a row's ``text`` (and ``text_source`` where a choice was made). Column names are
    the ones the export writes (after an output column named ``text`` became ``input_text``)."""

    column: str = "caption"
    original: str | None = None  # with --mix-original
    p: float | None = None
    mix: list[tuple[str, float]] | None = None
    lines: bool = False
    seed: int = 0
    prefix: str = ""
    suffix: str = ""
    per_sample: bool = False  # --mix-per sample: the rows also carry both candidates (mix.py)
    sources: dict[str, int] = field(default_factory=dict)
    had_original: int = 0
    took_original: int = 0

    def _wrap(self, text: Any) -> Any:
        if not _present(text) or not (self.prefix or self.suffix):  # no caption: nothing to prefix
            return text
        return f"{self.prefix}{text}{self.suffix}"

    def apply(self, row: dict[str, Any]) -> None:
        text, source = self._choose(row)
        if text is not None and not isinstance(text, str) and not self.lines:  # a column of another type
            text = json.dumps(text, ensure_ascii=False, default=str)
        row["text"] = [self._wrap(t) for t in text] if isinstance(text, list) else self._wrap(text)
        if source is not None:
            row["text_source"] = source
            self.sources[source] = self.sources.get(source, 0) + 1

    def _choose(self, row: dict[str, Any]) -> tuple[Any, str | None]:
        if self.mix:
            return self._mixed(row)
        text = row.get(self.column)
        if self.p is None:
            return text, None
        org = row.get(self.original or "")
        if self.per_sample:
            row[ORIGINAL] = org if _present(org) else None
            row[RECAPTION] = text
        if _present(org):
            self.had_original += 1
            if takes_original(row.get("id"), self.seed, self.p):
                self.took_original += 1
                return org, "original"
        return text, "recaption"

    def _mixed(self, row: dict[str, Any]) -> tuple[Any, str | None]:
        have = [(c, w) for c, w in self.mix or [] if _present(row.get(c))]
        if self.lines:
            return [row[c] for c, _ in have], ",".join(c for c, _ in have) or None
        total = sum(w for _, w in have)
        if total <= 0:
            return None, None
        u, acc = uniform(row.get("id"), self.seed, "mix") * total, 0.0
        for c, w in have:
            acc += w
            if u < acc:
                return row[c], c
        c = [c for c, w in have if w > 0][-1]  # u rounded up to the total
        return row[c], c


_DROP = dict.fromkeys([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F, *range(0x80, 0x85), *range(0x86, 0xA0), 0xFEFF])


def one_line(text: str) -> str:
    """``text`` on one line, as a trainer's caption file wants it: every line break (``\\n``,
    ``\\r``, ``\\u2028``...) with the blanks around it becomes one space, tabs become spaces,
    other control characters and byte-order marks are dropped, the ends are stripped."""
    parts = (p.strip() for p in text.replace("\t", " ").splitlines())
    return " ".join(p for p in parts if p).translate(_DROP).strip()
