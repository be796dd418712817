"""What a stage does with a model's reply before it reads values out of it: one vocabulary of
row errors for every method, and the rule for replies cut at the token limit.

Row errors that come from a model's reply, whatever the method:

- ``schema: ...``: the reply is not JSON of the stage's schema, after one stricter retry
  (:mod:`pixscribe.backends.structured`); json-repair's own failures are schema errors too;
- ``truncated: ...``: the reply was cut at the token limit (``finish_reason: length``) in a
  stage that reads values out of it (a JSON object, a list of boxes, ``OBJECTS:`` items), after
  one retry with a higher limit; a cut reply is never parsed or repaired into values;
- ``generate: ...``: the model gave no reply (``generate: http: 503 ...``, a timeout, a
  backend failure).

Prose (a caption, a description, a rewrite) is kept when it is cut, with ``truncated: true``
in its provenance: a cut sentence is still text, and no value is read out of it.

The retry: a stage that reads values asks once more, for the cut replies only, with
``max_new_tokens`` raised to its ``retry_max_new_tokens`` option (default: twice
``max_new_tokens``; ``0``, or any value not above ``max_new_tokens``, turns the retry off).
"""

from __future__ import annotations

from typing import Any

from ..backends.structured import REPLY_KINDS, redo_cut
from ..backends.structured import reply_error as row_error

RETRY_OPTION = "retry_max_new_tokens"


def retry_limit(opts: dict[str, Any], base: int) -> int | None:
    """The token limit of the retry of a cut reply, or None when the stage does not retry."""
    given = opts.get(RETRY_OPTION)
    limit = 2 * int(base) if given is None else int(given)
    return limit if limit > int(base) else None


def cut_message(stage: str, first: int, retry: int | None) -> str:
    """The ``truncated:`` error of a stage whose reply was cut (and cut again on the retry)."""
    again = f", and again at {retry} on the retry" if retry else ""
    hint = f"-S {stage}.max_new_tokens" + (f" or -S {stage}.{RETRY_OPTION}" if retry else "")
    return (f"truncated: stage {stage}: the reply was cut at max_new_tokens={first}{again} (finish_reason=length), "
            f"so no value is read from it; raise {hint}")


__all__ = ["REPLY_KINDS", "RETRY_OPTION", "cut_message", "redo_cut", "retry_limit", "row_error"]
