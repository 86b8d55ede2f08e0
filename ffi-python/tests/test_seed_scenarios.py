"""Every seed scenario through the binding, asserting on what the article says happens."""

import json

import pytest

import podnet
from podnet.pytest import assert_not_reachable, assert_reachable


def test_container_to_container_over_localhost(seed_cluster):
    t = assert_reachable(seed_cluster, "pod/default/pod1", "127.0.0.1:8080")
    assert t.delivered_to == "pod/default/pod1"
    assert t.server_saw.startswith("127.0.0.1:")
    assert {h.device for h in t.hops} == {"lo"}


def test_pod_to_pod_same_node_is_bridged(seed_cluster):
    t = assert_reachable(seed_cluster, "pod/default/pod1", "pod/default/pod2:8080")
    assert t.delivered_to == "pod/default/pod2"
    assert t.server_saw == f"10.244.1.2:{t.client.split(':')[1]}"
    assert t.reply_from == "10.244.1.3:8080"
    syn = next(h.packet for h in t.hops if h.action == "tx" and h.before and h.before["proto"] == "tcp")
    places = [(h.netns, h.device, h.action) for h in t.hops if h.packet == syn]
    assert places[0] == ("pod/default/pod1", "eth0", "tx")
    assert ("node1", "veth0", "rx") in places
    assert places[-1] == ("pod/default/pod2", "eth0", "rx")
    assert not any(a == "route" for _, _, a in places)
    assert "dev veth1 master cbr0" in seed_cluster.fdb("node1")


def test_pod_to_pod_across_nodes_is_routed_by_the_vpc(seed_cluster):
    t = assert_reachable(seed_cluster, "pod/default/pod1", "pod/default/pod3:8080")
    routes = [h.detail for h in t.hops if h.action == "route" and h.direction == "request"]
    assert "route 10.244.2.2 via 192.168.0.254 dev eth0: forward" in routes
    assert "route 10.244.2.2 via 192.168.0.2 dev vpc0: forward" in routes
    assert not any(h.action == "nat" for h in t.hops)


@pytest.mark.parametrize("proto,port", [("tcp", "http"), ("udp", "udp")])
def test_pod_to_service_is_dnated_and_replies_come_from_the_vip(seed_cluster, proto, port):
    t = assert_reachable(seed_cluster, "pod/default/pod2", f"svc/default/web:{port}", proto=proto)
    assert t.delivered_to in ("pod/default/pod1", "pod/default/pod3")
    assert t.server_saw.startswith("10.244.1.3:")
    assert t.reply_from == "10.96.0.10:80"
    dnat = next(h for h in t.hops if h.action == "nat" and h.detail.startswith("DNAT"))
    assert (dnat.node, dnat.device, dnat.hook) == ("node1", "cbr0", "PREROUTING")
    assert dnat.before["dst"] == "10.96.0.10" and dnat.after["dst"] in ("10.244.1.2", "10.244.2.2")
    assert any(h.origin == f"svc/default/web:{port}" for h in t.hops)
    assert "dst=10.96.0.10" in seed_cluster.conntrack("node1")


def test_trace_json_equals_the_golden_files(golden_dir):
    for sid, *_ in podnet.scenarios():
        ours = podnet.golden_trace(sid).to_json() + "\n"
        assert ours == (golden_dir / f"{sid}.json").read_text(), sid


def test_to_json_is_the_documented_schema(seed_cluster):
    t = seed_cluster.trace("pod/default/pod1", "10.244.2.2:8080", proto="udp")
    d = json.loads(t.to_json())
    assert d["schema"] == 1 and d["disposition"] == "delivered" and d["proto"] == "udp"
    assert len(d["hops"]) == len(t.hops)


def test_bridge_nf_off_lets_a_same_node_reply_escape_reverse_nat():
    # Find a seed where pod2's first pick is pod1 (same node), then turn br_netfilter off.
    for seed in range(100):
        c = podnet.Cluster.seed(seed=seed)
        if c.trace("pod/default/pod2", "svc/default/web:udp", proto="udp", dry_run=True).delivered_to == "pod/default/pod1":
            break
    c = podnet.Cluster.seed(seed=seed)
    c.set_sysctl("node1", "net.bridge.bridge-nf-call-iptables", 0)
    t = c.trace("pod/default/pod2", "svc/default/web:udp", proto="udp")
    assert t.reply_from == "10.244.1.2:8080"


def test_a_full_conntrack_table_drops_new_flows_with_the_kernels_message():
    c = podnet.Cluster.seed()
    c.set_sysctl("node1", "net.netfilter.nf_conntrack_max", 1)
    assert c.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", sport=40001).completed
    t = c.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", sport=40002)
    assert t.disposition == "dropped"
    assert t.reason == "conntrack-full"
    assert t.reason_text == "nf_conntrack: table full, dropping packet"
    assert "sport=40002" not in c.conntrack("node1")
    # One bucket: the early drop finds the unassured entry and deletes it.
    c.set_sysctl("node1", "net.netfilter.nf_conntrack_buckets", 1)
    assert c.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", sport=40003).completed
    assert "sport=40001" not in c.conntrack("node1")


def test_unready_endpoints_leave_and_an_empty_service_rejects(seed_cluster):
    seed_cluster.set_ready("pod/default/pod1", False)
    seed_cluster.set_ready("pod/default/pod3", False)
    t = assert_not_reachable(seed_cluster, "pod/default/pod2", "svc/default/web:http", reason="rule")
    assert t.disposition == "rejected"
    assert t.reply_from == "10.244.1.1"


def test_trace_many_returns_traces_without_hops(seed_cluster):
    res = seed_cluster.trace_many([("pod/default/pod2", "svc/default/web:udp", None)] * 20)
    assert len(res) == 20
    assert all(isinstance(r, podnet.Trace) and r.hops == [] and r.path is None for r in res)
    assert all(r.disposition == "delivered" and r.completed and r.proto == "udp" for r in res)
    assert {r.delivered_to for r in res} == {"pod/default/pod1", "pod/default/pod3"}


def test_dry_run_changes_nothing(seed_cluster):
    before = seed_cluster.conntrack("node1")
    seed_cluster.trace("pod/default/pod2", "svc/default/web:http", dry_run=True)
    assert seed_cluster.conntrack("node1") == before


def test_advance_ages_the_fdb(seed_cluster):
    seed_cluster.trace("pod/default/pod1", "pod/default/pod2:8080")
    assert "dev veth0 master cbr0\n" in seed_cluster.fdb("node1")
    seed_cluster.advance(seconds=301)
    assert "dev veth0 master cbr0\n" not in seed_cluster.fdb("node1")


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_every_seed_scenario_in_both_proxy_modes(mode):
    for sid, figures, src, dst, proto in podnet.scenarios():
        c = podnet.Cluster.seed(proxy_mode=mode)
        t = assert_reachable(c, src, dst, proto=proto)
        if "svc/" in dst:
            assert t.reply_from == "10.96.0.10:80", (mode, sid)
    c = podnet.Cluster.seed(proxy_mode="ipvs")
    assert "TCP  10.96.0.10:80 rr" in c.ipvsadm("node1")
    assert "KUBE-CLUSTER-IP" in c.ipset("node1")


def test_trace_all_and_reachability(seed_cluster):
    outcomes = seed_cluster.trace_all("pod/default/pod2", "10.96.0.10:80")
    assert sorted(t.delivered_to for t in outcomes) == ["pod/default/pod1", "pod/default/pod3"]
    assert abs(sum(t.probability for t in outcomes) - 1.0) < 1e-9
    m = seed_cluster.reachability(["pod/default/pod1", "pod/default/pod2"], ["svc/default/web:http", "203.0.113.10:80"])
    assert [[t.completed for t in row] for row in m] == [[True, True], [True, True]]


def test_deleting_a_pod_or_a_service(seed_cluster):
    seed_cluster.delete("pod/default/pod3")
    outcomes = seed_cluster.trace_all("pod/default/pod2", "svc/default/web:http")
    assert [t.delivered_to for t in outcomes] == ["pod/default/pod1"]
    with pytest.raises(podnet.NotFound):
        seed_cluster.trace("pod/default/pod3", "10.244.1.2:8080")
    seed_cluster.delete("svc/default/web")
    assert "10.96.0.10" not in seed_cluster.iptables_save("node1")
    with pytest.raises(podnet.InvalidInput, match="svc/NS/NAME, pod/NS/NAME or netpol/NS/NAME"):
        seed_cluster.delete("node/node1")


def test_pcapng_of_a_traced_flow(seed_cluster):
    t = seed_cluster.trace("pod/default/pod2", "svc/default/web:http", capture=True)
    data = t.pcapng()
    assert data[:4] == b"\x0a\x0d\x0d\x0a" and data[8:12] == b"\x4d\x3c\x2b\x1a"
    assert b"node1/veth1" in data
    assert bytes([10, 96, 0, 10]) in data  # the ClusterIP before the DNAT


def test_rounds_reuse_one_flow_and_its_conntrack_entry(seed_cluster):
    t = seed_cluster.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", rounds=20)
    assert t.completed and t.answered == 20
    svc_walks = {h.packet for h in t.hops if h.action == "rule" and (h.chain or "").startswith("KUBE-SVC-")}
    assert len(svc_walks) == 1
    flows = [l for l in seed_cluster.conntrack("node1").splitlines() if "dport=80 " in l]
    assert len(flows) == 1
    with pytest.raises(podnet.InvalidInput, match="rounds"):
        seed_cluster.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", rounds=0)
