"""Experiment tracking through the field's own libraries, chosen by the ``track`` config key: TensorBoard event
files, an MLflow run (params, per-epoch metrics, the best checkpoint and pictures as artifacts) and Weights &
Biases in offline mode. None is on by default, and each library is an optional extra, imported only when asked.

Only the main process logs. The tracked run's identity is kept in ``<run>/tracking.json``, so a resumed run
continues the same MLflow / W&B run, and its TensorBoard steps carry on from the resumed epoch.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

from ..utils.files import write_atomically

# what each tracker imports, and how to install it
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
INSTALL = {
    "tensorboard": "pip install 'inceptionnext[tensorboard]' (or: pip install tensorboard)",
    "mlflow": "pip install 'inceptionnext[mlflow]' (or: pip install mlflow)",
    "wandb": "pip install 'inceptionnext[wandb]' (or: pip install wandb)",
}
STATE_FILE = "tracking.json"


class TrackingError(RuntimeError):
    """A tracker that cannot be used (its library is missing, its store cannot be opened)."""


def check_trackers(names: Optional[Sequence[str]]) -> None:
    """A TrackingError naming the install command of each asked-for tracker whose library is missing."""
    missing = []
    for name in names or ():
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            missing.append(f"track: {name} needs the {MODULES[name]} package: {INSTALL[name]}")
    if missing:
        raise TrackingError("; ".join(missing))


def _numbers(row: Dict[str, Any]) -> Dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and np.isfinite(v)
    }


def _read_png(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class TensorBoardTracker:
    """Scalars per epoch (the lr among them), the config as text, the run's pictures as images."""

    name = "tensorboard"

    def __init__(self, out_dir: str, config: Dict[str, Any], state: Dict[str, Any], start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = os.path.join(out_dir, "tensorboard")
        # purge_step: events a killed run wrote past its last checkpoint are dropped when it resumes
        self.writer = SummaryWriter(self.dir, purge_step=start_step + 1 if start_step else None)
        if not start_step:
            text = yaml.safe_dump(config, sort_keys=False)
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)
        self.state = {"log_dir": self.dir}

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def log_pictures(self, pictures: Dict[str, str], step: int) -> None:
        for label, path in pictures.items():
            self.writer.add_image(label, _read_png(path), step, dataformats="HWC")
        self.writer.flush()

    def log_files(self, files: Dict[str, str]) -> None:
        pass  # TensorBoard keeps no files; the run folder holds them

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run per training run: params, metrics per epoch, pictures and the best checkpoint as
    artifacts. Uses MLflow's client (no process-wide active run)."""

    name = "mlflow"
    PARAM_CHARS = 500  # a long value (a dict of detector arguments) is cut to this in the params

    def __init__(self, uri: str, run_name: str, config: Dict[str, Any], state: Dict[str, Any], output: str):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = state.get("run_id")
        if self.run_id is None:
            exp = self.client.get_experiment_by_name("inceptionnext")
            # a local store keeps its artifacts beside it in the output folder, not in the working directory
            local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
            where = Path(os.path.abspath(os.path.join(output, "mlartifacts"))).as_uri() if local else None
            exp_id = exp.experiment_id if exp else self.client.create_experiment("inceptionnext", where)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
            params = [Param(k, str(v)[: self.PARAM_CHARS]) for k, v in config.items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        self.state = {"run_id": self.run_id, "uri": uri}

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_pictures(self, pictures: Dict[str, str], step: int) -> None:
        pass  # pictures go up with the other files at the end (log_files): one copy of each, the final one

    def log_files(self, files: Dict[str, str]) -> None:
        for path in files.values():
            self.client.log_artifact(self.run_id, path)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """Weights & Biases in offline mode (``wandb sync <run>/wandb`` uploads it later)."""

    name = "wandb"

    def __init__(self, out_dir: str, run_name: str, config: Dict[str, Any], state: Dict[str, Any]):
        import wandb

        run_id = state.get("run_id") or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project="inceptionnext",
            name=run_name,
            id=run_id,
            resume="allow",
            mode="offline",
            dir=out_dir,
            config=config,
            settings=wandb.Settings(silent=True),
        )
        self.wandb = wandb
        self.state = {"run_id": run_id, "dir": os.path.join(out_dir, "wandb")}

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        self.run.log(dict(metrics, epoch=step), step=step)

    def log_pictures(self, pictures: Dict[str, str], step: int) -> None:
        self.run.log({k: self.wandb.Image(p) for k, p in pictures.items()}, step=step)

    def log_files(self, files: Dict[str, str]) -> None:
        for path in files.values():
            self.run.save(path, base_path=os.path.dirname(path), policy="now")

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers a run's ``track`` key names, driven together (an empty list: tracking is off)."""

    def __init__(self, trackers: List[Any], out_dir: str):
        self.trackers, self.out_dir = trackers, out_dir

    @classmethod
    def open(
        cls,
        names: Optional[Sequence[str]],
        out_dir: str,
        config: Dict[str, Any],
        mlflow_uri: Optional[str],
        output: str,
        start_step: int,
    ) -> "Trackers":
        """Start (or, with a tracking.json from an earlier part of this run, continue) each named tracker."""
        if not names:
            return cls([], out_dir)
        check_trackers(names)
        state_path = os.path.join(out_dir, STATE_FILE)
        saved: Dict[str, Any] = {}
        if start_step and os.path.isfile(state_path):
            with open(state_path) as f:
                saved = json.load(f)
        run_name = os.path.basename(os.path.normpath(out_dir))
        uri = mlflow_uri or "sqlite:///" + os.path.abspath(os.path.join(output, "mlflow.db"))
        trackers = []
        for name in names:
            state = saved.get(name) or {}
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(out_dir, config, state, start_step))
            elif name == "mlflow":
                trackers.append(MLflowTracker(state.get("uri") or uri, run_name, config, state, output))
            else:
                trackers.append(WandbTracker(out_dir, run_name, config, state))
        group = cls(trackers, out_dir)
        write_atomically(
            state_path, lambda tmp: Path(tmp).write_text(json.dumps({t.name: t.state for t in trackers}, indent=1))
        )
        return group

    def log_epoch(self, row: Dict[str, Any], step: int, pictures: Dict[str, str]) -> None:
        """One history row's numbers (losses, metrics, lr, time) and the run's pictures at `step`."""
        metrics = _numbers(row)
        pictures = {k: v for k, v in pictures.items() if v.endswith(".png") and os.path.isfile(v)}
        for t in self.trackers:
            t.log_metrics(metrics, step)
            if pictures:
                t.log_pictures(pictures, step)

    def finish(self, files: Dict[str, str]) -> None:
        """Upload the run's files (best checkpoint, pictures, log) where the tracker keeps files, and close."""
        files = {k: v for k, v in files.items() if v and os.path.isfile(v)}
        for t in self.trackers:
            t.log_files(files)
            t.close()

    def close(self) -> None:
        for t in self.trackers:
            t.close()
