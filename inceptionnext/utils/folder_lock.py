"""One run per folder: an OS lock (flock) on a `.lock` file in the folder, held while a run writes there. The
kernel drops the lock when the process ends, however it ends (a kill, a crash, a power cut), so a killed run's
folder is never left locked; a live run's is, to every other process."""

import contextlib
import os
import socket
from typing import Optional

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not locked there
    fcntl = None

LOCK_NAME = ".lock"


class FolderLock:
    """A held lock on a folder; `release` (or the process's end) lets another run in."""

    def __init__(self, folder: str, fd: Optional[int]):
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the only descriptor of the open file drops its flock
            self._fd = None

    def __del__(self):
        self.release()


def holder(folder: str) -> str:
    """Who holds `folder`'s lock, as its lock file says ('process 1234 on host')."""
    try:
        with open(os.path.join(folder, LOCK_NAME)) as f:
            pid, _, host = f.read(200).strip().partition(" ")
    except OSError:
        pid, host = "", ""
    return f"process {pid} on {host}" if pid.isdigit() and host else "another process"


def try_lock_folder(folder: str) -> Optional[FolderLock]:
    """The folder (created if need be) locked for this process, or None when a live process holds it."""
    os.makedirs(folder, exist_ok=True)
    if fcntl is None:
        return FolderLock(folder, None)
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # a file system without flock (some network mounts): not locked, as before
        os.close(fd)
        return FolderLock(folder, None)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return FolderLock(folder, fd)
