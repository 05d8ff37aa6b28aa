"""Splits, image checks, and the caption/eval datasets with their collate functions.

Reading the annotation files is tested in test_annotations.py."""

from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from captioner.data.annotations import ImageRecord
from captioner.data.datasets import (
    CaptionDataset,
    EvalDataset,
    ImageSource,
    check_images,
    collate_captions,
    collate_eval,
    records_tokens,
)
from captioner.data.splits import holdout_split
from captioner.image.loading import ImageLoadError
from captioner.words.vocab import Vocab

TRANSFORM = transforms.Compose([transforms.Resize((8, 8)), transforms.PILToTensor()])  # picklable


def _image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, value, value)).save(path)
    return path


# ----------------------------------------------------------------------------- splits and checks


def _recs(n: int) -> list[ImageRecord]:
    return [ImageRecord(image_id=100 + i, path=Path(f"/x/{i}.jpg"), split="train") for i in range(n)]


def test_holdout_split_is_deterministic_and_order_free():
    recs = _recs(100)
    train, val = holdout_split(recs, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert {r.image_id for r in train} | {r.image_id for r in val} == {r.image_id for r in recs}
    assert holdout_split(recs, 0.1, seed=0) == (train, val)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    assert {r.image_id for r in holdout_split(shuffled, 0.1, seed=0)[1]} == {r.image_id for r in val}
    assert holdout_split(recs, 0.1, seed=1)[1] != val
    assert [len(s) for s in holdout_split(_recs(2), 0.05)] == [1, 1]
    assert [len(s) for s in holdout_split(_recs(1), 0.05)] == [0, 1]
    assert [len(s) for s in holdout_split(_recs(3), 0.9)] == [1, 2]
    with pytest.raises(ValueError):
        holdout_split(recs, 1.5)


def test_check_images_counts_and_raises(tmp_path):
    recs = [ImageRecord(image_id=i, path=tmp_path / "img" / f"{i}.png", split="train") for i in range(4)]
    _image(recs[0].path, 0)
    _image(recs[1].path, 0)
    assert check_images(recs) == 2
    with pytest.raises(FileNotFoundError, match=r"3 of 4 image files are missing .*2\.png.*nodir"):
        check_images(recs[1:] + [ImageRecord(image_id=9, path=tmp_path / "nodir" / "9.png", split="train")], 0.5)
    assert check_images(recs, max_missing_fraction=0.5) == 2  # exactly half is allowed


# ----------------------------------------------------------------------------- caption dataset


@pytest.fixture
def toy(tmp_path):
    """4 images (one corrupt, one without captions) and a vocabulary."""
    caps = {
        0: ["a red ball", "a big red ball on the grass"],
        1: ["a blue ball", "one blue ball", "the blue ball rolls"],
        2: ["a green ball"],  # its file is corrupt
        3: [],
    }
    recs = []
    for i, c in caps.items():
        path = _image(tmp_path / "img" / f"{i}.png", 40 * i)
        recs.append(ImageRecord(image_id=10 + i, path=path, split="train", captions=tuple(c), tokens=tuple(tuple(s.split()) for s in c)))
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(recs[2].path)
    recs[2].path.write_bytes(recs[2].path.read_bytes()[:1500])  # truncated
    vocab = Vocab.build(records_tokens(recs), min_freq=1)
    return recs, vocab, ImageSource.from_records(recs, TRANSFORM)


def _quiet_items(ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [ds[i] for i in range(len(ds))]


def test_policy_all_reaches_every_caption(toy):
    recs, vocab, source = toy
    ds = CaptionDataset(recs, vocab, source)
    assert len(ds) == ds.num_captions == 6 and ds.num_images == 3 and ds.skipped_images == 1
    seen = sorted((it.index, tuple(vocab.decode(it.caption))) for it in _quiet_items(ds))
    want = sorted((i, t) for i, r in enumerate(recs) for t in r.tokens)
    assert seen == want
    first = ds[0].caption
    assert first[0] == vocab.start_id and first[-1] == vocab.end_id and first.dtype == torch.long


def test_policy_one_depends_on_epoch_deterministically(toy):
    recs, vocab, source = toy
    many = [ImageRecord(image_id=i, path=recs[0].path, split="train", captions=recs[1].captions, tokens=recs[1].tokens) for i in range(30)]
    src = ImageSource.from_records(many, TRANSFORM)
    ds = CaptionDataset(many, vocab, src, policy="one", seed=3)
    assert len(ds) == 30

    def picks(d, epoch):
        d.set_epoch(epoch)
        return [tuple(d[i].caption.tolist()) for i in range(len(d))]

    e0, e1 = picks(ds, 0), picks(ds, 1)
    assert e0 != e1
    assert picks(ds, 0) == e0 == picks(CaptionDataset(many, vocab, src, policy="one", seed=3), 0)
    assert picks(CaptionDataset(many, vocab, src, policy="one", seed=4), 0) != e0
    assert len(set(e0)) == 3  # all three captions are in use


def test_truncation_is_counted(toy):
    recs, vocab, source = toy
    ds = CaptionDataset(recs, vocab, source, max_len=3)
    assert ds.truncated == 2  # "a big red ball on the grass", "the blue ball rolls"
    lengths = [len(it.caption) for it in _quiet_items(ds)]
    assert max(lengths) == 5  # <start> + 3 words + <end>
    long_item = next(it for it in _quiet_items(ds) if it.index == 0 and vocab.decode(it.caption)[:2] == ["a", "big"])
    assert vocab.decode(long_item.caption) == ["a", "big", "red"] and long_item.caption[-1] == vocab.end_id


def test_collate_pads_masks_and_skips_corrupt(toy):
    recs, vocab, source = toy
    ds = CaptionDataset(recs, vocab, source)
    with pytest.warns(UserWarning, match="2.png"):
        items = [ds[i] for i in range(len(ds))]
    bad = [it for it in items if it.image is None]
    assert len(bad) == 1 and bad[0].index == 2 and "truncated" in bad[0].error

    batch = collate_captions(items)
    B = len(items) - 1
    assert batch.images.shape == (B, 3, 8, 8)
    assert batch.captions.shape == (B, int(batch.lengths.max())) and batch.captions.dtype == torch.long
    assert batch.lengths.tolist() == [len(it.caption) for it in items if it.image is not None]
    assert torch.equal(batch.mask.sum(1), batch.lengths) and batch.mask.dtype == torch.bool
    assert (batch.captions[~batch.mask] == vocab.pad_id).all() and (batch.captions[batch.mask] != vocab.pad_id).all()
    assert (batch.captions[:, 0] == vocab.start_id).all()
    assert (batch.captions.gather(1, (batch.lengths - 1)[:, None]) == vocab.end_id).all()
    assert 2 not in batch.index.tolist() and len(batch.skipped) == 1 and str(recs[2].path) in batch.skipped[0]

    empty = collate_captions([bad[0], bad[0]])
    assert empty.images.shape[0] == 0 and empty.captions.shape == (0, 0) and len(empty.skipped) == 2


def test_dataloader_with_workers(toy):
    recs, vocab, source = toy
    pickle.loads(pickle.dumps(source))  # workers need a picklable source
    ds = CaptionDataset(recs, vocab, source)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, collate_fn=collate_captions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert sum(len(b.index) for b in batches) == 5 and sum(len(b.skipped) for b in batches) == 1
    assert all(b.images.dtype == torch.uint8 for b in batches)


def test_image_source_raises_and_eval_dataset(toy):
    recs, vocab, source = toy
    assert len(source) == 4 and source[1].shape == (3, 8, 8)
    with pytest.raises(ImageLoadError):
        source[2]
    ev = EvalDataset(recs, source)
    assert len(ev) == 4  # every image, with or without captions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = collate_eval([ev[i] for i in range(4)])
    assert batch.images.shape == (3, 3, 8, 8) and batch.index.tolist() == [0, 1, 3]
    assert len(batch.skipped) == 1 and "2.png" in batch.skipped[0]
    assert int(batch.images[1].float().mean()) == 40  # image 1 is grey 40
    with pytest.raises(ValueError, match="indexed like the records"):
        EvalDataset(recs[:2], source)


def test_records_from_feature_cache_source(toy):
    """Any indexable of tensors works as a source (e.g. cached encoder features)."""
    recs, vocab, _ = toy
    feats = torch.arange(4 * 5 * 2, dtype=torch.float32).reshape(4, 5, 2)
    batch = collate_captions([CaptionDataset(recs, vocab, feats)[i] for i in range(3)])
    assert batch.images.shape == (3, 5, 2) and torch.equal(batch.images[0], feats[0])
    assert np.isfinite(batch.images.numpy()).all()
