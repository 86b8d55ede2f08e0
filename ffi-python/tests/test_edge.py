"""The cloud edge from Python: kube-proxy's health checks and the load balancer's view."""

import pytest

import podnet
from podnet.pytest import assert_reachable

LOCAL_LB = """
apiVersion: v1
kind: Service
metadata: {name: api-local, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: 8080}
"""


def test_health_check_node_port_is_allocated_and_answers_per_node():
    c = podnet.Cluster.seed()
    c.add(LOCAL_LB)
    checks = {n: c.health_checks(n) for n in ("node1", "node2", "node3")}
    assert [len(v) for v in checks.values()] == [1, 1, 1]
    port = checks["node2"][0]["port"]
    assert 30000 <= port <= 32767
    assert checks["node2"][0]["local_endpoints"] == 1 and checks["node2"][0]["healthy"]
    assert not checks["node1"][0]["healthy"]
    ok = c.trace("host/internet", f"203.0.113.2:{port}", proto="http")
    assert ok.http_status == 200
    bad = c.trace("host/internet", f"203.0.113.1:{port}", proto="http")
    assert bad.http_status == 503


def test_log_rules_write_kernel_lines_and_counters_count():
    c = podnet.Cluster.seed()
    c.iptables_restore("node2", '*mangle\n-A PREROUTING -p udp --dport 8080 -j LOG --log-prefix "udp: "\nCOMMIT\n')
    t = c.trace("pod/default/pod2", "pod/default/pod3:8080", proto="udp")
    assert t.completed
    logged = [h for h in t.hops if h.action == "log"]
    assert logged and logged[0].detail.startswith("kernel: udp: IN=eth0 OUT= MAC=")
    assert "PROTO=UDP" in c.kernel_log("node2")
    counted = c.iptables_save("node2", counters=True)
    assert '[1:' in next(l for l in counted.splitlines() if "--log-prefix" in l)


def test_an_alb_404_is_not_reachability():
    c = podnet.Cluster.seed()
    # http:// means HTTP without proto=; the ALB has no rule for /nothere and answers itself.
    t = c.trace("host/internet", "http://203.0.113.200/nothere")
    assert (t.http_status, t.http_from) == (404, "lb/default/shop")
    assert t.disposition == "rejected" and t.reason == "http_no_route"
    assert t.delivered_to is None
    with pytest.raises(pytest.fail.Exception, match="cannot reach"):
        assert_reachable(c, "host/internet", "http://203.0.113.200/nothere")
    ok = assert_reachable(c, "host/internet", "http://203.0.113.200/api/orders")
    assert ok.http_from == ok.delivered_to == "pod/default/pod4"
