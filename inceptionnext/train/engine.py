"""The training engine: builds everything from a TrainConfig out of timm's parts and runs the epoch loop.

The engine never knows which model it trains: it asks timm for one by name. Each epoch ends with a checkpoint
(written by rank 0 only) that is also the resume point, so a killed run loses at most the epoch in progress.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import timm
from timm.data import resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad, distribute_bn
from tqdm import tqdm

from .. import models as _models  # noqa: F401  (registers this library's models with timm)
from ..weights import sweep_temp_files, write_atomically
from . import checkpoint as ckpt_lib
from . import distributed as dist_lib
from .config import TrainConfig, config_to_dict, effective_lr, save_config
from .data import build_datasets, build_eval_loader, build_mixup, build_train_loader, class_names
from .logs import plot_curves, write_csv


class TrainError(RuntimeError):
    """The run cannot go on (bad model, non-finite loss, ...); the message says why."""


class NonFiniteLossError(TrainError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: Optional[str] = None,
                 keep_classifier: bool = False, **kwargs) -> nn.Module:
    """timm.create_model by name; a local weight file goes through timm's pretrained path (our loader plugs in
    there), which drops the classifier and leaves a fresh head when the class count differs from the weights'
    config (1000). keep_classifier declares the file's head to have num_classes outputs, so it is loaded."""
    if not timm.is_model(name):
        close = [m for m in timm.list_models(f"*{name.split('_')[0]}*")][:8]
        raise TrainError(f"unknown model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    overlay = None
    if weights:
        if not os.path.isfile(weights):
            raise TrainError(f"weight file not found: {weights}")
        overlay = dict(file=os.path.abspath(weights))
        if keep_classifier:
            overlay["num_classes"] = num_classes
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                 pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as e:
        src = weights or ("its pretrained weights" if pretrained else "random init")
        raise TrainError(f"cannot build model {name!r} with {num_classes} classes from {src}: {e}") from e


def autocast_for(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, env: Optional[dist_lib.DistEnv] = None,
             amp: str = "none", channels_last: bool = False, progress: bool = False,
             desc: str = "val") -> Dict[str, float]:
    """Top-1, top-5 (top-k capped at the class count) and cross-entropy, summed over all ranks' shares."""
    env = env or dist_lib.DistEnv(device=device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, count
    bar = tqdm(loader, desc=desc, disable=None if (progress and env.is_main) else True, leave=False,
               dynamic_ncols=True)  # None: shown on a terminal, silent in logs
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(amp, device):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        sums += torch.stack([nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                             hit[:, :1].sum().double(), hit.sum().double(),
                             torch.tensor(float(y.numel()), dtype=torch.float64, device=device)])
    dist_lib.all_reduce_sum(sums, env)
    model.train(was_training)
    loss, c1, c5, n = sums.tolist()
    if n == 0:
        raise TrainError("the validation set is empty")
    return {"loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "count": int(n)}


def state_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer, to tell whether replicas hold bit-identical weights."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class RunResult:
    out_dir: str
    last_checkpoint: str
    best_checkpoint: str
    log_path: str
    plot_path: Optional[str]
    config_path: str
    best_top1: float
    best_epoch: int
    epochs_done: int
    history: List[Dict[str, Any]] = field(default_factory=list)
    model: Optional[nn.Module] = None
    replicas_in_sync: Optional[bool] = None


class Trainer:
    """Holds the pieces of one run; ``fit()`` runs it from start or from its resume point to the end."""

    def __init__(self, cfg: TrainConfig, env: dist_lib.DistEnv):
        self.cfg, self.env = cfg, env
        self.device = env.device
        if cfg.sync_bn and env.distributed and self.device.type != "cuda":
            raise TrainError("sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernel); set sync_bn: false")
        if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
            raise TrainError("batch_size, grad_accum and epochs must each be at least 1")

        # identical model init on every rank; per-rank streams for augmentation come after
        seed_everything(cfg.seed)
        self.train_set, self.val_set, data_classes = build_datasets(cfg)
        self.num_classes = cfg.num_classes or data_classes
        if self.num_classes != data_classes:
            raise TrainError(f"num_classes is {self.num_classes} but the dataset has {data_classes} classes")
        self.model = create_model(cfg.model, self.num_classes, pretrained=cfg.pretrained, weights=cfg.weights,
                                  drop_path_rate=cfg.drop_path, drop_rate=cfg.drop)
        self.data_cfg = resolve_data_config(
            {"img_size": cfg.img_size or (32 if cfg.dataset == "digits" else None), "crop_pct": cfg.crop_pct,
             "interpolation": cfg.interpolation, "mean": cfg.mean, "std": cfg.std}, model=self.model)
        if cfg.sync_bn and env.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)

        self.world_batch = cfg.batch_size * env.world_size * cfg.grad_accum
        self.lr = effective_lr(cfg, env.world_size)
        self.optimizer = create_optimizer_v2(self.model, opt=cfg.opt, lr=self.lr, weight_decay=cfg.weight_decay,
                                             momentum=cfg.momentum, layer_decay=cfg.layer_decay)
        # fp16 needs loss scaling; torch's GradScaler runs on CUDA and on the CPU alike
        self.scaler = NativeScaler(device=self.device.type) if cfg.amp == "fp16" else None

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

        prefetch = self.device.type == "cuda"
        self.mixup_fn = build_mixup(cfg, self.num_classes, collate=False) if not prefetch else None
        collate = build_mixup(cfg, self.num_classes, collate=True) if prefetch else None
        self.mixing = cfg.mixup > 0 or cfg.cutmix > 0
        self.train_loader = build_train_loader(self.train_set, cfg, self.data_cfg, self.device, env.distributed,
                                               collate_mixup=collate)
        self.val_loader = build_eval_loader(self.val_set, self.data_cfg, cfg.batch_size, cfg.workers, self.device,
                                            env.rank, env.world_size)
        if len(self.train_loader) == 0:
            raise TrainError(f"the training set ({len(self.train_set)} images) is smaller than one batch "
                             f"({cfg.batch_size} per process); lower batch_size")
        if self.mixing:
            self.criterion = SoftTargetCrossEntropy()
        elif cfg.smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

        self.updates_per_epoch = math.ceil(len(self.train_loader) / cfg.grad_accum)
        self.scheduler, self.total_epochs = create_scheduler_v2(
            self.optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
            warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, cooldown_epochs=cfg.cooldown_epochs,
            step_on_epochs=False, updates_per_epoch=self.updates_per_epoch)

        self.out_dir = self._run_dir()
        self.paths = {name: os.path.join(self.out_dir, f) for name, f in (
            ("last", "last.pth"), ("best", "model_best.pth"), ("log", "log.csv"),
            ("plot", "curves.png"), ("config", "config.yaml"))}
        self.start_epoch = 0
        self.history: List[Dict[str, Any]] = []
        self.best = {"top1": -1.0, "epoch": 0}
        self._resume_rng = None
        if env.is_main:  # what killed writes left behind (the run folder is this run's own)
            gone = sweep_temp_files(self.out_dir, legacy=True)
            for old in (self.paths["log"] + ".tmp", self.paths["config"] + ".tmp",  # earlier versions' naming
                        self.paths["plot"] + ".tmp.png"):
                if os.path.isfile(old):
                    os.remove(old)
                    gone.append(old)
            if gone:
                self._log(f"removed {len(gone)} temp file(s) left by an interrupted write in {self.out_dir}")
        if cfg.resume:
            self._resume()
        if env.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
            save_config(cfg, self.paths["config"], extra_comment=(
                f"effective config of {self.out_dir}\n"
                f"global batch {self.world_batch} = {cfg.batch_size} x {env.world_size} processes x "
                f"{cfg.grad_accum} accumulation; effective lr {self.lr:.6g}"))

    # ----------------------------------------------------------------------------------------------- set-up
    def _run_dir(self) -> str:
        cfg = self.cfg
        if cfg.resume and cfg.resume != "auto":  # continue in the folder the checkpoint lives in
            return os.path.dirname(os.path.abspath(cfg.resume))
        name = cfg.experiment
        if name is None:
            if cfg.resume == "auto":
                raise TrainError("resume: auto needs an experiment name to find <output>/<experiment>/last.pth")
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = dist_lib.broadcast_object(f"{cfg.model}-{stamp}", self.env)
        return os.path.join(cfg.output, name)

    def _resume(self) -> None:
        path = self.cfg.resume
        if path == "auto":
            path = os.path.join(self.out_dir, "last.pth")
            if not os.path.isfile(path):
                self._log(f"resume: auto found no checkpoint at {path}; starting from scratch")
                return
        ckpt = ckpt_lib.load_checkpoint_file(path)
        ckpt_lib.check_fits(ckpt, path, self.model, self.cfg.model, self.num_classes)
        self.model.load_state_dict(ckpt["state_dict"])
        if self.ema is not None:
            if ckpt.get("state_dict_ema") is None:
                raise ckpt_lib.CheckpointError(f"{path} has no EMA weights, but this run has ema: true")
            self.ema.module.load_state_dict(ckpt["state_dict_ema"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise ckpt_lib.CheckpointError(f"optimizer state in {path} does not fit this run's optimizer "
                                           f"({self.cfg.opt}): {e}") from e
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
            self._log(f"resume: checkpoint has RNG states for {len(rng)} processes, this run has "
                      f"{self.env.world_size}; augmentation will not replay exactly")
        self._log(f"resumed from {path} after epoch {self.start_epoch}")

    def _reconcile_best(self, last: Dict[str, Any], last_path: str) -> None:
        """Make model_best.pth and the best record agree. model_best.pth is written before last.pth, so a kill or
        a full disk between the two leaves it ahead (its record is kept as the best to beat). A best file that
        lags (damaged, deleted, or from a version that wrote it second) is rebuilt from last.pth when that is the
        best epoch; otherwise the run says which weights were lost and reports the best it really holds."""
        best_path, recorded = self.paths["best"], dict(self.best)
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
            if ahead.get("top1", -1.0) > recorded["top1"]:
                self.best = ahead
                self._log(f"resume: {best_path} holds epoch {held['epoch']} (written just before the run stopped, "
                          f"top-1 {ahead['top1']:.2f}%); it stays the best to beat")
            return
        if recorded["epoch"] == int(last["epoch"]):
            write_atomically(best_path, lambda tmp: shutil.copyfile(last_path, tmp))
            self._log(f"resume: {best_path} lagged behind the best epoch {recorded['epoch']} ({problem}); "
                      f"rebuilt it from {last_path}")
            return
        self.best = dict(held.get("best") or {"top1": -1.0, "epoch": 0}) if held is not None else {
            "top1": -1.0, "epoch": 0}
        now = (f"the best to beat is now its epoch {self.best['epoch']} ({self.best['top1']:.2f}%)"
               if held is not None else "the next epoch's checkpoint becomes the best")
        self._log(f"resume: warning: {best_path} does not hold the best epoch {recorded['epoch']} "
                  f"({recorded['top1']:.2f}%) that {last_path} records: {problem}; those weights are lost, {now}")

    def _log(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, flush=True)

    # ----------------------------------------------------------------------------------------------- loop
    def _train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, env, device = self.cfg, self.env, self.device
        self.train_model.train()
        loader = self.train_loader
        if env.distributed and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        n = len(loader)
        full = (n // cfg.grad_accum) * cfg.grad_accum
        num_updates = epoch * self.updates_per_epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.total_epochs}", leave=False, dynamic_ncols=True,
                   disable=None if (cfg.progress and env.is_main) else True)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-op after the prefetcher
            if self.mixup_fn is not None:
                x, y = self.mixup_fn(x, y)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            group = cfg.grad_accum if i < full else n - full
            step_now = (i + 1) % cfg.grad_accum == 0 or i + 1 == n
            no_sync = self.train_model.no_sync if (env.distributed and not step_now) else contextlib.nullcontext
            with no_sync():
                with autocast_for(cfg.amp, device):
                    loss = self.criterion(self.train_model(x), y)
                self._check_finite(loss, epoch, i)
                if self.scaler is not None:
                    self.scaler(loss / group, self.optimizer, clip_grad=cfg.clip_grad, clip_mode=cfg.clip_mode,
                                parameters=self.model.parameters(), need_update=step_now)
                else:
                    (loss / group).backward()
                    if step_now:
                        if cfg.clip_grad is not None:
                            dispatch_clip_grad(self.model.parameters(), cfg.clip_grad, mode=cfg.clip_mode)
                        self.optimizer.step()
            loss_sum += loss.detach().double() * x.shape[0]
            seen += x.shape[0]
            if step_now:
                self.optimizer.zero_grad(set_to_none=True)
                num_updates += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=num_updates)
                if self.scheduler is not None:
                    self.scheduler.step_update(num_updates=num_updates)
            if not bar.disable and (i % 10 == 0 or i + 1 == n):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        if self.scheduler is not None:
            self.scheduler.step(epoch + 1)
        totals = dist_lib.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), dtype=torch.float64,
                                                                             device=device)]), env)
        return {"train_loss": (totals[0] / totals[1]).item()}

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Every rank learns if any rank's loss is NaN/inf, so all stop together before a bad update."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        dist_lib.all_reduce_sum(bad, self.env)
        if bad.item() > 0:
            last = self.paths["last"] if os.path.isfile(self.paths["last"]) else None
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopping. "
                + (f"The last good checkpoint is {last} (epoch {self.start_epoch_done})." if last else
                   "No checkpoint was written yet.")
                + " Lower lr, enable clip_grad, or use amp: bf16 instead of fp16.")

    @property
    def start_epoch_done(self) -> int:
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
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, ema=self.ema,
            scaler=self.scaler, epoch=epoch_done, model_name=self.cfg.model, num_classes=self.num_classes,
            config=config_to_dict(self.cfg), history=self.history, best=self.best, rng=rng,
            data_config=dict(self.data_cfg), class_to_idx=class_names(self.train_set))
        if is_best:  # first: last.pth, which records this best, must never be ahead of model_best.pth
            ckpt_lib.save_atomic(state, self.paths["best"])
        ckpt_lib.save_atomic(state, self.paths["last"])
        write_csv(self.history, self.paths["log"])

    def fit(self) -> RunResult:
        cfg, env = self.cfg, self.env
        self._log(f"training {cfg.model} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M params, "
                  f"{self.num_classes} classes) on {env.world_size} x {self.device.type}; "
                  f"{len(self.train_set)} train / {len(self.val_set)} val images at "
                  f"{self.data_cfg['input_size'][1]}px; global batch {self.world_batch}, lr {self.lr:.3g}; "
                  f"output {self.out_dir}")
        # per-rank augmentation streams; on resume, the exact streams the killed run would have used next
        if self._resume_rng is not None:
            ckpt_lib.restore_rng(self._resume_rng)
        else:
            seed_everything(cfg.seed + env.rank + 1000 * self.start_epoch)
        # with EMA on, the EMA weights are the ones a recipe keeps (timm's train.py tracks them too)
        best_key = "ema_val_top1" if (cfg.best_on in ("auto", "ema") and self.ema is not None) else "val_top1"
        for epoch in range(self.start_epoch, self.total_epochs):
            t0 = time.time()
            row: Dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self._train_epoch(epoch))
            if env.distributed and not cfg.sync_bn:
                distribute_bn(self.model, env.world_size, reduce=True)  # one set of BN statistics for all ranks
            val = evaluate(self.eval_model, self.val_loader, self.device, env, cfg.amp, cfg.channels_last,
                           cfg.progress, desc=f"val {epoch + 1}")
            row.update({f"val_{k}": v for k, v in val.items()})
            if self.ema is not None:
                ema_val = evaluate(self.ema.module, self.val_loader, self.device, env, cfg.amp, cfg.channels_last,
                                   cfg.progress, desc=f"val EMA {epoch + 1}")
                row.update({f"ema_val_{k}": v for k, v in ema_val.items() if k != "count"})
            row["skipped_images"] = self._skipped()
            row["epoch_time_s"] = round(time.time() - t0, 2)
            self.history.append(row)
            is_best = row[best_key] > self.best["top1"]
            if is_best:
                self.best = {"top1": row[best_key], "epoch": epoch + 1}
            self._save(epoch + 1, is_best)
            ema_txt = f" | EMA top-1 {row['ema_val_top1']:.2f}" if self.ema is not None else ""
            skip_txt = f" | skipped {row['skipped_images']} unreadable images" if row["skipped_images"] else ""
            self._log(f"epoch {epoch + 1}/{self.total_epochs} | train loss {row['train_loss']:.4f} | val loss "
                      f"{row['val_loss']:.4f} | top-1 {row['val_top1']:.2f} | top-5 {row['val_top5']:.2f}{ema_txt}"
                      f" | lr {row['lr']:.2e} | {row['epoch_time_s']:.1f}s{skip_txt}")
            if cfg.stop_after_epoch is not None and epoch + 1 == cfg.stop_after_epoch and epoch + 1 < self.total_epochs:
                self._log(f"stopping after epoch {epoch + 1} as asked (stop_after_epoch); continue with "
                          f"--resume {self.paths['last']}")
                break
        return self._finish()

    def _finish(self) -> RunResult:
        env = self.env
        in_sync = None
        if env.distributed:
            digests = dist_lib.gather_objects(state_digest(self.model), env)
            in_sync = len(set(digests)) == 1
            self._log(f"weights identical on all {env.world_size} ranks: {'yes' if in_sync else 'NO'}")
        plot_path = None
        if env.is_main and self.history:
            write_csv(self.history, self.paths["log"])
            if self.cfg.plot:
                plot_path = self.paths["plot"]
                plot_curves(self.history, plot_path, title=f"{self.cfg.model} ({self.out_dir})")
        dist_lib.barrier(env)
        done = len(self.history)
        self._log(f"done: {done}/{self.total_epochs} epochs; best val top-1 {self.best['top1']:.2f}% at epoch "
                  f"{self.best['epoch']}\n"
                  f"  checkpoint: {self.paths['best']} (latest: {self.paths['last']})\n"
                  f"  log:        {self.paths['log']}\n"
                  f"  plot:       {plot_path or '(not drawn)'}\n"
                  f"  config:     {self.paths['config']}")
        return RunResult(out_dir=self.out_dir, last_checkpoint=self.paths["last"], best_checkpoint=self.paths["best"],
                         log_path=self.paths["log"], plot_path=plot_path, config_path=self.paths["config"],
                         best_top1=self.best["top1"], best_epoch=self.best["epoch"], epochs_done=done,
                         history=self.history, model=self.model, replicas_in_sync=in_sync)


def fit(cfg: TrainConfig) -> RunResult:
    """Train per cfg (under torchrun: one process per device); returns where the outputs went."""
    env = dist_lib.setup(cfg.device, cfg.dist_timeout)
    try:
        return Trainer(cfg, env).fit()
    except dist_lib.CollectiveTimeout as e:
        raise TrainError(str(e)) from e
    except RuntimeError as e:  # DDP's own gradient all-reduce, inside backward
        if env.distributed and dist_lib.is_timeout(e) and not isinstance(e, TrainError):
            raise TrainError(str(dist_lib.timeout_error("the gradient all_reduce (DDP)", e))) from e
        raise
    finally:
        dist_lib.cleanup()
