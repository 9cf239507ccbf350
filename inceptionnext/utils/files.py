"""Writing files so that nothing is lost: a temp file beside the target, flushed and renamed over it, with a full disk reported in one line naming the file."""

import contextlib
import errno
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

import torch

PathLike = Union[str, os.PathLike]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: setting it later would race with other threads creating files


def _temp_prefix(name: str) -> str:
    """Temp files beside a target are `.<name>.<host>-<pid>.<random>.tmp`: the host and pid let a later write
    tell a dead writer's leftover from a live one."""
    return f".{name}.{_HOST}-{os.getpid()}."


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.)?[A-Za-z0-9_]{8}\.tmp$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_temp_files(folder: PathLike, name: Optional[str] = None, legacy: bool = False) -> List[Path]:
    """Remove the temp files that killed writes of `write_atomically` left in `folder` (for target `name`, or any
    target): those of a writer on this host that is no longer running. With `legacy`, also those without a host
    and pid (earlier versions' naming): only for a folder this process owns, such as a run folder."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if not m or (name is not None and m.group("name") != name) or not entry.is_file(follow_symlinks=False):
            continue
        if m.group("pid") is None:
            stale = legacy
        else:
            stale = m.group("host") == _HOST and not _pid_alive(int(m.group("pid")))
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)
                removed.append(Path(entry.path))
    return removed


class _HeldErrorFile:
    """A binary file whose write errors are held until the writer is done: torch's zip writer turns a failed
    write into 'unexpected pos' (and torch.jit.save into an abort, SIGABRT), so the real OSError, e.g. ENOSPC,
    comes out only this way."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        if self.error is None:
            try:
                self.raw.write(data)
            except OSError as e:
                self.error = e
        return len(memoryview(data))

    def __getattr__(self, item):
        return getattr(self.raw, item)


@contextlib.contextmanager
def open_for_writing(path: PathLike):
    """`open(path, 'wb')` for torch.save, torch.jit.save and torch.export.save: a failed write (full disk)
    raises its OSError once the writer returns, instead of a torch error or an abort."""
    with open(path, "wb") as raw:
        held = _HeldErrorFile(raw)
        yield held
        if held.error is None:
            raw.flush()
    if held.error is not None:
        raise held.error


def torch_save(obj: Any, path: PathLike) -> None:
    """torch.save through `open_for_writing`."""
    with open_for_writing(path) as f:
        torch.save(obj, f)


_SHORT_WRITE = ("unexpected pos", "failed writing", "file write failed", "no space left on device", "os error 28")


def _free_bytes(folder: Path) -> Optional[int]:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _write_error(code: int, message: str) -> OSError:
    """An OSError carrying `code` whose text is `message` alone (no '[Errno N]' in front)."""
    e = OSError(message)
    e.errno = code
    return e


def _explain_write_error(e: BaseException, path: Path, existed: bool, free: Optional[int]) -> Optional[OSError]:
    """One line for a write that failed for lack of room (ENOSPC, quota, or a library's short-write error on a
    full disk); None for any other error, which is passed on as it is."""
    kept = f"; the previous {path.name} is kept" if existed else ""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason = {
            errno.ENOSPC: "no space left on device",
            errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for this file system or limit",
        }[e.errno]
        return _write_error(e.errno, f"cannot write {path}: {reason}{kept}")
    text = str(e).lower()
    if isinstance(e, OSError) or not any(s in text for s in _SHORT_WRITE):
        return None
    if "no space" in text or "os error 28" in text or (free is not None and free < 2**20):
        return _write_error(errno.ENOSPC, f"cannot write {path}: no space left on device{kept}")
    return _write_error(
        errno.EIO,
        f"cannot write {path}: the write was cut short ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:200] if str(e) else ''}){kept}",
    )


def _publish_exclusively(tmp: str, path: Path) -> None:
    """`tmp` becomes `path` only if nothing is there, decided by the file system in one step (a hard link), so
    of two processes writing the same new file one wins and the other gets a FileExistsError."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        e = FileExistsError(f"cannot write {path}: it was created meanwhile by another process, and is kept")
        e.errno = errno.EEXIST
        raise e from None
    except OSError:  # a file system without hard links: claim the name, then move the content onto it
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_UMASK)
        os.close(fd)
        os.replace(tmp, path)
        return
    os.remove(tmp)


def write_atomically(path: PathLike, write: Callable[[str], None], exclusive: bool = False) -> Path:
    """`write(tmp)` to a temp file beside `path`, flushed to disk, then renamed over `path`: a crash mid-write
    (or a `write` that raises, e.g. a failed check of the new file) leaves the previous file intact, never a
    truncated one. The temp file is removed on every failure; one left by a killed writer is removed by the
    next write of the same file. A full disk is one line naming the file and 'no space left on device'. With
    `exclusive`, an existing `path` is never replaced, even one another process creates meanwhile: a
    FileExistsError naming it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror}") from e
    existed = path.exists()
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it owner-only; give it an ordinary file's mode
        finally:
            os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # again: a writer that replaces the file (safetensors) brings its own mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if exclusive:
            _publish_exclusively(tmp, path)
        else:
            os.replace(tmp, path)
    except Exception as e:
        explained = _explain_write_error(e, path, existed, _free_bytes(path.parent))
        if explained is None:
            raise
        raise explained from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
