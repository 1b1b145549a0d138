"""Address pools of the Lab's load balancer (spec.loadBalancer.addresses):
ranges "A-B" and CIDRs of either IP family, and the default pool of each
underlay CIDR. Pure: used by validation, the network plan and
netemu.controlplane.loadbalancer.

A pool is kept as its ranges, never as a list of addresses: an IPv6 CIDR
such as a /64 holds 2**64 of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

import netaddr

# One pool entry: the addresses from its first to its last, of one family.
AddressRange: TypeAlias = netaddr.IPRange

# The default pool, as a fraction of the underlay: from 200/256 of the way up,
# 40/256 of it (.200-.239 of a /24), below the broadcast address.
_DEFAULT_START, _DEFAULT_SIZE = 200, 40
# An IPv6 underlay's default pool is taken from its first /120 as if it were
# a /24 (::c8-::ef, the host numbers 200-239 of the IPv4 pool): the same share
# of a whole /64 would start at ::c800:0:0:0 and hold 2**61 addresses.
_IPV6_DEFAULT_PREFIX = 120


def range_text(addresses: AddressRange) -> str:
    """ "A-B", or "A" for a range of one address."""
    return str(addresses[0]) if addresses.first == addresses.last else str(addresses)


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
        """How many addresses (len() cannot: an IPv6 pool may hold more
        than sys.maxsize)."""
        addresses = netaddr.IPSet(self.ranges)
        return int(addresses.size) - sum(1 for ip in self.excluded if ip in addresses)

    def first_free(self, used: Collection[str]) -> netaddr.IPAddress | None:
        """The first address of the pool, in its order, that is not in `used`.
        Walks at most len(used) + len(excluded) + 1 addresses of a range."""
        for ip in self.addresses():
            if str(ip) not in used:
                return ip
        return None

    def addresses(self) -> Iterator[netaddr.IPAddress]:
        """Every address, in order, each once (lazily: a range is walked only
        as far as it is read)."""
        seen: set[netaddr.IPAddress] = set()
        for r in self.ranges:
            for ip in r:
                if ip not in seen and str(ip) not in self.excluded:
                    seen.add(ip)
                    yield ip

    def __str__(self) -> str:
        return ", ".join(range_text(r) for r in self.ranges)


def _range(first: int, last: int, version: int) -> AddressRange:
    return AddressRange(netaddr.IPAddress(first, version), netaddr.IPAddress(last, version))


def _address(ip: object) -> netaddr.IPAddress | None:
    if isinstance(ip, netaddr.IPAddress):
        return ip
    try:
        return netaddr.IPAddress(str(ip))
    except (netaddr.AddrFormatError, ValueError):
        return None


def parse_entry(entry: str) -> AddressRange:
    """One pool entry: a range "A-B" of one family, or a CIDR. An IPv4 CIDR
    of more than two addresses gives all but its network and broadcast
    addresses; an IPv6 CIDR gives all its addresses, as MetalLB's pools do
    (its avoidance of "buggy" addresses is IPv4's .0 and .255 only).
    Raises ValueError."""
    text = entry.strip()
    try:
        if "-" in text:
            first, last = (netaddr.IPAddress(p.strip()) for p in text.split("-", 1))
            if first.version != last.version:
                raise ValueError(f"range {text} mixes IPv4 and IPv6")
            if last < first:
                raise ValueError(f"range {text} ends before it starts")
            return AddressRange(first, last)
        net = netaddr.IPNetwork(text)
    except netaddr.AddrFormatError as exc:
        raise ValueError(f"{text!r} does not appear to be an IP address or network") from exc
    if net.ip != net.network:  # a bare address is its own /32 or /128
        raise ValueError(f"{text} has host bits set")
    if net.version == 6 or net.size <= 2:
        return _range(net.first, net.last, net.version)
    return _range(net.first + 1, net.last - 1, net.version)


def parse_pool(entries: Iterable[str]) -> AddressPool:
    """The pool of ranges "A-B" and CIDRs of either family, in order.
    Raises ValueError on a bad entry."""
    return AddressPool(tuple(parse_entry(entry) for entry in entries))


def default_range(underlay_cidr: str) -> AddressRange | None:
    """.200-.239 of a /24 underlay, and the same share of any other IPv4
    size; ::c8-::ef of an IPv6 underlay (its first /120 taken as a /24).
    None when the underlay is too small to have one."""
    net = netaddr.IPNetwork(underlay_cidr).cidr
    if net.version == 6 and net.prefixlen < _IPV6_DEFAULT_PREFIX:
        net = netaddr.IPNetwork(f"{net.network}/{_IPV6_DEFAULT_PREFIX}")
    size = net.size
    start = max(size * _DEFAULT_START // 256, 1)
    end = min(size * _DEFAULT_START // 256 + size * _DEFAULT_SIZE // 256, size - 1)
    if end <= start:
        return None
    return _range(net.first + start, net.first + end - 1, net.version)


def default_pool(underlay_cidrs: Iterable[str], excluded: Iterable[str] = ()) -> AddressPool:
    """The default pool of each underlay CIDR (one per family), less the
    addresses of `excluded`."""
    found = [r for r in (default_range(cidr) for cidr in underlay_cidrs) if r is not None]
    return AddressPool(tuple(found), frozenset(excluded))
