"""Address pools of the Lab's load balancer (spec.loadBalancer.addresses):
ranges "A-B" and CIDRs of either IP family, and the default pool of each
underlay CIDR. Pure: used by validation, the network plan and
netemu.controlplane.loadbalancer.

A pool is kept as its ranges, never as a list of addresses: an IPv6 CIDR
such as a /64 holds 2**64 of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The default pool, as a fraction of the underlay: from 200/256 of the way up,
# 40/256 of it (.200-.239 of a /24), below the broadcast address.
_DEFAULT_START, _DEFAULT_SIZE = 200, 40
# An IPv6 underlay's default pool is taken from its first /120 as if it were
# a /24 (::c8-::ef, the host numbers 200-239 of the IPv4 pool): the same share
# of a whole /64 would start at ::c800:0:0:0 and hold 2**61 addresses.
_IPV6_DEFAULT_PREFIX = 120


@dataclass(frozen=True)
class AddressRange:
    """The addresses from `first` to `last`, both included, of one family."""

    first: Address
    last: Address

    @property
    def version(self) -> int:
        return self.first.version

    def __contains__(self, ip: object) -> bool:
        address = _address(ip)
        return (
            address is not None
            and address.version == self.version
            and int(self.first) <= int(address) <= int(self.last)
        )

    @property
    def count(self) -> int:
        """How many addresses (len() cannot: an IPv6 range may hold more
        than sys.maxsize)."""
        return int(self.last) - int(self.first) + 1

    def overlaps(self, other: AddressRange) -> bool:
        return (
            self.version == other.version
            and int(self.first) <= int(other.last)
            and int(other.first) <= int(self.last)
        )

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True)
class AddressPool:
    """The addresses of `ranges`, in order, less those of `excluded` (the
    nodes' and clients' addresses a default pool may cover)."""

    ranges: tuple[AddressRange, ...] = ()
    excluded: frozenset[str] = frozenset()

    def of_family(self, version: int) -> AddressPool:
        return AddressPool(tuple(r for r in self.ranges if r.version == version), self.excluded)

    def __bool__(self) -> bool:
        return self.size() > 0

    def __contains__(self, ip: object) -> bool:
        address = _address(ip)
        return (
            address is not None
            and str(address) not in self.excluded
            and any(address in r for r in self.ranges)
        )

    def size(self) -> int:
        excluded = sum(1 for ip in self.excluded if any(_address(ip) in r for r in self.ranges))
        return sum(r.count for r in self._merged()) - excluded

    def first_free(self, used: Collection[str]) -> Address | None:
        """The first address of the pool, in its order, that is not in `used`.
        Walks at most len(used) + len(excluded) + 1 addresses of a range."""
        for r in self.ranges:
            value, last = int(r.first), int(r.last)
            while value <= last:
                ip = ipaddress.ip_address(value) if r.version == 4 else ipaddress.IPv6Address(value)
                text = str(ip)
                if text not in used and text not in self.excluded:
                    return ip
                value += 1
        return None

    def addresses(self) -> Iterator[Address]:
        """Every address, in order, each once: only for small pools."""
        seen: set[Address] = set()
        for r in self.ranges:
            for value in range(int(r.first), int(r.last) + 1):
                ip = ipaddress.ip_address(value) if r.version == 4 else ipaddress.IPv6Address(value)
                if ip not in seen and str(ip) not in self.excluded:
                    seen.add(ip)
                    yield ip

    def _merged(self) -> list[AddressRange]:
        merged: list[AddressRange] = []
        for r in sorted(self.ranges, key=lambda r: (r.version, int(r.first))):
            if (
                merged
                and merged[-1].version == r.version
                and int(r.first) <= int(merged[-1].last) + 1
            ):
                if int(r.last) > int(merged[-1].last):
                    merged[-1] = AddressRange(merged[-1].first, r.last)
            else:
                merged.append(r)
        return merged

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.ranges)


def _address(ip: object) -> Address | None:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    try:
        return ipaddress.ip_address(str(ip))
    except ValueError:
        return None


def parse_entry(entry: str) -> AddressRange:
    """One pool entry: a range "A-B" of one family, or a CIDR. An IPv4 CIDR
    of more than two addresses gives all but its network and broadcast
    addresses; an IPv6 CIDR gives all its addresses, as MetalLB's pools do
    (its avoidance of "buggy" addresses is IPv4's .0 and .255 only).
    Raises ValueError."""
    text = entry.strip()
    if "-" in text:
        first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
        if first.version != last.version:
            raise ValueError(f"range {text} mixes IPv4 and IPv6")
        if int(last) < int(first):
            raise ValueError(f"range {text} ends before it starts")
        return AddressRange(first, last)
    net = ipaddress.ip_network(text, strict=True)
    if net.version == 6 or net.num_addresses <= 2:
        return AddressRange(net.network_address, net.broadcast_address)
    return AddressRange(net.network_address + 1, net.broadcast_address - 1)


def parse_pool(entries: Iterable[str]) -> AddressPool:
    """The pool of ranges "A-B" and CIDRs of either family, in order.
    Raises ValueError on a bad entry."""
    return AddressPool(tuple(parse_entry(entry) for entry in entries))


def default_range(underlay_cidr: str) -> AddressRange | None:
    """.200-.239 of a /24 underlay, and the same share of any other IPv4
    size; ::c8-::ef of an IPv6 underlay (its first /120 taken as a /24).
    None when the underlay is too small to have one."""
    net = ipaddress.ip_network(underlay_cidr, strict=False)
    if net.version == 6 and net.prefixlen < _IPV6_DEFAULT_PREFIX:
        net = ipaddress.IPv6Network((net.network_address, _IPV6_DEFAULT_PREFIX))
    size = net.num_addresses
    start = max(size * _DEFAULT_START // 256, 1)
    end = min(size * _DEFAULT_START // 256 + size * _DEFAULT_SIZE // 256, size - 1)
    if end <= start:
        return None
    base = net.network_address
    return AddressRange(base + start, base + end - 1)


def default_pool(underlay_cidrs: Iterable[str], excluded: Iterable[str] = ()) -> AddressPool:
    """The default pool of each underlay CIDR (one per family), less the
    addresses of `excluded`."""
    found = [r for r in (default_range(cidr) for cidr in underlay_cidrs) if r is not None]
    return AddressPool(tuple(found), frozenset(excluded))
