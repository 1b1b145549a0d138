"""netemu's pytest plugin, loaded in every pytest run of an environment
where netemu is installed (the `pytest11` entry point `netemu`):

- the `privileged` marker: a marked test is skipped, with a reason naming
  exactly what is missing (root, tools on PATH, kernel features; see
  netemu.testing.requirements), checked once per session and only when a
  privileged test was collected. A test that uses a lab fixture is marked
  privileged automatically;
- the `netemu_lab` fixture (and `netemu_lab_module`, the same for
  module-scoped fixtures): a factory, `with netemu_lab("controlplane/default")
  as lab:`, that brings a lab up under a name unique to the test, the
  xdist worker and the process, and always takes it down (on failure and
  Ctrl-C too). Relative lab paths are taken from the pytest rootdir, so a
  suite runs the same from any directory;
- a safety net: at the end of the session every lab the session brought
  up and did not take down is taken down, and reported.

Start-up cost is one small import: netemu.lab, the API types and Scapy
load only when a fixture is used. Disable with `-p no:netemu`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from netemu.testing.requirements import privileged_skip_reason

if TYPE_CHECKING:
    from netemu.testing.testlab import LabRegistry, NetemuLab

MARKER = "privileged"
LAB_FIXTURES = ("netemu_lab", "netemu_lab_module")


# The labs this session brought up and has not taken down yet. Per session
# (not per process): a pytester run inside a test is a session of its own.
_REGISTRY: pytest.StashKey[LabRegistry] = pytest.StashKey()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: needs root, network namespaces and netemu's tools; skipped with the "
        "reason naming what is missing",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: conftest files mark tests in this hook too (netemu's own marks
    # everything under tests/privileged), and those marks must be seen here.
    marked = []
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in LAB_FIXTURES):
            item.add_marker(MARKER)
        if item.get_closest_marker(MARKER) is not None:
            marked.append(item)
    if not marked:
        return
    reason = privileged_skip_reason()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in marked:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    registry = config.stash.get(_REGISTRY, None)
    if registry is None or not registry.names():
        return
    left = registry.down_all()
    message = f"netemu: took down lab(s) left up by the session: {', '.join(left)}"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, yellow=True)
    else:
        print(message)


class LabFactory:
    """`factory(*paths, name=None, timeout=...)`: a context manager that
    brings a lab up from `paths` (a lab directory and/or manifests;
    relative to the pytest rootdir) and yields a NetemuLab, taking it down
    when the block ends however it ends. `name` overrides the generated
    unique name (then the test must keep it unique itself)."""

    def __init__(
        self,
        label: str,
        base: Path,
        registry: LabRegistry,
        captures: Callable[[str], Path],
    ) -> None:
        self.label = label
        self.base = base
        self.registry = registry
        self._captures = captures

    @classmethod
    def for_request(cls, request: pytest.FixtureRequest) -> LabFactory:
        """The factory for a fixture of any scope: labs named after the
        requesting test (or module, class, session)."""
        from netemu.testing.testlab import LabRegistry

        config = request.config
        registry = config.stash.get(_REGISTRY, None)
        if registry is None:
            registry = config.stash[_REGISTRY] = LabRegistry()
        node = request.node
        label = node.name if isinstance(node, pytest.Item) else Path(str(node.path)).stem
        factory = request.getfixturevalue("tmp_path_factory")

        def captures(lab: str) -> Path:
            return Path(factory.mktemp(f"captures-{lab}", numbered=True))

        return cls(label, config.rootpath, registry, captures)

    def __call__(
        self, *paths: str | Path, name: str | None = None, timeout: float | None = None
    ) -> AbstractContextManager[NetemuLab]:
        return self._lab(paths, name, timeout)

    @contextmanager
    def _lab(
        self, paths: tuple[str | Path, ...], name: str | None, timeout: float | None
    ) -> Iterator[NetemuLab]:
        from netemu.lab import READY_TIMEOUT
        from netemu.testing.testlab import running_lab, unique_lab_name

        if not paths:
            raise TypeError("netemu_lab() needs a lab: a directory or manifest files")
        lab_name = name or unique_lab_name(self.label)
        with running_lab(
            paths,
            lab_name,
            registry=self.registry,
            captures=lambda: self._captures(lab_name),
            base=self.base,
            timeout=READY_TIMEOUT if timeout is None else timeout,
        ) as lab:
            yield lab


@pytest.fixture
def netemu_lab(request: pytest.FixtureRequest) -> LabFactory:
    """A factory of live labs for one test:

    ```
    def test_nodeport(netemu_lab):
        with netemu_lab("controlplane/default") as lab:
            assert lab.http("client", "node-1:30080").ok
    ```
    """
    return LabFactory.for_request(request)


@pytest.fixture(scope="module")
def netemu_lab_module(request: pytest.FixtureRequest) -> LabFactory:
    """The same factory for module-scoped fixtures, so that a module's
    tests share one lab:

    ```
    @pytest.fixture(scope="module")
    def lab(netemu_lab_module):
        with netemu_lab_module("controlplane/default") as lab:
            yield lab
    ```
    """
    return LabFactory.for_request(request)
