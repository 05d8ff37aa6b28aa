"""Training end to end on generated scenes: checkpoints, resume after kill -9, cache, DDP."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from captioner.checkpoint import load_checkpoint, load_model
from captioner.cli import main
from captioner.config import ConfigError
from captioner.config import load_config
from captioner.data.scenes import generate_scenes
from captioner.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.image_size=64", "model.grid=2", "model.embed_dim=16", "model.attention_dim=16",
        "model.hidden_dim=32", "data.min_word_freq=1", "train.log_every=1", "train.val_beam_size=2",
        "train.val_max_len=12", "train.decoder_lr=3e-3"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, 24, seed=5, size=64)
    return out


def _config(data: Path, *extra: str):
    return load_config(None, [f"data.data={json.dumps(str(data))}", *TINY, *extra])


def _val_epochs(out: Path) -> list[int]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in lines if r["type"] == "val"]


@pytest.mark.slow  # a training run
def test_tiny_training_run_writes_checkpoints_and_logs(scenes, tmp_path, capsys):
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path / "run"),
                 "--epochs", "2", "--batch-size", "8", *[a for kv in TINY for a in ("--set", kv)]])
    assert code == 0
    err = capsys.readouterr().err
    assert "Karpathy 'val' split" in err and "feature cache (train): built" in err
    run = tmp_path / "run"
    assert _val_epochs(run) == [1, 2]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["type"] == "val"][-1]
    assert 0.0 <= val["BLEU-4"] <= 1.0 and val["CIDEr-D"] >= 0.0 and val["val_images"] > 0
    assert any(r["type"] == "train" and r["captions_per_s"] > 0 for r in records)
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["step"] > 0 and isinstance(last["vocab"], list)
    assert set(last) >= {"model", "config", "vocab", "epoch", "step", "optimizer", "scheduler", "rng"}
    best = load_model(run / "best.pt")
    assert best.config.model.grid == 2


@pytest.mark.slow  # a training run
def test_held_out_fraction_when_no_val_split(scenes, tmp_path, capsys):
    cfg = _config(scenes / "captions.json", "train.epochs=1", "train.batch_size=8", "data.val_fraction=0.1")
    summary = train(cfg, tmp_path / "run")
    assert summary.epochs_completed == 1
    err = capsys.readouterr().err
    assert "no validation split" in err and "held out" in err


@pytest.mark.slow  # training subprocesses
def test_resume_after_kill_matches_an_uninterrupted_run(scenes, tmp_path):
    args = [sys.executable, "-m", "captioner.cli", "train", "--data", str(scenes / "dataset.json"),
            "--epochs", "3", "--batch-size", "4", "--save-every", "1",
            *[a for kv in TINY for a in ("--set", kv)]]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill -9 in the middle of epoch 2
            if (killed / "last.pt").exists():
                try:
                    ckpt = load_checkpoint(killed / "last.pt")
                except Exception:
                    ckpt = None
                if ckpt and ckpt["epoch"] == 1 and ckpt["train_state"]["batch_in_epoch"] >= 3:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = load_checkpoint(killed / "last.pt")
    assert before["epoch"] == 1 and before["train_state"]["batch_in_epoch"] > 0
    resumed = subprocess.run(args + ["--out", str(killed), "--resume"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "of epoch 2" in resumed.stderr
    assert _val_epochs(killed) == [1, 2, 3]  # finished epochs are not redone
    after = load_checkpoint(killed / "last.pt")
    assert after["epoch"] == 3
    # RNG, optimiser and data order restored: the same weights as a run never interrupted.
    clean = tmp_path / "clean"
    subprocess.run(args + ["--out", str(clean)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    ref = load_checkpoint(clean / "last.pt")
    assert after["step"] == ref["step"]
    for k, v in ref["model"].items():
        assert torch.allclose(after["model"][k], v, atol=1e-6), k


@pytest.mark.slow  # a training run
def test_resume_refuses_a_different_model_or_vocabulary(scenes, tmp_path, capsys):
    out = tmp_path / "run"
    train(_config(scenes / "dataset.json", "train.epochs=1", "train.batch_size=8"), out)
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(out), "--resume",
                 *[a for kv in TINY for a in ("--set", kv)], "--set", "model.hidden_dim=48"])
    assert code == 2
    assert "cannot resume, the model config differs (hidden_dim: 32 -> 48)" in capsys.readouterr().err
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(out), "--resume",
                 *[a for kv in TINY for a in ("--set", kv)], "--set", "data.min_word_freq=40"])
    assert code == 2
    assert "vocabulary differs" in capsys.readouterr().err
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path / "empty"), "--resume"])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err
    # Stopped mid-epoch at batch size 8: a different batch size would lose its place.
    raw = torch.load(out / "last.pt", weights_only=True)
    raw["train_state"]["batch_in_epoch"] = 1
    torch.save(raw, out / "last.pt")
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(out), "--resume",
                 "--batch-size", "4", *[a for kv in TINY for a in ("--set", kv)]])
    err = capsys.readouterr().err
    assert code == 2 and "cannot resume with train.batch_size 4" in err and "--batch-size 8" in err
    # An exported model has no optimiser or data position to resume from.
    assert main(["export", str(out / "best.pt"), str(tmp_path / "exported" / "last.pt")]) == 0
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path / "exported"), "--resume",
                 *[a for kv in TINY for a in ("--set", kv)]])
    assert code == 2 and "cannot resume, it has no training state" in capsys.readouterr().err


def test_config_errors_exit_2_with_the_key(scenes, tmp_path, capsys):
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path), "--set", "train.lr=1"])
    assert code == 2 and "unknown key train.lr" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\ngrid = 'big'\n")
    code = main(["train", "--config", str(bad), "--out", str(tmp_path)])
    assert code == 2 and "bad.toml: model.grid must be int" in capsys.readouterr().err
    code = main(["train", "--out", str(tmp_path), "--set", "data.data=''"])
    assert code == 2 and "no training data" in capsys.readouterr().err


def test_cache_is_hit_then_rebuilt_when_stale_or_corrupt(scenes, tmp_path, capsys):
    from captioner.train.data import cache_features

    data = tmp_path / "scenes"  # a copy without the caches other tests have built
    shutil.copytree(scenes, data, ignore=shutil.ignore_patterns(".captioner-cache"))
    scenes = data
    cfg = _config(scenes / "dataset.json", "train.epochs=0")
    first = {name: status for name, status, _ in cache_features(cfg)}
    second = {name: (status, path) for name, status, path in cache_features(cfg)}
    assert second["train"][0] == "hit" and second["val"][0] == "hit"
    data_path = second["train"][1]
    with open(data_path, "r+b") as f:  # truncate: corrupt
        f.truncate(os.path.getsize(data_path) - 10)
    third = {name: status for name, status, _ in cache_features(cfg)}
    assert third["train"].startswith("built (corrupt") and third["val"] == "hit"
    assert third["train"].endswith(f"bytes, expected {os.path.getsize(data_path)})")  # not cut at its comma
    image = sorted((scenes / "images").iterdir())[0]
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: stale
    statuses = [status for _, status, _ in cache_features(cfg)]
    assert any(s.startswith("built (stale") for s in statuses)
    assert first == {"train": "built (missing)", "val": "built (missing)"}  # the very first call built both
    # Another encoder gets its own cache instead of reusing these grids.
    other = {name: status for name, status, _ in cache_features(_config(scenes / "dataset.json", "model.grid=1"))}
    assert other["train"].startswith("built (missing")


@pytest.mark.slow  # two training runs
def test_a_run_that_builds_its_cache_trains_like_one_that_finds_it(scenes, tmp_path):
    """Building the feature cache draws no random number that training would otherwise have
    drawn (the DataLoader's base seed comes from torch's generator): same weights either way."""
    data = tmp_path / "scenes"
    shutil.copytree(scenes, data, ignore=shutil.ignore_patterns(".captioner-cache"))
    cfg = _config(data / "dataset.json", "train.epochs=1", "train.batch_size=8")
    train(cfg, tmp_path / "builds")  # no cache yet: this run builds it
    train(cfg, tmp_path / "finds")
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("builds", "finds"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a training subprocess
@pytest.mark.parametrize("cached", [True, False])
def test_corrupt_training_image_is_skipped_and_counted(tmp_path, capsys, cached):
    data = tmp_path / "scenes"
    generate_scenes(data, 16, seed=9, size=64)
    meta = json.loads((data / "dataset.json").read_text())
    victim = next(im for im in meta["images"] if im["split"] == "train")
    (data / "images" / victim["filename"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    extra = [] if cached else ["train.feature_cache=false"]
    proc = subprocess.run([sys.executable, "-m", "captioner.cli", "train", "--data", str(data / "dataset.json"),
                           "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4",
                           *[a for kv in [*TINY, *extra] for a in ("--set", kv)]],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["skipped_images"] == 1 and summary["epochs"] == 1  # images, not their captions
    assert "warning: 1 unreadable images were skipped" in proc.stderr
    # Warnings are one line each: no source location or source line from inside torch.
    assert f"warning: skipping image: {data / 'images' / victim['filename']}" in proc.stderr
    assert "fetch.py" not in proc.stderr and "UserWarning" not in proc.stderr


def test_mostly_missing_images_fail_early(tmp_path, capsys):
    data = tmp_path / "scenes"
    generate_scenes(data, 8, seed=2, size=64)
    for p in list((data / "images").iterdir())[:7]:
        p.unlink()
    code = main(["train", "--data", str(data / "dataset.json"), "--out", str(tmp_path / "run"),
                 *[a for kv in TINY for a in ("--set", kv)]])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err and "Traceback" not in err


@pytest.mark.slow  # torchrun
def test_ddp_two_processes_on_cpu(scenes, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
         str(ROOT / "train.py"), "--data", str(scenes / "dataset.json"), "--out", str(out),
         "--epochs", "2", "--batch-size", "4", *[a for kv in TINY for a in ("--set", kv)]],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("epoch 2: BLEU-4") == 1  # only rank 0 logs
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["epochs"] == 2  # and prints the summary
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    n_val = sum(1 for im in json.loads((scenes / "dataset.json").read_text())["images"] if im["split"] == "val")
    assert [v["val_images"] for v in val] == [n_val, n_val]  # gathered from both ranks
    # Each rank saw half of every epoch: steps per epoch are half of a single process's.
    single = train(_config(scenes / "dataset.json", "train.epochs=1", "train.batch_size=4"), tmp_path / "single")
    assert ckpt["step"] == 2 * ((single.steps + 1) // 2)


def _torchrun(scenes: Path, out: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         str(ROOT / "train.py"), "--data", str(scenes / "dataset.json"), "--out", str(out), "--batch-size", "4",
         *[a for kv in TINY for a in ("--set", kv)], *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow  # three torchrun runs
def test_ddp_hard_attention_resumes_every_rank_exactly(scenes, tmp_path):
    """Each rank has its own dropout stream, REINFORCE baseline and region sampler; last.pt holds
    them all, and each rank resumes from its own: 1 epoch + resume = 2 epochs straight. (With
    rank 0's state on every rank, rank 1 would replay rank 0's samples and the weights differ.)"""
    hard = ["--set", "model.attention='hard'"]
    straight = _torchrun(scenes, tmp_path / "straight", 29533, "--epochs", "2", *hard)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = _torchrun(scenes, tmp_path / "resumed", 29534, "--epochs", "1", *hard)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "resumed" / "last.pt")
    ranks = ckpt["rank_states"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])
    assert not torch.equal(ranks[0]["hard_attention"]["generator"], ranks[1]["hard_attention"]["generator"])
    assert torch.equal(ckpt["rng"]["torch"], ranks[0]["rng"]["torch"])  # the top level is rank 0's
    again = _torchrun(scenes, tmp_path / "resumed", 29535, "--epochs", "2", "--resume", *hard)
    assert again.returncode == 0, again.stderr[-3000:]
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a training run
def test_bf16_autocast_and_label_smoothing_on_cpu(scenes, tmp_path):
    cfg = _config(scenes / "dataset.json", "train.epochs=1", "train.batch_size=8", "train.amp='bf16'",
                  "train.label_smoothing=0.1", "train.feature_cache=false")
    summary = train(cfg, tmp_path / "run")
    assert summary.epochs_completed == 1
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"train"' in x]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses)


def test_fp16_needs_cuda(scenes, tmp_path, capsys):
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path), "--device", "cpu",
                 "--set", "train.amp='fp16'", *[a for kv in TINY for a in ("--set", kv)]])
    assert code == 2 and "fp16 needs a CUDA device" in capsys.readouterr().err


@pytest.mark.slow  # a training run
def test_object_f1_selects_best_pt_on_scenes(scenes, tmp_path):
    """train.metric = "object_f1" scores the val captions' "<color> <shape>" mentions against the
    scenes' instances and picks best.pt by it."""
    out = tmp_path / "run"
    cfg = _config(scenes / "dataset.json", "train.epochs=2", "train.batch_size=8", "train.metric=\"object_f1\"",
                  f"data.instances={json.dumps(str(scenes / 'instances.json'))}")
    train(cfg, out)
    vals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert [v["epoch"] for v in vals] == [1, 2]
    for v in vals:
        assert 0.0 <= v["object_f1"] <= 1.0 and 0.0 <= v["exact_set_accuracy"] <= 1.0
    best = max(vals, key=lambda v: v["object_f1"])  # first of equals: only an improvement counts
    assert vals[-1]["best"] == best["object_f1"] and vals[-1]["best_epoch"] == best["epoch"]
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == best["epoch"]


def test_val_image_ids_match_the_instances(scenes):
    """Validation keys captions by ImageRecord.image_id; the scenes' own reference captions then
    score perfectly against data.instances, so ids line up (a shift would score near 0)."""
    from captioner.data.annotations import load_records
    from captioner.scoring.mentions import mention_scores
    from captioner.train.data import load_val_objects

    objects = load_val_objects(_config(scenes / "dataset.json", f"data.instances={json.dumps(str(scenes / 'instances.json'))}"))
    records = load_records(scenes / "dataset.json")
    m = mention_scores({r.image_id: r.captions[0].lower().replace(",", " ").split() for r in records}, objects)
    assert m.f1 == 1.0 and m.exact_set_accuracy == 1.0


def test_object_f1_needs_a_scenes_instances_file(scenes, tmp_path):
    with pytest.raises(ConfigError, match="needs data.instances"):
        _config(scenes / "dataset.json", "train.metric=\"object_f1\"")
    coco_like = tmp_path / "instances.json"
    data = json.loads((scenes / "instances.json").read_text())
    for a in data["annotations"]:
        del a["color"]
    coco_like.write_text(json.dumps(data))
    cfg = _config(scenes / "dataset.json", "train.epochs=1", "train.metric=\"object_f1\"",
                  f"data.instances={json.dumps(str(coco_like))}")
    with pytest.raises(ConfigError, match="instances.json has no 'color'"):
        train(cfg, tmp_path / "run")


def test_data_with_nothing_to_train_on_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty_coco.json"
    empty.write_text(json.dumps({"images": [], "annotations": []}))
    code = main(["train", "--data", str(empty), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "empty_coco.json: the annotation file lists no images" in err and "Traceback" not in err
    data = tmp_path / "scenes"
    generate_scenes(data, 8, seed=3, size=64)
    meta = json.loads((data / "dataset.json").read_text())
    for im in meta["images"]:
        im["sentences"] = []
    (data / "silent.json").write_text(json.dumps(meta))
    code = main(["train", "--data", str(data / "silent.json"), "--out", str(tmp_path / "run"),
                 *[a for kv in TINY for a in ("--set", kv)]])
    assert code == 2 and "none of the 6 training images has a caption" in capsys.readouterr().err


def test_no_epochs_prints_valid_json_and_clears_leftover_temps(scenes, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".last.pt.k1ll3d.tmp").write_bytes(b"a write cut off by kill -9")
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(out), "--epochs", "0",
                 *[a for kv in TINY for a in ("--set", kv)]])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])  # strict JSON: no -Infinity
    assert summary["best_CIDEr-D"] is None and summary["epochs"] == 0
    assert not list(out.glob(".*.tmp"))
    (out / "notes.txt").write_text("")
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(out / "notes.txt"), "--epochs", "0"])
    assert code == 2 and "notes.txt: exists and is not a directory" in capsys.readouterr().err


def test_unavailable_device_and_unwritable_cache_are_clear_errors(scenes, tmp_path, capsys, monkeypatch):
    import errno

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path / "run"),
                 "--device", "cuda", *[a for kv in TINY for a in ("--set", kv)]])
    err = capsys.readouterr().err
    assert code == 2 and "train.device 'cuda': no such CUDA device" in err and "Traceback" not in err

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(scenes / ".captioner-cache"))

    monkeypatch.setattr("captioner.train.data.open_or_build", read_only)
    code = main(["train", "--data", str(scenes / "dataset.json"), "--out", str(tmp_path / "run"),
                 *[a for kv in TINY for a in ("--set", kv)]])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the feature cache (Read-only file system)" in err
    assert "train.feature_cache=false" in err


# ----------------------------------------------------------------------------- the one training step
def _step_parts(**train: object):
    """A tiny decoder on cached-grid-shaped features (B, P, E), its Optimization and a batch."""
    from captioner.checkpoint import new_model
    from captioner.config import ModelConfig, TrainConfig
    from captioner.data.datasets import CaptionBatch
    from captioner.features.encoder import encoder_dim
    from captioner.train.optim import make_optimization, param_groups

    torch.manual_seed(0)
    mcfg = ModelConfig(image_size=64, grid=2, embed_dim=8, attention_dim=8, hidden_dim=8, dropout=0.0,
                       pretrained="none")
    model = new_model(mcfg, 12, load_weights=False)
    tcfg = TrainConfig(**train)
    opt = make_optimization(model.decoder, param_groups(model, tcfg), tcfg, torch.device("cpu"))
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 10, 2, 0]])  # (B, T+1)
    mask = captions != 0
    batch = CaptionBatch(torch.rand(3, 4, encoder_dim(mcfg)), captions, mask.sum(1), mask, torch.arange(3), [])
    return model, opt, tcfg, batch


def test_train_step_is_the_configured_loss_with_clipping():
    from captioner.scoring.losses import doubly_stochastic_penalty, masked_cross_entropy
    from captioner.train.loop import train_step

    model, opt, cfg, batch = _step_parts(label_smoothing=0.1, alpha_c=0.5, grad_clip=1e-3)
    targets, mask = batch.captions[:, 1:], batch.mask[:, 1:]
    with torch.no_grad():  # dropout 0: the step's forward pass gives the same outputs
        pred = model.decoder(batch.images, batch.captions)
    ce = masked_cross_entropy(pred.logits, targets, mask, 0.1)
    att = doubly_stochastic_penalty(pred.alphas, mask, 0.5)
    before = [p.detach().clone() for p in opt.params]

    out = train_step(opt, batch, config=cfg)
    assert torch.allclose(out.ce, ce) and torch.allclose(out.att, att) and torch.allclose(out.loss, ce + att)
    assert not torch.allclose(out.ce, masked_cross_entropy(pred.logits, targets, mask))  # smoothing is on
    assert att > 0 and torch.allclose(att, 0.5 * doubly_stochastic_penalty(pred.alphas, mask, 1.0))
    grads = torch.cat([p.grad.flatten() for p in opt.params])
    assert grads.norm() <= 1e-3 * (1 + 1e-4)  # clipped to train.grad_clip
    assert all(not torch.equal(b, p) for b, p in zip(before, opt.params) if p.grad.abs().sum() > 0)


def test_train_step_autocasts_to_bf16():
    from captioner.train.loop import train_step

    model, opt, cfg, batch = _step_parts(amp="bf16")
    dtypes = []
    model.decoder.L_o.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    out = train_step(opt, batch, config=cfg)
    assert dtypes and set(dtypes) == {torch.bfloat16} and math.isfinite(out.loss.item())
    assert opt.amp_dtype is torch.bfloat16 and not opt.scaler.is_enabled()  # the scaler is for CUDA fp16


# ----------------------------------------------------------------------------- checkpoints of v0.1
V0_1_LAST = ROOT / "tests" / "fixtures" / "v0_1_last.pt"  # 1 epoch, 10 steps of the 20 scenes below


def test_a_v0_1_last_pt_restores_its_training_state():
    from captioner.config import config_from_dict
    from captioner.train.optim import make_optimization, param_groups
    from captioner.train.resume import TrainState, check_resumable, restore, resumed_model
    from captioner.words.vocab import Vocab

    ckpt = load_checkpoint(V0_1_LAST)
    config = config_from_dict(ckpt["config"])
    assert ckpt["config"]["train"]["metric"] == "object-F1" and config.train.metric == "object_f1"
    check_resumable(ckpt, config, Vocab(ckpt["vocab"]), V0_1_LAST)
    model = resumed_model(ckpt, str(V0_1_LAST))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    opt = make_optimization(model.decoder, param_groups(model, config.train), config.train, torch.device("cpu"))
    torch.manual_seed(123)
    state = restore(ckpt, opt)
    assert state == TrainState(epoch=1, step=10, batch_in_epoch=0, best_score=0.0, best_epoch=1, bad_epochs=0)
    assert torch.equal(torch.get_rng_state(), ckpt["rng"]["torch"])
    restored = opt.optimizer.state_dict()["state"]
    assert restored.keys() == ckpt["optimizer"]["state"].keys() and int(restored[0]["step"]) == 10
    for i, entry in ckpt["optimizer"]["state"].items():
        assert all(torch.equal(restored[i][k], v) for k, v in entry.items())
    assert opt.scheduler.state_dict() == ckpt["scheduler"]


@pytest.mark.slow
def test_a_v0_1_last_pt_resumes_on_fresh_scenes(tmp_path, capsys):
    # The scenes 0.1's generator wrote for this run (seed 3, 20 images, 64 px): the same vocabulary
    # as the checkpoint's. 0.2's generator words one template differently.
    data = tmp_path / "scenes"
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "v0_1_scenes", data)
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(V0_1_LAST, out / "last.pt")
    sets = ["model.image_size=64", "model.grid=2", "model.feature_layer=blocks", "model.embed_dim=8", "model.attention_dim=8",
            "model.hidden_dim=8", "data.min_word_freq=1", "train.val_beam_size=1", "train.val_max_len=6",
            f"data.instances={json.dumps(str(data / 'instances.json'))}", "train.metric='object-F1'"]  # the old name
    code = main(["train", "--data", str(data / "dataset.json"), "--out", str(out), "--resume", "--epochs", "2",
                 "--batch-size", "8", "--device", "cpu", *[a for kv in sets for a in ("--set", kv)]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 epochs and 10 steps done; continuing at the start of epoch 2" in captured.err
    assert "epoch 2: BLEU-4" in captured.err and "(object_f1 best" in captured.err
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["epochs"] == 2 and summary["steps"] == 20 and "best_object_f1" in summary
    assert _val_epochs(out) == [2]
    after = load_checkpoint(out / "last.pt")
    assert (after["epoch"], after["step"], int(after["optimizer"]["state"][0]["step"])) == (2, 20, 20)
    assert after["config"]["train"]["metric"] == after["metric"] == "object_f1"


@pytest.mark.slow  # two tiny training runs
def test_fine_tuning_trains_from_the_cache_of_the_frozen_stages(scenes, tmp_path, capsys):
    """model.finetune_blocks with the feature cache: the cache holds the frozen stages' output,
    training runs the last stages and the decoder on it, and the run matches one from live images
    up to the cache's fp16 rounding; the frozen stages never change, the trained ones do."""
    from captioner.checkpoint import new_model
    from captioner.features.efficientnet_lite import LITE0_STAGES

    data = tmp_path / "scenes"
    shutil.copytree(scenes, data, ignore=shutil.ignore_patterns(".captioner-cache"))
    sets = ["--epochs", "1", "--batch-size", "8",
            *[a for kv in [*TINY, "model.finetune_blocks=1"] for a in ("--set", kv)]]
    assert main(["train", "--data", str(data / "dataset.json"), "--out", str(tmp_path / "cached"), *sets]) == 0
    err = capsys.readouterr().err
    assert "feature cache (train): built" in err and "cached output of the frozen encoder stages" in err
    meta = [json.loads(p.read_text()) for p in (data / ".captioner-cache").glob("*.json")]
    assert {m["key"]["feature_layer"] for m in meta} == {"stride16:frozen-until-last-1"}
    assert {(m["regions"], m["dim"]) for m in meta} == {(16, 80)}  # stage 4: 80 channels, 64 px / 16 = 4 x 4
    assert main(["train", "--data", str(data / "dataset.json"), "--out", str(tmp_path / "live"), *sets,
                 "--set", "train.feature_cache=false"]) == 0
    assert "training from live images (fine-tuning the last 1 encoder stages)" in capsys.readouterr().err

    def losses(run: str) -> list[float]:
        records = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in records if r["type"] == "train"]

    assert len(losses("cached")) == len(losses("live")) > 5
    assert losses("cached") == pytest.approx(losses("live"), abs=2e-3)
    cached, live = (load_checkpoint(tmp_path / run / "last.pt") for run in ("cached", "live"))
    for k, v in cached["model"].items():
        if v.is_floating_point():
            # Adam moves a weight by up to lr (3e-3) a step, whatever the gradient's size, so the
            # rounding of the cache shows as a few steps' worth in weights with tiny gradients.
            torch.testing.assert_close(v, live["model"][k], rtol=0, atol=2e-2, msg=k)
    init = new_model(load_model(tmp_path / "cached" / "last.pt").config.model, len(cached["vocab"]),
                     load_weights=True).state_dict()
    first = sum(r for r, *_ in LITE0_STAGES[:4])  # stage 5's first block: the one stage trained

    def block(key: str) -> int:  # encoder.backbone._blocks.<i>.... -> i; the stem -> -1
        parts = key.split(".")
        return int(parts[3]) if parts[2] == "_blocks" else -1

    encoder = [k for k in cached["model"] if k.startswith("encoder.backbone.") and k.endswith("weight")]
    assert all(torch.equal(cached["model"][k], init[k]) for k in encoder if block(k) < first)
    assert all(not torch.equal(cached["model"][k], init[k]) for k in encoder if block(k) >= first)
