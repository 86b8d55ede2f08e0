"""Adding objects to a running cluster with `Cluster.add`."""

import pytest

import podnet

ECHO = """\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: tcp, port: 7000, targetPort: 7007, protocol: TCP}
"""


def test_add_a_service_and_reach_it_by_name(seed_cluster):
    report = seed_cluster.add(ECHO)
    assert report == {"loaded": ["Service/default/echo"], "skipped": [], "inferred": [], "warnings": []}
    landed = set()
    for _ in range(12):
        t = seed_cluster.trace("pod/default/pod2", "svc/default/echo:tcp")
        assert t.completed, str(t)
        assert t.server_saw is not None and t.server_saw.startswith("10.244.1.3:")
        landed.add(t.delivered_to)
    assert landed == {"pod/default/pod1", "pod/default/pod3"}


def test_add_a_pod_without_status(seed_cluster):
    seed_cluster.add(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web2, labels: {app: web}}\n"
        "spec:\n  nodeName: node2\n  containers: [{name: web, image: nginx, ports: [{containerPort: 8080}]}]\n"
    )
    t = seed_cluster.trace("pod/default/pod2", "pod/default/web2:8080")
    assert t.delivered_to == "pod/default/web2" and t.completed
    assert "10.244.2.4:8080" in seed_cluster.kube_proxy_rules("node1")


def test_add_refusals_raise_the_cluster_exception_with_the_place(seed_cluster):
    clash = "apiVersion: v1\nkind: Service\nmetadata: {name: clash}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n"
    with pytest.raises(podnet.AddressInUse, match="10.96.0.10 is already allocated") as e:
        seed_cluster.add(clash)
    assert e.value.document == 1 and e.value.file == "<input>"
    with pytest.raises(podnet.ParseError, match="document 1, line 3, column 1"):
        seed_cluster.add("kind: Service\nmetadata: [\n")
    with pytest.raises(TypeError):
        seed_cluster.add(42)  # type: ignore[arg-type]
