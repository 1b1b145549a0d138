"""KernelNftables in a fresh namespace: one `nft -f` transaction per script
(all or nothing), nft's own message on failure, listing and deleting a
table; and the fake refuses what the kernel refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.kernel.nftables import FakeNftables, KernelNftables, NftablesError

pytestmark = pytest.mark.privileged

BASE = (Path(__file__).parents[1] / "unit" / "data" / "nft" / "kube-proxy-small.nft").read_text()


def test_a_script_is_one_transaction(namespace: str) -> None:
    nft = KernelNftables(namespace)
    nft.apply(BASE)
    assert nft.has_table("ip", "kube-proxy")
    listed = nft.list_table("ip", "kube-proxy")
    assert "chain endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80" in listed
    assert "dnat to 10.180.0.1:80" in listed
    with pytest.raises(NftablesError, match="No such file or directory"):
        nft.apply(
            "flush chain ip kube-proxy services\n"
            "add rule ip kube-proxy services jump no-such-chain\n"
        )
    # Line 1's flush was rolled back with line 2.
    assert "vmap @service-ips" in nft.list_table("ip", "kube-proxy")


def test_delete_table_and_listing_a_missing_table(namespace: str) -> None:
    nft = KernelNftables(namespace)
    nft.apply(BASE)
    assert "table ip kube-proxy" in nft.list_ruleset()
    assert nft.delete_table("ip", "kube-proxy") is True
    assert nft.delete_table("ip", "kube-proxy") is False
    assert not nft.has_table("ip", "kube-proxy")
    with pytest.raises(NftablesError, match="No such file or directory"):
        nft.list_table("ip", "kube-proxy")


@pytest.mark.parametrize(
    "line",
    [
        "add rule ip kube-proxy nowhere accept",
        "add rule ip kube-proxy services ip daddr @no-set accept",
        "add element ip kube-proxy no-map { 1.2.3.4 . tcp . 80 : drop }",
        "delete chain ip kube-proxy absent",
        "add chain ip other c",
        "add chain ip kube-proxy nat-output { type nat hook input priority 0 ; }",
        "delete element ip kube-proxy service-ips { 9.9.9.9 . tcp . 80 }",
        "delete chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
    ],
)
def test_the_fake_refuses_what_the_kernel_refuses(namespace: str, line: str) -> None:
    kernel, fake = KernelNftables(namespace), FakeNftables()
    for nft in (kernel, fake):
        nft.apply(BASE)
        with pytest.raises(NftablesError):
            nft.apply(line + "\n")
