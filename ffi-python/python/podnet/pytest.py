"""pytest plugin: fixtures and assertions for tests about what a cluster's network does.

Registered through the ``pytest11`` entry point, so installing podnet is enough::

    def test_frontend_reaches_backend(podnet_cluster):
        c = podnet_cluster("manifests/")          # kubectl get -A -o yaml output
        assert_reachable(c, "pod/shop/frontend-0", "svc/shop/backend:api")
        assert_lands_on(c, "pod/shop/frontend-0", "svc/shop/backend:api",
                        ["pod/shop/backend-0", "pod/shop/backend-1"])

Each assertion traces the flow and, when it fails, says why in one line followed by the
flow's path (the full hop list is one ``t.render()`` away), hiding its own frames from the
traceback. ``pytest --podnet-manifests PATH`` (or the ``podnet_manifests`` ini option) gives
``podnet_cluster()`` a default path.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, List, Optional, Sequence, Union

import pytest

from ._podnet import Cluster, Trace

__all__ = [
    "assert_allowed_by",
    "assert_dropped_by",
    "assert_lands_on",
    "assert_not_reachable",
    "assert_reachable",
    "assert_server_sees",
    "podnet_cluster",
    "seed_cluster",
]

StrPath = Union[str, "os.PathLike[str]"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--podnet-manifests`` and the ``podnet_manifests`` ini option."""
    parser.addoption(
        "--podnet-manifests",
        action="store",
        default=None,
        help="Kubernetes manifests (a file or directory) podnet_cluster() loads by default",
    )
    parser.addini("podnet_manifests", "Kubernetes manifests podnet_cluster() loads by default")


@pytest.fixture
def seed_cluster() -> Cluster:
    """A fresh reference cluster (the one ``podnet demo`` uses), seed 0."""
    return Cluster.seed()


@pytest.fixture
def podnet_cluster(request: pytest.FixtureRequest) -> Callable[..., Cluster]:
    """A factory: ``podnet_cluster(paths=None, proxy_mode=None, seed=None)`` loads manifests
    (a file, a directory, or a list of them; by default ``--podnet-manifests``) into a fresh
    ``Cluster``, and fails the test with podnet's message when they cannot be loaded."""

    def load(
        paths: Optional[Union[StrPath, Sequence[StrPath]]] = None,
        proxy_mode: Optional[str] = None,
        seed: Optional[int] = None,
    ) -> Cluster:
        __tracebackhide__ = True
        if paths is None:
            paths = request.config.getoption("podnet_manifests") or request.config.getini("podnet_manifests")
        if not paths:
            pytest.fail("podnet_cluster() needs manifests: pass a path or run pytest --podnet-manifests PATH")
        try:
            return Cluster.from_files(paths, proxy_mode=proxy_mode, seed=seed)
        except Exception as e:  # every podnet error names the place and the fix
            pytest.fail(f"cannot load {paths}: {e}")

    return load


def _why(t: Trace) -> str:
    """One line on why a trace was not delivered, then its path and warnings."""
    cause: str = t.disposition
    if t.reason:
        cause += f" ({t.reason}: {t.reason_text})"
    elif t.delivered_to and not t.completed:
        cause = f"delivered to {t.delivered_to} but the exchange did not complete"
    lines: List[str] = [cause]
    if t.path:
        lines.append(f"  path: {t.path}")
    lines.extend(f"  warning: {w}" for w in t.warnings)
    return "\n".join(lines)


def assert_reachable(
    c: Cluster,
    src: str,
    dst: str,
    proto: Optional[str] = None,
    sport: Optional[int] = None,
    headers: Optional[dict[str, str]] = None,
) -> Trace:
    """Traces ``src -> dst`` and fails unless a server got the request and the exchange
    completed (an HTTP error an ALB or ingress controller answered itself is not reachable).
    Returns the trace."""
    __tracebackhide__ = True
    t = c.trace(src, dst, proto=proto, sport=sport, headers=headers)
    if not (t.disposition == "delivered" and t.completed):
        pytest.fail(f"{src} cannot reach {dst}: {_why(t)}", pytrace=False)
    return t


def assert_not_reachable(
    c: Cluster, src: str, dst: str, proto: Optional[str] = None, reason: Optional[str] = None
) -> Trace:
    """Traces ``src -> dst`` and fails if a server got the request, or (with ``reason``) if it
    was stopped for another reason code. Returns the trace."""
    __tracebackhide__ = True
    t = c.trace(src, dst, proto=proto)
    if t.disposition == "delivered":
        pytest.fail(f"{src} reaches {dst} (delivered to {t.delivered_to})\n  path: {t.path}", pytrace=False)
    if reason is not None and t.reason != reason:
        pytest.fail(f"{src} -> {dst} was stopped for {t.reason!r}, not {reason!r}: {_why(t)}", pytrace=False)
    return t


def _deciders(t: Trace) -> List[str]:
    """What stopped the flow: the reason text, drop hops, and the rules that dropped or
    rejected (their chain, rule and the Kubernetes object behind them)."""
    out = [t.reason_text or ""]
    for h in t.hops:
        if h.action == "drop":
            out.append(h.detail)
        if h.action == "rule" and h.rule and ("-j DROP" in h.rule or "-j REJECT" in h.rule):
            out.extend([f"{h.chain} {h.rule}", h.origin or ""])
    return [s for s in out if s]


def _denying_policies(t: Trace) -> List[str]:
    """The NetworkPolicies (``netpol/NS/NAME``) named by the trace's policy drops: those that
    isolate the pod, none of which allowed the connection."""
    out: List[str] = []
    for h in t.hops:
        if h.action == "drop" and (h.reason or "").startswith("policy_denied_"):
            isolating = h.detail.split(" by ", 1)[-1].split(";", 1)[0]
            out.extend(n.strip() for n in isolating.split(","))
    return out


def assert_dropped_by(
    c: Cluster, src: str, dst: str, rule_or_policy: str, proto: Optional[str] = None
) -> Trace:
    """Traces ``src -> dst`` and fails unless it was stopped by what ``rule_or_policy`` names:
    a chain, part of a rule as ``iptables-save`` prints it, the object behind a rule
    (``svc/NS/NAME``), or a policy (``netpol/NS/NAME``). Returns the trace."""
    __tracebackhide__ = True
    t = c.trace(src, dst, proto=proto)
    if t.disposition == "delivered":
        pytest.fail(f"{src} -> {dst} was delivered to {t.delivered_to}, not stopped by {rule_or_policy}\n  path: {t.path}", pytrace=False)
    if rule_or_policy.startswith("netpol/"):
        # A policy is named exactly: netpol/shop/deny is not netpol/shop/deny-all.
        if rule_or_policy not in _denying_policies(t):
            pytest.fail(f"{src} -> {dst} was not stopped by {rule_or_policy}: {_why(t)}", pytrace=False)
        return t
    if not any(rule_or_policy in d for d in _deciders(t)):
        pytest.fail(f"{src} -> {dst} was not stopped by {rule_or_policy}: {_why(t)}", pytrace=False)
    return t


def assert_allowed_by(c: Cluster, src: str, dst: str, policy: str, proto: Optional[str] = None) -> Trace:
    """Traces ``src -> dst`` and fails unless it was delivered and the NetworkPolicy
    ``policy`` (``netpol/NS/NAME``) is one that allowed it at a pod's interface. Returns the
    trace."""
    __tracebackhide__ = True
    t = c.trace(src, dst, proto=proto)
    if t.disposition != "delivered":
        pytest.fail(f"{src} -> {dst} was not delivered: {_why(t)}", pytrace=False)
    allowed = [h.origin for h in t.hops if h.action == "policy"]
    if policy not in allowed:
        seen = ", ".join(o or "" for o in allowed) or "no policy (neither end is isolated)"
        pytest.fail(f"{src} -> {dst} was not allowed by {policy}; allowed by: {seen}", pytrace=False)
    return t


def assert_lands_on(
    c: Cluster, src: str, dst: str, pods: Iterable[str], proto: Optional[str] = None
) -> List[Trace]:
    """Enumerates every place ``src -> dst`` can land (``trace_all``) and fails unless the
    delivered ones are exactly ``pods`` (``pod/NS/NAME`` each). Returns the outcomes."""
    __tracebackhide__ = True
    outcomes = c.trace_all(src, dst, proto=proto)
    got = sorted({t.delivered_to for t in outcomes if t.delivered_to and t.disposition == "delivered"})
    want = sorted(set(pods))
    if got != want:
        lost = [t for t in outcomes if t.disposition != "delivered"]
        extra = f"; {len(lost)} outcome(s) not delivered, the first: {_why(lost[0])}" if lost else ""
        pytest.fail(f"{src} -> {dst} lands on {got}, not {want}{extra}", pytrace=False)
    return outcomes


def assert_server_sees(
    c: Cluster, src: str, dst: str, address: str, proto: Optional[str] = None
) -> Trace:
    """Traces ``src -> dst`` and fails unless the server saw the client as ``address`` (an IP,
    or ``IP:PORT``): whether SNAT or masquerade hid the client. Returns the trace."""
    __tracebackhide__ = True
    t = c.trace(src, dst, proto=proto)
    saw = t.server_saw
    if saw is None:
        pytest.fail(f"{src} -> {dst} reached no server: {_why(t)}", pytrace=False)
    seen = saw if ":" in address else saw.rsplit(":", 1)[0]
    if seen != address:
        pytest.fail(f"the server saw {src} as {saw}, not {address}\n  path: {t.path}", pytrace=False)
    return t
