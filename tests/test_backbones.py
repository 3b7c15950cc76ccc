"""The paper's backbones (SPEC 3): shapes, BN-Inception's Caffe layout, input conventions, and
the ImageNet weight lookup (hub cache, explicit path, checksum, download refusal); and the
released code's model options (SPEC 2.5 items 7-8): embedding-layer init, max + average
pooling, GoogLeNet without input rescaling."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import iaa.models.weights as weights_module
from iaa.errors import IAAError
from iaa.models import (
    EmbeddingModel,
    architecture_kwargs,
    backbone_options,
    build_backbone,
    freeze_batchnorm,
    load_model,
    save_model,
)
from iaa.models.bn_inception import BNInception
from iaa.models.inputs import CAFFE_BGR, IMAGENET_RGB

# (name, feature_dim, input side used here: small where the net allows, 224 for BN-Inception)
SHAPES = [("synth", 128, 32), ("googlenet", 1024, 64), ("bn_inception", 1024, 224), ("resnet50", 2048, 64)]


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: TORCH_HOME points into tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def _publish(state: dict[str, torch.Tensor], folder: Path, stem: str, digits: int) -> Path:
    """Save ``state`` as ``<stem>-<sha256 prefix>.pth`` in ``folder``, torchvision's naming."""
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:digits]
    return tmp.rename(folder / f"{stem}-{prefix}.pth")


def _register(monkeypatch, name: str, path: Path) -> None:
    entry = dataclasses.replace(weights_module.WEIGHTS[name], file=path.name)
    monkeypatch.setitem(weights_module.WEIGHTS, name, entry)


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("name, dim, side", SHAPES)
def test_random_init_backbones_give_pooled_features(name, dim, side):
    torch.manual_seed(0)
    net = build_backbone(name, pretrained=False)
    assert net.feature_dim == dim
    net.train()
    freeze_batchnorm(net)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    net.eval()
    x = net.input_spec.convert(torch.rand(2, 3, side, side))
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, dim) and torch.isfinite(out).all()
        if name == "bn_inception":  # channels_last changes nothing
            last = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
            torch.testing.assert_close(last, out, rtol=1e-4, atol=1e-4)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(IAAError) as excinfo:
        build_backbone("vgg16")
    msg = _one_line_error(excinfo)
    assert all(n in msg for n in ("synth", "googlenet", "bn_inception", "resnet50"))
    with pytest.raises(IAAError, match="no ImageNet weights"):
        build_backbone("synth", pretrained=True)


# Inception-v2 as tabulated by Ioffe & Szegedy (2015), GoogLeNet-style columns:
# #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool projection (0: pass through).
PAPER_TABLE = [
    (64, 64, 64, 64, 96, 32),
    (64, 64, 96, 64, 96, 64),
    (0, 128, 160, 64, 96, 0),
    (224, 64, 96, 96, 128, 128),
    (192, 96, 128, 96, 128, 128),
    (160, 128, 160, 128, 160, 128),
    (96, 128, 192, 160, 192, 128),
    (0, 128, 192, 192, 256, 0),
    (352, 192, 320, 160, 224, 128),
    (352, 192, 320, 192, 224, 128),
]


def _paper_parameter_count() -> int:
    """Conv (weights + bias) and affine BatchNorm parameters, channel widths chained by hand."""

    def unit(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout + 2 * cout

    total = unit(3, 64, 7) + unit(64, 64, 1) + unit(64, 192, 3)
    cin = 192
    for c1, r3, c3, rd, cd, proj in PAPER_TABLE:
        total += unit(cin, c1, 1) if c1 else 0
        total += unit(cin, r3, 1) + unit(r3, c3, 3)
        total += unit(cin, rd, 1) + unit(rd, cd, 3) + unit(cd, cd, 3)
        total += unit(cin, proj, 1) if proj else 0
        cin = c1 + c3 + cd + (proj or cin)
    assert cin == 1024
    return total


def test_bn_inception_has_the_caffe_layout():
    full = BNInception(num_classes=1000)
    keys = set(full.state_dict())
    for key in (
        "conv1_7x7_s2.weight",
        "conv1_7x7_s2.bias",
        "conv1_7x7_s2_bn.running_mean",
        "conv2_3x3_reduce.weight",
        "inception_3a_1x1.weight",
        "inception_3a_double_3x3_2_bn.running_var",
        "inception_3c_double_3x3_reduce.weight",
        "inception_5b_pool_proj_bn.bias",
        "last_linear.weight",
    ):
        assert key in keys
    absent = ("inception_3c_1x1", "inception_3c_pool_proj", "inception_4e_1x1")  # pass-through blocks
    assert not any(k.startswith(absent) for k in keys)
    assert all(k.count(".") == 1 for k in keys)  # flat: top-level Caffe layer names
    bns = [m for m in full.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.affine for m in bns)

    count = sum(p.numel() for p in full.parameters())
    trunk = sum(p.numel() for p in BNInception().parameters())
    assert count == trunk + 1024 * 1000 + 1000
    assert trunk == _paper_parameter_count() == 10_270_240  # ~10.3 M
    assert abs(count - 11.3e6) < 0.05e6  # the published ~11.3 M with the 1000-way classifier


def test_input_conversion():
    x = torch.rand(2, 3, 5, 7)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    caffe = torch.stack([b * 255 - 104, g * 255 - 117, r * 255 - 128], 1)
    torch.testing.assert_close(CAFFE_BGR.convert(x), caffe)
    assert BNInception.input_spec == CAFFE_BGR
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for name in ("synth", "googlenet", "resnet50"):  # synth: what the data pipeline did so far
        assert build_backbone(name, pretrained=False).input_spec == IMAGENET_RGB
    torch.testing.assert_close(IMAGENET_RGB.convert(x), (x - mean) / std)


def test_registry_matches_torchvision():
    w = weights_module.WEIGHTS
    assert w["googlenet"].url == torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url
    assert w["resnet50"].url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert [w[n].file for n in ("googlenet", "bn_inception", "resnet50")] == [
        "googlenet-1378be20.pth",
        "bn_inception-52deb4733.pth",
        "resnet50-0676ba61.pth",
    ]
    assert w["bn_inception"].sha256_prefix == "52deb4733"


def test_caffe_style_file_in_the_hub_cache_round_trips(hub, monkeypatch):
    """BN tensors as (1, C), no num_batches_tracked, plus the classifier: loads, same features."""
    torch.manual_seed(1)
    src = BNInception(num_classes=1000)
    for m in src.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    caffe = {
        k: (v.unsqueeze(0) if "_bn." in k else v)
        for k, v in src.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    _register(monkeypatch, "bn_inception", _publish(caffe, hub, "bn_inception", 9))
    trunk = build_backbone("bn_inception", allow_download=False).eval()  # pretrained by default
    x = CAFFE_BGR.convert(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        logits = src.eval()(x)
        torch.testing.assert_close(src.last_linear(trunk(x)), logits, rtol=1e-4, atol=1e-4)
    # The released code's pooling has no parameters: the same file loads, tensor for tensor.
    other = build_backbone("bn_inception", allow_download=False, pooling="max_avg").state_dict()
    assert other.keys() == trunk.state_dict().keys()
    assert all(torch.equal(other[k], v) for k, v in trunk.state_dict().items())


@pytest.mark.parametrize("transform_input", [True, False])
def test_torchvision_googlenet_file_at_an_explicit_path_round_trips(
    tmp_path, hub, monkeypatch, transform_input
):
    """The file has the classifier and the auxiliary heads; the trunk drops them. It loads with
    and without torchvision's input rescaling, and conv1 sees what each setting promises:
    (u - 0.5) / 0.5 of the [0, 1] image u (True, the paper), or the ImageNet-standardised
    input itself (False, the released code's model/backbone/googlenet.py)."""
    torch.manual_seed(2)
    src = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)
    path = _publish(src.state_dict(), tmp_path, "googlenet", 8)
    _register(monkeypatch, "googlenet", path)
    trunk = build_backbone("googlenet", weights=path, allow_download=False, transform_input=transform_input)
    trunk.eval()
    seen: list[torch.Tensor] = []
    trunk.conv1.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    u = torch.rand(2, 3, 64, 64)
    x = IMAGENET_RGB.convert(u)
    src.transform_input = transform_input  # torchvision's own module, same weights and setting
    with torch.no_grad():
        torch.testing.assert_close(src.fc(trunk(x)), src.eval()(x), rtol=1e-4, atol=1e-4)
    (first,) = seen
    if transform_input:
        torch.testing.assert_close(first, (u - 0.5) / 0.5, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(first, x)
    # A folder holding the file works too.
    build_backbone("googlenet", weights=tmp_path, allow_download=False)


def test_wrong_checksum_is_one_line(hub):
    (hub / "resnet50-0676ba61.pth").write_bytes(b"not the weights")
    actual = hashlib.sha256(b"not the weights").hexdigest()[:8]
    with pytest.raises(IAAError) as excinfo:
        build_backbone("resnet50", pretrained=True)
    msg = _one_line_error(excinfo)
    assert "resnet50-0676ba61.pth" in msg and "0676ba61" in msg and actual in msg


def test_own_weights_file_loads_unverified_with_a_warning(tmp_path, hub, caplog):
    """A file of another name given by path (no published checksum) loads, says so in one
    warning, and still has to fit; under the registered name, wrong bytes are refused."""
    torch.manual_seed(3)
    src = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    own = tmp_path / "my-googlenet.pth"
    torch.save(src.state_dict(), own)
    with caplog.at_level("WARNING", logger="iaa.models.weights"):
        trunk = build_backbone("googlenet", weights=own, allow_download=False)
    assert torch.equal(trunk.conv1.conv.weight, src.conv1.conv.weight)
    said = [r.getMessage() for r in caplog.records]
    assert any("unverified" in m and "my-googlenet.pth" in m for m in said)
    registered = tmp_path / weights_module.WEIGHTS["googlenet"].file
    registered.write_bytes(own.read_bytes())
    with pytest.raises(IAAError, match="checksum mismatch"):
        build_backbone("googlenet", weights=registered, allow_download=False)
    torch.save({"conv1.conv.weight": torch.zeros(1)}, own)
    with pytest.raises(IAAError, match="does not fit"):
        build_backbone("googlenet", weights=own, allow_download=False)


def test_missing_file_without_downloads_names_file_place_and_url(hub):
    with pytest.raises(IAAError) as excinfo:
        build_backbone("bn_inception", pretrained=True, allow_download=False)
    msg = _one_line_error(excinfo)
    assert "bn_inception-52deb4733.pth" in msg and str(hub) in msg
    assert "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth" in msg
    with pytest.raises(IAAError, match="no file .*nowhere.pth"):
        build_backbone("googlenet", weights=hub / "nowhere.pth")


def test_failed_download_is_one_line(hub, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(IAAError) as excinfo:
        build_backbone("googlenet", pretrained=True)
    msg = _one_line_error(excinfo)
    assert "https://download.pytorch.org/models/googlenet-1378be20.pth" in msg
    assert "Name or service not known" in msg


def test_state_dict_that_does_not_fit_is_one_line(hub, monkeypatch):
    _register(monkeypatch, "resnet50", _publish(BNInception().state_dict(), hub, "resnet50", 8))
    with pytest.raises(IAAError) as excinfo:
        build_backbone("resnet50", pretrained=True)
    msg = _one_line_error(excinfo)
    assert "does not fit ResNet50Trunk" in msg and "missing keys" in msg and "unexpected keys" in msg


def test_embedding_model_round_trip_needs_no_weights_file(tmp_path, hub, monkeypatch):
    torch.manual_seed(3)
    src = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)
    path = _publish(src.state_dict(), hub, "googlenet", 8)
    _register(monkeypatch, "googlenet", path)
    kwargs = {"pretrained": True, "allow_download": False}
    model = EmbeddingModel(16, backbone="googlenet", backbone_kwargs=kwargs)
    assert model.input_spec == IMAGENET_RGB and model.head.in_features == 1024
    model.train()
    freeze_batchnorm(model.trunk)
    model(IMAGENET_RGB.convert(torch.rand(4, 3, 64, 64))).sum().backward()  # one step's worth of graph
    save_model(tmp_path / "model.pt", model)
    path.unlink()  # the checkpoint alone must do
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.config == model.config
    x = IMAGENET_RGB.convert(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


# --------------------------------------------------------------------------- released-code options


def _linears(head: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of each Linear layer of ``head``, in order, as float64 without grad."""
    return [(m.weight.detach().double(), m.bias.detach()) for m in head.modules() if isinstance(m, nn.Linear)]


def test_head_init_kaiming_fan_out_has_the_fan_out_spread():
    """Released code (model/embedding.py): kaiming_normal_(a=0, mode="fan_out"), bias 0, so
    std = sqrt(2) / sqrt(out_features); torch's default is uniform in +-1/sqrt(in_features)."""
    torch.manual_seed(4)
    ((w, b),) = _linears(EmbeddingModel(512, in_dim=1024, head_init="kaiming_fan_out").head)
    assert w.shape == (512, 1024)
    fan_out_std = math.sqrt(2 / 512)  # gain sqrt(2 / (1 + a^2)) with a = 0, over sqrt(fan_out)
    assert abs(float(w.std()) / fan_out_std - 1) < 0.02
    assert abs(float(w.mean())) < 1e-3
    assert torch.count_nonzero(b) == 0
    assert float(w.abs().max()) > 4 * fan_out_std  # a normal's tails, not a uniform's

    torch.manual_seed(4)
    ((w0, b0),) = _linears(EmbeddingModel(512, in_dim=1024).head)
    bound = 1 / math.sqrt(1024)
    assert float(w0.abs().max()) <= bound
    assert abs(float(w0.std()) / (bound / math.sqrt(3)) - 1) < 0.02  # uniform(-c, c): std c/sqrt(3)
    assert float(w0.std()) < 0.5 * float(w.std())
    assert torch.count_nonzero(b0) > 0

    # Both layers of a hidden head: fan-out 256, then 512.
    torch.manual_seed(4)
    (w1, b1), (w2, b2) = _linears(
        EmbeddingModel(512, in_dim=1024, head_hidden=256, head_init="kaiming_fan_out").head
    )
    assert abs(float(w1.std()) / math.sqrt(2 / 256) - 1) < 0.02
    assert abs(float(w2.std()) / math.sqrt(2 / 512) - 1) < 0.02
    assert torch.count_nonzero(b1) == torch.count_nonzero(b2) == 0

    with pytest.raises(IAAError) as excinfo:
        EmbeddingModel(8, in_dim=4, head_init="xavier")
    assert "xavier" in _one_line_error(excinfo) and "kaiming_fan_out" in str(excinfo.value)


def _last_feature_map(net: nn.Module, name: str, seen: list[torch.Tensor]) -> None:
    """Record the feature map the global pool reduces: ResNet's layer4 output; BN-Inception's
    concatenated 5b block, which no module outputs, so the input of its pool."""
    if name == "resnet50":
        net.layer4.register_forward_hook(lambda module, args, out: seen.append(out.clone()))
    else:
        net.global_pool.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))


@pytest.mark.parametrize("name, head", [("bn_inception", "last_linear."), ("resnet50", "fc.")])
def test_pooling_is_average_or_max_plus_average(name, head):
    """Released code (GMP_and_GAP): global max + global average pooling, summed; the paper:
    average. No parameters: a state dict laid out as the ImageNet file (trunk + classifier)
    loads into either."""
    side = 64  # last map 2x2 for both nets: max and mean differ, and it stays fast
    outs, maps = {}, {}
    for pooling in ("avg", "max_avg"):
        torch.manual_seed(5)
        net = build_backbone(name, pretrained=False, pooling=pooling).eval()
        seen: list[torch.Tensor] = []
        _last_feature_map(net, name, seen)
        torch.manual_seed(6)
        x = net.input_spec.convert(torch.rand(2, 3, side, side))
        with torch.no_grad():
            outs[pooling] = net(x)
        (maps[pooling],) = seen
        fmap = maps[pooling]
        assert fmap.shape == (2, net.feature_dim, 2, 2)
        expected = fmap.mean((2, 3)) + (fmap.amax((2, 3)) if pooling == "max_avg" else 0)
        torch.testing.assert_close(outs[pooling], expected)
        if pooling == "avg":
            avg_state = net.state_dict()
        else:  # the ImageNet file's keys: the trunk's plus a classifier that fit_state_dict drops
            fake_file = {**avg_state, head + "weight": torch.zeros(1000, net.feature_dim)}
            fitted = weights_module.fit_state_dict(net, fake_file, weights_module.WEIGHTS[name], "fake")
            net.load_state_dict(fitted, strict=True)
    torch.testing.assert_close(maps["max_avg"], maps["avg"])  # same seed, same trunk
    assert not torch.allclose(outs["max_avg"], outs["avg"])

    with pytest.raises(IAAError) as excinfo:
        build_backbone(name, pretrained=False, pooling="gem")
    assert "gem" in _one_line_error(excinfo) and "max_avg" in str(excinfo.value)


def test_backbone_options_pick_what_applies_to_each_arch():
    opts = {"pooling": "max_avg", "googlenet_transform_input": False}
    assert backbone_options("synth", **opts) == {}
    assert backbone_options("googlenet", **opts) == {"transform_input": False}
    assert backbone_options("bn_inception", **opts) == {"pooling": "max_avg"}
    assert backbone_options("resnet50", **opts) == {"pooling": "max_avg"}
    assert backbone_options("resnet50", pooling="avg", googlenet_transform_input=True) == {"pooling": "avg"}
    assert backbone_options("googlenet", pooling="avg", googlenet_transform_input=True) == {
        "transform_input": True
    }
    # What it returns builds; synth and googlenet take no pooling: the helper leaves it out and
    # a direct pooling keyword is refused (the released GoogLeNet keeps average pooling).
    assert build_backbone("synth", pretrained=False, **backbone_options("synth", **opts)).feature_dim == 128
    for arch in ("synth", "googlenet"):
        with pytest.raises(IAAError) as excinfo:
            build_backbone(arch, pretrained=False, pooling="max_avg")
        assert "pooling" in _one_line_error(excinfo)
    for bad, word in (
        ({"pooling": "gem", "googlenet_transform_input": True}, "gem"),
        ({"pooling": "avg", "googlenet_transform_input": "false"}, "googlenet_transform_input"),
    ):
        with pytest.raises(IAAError) as excinfo:
            backbone_options("synth", **bad)
        assert word in _one_line_error(excinfo)
    with pytest.raises(IAAError, match="unknown backbone 'vgg16'"):
        backbone_options("vgg16", **opts)


def test_released_options_survive_the_checkpoint_round_trip(tmp_path):
    """pooling is an architecture keyword (kept by architecture_kwargs), head_init a model
    option (kept in config); a checkpoint without head_init (older) still loads."""
    assert architecture_kwargs({"pretrained": True, "weights": "w.pth", "pooling": "max_avg"}) == {
        "pooling": "max_avg",
        "pretrained": False,
    }
    torch.manual_seed(7)
    kwargs = {
        "pretrained": False,
        **backbone_options("bn_inception", pooling="max_avg", googlenet_transform_input=False),
    }
    model = EmbeddingModel(
        16, backbone="bn_inception", backbone_kwargs=kwargs, head_init="kaiming_fan_out"
    ).eval()
    assert model.config["head_init"] == "kaiming_fan_out"
    assert model.config["backbone_kwargs"]["pooling"] == "max_avg"
    save_model(tmp_path / "model.pt", model)
    loaded = load_model(tmp_path / "model.pt").eval()
    assert loaded.config == model.config
    x = CAFFE_BGR.convert(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
        # Had the pooling been lost, the same weights would give other embeddings.
        plain = EmbeddingModel(16, backbone="bn_inception", backbone_kwargs={"pretrained": False}).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain(x), want)

    payload = torch.load(tmp_path / "model.pt", weights_only=False)
    del payload["config"]["head_init"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt").eval()
    assert "head_init" not in old.config
    with torch.no_grad():
        torch.testing.assert_close(old(x), want, rtol=0, atol=0)
