"""Setting keys on a run's config: each checked against the keys of the run's task (the shared ones and its own,
learnt from the task registry), coerced to its type, and checked against what it accepts."""

from __future__ import annotations

import os
from typing import Any, Collection, Dict, Iterator, List, Sequence, Tuple

from ..utils.text import describe_value, excerpt
from .aliases import suggest_keys
from .config import ConfigError, TrainConfig, check_allowed, coerce_value, config_fields, default_of
from .task import TASKS


def config_class(task: str) -> type:
    """The config class of a registered task (TrainConfig plus the task's keys); a ConfigError naming the known
    tasks otherwise.

    Args:
        task: a registered task's name.

    Returns:
        Its config class.

    Raises:
        ConfigError: no task of that name is registered.
    """
    if task not in TASKS:
        raise ConfigError(
            f"config key 'task': {describe_value(task)} is not a task; known: {', '.join(TASKS) or 'none registered'}"
            " (a task of your own registers when task_module imports it)"
        )
    return TASKS[task].settings.config


def key_owners() -> Dict[str, List[str]]:
    """{key: the tasks that declare it} for every task's own keys."""
    owners: Dict[str, List[str]] = {}
    for name, cls in TASKS.items():
        for k in cls.settings.own_keys:
            owners.setdefault(k, []).append(name)
    return owners


def known_keys() -> List[str]:
    """Every key some registered task reads: the shared ones, then each task's own."""
    return list(config_fields(TrainConfig)) + [k for k in key_owners() if k not in config_fields(TrainConfig)]


def unknown_key_error(key: str, where: str) -> ConfigError:
    close = suggest_keys(key, known_keys())
    hint = f"; did you mean {', '.join(close)}?" if close else "; run with --help for the list of keys"
    return ConfigError(f"unknown config key '{excerpt(key, 60)}' in {where}{hint}")


def _at_its_default(key: str, value: Any, owners: Sequence[str]) -> bool:
    """Whether `value` is the default of `key` in the task that declares it: a run's config.yaml written before
    each task owned its keys holds every task's keys, most at their defaults."""
    for owner in owners:
        cls = TASKS[owner].settings.config
        try:
            if coerce_value(cls, key, value) == default_of(config_fields(cls)[key]):
                return True
        except ConfigError:
            pass
    return False


def apply_overrides(cfg: TrainConfig, values: Dict[str, Any], where: str) -> TrainConfig:
    """Return a copy of cfg with values set, each checked against the keys of the run's task and coerced to its
    type. Setting ``task`` makes the copy that task's config (the shared keys carried over). Another task's key
    is refused, naming its task, unless it holds that task's default.

    Args:
        cfg: the config to start from (left unchanged).
        values: {key: value}; `-` in a key reads as `_`, values are coerced as from YAML or the command line.
        where: where the values came from, for the messages (e.g. "the command line").

    Returns:
        The new config, of the run's task's config class.

    Raises:
        ConfigError: a key is not a name, unknown, or another task's; a value does not convert to its key's
            type or is outside what the key accepts; the task is not registered.
    """
    values = {_key_name(k, where): v for k, v in values.items()}
    task = coerce_value(TrainConfig, "task", values.pop("task", cfg.task))
    cls = config_class(task)
    own = config_fields(cls)
    current = {k: getattr(cfg, k) for k in own if hasattr(cfg, k) and (k != "dataset" or type(cfg) is cls)}
    current["task"] = task
    owners = key_owners()
    for key, value in values.items():
        if key not in own:
            if key in owners:
                if _at_its_default(key, value, owners[key]):
                    continue
                raise ConfigError(
                    f"config key '{key}' in {where} is a {owners[key][0]} key; this run's task is {task} "
                    f"(set task: {owners[key][0]}, or remove the key)"
                )
            raise unknown_key_error(key, where)
        if key == "grad_accum" and str(value).strip().lower() == "auto":
            value = None
        value = coerce_value(cls, key, value)
        check_allowed(cls, key, value, where)
        current[key] = value
    return cls(**current)


def _key_name(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"config keys in {where} are names; found {describe_value(key)} as a key")
    return key.replace("-", "_")


def make_config(**values: Any) -> TrainConfig:
    """A run's config from keyword values (``task`` picks the config class; classification by default).

    Args:
        **values: config keys and their values.

    Returns:
        The config.

    Raises:
        ConfigError: as `apply_overrides`.
        DataError: the task chooses keys from its data (``adapt_to_data``) and cannot read it.
    """
    cfg = apply_overrides(TrainConfig(), values, "make_config")
    return adapt_to_data(cfg, [_key_name(k, "make_config") for k in values])


def adapt_to_data(cfg: TrainConfig, set_keys: Collection[str]) -> TrainConfig:
    """The config with the keys its task chooses from the run's data (classification's ``adapt_to_data``) and
    `set_keys` leaves unset; what was chosen, and why, is printed (by the main process).

    Args:
        cfg: the run's config.
        set_keys: the keys given in a config file, on the command line or to `make_config`: never changed.

    Returns:
        The config, changed only where the task's plan chose a value.

    Raises:
        DataError: the task cannot read its data to choose.
    """
    plan = TASKS[cfg.task].settings.plan_from_data
    if plan is None:
        return cfg
    values, reasons = plan(cfg, set(set_keys))
    if reasons and int(os.environ.get("RANK", "0")) == 0:
        print("chosen from the training data (adapt_to_data):\n  " + "\n  ".join(reasons), flush=True)
    return apply_overrides(cfg, values, "adapt_to_data") if values else cfg


def _changed(cfg: TrainConfig, given: Sequence[str], names) -> Iterator[Tuple[str, str]]:
    """(key as written, field name) of each key in `given` among `names` that is set to a value other than its
    default: a whole dumped config (a run's config.yaml) holds every key, most of them at their defaults."""
    fields = config_fields(type(cfg))
    for k in given:
        name = k.replace("-", "_")
        if name in names and name in fields and getattr(cfg, name) != default_of(fields[name]):
            yield k, name


# keys that only one kind of run reads: epoch runs count epochs, iteration runs (iters) count updates
EPOCH_RUN_KEYS = ("epochs", "warmup_epochs", "cooldown_epochs", "min_updates")
ITERATION_RUN_KEYS = ("eval_interval",)


def check_schedule_keys(cfg: TrainConfig, given: Sequence[str], where: str) -> None:
    """A ConfigError when `where` sets a key the run's kind of schedule does not read to a value other than its
    default (`epochs` in an iteration run, `eval_interval` in an epoch run would be silently ignored)."""
    for k, name in _changed(cfg, given, EPOCH_RUN_KEYS + ITERATION_RUN_KEYS):
        if cfg.iters is not None and name in EPOCH_RUN_KEYS:
            instead = " (warm-up: warmup_iters)" if name == "warmup_epochs" else ""
            raise ConfigError(
                f"config key '{k}' in {where} counts epochs; this run counts updates (iters: {cfg.iters}): "
                f"remove the key{instead}, or unset iters for an epoch run"
            )
        if cfg.iters is None and name in ITERATION_RUN_KEYS:
            raise ConfigError(
                f"config key '{k}' in {where} is read by iteration runs only; this run counts epochs "
                "(set iters for an iteration run, or remove the key)"
            )
