"""The region stage: regions in, visual prompts to any VLM, one caption (or error) per region.

For a batch of records it

1. reads each record's regions (:func:`pixscribe.methods.region.regions_from_columns`: a ``regions``
   list, or the row itself as one region), or proposes them (``regions: auto``);
2. groups the records that show the same image: one row per region repeats its image on
   every row, and those rows (same sha256, decoded once by the engine) form one group, so
   SAM embeds the image once and set-of-mark numbers all of the group's regions on one image;
3. turns points (and, with ``box_to_mask: sam``, boxes) into masks through SAM;
4. builds the prompts of the prompting mode (:func:`pixscribe.methods.region.build_prompts`) and
   asks the backend in calls of at most ``requests_per_call`` requests (batched, and bounded
   in memory: a focal request holds two images);
5. writes each record: ``region`` (one row per region) or ``regions`` (a list, one row per
   image), with ``task``, ``attribute``, ``prompt_mode`` and the caption.

A malformed region is an error on that region; the image's other regions go on. A row of
one region fails with its region's error. A row of many fails only when none of its regions
got a caption, or when the model failed on some of them (so ``--retry-errors`` redoes it);
its ``regions`` column keeps every region's caption or error either way. Errors from the model
are in the vocabulary of every method (:mod:`pixscribe.stages.replies`): a set-of-mark reply
cut at the token limit is asked again with ``retry_max_new_tokens`` (per region) and, cut
again, is ``truncated:`` for its regions; a cut caption (prose) is kept, and the region ids of
such captions are in the provenance (``truncated_regions``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ...api.stage import Stage
from ...backends.base import Backend, GenerationRequest, GenerationResult, Sampling
from ...record import PixscribeError, Record, error_kind, prompt_sha
from ...stages import replies
from .output import region_output
from .parse import READ_KEYS, region_ids, regions_from_columns
from .prompts import PromptOptions, RegionPrompt, build_prompts, read_answer, region_task
from .types import Region

FIELDS = ("caption", "region", "regions", "task", "attribute", "prompt_mode")
# input columns renamed so they do not collide with the method's own (read back by this stage)
RENAMED = {"regions": "input_regions", "region": "input_region", "attribute": "input_attribute"}
PROMPT_KEYS = ("task", "attribute", "own_attribute", "outline", "overlay", "dim", "min_size", "context",
               "crop_min_side", "som_max_marks", "box_convention", "input_size")  # fmt: skip
# memory and batching only, or a record of where a setting came from: the outputs do not change
NOT_FINGERPRINTED = ("requests_per_call", "box_convention_from")
# added later and off in every older run: fingerprinted only when on, so older runs keep theirs
ONLY_WHEN_ON = ("own_attribute",)
Answer = tuple[str | None, str | None, float, tuple[str, ...]]  # caption, error, model seconds, flags (FLAGS)
# what an answer says of its caption: cut at the token limit (kept: prose); still looping after the loop
# guard's retries (kept with --on-degenerate keep); got by the guard's retry with a penalty or sampling
FLAGS = ("truncated", "degenerate", "penalty", "sampling")


@dataclass
class Unit:
    """One record's regions (in the record's input frame) and its shape."""

    regions: list[Region]
    per_row: bool


@dataclass
class Group:
    """Records showing one image: one image-row record, or the rows of one image's regions."""

    image: Any
    members: list[tuple[int, int]] = field(default_factory=list)  # (record index, region index)


class RegionStage(Stage):
    name = "region"
    provides = FIELDS
    needs_image = True
    reads_id = True  # a region's id is its row's (or "<row id>:<index>")

    def __init__(self, backend: Backend, options: dict[str, Any], *, identity: dict[str, Any] | None = None,
                 sam: Any = None, proposer: Any = None, files: Any = None, queries: list[str] | None = None,
                 sam_identity: Any = None, proposer_identity: Any = None):  # fmt: skip
        self.backend = backend
        self.opts = dict(options)
        self.identity = identity or {"backend": backend.name, "model": backend.model}
        self.sam, self.proposer, self.files, self.queries = sam, proposer, files, list(queries or [])
        self.sam_identity, self.proposer_identity = sam_identity, proposer_identity
        if self.opts.get("regions") != "auto":  # the region list, or the row itself as one region
            self.reads = region_columns(str(self.opts.get("regions") or "regions"))
        self.prompt = PromptOptions(**{k: self.opts[k] for k in PROMPT_KEYS if k in self.opts},
                                    model=self.identity.get("model"))  # fmt: skip
        if isinstance(self.prompt.input_size, list):
            self.prompt.input_size = tuple(self.prompt.input_size)  # type: ignore[assignment]
        self.max_inflight_batches = int(backend.max_inflight_batches)
        self.prompt_sha = prompt_sha(self.options())
        self._lock = threading.Lock()  # SAM and the proposer run one batch at a time; counters
        self.loops = replies.LoopTally()
        self._sam_error: str | None = None
        self.counts = {"regions": 0, "captioned": 0, "region_errors": 0, "requests": 0, "calls": 0,
                       "cut_retried": 0, "truncated_captions": 0, "sam_seconds": 0.0}  # fmt: skip

    # ---- what changes the output --------------------------------------------------------
    def options(self) -> dict[str, Any]:
        opts = {k: v for k, v in self.opts.items()
                if k not in NOT_FINGERPRINTED and v is not None and (v or k not in ONLY_WHEN_ON)}
        out: dict[str, Any] = {"model": self.identity, **opts, "sam": self.sam_identity}
        if self.proposer is not None:
            out["proposer"] = self.proposer_identity
            out["queries"] = self.queries
        return {**out, **replies.loop_options(self.backend)}

    def models(self) -> list[Any]:
        return [m for m in (self.backend, self.sam, self.proposer) if m is not None]

    def describe(self) -> dict[str, Any]:
        source = self.opts.get("box_convention_from")
        frame = {"box_convention_from": source} if source else {}
        return {"stage": self.name, **self.backend.describe(), **self.options(), **frame, "prompt_sha": self.prompt_sha}

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {**{k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.counts.items()},
                    **self.loops.summary()}

    def optional_models(self) -> list[Any]:
        """SAM for points, unless every box becomes a mask (then :meth:`setup` loads it)."""
        return [self.sam] if self.sam is not None and self.opts.get("box_to_mask") != "sam" else []

    def setup(self) -> None:
        """The VLM, and SAM / the proposer when every run needs them (points load SAM when
        the first one comes). One that cannot load stops the run with its name and reason."""
        self.backend.load()
        needs_sam = self.opts.get("box_to_mask") == "sam"
        for what, ex in (("proposer", self.proposer), ("sam", self.sam if needs_sam else None)):
            if ex is None:
                continue
            try:
                ex.setup()
            except Exception as exc:
                raise PixscribeError(f"the region {what} (expert {ex.name!r}, {ex.model}) could not be loaded: {exc}",
                                     kind="expert") from exc  # fmt: skip

    # ---- the batch ------------------------------------------------------------------------
    def __call__(self, records: list[Record]) -> list[Record]:
        units = self._units(records)
        groups = _groups(records, units)
        self._segment(groups, units)
        self._check_attributes(units)
        per_record: dict[int, dict[int, Answer]] = {}
        for (i, j), a in self._ask(records, groups, units).items():
            per_record.setdefault(i, {})[j] = a
        for i, r in enumerate(records):
            self._write(r, units[i], per_record.get(i, {}))
        return records

    def _units(self, records: list[Record]) -> list[Unit]:
        if self.opts["regions"] == "auto":
            return self._proposed(records)
        column = self.opts["regions"]
        out = []
        for r in records:
            cols = _input_view(r.columns)
            w, h = _frame(r)
            base = self.files.base_dir(r.source) if self.files is not None else None
            guard = self.files.check if self.files is not None else None
            regions = regions_from_columns(cols, w, h, column=column, box_format=self.opts["box_format"],
                                           base_dir=base, guard=guard)  # fmt: skip
            out.append(Unit(regions, per_row=cols.get(column) is None))
        return out

    def _proposed(self, records: list[Record]) -> list[Unit]:
        from .propose import propose

        t = time.perf_counter()
        try:
            with self._lock:
                found = propose(self.proposer, [r.image for r in records], [_frame(r) for r in records],
                                max_regions=int(self.opts["max_regions"]), queries=self.queries)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the proposer failed on this batch: each image says why
            found = [[Region.failed(0, _frame(r), f"the region proposer ({self.proposer.name}) failed: {exc}")]
                     for r in records]  # fmt: skip
        self._count("sam_seconds", time.perf_counter() - t)
        return [Unit(rs, per_row=False) for rs in found]

    # ---- SAM: points (and boxes) to masks ---------------------------------------------------
    def _segment(self, groups: list[Group], units: list[Unit]) -> None:
        from .sam import boxes_to_masks, points_to_masks

        boxes = self.opts.get("box_to_mask") == "sam"
        for g in groups:
            rs = [units[i].regions[j] for i, j in g.members]
            has_points = any(r.ok and r.points and r.mask is None for r in rs)
            has_boxes = boxes and any(r.ok and r.kind == "box" and r.mask is None for r in rs)
            if not (has_points or has_boxes):
                continue
            why = self._sam_ready()
            t = time.perf_counter()
            try:
                if why is not None:
                    raise RuntimeError(why)
                with self._lock:
                    if has_points:
                        rs = points_to_masks(self.sam, [g.image], [rs])[0]
                    if has_boxes:
                        rs = boxes_to_masks(self.sam, [g.image], [rs])[0]
            except Exception as exc:  # noqa: BLE001 - SAM failed on this image: its prompts say why
                rs = [_sam_failed(r, exc, boxes) for r in rs]
            self._count("sam_seconds", time.perf_counter() - t)
            for (i, j), r in zip(g.members, rs):
                units[i].regions[j] = r

    def _sam_ready(self) -> str | None:
        """None once SAM is loaded, else why not (kept: a missing SAM is not retried per batch)."""
        with self._lock:
            if self._sam_error is None and getattr(self.sam, "net", True) is None:
                try:
                    self.sam.setup()
                except Exception as exc:  # noqa: BLE001
                    self._sam_error = f"SAM ({self.sam.model}) could not be loaded: {exc}"
            if self.sam is None:
                return "no SAM expert is configured"
            return self._sam_error

    def _check_attributes(self, units: list[Unit]) -> None:
        if self.opts["task"] != "attribute" or self.opts.get("attribute"):
            return
        for u in units:
            u.regions = [r if not r.ok or r.attribute else replace(
                r, error="region: task 'attribute' needs an attribute: pass --attribute NAME or give the row an "
                         "'attribute'") for r in u.regions]  # fmt: skip

    # ---- prompts and answers ---------------------------------------------------------------
    def _ask(self, records: list[Record], groups: list[Group], units: list[Unit]) -> dict[tuple[int, int], Answer]:
        answers: dict[tuple[int, int], Answer] = {}
        pending: list[tuple[RegionPrompt, dict[str, tuple[int, int]], str | None]] = []
        per_call = max(1, int(self.opts.get("requests_per_call") or 64))
        for g in groups:
            for part in self._parts(g, units):
                keyed = {str(n): m for n, m in enumerate(part)}
                regions = [replace(units[i].regions[j], id=k) for k, (i, j) in keyed.items()]
                try:
                    prompts = build_prompts(self.opts["prompt_mode"], g.image, regions, self.prompt)
                except Exception as exc:  # noqa: BLE001 - these regions cannot be prompted: they say why
                    answers.update({m: (None, f"prompt: {exc}", 0.0, ()) for m in keyed.values()})
                    continue
                rid = records[part[0][0]].id
                pending += [(p, keyed, rid) for p in prompts]
                while len(pending) >= per_call:
                    answers.update(self._generate(pending[:per_call]))
                    pending = pending[per_call:]
        if pending:
            answers.update(self._generate(pending))
        return answers

    def _parts(self, g: Group, units: list[Unit]) -> list[list[tuple[int, int]]]:
        """The group's valid regions, cut so one call's prompts stay bounded (set-of-mark and
        task global need an image's regions together; the others are one request each)."""
        ok = [m for m in g.members if units[m[0]].regions[m[1]].ok]
        if not ok:
            return []
        if self.opts["prompt_mode"] == "som" or self.opts["task"] == "global":
            return [ok]
        step = max(1, int(self.opts.get("requests_per_call") or 64))
        return [ok[s : s + step] for s in range(0, len(ok), step)]

    def _per_request(self, p: RegionPrompt) -> int:
        return len(p.keys) if p.json_schema is not None else 1  # a set-of-mark answer holds every region's

    def _sampling(self, p: RegionPrompt) -> Sampling:
        n = int(self.opts["max_new_tokens"]) * self._per_request(p)  # per region
        return Sampling(max_new_tokens=n, temperature=float(self.opts["temperature"]), top_p=float(self.opts["top_p"]))

    def _retry_limit(self, p: RegionPrompt) -> int | None:
        """The retry limit of a cut set-of-mark reply (None for a caption: prose is kept)."""
        per_region = replies.retry_limit(self.opts, int(self.opts["max_new_tokens"]))
        return per_region * self._per_request(p) if per_region and p.json_schema is not None else None

    def _generate(self, pending: list[tuple[RegionPrompt, dict[str, tuple[int, int]], str | None]]
                  ) -> dict[tuple[int, int], Answer]:  # fmt: skip
        reqs: list[GenerationRequest] = [p.request(sampling=self._sampling(p), id=rid) for p, _, rid in pending]
        results = self.backend.generate(reqs)
        self.loops.add(replies.guard_loops(self.backend.generate, reqs, results))
        # set-of-mark JSON is read into captions: a cut one is asked again; a cut caption is prose, kept
        redone = replies.redo_cut(self.backend.generate, reqs, results,
                                  lambda i: None if results[i].degenerate else self._retry_limit(pending[i][0]))
        self._count("calls", 1 + bool(redone))
        self._count("requests", len(reqs) + len(redone))
        self._count("cut_retried", len(redone))
        out: dict[tuple[int, int], Answer] = {}
        for (p, keyed, _), res in zip(pending, results):
            share = float(res.seconds or 0.0) / max(1, len(p.keys))
            flags = self._flags(p, res)
            for k, (text, err) in read_answer(p, res).items():
                if err and err.startswith("truncated:"):
                    first = int(self.opts["max_new_tokens"])
                    err = replies.cut_message(self.name, first, replies.retry_limit(self.opts, first)) + " (per region)"
                out[keyed[k]] = (text, err, share, flags if text is not None else ())
        return out

    # ---- writing a record -----------------------------------------------------------------
    def _flags(self, p: RegionPrompt, res: GenerationResult) -> tuple[str, ...]:
        """The answer's flags (FLAGS); a reply that still loops fails its regions as
        ``degenerate:`` under --on-degenerate error, and always when it was cut JSON."""
        if res.ok and res.degenerate is not None and (
                replies.on_degenerate(self.backend) == "error" or (res.truncated and p.json_schema is not None)):
            self.loops.error()
            res.error = replies.degenerate_message(self.name, res.degenerate)
        flags = ("truncated",) if res.truncated and p.json_schema is None else ()
        flags += ("degenerate",) if res.degenerate is not None else ()
        return flags + ((res.loop_retry,) if res.loop_retry else ())

    def _write(self, r: Record, unit: Unit, answers: dict[int, Answer]) -> None:
        info = self.backend.describe()
        ids = region_ids(r.id or "", unit.regions, per_row=unit.per_row)
        outs, secs, cut, looped, retried = [], 0.0, [], [], {}
        for j, (reg, rid) in enumerate(zip(unit.regions, ids)):
            text, err, s, flags = answers.get(j, (None, None if not reg.ok else "prompt: the region was not asked",
                                                  0.0, ()))  # fmt: skip
            secs += s
            cut += [rid] if "truncated" in flags else []
            looped += [rid] if "degenerate" in flags else []
            retried.update({rid: f for f in flags if f in ("penalty", "sampling")})
            task = region_task(reg, self.prompt)
            attr = (reg.attribute or self.opts.get("attribute")) if task == "attribute" else reg.attribute
            outs.append(region_output(reg, region_id=rid, task=task, attribute=attr, caption=text,
                                      prompt_mode=self.opts["prompt_mode"], error=err))  # fmt: skip
        self._tally(outs)
        first = outs[0] if unit.per_row and outs else None
        caption = first["caption"] if first else _global_caption(outs, self.opts["task"])
        values = {"caption": caption, "region": first, "regions": None if unit.per_row else outs,
                  "task": first["task"] if first else self.opts["task"],
                  "attribute": first["attribute"] if first else self.opts.get("attribute"),
                  "prompt_mode": self.opts["prompt_mode"]}  # fmt: skip
        self._count("truncated_captions", len(cut))
        frame = self._frame_provenance()
        for n, (f, v) in enumerate(values.items()):
            r.set(f, v, stage=self.name, model=info.get("model"), revision=info.get("revision"),
                  prompt_sha=self.prompt_sha, seconds=secs if n == 0 else None, truncated_regions=cut or None,
                  degenerate_regions=looped or None, loop_retried_regions=retried or None,
                  box_frame=frame)  # fmt: skip
        why = _row_error(outs, unit.per_row)
        if why:
            r.model = r.model or info.get("model")
            kind, _, msg = why.partition(": ")
            r.fail(msg or why, kind if msg else "region")

    def _frame_provenance(self) -> dict[str, Any] | None:
        """Which box convention the text's boxes are in, and where it came from (box prompts)."""
        if self.opts["prompt_mode"] != "box" or not self.opts.get("box_convention"):
            return None
        return {"convention": self.opts["box_convention"], "from": self.opts.get("box_convention_from")}

    def _tally(self, outs: list[dict[str, Any]]) -> None:
        with self._lock:
            self.counts["regions"] += len(outs)
            self.counts["captioned"] += sum(1 for o in outs if o["caption"])
            self.counts["region_errors"] += sum(1 for o in outs if o["error"])

    def _count(self, key: str, n: float) -> None:
        with self._lock:
            self.counts[key] += n


# ---- helpers ----------------------------------------------------------------------------------
def _frame(r: Record) -> tuple[int, int]:
    """The frame regions are given in: the input image after EXIF orientation, before the budget."""
    return (int(r.orig_width or r.width or r.image.width), int(r.orig_height or r.height or r.image.height))


def region_columns(column: str) -> tuple[str, ...]:
    """The input columns a record's regions are read from, as the record holds them (renamed
    where they collide with the method's own columns); "id" is the row's key, never a column."""
    keys = [column, "region", *(k for k in READ_KEYS if k != "id")]
    return tuple(dict.fromkeys(RENAMED.get(k, k) for k in keys))


def _input_view(columns: dict[str, Any]) -> dict[str, Any]:
    """The record's input columns under their own names (the method renamed colliding ones)."""
    view = dict(columns)
    for orig, renamed in RENAMED.items():
        if renamed in view and orig not in view:
            view[orig] = view.pop(renamed)
    return view


def _groups(records: list[Record], units: list[Unit]) -> list[Group]:
    """Image-row records alone; rows of one region each grouped by their image's bytes."""
    groups: list[Group] = []
    by_sha: dict[str, Group] = {}
    for i, (r, u) in enumerate(zip(records, units)):
        members = [(i, j) for j in range(len(u.regions))]
        if not u.per_row or not r.sha256:
            groups.append(Group(r.image, members))
            continue
        g = by_sha.get(r.sha256)
        if g is None:
            g = by_sha[r.sha256] = Group(r.image)
            groups.append(g)
        g.members += members
    return groups


def _sam_failed(r: Region, exc: BaseException, boxes: bool) -> Region:
    uses_sam = r.ok and r.mask is None and (r.points or (boxes and r.kind == "box"))
    return replace(r, error=f"region: {exc}") if uses_sam else r


def _global_caption(outs: list[dict[str, Any]], task: str) -> str | None:
    """Task global: the image's description (every region shares it); otherwise none per image."""
    if task != "global":
        return None
    return next((o["caption"] for o in outs if o["caption"]), None)


def _row_error(outs: list[dict[str, Any]], per_row: bool) -> str | None:
    """A row's error (see the module doc): its region's, or none got a caption, or the model
    failed on some (retryable)."""
    errs = [o["error"] for o in outs if o["error"]]
    if not errs:
        return None
    if per_row or len(errs) == len(outs):
        return errs[0] if len(outs) == 1 else f"{errs[0]} (and every other region of the image failed)"
    model = [e for e in errs if not e.startswith("region:")]
    if model:  # the row's kind is its first model error's (generate, schema, truncated...)
        return f"{error_kind(model[0])}: {len(model)} of {len(outs)} regions got no answer, the first: {model[0]}"
    return None


class MaskFiles:
    """Mask files named by input rows: a relative path resolves against the input folder that
    holds the row's table (or image), and a path outside the input folders is refused unless
    ``--allow-any-path``, as image paths are. The folders are found once, when first needed."""

    def __init__(self, inputs: list[str], allow_any: bool = False):
        self.inputs = list(inputs)
        self.allow_any = allow_any
        self._guard: Any = None

    def _roots(self) -> Any:
        if self._guard is None:
            from ...io.plan import PathGuard, expand_inputs

            self._guard = PathGuard(expand_inputs(self.inputs).roots, allow_any=self.allow_any)
        return self._guard

    def check(self, path: str) -> str | None:
        return self._roots().check(path)

    def base_dir(self, source: str) -> str | None:
        if "#row=" in source:  # a row of a table: the table's folder
            return os.path.dirname(source.split("#row=", 1)[0])
        src = source.split("::", 1)[0]  # a tar member: the tar's folder
        if "://" in src:
            return None
        real = os.path.realpath(src)
        inside = [r for r in self._roots().roots if real.startswith(r.rstrip(os.sep) + os.sep)]
        return max(inside, key=len) if inside else os.path.dirname(real)


__all__ = ["FIELDS", "RENAMED", "MaskFiles", "RegionStage"]
