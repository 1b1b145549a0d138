"""Whether a container's program can run on this machine: the look-up an
OCI runtime does before execve (runc's exec.LookPath against the
container's PATH; a name with a `/` is a path), with the machine's
filesystem as the container's root, as a lab container sees it.

Owns nothing: it only reads file metadata (and a script's first line).
"""

from __future__ import annotations

import os
import stat
from pathlib import PurePosixPath

# The longest `#!` line the kernel reads (BINPRM_BUF_SIZE, Linux >= 5.1).
SHEBANG_MAX = 256


def _executable(path: str) -> str | None:
    """Why `path` cannot be executed, or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file or directory"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    # Any execute bit: the runtime runs it as the container's user, which
    # may not be the caller (root passes os.access for any bit).
    if not info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        return "permission denied (not executable)"
    return None


def _interpreter(path: str) -> str | None:
    """The `#!` interpreter of a script, or None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(SHEBANG_MAX)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    words = line.split()
    return words[0].decode(errors="replace") if words else None


def resolve(program: str, path_env: str, working_dir: str = "/") -> tuple[str | None, str]:
    """(the file `program` names, or None; why not, when None)."""
    if "/" in program:
        return str(PurePosixPath(working_dir) / program), ""
    for directory in path_env.split(":"):
        # An empty PATH entry is the working directory (exec.LookPath).
        candidate = str(PurePosixPath(directory or working_dir) / program)
        if _executable(candidate) is None:
            return candidate, ""
    return None, f'executable file not found in $PATH ("{path_env}")'


def program_problem(program: str, path_env: str, working_dir: str = "/") -> str | None:
    """Why `program` (a container's command[0]) cannot run here, or None."""
    if not program:
        return "empty command"
    found, why = resolve(program, path_env, working_dir)
    if found is None:
        return why
    # Name the file when it is not the program as written.
    where = "" if found == program else f"{found}: "
    problem = _executable(found)
    if problem is not None:
        return f"{where}{problem}"
    interpreter = _interpreter(found)
    if interpreter is not None:
        problem = _executable(interpreter)
        if problem is not None:
            return f"{where}interpreter {interpreter}: {problem}"
    return None
