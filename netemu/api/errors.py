"""Diagnostics: every input error is reported with file:line, object and field."""

from __future__ import annotations

import re
from dataclasses import dataclass

FieldPath = tuple[str | int, ...]


def format_field_path(path: FieldPath) -> str:
    """`("spec", "ports", 0, "port")` → `spec.ports[0].port` (kubectl's notation)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in the input, located as precisely as the input allows."""

    file: str
    line: int
    obj: str  # "Kind/name", or "" when the document has no usable identity
    field: str  # "spec.ports[0].port", or "" for the whole object/document
    message: str

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}"]
        if self.obj:
            parts.append(self.obj)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(_one_line(part) for part in parts)


# Line breaks and other control characters (a name may hold any): escaped, so that a
# diagnostic is always one line, whatever the input.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class InputError(Exception):
    """Raised with every diagnostic of a stage; the CLI prints them and exits 2."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
