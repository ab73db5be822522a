"""Replacing a small state file so that a crash or power cut leaves either the old content or the new one.

Write a temporary file beside it, fsync it, rename it over the old one, then fsync the directory so the
rename itself is on disk. A reader never sees a half-written file.

On a full disk no temporary file can be written: ``rewrite_in_place`` is the fallback for a file kept with room
to spare (spaces after its content), overwriting its own blocks, which needs no new ones.
"""

import contextlib
import errno
import os
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (mode 0600), durably. A temporary file that could not be completed (a full
    disk) is removed, so as not to hold the blocks it got."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    sync_directory(path.parent)


def rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite the existing ``path`` with ``text`` (ASCII) and spaces up to its present size, then fsync it: no
    file is made and the file does not grow, so on a filesystem that overwrites in place (ext4, as on the
    gateway's SD card) it works on a full disk. OSError when ``path`` is missing or too small for ``text``.

    Not atomic: a power cut during the write may leave part old, part new (a reader then cannot parse it and
    must say so); it is for a file that a full disk would otherwise leave stale."""
    data = text.encode("ascii")
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        if len(data) > size:
            raise OSError(errno.ENOSPC, f"no room to rewrite {path.name} in place ({len(data)} bytes, it has {size})")
        if os.pwrite(fd, data.ljust(size, b" "), 0) != size:
            raise OSError(errno.ENOSPC, f"{path.name} rewritten in place only in part")
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(directory: Path) -> None:
    """fsync a directory, so that the names made or replaced in it (a new file, a rename) are on disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
