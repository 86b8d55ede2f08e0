"""Bad input from Python raises the documented exception with a useful message."""

import pytest

import podnet


def test_unknown_names_raise_notfound(seed_cluster):
    with pytest.raises(podnet.NotFound, match="no pod named 'pod/default/nope'"):
        seed_cluster.trace("pod/default/nope", "10.244.1.3:8080")
    with pytest.raises(podnet.NotFound, match="nodes: node1, node2, node3"):
        seed_cluster.iptables_save("node9")
    with pytest.raises(podnet.NotFound, match="svc/default/nope"):
        seed_cluster.trace("pod/default/pod1", "svc/default/nope:80")
    with pytest.raises(podnet.NotFound):
        seed_cluster.set_sysctl("node1", "net.ipv4.nope", 1)
    assert issubclass(podnet.NotFound, podnet.Error)


def test_bad_values_raise_invalidinput(seed_cluster):
    with pytest.raises(podnet.InvalidInput, match="proto must be"):
        seed_cluster.trace("pod/default/pod1", "10.244.1.3:8080", proto="sctp-ish")
    with pytest.raises(podnet.InvalidInput, match="sport must be a port"):
        seed_cluster.trace("pod/default/pod1", "10.244.1.3:8080", sport=70000)
    with pytest.raises(podnet.InvalidInput):
        seed_cluster.advance(seconds=-1)
    with pytest.raises(podnet.InvalidInput, match="rounds must be at least 1"):
        seed_cluster.trace("pod/default/pod1", "10.244.1.3:8080", rounds=0)
    # Kubernetes spells protocols in capitals: accepted.
    assert seed_cluster.trace("pod/default/pod2", "10.244.1.2:8080", proto="TCP").completed
    # A protocol that contradicts the named port is refused, not run as another protocol.
    with pytest.raises(podnet.InvalidInput, match="implies TCP, but UDP was asked for"):
        seed_cluster.trace("pod/default/pod2", "svc/default/web:http", proto="udp")
    with pytest.raises(podnet.InvalidInput, match="IP:PORT"):
        seed_cluster.trace("pod/default/pod1", "10.244.1.3")
    with pytest.raises(podnet.InvalidInput, match="unknown proxy mode .userspace."):
        podnet.Cluster.seed(proxy_mode="userspace")


def test_wrong_types_raise_typeerror(seed_cluster):
    with pytest.raises(TypeError):
        seed_cluster.trace(42, "10.244.1.3:8080")
    with pytest.raises(TypeError):
        seed_cluster.set_hairpin("pod/default/pod1", "yes")
    with pytest.raises(TypeError):
        seed_cluster.trace_many(["not a tuple"])
