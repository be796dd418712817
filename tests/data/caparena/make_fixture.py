"""Make the CapArena-Auto fixture: a 12-image benchmark file, a model's captions, its judged battles
(verdicts.json), leaderboard files for the reference's 22 default models (leaderboard/), and battles
between models with human winners for the agreement measures (annots.json). Deterministic.

    python tests/data/caparena/make_fixture.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
BASE = ["GPT-4o-0806", "CogVLM2-llama3-chat-19B", "MiniCPM-V2.6-8B"]
DEFAULT = ["GPT-4o-0806", "Claude-3.5-Sonnet-0620", "Gemini-1.5-pro-002", "InternVL2-26B", "Gemini-2.0-flash-exp",
           "Qwen2-VL-72B-Instruct", "CogVLM2-llama3-chat-19B", "GPT-4o-mini-0718", "LLama-3.2-90B", "MiniCPM-V2.6-8B",
           "LLaVA-1.6-34B", "Qwen2-VL-2B-Instruct", "Qwen2-VL-7B-Instruct", "LLaVA-1.5-7B", "cambrian-34b",
           "LLaVA-OV-72b", "Ovis-1_6-27b", "Ovis-2-34b", "Internvl2-5-8b", "Qwen2.5VL-72B", "Hunyuan-standard-vision",
           "GLM-4V-Plus"]
VERDICTS = ["Caption 1 is better.", "Caption 2 is better.", "Caption 1 is better", "Caption 2 is better", "Tie",
            "Tie.", "Both captions are good."]
WORDS = "a red car parked near the old stone bridge under a cloudy sky with two people walking".split()


def caption(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def main():
    rng = random.Random(7)
    bench = {}
    for i in range(12):
        img = f"test_{i:05d}.jpg"
        bench[img] = {"image_id": i, "ref_model": BASE[i % 3],
                      "captions": {"human": caption(rng, 20), **{b: caption(rng, 10 + i) for b in BASE}}}
    (HERE / "bench.json").write_text(json.dumps(bench, indent=1))
    caps = {img: caption(rng, 8 + (i % 5) * 3) for i, img in enumerate(bench)}
    (HERE / "captions.json").write_text(json.dumps(caps, indent=1))

    def judged(model, captions, seed):
        r = random.Random(seed)
        items = []
        for img, d in bench.items():
            if d["ref_model"] == model:
                continue
            first = r.randint(0, 1) == 0
            a, b = (d["ref_model"], d["captions"][d["ref_model"]]), (model, captions[img])
            (s1, c1), (s2, c2) = (a, b) if first else (b, a)
            it = {"img": img, "source1": s1, "source2": s2, "caption1": c1, "caption2": c2,
                  "ref": d["captions"]["human"], "ref_model": d["ref_model"]}
            if r.random() > 0.08:
                it["judge"] = r.choice(VERDICTS)
            items.append(it)
        return items

    (HERE / "verdicts.json").write_text(json.dumps(judged("pixscribe-test", caps, 1), indent=1))
    board = HERE / "leaderboard"
    board.mkdir(exist_ok=True)
    for n, m in enumerate(DEFAULT):
        own = {img: caption(rng, 5 + n % 7) for img in bench}
        (board / f"{m}.json").write_text(json.dumps(judged(m, own, 100 + n)))
    models = ["GPT-4o-0806", "Gemini-1.5-pro-002", "InternVL2-26B", "LLaVA-1.5-7B", "Qwen2-VL-7B-Instruct",
              "CogVLM2-llama3-chat-19B"]
    annots = []
    for i in range(60):
        s1, s2 = rng.sample(models + (["human"] if i % 15 == 0 else []), 2)
        winner = rng.choice([s1, s2, s1, s2, "tie"])
        item = {"img": f"img_{i}.jpg", "source1": s1, "source2": s2, "caption1": caption(rng, 6),
                "caption2": caption(rng, 6), "winner": winner, "cluster": f"level {1 + i % 4}", "in-400": i % 3 != 0}
        if i % 11 != 5:
            item["judge"] = rng.choice(VERDICTS[:6] + (["Caption 1 is better."] * 4) + ["none of them"])
        annots.append(item)
    (HERE / "annots.json").write_text(json.dumps(annots, indent=1))


if __name__ == "__main__":
    main()
