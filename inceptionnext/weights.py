"""Load, check and save weights from every real source: the official release (.pth over http(s) or file://),
timm's Hugging Face hub copies, local files (raw state dicts, training checkpoints, safetensors).

Everything is read weights-only (no arbitrary unpickling) and every failure names the file or model and what
did not match. Models plug this into timm's `pretrained=True` path through `zoo.create_zoo_model`, which hands the state
dict to timm's `build_model_with_cfg` so that timm still adapts the classifier, the stem and features_only.
"""

import argparse
import contextlib
import os
import re
import socket
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from .checksum import CheckpointError, seal_metadata, verify_loaded
from .utils.files import PathLike, torch_save, write_atomically
from .utils.text import excerpt, first_line

# Keys under which training checkpoints keep their weights, in the order they are preferred (EMA first, as timm).
CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
# Prefixes that wrappers add to every key: DDP/DataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# sha256 of release files, where known; a file whose name carries a hash prefix (name-<hex>.pth) is checked too.
KNOWN_SHA256: Dict[str, str] = {}
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.(pth|pt|bin|safetensors)$")


# ---------------------------------------------------------------------------------------------------------------
# reading files


def scored_weights_key(obj: Mapping[str, Any]) -> Optional[str]:
    """Which weights of a training checkpoint were scored best, and so are the ones to load by default.

    This engine's checkpoints record it (``scored_weights``); older ones say it through their config (EMA on
    and best_on not "model"). Any other checkpoint: its EMA weights when it has them (timm's train.py scores
    the EMA copy when there is one, and timm's loaders take it), else its model weights.
    """
    key = obj.get("scored_weights")
    if isinstance(key, str) and isinstance(obj.get(key), Mapping):
        return key
    config = obj.get("config")
    if isinstance(config, Mapping) and "best_on" in config:
        ema_scored = bool(config.get("ema")) and config.get("best_on") != "model"
        key = "state_dict_ema" if ema_scored else "state_dict"
        if isinstance(obj.get(key), Mapping):
            return key
    return next((k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), Mapping)), None)


def unwrap_state_dict(obj: Any, source: str) -> Dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (the weights scored best: `scored_weights_key`) or a plain
    one, wrapper prefixes removed."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict or training checkpoint")
    key = scored_weights_key(obj)
    if key is not None:
        obj = obj[key]
    state_dict = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a state dict or a "
                f"training checkpoint with one of {CHECKPOINT_KEYS}"
            )
        for prefix in WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state_dict[key] = value
    if not state_dict:
        raise CheckpointError(f"{source}: holds no tensors")
    return state_dict


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file under another name: an 8-byte little-endian header length, then a JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def load_error_reason(e: BaseException) -> str:
    """Why torch.load (or safetensors) could not read a file, in one escaped line: for a weights-only refusal
    the refused object only, never torch's advice to load with weights_only=False (which would run whatever
    code the file holds)."""
    text = str(e)
    if "Weights only load failed" in text:  # keep the refused object; drop every line of advice
        lines = [
            re.split(r"\.\s+(?:Please|Check|You can)", re.sub(r"^\s*WeightsUnpickler error:\s*", "", line))[0]
            for line in text.splitlines()[1:]
        ]
        lines = [
            line.strip()
            for line in lines
            if line.strip() and not re.search(r"weights_only|trust|documentation|^\s*\(\d\)", line, re.IGNORECASE)
        ]
        what = lines[0] if lines else "objects other than tensors"
        return excerpt(
            f"it holds Python objects a weights-only load refuses ({what}); files are never unpickled here", 300
        )
    line = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    detail = line[0] if line else ""
    if isinstance(e, EOFError) or (not detail and isinstance(e, IndexError)):
        return "the file ends too early (empty or cut short)"
    return excerpt(f"{type(e).__name__}: {detail}" if detail else type(e).__name__, 300)


# A torch zip record may be stored compressed; torch itself never compresses, so records whose declared size is
# far beyond the file's own can only be a decompression bomb.
MAX_EXPANSION = 8


def check_zip_sizes(path: PathLike) -> None:
    """Refuse a torch zip file whose records declare more bytes than `MAX_EXPANSION` times the file's size
    (read from the zip directory, before anything is decompressed)."""
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip (legacy torch format) or damaged: torch.load reports it
    if declared > MAX_EXPANSION * size + 2**20:
        raise CheckpointError(
            f"{path}: its records declare {declared / 2**20:.0f} MiB of data in a "
            f"{size / 2**20:.1f} MiB file (compressed records expanding {declared / size:.0f}x); "
            "torch never writes such files, refused before reading"
        )


def read_weight_file(path: PathLike) -> Tuple[Any, Dict[str, str]]:
    """What a .pth/.pt/.bin (torch, weights-only) or .safetensors file holds, as stored, and the safetensors
    metadata (empty for torch files); errors name the file and say why it cannot be read. A file carrying a
    checksum (`inceptionnext.checksum`) is checked against it: a damaged one is a ChecksumError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weight file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: is empty (0 bytes); an interrupted download or copy? Fetch or save it again")
    try:
        if path.suffix == ".safetensors" or _looks_like_safetensors(path):
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            obj = load_file(str(path), device="cpu")
        else:
            check_zip_sizes(path)
            # timm's train.py (and the official repos' main.py) keep their argparse.Namespace under 'args'
            allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
            with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
                obj, metadata = torch.load(path, map_location="cpu", weights_only=True), {}
    except CheckpointError:
        raise
    except Exception as e:  # truncated zip, not a checkpoint at all, disallowed pickled objects, bad header
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint ({load_error_reason(e)}); "
            "is the file complete, and a PyTorch or safetensors weight file?"
        ) from e
    verify_loaded(obj, metadata, str(path))  # every loader: a file that carries a checksum must match it
    return obj, metadata


# Weight files a timm hub folder (save_for_hf / push_to_hub, `local-dir:` names) may hold, preferred first.
HUB_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def hub_folder_weights(folder: PathLike) -> Path:
    """The weight file in a timm hub-format folder (config.json + model.safetensors, as save_for_hf writes)."""
    folder = Path(folder)
    for name in HUB_FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: a model folder without weights (expected one of {', '.join(HUB_FOLDER_FILES)})")


def load_state_dict_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.bin (torch, weights-only) or .safetensors file, unwrapped and de-prefixed."""
    return unwrap_state_dict(read_weight_file(path)[0], str(path))


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: PathLike) -> Path:
    """Write weights atomically: safetensors for .safetensors, torch.save otherwise."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = seal_metadata(tensors, {})
        return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return write_atomically(path, lambda tmp: torch_save(tensors, tmp))


def convert_checkpoint(src: PathLike, dst: PathLike) -> Path:
    """Any readable checkpoint (official .pth, training checkpoint, safetensors) to a plain weights file."""
    return save_state_dict(load_state_dict_file(src), dst)


# ---------------------------------------------------------------------------------------------------------------
# remote sources


def expected_sha256(url: str) -> Optional[str]:
    """The full sha256 pinned for `url`, else the hex prefix its file name carries (timm/torch.hub convention)."""
    if url in KNOWN_SHA256:
        return KNOWN_SHA256[url]
    m = _HASH_IN_NAME.search(url.split("?")[0])
    return m.group(1) if m else None


# Seconds to wait for a TCP connection to a weight host before calling it unreachable: a machine without network
# then fails in seconds with the named error, not after the HTTP clients' minute of retries.
CONNECT_TIMEOUT = 3.0


def _offline_env() -> bool:
    """HF_HUB_OFFLINE in the environment, or as huggingface_hub read it at import."""
    try:
        import huggingface_hub.constants

        if huggingface_hub.constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _hub_offline():
    """huggingface_hub's offline mode for one call: the local cache only, no requests and no retries."""
    import huggingface_hub.constants

    before = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = before


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT) -> Optional[str]:
    """Why `url`'s host cannot be reached (offline mode, DNS, no route, timeout), or None when it answers."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    if _offline_env():
        return "HF_HUB_OFFLINE is set"
    try:
        with socket.create_connection(
            (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout
        ):
            return None
    except OSError as e:
        return f"{parts.hostname} is unreachable ({type(e).__name__}: {first_line(e, 100) or 'no answer'})"


def download_cached(url: str, cache_dir: Optional[PathLike] = None, progress: bool = True) -> Path:
    """Download `url` (http, https or file) once into the torch hub cache, verifying its hash when one is known."""
    cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    dst = cache / os.path.basename(url.split("?")[0])
    if dst.is_file():  # only verified files are ever left in the cache
        return dst
    expected = expected_sha256(url)
    why = unreachable(url)
    if why:
        raise CheckpointError(f"cannot download weights from {url}: {why} (and the file is not in {cache})")
    try:  # torch.hub downloads to a temp file and moves it into the cache only once its sha256 prefix matches
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=expected, progress=progress)
    except RuntimeError as e:
        if expected is not None and "invalid hash value" in str(e):
            raise CheckpointError(
                f"{url}: downloaded file's sha256 does not match the expected {expected[:16]}...; the download is "
                "corrupt or the file changed (nothing was cached)"
            ) from e
        raise CheckpointError(f"cannot download weights from {url}: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise CheckpointError(f"cannot download weights from {url}: {type(e).__name__}: {e}") from e
    return dst


def load_state_dict_from_hub(hf_hub_id: str, cache_dir: Optional[PathLike] = None) -> Dict[str, torch.Tensor]:
    """timm's hub copy (safetensors preferred, then pytorch_model.bin), from the network or the local HF cache."""
    from timm.models import load_state_dict_from_hf

    why = unreachable("https://huggingface.co")
    try:
        if why:  # only the local Hugging Face cache can serve it, and without the hub's retries
            with _hub_offline():
                obj = load_state_dict_from_hf(hf_hub_id, weights_only=True, cache_dir=cache_dir)
        else:
            obj = load_state_dict_from_hf(hf_hub_id, weights_only=True, cache_dir=cache_dir)
    except Exception as e:
        where = f"; not in the local Hugging Face cache and {why}" if why else ""
        raise CheckpointError(
            f"cannot load hub weights {hf_hub_id} ({type(e).__name__}: {first_line(e)}){where}"
        ) from e
    return unwrap_state_dict(obj, f"hf-hub:{hf_hub_id}")


def load_pretrained_state_dict(
    cfg: Mapping[str, Any], cache_dir: Optional[PathLike] = None
) -> Tuple[Dict[str, torch.Tensor], str]:
    """The state dict a pretrained config points to and a description of where it came from.

    Order: a local `file`, then the hub copy (`hf_hub_id`), then the release `url`; a failing hub falls back to
    the url, and an error lists every source tried.
    """
    name = cfg.get("architecture") or "model"
    if cfg.get("state_dict") is not None:
        return unwrap_state_dict(cfg["state_dict"], f"{name} (state_dict override)"), "state_dict"
    if cfg.get("file"):
        path = Path(cfg["file"])
        path = hub_folder_weights(path) if path.is_dir() else path  # `local-dir:` names point at a folder
        return load_state_dict_file(path), str(path)
    errors = []
    if cfg.get("hf_hub_id"):
        try:
            return load_state_dict_from_hub(cfg["hf_hub_id"], cache_dir), f"hf-hub:{cfg['hf_hub_id']}"
        except CheckpointError as e:
            errors.append(str(e))
    if cfg.get("url"):
        try:
            path = download_cached(cfg["url"], cache_dir)
            return load_state_dict_file(path), cfg["url"]
        except (CheckpointError, FileNotFoundError) as e:
            errors.append(str(e))
    if not errors:
        raise CheckpointError(f"{name}: no pretrained weights are known for this name; use pretrained=False")
    raise CheckpointError(
        f"{name}: no pretrained weights could be loaded:\n  " + "\n  ".join(errors) + "\n  to use a weight file "
        "you have, pass pretrained_cfg_overlay=dict(file=PATH) to timm.create_model (CLI: --weights FILE)"
    )


# ---------------------------------------------------------------------------------------------------------------
# checking a state dict against a model


def _first(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def model_name(model: torch.nn.Module) -> str:
    """The registered name a model was built under (its pretrained config's architecture), else its class."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def describe_mismatch(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module, adaptable: Iterable[str] = ()
) -> List[str]:
    """How `state_dict` differs from `model`'s own (missing, unexpected keys, shape mismatches), ignoring
    `adaptable` keys; empty when it fits."""
    adaptable = set(adaptable)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and k not in adaptable]
    unexpected = [k for k in state_dict if k not in expected and k not in adaptable]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and k not in adaptable and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else ""))
    return parts


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    source: str,
    adaptable: Iterable[str] = (),
) -> None:
    """Raise CheckpointError unless `state_dict` fits `model` exactly, except for `adaptable` keys
    (classifier and stem, which timm re-initializes or adapts), which may be missing, extra or reshaped."""
    parts = describe_mismatch(state_dict, model, adaptable)
    if parts:
        raise CheckpointError("; ".join([f"{source}: does not fit {model_name(model)}"] + parts))


def adaptable_keys(model: torch.nn.Module, pretrained_cfg: Mapping[str, Any]) -> set:
    """State-dict keys timm adapts after our filter: the classifier (new class count) and the first conv (in_chans)."""
    keys = set()
    for field in ("classifier", "first_conv"):
        names = pretrained_cfg.get(field) or ()
        for module_name in [names] if isinstance(names, str) else names:
            keys.update({f"{module_name}.weight", f"{module_name}.bias"})
    return keys


def checkpoint_filter_fn(state_dict, model, source: str = "checkpoint"):
    """timm `pretrained_filter_fn`: unwrap training checkpoints and refuse any state dict that does not fit."""
    state_dict = unwrap_state_dict(state_dict, source)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    check_state_dict(state_dict, model, source, adaptable=adaptable_keys(model, cfg))
    return state_dict
