from dataclasses import replace

import pytest

from captioner.config import ConfigError, load_config


def test_defaults_are_the_default_model():
    cfg = load_config()
    assert cfg.model.backbone == "efficientnet_lite0" and cfg.model.grid == 14
    assert cfg.model.image_size == 224 and cfg.model.feature_layer == "stride16" and cfg.model.finetune_blocks == 0


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nhidden_dim = 64\nscorer = "dot"\n[train]\nepochs = 3\ndecoder_lr = 1\n')
    cfg = load_config(path, ["train.epochs=5", "data.caption_policy=one", "train.amp='bf16'"])
    assert cfg.model.hidden_dim == 64 and cfg.model.scorer == "dot"
    assert cfg.train.epochs == 5 and cfg.train.decoder_lr == 1.0
    assert cfg.data.caption_policy == "one" and cfg.train.amp == "bf16"


@pytest.mark.parametrize("text, message", [
    ("[model]\nhiden_dim = 3\n", "unknown key model.hiden_dim"),
    ("[optim]\nlr = 3\n", r"unknown section \[optim\]"),
    ("[model]\nhidden_dim = 'big'\n", "model.hidden_dim must be int"),
    ("[model]\nscorer = 'cosine'\n", "model.scorer"),
    ("[model\n", "invalid TOML"),
    ("[train]\nval_max_len = 0\n", "train.val_max_len: must be >= 1"),
    ("[train]\nlog_every = 0\n", "train.log_every: must be >= 1"),
    ("[train]\npatience = 0\n", "train.patience: must be >= 1"),
    ("[train]\ndecoder_lr = -1.0\n", "train.decoder_lr: must be positive"),
    ("[train]\nlr_decay_factor = 2.0\n", r"train.lr_decay_factor: must be in \(0, 1\)"),
    ("[train]\nlabel_smoothing = 1.0\n", r"train.label_smoothing: must be in \[0, 1\)"),
    ("[train]\nalpha_c = -0.1\n", "train.alpha_c: must be >= 0"),
    ("[train]\ndevice = 'foo'\n", "train.device: 'foo' is not auto, cpu, cuda or cuda:N"),
    ("[data]\nnum_workers = -1\n", "data.num_workers: must be >= 0"),
    ("[data]\nmax_val_images = -1\n", "data.max_val_images: must be >= 0"),
    ("[model]\nimage_size = 64\ngrid = 1000\n", "model.grid: 1000 is more regions per side than the 4 x 4 map"),
])
def test_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "bad.toml" in str(err.value)


def test_override_errors():
    with pytest.raises(ConfigError, match="unknown key train.epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["epochs"])


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert {p.name for p in configs} >= {"coco_resnet101.toml", "flickr8k.toml", "scenes.toml"}
    for path in configs:
        cfg = load_config(path)
        assert cfg.model.grid == 14 and cfg.data.data
    coco = load_config(configs[0])
    assert (coco.model.backbone, coco.model.hidden_dim, coco.model.dropout) == ("resnet101", 512, 0.5)
    assert (coco.train.decoder_lr, coco.train.encoder_lr, coco.train.grad_clip, coco.train.alpha_c,
            coco.train.batch_size) == (4e-4, 1e-4, 5.0, 1.0, 32)


def test_no_config_means_the_default_models_settings():
    from pathlib import Path

    scenes = load_config(Path(__file__).resolve().parents[1] / "configs" / "scenes.toml")
    defaults = load_config()
    # The default model fine-tunes stage 5 (from the cache of stage 4's output), one caption per
    # scene an epoch; without a config the encoder stays frozen, which suits any data and machine.
    assert defaults.model == replace(scenes.model, finetune_blocks=0) and scenes.model.finetune_blocks == 1
    # Two settings are the scenes data's own: its ~10-word captions and its instances file.
    assert (defaults.train.alpha_c, defaults.train.metric) == (1.0, "CIDEr-D")
    assert (scenes.train.alpha_c, scenes.train.metric) == (0.1, "object_f1") and scenes.data.instances
    assert replace(defaults.train, alpha_c=0.1, metric="object_f1", epochs=10) == scenes.train


def test_metric_names_are_evaluates_and_old_names_still_load(tmp_path):
    """train.metric uses `captioner evaluate`'s names; v0.1's names (in old configs and in the
    config stored in old checkpoints) are read as the new ones."""
    from captioner.config import METRICS, config_from_dict

    assert {"object_f1", "exact_set_accuracy"} <= set(METRICS) and "object-F1" not in METRICS
    instances = "data.instances='instances.json'"
    for old, new in (("object-F1", "object_f1"), ("exact-set", "exact_set_accuracy")):
        assert load_config(None, [f"train.metric={old!r}", instances]).train.metric == new
        path = tmp_path / "old.toml"
        path.write_text(f'[data]\ninstances = "i.json"\n[train]\nmetric = "{old}"\n')
        assert load_config(path).train.metric == new
        assert config_from_dict({"data": {"instances": "i.json"}, "train": {"metric": old}}).train.metric == new
    with pytest.raises(ConfigError, match="'exact_set_accuracy' needs data.instances"):
        load_config(None, ["train.metric='exact_set_accuracy'"])
    with pytest.raises(ConfigError, match="train.metric: 'object-f1' is not one of"):
        load_config(None, ["train.metric='object-f1'", instances])


def test_unreadable_config_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)
    binary = tmp_path / "weights.toml"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(ConfigError, match="weights.toml: not a TOML text file"):
        load_config(binary)


def test_device_names():
    for ok in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_config(None, [f"train.device={ok}"]).train.device == ok
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:0"):
        with pytest.raises(ConfigError, match="train.device"):
            load_config(None, [f"train.device={bad}"])
