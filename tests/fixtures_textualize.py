"""Scripted scenes for the textualize method and a helper that runs the real engine on them.

The scenes are synthetic images told apart by their size; the scripted VLM/LLM and
experts (pixscribe.testing.scripted_textualize) answer from them, so every number a
stage computes is known in advance.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pixscribe.config import RunConfig
from pixscribe.engine.context import BuildContext
from pixscribe.engine.runner import Runner
from pixscribe.methods.textualize import textualize_method
from pixscribe.testing.scripted_textualize import Scene, Script, ScriptedLLM, scripted_experts

# A cat on a sofa; the description also names a dog, which the detector does not find.
CAT_SOFA_DOG = Scene(
    (100, 50), "A cat sleeps on a sofa. A dog watches it from the door.", ["cat", "sofa", "dog"],
    gdino={"cat": (0.8, (0.1, 0.1, 0.4, 0.6)), "sofa": (0.6, (0.0, 0.7, 1.0, 1.0)), "dog": (0.1, (0.5, 0.1, 0.7, 0.5))},
    owl={"cat": (0.3, (0.12, 0.1, 0.4, 0.6)), "sofa": (0.2, (0.5, 0.0, 0.6, 0.2)), "dog": (0.4, (0.5, 0.1, 0.7, 0.5))},
    regions=[("a grey cat", (0.1, 0.1, 0.4, 0.6), 0.9), ("a blue sofa", (0.0, 0.7, 1.0, 1.0), 0.5),
             ("a lamp", (0.8, 0.0, 0.95, 0.3), 0.2)],
)
ONE_REGION = Scene((80, 60), "A red bicycle leans on a wall.", ["red bicycle", "wall"],
                   gdino={"red bicycle": (0.7, (0.2, 0.2, 0.8, 0.9))},
                   regions=[("a red bicycle", (0.2, 0.2, 0.8, 0.9), 0.7)])
SAME_DEPTH = Scene((90, 60), "Two cups stand on a table.", ["two cups", "table"],
                   gdino={"two cups": (0.5, (0.1, 0.1, 0.5, 0.5)), "table": (0.9, (0.0, 0.5, 1.0, 1.0))},
                   regions=[("a white cup", (0.1, 0.1, 0.3, 0.4), 0.6), ("a blue cup", (0.6, 0.1, 0.8, 0.4), 0.6)])
# the extraction answer is the plain marker format, not JSON
MARKER_REPLY = Scene((70, 70), "A horse stands in a field next to a fence.", "OBJECTS: a horse. field. 2) fence.",
                     gdino={"a horse": (0.9, (0.2, 0.2, 0.6, 0.8)), "fence": (0.3, (0.0, 0.6, 1.0, 0.8))},
                     regions=[("a brown horse", (0.2, 0.2, 0.6, 0.8), 0.8), ("a wooden fence", (0.0, 0.6, 1.0, 0.8), 0.3)])
# a man on a bicycle; the parked car is a hallucination
BIKE_CAR = Scene((120, 80), "A man rides a bicycle on the street. A car is parked behind him.",
                 ["man", "bicycle", "street", "car"],
                 gdino={"man": (0.9, (0.3, 0.1, 0.6, 0.8)), "bicycle": (0.7, (0.25, 0.4, 0.7, 0.95)),
                        "street": (0.5, (0.0, 0.7, 1.0, 1.0))},
                 regions=[("a man in a red helmet", (0.3, 0.1, 0.6, 0.45), 0.8),
                          ("a black bicycle", (0.25, 0.5, 0.7, 0.95), 0.7), ("a grey street", (0.0, 0.96, 1.0, 1.0), 0.1)])
SCENES = [CAT_SOFA_DOG, ONE_REGION, SAME_DEPTH, MARKER_REPLY]


def png(scene: Scene) -> bytes:
    b = io.BytesIO()
    scene.image().save(b, "PNG")
    return b.getvalue()


def write_scenes(d: Path, scenes: list[Scene], captions: list[str] | None = None,
                 keys: list[str] | None = None) -> Path:
    """A parquet table: ``key`` (``keys``, else scene0, scene1...), ``png`` bytes, maybe a ``caption`` column."""
    d.mkdir(parents=True, exist_ok=True)
    cols: dict[str, Any] = {"key": keys or [f"scene{i}" for i in range(len(scenes))], "png": [png(s) for s in scenes]}
    if captions is not None:
        cols["caption"] = captions
    path = d / "scenes.parquet"
    pq.write_table(pa.table(cols), path)
    return path


class ScriptedRun:
    """Runs the textualize method over scenes with scripted models and experts, keeping them
    so a test can count what each was asked."""

    def __init__(self, tmp: Path, scenes: list[Scene], *, ocr: bool = False, separate_llm: bool = False,
                 latency: float = 0.0, captions: list[str] | None = None, keys: list[str] | None = None):
        self.tmp, self.scenes = tmp, scenes
        self.script = Script(scenes)
        self.inputs = write_scenes(tmp / "in", scenes, captions, keys)
        self.ocr, self.separate_llm, self.latency = ocr, separate_llm, latency

    def run(self, out: str = "out", **cfg: Any) -> tuple[Any, list[dict[str, Any]]]:
        self.config = RunConfig(inputs=[str(self.inputs)], output=str(self.tmp / out), progress=False,
                                vlm="scripted-vlm", llm="scripted-llm" if self.separate_llm else None, **cfg)
        ctx = BuildContext(self.config)
        self.vlm = ScriptedLLM(self.script, "scripted-vlm", self.latency)
        self.llm = ScriptedLLM(self.script, "scripted-llm", self.latency) if self.separate_llm else self.vlm
        ctx.pool.put(ctx.spec("vlm"), self.vlm)
        ctx.pool.put(ctx.spec("llm"), self.llm)
        self.experts = scripted_experts(self.script, self.latency, ocr=self.ocr)
        self.method = textualize_method(ctx, self.experts)
        self.summary = Runner(self.config, self.method).run()
        rows = sorted(pq.read_table(self.tmp / out).to_pylist(), key=lambda r: r["id"])
        return self.summary, rows

    def calls(self) -> dict[str, int]:
        """Model calls per stage in the last run (images or requests each model saw)."""
        out = {name: e.calls for name, e in self.experts.items()}
        for kind in ("describe", "objects", "rewrite"):
            out[kind] = len(self.vlm.requests[kind]) + (len(self.llm.requests[kind]) if self.llm is not self.vlm else 0)
        return out
