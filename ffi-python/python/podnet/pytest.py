"""pytest plugin: fixtures and assertions for tests about a cluster's network.

Registered through the ``pytest11`` entry point, so installing podnet is enough::

    def test_client_reaches_web(seed_cluster):
        assert_reachable(seed_cluster, "pod/default/pod2", "svc/default/web:http")
"""

from __future__ import annotations

from typing import Optional

import pytest

from ._podnet import Cluster, Trace

__all__ = ["assert_not_reachable", "assert_reachable", "seed_cluster"]


@pytest.fixture
def seed_cluster() -> Cluster:
    """A fresh reference cluster (the one ``podnet demo`` uses), seed 0."""
    return Cluster.seed()


def assert_reachable(c: Cluster, src: str, dst: str, proto: Optional[str] = None, sport: Optional[int] = None) -> Trace:
    """Traces src -> dst and fails with the readable trace unless the exchange completed."""
    t = c.trace(src, dst, proto=proto, sport=sport)
    if not (t.disposition == "delivered" and t.completed):
        pytest.fail(f"{src} cannot reach {dst}: {t.disposition} ({t.reason_text})\n{t.render(True)}")
    return t


def assert_not_reachable(c: Cluster, src: str, dst: str, proto: Optional[str] = None, reason: Optional[str] = None) -> Trace:
    """Traces src -> dst and fails unless the request was not delivered (optionally: for `reason`)."""
    t = c.trace(src, dst, proto=proto)
    if t.disposition == "delivered":
        pytest.fail(f"{src} unexpectedly reaches {dst} (delivered to {t.delivered_to})\n{t}")
    if reason is not None and t.reason != reason:
        pytest.fail(f"{src} -> {dst} failed for {t.reason!r}, not {reason!r}: {t.reason_text}\n{t}")
    return t
