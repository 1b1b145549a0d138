"""The files kubelet gives a pod: its hostname, /etc/hosts and
/etc/resolv.conf, and the plain files of a node (as a kubeadm node has
them), as pure text.

What kubelet does, and where (kubernetes/kubernetes):

- hostname (pkg/kubelet/kubelet_pods.go, GeneratePodHostNameAndDomain):
  `spec.hostname`, else the pod's name, cut to 63 characters; with
  `spec.subdomain` the pod's domain is `<subdomain>.<ns>.svc.<domain>`.
  With `setHostnameAsFQDN` the kernel hostname is the FQDN, which must fit
  the kernel's 64 bytes (pkg/kubelet/util, GetNodenameForKernel), or the
  pod's sandbox is not created. A hostNetwork pod has the node's hostname.
- /etc/hosts (kubelet_pods.go, managedHostsFileContent and
  nodeHostsFileContent): a managed header, localhost and the IPv6 names,
  then `<ip>\\t<hostname>.<domain>\\t<hostname>` (or `<ip>\\t<hostname>`
  without a subdomain), then the hostAliases under their own comment. A
  hostNetwork pod gets the node's own hosts file under the host-network
  header, plus its hostAliases.
- /etc/resolv.conf (pkg/kubelet/network/dns/dns.go, GetPodDNS):
  ClusterFirst: the cluster DNS as the only nameserver, search
  `<ns>.svc.<domain> svc.<domain> <domain>` then the node's search domains,
  `options ndots:5`; a hostNetwork pod with ClusterFirst falls back to
  Default, the node's own resolver; ClusterFirstWithHostNet is
  ClusterFirst for every pod; None starts empty. `dnsConfig` is then
  appended (nameservers and searches without duplicates, options merged by
  name, the pod's value winning) and the result cut to kubelet's limits:
  3 nameservers, 32 search domains, none longer than 253 characters, the
  search line at most 2048 characters. The container runtime writes it as
  `search`, `nameserver` lines, `options` (containerd's parseDNSOptions).
  kubelet merges options through a Go map, so their order on a real node
  varies from pod to pod; here they keep their first appearance's order.

Must not touch: the kernel (netemu.node.kubelet writes these files).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netemu.api.core import (
    MAX_NAMESERVERS,
    MAX_SEARCH_LIST_CHARS,
    MAX_SEARCH_PATHS,
)

# A search domain longer than a DNS subdomain (253) is dropped (glibc
# aborts on such a search path). The API's own limits are netemu.api.core's.
MAX_SEARCH_DOMAIN = 253
# The kernel's nodename field: 64 bytes without the NUL (GetNodenameForKernel).
MAX_FQDN_HOSTNAME = 64
HOSTNAME_MAX = 63

DEFAULT_DNS_POLICY = "ClusterFirst"
# kubelet's defaultDNSOptions for cluster DNS.
CLUSTER_DNS_OPTIONS = ("ndots:5",)

MANAGED_HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
MANAGED_HOSTS_HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network).\n"


class PodFilesError(ValueError):
    """kubelet cannot create the pod's sandbox (its FQDN is too long)."""


@dataclass(frozen=True)
class Resolver:
    """A resolv.conf's settings: what kubelet reads from the node's file and
    what the runtime writes into the pod's."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def text(self) -> str:
        lines = []
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        lines.extend(f"nameserver {ns}" for ns in self.nameservers)
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "".join(line + "\n" for line in lines)


def truncate_hostname(name: str) -> str:
    """kubelet's truncatePodHostnameIfNeeded: at most 63 characters, without
    a trailing '-' or '.' once cut."""
    if len(name) <= HOSTNAME_MAX:
        return name
    return name[:HOSTNAME_MAX].rstrip("-.")


def hostname_and_domain(
    name: str, namespace: str, hostname: str | None, subdomain: str | None, domain: str
) -> tuple[str, str]:
    """A pod's hostname and its domain ('' without a subdomain)."""
    host = truncate_hostname(hostname or name)
    pod_domain = f"{subdomain}.{namespace}.svc.{domain}" if subdomain else ""
    return host, pod_domain


def kernel_hostname(hostname: str, pod_domain: str, as_fqdn: bool) -> str:
    """The hostname the pod's containers see (setHostnameAsFQDN: the FQDN)."""
    if not (as_fqdn and pod_domain):
        return hostname
    fqdn = f"{hostname}.{pod_domain}"
    if len(fqdn) > MAX_FQDN_HOSTNAME:
        raise PodFilesError(
            f"failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is "
            f"too long ({MAX_FQDN_HOSTNAME} characters is the max, {len(fqdn)} characters "
            "requested)"
        )
    return fqdn


def host_aliases(value: Any) -> list[tuple[str, list[str]]]:
    """spec.hostAliases as (ip, hostnames) (validated by netemu.api.validate)."""
    aliases = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and isinstance(item.get("ip"), str):
            names = item.get("hostnames")
            aliases.append((item["ip"], [str(n) for n in names] if isinstance(names, list) else []))
    return aliases


def _alias_lines(aliases: Sequence[tuple[str, Sequence[str]]]) -> str:
    if not aliases:
        return ""
    lines = "".join(f"{ip}\t{chr(9).join(names)}\n" for ip, names in aliases)
    return "\n# Entries added by HostAliases.\n" + lines


def pod_hosts(
    ips: Sequence[str],
    hostname: str,
    pod_domain: str,
    aliases: Sequence[tuple[str, Sequence[str]]] = (),
) -> str:
    """A pod's /etc/hosts (managedHostsFileContent)."""
    if pod_domain:
        own = "".join(f"{ip}\t{hostname}.{pod_domain}\t{hostname}\n" for ip in ips)
    else:
        own = "".join(f"{ip}\t{hostname}\n" for ip in ips)
    return (
        MANAGED_HOSTS_HEADER
        + "127.0.0.1\tlocalhost\n"
        + "::1\tlocalhost ip6-localhost ip6-loopback\n"
        + "fe00::0\tip6-localnet\n"
        + "fe00::0\tip6-mcastprefix\n"
        + "fe00::1\tip6-allnodes\n"
        + "fe00::2\tip6-allrouters\n"
        + own
        + _alias_lines(aliases)
    )


def host_network_hosts(node_hosts: str, aliases: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """A hostNetwork pod's /etc/hosts (nodeHostsFileContent)."""
    return MANAGED_HOSTS_HEADER_HOST_NETWORK + node_hosts + _alias_lines(aliases)


def node_hosts(node_ip: str, node_name: str) -> str:
    """A node's own /etc/hosts, as a Debian/Ubuntu kubeadm node has it (its
    name on its primary address, as kubeadm wants it resolvable)."""
    return (
        "127.0.0.1\tlocalhost\n"
        f"{node_ip}\t{node_name}\n"
        "\n"
        "# The following lines are desirable for IPv6 capable hosts\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def node_resolver(upstream: str) -> Resolver:
    """A node's own resolver: its network's DNS server, which knows nothing
    of the cluster (a kubeadm node does not use the cluster DNS). In a
    sealed lab that is the underlay's router address, where nothing answers
    DNS, so lookups from a node fail at once (ICMP port unreachable)."""
    return Resolver(nameservers=(upstream,))


def dns_policy(value: Any) -> str:
    """spec.dnsPolicy; unset is ClusterFirst (the API server's default)."""
    return value if isinstance(value, str) and value else DEFAULT_DNS_POLICY


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _merge_options(base: Sequence[str], extra: Any) -> tuple[str, ...]:
    """mergeDNSOptions: by name, a pod's option replacing the base's value."""
    merged: dict[str, str] = {}
    for option in base:
        name, _, value = option.partition(":")
        merged[name] = value
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            given = item.get("value")
            merged[item["name"]] = given if isinstance(given, str) else ""
    return tuple(f"{name}:{value}" if value else name for name, value in merged.items())


def _fit_searches(searches: Sequence[str]) -> tuple[str, ...]:
    """formDNSSearchFitsLimits."""
    kept = [s for s in searches[:MAX_SEARCH_PATHS] if len(s) <= MAX_SEARCH_DOMAIN]
    while kept and len(" ".join(kept)) > MAX_SEARCH_LIST_CHARS:
        kept.pop()
    return tuple(kept)


def pod_resolver(
    *,
    namespace: str,
    policy: str,
    dns_config: Any,
    host_network: bool,
    node: Resolver,
    cluster_dns: Sequence[str],
    domain: str,
) -> Resolver:
    """A pod's resolv.conf settings (GetPodDNS), `policy` one of netemu.api.core.DNS_POLICIES."""
    cluster = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network)
    if policy == "None":
        resolver = Resolver()
    elif cluster and cluster_dns:
        base_search = (f"{namespace}.svc.{domain}", f"svc.{domain}", domain) if domain else ()
        resolver = Resolver(
            nameservers=tuple(cluster_dns),
            searches=_unique([*base_search, *node.searches]),
            options=CLUSTER_DNS_OPTIONS,
        )
    else:
        resolver = node
    if isinstance(dns_config, dict):
        nameservers = dns_config.get("nameservers")
        searches = dns_config.get("searches")
        resolver = Resolver(
            nameservers=_unique(
                [*resolver.nameservers, *(nameservers if isinstance(nameservers, list) else [])]
            ),
            searches=_unique(
                [*resolver.searches, *(searches if isinstance(searches, list) else [])]
            ),
            options=_merge_options(resolver.options, dns_config.get("options")),
        )
    return Resolver(
        nameservers=resolver.nameservers[:MAX_NAMESERVERS],
        searches=_fit_searches(resolver.searches),
        options=resolver.options,
    )
