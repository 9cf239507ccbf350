"""Detection: builders on torchvision's detectors, frozen stages, backbone weights from every format, COCO data
checks, mAP against a hand-computed case, grouped batches, the demo data, training (progress, exact resume) on
the shared engine, and `inceptionnext detect`."""

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet

from inceptionnext.cli import main
from inceptionnext.models.detection import DETECTION_MODELS, create_detector, list_detectors
from inceptionnext.models.zoo import ZOO
from inceptionnext.tasks.detection.data import (
    AnnotationError,
    CocoDetectionSet,
    GroupedBatchSampler,
    aspect_ratio_groups,
    eval_transforms,
)
from inceptionnext.tasks.detection.evaluate import DetectionMAP
from inceptionnext.tasks.detection.scenes import DemoSpec, ensure_demo_data, split_paths
from inceptionnext.train import make_config, parse_config
from inceptionnext.train.checkpoint import load_checkpoint_file
from inceptionnext.train.engine import fit
from inceptionnext.train.logs import read_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet, "fcos": FCOS}
SMALL = dict(min_size=64, max_size=64, fpn_channels=32, anchor_sizes=(16, 32, 64, 128, 256))


# ------------------------------------------------------------------------------------------------ builders


def test_every_name_is_registered_and_every_backbone_builds_on_meta():
    assert len(DETECTION_MODELS) == len(CLASSES) * len(ZOO)
    assert "retinanet_inceptionnext_t_fpn" in list_detectors("retinanet_*")
    kinds = list(CLASSES)
    # every zoo backbone once (meta device: no memory, no real init), the detector kinds taking turns; every
    # kind also runs a real train and eval step below
    for i, entry in enumerate(ZOO):
        kind = kinds[i % len(kinds)]
        name = f"{kind}_{entry.name}_fpn"
        assert name in DETECTION_MODELS
        with torch.device("meta"):
            model = create_detector(name, 7, fpn_channels=64)
        assert type(model) is CLASSES[kind], name
        assert model.backbone.out_channels == 64
        # the R-CNNs take all four stages (strides 4-32) plus a max-pooled level, the one-stage detectors stages
        # 2-4 (strides 8-32) plus P6/P7; every name gets 5 levels, and labels 1..7 plus background
        feats = model.backbone(torch.empty(1, 3, 128, 128, device="meta"))
        assert [f.shape[-1] for f in feats.values()] == ([32, 16, 8, 4, 2] if "rcnn" in kind else [16, 8, 4, 2, 1])
        assert all(f.shape[1] == 64 for f in feats.values())
        head_out = (
            model.roi_heads.box_predictor.cls_score.out_features
            if "rcnn" in kind
            else model.head.classification_head.num_classes
        )
        assert head_out == 8, name
    with pytest.raises(KeyError, match="not a detection model"):
        create_detector("retinanet_resnet50_fpn", 3)
    # box_head_dim narrows an R-CNN's box head (torchvision's own modules), Mask R-CNN's mask predictor following;
    # a one-stage detector has no box head to narrow
    with torch.device("meta"):
        narrow = create_detector("maskrcnn_inceptionnext_a_fpn", 7, fpn_channels=64, box_head_dim=128)
    heads = narrow.roi_heads
    assert heads.box_head.fc6.in_features == 64 * 7 * 7 and heads.box_head.fc7.out_features == 128
    assert heads.box_predictor.cls_score.out_features == 8 and heads.mask_predictor.mask_fcn_logits.out_channels == 8
    with pytest.raises(ValueError, match="box_head_dim is for the R-CNN detectors"):
        create_detector("fcos_inceptionnext_a_fpn", 7, box_head_dim=128)


def test_detection_configs_parse_and_build_their_detector():
    import glob

    paths = glob.glob(os.path.join(REPO, "configs", "detection", "*.yaml"))
    assert paths
    for path in paths:
        cfg = parse_config(["--config", path])
        assert cfg.task == "detection" and cfg.model in DETECTION_MODELS, path
        with torch.device("meta"):
            model = create_detector(
                cfg.model,
                10,
                fpn_channels=cfg.fpn_channels,
                anchor_sizes=cfg.anchor_sizes,
                min_size=tuple(cfg.min_size),
                max_size=cfg.max_size,
                **cfg.detector_kwargs,
            )
        assert model.transform.min_size == tuple(cfg.min_size)


@pytest.mark.parametrize(
    "name",
    [
        "fasterrcnn_inceptionnext_a_fpn",
        "maskrcnn_inceptionnext_a_fpn",
        "retinanet_inceptionnext_a_fpn",
        "fcos_inceptionnext_a_fpn",
    ],
)
def test_train_step_and_eval_step(name):
    model = create_detector(name, 3, **SMALL)
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 10:30] = 1
    targets = [
        dict(boxes=torch.tensor([[10.0, 8, 30, 40]]), labels=torch.tensor([2]), masks=masks),
        dict(
            boxes=torch.zeros(0, 4),
            labels=torch.zeros(0, dtype=torch.int64),
            masks=torch.zeros(0, 48, 64, dtype=torch.uint8),
        ),
    ]  # an image without objects
    model.train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone.body.model.stem[0].weight.grad is not None
    assert all(p.grad is not None for p in model.backbone.fpn.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and out[1]["boxes"].shape[1:] == (4,)
    assert ("masks" in out[0]) == name.startswith("maskrcnn")


def test_frozen_stages_get_no_gradient_and_keep_their_statistics():
    model = create_detector("fasterrcnn_inceptionnext_a_fpn", 2, frozen_stages=2, **SMALL)
    backbone = model.backbone.body.model
    frozen = [backbone.stem, backbone.stages[0], backbone.stages[1]]
    before = [m.state_dict() for m in frozen]
    before = [{k: v.clone() for k, v in sd.items()} for sd in before]
    model.train()
    assert all(not m.training for m in frozen) and backbone.stages[2].training
    targets = [dict(boxes=torch.tensor([[4.0, 4, 40, 40]]), labels=torch.tensor([1]))]
    sum(model([torch.rand(3, 64, 64)], targets).values()).backward()
    for m in frozen:
        assert all(p.grad is None and not p.requires_grad for p in m.parameters())
    for m, sd in zip(frozen, before):  # BatchNorm running statistics did not move either
        for k, v in m.state_dict().items():
            assert torch.equal(v, sd[k]), k
    assert all(p.grad is not None for p in backbone.stages[2].parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in backbone.stages[3].parameters())
    # frozen BN: no BatchNorm2d left in the backbone
    fbn = create_detector("retinanet_inceptionnext_a_fpn", 2, frozen_bn=True, **SMALL)
    kinds = {type(m).__name__ for m in fbn.backbone.body.modules()}
    assert "FrozenBatchNorm2d" in kinds and "BatchNorm2d" not in kinds
    with pytest.raises(ValueError, match="frozen_stages"):
        create_detector("retinanet_inceptionnext_a_fpn", 2, frozen_stages=5)


# ------------------------------------------------------------------------------------------------ weights


def _write_formats(tmp_path, src):
    from inceptionnext.model_file import save_model
    from inceptionnext.weights import save_state_dict

    sd = src.state_dict()
    paths = {
        "official .pth": tmp_path / "official.pth",
        "safetensors": tmp_path / "w.safetensors",
        "training checkpoint": tmp_path / "ckpt.pth",
        "DDP-prefixed timm checkpoint": tmp_path / "ddp.pth",
        "converted model file": tmp_path / "model.safetensors",
    }
    torch.save(sd, paths["official .pth"])
    save_state_dict(sd, paths["safetensors"])
    torch.save({"state_dict": sd, "epoch": 3}, paths["training checkpoint"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, paths["DDP-prefixed timm checkpoint"])
    save_model(src, paths["converted model file"], "inceptionnext_a")
    return paths


def test_backbone_weights_load_from_every_format(tmp_path):
    src = timm.create_model("inceptionnext_a", num_classes=1000)
    for fmt, path in _write_formats(tmp_path, src).items():
        model = create_detector("retinanet_inceptionnext_a_fpn", 3, backbone_weights=str(path), **SMALL)
        mine = model.backbone.body.model.state_dict()
        for k, v in src.state_dict().items():
            if not k.startswith("head"):
                assert torch.equal(mine[k], v), (fmt, k)
        assert not any(k.startswith("head.fc") for k in mine), fmt  # the classifier is gone
    wrong = tmp_path / "convnext.pth"
    torch.save(timm.create_model("convnext_tiny_k3", num_classes=1000).state_dict(), wrong)
    with pytest.raises(Exception, match="does not fit"):
        create_detector("retinanet_inceptionnext_a_fpn", 3, backbone_weights=str(wrong), **SMALL)


# ------------------------------------------------------------------------------------------------ metric


def test_map_matches_a_hand_computed_case():
    # two objects; predictions by score: a hit (IoU 1), a miss, and a box of IoU 0.62 with the second object.
    # Where the 0.62 box counts (IoU thresholds 0.50, 0.55, 0.60): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1,
    # so COCO's 101-point interpolated AP = (51 * 1 + 50 * 2/3) / 101; at the 7 higher thresholds it is a miss
    # too: AP = 51 / 101. mAP averages the 10 thresholds.
    gt_masks = torch.zeros(2, 120, 120, dtype=torch.uint8)
    gt_masks[0, 10:50, 10:50] = 1
    gt_masks[1, 0:100, 0:100] = 1
    pred_masks = torch.zeros(3, 1, 120, 120)
    pred_masks[0, 0, 10:50, 10:50] = 0.9
    pred_masks[2, 0, 0:62, 0:100] = 0.9
    target = dict(
        boxes=torch.tensor([[10.0, 10, 50, 50], [0, 0, 100, 100]]), labels=torch.tensor([1, 1]), masks=gt_masks
    )
    pred = dict(
        boxes=torch.tensor([[10.0, 10, 50, 50], [60, 60, 70, 70], [0, 0, 100, 62]]),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        labels=torch.tensor([1, 1, 1]),
        masks=pred_masks,
    )
    ap_low, ap_high = (51 + 50 * 2 / 3) / 101, 51 / 101
    for backend in ("pycocotools", "faster_coco_eval"):
        metric = DetectionMAP(masks=True, backend=backend, sync=False)
        metric.update([pred], [target])
        r = metric.compute()
        for prefix in ("", "segm_"):
            assert r[f"{prefix}map_50"] == pytest.approx(ap_low, abs=1e-4), backend
            assert r[f"{prefix}map_75"] == pytest.approx(ap_high, abs=1e-4), backend
            assert r[f"{prefix}map"] == pytest.approx((3 * ap_low + 7 * ap_high) / 10, abs=1e-4), backend


# ------------------------------------------------------------------------------------------------ data

# the smallest set that still exercises everything: 8 + 4 canvases of 32 px, digits of 12-16 px
TINY = DemoSpec(train_images=8, val_images=4, canvas=32, min_digit=12, max_digit=16, max_digits=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_data(str(tmp_path_factory.mktemp("det") / "digits"), TINY)


def test_demo_data_is_deterministic_with_masks_inside_boxes(demo, tmp_path):
    again = ensure_demo_data(str(tmp_path / "again"), TINY)
    for split in ("train", "val"):
        a, b = (json.load(open(split_paths(root, split)[1])) for root in (demo, again))
        assert a == b and len(a["images"]) == (8 if split == "train" else 4)
        first = os.path.join(split_paths(demo, split)[0], a["images"][0]["file_name"])
        assert open(first, "rb").read() == open(first.replace(demo, again), "rb").read()
    ds = CocoDetectionSet(*split_paths(demo, "train"), masks=True)
    assert ds.class_names == [str(d) for d in range(10)]
    for i in range(4):
        image, target = ds[i]
        assert len(target["boxes"]) >= 1 and target["labels"].min() >= 1 and target["labels"].max() <= 10
        for box, mask in zip(target["boxes"], target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(int(v) for v in box)
    # the val canvases draw only on val digits (the digits split is shared with the classification demo)
    assert ensure_demo_data(demo, TINY) == demo  # reused, not redrawn


def _coco(tmp_path, images=((1, "a.png", 40, 30),), annotations=None, categories=((1, "cat"),), make_files=True):
    from PIL import Image

    (tmp_path / "img").mkdir(exist_ok=True)
    if make_files:
        for _, name, w, h in images:
            Image.new("RGB", (w, h)).save(tmp_path / "img" / name)
    if annotations is None:
        annotations = [dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)]
    doc = dict(
        images=[dict(id=i, file_name=n, width=w, height=h) for i, n, w, h in images],
        annotations=annotations,
        categories=[dict(id=i, name=n) for i, n in categories],
    )
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return str(tmp_path / "img"), str(path)


@pytest.mark.parametrize(
    "case,message",
    [
        ("outside", r"annotation 1: box \[x, y, w, h\] = \[30, 2, 20, 10\] lies outside its image a.png \(40x30\)"),
        ("category", r"annotation 1 \(image a.png\) has category id 7, which is not among the categories \[1\]"),
        ("missing", r"image file .*a.png is missing"),
        ("empty", r"ann.json: the annotation list is empty"),
        ("no file", r"annotation file not found: .*nothing.json"),
        ("no mask", r"masks were asked for, but annotation 1 has no .segmentation."),
    ],
)
def test_each_bad_input_is_named(tmp_path, case, message):
    ann = dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)
    kw = {}
    if case == "outside":
        kw["annotations"] = [dict(ann, bbox=[30, 2, 20, 10])]
    elif case == "category":
        kw["annotations"] = [dict(ann, category_id=7)]
    elif case == "missing":
        kw["make_files"] = False
    elif case == "empty":
        kw["annotations"] = []
    root, path = _coco(tmp_path, **kw)
    if case == "no file":
        path = str(tmp_path / "nothing.json")
    with pytest.raises(AnnotationError, match=message):
        CocoDetectionSet(root, path, masks=case == "no mask")


def test_bad_inputs_stop_training_with_one_line(tmp_path):
    root, _ = _coco(tmp_path, annotations=[dict(id=1, image_id=1, category_id=9, bbox=[2, 2, 10, 10])])
    os.makedirs(tmp_path / "annotations")
    os.replace(tmp_path / "ann.json", tmp_path / "annotations" / "instances_train.json")
    os.rename(root, tmp_path / "train")
    cmd = [
        sys.executable,
        "-m",
        "inceptionnext",
        "train",
        "--task",
        "detection",
        "--model",
        "retinanet_inceptionnext_a_fpn",
        "--dataset",
        "coco",
        "--data-dir",
        str(tmp_path),
        "--output",
        str(tmp_path / "out"),
        "--val-split",
        "train",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "instances_train.json: annotation 1 (image a.png) has category id 9" in p.stderr


def test_grouped_batches_hold_one_aspect_group_and_cover_the_epoch():
    ratios = [1.5, 0.7] * 10 + [1.2] * 3
    groups = aspect_ratio_groups(ratios)
    base = torch.utils.data.DistributedSampler(range(len(ratios)), num_replicas=1, rank=0, seed=0)
    sampler = GroupedBatchSampler(base, groups, 4, seed=0)
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(ratios) // 4
    pure = [b for b in batches if len({groups[i] for i in b}) == 1]
    assert len(pure) >= len(batches) - 1  # only the leftovers of the groups may be mixed
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) and all(len(b) == 4 for b in batches)
    assert list(sampler) == batches  # the same epoch replays the same batches (exact resume)
    sampler.set_epoch(1)
    assert list(sampler) != batches


# ------------------------------------------------------------------------------------------------ training


def _cfg(tmp_path, demo, **kw):
    # a tiny run: 32 px canvases, a 16-channel FPN, 2 epochs of 2 updates
    base = dict(
        task="detection",
        model="retinanet_inceptionnext_a_fpn",
        dataset="coco",
        data_dir=demo,
        min_size=(32,),
        max_size=32,
        anchor_sizes=(8, 16, 32, 64, 128),
        fpn_channels=16,
        hflip=0.0,
        photometric=0.5,
        zoom_out=0.5,
        batch_size=4,
        workers=0,
        opt="adamw",
        lr=1e-3,
        weight_decay=0.05,
        clip_grad=5.0,
        epochs=2,
        warmup_epochs=0,
        sched="cosine",
        seed=0,
        output=str(tmp_path),
        experiment="run",
        progress=False,
        plot=False,
        vis_images=2,
        score_thresh=0.0,
    )  # keep weak boxes
    base.update(kw)
    return make_config(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo):
    """One uninterrupted tiny run, shared by the resume and the detect tests."""
    out = tmp_path_factory.mktemp("trained")
    return fit(_cfg(out, demo, experiment="full", plot=True)), out


def test_kill_and_resume_equals_uninterrupted(trained, demo):
    full, out = trained
    stopped = fit(_cfg(out, demo, experiment="killed", stop_after_epoch=1))
    assert stopped.epochs_done == 1
    resumed = fit(parse_config(["--resume", stopped.last_checkpoint]))
    a, b = (load_checkpoint_file(r.last_checkpoint) for r in (full, resumed))
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert full.history[-1]["val_map"] == resumed.history[-1]["val_map"]
    assert full.history[-1]["train_loss"] == resumed.history[-1]["train_loss"]
    assert os.path.isfile(os.path.join(full.out_dir, "detections.png"))
    assert a["task"] == "detection" and a["class_names"] == [str(d) for d in range(10)]
    assert [r["epoch"] for r in read_csv(resumed.log_path)] == [1.0, 2.0]


def test_detect_cli_rebuilds_the_detector_from_its_checkpoint(trained, demo, tmp_path, capsys):
    full, _ = trained
    images = split_paths(demo, "val")[0]
    cmd = [
        sys.executable,
        "-m",
        "inceptionnext",
        "detect",
        "--weights",
        full.last_checkpoint,
        images,
        "--score-thresh",
        "0.0",
        "--out-dir",
        str(tmp_path / "pics"),
        "--json",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert len(out["images"]) == 4 and out["images"][0]["detections"]
    d = out["images"][0]["detections"][0]
    assert set(d) == {"label", "name", "score", "box"} and d["name"] == str(d["label"] - 1)
    assert open(out["images"][0]["picture"], "rb").read(4) == b"\x89PNG"
    # a missing file: the command's own error line (in this process: the fresh one above did the rebuilding)
    capsys.readouterr()
    code = main(["detect", "--weights", str(tmp_path / "no.pth"), images])
    err = capsys.readouterr().err
    assert code == 1 and "no.pth" in err and "Traceback" not in err


def test_shortened_demo_loss_falls_and_map_rises(demo):
    # the demo config's detector (Faster R-CNN on inceptionnext_a, from scratch) on one fixed batch of 8 demo
    # canvases: 30 AdamW updates take the loss well down and mAP@0.5 on those canvases far above the untrained
    # model's (the full demo and its bar are the README command)
    torch.manual_seed(0)
    cfg = parse_config(["--config", os.path.join(REPO, "configs", "detection", "demo_fasterrcnn_inceptionnext_a.yaml")])
    train = CocoDetectionSet(*split_paths(demo, "train"), transforms=eval_transforms())
    images, targets = (list(x) for x in zip(*[train[i] for i in range(len(train))]))
    model = create_detector(
        cfg.model,
        10,
        fpn_channels=cfg.fpn_channels,
        anchor_sizes=cfg.anchor_sizes,
        min_size=32,
        max_size=32,
        **cfg.detector_kwargs,
    )

    def map50():
        model.eval()
        with torch.no_grad():
            out = model(images)
        metric = DetectionMAP(masks=False, sync=False)
        metric.update(out, targets)
        return 100 * metric.compute()["map_50"]

    before = map50()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(30):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    after = map50()
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    assert after > before + 30, (before, after)
