"""Backends and stages by contract (issue 24): what the engine calls on a backend is declared on
the ``Backend`` base with its defaults (no attribute probing), a backend is built from a model
spec, and the Ray planner groups stages by the models they declare (``Stage.models``)."""

from __future__ import annotations

from pixscribe.api import Method, Stage, resolve_spec
from pixscribe.backends import make_backend
from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.config import RunConfig
from pixscribe.engine.models import ModelPool
from pixscribe.engine.ray.plan import plan_groups
from pixscribe.stages import GenerateStage


class Served(Backend):
    """A backend that only says how to check its server: ``load`` is the base's, which checks."""

    name = "served"
    model = "m"
    max_inflight_batches = 2
    preferred_batch_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    def check(self) -> None:
        self.checks += 1

    def _generate(self, requests):
        return [GenerationResult(text="ok") for _ in requests]


class Local(Served):
    name = "local"
    device_request = "auto"
    max_inflight_batches = 1
    preferred_batch_size = None

    def _load(self) -> None:
        pass

    def load(self) -> None:
        self._load()


def test_a_stage_reads_what_its_backend_declares():
    b = Served()
    stage = GenerateStage("s", b, {"prompt": "x"}, provides="t")
    assert (stage.batch_size, stage.max_inflight_batches, stage.models()) == (64, 2, [b])
    stage.setup()  # the base's load() is check()
    assert b.checks == 1
    plain = GenerateStage("p", Local(), {"prompt": "x"}, provides="t")
    assert (plain.batch_size, plain.max_inflight_batches) == (None, 1)


def test_a_backend_is_built_from_a_spec_with_the_run_settings():
    cfg = RunConfig(vlm="a-model", backend="openai", base_url=["http://127.0.0.1:9/v1"], concurrency=3,
                    models={"judge": {"model": "j", "backend": "transformers", "device": "cpu", "dtype": "fp32"}})
    served = make_backend(resolve_spec(cfg, "vlm"), cfg)
    assert (type(served).__name__, served.model, served.concurrency) == ("OpenAIBackend", "a-model", 3)
    local = make_backend(resolve_spec(cfg, "judge"), cfg)  # another role: its own model, device and dtype
    assert (type(local).__name__, local.model, local.device_request, local.dtype_request) == (
        "TransformersBackend", "j", "cpu", "fp32")
    assert local.max_pixels == cfg.max_pixels and served.max_inflight_batches == 2


def test_the_pool_counts_only_real_weight_loads(monkeypatch):
    import pixscribe.backends as backends

    monkeypatch.setattr(backends, "make_backend", lambda spec, config: Local() if spec.local else Served())
    cfg = RunConfig(vlm="v", models={"llm": {"model": "s", "backend": "openai", "base_url": ["http://h:1/v1"]}})
    pool = ModelPool(cfg)
    local, served = pool.get(resolve_spec(cfg, "vlm")), pool.get(resolve_spec(cfg, "llm"))
    assert pool.get(resolve_spec(cfg, "vlm")) is local  # one per spec key
    local.load()
    served.load()
    assert list(pool.loads.values()) == [1] and served.checks == 1  # a served model loads no weights


def test_the_ray_planner_groups_by_the_models_stages_declare():
    shared, other = Local(), Served()

    class Holder(Stage):
        """A stage of its own kind, holding the shared model."""

        name = "holder"
        provides = ("h",)

        def models(self):
            return [shared]

        def __call__(self, records):
            return records

    stages = [GenerateStage("a", shared, {"prompt": "x"}, provides="x"),
              GenerateStage("b", other, {"prompt": "y"}, provides="y", needs=("x",), needs_image=False),
              Holder()]
    groups = plan_groups(Method("m", stages, ["x", "y", "h"], None), RunConfig(), cluster_gpus=2)
    assert [(g.name, g.num_gpus) for g in groups] == [("a+b+holder", 1.0)]  # a local model: a GPU
    alone = plan_groups(Method("n", stages[1:2], ["y"], None), RunConfig(), cluster_gpus=2)
    assert [(g.name, g.num_gpus, g.concurrency) for g in alone] == [("b", 0.0, 2)]  # a server: none
