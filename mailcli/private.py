"""Directories readable by their owner only: mailcli's data directory holds people's emails."""

from __future__ import annotations

import os
from pathlib import Path


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
