"""Cluster DNS records: the answer to one question (name, type) from a
`ClusterState`, as the Kubernetes DNS-Based Service Discovery specification
(github.com/kubernetes/dns, docs/specification.md, schema 1.0.1) defines
them, and, where the specification leaves a choice, as CoreDNS's kubernetes
plugin (github.com/coredns/coredns, plugin/kubernetes) makes it in a kubeadm
cluster (`kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure }`).

Pure: no sockets, no wire format (netemu.node.dnsserver owns that), no
clock. `ClusterDns.from_state` indexes a state once; `answer` is then a few
dictionary look-ups, so the DNS server can call it on its event loop.

Records are written as zone-file text (`Record.text()`), so tests compare
them with the specification's examples. What exists:

- `<service>.<ns>.svc.<zone>`: A/AAAA → the ClusterIPs (spec 2.3.1); for a
  headless Service the ready endpoints' IPs, NXDOMAIN if none is ready
  (2.4.1); for an ExternalName Service a CNAME to the external name (2.5).
- `<hostname>.<service>.<ns>.svc.<zone>`: A/AAAA → the ready endpoints with
  that _hostname_ (2.4.1): the endpoint's `hostname` (a StatefulSet pod, a
  pod with hostname + subdomain) or else, as CoreDNS assigns it, the
  endpoint IP with dashes (`10-244-1-3`). Like CoreDNS, for the endpoints
  of ClusterIP Services too (the spec requires it for headless ones).
- `_<port>._<proto>.<service>.<ns>.svc.<zone>`: SRV per named port (2.3.2:
  target the Service; 2.4.2, headless: one per ready endpoint and named
  endpoint port, target the endpoint's name), their A records in the
  additional section. Unnamed ports have none.
- PTR: a ClusterIP → its Service (2.3.3); a ready endpoint's IP (a pod IP)
  → `<hostname>.<service>.<ns>.svc.<zone>` for every Service it backs
  (2.4.3; CoreDNS does this for all Services, and only when the IP is no
  ClusterIP). A pod behind no Service has no PTR, as with CoreDNS.
- `<a>-<b>-<c>-<d>.<ns>.pod.<zone>` A (2.6, deprecated but required) for
  any address in an existing namespace (CoreDNS `pods insecure`).
- `dns-version.<zone>` TXT "1.0.1" (2.2); SOA and NS at the zone apex,
  `ns.dns.<zone>` A → the cluster DNS IP (CoreDNS's NS name).

Everything else in the zones is answered with the DNS's own rules: a name
that exists without the asked type is NODATA (NOERROR, empty answer, the
SOA in the authority section for negative caching, RFC 2308); a name that
exists only because names below it do (`svc.<zone>`, `<ns>.svc.<zone>`,
`_tcp.<service>...`, a partial reverse name) is an empty non-terminal, also
NODATA (RFC 8020 — CoreDNS answers NXDOMAIN for `_tcp.<service>...`, which
would tell an RFC 8020 resolver that the SRV names below do not exist);
anything else is NXDOMAIN. Names outside the cluster domain and the reverse
zones get REFUSED: the lab is sealed, there is no upstream to forward to.
Comparisons are case-insensitive (spec 2.1); answers keep the question's
spelling of its name.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from netemu.api.core import SERVICE_NAME_LABEL, EndpointSlice, Service
from netemu.controlplane.state import ClusterState

# CoreDNS's kubernetes plugin answers with TTL 5 unless configured (its `ttl`
# option); the SOA's minimum, the negative-caching TTL, is the same.
TTL = 5
# The schema version the TXT record dns-version.<zone> carries (spec 1 and 2.2).
SCHEMA_VERSION = "1.0.1"
DEFAULT_DOMAIN = "cluster.local"
# kubeadm's Corefile makes CoreDNS authoritative for these reverse zones too.
REVERSE_ZONES = ("in-addr.arpa.", "ip6.arpa.")
# SOA timers as CoreDNS writes them (plugin/backend_lookup.go, SOA).
SOA_TIMERS = "7200 1800 86400"
# How many CNAMEs an answer follows inside the cluster domain.
MAX_CNAME_CHAIN = 8


Rcode = Literal["NOERROR", "NXDOMAIN", "REFUSED"]


@dataclass(frozen=True)
class Record:
    """One resource record; `data` is the RDATA in presentation format."""

    name: str  # absolute, with the trailing dot
    rtype: str  # A, AAAA, SRV, PTR, CNAME, TXT, SOA, NS
    data: str
    ttl: int = TTL

    def text(self) -> str:
        """The record as a zone-file line, as the specification writes its examples."""
        return f"{self.name} {self.ttl} IN {self.rtype} {self.data}"


@dataclass(frozen=True)
class Answer:
    rcode: Rcode
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()

    @property
    def authoritative(self) -> bool:
        return self.rcode != "REFUSED"


@dataclass(frozen=True)
class NamedPort:
    name: str  # lowercase
    protocol: str  # lowercase: tcp, udp, sctp
    port: int


@dataclass(frozen=True)
class DnsEndpoint:
    """A ready endpoint address of a Service."""

    ip: str
    hostname: str  # its _hostname_ (spec 2.1), lowercase
    ports: tuple[NamedPort, ...]  # the named ports of its EndpointSlice


@dataclass(frozen=True)
class DnsService:
    namespace: str
    name: str
    kind: Literal["ClusterIP", "Headless", "ExternalName"]
    cluster_ips: tuple[str, ...] = ()
    external_name: str = ""
    ports: tuple[NamedPort, ...] = ()  # the Service's named ports
    endpoints: tuple[DnsEndpoint, ...] = ()


def _absolute(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _address_type(ip: str) -> str:
    return "AAAA" if ":" in ip else "A"


def _ip_order(ip: str) -> tuple[int, int]:
    address = ipaddress.ip_address(ip)
    return address.version, int(address)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def endpoint_hostname(ip: str, hostname: str | None) -> str:
    """The endpoint's _hostname_ (spec 2.1): its `hostname` field, else the
    system-assigned identifier CoreDNS uses, the address with dashes
    (plugin/kubernetes/kubernetes.go, endpointHostname)."""
    if hostname:
        return hostname.lower()
    return ip.replace(".", "-") if "." in ip else ip.replace(":", "-")


def _dashed_ip(label: str) -> str | None:
    """The address in a pod label `a-b-c-d` (or IPv6 with dashes for colons),
    parsed as CoreDNS's findPods does; None if it is no address."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _reverse_ip(relative: Sequence[str], zone: str) -> str | None:
    """The address a full reverse name stands for (labels left of the zone)."""
    try:
        if zone == "in-addr.arpa." and len(relative) == 4:
            return str(ipaddress.IPv4Address(".".join(reversed(relative))))
        if zone == "ip6.arpa." and len(relative) == 32:
            nibbles = "".join(reversed(relative))
            groups = [nibbles[i : i + 4] for i in range(0, 32, 4)]
            return str(ipaddress.IPv6Address(":".join(groups)))
    except ValueError:
        return None
    return None


def _named_ports(
    ports: Iterable[tuple[str | None, str | None, int | None]],
) -> tuple[NamedPort, ...]:
    named = {
        NamedPort(name.lower(), (protocol or "TCP").lower(), port)
        for name, protocol, port in ports
        if name and port is not None
    }
    return tuple(sorted(named, key=lambda p: (p.name, p.protocol, p.port)))


def _service_kind(svc: Service) -> Literal["ClusterIP", "Headless", "ExternalName"]:
    if svc.spec.type == "ExternalName":
        return "ExternalName"
    if svc.spec.cluster_ip == "None":
        return "Headless"
    return "ClusterIP"


def _is_ready(ready: bool | None) -> bool:
    # EndpointConditions.ready: "nil should be interpreted as true" (discovery/v1).
    # The EndpointSlice controller already folds publishNotReadyAddresses in.
    return ready is None or ready


def dns_services(
    services: Iterable[Service], slices: Iterable[EndpointSlice]
) -> tuple[DnsService, ...]:
    """What DNS needs of each Service: its kind, ClusterIPs, named ports and
    ready endpoints (from the EndpointSlices labelled with its name)."""
    endpoints: dict[tuple[str, str], dict[tuple[str, str], DnsEndpoint]] = defaultdict(dict)
    for eps in slices:
        if eps.address_type == "FQDN":
            continue  # CoreDNS reads IPv4 and IPv6 slices only
        service = eps.metadata.labels.get(SERVICE_NAME_LABEL)
        if not service:
            continue
        namespace = eps.metadata.namespace or "default"
        ports = _named_ports((p.name, p.protocol, p.port) for p in eps.ports)
        found = endpoints[(namespace, service)]
        for ep in eps.endpoints:
            if not _is_ready(ep.conditions.ready):
                continue
            for address in ep.addresses:
                ip = str(ipaddress.ip_address(address))
                hostname = endpoint_hostname(ip, ep.hostname)
                known = found.get((ip, hostname))
                merged = (
                    ports
                    if known is None
                    else _named_ports((p.name, p.protocol, p.port) for p in (*known.ports, *ports))
                )
                found[(ip, hostname)] = DnsEndpoint(ip, hostname, merged)

    result = []
    for svc in services:
        namespace, name = svc.metadata.namespace or "default", svc.metadata.name or ""
        kind = _service_kind(svc)
        ips = [ip for ip in (svc.spec.cluster_ips or [svc.spec.cluster_ip or ""]) if ip]
        result.append(
            DnsService(
                namespace=namespace,
                name=name,
                kind=kind,
                cluster_ips=tuple(ips) if kind == "ClusterIP" else (),
                external_name=(svc.spec.external_name or "") if kind == "ExternalName" else "",
                ports=_named_ports((p.name, p.protocol, p.port) for p in svc.spec.ports),
                endpoints=tuple(
                    sorted(
                        endpoints.get((namespace, name), {}).values(),
                        key=_endpoint_order,
                    )
                )
                if kind != "ExternalName"
                else (),
            )
        )
    return tuple(result)


def _endpoint_order(ep: DnsEndpoint) -> tuple[int, int, str]:
    address = ipaddress.ip_address(ep.ip)
    return address.version, int(address), ep.hostname


def _serial(state: ClusterState) -> int:
    """The SOA serial: the newest resourceVersion DNS reads, so it grows with
    every change of the data (CoreDNS uses its informers' last change time)."""
    metas = [o.metadata for o in state.namespaces]
    metas += [o.metadata for o in state.services]
    metas += [o.metadata for o in state.endpoint_slices]
    versions = [
        int(meta.resource_version)
        for meta in metas
        if meta.resource_version and meta.resource_version.isdigit()
    ]
    return (max(versions) % (1 << 32)) if versions else 1


@dataclass
class ClusterDns:
    """The records of one cluster state, indexed for `answer`."""

    domain: str = DEFAULT_DOMAIN
    services: Sequence[DnsService] = ()
    namespaces: Iterable[str] = ()
    dns_ips: Sequence[str] = ()  # ns.dns.<zone>: the cluster DNS Service's IPs
    serial: int = 1
    _zone: str = field(init=False)
    _services: dict[tuple[str, str], DnsService] = field(init=False)
    _namespaces: frozenset[str] = field(init=False)
    _reverse: dict[str, tuple[str, ...]] = field(init=False)
    _reverse_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._zone = _absolute(self.domain.strip("."))
        self._services = {(s.namespace.lower(), s.name.lower()): s for s in self.services}
        self._namespaces = frozenset(n.lower() for n in self.namespaces)
        # PTR targets by address, in Service (namespace, name) order: the
        # first is what `getent hosts <ip>` shows.
        ordered = sorted(self.services, key=lambda s: (s.namespace, s.name))
        reverse: dict[str, list[str]] = defaultdict(list)
        for svc in ordered:
            for ip in svc.cluster_ips:
                reverse[str(ipaddress.ip_address(ip))].append(self.service_name(svc))
        by_endpoint: dict[str, list[str]] = defaultdict(list)
        for svc in ordered:
            for ep in svc.endpoints:
                by_endpoint[ep.ip].append(f"{ep.hostname}.{self.service_name(svc)}")
        for ip, names in by_endpoint.items():
            # CoreDNS's serviceRecordForIP: a ClusterIP first, endpoints only if none.
            if ip not in reverse:
                reverse[ip] = names
        self._reverse = {ip: tuple(dict.fromkeys(names)) for ip, names in reverse.items()}
        # Every reverse name and its ancestors: the empty non-terminals exist.
        suffixes = set()
        for ip in self._reverse:
            labels = ipaddress.ip_address(ip).reverse_pointer.split(".")
            for i in range(len(labels)):
                suffixes.add(".".join(labels[i:]) + ".")
        self._reverse_names = frozenset(suffixes)

    @classmethod
    def from_state(
        cls, state: ClusterState, domain: str | None = None, dns_ips: Sequence[str] | None = None
    ) -> ClusterDns:
        """The records of `state`, in the Lab's cluster domain (cluster.local
        without a Lab); `ns.dns.<zone>` answers the Lab's clusterDNS."""
        lab = state.lab
        if domain is None:
            domain = lab.spec.cluster_domain if lab is not None else DEFAULT_DOMAIN
        if dns_ips is None:
            dns_ips = (lab.spec.cluster_dns,) if lab is not None else ()
        return cls(
            domain=domain,
            services=dns_services(state.services, state.endpoint_slices),
            namespaces=[ns.metadata.name or "" for ns in state.namespaces],
            dns_ips=tuple(dns_ips),
            serial=_serial(state),
        )

    # -- names ---------------------------------------------------------------

    @property
    def zone(self) -> str:
        return self._zone

    def service_name(self, svc: DnsService) -> str:
        return f"{svc.name}.{svc.namespace}.svc.{self._zone}".lower()

    def _soa(self, zone: str) -> Record:
        ns = f"ns.dns.{self._zone}"
        return Record(zone, "SOA", f"{ns} hostmaster.{zone} {self.serial} {SOA_TIMERS} {TTL}")

    def _zone_of(self, name: str) -> str | None:
        for zone in (self._zone, *REVERSE_ZONES):
            if name == zone or name.endswith("." + zone):
                return zone
        return None

    # -- records at a name ---------------------------------------------------

    def records(self, name: str) -> list[Record] | None:
        """Every record owned by `name` (any type), [] for a name that exists
        without records (an empty non-terminal), None for a name that does
        not exist in the zones, or is outside them."""
        name = _absolute(name)
        zone = self._zone_of(name)
        if zone is None:
            return None
        relative = name[: -len(zone)].rstrip(".").split(".") if name != zone else []
        if zone in REVERSE_ZONES:
            return self._reverse_records(name, relative, zone)
        return self._cluster_records(name, relative)

    def _reverse_records(self, name: str, relative: list[str], zone: str) -> list[Record] | None:
        if not relative:
            return [self._soa(zone), Record(zone, "NS", f"ns.dns.{self._zone}")]
        ip = _reverse_ip(relative, zone)
        if ip is not None and ip in self._reverse:
            return [Record(name, "PTR", target) for target in self._reverse[ip]]
        return [] if name in self._reverse_names else None

    def _cluster_records(self, name: str, relative: list[str]) -> list[Record] | None:
        if not relative:
            return [self._soa(self._zone), Record(self._zone, "NS", f"ns.dns.{self._zone}")]
        if relative == ["dns-version"]:
            return [Record(name, "TXT", f'"{SCHEMA_VERSION}"')]
        if relative == ["dns"]:
            return []
        if relative == ["ns", "dns"]:
            return [Record(name, _address_type(ip), ip) for ip in self.dns_ips]
        kind, rest = relative[-1], relative[:-1]
        if kind == "svc":
            return self._svc_records(name, rest)
        if kind == "pod":
            return self._pod_records(name, rest)
        return None

    def _pod_records(self, name: str, rest: list[str]) -> list[Record] | None:
        if not rest:
            return []
        if rest[-1] not in self._namespaces:
            return None
        if len(rest) == 1:
            return []
        if len(rest) == 2:
            ip = _dashed_ip(rest[0])
            if ip is not None:
                return [Record(name, _address_type(ip), ip)]
        return None

    def _svc_records(self, name: str, rest: list[str]) -> list[Record] | None:
        if not rest:
            return []
        if rest[-1] not in self._namespaces:
            return None
        if len(rest) == 1:
            return []
        svc = self._services.get((rest[-1], rest[-2]))
        if svc is None:
            return None
        labels = rest[:-2]
        if not labels:
            return self._service_records(name, svc)
        if svc.kind == "ExternalName":
            return None  # no names below an ExternalName Service
        if len(labels) == 1:
            label = labels[0]
            if label.startswith("_"):
                # `_<proto>.<service>...`: exists when SRV names sit below it.
                protocol = label[1:]
                return [] if any(p.protocol == protocol for p in self._srv_ports(svc)) else None
            addresses = [ep.ip for ep in svc.endpoints if ep.hostname == label]
            return [Record(name, _address_type(ip), ip) for ip in addresses] or None
        if len(labels) == 2 and labels[0].startswith("_") and labels[1].startswith("_"):
            return self._srv_records(name, svc, labels[0][1:], labels[1][1:]) or None
        return None

    def _service_records(self, name: str, svc: DnsService) -> list[Record] | None:
        if svc.kind == "ExternalName":
            target = svc.external_name
            # CoreDNS only answers an external name that is a host name.
            if not target or _is_ip(target.rstrip(".")):
                return None
            return [Record(name, "CNAME", _absolute(target))]
        if svc.kind == "Headless":
            ips = sorted({ep.ip for ep in svc.endpoints}, key=_ip_order)
            # Spec 2.4.1: no ready endpoints, NXDOMAIN.
            return [Record(name, _address_type(ip), ip) for ip in ips] or None
        return [Record(name, _address_type(ip), ip) for ip in svc.cluster_ips]

    @staticmethod
    def _srv_ports(svc: DnsService) -> list[NamedPort]:
        if svc.kind == "Headless":
            return [p for ep in svc.endpoints for p in ep.ports]
        return list(svc.ports)

    def _srv_records(self, name: str, svc: DnsService, port: str, protocol: str) -> list[Record]:
        """Spec 2.3.2 (ClusterIP: one per port, target the Service) and 2.4.2
        (headless: one per ready endpoint and port, target the endpoint's
        name; the port is the endpoint's, as CoreDNS reads it from the
        EndpointSlice). Priority 0 and the weight split evenly, as CoreDNS."""
        targets: list[tuple[int, str]] = []
        if svc.kind == "Headless":
            for ep in svc.endpoints:
                for p in ep.ports:
                    if p.name == port and p.protocol == protocol:
                        targets.append((p.port, f"{ep.hostname}.{self.service_name(svc)}"))
        else:
            for p in svc.ports:
                if p.name == port and p.protocol == protocol:
                    targets.append((p.port, self.service_name(svc)))
        unique = sorted(set(targets))
        weight = max(1, 100 // len(unique)) if unique else 0
        return [Record(name, "SRV", f"0 {weight} {number} {target}") for number, target in unique]

    # -- answers -------------------------------------------------------------

    def answer(self, qname: str, qtype: str) -> Answer:
        """The answer to the question (`qname`, `qtype`), qtype as its
        mnemonic (A, AAAA, SRV, PTR, ..., ANY, or TYPEnnn)."""
        asked = qname if qname.endswith(".") else qname + "."
        name = asked.lower()
        qtype = qtype.upper()
        zone = self._zone_of(name)
        if zone is None:
            return Answer("REFUSED")
        answer: list[Record] = []
        seen = {name}
        owner = asked
        while True:
            found = self.records(name)
            if found is None:
                return Answer("NXDOMAIN", tuple(answer), (self._soa(zone),))
            cnames = [r for r in found if r.rtype == "CNAME"]
            if cnames and qtype not in ("CNAME", "ANY"):
                answer.append(_renamed(cnames[0], owner))
                target = cnames[0].data
                target_zone = self._zone_of(target)
                # RFC 1034 4.3.2: follow the alias while it stays in our data.
                if target_zone != self._zone or target in seen or len(seen) > MAX_CNAME_CHAIN:
                    return Answer("NOERROR", tuple(answer))
                seen.add(target)
                name = owner = target
                continue
            matching = [r for r in found if qtype == "ANY" or r.rtype == qtype]
            if not matching:
                return Answer("NOERROR", tuple(answer), (self._soa(zone),))
            answer.extend(_renamed(r, owner) if r.name == name else r for r in matching)
            return Answer("NOERROR", tuple(answer), (), tuple(self._additional(matching)))

    def _additional(self, records: Iterable[Record]) -> list[Record]:
        """The address records of SRV targets (spec 2.3.2, 2.4.2: "may include")."""
        extra: list[Record] = []
        for record in records:
            if record.rtype != "SRV":
                continue
            target = record.data.split()[-1]
            for found in self.records(target) or []:
                if found.rtype in ("A", "AAAA") and found not in extra:
                    extra.append(found)
        return extra


def _renamed(record: Record, owner: str) -> Record:
    return Record(owner, record.rtype, record.data, record.ttl)
