"""Type-checked with mypy --strict against the shipped stubs (not collected by pytest)."""

from typing import List, Optional

import podnet


def reachable(c: podnet.Cluster, src: str, dst: str) -> bool:
    t: podnet.Trace = c.trace(src, dst, proto="tcp", sport=None, headers={"Host": "x"}, dry_run=True)
    hops: List[podnet.Hop] = t.hops
    first: Optional[str] = hops[0].device if hops else None
    return t.disposition == "delivered" and t.completed and first is not None


c = podnet.Cluster.seed(proxy_mode="iptables", seed=0)
ok: bool = reachable(c, "pod/default/pod1", "pod/default/pod2:8080")
text: str = c.iptables_save("node1") + c.conntrack("node1") + c.routes("node1") + c.neigh("node1") + c.fdb("node1")
c.set_sysctl("node1", "net.bridge.bridge-nf-call-iptables", 1)
c.advance(seconds=1.5)
added: List[str] = c.add("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")["loaded"]
c.delete("svc/default/web")
pcap: bytes = c.trace("pod/default/pod1", "pod/default/pod2:8080", capture=True).pcapng()
status: Optional[int] = c.trace("host/internet", "203.0.113.100:80", proto="http").http_status
healthy: List[bool] = [bool(h["healthy"]) for h in c.health_checks("node1")]
counted: str = c.iptables_save("node1", counters=True)
c.iptables_restore("node2", "*mangle\nCOMMIT\n", noflush=True)
klog: str = c.kernel_log("node2")
answered: Optional[int] = c.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", rounds=10).answered
