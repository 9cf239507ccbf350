"""Segmentation: the paper's models (params/MACs on meta), backbone weights from every format, mIoU, inference
modes, data errors, and short runs of the demo through the shared engine (progress, resume, DDP)."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

import inceptionnext  # noqa: F401
from inceptionnext.models.complexity import count_params_and_macs
from inceptionnext.models.dense import create_dense_model
from inceptionnext.models.segmentation import PAPER, PAPER_SIZE, SEG_ZOO, get_seg_spec
from inceptionnext.tasks.segmentation.data import MaskFolderDataset
from inceptionnext.tasks.segmentation.evaluate import confusion_matrix, iou_metrics, predict_logits, predict_probs
from inceptionnext.train import DataError, TrainConfig, TrainError, apply_overrides, fit
from inceptionnext.train.checkpoint import load_checkpoint_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("head,backbone", sorted(PAPER))
def test_params_and_macs_match_the_paper(head, backbone):
    name = f"{head}_{backbone}"
    h, w = PAPER_SIZE[head]
    params, macs = count_params_and_macs(name, (3, h, w))
    paper = PAPER[(head, backbone)]
    assert params / 1e6 == pytest.approx(paper["params"], rel=0.03)
    assert macs / 1e9 == pytest.approx(paper["macs"], rel=0.03)


def test_every_name_builds_and_gives_full_resolution_logits():
    assert len(SEG_ZOO) == 2 * 11 and {s.head for s in SEG_ZOO} == {"upernet", "fpn"}
    for spec in SEG_ZOO:
        with torch.device("meta"):
            model = create_dense_model(spec.name, num_classes=7).eval()
            out = model(torch.empty(2, 3, 96, 128))
        assert out.shape == (2, 7, 96, 128), spec.name
        model.train()
        with torch.device("meta"):
            out = model(torch.empty(2, 3, 64, 64))
        # UperNet trains with the auxiliary FCN head (stage 3), FPN without one
        assert isinstance(out, tuple) == (spec.head == "upernet"), spec.name


def _classifier_state(tmp_path):
    clf = timm.create_model("inceptionnext_a", num_classes=10).eval()
    sd = clf.state_dict()
    files = {
        "official .pth": tmp_path / "plain.pth",
        "safetensors": tmp_path / "w.safetensors",
        "training checkpoint": tmp_path / "ckpt.pth",
    }
    torch.save(sd, files["official .pth"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(files["safetensors"]))
    torch.save({"state_dict": sd, "epoch": 3, "arch": "inceptionnext_a"}, files["training checkpoint"])
    return sd, files


def test_backbone_weights_load_from_every_format(tmp_path):
    sd, files = _classifier_state(tmp_path)
    for what, path in files.items():
        seg = create_dense_model("fpn_inceptionnext_a", num_classes=5, backbone_weights=str(path))
        got = seg.backbone.state_dict()
        for k, v in got.items():
            assert torch.equal(v, sd[k]), (what, k)
        assert not any(k.startswith("head.fc") for k in got)  # the classifier's head is gone
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        create_dense_model("fpn_inceptionnext_a", backbone_weights=str(tmp_path / "missing.pth"))


def test_miou_against_a_hand_computed_case():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    metrics, per_class = iou_metrics(confusion_matrix(pred, truth, 4))
    # class 0: inter 1, union 3; class 1: inter 3, union 4; class 2: inter 1, union 2; class 3: absent (NaN)
    assert per_class[:3] == pytest.approx([100 / 3, 75.0, 50.0])
    assert np.isnan(per_class[3])
    assert metrics["miou"] == pytest.approx((100 / 3 + 75 + 50) / 3)
    assert metrics["acc"] == pytest.approx(100 * 5 / 7)  # the 255 pixel does not count
    # dataset-level sums, not a mean of per-image IoUs
    a = confusion_matrix(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), 2)
    b = confusion_matrix(torch.tensor([1]), torch.tensor([1]), 2)
    assert iou_metrics(a + b)[1] == pytest.approx([75.0, 50.0])


def test_sliding_window_equals_whole_where_they_must_agree():
    torch.manual_seed(0)
    pointwise = nn.Conv2d(3, 5, 1).eval()  # each pixel's logits depend on that pixel only
    x = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        whole = predict_logits(pointwise, x, 5)
        slide = predict_logits(pointwise, x, 5, mode="slide", crop=24, stride=16)
    torch.testing.assert_close(slide, whole)
    model = create_dense_model("fpn_inceptionnext_a", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # one window covering the image
        torch.testing.assert_close(predict_logits(model, x, 5, "slide", crop=64, stride=42), model(x))


def test_multi_scale_with_one_scale_is_plain_inference():
    model = create_dense_model("upernet_inceptionnext_a", num_classes=4, head_channels=32).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(predict_probs(model, x, 4, scales=(1.0,)), model(x).softmax(1))
        flipped = predict_probs(model, x, 4, scales=(0.5, 1.0), flip=True)
    assert flipped.shape == (2, 4, 64, 96) and torch.allclose(flipped.sum(1), torch.ones(2, 64, 96))


def _mask_folder(root, size=(24, 32), n=3, num_classes=3, splits=("train", "val")):
    rng = np.random.RandomState(0)
    for split in splits:
        os.makedirs(root / "images" / split, exist_ok=True)
        os.makedirs(root / "masks" / split, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 255, size + (3,), dtype=np.uint8)).save(root / "images" / split / f"{i}.jpg")
            Image.fromarray(rng.randint(0, num_classes, size).astype(np.uint8)).save(
                root / "masks" / split / f"{i}.png"
            )
    return root


def test_bad_inputs_name_their_problem(tmp_path):
    root = _mask_folder(tmp_path / "d")
    with pytest.raises(DataError, match=r"split 'test' has no images folder .*images/test"):
        MaskFolderDataset(str(root), "test", 3)
    ds = MaskFolderDataset(str(root), "train", 2)
    with pytest.raises(DataError, match=r"masks/train/0.png holds label 2, outside the 2 classes"):
        ds[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "val" / "1.png")
    with pytest.raises(DataError, match=r"mask .*val/1.png is 10x10 but its image .*val/1.jpg is 32x24"):
        MaskFolderDataset(str(root), "val", 3)[1]
    os.remove(root / "masks" / "val" / "2.png")
    with pytest.raises(DataError, match=r"val/2.jpg has no mask"):
        MaskFolderDataset(str(root), "val", 3)
    cfg = _demo_cfg(tmp_path, model="inceptionnext_a")
    with pytest.raises(TrainError, match="needs a segmentation model"):
        fit(cfg)
    with pytest.raises(TrainError, match=r"iters \(5\) must be a positive multiple of eval_interval \(2\)"):
        fit(_demo_cfg(tmp_path, iters=5, eval_interval=2))


def test_ade20k_layout_reduces_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        os.makedirs(root / "images" / split)
        os.makedirs(root / "annotations" / split)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / split / "a.jpg")
        Image.fromarray(np.array([[0, 1, 150, 2]] * 8, np.uint8).repeat(2, 1)).save(
            root / "annotations" / split / "a.png"
        )
    cfg = apply_overrides(TrainConfig(), dict(task="segmentation", dataset="ade20k", data_dir=str(root)), "test")
    from inceptionnext.tasks.segmentation.data import build_seg_datasets

    train, val, names = build_seg_datasets(cfg)
    assert len(names) == 150 and names[0] == "wall"
    assert sorted(np.unique(val.load(0)[1].numpy()).tolist()) == [0, 1, 149, 255]


def _demo_cfg(tmp_path, **kw):
    values = dict(
        task="segmentation",
        model="fpn_inceptionnext_a",
        head_channels=32,
        dataset="digit_scenes",
        img_size=48,
        crop_size=48,
        seg_scale=None,
        cat_max_ratio=1.0,
        hflip=0.0,
        photometric=0.0,
        device="cpu",
        workers=0,
        batch_size=8,
        lr=3e-3,
        weight_decay=0.01,
        sched="poly",
        decay_rate=1.0,
        min_lr=0.0,
        warmup_iters=2,
        iters=40,
        eval_interval=20,
        scene_counts=(320, 48),
        seed=0,
        output=str(tmp_path / "out"),
        experiment="seg",
        progress=False,
        plot=False,
        overlays=2,
    )
    values.update(kw)
    return apply_overrides(TrainConfig(), values, "test")


def test_short_demo_learns(tmp_path):
    """A shortened demo: the loss falls and the mIoU rises above the untrained model's (the full demo, the README
    command, is too long for the suite)."""
    from inceptionnext.train import Trainer
    from inceptionnext.train.distributed import DistEnv

    trainer = Trainer(_demo_cfg(tmp_path, plot=True), DistEnv())
    untrained = trainer.task.evaluate(trainer.model, trainer.val_loader)
    res = trainer.fit()
    first, last = res.history[0], res.history[-1]
    assert res.best_metric == "miou" and res.best_top1 is None
    assert last["train_loss"] < first["train_loss"] and last["val_loss"] < untrained["loss"]
    assert last["val_miou"] > untrained["miou"] + 2
    assert [r["iter"] for r in res.history] == [20, 40]
    assert os.path.isfile(os.path.join(res.out_dir, "val_overlays.png")) and os.path.isfile(res.plot_path)
    ckpt = load_checkpoint_file(res.best_checkpoint)
    assert ckpt["task"] == "segmentation" and list(ckpt["class_to_idx"])[:2] == ["background", "0"]
    # the checkpoint validates to the number the run logged
    from inceptionnext.tasks.segmentation.evaluate import run_seg_validation

    r = run_seg_validation("fpn_inceptionnext_a", res.best_checkpoint, workers=0, progress=False, device="cpu")
    assert r["miou"] == pytest.approx(res.best_value, abs=1e-6)
    # and `inceptionnext segment` writes an overlay and a class-index mask, with the run's class names
    from inceptionnext.cli import main
    from inceptionnext.tasks.segmentation.scenes import DigitScenes

    img, truth = DigitScenes("val", 48).scene(0)
    Image.fromarray(img).save(tmp_path / "scene.png")
    assert (
        main(
            [
                "segment",
                "fpn_inceptionnext_a",
                "--weights",
                res.best_checkpoint,
                str(tmp_path / "scene.png"),
                "-o",
                str(tmp_path / "seg"),
                "--json",
            ]
        )
        == 0
    )
    mask = np.asarray(Image.open(tmp_path / "seg" / "scene_mask.png"))
    assert mask.shape == truth.shape and mask.max() < 11
    width, height = Image.open(tmp_path / "seg" / "scene_overlay.png").size  # enlarged 10x, a legend below it
    assert width == 480 and height > 480
    assert main(["segment", "inceptionnext_a", str(tmp_path / "scene.png")]) == 1  # not a segmentation model
    # validate without a model name: the checkpoint's training config names it
    assert main(["validate", "--weights", res.best_checkpoint, "--workers", "0", "--no-progress"]) == 0


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    kw = dict(iters=6, eval_interval=2, scene_counts=(40, 8), overlays=0)
    full = fit(_demo_cfg(tmp_path, experiment="full", **kw))
    fit(_demo_cfg(tmp_path, experiment="cut", stop_after_epoch=2, **kw))
    cut_last = str(tmp_path / "out" / "cut" / "last.pth")
    assert load_checkpoint_file(cut_last)["epoch"] == 2
    resumed = fit(_demo_cfg(tmp_path, experiment="cut", resume=cut_last, **kw))
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert full.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]


def test_two_process_gloo_run_ends_in_sync(tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {REPO!r})
        from inceptionnext.train import fit, parse_config
        from inceptionnext.train.engine import state_digest
        import os
        res = fit(parse_config(sys.argv[1:]))
        print(f"DIGEST rank={{os.environ['RANK']}} {{state_digest(res.model)}}", flush=True)
    """)
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(launcher),
        "--config",
        os.path.join(REPO, "configs", "segmentation", "demo_fpn_inceptionnext_a.yaml"),
        "--img-size",
        "32",
        "--crop-size",
        "32",
        "--head-channels",
        "16",
        "--batch-size",
        "4",
        "--iters",
        "4",
        "--eval-interval",
        "2",
        "--set",
        "scene_counts=32,6",
        "--output",
        str(tmp_path / "out"),
        "--progress",
        "false",
        "--plot",
        "false",
        "--overlays",
        "0",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    digests = dict(re.findall(r"DIGEST (rank=\d) ([0-9a-f]{64})", p.stdout))
    assert set(digests) == {"rank=0", "rank=1"} and digests["rank=0"] == digests["rank=1"]
    assert "weights identical on all 2 ranks: yes" in p.stdout
    ckpt = load_checkpoint_file(str(tmp_path / "out" / "fpn_inceptionnext_a-digit_scenes" / "last.pth"))
    assert ckpt["history"][-1]["val_count"] == 6  # each val scene once over both ranks


def test_seg_spec_lookup():
    assert get_seg_spec("upernet_inceptionnext_t").backbone == "inceptionnext_t"
    with pytest.raises(KeyError, match="not a segmentation model"):
        get_seg_spec("upernet_resnet50")


@pytest.mark.parametrize("name,fmt", [("fpn_inceptionnext_a", "onnx"), ("upernet_inceptionnext_a", "torchscript")])
def test_export_through_the_library_exporter(tmp_path, name, fmt):
    from inceptionnext.deploy.export import export_model

    model = create_dense_model(name, num_classes=5, head_channels=32).eval()
    report = export_model(model, str(tmp_path / f"m.{fmt}"), fmt, input_size=(3, 64, 64), batch_size=2)
    assert report.max_abs_diff < 1e-4  # the exporter ran the file and compared it with PyTorch
