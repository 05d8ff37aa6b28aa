"""A training run's inputs: the train/val split, where pixels or cached grids come from, and
the scenes' objects that validation scores mentions against."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from tqdm import tqdm

from captioner.config import Config, ConfigError
from captioner.data.annotations import AnnotationError, ImageRecord, detect_format, load_instances, load_records
from captioner.data.datasets import ImageSource, check_images
from captioner.data.splits import holdout_split, select_split
from captioner.features.cache import CACHE_DIRNAME, FeatureCache, open_or_build
from captioner.features.encoder import Encoder
from captioner.features.pretrained import load_pretrained
from captioner.image.preprocess import preprocess_for
from captioner.train.distributed import Dist, barrier, setup_distributed

Log = Callable[[str], None]
Objects = dict[int, list[tuple[str, str]]]  # image id -> its (color, shape) objects


def stderr_log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


@dataclass(frozen=True)
class Splits:
    train: list[ImageRecord]
    val: list[ImageRecord]
    note: str  # where the validation images come from, for the log


def make_splits(config: Config) -> Splits:
    d = config.data
    if not d.data:
        raise ConfigError("data.data: no training data given (use --data FILE or set it in the config)")
    fmt = detect_format(d.data)
    if fmt == "folder":
        raise ConfigError(f"{d.data}: a folder of images has no captions; give a COCO or Karpathy json")
    records = load_records(d.data, d.images or None)
    if not records:
        raise ConfigError(f"{d.data}: the annotation file lists no images")
    if d.val_data:
        val = load_records(d.val_data, d.val_images or None)
        train = select_split(records, "train") if fmt == "karpathy" else records
        note = f"validation: {len(val)} images from {d.val_data}"
    elif fmt == "karpathy" and select_split(records, "val"):
        train, val = select_split(records, "train"), select_split(records, "val")
        note = f"validation: the Karpathy 'val' split ({len(val)} images); training on train+restval"
    else:
        train, val = holdout_split(records, d.val_fraction, config.train.seed)
        note = (f"validation: no validation split in {d.data}, so {len(val)} of {len(records)} images "
                f"({d.val_fraction:.0%}, deterministic by seed {config.train.seed}) are held out")
    if d.max_val_images:
        val = val[: d.max_val_images]
    if not any(r.captions for r in train):
        raise ConfigError(f"{d.data}: none of the {len(train)} training images has a caption"
                          if train else f"{d.data}: no training images")
    check_images(train)
    check_images(val)
    return Splits(train, val, note)


def load_val_objects(config: Config) -> Objects | None:
    """data.instances -> image id -> its (color, shape) objects, or None when not set."""
    path = config.data.instances
    if not path:
        return None
    try:
        objects = load_instances(path).objects  # the one reader: checked field by field
    except (OSError, AnnotationError) as err:  # both messages name the file
        raise ConfigError(f"data.instances: {err}") from None
    if objects is None:
        raise ConfigError(f"data.instances: {path} has no 'color' on its annotations (not a scenes instances file)")
    return objects


# ----------------------------------------------------------------------------- sources
class Sources(NamedTuple):
    """Indexable like the split's records: cached grids (B, P, E), cached outputs of a fine-tuned
    encoder's frozen stages (B, h * w, C), or preprocessed images."""

    train: Any
    val: Any
    from_features: bool  # the region grids themselves: training runs the decoder alone
    from_frozen: bool = False  # the frozen stages' outputs: training runs the trained stages and the decoder


def make_sources(config: Config, splits: Splits, encoder: Encoder, device: torch.device, dist_info: Dist,
                 say: Log) -> Sources:
    """With train.feature_cache, the feature caches (of the region grids, or of the frozen stages'
    output when fine-tuning); otherwise live images."""
    frozen = config.model.finetune_blocks == 0
    tuned = "" if frozen else f" (fine-tuning the last {config.model.finetune_blocks} encoder stages)"
    if config.train.feature_cache:
        (train, _), (val, _) = build_feature_caches(config, splits, encoder, device, dist_info, say)
        if not frozen:
            say(f"training from the cached output of the frozen encoder stages{tuned}")
        return Sources(train, val, from_features=frozen, from_frozen=not frozen)
    pre = preprocess_for(config.model)
    say("training from live images" + tuned)
    return Sources(ImageSource.from_records(splits.train, pre), ImageSource.from_records(splits.val, pre),
                   from_features=False)


def build_feature_caches(config: Config, splits: Splits, encoder: Encoder, device: torch.device, dist_info: Dist,
                         say: Log) -> list[tuple[FeatureCache, str]]:
    """Open (or build, on rank 0) the train and val caches next to the data file; each with
    what happened ("hit" or why it was built)."""
    cache_dir = Path(config.data.data).resolve().parent / CACHE_DIRNAME
    caches = []
    for name, recs in (("train", splits.train), ("val", splits.val)):
        if dist_info.main:
            cache, status = _open_or_build_logged(config, name, recs, encoder, cache_dir, device)
            say(f"feature cache ({name}): {_outcome(status)}, {cache.data_path}")
            if cache.errors:
                say(f"warning: {len(cache.errors)} unreadable {name} images will be skipped, e.g. {cache.errors[0]}")
        barrier(dist_info)  # the other ranks open what rank 0 has just built
        if not dist_info.main:
            cache, status = open_or_build(recs, config.model, encoder, cache_dir, device=device)
        caches.append((cache, status))
    return caches


def _open_or_build_logged(config: Config, name: str, records: list[ImageRecord], encoder: Encoder,
                          cache_dir: Path, device: torch.device) -> tuple[FeatureCache, str]:
    bar = tqdm(total=len(records), desc=f"caching {name} features", unit="img", disable=None, file=sys.stderr)
    try:
        return open_or_build(records, config.model, encoder, cache_dir, batch_size=config.train.batch_size,
                             device=device, num_workers=config.data.num_workers,
                             progress=lambda done, n: bar.update(done - bar.n))
    except OSError as err:  # a read-only or full data folder
        raise ConfigError(f"{err.filename or cache_dir}: cannot write the feature cache ({err.strerror}); "
                          f"make the data folder writable, or train from the images with "
                          f"--set train.feature_cache=false") from None
    finally:
        bar.close()


def cache_features(config: Config, log: Log = stderr_log) -> list[tuple[str, str, Path]]:
    """`captioner cache-features`: build the caches `train` will use, without training."""
    device = setup_distributed(config.train.device).device
    splits = make_splits(config)
    log(splits.note)
    encoder = load_pretrained(Encoder(config=config.model), config.model).to(device)
    caches = build_feature_caches(config, splits, encoder, device, Dist(), log)
    return [(name, _outcome(status), cache.data_path) for name, (cache, status) in zip(("train", "val"), caches)]


def _outcome(status: str) -> str:
    """open_or_build's status -> "hit" or "built (why)"."""
    return "hit" if status == "hit" else f"built ({status})"
