"""The one way qkd_circuits writes and reads secret files (keys, pools, records, credentials).

Every file that holds key material — private keys (and the certificates written beside them),
PSK/pool files, measurement records, job handles with the parties' choices — goes through
:func:`write_secret_file` and, where it is read back as raw bytes, :func:`read_secret_file`.
Why each step:

* **mode 0600, whatever the umask.**  The data is written to a new temporary file created with
  mode 0600 and then ``fchmod``-ed to 0600, so neither a permissive umask (``umask 0``) nor an
  old file's mode (an existing 0644 key overwritten in place keeps 0644) ever exposes it.
* **exclusive create, no symlink following.**  The temporary file is opened with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random name (:func:`secrets.token_hex`) in the
  target's directory: an attacker who can write to that directory cannot pre-plant a file or a
  symlink there that we would write *through* (a symlink to ``~/.ssh/authorized_keys``, say).
* **atomic replace.**  The data is ``fsync``-ed, then ``os.replace`` moves the temporary file
  onto the target.  A reader sees the old file or the new one, never half of one; a crash leaves
  at most a stray temporary file.  A symlink planted *at the target* is replaced itself (the
  link is unlinked, its target is never opened).  The directory is ``fsync``-ed too, so the new
  name survives a power cut.
* **no silent overwrite.**  An existing target (or a dangling symlink there) is refused with a
  :class:`~qkd_circuits.ConfigurationError` unless ``overwrite=True`` (``--force`` on the
  command line); without it the new file is linked in with ``os.link``, which fails atomically
  if the name appeared meanwhile.  On any failure the temporary file is removed.

:func:`read_secret_file` opens with ``O_NOFOLLOW`` (a symlink is refused, not followed) and reads
into a ``bytearray`` that the caller overwrites with :func:`wipe` once it is parsed.  Wiping is
best effort: Python may have copied the bytes elsewhere (immutable ``bytes``, parsed objects),
but the buffers this module hands out need not linger.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

import numpy as np

from .exceptions import ConfigurationError, RecordError

__all__ = ["write_secret_file", "read_secret_file", "wipe", "SECRET_FILE_MODE"]

#: The mode of every secret file: read and write by the owner only.
SECRET_FILE_MODE = 0o600

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted at the path must not hang the reader
_O_BINARY = getattr(os, "O_BINARY", 0)
_TEMP_ATTEMPTS = 4
#: errno of open(O_NOFOLLOW) on a symlink: ELOOP on Linux and macOS, EMLINK on FreeBSD.
_SYMLINK_ERRNOS = {errno.ELOOP, getattr(errno, "EMLINK", errno.ELOOP)}


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _refuse_existing(path: Path) -> ConfigurationError:
    return ConfigurationError(f"{path} exists; refusing to overwrite it (pass overwrite=True; on the "
                              f"command line, --force)")


def _fsync_directory(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: directories cannot be opened for fsync
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync directories; the data itself is synced
        pass
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
    for attempt in range(_TEMP_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return tmp, os.open(tmp, flags, SECRET_FILE_MODE)
        except FileExistsError:  # something (perhaps planted) holds that name: never touch it
            if attempt == _TEMP_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def write_secret_file(path: str | os.PathLike, data: bytes | bytearray | memoryview, *,
                      overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically, mode 0600, never through a symlink; returns the path.

    Raises:
        ConfigurationError: ``path`` exists (a file, a directory or a symlink) and ``overwrite``
            is false.
        TypeError: ``data`` is not bytes-like.
        OSError: the directory is missing or not writable, the disk is full...
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")
    path = Path(path)
    if not overwrite and os.path.lexists(path):  # fail early, before writing anything
        raise _refuse_existing(path)
    tmp, fd = _create_temporary(path)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, SECRET_FILE_MODE)  # the umask may have cleared bits; never more than 0600
            with memoryview(data) as view, view.cast("B") as raw:
                written = 0
                while written < len(raw):
                    written += os.write(fd, raw[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)  # a symlink at ``path`` is replaced, never followed
        else:
            _link_exclusively(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_directory(path.parent)
    return path


def _link_exclusively(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist, atomically where possible."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _refuse_existing(path) from None
    except (OSError, NotImplementedError):  # no hard links here (FAT, some network file systems)
        if os.path.lexists(path):
            raise _refuse_existing(path) from None
        os.replace(tmp, path)
        return
    _remove(tmp)


def read_secret_file(path: str | os.PathLike) -> bytearray:
    """The bytes of the regular file ``path``, in a ``bytearray`` to :func:`wipe` after use.

    Raises:
        RecordError: no file at ``path``, a symbolic link there (refused, not followed), not a
            regular file, or it cannot be read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK | _O_BINARY)
    except FileNotFoundError:
        raise RecordError(f"no file at {path}") from None
    except OSError as exc:
        if exc.errno in _SYMLINK_ERRNOS and os.path.islink(path):
            raise RecordError(f"{path} is a symbolic link; secret files are read only as regular files, "
                              f"never through a link: replace it with the file itself") from None
        raise RecordError(f"cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RecordError(f"{path} is not a regular file")
        buffer = bytearray(info.st_size)  # sized up front: no reallocation leaves copies behind
        got = 0
        with memoryview(buffer) as view:
            while got < len(buffer):
                n = os.readv(fd, [view[got:]]) if hasattr(os, "readv") else _read_into(fd, view[got:])
                if not n:
                    break
                got += n
        if got < len(buffer):  # the file shrank while we read it
            del buffer[got:]
        while chunk := os.read(fd, 1 << 16):  # ... or grew
            buffer += chunk
        return buffer
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read_into(fd: int, view: memoryview) -> int:
    chunk = os.read(fd, len(view))
    view[:len(chunk)] = chunk
    return len(chunk)


def wipe(buffer: bytearray | memoryview | np.ndarray | None) -> None:
    """Overwrite ``buffer`` with zeros in place (a ``bytearray``, a writable ``memoryview`` or a
    writable numpy array); ``None`` is ignored.

    Raises:
        TypeError: an immutable object (``bytes``, a read-only view or array): it cannot be wiped.
    """
    if buffer is None:
        return
    if isinstance(buffer, np.ndarray):
        if not buffer.flags.writeable:
            raise TypeError("cannot wipe a read-only numpy array")
        buffer.fill(0)
        return
    if isinstance(buffer, bytearray):
        buffer[:] = bytes(len(buffer))  # same length: overwritten in place, no reallocation
        return
    if isinstance(buffer, memoryview):
        if buffer.readonly:
            raise TypeError("cannot wipe a read-only memoryview")
        if buffer.c_contiguous:
            with buffer.cast("B") as raw:
                raw[:] = bytes(raw.nbytes)
        else:
            np.asarray(buffer).fill(0)
        return
    raise TypeError(f"wipe needs a bytearray, memoryview or numpy array, got {type(buffer).__name__} "
                    f"(immutable objects cannot be wiped)")
