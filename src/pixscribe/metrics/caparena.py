"""CapArena-Auto (Cheng et al. 2025, arXiv 2503.12329): pairwise battles of a model's detailed captions against
three baseline models, judged by a VLM, scored as its reference does.

Reference: GitHub njucckevin/CapArena @ c251cdd: ``caparena_auto_eval.py`` (the battles),
``vlm_as_a_judge.py`` (the judge's prompt and how its answer is read; ``cal_agreement``),
``caparena_auto_scores.py`` (the scores), ``cal_ranking.py`` and ``caparena_metrics.py``
(Elo ranking and agreement with humans). The repository states no licence.

**Battles** (:func:`battles`): for every image of ``caparena_auto_600.json`` whose baseline
(``ref_model``) is not the model itself, the model's caption against the baseline's, in an
order drawn with ``random.randint(0, 1)`` (the reference draws unseeded; pixscribe seeds
``random.Random(seed)`` and records the seed), with the human caption as reference.

**Judging** (:func:`judge_request`, :func:`read_judgment`): the image and the reference's
system and user prompts (read from the user's copy of ``vlm_as_a_judge.py``: the repository
states no licence, so pixscribe does not carry them; :mod:`.caparena_prompts`), top_p 0.9 and
temperature 0.1 (the reference's request overrides its own 0.5 with 0.1), 1,500 tokens; the
verdict is the text after ``Judgment:`` when the answer also has ``Reason: ... Judgment:``.

**Scores** (:func:`scores`): per baseline, +1 for a battle the model wins, -1 for one it
loses, 0 for a tie, halved (600 images, 200 per baseline: -100..100); a verdict other than
``Caption 1/2 is better[.]`` or ``Tie[.]`` is skipped; Score_Avg is the mean over the three
baselines; Length_Avg the mean count of space-separated pieces of the model's captions.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..backends.base import GenerationRequest, Sampling
from ..errors import InputFileError

BASELINES = ("GPT-4o-0806", "CogVLM2-llama3-chat-19B", "MiniCPM-V2.6-8B")
VALID = ("Caption 1 is better.", "Caption 1 is better", "Caption 2 is better.", "Caption 2 is better", "Tie", "Tie.")
SAMPLING = Sampling(max_new_tokens=1500, temperature=0.1, top_p=0.9)


def battles(bench: Mapping[str, Mapping[str, Any]], captions: Mapping[str, str], model: str,
            seed: int = 0) -> list[dict[str, Any]]:
    """The reference's step 1: one battle per image, the order of the two captions drawn at random."""
    rng = random.Random(seed)
    out = []
    for img, d in bench.items():
        ref_model = d["ref_model"]
        if ref_model == model:
            continue
        if img not in captions:
            raise InputFileError(f"no caption of {model} for {img}")
        ref_cap, own = d["captions"][ref_model], captions[img]
        pair = ((ref_model, ref_cap), (model, own)) if rng.randint(0, 1) == 0 else ((model, own), (ref_model, ref_cap))
        out.append({"img": img, "source1": pair[0][0], "source2": pair[1][0], "caption1": pair[0][1],
                    "caption2": pair[1][1], "ref": d["captions"]["human"], "ref_model": ref_model})
    return out


def judge_request(item: Mapping[str, Any], image: Any, p: Mapping[str, str], with_ref: bool = True) -> GenerationRequest:
    """The reference's request for one battle, ``p`` the prompts of :func:`.caparena_prompts.load`."""
    text = (p["compare_with_ref"] if with_ref else p["compare_without_ref"]).format(
        caption_1=item["caption1"], caption_2=item["caption2"], caption_ref=item.get("ref", ""))
    system = p["system_with_ref"] if with_ref else p["system_without_ref"]
    return GenerationRequest.simple(text, [image], system=system, sampling=SAMPLING, id=item["img"])


_REASON = re.compile(r"Reason:\s*(.+?)\s*Judgment:", re.DOTALL)
_JUDGMENT = re.compile(r"Judgment:\s*(.+)")


def read_judgment(answer: str) -> str | None:
    """The verdict of an answer ``Reason: ... Judgment: ...``, or None (the reference then asks again)."""
    reason, judgment = _REASON.search(answer), _JUDGMENT.search(answer)
    r = reason.group(1).strip() if reason else None
    j = judgment.group(1).strip() if judgment else None
    return j if r and j else None


@dataclass
class CapArenaScores:
    score_avg: float
    per_baseline: dict[str, float]  # baseline -> (wins - losses) / 2
    counted: dict[str, int]  # baseline -> battles with a valid verdict
    length_avg: float
    skipped: int  # battles without a verdict, or with an invalid one


def scores(items: Sequence[Mapping[str, Any]], model: str) -> CapArenaScores:
    """The reference's ``calculate_caparena_scores`` for one model, from its judged battles."""
    counted = {b: 0 for b in BASELINES}
    points = {b: 0 for b in BASELINES}
    lengths, skipped = [], 0
    for it in items:
        lengths.append(len((it["caption1"] if it["source1"] == model else it["caption2"]).split(" ")))
        verdict = it.get("judge")
        if verdict is None or verdict not in VALID:
            skipped += 1
            continue
        if it["ref_model"] not in counted:
            raise InputFileError(f"battle of {it.get('img')}: baseline {it['ref_model']!r} is not one of {BASELINES}")
        counted[it["ref_model"]] += 1
        winner = it["source1"] if verdict in "Caption 1 is better." else it["source2"] if verdict in \
            "Caption 2 is better." else "Tie"
        if winner != "Tie":
            points[it["ref_model"]] += 1 if winner == model else -1
    per = {b: points[b] / 2 for b in BASELINES}
    avg = 0
    for b in BASELINES:
        avg += per[b]
    if not lengths:
        raise InputFileError(f"CapArena-Auto: no battle of {model}")
    return CapArenaScores(avg / 3, per, counted, sum(lengths) / len(lengths), skipped)


def read_items(path: str | Path, flag: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(f"{flag} {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{flag} {path}: not valid JSON ({exc.msg})") from None
    need = ("source1", "source2", "caption1", "caption2", "ref_model")
    if not isinstance(data, list) or not all(isinstance(d, dict) and all(k in d for k in need) for d in data):
        raise InputFileError(f"{flag} {path}: expected a list of battles with {', '.join(need)} (and judge)")
    return data


def judge_battles(items: list[dict[str, Any]], images: Path, judge: Any, prompts: Mapping[str, str],
                  with_ref: bool = True) -> list[str]:
    """Ask the judge about every battle without a verdict; sets ``judge`` and ``judge_reason``. Returns errors."""
    from PIL import Image

    todo = [it for it in items if "judge" not in it]
    reqs, errors = [], []
    for it in todo:
        path = images / it["img"]
        if not path.is_file():
            raise InputFileError(f"--caparena-images {images}: no image {it['img']}")
        with Image.open(path) as im:
            reqs.append(judge_request(it, im.convert("RGB"), prompts, with_ref))
    for it, res in zip(todo, judge.ask(reqs)):
        verdict = read_judgment(res.text) if res.ok else None
        if verdict is None:
            errors.append(f"{it['img']}: " + (res.error or "the answer has no 'Reason: ... Judgment: ...'"))
            continue
        it["judge"], it["judge_reason"] = verdict, res.text
    return errors


# ---- agreement with human judgments (caparena_metrics.py) ------------------------------------------


def caption_agreement(items: Sequence[Mapping[str, Any]], include_tie: bool = True,
                      in_400: bool = False) -> dict[str, Any]:
    """``cal_agreement``: how often the verdict names the human winner, overall and per difficulty level."""
    levels: dict[str, list[int]] = {k: [] for k in ("overall", "level 1", "level 2", "level 3", "level 4")}
    ties = {k: 0 for k in ("level 1", "level 2", "level 3", "level 4")}
    for it in items:
        if "judge" not in it or "human" in (it["source1"], it["source2"]) or (in_400 and not it["in-400"]):
            continue
        if it["judge"] not in VALID:
            continue
        human = ("Caption 1 is better." if it["winner"] == it["source1"] else
                 "Caption 2 is better." if it["winner"] == it["source2"] else "Tie.")
        if not include_tie and (human == "Tie." or it["judge"] in ("Tie.", "Tie")):
            continue
        agree = 1 if it["judge"] in human else 0
        levels["overall"].append(agree)
        levels[it["cluster"]].append(agree)
        if include_tie and it["judge"] in ("Tie", "Tie."):
            ties[it["cluster"]] += 1
    out: dict[str, Any] = {k: (sum(v) / len(v) if v else None) for k, v in levels.items()}
    out["counts"] = {k: len(v) for k, v in levels.items()}
    if include_tie:
        out["ties"] = ties
    return out


def _winner(verdict: str, s1: str, s2: str) -> str:
    return s1 if "1" in verdict else s2 if "2" in verdict else "equal"  # cal_ranking: any "1", then any "2"


def elo(battles: Sequence[tuple[str, str, str]], k: float = 4, scale: float = 400, base: float = 10,
        init: float = 1000) -> dict[str, float]:
    """``compute_elo`` over (source1, source2, winner) in order."""
    rating: dict[str, float] = {}
    for s1, s2, w in battles:
        ra, rb = rating.get(s1, init), rating.get(s2, init)
        ea = 1 / (1 + base ** ((rb - ra) / scale))
        eb = 1 / (1 + base ** ((ra - rb) / scale))
        sa = 1 if w == s1 else 0 if w == s2 else 0.5 if w in ("tie", "tie (bothbad)", "equal") else None
        if sa is None:
            raise ValueError(f"unexpected vote {w!r}")
        rating[s1] = ra + k * (sa - ea)
        rating[s2] = rb + k * (1 - sa - eb)
    return rating


def elo_ranking(items: Sequence[Mapping[str, Any]], rounds: int = 1000, seed: int = 42) -> list[str]:
    """``calculate_elo_rankings``: models by median Elo over bootstrap resamples of the judged battles
    (resampled as ``DataFrame.sample(frac=1, replace=True)`` draws after ``np.random.seed(seed)``)."""
    import numpy as np

    bs = [(it["source1"], it["source2"], _winner(it["judge"], it["source1"], it["source2"])) for it in items
          if "judge" in it and "human" not in (it["source1"], it["source2"])]
    if not bs:
        raise InputFileError("CapArena agreement: no judged battle between models")
    rs = np.random.RandomState(seed)
    runs = [elo([bs[i] for i in rs.randint(0, len(bs), size=len(bs))]) for _ in range(rounds)]
    models = list(dict.fromkeys(m for r in runs for m in r))  # the columns of the reference's DataFrame
    med = {m: float(np.median([r[m] for r in runs if m in r])) for m in models}
    return sorted(models, key=lambda m: -med[m])


def model_agreement(ranking: Sequence[str], human: Sequence[str]) -> dict[str, float]:
    """Spearman's rho and Kendall's tau between a ranking (best first) and the human one (``human`` removed)."""
    from scipy.stats import kendalltau, spearmanr

    ranked = [m for m in ranking if m != "human"]
    missing = [m for m in ranked if m not in human]
    if missing:
        raise InputFileError(f"models not in the human ranking: {', '.join(missing)}")
    positions = [human.index(m) + 1 for m in ranked]
    order = list(range(1, len(ranked) + 1))
    return {"spearman": float(spearmanr(positions, order)[0]), "kendall": float(kendalltau(positions, order)[0])}


__all__ = ["BASELINES", "CapArenaScores", "battles", "caption_agreement", "elo", "elo_ranking", "judge_battles",
           "judge_request", "model_agreement", "read_items", "read_judgment", "scores"]
