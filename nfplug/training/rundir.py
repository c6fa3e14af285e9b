"""The run folder on disk: writing its files safely, and one trainer at a time.

- :func:`writing` turns an ``OSError`` while writing a file into one line naming the file and
  the reason (read-only file system, permission denied, no space left on device, not a folder).
- :func:`atomic_file` writes a file next to its final name and renames it over, so a failed or
  interrupted write never damages the previous version; the temporary file honours the umask
  like any other new file (``tempfile.mkstemp`` would make it 0600).
- :func:`open_run_dir` makes the run folder, checks it is writable before training starts,
  takes the run's lock (``RUN/.lock``, ``fcntl.flock``: a dead process holds no lock) and
  removes temporary files an earlier, killed run left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from nfplug.errors import NfplugError

LOCK_FILE = ".lock"
CHECKPOINT_TMP = ".ckpt_*.tmp"
# Temporary files of the JSON files only the trainer writes (config.json, history.json);
# metrics.json's are left alone, an `nfplug eval` may be writing it.
TRAINER_TMP = (".config.json.*", ".history.json.*")

_REASONS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "name too long",
}


def os_reason(error: OSError) -> str:
    """A short, lower-case reason for an ``OSError`` (``no space left on device``, ...)."""
    if error.errno in _REASONS:
        return _REASONS[error.errno]
    if error.errno:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


def _not_a_folder(path: Path) -> str:
    """Why ``path`` cannot be a folder: it or one of its parents is a file."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                return "not a folder" if candidate == path else f"not a folder ({candidate} is a file)"
            break
    return "not a folder"


def cannot(path: Path, doing: str, error: OSError) -> NfplugError:
    """The one-line error for an ``OSError`` while ``doing`` something to ``path``."""
    reason = _not_a_folder(Path(path)) if error.errno in (errno.ENOTDIR, errno.EEXIST) else os_reason(error)
    return NfplugError(f"{path}: cannot {doing}: {reason}")


@contextlib.contextmanager
def writing(path: Path, doing: str = "write it") -> Iterator[None]:
    """Turn an ``OSError`` (and torch's RuntimeError for a failed write) into one line naming ``path``."""
    try:
        yield
    except NfplugError:
        raise
    except OSError as e:
        raise cannot(path, doing, e) from e
    except RuntimeError as e:  # torch.save to a path: "[enforce fail at inline_container.cc] unexpected pos"
        text = str(e)
        if "inline_container" not in text and "file write failed" not in text:
            raise
        raise NfplugError(f"{path}: cannot {doing}: {_write_failure(Path(path), text)}") from e


def _write_failure(path: Path, text: str) -> str:
    folder = next((p for p in (path, *path.parents) if p.is_dir()), None)
    try:
        st = os.statvfs(folder) if folder is not None else None
    except OSError:
        st = None
    if st is not None and st.f_bavail * st.f_frsize < 1 << 20:
        return "no space left on device"
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return f"the write failed (disk full?): {first}"


def make_folder(path: Path) -> Path:
    """``mkdir -p``; one line naming ``path`` if it cannot be a folder or cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot(path, "create the folder", e) from e
    if not path.is_dir():
        raise NfplugError(f"{path}: cannot create the folder: {_not_a_folder(path)}")
    return path


def check_writable(folder: Path) -> None:
    """Create (and remove) a file in ``folder``: fail early, before hours of work are lost."""
    folder = make_folder(folder)
    probe = folder / f".nfplug-write-test-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, b"nfplug")
        finally:
            os.close(fd)
    except OSError as e:
        raise cannot(folder, "write in the folder", e) from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb", prefix: Optional[str] = None) -> Iterator[IO[Any]]:
    """Write ``path`` via a temporary file in the same folder, renamed over at the end.

    The temporary file is created with mode 0666 minus the umask (like ``open``), flushed to
    disk before the rename, and removed if anything fails, so ``path`` is either its old
    version or the complete new one. Errors are one-line ``NfplugError`` naming ``path``.
    """
    path = Path(path)
    prefix = prefix if prefix is not None else f".{path.name}."
    with writing(path):
        for _ in range(100):
            tmp = path.parent / f"{prefix}{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "could not create a temporary file", str(path.parent))
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` completely, or keeps what it held (:func:`atomic_file`)."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def remove_stale_tmp(folder: Path, patterns: tuple = (CHECKPOINT_TMP,), keep: Optional[Path] = None) -> int:
    """Remove temporary files matching ``patterns`` in ``folder`` (left by a killed run);
    -> how many. Only call it while holding the run's lock."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for pattern in patterns:
        for tmp in Path(folder).glob(pattern):
            if keep is not None and tmp == keep:
                continue
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held while this object lives (or until
    :meth:`release`). The lock file holds the owner's pid, for the error message."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl

        self.path = Path(run_dir) / LOCK_FILE
        self.fd: Optional[int] = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise cannot(self.path, "create the run's lock file", e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise cannot(self.path, "lock the run", e) from e
            raise NfplugError(f"{run_dir}: another nfplug process is training this run{_owner(self.path)}") from None
        self.fd = fd
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def _owner(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def open_run_dir(run_dir: Path, *, resume: bool) -> RunLock:
    """Prepare ``run_dir`` for training, before any training happens.

    Creates it, checks it is writable, locks it against a second trainer (hold the returned
    lock for the whole training: it is released when it is garbage collected, i.e. when
    ``train`` returns), refuses to start a new run over an existing one, and removes the
    temporary files a killed run left behind.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    lock = RunLock(run_dir)
    if not resume and any((run_dir / "checkpoints").glob("ckpt_*.pt")):
        lock.release()
        raise NfplugError(f"--output: {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --output")
    remove_stale_tmp(run_dir / "checkpoints")
    remove_stale_tmp(run_dir, TRAINER_TMP)
    return lock
