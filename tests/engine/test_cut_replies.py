"""A cut reply is never data, from the command line against a scripted OpenAI-compatible server
(``pixscribe.testing.openai_server --replies``) answering with the exact text a real vLLM 0.32
server gave: the extraction reply ``{"objects"`` and whitespace, cut at the token limit
(``finish_reason: length``), which json-repair turns into the object list ``["objects"]``.

Per method (textualize, panoptic, region), one run with rows scripted differently: a reply cut
every time (a ``truncated:`` row error; the later stages never see it), a reply cut at the
first limit and whole at the raised one (the stage's one retry with ``retry_max_new_tokens``
saves the row), and a reply nested so deep that json-repair raises (a ``schema:`` error after
the stricter retry, or saved by it), never a ``generate: backend:`` error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from test_e2e_cli import cli
from test_region_method import image_rows, write_scene

from pixscribe.testing import write_sample_photos
from pixscribe.testing.openai_server import ServerProcess

EXTRACT = "You list the objects that an image description mentions"
REWRITE = "You improve an image description"
LOCALIZE = "Localize every entity in the image"
STRUCTURED = "Describe this image as JSON"
MARKS = "numbered regions"
CUT_OBJECTS = '{"objects"' + "\n" * 12 + "  \n"  # what vLLM 0.32 answered, cut at the limit
DEEP = "[" * 600  # json-repair: "Input nesting exceeds the supported parser recursion depth"
STRICT = "Reply with one JSON value only"  # the stricter retry's system message


def serve(tmp: Path, rules: list[dict], *args: str) -> ServerProcess:
    path = tmp / "replies.json"
    path.write_text(json.dumps(rules))
    return ServerProcess("--mode", "echo", "--model", "m", "--replies", str(path), *args)


def rows_by_source(out: Path) -> dict[str, dict]:
    return {Path(r["source"]).stem: r for r in pq.read_table(out).to_pylist()}


def summary(out: Path) -> dict:
    return json.loads(sorted((out / "_state" / "summaries").glob("*.json"))[-1].read_text())


def photos(d: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Sample photos in ``d``; name -> the size the echo server writes into its replies."""
    write_sample_photos(d, names)
    return {n: "{}x{}]".format(*Image.open(d / f"{n}.jpg").size) for n in names}


def _textualize_config(tmp: Path, tiny_experts: dict[str, Path]) -> Path:
    cfg = {"expert_models": {"dense": str(tiny_experts["florence2_regions"]), "sam": str(tiny_experts["sam"]),
                             "depth": str(tiny_experts["depth_anything"]),
                             "grounding_dino": str(tiny_experts["grounding_dino"])},
           "expert_options": {"dense": {"num_beams": 1, "max_new_tokens": 24}}, "device": "cpu"}
    p = tmp / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_textualize_cut_and_unreadable_extractions_from_the_cli(tiny_experts, tmp_path):
    size = photos(tmp_path / "photos", ("astronaut", "coffee", "chelsea", "rocket"))
    rules = [
        {"when": [EXTRACT, size["astronaut"]], "content": CUT_OBJECTS, "finish_reason": "length"},  # 0: always cut
        {"when": [EXTRACT, size["coffee"]], "max_tokens_below": 32, "content": CUT_OBJECTS,
         "finish_reason": "length"},  # 1: cut at 16 ...
        {"when": [EXTRACT, size["coffee"]], "content": '{"objects": ["cat"]}'},  # 2: ... whole at the retry's 32
        {"when": [EXTRACT, size["chelsea"]], "system": STRICT, "content": '{"objects": ["dog"]}'},  # 3: stricter retry
        {"when": [EXTRACT, size["chelsea"]], "content": DEEP},  # 4: json-repair raises once
        {"when": [EXTRACT, size["rocket"]], "content": DEEP},  # 5: ... every time
        {"when": [REWRITE, size["astronaut"]], "content": "must never be asked"},  # 6
        {"when": REWRITE, "content": "A rewritten caption."},  # 7
    ]
    with serve(tmp_path, rules) as srv:
        out = tmp_path / "out"
        cli("caption", str(tmp_path / "photos"), "-o", str(out), "--method", "textualize", "--backend", "openai",
            "--base-url", srv.url, "--vlm", "m", "--config", str(_textualize_config(tmp_path, tiny_experts)),
            "--max-new-tokens", "200", "-S", "objects.max_new_tokens=16", "--no-progress")
        st = srv.stats()
    rows = rows_by_source(out)
    cut = rows["astronaut"]
    assert cut["error"].startswith("truncated: stage objects: the reply was cut at max_new_tokens=16, and again at "
                                   "32 on the retry (finish_reason=length)")
    assert "-S objects.max_new_tokens" in cut["error"] and "-S objects.retry_max_new_tokens" in cut["error"]
    assert cut["phrases"] is None and cut["objects"] is None and cut["hallucinations"] is None
    assert cut["caption"] is None and json.loads(cut["stages"])["objects"]["status"] == "error"
    assert all(r["phrases"] != '["objects"]' for r in rows.values())  # what json-repair made of the cut reply
    assert st["by_reply"].get("0") == 2 and "6" not in st["by_reply"]  # asked twice; the rewrite never ran on it
    assert {16, 32} <= set(st["max_tokens"])

    saved = rows["coffee"]
    assert saved["error"] is None and json.loads(saved["phrases"]) == ["cat"]
    assert json.loads(saved["provenance"])["phrases"]["retried_max_new_tokens"] == 32
    assert st["by_reply"].get("1") == 1 and st["by_reply"].get("2") == 1

    stricter = rows["chelsea"]  # json-repair raised: a schema problem, so the stricter retry was asked
    assert stricter["error"] is None and json.loads(stricter["phrases"]) == ["dog"]
    assert st["by_reply"].get("4") == 1 and st["by_reply"].get("3") == 1
    deep = rows["rocket"]
    assert deep["error"].startswith("schema: reply is not JSON and json-repair could not read it")
    assert "Input nesting exceeds" in deep["error"] and deep["error"].endswith("(after one stricter retry)")
    assert st["by_reply"].get("5") == 2
    assert summary(out)["errors"] == {"schema": 1, "truncated": 1}


def _panoptic(tmp: Path, srv: ServerProcess, out: Path, *extra: str):
    return cli("caption", str(tmp / "photos"), "-o", str(out), "--method", "panoptic", "--backend", "openai",
               "--base-url", srv.url, "--vlm", "m", "--no-progress", *extra)


def test_panoptic_cut_lists_and_json_from_the_cli(tmp_path):
    size = photos(tmp_path / "photos", ("astronaut", "coffee", "chelsea", "rocket"))
    square = {n: "{0}x{0}".format(max(map(int, s[:-1].split("x")))) for n, s in size.items()}  # what panoptic sends
    box = "<box>[[100, 200, 600, 800]]</box>"
    rules = [
        {"when": LOCALIZE, "system": STRICT, "content": "never: localize asks for no JSON"},  # 0
        {"when": LOCALIZE, "max_tokens_below": 128, "content": f"{box}, <box>[[50, 6", "finish_reason": "length"},  # 1
        {"when": LOCALIZE, "content": box},  # 2: whole at the retry's limit
        {"when": STRUCTURED, "image": square["coffee"], "content": '{"entities"' + " " * 20,
         "finish_reason": "length"},  # 3: cut while writing JSON
        {"when": STRUCTURED, "image": square["chelsea"], "attempt": 1, "content": DEEP},  # 4: then the echo's JSON
    ]
    with serve(tmp_path, rules) as srv:
        out = tmp_path / "out"
        _panoptic(tmp_path, srv, out, "--structured", "-S", "localize.max_new_tokens=64")
        st = srv.stats()
    rows = rows_by_source(out)
    # every image's localize reply was cut at 64; the retry at twice that answered whole
    assert st["by_reply"].get("1") == 4 and st["by_reply"].get("2") == 4 and "0" not in st["by_reply"]
    assert {64, 128, 1024, 2048} <= set(st["max_tokens"])
    for name in ("astronaut", "rocket"):
        r = rows[name]
        assert r["error"] is None and r["boxes"] == box, r["error"]  # the whole reply, not the cut one's box
        assert json.loads(r["provenance"])["boxes"]["retried_max_new_tokens"] == 128
    cut = rows["coffee"]  # the structured caption cut while writing JSON, at 1024 and at 2048
    assert cut["error"].startswith("truncated: stage caption: the reply was cut at max_new_tokens=1024, and again "
                                   "at 2048 on the retry (finish_reason=length)")
    assert cut["panoptic_json"] is None and cut["caption"] is None and st["by_reply"].get("3") == 2
    deep = rows["chelsea"]  # json-repair raised on the first reply: the stricter retry got valid JSON
    assert deep["error"] is None and json.loads(deep["panoptic_json"]).keys() == {"entities", "relations", "global"}
    assert st["by_reply"].get("4") == 1
    assert summary(out)["errors"] == {"truncated": 1}


def test_panoptic_localize_cut_twice_fails_the_row_before_tag(tmp_path):
    photos(tmp_path / "photos", ("astronaut",))
    cut = "<box>[[100, 200, 600, 800]]</box>, <box>[[50, 6"
    rules = [{"when": LOCALIZE, "content": cut, "finish_reason": "length"}]
    with serve(tmp_path, rules) as srv:
        out = tmp_path / "out"
        _panoptic(tmp_path, srv, out, "-S", "localize.max_new_tokens=64")
        st = srv.stats()
    (row,) = rows_by_source(out).values()
    assert row["error"].startswith("truncated: stage localize: the reply was cut at max_new_tokens=64, and again at "
                                   "128 on the retry")
    assert row["boxes"] is None and row["tagged"] is None  # the one whole box before the cut was not passed on
    assert st["chat_requests"] == 2 and st["by_reply"] == {"0": 2}  # tag, discover, caption never asked


def test_region_set_of_mark_cut_reply_from_the_cli(tmp_path):
    R, B = write_scene(tmp_path)
    src = image_rows(tmp_path, [R, B])
    cut = '{"1": "a red square", "2": "a blu'  # json-repair: {"1": "a red square", "2": "a blu"}, which validates
    whole = '{"1": "a red square", "2": "a blue square"}'
    with serve(tmp_path, [{"when": MARKS, "content": cut, "finish_reason": "length"}]) as srv:
        # --task dense: both regions in one set-of-mark request (R's own attribute would ask it alone)
        args = ["caption", str(src), "--method", "region", "--region-prompt", "som", "--task", "dense",
                "--backend", "openai", "--base-url", srv.url, "--vlm", "m", "--no-progress"]
        cli(*args, "-o", str(tmp_path / "cut"))
        (row,) = pq.read_table(tmp_path / "cut").to_pylist()
        assert row["error"].startswith("truncated: stage region: the reply was cut at max_new_tokens=256, and again "
                                       "at 512 on the retry (finish_reason=length)") and "(per region)" in row["error"]
        assert [x["caption"] for x in row["regions"]] == [None, None]  # never "a blu"
        assert all(x["error"].startswith("truncated:") for x in row["regions"])
        assert srv.stats()["max_tokens"] == [512, 1024]  # 256 and 512 per region, two regions

        srv.reset()
        srv.admin(replies=[{"when": MARKS, "max_tokens_below": 1024, "content": cut, "finish_reason": "length"},
                           {"when": MARKS, "content": whole}])
        cli(*args, "-o", str(tmp_path / "retried"))  # the default retry: twice the limit
        (row,) = pq.read_table(tmp_path / "retried").to_pylist()
        assert row["error"] is None and [x["caption"] for x in row["regions"]] == ["a red square", "a blue square"]
        assert srv.stats()["max_tokens"] == [512, 1024] and srv.stats()["by_reply"] == {"0": 1, "1": 1}

        srv.reset()
        cli(*args, "-o", str(tmp_path / "no-retry"), "-S", "region.retry_max_new_tokens=0")
        (row,) = pq.read_table(tmp_path / "no-retry").to_pylist()
        assert row["error"].startswith("truncated: stage region: the reply was cut at max_new_tokens=256 "
                                       "(finish_reason=length)") and srv.stats()["max_tokens"] == [512]


@pytest.mark.parametrize("mode", ["focal", "som"])
def test_region_errors_share_the_vocabulary_of_every_method(tmp_path, mode):
    """A failed request is ``generate: ...`` in region rows as in the others (it was the bare
    ``http: ...`` here and ``generate: http: ...`` in panoptic)."""
    R, _ = write_scene(tmp_path)
    src = image_rows(tmp_path, [R])
    with ServerProcess("--mode", "echo", "--model", "m", "--permanent", "400", "--permanent-share", "1") as srv:
        cli("caption", str(src), "-o", str(tmp_path / "out"), "--method", "region", "--region-prompt", mode,
            "--backend", "openai", "--base-url", srv.url, "--vlm", "m", "--no-progress", "--max-retries", "0")
    (row,) = pq.read_table(tmp_path / "out").to_pylist()
    assert row["error"].startswith("generate: http: 400")
    assert row["regions"][0]["error"].startswith("generate: http: 400")
