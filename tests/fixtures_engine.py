"""Fixtures for engine tests: real photos on disk, hostile files, a scripted backend."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult
from pixscribe.testing import write_sample_photos


class ScriptedBackend(Backend):
    """Answers from the image itself (size and mean colour), so outputs are checkable.

    ``fail_ids``: ids whose request fails (per-request error); ``delay``: seconds per batch.
    """

    name = "scripted"

    def __init__(self, delay: float = 0.0, fail_ids: set[str] | None = None, seconds: float = 0.0):
        super().__init__()
        self.model = "scripted-vlm"
        self.delay = delay
        self.seconds = seconds
        self.fail_ids = set(fail_ids or ())
        self.batches: list[int] = []
        self.text_prompts: list[str] = []
        self.image_requests = 0

    def calls(self) -> dict[str, int]:
        """Requests per kind: ``image`` and the first word of each text prompt."""
        out: dict[str, int] = {"image": self.image_requests}
        for t in self.text_prompts:
            w = t.split(" ", 1)[0]
            out[w] = out.get(w, 0) + 1
        return out

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(len(requests))
        self.image_requests += sum(1 for r in requests if r.images)
        if self.delay:
            time.sleep(self.delay)
        out = []
        for r in requests:
            if r.id in self.fail_ids:
                out.append(GenerationResult(error="http: 500 scripted failure", status=500))
                continue
            if not r.images:  # a text-only request: answer from the prompt, checkably
                text = _last_text(r)
                self.text_prompts.append(text)
                tag = hashlib.sha256(text.encode()).hexdigest()[:6]  # the whole prompt shapes the answer
                out.append(GenerationResult(text=f"re[{tag} {text[-40:]}]", tokens_out=3, seconds=self.seconds))
                continue
            img = r.images[0]
            mean = np.asarray(img).reshape(-1, 3).mean(0).round().astype(int).tolist()
            out.append(GenerationResult(text=f"an image of {img.width}x{img.height} mean {mean}", tokens_out=5,
                                        seconds=self.seconds))
        return out


def _last_text(r: GenerationRequest) -> str:
    content = r.messages[-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def three_stage_method(cfg, backend, *, fail_rewrite_ids=()):
    """A method of three stages through the real engine: an image stage (``see``), and two
    text-only stages (``extract``, ``rewrite``) that each read the field before them.
    ``fail_rewrite_ids``: records whose rewrite request fails (for --retry-errors)."""
    from pixscribe.backends.base import GenerationRequest as Req
    from pixscribe.engine.context import BuildContext
    from pixscribe.api import Method
    from pixscribe.stages import GenerateStage, quote
    from pixscribe.stages.generate import sampling_of

    ctx = BuildContext(cfg)
    if backend is not None:  # else the real backends of the config, from the pool
        ctx.pool.put(ctx.spec("vlm"), backend)

    def from_field(field):
        def build(rec, opts):
            if rec.id in fail_rewrite_ids and field == "facts":
                raise RuntimeError("scripted rewrite failure")
            return Req.simple(f"{opts['prompt']} {quote(rec.get(field))}", sampling=sampling_of(opts), id=rec.id)
        return build

    vlm, llm = ctx.spec("vlm").identity(), ctx.spec("llm").identity()
    see = GenerateStage("see", ctx.model("vlm"), ctx.options("see", primary=True, prompt="Describe.",
                                                              max_new_tokens=32), provides="seen", identity=vlm)
    extract = GenerateStage("extract", ctx.model("llm"), ctx.options("extract", prompt="List objects:",
                                                                      max_new_tokens=16),
                            provides="facts", needs=("seen",), needs_image=False, build=from_field("seen"),
                            identity=llm)
    rewrite = GenerateStage("rewrite", ctx.model("llm"), ctx.options("rewrite", prompt="Rewrite:",
                                                                      max_new_tokens=16, temperature=0.0),
                            provides="final", needs=("facts",), needs_image=False, build=from_field("facts"),
                            identity=llm)
    m = Method("three", [see, extract, rewrite], ["seen", "facts", "final"], "final")
    m.pool = ctx.pool
    return m


def make_hostile_files(d: Path) -> dict[str, Path]:
    """The corrupt and hostile inputs of issue #2, each made from real bytes."""
    from pixscribe.testing import sample_photo

    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    photo = sample_photo("astronaut")
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()

    files["truncated"] = d / "truncated.jpg"
    files["truncated"].write_bytes(jpeg[: len(jpeg) // 3])
    files["zero"] = d / "zero.jpg"
    files["zero"].write_bytes(b"")
    files["text"] = d / "text.jpg"
    files["text"].write_text("this is not an image, just text named .jpg\n")

    # A PNG whose header declares 100000 x 100000 pixels: a decompression bomb.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    files["bomb"] = d / "bomb.png"
    files["bomb"].write_bytes(bomb)

    files["cmyk"] = d / "cmyk.jpg"
    photo.convert("CMYK").save(files["cmyk"], "JPEG")

    grad = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    files["png16"] = d / "gray16.png"
    Image.fromarray(grad).save(files["png16"])  # mode I;16

    pal = Image.new("P", (40, 30))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (0, 0, 20, 30))
    pal.info["transparency"] = 0
    files["palette"] = d / "palette_alpha.png"
    pal.save(files["palette"], transparency=0)

    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    files["gif"] = d / "animated.gif"
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=50, loop=0)

    rot = sample_photo("rocket")  # 640x427, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    files["exif"] = d / "exif_rotated.jpg"
    rot.save(files["exif"], "JPEG", exif=exif)

    files["thin"] = d / "thin.png"
    Image.new("RGB", (1, 4000), (10, 200, 30)).save(files["thin"])
    return files


@pytest.fixture()
def photo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    write_sample_photos(d / "a", ("astronaut", "chelsea", "coffee"))
    write_sample_photos(d / "b", ("rocket", "motorcycle", "grace_hopper"), fmt="PNG")
    return d


@pytest.fixture()
def hostile_dir(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    d = tmp_path / "hostile"
    return d, make_hostile_files(d)


@pytest.fixture()
def scripted_backend() -> ScriptedBackend:
    return ScriptedBackend()
