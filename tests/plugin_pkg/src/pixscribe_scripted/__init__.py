"""A pixscribe method plugin for tests: two stages with a scripted model whose answers come
from the pixels (``see``: the image's size and mean colour) and from the text before
(``rewrite``), so outputs can be checked. The model's latency per batch comes from
``PIXSCRIBE_SCRIPTED_DELAY`` (seconds); ``PIXSCRIBE_SCRIPTED_FAIL`` lists record ids
(comma-separated) whose ``see`` request fails; ``PIXSCRIBE_SCRIPTED_CRASH`` lists ids on
which the process answering dies at once (a poison row that kills its worker); with
``PIXSCRIBE_SCRIPTED_PIDDIR`` set, every process that answers a batch leaves a file named
by its pid there (so a test can kill a Ray worker by pid). ``PIXSCRIBE_SCRIPTED_GATE=PATH[:N]``:
after the process's first N calls with images (0 when not given), each such call waits until
PATH exists, so a test holds a run at a known point instead of racing it.

A second method, ``sleep``, is the benchmarks' simulated model: one image stage that
sleeps ``PIXSCRIBE_SCRIPTED_DELAY`` per batch and answers with the image's size (no other
work, like a GPU doing it).

``declared`` is ``scripted`` written as a method of the new shape (issue 24): its stages'
options declared once with types and descriptions, a flag (``--shout-prompt``, the ``shout``
stage's prompt) and its model role, all read by the ``pixscribe`` command from the entry point
alone.

A fourth, ``scripted-textualize``, is the real textualize method (its factory, stages and
options) with the scripted VLM/LLM and experts of ``pixscribe.testing.scripted_textualize``
answering for any image: every picture shows the same scene (a cat on a sofa, a dog that the
detector does not find), the rewrite is computed from its request, and
``PIXSCRIBE_SCRIPTED_DELAY`` is each model's latency per call."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np

from pixscribe.api import Flag, Method, ModelRole, StageOptions, option, register_method
from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult
from pixscribe.stages import GenerateStage, quote
from pixscribe.stages.generate import sampling_of


class Scripted(Backend):
    name = "scripted"
    model = "scripted-model"

    def _generate(self, requests):
        piddir = os.environ.get("PIXSCRIBE_SCRIPTED_PIDDIR")
        if piddir:
            open(os.path.join(piddir, str(os.getpid())), "a").close()
        crash = set(filter(None, os.environ.get("PIXSCRIBE_SCRIPTED_CRASH", "").split(",")))
        if any(r.id in crash for r in requests):
            os._exit(17)
        time.sleep(float(os.environ.get("PIXSCRIBE_SCRIPTED_DELAY", "0")))
        if any(r.images for r in requests):
            _gate()
        fail = set(filter(None, os.environ.get("PIXSCRIBE_SCRIPTED_FAIL", "").split(",")))
        out = []
        for r in requests:
            if r.images:
                if r.id in fail:
                    out.append(GenerationResult(error="http: 500 scripted failure"))
                    continue
                im = r.images[0]
                mean = np.asarray(im).reshape(-1, 3).mean(0).round().astype(int).tolist()
                out.append(GenerationResult(text=f"{im.width}x{im.height} mean {mean}", seconds=0.001))
            else:
                text = r.messages[-1]["content"]
                text = text if isinstance(text, str) else " ".join(p.get("text", "") for p in text)
                out.append(GenerationResult(text="re " + hashlib.sha256(text.encode()).hexdigest()[:8],
                                            seconds=0.001))
        return out


_image_calls = [0]


def _gate():
    spec = os.environ.get("PIXSCRIBE_SCRIPTED_GATE")
    if not spec:
        return
    path, _, free = spec.partition(":")
    _image_calls[0] += 1
    if _image_calls[0] <= int(free or 0):
        return
    while not os.path.exists(path):
        time.sleep(0.02)


def _rewrite_request(rec, opts):
    return GenerationRequest.simple(f"{opts['prompt']} {quote(rec.get('seen'))}", sampling=sampling_of(opts),
                                    id=rec.id)


def scripted(ctx):
    b = Scripted()
    see = GenerateStage("see", b, ctx.options("see", primary=True, prompt="Describe.", max_new_tokens=8),
                        provides="seen")
    rew = GenerateStage("rewrite", b, ctx.options("rewrite", prompt="Rewrite:", max_new_tokens=8),
                        provides="final", needs=("seen",), needs_image=False, build=_rewrite_request)
    return Method("scripted", [see, rew], ["seen", "final"], "final", {"caption": "org_caption"})


@dataclass(frozen=True)
class SeeOptions(StageOptions):
    """The scripted VLM describes each image (its size and mean colour)."""

    prompt: str = option("Describe.", "the request sent with each image")
    max_new_tokens: int = option(8, "most tokens generated per reply")


@dataclass(frozen=True)
class ShoutOptions(StageOptions):
    """The scripted model answers the description back, hashed with the request."""

    prompt: str = option("Shout:", "the request before the quoted description")
    max_new_tokens: int = option(8, "most tokens generated per reply")


@register_method("declared", summary="a two-stage plugin method with a declared flag",
                 options={"see": SeeOptions, "shout": ShoutOptions}, flags=[Flag("shout_prompt", "shout", "prompt")],
                 roles=[ModelRole("vlm", "the scripted model of both stages")])
def declared(ctx):
    b = Scripted()
    see = GenerateStage("see", b, ctx.options("see", SeeOptions, primary=True), provides="seen")
    shout = GenerateStage("shout", b, ctx.options("shout", ShoutOptions), provides="loud", needs=("seen",),
                          needs_image=False, build=_rewrite_request)
    return Method("declared", [see, shout], ["seen", "loud"], "loud", {"caption": "org_caption"})


class Sleeper(Backend):
    name = "sleeper"
    model = "sleeper-model"

    def _generate(self, requests):
        time.sleep(float(os.environ.get("PIXSCRIBE_SCRIPTED_DELAY", "0")))
        return [GenerationResult(text=f"an image of {r.images[0].width}x{r.images[0].height}", seconds=0.001)
                for r in requests]


def sleep(ctx):
    stage = GenerateStage("sleep", Sleeper(), ctx.options("sleep", primary=True, prompt="Describe.",
                                                          max_new_tokens=8), provides="text")
    return Method("sleep", [stage], ["text"], "text")


def _any_scene():
    from pixscribe.testing.scripted_textualize import Scene, Script

    def scene(size):
        return Scene(size, "A cat sleeps on a sofa. A dog watches it from the door.", ["cat", "sofa", "dog"],
                     gdino={"cat": (0.8, (0.1, 0.1, 0.4, 0.6)), "sofa": (0.6, (0.0, 0.7, 1.0, 1.0))},
                     regions=[("a grey cat", (0.1, 0.1, 0.4, 0.6), 0.9), ("a blue sofa", (0.0, 0.7, 1.0, 1.0), 0.5)])

    class ByText(dict):
        def __missing__(self, text):  # any description names the scene's objects
            return scene((1, 1))

    class AnyScene(Script):
        def __init__(self):
            super().__init__([])
            self.by_text = ByText()

        def of(self, img):
            return scene((img.width, img.height))

    return AnyScene()


def scripted_textualize(ctx):
    from pixscribe.methods.textualize import textualize_method
    from pixscribe.testing.scripted_textualize import ScriptedLLM, scripted_experts

    script = _any_scene()
    latency = float(os.environ.get("PIXSCRIBE_SCRIPTED_DELAY", "0"))
    model = ScriptedLLM(script, "scripted-llm", latency)
    ctx.pool.put(ctx.spec("vlm"), model)
    ctx.pool.put(ctx.spec("llm"), model)
    return textualize_method(ctx, scripted_experts(script, latency))
