"""Files netemu writes for the user who ran it (pcaps, trace reports,
pictures), handed to that user (the sudo user when run as root under sudo)
so Wireshark or a browser opens them without root.

netemu runs as root, and captures/ may sit in a directory other users can
write to, so an output directory is reached one component at a time with
O_NOFOLLOW from an open directory (a planted symlink anywhere from the root
down is refused, never followed), every directory it did not create must
belong to root or the invoking user, each component is one plain name (a
lab name or trace id never leads out of the root), and every file is
created new (O_CREAT|O_EXCL: never through a planted file or symlink) with
mode 0600, then handed over with fchown on its descriptor.

A file the user names outside captures/ (a picture: `--svg`, `graph -o`)
is written with write_file: never through a symlink, a FIFO or device,
into another user's file or a hard link to some other file.

Owns: the directories and files it creates under the root it is given, and
the one file write_file is asked to write.
Must not touch: anything else; it never follows a symlink below the root,
never overwrites a file there, and changes the owner only of what it created.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

# Private to the invoking user: a capture holds every byte of the flows it saw.
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
NAME_MAX = 255  # bytes in one path component (<linux/limits.h>)

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class OutputPathError(Exception):
    """An output path is unsafe (a symlink, a file that already exists, a
    directory owned by someone else, a name that leaves its root) or cannot
    be created; the message names the path and why."""


def invoking_user() -> tuple[int, int]:
    """(uid, gid) of the user who ran netemu: SUDO_UID/SUDO_GID when running
    as root under sudo, else this process's own."""
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() == 0 and uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    return os.geteuid(), os.getegid()


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`, a file the user named (a picture): created
    new (mode 0600, given to the invoking user), or replacing a regular file
    of the invoking user or root. Never through a symlink at `path`, never
    into a FIFO or device, another user's file, or a file with other names
    (a hard link planted to something else)."""
    owner = invoking_user()
    try:
        fd = os.open(path, _NEW_FILE_FLAGS, FILE_MODE)
        created = True
    except FileExistsError:
        fd, created = _open_existing_file(path), False
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        if created:
            os.fchmod(fd, FILE_MODE)
            if owner != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):  # NFS root squash
                    os.fchown(fd, *owner)
        else:
            info = os.fstat(fd)
            problem = None
            if not stat.S_ISREG(info.st_mode):
                problem = "is not a regular file"
            elif info.st_uid not in {0, os.geteuid(), owner[0]}:
                problem = f"is owned by uid {info.st_uid}, not by root or uid {owner[0]}"
            elif info.st_nlink > 1:
                problem = "has other names (hard links)"
            if problem is not None:
                raise OutputPathError(f"{path}: {problem}: refusing to overwrite it")
            os.ftruncate(fd, 0)
        try:
            out.write(data)
        except OSError as exc:
            raise OutputPathError(f"{path}: cannot write: {exc.strerror}") from None


def _open_existing_file(path: Path) -> int:
    try:
        # O_NONBLOCK: a FIFO must not wait for a reader (it is refused).
        return os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputPathError(f"{path}: is a symbolic link: refusing to follow it") from None
        raise OutputPathError(f"{path}: cannot write: {exc.strerror}") from None


def check_name(name: str, where: Path) -> None:
    """Raise OutputPathError unless `name` is one plain path component
    (so joining it to `where` stays inside `where`)."""
    problem = None
    if name in ("", ".", ".."):
        problem = "is not a file name"
    elif "/" in name or "\0" in name:
        problem = "contains '/' or a NUL byte"
    elif len(os.fsencode(name)) > NAME_MAX:
        problem = f"is longer than {NAME_MAX} bytes"
    if problem is not None:
        raise OutputPathError(f"{where}: {name!r} {problem}: refusing to write there")


class OutputDirectory:
    """`root`/`names...`, each directory opened without following symlinks
    and created (mode 0700, given to the invoking user) when missing. The
    last one must not exist yet when `fresh` (a trace's own directory).
    Files are created inside it with `create()` only; `discard()` removes
    what this object created."""

    def __init__(self, root: Path, *names: str, fresh: bool = False) -> None:
        self.path = root.joinpath(*names)
        self.owner = invoking_user()
        self._trusted = {0, os.geteuid(), self.owner[0]}
        self._files: list[str] = []
        self._fd = -1
        self._parent_fd = -1
        self._created = False
        self._open(root, names, fresh)

    def _open(self, root: Path, names: tuple[str, ...], fresh: bool) -> None:
        for index, name in enumerate(names):
            check_name(name, root.joinpath(*names[:index]))
        if root.name in ("", ".", ".."):
            # `.`, `..` or `/`: the directory itself, which is no symlink.
            fd = self._open_existing(root)
            created = False
        else:
            # Symlinks above the root are the user's own choice (a home
            # directory may be one); the root itself must not be one.
            parent = self._open_existing(root.parent)
            try:
                fd, created = self._open_child(parent, root.name, root, exclusive=False)
            finally:
                os.close(parent)
        for index, name in enumerate(names):
            last = index == len(names) - 1
            try:
                child, created = self._open_child(
                    fd, name, root.joinpath(*names[: index + 1]), exclusive=fresh and last
                )
            except BaseException:
                os.close(fd)
                raise
            if last:
                self._parent_fd = fd
            else:
                os.close(fd)
            fd = child
        self._fd, self._created = fd, created

    def _open_existing(self, path: Path) -> int:
        try:
            return os.open(path, _DIRECTORY_FLAGS)
        except OSError as exc:
            raise OutputPathError(f"{path}: cannot open the directory: {exc.strerror}") from None

    def _open_child(self, parent: int, name: str, path: Path, exclusive: bool) -> tuple[int, bool]:
        created = False
        try:
            os.mkdir(name, DIRECTORY_MODE, dir_fd=parent)
            created = True
        except FileExistsError:
            if exclusive:
                raise OutputPathError(f"{path}: already exists: refusing to reuse it") from None
        except OSError as exc:
            raise OutputPathError(f"{path}: cannot create the directory: {exc.strerror}") from None
        try:
            fd = os.open(name, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            raise OutputPathError(f"{path}: {_why_not_a_directory(exc, parent, name)}") from None
        try:
            self._check_or_take(fd, path, created, DIRECTORY_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd, created

    def _check_or_take(self, fd: int, path: Path, created: bool, mode: int) -> None:
        """A directory found in place must belong to a user netemu trusts
        (else its owner could swap what is inside); one just created gets
        its exact mode (whatever the umask) and goes to the invoking user."""
        owner = os.fstat(fd).st_uid
        if owner not in self._trusted:
            raise OutputPathError(
                f"{path}: owned by uid {owner}, not by root or uid {self.owner[0]}: "
                "refusing to write there"
            )
        if created:
            os.fchmod(fd, mode)
            self._hand_over(fd)

    def _hand_over(self, fd: int) -> None:
        if self.owner == (os.geteuid(), os.getegid()):
            return
        # A file system that maps owners itself (NFS root squash) refuses.
        with contextlib.suppress(PermissionError):
            os.fchown(fd, *self.owner)

    def create(self, name: str) -> BinaryIO:
        """A new file `name` in this directory, open for writing: mode 0600,
        owned by the invoking user. Refused if anything (a file, a symlink)
        already has that name."""
        check_name(name, self.path)
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, FILE_MODE, dir_fd=self._fd)
        except FileExistsError:
            raise OutputPathError(
                f"{self.path / name}: already exists: refusing to overwrite it"
            ) from None
        except OSError as exc:
            raise OutputPathError(f"{self.path / name}: cannot create: {exc.strerror}") from None
        self._files.append(name)
        try:
            os.fchmod(fd, FILE_MODE)
            self._hand_over(fd)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "wb")

    def write(self, name: str, data: bytes) -> Path:
        """Create `name` (as `create()` does) holding `data`; its path."""
        with self.create(name) as out:
            out.write(data)
        return self.path / name

    def discard(self) -> None:
        """Remove the files this object created, and the directory if it
        created it (nothing else: a directory that was there stays)."""
        for name in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._fd)
        self._files = []
        if self._created and self._parent_fd >= 0:
            # Fails if something else was put there: then it stays.
            with contextlib.suppress(OSError):
                os.rmdir(self.path.name, dir_fd=self._parent_fd)
            self._created = False

    def close(self) -> None:
        for fd in (self._fd, self._parent_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._parent_fd = -1

    def __enter__(self) -> OutputDirectory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _why_not_a_directory(exc: OSError, parent: int, name: str) -> str:
    # O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR (ELOOP without
    # O_DIRECTORY): look at the name itself to say which it was.
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            found = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            found = 0
        if stat.S_ISLNK(found):
            return "is a symbolic link: refusing to follow it"
        if exc.errno == errno.ENOTDIR:
            return "is not a directory"
    return f"cannot open the directory: {exc.strerror}"
