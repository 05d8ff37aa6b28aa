import numpy as np
import pytest
import torch
from PIL import Image

from captioner.config import ModelConfig
from captioner.checkpoint import new_model
from captioner.features.efficientnet_lite import EfficientNetLite0
from captioner.features.encoder import Encoder, encoder_dim
from captioner.features.pretrained import load_lite0_imagenet, load_pretrained
from captioner.image.preprocess import preprocess_for

ESPRESSO = 967  # ImageNet class index


def test_lite0_port_classifies_coffee_as_espresso():
    skdata = pytest.importorskip("skimage.data")
    net = load_lite0_imagenet(EfficientNetLite0()).eval()
    pre = preprocess_for(ModelConfig(image_size=224, grid=7))
    x = pre(Image.fromarray(skdata.coffee())).unsqueeze(0)  # (1, 3, 224, 224)
    with torch.no_grad():
        probs = net(x).softmax(dim=1)[0]
    assert int(probs.argmax()) == ESPRESSO
    assert float(probs[ESPRESSO]) > 0.85


def test_lite_preprocessing_matches_tf_scaling():
    pre = preprocess_for(ModelConfig(image_size=8, grid=1))
    img = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    assert torch.allclose(pre(img), torch.full((3, 8, 8), (200 - 127) / 128), atol=1e-5)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet101"])
def test_preprocessing_is_the_mean_std_formula_per_pixel(backbone):
    """Each pixel value v of the resized image becomes (v / 255 - mean) / std, per channel, in a
    contiguous (3, S, S) float32 tensor (the code computes it as one scale and shift)."""
    pre = preprocess_for(ModelConfig(backbone=backbone, image_size=16, grid=1, pretrained="none"))
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)  # already 16 x 16: no resampling
    x = pre(Image.fromarray(arr))
    want = (torch.from_numpy(arr).permute(2, 0, 1).double() / 255 - torch.tensor(pre.mean).view(3, 1, 1).double()) \
        / torch.tensor(pre.std).view(3, 1, 1).double()
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16) and x.is_contiguous()
    assert torch.allclose(x.double(), want, atol=1e-6, rtol=0)


def test_whole_image_is_resized_not_cropped():
    """A red strip at the far left edge must survive preprocessing (a centre crop drops it)."""
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :20, 0] = 255
    x = preprocess_for(ModelConfig(image_size=60, grid=2))(Image.fromarray(arr))
    assert x.shape == (3, 60, 60)
    assert float(x[0, :, 0].mean()) > float(x[0, :, 30].mean()) + 1.0


@pytest.mark.parametrize("layer", ["blocks", "head"])
def test_lite0_grid_shapes(layer):
    cfg = ModelConfig(image_size=128, grid=3, feature_layer=layer, pretrained="none")
    enc = Encoder(config=cfg).eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 128, 128))  # 4 x 4 map pooled to 3 x 3
    assert out.shape == (2, 9, encoder_dim(cfg))
    # 448 px gives the stride-32 14x14 map directly, with no pooling.
    with torch.no_grad():
        fmap = enc.feature_map(torch.randn(1, 3, 448, 448))
    assert fmap.shape[-2:] == (14, 14)


def test_lite0_stride16_layer_is_stage5_and_pretrained_weights_load():
    cfg = ModelConfig(image_size=224, grid=14, feature_layer="stride16")
    enc = load_pretrained(Encoder(config=cfg), cfg).eval()
    assert encoder_dim(cfg) == 112 and cfg.feature_stride == 16
    assert len(enc.backbone._blocks) == 11 and len(enc.stages) == 6  # stem + stages 1-5
    with torch.no_grad():
        fmap = enc.feature_map(torch.randn(1, 3, 224, 224))
        whole = ModelConfig(image_size=224, grid=7, feature_layer="blocks")
        full = load_pretrained(Encoder(config=whole), whole).eval()
        x = torch.randn(1, 3, 224, 224)
        # The same weights as the whole network's first 11 blocks: stage 5's output, unchanged.
        trunk = full.backbone
        h = torch.nn.functional.relu6(trunk._bn0(trunk._conv_stem(x)))
        for block in trunk._blocks[:11]:
            h = block(h)
        assert torch.allclose(enc.feature_map(x), h, atol=1e-5)
    assert fmap.shape == (1, 112, 14, 14)


def test_auto_feature_layer_is_stride16_for_lite0_and_layer4_for_resnets():
    assert ModelConfig().feature_layer == "stride16"
    assert ModelConfig(backbone="resnet101", image_size=448).feature_layer == "blocks"
    assert encoder_dim(ModelConfig(backbone="resnet101", image_size=448)) == 2048


def test_grid_is_checked_against_the_feature_stride():
    from captioner.config import ConfigError

    ModelConfig(image_size=224, grid=14, feature_layer="stride16")  # 224 / 16 = 14
    with pytest.raises(ConfigError, match="stride 32"):
        ModelConfig(image_size=224, grid=14, feature_layer="blocks")  # 7 x 7 map
    with pytest.raises(ConfigError, match="model.feature_layer"):
        ModelConfig(feature_layer="layer3")


def test_feature_layers_name_different_caches():
    from captioner.features.cache import CacheKey

    keys = {CacheKey.for_model(ModelConfig(image_size=448, grid=14, feature_layer=layer, pretrained="none"))
            for layer in ("blocks", "head", "stride16")}
    assert len(keys) == 3
    resnet = [CacheKey.for_model(ModelConfig(backbone="resnet50", image_size=448, grid=14, feature_layer=layer,
                                             pretrained="none")).feature_layer for layer in ("blocks", "stride16")]
    assert resnet == ["layer4", "layer3"]


def test_resnet_stride16_is_layer3():
    cfg = ModelConfig(backbone="resnet50", pretrained="none", image_size=64, grid=4, feature_layer="stride16",
                      finetune_blocks=1)
    enc = Encoder(config=cfg)
    with torch.no_grad():
        out = enc.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 16, 1024) and encoder_dim(cfg) == 1024
    assert enc.backbone.layer4 is None and "layer4" not in {k.split(".")[0] for k in enc.backbone.state_dict()}
    assert {n.split(".")[1] for n, p in enc.named_parameters() if p.requires_grad} == {"layer3"}


def test_resnet_without_download_and_finetune_groups():
    cfg = ModelConfig(backbone="resnet50", pretrained="none", image_size=64, grid=2, finetune_blocks=1)
    enc = Encoder(config=cfg)
    with torch.no_grad():
        out = enc.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 4, 2048)
    trainable = {n.split(".")[1] for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    enc.train()
    assert enc.training and enc.backbone.layer4.training  # fine-tuned stages do train
    assert not enc.backbone.layer1.training and not enc.backbone.bn1.training  # frozen ones keep BN stats


def test_frozen_encoder_stays_in_eval_mode():
    enc = Encoder(config=ModelConfig(image_size=64, grid=2, pretrained="none"))
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.backbone._bn0.training


def test_failed_resnet_download_is_a_config_error(monkeypatch):
    import urllib.error

    import torchvision

    from captioner.config import ConfigError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", offline)
    cfg = ModelConfig(backbone="resnet50", pretrained="imagenet", image_size=64, grid=2)
    with pytest.raises(ConfigError, match="could not download the resnet50 ImageNet weights .*Name or service"):
        load_pretrained(Encoder(config=cfg), cfg)
    with pytest.raises(ConfigError, match="could not download the resnet50"):
        new_model(cfg, vocab_size=8)


def test_modules_read_no_weight_files(monkeypatch):
    """The nn.Modules only compute: building one with pretrained weights named reads nothing."""
    from captioner.model.caption_model import CaptionModel

    def no_files(*args, **kwargs):
        raise AssertionError("a module read a file")

    monkeypatch.setattr(torch, "load", no_files)
    CaptionModel(config=ModelConfig(image_size=64, grid=2, pretrained="imagenet"), vocab_size=8)


@pytest.mark.parametrize("layer", ["blocks", "stride16"])
def test_new_model_loads_the_offline_imagenet_weights(layer):
    cfg = ModelConfig(image_size=64, grid=2, pretrained="imagenet", feature_layer=layer)
    reference = load_lite0_imagenet(EfficientNetLite0())
    model = new_model(cfg, vocab_size=8)
    last = len(model.encoder.backbone._blocks) - 1  # 15, or 10 for stage 5
    assert torch.equal(model.encoder.backbone._blocks[last]._project_conv.weight,
                       reference._blocks[last]._project_conv.weight)
    assert torch.equal(model.encoder.backbone._blocks[3]._bn1.running_var, reference._blocks[3]._bn1.running_var)
    fresh = new_model(cfg, vocab_size=8, load_weights=False)
    assert not torch.equal(fresh.encoder.backbone._blocks[last]._project_conv.weight,
                           reference._blocks[last]._project_conv.weight)


@pytest.mark.parametrize("backbone, layer, blocks", [("efficientnet_lite0", "stride16", 1),
                                                     ("efficientnet_lite0", "stride16", 2),
                                                     ("efficientnet_lite0", "head", 1),
                                                     ("resnet50", "stride16", 1)])
def test_the_trained_stages_from_the_frozen_stages_output_are_the_encoder(backbone, layer, blocks):
    """What a fine-tuning run caches (FrozenStages: the frozen stages, BatchNorms folded) and
    what it trains from it (from_frozen: the last `blocks` stages) compose to the encoder itself."""
    from captioner.features.encoder import FrozenStages

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, pretrained="none", image_size=64, grid=2, feature_layer=layer,
                      finetune_blocks=blocks)
    enc = Encoder(config=cfg).eval()
    for m in enc.modules():  # non-trivial BatchNorm statistics, so that folding them is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        whole = enc(x)
        rows = FrozenStages(enc)(x)  # (B, h * w, C)
        fmap = enc.frozen_map(x)
        assert rows.shape == (3, fmap.shape[2] * fmap.shape[3], fmap.shape[1])
        torch.testing.assert_close(rows, fmap.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(enc.from_frozen(rows), whole, rtol=1e-4, atol=1e-4)
    assert enc.first_trained == len(enc.stages) - blocks
    assert whole.shape == (3, 4, encoder_dim(cfg))


def test_fine_tuning_more_stages_than_the_encoder_has_is_a_config_error():
    from captioner.config import ConfigError

    with pytest.raises(ConfigError, match="model.finetune_blocks: 7 is more than the 6 stages"):
        Encoder(config=ModelConfig(pretrained="none", image_size=64, grid=2, finetune_blocks=7))
