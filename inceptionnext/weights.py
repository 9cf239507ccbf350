"""Load, check and save weights from every real source: the official release (.pth over http(s) or file://),
timm's Hugging Face hub copies, local files (raw state dicts, training checkpoints, safetensors).

Everything is read weights-only (no arbitrary unpickling) and every failure names the file or model and what
did not match. Models plug this into timm's `pretrained=True` path through `zoo.create_zoo_model`, which hands the state
dict to timm's `build_model_with_cfg` so that timm still adapts the classifier, the stem and features_only.
"""

import argparse
import contextlib
import hashlib
import os
import re
import urllib.parse
import urllib.request
import warnings
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
# sha256 of the official files, as their publishers list them (Hugging Face shows each LFS file's SHA256 on its
# file page); a cached or downloaded copy that differs is refused. Keys: release URLs, and `hub_key(repo, file)`
# for the hub copies. A release file whose name carries a hash prefix (name-<hex>.pth) is checked against it too.
KNOWN_SHA256: Dict[str, str] = {
    "hf-hub:timm/inception_next_tiny.sail_in1k/model.safetensors": (
        "738d3113a472e9ebc39eec21f52f8aec32fc479c7fdc4974c696caf0c065bfb6"
    ),
    "hf-hub:timm/inception_next_tiny.sail_in1k/pytorch_model.bin": (
        "83499bcf6bd55e02be0b5f345b4719f06f9e1f94f2b09e5cc69f1bab9fba9637"
    ),
    "hf-hub:timm/inception_next_base.sail_in1k/model.safetensors": (
        "71cf5594935bd9513e1350e3450c88332194fdaa7de96f3e69468e2f4f1da14e"
    ),
}


class UnpinnedWeightsWarning(UserWarning):
    """A release file was loaded with no published sha256 to check it against: a damaged or substituted file of
    the right shapes would load unnoticed, so the warning gives its sha256 to compare with the publisher's."""


_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.(pth|pt|bin|safetensors)$")


# ---------------------------------------------------------------------------------------------------------------
# reading files


def scored_weights_key(obj: Mapping[str, Any]) -> Optional[str]:
    """Which weights of a training checkpoint were scored best, and so are the ones to load by default.

    This engine's checkpoints record it (``scored_weights``); older ones say it through their config (EMA on
    and best_on not "model"). Any other checkpoint: its EMA weights when it has them (timm's train.py scores
    the EMA copy when there is one, and timm's loaders take it), else its model weights.

    Args:
        obj: a loaded checkpoint dict.

    Returns:
        The key of the weights to load (one of `CHECKPOINT_KEYS`), or None for a plain state dict.
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
    one, wrapper prefixes removed.

    Args:
        obj: what a weight file holds (`read_weight_file`).
        source: where it came from, for the error messages.

    Returns:
        The tensors by parameter name, without `module.` / `_orig_mod.` prefixes.

    Raises:
        CheckpointError: `obj` is not a mapping, holds an entry that is not a tensor, or holds no tensors.
    """
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
        wrapped = [p for p in WRAPPER_PREFIXES if key.startswith(p)]
        while wrapped:  # wrappers nest in any order (a compiled model inside DDP: module._orig_mod.)
            key = key[len(wrapped[0]) :]
            wrapped = [p for p in WRAPPER_PREFIXES if key.startswith(p)]
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
    code the file holds).

    Args:
        e: the error the reader raised.

    Returns:
        One line of at most 300 characters.
    """
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
    (read from the zip directory, before anything is decompressed).

    Args:
        path: the file; one that is not a zip passes (torch.load reports it).

    Raises:
        CheckpointError: the records declare too much data.
    """
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
    """What a weight file holds, as stored, with its checksum checked when it carries one.

    Args:
        path: a `.pth` / `.pt` / `.bin` (read by torch, weights-only) or `.safetensors` file.

    Returns:
        The loaded object (a state dict or a checkpoint dict) and the safetensors metadata (empty for torch
        files).

    Raises:
        FileNotFoundError: nothing is at `path`.
        CheckpointError: the file is not a file, is empty or cannot be read (the message says why);
            `ChecksumError`, a subclass, when its content does not match the checksum it carries.
    """
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
            with torch.serialization.safe_globals([argparse.Namespace]):
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
    """The weight file in a timm hub-format folder (config.json + model.safetensors, as save_for_hf writes).

    Args:
        folder: the folder.

    Returns:
        The first of `HUB_FOLDER_FILES` the folder holds.

    Raises:
        FileNotFoundError: the folder holds none of them.
    """
    folder = Path(folder)
    for name in HUB_FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: a model folder without weights (expected one of {', '.join(HUB_FOLDER_FILES)})")


def load_state_dict_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """A state dict from a weight file, unwrapped and de-prefixed.

    Args:
        path: a `.pth` / `.pt` / `.bin` (read by torch, weights-only) or `.safetensors` file: a raw state dict,
            a training checkpoint (`model`, `state_dict`, `state_dict_ema`) or a converted file.

    Returns:
        The tensors by parameter name, with `module.` prefixes stripped.

    Raises:
        FileNotFoundError: nothing is at `path`.
        CheckpointError: the file is unreadable, damaged (its checksum does not match) or holds no state
            dict; the message names the file.
    """
    return unwrap_state_dict(read_weight_file(path)[0], str(path))


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: PathLike) -> Path:
    """Write weights atomically: safetensors for `.safetensors`, torch.save otherwise.

    Args:
        state_dict: the tensors by parameter name.
        path: where to write; the suffix picks the format. A reader never sees a half-written file.

    Returns:
        The path written.
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = seal_metadata(tensors, {})
        return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return write_atomically(path, lambda tmp: torch_save(tensors, tmp))


def convert_checkpoint(src: PathLike, dst: PathLike) -> Path:
    """Any readable checkpoint (official .pth, training checkpoint, safetensors) to a plain weights file.

    Args:
        src: the checkpoint to read (as `load_state_dict_file` reads it).
        dst: the file to write; its suffix picks the format (as `save_state_dict`).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: `src` does not exist.
        CheckpointError: `src` cannot be read as a state dict.
    """
    return save_state_dict(load_state_dict_file(src), dst)


# ---------------------------------------------------------------------------------------------------------------
# remote sources: the hub through huggingface_hub, release URLs through torch.hub, each with its own settings
# (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE, HF_HUB_ETAG_TIMEOUT/HF_HUB_DOWNLOAD_TIMEOUT, HF_HOME; TORCH_HOME,
# HTTP(S)_PROXY/NO_PROXY); this module only reads them, to say in an error what was tried.


def sha256_file(path: PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_sha256(url: str) -> Optional[str]:
    """The full sha256 pinned for `url`, else the hex prefix its file name carries (timm/torch.hub convention).

    Args:
        url: a release URL or a `hub_key`.

    Returns:
        The hex digest or prefix, or None when nothing is known for it.
    """
    if url in KNOWN_SHA256:
        return KNOWN_SHA256[url].lower()  # torch.hub compares hex digits as written; sha256sum prints lower case
    m = _HASH_IN_NAME.search(url.split("?")[0])
    return m.group(1) if m else None


def hub_key(repo_id: str, filename: str) -> str:
    """The `KNOWN_SHA256` key of a file in a Hugging Face repository.

    Args:
        repo_id: the repository, `owner/name`.
        filename: the file in it.

    Returns:
        `hf-hub:<repo_id>/<filename>`.
    """
    return f"hf-hub:{repo_id}/{filename}"


def _proxy_note(url: str) -> str:
    """Which proxy the HTTP clients take for `url`, from the environment they read (HTTP(S)_PROXY, NO_PROXY)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return ""
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return "NO_PROXY bypasses the proxy for it"
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    return f"through the proxy {proxy}" if proxy else "no proxy set (HTTP_PROXY/HTTPS_PROXY)"


def _root_cause(e: BaseException) -> str:
    """The error and, when it wraps one, the innermost cause (the connection or HTTP error behind it)."""
    inner = e
    while inner.__cause__ is not None or (inner.__context__ is not None and not inner.__suppress_context__):
        inner = inner.__cause__ or inner.__context__
    said = f"{type(e).__name__}: {first_line(e, 200)}"
    return said if inner is e else f"{said} ({type(inner).__name__}: {first_line(inner, 200)})"


def _check_sha256(path: Path, expected: str, what: str, fresh: bool, removable: Iterable[Path] = ()) -> None:
    """Refuse `path` unless its sha256 is (or starts with) `expected`; a fresh download that fails is removed
    (with `removable`, the cache entries pointing at it), so that nothing damaged stays in a cache."""
    got = sha256_file(path)
    if got.startswith(expected.lower()):
        return
    if fresh:
        for p in (path, *removable):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
        where = f"downloaded from {what} and removed again (nothing was cached)"
    else:
        where = f"the cached copy of {what}; delete it to download it again"
    raise CheckpointError(
        f"{path}: sha256 {got[:16]}... is not the {expected[:16]}... published for it ({where}); the file is "
        "damaged or not the official one and is not loaded"
    )


def download_cached(url: str, cache_dir: Optional[PathLike] = None, progress: bool = True) -> Path:
    """`url` (http, https or file) through torch.hub's downloader (which honours HTTP(S)_PROXY and NO_PROXY) into
    the torch hub cache (`$TORCH_HOME/hub/checkpoints`, or `cache_dir`), once; checked against its pinned sha256
    (or the hash prefix in its name), a cached copy included.

    Args:
        url: the file's address.
        cache_dir: the folder to cache it in instead of torch hub's.
        progress: show a progress bar while downloading.

    Returns:
        The cached file.

    Raises:
        CheckpointError: the download failed (the message names the cause and the proxy taken) or the file's
            sha256 does not match the published one.
    """
    cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    dst = cache / os.path.basename(url.split("?")[0])
    expected = expected_sha256(url)
    if dst.is_file():
        if expected:
            _check_sha256(dst, expected, url, fresh=False)
        else:
            _warn_unpinned(dst, url)
        return dst
    try:  # torch.hub downloads to a temp file and moves it into the cache only once its sha256 (prefix) matches
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=expected, progress=progress)
    except RuntimeError as e:
        if expected is not None and "invalid hash value" in str(e):
            raise CheckpointError(
                f"{url}: downloaded file's sha256 does not match the expected {expected[:16]}...; the download is "
                "corrupt or the file changed (nothing was cached)"
            ) from e
        raise _download_error(url, cache, e) from e
    except Exception as e:
        raise _download_error(url, cache, e) from e
    if expected is None:
        _warn_unpinned(dst, url)
    return dst


def _warn_unpinned(path: Path, url: str) -> None:
    warnings.warn(
        f"{path}: no published sha256 to check it against ({url} has none pinned), so it is loaded unchecked; its "
        f"sha256 is {sha256_file(path)}. Compare it with the publisher's, or load timm's hub copy, which is "
        "checked against the sha256 the hub names it by",
        UnpinnedWeightsWarning,
        stacklevel=3,
    )


def _download_error(url: str, cache: Path, e: BaseException) -> CheckpointError:
    proxy = _proxy_note(url)
    return CheckpointError(
        f"{url}{f' ({proxy})' if proxy else ''}: {_root_cause(e)}; not in the torch hub cache {cache}"
    )


# The weight files of a timm hub repository, in the order timm's own loader tries them.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_cache(cache_dir: Optional[PathLike] = None) -> Path:
    """The Hugging Face cache huggingface_hub uses: `cache_dir`, else its own (HF_HUB_CACHE, HF_HOME).

    Args:
        cache_dir: a cache folder given by the caller.

    Returns:
        The cache folder.
    """
    import huggingface_hub.constants

    return Path(cache_dir) if cache_dir else Path(huggingface_hub.constants.HF_HUB_CACHE)


def download_hub_file(hf_hub_id: str, cache_dir: Optional[PathLike] = None) -> Path:
    """The weight file of a hub repository (`repo` or `repo@revision`), through huggingface_hub's own download
    and cache, checked against its sha256: the pinned one (`KNOWN_SHA256`) and the one the hub names it by; a
    fresh download that fails the check is removed from the cache.

    Args:
        hf_hub_id: `owner/name`, or `owner/name@revision`.
        cache_dir: the Hugging Face cache to use instead of huggingface_hub's own.

    Returns:
        The file in the cache: `model.safetensors`, else `pytorch_model.bin`.

    Raises:
        CheckpointError: the file's sha256 does not match.
    """
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, _, revision = hf_hub_id.partition("@")
    revision = revision or None
    missing: Optional[BaseException] = None
    for filename in HUB_WEIGHT_FILES:
        was_cached = isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision), str)
        try:
            path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
        except EntryNotFoundError as e:
            if isinstance(e, LocalEntryNotFoundError) and not huggingface_hub.constants.HF_HUB_OFFLINE:
                raise  # the hub could not be reached: the next file name would only wait again
            missing = missing or e
            continue
        blob = path.resolve()
        expected = [KNOWN_SHA256.get(hub_key(repo_id, filename)) if revision in (None, "main") else None]
        expected.append(blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None)  # LFS files: the sha256
        for digest in filter(None, expected):
            _check_sha256(blob, digest, f"hf-hub:{repo_id}/{filename}", fresh=not was_cached, removable=[path])
        return path
    assert missing is not None
    raise missing


def load_state_dict_from_hub(hf_hub_id: str, cache_dir: Optional[PathLike] = None) -> Dict[str, torch.Tensor]:
    """A hub copy's state dict (safetensors preferred, then pytorch_model.bin, as timm), from the hub (or the
    mirror HF_ENDPOINT names) or, offline, the local Hugging Face cache; errors say what was tried.

    Args:
        hf_hub_id: `owner/name`, or `owner/name@revision`.
        cache_dir: the Hugging Face cache to use instead of huggingface_hub's own.

    Returns:
        The tensors by parameter name.

    Raises:
        CheckpointError: the file could not be fetched (the message names the endpoint, the proxy and the
            cache looked in), does not match its sha256 or cannot be read.
    """
    import huggingface_hub.constants

    try:
        path = download_hub_file(hf_hub_id, cache_dir)
    except CheckpointError:
        raise
    except Exception as e:
        endpoint = huggingface_hub.constants.ENDPOINT
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            tried = "HF_HUB_OFFLINE is set, so only the cache was looked in"
        else:
            named = " (HF_ENDPOINT)" if os.environ.get("HF_ENDPOINT") else ""
            tried = f"from {endpoint}{named}, {_proxy_note(endpoint)}"
        needs_token = "401" in str(e) or "GatedRepo" in type(e).__name__ or "RepositoryNotFound" in type(e).__name__
        token = "; a private or gated repository needs a token (HF_TOKEN, or `hf auth login`)" if needs_token else ""
        raise CheckpointError(
            f"hf-hub:{hf_hub_id} ({tried}): {_root_cause(e)}; not in the Hugging Face cache {hub_cache(cache_dir)}"
            f"{token}"
        ) from e
    return unwrap_state_dict(read_weight_file(path)[0], f"hf-hub:{hf_hub_id}")


def ways_out(name: str, cfg: Mapping[str, Any], cache_dir: Optional[PathLike] = None) -> List[str]:
    """What a user without access to the weights' hosts can do, for the error that says none could be read.

    Args:
        name: the model's name.
        cfg: its pretrained config (`hf_hub_id`, `url`).
        cache_dir: the cache the loader looked in.

    Returns:
        One line per way out.
    """
    ways = [
        f"a weight file you have: timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict("
        "file=PATH)) (CLI: --weights PATH)",
    ]
    if cfg.get("hf_hub_id"):
        ways.append(
            f"a Hugging Face cache from a machine that has it: copy it to {hub_cache(cache_dir)} (or point HF_HOME "
            "at it) and set HF_HUB_OFFLINE=1"
        )
        folder = cfg["hf_hub_id"].split("/")[-1].split("@")[0]
        ways.append(
            f"fetch it on a machine with access: hf download {cfg['hf_hub_id'].split('@')[0]} --local-dir {folder} "
            "(then PATH above is that folder)"
        )
    elif cfg.get("url"):
        ways.append(f"fetch it on a machine with access: curl -LO {cfg['url']} (then PATH above is that file)")
    return ways


def load_pretrained_state_dict(
    cfg: Mapping[str, Any], cache_dir: Optional[PathLike] = None
) -> Tuple[Dict[str, torch.Tensor], str]:
    """The state dict a pretrained config points to and a description of where it came from.

    Order: a local `file`, then the hub copy (`hf_hub_id`), then the release `url`; a failing hub falls back to
    the url, and an error lists every source tried, the caches looked in and the ways out.

    Args:
        cfg: a timm pretrained config (`state_dict`, `file`, `hf_hub_id`, `url`, `architecture`).
        cache_dir: the cache for downloads instead of the libraries' own.

    Returns:
        The state dict and where it came from (`state_dict`, the file, `hf-hub:<id>` or the URL).

    Raises:
        FileNotFoundError: `file` does not exist, or is a folder without weights.
        CheckpointError: the file cannot be read, or no source could be loaded (or none is known).
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
        f"{name}: no pretrained weights could be loaded:\n  "
        + "\n  ".join(errors)
        + "\nways out:\n  "
        + "\n  ".join(ways_out(name, cfg, cache_dir))
    )


# ---------------------------------------------------------------------------------------------------------------
# checking a state dict against a model


def _first(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def model_name(model: torch.nn.Module) -> str:
    """The registered name a model was built under (its pretrained config's architecture), else its class.

    Args:
        model: the model.

    Returns:
        The name.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def describe_mismatch(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module, adaptable: Iterable[str] = ()
) -> List[str]:
    """How `state_dict` differs from `model`'s own (missing, unexpected keys, shape mismatches), ignoring
    `adaptable` keys; empty when it fits.

    Args:
        state_dict: the weights to check.
        model: the model they are meant for.
        adaptable: keys that may be missing, extra or reshaped.

    Returns:
        One line per kind of difference, the first keys of each named.
    """
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
    (classifier and stem, which timm re-initializes or adapts), which may be missing, extra or reshaped.

    Args:
        state_dict: the weights to check.
        model: the model they are meant for.
        source: where they came from, for the message.
        adaptable: keys that may differ.

    Raises:
        CheckpointError: they do not fit; the message says how (`describe_mismatch`).
    """
    parts = describe_mismatch(state_dict, model, adaptable)
    if parts:
        raise CheckpointError("; ".join([f"{source}: does not fit {model_name(model)}"] + parts))


def adaptable_keys(model: torch.nn.Module, pretrained_cfg: Mapping[str, Any]) -> set:
    """State-dict keys timm adapts after our filter: the classifier (new class count) and the first conv (in_chans).

    Args:
        model: the model being loaded.
        pretrained_cfg: its pretrained config (`classifier`, `first_conv`).

    Returns:
        The `.weight` and `.bias` keys of those modules.
    """
    keys = set()
    for field in ("classifier", "first_conv"):
        names = pretrained_cfg.get(field) or ()
        for module_name in [names] if isinstance(names, str) else names:
            keys.update({f"{module_name}.weight", f"{module_name}.bias"})
    return keys


def checkpoint_filter_fn(state_dict, model, source: str = "checkpoint"):
    """timm `pretrained_filter_fn`: unwrap training checkpoints and refuse any state dict that does not fit.

    Args:
        state_dict: what the weight file holds.
        model: the model timm builds.
        source: where the weights came from, for the messages.

    Returns:
        The unwrapped state dict.

    Raises:
        CheckpointError: it is no state dict or does not fit the model (classifier and stem excepted).
    """
    state_dict = unwrap_state_dict(state_dict, source)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    check_state_dict(state_dict, model, source, adaptable=adaptable_keys(model, cfg))
    return state_dict
