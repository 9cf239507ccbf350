"""Behaviour a user relies on that the rest of the suite did not pin down (each found by a mutant that survived it):
training with drop path as timm trains, the layer-scale start value, damage to a checkpoint's tensor shapes and
types, which weights of another tool's training checkpoint are loaded, the quantization floor at its bounds,
empty boxes in a COCO file, state dicts wrapped more than once, the token mixers and dilated stages against
plain convolutions and timm, and the MLP head's reset."""

import argparse
import copy
import functools
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image

import inceptionnext.ops as ops
import inceptionnext.ops.dispatch as dispatch
from inceptionnext import checksum
from inceptionnext.deploy.quantize import QualityFloor, compare_logits
from inceptionnext.models import ConvNeXt, InceptionDWConv2d
from inceptionnext.models.fold import (
    FusedMetaNeXtBlock,
    create_deploy_model,
    fold_bn_after_conv,
    fold_bn_before_conv,
    fold_metanext_block,
    fold_scale_into_conv,
    fold_sequential,
    is_folded,
    is_metanext_block,
    reparameterize_model,
)
from inceptionnext.train.checkpoint import load_checkpoint_file
from inceptionnext.weights import CheckpointError, load_state_dict_file

NAME = "inceptionnext_a"
# mutmut calls every function of a mutated module through a wrapper: one more frame between a warning and its caller
UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ


def perturbed_timm_atto(drop_path_rate=0.0):
    """timm's own atto with layer scales and BN statistics away from their init, so every block's residual
    branch (where drop path acts) weighs on the output."""
    ref = timm.create_model("inception_next_atto", drop_path_rate=drop_path_rate)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
            if isinstance(getattr(m, "gamma", None), nn.Parameter):
                m.gamma.normal_(0, 0.5)
    return ref


def seeded(model, x, seed):
    torch.manual_seed(seed)
    return model(x)


# --- training as timm trains --------------------------------------------------------------------------------------


def test_train_mode_with_drop_path_matches_timm_under_a_fixed_seed():
    """Every paper recipe trains with drop path 0.1-0.4: the same seed must drop the same samples' branches as
    timm's InceptionNeXt does, so outputs and gradients agree, and the drop must act (seeds differ)."""
    ref = perturbed_timm_atto(drop_path_rate=0.4).train()
    model = timm.create_model(NAME, drop_path_rate=0.4).train()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(8, 3, 32, 32)
    model.eval(), ref.eval()
    with torch.no_grad():  # evaluation never drops (and its BN statistics are still the same)
        torch.testing.assert_close(seeded(model, x, 5), seeded(ref, x, 6), rtol=1e-5, atol=1e-5)
    model.train(), ref.train()
    out, expected = seeded(model, x, 3), seeded(ref, x, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(seeded(model, x, 4), out, atol=1e-3)  # another seed drops other branches
    out.square().sum().backward()
    expected.square().sum().backward()
    theirs = dict(ref.named_parameters())
    for name, p in model.named_parameters():  # (biases ahead of a train-mode BatchNorm get only rounding noise)
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-3, atol=5e-4, msg=name)


def test_convnext_variant_trains_with_drop_path_as_timms_convnext():
    """The paper's ConvNeXt baseline at k7 under drop path: the same per-sample drops as timm's ConvNeXt."""
    from timm.models.convnext import ConvNeXt as TimmConvNeXt
    from timm.models.convnext import checkpoint_filter_fn

    arch = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), drop_path_rate=0.3, num_classes=10)
    ours = ConvNeXt(kernel_size=7, **arch).train()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "gamma" in name:
                p.normal_(0, 0.5)
    ref = TimmConvNeXt(**arch).train()
    ref.load_state_dict(checkpoint_filter_fn(dict(ours.state_dict()), ref), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(seeded(ours, x, 7), seeded(ref, x, 7), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(seeded(ours, x, 8), seeded(ours, x, 7), atol=1e-3)


@pytest.mark.parametrize("name,theirs", [(NAME, "inception_next_atto"), ("convnext_tiny_k3_par1_2", None)])
def test_layer_scale_starts_at_the_recipe_value(name, theirs):
    """Training from scratch starts every block's layer scale at 1e-6 (timm's and the paper's value), a given
    value is used as given, and 0 or None builds blocks without one."""
    model = timm.create_model(name)
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert gammas and all(torch.equal(g, torch.full_like(g, 1e-6)) for g in gammas)
    if theirs:
        ref = dict(timm.create_model(theirs).named_parameters())
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                torch.testing.assert_close(p, ref[n], rtol=0, atol=0)
    small = dict(depths=(1, 1), dims=(16, 32))  # the builders' own classes: the same rule, at a fraction of the cost
    build = (lambda **kw: timm.create_model(name, **kw)) if name == NAME else (lambda **kw: ConvNeXt(**small, **kw))
    custom = build(ls_init_value=0.25)
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for n, p in custom.named_parameters() if n.endswith("gamma"))
    plain = build(ls_init_value=0.0).eval()  # (timm's create_model drops None arguments)
    assert not [n for n, _ in plain.named_parameters() if n.endswith("gamma")]
    with torch.no_grad():
        assert torch.isfinite(plain(torch.randn(1, 3, 32, 32))).all()


# --- damage a checkpoint's checksum must see ----------------------------------------------------------------------


def _sealed(**extra):
    w = torch.arange(12, dtype=torch.float32)
    return checksum.seal({"state_dict": {"w": w.reshape(3, 4)}, "epoch": 3, "lr": 0.5, **extra})


ALTERATIONS = {
    "tensor shape (same bytes)": lambda c: c["state_dict"].update(w=c["state_dict"]["w"].reshape(4, 3)),
    "tensor flattened": lambda c: c["state_dict"].update(w=c["state_dict"]["w"].reshape(-1)),
    "tensor dtype (same bytes)": lambda c: c["state_dict"].update(w=c["state_dict"]["w"].view(torch.int32)),
    "tensor value": lambda c: c["state_dict"]["w"].view(-1)[5].add_(1),
    "int to float": lambda c: c.update(epoch=3.0),
    "int to bool": lambda c: c.update(one=True),
    "float value": lambda c: c.update(lr=0.5000001),
    "list to tuple": lambda c: c.update(sizes=(1, 2)),
    "str to bytes": lambda c: c.update(name=b"atto"),
    "str value": lambda c: c.update(name="attp"),
    "key renamed": lambda c: c["state_dict"].update(v=c["state_dict"].pop("w")),
    "entry added": lambda c: c["state_dict"].update(extra=torch.zeros(0)),
    "None to False": lambda c: c.update(ema=False),
    "nested length": lambda c: c.update(sizes=[1, 2, 3]),
}


@pytest.mark.parametrize("what", list(ALTERATIONS))
def test_a_checkpoint_altered_in_shape_type_or_value_is_refused(tmp_path, what):
    """The checksum covers every tensor's shape and dtype as well as its bytes, and every plain value with its
    type: a checkpoint whose records were altered so that its bytes still read is refused on load."""
    ckpt = _sealed(sizes=[1, 2], name="atto", ema=None, one=1)
    assert checksum.verify(ckpt, "ckpt")
    ALTERATIONS[what](ckpt)
    path = tmp_path / "last.pth"
    torch.save(ckpt, path)  # as a copy that damaged a record, keeping the old checksum
    with pytest.raises(CheckpointError, match="does not match the checksum it was written with; the file is damaged"):
        load_checkpoint_file(str(path))
    with pytest.raises(checksum.ChecksumError, match=f"^{re.escape(str(path))}: its content does not match the"):
        load_state_dict_file(path)


def test_the_content_digest_is_the_same_as_in_earlier_releases():
    """`sha256-content-v1` is a file format: every checkpoint already written carries a digest computed this way,
    so any change to how content is fed (a type tag, the header of a tensor, how text is encoded) would refuse
    them all as damaged. These digests were computed when the format was fixed; a new format needs a new name."""
    content = {
        "state_dict": {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "e": torch.zeros(0, 4)},
        "epoch": 3,
        "lr": 0.25,
        "ema": None,
        "amp": True,
        "sizes": [1, (2, 3)],
        "name": "atto \udc80",  # a lone surrogate, as os.fsdecode gives for undecodable file names
        "raw": b"\x00\x01",
        "shape": torch.Size([3, 4]),
        "dtype": torch.bfloat16,
    }
    assert checksum.content_digest(content) == "b993a6d43ba017a8a3a047fc4cb97dd4e4aa0d0a82984e7d63ef3995b8d4e9e1"
    tensors, metadata = {"b": torch.ones(2), "a": torch.arange(3)}, {"format": "pt", "n": "1"}
    assert checksum.safetensors_digest(tensors, metadata) == (
        "eb84ccd912600d40fd8cb4cc6453dd8f07dcc5a569b67c8a3b737037d496aa60"
    )


def test_a_damaged_or_foreign_checksum_entry_is_named_and_an_unsealed_file_still_loads(tmp_path):
    ckpt = _sealed()
    for entry in ({"algorithm": "md5", "sha256": "0"}, {"algorithm": checksum.ALGORITHM}, "abc"):
        with pytest.raises(checksum.ChecksumError, match="damaged or of an unknown kind"):
            checksum.verify(dict(ckpt, checksum=entry), "x")
    ckpt.pop("checksum")
    assert checksum.verify(ckpt, "x") is False  # another tool's file: nothing to check against
    sd = {"w": torch.ones(2, 3)}
    meta = checksum.seal_metadata(sd, {"format": "pt"})
    assert checksum.verify_loaded(sd, meta, "x") is True
    damaged = "^w.safetensors: its content does not match the checksum it was written with; the file is damaged "
    with pytest.raises(checksum.ChecksumError, match=damaged + r"\(disk or copy error\) and is not used$"):
        checksum.verify_loaded({"w": torch.ones(3, 2)}, meta, "w.safetensors")  # same bytes, another shape
    with pytest.raises(checksum.ChecksumError, match=damaged):
        checksum.verify_loaded(sd, dict(meta, format="np"), "w.safetensors")  # its other metadata is covered too
    for entry in ("[1]", "not json", json.dumps({"algorithm": "md5", "sha256": "0"})):
        with pytest.raises(checksum.ChecksumError, match="^w.safetensors: its checksum entry is damaged or of an"):
            checksum.verify_loaded(sd, {checksum.METADATA_KEY: entry}, "w.safetensors")
    # what carries no checksum is not checked: other metadata only, or not a mapping at all
    assert checksum.verify_loaded(sd, {"format": "pt"}, "x") is False
    assert checksum.verify_loaded([torch.ones(1)], {}, "x") is False
    assert checksum.verify([torch.ones(1)], "x") is False
    with pytest.raises(checksum.ChecksumError, match="^last.pth: its content does not match"):
        checksum.verify(dict(_sealed(), epoch=4), "last.pth")


# --- which weights of a training checkpoint load ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_weight_sets():
    """A model and its EMA copy with different weights (built once: the tests only read them)."""
    torch.manual_seed(0)
    model = timm.create_model(NAME)
    ema = timm.utils.ModelEmaV3(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # the live weights move away from the EMA copy
    return model, ema


def _assert_loads(path, expected, through_timm=True):
    """The weights a file gives: through timm.create_model(pretrained=True), as a user loads it, or (cheaper) the
    state dict every loader of the library reads it as."""
    if through_timm:
        loaded = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).state_dict()
    else:
        loaded = load_state_dict_file(path)
    for k, v in expected.state_dict().items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("with_ema", [True, False])
def test_timm_train_checkpoints_load_the_weights_timm_scored(tmp_path, with_ema, two_weight_sets):
    """A checkpoint written by timm's own CheckpointSaver (train.py's layout: no scored_weights, its args as an
    argparse.Namespace) loads its EMA weights when it has them (what train.py evaluates and keeps as best), else
    its model weights."""
    from timm.utils import CheckpointSaver

    model, ema = two_weight_sets
    args = argparse.Namespace(model=NAME, model_ema=with_ema, lr=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = CheckpointSaver(
        model, optimizer, args=args, model_ema=ema if with_ema else None, checkpoint_dir=str(tmp_path), max_history=1
    )
    saver.save_checkpoint(epoch=0, metric=50.0)
    path = tmp_path / "model_best.pth.tar"
    raw = torch.load(path, weights_only=False)
    assert "scored_weights" not in raw and isinstance(raw["args"], argparse.Namespace)
    assert ("state_dict_ema" in raw) == with_ema
    _assert_loads(path, ema.module if with_ema else model)


@pytest.mark.parametrize(
    "record,scored",
    [
        (dict(scored_weights="state_dict"), "model"),
        (dict(scored_weights="state_dict_ema"), "ema"),
        (dict(scored_weights="model_ema"), "ema"),  # names a key that is absent: the default order decides
        (dict(config=dict(ema=True, best_on="model")), "model"),
        (dict(config=dict(ema=True, best_on="ema")), "ema"),
        (dict(config=dict(ema=False, best_on="ema")), "model"),
        (dict(config=dict(ema=True)), "ema"),  # no best_on: the default order (EMA first, as timm)
        ({}, "ema"),
    ],
)
def test_checkpoint_weight_choice_follows_what_was_scored(tmp_path, record, scored, two_weight_sets):
    model, ema = two_weight_sets
    path = tmp_path / "ckpt.pth"
    torch.save(dict(state_dict=model.state_dict(), state_dict_ema=ema.module.state_dict(), epoch=1, **record), path)
    _assert_loads(path, ema.module if scored == "ema" else model, through_timm=False)


@pytest.mark.parametrize(
    "prefix", ["module.module.", "_orig_mod.module.", "module._orig_mod.", "module.module.module."]
)
def test_state_dicts_wrapped_more_than_once_load(tmp_path, prefix, two_weight_sets):
    """DataParallel inside DDP, or a compiled model wrapped again, prefixes every key more than once."""
    model, _ = two_weight_sets
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()}, "epoch": 2}, path)
    _assert_loads(path, model, through_timm=prefix == "_orig_mod.module.")


@pytest.mark.parametrize(
    "content,message",
    [
        ([1, 2], r"^{path}: holds a list, not a state dict or training checkpoint$"),
        ({"w": "text"}, r"^{path}: entry 'w' is a str, not a tensor; expected a state dict or a training checkpoint"),
    ],
)
def test_a_file_that_is_no_state_dict_is_named_with_what_it_holds(tmp_path, content, message):
    path = tmp_path / "w.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message.format(path=re.escape(str(path)))):
        load_state_dict_file(path)


# --- the quantization floor ---------------------------------------------------------------------------------------


def _logits_agreeing(n, same):
    """(reference, quantized) logits over 10 classes whose top-1 agrees on exactly `same` of `n` images."""
    ref = torch.randn(n, 10)
    ref[torch.arange(n), torch.arange(n) % 10] += 10
    q = ref.clone()
    top = ref.argmax(-1)
    q[torch.arange(same, n), (top[same:] + 1) % 10] += 20  # another class wins on the rest
    return ref, q


@pytest.mark.parametrize("same,admitted", [(198, True), (197, False), (200, True)])
def test_agreement_floor_is_inclusive_at_its_exact_bound(same, admitted):
    ref, q = _logits_agreeing(200, same)
    agreement, _ = compare_logits(ref, q)
    assert agreement == same / 200
    assert QualityFloor(min_sqnr_db=-math.inf).admits(agreement, 0.0) is admitted


@pytest.mark.parametrize(
    "int8_correct,admitted",
    [(100, True), (101, True), (99, True), (102, False), (98, False), (110, False), (80, False)],
)
def test_top1_floor_holds_in_both_directions_and_at_its_bound(int8_correct, admitted):
    """fp32 gets 100 of 200 labelled images right (50%); int8 may differ by 0.5 points (one image) either way:
    a top-1 that moves far up is as suspect as one that falls (the check images no longer measure the model)."""
    floor = QualityFloor(min_agreement=0.0, min_sqnr_db=-math.inf)
    assert floor.admits(1.0, 40.0, 100 * 100 / 200, 100 * int8_correct / 200) is admitted


@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_agreement_and_sqnr_worked_by_hand(scale):
    """Signal 3^2 + 4^2 = 25 against noise 1 (or 2): 10 log10(25) dB (or 10 log10(12.5)) at any logit scale."""
    ref = torch.tensor([[3.0, 4.0]]) * scale
    assert compare_logits(ref, torch.tensor([[3.0, 5.0]]) * scale) == (1.0, pytest.approx(10 * math.log10(25)))
    assert compare_logits(ref, torch.tensor([[4.0, 3.0]]) * scale) == (0.0, pytest.approx(10 * math.log10(12.5)))
    assert compare_logits(ref, ref.clone()) == (1.0, math.inf)


def test_sqnr_floor_and_unlabelled_images():
    floor = QualityFloor()
    assert floor.admits(0.99, 25.0) and not floor.admits(0.99, 24.999)
    assert floor.admits(1.0, math.inf, None, None)  # unlabelled check images: no top-1 rule
    assert floor.admits(1.0, 30.0, 50.0, None) and floor.admits(1.0, 30.0, None, 80.0)  # one figure: no rule
    assert not floor.admits(0.9899, 40.0)
    assert QualityFloor(max_top1_change=2.0).admits(1.0, 30.0, 70.0, 72.0)
    assert not QualityFloor(max_top1_change=2.0).admits(1.0, 30.0, 72.0, 69.5)


# --- COCO files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [[2, 2, 0, 10], [2, 2, 10, 0], [2, 2, 0, 0], [2, 2, -3, 10], [2, 2, 10, -0.5]])
def test_an_empty_box_is_refused_up_front_with_a_named_error(tmp_path, box):
    from inceptionnext.tasks.detection.data import AnnotationError, CocoDetectionSet

    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "img" / "a.png")
    good = dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 10, 10])
    doc = dict(
        images=[dict(id=1, file_name="a.png")],
        annotations=[good, dict(good, id=7, bbox=box)],
        categories=[dict(id=1, name="cat")],
    )
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=r"ann.json: annotation 7 \(image a.png\) has an empty box") as e:
        CocoDetectionSet(str(tmp_path / "img"), str(tmp_path / "ann.json"), masks=False)
    assert len(str(e.value).splitlines()) == 1
    # the smallest real box on the image's edge is kept
    doc["annotations"][1]["bbox"] = [39, 29, 1, 1]
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    assert len(CocoDetectionSet(str(tmp_path / "img"), str(tmp_path / "ann.json"), masks=False)) == 1


# --- the token mixers, the dilated stages and the MLP head (models/layers.py) ---------------------------------------


def _depthwise_reference(x, conv, dilation):
    """What a depthwise 'same' conv with `conv`'s weights computes, taps `dilation` apart."""
    kh, kw = conv.weight.shape[2:]
    pad = (dilation * (kh // 2), dilation * (kw // 2))
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=pad, dilation=dilation, groups=x.shape[1])


@pytest.mark.parametrize("dilation", [1, 2])
def test_each_mixer_is_its_conv_children_applied_at_their_dilation(dilation):
    """A dilated mixer spaces its taps `dilation` apart, and the conv modules it holds (the ones a state dict
    fills, which a user or a tool may apply by themselves) compute what the mixer applies to their channels."""
    from inceptionnext.models import DWConv2d, PartialDWConv2d

    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 11)
    inception = InceptionDWConv2d(16, square_kernel_size=3, band_kernel_size=5, branch_ratio=0.25, dilation=dilation)
    y = inception(x)
    torch.testing.assert_close(y[:, :4], x[:, :4])
    for i, conv in enumerate((inception.dwconv_hw, inception.dwconv_w, inception.dwconv_h)):
        part = x[:, 4 + 4 * i : 8 + 4 * i]
        torch.testing.assert_close(y[:, 4 + 4 * i : 8 + 4 * i], _depthwise_reference(part, conv, dilation))
        torch.testing.assert_close(conv(part), _depthwise_reference(part, conv, dilation))
    partial = PartialDWConv2d(16, kernel_size=3, conv_ratio=0.5, dilation=dilation)
    y = partial(x)
    torch.testing.assert_close(y[:, :8], x[:, :8])
    torch.testing.assert_close(y[:, 8:], _depthwise_reference(x[:, 8:], partial.conv, dilation))
    torch.testing.assert_close(partial.conv(x[:, 8:]), y[:, 8:])
    full = DWConv2d(16, kernel_size=5, dilation=dilation)
    torch.testing.assert_close(full(x), _depthwise_reference(x, full, dilation))
    # DWConv2d is an nn.Conv2d (what fold and FLOP counters see): its own geometry computes the same
    torch.testing.assert_close(nn.Conv2d.forward(full, x), full(x))


def test_mixer_and_head_defaults_are_the_papers():
    """Built with defaults: the paper's Inception mixer (3x3 square, 11-wide bands, 1/8 of the channels per
    branch), a full 3x3 partial conv, ConvNeXt's 7x7 depthwise conv, all undilated, and MetaNeXt's MLP head
    (average pool, 3x hidden width, 1000 classes, no dropout)."""
    from inceptionnext.models import DWConv2d, MlpClassifierHead, PartialDWConv2d

    x = torch.randn(2, 64, 13, 13)
    inception = InceptionDWConv2d(64)
    assert inception.split_indexes == (40, 8, 8, 8)
    assert [tuple(c.weight.shape[2:]) for c in (inception.dwconv_hw, inception.dwconv_w, inception.dwconv_h)] == [
        (3, 3),
        (1, 11),
        (11, 1),
    ]
    torch.testing.assert_close(inception(x)[:, 40:48], _depthwise_reference(x[:, 40:48], inception.dwconv_hw, 1))
    partial = PartialDWConv2d(64)
    assert partial.conv.weight.shape == (64, 1, 3, 3)
    torch.testing.assert_close(partial(x), _depthwise_reference(x, partial.conv, 1))
    full = DWConv2d(64)
    assert full.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(full(x), _depthwise_reference(x, full, 1))
    head = MlpClassifierHead(64).train()
    assert head.fc1.out_features == 192 and head.fc2.out_features == 1000
    torch.manual_seed(0)
    out = head(x)
    assert out.shape == (2, 1000)
    torch.testing.assert_close(out, head.fc2(head.norm(head.act(head.fc1(x.mean((2, 3)))))))


def test_mixer_arguments_out_of_range_are_refused_with_what_was_given():
    from inceptionnext.models import DWConv2d, PartialDWConv2d

    for build in (InceptionDWConv2d, PartialDWConv2d, DWConv2d):
        for bad in (0, -1, 1.5, "2"):
            with pytest.raises(ValueError, match=f"dilation must be a positive int, got {bad!r}"):
                build(64, dilation=bad)
    assert InceptionDWConv2d(8).split_indexes == (5, 1, 1, 1)  # one channel per branch is enough
    assert InceptionDWConv2d(24, branch_ratio=1 / 3).split_indexes == (0, 8, 8, 8)  # and no identity channel
    for chs, ratio in ((8, 0.1), (8, 0.5), (24, 0.375)):  # no channel per branch, or more than all of them
        with pytest.raises(ValueError, match=f"branch_ratio {ratio} gives {int(chs * ratio)} channels per branch"):
            InceptionDWConv2d(chs, branch_ratio=ratio)
    with pytest.raises(ValueError, match="PartialDWConv2d: conv_ratio 0.1 gives 0 of 8 channels"):
        PartialDWConv2d(8, conv_ratio=0.1)
    with pytest.raises(ValueError, match="conv_ratio 1.5 gives 12 of 8 channels"):
        PartialDWConv2d(8, conv_ratio=1.5)
    assert PartialDWConv2d(8, conv_ratio=0.125).conv.out_channels == 1  # one channel is enough
    for kernel in ((4, 3), (3, 4)):  # either side even: no 'same' padding
        with pytest.raises(ValueError, match=r"kernel sizes must be odd.*got \d+x\d+"):
            PartialDWConv2d(8, kernel_size=kernel)
    with pytest.raises(ValueError, match="depthwise kernel size must be odd, got 4"):
        DWConv2d(8, kernel_size=4)
    assert DWConv2d(8, kernel_size=3).weight.shape == (8, 1, 3, 3)


@pytest.mark.skipif(dispatch._TRITON_INTERPRETED, reason="the interpreter makes the fast path run on CPU")
def test_each_mixer_keeps_the_fast_path_choice_it_was_built_with():
    """fast_path=True on a CPU tensor is a clear refusal, not a silent fallback; fast_path=False runs the plain
    path even inside a block that forces the fast one (the argument wins)."""
    from inceptionnext.models import DWConv2d, PartialDWConv2d

    x = torch.randn(1, 16, 6, 6)
    for build in (InceptionDWConv2d, lambda c, **kw: PartialDWConv2d(c, conv_ratio=0.5, **kw), DWConv2d):
        with pytest.raises(RuntimeError, match="fast path forced"):
            build(16, fast_path=True)(x)
        with ops.fast_path(True):
            assert build(16, fast_path=False)(x).shape == x.shape


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_models_compute_what_timms_compute_with_the_same_weights(output_stride):
    """output_stride 16 or 8 (the dense tasks' backbones): later stages keep their resolution with stride-1
    'same' downsample convs and dilated mixers, exactly as timm's MetaNeXt and ConvNeXt do with the same weights."""
    from timm.models.convnext import ConvNeXt as TimmConvNeXt
    from timm.models.convnext import checkpoint_filter_fn

    ref = perturbed_timm_atto().eval()
    ref_os = timm.create_model("inception_next_atto", output_stride=output_stride).eval()
    ref_os.load_state_dict(ref.state_dict())
    ours = timm.create_model(NAME, output_stride=output_stride).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = ours.forward_features(x)
        assert out.shape[-1] == 64 // output_stride
        torch.testing.assert_close(out, ref_os.forward_features(x), rtol=1e-4, atol=1e-4)
    arch = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_size=3, output_stride=output_stride)
    torch.manual_seed(0)
    conv = ConvNeXt(**arch).eval()
    with torch.no_grad():
        for m in conv.modules():  # biases away from zero: a dropped bias shows
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.5)
        for name, p in conv.named_parameters():  # layer scales far from 1e-6: every block weighs on the output
            if name.endswith("gamma"):
                p.normal_(0, 0.5)
    theirs = TimmConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=3, output_stride=output_stride)
    theirs.load_state_dict(checkpoint_filter_fn(dict(conv.state_dict()), theirs.eval()))
    with torch.no_grad():
        torch.testing.assert_close(conv.forward_features(x), theirs.forward_features(x), rtol=1e-4, atol=1e-4)


def test_mlp_head_reset_keeps_or_drops_the_hidden_layer_and_follows_the_head():
    """Fine-tuning resets the classifier: the pre-logits MLP stays unless reset_other, a new pool is used, a
    width-changing pool needs reset_other, 0 classes leave pre-logits features, and the new classifier takes the
    head's device, dtype and mode."""
    from inceptionnext.models import MlpClassifierHead

    x = torch.randn(2, 8, 5, 5)
    head = MlpClassifierHead(8, num_classes=3).eval()
    fc1 = head.fc1
    head.reset(1)
    assert head.fc1 is fc1 and head(x).shape == (2, 1)
    assert head(x, pre_logits=True).shape == (2, 24)
    head.reset(0)
    torch.testing.assert_close(head(x), head(x, pre_logits=True))
    assert head(x).shape == (2, 24) and MlpClassifierHead(8, num_classes=0)(x).shape == (2, 24)
    assert MlpClassifierHead(8, num_classes=1)(x).shape == (2, 1)
    head.reset(4, pool_type="max")
    with torch.no_grad():
        torch.testing.assert_close(head(x), head.fc2(head.norm(head.act(head.fc1(x.amax((2, 3)))))))
    with pytest.raises(ValueError, match="^MlpClassifierHead needs a global pool type; it cannot be disabled$"):
        head.reset(4, pool_type="")
    with pytest.raises(ValueError, match=r"^MlpClassifierHead needs a global pool type \(e.g. 'avg'\); it cannot be"):
        MlpClassifierHead(8, pool_type="")
    max_head = MlpClassifierHead(8, num_classes=3, pool_type="max").eval()
    with torch.no_grad():
        torch.testing.assert_close(max_head(x), max_head.fc2(max_head.norm(max_head.act(max_head.fc1(x.amax((2, 3)))))))
    with pytest.raises(ValueError, match="pool 'catavgmax' changes the pooled width; pass reset_other=True"):
        head.reset(4, pool_type="catavgmax")
    assert head(x).shape == (2, 4)  # the refused reset changed nothing
    head.reset(5, pool_type="catavgmax", reset_other=True)
    pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
    with torch.no_grad():
        torch.testing.assert_close(head(x, pre_logits=True), pooled)
        torch.testing.assert_close(head(x), head.fc2(pooled))
    meta = MlpClassifierHead(8, num_classes=3).to(device="meta", dtype=torch.float64).train()
    meta.reset(6)
    assert meta.fc2.weight.device.type == "meta" and meta.fc2.weight.dtype == torch.float64 and meta.fc2.training


# --- folding for inference (models/fold.py) ------------------------------------------------------------------------


_BLOCKS = {}


def _folded_block(drop_path_rate=0.0):
    """A folded block of atto's third stage (plain modules, not yet fused), its weights and layer scale away from
    their init; a fresh copy each call."""
    if drop_path_rate not in _BLOCKS:
        model = timm.create_model(NAME, drop_path_rate=drop_path_rate)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        block = model.eval().stages[2].blocks[1]
        fold_metanext_block(block)
        _BLOCKS[drop_path_rate] = block
    return copy.deepcopy(_BLOCKS[drop_path_rate])


def test_create_deploy_model_builds_what_it_is_asked_and_folds_it():
    """The timm arguments reach the model, the blocks are fused unless fuse=False, and nothing is left to fold."""
    fused = create_deploy_model(NAME, num_classes=7)
    assert not fused.training and is_folded(fused) and fused.head.fc2.out_features == 7
    assert any(isinstance(m, FusedMetaNeXtBlock) for m in fused.modules())
    plain = create_deploy_model(NAME, num_classes=7, fuse=False)
    assert is_folded(plain) and not any(isinstance(m, FusedMetaNeXtBlock) for m in plain.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_a_fused_block_refuses_what_it_cannot_stand_for():
    with pytest.raises(TypeError, match="^Linear is not a MetaNeXt block$"):
        FusedMetaNeXtBlock(nn.Linear(2, 2))
    unfolded = timm.create_model(NAME).eval().stages[0].blocks[0]
    half = copy.deepcopy(unfolded)
    half.norm = nn.Identity()  # BatchNorm folded, layer scale still there
    for block in (unfolded, half):
        with pytest.raises(ValueError, match=r"^FusedMetaNeXtBlock needs a folded block \(norm Identity, gamma None\)"):
            FusedMetaNeXtBlock(block)


def test_a_fused_block_keeps_drop_path_in_train_mode():
    """Fine-tuning a fused model trains its blocks as the unfused ones: the same per-sample drops under a seed."""
    block = _folded_block(drop_path_rate=0.5).train()
    fused = FusedMetaNeXtBlock(copy.deepcopy(block))
    assert fused.training
    x = torch.randn(8, block.mlp.fc1.in_channels, 4, 4)
    with torch.no_grad():
        assert not fused._use_fused(x, x)  # the fused kernels cannot drop a branch
        torch.testing.assert_close(seeded(fused, x, 1), seeded(block, x, 1))
        assert not torch.allclose(seeded(fused, x, 2), seeded(fused, x, 1))
        fused.eval()
        assert fused._use_fused(x, x) == FusedMetaNeXtBlock.can_fuse(fused.mlp)


def test_only_what_onednn_computes_exactly_is_fused():
    """Exact GELU and Hardswish fuse; tanh-approximated GELU, a live dropout or another activation take the plain
    modules, and every choice computes what the plain block computes."""
    x = torch.randn(2, 160, 4, 4)
    cases = [
        (nn.GELU(), None, True),
        (nn.Hardswish(), None, True),
        (nn.GELU(approximate="tanh"), None, False),
        (nn.ReLU(), None, False),
        (nn.GELU(), nn.Dropout(0.1), False),
        (nn.GELU(), nn.Dropout(0.0), True),
        (nn.GELU(), "no attribute", True),
    ]
    for act, drop, fusable in cases:
        block = _folded_block()
        block.mlp.act = act
        if drop == "no attribute":
            del block.mlp.drop
        elif drop is not None:
            block.mlp.drop = drop
        plain = copy.deepcopy(block)
        fused = FusedMetaNeXtBlock(block).eval()
        assert fused._fusable == fusable and FusedMetaNeXtBlock.can_fuse(fused.mlp) == fusable, (act, drop)
        if fusable and drop != "no attribute":  # (an MLP without dropout of another library)
            with torch.no_grad():
                assert fused._use_fused(x, x)
                torch.testing.assert_close(fused(x), plain.eval()(x), rtol=1e-4, atol=1e-5)


def test_the_fused_bfloat16_path_follows_what_onednn_reports():
    """bf16 takes the fused kernels exactly where oneDNN can run them (the plain path elsewhere), with the same
    result as the plain modules in bf16."""
    block = _folded_block()
    fused = FusedMetaNeXtBlock(copy.deepcopy(block)).to(torch.bfloat16).eval()
    x = torch.randn(2, 160, 4, 4, dtype=torch.bfloat16)
    with torch.no_grad():
        assert fused._use_fused(x, x) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        torch.testing.assert_close(fused(x).float(), block.to(torch.bfloat16)(x).float(), rtol=0.05, atol=0.05)


def test_folding_functions_report_what_they_folded_and_refuse_what_they_cannot():
    """fold_sequential and fold_metanext_block say whether they changed anything (reparameterize_model warns when
    nothing was), leave alone what is not theirs, and name what they refuse."""
    conv, bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4).eval()
    assert fold_sequential(nn.Sequential(conv, bn)) and fold_sequential(nn.Sequential(bn, nn.Conv2d(4, 4, 2)))
    assert not fold_sequential(nn.ModuleList([conv, bn]))  # not a Sequential: its forward is not conv -> BN
    assert not fold_sequential(nn.Sequential(conv, bn, nn.ReLU()))
    block = _folded_block()
    assert not fold_metanext_block(block)  # already folded
    unfolded = timm.create_model(NAME).eval().stages[0].blocks[0]
    only_scale = copy.deepcopy(unfolded)
    only_scale.norm = nn.Identity()
    assert fold_metanext_block(only_scale) and only_scale.gamma is None
    only_norm = copy.deepcopy(unfolded)
    only_norm.gamma = None
    assert fold_metanext_block(only_norm) and isinstance(only_norm.norm, nn.Identity)
    other_norm = copy.deepcopy(unfolded)
    other_norm.norm = nn.GroupNorm(1, 40)
    with pytest.raises(TypeError, match="^cannot fold a block norm of type GroupNorm$"):
        fold_metanext_block(other_norm)
    with pytest.raises(TypeError, match=r"^Linear is not a MetaNeXt block \(token_mixer, norm, mlp.fc1/fc2, gamma\)"):
        fold_metanext_block(nn.Linear(2, 2))
    for missing in ("token_mixer", "norm", "gamma"):
        partial = copy.deepcopy(unfolded)
        delattr(partial, missing)
        assert not is_metanext_block(partial), missing
    for fc in ("fc1", "fc2"):
        linear = copy.deepcopy(unfolded)
        setattr(linear.mlp, fc, nn.Linear(40, 40))
        assert not is_metanext_block(linear), fc
    with pytest.raises(ValueError, match="^scale has 3 entries but the conv outputs 4$"):
        fold_scale_into_conv(nn.Conv2d(4, 4, 1), torch.ones(3))
    no_bias = nn.Conv2d(4, 4, 1, bias=False)
    folded = fold_scale_into_conv(no_bias, torch.full((4,), 2.0))
    x = torch.randn(1, 4, 3, 3)
    assert folded.bias is None
    torch.testing.assert_close(folded(x), 2 * no_bias(x))


def test_a_fused_block_runs_the_fused_kernels_only_where_they_apply(monkeypatch):
    """Inference without autograd takes the fused oneDNN path; a torch.fx trace records the plain modules (a graph
    that still runs anywhere)."""
    fused = FusedMetaNeXtBlock(_folded_block()).eval()
    calls = []
    real = fused._forward_fused
    monkeypatch.setattr(fused, "_forward_fused", lambda x, s: calls.append(1) or real(x, s))
    x = torch.randn(1, 160, 4, 4)
    with torch.no_grad():
        fused(x)
    assert calls == [1]
    traced = torch.fx.symbolic_trace(fused)
    assert calls == [1] and any("fc1" in str(n.target) for n in traced.graph.nodes)


def _eval_batchnorm(channels):
    """An eval-mode BatchNorm whose statistics and shift are far from the identity's, so a wrong fold shows."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.bias.normal_(0, 0.5)
    return bn.eval()


def test_batchnorm_folds_into_convs_without_a_bias_and_with_string_padding():
    """Convs built with bias=False or padding='valid'/'same' (as other libraries build them) fold exactly; 'same'
    padding with a kernel wider than 1 is refused, and the folded conv stays on the model's device."""
    bn = _eval_batchnorm(4)
    x = torch.randn(2, 4, 6, 6)
    after = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    torch.testing.assert_close(fold_bn_after_conv(after, bn)(x), bn(after(x)))
    for conv in (
        nn.Conv2d(4, 3, 2, bias=False),
        nn.Conv2d(4, 3, 2, padding="valid"),
        nn.Conv2d(4, 3, 1, padding="same"),
    ):
        torch.testing.assert_close(fold_bn_before_conv(bn, conv)(x), conv(bn(x)))
    with pytest.raises(ValueError, match="cannot fold a BatchNorm into a conv with padding same"):
        fold_bn_before_conv(bn, nn.Conv2d(4, 3, 3, padding="same"))
    with pytest.raises(ValueError, match="^BatchNorm has 4 channels but the conv takes 5$"):
        fold_bn_before_conv(bn, nn.Conv2d(5, 3, 1))
    meta = fold_bn_before_conv(copy.deepcopy(bn).to("meta"), nn.Conv2d(4, 3, 1, bias=False, device="meta"))
    assert meta.weight.device.type == meta.bias.device.type == "meta"


def test_reparameterize_model_warns_only_when_nothing_was_folded_and_names_the_caller():
    block = timm.create_model(NAME).eval().stages[0].blocks[0]
    stem = nn.Sequential(nn.Conv2d(3, 40, 4, stride=4), nn.BatchNorm2d(40)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # something was folded: no warning, however the folds add up
        assert isinstance(reparameterize_model(nn.Sequential(copy.deepcopy(block)).eval())[0], FusedMetaNeXtBlock)
        reparameterize_model(nn.Sequential(copy.deepcopy(stem), copy.deepcopy(block)).eval(), fuse=False)
    with pytest.warns(UserWarning, match="^reparameterize_model found nothing to fold in Sequential$") as record:
        reparameterize_model(nn.Sequential(nn.ReLU()).eval())
    assert record[0].filename == __file__ or UNDER_MUTMUT  # the warning points at the caller's line
    with pytest.raises(TypeError, match="^expected an nn.Module, got str$"):
        reparameterize_model("inceptionnext_a")
    message = (
        r"^reparameterize_model needs a model in eval mode \(call model.eval\(\) first\): folding uses BatchNorm "
        "running statistics, which train mode ignores$"
    )
    with pytest.raises(RuntimeError, match=message):
        reparameterize_model(nn.Sequential(stem).train())


def test_a_folded_conv_keeps_the_geometry_dtype_and_padding_mode_of_the_original():
    bn = _eval_batchnorm(4)
    x = torch.randn(2, 3, 9, 9)
    for conv in (
        nn.Conv2d(3, 4, 3, padding=2, dilation=2),
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(3, 4, 3, stride=2, bias=False),
    ):
        folded = fold_bn_after_conv(conv, bn)
        torch.testing.assert_close(folded(x), bn(conv(x)))
    double = fold_bn_after_conv(nn.Conv2d(3, 4, 1).double(), copy.deepcopy(bn).double())
    assert double.weight.dtype == double.bias.dtype == torch.float64
    assert not is_folded(timm.create_model(NAME).eval()) and is_folded(
        reparameterize_model(
            nn.Sequential(copy.deepcopy(timm.create_model(NAME).stages[0].blocks[0])).eval(), fuse=False
        )
    )


def test_what_cannot_be_folded_is_named_and_a_train_mode_fold_warns_the_caller():
    conv = nn.Conv2d(4, 4, 1)
    with pytest.raises(TypeError, match="^expected a BatchNorm module, got LayerNorm$"):
        fold_bn_after_conv(conv, nn.LayerNorm(4))
    with pytest.raises(TypeError, match="^expected an nn.Conv2d, got Linear$"):
        fold_bn_after_conv(nn.Linear(4, 4), nn.BatchNorm2d(4).eval())
    without_stats = "^cannot fold a BatchNorm without running statistics \\(track_running_stats=False\\)$"
    with pytest.raises(ValueError, match=without_stats):
        fold_bn_after_conv(conv, nn.BatchNorm2d(4, track_running_stats=False).eval())
    half = nn.BatchNorm2d(4).eval()
    half.running_var = None  # one statistic missing is as unusable as both
    with pytest.raises(ValueError, match=without_stats):
        fold_bn_after_conv(conv, half)
    message = (
        "^folding a BatchNorm that is in train mode: the fold uses its running statistics, so the folded model "
        "matches the eval-mode model, not train mode$"
    )
    with pytest.warns(UserWarning, match=message) as record:
        fold_bn_after_conv(conv, nn.BatchNorm2d(4))
    assert record[0].filename == __file__ or UNDER_MUTMUT  # the caller's line


def test_partly_folded_models_fold_the_rest_and_refolding_is_a_no_op():
    """Blocks folded by hand, a fused block next to an unfolded one, a model folded before: reparameterize_model
    folds what is left, warns only when nothing was, and the outputs stay the model's."""
    model = timm.create_model(NAME).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    by_hand = copy.deepcopy(model)
    for block in by_hand.stages[-1].blocks:  # the last ones reparameterize_model reaches
        assert fold_metanext_block(block) is True and fold_metanext_block(block) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stem and the other stages were still to fold
        folded = reparameterize_model(by_hand, fuse=False)
        mixed = nn.Sequential(FusedMetaNeXtBlock(_folded_block()), copy.deepcopy(model.stages[2].blocks[1])).eval()
        reparameterize_model(mixed, inplace=True)
    assert all(isinstance(b, FusedMetaNeXtBlock) for b in mixed)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)
    with pytest.warns(UserWarning, match="nothing to fold"):
        again = reparameterize_model(folded, fuse=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, rtol=1e-4, atol=1e-5)


def test_blocks_and_mlps_of_other_shapes_take_the_plain_path():
    """An MLP whose fc1 is not a plain 1x1 conv (wider kernel, groups), or that has no activation, is not fused and
    computes what its modules compute; a block without drop path (another library's) gets none."""
    x = torch.randn(2, 160, 4, 4)
    for fc1 in (nn.Conv2d(160, 480, 3, padding=1), nn.Conv2d(160, 480, 1, groups=2)):
        block = _folded_block()
        block.mlp.fc1, block.mlp.fc2 = fc1, nn.Conv2d(480, 160, 1)
        plain = copy.deepcopy(block)
        fused = FusedMetaNeXtBlock(block).eval()
        assert not fused._fusable
        with torch.no_grad():
            torch.testing.assert_close(fused(x), plain(x))
    no_act = nn.Module()
    no_act.fc1, no_act.fc2 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
    assert not FusedMetaNeXtBlock.can_fuse(no_act)
    block = _folded_block()
    plain = copy.deepcopy(block)
    del block.drop_path
    with torch.no_grad():
        torch.testing.assert_close(FusedMetaNeXtBlock(block).train()(x), plain.eval()(x))


# --- the paper's ConvNeXt variants (models/convnext.py) ------------------------------------------------------------

CONVNEXT_ARCH = dict(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32))


def _convnext_and_timms(**kwargs):
    """A small ConvNeXt variant and timm's ConvNeXt holding the same weights, and our name -> timm's name."""
    from timm.models.convnext import ConvNeXt as TimmConvNeXt
    from timm.models.convnext import checkpoint_filter_fn

    torch.manual_seed(0)
    ours = ConvNeXt(kernel_size=3, **CONVNEXT_ARCH, **kwargs)
    with torch.no_grad():
        for name, p in ours.named_parameters():  # layer scales far from 1e-6: every block weighs on the output
            if name.endswith("gamma"):
                p.normal_(0, 0.5)
    theirs = TimmConvNeXt(kernel_sizes=3, **CONVNEXT_ARCH, **kwargs)
    ptr = {p.data_ptr(): n for n, p in ours.named_parameters()}
    sd = checkpoint_filter_fn(dict(ours.state_dict()), theirs)
    theirs.load_state_dict(sd)
    return ours, theirs, {ptr[v.data_ptr()]: k for k, v in sd.items() if v.data_ptr() in ptr}


def test_convnext_layer_decay_gives_every_weight_timms_scale():
    """Fine-tuning with layer decay (timm's optimizer factory reads group_matcher): every parameter gets the
    learning-rate scale timm's ConvNeXt gives the same weight (the final norm sits with the head, at full rate),
    and the coarse grouping puts the same weights together."""
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay

    ours, theirs, names = _convnext_and_timms()
    assert len(names) == len(list(ours.parameters()))

    def scales(model):
        by_id = {id(p): g["lr_scale"] for g in param_groups_layer_decay(model, layer_decay=0.5) for p in g["params"]}
        return {n: by_id[id(p)] for n, p in model.named_parameters()}

    mine, timms = scales(ours), scales(theirs)
    assert {n: mine[n] for n in names} == {n: timms[names[n]] for n in names}
    assert len(set(mine.values())) == 7  # stem, 5 blocks, head
    for coarse in (True, False):
        groups = lambda m: sorted(sorted(g) for g in group_parameters(m, m.group_matcher(coarse)).values())  # noqa: E731
        assert sorted(sorted(names[n] for n in g) for g in groups(ours)) == groups(theirs)


def test_convnext_intermediates_and_pruning_follow_timms_convnext():
    ours, theirs, _ = _convnext_and_timms(num_classes=5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for indices in (None, 2, (0, 3)):
            mine = ours.eval().forward_intermediates(x, indices=indices, intermediates_only=True)
            timms = theirs.eval().forward_intermediates(x, indices=indices, intermediates_only=True)
            assert len(mine) == len(timms)
            for a, b in zip(mine, timms):
                torch.testing.assert_close(a, b)
        assert ours.prune_intermediate_layers(indices=(0, 1)) == theirs.prune_intermediate_layers(indices=(0, 1))
        assert len(ours.stages) == len(ours.downsample_layers) == 2 and ours.num_features == 16
        assert ours.head_hidden_size == 16 and ours(x).shape == (1, 16)  # features, not logits: norm and head gone
        torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x))
    full, _, _ = _convnext_and_timms(num_classes=5)
    assert full.prune_intermediate_layers() == [3]  # by default the last stage, which keeps the norm
    assert isinstance(full.norm, nn.LayerNorm) and full(x).shape == (1, 32)  # and drops the head
    three, _, _ = _convnext_and_timms(num_classes=5)
    assert three.prune_intermediate_layers(indices=(2,), prune_norm=False, prune_head=False) == [2]
    assert isinstance(three.norm, nn.Identity) and three(x).shape == (1, 24)  # a pruned stage takes both along
    full, _, _ = _convnext_and_timms(num_classes=5)
    assert full.prune_intermediate_layers(indices=(3,), prune_norm=False, prune_head=False) == [3]
    assert isinstance(full.norm, nn.LayerNorm) and full(x).shape == (1, 5)  # pruning nothing keeps norm and head
    assert full.get_classifier() is full.head
    full.prune_intermediate_layers(indices=(3,), prune_norm=True)
    assert isinstance(full.norm, nn.Identity) and full(x).shape == (1, 32)


def test_convnext_checkpointing_recomputes_blocks_in_backward_with_the_same_gradients():
    """set_grad_checkpointing trades compute for memory: each block runs again in backward, gradients unchanged."""
    x = torch.randn(2, 3, 32, 32)
    grads, calls = [], []
    for enable in (False, True):
        torch.manual_seed(0)
        model = ConvNeXt(kernel_size=3, **CONVNEXT_ARCH, num_classes=3)
        if enable:  # off unless asked for
            model.set_grad_checkpointing()
        count = []
        model.stages[1][0].register_forward_pre_hook(lambda *a: count.append(1))
        model(x).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
        calls.append(len(count))
    assert calls == [1, 2]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    model.set_grad_checkpointing(False)
    assert model.grad_checkpointing is False


def test_convnext_starts_from_timms_initialisation_and_checks_its_layout():
    """Training from scratch: weights drawn as timm draws them (truncated normal, std 0.02; zero biases), the
    classifier scaled by head_init_scale, and depths and dims of different lengths refused."""
    from timm.models.convnext import ConvNeXt as TimmConvNeXt

    torch.manual_seed(0)
    wide = ConvNeXt(kernel_size=3, depths=(1, 1), dims=(64, 256), num_classes=200)
    for m in wide.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            assert m.weight.abs().max() <= 2.0
    stds = [m.weight.std().item() for m in wide.modules() if isinstance(m, nn.Linear)]
    assert all(0.017 < s < 0.023 for s in stds), stds
    torch.manual_seed(1)
    ref = TimmConvNeXt(**CONVNEXT_ARCH, num_classes=4, head_init_scale=0.5)
    torch.manual_seed(1)
    scaled = ConvNeXt(**CONVNEXT_ARCH, num_classes=4, head_init_scale=0.5)
    torch.testing.assert_close(scaled.head.weight, ref.head.fc.weight)
    torch.manual_seed(1)
    plain = ConvNeXt(**CONVNEXT_ARCH, num_classes=4)
    torch.testing.assert_close(scaled.head.weight, 0.5 * plain.head.weight)
    model = ConvNeXt(**CONVNEXT_ARCH, num_classes=3, drop_rate=0.2, global_pool="max")
    assert (model.num_classes, model.global_pool, model.drop_rate) == (3, "max", 0.2)  # what timm's API reads
    assert model.feature_info[2] == dict(num_chs=24, reduction=16, module="stages.2")
    assert ConvNeXt(**CONVNEXT_ARCH, num_classes=1).head.out_features == 1
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if name.endswith("gamma"):
                p.normal_(0, 0.5)
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(seeded(plain.train(), x, 1), seeded(plain, x, 2))  # no drop path unless asked for
    with pytest.raises(ValueError, match=r"^depths \(1, 1\) and dims \(8, 16, 32\) must have the same length$"):
        ConvNeXt(depths=(1, 1), dims=(8, 16, 32))


def test_convnext_head_reset_and_input_check():
    """reset_classifier records the new pool (timm's feature wrappers read it), follows the model's dtype, keeps
    one class as one class; global_pool='' gives per-position pre-logits; a wrong input is named."""
    model = ConvNeXt(kernel_size=3, **CONVNEXT_ARCH, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        model.reset_classifier(1, "max")
        assert model.global_pool == "max" and model(x).shape == (1, 1)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), model.norm(feats.amax((2, 3))))
        model.reset_classifier(4, "")
        assert model.global_pool == "" and model(x).shape == (1, 4, 2, 2)
        per_position = model.norm(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), per_position)
    partial = ConvNeXt(kernel_size=5, conv_ratio=0.5, **CONVNEXT_ARCH, output_stride=16)
    mixer = partial.stages[3][0].dwconv  # a dilated stage of a partial-conv variant, at the asked kernel size
    assert mixer.conv.weight.shape == (16, 1, 5, 5)
    y = torch.randn(1, 32, 6, 6)
    torch.testing.assert_close(mixer(y)[:, 16:], _depthwise_reference(y[:, 16:], mixer.conv, 2))
    half = ConvNeXt(kernel_size=3, **CONVNEXT_ARCH).to(torch.bfloat16)
    half.reset_classifier(6)
    assert half.head.weight.dtype == torch.bfloat16
    with pytest.raises(
        ValueError, match=r"expects a \(batch, 3, height, width\) image tensor, got shape \(1, 1, 64, 64\)"
    ):
        model(torch.randn(1, 1, 64, 64))


# --- training checkpoints (train/checkpoint.py) --------------------------------------------------------------------


def _training_record(ema=None, **extra):
    from inceptionnext.train.checkpoint import capture_rng, make_checkpoint

    model = nn.Linear(3, 2)
    return make_checkpoint(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        ema=ema,
        epoch=4,
        model_name="tiny",
        num_classes=2,
        config={"lr": 0.1, "sizes": [1, 2], "resume": "old.pth", "stop_after_epoch": 2, "epochs": 10},
        history=[],
        best={},
        rng=[capture_rng()],
        data_config={},
        **{"scheduler": None, "scaler": None, **extra},
    )


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    """A resumed run draws the same random numbers (python, numpy, torch) as the stopped one would have."""
    import random

    import numpy as np

    from inceptionnext.train.checkpoint import capture_rng, restore_rng, save_atomic

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1)  # numpy and python both keep a cached gaussian: it must come back too
    np.random.standard_normal()
    save_atomic({"rng": capture_rng()}, str(tmp_path / "rng.pth"))

    def draws():
        return random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.random(), torch.rand(3)

    expected = draws()
    state = torch.load(tmp_path / "rng.pth", weights_only=True)["rng"]
    # as a state passed through lists (JSON, a gathered object) arrives: the same draws
    as_lists = dict(state, python=[state["python"][0], list(state["python"][1]), state["python"][2]])
    for restored in (state, as_lists):
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
        restore_rng(restored)
        got = draws()
        assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


def test_a_training_checkpoint_records_what_resuming_needs_and_reads_back(tmp_path):
    from inceptionnext.model_file import TRAINING_FORMAT
    from inceptionnext.train.checkpoint import (
        FORMAT_VERSION,
        load_checkpoint_file,
        read_checkpoint_config,
        save_atomic,
        training_config,
    )

    class Ema:
        module = nn.Linear(3, 2)

    plain, with_ema = _training_record(), _training_record(ema=Ema(), task="segmentation")
    # the layout resume, timm's load_checkpoint and the tools read (a renamed entry strands every file written)
    assert set(plain) == {
        "format", "version", "arch", "num_classes", "epoch", "state_dict", "state_dict_ema", "optimizer", "scheduler",
        "scaler", "rng", "config", "history", "best", "data_config", "class_to_idx", "scored_weights", checksum.KEY,
    }  # fmt: skip
    assert plain["arch"] == "tiny" and plain["format"] == TRAINING_FORMAT and len(plain["rng"]) == 1
    assert plain["optimizer"]["param_groups"][0]["lr"] == 0.1 and plain["scheduler"] is plain["scaler"] is None
    opt = torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    kept = _training_record(scheduler=sched, scaler=scaler)
    assert kept["scheduler"]["step_size"] == 2 and kept["scaler"]["scale"] == 8.0
    assert plain["scored_weights"] == "state_dict" and plain["state_dict_ema"] is None
    assert with_ema["scored_weights"] == "state_dict_ema" and with_ema["task"] == "segmentation"
    assert _training_record(scored_weights="state_dict")["scored_weights"] == "state_dict"
    assert plain["version"] == FORMAT_VERSION and plain["epoch"] == 4 and plain["num_classes"] == 2
    path = str(tmp_path / "last.pth")
    save_atomic(with_ema, path)
    loaded = load_checkpoint_file(path)
    torch.testing.assert_close(loaded["state_dict_ema"]["weight"], Ema.module.weight)
    assert read_checkpoint_config(path) == {"lr": 0.1, "sizes": [1, 2], "epochs": 10}  # not this process's keys
    assert training_config(path)["resume"] == "old.pth"
    torch.save({"weight": torch.zeros(1)}, tmp_path / "weights.pth")
    assert training_config(str(tmp_path / "weights.pth")) == {}  # another weight file: no training config
    no_config = dict(plain, config=None)
    no_config.pop(checksum.KEY)
    save_atomic(no_config, str(tmp_path / "old.pth"))
    assert read_checkpoint_config(str(tmp_path / "old.pth")) == {}


def test_a_checkpoint_that_cannot_be_resumed_says_why(tmp_path):
    from inceptionnext.train.checkpoint import load_checkpoint_file

    missing = str(tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match=f"^checkpoint not found: {re.escape(missing)}$"):
        load_checkpoint_file(missing)
    (tmp_path / "empty.pth").write_bytes(b"")
    empty = (
        r"empty.pth: it is empty \(0 bytes\), not written by this engine \(its writes are atomic\) or cut short by a "
        r"full disk or copy; resume from another checkpoint of the run \(model_best.pth\) or start again$"
    )
    with pytest.raises(CheckpointError, match=empty):
        load_checkpoint_file(str(tmp_path / "empty.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="^cannot read checkpoint .*text.pth: "):
        load_checkpoint_file(str(tmp_path / "text.pth"))
    for content in ({"state_dict": {}}, {"epoch": 1}, [1, 2]):
        torch.save(content, tmp_path / "other.pth")
        not_ours = r"other.pth is not a training checkpoint of this engine \(no state_dict/epoch\); to start from its "
        with pytest.raises(CheckpointError, match=not_ours + "weights use weights: <file> instead of resume$"):
            load_checkpoint_file(str(tmp_path / "other.pth"))
    record = _training_record()
    record["epoch"] = 5  # altered after sealing
    torch.save(record, tmp_path / "altered.pth")
    with pytest.raises(CheckpointError, match="altered.pth"):
        load_checkpoint_file(str(tmp_path / "altered.pth"))


def test_resuming_into_another_model_or_schedule_names_each_difference():
    from inceptionnext.train.checkpoint import check_fits, check_same_schedule

    ckpt = {"arch": "tiny", "num_classes": 2, "state_dict": nn.Linear(3, 2).state_dict()}
    check_fits(ckpt, "last.pth", nn.Linear(3, 2), "tiny", 2)
    with pytest.raises(CheckpointError) as e:
        check_fits(ckpt, "last.pth", nn.Linear(4, 5), "wide", 5)
    assert str(e.value).startswith("cannot resume from last.pth (written for tiny with 2 classes): it has 2 classes, ")
    assert "it has 2 classes, this run has 5; its weights do not fit wide: 2 shape mismatches: " in str(e.value)
    other = dict(ckpt, state_dict={"weight": torch.zeros(2, 3), "extra": torch.zeros(2)})
    with pytest.raises(CheckpointError) as e:
        check_fits(other, "last.pth", nn.Linear(3, 2), "tiny", 2)
    assert str(e.value).endswith("fit tiny: 1 missing keys: bias, 1 unexpected keys: extra")
    with pytest.raises(CheckpointError, match=r"\(written for an unknown model with None classes\): its weights do"):
        check_fits({"state_dict": {}}, "x.pth", nn.Linear(3, 2), "tiny", 2)
    saved = {"config": {"lr": 0.1, "epochs": 10, "layer_decay": None, "seed": 1, "lr_batch": [256, 512]}}
    check_same_schedule(saved, "x.pth", {"lr": 0.1, "epochs": 10, "seed": 2, "opt": "sgd", "lr_batch": (256, 512)})
    check_same_schedule({"config": None}, "x.pth", {"lr": 0.3})
    with pytest.raises(CheckpointError, match=r"lr_batch \(256, 1024\) \(the run has \[256, 512\]\)"):
        check_same_schedule(saved, "x.pth", {"lr_batch": (256, 1024)})
    with pytest.raises(CheckpointError) as e:
        check_same_schedule(saved, "x.pth", {"lr": 0.2, "epochs": 10, "layer_decay": 0.8})
    assert str(e.value) == (
        "cannot resume x.pth with a changed schedule: lr 0.2 (the run has 0.1), layer_decay 0.8 (the run has None); "
        "resume with --resume alone (the checkpoint supplies its values), or start a new run from its weights "
        "(weights: x.pth)"
    )


# --- COCO mask mAP (tasks/detection/evaluate.py) -------------------------------------------------------------------


def test_mask_map_scores_mask_rcnn_soft_masks_apart_from_the_boxes():
    """Mask R-CNN gives (N, 1, H, W) probabilities: a pixel counts when above 0.5 (torchvision's threshold), the
    masks are scored apart from the boxes (segm_ keys), and the box keys keep their plain names."""
    from inceptionnext.tasks.detection.evaluate import DetectionMAP

    truth = torch.zeros(1, 32, 32, dtype=torch.bool)
    truth[0, 8:24, 8:24] = True
    target = dict(boxes=torch.tensor([[8.0, 8.0, 24.0, 24.0]]), labels=torch.tensor([1]), masks=truth)

    def scores(soft):
        metric = DetectionMAP(masks=True, sync=False)
        pred = dict(boxes=target["boxes"].clone(), scores=torch.tensor([0.9]), labels=torch.tensor([1]), masks=soft)
        metric.update([pred], [target])
        return metric.compute()

    exact = truth.float()[:, None] * 0.9 + 0.05  # inside 0.95, outside 0.05: the instance mask is the truth
    result = scores(exact)
    assert result["map"] == 1.0 and result["segm_map"] == 1.0 and "bbox_map" not in result
    assert scores(exact[:, 0])["segm_map"] == 1.0  # (N, H, W) masks are taken as they are
    at_threshold = exact.clone()
    at_threshold[0, 0, 8:24, 8:16] = 0.5  # half the object exactly at the threshold: not part of the mask
    half = scores(at_threshold)
    assert half["map"] == 1.0 and half["segm_map"] < 0.5


def test_coco_map_uses_faster_coco_eval_when_installed_and_reports_single_figures(monkeypatch):
    import inceptionnext.tasks.detection.evaluate as evaluate

    monkeypatch.setattr(
        evaluate.importlib.util, "find_spec", lambda name: object() if name == "faster_coco_eval" else None
    )
    assert evaluate.coco_backend() == "faster_coco_eval"
    monkeypatch.setattr(evaluate.importlib.util, "find_spec", lambda name: None)
    assert evaluate.coco_backend() == "pycocotools"
    monkeypatch.undo()
    metric = evaluate.DetectionMAP(sync=False)
    box = torch.tensor([[2.0, 2.0, 12.0, 12.0]])
    metric.update(
        [dict(boxes=box, scores=torch.tensor([0.8]), labels=torch.tensor([3]))], [dict(boxes=box, labels=[3])]
    )
    result = metric.compute()
    assert result["map"] == 1.0 and "classes" not in result and not any("per_class" in k for k in result)
    assert all(isinstance(v, float) for v in result.values())


# --- segmentation metrics and test-time modes (tasks/segmentation/evaluate.py) ------------------------------------


def test_segmentation_metrics_of_no_labelled_pixel_are_zero_not_nan():
    """A validation set with no labelled pixel (all ignore_index) reports 0, not NaN nor a perfect score."""
    from inceptionnext.tasks.segmentation.evaluate import iou_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and without numpy's mean-of-empty warning
        metrics, per_class = iou_metrics(torch.zeros(3, 3, dtype=torch.long))
    assert metrics == {"miou": 0.0, "macc": 0.0, "acc": 0.0} and np.isnan(per_class).all()


def test_sliding_window_defaults_to_two_thirds_overlap_and_names_a_wrong_mode():
    from inceptionnext.tasks.segmentation.evaluate import predict_logits, predict_probs, slide_logits

    seen = []

    def model(x):
        seen.append(tuple(x.shape[2:]))
        return x * 2.0

    x = torch.randn(1, 3, 20, 30)
    out = predict_logits(model, x, 3, mode="slide", crop=9)
    assert torch.allclose(out, x * 2.0)  # overlapping windows averaged back to the model's own logits
    starts = len(seen)
    slide_logits(model, x, 9, (2 * 9 + 2) // 3, 3)
    assert len(seen) - starts == starts  # the default stride: (2 * crop + 2) // 3, as mmsegmentation's
    seen.clear()
    predict_probs(model, x, 3, mode="slide", crop=9, stride=4)
    assert len(seen) == (-(-(20 - 9) // 4) + 1) * (-(-(30 - 9) // 4) + 1)  # the stride asked for
    seen.clear()
    assert predict_probs(model, x, 3, scales=(2.0, 1.0)).shape == (1, 3, 20, 30)
    assert seen == [(40, 60), (20, 30)]  # multi-scale testing runs the model at each scale
    with pytest.raises(ValueError, match="^test mode must be 'whole' or 'slide', not 'tiles'$"):
        predict_logits(model, x, 3, mode="tiles")


# tasks/detection/data.py, tasks/segmentation/data.py, weights.py
# (the COCO and mask-folder checks' tests are in tests/test_dense_faults.py, sections 12 and 13)
# --- weight files, sources and checks (weights.py) ----------------------------------------------------------------


def _seven_linears(**cfg):
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(7)])  # keys 0.weight, 0.bias, ..., 6.bias
    if cfg:
        model.pretrained_cfg = cfg
    return model


def test_a_state_dict_that_does_not_fit_is_described_key_by_key():
    from inceptionnext.weights import (
        adaptable_keys,
        check_state_dict,
        checkpoint_filter_fn,
        describe_mismatch,
        model_name,
    )

    model = _seven_linears(architecture="seven", classifier="6", first_conv="0")
    fits = model.state_dict()
    sd = {k: v for k, v in fits.items() if k[0] not in "012"}
    sd.update({"extra.b": torch.ones(1), "extra.a": torch.ones(1)})
    sd.update({f"{i}.weight": torch.ones(3, 2) for i in (3, 4)})
    sd.update({f"{i}.bias": torch.ones(3) for i in (3, 4)})
    parts = [
        "6 missing keys: 0.bias, 0.weight, 1.bias, 1.weight, 2.bias (+1 more)",
        "2 unexpected keys: extra.a, extra.b",
        "4 shape mismatches: 3.weight: checkpoint (3, 2) vs model (2, 2); 3.bias: checkpoint (3,) vs model (2,); "
        "4.weight: checkpoint (3, 2) vs model (2, 2) ...",
    ]
    assert describe_mismatch(sd, model) == parts
    with pytest.raises(CheckpointError) as e:
        check_state_dict(sd, model, "w.pth")
    assert str(e.value) == "w.pth: does not fit seven; " + "; ".join(parts)
    sd["2.weight"], sd["4.bias"] = fits["2.weight"], fits["4.bias"]  # five and three: named without "more"
    assert describe_mismatch(sd, model, adaptable={"extra.a"}) == [
        "5 missing keys: 0.bias, 0.weight, 1.bias, 1.weight, 2.bias",
        "1 unexpected keys: extra.b",
        "3 shape mismatches: 3.weight: checkpoint (3, 2) vs model (2, 2); 3.bias: checkpoint (3,) vs model (2,); "
        "4.weight: checkpoint (3, 2) vs model (2, 2)",
    ]
    differing = {"0.bias", "0.weight", "1.bias", "1.weight", "2.bias", "extra.a", "extra.b", "3.weight", "3.bias"}
    assert describe_mismatch(sd, model, adaptable=differing | {"4.weight"}) == []
    # what timm adapts (the classifier, the first conv) may be missing, extra or reshaped; nothing else may
    assert adaptable_keys(model, model.pretrained_cfg) == {"6.weight", "6.bias", "0.weight", "0.bias"}
    assert adaptable_keys(model, dict(classifier=("5", "6"), first_conv=None)) == {
        "5.weight",
        "5.bias",
        "6.weight",
        "6.bias",
    }
    assert adaptable_keys(model, {}) == set()
    new_head = {("module." + k): (torch.ones(5, 2) if k == "6.weight" else v) for k, v in fits.items()}
    new_head = {k: v for k, v in new_head.items() if k != "module.0.bias"}
    checked = checkpoint_filter_fn(dict(state_dict=new_head, epoch=3), model, "ckpt.pth")
    assert sorted(checked) == sorted(k for k in fits if k != "0.bias") and checked["6.weight"].shape == (5, 2)
    assert describe_mismatch(fits, model) == [] and check_state_dict(fits, model, "w.pth") is None
    with pytest.raises(CheckpointError, match=r"^ckpt.pth: does not fit seven; 1 missing keys: 3.bias$"):
        checkpoint_filter_fn({k: v for k, v in fits.items() if k != "3.bias"}, model, "ckpt.pth")
    assert model_name(model) == "seven" and model_name(_seven_linears()) == "Sequential"
    assert model_name(_seven_linears(classifier="6")) == "Sequential"


def test_weight_files_are_read_or_refused_with_the_reason(tmp_path):
    import datetime

    from safetensors.torch import save_file

    from inceptionnext.weights import load_error_reason, read_weight_file, save_state_dict

    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    with pytest.raises(FileNotFoundError) as e:
        read_weight_file(tmp_path / "none.pth")
    assert str(e.value) == f"weight file not found: {tmp_path / 'none.pth'}"
    with pytest.raises(CheckpointError) as e:
        read_weight_file(tmp_path)
    assert str(e.value) == f"{tmp_path}: is not a file"
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        read_weight_file(tmp_path / "empty.pth")
    assert (
        str(e.value)
        == f"{tmp_path / 'empty.pth'}: is empty (0 bytes); an interrupted download or copy? Fetch or save it again"
    )
    save_file(sd, str(tmp_path / "renamed.pth"), metadata={"note": "x"})  # safetensors under a torch name
    obj, metadata = read_weight_file(tmp_path / "renamed.pth")
    assert torch.equal(obj["w"], sd["w"]) and metadata == {"note": "x"}
    sealed = save_state_dict(sd, tmp_path / "sealed.safetensors")
    assert sealed == tmp_path / "sealed.safetensors" and read_weight_file(sealed)[1]  # sealed: a checksum entry
    assert save_state_dict(sd, tmp_path / "plain.pth") == tmp_path / "plain.pth"
    assert read_weight_file(tmp_path / "plain.pth")[1] == {}  # torch files carry no metadata
    # 8 bytes and a "{": safetensors only when the header length it gives is below the file's size
    (tmp_path / "short.pth").write_bytes((10).to_bytes(8, "little") + b"{}")
    (tmp_path / "header.pth").write_bytes((9).to_bytes(8, "little") + b"{}")
    torch.save({"w": torch.ones(1), "when": datetime.date(2020, 1, 1)}, tmp_path / "pickled.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    advice = "is the file complete, and a PyTorch or safetensors weight file?"
    for name, reason in [
        ("short.pth", "it holds Python objects a weights-only load refuses (Unsupported operand 10)"),
        ("header.pth", "SafetensorError: Error while deserializing header"),
        ("text.pth", "it holds Python objects a weights-only load refuses (Unsupported operand 110)"),
        (
            "pickled.pth",
            "it holds Python objects a weights-only load refuses (Unsupported global: GLOBAL datetime.date",
        ),
    ]:
        with pytest.raises(CheckpointError) as e:
            read_weight_file(tmp_path / name)
        said = str(e.value)
        assert said.startswith(f"{tmp_path / name}: cannot be read as a checkpoint ({reason}"), said
        assert said.endswith(f"); {advice}") and "weights_only" not in said and "Please" not in said
    refusal = (
        "Weights only load failed. Re-running with `weights_only` set to False will likely succeed.\n"
        "\t(1) Do it only if you trust the source.\n"
        "\tWeightsUnpickler error: Unsupported global: GLOBAL os.system was not an allowed global. Please use "
        "`torch.serialization.add_safe_globals([os.system])`.\n\nCheck the documentation of torch.load."
    )
    assert load_error_reason(RuntimeError(refusal)) == (
        "it holds Python objects a weights-only load refuses (Unsupported global: GLOBAL os.system was not an "
        "allowed global); files are never unpickled here"
    )
    refusal = "Weights only load failed.\nDo it only if you Trust the source.\nUnsupported global: GLOBAL a.B"
    assert load_error_reason(RuntimeError(refusal)) == (
        "it holds Python objects a weights-only load refuses (Unsupported global: GLOBAL a.B); files are never "
        "unpickled here"
    )
    said = load_error_reason(RuntimeError("Weights only load failed.\nUnsupported global: GLOBAL " + "m" * 400))
    whole = "it holds Python objects a weights-only load refuses (Unsupported global: GLOBAL " + "m" * 400
    assert said == whole[:300] + "..."  # one line of at most 300 characters
    assert load_error_reason(RuntimeError("Weights only load failed.\n\t(1) trust it")) == (
        "it holds Python objects a weights-only load refuses (objects other than tensors); files are never "
        "unpickled here"
    )
    assert load_error_reason(EOFError()) == "the file ends too early (empty or cut short)"
    assert load_error_reason(IndexError()) == "the file ends too early (empty or cut short)"
    assert load_error_reason(IndexError("list index out of range")) == "IndexError: list index out of range"
    assert load_error_reason(ValueError("")) == "ValueError"
    assert load_error_reason(ValueError("\x1b[31m  bad header\x1b[0m\nsecond line")) == "ValueError: bad header"
    assert load_error_reason(ValueError("x" * 400)) == "ValueError: " + "x" * 288 + "..."


def test_weight_sources_hashes_and_ways_out_are_named(tmp_path, monkeypatch):
    import hashlib

    from inceptionnext import weights

    monkeypatch.setitem(weights.KNOWN_SHA256, "https://host/pinned.pth", "ab" * 32)
    assert weights.expected_sha256("https://host/pinned.pth") == "ab" * 32
    assert weights.expected_sha256("https://host/m-0123abcd.pth?download=1") == "0123abcd"
    assert weights.expected_sha256("https://host/m-0123abcd.safetensors") == "0123abcd"
    for unpinned in (
        "https://host/m-0123abc.pth",
        "https://host/m-0123ABCD.pth",
        "https://host/m.pth",
        "m-0123abcd.txt",
    ):
        assert weights.expected_sha256(unpinned) is None, unpinned
    assert weights.hub_key("timm/x", "model.safetensors") == "hf-hub:timm/x/model.safetensors"
    data = os.urandom(2**21 + 5)  # three chunks
    (tmp_path / "big").write_bytes(data)
    assert weights.sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()

    lines = weights.ways_out("net", dict(hf_hub_id="someone/net.v1@rev2"), tmp_path / "hf")
    assert lines == [
        "a weight file you have: timm.create_model('net', pretrained=True, pretrained_cfg_overlay=dict(file=PATH))"
        " (CLI: --weights PATH)",
        f"a Hugging Face cache from a machine that has it: copy it to {tmp_path / 'hf'} (or point HF_HOME at it) "
        "and set HF_HUB_OFFLINE=1",
        "fetch it on a machine with access: hf download someone/net.v1 --local-dir net.v1 (then PATH above is that "
        "folder)",
    ]
    assert weights.ways_out("net", dict(url="https://host/a.pth", hf_hub_id=None))[1:] == [
        "fetch it on a machine with access: curl -LO https://host/a.pth (then PATH above is that file)"
    ]
    assert len(weights.ways_out("net", {})) == 1

    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    assert weights._proxy_note("file:///x.pth") == ""
    assert weights._proxy_note("https://host/a.pth") == "no proxy set (HTTP_PROXY/HTTPS_PROXY)"
    monkeypatch.setenv("ALL_PROXY", "http://every:1")
    assert weights._proxy_note("https://host/a.pth") == "through the proxy http://every:1"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert weights._proxy_note("https://host/a.pth") == "through the proxy http://proxy:3128"
    assert weights._proxy_note("http://host/a.pth") == "through the proxy http://every:1"
    monkeypatch.setenv("NO_PROXY", "host")
    assert weights._proxy_note("https://host/a.pth") == "NO_PROXY bypasses the proxy for it"

    try:
        try:
            raise ConnectionError("refused\nat port 1")
        except ConnectionError as inner:
            raise OSError("x" * 250) from inner
    except OSError as e:
        assert weights._root_cause(e) == "OSError: " + "x" * 200 + " (ConnectionError: refused)"
    try:
        try:
            raise ConnectionError("y" * 250)
        except ConnectionError as inner:
            raise OSError("failed") from inner
    except OSError as e:
        assert weights._root_cause(e) == "OSError: failed (ConnectionError: " + "y" * 200 + ")"
    try:
        try:
            raise TimeoutError("slow")
        except TimeoutError:
            raise RuntimeError("fetch failed")  # noqa: B904 - an implicit context, as urllib's
    except RuntimeError as e:
        assert weights._root_cause(e) == "RuntimeError: fetch failed (TimeoutError: slow)"
    try:
        try:
            raise TimeoutError("slow")
        except TimeoutError:
            raise RuntimeError("fetch failed") from None
    except RuntimeError as e:
        assert weights._root_cause(e) == "RuntimeError: fetch failed"


def test_where_pretrained_weights_come_from_and_why_none_could_be_read(tmp_path):
    from safetensors.torch import save_file

    from inceptionnext import weights

    sd = {"w": torch.ones(2)}
    folder = tmp_path / "shared"
    folder.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        weights.hub_folder_weights(folder)
    assert str(e.value) == (
        f"{folder}: a model folder without weights (expected one of model.safetensors, pytorch_model.bin, "
        "pytorch_model.pth, model.pth)"
    )
    for name in ("model.pth", "pytorch_model.pth", "pytorch_model.bin"):
        torch.save(sd, folder / name)
        assert weights.hub_folder_weights(folder) == folder / name  # the most preferred one present
    save_file(sd, str(folder / "model.safetensors"))
    assert weights.hub_folder_weights(str(folder)) == folder / "model.safetensors"

    got, where = weights.load_pretrained_state_dict(dict(state_dict={"module.w": sd["w"]}, file=str(folder)))
    assert where == "state_dict" and list(got) == ["w"]
    got, where = weights.load_pretrained_state_dict(dict(file=str(folder), url="https://unused.invalid/a.pth"))
    assert where == str(folder / "model.safetensors") and torch.equal(got["w"], sd["w"])
    got, where = weights.load_pretrained_state_dict(dict(file=str(folder / "model.pth")))
    assert where == str(folder / "model.pth")
    with pytest.raises(CheckpointError) as e:
        weights.load_pretrained_state_dict(dict(url=None, hf_hub_id=None))
    assert str(e.value) == "model: no pretrained weights are known for this name; use pretrained=False"
    with pytest.raises(CheckpointError) as e:
        weights.load_pretrained_state_dict(dict(architecture="net", state_dict=[1]))
    assert str(e.value) == "net (state_dict override): holds a list, not a state dict or training checkpoint"
    url = (tmp_path / "gone.pth").as_uri()
    cfg = dict(architecture="net", url=url)
    with pytest.raises(CheckpointError) as e:
        weights.load_pretrained_state_dict(cfg, tmp_path / "cache")
    lines = str(e.value).splitlines()
    assert lines[0] == "net: no pretrained weights could be loaded:"
    assert lines[1].startswith(f"  {url}: URLError: ") and lines[1].endswith(
        f"not in the torch hub cache {tmp_path / 'cache'}"
    )
    assert lines[2:] == ["ways out:"] + ["  " + w for w in weights.ways_out("net", cfg, tmp_path / "cache")]
    torch.save([1, 2], tmp_path / "list.pth")  # downloads, then is no state dict
    with pytest.raises(CheckpointError) as e:
        weights.load_pretrained_state_dict(dict(url=(tmp_path / "list.pth").as_uri()), tmp_path / "cache")
    assert (
        str(e.value).splitlines()[1]
        == f"  {tmp_path / 'cache' / 'list.pth'}: holds a list, not a state dict or training checkpoint"
    )


def test_release_downloads_are_cached_once_and_checked_against_their_hash(tmp_path, monkeypatch):
    from inceptionnext import weights

    torch.save({"w": torch.ones(2)}, tmp_path / "a.pth")
    digest = weights.sha256_file(tmp_path / "a.pth")
    named = tmp_path / f"net-{digest[:10]}.pth"
    named.write_bytes((tmp_path / "a.pth").read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = weights.download_cached(named.as_uri(), progress=False)  # the torch hub cache by default
    assert cached == tmp_path / "hub" / "checkpoints" / named.name and cached.read_bytes() == named.read_bytes()
    cached.write_bytes(b"damaged")
    with pytest.raises(CheckpointError) as e:
        weights.download_cached(named.as_uri(), progress=False)
    got = weights.sha256_file(cached)
    assert str(e.value) == (
        f"{cached}: sha256 {got[:16]}... is not the {digest[:10]}... published for it (the cached copy of "
        f"{named.as_uri()}; delete it to download it again); the file is damaged or not the official one and is "
        "not loaded"
    )
    assert cached.exists()  # a cached copy is the user's to delete
    wrong = tmp_path / "net-00000000.pth"
    wrong.write_bytes((tmp_path / "a.pth").read_bytes())
    with pytest.raises(CheckpointError) as e:
        weights.download_cached(wrong.as_uri(), tmp_path / "c", progress=False)
    assert str(e.value) == (
        f"{wrong.as_uri()}: downloaded file's sha256 does not match the expected 00000000...; the download is "
        "corrupt or the file changed (nothing was cached)"
    )
    assert not (tmp_path / "c" / wrong.name).exists()
    monkeypatch.setitem(weights.KNOWN_SHA256, (tmp_path / "a.pth").as_uri(), digest.upper())
    assert weights.download_cached((tmp_path / "a.pth").as_uri(), tmp_path / "c", progress=False).is_file()
    plain = tmp_path / "plain.pth"
    plain.write_bytes((tmp_path / "a.pth").read_bytes())
    for _ in range(2):  # downloaded, then from the cache: each time with the warning naming its sha256
        with pytest.warns(weights.UnpinnedWeightsWarning) as w:
            weights.download_cached(plain.as_uri(), tmp_path / "c", progress=False)
        assert str(w[0].message) == (
            f"{tmp_path / 'c' / 'plain.pth'}: no published sha256 to check it against ({plain.as_uri()} has none "
            f"pinned), so it is loaded unchecked; its sha256 is {digest}. Compare it with the publisher's, or load "
            "timm's hub copy, which is checked against the sha256 the hub names it by"
        )
    calls = []

    def downloader(url, dst, hash_prefix=None, progress=True):
        calls.append((url, progress, hash_prefix))
        if "flaky" in url:
            raise RuntimeError("connection reset by peer")
        open(dst, "wb").write(b"abc")

    monkeypatch.setattr(torch.hub, "download_url_to_file", downloader)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    with pytest.warns(weights.UnpinnedWeightsWarning):
        got = weights.download_cached("https://host/x.pth?download=1", tmp_path / "d")
    assert got == tmp_path / "d" / "x.pth"  # named without the query
    with pytest.warns(weights.UnpinnedWeightsWarning):
        weights.download_cached("https://host/y.pth", tmp_path / "d", progress=False)
    assert calls == [("https://host/x.pth?download=1", True, None), ("https://host/y.pth", False, None)]
    monkeypatch.setitem(weights.KNOWN_SHA256, "https://host/flaky.pth", "ab" * 32)
    with pytest.raises(CheckpointError) as e:  # pinned, but the download itself failed: not a hash mismatch
        weights.download_cached("https://host/flaky.pth", tmp_path / "d")
    assert str(e.value) == (
        "https://host/flaky.pth (no proxy set (HTTP_PROXY/HTTPS_PROXY)): RuntimeError: connection reset by peer; "
        f"not in the torch hub cache {tmp_path / 'd'}"
    )
    monkeypatch.undo()
    monkeypatch.setitem(weights.KNOWN_SHA256, plain.as_uri(), "ab" * 32)
    with pytest.raises(CheckpointError) as e:  # a full pinned digest, shown by its first 16 digits
        weights.download_cached(plain.as_uri(), tmp_path / "e", progress=False)
    assert "does not match the expected abababababababab...; the download is corrupt" in str(e.value)
    fresh, old = tmp_path / "fresh.pth", tmp_path / "link"
    fresh.write_bytes(b"abc")
    old.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match=r"downloaded from hf-hub:x/y and removed again \(nothing was cached\)"):
        weights._check_sha256(fresh, "f" * 64, "hf-hub:x/y", fresh=True, removable=[old, tmp_path / "never"])
    assert not fresh.exists() and not old.exists()


def _hub_repo(cache, repo_id, files, revision="main"):
    """A Hugging Face cache holding `files` ((name, bytes, blob name), as huggingface_hub lays them out) of
    `repo_id` at `revision`."""
    commit = "c" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data, blob in files:
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(repo / "blobs" / blob, repo / "snapshots" / commit / name)
    return repo / "blobs"


def test_hub_copies_are_read_from_the_cache_checked_against_their_sha256(tmp_path, monkeypatch):
    import hashlib

    import huggingface_hub
    import huggingface_hub.constants
    from safetensors.torch import save as save_bytes

    from inceptionnext import weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hf"
    data = save_bytes({"module.w": torch.ones(2)})
    digest = hashlib.sha256(data).hexdigest()
    _hub_repo(cache, "me/net", [("model.safetensors", data, digest)])
    assert list(weights.load_state_dict_from_hub("me/net", cache)) == ["w"]
    blobs = _hub_repo(cache, "me/bad", [("model.safetensors", data, "e" * 64)])  # not the sha256 it is named by
    with pytest.raises(CheckpointError) as e:
        weights.load_state_dict_from_hub("me/bad", cache)
    assert str(e.value) == (
        f"{blobs / ('e' * 64)}: sha256 {digest[:16]}... is not the {'e' * 16}... published for it (the cached copy "
        "of hf-hub:me/bad/model.safetensors; delete it to download it again); the file is damaged or not the "
        "official one and is not loaded"
    )
    torch_file = tmp_path / "w.bin"
    torch.save({"w": torch.zeros(3)}, torch_file)
    _hub_repo(cache, "me/old", [("pytorch_model.bin", torch_file.read_bytes(), "old-blob")])
    assert weights.load_state_dict_from_hub("me/old", cache)["w"].shape == (3,)  # timm's second file name
    pinned = weights.hub_key("me/net", "model.safetensors")
    monkeypatch.setitem(weights.KNOWN_SHA256, pinned, "0" * 64)
    with pytest.raises(CheckpointError, match=r"is not the 0000000000000000\.\.\. published for it"):
        weights.download_hub_file("me/net", cache)
    with pytest.raises(CheckpointError, match=r"is not the 0000000000000000\.\.\. published for it"):
        weights.download_hub_file("me/net@main", cache)
    _hub_repo(cache, "me/tagged", [("model.safetensors", data, digest)], revision="v2")
    monkeypatch.setitem(weights.KNOWN_SHA256, weights.hub_key("me/tagged", "model.safetensors"), "0" * 64)
    assert weights.download_hub_file("me/tagged@v2", cache).name == "model.safetensors"  # pins are for main
    with pytest.raises(CheckpointError) as e:
        weights.load_state_dict_from_hub("me/none", cache)
    said = str(e.value)
    assert said.startswith(
        "hf-hub:me/none (HF_HUB_OFFLINE is set, so only the cache was looked in): LocalEntryNotFoundError: "
    )
    assert said.endswith(f"; not in the Hugging Face cache {cache}") and "token" not in said
    assert weights.hub_cache(cache) == cache and weights.hub_cache() == Path(huggingface_hub.constants.HF_HUB_CACHE)
    torch.save([1, 2], tmp_path / "list.bin")
    _hub_repo(cache, "me/list", [("pytorch_model.bin", (tmp_path / "list.bin").read_bytes(), "list-blob")])
    with pytest.raises(CheckpointError) as e:
        weights.load_state_dict_from_hub("me/list", cache)
    assert str(e.value) == "hf-hub:me/list: holds a list, not a state dict or training checkpoint"


def test_a_fresh_hub_download_that_fails_its_sha256_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    import huggingface_hub

    from inceptionnext import weights

    cache = tmp_path / "hf"
    blobs = _hub_repo(cache, "me/net", [])
    link = blobs.parent / "snapshots" / ("c" * 40) / "model.safetensors"

    def download(repo_id, filename, revision=None, cache_dir=None):  # what huggingface_hub leaves in its cache
        (blobs / ("e" * 64)).write_bytes(b"not what the hub names it by")
        os.symlink(blobs / ("e" * 64), link)
        return str(link)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(CheckpointError, match=r"downloaded from hf-hub:me/net/model.safetensors and removed again"):
        weights.download_hub_file("me/net", cache)
    assert not (blobs / ("e" * 64)).exists() and not os.path.lexists(link)


def test_a_hub_that_cannot_be_reached_is_asked_once_and_named(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants
    import requests
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from huggingface_hub.utils import LocalEntryNotFoundError

    from inceptionnext import weights

    asked = []

    def unreachable(repo_id, filename, **kwargs):
        asked.append(filename)
        raise LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://mirror.invalid")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.invalid")
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    with pytest.raises(CheckpointError) as e:
        weights.load_state_dict_from_hub("me/net", tmp_path)
    assert asked == ["model.safetensors"]  # the next file name would only wait on the same hub again
    assert str(e.value) == (
        "hf-hub:me/net (from https://mirror.invalid (HF_ENDPOINT), no proxy set (HTTP_PROXY/HTTPS_PROXY)): "
        f"LocalEntryNotFoundError: cannot reach the hub; not in the Hugging Face cache {tmp_path}"
    )

    def gated(repo_id, filename, **kwargs):
        raise OSError("401 Client Error: access to this repository is restricted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    monkeypatch.delenv("HF_ENDPOINT")
    for error in (GatedRepoError, RepositoryNotFoundError):

        def refused(repo_id, filename, error=error, **kwargs):
            response = requests.Response()
            response.status_code = 403
            raise error("no access", response=response)

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
        with pytest.raises(CheckpointError) as e:
            weights.load_state_dict_from_hub("me/private", tmp_path)
        assert str(e.value).endswith("; a private or gated repository needs a token (HF_TOKEN, or `hf auth login`)")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(CheckpointError) as e:
        weights.load_state_dict_from_hub("me/private", tmp_path)
    assert str(e.value) == (
        "hf-hub:me/private (from https://mirror.invalid, no proxy set (HTTP_PROXY/HTTPS_PROXY)): OSError: 401 Client "
        f"Error: access to this repository is restricted; not in the Hugging Face cache {tmp_path}; a private or "
        "gated repository needs a token (HF_TOKEN, or `hf auth login`)"
    )


def test_zip_records_are_bounded_by_the_file_size_and_weights_are_saved_sealed(tmp_path):
    import zipfile

    from inceptionnext.weights import check_zip_sizes, convert_checkpoint, load_state_dict_file, save_state_dict

    def zip_of(name, declared_mib):
        with zipfile.ZipFile(tmp_path / name, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("a/data/0", bytes(declared_mib * 2**20))
        return tmp_path / name

    bomb = zip_of("bomb.pth", 24)
    size = bomb.stat().st_size
    with pytest.raises(CheckpointError) as e:
        check_zip_sizes(bomb)
    assert str(e.value) == (
        f"{bomb}: its records declare 24 MiB of data in a {size / 2**20:.1f} MiB file (compressed records expanding "
        f"{24 * 2**20 / size:.0f}x); torch never writes such files, refused before reading"
    )
    assert check_zip_sizes(zip_of("small.pth", 1)) is None  # within 8 x its size + 1 MiB
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02not a zip")
    assert check_zip_sizes(tmp_path / "legacy.pth") is None  # left to torch.load to report

    sd = {"w": torch.arange(6.0).reshape(3, 2).t(), "b": torch.ones(2, requires_grad=True)}  # non-contiguous, grad
    for name in ("w.safetensors", "w.pth"):
        assert save_state_dict(sd, tmp_path / name) == tmp_path / name
        back = load_state_dict_file(tmp_path / name)
        assert torch.equal(back["w"], sd["w"]) and not back["b"].requires_grad
    torch.save(dict(state_dict={"module." + k: v.detach() for k, v in sd.items()}, epoch=3), tmp_path / "ckpt.pth")
    assert convert_checkpoint(tmp_path / "ckpt.pth", tmp_path / "plain.safetensors") == tmp_path / "plain.safetensors"
    assert sorted(load_state_dict_file(tmp_path / "plain.safetensors")) == ["b", "w"]


@pytest.mark.parametrize(
    "content,message",
    [
        ({"w": "text"}, "entry 'w' is a str, not a tensor; expected a state dict or a training checkpoint with one "
         "of ('state_dict_ema', 'model_ema', 'state_dict', 'model')"),
        ({}, "holds no tensors"),
        ({"state_dict": {}, "epoch": 1}, "holds no tensors"),
        ({"model": {"_orig_mod.w": 3}}, "entry '_orig_mod.w' is a int, not a tensor; expected a state dict or a "
         "training checkpoint with one of ('state_dict_ema', 'model_ema', 'state_dict', 'model')"),
    ],
)  # fmt: skip
def test_what_is_no_state_dict_is_refused_in_full(content, message):
    from inceptionnext.weights import unwrap_state_dict

    with pytest.raises(CheckpointError) as e:
        unwrap_state_dict(content, "w.pth")
    assert str(e.value) == "w.pth: " + message


def test_zip_bound_and_file_checks_at_their_edges(tmp_path):
    import zipfile

    from safetensors.torch import save_file

    from inceptionnext.checksum import ChecksumError
    from inceptionnext.weights import check_zip_sizes, read_weight_file, save_state_dict

    def zip_of(name, zeros, noise=0):
        with zipfile.ZipFile(tmp_path / name, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("a/data/0", bytes(zeros))
            if noise:
                zf.writestr("a/data/1", np.random.RandomState(0).bytes(noise))
        return tmp_path / name

    zeros = 2**20
    while zeros != 8 * zip_of("edge.pth", zeros).stat().st_size + 2**20:  # declared exactly at the bound
        zeros = 8 * zip_of("edge.pth", zeros).stat().st_size + 2**20
    assert check_zip_sizes(zip_of("edge.pth", zeros)) is None
    with pytest.raises(CheckpointError, match=r"records declare 1 MiB of data in a 0\.0 MiB file"):
        check_zip_sizes(zip_of("over.pth", zeros + 3 * 2**17))  # an eighth of a MiB per byte of file: over it
    noisy = zip_of("noisy.pth", 30 * 2**20, noise=3 * 2**19)  # 1.5 MiB that does not compress
    with pytest.raises(CheckpointError, match=r"records declare 32 MiB of data in a 1\.5 MiB file"):
        check_zip_sizes(noisy)

    save_file({"w": torch.ones(4)}, str(tmp_path / "cut.safetensors"))
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:20])  # cut inside its header: read as safetensors by its name
    with pytest.raises(CheckpointError, match=r"cut.safetensors: cannot be read as a checkpoint \(SafetensorError"):
        read_weight_file(tmp_path / "cut.safetensors")
    sealed = save_state_dict({"w": torch.ones(4)}, tmp_path / "sealed.safetensors")
    data = bytearray(sealed.read_bytes())
    data[-4:] = bytes(4)  # one weight changed, the checksum in the metadata kept
    sealed.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=re.escape(str(sealed))):
        read_weight_file(sealed)


def test_pretrained_sources_in_order_with_every_failure_listed(tmp_path, monkeypatch):
    import hashlib

    import huggingface_hub.constants
    from safetensors.torch import save as save_bytes

    from inceptionnext import weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    data = save_bytes({"w": torch.ones(2)})
    _hub_repo(tmp_path / "hf", "me/net", [("model.safetensors", data, hashlib.sha256(data).hexdigest())])
    torch.save({"w": torch.zeros(2)}, tmp_path / "release.pth")
    url = (tmp_path / "release.pth").as_uri()
    got, where = weights.load_pretrained_state_dict(dict(hf_hub_id="me/net", url=url), tmp_path / "hf")
    assert where == "hf-hub:me/net" and torch.equal(got["w"], torch.ones(2))  # the hub copy first
    with pytest.warns(weights.UnpinnedWeightsWarning):
        got, where = weights.load_pretrained_state_dict(dict(hf_hub_id="me/gone", url=url), tmp_path / "hf")
    assert where == url and torch.equal(got["w"], torch.zeros(2))  # then the release file
    cfg = dict(architecture="net", hf_hub_id="me/gone", url=(tmp_path / "gone.pth").as_uri())
    with pytest.raises(CheckpointError) as e:
        weights.load_pretrained_state_dict(cfg, tmp_path / "hf")
    lines = str(e.value).splitlines()
    assert lines[0] == "net: no pretrained weights could be loaded:"
    assert lines[1].startswith("  hf-hub:me/gone (HF_HUB_OFFLINE is set, so only the cache was looked in): ")
    assert lines[2].startswith(f"  {cfg['url']}: URLError: ")
    assert lines[3:] == ["ways out:"] + ["  " + w for w in weights.ways_out("net", cfg, tmp_path / "hf")]
    assert f"copy it to {tmp_path / 'hf'} " in lines[5]


def test_the_timm_filter_names_its_source_and_takes_any_model():
    from inceptionnext.weights import adaptable_keys, checkpoint_filter_fn

    model = _seven_linears()  # no pretrained_cfg: nothing is adaptable
    assert list(checkpoint_filter_fn(model.state_dict(), model)) == list(model.state_dict())
    with pytest.raises(CheckpointError, match=r"^checkpoint: holds a list, not a state dict"):
        checkpoint_filter_fn([1], model)
    with pytest.raises(
        CheckpointError, match=r"^checkpoint: does not fit Sequential; 2 missing keys: 6.bias, 6.weight$"
    ):
        checkpoint_filter_fn({k: v for k, v in model.state_dict().items() if k[0] != "6"}, model)
    assert adaptable_keys(model, dict(classifier="head.fc")) == {"head.fc.weight", "head.fc.bias"}


# models/metanext.py, models/zoo.py, model_file.py


def test_zoo_names_resolve_with_tags_and_unknown_ones_list_the_known():
    from inceptionnext.models.zoo import ZOO, get_entry

    assert get_entry("inceptionnext_tiny.sail_in1k") is get_entry("inceptionnext_t") is ZOO[1]
    assert get_entry("convnext_tiny_k3_par1_2.sail_in1k").arch["conv_ratio"] == 0.5
    with pytest.raises(KeyError) as err:
        get_entry("inceptionnext_q.sail_in1k")
    known = ", ".join(n for e in ZOO for n in e.names)
    assert err.value.args[0] == f"'inceptionnext_q.sail_in1k' is not an inceptionnext model; known: {known}"
    assert known.startswith("inceptionnext_a, inceptionnext_atto, inceptionnext_t, inceptionnext_tiny, ")


def test_zoo_paper_figures_by_name_alias_timm_name_or_reference_model():
    from inceptionnext.models.zoo import PAPER_REFERENCE, get_entry, paper_figures

    atto = get_entry("inceptionnext_a").paper
    assert atto["top1"] == 75.3
    for name in ("inceptionnext_a", "inceptionnext_atto.sail_in1k", "inception_next_atto", "inception_next_atto.x"):
        assert paper_figures(name) == atto, name
    assert paper_figures("convnext_tiny_k5")["top1"] == 82.0
    # timm's convnext_tiny is the paper's reference ConvNeXt, not one of the variants built after it
    assert (
        paper_figures("convnext_tiny.in12k") == PAPER_REFERENCE["convnext_tiny"]
        and PAPER_REFERENCE["convnext_tiny"]["top1"] == 82.1
    )
    assert paper_figures("resnet50.a1_in1k")["top1"] == 78.4
    assert paper_figures("resnet18") is None and paper_figures("inceptionnext") is None


def _metanext_and_timms_atto(**kwargs):
    """Our atto with the weights of timm's own (perturbed so every block weighs on the output), and timm's."""
    theirs = perturbed_timm_atto().eval()
    ours = timm.create_model(NAME, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def test_metanext_pruning_and_head_reset_follow_timms_inception_next():
    x = torch.randn(1, 3, 64, 64)
    pair = _metanext_and_timms_atto()
    with torch.no_grad():
        for kwargs in (
            {},
            dict(indices=(0, 1)),
            dict(indices=(0, 2), prune_head=False),
            dict(indices=(3,), prune_head=False),
        ):
            ours, theirs = copy.deepcopy(pair)
            assert ours.prune_intermediate_layers(**kwargs) == theirs.prune_intermediate_layers(**kwargs), kwargs
            assert len(ours.stages) == len(theirs.stages), kwargs
            assert (ours.num_features, ours.head_hidden_size, ours.num_classes) == (
                theirs.num_features,
                theirs.head_hidden_size,
                theirs.num_classes,
            ), kwargs
            torch.testing.assert_close(ours(x), theirs(x), msg=str(kwargs))
        ours, theirs = pair
        for model in (ours, theirs):
            model.reset_classifier(5, reset_other=True)  # pool -> classifier, the MLP dropped
        ours.head.fc2.load_state_dict(theirs.head.fc2.state_dict())
        assert ours.head_hidden_size == theirs.head_hidden_size == 320
        torch.testing.assert_close(ours(x), theirs(x))
        # a pruned model keeps its own pool (timm's resets it to 'avg'); a new pool is remembered for that
        pooled = timm.create_model(NAME, global_pool="max").eval()
        pooled.prune_intermediate_layers(indices=(0, 1))
        torch.testing.assert_close(pooled(x), pooled.forward_features(x).amax((2, 3)))
        pooled = timm.create_model(NAME).eval()
        pooled.reset_classifier(0, "max", reset_other=True)
        assert pooled.global_pool == "max"
        pooled.prune_intermediate_layers(indices=(0, 1))
        torch.testing.assert_close(pooled(x), pooled.forward_features(x).amax((2, 3)))
    # a new classifier on a head that pruning left without parameters still lands on the model's device
    meta = timm.create_model(NAME, device="meta")
    meta.prune_intermediate_layers(indices=(0, 1))
    meta.reset_classifier(4)
    assert meta.get_classifier().weight.device.type == "meta" and meta.get_classifier().weight.shape == (4, 80)


def test_metanext_checkpointing_is_off_by_default_and_recomputes_blocks_when_on():
    x = torch.randn(2, 3, 32, 32)
    calls = []
    for enable in (None, True, False):
        model = timm.create_model(NAME)
        if enable:
            model.set_grad_checkpointing()
        elif enable is False:
            model.set_grad_checkpointing()
            model.set_grad_checkpointing(False)
        count = []
        model.stages[1].blocks[0].register_forward_pre_hook(lambda *a: count.append(1))
        model(x).square().sum().backward()
        calls.append(len(count))
    assert calls == [1, 2, 1]  # each block runs again in backward only when asked


def test_metanext_stages_and_blocks_built_with_other_parts():
    from inceptionnext.models import MetaNeXt, MetaNeXtStage

    with pytest.raises(ValueError, match=r"^a stage without downsampling cannot change width \(8 -> 16\)$"):
        MetaNeXtStage(8, 16, 1, downsample=False)
    stage = MetaNeXtStage(8, 8, 2, downsample=False)  # no drop path rates given: none
    assert isinstance(stage.downsample, nn.Identity) and len(stage.blocks) == 2
    assert all(isinstance(b.drop_path, nn.Identity) for b in stage.blocks)
    # MetaNeXt takes any mixer built from the channel count (dilation= only in dilated stages), and the activation
    model = MetaNeXt(
        depths=(1, 1, 1, 1),
        dims=(8, 8, 16, 16),
        token_mixers=lambda dim: nn.Identity(),
        act_layer=nn.ReLU,
        num_classes=3,
    )
    assert all(isinstance(b.mlp.act, nn.ReLU) for s in model.stages for b in s.blocks)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_timms_reparameterize_model_folds_the_stem_and_downsamples():
    ours, _ = _metanext_and_timms_atto()
    folded = timm.utils.reparameterize_model(ours)  # calls every module's reparameterize() hook
    assert isinstance(folded.stem[1], nn.Identity) and isinstance(folded.stem[0], nn.Conv2d)
    assert all(isinstance(s.downsample[0], nn.Identity) for s in folded.stages[1:])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), ours(x), rtol=1e-4, atol=1e-5)


def test_model_file_describe_weights_names_the_entry_loaded_and_the_one_scored():
    from inceptionnext.model_file import ModelFile, describe_weights

    def entry(key, scored):
        return describe_weights(
            ModelFile("run/best.pth", "training checkpoint", {}, weights_key=key, scored_key=scored)
        )

    assert describe_weights(ModelFile("w.pth", "state dict", {})) == "w.pth (state dict)"
    assert entry("state_dict_ema", None) == "EMA weights (state_dict_ema) of run/best.pth"
    assert entry("state_dict", None) == "model weights (state_dict) of run/best.pth"
    assert (
        entry("model_ema", "model_ema") == "EMA weights (model_ema) of run/best.pth, the ones scored best in training"
    )
    assert (
        entry("state_dict", "state_dict_ema")
        == "model weights (state_dict) of run/best.pth, not the EMA weights scored best in training"
    )
    assert (
        entry("state_dict_ema", "state_dict")
        == "EMA weights (state_dict_ema) of run/best.pth, not the model weights scored best in training"
    )


def test_model_file_portable_cfg_keeps_what_describes_the_file_as_json():
    from inceptionnext.model_file import portable_cfg

    sources = dict(url="u", file="f", state_dict={}, hf_hub_id="h", hf_hub_filename="x", source="s", custom_load=True)
    cfg = dict(sources, input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), crop_pct=0.9, label_names=("a", "b"))
    out = portable_cfg(dict(fn=print, unset=None, **cfg, num_classes=1000), 2, in_chans=1)
    assert out == dict(
        input_size=[1, 224, 224], mean=[0.5, 0.5, 0.5], crop_pct=0.9, label_names=["a", "b"], num_classes=2
    )
    assert json.loads(json.dumps(out)) == out
    assert portable_cfg(None, 5) == {"num_classes": 5}
    assert portable_cfg(dict(input_size=(1, 32, 32)), 5)["input_size"] == [3, 32, 32]  # three channels by default


def test_model_file_unknown_names_suggest_close_ones_or_the_list():
    from inceptionnext.model_file import check_model_name

    assert check_model_name("inceptionnext_a") == "inceptionnext_a"
    with pytest.raises(ValueError, match=r"^unknown model 'inceptionnext_tt'; did you mean inceptionnext_t, .*\?$"):
        check_model_name("inceptionnext_tt")
    with pytest.raises(ValueError, match=r"^unknown model 'qqq'; `inceptionnext list` shows the names$"):
        check_model_name("qqq")


@pytest.fixture(scope="module")
def gray_atto():
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(1, 64, 64))  # small checks on read-back
    return model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_model_file_round_trip_rebuilds_the_model_and_refuses_what_does_not_match(tmp_path, gray_atto, suffix):
    from inceptionnext.model_file import load_model, read_model_file, save_model

    path = tmp_path / f"m{suffix}"
    assert save_model(gray_atto, path, label_names=["a", "b", "c"]) == path
    mf = read_model_file(path)
    assert (mf.kind, mf.model_name, mf.num_classes, mf.in_chans, mf.deploy, mf.weights_key) == (
        "model file",
        NAME,
        3,
        1,
        False,
        None,
    )
    assert mf.pretrained_cfg["label_names"] == ["a", "b", "c"] and mf.pretrained_cfg["input_size"] == [1, 64, 64]
    assert mf.pretrained_cfg["num_classes"] == 3
    if suffix == ".pth":  # the record's layout: what any later release must still read
        raw = torch.load(path, weights_only=True)
        assert (raw["format"], raw["version"], raw["model"], raw["in_chans"]) == ("inceptionnext.model", 1, NAME, 1)
    x = torch.randn(2, 1, 64, 64)
    for name in (None, "inceptionnext_atto", "inceptionnext_a.sail_in1k"):  # the short name, its alias, a tag
        model = load_model(path, name)
        assert not model.training and model.weights_note == f"{path} (model file)"
        assert model.pretrained_cfg["label_names"] == ["a", "b", "c"]  # a list, as timm keeps it
        assert model.pretrained_cfg["input_size"] == (1, 64, 64) and model.in_chans == 1
        with torch.no_grad():
            assert torch.equal(model(x), gray_atto(x))
    with pytest.raises(
        CheckpointError, match=f"^{re.escape(str(path))}: holds weights for {NAME}, not inceptionnext_t$"
    ):
        load_model(path, "inceptionnext_t")
    with pytest.raises(CheckpointError, match=r": its classifier has 3 classes, not num_classes=4$"):
        load_model(path, num_classes=4)
    with pytest.raises(CheckpointError, match=r": a converted model file holds one set of weights; drop use_ema$"):
        load_model(path, use_ema=True)


def test_model_file_save_refuses_what_it_cannot_record(tmp_path, gray_atto):
    from inceptionnext.model_file import save_model

    with pytest.raises(
        ValueError, match=r"m.onnx: unknown weight format '.onnx'; use one of .safetensors, .pth, .pt, .bin$"
    ):
        save_model(gray_atto, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="^2 label names for a model with 3 classes$"):
        save_model(gray_atto, tmp_path / "m.pth", label_names=["a", "b"])
    with pytest.raises(ValueError, match=f"^{NAME}: the model has no integer num_classes to record$"):
        save_model(nn.Conv2d(1, 1, 1), tmp_path / "m.pth", model_name=NAME)
    assert not list(tmp_path.iterdir())


def test_model_file_picks_the_weights_asked_for_and_names_what_is_missing(tmp_path, two_weight_sets):
    from inceptionnext.model_file import load_model, read_model_file

    model, ema = two_weight_sets
    sd, ema_sd = model.state_dict(), ema.module.state_dict()
    both, plain, only_ema, raw = (tmp_path / f"{n}.pth" for n in ("both", "plain", "only_ema", "raw"))
    torch.save(dict(state_dict=sd, state_dict_ema=ema_sd), both)
    torch.save(dict(state_dict=sd, epoch=3), plain)
    torch.save(dict(model_ema=ema_sd), only_ema)
    torch.save(sd, raw)
    torch.save(dict(model=sd, epoch=3), tmp_path / "model.pth")  # DeiT's and other tools' layout
    assert read_model_file(tmp_path / "model.pth").weights_key == "model"
    assert (read_model_file(both).weights_key, read_model_file(both).scored_key) == ("state_dict_ema", "state_dict_ema")
    assert read_model_file(both, use_ema=False).weights_key == "state_dict"
    assert read_model_file(both, use_ema=True).weights_key == "state_dict_ema"
    assert (read_model_file(plain).weights_key, read_model_file(plain).scored_key) == ("state_dict", None)
    assert read_model_file(raw).weights_key is None and read_model_file(raw, use_ema=False).kind == "state dict"
    with pytest.raises(CheckpointError, match=r"plain.pth: holds no EMA weights \(trained with ema: false\)$"):
        read_model_file(plain, use_ema=True)
    with pytest.raises(CheckpointError, match=r"only_ema.pth: holds only EMA weights; drop --no-ema$"):
        read_model_file(only_ema, use_ema=False)
    with pytest.raises(
        CheckpointError, match=r"raw.pth: holds no EMA weights \(no state_dict_ema or model_ema entry\)$"
    ):
        read_model_file(raw, use_ema=True)
    with pytest.raises(CheckpointError, match=r"raw.pth: a plain state dict does not say which model it is for; name"):
        load_model(raw)
    loaded = load_model(both, NAME, use_ema=False)
    assert loaded.weights_note == f"model weights (state_dict) of {both}, not the EMA weights scored best in training"
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())


def test_model_file_reads_a_training_checkpoints_record(tmp_path, two_weight_sets):
    from inceptionnext.model_file import load_model, read_model_file

    model, ema = two_weight_sets
    path = tmp_path / "last.pth"
    torch.save(
        dict(
            format="inceptionnext.train",
            state_dict=model.state_dict(),
            state_dict_ema=ema.module.state_dict(),
            scored_weights="state_dict",
            arch=NAME,
            num_classes=1000,
            data_config=dict(input_size=(3, 48, 48), crop_pct=1.0, classifier=None),  # as detection models' do
            class_to_idx={f"c{i:03d}": 999 - i for i in range(1000)},
        ),
        path,
    )
    mf = read_model_file(path)
    assert (mf.kind, mf.model_name, mf.num_classes, mf.deploy, mf.weights_key, mf.scored_key) == (
        "training checkpoint",
        NAME,
        1000,
        False,
        "state_dict",
        "state_dict",
    )
    assert mf.pretrained_cfg["label_names"][:2] == ["c999", "c998"]  # in class-index order
    assert read_model_file(path, use_ema=True).weights_key == "state_dict_ema"
    loaded = load_model(path)
    assert tuple(loaded.pretrained_cfg["input_size"]) == (3, 48, 48) and loaded.pretrained_cfg["crop_pct"] == 1.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert loaded.weights_note == f"model weights (state_dict) of {path}, the ones scored best in training"
    where = re.escape(str(path))
    torch.save(dict(format="inceptionnext.train", arch=NAME, state_dict=model.state_dict()), path)
    with pytest.raises(CheckpointError, match=rf"^{where}: holds no EMA weights \(trained with ema: false\)$"):
        read_model_file(path, use_ema=True)
    torch.save(dict(format="inceptionnext.train", arch=NAME, state_dict={"w": "text"}), path)
    with pytest.raises(CheckpointError, match=rf"^{where}: entry 'w' is a str, not a tensor"):
        read_model_file(path)
    torch.save(dict(format="inceptionnext.train", arch=NAME), path)
    with pytest.raises(CheckpointError, match=rf"^{where}: training checkpoint without weights$"):
        read_model_file(path)


def test_model_file_convert_folds_checks_the_copy_and_refuses_what_it_cannot_write(tmp_path, gray_atto):
    from inceptionnext.model_file import convert, load_model, save_hub_folder, save_model

    src = save_model(gray_atto, tmp_path / "src.pth")
    res = convert(src, tmp_path / "folded.safetensors", deploy=True)
    assert res.path == tmp_path / "folded.safetensors" and is_folded(res.model)
    assert 0 < res.max_abs_diff < 1e-4  # read back, the folded file is within fp32 rounding of the source
    assert _same_outputs(load_model(res.path), res.model)
    assert (
        convert(src, tmp_path / "same.pth").max_abs_diff == 0.0
        and convert(src, tmp_path / "u.pth", verify=False).max_abs_diff is None
    )
    for suffix in (".onnx", ".pt2", ".ts", ".torchscript"):  # graph formats: pointed to the command that writes them
        with pytest.raises(
            ValueError,
            match=rf"x{suffix}: unknown weight format '{suffix}'; .*; an ONNX, TorchScript or torch.export file is "
            "written by `inceptionnext export`$",
        ):
            convert(src, tmp_path / f"x{suffix}")
    # a bare state dict with the model named, the class count it must have, the weights asked for
    sd = gray_atto.state_dict()
    torch.save(
        dict(state_dict=sd, state_dict_ema={k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}),
        tmp_path / "two.pth",
    )
    plain = convert(tmp_path / "two.pth", tmp_path / "plain.pth", NAME, use_ema=False, num_classes=3)
    assert all(torch.equal(v, sd[k]) for k, v in plain.model.state_dict().items())
    with pytest.raises(CheckpointError, match=r"two.pth: its classifier has 3 classes, not num_classes=4$"):
        convert(tmp_path / "two.pth", tmp_path / "x.pth", NAME, num_classes=4)
    torch.save(timm.create_model("test_convnext").state_dict(), tmp_path / "convnext.pth")
    with pytest.raises(
        ValueError,
        match=r"^test_convnext: nothing to fold; deploy folds the BatchNorm and layer scale of InceptionNeXt "
        r"\(MetaNeXt\) blocks$",
    ):
        convert(tmp_path / "convnext.pth", tmp_path / "x.pth", "test_convnext", deploy=True)
    with pytest.raises(
        ValueError, match=r"x.txt: unknown weight format '.txt'; use one of .safetensors, .pth, .pt, .bin$"
    ):
        convert(src, tmp_path / "x.txt")
    with pytest.raises(
        ValueError, match=r"folded.safetensors: holds a folded model, which timm's hub format cannot rebuild"
    ):
        save_hub_folder(res.path, tmp_path / "hub")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"file: exists and is not a folder; the hub format is a folder$"):
        save_hub_folder(src, tmp_path / "file")
    model = save_hub_folder(src, tmp_path / "hub")
    assert (tmp_path / "hub" / "model.safetensors").is_file() and model.num_classes == 3


def _same_outputs(a, b):
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_metanext_builds_what_it_is_given_and_starts_from_timms_initialisation():
    from inceptionnext.models import MetaNeXt

    small = dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16))
    model = MetaNeXt(**small)
    assert (model.in_chans, model.num_classes, model.global_pool, model.drop_rate) == (3, 1000, "avg", 0.0)
    assert model.stem[0].in_channels == 3 and model.get_classifier().out_features == 1000
    with pytest.raises(ValueError, match=r"^depths \(1, 1\) and dims \(8, 8, 16\) must have the same length$"):
        MetaNeXt(depths=(1, 1), dims=(8, 8, 16))
    identity = lambda dim: nn.Identity()  # noqa: E731
    model = MetaNeXt(
        **small, token_mixers=[identity, InceptionDWConv2d, InceptionDWConv2d, identity], mlp_ratios=2, num_classes=3
    )
    assert [type(s.blocks[0].token_mixer) for s in model.stages] == [
        nn.Identity,
        InceptionDWConv2d,
        InceptionDWConv2d,
        nn.Identity,
    ]
    assert [s.blocks[0].mlp.fc1.out_channels for s in model.stages] == [16, 16, 32, 32]  # one ratio for every stage
    assert model.num_classes == 3
    # the norm reaches the stem, every downsample and every block; the head gets its pool, ratio and dropout
    model = MetaNeXt(
        **small,
        norm_layer=functools.partial(nn.BatchNorm2d, momentum=0.01),
        global_pool="max",
        head_mlp_ratio=2,
        drop_rate=0.2,
    )
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 1 + 3 + 4 and all(n.momentum == 0.01 for n in norms)
    assert model.head.global_pool.pool_type == "max" and model.head_hidden_size == 2 * 16
    assert model.head.drop.p == model.drop_rate == 0.2
    # timm's initialisation of InceptionNeXt: truncated normal weights (std 0.02), zero biases
    layers = [m for m in timm.create_model(NAME).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(m.bias is not None and not m.bias.any() for m in layers)
    assert all(0.015 < float(m.weight.detach().std()) < 0.025 for m in layers if m.weight.numel() >= 1000)


def test_zoo_create_zoo_model_called_directly_builds_without_weights():
    from inceptionnext.models import create_zoo_model

    # no weights unless asked for, and none of timm's create_model arguments needed
    model = create_zoo_model(NAME, pretrained_cfg_overlay=dict(file="/nonexistent.pth", url=None, hf_hub_id=None))
    assert model.pretrained_cfg["file"] == "/nonexistent.pth" and model.num_classes == 1000
    assert create_zoo_model("inceptionnext_atto", num_classes=3).get_classifier().out_features == 3


def test_zoo_features_only_defaults_to_every_stage_and_names_what_convnext_cannot_do():
    for name in ("inceptionnext_a", "convnext_tiny_k3_par1_2"):
        backbone = timm.create_model(name, features_only=True, device="meta")  # no out_indices: every stage
        assert backbone.feature_info.out_indices == (0, 1, 2, 3), name
        assert backbone.feature_info.reduction() == [4, 8, 16, 32], name
    with pytest.raises(ValueError) as err:
        timm.create_model("convnext_tiny_k3_par1_2", features_only=True, feature_cls="dict", device="meta")
    assert str(err.value) == (
        "convnext_tiny_k3_par1_2: feature_cls='dict' walks the model's top-level modules in order, which the "
        "official ConvNeXt layout (downsample_layers apart from stages) does not allow; use feature_cls='getter' "
        "(the default), 'hook' or 'fx'"
    )


def test_model_file_names_agree_with_a_record_only_for_the_same_architecture(tmp_path, gray_atto):
    from inceptionnext.model_file import load_model, save_model

    path = save_model(gray_atto, tmp_path / "atto.pth")
    for name in ("inception_next_atto", "inception_next_atto.sail_in1k"):  # timm's own, with our weights
        theirs = load_model(path, name)
        assert type(theirs).__module__.startswith("timm.") and _same_outputs(theirs, gray_atto)
        assert theirs.pretrained_cfg["architecture"] == "inception_next_atto"  # the model built, not the file's
    for name in ("inception_next_tiny", "test_convnext", "convnext_tiny_k3"):
        with pytest.raises(CheckpointError, match=f"holds weights for {NAME}, not {name}$"):
            load_model(path, name)
    other = save_model(timm.create_model("test_convnext", num_classes=2), tmp_path / "other.pth")
    assert load_model(other, "test_convnext.r160_in1k").num_classes == 2  # a pretrained tag names the same model
    with pytest.raises(ValueError, match="^unknown model 'Conv2d'; "):  # no name given or recorded: the class's
        save_model(nn.Conv2d(1, 1, 1), tmp_path / "conv.pth")
    resnet_sd = timm.create_model("test_resnet", num_classes=2).state_dict()
    torch.save(
        dict(format="inceptionnext.train", arch="test_resnet.r160_in1k", state_dict=resnet_sd), tmp_path / "r.pth"
    )
    assert load_model(tmp_path / "r.pth", "test_resnet").num_classes == 2  # a run named the model with its tag
    headless = timm.create_model(NAME, num_classes=0)  # no classifier weight to count classes from
    assert load_model(save_model(headless, tmp_path / "headless.pth")).num_classes == 0
    # a model without in_chans is recorded with three; a two-headed classifier is counted by its last head
    resnet = timm.create_model("test_resnet", num_classes=2)
    del resnet.in_chans
    assert load_model(save_model(resnet, tmp_path / "resnet.pth")).in_chans == 3
    deit = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=4, img_size=32)
    torch.save(deit.state_dict(), tmp_path / "deit.pth")
    assert load_model(tmp_path / "deit.pth", "deit_tiny_distilled_patch16_224", img_size=32).num_classes == 4


def test_model_file_checks_fail_loudly_and_keep_the_old_file(tmp_path, gray_atto, monkeypatch):
    import inceptionnext.model_file as model_file

    src = model_file.save_model(gray_atto, tmp_path / "src.pth")
    sd = gray_atto.state_dict()
    torch.save(
        dict(state_dict=sd, state_dict_ema={k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}),
        tmp_path / "two.pth",
    )
    hub = model_file.save_hub_folder(tmp_path / "two.pth", tmp_path / "hub", NAME, use_ema=False)
    assert all(torch.equal(v, sd[k]) for k, v in hub.state_dict().items())

    def perturbed(model, by=10.0):
        with torch.no_grad():
            model.get_classifier().bias.add_(by)
        return model

    create, load = timm.create_model, model_file.load_model

    def read_back_through_timm(name, **kwargs):  # the hub folder read back comes back different
        model = create(name, **kwargs)
        return perturbed(model) if name.startswith("local-dir:") else model

    def read_back(path, *args, **kwargs):  # the temporary file, read back before it replaces the target, too
        model = load(path, *args, **kwargs)
        return perturbed(model) if str(path).endswith(".tmp") else model

    monkeypatch.setattr(timm, "create_model", read_back_through_timm)
    with pytest.raises(CheckpointError, match="hub2: read back, it does not reproduce the model's outputs$"):
        model_file.save_hub_folder(src, tmp_path / "hub2")  # checked by default
    monkeypatch.undo()
    monkeypatch.setattr(model_file, "load_model", read_back)
    with pytest.raises(
        CheckpointError, match=r"out.pth: read back, it does not reproduce the converted model's outputs$"
    ):
        model_file.convert(src, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
    monkeypatch.undo()
    fold = model_file.reparameterize_model
    # off by 0.01: far beyond fp32 rounding, though within 1 (an absolute tolerance that loose would pass it)
    monkeypatch.setattr(model_file, "reparameterize_model", lambda m, **kw: perturbed(fold(m, **kw), by=0.01))
    with pytest.raises(CheckpointError, match=r"out.pth: the folded model differs from the source by 1\.00e-02$"):
        model_file.convert(src, tmp_path / "out.pth", deploy=True)
    assert not (tmp_path / "out.pth").exists()


def test_zoo_pretrained_models_keep_no_second_copy_of_their_weights(tmp_path):
    small = dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16))  # the weights of a small ConvNeXt variant
    name = "convnext_tiny_k3_par1_2"
    path = tmp_path / "small.pth"
    torch.save(timm.create_model(name, **small).state_dict(), path)
    overlay = dict(file=str(path))
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **small)
    backbone = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, features_only=True, **small)
    for m in (model, backbone, backbone.model):  # the feature wrapper and the model it wraps
        assert "state_dict" in m.pretrained_cfg and m.pretrained_cfg["state_dict"] is None


def test_model_file_record_limits_hold_at_their_bounds_and_name_what_is_damaged():
    from inceptionnext.model_file import RECORD_LIMITS, ModelFile, _check_record

    sd = {"stem.0.weight": torch.zeros(8, 3, 4, 4), "lin.weight": torch.zeros(4, 2)}

    def check(cfg=None, **fields):
        _check_record(ModelFile("f.pth", "model file", sd, **fields), dict(cfg or {}))

    classes, chans, size = (RECORD_LIMITS[k][1] for k in ("num_classes", "in_chans", "input_size"))
    check(num_classes=classes, in_chans=chans, pretrained_cfg=dict(input_size=[3, size, size], label_names=["a"]))
    with pytest.raises(CheckpointError, match=rf"^f.pth: its record asks for {classes + 1} classes; allowed: 0 to"):
        check(num_classes=classes + 1)
    with pytest.raises(CheckpointError, match=rf"^f.pth: its record asks for {chans + 1} input channels; allowed: 1"):
        check(in_chans=chans + 1)
    with pytest.raises(CheckpointError, match=r"^f.pth: its record's input_size .* is not \[C, H, W\]"):
        check(pretrained_cfg=dict(input_size=[3, size + 1, 8]))
    for names in (["a", 1], ["x" * 1001], "abc"):
        with pytest.raises(CheckpointError, match=r"^f.pth: its record's label_names are not a list of short strings$"):
            check(pretrained_cfg=dict(label_names=names))
    with pytest.raises(CheckpointError, match=r"^f.pth: its record's classifier or first_conv entry is damaged$"):
        check(dict(classifier=5))
    # the first conv counts input channels only when the config names a 4-D weight the file holds
    for first_conv in ("missing", "lin", ["stem.0"]):
        check(dict(first_conv=first_conv), in_chans=1)
    with pytest.raises(CheckpointError, match=r"^f.pth: its record says 1 input channels, its first conv has 3$"):
        check(dict(first_conv="stem.0"), in_chans=1)


def test_model_file_default_cfg_is_the_dense_models_own_or_timms():
    from inceptionnext.model_file import default_cfg

    assert default_cfg("upernet_inceptionnext_a")["classifier"] == "decode_head.cls.conv_seg"
    assert default_cfg(NAME)["classifier"] == "head.fc2" and default_cfg("no_such_model") == {}


def test_model_file_unknown_names_get_five_suggestions_at_most_the_closest_first():
    from inceptionnext.model_file import check_model_name
    from inceptionnext.models.dense import is_model

    with pytest.raises(ValueError) as err:
        check_model_name("inceptionnext_tt")
    close = re.fullmatch(r"unknown model 'inceptionnext_tt'; did you mean (.*)\?", str(err.value)).group(1).split(", ")
    assert len(close) == 5 and close[0] == "inceptionnext_t" and all(is_model(n) for n in close)
    with pytest.raises(ValueError, match=r"^unknown model 'fpn_inceptionnext_aa'; did you mean fpn_inceptionnext_a, "):
        check_model_name("fpn_inceptionnext_aa")  # the dense models are suggested too


def _resealed(path, change):
    """The .pth model file at `path` with its record changed by `change` and sealed again (a hand-edited file)."""
    raw = torch.load(path, weights_only=True)
    change(raw)
    raw.pop(checksum.KEY, None)
    torch.save(checksum.seal(raw), path)
    return path


def test_model_file_folded_weights_are_read_off_the_record_or_the_keys_and_deploy_forces_either(tmp_path, gray_atto):
    from inceptionnext.model_file import load_model, save_model

    folded = reparameterize_model(gray_atto)
    bare = tmp_path / "folded_sd.pth"
    torch.save(folded.state_dict(), bare)
    plain_file, folded_file = save_model(gray_atto, tmp_path / "plain.pth"), save_model(folded, tmp_path / "folded.pth")
    x = torch.randn(2, 1, 64, 64)
    for path, name in ((bare, NAME), (folded_file, None)):
        model = load_model(path, name)  # a bare state dict: folding is read off its keys
        assert is_folded(model) and (model.in_chans, model.num_classes) == (1, 3)
        with torch.no_grad():
            assert torch.equal(model(x), folded(x))
    # deploy forces the model's form: weights of the other form are refused, naming the file and the keys
    lying = _resealed(save_model(folded, tmp_path / "lying.pth"), lambda raw: raw.update(deploy=False))
    for path, name, deploy in (
        (bare, NAME, False),
        (plain_file, None, True),
        (lying, None, None),
    ):
        with pytest.raises(
            CheckpointError, match=rf"^{re.escape(str(path))}: does not fit {NAME}; \d+ (missing|unexpected) keys: "
        ):
            load_model(path, name, deploy=deploy)  # a record saying unfolded is believed, not second-guessed


def test_model_file_read_errors_name_the_file_and_the_fault(tmp_path, gray_atto):
    from inceptionnext.model_file import FORMAT, read_model_file

    path = tmp_path / "m.pth"
    where = re.escape(str(path))
    record = dict(format=FORMAT, version=1, model=NAME, num_classes=3, in_chans=1, deploy=False)
    sd = gray_atto.state_dict()
    torch.save(dict({k: v for k, v in record.items() if k != "num_classes"}, state_dict=sd), path)
    with pytest.raises(CheckpointError, match=rf"^{where}: its model record is damaged \(KeyError: 'num_classes'\)$"):
        read_model_file(path)
    torch.save(dict(record, num_classes="x" * 300, state_dict=sd), path)  # the reason, cut at 200 characters
    detail = ("invalid literal for int() with base 10: '" + "x" * 300)[:200] + "..."
    with pytest.raises(CheckpointError) as err:
        read_model_file(path)
    assert str(err.value) == f"{path}: its model record is damaged (ValueError: {detail})"
    bad_entry = f"{path}: entry 'w' is a str, not a tensor; expected a state dict or a training checkpoint"
    torch.save(dict(record, state_dict={"w": "text"}), path)  # a model file's weights
    with pytest.raises(CheckpointError) as err:
        read_model_file(path)
    assert bad_entry in str(err.value)
    torch.save({"w": "text"}, path)  # a bare state dict
    with pytest.raises(CheckpointError, match=f"^{re.escape(bad_entry)}"):
        read_model_file(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match=rf"^{where}: holds a list, not a state dict or training checkpoint$"):
        read_model_file(path)


def test_model_file_label_names_are_bounded_in_count_and_length():
    from inceptionnext.model_file import ModelFile, _check_record

    def check(names):
        _check_record(ModelFile("f.pth", "model file", {}, pretrained_cfg=dict(label_names=names)), {})

    most = 4096 * 1000  # far beyond the largest class count a record may ask for
    check(["x" * 1000])
    check(["a"] * most)
    for names in (["x" * 1001], ["a"] * (most + 1)):
        with pytest.raises(CheckpointError, match=r"^f.pth: its record's label_names are not a list of short strings$"):
            check(names)


def test_model_file_input_channels_come_from_the_record_or_the_first_conv(tmp_path, gray_atto):
    from inceptionnext.model_file import load_model, save_model
    from inceptionnext.models.dense import create_dense_model

    torch.save(gray_atto.state_dict(), tmp_path / "gray.pth")
    model = load_model(tmp_path / "gray.pth", NAME)  # no record: channels and classes read off the weights
    assert (model.in_chans, model.num_classes) == (1, 3) and _same_outputs(model, gray_atto)
    assert tuple(model.pretrained_cfg["input_size"]) == (1, 224, 224)  # the model's size, the file's channels
    torch.save(timm.create_model(NAME, num_classes=2, in_chans=224).state_dict(), tmp_path / "wide.pth")
    assert tuple(load_model(tmp_path / "wide.pth", NAME).pretrained_cfg["input_size"]) == (224, 224, 224)
    # a segmentation model takes its channels from load_model, not from the config's input size
    seg = create_dense_model("fpn_inceptionnext_a", num_classes=2, in_chans=1).eval()
    torch.save(seg.state_dict(), tmp_path / "seg.pth")
    x = torch.randn(1, 1, 32, 32)
    assert seg.get_classifier() is seg.decode_head.head.cls.conv_seg
    for path, name in (
        (save_model(seg, tmp_path / "seg.safetensors"), None),
        (tmp_path / "seg.pth", "fpn_inceptionnext_a"),
    ):
        model = load_model(path, name)
        assert (model.in_chans, model.num_classes) == (1, 2)
        assert tuple(model.pretrained_cfg["input_size"]) == (1, 512, 512)
        with torch.no_grad():
            assert torch.equal(model(x), seg(x))
    # a record's own config is what its weights are checked against
    named = _resealed(
        save_model(gray_atto, tmp_path / "named.pth"), lambda raw: raw["pretrained_cfg"].update(classifier="head.fc1")
    )
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(named))}: its record says 3 classes, its classifier has \d+$"
    ):
        load_model(named)


def test_zoo_pretrained_weights_of_a_local_dir_are_read_once(tmp_path, monkeypatch):
    """create_model reads a `local-dir:` folder's weights once, through the library's checked loader: timm's own
    loader must not read the folder a second time (a second read of a large file, and one outside the checks)."""
    from timm.models import save_for_hf

    from inceptionnext import weights

    torch.manual_seed(0)
    model = timm.create_model("inceptionnext_atto", num_classes=5).eval()
    folder = tmp_path / "shared"
    save_for_hf(model, str(folder), safe_serialization=True)
    read = weights.load_pretrained_state_dict
    reads = []

    def read_then_remove(*args, **kwargs):
        out = read(*args, **kwargs)
        reads.append(args)
        for f in folder.glob("*.safetensors"):  # once read, the folder's weights are no longer needed
            f.unlink()
        return out

    monkeypatch.setattr(weights, "load_pretrained_state_dict", read_then_remove)
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert len(reads) == 1 and loaded.num_classes == 5 and torch.equal(loaded(x), model(x))
