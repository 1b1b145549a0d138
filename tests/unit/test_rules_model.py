"""The rule-set model: rendering, parsing iptables-save, and kernel equivalence."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.iptables import compile_node, compile_sync
from netemu.rules.model import ParseError, parse_restore, quote, tokenize
from netemu.rules.spec import canonical, canonical_ruleset

DATA = Path(__file__).parent / "data" / "rules"


def _input() -> ProxyInput:
    sp = ServicePortInfo(
        "ns1",
        "svc1",
        "p80",
        "tcp",
        "172.30.0.41",
        80,
        node_port=3001,
        external_local=True,
        health_check_node_port=30000,
        affinity_timeout=10800,
    )
    eps = tuple(
        EndpointInfo(f"10.180.0.{i}", 80, True, True, False, "node1" if i == 1 else "node2")
        for i in (1, 2, 3)
    )
    cfg = ProxyConfig(
        "node1", node_ips=("192.168.0.2",), local_ips=("192.168.0.2",), cluster_cidr="10.0.0.0/8"
    )
    empty = ServicePortInfo("ns2", "empty", "", "tcp", "172.30.0.42", 80)
    return ProxyInput(cfg, (sp, empty), {("ns1", "svc1", "p80", "tcp"): eps})


def test_render_parse_render_is_identical() -> None:
    text = compile_node(_input()).render()
    assert parse_restore(text).render() == text


def test_compiled_rules_equal_what_the_kernel_saved() -> None:
    # affinity-iptables-save-nft.txt is `iptables-save` (nft backend) after
    # `iptables-restore` of affinity-restore.txt in a fresh network namespace.
    compiled = compile_node(_input()).render()
    assert compiled == (DATA / "affinity-restore.txt").read_text().rstrip("\n") + "\n"
    saved = parse_restore((DATA / "affinity-iptables-save-nft.txt").read_text())
    assert canonical_ruleset(parse_restore(compiled)) == canonical_ruleset(saved)


def test_equivalence_notices_a_changed_rule() -> None:
    compiled = compile_node(_input()).render().replace("0.3333333333", "0.2500000000")
    saved = parse_restore((DATA / "affinity-iptables-save-nft.txt").read_text())
    assert canonical_ruleset(parse_restore(compiled)) != canonical_ruleset(saved)


@pytest.mark.parametrize(
    ("ours", "kernels"),
    [
        ("-j MARK --or-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x4000"),
        ("-j MARK --xor-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x0"),
        (
            "-m mark ! --mark 0x00004000/0x00004000 -j RETURN",
            "-m mark ! --mark 0x4000/0x4000 -j RETURN",
        ),
        (
            "-m statistic --mode random --probability 0.3333333333 -j X",
            "-m statistic --mode random --probability 0.33333333349 -j X",
        ),
        (
            '-m comment --comment "a b" -m tcp -p tcp -d 10.0.0.1 --dport 80 -j REJECT',
            '-d 10.0.0.1/32 -p tcp -m comment --comment "a b" -m tcp --dport 80 '
            "-j REJECT --reject-with icmp-port-unreachable",
        ),
        (
            "-m comment --comment ns/svc -s 10.0.0.1 -j KUBE-MARK-MASQ",
            '-s 10.0.0.1/32 -m comment --comment "ns/svc" -j KUBE-MARK-MASQ',
        ),
    ],
)
def test_kernel_normalisation_is_understood(ours: str, kernels: str) -> None:
    assert canonical(ours) == canonical(kernels)


def test_sync_input_has_no_builtin_chains_or_canary() -> None:
    sync = compile_sync(_input())
    assert set(sync.tables) == {"filter", "nat"}
    for table in sync.tables.values():
        assert not table.policies
        assert "KUBE-PROXY-CANARY" not in table.chains
        assert all(r.chain.startswith("KUBE-") for r in table.rules)


def test_builtin_jumps_are_in_prepend_order() -> None:
    full = compile_node(_input())
    inputs = [r.args.split("-j ")[-1] for r in full.tables["filter"].chain_rules("INPUT")]
    assert inputs == [
        "KUBE-PROXY-FIREWALL",
        "KUBE-NODEPORTS",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FIREWALL",
    ]
    nat_pre = full.tables["nat"].chain_rules("PREROUTING")
    assert [r.args for r in nat_pre] == [
        '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    ]


def test_tokenize_follows_iptables_restore_quoting() -> None:
    assert tokenize('-m comment --comment "a \\"b\\" c" -j X') == [
        "-m",
        "comment",
        "--comment",
        'a "b" c',
        "-j",
        "X",
    ]
    assert quote("ns/svc:p80") == "ns/svc:p80"
    assert quote("has space") == '"has space"'


def _tokenize_by_characters(args: str) -> list[str]:
    """The quoting rules spelled out one character at a time: the oracle
    for tokenize's faster splitting."""
    tokens: list[str] = []
    i, n = 0, len(args)
    while i < n:
        if args[i].isspace():
            i += 1
            continue
        buf: list[str] = []
        while i < n and not args[i].isspace():
            if args[i] != '"':
                buf.append(args[i])
                i += 1
                continue
            i += 1
            while i < n and args[i] != '"':
                if args[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(args[i])
                i += 1
            i += 1  # the closing quote, if any
        tokens.append("".join(buf))
    return tokens


@pytest.mark.parametrize(
    "args",
    [
        "",
        "   ",
        '-m comment --comment "ns/svc:http cluster IP" -j KUBE-SVC-X',
        '--comment ""',
        '"a""b" "c"d e"f g"',
        '"open quote to the end',
        '"\\"" "x\\',
        "tab\tand\u2003em-space\x1cseparator",
        '"quoted\tinside" next',
    ],
)
def test_tokenize_matches_the_character_rules(args: str) -> None:
    assert tokenize(args) == _tokenize_by_characters(args)


def test_tokenize_matches_the_character_rules_on_random_text() -> None:
    rng = random.Random(15)
    alphabet = ["a", "-", " ", "\t", '"', "\\", "\u00a0", "\x1c", "é"]
    for _ in range(20_000):
        args = "".join(rng.choice(alphabet) for _ in range(rng.randrange(16)))
        assert tokenize(args) == _tokenize_by_characters(args), repr(args)


def test_parse_keeps_counters_out_and_reports_bad_lines() -> None:
    rs = parse_restore("*nat\n:KUBE-X - [0:0]\n[5:300] -A KUBE-X -j RETURN\nCOMMIT\n")
    assert rs.tables["nat"].rules[0].args == "-j RETURN"
    with pytest.raises(ParseError, match="line 2: unsupported line"):
        parse_restore("*nat\n-I KUBE-X 1 -j RETURN\nCOMMIT\n")
    with pytest.raises(ParseError, match="has no COMMIT"):
        parse_restore("*nat\n:KUBE-X - [0:0]\n")
    with pytest.raises(ParseError, match="outside of a"):
        parse_restore("-A KUBE-X -j RETURN\n")


def test_large_clusters_drop_endpoint_comments() -> None:
    sp = ServicePortInfo("ns", "big", "", "tcp", "10.96.0.9", 80)
    eps = tuple(
        EndpointInfo(f"10.1.{i // 250}.{i % 250 + 1}", 80, True, True, False, "n")
        for i in range(1001)
    )
    rs = compile_sync(ProxyInput(ProxyConfig("n"), (sp,), {("ns", "big", "", "tcp"): eps}))
    sep_rules = [r for r in rs.tables["nat"].rules if r.chain.startswith("KUBE-SEP-")]
    svc_rules = [r for r in rs.tables["nat"].rules if r.chain.startswith("KUBE-SVC-")]
    assert sep_rules and not any("--comment" in r.args for r in sep_rules)
    assert not any("--comment" in r.args for r in svc_rules)
    assert "--probability 0.0009990010" in svc_rules[0].args
