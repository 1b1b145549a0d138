"""Go's time.ParseDuration, for the duration fields of kube-proxy's
configuration (metav1.Duration: "30s", "1m30s", "500ms", "1.5h").

A sequence of decimal numbers, each with an optional fraction and a unit
(ns, us, µs, ms, s, m, h), with an optional sign; "0" alone needs no unit.
"""

from __future__ import annotations

import re
from typing import Any

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_duration(value: Any) -> float:
    """Seconds in a Go duration string; DurationError says what is wrong."""
    if not isinstance(value, str):
        raise DurationError(f'expected a duration string such as "30s" or "1m30s", got {value!r}')
    text = value
    sign = 1.0
    if text and text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise DurationError(f'invalid duration "{value}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            missing = re.match(r"(\d+\.?\d*|\.\d+)$", text[pos:])
            why = "missing unit in" if missing else "invalid"
            raise DurationError(f'{why} duration "{value}" (units: ns, us, ms, s, m, h)')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total
