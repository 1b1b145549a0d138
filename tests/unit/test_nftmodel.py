"""The nftables parser: `nft -f` scripts and `nft list ruleset` output into
one model, and errors that name the line and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.rules.model import ParseError
from netemu.rules.nftmodel import (
    NftElement,
    NftRuleset,
    is_nftables_file,
    parse_nft,
    read_nft_rules,
)

DATA = Path(__file__).parent / "data" / "nftables"


def overall(form: str) -> NftRuleset:
    return parse_nft((DATA / f"kube-proxy-overall.{form}").read_text())


def test_both_forms_of_the_same_rules_give_the_same_model() -> None:
    script, listed = overall("nft"), overall("listed")
    assert list(script.tables) == list(listed.tables) == [("ip", "kube-proxy")]
    a, b = script.tables[("ip", "kube-proxy")], listed.tables[("ip", "kube-proxy")]
    assert a.comment == b.comment == "rules for kube-proxy"
    assert set(a.chains) == set(b.chains)
    for name, chain in a.chains.items():
        other = b.chains[name]
        assert (chain.type, chain.hook, chain.priority, chain.policy) == (
            other.type,
            other.hook,
            other.priority,
            other.policy,
        ), name
        assert len(chain.rules) == len(other.rules), name
    assert set(a.sets) == set(b.sets)
    for name, named in a.sets.items():
        in_list = b.sets[name]
        assert (named.kind, named.key_type, named.value_type, named.flags) == (
            in_list.kind,
            in_list.key_type,
            in_list.value_type,
            in_list.flags,
        ), name
        assert sorted(named.elements, key=str) == sorted(in_list.elements, key=str), name


def test_base_chains_read_priorities_by_number_and_by_name() -> None:
    chains = overall("listed").tables[("ip", "kube-proxy")].chains
    # nft prints -110 as `dstnat - 10`, -100 as `dstnat`, 100 as `srcnat`, 0 as `filter`.
    assert chains["filter-prerouting-pre-dnat"].priority == -110
    assert chains["nat-prerouting"].priority == -100
    assert chains["nat-postrouting"].priority == 100
    assert chains["filter-forward"].priority == 0
    assert chains["nat-output"].type == "nat"
    assert chains["services"].hook is None


def test_rules_keep_their_text_tokens_and_handles() -> None:
    listed = overall("listed").tables[("ip", "kube-proxy")]
    rule = listed.chains["cluster-ips-check"].rules[0]
    assert (
        rule.text
        == 'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"'
    )
    assert rule.handle == 41
    assert rule.tokens[-2:] == ("comment", '"Reject traffic to invalid ports of ClusterIPs"')
    script = overall("nft").tables[("ip", "kube-proxy")]
    numgen = script.chains["service-LAUZTJTB-ns4/svc4/tcp/p80"].rules[1]
    assert numgen.tokens[:5] == ("numgen", "random", "mod", "2", "vmap")
    assert numgen.line_no == 113
    assert numgen.handle is None


def test_sets_maps_and_elements_with_comments() -> None:
    table = overall("nft").tables[("ip", "kube-proxy")]
    services = table.sets["no-endpoint-services"]
    assert services.kind == "map"
    assert services.key_type == ("ipv4_addr", "inet_proto", "inet_service")
    assert services.value_type == "verdict"
    assert NftElement(("172.30.0.46", "tcp", "80"), ("goto", "reject-chain"), "ns6/svc6:p80") in (
        services.elements
    )
    affinity = table.sets["affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"]
    assert (affinity.kind, affinity.flags, affinity.timeout) == (
        "set",
        ("dynamic", "timeout"),
        "10800s",
    )
    assert table.sets["cluster-ips"].comment == "Active ClusterIPs"


def test_flush_and_delete_change_the_model_as_nft_does() -> None:
    text = """
add table ip t
add chain ip t c
add rule ip t c ip daddr 10.0.0.1 drop
add set ip t s { type ipv4_addr ; }
add element ip t s { 10.0.0.1, 10.0.0.2 }
add element ip t s { 10.0.0.2 }
delete element ip t s { 10.0.0.1 }
insert rule ip t c accept
"""
    table = parse_nft(text).tables[("ip", "t")]
    assert [r.text for r in table.chains["c"].rules] == ["accept", "ip daddr 10.0.0.1 drop"]
    assert [e.key for e in table.sets["s"].elements] == [("10.0.0.2",)]
    flushed = parse_nft(text + "flush chain ip t c\nflush set ip t s\n").tables[("ip", "t")]
    assert flushed.chains["c"].rules == [] and flushed.sets["s"].elements == []
    gone = parse_nft(text + "flush chain ip t c\ndelete chain ip t c\ndelete table ip t\n")
    assert gone.tables == {}
    assert parse_nft(text + "flush ruleset\n").tables == {}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("add table ip t\nadd rule ip t nochain drop\n", 2, "no chain 'nochain' in ip t"),
        ("add chain ip t c\n", 1, "no table ip t (add it first)"),
        ("add table ip t\nfrobnicate chain ip t c\n", 2, "unsupported command 'frobnicate'"),
        (
            "add table ip t\nadd chain ip t c { type filter hook input priority bogus ; }\n",
            2,
            "priority 'bogus'",
        ),
        (
            "add table ip t\nadd chain ip t c { type filter hook sideways priority 0 ; }\n",
            2,
            "hook 'sideways'",
        ),
        (
            "add table ip t\nadd map ip t m { type ipv4_addr : verdict ; }\n"
            "add element ip t m { 10.0.0.1 }\n",
            3,
            "expected `key : value`",
        ),
        (
            "add table ip t\nadd set ip t s { type ipv4_addr . inet_service ; }\n"
            "add element ip t s { 10.0.0.1 }\n",
            3,
            "expected 2 parts",
        ),
        ("table ip t {\n  chain c {\n    drop\n", 2, "chain c: no '}' closes it"),
        ('add table ip t\nadd rule ip t c "open\n', 2, "quoted string is not closed"),
        ("add table ip t\n}\n", 2, "a '}' that closes nothing"),
        ("add table ip t\ndelete chain ip t c\n", 2, "delete chain c: no such chain"),
    ],
)
def test_errors_name_the_line_and_what_was_expected(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_nft(text)
    assert caught.value.line_no == line
    assert message in caught.value.message


def test_reading_a_file_names_it_and_refuses_what_is_not_nftables(tmp_path: Path) -> None:
    assert is_nftables_file(DATA / "kube-proxy-overall.listed")
    assert is_nftables_file(DATA / "kube-proxy-overall.nft")
    iptables = tmp_path / "save.txt"
    iptables.write_text("# Generated by iptables-save\n*nat\nCOMMIT\n")
    assert not is_nftables_file(iptables)
    assert read_nft_rules(DATA / "kube-proxy-overall.listed").table("ip", "kube-proxy")
    bad = tmp_path / "bad.nft"
    bad.write_text("add table ip t\nadd rule ip t c drop\n")
    with pytest.raises(ParseError) as caught:
        read_nft_rules(bad)
    assert str(caught.value).startswith(f"{bad}:2: ")
    empty = tmp_path / "empty.nft"
    empty.write_text("# nothing\n")
    with pytest.raises(ParseError, match="no table"):
        read_nft_rules(empty)
