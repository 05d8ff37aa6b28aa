"""`captioner evaluate`: caption a split, write the COCO results file, score it.

Captions are decoded for real (batched beam search) and scored in one call over the whole
split, because CIDEr-D's idf depends on the set. With `--grounding INSTANCES.json` it also
measures whether the model looks at what it names (pointing game), and for the synthetic
scenes whether it names the right "<color> <shape>" objects.
"""
from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from captioner.captioning import Caption, Captioner
from captioner.data.annotations import AnnotationError, ImageRecord, detect_format, load_instances, load_records
from captioner.data.splits import select_split
from captioner.scoring.grounding import (
    COCO_SYNONYMS,
    GroundingResult,
    SceneGrounding,
    pointing_game,
    scene_grounding,
    summarize_grounding,
    summarize_scene_grounding,
)
from captioner.scoring.mentions import mention_scores
from captioner.scoring.coco_metrics import score_captions


@dataclass
class EvalReport:
    scores: dict[str, Any]
    captions: dict[int, Caption]
    warnings: list[str] = field(default_factory=list)


def caption_records(cap: Captioner, records: Sequence[ImageRecord], *, beam_size: int, max_len: int,
                    batch_size: int, num_workers: int = 0, progress: bool = True,
                    hard_decode: str = "argmax") -> tuple[dict[int, Caption], list[str]]:
    """Caption every record's image in batches; unreadable images are skipped and listed.
    `hard_decode`: see `captioner.captioning.SearchOptions` (hard-attention models only)."""
    out: dict[int, Caption] = {}
    skipped: list[str] = []
    results = cap.caption_iter([r.path for r in records], beam_size=beam_size, max_len=max_len,
                               batch_size=batch_size, num_workers=num_workers, hard_decode=hard_decode)
    for result in tqdm(results, total=len(records), desc="captioning", unit="img",
                       disable=None if progress else True, file=sys.stderr):
        if result.caption is None:
            skipped.append(str(result.error))
        else:
            out[records[result.index].image_id] = result.caption
    return out, skipped


def evaluate(cap: Captioner, data: str | os.PathLike, images: str | os.PathLike | None = None, *,
             split: str = "test", beam_size: int = 3, max_len: int = 50, batch_size: int = 16,
             num_workers: int = 0, grounding: str | os.PathLike | None = None,
             results_path: str | os.PathLike | None = None, java: bool | None = None,
             hard_decode: str = "argmax") -> EvalReport:
    warnings: list[str] = []
    if results_path and Path(results_path).is_dir():  # found now, not after captioning the split
        raise IsADirectoryError(errno.EISDIR, "is a directory; --results takes a file name", str(results_path))
    fmt = detect_format(data)
    records = load_records(data, images)
    if fmt == "karpathy":
        records = select_split(records, split)
        if not records:
            raise AnnotationError(f"{data}: no images in split {split!r}")
    else:
        warnings.append(f"{data} is a {fmt} file without splits: evaluating all {len(records)} images")
    records = [r for r in records if r.captions]
    captions, skipped = caption_records(cap, records, beam_size=beam_size, max_len=max_len,
                                        batch_size=batch_size, num_workers=num_workers,
                                        hard_decode=hard_decode)
    if skipped:
        warnings.append(f"{len(skipped)} of {len(records)} images could not be read and are not scored "
                        f"(e.g. {skipped[0]})")
    if not captions:
        raise AnnotationError(f"{data}: none of the {len(records)} images could be captioned")
    if results_path:
        Path(results_path).parent.mkdir(parents=True, exist_ok=True)
        Path(results_path).write_text(json.dumps(
            [{"image_id": i, "caption": c.text} for i, c in sorted(captions.items())], indent=1))
    refs = {r.image_id: list(r.captions) for r in records if r.image_id in captions}
    report = score_captions(refs, {i: c.text for i, c in captions.items()}, java=java)
    warnings += report.warnings
    scores: dict[str, Any] = dict(report.scores)
    scores["images"] = len(captions)
    scores["tokenizer"] = report.tokenizer
    if report.unavailable:
        scores["unavailable"] = report.unavailable
    if grounding:
        instances = load_instances(grounding)  # read once: boxes, sizes and the scenes' objects
        boxes, sizes, objects = instances.boxes, instances.sizes, instances.objects
        missing = [i for i in captions if i not in boxes]
        if missing:
            warnings.append(f"{len(missing)} captioned images have no entry in {grounding}; "
                            f"grounding covers the other {len(captions) - len(missing)}")
        grounded = [(c, boxes[i], sizes[i]) for i, c in captions.items() if i in boxes]
        if objects is not None:  # the scenes: a phrase names one object, by colour and shape
            scores.update(summarize_scene_grounding(SceneGrounding.merge(
                scene_grounding(c.tokens, c.alphas, b, size) for c, b, size in grounded)))
        else:
            scores.update(summarize_grounding(GroundingResult.merge(
                pointing_game(c.tokens, c.alphas, b, size, COCO_SYNONYMS) for c, b, size in grounded)))
        if objects is not None:
            scores.update(mention_scores({i: c.tokens for i, c in captions.items()}, objects).summary())
            families = scene_backgrounds(grounding)
            if families:
                scores["by_background"] = by_background(captions, objects, families)
    return EvalReport(scores, captions, warnings)


def scene_backgrounds(path: str | os.PathLike) -> dict[int, str]:
    """image id -> background family, from a `captioner scenes` annotation file's images (empty
    for files that record none: COCO, or scenes from captioner 0.1)."""
    images = json.loads(Path(path).read_text(encoding="utf-8")).get("images", [])
    return {im["id"]: im["background"] for im in images if isinstance(im, dict) and "background" in im}


def by_background(captions: dict[int, Caption], objects: dict[int, Any],
                  families: dict[int, str]) -> dict[str, dict[str, float]]:
    """Object F1 and exact-set accuracy of the captions of each background family's images."""
    groups: dict[str, dict[int, list[str]]] = {}
    for i, c in captions.items():
        if i in families and i in objects:
            groups.setdefault(families[i], {})[i] = c.tokens
    return {family: {**mention_scores(group, objects).summary(), "images": len(group)}
            for family, group in sorted(groups.items())}
