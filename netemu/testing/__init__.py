"""netemu for automated tests: live labs as pytest fixtures, helpers that
answer with structured results, the connectivity matrix, and the check of
what privileged tests need.

- `netemu.testing.plugin`: the pytest plugin (fixtures `netemu_lab`,
  `netemu_lab_module`; marker `privileged`), loaded through the `pytest11`
  entry point;
- `netemu.testing.testlab`: `NetemuLab` (exec, http, trace, scale, apply,
  ...) and `running_lab`, for use without the fixtures too;
- `netemu.testing.matrix`: `Matrix`, `MatrixRow`, `Category`;
- `netemu.testing.results`: `ExecResult`, `HttpResult`, `PodInfo`, ...;
- `netemu.testing.requirements`: `privileged_skip_reason()`.

The names below are imported on first use: the plugin imports this
package at every pytest start-up, and netemu.lab is not cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netemu.testing.matrix import Category, Matrix, MatrixRow
    from netemu.testing.plugin import LabFactory
    from netemu.testing.requirements import missing_requirements, privileged_skip_reason
    from netemu.testing.results import (
        EndpointInfo,
        ExecFailedError,
        ExecResult,
        HttpResult,
        ObjectRef,
        PodInfo,
        Scaled,
    )
    from netemu.testing.testlab import NetemuLab, running_lab, unique_lab_name

_EXPORTS = {
    "Category": "matrix",
    "Matrix": "matrix",
    "MatrixRow": "matrix",
    "LabFactory": "plugin",
    "missing_requirements": "requirements",
    "privileged_skip_reason": "requirements",
    "EndpointInfo": "results",
    "ExecFailedError": "results",
    "ExecResult": "results",
    "HttpResult": "results",
    "ObjectRef": "results",
    "PodInfo": "results",
    "Scaled": "results",
    "NetemuLab": "testlab",
    "running_lab": "testlab",
    "unique_lab_name": "testlab",
}

__all__ = [
    "Category",
    "EndpointInfo",
    "ExecFailedError",
    "ExecResult",
    "HttpResult",
    "LabFactory",
    "Matrix",
    "MatrixRow",
    "NetemuLab",
    "ObjectRef",
    "PodInfo",
    "Scaled",
    "missing_requirements",
    "privileged_skip_reason",
    "running_lab",
    "unique_lab_name",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
