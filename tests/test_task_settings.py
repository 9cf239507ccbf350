"""Each task owns its settings: its keys, datasets and run kinds come from its own config module, the command
line and the refusals learn them from the task registry, a task defined outside the library trains through
`inceptionnext train`, and runs written before the keys moved still resume."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import inceptionnext  # noqa: F401  (registers the library's tasks)
from inceptionnext.tasks.classification.config import ClassificationConfig
from inceptionnext.tasks.segmentation.config import SegmentationConfig
from inceptionnext.train import ConfigError, TrainConfig, TrainError, fit, make_config, parse_config
from inceptionnext.train.command_line import build_parser
from inceptionnext.train.config import config_fields
from inceptionnext.train.sampler import RoundSampler
from inceptionnext.train.task import TASKS

FIXTURE = Path(__file__).parent / "fixtures" / "run_before_task_settings"
REPO = Path(__file__).resolve().parents[1]

TOY_TASK = '''
"""A fourth task, outside the library: it learns which of two noise patterns a vector holds."""
from dataclasses import dataclass

import torch
import torch.nn as nn

from inceptionnext.train import Task, TaskSettings, TrainConfig, dataset_key, key, register_task, task_key


@dataclass
class ToyConfig(TrainConfig):
    task: str = task_key("toy")
    dataset: str = dataset_key({"noise": "two noise patterns, generated"})
    toy_width: int = key(4, "hidden width of the toy model", "[1, 64]")


@register_task
class ToyTask(Task):
    name = "toy"
    settings = TaskSettings(config=ToyConfig, metrics=("acc",), best_metric="acc", best_label="acc")
    log_columns = ("epoch", "lr", "train_loss", "val_acc")

    def build_datasets(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=g)
        y = (x[:, 0] > 0).long()
        sets = torch.utils.data.TensorDataset(x[:48], y[:48]), torch.utils.data.TensorDataset(x[48:], y[48:])
        return sets[0], sets[1], 2

    def build_model(self, num_classes):
        return nn.Sequential(nn.Linear(8, self.cfg.toy_width), nn.ReLU(), nn.Linear(self.cfg.toy_width, num_classes))

    def data_config(self, model):
        return {"input_size": (1, 1, 8)}  # what the log line names: vectors of 8 values

    def build_loaders(self, train_set, val_set, data_cfg, num_classes, round_sampler):
        bs = self.cfg.batch_size
        return (
            torch.utils.data.DataLoader(train_set, batch_size=bs, shuffle=True, drop_last=True),
            torch.utils.data.DataLoader(val_set, batch_size=bs),
        )

    def train_loss(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y), len(y)

    @torch.no_grad()
    def evaluate(self, model, loader, desc="val"):
        hits = total = 0
        for x, y in loader:
            hits += int((model(x).argmax(1) == y).sum())
            total += len(y)
        return {"acc": 100.0 * hits / total, "loss": 0.0}

    def describe(self, row):
        return f"acc {row['val_acc']:.2f} (width {self.cfg.toy_width})"
'''


def test_each_task_declares_its_keys_datasets_and_run_kinds():
    shared = set(config_fields(TrainConfig))
    owned = {name: set(cls.settings.own_keys) for name, cls in TASKS.items()}
    assert {"mixup", "smoothing"} <= owned["classification"] and {"crop_size", "test_mode"} <= owned["segmentation"]
    assert {"fpn_channels", "detector_kwargs"} <= owned["detection"]
    assert not (owned["classification"] | owned["segmentation"] | owned["detection"]) & shared
    assert TASKS["segmentation"].settings.datasets == ("ade20k", "masks", "digit_scenes")
    assert TASKS["segmentation"].settings.iteration_runs and not TASKS["classification"].settings.iteration_runs
    assert [TASKS[t].settings.best_metric for t in ("classification", "segmentation", "detection")] == [
        "top1",
        "miou",
        "map",
    ]
    # a run's config holds the shared keys and its own task's, and its dump no others
    cfg = make_config(task="segmentation", crop_size=64)
    assert isinstance(cfg, SegmentationConfig) and cfg.crop_size == 64 and not hasattr(cfg, "mixup")
    assert "mixup" not in vars(cfg) and "crop_size" not in vars(make_config())


def test_a_dataset_of_another_task_is_refused_with_the_tasks_choices():
    with pytest.raises(ConfigError, match=r"config key 'dataset' in --set: 'coco' is not allowed; it must be one of"):
        parse_config(["--set", "dataset=coco"])
    assert parse_config(["--task", "detection", "--dataset", "coco"]).dataset == "coco"


def test_one_refusal_for_a_run_kind_a_task_does_not_support(tmp_path):
    with pytest.raises(TrainError, match="task classification trains by epochs, not by iterations: unset iters"):
        fit(make_config(dataset="digits", iters=4, eval_interval=2, output=str(tmp_path), progress=False))
    with pytest.raises(TrainError, match="task segmentation trains by iterations, not by epochs: set iters"):
        fit(make_config(task="segmentation", dataset="digit_scenes", output=str(tmp_path), progress=False))


def test_the_round_sampler_continues_through_the_data_across_rounds():
    sampler = RoundSampler(10, 4, seed=0)
    rounds = []
    for r in range(5):
        sampler.set_epoch(r)
        rounds.append(list(sampler))
    stream = sum(rounds, [])
    assert all(len(r) == 4 for r in rounds) and sorted(stream[:10]) == list(range(10))
    again = RoundSampler(10, 4, seed=0)
    again.set_epoch(3)
    assert list(again) == rounds[3]  # a resumed run draws what an uninterrupted one would


def test_a_run_written_before_the_keys_moved_resumes(tmp_path):
    """last.pth and config.yaml of a digits run stopped after epoch 1 of 2, written when one config class held
    every task's keys: the other tasks' keys (at their defaults) are no error, and the run finishes."""
    saved = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    assert "crop_size" in saved and "fpn_channels" in saved  # the old dump holds every task's keys
    run = tmp_path / "digits_v1"
    run.mkdir()
    for name in ("last.pth", "config.yaml"):
        shutil.copy(FIXTURE / name, run / name)
    cfg = parse_config(["--resume", str(run / "last.pth"), "--output", str(tmp_path), "--workers", "0"])
    assert isinstance(cfg, ClassificationConfig) and cfg.model == "test_efficientnet" and cfg.epochs == 2
    again = parse_config(["--config", str(run / "config.yaml"), "--output", str(tmp_path)])
    assert again.dataset == "digits" and not hasattr(again, "crop_size")
    result = fit(cfg)
    assert result.epochs_done == 2 and [row["epoch"] for row in result.history] == [1, 2]
    dumped = yaml.safe_load(Path(result.config_path).read_text())
    assert "crop_size" not in dumped and dumped["smoothing"] == saved["smoothing"]


def test_a_fourth_task_outside_the_library_trains_from_the_command_line(tmp_path):
    package = tmp_path / "elsewhere" / "toytask"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(TOY_TASK))
    out = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package.parent), str(REPO)]), OMP_NUM_THREADS="1")
    args = ["--task-module", "toytask", "--task", "toy", "--toy-width", "7", "--epochs", "1", "--warmup-epochs", "0"]
    args += ["--batch-size", "8", "--output", str(out), "--experiment", "toy", "--progress", "false"]
    run = subprocess.run(
        [sys.executable, "-m", "inceptionnext", "train", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(width 7)" in run.stdout
    dumped = yaml.safe_load((out / "toy" / "config.yaml").read_text())
    assert dumped["task"] == "toy" and dumped["toy_width"] == 7 and dumped["task_module"] == "toytask"
    assert "crop_size" not in dumped and "mixup" not in dumped
    # its key is listed in the help, under its own group, and refused in another task's run
    helped = subprocess.run(
        [sys.executable, "-m", "inceptionnext", "train", "--task-module", "toytask", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "toy keys (task: toy):" in helped.stdout and "--toy-width" in helped.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "inceptionnext", "train", "--task-module", "toytask", "--toy-width", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert refused.returncode == 1
    assert "'toy_width' in the command line is a toy key; this run's task is classification" in refused.stderr
    assert "toy" not in TASKS  # it registered in its own process only; nothing of the library was edited


def test_a_task_module_that_does_not_import_is_named():
    with pytest.raises(ConfigError, match=r"config key 'task_module': cannot import 'no_such_tasks' \("):
        parse_config(["--task-module", "no_such_tasks"])


def test_the_help_groups_come_from_the_registry():
    text = build_parser().format_help()
    assert [t for t in TASKS if f"{t} keys (task: {t}):" in text] == list(TASKS)


def test_a_bare_train_config_is_checked_as_its_tasks_config():
    from inceptionnext.train import Trainer
    from inceptionnext.train.distributed import DistEnv

    with pytest.raises(
        ConfigError, match=r"'dataset' in the config: 'folder' is not allowed; it must be one of ade20k"
    ):
        Trainer(TrainConfig(task="segmentation", iters=4, eval_interval=2), DistEnv())
