"""FakeNftables behaves like `nft -f` on knftables' line form: whole
transactions or nothing, references checked, the last transaction kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.kernel.nftables import FakeNftables, NftablesError

# A cut-down kube-proxy table in the line form (names and rules as
# pkg/proxy/nftables/proxier.go writes them; the names from its proxier_test.go).
BASE = (Path(__file__).parent / "data" / "nft" / "kube-proxy-small.nft").read_text()


def test_a_script_applies_and_lists_back_in_the_same_form() -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    assert nft.has_table("ip", "kube-proxy")
    assert sorted(nft.list_table("ip", "kube-proxy").splitlines()) == sorted(BASE.splitlines())
    assert nft.last_transaction == BASE


def test_a_bad_line_applies_nothing_and_names_the_line() -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    script = (
        "flush chain ip kube-proxy services\nadd rule ip kube-proxy services jump no-such-chain\n"
    )
    with pytest.raises(NftablesError, match=r"line 2: .*chain no-such-chain"):
        nft.apply(script)
    # The flush on line 1 was not committed either.
    assert "vmap @service-ips" in nft.list_table("ip", "kube-proxy")
    assert nft.last_transaction == BASE


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("add rule ip kube-proxy nowhere accept", "chain nowhere"),
        ("add rule ip kube-proxy services ip daddr @no-set accept", "set no-set"),
        ("add element ip kube-proxy no-map { 1.2.3.4 . tcp . 80 : drop }", "no-map"),
        ("add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 }", "has no value"),
        ("delete chain ip kube-proxy absent", "chain absent"),
        ("flush map ip kube-proxy absent", "map absent"),
        ("add chain ip other c", "table ip other"),
        ("add chain ipx kube-proxy c", "unknown family"),
        ("add chain ip kube-proxy nat-output { type nat hook input priority 0 ; }", "busy"),
        ("delete element ip kube-proxy service-ips { 9.9.9.9 . tcp . 80 }", "element"),
        ("frobnicate chain ip kube-proxy services", "syntax error"),
    ],
)
def test_what_the_kernel_refuses(line: str, message: str) -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    with pytest.raises(NftablesError, match=message):
        nft.apply(line + "\n")


def test_a_chain_still_referenced_cannot_be_deleted_until_its_references_go() -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    service = "service-ULMVA6XW-ns1/svc1/tcp/p80"
    with pytest.raises(NftablesError, match="still referenced"):
        nft.apply(f"delete chain ip kube-proxy {service}\n")
    # kube-proxy's order: the map is refilled without the element, the chain
    # flushed, and deleted in a later transaction.
    nft.apply(
        "flush map ip kube-proxy service-ips\n"
        f"flush chain ip kube-proxy {service}\n"
        "flush chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80\n"
    )
    nft.apply(f"delete chain ip kube-proxy {service}\n")
    assert service not in nft.list_table("ip", "kube-proxy")


def test_re_adding_the_same_objects_is_idempotent_and_flush_empties() -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    nft.apply(BASE.replace("add rule", "# add rule"))  # tables, chains, maps, elements again
    listed = nft.list_table("ip", "kube-proxy")
    assert listed.count("add element") == 1
    nft.apply("flush table ip kube-proxy\n")
    listed = nft.list_table("ip", "kube-proxy")
    assert "add rule" not in listed and "add element" not in listed
    assert "add chain ip kube-proxy services" in listed


def test_insert_puts_a_rule_first_and_elements_split_at_top_level_commas() -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    nft.apply(
        "insert rule ip kube-proxy services accept\n"
        'add element ip kube-proxy service-ips { 1.1.1.1 . tcp . 1 comment "a, b" : drop, '
        "2.2.2.2 . udp . 53 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }\n"
    )
    rules = [
        line for line in nft.list_table("ip", "kube-proxy").splitlines() if " services " in line
    ]
    assert rules[0].endswith("services accept")
    assert nft.list_table("ip", "kube-proxy").count("add element") == 3


def test_delete_table_says_whether_it_existed() -> None:
    nft = FakeNftables()
    nft.apply(BASE)
    assert nft.delete_table("ip", "kube-proxy") is True
    assert nft.delete_table("ip", "kube-proxy") is False
    with pytest.raises(NftablesError, match="No such file"):
        nft.list_table("ip", "kube-proxy")
    assert nft.list_ruleset() == ""
