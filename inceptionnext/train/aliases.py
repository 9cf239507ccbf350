"""The names other tools give to this library's config keys: an unknown key that is one of them is answered with
the key it means (learning_rate -> lr), ahead of the spelling matches."""

from __future__ import annotations

import difflib
from typing import Iterable, List

# timm's train.py, PyTorch Lightning, Hugging Face, mmcv and Keras spellings of keys this config has
ALIASES = {
    "lr": ("learning_rate", "base_lr", "lr_base", "init_lr", "max_lr", "learningrate"),
    "batch_size": ("batch", "bs", "batchsize", "train_batch_size", "per_device_train_batch_size", "samples_per_gpu"),
    "epochs": ("num_epochs", "n_epochs", "max_epochs", "epoch", "total_epochs", "num_train_epochs"),
    "iters": ("max_iters", "num_iters", "total_iters", "max_steps", "steps", "iterations"),
    "weight_decay": ("wd", "decay", "l2", "weightdecay"),
    "opt": ("optimizer", "optim", "optimiser", "solver"),
    "sched": ("scheduler", "lr_scheduler", "lr_schedule", "schedule", "lr_policy", "policy"),
    "warmup_epochs": ("warmup", "warm_up", "warmup_epoch", "num_warmup_epochs"),
    "warmup_iters": ("warmup_steps", "num_warmup_steps", "warmup_iter"),
    "workers": ("num_workers", "n_workers", "dataloader_num_workers", "workers_per_gpu", "j"),
    "img_size": ("image_size", "input_size", "imgsz", "resolution", "size", "crop_size_train"),
    "model": ("arch", "architecture", "model_name", "network", "net"),
    "drop_path": ("drop_path_rate", "stochastic_depth", "droppath"),
    "drop": ("dropout", "drop_rate", "dropout_rate"),
    "smoothing": ("label_smoothing", "label_smooth", "ls"),
    "aa": ("auto_augment", "autoaugment", "randaugment", "rand_augment"),
    "mixup": ("mixup_alpha",),
    "cutmix": ("cutmix_alpha",),
    "data_dir": ("data", "data_path", "data_root", "dataset_dir", "dataset_path", "root", "train_dir"),
    "weights": ("pretrained_weights", "init_weights", "checkpoint", "load_from", "initial_checkpoint", "finetune"),
    "clip_grad": ("grad_clip", "clip_grad_norm", "max_grad_norm", "gradient_clip_val"),
    "grad_accum": (
        "gradient_accumulation_steps",
        "accumulation_steps",
        "accum_iter",
        "accumulate_grad_batches",
        "update_freq",
    ),
    "amp": ("precision", "mixed_precision", "fp16", "bf16", "half"),
    "output": ("output_dir", "out_dir", "save_dir", "work_dir", "log_dir", "logdir"),
    "experiment": ("exp_name", "run_name", "name", "experiment_name"),
    "seed": ("random_seed", "manual_seed"),
    "ema": ("model_ema", "use_ema"),
    "ema_decay": ("model_ema_decay",),
    "min_lr": ("lr_min", "eta_min", "final_lr", "end_lr"),
    "eval_interval": ("eval_every", "val_interval", "eval_steps", "validation_interval"),
    "num_classes": ("classes", "n_classes", "nb_classes", "num_labels"),
    "momentum": ("beta1",),
    "track": ("log", "logger", "loggers", "report_to", "tracking", "trackers", "log_with"),
}
KEY_ALIASES = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


def suggest_keys(key: str, known: Iterable[str], n: int = 3) -> List[str]:
    """Keys among `known` that an unknown `key` may mean: the key its usual alias names, then the closest
    spellings."""
    known = list(known)
    norm = key.strip().lower().replace("-", "_")
    found = [KEY_ALIASES[norm]] if KEY_ALIASES.get(norm) in known else []
    for close in difflib.get_close_matches(norm, known, n=n) if len(key) <= 100 else []:
        if close not in found:
            found.append(close)
    return found[:n]
