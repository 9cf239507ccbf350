"""The dense tasks' numbers against independent computations on cases built by hand: mIoU, class and pixel
accuracy against torchmetrics, detection mAP against pycocotools' COCOeval run directly, and sliding-window and
flip inference against a brute-force per-pixel reference."""

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from inceptionnext.tasks.detection.evaluate import DetectionMAP
from inceptionnext.tasks.segmentation.evaluate import evaluate_segmentation, predict_probs, slide_logits

IGNORE = 255


def one_hot_logits(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(1, K, H, W) logits whose argmax is `pred` (H, W)."""
    return torch.nn.functional.one_hot(pred.long(), num_classes).permute(2, 0, 1)[None].float() * 5


def test_miou_macc_and_pixel_accuracy_match_torchmetrics_over_a_dataset():
    """Dataset-level sums over three images (not a mean of per-image scores), pixels labelled 255 ignored and a
    class absent from both truth and prediction left out of the mean."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex, MulticlassRecall

    k = 5  # class 4 never appears
    g = torch.Generator().manual_seed(0)
    truths = [torch.randint(0, 4, (7, 9), generator=g) for _ in range(3)]
    preds = [
        torch.where(torch.rand(7, 9, generator=g) < 0.7, t, torch.randint(0, 4, (7, 9), generator=g)) for t in truths
    ]
    truths[1][:2] = IGNORE
    truths[2][:, :3] = IGNORE
    loader = [(one_hot_logits(p, k), t[None]) for p, t in zip(preds, truths)]
    metrics, per_class = evaluate_segmentation(nn.Identity(), loader, k, torch.device("cpu"))

    jaccard = MulticlassJaccardIndex(k, average="none", ignore_index=IGNORE)
    recall = MulticlassRecall(k, average="none", ignore_index=IGNORE)
    pixel = MulticlassAccuracy(k, average="micro", ignore_index=IGNORE)
    for p, t in zip(preds, truths):
        for m in (jaccard, recall, pixel):
            m.update(p[None], t[None])
    iou = jaccard.compute().double() * 100
    present = torch.tensor([c < 4 for c in range(k)])
    np.testing.assert_allclose(per_class[:4], iou[:4].numpy(), rtol=1e-6)
    assert np.isnan(per_class[4])
    assert metrics["miou"] == pytest.approx(iou[present].mean().item(), rel=1e-6)
    assert metrics["macc"] == pytest.approx(recall.compute()[present].double().mean().item() * 100, rel=1e-6)
    assert metrics["acc"] == pytest.approx(pixel.compute().item() * 100, rel=1e-6)
    assert metrics["count"] == 3


def test_miou_of_a_case_worked_by_hand():
    """Truth [[0 0 1] [1 1 255]], prediction [[0 1 1] [1 0 0]]: class 0 IoU 1/3, class 1 IoU 2/4."""
    truth = torch.tensor([[0, 0, 1], [1, 1, IGNORE]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 0]])
    metrics, per_class = evaluate_segmentation(nn.Identity(), [(one_hot_logits(pred, 2), truth[None])], 2, "cpu")
    np.testing.assert_allclose(per_class, [100 / 3, 50.0])
    assert metrics["miou"] == pytest.approx((100 / 3 + 50) / 2)
    assert metrics["acc"] == pytest.approx(60.0)  # 3 of the 5 labelled pixels
    assert metrics["macc"] == pytest.approx((50 + 200 / 3) / 2)


class WindowRamp(nn.Module):
    """A 'model' that is not translation invariant: it adds each pixel's position inside the window it is given,
    so a window placed, counted or averaged wrongly changes the stitched result."""

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp = torch.arange(h)[:, None] * 100.0 + torch.arange(w)[None, :]
        return torch.cat([x + ramp, x * 2 - ramp], 1)


def brute_force_slide(model, x, crop, stride):
    """Per pixel: the mean of the model's output over every window that covers it, windows starting every
    `stride` pixels with the last one flush with the border (one window when the image fits in a crop)."""
    _, _, h, w = x.shape

    def starts(size):
        return sorted({min(s, max(size - crop, 0)) for s in range(0, max(size - crop, 0) + stride, stride)})

    windows = [(r, c) for r in starts(h) for c in starts(w)]
    outputs = {(r, c): model(x[:, :, r : r + crop, c : c + crop]) for r, c in windows}
    ref = torch.zeros(x.shape[0], 2 * x.shape[1], h, w)
    for i, j in itertools.product(range(h), range(w)):
        covering = [(r, c) for r, c in windows if r <= i < r + crop and c <= j < c + crop]
        assert covering, (i, j)
        ref[:, :, i, j] = torch.stack([outputs[r, c][:, :, i - r, j - c] for r, c in covering]).mean(0)
    return ref


@pytest.mark.parametrize("h,w,crop,stride", [(13, 17, 6, 4), (12, 12, 6, 6), (9, 20, 8, 3), (5, 4, 8, 4)])
def test_sliding_window_matches_a_brute_force_stitching(h, w, crop, stride):
    model = WindowRamp()
    x = torch.randn(2, 1, h, w)
    torch.testing.assert_close(slide_logits(model, x, crop, stride, 2), brute_force_slide(model, x, crop, stride))


def test_flip_and_scale_inference_average_the_probabilities_of_each_view():
    model = WindowRamp()
    x = torch.randn(1, 1, 8, 10) * 0.01
    views = [model(x).softmax(1), model(x.flip(-1)).flip(-1).softmax(1)]
    torch.testing.assert_close(predict_probs(model, x, 2, flip=True), sum(views) / 2)
    half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    up = torch.nn.functional.interpolate(model(half), size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(predict_probs(model, x, 2, scales=(1.0, 0.5)), (views[0] + up.softmax(1)) / 2)
    # the sliding window under flip: each flipped window's output flipped back
    slid = predict_probs(model, x, 2, mode="slide", crop=6, stride=4, flip=True)
    ref = brute_force_slide(model, x, 6, 4).softmax(1) + brute_force_slide(model, x.flip(-1), 6, 4).flip(-1).softmax(1)
    torch.testing.assert_close(slid, ref / 2)


# --- detection mAP ------------------------------------------------------------------------------------------------


def _detections():
    """Two images, two classes: exact, shifted, duplicate, wrong-class and missed boxes, a crowd region."""
    gts = [
        dict(boxes=[[10, 10, 50, 50], [60, 60, 90, 100], [5, 70, 30, 95]], labels=[1, 2, 1], iscrowd=[0, 0, 0]),
        dict(boxes=[[0, 0, 40, 30], [50, 10, 99, 60], [20, 60, 70, 95]], labels=[2, 1, 1], iscrowd=[0, 0, 1]),
    ]
    preds = [
        dict(
            boxes=[[10, 10, 50, 50], [62, 58, 92, 104], [11, 11, 49, 52], [5, 70, 30, 95], [70, 5, 95, 30]],
            scores=[0.9, 0.8, 0.7, 0.3, 0.6],
            labels=[1, 2, 1, 2, 1],
        ),
        dict(
            boxes=[[2, 1, 41, 33], [50, 18, 99, 60], [25, 62, 68, 90], [0, 0, 10, 10]],
            scores=[0.95, 0.5, 0.85, 0.2],
            labels=[2, 1, 1, 2],
        ),
    ]
    return preds, gts


def _pycocotools_map(preds, gts, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    images, anns, dets = [], [], []
    for i, (p, g) in enumerate(zip(preds, gts)):
        images.append(dict(id=i, width=100, height=100, file_name=f"{i}.png"))
        for b, lab, crowd in zip(g["boxes"], g["labels"], g["iscrowd"]):
            box = xywh(b)
            anns.append(
                dict(id=len(anns) + 1, image_id=i, category_id=lab, bbox=box, area=box[2] * box[3], iscrowd=crowd)
            )
        for b, s, lab in zip(p["boxes"], p["scores"], p["labels"]):
            dets.append(dict(image_id=i, category_id=lab, bbox=xywh(b), score=s))
    (tmp_path / "gt.json").write_text(
        json.dumps(dict(images=images, annotations=anns, categories=[dict(id=1), dict(id=2)]))
    )
    coco = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return dict(
        zip(["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100"], ev.stats)
    )


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_map_matches_pycocotools_run_directly(tmp_path, backend):
    pytest.importorskip(backend)
    preds, gts = _detections()
    metric = DetectionMAP(backend=backend, sync=False)
    for p, g in zip(preds, gts):  # one image per update, as evaluation batches arrive
        metric.update([{k: torch.tensor(v) for k, v in p.items()}], [{k: torch.tensor(v) for k, v in g.items()}])
    ours = metric.compute()
    ref = _pycocotools_map(preds, gts, tmp_path)
    for key in ("map", "map_50", "map_75", "map_medium", "map_large", "mar_1", "mar_10", "mar_100"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
    assert 0 < ours["map"] < ours["map_50"] < 1  # the case is neither perfect nor empty


def test_map_of_cases_worked_by_hand():
    gt = dict(boxes=torch.tensor([[0.0, 0, 10, 10]]), labels=torch.tensor([1]))
    for box, map50, map75 in (([0.0, 0, 10, 10], 1.0, 1.0), ([0.0, 0, 10, 7], 1.0, 0.0), ([0.0, 0, 10, 4], 0.0, 0.0)):
        metric = DetectionMAP(backend="pycocotools", sync=False)  # IoU 1, 0.7 and 0.4
        pred = dict(boxes=torch.tensor([box]), scores=torch.tensor([0.9]), labels=torch.tensor([1]))
        metric.update([pred], [gt])
        got = metric.compute()
        assert (got["map_50"], got["map_75"]) == (pytest.approx(map50), pytest.approx(map75)), box
