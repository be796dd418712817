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


class _Remote(LocalExecutor):
    """Runs like the local executor, but "loads" nowhere and reports usage of its own."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.setups = 0

    def setup(self, run, method):
        self.setups += 1

    def usage(self, method):
        return {"elsewhere": {"requests": 42}}


def test_setup_and_usage_hooks_replace_the_local_ones(photo_dir, tmp_path):
    cfg = RunConfig(inputs=[str(photo_dir)], output=str(tmp_path / "out"), progress=False, vlm="scripted-vlm")
    backend = ScriptedBackend()
    loads = []
    backend.load = lambda: loads.append(1)  # GenerateStage.setup calls it: the local hook would
    method = three_stage_method(cfg, backend).with_fingerprints(image_options(cfg))
    ex = _Remote(cfg)
    summary = ex.run(method)
    assert ex.setups == 1 and loads == []
    assert summary.usage == {"elsewhere": {"requests": 42}}
    assert summary.rows_written == 6 and len(pq.read_table(tmp_path / "out")) == 6

    local = LocalExecutor(cfg.model_copy(update={"output": str(tmp_path / "out2")}))
    method2 = three_stage_method(cfg, ScriptedBackend()).with_fingerprints(image_options(cfg))
    method2.stages[0].backend.load = lambda: loads.append(1)  # the three stages share it
    s2 = local.run(method2)
    assert loads == [1, 1, 1]  # the default hook sets every stage up here
    assert s2.usage["vlm:scripted-vlm"]["requests"] == 18  # three stages x 6 rows, one shared model


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
