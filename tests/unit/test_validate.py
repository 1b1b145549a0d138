"""Semantic validation: every check, its exact message and the line it points at."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netemu.api.config import Lab
from netemu.api.errors import InputError
from netemu.api.load import Loaded, load_text
from netemu.api.validate import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_port_name,
    is_qualified_name,
    load_and_validate,
    parse_cidr,
    parse_ip,
    validate,
)

# The API server's explanations, as `kubectl apply` prints them.
DNS1035 = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
QNAME = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
PORT_RANGE = "must be between 1 and 65535, inclusive"
IP = "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)"
CIDR = "must be a valid CIDR value (e.g. 10.9.8.0/24 or 2001:db8::/64)"

LAB = """\
apiVersion: netemu/v1alpha1
kind: Lab
metadata:
  name: lab
spec:
  nodes:
    - name: node-1
      underlayIP: 192.168.56.11
    - name: node-2
      underlayIP: 192.168.56.12
"""


def parse(text: str, file: str = "x.yaml") -> list[Loaded]:
    """Load a snippet (dedented; its first line is line 1) that must be structurally valid."""
    loaded, problems = load_text(textwrap.dedent(text).lstrip("\n"), file)
    assert problems == []
    return loaded


def check(text: str, *others: tuple[str, str]) -> list[str]:
    """Diagnostics of x.yaml (plus other (file, text) inputs), as printed."""
    loaded = parse(text)
    for file, other in others:
        loaded += parse(other, file)
    return [str(d) for d in validate(loaded)]


def check_with_lab(text: str, lab: str = LAB) -> list[str]:
    return check(text, ("lab.yaml", lab))


def service(spec: str, name: str = "web") -> str:
    """A Service whose spec body starts on line 6 (`spec:` is line 5)."""
    return f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec).lstrip("\n"), "  "
    )


# ---------------------------------------------------------------- format helpers


def test_name_helpers_follow_the_api_server() -> None:
    assert is_dns1035_label("web-1") == []
    assert is_dns1035_label("1web") == [DNS1035]
    assert is_dns1123_label("1web") == []
    assert is_dns1123_label("a.b") == ["must not contain dots"]
    assert is_dns1123_subdomain("a.b") == []
    assert is_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]
    assert is_qualified_name("example.com/MyName") == []
    assert is_qualified_name("a/b/c") == [
        "a qualified name " + QNAME + " with an optional DNS subdomain prefix and '/' "
        "(e.g. 'example.com/MyName')"
    ]
    assert is_label_value("") == []
    assert is_port_name("http-alt") == []
    assert is_port_name("8080") == ["must contain at least one letter (a-z)"]


def test_ip_and_cidr_parsing_is_strict() -> None:
    assert str(parse_ip("10.0.0.1")) == "10.0.0.1"
    assert str(parse_ip("2001:db8::1")) == "2001:db8::1"
    for bad in ("10.1", "010.0.0.1", " 10.0.0.1", "10.0.0.256", "fe80::1%eth0", ""):
        assert parse_ip(bad) is None, bad
    assert str(parse_cidr("10.0.0.1/8").cidr) == "10.0.0.0/8"
    for bad in ("10.0.0.0", "10.0.0.0/33", "10.0.0.0/08", "10.0.0.0/255.0.0.0", "10/8", "::/129"):
        assert parse_cidr(bad) is None, bad


# ---------------------------------------------------------------- a valid lab

VALID = """\
apiVersion: netemu/v1alpha1
kind: Lab
metadata:
  name: demo
spec:
  underlayCIDR: 192.168.56.0/24
  serviceCIDR: 10.96.0.0/12
  podCIDR: 10.244.0.0/16
  nodePortRange: 30000-32767
  clusterDNS: 10.96.0.10
  nodes:
    - name: node-1
      underlayIP: 192.168.56.11
      labels:
        topology.kubernetes.io/zone: zone-a
    - name: node-2
      underlayIP: 192.168.56.12
      podCIDR: 10.244.7.0/24
  externalClients:
    - name: client
      ip: 192.168.56.20
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.244.0.0/16
nodePortAddresses: [primary]
iptables:
  masqueradeBit: 14
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app.kubernetes.io/name: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
    matchExpressions:
      - {key: tier, operator: In, values: [front, edge]}
      - {key: canary, operator: DoesNotExist}
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      nodeSelector: {topology.kubernetes.io/zone: zone-a}
      containers:
        - name: web
          ports:
            - {name: http, containerPort: 8080}
            - {name: dns, containerPort: 53, protocol: UDP}
        - name: metrics
          ports:
            - {name: metrics, containerPort: 9090}
---
apiVersion: v1
kind: Pod
metadata:
  generateName: debug-
  namespace: shop
spec:
  nodeName: node-2
  containers:
    - name: shell
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.20
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: dns, port: 53, protocol: UDP, targetPort: 53}
    - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: shop}
spec:
  clusterIP: None
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport, namespace: shop}
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {app: web}
  ports:
    - {name: dns-udp, port: 53, protocol: UDP, nodePort: 30053}
    - {name: dns-tcp, port: 53, protocol: TCP, nodePort: 30053}
---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}}
  loadBalancerSourceRanges: [192.168.56.0/24, " 10.0.0.0/8 "]
  selector: {app: web}
  ports:
    - {port: 443, targetPort: 8080, nodePort: 30443}
status:
  loadBalancer:
    ingress: [{ip: 192.168.56.200}]
---
apiVersion: v1
kind: Service
metadata: {name: web-external-ips, namespace: shop}
spec:
  externalIPs: [192.168.56.201]
  externalTrafficPolicy: Local
  selector: {app: web}
  ports:
    - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: shop}
spec:
  type: ExternalName
  externalName: search.example.com.
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  ports:
    - {port: 5432}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-1
  namespace: shop
  labels: {kubernetes.io/service-name: legacy}
addressType: IPv4
endpoints:
  - addresses: [192.168.56.30]
    conditions: {ready: true}
    nodeName: node-1
ports:
  - {name: "", port: 5432, protocol: TCP}
"""


def test_a_valid_realistic_lab_has_no_diagnostics() -> None:
    loaded = parse(VALID)
    assert len(loaded) == 13
    assert validate(loaded) == []


def test_the_shipped_labs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "controlplane"
    labs = sorted(p for p in root.iterdir() if p.is_dir())
    assert labs
    for lab in labs:
        assert load_and_validate([lab]), lab


# ---------------------------------------------------------------- names


def test_service_name_must_be_a_dns1035_label() -> None:
    text = """
        apiVersion: v1
        kind: Service
        metadata:
          name: 1web
        spec:
          ports: [{port: 80}]
    """
    assert check(text) == [f"x.yaml:4: Service/1web: metadata.name: {DNS1035}"]


def test_service_name_is_at_most_63_characters() -> None:
    name = "a" * 64
    text = (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports: [{{port: 1}}]\n"
    )
    assert check(text) == [
        f"x.yaml:4: Service/{name}: metadata.name: must be no more than 63 characters"
    ]


@pytest.mark.parametrize(
    ("api", "kind", "body"),
    [
        ("v1", "Pod", "spec: {containers: [{name: c}]}"),
        ("v1", "Node", ""),
        ("discovery.k8s.io/v1", "EndpointSlice", "addressType: IPv4"),
        *[
            (
                "apps/v1",
                kind,
                "spec:\n  selector: {matchLabels: {a: b}}\n"
                "  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c}]}}",
            )
            for kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet")
        ],
    ],
)
def test_object_names_must_be_dns1123_subdomains(api: str, kind: str, body: str) -> None:
    labels = "  labels: {kubernetes.io/service-name: s}\n" if kind == "EndpointSlice" else ""
    head = f"apiVersion: {api}\nkind: {kind}\nmetadata:\n"
    good = parse(head + f"  name: a.b-1\n{labels}{body}\n")
    assert validate(good) == []
    bad = parse(head + f"  name: A_b\n{labels}{body}\n")
    assert [str(d) for d in validate(bad)] == [f"x.yaml:4: {kind}/A_b: metadata.name: {SUBDOMAIN}"]


def test_node_name_longer_than_253_characters() -> None:
    name = ".".join(["a" * 50] * 5) + ".abcd"  # 259 characters, each label valid
    assert check(f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n") == [
        f"x.yaml:4: Node/{name}: metadata.name: must be no more than 253 characters"
    ]


def test_namespace_names_are_dns1123_labels() -> None:
    text = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: team.a
        ---
        apiVersion: v1
        kind: Namespace
        metadata:
          name: Team
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
          namespace: Team_A
        spec: {containers: [{name: c}]}
    """
    assert check(text) == [
        "x.yaml:4: Namespace/team.a: metadata.name: must not contain dots",
        f"x.yaml:9: Namespace/Team: metadata.name: {LABEL}",
        f"x.yaml:15: Pod/p: metadata.namespace: {LABEL}",
    ]


def test_name_is_required_unless_generate_name_is_given() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          labels: {app: a}
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          generateName: client-
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Service
        metadata:
          generateName: Web-
        spec:
          ports: [{port: 80}]
    """
    assert check(text) == [
        "x.yaml:3: Pod/<unnamed>: metadata.name: name or generateName is required",
        f"x.yaml:16: Service/<unnamed>: metadata.generateName: {DNS1035}",
    ]


def test_lab_node_and_client_names_are_dns1123_labels_and_unique() -> None:
    lab = """
        apiVersion: netemu/v1alpha1
        kind: Lab
        metadata:
          name: lab
        spec:
          nodes:
            - name: Node_1
              underlayIP: 192.168.56.11
            - name: node-2
              underlayIP: 192.168.56.12
          externalClients:
            - name: client.a
              ip: 192.168.56.20
            - name: node-2
              ip: 192.168.56.21
    """
    assert check(lab) == [
        f"x.yaml:7: Lab/lab: spec.nodes[0].name: {LABEL}",
        "x.yaml:12: Lab/lab: spec.externalClients[0].name: must not contain dots",
        'x.yaml:14: Lab/lab: spec.externalClients[1].name: duplicate name "node-2": already '
        "used by spec.nodes[1]; node and external client names must be unique",
    ]


def test_duplicate_objects_across_files() -> None:
    first = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports: [{port: 80}]
    """
    second = """
        # the same Service again: explicit default namespace is the same namespace
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: default
        spec:
          ports: [{port: 80}]
        ---
        # same name, other namespace or other kind: fine
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: kube-system
        spec:
          ports: [{port: 80}]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec: {containers: [{name: c}]}
        ---
        apiVersion: v1
        kind: Node
        metadata:
          name: n1
        ---
        apiVersion: v1
        kind: Node
        metadata:
          name: n1
          namespace: ignored
    """
    assert check(first, ("y.yaml", second)) == [
        "y.yaml:5: Service/web: metadata.name: duplicate object: Service default/web is "
        "already defined at x.yaml:1",
        "y.yaml:33: Node/n1: metadata.name: duplicate object: Node n1 is already defined at "
        "y.yaml:25",
    ]


# ---------------------------------------------------------------- labels


def test_metadata_label_keys_and_values() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
          labels:
            app: web
            example.com/team: a
            -bad: x
            Example_Com/name: x
            a/b/c: x
            version: "1 0"
            empty: ""
        spec: {containers: [{name: c}]}
    """
    assert check(text) == [
        f'x.yaml:8: Pod/p: metadata.labels.-bad: invalid label key "-bad": name part {QNAME}',
        'x.yaml:9: Pod/p: metadata.labels.Example_Com/name: invalid label key "Example_Com/name": '
        f"prefix part {SUBDOMAIN}",
        'x.yaml:10: Pod/p: metadata.labels.a/b/c: invalid label key "a/b/c": a qualified name '
        f"{QNAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        f'x.yaml:11: Pod/p: metadata.labels.version: invalid label value "1 0": {LABEL_VALUE}',
    ]


def test_label_value_longer_than_63_characters() -> None:
    value = "v" * 64
    text = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labels:\n    a: {value}\n"
    assert check(text) == [
        f'x.yaml:6: Namespace/n: metadata.labels.a: invalid label value "{value}": '
        "must be no more than 63 characters"
    ]


def test_service_selector_labels() -> None:
    text = service("""
        selector:
          app: web server
        ports: [{port: 80}]
    """)
    assert check(text) == [
        f'x.yaml:7: Service/web: spec.selector.app: invalid label value "web server": {LABEL_VALUE}'
    ]


def test_pod_node_selector_and_lab_node_labels() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          nodeSelector:
            zone/: a
          containers: [{name: c}]
        ---
        apiVersion: netemu/v1alpha1
        kind: Lab
        metadata:
          name: lab
        spec:
          nodes:
            - name: n1
              underlayIP: 192.168.56.11
              labels:
                rack: "#1"
    """
    assert check(text) == [
        'x.yaml:7: Pod/p: spec.nodeSelector.zone/: invalid label key "zone/": name part must '
        f"be non-empty; name part {QNAME}",
        f'x.yaml:19: Lab/lab: spec.nodes[0].labels.rack: invalid label value "#1": {LABEL_VALUE}',
    ]


def test_pod_node_affinity_is_checked_as_the_api_server_does() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{name: c}]
          affinity:
            nodeAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                nodeSelectorTerms:
                - matchExpressions:
                  - {key: disk, operator: In}
                  - {key: disk, operator: Exists, values: [a]}
                  - {key: gen, operator: Gt, values: ['1', '2']}
                  - {key: disk, operator: Equals, values: [a]}
                  - {key: "zone/", operator: Exists}
                  matchFields:
                  - {key: metadata.labels, operator: In, values: [n1]}
                  - {key: metadata.name, operator: In, values: [n1, n2]}
                  - {key: metadata.name, operator: Exists}
                  - {key: metadata.name, operator: In, values: [N_1]}
              preferredDuringSchedulingIgnoredDuringExecution:
              - weight: 0
                preference:
                  matchExpressions: [{key: disk, operator: In, values: [ssd]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: q
        spec:
          containers: [{name: c}]
          affinity:
            nodeAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                nodeSelectorTerms: []
    """
    term = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    term += ".nodeSelectorTerms"
    expressions, fields = f"{term}[0].matchExpressions", f"{term}[0].matchFields"
    assert check(text) == [
        f"x.yaml:12: Pod/p: {expressions}[0].values: must be specified when `operator` is "
        "'In' or 'NotIn'",
        f"x.yaml:13: Pod/p: {expressions}[1].values: may not be specified when `operator` is "
        "'Exists' or 'DoesNotExist'",
        f"x.yaml:14: Pod/p: {expressions}[2].values: must be specified single value when "
        "`operator` is 'Lt' or 'Gt'",
        f'x.yaml:15: Pod/p: {expressions}[3].operator: "Equals" is not a valid selector '
        "operator: expected 'In', 'NotIn', 'Exists', 'DoesNotExist', 'Gt' or 'Lt'",
        f'x.yaml:16: Pod/p: {expressions}[4].key: invalid label key "zone/": name part must '
        f"be non-empty; name part {QNAME}",
        f'x.yaml:18: Pod/p: {fields}[0].key: "metadata.labels" is not a valid field selector '
        "key: expected metadata.name",
        f"x.yaml:19: Pod/p: {fields}[1].values: must be only one value when `operator` is "
        "'In' or 'NotIn' for node field selector",
        f'x.yaml:20: Pod/p: {fields}[2].operator: "Exists" is not a valid selector operator: '
        "expected 'In' or 'NotIn'",
        f"x.yaml:21: Pod/p: {fields}[3].values[0]: {SUBDOMAIN}",
        "x.yaml:23: Pod/p: spec.affinity.nodeAffinity.preferredDuringSchedulingIgnored"
        "DuringExecution[0].weight: must be in the range 1-100",
        f"x.yaml:36: Pod/q: {term}: must have at least one node selector term",
    ]


def test_pod_affinity_terms_are_checked_as_the_api_server_does() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{name: c}]
          affinity:
            podAntiAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
              - labelSelector: {matchLabels: {app: web}}
              - labelSelector: {matchExpressions: [{key: app, operator: In}]}
                topologyKey: "zone/"
                namespaces: [Bad_NS]
              - labelSelector: {matchLabelz: {}}
                topologyKey: zone
              - topologyKey: zone
                matchLabelKeys: [rev]
              - labelSelector: {matchExpressions: [{key: rev, operator: Exists}]}
                topologyKey: zone
                matchLabelKeys: [rev, tier]
                mismatchLabelKeys: [tier]
            podAffinity:
              preferredDuringSchedulingIgnoredDuringExecution:
              - weight: 101
                podAffinityTerm:
                  labelSelector: {matchLabels: {app: db}}
                  topologyKey: kubernetes.io/hostname
              - weight: 5
    """
    anti = "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    preferred = "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution"
    assert check(text) == [
        f"x.yaml:10: Pod/p: {anti}[0].topologyKey: can not be empty",
        f"x.yaml:11: Pod/p: {anti}[1].labelSelector.matchExpressions[0].values: must be "
        "specified when `operator` is 'In' or 'NotIn'",
        f'x.yaml:12: Pod/p: {anti}[1].topologyKey: invalid label key "zone/": name part must '
        f"be non-empty; name part {QNAME}",
        f"x.yaml:13: Pod/p: {anti}[1].namespaces[0]: {LABEL}",
        f"x.yaml:14: Pod/p: {anti}[2].labelSelector: expected a label selector (matchLabels, "
        "matchExpressions)",
        f"x.yaml:17: Pod/p: {anti}[3].matchLabelKeys: must not be specified when labelSelector "
        "is not set",
        f'x.yaml:20: Pod/p: {anti}[4].matchLabelKeys[0]: "rev" exists in both matchLabelKeys '
        "and labelSelector",
        f'x.yaml:21: Pod/p: {anti}[4].mismatchLabelKeys[0]: "tier" exists in both '
        "matchLabelKeys and mismatchLabelKeys",
        f"x.yaml:24: Pod/p: {preferred}[0].weight: must be in the range 1-100",
        f"x.yaml:28: Pod/p: {preferred}[1].podAffinityTerm: Required value: a pod affinity term",
    ]


def test_affinity_fields_that_should_be_lists_are_reported_when_they_are_not() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{name: c}]
          affinity:
            nodeAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                nodeSelectorTerms:
                - matchExpressions: {key: disk}
                  matchFields:
                  - {key: metadata.name, operator: In, values: [n1]}
                - matchExpressions:
                  - {key: disk, operator: In, values: ssd}
              preferredDuringSchedulingIgnoredDuringExecution: {weight: 1}
            podAntiAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                labelSelector: {matchLabels: {app: web}}
              preferredDuringSchedulingIgnoredDuringExecution:
              - weight: 1
                podAffinityTerm:
                  labelSelector: {matchLabels: {app: web}}
                  topologyKey: zone
                  namespaces: default
                  matchLabelKeys: rev
    """
    node = "spec.affinity.nodeAffinity"
    anti = "spec.affinity.podAntiAffinity"
    term = f"{anti}.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm"
    assert check(text) == [
        f"x.yaml:11: Pod/p: {node}.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions: expected a list",
        f"x.yaml:15: Pod/p: {node}.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[1].matchExpressions[0].values: expected a list",
        f"x.yaml:15: Pod/p: {node}.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[1].matchExpressions[0].values: must be specified when `operator` "
        "is 'In' or 'NotIn'",
        f"x.yaml:16: Pod/p: {node}.preferredDuringSchedulingIgnoredDuringExecution: "
        "expected a list",
        f"x.yaml:18: Pod/p: {anti}.requiredDuringSchedulingIgnoredDuringExecution: expected a list",
        f"x.yaml:25: Pod/p: {term}.namespaces: expected a list",
        f"x.yaml:26: Pod/p: {term}.matchLabelKeys: expected a list",
    ]


def workload(kind: str, selector: str, labels: str, name: str = "web") -> str:
    """A workload: selector on line 7, template labels on line 10."""
    return (
        f"apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n"
        f"  selector:\n    {selector}\n  template:\n    metadata:\n      labels: {labels}\n"
        "    spec:\n      containers: [{name: c}]\n"
    )


def test_workload_selector_and_template_labels_are_label_maps() -> None:
    text = workload("ReplicaSet", "matchLabels: {app: -web}", "{app: -web, Bad Key: x}")
    assert check(text) == [
        f'x.yaml:7: ReplicaSet/web: spec.selector.matchLabels.app: invalid label value "-web": '
        f"{LABEL_VALUE}",
        "x.yaml:10: ReplicaSet/web: spec.template.metadata.labels.Bad Key: invalid label key "
        f'"Bad Key": name part {QNAME}',
        "x.yaml:10: ReplicaSet/web: spec.template.metadata.labels.app: invalid label value "
        f'"-web": {LABEL_VALUE}',
    ]


def test_match_expressions_operators_and_values() -> None:
    text = """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          selector:
            matchLabels: {app: web}
            matchExpressions:
              - key: tier
                operator: In
              - key: canary
                operator: Exists
                values: ["true"]
              - key: zone
                operator: Equals
                values: [a]
              - key: track
                operator: NotIn
                values: [-x]
          template:
            metadata:
              labels: {app: web}
            spec:
              containers: [{name: c}]
    """
    assert check(text) == [
        "x.yaml:9: Deployment/web: spec.selector.matchExpressions[0].values: must be "
        "specified when `operator` is 'In' or 'NotIn'",
        "x.yaml:13: Deployment/web: spec.selector.matchExpressions[1].values: may not be "
        "specified when `operator` is 'Exists' or 'DoesNotExist'",
        'x.yaml:15: Deployment/web: spec.selector.matchExpressions[2].operator: "Equals" is '
        "not a valid selector operator: expected 'In', 'NotIn', 'Exists' or 'DoesNotExist'",
        "x.yaml:19: Deployment/web: spec.selector.matchExpressions[3].values[0]: invalid label "
        f'value "-x": {LABEL_VALUE}',
    ]


def test_selector_must_match_template_labels() -> None:
    text = workload("Deployment", "matchLabels: {app: web, tier: front}", "{app: web}")
    assert check(text) == [
        "x.yaml:10: Deployment/web: spec.template.metadata.labels: `selector` does not match "
        "template `labels` (selector: app=web,tier=front; template labels: app=web)"
    ]
    text = workload(
        "StatefulSet", "matchExpressions: [{key: app, operator: NotIn, values: [web]}]", "{}"
    )
    assert check(text) == []
    text = workload("DaemonSet", "matchExpressions: [{key: app, operator: Exists}]", "{}")
    assert check(text) == [
        "x.yaml:10: DaemonSet/web: spec.template.metadata.labels: `selector` does not match "
        "template `labels` (selector: app; template labels: none)"
    ]


def test_workload_selector_must_not_be_empty() -> None:
    text = workload("StatefulSet", "matchLabels: {}", "{app: web}")
    assert check(text) == [
        "x.yaml:6: StatefulSet/web: spec.selector: empty selector is invalid for statefulset: "
        "set `matchLabels` (or `matchExpressions`) that select the template's labels"
    ]


def test_replicas_must_not_be_negative() -> None:
    text = workload("Deployment", "matchLabels: {app: web}", "{app: web}")
    text = text.replace("spec:\n  selector", "spec:\n  replicas: -1\n  selector", 1)
    assert check(text) == [
        "x.yaml:6: Deployment/web: spec.replicas: must be greater than or equal to 0"
    ]


# ---------------------------------------------------------------- ports


def test_service_port_range() -> None:
    text = service("""
        ports:
          - name: a
            port: 0
          - name: b
            port: 65536
          - name: c
            port: 65535
    """)
    assert check(text) == [
        f"x.yaml:8: Service/web: spec.ports[0].port: {PORT_RANGE}",
        f"x.yaml:10: Service/web: spec.ports[1].port: {PORT_RANGE}",
    ]


def test_target_port_number_or_iana_service_name() -> None:
    prefix = "must be a port number or the name of a container port (an IANA service name): "
    text = service("""
        ports:
          - {name: a, port: 1, targetPort: 70000}
          - {name: b, port: 2, targetPort: "8080"}
          - {name: c, port: 3, targetPort: HTTP}
          - {name: d, port: 4, targetPort: my--port}
          - {name: e, port: 5, targetPort: -http}
          - {name: f, port: 6, targetPort: abcdefghijklmnop}
          - {name: g, port: 7, targetPort: http-alt}
          - {name: h, port: 8, targetPort: 0}
    """)
    assert check(text) == [
        f"x.yaml:7: Service/web: spec.ports[0].targetPort: {PORT_RANGE}",
        f"x.yaml:8: Service/web: spec.ports[1].targetPort: {prefix}must contain at least one "
        "letter (a-z) (write a port number without quotes)",
        f"x.yaml:9: Service/web: spec.ports[2].targetPort: {prefix}must contain only "
        "alpha-numeric characters (a-z, 0-9), and hyphens (-); must contain at least one letter "
        "(a-z)",
        f"x.yaml:10: Service/web: spec.ports[3].targetPort: {prefix}must not contain "
        "consecutive hyphens",
        f"x.yaml:11: Service/web: spec.ports[4].targetPort: {prefix}must not begin or end with "
        "a hyphen",
        f"x.yaml:12: Service/web: spec.ports[5].targetPort: {prefix}must be no more than 15 "
        "characters",
    ]


def test_service_port_names() -> None:
    text = service("""
        ports:
          - name: HTTP
            port: 80
          - port: 81
          - name: metrics
            port: 82
          - name: metrics
            port: 83
    """)
    assert check(text) == [
        f"x.yaml:7: Service/web: spec.ports[0].name: {LABEL}",
        "x.yaml:9: Service/web: spec.ports[1].name: required when the Service has more than "
        "one port",
        'x.yaml:12: Service/web: spec.ports[3].name: duplicate port name "metrics": already '
        "used by spec.ports[2]",
    ]
    # One port needs no name.
    assert check(service("ports: [{port: 80}]")) == []


def test_duplicate_port_and_protocol() -> None:
    text = service("""
        ports:
          - {name: a, port: 53, protocol: UDP}
          - {name: b, port: 53, protocol: TCP}
          - {name: c, port: 53}
    """)
    assert check(text) == [
        "x.yaml:9: Service/web: spec.ports[2].port: duplicate port 53/TCP: already used by "
        "spec.ports[1]"
    ]


def test_container_ports() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers:
            - name: a
              ports:
                - containerPort: 0
                - containerPort: 8080
                  name: Http
                - containerPort: 8081
                  name: metrics
                  hostPort: 70000
            - name: b
              ports:
                - containerPort: 9090
                  name: metrics
          initContainers:
            - name: init
              ports:
                - containerPort: 65536
    """
    assert check(text) == [
        f"x.yaml:9: Pod/p: spec.containers[0].ports[0].containerPort: {PORT_RANGE}",
        "x.yaml:11: Pod/p: spec.containers[0].ports[1].name: not a valid port name (an IANA "
        "service name): must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        f"x.yaml:14: Pod/p: spec.containers[0].ports[2].hostPort: {PORT_RANGE}",
        'x.yaml:18: Pod/p: spec.containers[1].ports[0].name: duplicate port name "metrics": '
        "already used by spec.containers[0].ports[2]; port names must be unique within a pod",
        f"x.yaml:22: Pod/p: spec.initContainers[0].ports[0].containerPort: {PORT_RANGE}",
    ]


def test_template_container_ports_are_checked_too() -> None:
    text = workload("Deployment", "matchLabels: {a: b}", "{a: b}").replace(
        "containers: [{name: c}]",
        "containers: [{name: c, ports: [{containerPort: 99999}]}]",
    )
    assert check(text) == [
        f"x.yaml:12: Deployment/web: spec.template.spec.containers[0].ports[0].containerPort: "
        f"{PORT_RANGE}"
    ]


def endpoint_slice(body: str, labels: str = "{kubernetes.io/service-name: web}") -> str:
    """An EndpointSlice whose body starts on line 6."""
    return (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n"
        f"  labels: {labels}\n" + textwrap.dedent(body).lstrip("\n")
    )


def test_endpoint_slice_ports() -> None:
    text = endpoint_slice("""
        addressType: IPv4
        ports:
          - {name: http, port: 0}
          - {name: http, port: 65536}
          - {port: 8080}
          - {port: 8081}
          - {name: Metrics, port: 9090}
    """)
    assert check(text) == [
        f"x.yaml:8: EndpointSlice/web-1: ports[0].port: {PORT_RANGE}",
        'x.yaml:9: EndpointSlice/web-1: ports[1].name: duplicate port name "http": ports[0] '
        "has the same name; each port of an EndpointSlice needs a unique name",
        f"x.yaml:9: EndpointSlice/web-1: ports[1].port: {PORT_RANGE}",
        "x.yaml:11: EndpointSlice/web-1: ports[3]: duplicate unnamed port: ports[2] has the "
        "same name; each port of an EndpointSlice needs a unique name",
        f"x.yaml:12: EndpointSlice/web-1: ports[4].name: {LABEL}",
    ]


# ---------------------------------------------------------------- Service semantics


def test_cluster_ip_must_be_empty_none_or_an_ip() -> None:
    assert check(service("clusterIP: 10.96.0.300\nports: [{port: 80}]")) == [
        "x.yaml:6: Service/web: spec.clusterIP: must be empty, 'None', or a valid IP address"
    ]
    assert check(service("clusterIP: ''\nports: [{port: 80}]")) == []
    assert check(service("clusterIP: None")) == []


def test_cluster_ips_must_be_ips_and_start_with_cluster_ip() -> None:
    text = service("""
        clusterIP: 10.96.0.5
        clusterIPs: [10.96.0.6, fd00::x]
        ports: [{port: 80}]
    """)
    assert check(text) == [
        "x.yaml:7: Service/web: spec.clusterIPs[0]: must be the same as `clusterIP` "
        "(10.96.0.5): the first of `clusterIPs` is the Service's primary cluster IP",
        f"x.yaml:7: Service/web: spec.clusterIPs[1]: {IP}",
    ]


def test_cluster_ip_taken_twice() -> None:
    first = service("clusterIP: 10.96.0.5\nports: [{port: 80}]", name="a")
    second = service("clusterIP: 10.96.0.5\nports: [{port: 80}]", name="b")
    # No Lab: the collision is still an error.
    assert check(first, ("y.yaml", second)) == [
        "y.yaml:6: Service/b: spec.clusterIP: 10.96.0.5 is already the cluster IP of "
        "Service/a spec.clusterIP (x.yaml:6)"
    ]


def test_cluster_ip_inside_the_lab_service_cidr() -> None:
    outside = service("clusterIP: 10.200.0.1\nports: [{port: 80}]")
    assert check_with_lab(outside) == [
        "x.yaml:6: Service/web: spec.clusterIP: must be inside the Lab's serviceCIDR 10.96.0.0/12"
    ]
    network = service("clusterIP: 10.96.0.0\nports: [{port: 80}]")
    assert check_with_lab(network) == [
        "x.yaml:6: Service/web: spec.clusterIP: 10.96.0.0 is the network address of the Lab's "
        "serviceCIDR 10.96.0.0/12; a cluster IP must be a host address inside it"
    ]
    # Without a Lab there is no serviceCIDR to check against.
    assert check(outside) == []


def test_node_port_only_for_node_port_and_load_balancer() -> None:
    text = service("""
        ports:
          - {port: 80, nodePort: 30080}
    """)
    assert check(text) == [
        "x.yaml:7: Service/web: spec.ports[0].nodePort: may not be used when `type` is 'ClusterIP'"
    ]
    text = service("""
        type: ExternalName
        externalName: example.com
        ports:
          - {port: 80, nodePort: 30080}
    """)
    assert check(text) == [
        "x.yaml:9: Service/web: spec.ports[0].nodePort: may not be used when `type` is "
        "'ExternalName'"
    ]


def test_node_port_range() -> None:
    text = service("""
        type: NodePort
        ports:
          - {name: a, port: 80, nodePort: 80}
          - {name: b, port: 81, nodePort: 70000}
    """)
    assert check_with_lab(text) == [
        "x.yaml:8: Service/web: spec.ports[0].nodePort: must be inside the Lab's nodePortRange "
        "30000-32767",
        f"x.yaml:9: Service/web: spec.ports[1].nodePort: {PORT_RANGE}",
    ]
    # Without a Lab only the port number itself is checked.
    assert check(text) == [f"x.yaml:9: Service/web: spec.ports[1].nodePort: {PORT_RANGE}"]


def test_node_port_used_twice() -> None:
    first = service(
        """
        type: NodePort
        ports:
          - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
          - {name: dns-tcp, port: 53, protocol: TCP, nodePort: 30053}
          - {name: other, port: 54, protocol: SCTP, nodePort: 30053}
        """,
        name="a",
    )
    second = service(
        """
        type: LoadBalancer
        ports:
          - {port: 53, protocol: UDP, nodePort: 30053}
        """,
        name="b",
    )
    assert check(first, ("y.yaml", second)) == [
        "x.yaml:10: Service/a: spec.ports[2].nodePort: 30053 is already used by "
        "spec.ports[0].nodePort; one Service may reuse a nodePort only for the same `port` with "
        "another protocol",
        "y.yaml:8: Service/b: spec.ports[0].nodePort: 30053 is already used by Service/a "
        "spec.ports[0].nodePort (x.yaml:8)",
    ]
    # The same port and protocol twice: a duplicate port, and the nodePort cannot be shared.
    same = service("""
        type: NodePort
        ports:
          - {name: a, port: 53, protocol: UDP, nodePort: 30053}
          - {name: b, port: 53, protocol: UDP, nodePort: 30053}
    """)
    assert check(same) == [
        "x.yaml:9: Service/web: spec.ports[1].nodePort: 30053 is already used by "
        "spec.ports[0].nodePort; one Service may reuse a nodePort only for the same `port` with "
        "another protocol",
        "x.yaml:9: Service/web: spec.ports[1].port: duplicate port 53/UDP: already used by "
        "spec.ports[0]",
    ]


def test_external_traffic_policy_needs_an_external_service() -> None:
    assert check(service("externalTrafficPolicy: Local\nports: [{port: 80}]")) == [
        "x.yaml:6: Service/web: spec.externalTrafficPolicy: may only be set when `type` is "
        "'NodePort' or 'LoadBalancer' (or on a ClusterIP Service with `externalIPs`)"
    ]
    text = service("type: ExternalName\nexternalName: db.example.com\nexternalTrafficPolicy: Local")
    assert check(text) == [
        "x.yaml:8: Service/web: spec.externalTrafficPolicy: may only be set when `type` is "
        "'NodePort' or 'LoadBalancer'"
    ]
    text = service("externalIPs: [192.0.2.1]\nexternalTrafficPolicy: Local\nports: [{port: 80}]")
    assert check(text) == []


def test_health_check_node_port() -> None:
    text = service("""
        type: NodePort
        externalTrafficPolicy: Local
        healthCheckNodePort: 32000
        ports: [{port: 80}]
    """)
    assert check(text) == [
        "x.yaml:8: Service/web: spec.healthCheckNodePort: may only be set when `type` is "
        "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
    ]
    lb = service(
        """
        type: LoadBalancer
        externalTrafficPolicy: Local
        healthCheckNodePort: 30080
        ports: [{port: 80}]
        """,
        name="lb",
    )
    other = service("type: NodePort\nports: [{port: 80, nodePort: 30080}]", name="np")
    # It comes from the same pool as nodePorts.
    assert check(other, ("y.yaml", lb)) == [
        "y.yaml:8: Service/lb: spec.healthCheckNodePort: 30080 is already used by Service/np "
        "spec.ports[0].nodePort (x.yaml:7)"
    ]
    assert check_with_lab(lb.replace("30080", "20000")) == [
        "x.yaml:8: Service/lb: spec.healthCheckNodePort: must be inside the Lab's nodePortRange "
        "30000-32767"
    ]


def test_headless_service_cannot_be_node_port_or_load_balancer() -> None:
    for svc_type in ("NodePort", "LoadBalancer"):
        text = service(f"type: {svc_type}\nclusterIP: None\nports: [{{port: 80}}]")
        assert check(text) == [
            f"x.yaml:7: Service/web: spec.clusterIP: may not be set to 'None' for {svc_type} "
            "services"
        ]


def test_external_name() -> None:
    assert check(service("type: ExternalName")) == [
        "x.yaml:5: Service/web: spec.externalName: required when `type` is 'ExternalName'"
    ]
    assert check(service("type: ExternalName\nexternalName: My_DB.example.com")) == [
        f"x.yaml:7: Service/web: spec.externalName: {SUBDOMAIN}"
    ]
    assert check(service("type: ExternalName\nexternalName: db.\nclusterIP: 10.96.0.1")) == [
        "x.yaml:8: Service/web: spec.clusterIP: may not be set for ExternalName services"
    ]


def test_service_needs_a_port_unless_headless_or_external_name() -> None:
    assert check(service("selector: {app: web}")) == [
        "x.yaml:5: Service/web: spec.ports: a Service needs at least one port, unless it is "
        "headless (`clusterIP: None`) or of `type` 'ExternalName'"
    ]


def test_external_ips() -> None:
    text = service("""
        externalIPs:
          - 192.0.2.1
          - 1.2.3
          - 127.0.0.1
          - 0.0.0.0
          - fe80::1
          - 224.0.0.5
        ports: [{port: 80}]
    """)
    assert check(text) == [
        f"x.yaml:8: Service/web: spec.externalIPs[1]: {IP}",
        "x.yaml:9: Service/web: spec.externalIPs[2]: may not be in the loopback range "
        "(127.0.0.0/8, ::1/128)",
        "x.yaml:10: Service/web: spec.externalIPs[3]: may not be unspecified (0.0.0.0)",
        "x.yaml:11: Service/web: spec.externalIPs[4]: may not be in the link-local range "
        "(169.254.0.0/16, fe80::/10)",
        "x.yaml:12: Service/web: spec.externalIPs[5]: may not be in the link-local multicast "
        "range (224.0.0.0/24, ff02::/10)",
    ]


def test_load_balancer_source_ranges() -> None:
    text = service("""
        type: LoadBalancer
        loadBalancerSourceRanges: [10.0.0.0/8, 10.0.0.0/33, 10.0.0.1]
        ports: [{port: 80}]
    """)
    assert check(text) == [
        f"x.yaml:7: Service/web: spec.loadBalancerSourceRanges[1]: {CIDR}",
        f"x.yaml:7: Service/web: spec.loadBalancerSourceRanges[2]: {CIDR}",
    ]
    text = service("""
        type: NodePort
        loadBalancerSourceRanges:
          - 10.0.0.0/8
        ports: [{port: 80}]
    """)
    assert check(text) == [
        "x.yaml:7: Service/web: spec.loadBalancerSourceRanges: may only be used when `type` is "
        "'LoadBalancer'"
    ]


def test_load_balancer_ingress_ip() -> None:
    text = (
        service("""
        type: LoadBalancer
        ports: [{port: 80}]
    """)
        + "status:\n  loadBalancer:\n    ingress:\n"
        + "      - hostname: lb.example.com\n      - ip: lb\n"
    )
    assert check(text) == [f"x.yaml:12: Service/web: status.loadBalancer.ingress[1].ip: {IP}"]


def test_session_affinity_config() -> None:
    text = service("""
        sessionAffinity: ClientIP
        sessionAffinityConfig:
          clientIP:
            timeoutSeconds: 0
        ports: [{port: 80}]
    """)
    assert check(text) == [
        "x.yaml:9: Service/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be "
        "between 1 and 86400, inclusive"
    ]
    assert check(text.replace("timeoutSeconds: 0", "timeoutSeconds: 86401")) == [
        "x.yaml:9: Service/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be "
        "between 1 and 86400, inclusive"
    ]
    assert check(text.replace("timeoutSeconds: 0", "timeoutSeconds: 86400")) == []
    unset = text.replace("  sessionAffinity: ClientIP\n", "").replace(
        "timeoutSeconds: 0", "timeoutSeconds: 60"
    )
    assert check(unset) == [
        "x.yaml:6: Service/web: spec.sessionAffinityConfig: may only be set when "
        "`sessionAffinity` is 'ClientIP' (it is 'None')"
    ]


# ---------------------------------------------------------------- EndpointSlices


def test_endpoint_addresses_match_the_address_type() -> None:
    text = endpoint_slice("""
        addressType: IPv4
        endpoints:
          - addresses: [10.244.1.5, 10.244.1.300]
          - addresses: ["fd00::5"]
          - addresses: [127.0.0.1]
          - addresses: []
    """)
    assert check(text) == [
        "x.yaml:8: EndpointSlice/web-1: endpoints[0].addresses[1]: must be a valid IPv4 address "
        "(the slice's addressType is IPv4)",
        "x.yaml:9: EndpointSlice/web-1: endpoints[1].addresses[0]: must be a valid IPv4 address "
        "(the slice's addressType is IPv4)",
        "x.yaml:10: EndpointSlice/web-1: endpoints[2].addresses[0]: may not be in the loopback "
        "range (127.0.0.0/8, ::1/128)",
        "x.yaml:11: EndpointSlice/web-1: endpoints[3].addresses: must contain at least 1 address",
    ]
    v6 = endpoint_slice("addressType: IPv6\nendpoints:\n  - addresses: [10.244.1.5, 'fd00::5']\n")
    assert check(v6) == [
        "x.yaml:8: EndpointSlice/web-1: endpoints[0].addresses[0]: must be a valid IPv6 address "
        "(the slice's addressType is IPv6)"
    ]


def test_endpoint_slice_limits() -> None:
    endpoints = "".join(f"  - addresses: [10.1.{i // 250}.{i % 250 + 1}]\n" for i in range(1001))
    text = endpoint_slice("addressType: IPv4\nendpoints:\n" + endpoints)
    assert check(text) == [
        "x.yaml:7: EndpointSlice/web-1: endpoints: too many endpoints: 1001; an EndpointSlice "
        "may have at most 1000"
    ]
    endpoints = endpoints[: endpoints.rindex("  - ")]  # 1000 is fine
    assert check(endpoint_slice("addressType: IPv4\nendpoints:\n" + endpoints)) == []
    addresses = ", ".join(f"10.2.0.{i}" for i in range(1, 102))
    text = endpoint_slice(f"addressType: IPv4\nendpoints:\n  - addresses: [{addresses}]\n")
    assert check(text) == [
        "x.yaml:8: EndpointSlice/web-1: endpoints[0].addresses: too many addresses: 101; an "
        "endpoint may have at most 100"
    ]
    ports = "".join(f"  - {{name: p{i}, port: {i + 1}}}\n" for i in range(101))
    text = endpoint_slice("addressType: IPv4\nports:\n" + ports)
    assert check(text) == [
        "x.yaml:7: EndpointSlice/web-1: ports: too many ports: 101; an EndpointSlice may have "
        "at most 100"
    ]


def test_endpoint_slice_needs_the_service_name_label() -> None:
    message = (
        "metadata.labels: label `kubernetes.io/service-name` is required: netemu finds the "
        "Service an EndpointSlice belongs to by this label"
    )
    assert check(endpoint_slice("addressType: IPv4\n", labels="{app: web}")) == [
        f"x.yaml:5: EndpointSlice/web-1: {message}"
    ]
    text = (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n"
        "addressType: IPv4\n"
    )
    assert check(text) == [f"x.yaml:3: EndpointSlice/s: {message}"]


# ---------------------------------------------------------------- KubeProxyConfiguration


def proxy(body: str) -> str:
    """A KubeProxyConfiguration whose body starts on line 3."""
    return (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        + textwrap.dedent(body).lstrip("\n")
    )


def test_proxy_cluster_cidr() -> None:
    assert check(proxy("clusterCIDR: 10.244.0.0/16,fd00:10:244::/56")) == []
    assert check(proxy("clusterCIDR: 10.244.0.0")) == [
        "x.yaml:3: KubeProxyConfiguration/<unnamed>: clusterCIDR: must be a valid CIDR block "
        "(e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
    ]
    assert check(proxy("clusterCIDR: 10.244.0.0/16,10.245.0.0/16")) == [
        "x.yaml:3: KubeProxyConfiguration/<unnamed>: clusterCIDR: must be a valid DualStack "
        "CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"
    ]
    assert check(proxy("clusterCIDR: 10.244.0.0/16,fd00::/56,10.1.0.0/16")) == [
        "x.yaml:3: KubeProxyConfiguration/<unnamed>: clusterCIDR: only one CIDR allowed or a "
        "valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"
    ]


def test_proxy_mode() -> None:
    """netemu emulates the iptables and nftables modes; any other is an error,
    and so is a mode that disagrees with the Lab's proxyMode."""
    for mode in ("iptables", "nftables", '""'):
        assert check_with_lab(proxy(f"mode: {mode}")) == []
    for mode in ("ipvs", "kernelspace"):
        assert check_with_lab(proxy(f"mode: {mode}")) == [
            f"x.yaml:3: KubeProxyConfiguration/<unnamed>: mode: unsupported proxy mode "
            f"'{mode}': netemu emulates kube-proxy's 'iptables' and 'nftables' modes"
        ]
    nft_lab = LAB.replace("spec:\n", "spec:\n  proxyMode: nftables\n")
    assert check_with_lab(proxy("mode: nftables"), nft_lab) == []
    assert check_with_lab(proxy("mode: iptables"), nft_lab) == [
        "x.yaml:3: KubeProxyConfiguration/<unnamed>: mode: 'iptables' disagrees with the "
        "Lab's spec.proxyMode 'nftables' (lab.yaml:6): set one, or the same in both"
    ]
    # A Lab that names no mode leaves the choice to the KubeProxyConfiguration.
    assert check_with_lab(proxy("mode: nftables")) == []


def test_proxy_node_port_addresses() -> None:
    text = proxy("""
        nodePortAddresses:
          - 192.168.56.0/24
          - primary
          - 10.0.0.1
    """)
    assert check(text) == [
        "x.yaml:5: KubeProxyConfiguration/<unnamed>: nodePortAddresses[1]: can't use both "
        "'primary' and CIDRs: 'primary' must be the only entry",
        "x.yaml:6: KubeProxyConfiguration/<unnamed>: nodePortAddresses[2]: must be a valid "
        "CIDR (e.g. 192.168.56.0/24) or 'primary'",
    ]


def test_proxy_masquerade_bit() -> None:
    text = proxy("""
        iptables:
          masqueradeBit: 32
        nftables:
          masqueradeBit: -1
    """)
    assert check(text) == [
        "x.yaml:4: KubeProxyConfiguration/<unnamed>: iptables.masqueradeBit: must be between 0 "
        "and 31, inclusive",
        "x.yaml:6: KubeProxyConfiguration/<unnamed>: nftables.masqueradeBit: must be between 0 "
        "and 31, inclusive",
    ]


def test_proxy_conntrack() -> None:
    text = proxy("""
        conntrack:
          maxPerCore: -1
          min: "many"
          tcpEstablishedTimeout: 24 hours
          tcpCloseWaitTimeout: -1h
          udpTimeout: 30
          udpStreamTimeout: 2m0s
    """)
    assert check(text) == [
        "x.yaml:4: KubeProxyConfiguration/<unnamed>: conntrack.maxPerCore: must be greater "
        "than or equal to 0",
        "x.yaml:5: KubeProxyConfiguration/<unnamed>: conntrack.min: must be an integer, got 'many'",
        "x.yaml:6: KubeProxyConfiguration/<unnamed>: conntrack.tcpEstablishedTimeout: invalid "
        'duration "24 hours" (units: ns, us, ms, s, m, h)',
        "x.yaml:7: KubeProxyConfiguration/<unnamed>: conntrack.tcpCloseWaitTimeout: must be "
        "greater than or equal to 0",
        "x.yaml:8: KubeProxyConfiguration/<unnamed>: conntrack.udpTimeout: expected a duration "
        'string such as "30s" or "1m30s", got 30',
    ]
    assert check(proxy("conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 1h30m}\n")) == []


def test_at_most_one_proxy_configuration_and_one_lab() -> None:
    kpc = proxy("mode: iptables\n")
    assert check(kpc, ("y.yaml", kpc)) == [
        "y.yaml:1: KubeProxyConfiguration/<unnamed>: at most one KubeProxyConfiguration is "
        "allowed in the input; the first is KubeProxyConfiguration/<unnamed> (x.yaml:1)"
    ]
    other_lab = LAB.replace("name: lab", "name: other")
    assert check(LAB, ("y.yaml", other_lab)) == [
        "y.yaml:1: Lab/other: at most one Lab is allowed in the input; the first is Lab/lab "
        "(x.yaml:1)"
    ]


# ---------------------------------------------------------------- Lab


def lab(spec: str) -> str:
    """A Lab whose spec body starts on line 6."""
    return "apiVersion: netemu/v1alpha1\nkind: Lab\nmetadata:\n  name: lab\nspec:\n" + (
        textwrap.indent(textwrap.dedent(spec).lstrip("\n"), "  ")
    )


NODES = "nodes: [{name: n1, underlayIP: 192.168.56.11}]\n"


def test_lab_cidrs_are_network_addresses() -> None:
    text = lab(
        """
        serviceCIDR: 10.96.0.0/33
        podCIDR: 10.244.1.0/16
        underlayCIDR: 192.168.56.0
        """
        + NODES
    )
    assert check(text) == [
        f"x.yaml:6: Lab/lab: spec.serviceCIDR: {CIDR}",
        "x.yaml:7: Lab/lab: spec.podCIDR: 10.244.1.0/16 has host bits set; the network address "
        "is 10.244.0.0/16",
        f"x.yaml:8: Lab/lab: spec.underlayCIDR: {CIDR}",
    ]


def test_lab_node_port_range() -> None:
    for value in ("30000-2000", "abc", "0-100", "30000-70000", "30000 - 32767"):
        assert check(lab(f"nodePortRange: {value}\n" + NODES)) == [
            'x.yaml:6: Lab/lab: spec.nodePortRange: must be "LOW-HIGH" with 1 <= LOW <= HIGH '
            '<= 65535 (e.g. "30000-32767")'
        ], value
    assert check(lab("nodePortRange: 80-80\n" + NODES)) == []


def test_lab_vxlan_port() -> None:
    for value in (0, 65536, -1):
        assert check(lab(f"vxlanPort: {value}\n" + NODES)) == [
            f"x.yaml:6: Lab/lab: spec.vxlanPort: {value} is not a UDP port: must be 1-65535 "
            "(flannel's default is 8472)"
        ], value
    assert check(lab("vxlanPort: 4789\n" + NODES)) == []
    _, problems = load_text(lab('vxlanPort: "8472"\n' + NODES), "x.yaml")
    assert [(p.line, p.field, p.message) for p in problems] == [
        (6, "spec.vxlanPort", "expected an integer, got '8472'")
    ]


def test_lab_node_max_pods() -> None:
    nodes = "nodes:\n- name: n1\n  underlayIP: 192.168.56.11\n  maxPods: {}\n"
    assert check(lab(nodes.format(-1))) == [
        "x.yaml:9: Lab/lab: spec.nodes[0].maxPods: maxPods (--max-pods) -1 must not be a "
        "negative number"
    ]
    assert check(lab(nodes.format(0))) == []
    assert check(lab(nodes.format(500))) == []
    _, problems = load_text(lab(nodes.format('"110"')), "x.yaml")
    assert [(p.line, p.field, p.message) for p in problems] == [
        (9, "spec.nodes[0].maxPods", "expected an integer, got '110'")
    ]


def test_lab_vxlan_port_defaults_to_flannels() -> None:
    from netemu.api.config import Lab

    spec = {"nodes": [{"name": "n1", "underlayIP": "192.168.56.11"}]}
    parsed = Lab.model_validate({"metadata": {"name": "lab"}, "spec": spec})
    assert parsed.spec.vxlan_port == 8472


def test_lab_cidr_overlaps_name_both() -> None:
    text = lab(
        """
        serviceCIDR: 10.96.0.0/12
        podCIDR: 10.100.0.0/16
        underlayCIDR: 10.100.5.0/24
        nodes: [{name: n1, underlayIP: 10.100.5.11}]
        """
    )
    assert check(text) == [
        "x.yaml:6: Lab/lab: spec.serviceCIDR: serviceCIDR 10.96.0.0/12 overlaps podCIDR "
        "10.100.0.0/16: the pod, service and underlay CIDRs must not overlap",
        "x.yaml:8: Lab/lab: spec.underlayCIDR: underlayCIDR 10.100.5.0/24 overlaps podCIDR "
        "10.100.0.0/16: the pod, service and underlay CIDRs must not overlap",
        "x.yaml:8: Lab/lab: spec.underlayCIDR: underlayCIDR 10.100.5.0/24 overlaps serviceCIDR "
        "10.96.0.0/12: the pod, service and underlay CIDRs must not overlap",
    ]


def test_lab_node_pod_cidrs() -> None:
    text = lab("""
        podCIDR: 10.244.0.0/16
        nodes:
          - {name: a, underlayIP: 192.168.56.11, podCIDR: 10.244.1.0/24}
          - {name: b, underlayIP: 192.168.56.12, podCIDR: 10.245.0.0/24}
          - {name: c, underlayIP: 192.168.56.13, podCIDR: 10.244.0.0/23}
          - {name: d, underlayIP: 192.168.56.14, podCIDR: 10.244.2.1/24}
          - {name: e, underlayIP: 192.168.56.15, podCIDR: 10.244.3.0/24}
    """)
    assert check(text) == [
        "x.yaml:9: Lab/lab: spec.nodes[1].podCIDR: must be inside the Lab's podCIDR 10.244.0.0/16",
        "x.yaml:10: Lab/lab: spec.nodes[2].podCIDR: overlaps 10.244.1.0/24, the podCIDR of "
        "node a (spec.nodes[0].podCIDR); node podCIDRs must not overlap",
        "x.yaml:11: Lab/lab: spec.nodes[3].podCIDR: 10.244.2.1/24 has host bits set; the "
        "network address is 10.244.2.0/24",
    ]


def test_lab_pod_cidr_needs_room_for_a_slash_24_per_node() -> None:
    text = lab("""
        podCIDR: 10.244.0.0/23
        nodes:
          - {name: a, underlayIP: 192.168.56.11}
          - {name: b, underlayIP: 192.168.56.12, podCIDR: 10.244.1.128/25}
          - {name: c, underlayIP: 192.168.56.13}
    """)
    # b's /25 takes the /24 it lies in: one /24 is left for two nodes.
    assert check(text) == [
        "x.yaml:6: Lab/lab: spec.podCIDR: 10.244.0.0/23 has room for 1 more /24 node "
        "subnet(s), but 2 node(s) have no explicit podCIDR (a, c): use a podCIDR of at least "
        "/22 or give nodes explicit podCIDRs"
    ]
    assert check(text.replace("/23", "/22")) == []
    small = lab("podCIDR: 10.244.0.0/25\n" + NODES)
    assert check(small) == [
        "x.yaml:6: Lab/lab: spec.podCIDR: 10.244.0.0/25 has room for 0 more /24 node "
        "subnet(s), but 1 node(s) have no explicit podCIDR (n1): use a podCIDR of at least /24 "
        "or give nodes explicit podCIDRs"
    ]


def test_lab_underlay_addresses() -> None:
    text = lab("""
        underlayCIDR: 192.168.56.0/24
        nodes:
          - {name: a, underlayIP: 192.168.56.1000}
          - {name: b, underlayIP: 192.168.57.1}
          - {name: c, underlayIP: 192.168.56.0}
          - {name: d, underlayIP: 192.168.56.255}
          - {name: e, underlayIP: 192.168.56.11}
        externalClients:
          - {name: client, ip: 192.168.56.11}
    """)
    assert check(text) == [
        f"x.yaml:8: Lab/lab: spec.nodes[0].underlayIP: {IP}",
        "x.yaml:9: Lab/lab: spec.nodes[1].underlayIP: must be inside underlayCIDR 192.168.56.0/24",
        "x.yaml:10: Lab/lab: spec.nodes[2].underlayIP: 192.168.56.0 is the network address of "
        "underlayCIDR 192.168.56.0/24; use a host address inside it",
        "x.yaml:11: Lab/lab: spec.nodes[3].underlayIP: 192.168.56.255 is the broadcast address "
        "of underlayCIDR 192.168.56.0/24; use a host address inside it",
        "x.yaml:14: Lab/lab: spec.externalClients[0].ip: 192.168.56.11 is already used by "
        "spec.nodes[4].underlayIP; underlay addresses must be unique",
    ]


def test_lab_load_balancer_address_and_health_check() -> None:
    base = """
        underlayCIDR: 192.168.56.0/24
        nodes:
          - {name: a, underlayIP: 192.168.56.11}
        externalClients:
          - {name: client, ip: 192.168.56.20}
        loadBalancer:
    """
    good = lab(
        base
        + "      ip: 192.168.56.250\n"
        + "          healthCheck: {intervalSeconds: 0.5, timeoutSeconds: 0.25}\n"
    )
    assert check(good) == []
    text = lab(
        base
        + "      ip: 192.168.56.20\n"
        + "          healthCheck:\n"
        + "            intervalSeconds: 1\n"
        + "            timeoutSeconds: 2\n"
        + "            healthyThreshold: 0\n"
    )
    assert check(text) == [
        "x.yaml:12: Lab/lab: spec.loadBalancer.ip: 192.168.56.20 is already used by external "
        "client client; underlay addresses must be unique",
        "x.yaml:15: Lab/lab: spec.loadBalancer.healthCheck.timeoutSeconds: must not be greater "
        "than intervalSeconds",
        "x.yaml:16: Lab/lab: spec.loadBalancer.healthCheck.healthyThreshold: must be at least 1",
    ]
    in_pool = lab(base + "      ip: 192.168.56.210\n")
    assert check(in_pool) == [
        "x.yaml:12: Lab/lab: spec.loadBalancer.ip: 192.168.56.210 is in the load-balancer pool "
        "(the default pool), whose addresses go to Services; the load balancer's own address "
        "must be outside it",
    ]
    given_pool = lab(
        base + "      ip: 192.168.56.210\n          addresses: [192.168.56.100-192.168.56.120]\n"
    )
    assert check(given_pool) == []
    outside = lab(base + "      ip: 10.0.0.1\n          healthCheck: {intervalSeconds: 0}\n")
    assert check(outside) == [
        "x.yaml:12: Lab/lab: spec.loadBalancer.ip: must be inside underlayCIDR 192.168.56.0/24",
        "x.yaml:13: Lab/lab: spec.loadBalancer.healthCheck.intervalSeconds: must be greater than 0",
    ]


def test_lab_cluster_dns_inside_service_cidr() -> None:
    assert check(lab("clusterDNS: 10.0.0.10\n" + NODES)) == [
        "x.yaml:6: Lab/lab: spec.clusterDNS: must be inside serviceCIDR 10.96.0.0/12"
    ]
    assert check(lab("clusterDNS: dns\n" + NODES)) == [f"x.yaml:6: Lab/lab: spec.clusterDNS: {IP}"]
    # Left out, clusterDNS follows the serviceCIDR (kubeadm's 10th address).
    assert check(lab("serviceCIDR: 10.0.0.0/16\n" + NODES)) == []


def test_lab_needs_a_node() -> None:
    assert check(lab("nodes: []\n")) == [
        "x.yaml:6: Lab/lab: spec.nodes: a Lab needs at least one node"
    ]


def test_pinned_node_must_exist() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          nodeName: node-9
          containers: [{name: c}]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: q
        spec:
          nodeName: node-3
          containers: [{name: c}]
        ---
        apiVersion: v1
        kind: Node
        metadata:
          name: node-3
    """
    assert check_with_lab(text) == [
        'x.yaml:6: Pod/p: spec.nodeName: node "node-9" does not exist; defined nodes: node-1, '
        "node-2, node-3"
    ]
    deployment = workload("Deployment", "matchLabels: {a: b}", "{a: b}").replace(
        "containers:", "nodeName: node-9\n      containers:"
    )
    assert check_with_lab(deployment) == [
        'x.yaml:12: Deployment/web: spec.template.spec.nodeName: node "node-9" does not exist; '
        "defined nodes: node-1, node-2"
    ]
    # Without any nodes defined there is nothing to check against.
    assert check(deployment) == []


# ---------------------------------------------------------------- load_and_validate


def test_load_and_validate_reports_every_file_together(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(LAB.replace("192.168.56.12", "192.168.56.11"))
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "web.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web\nspec:\n"
        "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n"
    )
    (tmp_path / "apps" / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: node-7\n"
        "  containers: [{name: c, ports: [{containerPort: 0}]}]\n"
    )
    with pytest.raises(InputError) as caught:
        load_and_validate([tmp_path])
    lab_file, pod_file, web_file = (
        tmp_path / "lab.yaml",
        tmp_path / "apps" / "pod.yaml",
        tmp_path / "apps" / "web.yaml",
    )
    assert [str(d) for d in caught.value.diagnostics] == [
        f'{pod_file}:6: Pod/p: spec.nodeName: node "node-7" does not exist; defined nodes: '
        "node-1, node-2",
        f"{pod_file}:7: Pod/p: spec.containers[0].ports[0].containerPort: {PORT_RANGE}",
        f"{web_file}:4: Service/Web: metadata.name: {DNS1035}",
        f"{web_file}:7: Service/Web: spec.ports[0].nodePort: must be inside the Lab's "
        "nodePortRange 30000-32767",
        f"{lab_file}:10: Lab/lab: spec.nodes[1].underlayIP: 192.168.56.11 is already used by "
        "spec.nodes[0].underlayIP; underlay addresses must be unique",
    ]
    assert str(caught.value).splitlines() == [str(d) for d in caught.value.diagnostics]


def test_load_and_validate_returns_the_objects(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(VALID)
    loaded = load_and_validate([tmp_path / "all.yaml"])
    assert [item.ref for item in loaded][:3] == [
        "Lab/demo",
        "KubeProxyConfiguration/<unnamed>",
        "Namespace/shop",
    ]


def test_load_and_validate_stops_at_structural_errors(tmp_path: Path) -> None:
    # Semantic checks need typed objects: a structural error is reported alone.
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web\nspec:\n  ports: [{port: x}]\n"
    )
    with pytest.raises(InputError) as caught:
        load_and_validate([tmp_path])
    assert [str(d) for d in caught.value.diagnostics] == [
        f"{tmp_path / 'a.yaml'}:6: Service/Web: spec.ports[0].port: expected an integer, got 'x'"
    ]


# ---------------------------------------------------------------- further API-server checks


def test_node_pod_cidrs_and_addresses() -> None:
    text = """
        apiVersion: v1
        kind: Node
        metadata:
          name: n1
        spec:
          podCIDR: 10.244.1.1/24
          podCIDRs: [10.244.1.0/24, "fd00::/129"]
        status:
          addresses:
            - {type: InternalIP, address: 192.168.56.300}
            - {type: Hostname, address: n1}
    """
    assert check(text) == [
        "x.yaml:6: Node/n1: spec.podCIDR: 10.244.1.1/24 has host bits set; the network address "
        "is 10.244.1.0/24",
        f"x.yaml:7: Node/n1: spec.podCIDRs[1]: {CIDR}",
        f"x.yaml:10: Node/n1: status.addresses[0].address: {IP}",
    ]


def test_node_names_in_pods_and_endpoints_are_subdomains() -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: Node_1\n"
    pod += "  containers: [{name: c}]\n"
    # A malformed name is reported as such, not also as a missing node.
    assert check_with_lab(pod) == [f"x.yaml:6: Pod/p: spec.nodeName: {SUBDOMAIN}"]
    text = endpoint_slice(
        "addressType: IPv4\nendpoints:\n  - addresses: [10.0.0.1]\n    nodeName: Node_1\n"
    )
    assert check(text) == [f"x.yaml:9: EndpointSlice/web-1: endpoints[0].nodeName: {SUBDOMAIN}"]


def test_lab_name_is_a_dns1123_label() -> None:
    text = lab(NODES).replace("name: lab", "name: My_Lab", 1)
    assert check(text) == [f"x.yaml:4: Lab/My_Lab: metadata.name: {LABEL}"]


def test_health_check_node_port_range() -> None:
    text = service("""
        type: LoadBalancer
        externalTrafficPolicy: Local
        healthCheckNodePort: 70000
        ports: [{port: 80}]
    """)
    assert check(text) == [f"x.yaml:8: Service/web: spec.healthCheckNodePort: {PORT_RANGE}"]


# -- pod DNS fields (hostname, subdomain, hostAliases, dnsPolicy, dnsConfig) ---------


def pod_with(spec: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
        + "  containers: [{name: c, image: busybox}]\n"
    )


def test_valid_dns_fields_pass() -> None:
    assert (
        check(
            pod_with(
                """\
                hostname: h1
                subdomain: sub
                setHostnameAsFQDN: true
                hostAliases: [{ip: 10.1.2.3, hostnames: [foo.local, bar]}]
                dnsPolicy: None
                dnsConfig:
                  nameservers: [1.2.3.4, "2001:db8::1"]
                  searches: [ns1.svc.cluster.local, abs.example.]
                  options: [{name: ndots, value: "2"}, {name: edns0}]
                """
            )
        )
        == []
    )


def test_dns_policy_must_be_one_the_api_server_knows() -> None:
    assert check(pod_with("dnsPolicy: ClusterFirstWithHostnet\n")) == [
        'x.yaml:6: Pod/p: spec.dnsPolicy: Unsupported value: "ClusterFirstWithHostnet": '
        'supported values: "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"'
    ]


def test_dns_policy_none_needs_a_dns_config_with_a_nameserver() -> None:
    assert check(pod_with("dnsPolicy: None\n")) == [
        "x.yaml:5: Pod/p: spec.dnsConfig: Required value: must provide `dnsConfig` when "
        "`dnsPolicy` is None"
    ]
    assert check(pod_with("dnsPolicy: None\ndnsConfig: {searches: [a.example]}\n")) == [
        "x.yaml:7: Pod/p: spec.dnsConfig.nameservers: Required value: must provide at least "
        "one DNS nameserver when `dnsPolicy` is None"
    ]


def test_dns_config_limits_and_values() -> None:
    searches = ", ".join(f"s{i}.example" for i in range(33))
    got = check(
        pod_with(
            f"""\
            dnsConfig:
              nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, not-an-ip]
              searches: [{searches}, Bad_Domain]
              options: [{{value: "1"}}]
            """
        )
    )
    assert got[0] == (
        "x.yaml:7: Pod/p: spec.dnsConfig.nameservers: Invalid value: [1.1.1.1 2.2.2.2 3.3.3.3 "
        "not-an-ip]: must not have more than 3 nameservers"
    )
    assert (
        got[1]
        == f'x.yaml:7: Pod/p: spec.dnsConfig.nameservers[3]: Invalid value: "not-an-ip": {IP}'
    )
    assert got[2].startswith("x.yaml:8: Pod/p: spec.dnsConfig.searches: Invalid value: [s0.example")
    assert got[2].endswith(": must not have more than 32 search paths")
    assert (
        got[3]
        == f'x.yaml:8: Pod/p: spec.dnsConfig.searches[33]: Invalid value: "Bad_Domain": {SUBDOMAIN}'
    )
    assert got[4] == (
        "x.yaml:9: Pod/p: spec.dnsConfig.options[0]: Required value: Option.Name must not be empty"
    )
    assert len(got) == 5


def test_search_list_longer_than_2048_characters_is_rejected() -> None:
    long = ", ".join("a" * 63 + f".d{i:02d}" for i in range(31))
    got = check(pod_with(f"dnsConfig: {{searches: [{long}]}}\n"))
    assert len(got) == 1
    assert got[0].endswith(
        "must not have more than 2048 characters (including spaces) in the search list"
    )


def test_hostname_subdomain_and_host_aliases_are_checked() -> None:
    got = check(
        pod_with(
            """\
            hostname: Web_1
            subdomain: sub.domain
            hostAliases: [{ip: 10.0.0.300, hostnames: [ok, Not_OK]}]
            """
        )
    )
    assert got == [
        f'x.yaml:6: Pod/p: spec.hostname: Invalid value: "Web_1": {LABEL}',
        'x.yaml:7: Pod/p: spec.subdomain: Invalid value: "sub.domain": must not contain dots',
        f'x.yaml:8: Pod/p: spec.hostAliases[0].hostnames[1]: Invalid value: "Not_OK": {SUBDOMAIN}',
        f'x.yaml:8: Pod/p: spec.hostAliases[0].ip: Invalid value: "10.0.0.300": {IP}',
    ]


# kubeadm's DNS address: the 10th of the primary service CIDR, either family
# (cmd/kubeadm/app/constants GetDNSIP).
@pytest.mark.parametrize(
    ("service_cidr", "dns"),
    [
        (None, "10.96.0.10"),
        ("10.100.0.0/16", "10.100.0.10"),
        ("fd00:10:96::/112", "fd00:10:96::a"),
        ("fd00:10:96::/112,10.96.0.0/12", "fd00:10:96::a"),
        ("10.96.0.0/12,fd00:10:96::/112", "10.96.0.10"),
    ],
)
def test_cluster_dns_defaults_to_the_10th_address_of_the_primary_service_cidr(
    service_cidr: str | None, dns: str
) -> None:
    spec: dict[str, object] = {"nodes": [{"name": "node-1", "underlayIP": "192.168.56.11"}]}
    if service_cidr is not None:
        spec["serviceCIDR"] = service_cidr
    lab = Lab.model_validate({"metadata": {"name": "x"}, "spec": spec})
    assert lab.spec.cluster_dns == dns


def test_a_cluster_dns_set_by_hand_is_kept() -> None:
    spec = {
        "serviceCIDR": "fd00:10:96::/112",
        "clusterDNS": "fd00:10:96::53",
        "nodes": [{"name": "node-1", "underlayIP": "fd00:56::11"}],
    }
    lab = Lab.model_validate({"metadata": {"name": "x"}, "spec": spec})
    assert lab.spec.cluster_dns == "fd00:10:96::53"


@pytest.mark.parametrize(
    ("lifecycle", "message"),
    [
        ("{preStop: {sleep: a-string}}", "lifecycle.preStop.sleep: must be an object"),
        ("{preStop: {sleep: {seconds: -1}}}", "seconds: must be an integer of at least 0"),
        ("{preStop: {}}", "lifecycle.preStop: must specify a handler type"),
        (
            "{postStart: {exec: {command: [x]}, sleep: {seconds: 1}}}",
            "lifecycle.postStart.sleep: may not specify more than 1 handler type",
        ),
        ("[hook]", "lifecycle: must be an object"),
    ],
)
def test_lifecycle_hooks_are_checked_as_kubernetes_validates_them(
    lifecycle: str, message: str
) -> None:
    text = f"""
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{{name: c, lifecycle: {lifecycle}}}]
    """
    (got,) = check(textwrap.dedent(text))
    assert message in got


def test_a_sleep_pre_stop_hook_is_valid() -> None:
    text = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: p
        spec:
          containers: [{name: c, lifecycle: {preStop: {sleep: {seconds: 5}}}}]
    """
    assert check(textwrap.dedent(text)) == []
