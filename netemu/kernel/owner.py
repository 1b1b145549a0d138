"""Files netemu writes for the user who ran it under sudo (pcaps, trace
reports, pictures): handed to that user, so Wireshark or a browser opens
them without root.

Owns nothing; changes only the owner of the paths it is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def give_to_sudo_user(paths: Iterable[Path]) -> None:
    """chown `paths` to SUDO_UID:SUDO_GID when running as root under sudo;
    otherwise leave them alone."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if not uid or not gid or os.geteuid() != 0:
        return
    for path in paths:
        try:
            os.chown(path, int(uid), int(gid))
        except PermissionError:
            return  # a file system that maps owners itself (NFS root squash)
