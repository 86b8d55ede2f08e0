"""NetworkPolicy from Python: enforced at pods' interfaces, named in every verdict, listed per
pod, added and deleted at run time, and where it is enforced as a setting."""

import pytest

import podnet
from podnet.pytest import assert_allowed_by, assert_dropped_by, assert_reachable

DENY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: default}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
"""

ALLOW_CLIENT = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
"""


def test_a_denied_connection_names_the_policies_and_an_allowed_one_its_rule(seed_cluster):
    report = seed_cluster.add(DENY + "---" + ALLOW_CLIENT)
    assert report["loaded"] == ["NetworkPolicy/default/deny", "NetworkPolicy/default/api-from-client"]
    assert seed_cluster.network_policies() == ["netpol/default/deny", "netpol/default/api-from-client"]
    # pod1 (app=web) is not a client: pod4 (app=api) takes nothing from it.
    t = assert_dropped_by(seed_cluster, "pod/default/pod1", "svc/default/api:http", "netpol/default/deny")
    assert t.reason == "policy_denied_ingress"
    assert t.reason_text == (
        "pod default/pod4 is isolated for ingress by netpol/default/deny, netpol/default/api-from-client; "
        "no rule allows 10.244.1.2 → 10.244.2.3 TCP 8080"
    )
    drop = [h for h in t.hops if h.action == "drop"][0]
    assert (drop.node, drop.device, drop.reason) == ("node2", "veth1", "policy_denied_ingress")
    # A policy is named exactly.
    with pytest.raises(pytest.fail.Exception):
        assert_dropped_by(seed_cluster, "pod/default/pod1", "svc/default/api:http", "netpol/default/den")
    # pod2 (app=client) is allowed by the second policy's first rule.
    t = assert_allowed_by(seed_cluster, "pod/default/pod2", "svc/default/api:http", "netpol/default/api-from-client")
    hop = [h for h in t.hops if h.action == "policy"][0]
    assert hop.detail.endswith("10.244.1.3 → 10.244.2.3 TCP 8080 allowed by netpol/default/api-from-client spec.ingress[0]")
    assert hop.origin == "netpol/default/api-from-client"
    # Deleted at run time: everything passes again.
    seed_cluster.delete("netpol/default/deny")
    seed_cluster.delete("netpol/default/api-from-client")
    assert_reachable(seed_cluster, "pod/default/pod1", "svc/default/api:http")
    with pytest.raises(podnet.NotFound, match="no networkpolicy named 'netpol/default/deny'"):
        seed_cluster.delete("netpol/default/deny")


def test_policies_for_a_pod(seed_cluster):
    seed_cluster.add(DENY + "---" + ALLOW_CLIENT)
    s = seed_cluster.policies_for("pod/default/pod4")
    assert s == {
        "pod": "default/pod4",
        "policies": [
            {"name": "netpol/default/deny", "directions": ["ingress"]},
            {"name": "netpol/default/api-from-client", "directions": ["ingress"]},
        ],
        "ingress_isolated": True,
        "egress_isolated": False,
        "ingress": ["default/api-from-client spec.ingress[0]: from pods app=client of namespace default; ports TCP http"],
        "egress": [],
    }
    assert seed_cluster.policies_for("default/pod1")["policies"] == []


def test_where_policies_are_enforced_is_a_setting(seed_cluster):
    egress = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-out, namespace: default}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.96.0.0/12}}]
"""
    seed_cluster.add(egress)
    assert seed_cluster.policy_config == ("post-dnat", "allow")
    t = assert_dropped_by(seed_cluster, "pod/default/pod2", "svc/default/api:http", "netpol/default/client-out")
    assert t.reason == "policy_denied_egress"
    # Judged before kube-proxy's DNAT, the ClusterIP is in the allowed block.
    seed_cluster.set_policy_config(enforcement="pre-dnat")
    assert seed_cluster.policy_config == ("pre-dnat", "allow")
    assert_reachable(seed_cluster, "pod/default/pod2", "svc/default/api:http")
    seed_cluster.set_policy_config(enforcement="off")
    assert_reachable(seed_cluster, "pod/default/pod2", "pod/default/pod4:8080")
    with pytest.raises(podnet.InvalidInput, match="enforcement 'ebpf' is not post-dnat, pre-dnat or off"):
        seed_cluster.set_policy_config(enforcement="ebpf")  # type: ignore[arg-type]
