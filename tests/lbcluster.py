"""The loadbalancer lab's control plane in process, for the tests that
drive node-1's kube-proxy agent through changes, in the fake kernel
(unit/test_proxy_partial.py, unit/test_proxy_nftables.py) or a real one
(privileged/test_kernel_partial_sync.py, test_kernel_nft_partial_sync.py):
the changes they make and what the proxier sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from netemu.api.apps import Deployment
from netemu.api.config import Lab
from netemu.api.core import Service
from netemu.api.validate import load_and_validate
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects, snapshot
from netemu.pipeline import proxy_input
from netemu.rules.input import ProxyInput

LB_LAB = Path(__file__).parents[1] / "controlplane" / "loadbalancer"
NODE = "node-1"

# A change and the Services whose chains a partial sync after it rewrites.
Change = tuple[Callable[[], None], list[str]]


class LbCluster:
    def __init__(self) -> None:
        objects = [item.obj for item in load_and_validate([str(LB_LAB)])]
        self.client = LocalClient(Store())
        apply_objects(self.client, objects)
        ControlPlane(self.client).run_to_fixed_point()
        self.lab = next(o for o in objects if isinstance(o, Lab))

    def data(self) -> ProxyInput:
        """What node-1's (IPv4) proxier sees now."""
        return proxy_input(snapshot(self.client, lab=self.lab), NODE)

    def edit_service(self, name: str, **spec: object) -> None:
        svc = self.client.get(Service, "default", name)
        self.client.update(svc.model_copy(update={"spec": svc.spec.model_copy(update=spec)}))
        ControlPlane(self.client).run_to_fixed_point()

    def scale(self, replicas: int) -> None:
        deploy = self.client.get(Deployment, "default", "shop")
        spec = deploy.spec.model_copy(update={"replicas": replicas})
        self.client.update(deploy.model_copy(update={"spec": spec}))
        ControlPlane(self.client).run_to_fixed_point()

    def delete_service(self, name: str) -> None:
        self.client.delete(Service, "default", name)
        ControlPlane(self.client).run_to_fixed_point()

    def changes(self) -> list[Change]:
        """One change of each kind a partial sync handles."""
        return [
            (lambda: self.edit_service("shop-lb", session_affinity="ClientIP"), ["shop-lb"]),
            # Cluster policy: shop-local's local chain is no longer used and goes.
            (
                lambda: self.edit_service("shop-local", external_traffic_policy="Cluster"),
                ["shop-local"],
            ),
            (lambda: self.delete_service("shop-external"), ["shop-external"]),
            # One endpoint fewer for every Service that is left.
            (lambda: self.scale(1), ["shop-lb", "shop-firewalled", "shop-local"]),
        ]
