"""The Python API documents and types itself, and tells the user what it loaded."""

import inspect
import pathlib

import pytest

import podnet

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOP = ROOT / "core" / "tests" / "fixtures" / "shop"

NETPOL = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-ingress, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress: []
"""


def test_every_public_class_method_and_property_has_its_own_docstring():
    for cls in (podnet.Cluster, podnet.Trace, podnet.Hop):
        assert cls.__doc__ and len(cls.__doc__) > 20, cls
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            assert member.__doc__, f"{cls.__name__}.{name} has no docstring"
    # Each method documents itself, not its neighbour.
    assert "Adds Kubernetes objects" in podnet.Cluster.add.__doc__
    assert "Deletes a Service" in podnet.Cluster.delete.__doc__
    assert "Deletes" not in podnet.Cluster.add.__doc__


def test_from_files_takes_a_path_a_string_or_a_list():
    for paths in (SHOP, str(SHOP), [SHOP], [str(SHOP / f) for f in ("00-podnet.yaml", "10-nodes.yaml", "20-shop.yaml")]):
        c = podnet.Cluster.from_files(paths)
        assert {p["name"] for p in c.pods()} >= {"frontend-7d9f8c6b5-abcde", "backend-5c4b9d7f8-aaaaa"}
    with pytest.raises(podnet.InvalidInput, match="paths is empty"):
        podnet.Cluster.from_files([])
    with pytest.raises(TypeError, match="paths must be a path, a string, or a list"):
        podnet.Cluster.from_files(42)


def test_the_load_report_and_warnings_say_what_is_not_modelled():
    docs = [(SHOP / f).read_text() for f in ("00-podnet.yaml", "10-nodes.yaml", "20-shop.yaml")]
    c = podnet.Cluster.from_yaml("\n---\n".join(docs + [NETPOL]))
    report = c.load_report
    assert "Service/shop/backend" in report["loaded"]
    assert any(s.startswith("CiliumNetworkPolicy/shop/backend-ingress: not modelled") for s in report["skipped"]), report
    t = c.trace("pod/shop/frontend-7d9f8c6b5-abcde", "svc/shop/backend:api")
    assert t.disposition == "delivered"
    assert len(t.warnings) == 1 and "CiliumNetworkPolicy/shop/backend-ingress" in t.warnings[0]
    assert t.warnings[0].startswith(f"{t.delivered_to} is selected by")
    # Objects added later join the report.
    c.add("apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
    assert "Namespace/extra" in c.load_report["loaded"]
    assert podnet.Cluster.seed().load_report == {"loaded": [], "skipped": [], "inferred": [], "warnings": []}


def test_listing_what_was_loaded():
    c = podnet.Cluster.seed()
    assert repr(c) == "<podnet.Cluster: 3 nodes, 4 pods, 2 Services, kube-proxy iptables>"
    assert [(n["name"], n["ip"], n["pod_cidr"]) for n in c.nodes()][0] == ("node1", "192.168.0.1", "10.244.1.0/24")
    pod2 = next(p for p in c.pods() if p["name"] == "pod2")
    assert (pod2["ip"], pod2["node"], pod2["ready"], pod2["labels"]) == ("10.244.1.3", "node1", True, {"app": "client"})
    web = next(s for s in c.services() if s["name"] == "web")
    assert (web["type"], web["cluster_ip"]) == ("NodePort", "10.96.0.10")
    assert [(p["name"], p["protocol"], p["port"], p["target_port"], p["node_port"]) for p in web["ports"]] == [
        ("http", "TCP", 80, 8080, 30081),
        ("udp", "UDP", 80, 8080, 30082),
    ]
    assert "NAMESPACE   NAME   READY   STATUS    IP           NODE" in c.get("pods")
    with pytest.raises(podnet.InvalidInput, match="unknown resource 'deployments'"):
        c.get("deployments")


def test_conntrack_entries_are_values_of_what_conntrack_prints():
    c = podnet.Cluster.seed()
    t = c.trace("pod/default/pod2", "svc/default/web:udp")
    entries = c.conntrack_entries("node1")
    assert len(entries) == 1, entries
    e = entries[0]
    assert (e["proto"], e["state"], e["unreplied"]) == ("udp", None, False)
    assert e["original"] == {"src": "10.244.1.3", "dst": "10.96.0.10", "sport": int(t.client.split(":")[1]), "dport": 80}
    # The reply comes from the endpoint kube-proxy picked (DNAT), to the client.
    assert e["reply"]["src"] == {"pod/default/pod1": "10.244.1.2", "pod/default/pod3": "10.244.2.2"}[t.delivered_to]
    line = c.conntrack("node1").splitlines()[0]
    assert line.startswith(f"udp      17 {e['timeout']} src=10.244.1.3 dst=10.96.0.10")


def test_pcapng_without_capture_is_an_error_not_an_empty_file():
    c = podnet.Cluster.seed()
    with pytest.raises(podnet.InvalidInput, match="capture=True"):
        c.trace("pod/default/pod1", "pod/default/pod2:8080").pcapng()
    assert c.trace("pod/default/pod1", "pod/default/pod2:8080", capture=True).pcapng()[:4] == b"\x0a\x0d\x0d\x0a"


def test_the_path_is_one_line():
    t = podnet.Cluster.seed().trace("pod/default/pod1", "pod/default/pod2:8080")
    assert t.path == "pod1 → node1 veth0 → cbr0 → pod2"
    assert t.brief().splitlines()[1] == "  path: pod1 → node1 veth0 → cbr0 → pod2"


def test_your_own_cluster_is_inferred_and_its_errors_name_the_field():
    eks = ROOT / "core/tests/fixtures/eks/cluster.yaml"
    c = podnet.Cluster.from_files(eks)
    report = c.load_report
    assert any(s.startswith("node subnets 10.0.1.0/24 (router 10.0.1.1;") for s in report["inferred"]), report
    assert report["warnings"] == []
    t = c.trace("pod/shop/frontend-7d9c6b7f5-abcde", "svc/shop/backend:api")
    assert t.disposition == "delivered" and t.reply_from == "172.20.12.40:80"
    bad = eks.read_text().replace("port: 80, protocol: TCP, targetPort: api", "port: fourfortythree, protocol: TCP, targetPort: api")
    with pytest.raises(podnet.ParseError) as e:
        podnet.Cluster.from_yaml(bad)
    assert e.value.field == "items[6].spec.ports[0].port"
    assert e.value.line == bad.splitlines().index(next(l for l in bad.splitlines() if "fourfortythree" in l)) + 1
