"""``inceptionnext train``'s command line: one ``--key`` option per config key, grouped as the task registry
groups them (the shared keys, then each task's own), plus ``--config`` and ``--set key=value``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..utils.text import excerpt
from .checkpoint import read_checkpoint_config
from .config import ConfigError, TrainConfig, config_fields, default_of
from .config_files import load_yaml
from .overrides import adapt_to_data, apply_overrides, check_schedule_keys, config_class, unknown_key_error
from .task import TASKS

TRAIN_DESCRIPTION = (
    "Train or fine-tune a model from a YAML config: an image classifier, a segmentation or a "
    "detection model (the task key). Any config key can be set as --key value."
)
SHORT_FLAGS = {"batch_size": ["-b"]}  # timm's train.py spelling


def _add_key(group, name: str, f: dataclasses.Field, is_bool: bool, default: Any = None) -> None:
    flags = sorted({f"--{name}", f"--{name.replace('_', '-')}"}) + SHORT_FLAGS.get(name, [])
    default = default if default is not None else (f.default if f.default is not dataclasses.MISSING else None)
    allowed = f.metadata.get("allowed")
    text = f.metadata.get("help", "") + (f"; {allowed}" if allowed else "")
    switch = dict(nargs="?", const="true") if is_bool else {}  # --pretrained alone means true
    group.add_argument(*flags, dest=name, metavar="V", help=f"{text} (default: {default})".replace("%", "%%"), **switch)


def build_parser(description: str = TRAIN_DESCRIPTION, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The options of every registered task's keys, in one group for the shared keys and one per task."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )  # --warmup-epoch is an unknown key, not --warmup-epochs
    parser.add_argument("--config", "-c", help="YAML file of config keys", default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key (repeatable)"
    )
    shared = parser.add_argument_group("keys for every task")
    for name, f in config_fields(TrainConfig).items():
        _add_key(shared, name, f, f.type in (bool, "bool"), _per_task_default(name))
    added = set(config_fields(TrainConfig))
    for task, cls in TASKS.items():
        settings = cls.settings
        fields = config_fields(settings.config)
        group = parser.add_argument_group(
            f"{task} keys (task: {task})", f"--dataset, the first by default: {fields['dataset'].metadata['help']}"
        )
        for name in settings.own_keys:
            if name not in added:
                _add_key(group, name, fields[name], fields[name].type in (bool, "bool"))
                added.add(name)
    return parser


def _per_task_default(name: str) -> Optional[str]:
    """ "task: value, ..." for a shared key whose default a task's config sets apart (dataset), else None."""
    if name == "task":
        return None
    defaults = {task: default_of(config_fields(cls.settings.config)[name]) for task, cls in TASKS.items()}
    if all(v == default_of(config_fields(TrainConfig)[name]) for v in defaults.values()):
        return None
    return ", ".join(f"{task}: {v}" for task, v in defaults.items())


def import_task_module(name: str) -> None:
    """Import the module a config names in task_module (a task of the user's registers itself there)."""
    try:
        importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(
            f"config key 'task_module': cannot import {excerpt(name, 80)!r} ({type(e).__name__}: {excerpt(e, 120)}); "
            "it must be importable from this process (installed, or on PYTHONPATH)"
        ) from None


def _sets(items: Sequence[str]) -> Dict[str, str]:
    sets = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        sets[k.strip()] = v
    return sets


def _first_pass(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Dict[str, str]]:
    """--config, --resume, --task-module and --set, read before the task registry is complete."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, argument_default=argparse.SUPPRESS)
    pre.add_argument("--config", "-c", default=None)
    pre.add_argument("--set", action="append", default=[])
    pre.add_argument("--resume", dest="resume")
    pre.add_argument("--task-module", "--task_module", dest="task_module")
    args, _ = pre.parse_known_args(argv)
    return args, _sets(args.set)


def parse_config(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> TrainConfig:
    """Defaults < checkpoint's config (when resuming without --config) < YAML file < --key value < --set.

    The module that task_module names is imported first (a task of your own registers there), so its keys are
    known to the command line.

    Args:
        argv: the arguments of `inceptionnext train`; None reads `sys.argv`.
        prog: the program name for the usage line.

    Returns:
        The run's config.

    Raises:
        ConfigError: an unknown key or argument, a bad value, a `--set` that is not KEY=VALUE, a config file
            that cannot be read, or a task_module that cannot be imported.
        CheckpointError: the checkpoint named by --resume cannot be read.
        DataError: the task chooses keys from its data (``adapt_to_data``) and cannot read it.
        SystemExit: argparse's own exit for --help or a malformed option.
    """
    first, sets = _first_pass(argv)
    layers: List[Tuple[Dict[str, Any], str]] = []
    resume = sets.get("resume", getattr(first, "resume", None))
    if first.config is None and resume not in (None, "auto"):
        layers.append((read_checkpoint_config(resume), f"checkpoint {resume}"))
    if first.config is not None:
        layers.append((load_yaml(first.config), first.config))
    module = sets.get("task_module", getattr(first, "task_module", None))
    for values, _ in layers[::-1]:
        module = module or values.get("task_module")
    if module:
        import_task_module(str(module))

    args, rest = build_parser(prog=prog).parse_known_args(argv)
    for token in rest:
        if token.startswith("--"):
            raise unknown_key_error(token[2:].split("=")[0].replace("-", "_"), "the command line")
        raise ConfigError(f"unexpected command-line argument {token!r}; options look like --key value")
    cli = {k: v for k, v in vars(args).items() if k not in ("config", "set")}
    layers += [(cli, "the command line"), (sets, "--set")]

    task = TrainConfig.task
    for values, _ in layers:
        task = next((v for k, v in values.items() if isinstance(k, str) and k.replace("-", "_") == "task"), task)
    cfg = config_class(str(task))()
    for values, where in layers:
        cfg = apply_overrides(cfg, {k: v for k, v in values.items() if k != "task"}, where)
    for values, where in layers:
        if not where.startswith("checkpoint "):
            check_schedule_keys(cfg, list(values), where)
    return adapt_to_data(cfg, {str(k).replace("-", "_") for values, _ in layers for k in values})
