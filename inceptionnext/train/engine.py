"""The training engine: builds everything from a TrainConfig out of timm's parts and runs the epoch loop.

The engine never knows which model it trains: it asks timm for one by name. Each epoch ends with a checkpoint
(written by rank 0 only) that is also the resume point, so a killed run loses at most the epoch in progress.
What differs between tasks (data, model builder, loss, metrics) comes from the task the config names (its
`Task`, registered in ``train.task``); an iteration-based run (``iters``) counts a round of ``eval_interval`` updates
as its epoch and draws its batches from the engine's `RoundSampler`, for any task that declares iteration runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import hashlib
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from timm.models import get_pretrained_cfg, model_parameters
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad, distribute_bn
from tqdm import tqdm

from .. import models as _models  # noqa: F401  (registers this library's models with timm)
from ..model_file import check_model_name
from ..models.backbone import create_timm_model
from ..utils.files import sweep_temp_files, write_atomically
from ..utils.folder_lock import holder as folder_holder
from ..utils.folder_lock import try_lock_folder
from ..utils.workers import loader_workers
from ..weights import load_state_dict_file
from . import checkpoint as ckpt_lib
from . import distributed as dist_lib
from .config import TrainConfig, config_to_dict
from .config_files import save_config
from .logs import plot_curves, write_csv
from .overrides import apply_overrides, config_class
from .sampler import RoundSampler
from .task import TASKS, get_task, run_kind_problem
from .tracking import Trackers, TrackingError, check_trackers


class TrainError(RuntimeError):
    """The run cannot go on (bad model, non-finite loss, ...); the message says why."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite; the message names the round and step."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def plan_batch(cfg: TrainConfig, world_size: int) -> Tuple[int, float, str]:
    """(grad_accum, lr, what was done) for this many processes.

    The recipes hold lr at global batch lr_batch, as the official runs do (fewer GPUs: more accumulation). With
    grad_accum auto (None), accumulation is chosen to reach lr_batch when batch_size x processes divides it;
    otherwise, or with grad_accum set, the lr scales linearly to the global batch that results.

    Args:
        cfg: the run's config (`batch_size`, `grad_accum`, `lr`, `lr_batch`).
        world_size: the number of processes.

    Returns:
        (gradient accumulation steps, the effective lr, one line saying how they were chosen).
    """
    per_step = cfg.batch_size * world_size
    accum = cfg.grad_accum
    if cfg.lr_batch is None:
        accum = accum or 1
        return accum, cfg.lr, f"global batch {per_step * accum}; lr {cfg.lr:.6g} as given (lr_batch: none)"
    if accum is None and cfg.lr_batch % per_step == 0:
        accum = cfg.lr_batch // per_step
        return (
            accum,
            cfg.lr,
            (
                f"global batch {cfg.lr_batch} held as the recipe's: {cfg.batch_size} x {world_size} "
                f"processes x {accum} accumulation; lr {cfg.lr:.6g} as the recipe"
            ),
        )
    why = (
        "grad_accum set"
        if accum is not None
        else f"{cfg.lr_batch} is not a multiple of batch_size x processes = {per_step}"
    )
    accum = accum or 1
    lr = cfg.lr * per_step * accum / cfg.lr_batch
    return (
        accum,
        lr,
        (
            f"global batch {per_step * accum} ({why}): lr scaled linearly from {cfg.lr:.6g} at "
            f"{cfg.lr_batch} to {lr:.6g}"
        ),
    )


def create_training_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: Optional[str] = None,
    keep_classifier: bool = False,
    **kwargs,
) -> nn.Module:
    """`models.backbone.create_timm_model` for a training run: a bad name or file is a TrainError, a file whose
    head already has `num_classes` outputs keeps it, and `model.start_note` says where the weights came from.

    Args:
        name: a timm or zoo model name.
        num_classes: classes of the new head.
        pretrained: start from the model's pretrained weights.
        weights: a local weight file to start from instead.
        keep_classifier: load the file's classifier too (its head has `num_classes` outputs).
        **kwargs: more `timm.create_model` options (`drop_path_rate`, ...).

    Returns:
        The model, with `start_note` set.

    Raises:
        TrainError: the name is unknown, `weights` names no file, or the model cannot be built from the weights
            (the message carries the cause).
    """
    try:
        check_model_name(name)  # the close-match helper predict and info use
    except ValueError as e:
        raise TrainError(str(e)) from None
    if weights and not os.path.isfile(weights):
        raise TrainError(f"weight file not found: {weights}")
    file_classes = _head_size(name, weights) if weights else None
    keep = keep_classifier or file_classes == num_classes  # the file's head fits: keep it
    try:
        model = create_timm_model(name, num_classes, pretrained, weights, keep, **kwargs)
    except Exception as e:
        src = weights or ("its pretrained weights" if pretrained else "random init")
        raise TrainError(f"cannot build model {name!r} with {num_classes} classes from {src}: {e}") from e
    model.start_note = _start_note(model, name, num_classes, pretrained, weights, file_classes, keep_classifier)
    return model


def _head_size(name: str, weights: str) -> Optional[int]:
    """The class count of the classifier a weight file holds for model `name` (None when it cannot tell: the
    build that follows then reports what is wrong with the file)."""
    try:
        head = get_pretrained_cfg(name)
        head = head.to_dict().get("classifier") if head is not None else None
        state_dict = load_state_dict_file(weights)
    except Exception:  # noqa: BLE001 (any failure here is the build's to report)
        return None
    names = [head] if isinstance(head, str) else list(head or [])
    for h in names:
        w = state_dict.get(f"{h}.weight")
        if w is not None and w.dim() >= 1:
            return int(w.shape[0])
    return None


def _start_note(
    model: nn.Module,
    name: str,
    num_classes: int,
    pretrained: bool,
    weights: Optional[str],
    file_classes: Optional[int],
    keep_classifier: bool,
) -> str:
    """What a freshly built model started from, in words, for the run's `weights:` line."""
    if weights:
        src = f"the weight file {weights}"
        if keep_classifier or file_classes == num_classes:
            return f"{src} (all of it, the {num_classes}-class head too)"
        was = f"{file_classes}-class" if file_classes is not None else "its"
        return f"{src} (its body; the {was} head re-initialised for {num_classes} classes)"
    if pretrained:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        where = cfg.get("hf_hub_id") and f"hf-hub:{cfg['hf_hub_id']}" or cfg.get("url") or "timm"
        src = f"the pretrained weights of {name} ({where})"
        trained = cfg.get("num_classes")
        if trained and trained != num_classes:
            return f"{src}; the {trained}-class head re-initialised for {num_classes} classes"
        return src
    return "random initialisation (no pretrained weights, no weight file)"


def unknown_optimizer_message(opt: str) -> Optional[str]:
    """'unknown optimizer ... did you mean ...' when timm has no optimizer by that name, else None."""
    from timm.optim import list_optimizers

    names = list_optimizers()
    base = opt.lower().split("_")[-1]  # timm accepts prefixes such as lookahead_adamw
    if base in names:
        return None
    close = difflib.get_close_matches(base, names, n=4, cutoff=0.6)
    return (
        f"unknown optimizer opt: {opt!r}"
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + " (timm.optim.list_optimizers() has them all)"
    )


@contextlib.contextmanager
def torch_settings_restored():
    """The process-wide torch settings a run may change (TF32 and float32 matmul precision, the current CUDA
    device), back as they were when the block ends, by return or by error: a run leaves its caller's process as
    it found it."""
    flags = precision_flags()
    saved = [getattr(holder, name) for holder, name in flags]
    matmul = torch.get_float32_matmul_precision() if not hasattr(torch.backends, "fp32_precision") else None
    device = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        for (holder, name), value in zip(flags, saved):
            setattr(holder, name, value)
        if matmul is not None:
            torch.set_float32_matmul_precision(matmul)
        if device is not None:
            torch.cuda.set_device(device)


def precision_flags() -> List[Tuple[Any, str]]:
    """(holder, attribute) of every float32 precision flag of this torch: its fp32_precision settings (PyTorch
    2.9 and later, each readable whatever mix of old and new calls set them), else the allow_tf32 pair."""
    b = torch.backends
    if hasattr(b, "fp32_precision"):
        holders = [b, b.cuda.matmul, b.cudnn, b.cudnn.conv, b.cudnn.rnn, b.mkldnn, b.mkldnn.matmul, b.mkldnn.conv]
        return [(h, "fp32_precision") for h in holders + [b.mkldnn.rnn] if hasattr(h, "fp32_precision")]
    return [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]


def use_official_fp32(device: torch.device) -> None:
    """amp: none trains as the official runs did (fp32 under PyTorch's defaults: TF32 convolutions through
    cuDNN, fp32 matmuls), whatever this process set before."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def precision_note(amp: str, device: torch.device) -> str:
    if amp == "none":
        return "fp32 as the official runs (" + (
            "TF32 convolutions and fp32 matmuls, PyTorch's defaults)" if device.type == "cuda" else "on the CPU)"
        )
    return f"{amp} autocast (the official runs are fp32: amp: none reproduces them)"


def autocast_for(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


WARMUP_SHARE = 0.25  # a warm-up longer than this share of the run is named: the run spends too little at its peak lr


def warmup_note(cfg: TrainConfig, updates_per_epoch: int) -> Optional[str]:
    """A warning naming the warm-up key when the warm-up takes more than a quarter of the run's updates (a warm-up
    sized for another data set, e.g. a demo's warmup_iters on a smaller set of one's own), else None."""
    if cfg.iters is not None:
        key, value, warmup, total = "warmup_iters", cfg.warmup_iters, cfg.warmup_iters, cfg.iters
    elif cfg.warmup_iters:
        key, value, warmup = "warmup_iters", cfg.warmup_iters, cfg.warmup_iters
        total = (cfg.epochs + cfg.cooldown_epochs) * updates_per_epoch
    else:
        key, value, warmup = "warmup_epochs", cfg.warmup_epochs, cfg.warmup_epochs * updates_per_epoch
        total = (cfg.epochs + cfg.cooldown_epochs) * updates_per_epoch
    if warmup <= WARMUP_SHARE * total:
        return None
    quarter_epochs = math.floor(WARMUP_SHARE * (cfg.epochs + cfg.cooldown_epochs))
    if key == "warmup_epochs" and quarter_epochs >= 1:
        quarter = f"warmup_epochs {quarter_epochs}"
    else:
        quarter = f"warmup_iters {math.floor(WARMUP_SHARE * total)}" + (
            " with warmup_epochs 0" * (key != "warmup_iters")
        )
    return (
        f"warning: the lr warm-up takes {min(warmup, total)} of the run's {total} updates ({key} {value}"
        f"{'' if cfg.iters is not None else f', {updates_per_epoch} updates an epoch'}), so the lr peaks "
        f"{'only after the run ends' if warmup >= total else 'late in the run'}; a quarter of the run is {quarter}"
    )


def state_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer, to tell whether replicas hold bit-identical weights."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class RunResult:
    """Where a run's outputs went and how it ended.

    Args:
        out_dir: the run folder.
        last_checkpoint: last.pth, the resume point.
        best_checkpoint: model_best.pth.
        log_path: the CSV log.
        plot_path: the curves plot; None when none was drawn.
        config_path: the config.yaml the run wrote.
        best_top1: the best main metric when it is top-1 (classification), else None.
        best_epoch: the round that scored it.
        epochs_done: rounds completed.
        history: one row of metrics per round.
        model: the trained model (on the main process).
        replicas_in_sync: whether every process ended with bit-identical weights (None: one process).
        best_metric: the task's main metric, which picked best_checkpoint.
        best_value: its best value.
    """

    out_dir: str
    last_checkpoint: str
    best_checkpoint: str
    log_path: str
    plot_path: Optional[str]
    config_path: str
    best_top1: Optional[float]  # the best main metric when it is top-1 (classification), else None
    best_epoch: int
    epochs_done: int
    history: List[Dict[str, Any]] = field(default_factory=list)
    model: Optional[nn.Module] = None
    replicas_in_sync: Optional[bool] = None
    best_metric: str = "top1"  # the task's main metric, which picked best_checkpoint
    best_value: Optional[float] = None


class Trainer:
    """Holds the pieces of one run; ``fit()`` runs it from start or from its resume point to the end.

    Building it builds everything (task, data, model, optimizer, loaders, schedule) and locks the run folder.

    Args:
        cfg: the run's config.
        env: the process's distributed environment.

    Raises:
        TrainError: a setting cannot run here, the task or model is unknown, the classes do not match the data,
            the optimizer cannot be built, or the run folder is held by another run.
        DataError: the task's data cannot be used (a missing or empty folder, an unreadable image).
        CheckpointError: the checkpoint to resume from cannot be read or does not fit the run.
    """

    def __init__(self, cfg: TrainConfig, env: dist_lib.DistEnv):
        if cfg.task in TASKS and type(cfg) is not config_class(cfg.task):  # e.g. a bare TrainConfig
            cfg = apply_overrides(config_class(cfg.task)(), config_to_dict(cfg), "the config")
        grad_accum, self.lr, self.batch_plan = plan_batch(cfg, env.world_size)
        workers, workers_note = loader_workers(cfg.workers)  # the machine's cores, at most (torch warns past them)
        if workers_note and env.is_main:
            print(workers_note, flush=True)
        # resolved once; config.yaml records them
        self.cfg = dataclasses.replace(cfg, grad_accum=grad_accum, workers=workers)
        self.env, self.device = env, env.device
        self._check_settings()
        self._build_task_data_and_model()
        self._build_optimizer()
        self._wrap_for_training()
        self._build_loaders_and_schedule()
        try:
            self._prepare_run_folder()
        except BaseException:
            self.release_folder()
            raise

    def _check_settings(self) -> None:
        """Settings that cannot run here fail before anything is built."""
        cfg = self.cfg
        env = self.env
        if cfg.amp == "none":
            use_official_fp32(self.device)
        if cfg.sync_bn and env.distributed and self.device.type != "cuda":
            raise TrainError("sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernel); set sync_bn: false")
        if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
            raise TrainError("batch_size, grad_accum and epochs must each be at least 1")
        if env.is_main:  # a missing tracking library is said before anything is built
            try:
                check_trackers(cfg.track)
            except TrackingError as e:
                raise TrainError(str(e)) from None

    def _build_task_data_and_model(self) -> None:
        """The task the config names, its datasets, and the model on the device (the same init on every rank)."""
        cfg = self.cfg
        env = self.env
        try:
            task_cls = get_task(cfg.task)
        except ValueError as e:
            raise TrainError(str(e)) from None
        problem = run_kind_problem(cfg.task, task_cls.settings, cfg.iters)
        if problem:
            raise TrainError(problem)
        self.task = task_cls(cfg, env)
        # identical model init on every rank; per-rank streams for augmentation come after
        seed_everything(cfg.seed)
        self.train_set, self.val_set, data_classes = self.task.build_datasets()
        self.num_classes = cfg.num_classes or data_classes
        if self.num_classes != data_classes:
            raise TrainError(f"num_classes is {self.num_classes} but the dataset has {data_classes} classes")
        self.model = self.task.build_model(self.num_classes)
        self.start_note = self.task.describe_start(self.model)
        self.data_cfg = self.task.data_config(self.model)
        if cfg.sync_bn and env.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _build_optimizer(self) -> None:
        """timm's optimizer (layer decay included) and, for fp16, the loss scaler."""
        cfg = self.cfg
        env = self.env
        self.world_batch = cfg.batch_size * env.world_size * cfg.grad_accum
        try:
            self.optimizer = create_optimizer_v2(
                self.model,
                opt=cfg.opt,
                lr=self.lr,
                weight_decay=cfg.weight_decay,
                momentum=cfg.momentum,
                layer_decay=cfg.layer_decay,
            )
        except (ValueError, AssertionError) as e:
            raise TrainError(unknown_optimizer_message(cfg.opt) or f"cannot build optimizer {cfg.opt!r}: {e}") from e
        # fp16 needs loss scaling; torch's GradScaler runs on CUDA and on the CPU alike
        self.scaler = NativeScaler(device=self.device.type) if cfg.amp == "fp16" else None

    def _wrap_for_training(self) -> None:
        """DDP, the EMA copy and torch.compile around the model."""
        cfg = self.cfg
        env = self.env
        self.train_model: nn.Module = self.model
        if env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # after DDP has broadcast rank 0's weights, so every rank's EMA starts from the same copy
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup) if cfg.ema else None
        self.eval_model = self.model
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
            self.eval_model = torch.compile(self.model)

    def _build_loaders_and_schedule(self) -> None:
        """The task's loaders and timm's lr schedule, stepped per optimizer update (an iteration run's epoch is a round of eval_interval updates)."""
        cfg = self.cfg
        if cfg.iters is not None and (cfg.iters < 1 or cfg.eval_interval < 1 or cfg.iters % cfg.eval_interval):
            raise TrainError(f"iters ({cfg.iters}) must be a positive multiple of eval_interval ({cfg.eval_interval})")
        round_sampler = None
        if cfg.iters is not None:  # one round: eval_interval updates of grad_accum batches on each rank
            samples = cfg.eval_interval * cfg.grad_accum * cfg.batch_size
            round_sampler = RoundSampler(len(self.train_set), samples, cfg.seed, self.env.rank, self.env.world_size)
        self.train_loader, self.val_loader = self.task.build_loaders(
            self.train_set, self.val_set, self.data_cfg, self.num_classes, round_sampler
        )
        if len(self.train_loader) == 0:
            raise TrainError(
                f"the training set ({len(self.train_set)} images) is smaller than one batch "
                f"({cfg.batch_size} per process); lower batch_size"
            )

        self.updates_per_epoch = math.ceil(len(self.train_loader) / cfg.grad_accum)
        self.schedule_note = None
        if cfg.iters is None and cfg.min_updates and cfg.epochs * self.updates_per_epoch < cfg.min_updates:
            epochs = math.ceil(cfg.min_updates / self.updates_per_epoch)
            self.schedule_note = (
                f"epochs {cfg.epochs} -> {epochs}: min_updates {cfg.min_updates} at {self.updates_per_epoch} "
                "updates per epoch"
            )
            self.cfg = cfg = dataclasses.replace(cfg, epochs=epochs)  # config.yaml records the epochs run
        if cfg.iters is None:
            length, cooldown, per_epoch = cfg.epochs, cfg.cooldown_epochs, self.updates_per_epoch
            warmup = cfg.warmup_epochs
            if cfg.warmup_iters:  # a warm-up counted in updates: a fraction of an epoch to timm's schedule
                if cfg.warmup_epochs:
                    raise TrainError(
                        f"warmup_epochs ({cfg.warmup_epochs}) and warmup_iters ({cfg.warmup_iters}) are both set; an "
                        "epoch run warms up for one of them (set the other to 0)"
                    )
                warmup = cfg.warmup_iters / self.updates_per_epoch
        else:  # the schedule counts updates; an "epoch" is one round of eval_interval updates
            length, warmup, cooldown, per_epoch = cfg.iters, cfg.warmup_iters, 0, 1
        self.scheduler, total_epochs = create_scheduler_v2(
            self.optimizer,
            sched=cfg.sched,
            num_epochs=length,
            warmup_epochs=warmup,
            warmup_lr=cfg.warmup_lr,
            min_lr=cfg.min_lr,
            cooldown_epochs=cooldown,
            decay_rate=cfg.decay_rate,
            step_on_epochs=False,
            updates_per_epoch=per_epoch,
        )
        self.total_epochs = total_epochs if cfg.iters is None else cfg.iters // cfg.eval_interval
        note = warmup_note(cfg, self.updates_per_epoch)
        if note:
            self._log(note)

    def _prepare_run_folder(self) -> None:
        """The run folder: temp files of killed writes swept, the resume point read, config.yaml written."""
        cfg = self.cfg
        env = self.env
        self.out_dir = self._run_dir()
        self.paths = {
            name: os.path.join(self.out_dir, f)
            for name, f in (
                ("last", "last.pth"),
                ("best", "model_best.pth"),
                ("log", "log.csv"),
                ("plot", "curves.png"),
                ("config", "config.yaml"),
            )
        }
        self.start_epoch = 0
        self.history: List[Dict[str, Any]] = []
        self.best = {self.task.main_metric: -1.0, "epoch": 0}
        self._resume_rng = None
        if env.is_main:  # what killed writes left behind (the run folder is this run's own)
            gone = sweep_temp_files(self.out_dir, legacy=True)
            for old in (
                self.paths["log"] + ".tmp",
                self.paths["config"] + ".tmp",  # earlier versions' naming
                self.paths["plot"] + ".tmp.png",
            ):
                if os.path.isfile(old):
                    os.remove(old)
                    gone.append(old)
            if gone:
                self._log(f"removed {len(gone)} temp file(s) left by an interrupted write in {self.out_dir}")
        if cfg.resume:
            self._resume()
        if env.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
            save_config(
                cfg,
                self.paths["config"],
                extra_comment=(
                    f"effective config of {self.out_dir}\n"
                    f"global batch {self.world_batch} = {cfg.batch_size} x {env.world_size} processes x "
                    f"{cfg.grad_accum} accumulation; effective lr {self.lr:.6g}\n{self.batch_plan}"
                ),
            )

    # ----------------------------------------------------------------------------------------------- set-up
    def _run_dir(self) -> str:
        """The run folder, locked for this run (rank 0 holds the lock; the caller broadcasts the path)."""
        cfg = self.cfg
        if cfg.resume and cfg.resume != "auto":  # continue in the folder the checkpoint lives in
            return self._locked(os.path.dirname(os.path.abspath(cfg.resume)))
        name = cfg.experiment
        if name is None:
            if cfg.resume == "auto":
                raise TrainError("resume: auto needs an experiment name to find <output>/<experiment>/last.pth")
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{cfg.model}-{stamp}"
        path = os.path.join(cfg.output, name.replace("{model}", cfg.model))
        if cfg.resume != "auto":
            path = self._unused_run_dir(path)
        else:
            path = self._locked(path)
        return dist_lib.broadcast_object(path, self.env)

    def _locked(self, path: str) -> str:
        """`path`, locked for this run; a TrainError naming the live run that holds it."""
        if self.env.is_main:
            self._folder_lock = try_lock_folder(path)
            if self._folder_lock is None:
                raise TrainError(
                    f"{path} is in use by another run ({folder_holder(path)}); wait for it to end, or write "
                    "this run elsewhere (another --output or --experiment)"
                )
        return path

    def _unused_run_dir(self, path: str) -> str:
        """`path`, or `path-2`, `-3` ... when it already holds a run's checkpoints or a live run holds it: a new
        run never replaces another's files (rank 0 decides and locks the folder; the caller broadcasts)."""

        def taken(p):
            return any(os.path.exists(os.path.join(p, f)) for f in ("last.pth", "model_best.pth"))

        if not self.env.is_main:
            return path
        n, candidate, busy = 1, path, None
        while True:
            if not taken(candidate):
                self._folder_lock = try_lock_folder(candidate)
                if self._folder_lock is not None:
                    break
                busy = busy or f"{candidate} is in use by another run ({folder_holder(candidate)})"
            n += 1
            candidate = f"{path}-{n}"
        if candidate != path:
            self._log(
                (busy or f"{path} holds an earlier run")
                + f"; this one writes to {candidate}"
                + (
                    ""
                    if busy
                    else f" (to continue that run instead: --resume {os.path.join(path, 'last.pth')}, or --resume auto)"
                )
            )
        return candidate

    def release_folder(self) -> None:
        """Let another run into this run's folder (the process's end does too)."""
        lock, self._folder_lock = getattr(self, "_folder_lock", None), None
        if lock is not None:
            lock.release()

    def _resume(self) -> None:
        path = self.cfg.resume
        if path == "auto":
            path = os.path.join(self.out_dir, "last.pth")
            if not os.path.isfile(path):
                self._log(f"resume: auto found no checkpoint at {path}; starting from scratch")
                return
        ckpt = ckpt_lib.load_checkpoint_file(path)
        ckpt_lib.check_fits(ckpt, path, self.model, self.cfg.model, self.num_classes)
        ckpt_lib.check_same_schedule(ckpt, path, config_to_dict(self.cfg))
        self.model.load_state_dict(ckpt["state_dict"])
        if self.ema is not None:
            if ckpt.get("state_dict_ema") is None:
                raise ckpt_lib.CheckpointError(f"{path} has no EMA weights, but this run has ema: true")
            self.ema.module.load_state_dict(ckpt["state_dict_ema"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise ckpt_lib.CheckpointError(
                f"optimizer state in {path} does not fit this run's optimizer ({self.cfg.opt}): {e}"
            ) from e
        if ckpt.get("scheduler") is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.history = list(ckpt.get("history") or [])
        self.best = dict(ckpt.get("best") or self.best)
        if self.env.is_main:
            self._reconcile_best(ckpt, path)
        rng = ckpt.get("rng") or []
        if len(rng) == self.env.world_size:
            self._resume_rng = rng[self.env.rank]
        else:
            self._log(
                f"resume: checkpoint has RNG states for {len(rng)} processes, this run has "
                f"{self.env.world_size}; augmentation will not replay exactly"
            )
        self._log(f"resumed from {path} after epoch {self.start_epoch}")

    def _reconcile_best(self, last: Dict[str, Any], last_path: str) -> None:
        """Make model_best.pth and the best record agree. model_best.pth is written before last.pth, so a kill or
        a full disk between the two leaves it ahead (its record is kept as the best to beat). A best file that
        lags (damaged, deleted, or from a version that wrote it second) is rebuilt from last.pth when that is the
        best epoch; otherwise the run says which weights were lost and reports the best it really holds."""
        best_path, recorded, main = self.paths["best"], dict(self.best), self.task.main_metric
        if not recorded.get("epoch"):
            return
        held, problem = None, "it is missing"
        if os.path.isfile(best_path):
            try:
                held = ckpt_lib.load_checkpoint_file(best_path)
                problem = f"it holds epoch {held['epoch']}"
            except ckpt_lib.CheckpointError as e:
                problem = f"it cannot be used ({e})"
        if held is not None and held["epoch"] == recorded["epoch"]:
            return
        if held is not None and held["epoch"] > int(last["epoch"]):
            ahead = dict(held.get("best") or {})
            if ahead.get(main, -1.0) > recorded.get(main, -1.0):
                self.best = ahead
                self._log(
                    f"resume: {best_path} holds epoch {held['epoch']} (written just before the run stopped, "
                    f"{main} {ahead[main]:.2f}); it stays the best to beat"
                )
            return
        if recorded["epoch"] == int(last["epoch"]):
            write_atomically(best_path, lambda tmp: shutil.copyfile(last_path, tmp))
            self._log(
                f"resume: {best_path} lagged behind the best epoch {recorded['epoch']} ({problem}); "
                f"rebuilt it from {last_path}"
            )
            return
        self.best = dict(held.get("best") or {main: -1.0, "epoch": 0}) if held is not None else {main: -1.0, "epoch": 0}
        now = (
            f"the best to beat is now its epoch {self.best['epoch']} ({main} {self.best.get(main, -1.0):.2f})"
            if held is not None
            else "the next epoch's checkpoint becomes the best"
        )
        self._log(
            f"resume: warning: {best_path} does not hold the best epoch {recorded['epoch']} "
            f"({main} {recorded.get(main, -1.0):.2f}) that {last_path} records: {problem}; "
            f"those weights are lost, {now}"
        )

    def _start_line(self) -> str:
        if self.start_epoch:
            last = self.paths["last"] if self.cfg.resume == "auto" else self.cfg.resume
            at = (
                f"epoch {self.start_epoch}"
                if self.cfg.iters is None
                else f"iteration {self.start_epoch * self.cfg.eval_interval}"
            )
            return f"resumed from {last} after {at} (model, optimizer and schedule)"
        return self.start_note

    def _log(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, flush=True)

    # ----------------------------------------------------------------------------------------------- loop
    def _train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, env, device = self.cfg, self.env, self.device
        self.train_model.train()
        loader = self.train_loader
        if hasattr(loader.sampler, "set_epoch"):  # DDP's sampler, and the iteration-based tasks' own
            loader.sampler.set_epoch(epoch)
        n = len(loader)
        full = (n // cfg.grad_accum) * cfg.grad_accum
        num_updates = epoch * self.updates_per_epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        bar = tqdm(
            loader,
            desc=self._round_name(epoch),
            leave=False,
            dynamic_ncols=True,
            disable=None if (cfg.progress and env.is_main) else True,
        )
        self.optimizer.zero_grad(set_to_none=True)
        applied_lr = self.base_lr
        for i, batch in enumerate(bar):
            group = cfg.grad_accum if i < full else n - full
            step_now = (i + 1) % cfg.grad_accum == 0 or i + 1 == n
            no_sync = self.train_model.no_sync if (env.distributed and not step_now) else contextlib.nullcontext
            with no_sync():
                with autocast_for(cfg.amp, device):
                    loss, count = self.task.train_loss(self.train_model, batch)
                self._check_finite(loss, epoch, i)
                if self.scaler is not None:
                    self.scaler(
                        loss / group,
                        self.optimizer,
                        clip_grad=cfg.clip_grad,
                        clip_mode=cfg.clip_mode,
                        parameters=self._clipped_parameters(),
                        need_update=step_now,
                    )
                else:
                    (loss / group).backward()
                    if step_now:
                        if cfg.clip_grad is not None:
                            dispatch_clip_grad(self._clipped_parameters(), cfg.clip_grad, mode=cfg.clip_mode)
                        self.optimizer.step()
            loss_sum += loss.detach().double() * count
            seen += count
            if step_now:
                applied_lr = self.base_lr  # the rate this update used, before the scheduler moves it on
                self.optimizer.zero_grad(set_to_none=True)
                num_updates += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=num_updates)
                if self.scheduler is not None:
                    self.scheduler.step_update(num_updates=num_updates)
            if not bar.disable and (i % 10 == 0 or i + 1 == n):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.base_lr:.2e}")
        if self.scheduler is not None:
            self.scheduler.step(epoch + 1)
        totals = dist_lib.all_reduce_sum(
            torch.stack([loss_sum, torch.tensor(float(seen), dtype=torch.float64, device=device)]), env
        )
        # the logged lr is the one the interval's last update applied (a warm-up's start would misreport it)
        return {"train_loss": (totals[0] / totals[1]).item(), "lr": applied_lr}

    def _clipped_parameters(self):
        """What gradient clipping sees: every parameter, but the head's last layer under AGC (as timm's train.py:
        adaptive clipping is meant for the body, and would hold back a freshly initialized classifier)."""
        return model_parameters(self.model, exclude_head=self.cfg.clip_mode == "agc")

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Every rank learns if any rank's loss is NaN/inf, so all stop together before a bad update."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        dist_lib.all_reduce_sum(bad, self.env)
        if bad.item() > 0:
            last = self.paths["last"] if os.path.isfile(self.paths["last"]) else None
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopping. "
                + (
                    f"The last good checkpoint is {last} (epoch {self.start_epoch_done})."
                    if last
                    else "No checkpoint was written yet."
                )
                + " Lower lr, enable clip_grad, or use amp: bf16 instead of fp16."
            )

    def _round_name(self, epoch: int) -> str:
        if self.cfg.iters is None:
            return f"epoch {epoch + 1}/{self.total_epochs}"
        return f"iter {(epoch + 1) * self.cfg.eval_interval}/{self.cfg.iters}"

    @property
    def base_lr(self) -> float:
        """The scheduled lr before layer-wise decay (param group 0 is the stem, scaled down by lr_scale)."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group.get("lr_scale", 1.0)

    @property
    def best_key(self) -> str:
        """The task's main metric that picks model_best.pth; with EMA on, the EMA weights' (timm's train.py
        scores them too)."""
        main = self.task.main_metric
        return f"ema_val_{main}" if (self.cfg.best_on in ("auto", "ema") and self.ema is not None) else f"val_{main}"

    @property
    def start_epoch_done(self) -> int:
        """The rounds already done when the run started (a resumed run's history)."""
        return len(self.history)

    def _skipped(self) -> int:
        total = 0
        for ds in (self.train_set, self.val_set):
            if hasattr(ds, "skipped"):
                total += ds.skipped
                ds.reset_skipped()
        return int(dist_lib.all_reduce_sum(torch.tensor(float(total), device=self.device), self.env).item())

    def _save(self, epoch_done: int, is_best: bool) -> None:
        rng = dist_lib.gather_objects(ckpt_lib.capture_rng(), self.env)
        if not self.env.is_main:
            return
        state = ckpt_lib.make_checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            scaler=self.scaler,
            epoch=epoch_done,
            model_name=self.cfg.model,
            num_classes=self.num_classes,
            config=config_to_dict(self.cfg),
            history=self.history,
            best=self.best,
            rng=rng,
            **self.task.checkpoint_record(self.data_cfg, self.train_set),
            scored_weights="state_dict_ema" if self.best_key.startswith("ema_") else "state_dict",
        )
        if is_best:  # first: last.pth, which records this best, must never be ahead of model_best.pth
            ckpt_lib.save_atomic(state, self.paths["best"])
        ckpt_lib.save_atomic(state, self.paths["last"])
        write_csv(self.history, self.paths["log"], self.task.log_columns)

    def fit(self) -> RunResult:
        """Run from the start or the resume point to the end; the run folder is let go however it ends.

        Returns:
            Where the outputs went.

        Raises:
            NonFiniteLossError: the loss became NaN or infinite.
            TrainError: the run cannot go on; the message says why.
        """
        try:
            return self._fit()
        finally:
            self.release_folder()

    def _fit(self) -> RunResult:
        cfg, env = self.cfg, self.env
        self._log(
            f"training {cfg.model} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M params, "
            f"{self.num_classes} classes) on {env.world_size} x {self.device.type}; "
            f"{len(self.train_set)} train / {len(self.val_set)} val images at "
            f"{self.data_cfg['input_size'][1]}px; output {self.out_dir}\n  {self.batch_plan}\n"
            + (f"  schedule: {self.schedule_note}\n" if self.schedule_note else "")
            + f"  precision: {precision_note(cfg.amp, self.device)}\n"
            f"  weights: {self._start_line()}"
        )
        # per-rank augmentation streams; on resume, the exact streams the killed run would have used next
        if self._resume_rng is not None:
            ckpt_lib.restore_rng(self._resume_rng)
        else:
            seed_everything(cfg.seed + env.rank + 1000 * self.start_epoch)
        main, best_key = self.task.main_metric, self.best_key
        self.trackers = Trackers([], self.out_dir)
        if env.is_main:  # only the main process logs to the trackers
            self.trackers = Trackers.open(
                cfg.track, self.out_dir, config_to_dict(cfg), cfg.mlflow_uri, cfg.output, self.start_epoch
            )
        for epoch in range(self.start_epoch, self.total_epochs):
            t0 = time.time()
            row: Dict[str, Any] = {"epoch": epoch + 1, "lr": self.base_lr}
            if cfg.iters is not None:
                row["iter"] = (epoch + 1) * cfg.eval_interval
            row.update(self._train_epoch(epoch))
            if env.distributed and not cfg.sync_bn:
                distribute_bn(self.model, env.world_size, reduce=True)  # one set of BN statistics for all ranks
                if self.ema is not None:  # and for the EMA copy, as the official loop does before scoring it
                    distribute_bn(self.ema.module, env.world_size, reduce=True)
            val = self.task.evaluate(self.eval_model, self.val_loader, desc=f"val {epoch + 1}")
            row.update({f"val_{k}": v for k, v in val.items()})
            if self.ema is not None:
                ema_val = self.task.evaluate(self.ema.module, self.val_loader, desc=f"val EMA {epoch + 1}")
                row.update({f"ema_val_{k}": v for k, v in ema_val.items() if k != "count"})
            row["skipped_images"] = self._skipped()
            row["epoch_time_s"] = round(time.time() - t0, 2)
            self.history.append(row)
            is_best = row[best_key] > self.best[main]
            if is_best:
                self.best = {main: row[best_key], "epoch": epoch + 1}
            self._save(epoch + 1, is_best)
            if env.is_main:
                if is_best:  # the task's pictures and per-class files show the weights model_best.pth holds
                    scored = self.ema.module if best_key.startswith("ema_") else self.eval_model
                    self.task.after_validation(scored, self.out_dir, epoch + 1)
                self.trackers.log_epoch(row, epoch + 1, self.task.extra_outputs(self.out_dir))
            ema_txt = f" | EMA {self.task.metric_label} {row[f'ema_val_{main}']:.2f}" if self.ema is not None else ""
            skip_txt = f" | skipped {row['skipped_images']} unreadable images" if row["skipped_images"] else ""
            self._log(
                f"{self._round_name(epoch)} | train loss {row['train_loss']:.4f} | "
                f"{self.task.describe(row)}{ema_txt}"
                f" | lr {row['lr']:.2e} | {row['epoch_time_s']:.1f}s{skip_txt}"
            )
            if cfg.stop_after_epoch is not None and epoch + 1 == cfg.stop_after_epoch and epoch + 1 < self.total_epochs:
                self._log(
                    f"stopping after epoch {epoch + 1} as asked (stop_after_epoch); continue with "
                    f"--resume {self.paths['last']}"
                )
                break
            if cfg.patience is not None and epoch + 1 - self.best["epoch"] >= cfg.patience:
                if epoch + 1 < self.total_epochs:
                    self._log(
                        f"early stop after {self._round_name(epoch)}: no better val {self.task.metric_label} than "
                        f"{self.best[main]:.2f} ({self._best_at()}) in {cfg.patience} validations (patience)"
                    )
                    break
        return self._finish()

    def _best_at(self) -> str:
        if self.cfg.iters is None:
            return f"epoch {self.best['epoch']}"
        return f"iteration {self.best['epoch'] * self.cfg.eval_interval}"

    def _finish(self) -> RunResult:
        env = self.env
        in_sync = None
        if env.distributed:
            mine = state_digest(self.model) + (state_digest(self.ema.module) if self.ema is not None else "")
            digests = dist_lib.gather_objects(mine, env)  # the EMA copy too: it is what model_best.pth may hold
            in_sync = len(set(digests)) == 1
            self._log(f"weights identical on all {env.world_size} ranks: {'yes' if in_sync else 'NO'}")
        plot_path = None
        if env.is_main and self.history:
            write_csv(self.history, self.paths["log"], self.task.log_columns)
            if self.cfg.plot:
                plot_path = self.paths["plot"]
                plot_curves(
                    self.history, plot_path, title=f"{self.cfg.model} ({self.out_dir})", metrics=self.task.plot_metrics
                )
        if env.is_main:
            files = {"best": self.paths["best"], "log": self.paths["log"], "config": self.paths["config"]}
            files.update(self.task.extra_outputs(self.out_dir), plot=plot_path)
            self.trackers.finish(files)
        dist_lib.barrier(env)
        done = len(self.history)
        main = self.task.main_metric
        if self.cfg.iters is None:
            progress, best_at = f"{done}/{self.total_epochs} epochs", f"epoch {self.best['epoch']}"
        else:  # an iteration run's epochs are rounds of eval_interval updates
            step = self.cfg.eval_interval
            progress, best_at = f"{done * step}/{self.cfg.iters} iterations", f"iteration {self.best['epoch'] * step}"
        best_row = next((r for r in self.history if r.get("epoch") == self.best["epoch"]), None)
        self._log(
            f"done: {progress}; best val {self.task.metric_label} {self.best[main]:.2f}% at {best_at}"
            + (f" ({self.task.describe(best_row)})" if best_row else "")
            + "\n"
            f"  checkpoint: {self.paths['best']} (latest: {self.paths['last']}); its "
            f"{'EMA' if self.best_key.startswith('ema_') else 'model'} weights scored best, and validate, "
            "predict, convert and export load them by default\n"
            f"  log:        {self.paths['log']}\n"
            f"  plot:       {plot_path or '(not drawn)'}\n"
            f"  config:     {self.paths['config']}"
            + "".join(f"\n  {k + ':':<11} {v}" for k, v in self.task.extra_outputs(self.out_dir).items())
            + "".join(f"\n{line}" for line in self.task.run_summary(self.out_dir, self.paths["best"]))
        )
        return RunResult(
            out_dir=self.out_dir,
            last_checkpoint=self.paths["last"],
            best_checkpoint=self.paths["best"],
            log_path=self.paths["log"],
            plot_path=plot_path,
            config_path=self.paths["config"],
            best_top1=self.best[main] if main == "top1" else None,
            best_epoch=self.best["epoch"],
            epochs_done=done,
            history=self.history,
            model=self.model,
            replicas_in_sync=in_sync,
            best_metric=main,
            best_value=self.best[main],
        )


class RunInterrupted(Exception):
    """The run was stopped by Ctrl-C (SIGINT); `last_checkpoint` is what it can be resumed from (None: none yet)."""

    def __init__(self, last_checkpoint: Optional[str]):
        super().__init__(
            "interrupted: "
            + (
                f"resume with: inceptionnext train --resume {last_checkpoint}"
                if last_checkpoint
                else "no checkpoint was written yet; start it again"
            )
        )
        self.last_checkpoint = last_checkpoint


def fit(cfg: TrainConfig) -> RunResult:
    """Train per cfg (under torchrun: one process per device); returns where the outputs went. Ctrl-C is a
    RunInterrupted naming the checkpoint to resume from (checkpoints are written atomically: the last whole one).
    The torch settings a run changes (precision flags, the CUDA device) are restored when it returns or raises.

    Args:
        cfg: the run's config (`make_config`, `parse_config` or `load_yaml` + `apply_overrides`).

    Returns:
        Where the outputs went, the best metric and the history.

    Raises:
        TrainError: the run cannot start or go on (a bad setting, model, data or a distributed timeout); the
            message says why.
        DataError: the task's data cannot be used (a missing or empty folder, an unreadable image).
        CheckpointError: the checkpoint to resume from cannot be read or does not fit.
        RunInterrupted: Ctrl-C; the message names the checkpoint to resume from.
    """
    with torch_settings_restored():
        return _fit(cfg)


def _fit(cfg: TrainConfig) -> RunResult:
    env = dist_lib.setup(cfg.device, cfg.dist_timeout)
    trainer = None
    try:
        trainer = Trainer(cfg, env)
        return trainer.fit()
    except KeyboardInterrupt:
        last = os.path.join(trainer.out_dir, "last.pth") if trainer is not None else None
        raise RunInterrupted(last if last and os.path.isfile(last) else None) from None
    except dist_lib.CollectiveTimeout as e:
        raise TrainError(str(e)) from e
    except RuntimeError as e:  # DDP's own gradient all-reduce, inside backward
        if env.distributed and dist_lib.is_timeout(e) and not isinstance(e, TrainError):
            raise TrainError(str(dist_lib.timeout_error("the gradient all_reduce (DDP)", e))) from e
        raise
    finally:
        dist_lib.cleanup()
