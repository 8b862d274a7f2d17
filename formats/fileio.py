"""File I/O at the edges: input files read with clear errors, outputs written atomically."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from nnr.codec.errors import InputError, OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file; on success it replaces ``path``, on any error nothing is left."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        raise


WRITE_BEHIND_BYTES = 64 << 20
"""A large output asks the OS to start writing it to disk each time this much more is written."""


class WriteBehind:
    """Asks the OS to start writing a file to disk every WRITE_BEHIND_BYTES written, without
    waiting for it: ``posix_fadvise(DONTNEED)`` on Linux starts the writeback of the pages
    written so far and drops those already on disk from the page cache. The disk then works
    while the decoder does, the final fsync of a large output (the data file of ``nnr decode
    big.nnr -o big.onnx``) finds little left to write, and a model larger than the page cache
    does not crowd other files out of it. Advice only: where the call is missing (macOS,
    Windows) or fails, nothing happens, and the final fsync reports any write error."""

    def __init__(self, fh: BinaryIO, every: int | None = None) -> None:
        self._fh, self._every, self._since = fh, every or WRITE_BEHIND_BYTES, 0

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes just written; start the writeback if enough came since the last."""
        self._since += n
        if self._since < self._every or not hasattr(os, "posix_fadvise"):
            return
        self._since = 0
        self._fh.flush()
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as fh:
        fh.write(data)


def map_input(src: str | os.PathLike, kind: str) -> bytes | memoryview:
    """A user-supplied file mapped read-only into memory, so only the pages a reader touches
    are read (as safetensors does); the file must not change while mapped. A file that can't
    be mapped (a pipe, an empty file) is read whole instead. Errors are read_input's."""
    path = Path(src)
    _check_readable(path, kind)
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                return fh.read()
            try:
                return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
            except (OSError, ValueError):  # a file system without mmap
                return fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc


def _check_readable(path: Path, kind: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected {kind}")


def read_input(src: str | os.PathLike, kind: str) -> bytes:
    """Bytes of a user-supplied file; missing, directory or unreadable is an InputError."""
    path = Path(src)
    _check_readable(path, kind)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
