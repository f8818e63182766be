"""The secret-file writer and reader: mode 0600, no symlink followed, no silent overwrite, wiping."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from qkd_circuits import secretfile
from qkd_circuits.exceptions import ConfigurationError, RecordError
from qkd_circuits.secretfile import read_secret_file, wipe, write_secret_file

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes and symlinks are POSIX")


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@posix_only
def test_mode_is_0600_even_with_umask_0(tmp_path, umask_0):
    path = write_secret_file(tmp_path / "k.key", b"secret")
    assert path == tmp_path / "k.key"
    assert mode(path) == 0o600
    assert path.read_bytes() == b"secret"


@posix_only
def test_overwriting_a_0644_file_leaves_it_0600(tmp_path, umask_0):
    path = tmp_path / "old.key"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write_secret_file(path, bytearray(b"new"), overwrite=True)
    assert mode(path) == 0o600 and path.read_bytes() == b"new"


def test_existing_file_is_refused_without_overwrite(tmp_path):
    path = tmp_path / "k.key"
    path.write_bytes(b"keep me")
    with pytest.raises(ConfigurationError, match=r"k\.key exists.*overwrite=True.*--force"):
        write_secret_file(path, b"new")
    assert path.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]  # no temporary file left behind


@posix_only
def test_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"do not touch")
    link = tmp_path / "k.key"
    link.symlink_to(target)
    write_secret_file(link, b"secret", overwrite=True)
    assert not link.is_symlink() and link.is_file()
    assert link.read_bytes() == b"secret" and mode(link) == 0o600
    assert target.read_bytes() == b"do not touch"


@posix_only
@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_at_the_target_is_refused_without_overwrite(tmp_path, dangling):
    target = tmp_path / "victim"
    if not dangling:
        target.write_bytes(b"do not touch")
    link = tmp_path / "k.key"
    link.symlink_to(target)
    with pytest.raises(ConfigurationError, match="exists"):
        write_secret_file(link, b"secret")
    assert link.is_symlink()
    assert target.exists() != dangling and (dangling or target.read_bytes() == b"do not touch")


@posix_only
def test_a_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch):
    names = iter(["planted", "planted", "fresh"])
    monkeypatch.setattr(secretfile.secrets, "token_hex", lambda n: next(names))
    target = tmp_path / "victim"
    target.write_bytes(b"do not touch")
    planted = tmp_path / ".k.key.planted.tmp"
    planted.symlink_to(target)
    path = write_secret_file(tmp_path / "k.key", b"secret")
    assert path.read_bytes() == b"secret" and mode(path) == 0o600
    assert target.read_bytes() == b"do not touch"
    assert planted.is_symlink()  # left alone, not removed either
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.key.planted.tmp", "k.key", "victim"]


@posix_only
def test_a_temporary_name_that_is_always_taken_fails_without_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(secretfile.secrets, "token_hex", lambda n: "planted")
    target = tmp_path / "victim"
    target.write_bytes(b"do not touch")
    (tmp_path / ".k.key.planted.tmp").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_secret_file(tmp_path / "k.key", b"secret")
    assert target.read_bytes() == b"do not touch" and not (tmp_path / "k.key").exists()


def test_temporary_file_is_removed_when_the_write_fails(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(secretfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_secret_file(tmp_path / "k.key", b"secret")
    assert list(tmp_path.iterdir()) == []


def test_write_accepts_bytes_like_and_refuses_other_types(tmp_path):
    write_secret_file(tmp_path / "a", memoryview(b"abc"))
    write_secret_file(tmp_path / "b", np.arange(3, dtype=">u2").data)  # any format, written as raw bytes
    assert (tmp_path / "a").read_bytes() == b"abc"
    assert (tmp_path / "b").read_bytes() == b"\x00\x00\x00\x01\x00\x02"
    with pytest.raises(TypeError, match="str"):
        write_secret_file(tmp_path / "c", "text")


def test_read_returns_a_bytearray(tmp_path):
    path = write_secret_file(tmp_path / "k.key", b"\x00\x01secret")
    data = read_secret_file(path)
    assert type(data) is bytearray and data == b"\x00\x01secret"
    del data[:2]  # resizable: no view left exported
    assert read_secret_file(write_secret_file(tmp_path / "empty", b"")) == bytearray()


def test_read_refuses_a_missing_file(tmp_path):
    with pytest.raises(RecordError, match="no file at .*nope"):
        read_secret_file(tmp_path / "nope")


@posix_only
def test_read_refuses_a_symlink(tmp_path):
    target = write_secret_file(tmp_path / "real.key", b"secret")
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(RecordError, match="symbolic link"):
        read_secret_file(link)


def test_read_refuses_a_directory(tmp_path):
    with pytest.raises(RecordError):
        read_secret_file(tmp_path)


@posix_only
def test_read_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RecordError, match="not a regular file"):
        read_secret_file(fifo)


def test_wipe_zeroes_in_place():
    data = bytearray(b"secret")
    alias = memoryview(data)
    wipe(data)
    assert data == bytes(6) and alias.tobytes() == bytes(6)

    backing = bytearray(b"abcdefgh")
    wipe(memoryview(backing)[2:5])
    assert backing == b"ab\x00\x00\x00fgh"
    strided = bytearray(b"abcdef")
    wipe(memoryview(strided)[::2])
    assert strided == b"\x00b\x00d\x00f"

    array = np.arange(1, 9, dtype=np.uint16)
    wipe(array)
    assert not array.any()
    bits = np.ones(5, dtype=bool)
    wipe(bits[1:3])
    assert bits.tolist() == [True, False, False, True, True]
    wipe(None)


def test_wipe_refuses_what_cannot_be_overwritten():
    for immutable in (b"secret", memoryview(b"secret")):
        with pytest.raises(TypeError):
            wipe(immutable)
    frozen = np.ones(3, dtype=np.uint8)
    frozen.setflags(write=False)
    with pytest.raises(TypeError, match="read-only"):
        wipe(frozen)
    assert frozen.all()
