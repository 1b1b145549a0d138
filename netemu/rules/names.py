"""kube-proxy's chain names, reproduced exactly (pkg/proxy/iptables/proxier.go).

Per service port, the chains share one hash: SHA-256 of the service port name
(`ns/name` or `ns/name:port`) followed by the lower-case protocol, encoded as
standard base32 and cut to 16 characters. Endpoint chains hash the same text
plus the endpoint's `ip:port`.
"""

from __future__ import annotations

import base64
import functools
import hashlib

# Fixed chains.
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's; kube-proxy writes an identical copy
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
EXT_PREFIX = "KUBE-EXT-"
FW_PREFIX = "KUBE-FW-"
SEP_PREFIX = "KUBE-SEP-"
# kube-proxy's isServiceChainName (pkg/proxy/iptables/proxier.go, 1.31): the
# chains it owns by prefix and deletes once no longer in use. Its older
# KUBE-XLB- entry ("for cleanup, can be removed after 1.26") is gone by then,
# so a leftover KUBE-XLB- chain is left alone, like any chain of someone else's.
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX)


def _hash16(text: str) -> str:
    # 16 base32 characters carry exactly the digest's first 10 bytes (80 bits,
    # two whole 5-byte groups, so no padding): kube-proxy's 16-character cut.
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """The 16-character hash shared by a service port's SVC/SVL/EXT/FW chains."""
    return _hash16(service_port_name + protocol.lower())


def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-… for one endpoint (`ip:port`, or `[ip6]:port`)."""
    return SEP_PREFIX + _hash16(service_port_name + protocol.lower() + endpoint)


def is_service_chain(chain: str) -> bool:
    """True for the per-service/per-endpoint chains kube-proxy owns and may delete."""
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def probability(n: int) -> str:
    """kube-proxy's `--probability` text for the first of n remaining endpoints."""
    return f"{1.0 / n:0.10f}"


def masquerade_mark(bit: int) -> str:
    """The mark as kube-proxy formats it: Go's `%#08x` of 1<<bit, i.e. "0x00004000".

    Go pads the digits (not the 0x prefix) to eight places; iptables-save later
    prints the kernel's normalised value, 0x4000.
    """
    return f"0x{1 << bit:08x}"


# ---------------------------------------------------------------- nftables mode

# kube-proxy's nftables proxier (pkg/proxy/nftables/proxier.go) names its
# per-service objects "<prefix><HASH8>-<readable name>": HASH8 is the first 8
# characters of the standard base32 of SHA-256 of the readable name, and the
# whole base is cut to 240 characters (knftables.NameLengthMax 256 less the
# longest prefix, 16) with a trailing "..." when too long (hashAndTruncate).
NFT_SERVICE_PREFIX = "service-"
NFT_LOCAL_PREFIX = "local-"
NFT_EXTERNAL_PREFIX = "external-"
NFT_ENDPOINT_PREFIX = "endpoint-"
NFT_AFFINITY_PREFIX = "affinity-"
NFT_FIREWALL_PREFIX = "firewall-"
_NFT_NAME_BASE_MAX = 256 - 16


def _hash_and_truncate(name: str) -> str:
    # 8 base32 characters are exactly the digest's first 5 bytes.
    base = base64.b32encode(hashlib.sha256(name.encode()).digest()[:5]).decode() + "-" + name
    if len(base) > _NFT_NAME_BASE_MAX:
        base = base[: _NFT_NAME_BASE_MAX - 3] + "..."
    return base


# A node's kube-proxy names the same chains sync after sync: remember them.
@functools.lru_cache(maxsize=1 << 17)
def nft_service_base(namespace: str, name: str, protocol: str, port_name: str) -> str:
    """servicePortChainNameBase: "HASH-ns/name/proto/portname"."""
    return _hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}")


@functools.lru_cache(maxsize=1 << 17)
def nft_endpoint_base(
    namespace: str, name: str, protocol: str, port_name: str, ip: str, port: int
) -> str:
    """servicePortEndpointChainNameBase: "HASH-ns/name/proto/portname__ip/port",
    with an IPv6 address's colons turned into dots (not allowed in a name)."""
    host = ip.replace(":", ".")
    return _hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}__{host}/{port}")


def is_nft_service_chain(chain: str) -> bool:
    """isServiceChainName: every per-service/per-endpoint chain has a "/" in
    its name, and none of the fixed chains does."""
    return "/" in chain


def is_nft_affinity_set(name: str) -> bool:
    return name.startswith(NFT_AFFINITY_PREFIX)
