"""Training checkpoints: written atomically, read back with the checks that turn a mismatch into a clear error.

One file holds everything a resumed run needs to continue as if never stopped: model, optimizer, scheduler,
EMA, grad scaler, completed epochs, every rank's RNG states, the log history and the config. The model weights
sit under ``state_dict`` (and ``state_dict_ema``), the layout timm's ``load_checkpoint`` reads.
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .. import checksum
from ..model_file import TRAINING_FORMAT
from ..utils.files import torch_save, write_atomically
from ..weights import CheckpointError, describe_mismatch, load_error_reason

FORMAT_VERSION = 1


def capture_rng() -> Dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and CUDA) as plain, weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def save_atomic(obj: Any, path: str) -> None:
    """torch.save, atomically: a run killed mid-write leaves the previous checkpoint intact, and a full disk is
    an OSError saying so."""
    write_atomically(path, lambda tmp: torch_save(obj, tmp))


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Read a training checkpoint written by this engine (tensors and plain values only: weights_only)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is empty (0 bytes), not written by this engine "
            "(its writes are atomic) or cut short by a full disk or copy; resume from another "
            "checkpoint of the run (model_best.pth) or start again"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {load_error_reason(e)}") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(
            f"{path} is not a training checkpoint of this engine (no state_dict/epoch); "
            "to start from its weights use weights: <file> instead of resume"
        )
    try:
        checksum.verify(ckpt, path)
    except checksum.ChecksumError as e:
        raise CheckpointError(str(e)) from e
    return ckpt


def read_checkpoint_config(path: str) -> Dict[str, Any]:
    """The config a checkpoint was trained with, minus the keys that only described that one process."""
    cfg = dict(load_checkpoint_file(path).get("config") or {})
    for key in ("resume", "stop_after_epoch"):
        cfg.pop(key, None)
    return cfg


def check_fits(ckpt: Dict[str, Any], path: str, model: torch.nn.Module, model_name: str, num_classes: int) -> None:
    """Raise a CheckpointError saying how the checkpoint differs from the model this run builds."""
    saved_name, saved_classes = ckpt.get("arch"), ckpt.get("num_classes")
    problems = []
    if saved_classes is not None and saved_classes != num_classes:
        problems.append(f"it has {saved_classes} classes, this run has {num_classes}")
    detail = describe_mismatch(ckpt["state_dict"], model)
    if detail:
        problems.append(f"its weights do not fit {model_name}: {', '.join(detail)}")
    if problems:
        raise CheckpointError(
            f"cannot resume from {path} (written for {saved_name or 'an unknown model'} with "
            f"{saved_classes} classes): " + "; ".join(problems)
        )


# What shapes a run's optimisation: a resumed run must keep them (its log and config.yaml describe one schedule).
SCHEDULE_KEYS = (
    "opt",
    "lr",
    "lr_batch",
    "weight_decay",
    "momentum",
    "layer_decay",
    "sched",
    "epochs",
    "warmup_epochs",
    "warmup_lr",
    "min_lr",
    "cooldown_epochs",
    "decay_rate",
    "iters",
    "eval_interval",
    "warmup_iters",
    "batch_size",
    "grad_accum",
)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_same_schedule(ckpt: Dict[str, Any], path: str, config: Dict[str, Any]) -> None:
    """A CheckpointError naming each schedule value (`SCHEDULE_KEYS`) this run would change from the one the
    checkpoint's run trained with: resuming applies the run's own recorded schedule, never a silently mixed one."""
    saved = ckpt.get("config") or {}
    changed = [
        f"{k} {config[k]!r} (the run has {saved[k]!r})"
        for k in SCHEDULE_KEYS
        if k in saved and k in config and _plain(saved[k]) != _plain(config[k])
    ]
    if changed:
        raise CheckpointError(
            f"cannot resume {path} with a changed schedule: {', '.join(changed)}; resume with "
            "--resume alone (the checkpoint supplies its values), or start a new run from its "
            f"weights (weights: {path})"
        )


def make_checkpoint(
    *,
    model,
    optimizer,
    scheduler,
    ema,
    scaler,
    epoch: int,
    model_name: str,
    num_classes: int,
    config: Dict[str, Any],
    history: List[Dict[str, Any]],
    best: Dict[str, Any],
    rng: List[Dict[str, Any]],
    data_config: Dict[str, Any],
    class_to_idx: Optional[Dict[str, int]] = None,
    scored_weights: Optional[str] = None,
    **task_record: Any,
) -> Dict[str, Any]:
    """The checkpoint record; task_record holds what the task adds (see Task.checkpoint_record)."""
    return checksum.seal(
        {
            "format": TRAINING_FORMAT,
            "version": FORMAT_VERSION,
            "arch": model_name,
            "num_classes": num_classes,
            "epoch": epoch,  # completed epochs: a resumed run starts with epoch index `epoch`
            "state_dict": model.state_dict(),
            "state_dict_ema": ema.module.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng,  # one entry per rank
            "config": config,
            "history": history,
            "best": best,
            "data_config": data_config,  # the eval preprocessing (input_size, crop_pct, interpolation, mean, std)
            "class_to_idx": class_to_idx,  # folder name -> class index, for ImageFolder data
            # the entry whose top-1 picked model_best.pth: what every tool (and timm's loaders) reads by default
            "scored_weights": scored_weights or ("state_dict_ema" if ema is not None else "state_dict"),
            **task_record,
        }
    )  # with the SHA-256 of all of the above, checked on every read


def training_config(path: str) -> Dict[str, Any]:
    """The config a training checkpoint of this engine was run with; empty for any other weight file."""
    try:
        return dict(load_checkpoint_file(path).get("config") or {})
    except CheckpointError:
        return {}
