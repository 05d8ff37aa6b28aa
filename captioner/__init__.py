"""captioner: Show, Attend and Tell image captioning with per-word attention overlays."""
from importlib.metadata import PackageNotFoundError, version

from captioner.api import DEFAULT_CHECKPOINT, Caption, Captioner, load_captioner
from captioner.checkpoint import CheckpointError, load_model, save_checkpoint
from captioner.config import Config, ModelConfig, load_config
from captioner.image.loading import ImageLoadError, load_image

__all__ = ["DEFAULT_CHECKPOINT", "Caption", "Captioner", "load_captioner", "CheckpointError",
           "load_model", "save_checkpoint", "Config", "ModelConfig", "load_config",
           "ImageLoadError", "load_image"]

try:  # pyproject.toml is the one place the version is written
    __version__ = version("captioner")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
