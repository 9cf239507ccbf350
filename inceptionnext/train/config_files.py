"""Config files: the YAML a run is configured from (with ``_base_`` includes) and the config.yaml it writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple

import yaml

from ..utils.files import write_atomically
from ..utils.text import describe_value, excerpt
from .config import ConfigError, TrainConfig, config_to_dict

MAX_CONFIG_BYTES = 1 << 20  # a config is a page of keys; anything larger is not one
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _in_checkout(path: str) -> str:
    """A relative configs/... path that is not found from here, found in the checkout this package runs from;
    else a ConfigError saying where the recipes live."""
    rel = os.path.normpath(path)
    if not os.path.isabs(rel) and rel.split(os.sep)[0] == "configs":
        candidate = os.path.join(os.path.dirname(CONFIGS_DIR), rel)
        if os.path.isfile(candidate):
            return candidate
    where = (
        f"in {CONFIGS_DIR}"
        if os.path.isdir(CONFIGS_DIR)
        else "in the configs/ folder of the inceptionnext source checkout (not part of an installed wheel)"
    )
    raise ConfigError(
        f"config file not found: {path}; the shipped recipes are {where}, e.g. "
        "configs/finetune/inceptionnext_t.yaml; pass a path to one or to your own YAML"
    )


def _yaml_error(path: str, e: Exception) -> ConfigError:
    """Where and why the YAML parser stopped, without the file's lines (PyYAML quotes them)."""
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or type(e).__name__
    if isinstance(e, yaml.reader.ReaderError) and isinstance(e.character, int):
        problem = f"character #x{e.character:02x} is not allowed in YAML text"
        at = f" at character {e.position + 1}"
    return ConfigError(f"config file {path} is not valid YAML{at}: {excerpt(problem, 100)}")


def load_yaml(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A YAML config as a dict; ``_base_: other.yaml`` (relative to the file, or a list of such) is read first
    and overridden. Only YAML files are read, and errors never echo a file's lines.

    Args:
        path: the YAML file; a relative `configs/...` path not found here is looked up in the source checkout.

    Returns:
        {key: value}, the bases merged under the file's own values.

    Raises:
        ConfigError: the file is not found, too large, not UTF-8, not valid YAML, not a mapping, includes itself,
            or names a `_base_` that is not a YAML file.
    """
    if not os.path.isfile(path):
        path = _in_checkout(path)
    if os.path.abspath(path) in _seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is {os.path.getsize(path) / 2**20:.1f} MiB; a config is at most "
            f"{MAX_CONFIG_BYTES // 2**20} MiB of YAML"
        )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of too many digits, nesting too deep
        raise ConfigError(f"config file {path}: cannot read a value ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        merged: Dict[str, Any] = {}
        for name in bases:
            if not isinstance(name, str) or not name.lower().endswith((".yaml", ".yml")):
                raise ConfigError(
                    f"config file {path}: _base_ names YAML files (.yaml or .yml) to include, not "
                    f"{describe_value(name)}"
                )
            merged.update(load_yaml(os.path.join(os.path.dirname(path), name), _seen + (os.path.abspath(path),)))
        merged.update(data)
        data = merged
    return data


def save_config(cfg: TrainConfig, path: str, extra_comment: str = "") -> None:
    """Write `cfg` as YAML that `load_yaml` reads back, atomically.

    Args:
        cfg: the config.
        path: the file to write.
        extra_comment: lines written first, each as a `#` comment.
    """
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if extra_comment:
        text = "".join(f"# {line}\n" for line in extra_comment.splitlines()) + text
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
