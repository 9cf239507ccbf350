"""The zoo: every name builds and trains, matches the paper's table and timm's own implementation."""

import pytest
import timm
import torch
import torch.nn as nn

from inceptionnext.models import ZOO, InceptionDWConv2d, get_entry
from inceptionnext.models.complexity import count_params_and_macs

ALL_NAMES = [n for e in ZOO for n in e.names]
INCEPTION_NAMES = [n for e in ZOO if e.family == "inceptionnext" for n in e.names]
CONVNEXT_NAMES = [e.name for e in ZOO if e.family == "convnext"]


def test_registered_and_listed():
    listed = set(timm.list_models("inceptionnext*"))
    assert listed == set(INCEPTION_NAMES)
    assert set(CONVNEXT_NAMES) <= set(timm.list_models("convnext_tiny_k*"))
    assert "inceptionnext_t.sail_in1k" in timm.list_models("inceptionnext_t*", pretrained=True)
    # timm's own family is untouched
    assert timm.create_model("inception_next_atto").__class__.__module__.startswith("timm.")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_backward(name):
    model = timm.create_model(name, num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["inceptionnext_a", "inceptionnext_s", "convnext_tiny_k3_par1_4"])
def test_features_only(name):
    backbone = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, 3))
    dims = get_entry(name).arch["dims"]
    assert backbone.feature_info.channels() == list(dims)
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(dims)
    assert [64 // f.shape[-1] for f in feats] == [4, 8, 16, 32]


# timm's exact figures (shared/ANCHORS.md): params in M, MACs in G, both to two decimals.
@pytest.mark.parametrize(
    "name,params,macs",
    [
        ("inceptionnext_a", 4.16, 0.50),
        ("inceptionnext_t", 28.06, 4.19),
        ("inceptionnext_s", 49.37, 8.36),
        ("inceptionnext_b", 86.67, 14.84),
        ("inceptionnext_b_384", 86.67, 43.60),
    ],
)
def test_params_and_macs_match_paper(name, params, macs):
    n_params, n_macs = count_params_and_macs(name)
    assert round(n_params / 1e6, 2) == params
    assert round(n_macs / 1e9, 2) == macs
    paper = get_entry(name).paper
    assert abs(n_params / 1e6 - paper["params"]) < 0.5 and abs(n_macs / 1e9 - paper["macs"]) < 0.1


@pytest.mark.parametrize("name", CONVNEXT_NAMES)
def test_convnext_variant_params_match_paper(name):
    n_params = sum(p.numel() for p in timm.create_model(name).parameters())
    # the paper prints whole millions (k5's 28.43M is listed as 29M)
    assert abs(n_params / 1e6 - get_entry(name).paper["params"]) < 0.6


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("inceptionnext_a", "inception_next_atto"),
        ("inceptionnext_t", "inception_next_tiny"),
        ("inceptionnext_s", "inception_next_small"),
        ("inceptionnext_b", "inception_next_base"),
    ],
)
def test_equivalent_to_timm(ours, theirs):
    ref = timm.create_model(theirs)
    with torch.no_grad():  # non-trivial BN statistics and layer scale, so the comparison can fail
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
            if hasattr(m, "gamma") and isinstance(m.gamma, nn.Parameter):
                m.gamma.normal_(0, 0.2)
    model = timm.create_model(ours)
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    for train in (False, True):
        ref.train(train), model.train(train)
        with torch.no_grad():
            expected, actual = ref(x), model(x)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_convnext_official_layout_matches_timm_convnext():
    """Our ConvNeXt at k7 is the official ConvNeXt-T: its state dict in the official layout, converted by timm's
    own official-checkpoint filter, loads into timm's convnext_tiny and gives the same outputs."""
    from timm.models.convnext import checkpoint_filter_fn

    from inceptionnext.models import ConvNeXt

    ours = ConvNeXt(kernel_size=7).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "gamma" in name:
                p.normal_(0, 0.2)
    sd = ours.state_dict()
    assert {
        "downsample_layers.0.0.weight",
        "stages.0.0.dwconv.weight",
        "stages.0.0.pwconv1.weight",
        "norm.weight",
        "head.weight",
    } <= set(sd)
    ref = timm.create_model("convnext_tiny").eval()
    ref.load_state_dict(checkpoint_filter_fn(dict(sd), ref), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,ratio",
    [("convnext_tiny_k3_par1_2", 1 / 2), ("convnext_tiny_k3_par3_8", 3 / 8), ("convnext_tiny_k3_par1_16", 1 / 16)],
)
def test_convnext_partial_layout(name, ratio):
    sd = timm.create_model(name).state_dict()
    gc = int(96 * ratio)
    assert sd["stages.0.0.dwconv.conv.weight"].shape == (gc, 1, 3, 3)
    assert sd["stages.3.2.dwconv.conv.weight"].shape == (int(768 * ratio), 1, 3, 3)
    assert sd["downsample_layers.1.1.weight"].shape == (192, 96, 2, 2)
    assert sd["head.weight"].shape == (1000, 768)
    # the partial conv convolves the last channels and passes the first ones through
    mixer = timm.create_model(name).stages[0][0].dwconv
    x = torch.randn(1, 96, 8, 8)
    y = mixer(x)
    torch.testing.assert_close(y[:, : 96 - gc], x[:, : 96 - gc])
    torch.testing.assert_close(y[:, 96 - gc :], mixer.conv(x[:, 96 - gc :]))


def test_inception_mixer_split_order():
    mixer = InceptionDWConv2d(64, square_kernel_size=3, band_kernel_size=7, branch_ratio=0.125)
    assert mixer.split_indexes == (40, 8, 8, 8)
    x = torch.randn(2, 64, 9, 11)
    y = mixer(x)
    torch.testing.assert_close(y[:, :40], x[:, :40])
    torch.testing.assert_close(y[:, 40:48], mixer.dwconv_hw(x[:, 40:48]))
    torch.testing.assert_close(y[:, 48:56], mixer.dwconv_w(x[:, 48:56]))
    torch.testing.assert_close(y[:, 56:64], mixer.dwconv_h(x[:, 56:64]))
    assert mixer.dwconv_w.weight.shape == (8, 1, 1, 7) and mixer.dwconv_h.weight.shape == (8, 1, 7, 1)
    with pytest.raises(ValueError, match="branch_ratio"):
        InceptionDWConv2d(4)
    with pytest.raises(ValueError, match="odd"):
        InceptionDWConv2d(64, band_kernel_size=10)


def test_timm_model_api():
    model = timm.create_model("inceptionnext_a", drop_path_rate=0.1, drop_rate=0.2).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 320, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 960)
    assert model.get_classifier() is model.head.fc2
    final, inter = model.forward_intermediates(x)
    assert [t.shape[1] for t in inter] == [40, 80, 160, 320]
    torch.testing.assert_close(final, feats)
    assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 960)
    assert isinstance(model.no_weight_decay(), set)
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) > 4 and "stem" in str(model.group_matcher())
    # drop path rises linearly to the requested rate
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks if hasattr(b.drop_path, "drop_prob")]
    assert max(rates) == pytest.approx(0.1) and rates == sorted(rates)
    pruned = timm.create_model("inceptionnext_a")
    assert pruned.prune_intermediate_layers(indices=(0, 1)) == [0, 1]
    assert len(pruned.stages) == 2


def test_grad_checkpointing_same_gradients():
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        torch.manual_seed(0)
        model = timm.create_model("inceptionnext_a")
        model.set_grad_checkpointing(enable)
        model(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["inceptionnext_a", "convnext_tiny_k3_par1_8"])
def test_torch_compile_fullgraph(name):
    model = timm.create_model(name, num_classes=10)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wrong_input_channels_is_a_clear_error():
    model = timm.create_model("inceptionnext_a")
    with pytest.raises(ValueError, match=r"inceptionnext_a expects a \(batch, 3, height, width\).*\(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    gray = timm.create_model("inceptionnext_a", in_chans=1)
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 1000)


@pytest.mark.parametrize("name", ["inceptionnext_a", "convnext_tiny_k3_par1_2", "convnext_tiny_k5"])
def test_fast_path_argument_reaches_every_mixer(name):
    from inceptionnext.models import DWConv2d, PartialDWConv2d

    mixers = (InceptionDWConv2d, PartialDWConv2d, DWConv2d)
    for choice in (False, None):
        model = timm.create_model(name, fast_path=choice)
        found = [m.fast_path for m in model.modules() if isinstance(m, mixers)]
        assert found and all(f is choice for f in found)
    if not torch.cuda.is_available():  # a CPU tensor cannot take the fused kernel: a clear refusal, not a fallback
        with pytest.raises(RuntimeError, match="fast path forced"):
            timm.create_model(name, fast_path=True)(torch.randn(1, 3, 32, 32))


def test_device_and_dtype_arguments():
    meta = timm.create_model("inceptionnext_a", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    half = timm.create_model("convnext_tiny_k3_par1_2", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert half(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_convnext_refuses_pools_its_head_norm_cannot_take():
    """ConvNeXt's LayerNorm follows the pool: a width-changing pool is a clear error, not a shape crash."""
    from inceptionnext.models import ConvNeXt

    with pytest.raises(ValueError, match="global_pool must keep that width.*'catavgmax'"):
        ConvNeXt(depths=(1, 1), dims=(8, 16), global_pool="catavgmax")
    model = ConvNeXt(depths=(1, 1), dims=(8, 16), num_classes=3).eval()
    with pytest.raises(ValueError, match="global_pool must keep that width"):
        model.reset_classifier(4, global_pool="catavgmax")
    model.reset_classifier(4, global_pool="max")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_convnext_without_global_pool_matches_timm():
    """global_pool='' as timm's ConvNeXt: the head norm and classifier at every position, same weights."""
    from timm.models.convnext import checkpoint_filter_fn

    ours = timm.create_model("convnext_tiny_k3", global_pool="", num_classes=5).eval()
    theirs = timm.create_model("convnext_tiny", kernel_sizes=3, global_pool="", num_classes=5).eval()
    sd = checkpoint_filter_fn(dict(ours.state_dict()), theirs)
    sd["head.fc.weight"] = sd["head.fc.weight"].reshape(theirs.head.fc.weight.shape)  # timm: a 1x1 conv here
    theirs.load_state_dict(sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = ours(x)
        assert out.shape == (1, 5, 2, 2)
        torch.testing.assert_close(out, theirs(x), rtol=1e-4, atol=1e-4)
        ours.reset_classifier(0, "")
        theirs.reset_classifier(0, "")
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
        assert ours(x).shape == (1, 768, 2, 2)
        ours.reset_classifier(7, "avg")
        assert ours(x).shape == (1, 7)
    with pytest.raises(ValueError, match="cannot be disabled"):
        timm.create_model("inceptionnext_a", global_pool="")  # as timm's MetaNeXt: its MLP head pools first


def test_reset_classifier_keeps_the_model_dtype_and_device():
    """reset_other drops fc1, and a pruned head has no parameters: the new classifier must still match the model."""
    x = torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)
    model = timm.create_model("inceptionnext_a", device="meta")
    model.reset_classifier(5, reset_other=True)
    assert model.head.fc2.weight.device.type == "meta"
    model = timm.create_model("inceptionnext_a", num_classes=3).to(torch.bfloat16).eval()
    model.reset_classifier(5, reset_other=True)
    assert model(x).dtype == torch.bfloat16 and model(x).shape == (1, 5)
    model.prune_intermediate_layers(indices=(1,))
    model.reset_classifier(4)
    assert model.head.fc2.weight.dtype == torch.bfloat16 and model(x).shape == (1, 4)
