"""Folding BatchNorm and layer scale for inference: exactness, module form, save/load, refusals."""

import copy
import warnings

import pytest
import timm
import torch
import torch.nn as nn

from inceptionnext.models.fold import (
    FusedMetaNeXtBlock,
    create_deploy_model,
    fold_bn_after_conv,
    fold_bn_before_conv,
    fold_scale_into_conv,
    reparameterize_model,
)


def randomize_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """Non-trivial running stats and affine, so a wrong fold changes the output."""
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.normal_(1, 0.3)
        bn.bias.normal_(0, 0.3)
    return bn


def randomize_model(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomize_bn(m)
        gamma = getattr(m, "gamma", None)
        if isinstance(gamma, nn.Parameter):
            with torch.no_grad():
                gamma.normal_(0, 0.5)  # far from the 1e-6 init, which would hide a wrong fc2 fold
    return model.eval()


_MODELS = {}


def random_eval_model(name: str) -> nn.Module:
    """One randomized eval model per name for the whole module (tests fold copies, never the model)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        _MODELS[name] = randomize_model(timm.create_model(name))
    return _MODELS[name]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_fold_bn_after_conv_matches():
    conv, bn = nn.Conv2d(3, 8, 4, stride=4), randomize_bn(nn.BatchNorm2d(8)).eval()
    x = torch.randn(2, 3, 16, 16)
    assert rel_err(fold_bn_after_conv(conv, bn)(x), bn(conv(x))) < 1e-6


@pytest.mark.parametrize("groups", [1, 2])
def test_fold_bn_before_conv_matches(groups):
    bn, conv = randomize_bn(nn.BatchNorm2d(8)).eval(), nn.Conv2d(8, 6, 2, stride=2, groups=groups)
    x = torch.randn(2, 8, 8, 8)
    folded = fold_bn_before_conv(bn, conv)
    assert rel_err(folded(x), conv(bn(x))) < 1e-6
    assert folded.groups == groups and folded.bias is not None


def test_fold_bn_before_conv_refuses_padding():
    bn, conv = nn.BatchNorm2d(4).eval(), nn.Conv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="padding"):
        fold_bn_before_conv(bn, conv)


def test_fold_refuses_channel_mismatch_and_non_conv():
    with pytest.raises(ValueError, match="channels"):
        fold_bn_after_conv(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(4).eval())
    with pytest.raises(TypeError, match="Conv2d"):
        fold_scale_into_conv(nn.Linear(3, 3), torch.ones(3))


def test_fold_scale_into_conv_matches():
    conv, scale = nn.Conv2d(8, 5, 1), torch.randn(5)
    x = torch.randn(2, 8, 4, 4)
    assert rel_err(fold_scale_into_conv(conv, scale)(x), conv(x) * scale.view(1, -1, 1, 1)) < 1e-6


@pytest.mark.parametrize(
    "name, channels_last, fuse",
    [
        ("inceptionnext_a", False, True),
        ("inceptionnext_a", True, True),
        ("inceptionnext_a", False, False),
        ("inceptionnext_a", True, False),
        ("inceptionnext_t", False, True),
        ("inceptionnext_t", True, True),
        ("inceptionnext_t", True, False),
    ],
)
def test_folded_model_matches_unfolded(name, channels_last, fuse):
    model = random_eval_model(name)
    x = torch.randn(2, 3, 64, 64)
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    folded = reparameterize_model(model, fuse=fuse)
    with torch.inference_mode():
        ref, out = model(x), folded(x)
    assert rel_err(out, ref) < 1e-5
    # the model passed in is untouched (inplace=False) and the copy holds no BatchNorm or layer scale
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(getattr(m, "gamma", None) is None for m in folded.modules())
    n_fused = sum(isinstance(m, FusedMetaNeXtBlock) for m in folded.modules())
    assert n_fused == (sum(model.stages[i].blocks.__len__() for i in range(4)) if fuse else 0)


def test_fused_block_takes_the_fused_path_only_without_autograd():
    folded = reparameterize_model(random_eval_model("inceptionnext_a"))
    block = folded.stages[0].blocks[0]
    x = torch.randn(1, 40, 8, 8)
    with torch.no_grad():
        assert block._use_fused(x, x)
        no_grad_out = block(x)
    assert not block._use_fused(x, x)  # parameters require grad: the plain modules, which autograd can follow
    out = block(x)
    out.sum().backward()
    assert block.mlp.fc1.weight.grad is not None
    assert rel_err(no_grad_out, out.detach()) < 1e-5


def test_folded_model_runs_under_cpu_bfloat16_autocast():
    model = random_eval_model("inceptionnext_a")
    folded = reparameterize_model(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = model(x), folded(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert rel_err(out.float(), ref.float()) < 0.05  # bf16 rounding, folded in a different order


def test_timm_inception_next_folds_too():
    model = random_eval_model("inception_next_atto")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert rel_err(reparameterize_model(model)(x), model(x)) < 1e-5


def test_folded_state_dict_saves_and_loads(tmp_path):
    model = random_eval_model("inceptionnext_a")
    folded = reparameterize_model(model)
    path = tmp_path / "folded.pth"
    torch.save(folded.state_dict(), path)
    keys = set(folded.state_dict())
    assert "stem.0.weight" in keys and "stages.1.downsample.1.weight" in keys
    assert not any(k.endswith(".gamma") or ".norm.running_mean" in k for k in keys)

    for fuse in (True, False):  # a fused and an unfused folded model share one key set
        loaded = create_deploy_model("inceptionnext_a", fuse=fuse)
        loaded.load_state_dict(torch.load(path, weights_only=True), strict=True)
        x = torch.randn(2, 3, 64, 64)
        with torch.inference_mode():
            assert torch.allclose(loaded(x), folded(x), rtol=1e-5, atol=1e-6)


def test_refuses_train_mode():
    model = timm.create_model("inceptionnext_a")  # timm returns it in train mode
    with pytest.raises(RuntimeError, match="eval"):
        reparameterize_model(model)


def test_fold_function_warns_on_a_train_mode_batchnorm():
    with pytest.warns(UserWarning, match="train mode"):
        fold_bn_after_conv(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))


def test_warns_when_nothing_to_fold():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()).eval()
    with pytest.warns(UserWarning, match="nothing to fold"):
        reparameterize_model(model)


def test_folding_twice_is_harmless():
    folded = reparameterize_model(random_eval_model("inceptionnext_a"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = reparameterize_model(folded)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(again(x), folded(x))


def test_timm_reparameterize_model_folds_like_ours():
    """timm.utils.reparameterize_model calls the models' reparameterize() hooks, which use these folds."""
    model = random_eval_model("inceptionnext_a")
    if not hasattr(model.stages[0].blocks[0], "reparameterize"):
        pytest.skip("the model classes have no reparameterize() hooks yet")
    from timm.utils import reparameterize_model as timm_reparameterize_model

    theirs, ours = timm_reparameterize_model(model), reparameterize_model(model, fuse=False)
    assert set(theirs.state_dict()) == set(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert rel_err(theirs(x), model(x)) < 1e-5


def test_folded_model_compiles_as_one_graph():
    """torch.compile(fullgraph=True) must trace a folded model: the fused oneDNN ops have no fake-tensor kernel,
    so under compilation the block takes its plain path (which the compiler fuses itself)."""
    folded = reparameterize_model(random_eval_model("inceptionnext_a"))
    block = folded.stages[0].blocks[0]
    x = torch.randn(1, 40, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert rel_err(compiled(x), block(x)) < 1e-5
