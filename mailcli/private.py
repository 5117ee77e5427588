"""Directories readable by their owner only: mailcli's data directory holds people's emails."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")


def make_private_dir(path: Path) -> bool:
    """Create ``path`` and its missing parents with mode 0700, and take the group and other bits off
    ``path`` if it already existed. Returns whether ``path`` is private now (no group or other bits).

    Only directories created here are set to 0700 (whatever the umask); an existing one loses its
    group and other bits but never gains one, so a directory its owner made read-only stays
    read-only. A directory that cannot be created raises OSError; one that cannot be made private
    (another user owns it) returns False, for the caller to decide.
    """
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created concurrently by another process, which makes it private
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except OSError:
        return False
    return True


def write_private(path: Path, write: Callable[[TextIO], T], *, newline: str | None = None) -> T:
    """Write a text file readable by its owner only (exports and reports hold people's emails):
    ``write(fh)`` fills a temporary file beside ``path`` (``<name>.part``, mode 0600), renamed over
    ``path`` once complete, so a reader never sees half a file; on any failure the temporary file
    is removed. Missing parent directories are created private. Returns what ``write`` returns."""
    path = Path(path)
    if not path.parent.exists():
        make_private_dir(path.parent)
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            result = write(fh)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result
