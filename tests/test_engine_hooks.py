"""The shared engine's hooks for executors whose stages run elsewhere (the Ray executor):
``Executor.setup`` and ``Executor.usage`` replace loading and counting in this process, and
``MethodRunner(batch, start, stop)`` runs a slice of a method's stages, keeping images and
priors for the stages after it."""

from __future__ import annotations

import pyarrow.parquet as pq

from fixtures_engine import ScriptedBackend, three_stage_method
from pixscribe.config import RunConfig
from pixscribe.engine.apply import MethodRunner
from pixscribe.engine.executor import LocalExecutor
from pixscribe.engine.run import image_options
from pixscribe.record import Record
from pixscribe.testing import sample_photo


def test_runner_slices_keep_images_until_the_last_stage():
    cfg = RunConfig(vlm="scripted-vlm")
    method = three_stage_method(cfg, ScriptedBackend()).with_fingerprints(image_options(cfg))
    recs = []
    for i, name in enumerate(("astronaut", "coffee")):
        r = Record(source=name, id=f"r{i}")
        r.image = sample_photo(name)
        r.width, r.height = r.image.size
        recs.append(r)
    first, rest = MethodRunner(method), MethodRunner(method)
    first(recs, 0, 1)
    assert all(r.image is not None and r.fields["seen"].startswith("an image of") for r in recs)
    assert all("facts" not in r.fields for r in recs)
    assert first.counts["see"].computed == 2 and first.counts["extract"].computed == 0
    rest(recs, 1)
    assert all(r.image is None and r.fields["final"].startswith("re[") for r in recs)
    assert rest.counts["see"].computed == 0 and rest.counts["rewrite"].computed == 2
    assert [list(r.stages) for r in recs] == [["see", "extract", "rewrite"]] * 2
