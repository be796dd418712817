"""One runner per detailed metric for ``pixscribe eval`` (metrics/detailed_cli.py): read the inputs,
build the metric's pluggable parts from ``--detail-option``, score, return a part of the report
(``corpus``, ``per_image``, ``info``, ``n``, ``missing``, ``extra``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, InputFileError

OPTIONS: dict[str, set[str]] = {
    "amber": {"similarity", "tagger", "threshold", "evaluation_type"},
    "capture": {"alpha", "beta", "gamma", "synonym_matching", "soft_matching", "encoder"},
    "dlc_bench": {"default_prediction"},
    "caparena": {"seed", "with_ref", "allow_other_prompts"},
    "comprecap": {"nouns", "tagger", "soft_coverage", "extended"},
}


def _need(value: Any, flag: str, metric: str) -> Any:
    if value is None:
        raise ConfigError(f"{metric} needs {flag}")
    return value


def need_judge(judge: Any, metric: str, instead: str) -> Any:
    if judge is None:
        raise ConfigError(f"{metric} needs an LLM judge: --judge MODEL (a local model, or a served one with "
                          f"--judge-base-url URL), or --judge-replay TRANSCRIPT, or {instead}")
    return judge


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"--detail-option {name}={value}: expected true or false")


def _amber_responses(pred: Path, column: str) -> list[dict[str, Any]]:
    from .amber import read_responses
    from .io import read_predictions

    if pred.suffix == ".json" and pred.is_file() and pred.read_text(encoding="utf-8").lstrip().startswith("["):
        return read_responses(pred)
    preds, _ = read_predictions(pred, column)
    try:
        return [{"id": int(k), "response": v} for k, v in preds.items()]
    except ValueError as exc:
        raise InputFileError(f"--pred {pred}: AMBER ids are numbers ({exc})") from None


def run_amber(kw: dict[str, Any], extra: dict[str, Any], opts: dict[str, str], judge: Any) -> dict[str, Any]:
    from .amber import AmberData, amber
    from .amber_text import NounExtractor, make_similarity, nltk_tagger, punkt_model

    data = AmberData.load(_need(extra["amber_data"], "--amber-data DIR (AMBER's data/ folder)", "amber"))
    responses = _amber_responses(Path(kw["pred"]), kw["column"])
    tagger_spec = opts.get("tagger", "nltk")
    extractor = NounExtractor(nltk_tagger(None if tagger_spec == "nltk" else tagger_spec))
    sim_spec = opts.get("similarity", "spacy:en_core_web_lg")
    sim = make_similarity(sim_spec)
    res = amber(responses, data, extractor, sim, threshold=float(opts.get("threshold", 0.8)),
                evaluation_type=opts.get("evaluation_type", "a"))
    info = {**res.info, "similarity": sim_spec, "tagger": tagger_spec, "punkt": punkt_model(),
            "data": str(extra["amber_data"])}
    return {"corpus": res.corpus, "per_image": res.per_item, "info": info, "n": len(responses)}


def run_capture(kw: dict[str, Any], extra: dict[str, Any], opts: dict[str, str], judge: Any) -> dict[str, Any]:
    from .capture import CaptureConfig, capture, read_parses, sentence_encoder

    cands, refs = read_parses(kw["pred"])
    cfg = CaptureConfig(alpha=float(opts.get("alpha", 0.5)), beta=float(opts.get("beta", 0.5)),
                        gamma=float(opts.get("gamma", 0.2)),
                        synonym_matching=_flag(opts.get("synonym_matching", "true"), "capture.synonym_matching"),
                        soft_matching=_flag(opts.get("soft_matching", "true"), "capture.soft_matching"))
    enc_spec = opts.get("encoder", "st:sentence-transformers/all-mpnet-base-v2")
    res = capture(cands, refs, config=cfg, encode=sentence_encoder(enc_spec) if cfg.soft_matching else None)
    info = {"config": cfg.__dict__, "encoder": enc_spec if cfg.soft_matching else None, "parses": str(kw["pred"]),
            "wordnet": "WordNet 3.0 (Debian wordnet-base)"}
    return {"corpus": res.corpus, "per_image": res.per_image, "info": info, "n": len(res.per_image),
            "missing": [k for k in refs if k not in cands], "extra": [k for k in cands if k not in refs]}


def run_dlc_bench(kw: dict[str, Any], extra: dict[str, Any], opts: dict[str, str], judge: Any) -> dict[str, Any]:
    from .dlc_bench import dlc_bench, prompts, read_bench, read_saved_answers
    from .io import read_predictions

    qa, names = read_bench(_need(extra["dlc_data"], "--dlc-data DIR (qa.json and class_names.json)", "dlc_bench"))
    captions, _ = read_predictions(kw["pred"], kw["column"])
    saved = read_saved_answers(extra["dlc_responses"]) if extra["dlc_responses"] else {}
    if not saved:
        need_judge(judge, "dlc_bench", "--dlc-responses SAVED_EVAL_JSON")
    res = dlc_bench(captions, qa, names, saved=saved, judge=judge, default_prediction=opts.get("default_prediction"))
    info = {"errors": res.errors, "scored": len(res.per_region), "saved_answers": str(extra["dlc_responses"] or ""),
            "prompt_sha256": _sha(json.dumps(prompts(), sort_keys=True)), "sampling": {"max_new_tokens": 300,
                                                                                      "temperature": 0.0}}
    return {"corpus": res.corpus, "per_image": res.per_region, "info": info, "n": len(res.per_region),
            "missing": res.missing, "extra": [k for k in captions if k not in qa]}


def _caparena_prompts(extra: dict[str, Any], opts: dict[str, str]) -> dict[str, str]:
    from . import caparena_prompts as P

    path = _need(extra["caparena_prompts"], "--caparena-prompts CapArena/vlm_as_a_judge.py (the judge's prompts, "
                 "from a checkout of github.com/njucckevin/CapArena; pixscribe does not carry them)", "caparena")
    return P.load(path, _flag(opts.get("allow_other_prompts", "false"), "allow_other_prompts"))


def run_caparena(kw: dict[str, Any], extra: dict[str, Any], opts: dict[str, str], judge: Any) -> dict[str, Any]:
    from . import caparena as C
    from . import caparena_prompts as P
    from .io import read_predictions

    model = extra["caparena_model"]
    info: dict[str, Any] = {"model": model}
    if extra["caparena_verdicts"]:
        items = C.read_items(extra["caparena_verdicts"], "--caparena-verdicts")
        info["verdicts"] = str(extra["caparena_verdicts"])
    else:
        bench = json.loads(Path(_need(extra["caparena_data"], "--caparena-data caparena_auto_600.json (or "
                                      "--caparena-verdicts)", "caparena")).read_text(encoding="utf-8"))
        captions, _ = read_predictions(kw["pred"], kw["column"])
        seed = int(opts.get("seed", 0))
        items = C.battles(bench, captions, model, seed=seed)
        images = Path(_need(extra["caparena_images"], "--caparena-images DIR (the 600 images) to judge", "caparena"))
        need_judge(judge, "caparena", "--caparena-verdicts SAVED_BATTLES")
        prompts = _caparena_prompts(extra, opts)
        info.update(seed=seed, prompts_file=str(extra["caparena_prompts"]), prompts_sha256=P.digest(prompts),
                    prompts_are_c251cdd=P.digest(prompts) == P.KNOWN,
                    sampling={"max_new_tokens": 1500, "temperature": 0.1, "top_p": 0.9},
                    judge_errors=C.judge_battles(items, images, judge, prompts,
                                                 _flag(opts.get("with_ref", "true"), "with_ref")))
    s = C.scores(items, model)
    corpus = {"caparena_score": s.score_avg, **{f"caparena_vs_{b}": v for b, v in s.per_baseline.items()},
              "caparena_length": s.length_avg}
    info.update(counted=s.counted, skipped=s.skipped)
    if any("winner" in it and "cluster" in it for it in items):
        agree = C.caption_agreement(items, include_tie=True)
        corpus["caparena_agreement"] = agree["overall"]
        info["agreement"] = agree
    per = {str(it.get("img", n)): {k: it.get(k) for k in ("source1", "source2", "ref_model", "judge")}
           for n, it in enumerate(items)}
    return {"corpus": corpus, "per_image": per, "info": info, "n": len(items)}


def run_comprecap(kw: dict[str, Any], extra: dict[str, Any], opts: dict[str, str], judge: Any) -> dict[str, Any]:
    from . import comprecap as C
    from .io import read_predictions

    root = Path(_need(extra["comprecap_data"], "--comprecap-data DIR (anno.json and images/)", "comprecap"))
    try:
        anno = json.loads((root / "anno.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise InputFileError(f"--comprecap-data {root}: cannot read anno.json ({exc})") from None
    captions, _ = read_predictions(kw["pred"], kw["column"])
    need_judge(judge, "comprecap", "a transcript of its answers (--judge-replay)")
    spec = opts.get("nouns", "spacy:en_core_web_lg")
    nouns = C.nltk_nouns(opts.get("tagger")) if spec == "nltk" else C.spacy_nouns(spec.removeprefix("spacy:"))
    soft = _flag(opts.get("soft_coverage", "true"), "comprecap.soft_coverage")
    images = root / "images"

    def size(name: str) -> tuple[int, int]:
        from PIL import Image

        with Image.open(images / name) as im:
            return im.size

    res = C.comprecap(captions, anno, judge, nouns, C.minilm_similarity(), soft=soft,
                      image_size=size if images.is_dir() else None,
                      extended=_flag(opts.get("extended", "false"), "comprecap.extended"))
    info = {"nouns": spec, "soft_coverage": soft, "errors": res.errors, "skipped": res.skipped,
            "prompts_sha256": _sha(json.dumps(C.prompts(), sort_keys=True)),
            "sampling": {"max_new_tokens": 256, "temperature": 0.6, "top_p": 0.9}}
    return {"corpus": res.corpus, "per_image": res.per_image, "info": info, "n": len(res.per_image),
            "extra": [k for k in captions if k not in {a["image"] for a in anno}]}


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


RUNS: dict[str, Callable[[dict[str, Any], dict[str, Any], dict[str, str], Any], dict[str, Any]]] = {
    "amber": run_amber,
    "capture": run_capture,
    "dlc_bench": run_dlc_bench,
    "caparena": run_caparena,
    "comprecap": run_comprecap,
}
