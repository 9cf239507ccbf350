"""Experiment tracking, read back with each library's own reader: TensorBoard's EventAccumulator and MLflow's
client. A run stopped after epoch 1 and resumed continues the same tracked run."""

import json
import os
import sys

import pytest
from test_train import make_folder, toy_cfg

from inceptionnext.train import TrainError, fit

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Two epochs with TensorBoard and MLflow, killed in the middle (stop_after_epoch) and resumed."""
    tmp = tmp_path_factory.mktemp("tracked")
    data = make_folder(tmp / "d", classes=3, train=6, val=3)
    kw = dict(epochs=2, model="_test_tiny_net", track=("tensorboard", "mlflow"), plot=True)
    first = fit(toy_cfg(tmp, data, stop_after_epoch=1, **kw))
    run_id = json.load(open(os.path.join(first.out_dir, "tracking.json")))["mlflow"]["run_id"]
    second = fit(toy_cfg(tmp, data, resume=first.last_checkpoint, **kw))
    return tmp, second, run_id


def test_tensorboard_holds_every_epochs_scalars_the_lr_the_config_and_the_pictures(tracked):
    tmp, res, _ = tracked
    events = EventAccumulator(os.path.join(res.out_dir, "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for name in ("train_loss", "val_loss", "val_top1", "val_macro_f1", "lr"):
        assert [e.step for e in events.Scalars(name)] == [1, 2], name  # the resumed part continued at step 2
    assert [e.value for e in events.Scalars("val_top1")] == pytest.approx([r["val_top1"] for r in res.history])
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([r["lr"] for r in res.history])
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "model: _test_tiny_net" in text and "epochs: 2" in text
    assert {"confusion", "mistakes", "predictions"} <= set(tags["images"])
    assert events.Images("confusion")[-1].width > 300


def test_mlflow_holds_one_run_with_params_metrics_per_epoch_and_the_best_checkpoint(tracked):
    tmp, res, first_run_id = tracked
    client = mlflow.MlflowClient(tracking_uri="sqlite:///" + str(tmp / "out" / "mlflow.db"))
    exp = client.get_experiment_by_name("inceptionnext")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [first_run_id]  # the resumed part logged to the same run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model"] == "_test_tiny_net" and float(run.data.params["lr"]) == 2e-3
    history = client.get_metric_history(run.info.run_id, "val_top1")
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [r["val_top1"] for r in res.history]
    )
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_best.pth", "confusion_matrix.png", "mistakes.png", "per_class.json", "curves.png"} <= names
    # artifacts live beside the store in the output folder, not in the working directory
    assert exp.artifact_location.startswith((tmp / "out" / "mlartifacts").as_uri())


def test_a_missing_tracking_library_is_named_with_its_install_command(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "d", classes=2, train=2, val=1)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(
        TrainError, match=r"track: mlflow needs the mlflow package: pip install 'inceptionnext\[mlflow\]'"
    ):
        fit(toy_cfg(tmp_path, data, model="_test_tiny_net", track=("mlflow",)))
    assert not os.path.exists(tmp_path / "out" / "run" / "last.pth")


def test_no_tracking_by_default(tmp_path):
    data = make_folder(tmp_path / "d", classes=2, train=4, val=2)
    res = fit(toy_cfg(tmp_path, data, model="_test_tiny_net", epochs=1))
    assert not os.path.exists(os.path.join(res.out_dir, "tensorboard"))
    assert not os.path.exists(os.path.join(res.out_dir, "tracking.json"))
    assert not os.path.exists(tmp_path / "out" / "mlflow.db")


def test_wandb_runs_offline_in_the_run_folder_and_a_resume_continues_its_run(tmp_path):
    pytest.importorskip("wandb")
    data = make_folder(tmp_path / "d", classes=2, train=4, val=2)
    kw = dict(epochs=2, model="_test_tiny_net", track=("wandb",))
    first = fit(toy_cfg(tmp_path, data, stop_after_epoch=1, **kw))
    run_id = json.load(open(os.path.join(first.out_dir, "tracking.json")))["wandb"]["run_id"]
    fit(toy_cfg(tmp_path, data, resume=first.last_checkpoint, **kw))
    runs = os.listdir(os.path.join(first.out_dir, "wandb"))
    offline = [r for r in runs if r.startswith("offline-run-")]
    assert offline and all(r.endswith(run_id) for r in offline)  # both parts wrote to the same run id
    assert json.load(open(os.path.join(first.out_dir, "tracking.json")))["wandb"]["run_id"] == run_id
