"""A Service's IP family fields as the API server settles them: the checks of
ValidateServiceClusterIPsRelatedFields (pkg/apis/core/validation) and the
defaulting of initIPFamilyFields (pkg/registry/core/service/storage/alloc.go),
for a cluster configured with one service CIDR per family in `cluster`
(primary first, as --service-cluster-ip-range lists them).

Pure: validation reports the errors with their field paths, the defaulting
controller keeps the settled policy and families. Only creation is modelled
(a lab's Services are created, never upgraded between single- and
dual-stack by an update).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import netaddr

IPFamily = Literal["IPv4", "IPv6"]
IPFamilyPolicy = Literal["SingleStack", "PreferDualStack", "RequireDualStack"]

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class IPFamilyFields:
    """The outcome: the settled policy and families, or the errors that make
    the API server refuse the Service (then policy and families are what was
    settled before the first error)."""

    policy: IPFamilyPolicy
    families: list[IPFamily]
    errors: list[tuple[FieldPath, str]] = field(default_factory=list)


@functools.lru_cache(maxsize=1 << 16)
def family_of(ip: str) -> IPFamily | None:
    """The family of an IP address; None if `ip` is not one. Go's
    net.ParseIP (netutils.ParseIPSloppy) reads no IPv6 zone ("fe80::1%eth0"),
    and netaddr refuses it too. Cached: validation, defaulting and each
    proxier ask about the same Service and node addresses again and again."""
    try:
        return "IPv6" if netaddr.IPAddress(ip).version == 6 else "IPv4"
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def other_family(family: IPFamily) -> IPFamily:
    return "IPv6" if family == "IPv4" else "IPv4"


def settle_ip_families(
    *,
    cluster_ip: str | None,
    cluster_ips: Sequence[str],
    families: Sequence[IPFamily],
    policy: IPFamilyPolicy | None,
    has_selector: bool,
    cluster: Sequence[IPFamily],
) -> IPFamilyFields:
    """initIPFamilyFields on create, after the clusterIP/clusterIPs mirroring
    the strategy does (clusterIPs[0] = clusterIP). `cluster` is never empty."""
    ips = list(cluster_ips) or ([cluster_ip] if cluster_ip else [])
    settled: list[IPFamily] = list(families)
    headless = (cluster_ip or (ips[0] if ips else "")) == "None"
    if policy is None:
        # A headless Service without a selector defaults to RequireDualStack;
        # every other new Service to SingleStack.
        policy = "RequireDualStack" if headless and not has_selector else "SingleStack"

    if cluster_ips and cluster_ip and cluster_ips[0] != cluster_ip:
        return IPFamilyFields(policy, settled)  # reported by the syntax checks
    if any(family_of(ip) is None for ip in ips if ip != "None"):
        return IPFamilyFields(policy, settled)  # likewise: an invalid IP
    errors = _related_field_errors(ips, settled)
    if errors:
        return IPFamilyFields(policy, settled, errors)

    if policy == "SingleStack":
        if len(ips) == 2:
            errors.append(
                (
                    ("spec", "ipFamilyPolicy"),
                    f"Invalid value: \"{policy}\": must be 'RequireDualStack' or "
                    "'PreferDualStack' when multiple cluster IPs are specified",
                )
            )
        if len(settled) == 2:
            errors.append(
                (
                    ("spec", "ipFamilyPolicy"),
                    f"Invalid value: \"{policy}\": must be 'RequireDualStack' or "
                    "'PreferDualStack' when multiple IP families are specified",
                )
            )
    # ipFamilies inferred from clusterIPs, where not given.
    for i, ip in enumerate(ips):
        if ip == "None":
            break
        fam = family_of(ip)
        if fam is None or i < len(settled):
            continue
        if fam not in cluster:
            errors.append(
                (
                    ("spec", "clusterIPs", i),
                    f"Invalid value: {_go_list(ips)}: {fam} is not configured on this cluster",
                )
            )
        else:
            settled.append(fam)
    if errors:
        return IPFamilyFields(policy, settled, errors)

    if headless and not has_selector:
        # Headless and selectorless: allowed any families, even on a
        # single-stack cluster; non-SingleStack asks for both.
        if not settled:
            settled = [cluster[0]]
        if len(settled) < 2 and policy != "SingleStack":
            settled.append(other_family(settled[0]))
        return IPFamilyFields(policy, settled)

    if policy == "RequireDualStack" and len(cluster) < 2:
        errors.append(
            (
                ("spec", "ipFamilyPolicy"),
                f'Invalid value: "{policy}": this cluster is not configured for dual-stack '
                "services",
            )
        )
    for i, fam in enumerate(settled):
        if fam not in cluster:
            errors.append(
                (
                    ("spec", "ipFamilies", i),
                    f'Invalid value: "{fam}": not configured on this cluster',
                )
            )
    if errors:
        return IPFamilyFields(policy, settled, errors)

    if not settled:
        settled = [cluster[0]]
    if policy != "SingleStack" and len(settled) == 1 and len(cluster) == 2:
        settled.append(other_family(settled[0]))
    return IPFamilyFields(policy, settled)


def _related_field_errors(ips: list[str], families: list[IPFamily]) -> list[tuple[FieldPath, str]]:
    """The family checks of ValidateServiceClusterIPsRelatedFields (the syntax
    of each IP and the clusterIP/clusterIPs[0] match are checked elsewhere)."""
    errors: list[tuple[FieldPath, str]] = []
    seen: set[str] = set()
    for i, fam in enumerate(families):
        if fam in seen:
            errors.append((("spec", "ipFamilies", i), f'Duplicate value: "{fam}"'))
        seen.add(fam)
    if ips and ips[0] == "None" and len(ips) > 1:
        errors.append(
            (
                ("spec", "clusterIPs"),
                f"Invalid value: {_go_list(ips)}: 'None' must be the first and only value",
            )
        )
        return errors
    if len(ips) > 2:
        errors.append(
            (
                ("spec", "clusterIPs"),
                f"Invalid value: {_go_list(ips)}: may only hold up to 2 values",
            )
        )
    if len(ips) > 1 and len({family_of(ip) for ip in ips}) != len(ips):
        errors.append(
            (
                ("spec", "clusterIPs"),
                f"Invalid value: {_go_list(ips)}: may specify no more than one IP for each IP "
                "family",
            )
        )
    if ips and ips[0] != "None":
        for i, (ip, fam) in enumerate(zip(ips, families, strict=False)):
            if family_of(ip) != fam:
                errors.append(
                    (
                        ("spec", "clusterIPs", i),
                        f'Invalid value: "{ip}": expected an {fam} value as indicated by '
                        f"`ipFamilies[{i}]`",
                    )
                )
    return errors


def _go_list(values: Sequence[str]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"
