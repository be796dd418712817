"""CapArena-Auto equals its reference (njucckevin/CapArena @ c251cdd) on a fixture made here
(tests/data/caparena/make_fixture.py): the leaderboard scores of 23 models' judged battles
(caparena_auto_scores.py), caption-level agreement (vlm_as_a_judge.cal_agreement), the Elo
bootstrap ranking (cal_ranking.py) and Spearman/Kendall against the human ranking
(caparena_metrics.py). reference_output.json: the reference's values, read from its functions'
locals (it prints them rounded). Judging runs through the engine with images in the key."""

import json
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.metrics import caparena as C
from pixscribe.metrics.judge import CachedJudge, make_judge

DATA = Path(__file__).resolve().parents[1] / "data" / "caparena"
REF = json.loads((DATA / "reference_output.json").read_text())
HUMAN = ["GPT-4o-0806", "human", "Gemini-2.0-flash-exp", "InternVL2-26B", "Gemini-1.5-pro-002", "Claude-3.5-Sonnet-0620",
         "GPT-4o-mini-0718", "LLama-3.2-90B", "Qwen2-VL-72B-Instruct", "CogVLM2-llama3-chat-19B", "MiniCPM-V2.6-8B",
         "Qwen2-VL-7B-Instruct", "Qwen2-VL-2B-Instruct", "LLaVA-1.6-34B", "LLaVA-1.5-7B"]  # the reference's


def _scores_as_reference(items, model):
    s = C.scores(items, model)
    return {**{b: [s.counted[b], s.per_baseline[b]] for b in C.BASELINES}, "Score_Avg": s.score_avg,
            "Length_Avg": s.length_avg}


@pytest.mark.parametrize("model", sorted(REF["scores"]))
def test_leaderboard_scores_equal_the_reference(model):
    path = DATA / "verdicts.json" if model == "pixscribe-test" else DATA / "leaderboard" / f"{model}.json"
    assert _scores_as_reference(C.read_items(path, "x"), model) == REF["scores"][model]


def test_agreement_and_ranking_equal_the_reference():
    annots = json.loads((DATA / "annots.json").read_text())
    for want in REF["agreement"]:
        got = C.caption_agreement(annots, include_tie=want["include_tie"], in_400=want["in_400"])
        assert {k: got[k] for k in want["levels"]} == {k: (sum(v) / len(v) if v else None)
                                                       for k, v in want["levels"].items()}
        assert got["counts"] == {k: len(v) for k, v in want["levels"].items()}
        if want["include_tie"]:
            assert got["ties"] == want["ties"]
    ranking = C.elo_ranking(annots)
    assert ranking == REF["ranking"]
    assert C.model_agreement(ranking, HUMAN) == {"spearman": REF["spearman"], "kendall": REF["kendall"]}


def test_verdict_reading_and_battles():
    assert C.read_judgment("Reason: more detail.\nJudgment: Caption 2 is better.") == "Caption 2 is better."
    assert C.read_judgment("Judgment: Tie") is None  # no reason: the reference asks again
    bench = json.loads((DATA / "bench.json").read_text())
    caps = json.loads((DATA / "captions.json").read_text())
    b = C.battles(bench, caps, "m", seed=3)
    assert len(b) == 12 and b == C.battles(bench, caps, "m", seed=3)
    assert all({x["source1"], x["source2"]} == {"m", x["ref_model"]} for x in b)
    assert len(C.battles(bench, caps, "GPT-4o-0806")) == 8  # its own images are not battles
    with pytest.raises(ValueError, match="no caption of m for test_00000.jpg"):
        C.battles(bench, {}, "m")


class Prefers(Backend):
    """A VLM judge that prefers the longer caption (it reads the prompt; it sees the image)."""

    name = "prefers"
    model = "longer"

    def __init__(self):
        super().__init__()
        self.asked = 0

    def _generate(self, requests):
        out = []
        for r in requests:
            self.asked += 1
            assert len(r.images) == 1 and r.messages[0]["role"] == "system"
            text = r.messages[-1]["content"][-1]["text"]
            c1 = text.split("Caption 1:\n")[1].split("\nCaption 2:")[0]
            c2 = text.split("Caption 2:\n")[1].split("\nCaption Reference:")[0]
            verdict = "Tie" if len(c1) == len(c2) else "Caption 1 is better." if len(c1) > len(c2) else "Caption 2 is better."
            out.append(GenerationResult(text=f"Reason: length.\nJudgment: {verdict}"))
        return out


def _app():
    from pixscribe.commands import Commands
    from pixscribe.metrics.eval_cli import register

    app = typer.Typer(cls=Commands)
    register(app)
    app.callback()(lambda: None)
    return app


# Stand-in prompts in the shape of CapArena's vlm_as_a_judge.py: pixscribe does not carry the
# reference's text (no licence), it reads it from the user's checkout (see caparena_prompts).
JUDGE_PY = '''
import os
system_prompt_without_ref = """Judge two captions of the image. Answer: Reason: ... Judgment: ..."""
system_prompt_with_ref = """Judge two captions of the image against a reference. Answer: Reason: ... Judgment: ..."""

def run(item, with_ref):
    caption_1, caption_2, caption_ref = item["caption1"], item["caption2"], item["ref"]
    if with_ref:
        compare_prompt = f"Caption 1:\\n{caption_1}\\nCaption 2:\\n{caption_2}\\nCaption Reference:\\n{caption_ref}\\nWhich {{one}}?"
    else:
        compare_prompt = f"Caption 1:\\n{caption_1}\\nCaption 2:\\n{caption_2}\\nWhich?"
    return compare_prompt
'''


def judge_py(tmp_path):
    p = tmp_path / "vlm_as_a_judge.py"
    p.write_text(JUDGE_PY)
    return p


def test_prompts_are_read_from_the_users_checkout_without_running_it(tmp_path):
    from pixscribe.metrics import caparena_prompts as P

    p = judge_py(tmp_path)
    with pytest.raises(P.PromptFileError, match="not those of CapArena @ c251cdd.*allow_other_prompts"):
        P.load(p)
    got = P.load(p, allow_other=True)
    assert got["system_with_ref"].startswith("Judge two captions of the image against")
    assert got["compare_with_ref"] == ("Caption 1:\n{caption_1}\nCaption 2:\n{caption_2}\n"
                                       "Caption Reference:\n{caption_ref}\nWhich {{one}}?")
    item = {"caption1": "a {x}", "caption2": "b", "ref": "r", "img": "i.jpg"}
    req = C.judge_request(item, Image.new("RGB", (4, 4)), got, with_ref=True)
    assert req.messages[0]["content"][0]["text"] == got["system_with_ref"]
    assert req.messages[-1]["content"][-1]["text"] == "Caption 1:\na {x}\nCaption 2:\nb\nCaption Reference:\nr\nWhich {one}?"
    (tmp_path / "bad.py").write_text(JUDGE_PY.replace("{caption_ref}", "{os.environ}"))
    with pytest.raises(P.PromptFileError, match="a field other than"):
        P.load(tmp_path / "bad.py", allow_other=True)
    (tmp_path / "other.py").write_text("x = 1\n")
    with pytest.raises(P.PromptFileError, match="no module-level string `system_prompt_with_ref`"):
        P.load(tmp_path / "other.py")


def test_judged_battles_then_replayed(tmp_path):
    from pixscribe.metrics import caparena_prompts as P

    prompts = P.load(judge_py(tmp_path), allow_other=True)
    bench = json.loads((DATA / "bench.json").read_text())
    caps = json.loads((DATA / "captions.json").read_text())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n, img in enumerate(bench):
        Image.new("RGB", (16, 12), (n * 20, 100, 50)).save(imgs / img)
    backend = Prefers()
    judge = CachedJudge(backend)
    items = C.battles(bench, caps, "m")
    assert C.judge_battles(items, imgs, judge, prompts) == [] and backend.asked == 12
    want = C.scores(items, "m")
    longer = sum((1 if len(caps[it["img"]]) > len(bench[it["img"]]["captions"][it["ref_model"]]) else -1)
                 for it in items if len(caps[it["img"]]) != len(bench[it["img"]]["captions"][it["ref_model"]]))
    assert sum(want.per_baseline.values()) == longer / 2
    judge.write_transcript(tmp_path / "t.jsonl")
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    out = tmp_path / "r.json"
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "caparena", "--pred", str(tmp_path / "caps.json"),
                                    "--caparena-data", str(DATA / "bench.json"), "--caparena-images", str(imgs),
                                    "--caparena-model", "m", "--judge-replay", str(tmp_path / "t.jsonl"),
                                    "--caparena-prompts", str(judge_py(tmp_path)),
                                    "--detail-option", "caparena.allow_other_prompts=true", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["corpus"]["caparena_score"] == want.score_avg and rep["info"]["judge"]["replayed"] == 12
    # another image is another request: the replay does not answer it
    Image.new("RGB", (16, 12), "white").save(imgs / "test_00000.jpg")
    again = make_judge(None, replay=tmp_path / "t.jsonl")
    items2 = C.battles(bench, caps, "m")
    assert len(C.judge_battles(items2, imgs, again, prompts)) == 1 and again.replayed == 11
    info = rep["info"]["caparena"]
    assert info["prompts_sha256"] == P.digest(prompts) and info["prompts_are_c251cdd"] is False
    assert info["prompts_file"] == str(tmp_path / "vlm_as_a_judge.py")


def test_cli_scores_saved_verdicts(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "caparena", "--pred", str(DATA / "captions.json"),
                                    "--caparena-verdicts", str(DATA / "verdicts.json"),
                                    "--caparena-model", "pixscribe-test", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    want = REF["scores"]["pixscribe-test"]
    assert rep["corpus"]["caparena_score"] == want["Score_Avg"] and rep["corpus"]["caparena_length"] == want["Length_Avg"]
    r = CliRunner().invoke(_app(), ["eval", "--metrics", "caparena", "--pred", str(DATA / "captions.json"),
                                    "--caparena-data", str(DATA / "bench.json"), "--caparena-images", str(tmp_path)])
    assert r.exit_code == 2 and "caparena needs an LLM judge" in r.output
