"""Deterministic stand-ins for the random and hashed names Kubernetes generates.

Kubernetes draws generated-name suffixes from `rand.String(5)` over the
alphabet below (no vowels, no confusable digits). netemu derives them from a
hash of a seed instead, so the same input always yields the same names. The
pod-template-hash follows `controller.ComputeHash`: FNV-32a over the template,
then `rand.SafeEncodeString` of the decimal hash; only the serialisation fed
to FNV differs (canonical JSON here, Go's spew printer there), so the values
look like Kubernetes' but are not byte-identical to a real cluster's.
"""

from __future__ import annotations

import json
from typing import Any

from netemu.api.base import K8sModel

# k8s.io/apimachinery/pkg/util/rand: "bcdfghjklmnpqrstvwxz2456789".
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

# validation.DNS1123SubdomainMaxLength (63 for names used as labels/hostnames)
# minus the 5 random characters, as in names.SimpleNameGenerator.
_MAX_GENERATED_BASE = 63 - 5

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3


def fnv32a(data: bytes) -> int:
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def fnv64a(data: bytes) -> int:
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def stable_hash(seed: str) -> int:
    """A 64-bit hash of a string that is the same in every process (unlike hash())."""
    return fnv64a(seed.encode())


def safe_encode_string(text: str) -> str:
    """rand.SafeEncodeString: map each character onto the safe alphabet."""
    return "".join(ALPHANUMS[ord(ch) % len(ALPHANUMS)] for ch in text)


def suffix(seed: str, length: int = 5) -> str:
    """`length` characters of the safe alphabet derived from `seed`."""
    value = stable_hash(seed)
    out = []
    for _ in range(length):
        value, digit = divmod(value, len(ALPHANUMS))
        out.append(ALPHANUMS[digit])
    return "".join(out)


def generate_name(base: str, seed: str) -> str:
    """generateName semantics: the base (cut to 58 characters) plus 5 characters."""
    return base[:_MAX_GENERATED_BASE] + suffix(seed)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def compute_hash(obj: K8sModel, collision_count: int | None = None) -> str:
    """controller.ComputeHash for a pod template (Deployment, DaemonSet,
    StatefulSet revisions): about 10 characters of the safe alphabet."""
    data = canonical_json(obj.model_dump(by_alias=True, exclude_none=True, mode="json"))
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little")
    return safe_encode_string(str(fnv32a(data)))
