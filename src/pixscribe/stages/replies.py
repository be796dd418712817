"""What a stage does with a model's reply before it reads values out of it: one vocabulary of
row errors for every method, and the rule for replies cut at the token limit.

Row errors that come from a model's reply, whatever the method:

- ``schema: ...``: the reply is not JSON of the stage's schema, after one stricter retry
  (:mod:`pixscribe.backends.structured`); json-repair's own failures are schema errors too;
- ``truncated: ...``: the reply was cut at the token limit (``finish_reason: length``) in a
  stage that reads values out of it (a JSON object, a list of boxes, ``OBJECTS:`` items), after
  one retry with a higher limit; a cut reply is never parsed or repaired into values;
- ``degenerate: ...``: the reply ends in a repetition loop after its two retries (one with a
  repetition penalty, one with sampling; :mod:`pixscribe.backends.loops`) and the run says
  ``--on-degenerate error`` (the default);
- ``generate: ...``: the model gave no reply (``generate: http: 503 ...``, a timeout, a
  backend failure).

Prose (a caption, a description, a rewrite) is kept when it is cut, with ``truncated: true``
in its provenance: a cut sentence is still text, and no value is read out of it.

The loop guard: every reply of a model stage is checked for a loop at its tail
(:func:`pixscribe.backends.loops.find_loop`) before anything else; a looping one is asked
again with a repetition penalty, then with sampling. A reply that still loops fails its row
(``degenerate:``) or, with ``--on-degenerate keep``, is kept with ``degenerate`` (the loop)
in its provenance; a cut reply that loops is never read for values either way. A reply fixed
by a retry says which in its provenance (``loop_retry``). Each stage's summary counts them
(:func:`~pixscribe.backends.loops.tally`).

The retry: a stage that reads values asks once more, for the cut replies only, with
``max_new_tokens`` raised to its ``retry_max_new_tokens`` option (default: twice
``max_new_tokens``; ``0``, or any value not above ``max_new_tokens``, turns the retry off).
"""

from __future__ import annotations

import threading
from typing import Any

from ..backends.loops import Loop, guard_loops, tally
from ..backends.structured import REPLY_KINDS, redo_cut
from ..backends.structured import reply_error as row_error

RETRY_OPTION = "retry_max_new_tokens"
ON_DEGENERATE = ("error", "keep")
# a looping reply is not a caption: by default its row is an error (left out of exports and
# training layouts, counted, redone with --retry-errors), never data that needs a filter
DEFAULT_ON_DEGENERATE = "error"


def on_degenerate(backend: Any) -> str:
    """What the run does with a reply that still loops: the model pool sets
    ``--on-degenerate`` on each backend; any other backend gets the default."""
    return getattr(backend, "on_degenerate", None) or DEFAULT_ON_DEGENERATE


def loop_options(backend: Any) -> dict[str, Any]:
    """The loop guard's part of a stage's fingerprint: ``on_degenerate`` only when it is not
    the default, so runs made before the guard (and runs with the default) keep their
    fingerprints; ``keep`` writes rows that ``error`` does not, so it is a different output."""
    policy = on_degenerate(backend)
    return {} if policy == DEFAULT_ON_DEGENERATE else {"on_degenerate": policy}


def degenerate_message(stage: str, loop: Loop) -> str:
    return (f"degenerate: stage {stage}: the reply loops ({loop.describe()}) after a retry with a repetition "
            f"penalty and one with sampling; --on-degenerate keep keeps such replies, flagged")


class LoopTally:
    """A stage's loop-guard counters for the run summary (thread-safe; empty when no loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, outcomes: dict[int, str]) -> None:
        with self._lock:
            for k, v in tally(list(outcomes.values())).items():
                self.counts[k] = self.counts.get(k, 0) + v

    def error(self) -> None:
        """A degenerate reply that failed its row (counted as kept by :meth:`add`)."""
        with self._lock:
            self.counts["loops_kept_flagged"] -= 1
            self.counts["loops_errors"] += 1

    def summary(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


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


__all__ = ["DEFAULT_ON_DEGENERATE", "LoopTally", "ON_DEGENERATE", "REPLY_KINDS", "RETRY_OPTION", "cut_message",
           "degenerate_message", "guard_loops", "loop_options", "on_degenerate", "redo_cut", "retry_limit", "row_error"]
