"""Loading clusters from Kubernetes objects through the binding."""

import pathlib

import pytest

import podnet
from podnet.pytest import assert_reachable

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "core" / "tests" / "fixtures" / "shop"


def test_from_files_loads_a_kubectl_dump_and_traces():
    c = podnet.Cluster.from_files([str(FIXTURE)])
    t = assert_reachable(c, "pod/shop/frontend-7d9f8c6b5-abcde", "svc/shop/backend:api")
    assert t.delivered_to in ("pod/shop/backend-5c4b9d7f8-aaaaa", "pod/shop/backend-5c4b9d7f8-bbbbb")
    assert t.reply_from == "10.96.12.34:80"


def test_arguments_override_the_podnet_document():
    c = podnet.Cluster.from_files([str(FIXTURE)], proxy_mode="ipvs", seed=9)
    assert "TCP  10.96.12.34:80 rr" in c.ipvsadm("ip-10-0-0-11")


def test_malformed_yaml_raises_parseerror_with_location():
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 10.96.0.9\n  ports:\n  - port: eighty\n"
    with pytest.raises(podnet.ParseError) as e:
        podnet.Cluster.from_yaml(text)
    assert (e.value.line, e.value.column) == (7, 11)
    assert "spec.ports[0].port" in str(e.value)
    assert isinstance(e.value, podnet.Error)


def test_missing_files_raise_oserror():
    with pytest.raises(OSError, match="no such file"):
        podnet.Cluster.from_files(["/nonexistent/cluster.yaml"])


def test_import_iptables_and_drift():
    c = podnet.Cluster.seed()
    saved = c.iptables_save("node1")
    c.import_iptables("node1", saved.replace("COMMIT\n", "-A INPUT -j DROP\nCOMMIT\n", 1))
    assert c.iptables_drift("node1") == "*filter\n+ -A INPUT -j DROP\n"
    with pytest.raises(podnet.ParseError) as e:
        c.import_iptables("node1", "*filter\n-A NOPE -j ACCEPT\nCOMMIT\n")
    assert e.value.line == 2
