"""The AWS VPC CNI variant of the reference cluster through Python."""

import pytest

import podnet


def test_every_seed_scenario_in_the_aws_profile():
    c = podnet.Cluster.seed(cni="aws-vpc")
    for sid, _title, src, dst, proto in podnet.scenarios():
        t = c.trace(src, dst, proto=proto)
        assert t.completed, f"{sid}: {t}"
    pod1 = c.trace("pod/default/pod2", "pod/default/pod1:8080").server_saw
    assert pod1 is not None and pod1.startswith("192.168.0.253:")


def test_enis_and_rules_are_visible():
    c = podnet.Cluster.seed(cni="aws-vpc")
    assert c.enis("node1").startswith("node1 m5.large: 2 of 3 ENIs")
    assert "512:\tfrom all to 192.168.0.254 lookup main" in c.ip_rules("node1")
    assert c.routes("pod/default/pod1").startswith("default via 169.254.1.1 dev eth0")
    with pytest.raises(podnet.InvalidInput, match="ENIs exist in the AWS VPC CNI profile only"):
        podnet.Cluster.seed().enis("node1")
    with pytest.raises(podnet.InvalidInput, match=r"unknown CNI .calico. \(bridge or aws-vpc\)"):
        podnet.Cluster.seed(cni="calico")


def test_an_exhausted_node_raises_address_exhausted():
    yaml = (
        "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\ncni: aws-vpc\ninstanceType: t3.small\n"
        "nodeSubnet: 10.0.0.0/24\nmaxPods: 50\n---\n"
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.20}]}\n"
    )
    c = podnet.Cluster.from_yaml(yaml)
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{k}}}\nspec: {{nodeName: n1, containers: [{{name: c, image: x}}]}}\n"
    for k in range(9):
        c.add(pod.format(k=k))
    report = c.add(pod.format(k=9))
    assert report["loaded"] == []
    assert report["skipped"][0].startswith("Pod/default/p9: pod pod/default/p9 stays ContainerCreating: failed to assign an IP address to container")
