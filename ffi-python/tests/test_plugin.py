"""The pytest plugin: fixtures for a user's own manifests, assertions that explain their
failures in a line and a path, and hide their own frames."""

import pathlib

import pytest

import podnet
from podnet.pytest import (
    assert_dropped_by,
    assert_lands_on,
    assert_not_reachable,
    assert_reachable,
    assert_server_sees,
)

SHOP = pathlib.Path(__file__).resolve().parents[2] / "core" / "tests" / "fixtures" / "shop"


def test_assertions_pass_on_what_kube_proxy_does(seed_cluster):
    # default/web selects pod1 and pod3; each is a possible endpoint.
    outcomes = assert_lands_on(seed_cluster, "pod/default/pod2", "svc/default/web:http", ["pod/default/pod1", "pod/default/pod3"])
    assert abs(sum(t.probability or 0 for t in outcomes) - 1.0) < 1e-9
    # Pod to Service inside the cluster CIDR: DNAT only, the endpoint sees the pod's address.
    assert_server_sees(seed_cluster, "pod/default/pod2", "svc/default/web:http", "10.244.1.3")
    # With no ready endpoint kube-proxy REJECTs in filter KUBE-SERVICES ("has no endpoints").
    seed_cluster.set_ready("pod/default/pod1", False)
    seed_cluster.set_ready("pod/default/pod3", False)
    t = assert_dropped_by(seed_cluster, "pod/default/pod2", "svc/default/web:http", "svc/default/web:http")
    assert t.disposition == "rejected"
    assert_dropped_by(seed_cluster, "pod/default/pod2", "svc/default/web:http", "KUBE-SERVICES")
    assert_not_reachable(seed_cluster, "pod/default/pod2", "svc/default/web:http", reason="rule")


def test_a_failed_assertion_is_one_line_and_a_path_without_helper_frames(pytester):
    pytester.makepyfile(
        """
        from podnet.pytest import assert_reachable, assert_dropped_by, assert_lands_on

        def test_404(seed_cluster):
            assert_reachable(seed_cluster, "host/internet", "http://203.0.113.200/nothere")

        def test_wrong_rule(seed_cluster):
            assert_dropped_by(seed_cluster, "pod/default/pod2", "10.244.9.9:80", "KUBE-FIREWALL")

        def test_wrong_pods(seed_cluster):
            assert_lands_on(seed_cluster, "pod/default/pod2", "svc/default/web:http", ["pod/default/pod4"])
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*host/internet cannot reach http://203.0.113.200/nothere: rejected (http_no_route: lb/default/shop: the ALB has no rule for Host 203.0.113.200 path /nothere*",
            "*  path: host/internet eth0 → igw inet0 *→ lb/default/shop eth0",
            "*pod/default/pod2 -> 10.244.9.9:80 was not stopped by KUBE-FIREWALL: dropped (no-route: no route to 10.244.9.9)",
            # (fnmatch reads [...] as a character class: the brackets are matched by ?)
            "*pod/default/pod2 -> svc/default/web:http lands on ?'pod/default/pod1', 'pod/default/pod3'?, not ?'pod/default/pod4'?",
        ]
    )
    out = result.stdout.str()
    assert "podnet/pytest.py" not in out and "__tracebackhide__" not in out
    assert "packet 1" not in out, "no hop dump"


def test_podnet_cluster_loads_the_users_manifests(pytester):
    pytester.makepyfile(
        """
        from podnet.pytest import assert_reachable

        def test_shop(podnet_cluster):
            c = podnet_cluster()
            assert_reachable(c, "pod/shop/frontend-7d9f8c6b5-abcde", "svc/shop/backend:api")

        def test_missing(podnet_cluster):
            podnet_cluster("/nonexistent/manifests")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", f"--podnet-manifests={SHOP}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cannot load /nonexistent/manifests: *"])
