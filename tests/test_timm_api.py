"""Every registered name through the checks timm's own model tests apply to timm's models: forward and backward,
default cfgs, num_classes=0 and reset_classifier, features_only with each feature_cls, forward_intermediates,
TorchScript (plain and folded), FX forward and backward, FX followed by TorchScript, output_stride.

Shape-only checks run on the meta device (no memory, no arithmetic); checks of values run on CPU at 32 px, one
model per architecture (aliases build the same architecture, which the meta checks confirm).
"""

import copy
import functools
import warnings

import pytest
import timm
import torch
from timm.layers import create_feature_extractor as timm_feature_extractor
from torchvision.models.feature_extraction import create_feature_extractor

from inceptionnext.models import ZOO
from inceptionnext.models.fold import reparameterize_model

ALL_NAMES = [n for e in ZOO for n in e.names]
ARCHS = [e.name for e in ZOO]
# one architecture per token-mixer code path (Inception split, partial dwconv with several branches, full dwconv):
# the slow value checks (TorchScript, FX) run on these; the larger sizes only repeat the same modules
MIXER_PATHS = ["inceptionnext_a", "convnext_tiny_k3_par3_8", "convnext_tiny_k5"]
FAMILY = {n: e.family for e in ZOO for n in e.names}
SIZE = 32


def _meta(name, **kwargs):
    return timm.create_model(name, device="meta", **kwargs)


@functools.lru_cache(maxsize=2)
def _eval_model(name):
    """One built model per architecture at a time (the tests below go through names in order)."""
    torch.manual_seed(0)
    return timm.create_model(name).eval()


def _x(batch=2, size=SIZE, device="cpu"):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)


def _close(a, b, tol=1e-5):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


# ---------------------------------------------------------------------------------------------------------------
# default cfgs, heads, classifier reset (meta device, every name)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_default_cfg_num_classes_zero_and_reset_classifier(name):
    model = _meta(name)
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "first_conv", "classifier", "num_classes"):
        assert cfg.get(key) is not None, key
    keys = model.state_dict().keys()
    assert f"{cfg['first_conv']}.weight" in keys and f"{cfg['classifier']}.weight" in keys
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    x = _x(device="meta")
    assert model(x).shape == (2, cfg["num_classes"])
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, SIZE // 32, SIZE // 32)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)

    assert _meta(name, num_classes=0)(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    if FAMILY[name] == "convnext":  # as timm's ConvNeXt: no pool, the head norm at every position
        model.reset_classifier(0, "")
        assert model(x).shape == features.shape
        assert _meta(name, global_pool="", num_classes=3)(x).shape == (2, 3, SIZE // 32, SIZE // 32)
    else:  # as timm's MetaNeXt: its MLP head pools first
        with pytest.raises(ValueError, match="cannot be disabled"):
            model.reset_classifier(0, "")


@pytest.mark.parametrize("name", [e.alias for e in ZOO if e.alias])
def test_aliases_build_their_architecture(name):
    short = next(e.name for e in ZOO if e.alias == name)
    ours, theirs = _meta(name).state_dict(), _meta(short).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


# ---------------------------------------------------------------------------------------------------------------
# forward_intermediates, feature_info and output_stride (meta device)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("name", ARCHS)
def test_forward_intermediates_follow_feature_info(name, output_stride):
    model = _meta(name, output_stride=output_stride)
    size = 64
    final, intermediates = model.forward_intermediates(_x(device="meta", size=size))
    info = model.feature_info
    assert [f["reduction"] for f in info] == [min(r, output_stride) for r in (4, 8, 16, 32)]
    assert [tuple(t.shape) for t in intermediates] == [
        (2, f["num_chs"], size // f["reduction"], size // f["reduction"]) for f in info
    ]
    assert final.shape == model.forward_features(_x(device="meta", size=size)).shape == intermediates[-1].shape
    assert len(model.forward_intermediates(_x(device="meta"), indices=2, intermediates_only=True)) == 2


def test_output_stride_is_checked():
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        _meta("inceptionnext_a", output_stride=4)


# ---------------------------------------------------------------------------------------------------------------
# features_only with each feature_cls

FEATURE_CLS = ["getter", "hook", "fx", "list", "dict"]


@pytest.mark.parametrize("feature_cls", FEATURE_CLS)
@pytest.mark.parametrize("name", ARCHS)
def test_features_only_shapes(name, feature_cls):
    kwargs = dict(features_only=True, feature_cls=feature_cls, out_indices=(1, 3))
    if FAMILY[name] == "convnext" and feature_cls in ("list", "dict"):
        with pytest.raises(ValueError, match="use feature_cls='getter'"):
            _meta(name, **kwargs)
        return
    model = _meta(name, **kwargs)
    out = model(_x(device="meta"))
    out = list(out.values()) if isinstance(out, dict) else out
    assert model.feature_info.reduction() == [8, 32]
    assert [tuple(t.shape) for t in out] == [
        (2, c, SIZE // r, SIZE // r) for c, r in zip(model.feature_info.channels(), [8, 32])
    ]


@pytest.mark.parametrize("name", ["inceptionnext_a", "convnext_tiny_k3_par1_4", "convnext_tiny_k5"])
def test_features_only_values_and_backward(name):
    """Each feature class returns the model's own stage outputs, and gradients flow through them."""
    torch.manual_seed(0)  # the same seed draws the same weights: feature models wrap the model timm builds
    reference = timm.create_model(name).eval()
    expected = reference.forward_intermediates(_x(), indices=(1, 3), intermediates_only=True)
    for feature_cls in FEATURE_CLS:
        if FAMILY[name] == "convnext" and feature_cls in ("list", "dict"):
            continue
        torch.manual_seed(0)
        model = timm.create_model(name, features_only=True, feature_cls=feature_cls, out_indices=(1, 3))
        out = model.eval()(_x())
        out = list(out.values()) if isinstance(out, dict) else out
        assert all(_close(a, b) for a, b in zip(out, expected)), feature_cls
        model.train()
        out = model(_x())
        sum(t.square().mean() for t in (out.values() if isinstance(out, dict) else out)).backward()
        assert all(p.grad is not None for n, p in model.named_parameters() if "stages.3" in n), feature_cls


# ---------------------------------------------------------------------------------------------------------------
# forward/backward (every architecture), TorchScript and FX (values, one architecture per mixer code path)


@pytest.mark.parametrize("name", ARCHS)
def test_forward_backward(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, drop_rate=0.0)
    out = model(_x())
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.parametrize("name", MIXER_PATHS)
def test_torchscript_plain_folded_and_traced(name):
    model = _eval_model(name)
    x = _x()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model(x)
        scripted = torch.jit.script(model)
        assert _close(scripted(x), expected)
        assert _close(torch.jit.trace(model, x)(x), expected)
        if FAMILY[name] == "inceptionnext":
            folded = reparameterize_model(model)
            folded_expected = folded(x)
            assert _close(folded_expected, expected, 1e-4)
            assert _close(torch.jit.script(folded)(x), folded_expected)
            assert _close(torch.jit.trace(folded, x)(x), folded_expected)


@pytest.mark.parametrize("name", MIXER_PATHS)
def test_fx_forward_backward_then_torchscript(name):
    model = _eval_model(name)
    x = _x()
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
    # torchvision's extractor (any tracer: the mixer op is one leaf call)
    tv = create_feature_extractor(model, {"stages.1": "c3", "stages.3": "c5"})
    assert any(n.op == "call_function" and "inception_dwconv" in n.name for n in tv.graph.nodes)
    out = tv(x.clone().requires_grad_(True))
    assert _close(out["c3"], expected[0]) and _close(out["c5"], expected[1])
    (out["c3"].mean() + out["c5"].mean()).backward()
    # timm's extractor (the mixer modules are leaves), then TorchScript
    tm = timm_feature_extractor(model, {"stages.1": "c3", "stages.3": "c5"})
    mixers = {n.target for n in tm.graph.nodes if n.op == "call_module"}
    assert any(t.endswith("token_mixer") or t.endswith("dwconv") for t in mixers)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(tm)(x)
    assert _close(scripted["c3"], expected[0]) and _close(scripted["c5"], expected[1])
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_model_scripts_and_traces(output_stride):
    model = timm.create_model("convnext_tiny_k3_par1_8", output_stride=output_stride).eval()
    x = _x()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model(x)
        assert _close(torch.jit.script(model)(x), expected)
    feats = create_feature_extractor(copy.deepcopy(model), {"stages.3": "c5"})(x)["c5"]
    assert feats.shape == (2, 768, SIZE // output_stride, SIZE // output_stride)
