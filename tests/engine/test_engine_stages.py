"""The multi-stage engine: stage needs are checked, options are per stage and fingerprinted,
stage outputs are reused, never recomputed, and provenance credits the caption's author.

A three-stage method (an image stage and two text stages, see fixtures_engine.py) runs
through the real engine with a scripted backend that logs every request it answers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures_engine import ScriptedBackend, three_stage_method
from pixscribe.config import RunConfig
from pixscribe.engine.runner import Runner
from pixscribe.api import MethodError
from pixscribe.engine.state import ConfigMismatch


def cfg(inputs, out, **kw) -> RunConfig:
    return RunConfig(inputs=[str(i) for i in inputs], output=str(out), progress=False, vlm="scripted-vlm", **kw)


def run3(inputs, out, backend=None, fail_rewrite_ids=(), **kw):
    c = cfg(inputs, out, **kw)
    b = backend or ScriptedBackend()
    s = Runner(c, three_stage_method(c, b, fail_rewrite_ids=fail_rewrite_ids)).run()
    return s, b


def rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out).to_pylist()}


def test_three_stages_chain_and_credit_the_last(photo_dir, tmp_path):
    out = tmp_path / "out"
    s, b = run3([photo_dir], out)
    assert b.calls() == {"image": 6, "List": 6, "Rewrite:": 6}
    got = rows(out)
    assert len(got) == 6
    for r in got.values():
        assert r["seen"].startswith("an image of")
        # each text stage got the previous stage's output as quoted data
        assert r["facts"].startswith("re[") and r["final"].startswith("re[")
        stages = json.loads(r["stages"])
        assert [stages[k]["status"] for k in ("see", "extract", "rewrite")] == ["ok"] * 3
        prov = json.loads(r["provenance"])
        # the row's model and prompt hash are those of the stage that wrote the caption
        assert r["caption"] == r["final"] and r["prompt_sha"] == prov["final"]["prompt_sha"]
        assert prov["final"]["stage"] == "rewrite" and prov["seen"]["stage"] == "see"
        assert prov["final"]["prompt_sha"] != prov["seen"]["prompt_sha"]
    assert s.stages["rewrite"] == {"computed": 6, "reused": 0, "failed": 0, "seconds": 0.0}


def test_changing_only_the_last_prompt_recomputes_only_that_stage(photo_dir, tmp_path):
    out = tmp_path / "out"
    run3([photo_dir], out)
    first = rows(out)
    with pytest.raises(ConfigMismatch, match="rewrite.prompt"):
        run3([photo_dir], out, stages={"rewrite": {"prompt": "Rewrite briefly:"}})
    s, b = run3([photo_dir], out, stages={"rewrite": {"prompt": "Rewrite briefly:"}}, overwrite=True)
    assert b.calls() == {"image": 0, "Rewrite": 6}  # nothing but the rewrite ran
    assert s.stages["see"]["reused"] == 6 and s.stages["extract"]["reused"] == 6
    assert s.stages["rewrite"]["computed"] == 6
    second = rows(out)
    for i, r in second.items():
        assert r["seen"] == first[i]["seen"] and r["facts"] == first[i]["facts"]
        assert r["final"] != first[i]["final"]
        prov = json.loads(r["provenance"])
        assert prov["seen"]["reused"] is True and "reused" not in prov["final"]
    # a new output directory can take over the unchanged stages with --reuse
    s3, b3 = run3([photo_dir], tmp_path / "new", stages={"extract": {"prompt": "Objects:"}}, reuse=[str(out)])
    assert b3.calls() == {"image": 0, "Objects:": 6, "Rewrite:": 6}  # extract changed, so rewrite after it


def test_a_changed_image_budget_recomputes_from_the_image_stage(photo_dir, tmp_path):
    out = tmp_path / "out"
    run3([photo_dir], out)
    s, b = run3([photo_dir], out, max_pixels=20_000, overwrite=True)
    assert b.calls() == {"image": 6, "List": 6, "Rewrite:": 6}


def test_no_reuse_recomputes_everything(photo_dir, tmp_path):
    out = tmp_path / "out"
    run3([photo_dir], out)
    s, b = run3([photo_dir], out, stages={"rewrite": {"prompt": "Again:"}}, overwrite=True, no_reuse=True)
    assert b.calls() == {"image": 6, "List": 6, "Again:": 6}


def test_retry_errors_redoes_only_the_failed_stage(photo_dir, tmp_path):
    out = tmp_path / "out"
    s0, _ = run3([photo_dir], tmp_path / "probe")
    ids = sorted(rows(tmp_path / "probe"))[:2]
    s, b = run3([photo_dir], out, fail_rewrite_ids=set(ids))
    got = rows(out)
    assert sorted(i for i, r in got.items() if r["error"]) == ids
    assert all(got[i]["error"].startswith("stage rewrite: scripted rewrite failure") for i in ids)
    assert all(got[i]["facts"] for i in ids)  # the stages before the failure kept their outputs
    s2, b2 = run3([photo_dir], out, retry_errors=True)
    assert b2.calls() == {"image": 0, "Rewrite:": 2}
    assert s2.stages["see"]["reused"] == 2 and s2.stages["rewrite"]["computed"] == 2
    assert all(r["error"] is None for r in rows(out).values()) and len(rows(out)) == 6


def test_until_runs_a_prefix_and_the_rest_comes_later(photo_dir, tmp_path):
    out = tmp_path / "out"
    s, b = run3([photo_dir], out, until="see")
    assert b.calls() == {"image": 6}
    part = rows(out)
    assert all(r["seen"] and r.get("final") is None and r["caption"] is None for r in part.values())
    s2, b2 = run3([photo_dir], out, overwrite=True)  # the full method: the VLM pass is not redone
    assert b2.calls() == {"image": 0, "List": 6, "Rewrite:": 6}
    with pytest.raises(MethodError, match="prefix"):
        c = cfg([photo_dir], tmp_path / "x")
        m = three_stage_method(c, ScriptedBackend())
        m.prefix("stages:see|rewrite")


def test_unmet_need_fails_before_the_run(photo_dir, tmp_path):
    from pixscribe.api import Method

    c = cfg([photo_dir], tmp_path / "out")
    m = three_stage_method(c, ScriptedBackend())
    broken = Method("broken", [m.stages[0], m.stages[2]], ["seen", "final"], "final")
    with pytest.raises(MethodError, match=r"stage 'rewrite' needs the field 'facts'.*see"):
        Runner(c, broken).run()
    assert not (tmp_path / "out").exists()


def test_a_need_met_by_an_input_column(tmp_path, photo_dir):
    """A text stage may read an input column instead of an earlier stage (IT's use: textualize
    existing descriptions)."""
    from pixscribe.api import Method

    table = tmp_path / "t.jsonl"
    files = sorted(Path(photo_dir).rglob("*.*"))[:3]
    table.write_text("".join(json.dumps({"path": str(f), "facts": f"fact {i}"}) + "\n" for i, f in enumerate(files)))
    c = cfg([table], tmp_path / "out")
    m = three_stage_method(c, ScriptedBackend())
    only = Method("only", [m.stages[2]], ["final"], "final")
    Runner(c, only).run()
    finals = sorted(r["final"][-10:] for r in rows(tmp_path / "out").values())
    assert finals == [f' "fact {i}"]' for i in range(3)]


def test_unknown_stage_options_are_refused(photo_dir, tmp_path):
    c = cfg([photo_dir], tmp_path / "out", stages={"rewrite": {"temprature": 0.3}})
    with pytest.raises(MethodError, match=r"stages.rewrite: unknown option\(s\) temprature; .*temperature"):
        three_stage_method(c, ScriptedBackend())


def test_per_stage_batch_sizes(photo_dir, tmp_path):
    c = cfg([photo_dir], tmp_path / "out", batch_size=4)
    b = ScriptedBackend()
    m = three_stage_method(c, b)
    m.stages[0].batch_size = 2  # the image stage takes 2 at a time, the text stages the engine's 4
    Runner(c, m).run()
    assert b.batches == [2, 2, 4, 4, 2, 2, 2]  # 4 records: see 2+2, extract 4, rewrite 4; then 2: 2, 2, 2


# ---- one model, many stages: the real transformers path -------------------------------------
def test_image_and_text_stages_share_one_loaded_tiny_vlm(tiny_vlms, tiny_llm, photo_dir, tmp_path):
    """With no --llm the text stages use the VLM itself: one set of weights, loaded once."""
    c = RunConfig(inputs=[str(photo_dir)], output=str(tmp_path / "out"), progress=False, vlm=str(tiny_vlms["llava"]),
                  batch_size=3, stages={"see": {"max_new_tokens": 4}, "extract": {"max_new_tokens": 4},
                                        "rewrite": {"max_new_tokens": 4}})
    m = three_stage_method(c, None)
    s = Runner(c, m).run()
    assert list(m.pool.loads.values()) == [1]  # one backend in the pool, its weights loaded once
    got = rows(tmp_path / "out")
    assert len(got) == 6 and all(r["error"] is None and isinstance(r["final"], str) for r in got.values())
    assert {r["model"] for r in got.values()} == {str(tiny_vlms["llava"])}
    assert s.stages["extract"]["computed"] == 6 and s.usage[f"vlm:{tiny_vlms['llava']}"]["requests"] == 18

    # --llm names another model: two backends, each loaded once; the text stages use the LLM
    c2 = c.model_copy(update={"output": str(tmp_path / "out2"), "llm": str(tiny_llm)})
    m2 = three_stage_method(c2, None)
    Runner(c2, m2).run()
    assert sorted(m2.pool.loads.values()) == [1, 1]
    r = next(iter(rows(tmp_path / "out2").values()))
    prov = json.loads(r["provenance"])
    assert prov["seen"]["model"] == str(tiny_vlms["llava"]) and prov["final"]["model"] == str(tiny_llm)
    assert r["model"] == str(tiny_llm)  # the caption's author


def test_model_fields_a_method_does_not_use_do_not_block_a_resume(photo_dir, tmp_path):
    """--llm on a method without text stages changes nothing; dtype/device/backend do."""
    from pixscribe.testing.methods import method_with

    out = tmp_path / "out"

    def go(**kw):
        c = cfg([photo_dir], out, **kw)
        return Runner(c, method_with(c, ScriptedBackend())).run()

    go()
    assert go(llm="some/other-llm").rows_skipped == 6
    for change in ({"dtype": "fp16"}, {"device": "cpu"}, {"backend": "vllm"}):
        with pytest.raises(ConfigMismatch, match="recap.model"):
            go(**change)
