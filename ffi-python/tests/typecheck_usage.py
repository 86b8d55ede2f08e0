"""Type-checked with mypy --strict against the shipped stubs (not collected by pytest)."""

import pathlib
from typing import List, Optional, Tuple

import podnet
from podnet.pytest import assert_allowed_by, assert_dropped_by, assert_lands_on, assert_reachable, assert_server_sees


def reachable(c: podnet.Cluster, src: str, dst: str) -> bool:
    t: podnet.Trace = c.trace(src, dst, proto="tcp", sport=None, headers={"Host": "x"}, dry_run=True)
    hops: List[podnet.Hop] = t.hops
    first: Optional[str] = hops[0].device if hops else None
    d: podnet.Disposition = t.disposition
    return d == "delivered" and t.completed and first is not None


c = podnet.Cluster.seed(proxy_mode="iptables", seed=0)
ok: bool = reachable(c, "pod/default/pod1", "pod/default/pod2:8080")
text: str = c.iptables_save("node1") + c.conntrack("node1") + c.routes("node1") + c.neigh("node1") + c.fdb("node1")
c.set_sysctl("node1", "net.bridge.bridge-nf-call-iptables", 1)
c.advance(seconds=1.5)
report: podnet.LoadReport = c.add("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
added: List[str] = report["loaded"] + c.load_report["skipped"]
pcap: bytes = c.trace("pod/default/pod1", "pod/default/pod2:8080", capture=True).pcapng()
status: Optional[int] = c.trace("host/internet", "203.0.113.100:80", proto="http").http_status
healthy: List[bool] = [h["healthy"] for h in c.health_checks("node1")]
counted: str = c.iptables_save("node1", counters=True)
c.iptables_restore("node2", "*mangle\nCOMMIT\n", noflush=True)
klog: str = c.kernel_log("node2")
answered: Optional[int] = c.trace("pod/default/pod2", "10.96.0.10:80", proto="udp", rounds=10).answered
t = c.trace("pod/default/pod2", "svc/default/web:http")
path: Optional[str] = t.path
warnings: List[str] = t.warnings
reason: Optional[podnet.Reason] = t.reason
for h in t.hops:
    action: podnet.Action = h.action
    before: Optional[podnet.Headers] = h.before
    dport: Optional[int] = before["dport"] if before else None
nodes: List[podnet.NodeInfo] = c.nodes()
pod_ips: List[str] = [p["ip"] for p in c.pods()]
node_ports: List[Optional[int]] = [p["node_port"] for s in c.services() for p in s["ports"]]
entries: List[podnet.ConntrackEntry] = c.conntrack_entries("node1")
sports: List[int] = [e["original"]["sport"] for e in entries]
many: List[podnet.Trace] = c.trace_many([("pod/default/pod2", "10.96.0.10:80", None), ("pod/default/pod1", "10.244.1.3:8080", "udp")])
table: str = c.get("pods", "wide")
loaded = podnet.Cluster.from_files(pathlib.Path("core/tests/fixtures/shop"))
loaded2 = podnet.Cluster.from_files(["a.yaml", pathlib.Path("b.yaml")])
c.delete("svc/default/web")
assert_reachable(c, "pod/default/pod1", "pod/default/pod2:8080")
assert_dropped_by(c, "pod/default/pod2", "svc/default/web:http", "svc/default/web:http")
outcomes: List[podnet.Trace] = assert_lands_on(c, "pod/default/pod2", "svc/default/api:http", ["pod/default/pod4"])
assert_server_sees(c, "pod/default/pod2", "svc/default/api:http", "10.244.1.3")
summary: podnet.PolicySummary = c.policies_for("pod/default/pod4")
isolating: List[str] = [p["name"] for p in summary["policies"]]
policies: List[str] = c.network_policies()
where: podnet.Enforcement = c.policy_config[0]
c.set_policy_config(enforcement="pre-dnat", host_traffic="policy")
assert_allowed_by(c, "pod/default/pod2", "svc/default/api:http", "netpol/default/api-from-client")
nft_mode = podnet.Cluster.seed(proxy_mode="nftables")
listing: str = nft_mode.nft_list_ruleset("node1")
diffs: List[podnet.ModeDifference] = nft_mode.compare_modes([("pod/default/pod2", "10.96.0.10:81", "tcp")])
landing: podnet.ModeLanding = diffs[0]["outcomes"]["nftables"][0]
first_hops: List[Tuple[Optional[str], Optional[str]]] = [d["hops"] for d in diffs[0]["divergences"]]
every: List[podnet.ModeDifference] = nft_mode.compare_modes()
