"""Per-class results of a classifier: the figures against scikit-learn's own metrics on a fixed prediction set,
the most confident mistakes, what a training run writes and says at its end, and `validate`'s JSON and pictures."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from test_train import make_folder, toy_cfg

from inceptionnext.cli.validate import cli as validate_cli
from inceptionnext.tasks.classification.evaluate import evaluate_with_report
from inceptionnext.tasks.classification.per_class import (
    MistakeCollector,
    confusion_counts,
    format_per_class,
    per_class_report,
)
from inceptionnext.train import fit

# 5 classes; class 3 is never predicted (precision 0 by sklearn's zero_division=0), class 4 has no sample
TARGETS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 0, 1, 2, 2, 3, 1]
PREDICTIONS = [0, 0, 1, 0, 1, 1, 2, 2, 2, 0, 2, 4, 2, 0, 0, 1, 2, 2, 1, 1]
NAMES = ["ant", "bee", "cat", "dog", "eel"]


def test_figures_match_scikit_learn_on_a_fixed_prediction_set():
    cm = confusion_counts(torch.tensor(TARGETS), torch.tensor(PREDICTIONS), 5).numpy()
    assert (cm == confusion_matrix(TARGETS, PREDICTIONS, labels=range(5))).all()
    r = per_class_report(cm, NAMES)
    p, rec, f1, support = precision_recall_fscore_support(TARGETS, PREDICTIONS, labels=range(5), zero_division=0)
    assert [c["name"] for c in r["classes"]] == NAMES
    assert np.allclose([c["precision"] for c in r["classes"]], p)
    assert np.allclose([c["recall"] for c in r["classes"]], rec)
    assert np.allclose([c["f1"] for c in r["classes"]], f1)
    assert [c["support"] for c in r["classes"]] == support.tolist()
    with np.errstate(invalid="ignore"):  # eel's row has no sample: sklearn divides by 0 there, the report gives 0
        normalized = np.nan_to_num(confusion_matrix(TARGETS, PREDICTIONS, labels=range(5), normalize="true"))
    assert np.allclose(r["confusion_matrix"]["normalized"], normalized, atol=1e-6)
    assert r["confusion_matrix"]["counts"] == cm.tolist()
    # macro means over the classes the data holds (sklearn's labels=range(4)); weighted means by support
    for avg, key in (("macro", "macro_avg"), ("weighted", "weighted_avg")):
        want = precision_recall_fscore_support(TARGETS, PREDICTIONS, labels=range(4), average=avg, zero_division=0)
        got = r[key]
        assert np.allclose([got["precision"], got["recall"], got["f1"]], want[:3])
    assert r["accuracy"] == pytest.approx(np.mean(np.array(TARGETS) == np.array(PREDICTIONS)))
    assert r["worst_class"]["name"] == "dog" and r["worst_class"]["f1"] == 0.0  # never predicted right
    table = format_per_class(r["classes"], r["macro_avg"])
    assert table.splitlines()[1].startswith("dog") and "eel" not in table  # worst first; no sample, no row


def test_the_most_confident_mistakes_are_kept_in_order_with_their_dataset_index():
    collector = MistakeCollector(keep=3)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05], [0.3, 0.7]])
    collector.add([10, 11, 12, 13, 14], torch.tensor([1, 0, 0, 0, 1]), probs)  # 10, 11, 12 wrong
    collector.add([20, 21], torch.tensor([0, 1]), torch.tensor([[0.01, 0.99], [0.7, 0.3]]))  # both wrong
    assert [(m.index, m.target, m.predicted) for m in collector.mistakes] == [(20, 0, 1), (10, 1, 0), (11, 0, 1)]
    assert collector.mistakes[0].probability == pytest.approx(0.99)


class _Fixed(torch.nn.Module):
    """Returns the logits stored for each image (the image's first pixel holds its row)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.num_classes = self.logits.shape[1]

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_evaluate_with_report_maps_loader_order_to_dataset_indices_through_a_subset():
    logits = [[5.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [4.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 2.0]]
    targets = [0, 0, 2, 1, 1, 0]  # rows 1, 3 and 5 are wrong
    data = [(torch.full((3, 2, 2), float(i)), targets[i]) for i in range(6)]
    share = torch.utils.data.Subset(data, [1, 3, 5])  # one rank's share: every second sample from 1
    loader = torch.utils.data.DataLoader(share, batch_size=2)
    metrics, report = evaluate_with_report(_Fixed(logits), loader, torch.device("cpu"))
    assert metrics["top1"] == 0.0 and metrics["count"] == 3
    assert [m["index"] for m in report["mistakes"]] == [3, 1, 5]  # by probability: rows 3, 1, 5
    assert report["mistakes"][0]["true"] == "class 1" and report["mistakes"][0]["predicted"] == "class 0"
    assert sum(map(sum, report["confusion_matrix"]["counts"])) == 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = make_folder(tmp_path_factory.mktemp("five"), classes=4, train=6, val=3)
    tmp = tmp_path_factory.mktemp("run")
    return data, fit(toy_cfg(tmp, data, epochs=2, plot=True))  # inceptionnext_a: validate reads its preprocessing


def test_a_run_writes_per_class_results_of_its_best_epoch_and_says_what_to_do_next(run, capsys):
    data, res = run
    out = res.out_dir
    report = json.load(open(os.path.join(out, "per_class.json")))
    assert report["epoch"] == res.best_epoch
    assert [c["name"] for c in report["classes"]] == [f"class_{i}" for i in range(4)]
    assert sum(c["support"] for c in report["classes"]) == 12
    for picture in ("confusion_matrix.png", "mistakes.png"):
        with Image.open(os.path.join(out, picture)) as im:
            assert im.format == "PNG" and im.width > 300


def test_the_end_of_a_run_names_best_epoch_worst_class_files_and_next_commands(tmp_path, capsys):
    data = make_folder(tmp_path / "d", classes=3, train=6, val=3)
    res = fit(toy_cfg(tmp_path, data, epochs=1, model="_test_tiny_net", plot=True))
    said = capsys.readouterr().out
    best = res.best_checkpoint
    assert "worst class: class_" in said
    assert f"inceptionnext validate --weights {best} --data-dir {os.path.join(str(data), 'val')}" in said
    assert f"inceptionnext predict --weights {best} " in said
    assert f"inceptionnext export --weights {best} --output " in said
    assert f"inceptionnext quantize --weights {best} --calibration {os.path.join(str(data), 'train')}" in said
    assert os.path.join(res.out_dir, "confusion_matrix.png") in said


def test_validate_json_carries_per_class_results_and_plot_writes_the_pictures(run, tmp_path, capsys):
    data, res = run
    plot, mistakes, out = tmp_path / "per_class.png", tmp_path / "mistakes.png", tmp_path / "r.json"
    args = ["--weights", res.best_checkpoint, "--data-dir", str(data / "val"), "--no-progress", "--workers", "0"]
    assert validate_cli(args + ["--plot", str(plot), "--mistakes", str(mistakes), "--json", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"per-class picture: {plot}" in said and "worst class: " in said and "precision" in said
    r = json.load(open(out))
    assert {c["name"] for c in r["per_class"]} == {f"class_{i}" for i in range(4)}
    assert r["confusion_matrix"]["labels"] == [f"class_{i}" for i in range(4)]
    assert sum(map(sum, r["confusion_matrix"]["counts"])) == r["count"] == 12
    wrong = r["count"] - round(r["top1"] * r["count"] / 100)
    assert len(r["mistakes"]) == min(wrong, 16)
    for m in r["mistakes"]:
        assert os.path.isfile(m["file"]) and m["true"] != m["predicted"] and 0 < m["probability"] <= 1
    for picture in (plot, mistakes):
        with Image.open(picture) as im:
            assert im.format == "PNG"


def test_a_run_without_pictures_still_writes_its_numbers(tmp_path, capsys):
    """plot: false draws nothing (no matplotlib work on a best epoch) and keeps log.csv and per_class.json."""
    data = make_folder(tmp_path / "d", classes=3, train=6, val=3)
    res = fit(toy_cfg(tmp_path, data, epochs=1, model="_test_tiny_net", plot=False))
    written = set(os.listdir(res.out_dir))
    assert {"per_class.json", "log.csv", "model_best.pth", "config.yaml"} <= written
    assert not [n for n in written if n.endswith(".png")], written
    assert json.load(open(os.path.join(res.out_dir, "per_class.json")))["epoch"] == 1
    said = capsys.readouterr().out
    assert "plot:       (not drawn)" in said and "confusion:" not in said and "worst class: class_" in said
