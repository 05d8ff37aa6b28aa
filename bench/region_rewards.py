"""What a hard-attention model earns for reading each region: the reward behind REINFORCE.

    .venv/bin/python bench/region_rewards.py CHECKPOINT SCENES_DIR [--images 40]

For each of the first N scenes of a `captioner scenes` folder, its first reference caption is
teacher-forced with the decoder reading one fixed region s at every word, for every region of
the grid, and the reward of hard attention's estimator, the caption's mean log-probability per
word log p(y | s, a) (`captioner.scoring.losses.caption_log_likelihood`), is averaged over the
regions whose cell centres lie inside an object's box and over the others, per image; the
figures are the means over images of those two and of their difference (object minus
background, so that images with more object cells do not weigh more). It also prints how much
attention (alpha at the caption's first word, times the number of regions: 1 is uniform) the
model gives those cells. REINFORCE raises the probability of regions that earn more than the
baseline, so a model whose object cells earn less learns to look away from them (README,
"Attention ablation"). Hard-attention checkpoints only: a soft decoder reads no single region.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captioner.api import load_captioner
from captioner.data.annotations import load_instances
from captioner.scoring.grounding import centre_mask
from captioner.scoring.losses import caption_log_likelihood
from captioner.words.vocab import tokenize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("scenes", type=Path)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args(argv)
    cap = load_captioner(args.checkpoint, device="cpu", engine="torch")
    if cap.config.model.attention != "hard":
        parser.error(f"{args.checkpoint}: a {cap.config.model.attention}-attention model reads no single region")
    model, vocab, G = cap.model, cap.vocab, cap.grid
    P = G * G
    data = json.loads((args.scenes / "captions.json").read_text())
    refs: dict[int, str] = {}
    for a in data["annotations"]:
        refs.setdefault(a["image_id"], a["caption"])
    instances = load_instances(args.scenes / "instances.json")
    reward: dict[bool, list[float]] = {True: [], False: []}  # per image: mean over its object / other cells
    attention: dict[bool, list[float]] = {True: [], False: []}
    gap: list[float] = []
    for im in data["images"][: args.images]:
        with Image.open(args.scenes / "images" / im["file_name"]) as image:
            x = cap.preprocess(image.convert("RGB")).unsqueeze(0)
        ids = [vocab.start_id, *vocab.encode(tokenize(refs[im["id"]])), vocab.end_id]
        captions = torch.tensor(ids).unsqueeze(0).repeat(P, 1)  # (P, T+1): one row per region
        regions = torch.arange(P).unsqueeze(1).repeat(1, len(ids) - 1)  # row s reads region s
        with torch.inference_mode():
            features = model.encode(x).repeat(P, 1, 1)  # (P, P, E)
            out = model.decoder(features, captions, regions=regions)
            r = caption_log_likelihood(out.logits, captions[:, 1:], torch.ones_like(captions[:, 1:], dtype=torch.bool))
        inside = centre_mask(instances.boxes[im["id"]], (G, G), instances.sizes[im["id"]]).reshape(P)
        alpha = out.alphas[0, 0].numpy() * P  # the first word's map (the same for every row)
        if not inside.any() or inside.all():
            continue
        for where in (True, False):
            reward[where].append(float(r.numpy()[inside == where].mean()))
            attention[where].append(float(alpha[inside == where].mean()))
        gap.append(reward[True][-1] - reward[False][-1])
    print(json.dumps({"checkpoint": str(args.checkpoint), "images": len(gap),
                      "reward_object_cells": round(float(np.mean(reward[True])), 4),
                      "reward_background_cells": round(float(np.mean(reward[False])), 4),
                      "reward_gap_object_minus_background": round(float(np.mean(gap)), 4),
                      "images_where_objects_earn_less": sum(g < 0 for g in gap),
                      "alpha_x_P_object_cells": round(float(np.mean(attention[True])), 4),
                      "alpha_x_P_background_cells": round(float(np.mean(attention[False])), 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
