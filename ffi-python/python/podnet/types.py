"""The shapes of what podnet returns: the literal values of a trace's fields and the
dictionaries of headers, load reports, nodes, pods, Services and conntrack entries, for
type checkers (``mypy --strict``) and for reading."""

import os
from typing import Dict, List, Literal, Optional, Tuple, TypedDict, Union

__all__ = [
    "Action",
    "ConntrackEntry",
    "ConntrackTuple",
    "Direction",
    "Disposition",
    "Enforcement",
    "HealthCheck",
    "HostTraffic",
    "Headers",
    "LoadReport",
    "NodeInfo",
    "PodInfo",
    "PolicyRef",
    "PolicySummary",
    "Proto",
    "Reason",
    "ServiceInfo",
    "ServicePortInfo",
    "StrPath",
]

Disposition = Literal["delivered", "dropped", "rejected"]
"""A trace's outcome."""

Proto = Literal["tcp", "udp", "icmp", "http"]
"""A flow's protocol."""

Direction = Literal["request", "reply"]
"""Which way a hop's packet travels."""

Action = Literal[
    "tx", "rx", "ignore", "bridge", "fdb", "arp", "neigh", "route", "deliver", "rule", "nat", "conntrack", "log", "policy", "drop"
]
"""What happened at a hop."""

Reason = Literal[
    "malformed",
    "hairpin-off",
    "no-route",
    "forwarding-off",
    "martian-source",
    "rp-filter",
    "ttl-exceeded",
    "arp-failed",
    "rule",
    "conntrack-full",
    "nat-exhausted",
    "no-listener",
    "policy_denied_ingress",
    "policy_denied_egress",
    "timeout",
    "http_no_route",
    "http_no_healthy_backend",
    "http_bad_gateway",
    "http_bad_request",
    "http_no_local_endpoints",
]
"""Why a request was not delivered (`Trace.reason`), or why a hop dropped a packet
(`Hop.reason`): a drop in the datapath, a refusal, a timeout, or an HTTP intermediary's own
error answer."""

StrPath = Union[str, "os.PathLike[str]"]

Enforcement = Literal["post-dnat", "pre-dnat", "off"]
"""Where NetworkPolicies are enforced: after kube-proxy's DNAT (iptables-based CNIs), egress
before it (an eBPF agent at the pod's veth), or not at all."""

HostTraffic = Literal["allow", "policy"]
"""Whether connections between a pod and its own node pass (`allow`) or are judged."""

class PolicyRef(TypedDict):
    """A NetworkPolicy selecting a pod, and the directions it isolates it for."""

    name: str
    directions: List[Literal["ingress", "egress"]]

class PolicySummary(TypedDict):
    """What NetworkPolicies do to one pod (`Cluster.policies_for`): the policies selecting it,
    whether it is isolated in each direction, and the rules that allow connections, one line
    each (`NS/NAME spec.ingress[0]: from pods app=web of namespace shop; ports TCP 8080`)."""

    pod: str
    policies: List[PolicyRef]
    ingress_isolated: bool
    egress_isolated: bool
    ingress: List[str]
    egress: List[str]

class Headers(TypedDict):
    """A packet's headers at a hop."""

    proto: str
    src: str
    dst: str
    sport: Optional[int]
    dport: Optional[int]
    info: Optional[str]
    src_mac: Optional[str]
    dst_mac: Optional[str]

class LoadReport(TypedDict):
    """What was loaded (`Kind/namespace/name`), what was skipped (with the reason), what was
    inferred from the objects (with the PodnetConfig field that overrides it), and what
    `kubectl apply --validate=strict` or kube-proxy would flag (`warnings`)."""

    loaded: List[str]
    skipped: List[str]
    inferred: List[str]
    warnings: List[str]

class NodeInfo(TypedDict):
    """A node as podnet loaded it."""

    name: str
    ip: str
    pod_cidr: str
    pods: int
    max_pods: int

class PodInfo(TypedDict):
    """A pod as podnet loaded it."""

    namespace: str
    name: str
    ip: str
    node: str
    ready: bool
    terminating: bool
    host_network: bool
    labels: Dict[str, str]

class ServicePortInfo(TypedDict):
    """A Service port, with its allocated nodePort (None when none)."""

    name: str
    protocol: Literal["TCP", "UDP", "SCTP"]
    port: int
    target_port: Union[int, str]
    node_port: Optional[int]

class ServiceInfo(TypedDict):
    """A Service as podnet admitted it."""

    namespace: str
    name: str
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"]
    cluster_ip: Optional[str]
    ports: List[ServicePortInfo]

class ConntrackTuple(TypedDict):
    """One direction of a tracked connection."""

    src: str
    dst: str
    sport: int
    dport: int

class ConntrackEntry(TypedDict):
    """One `conntrack -L` entry."""

    proto: str
    timeout: int
    state: Optional[str]
    original: ConntrackTuple
    reply: ConntrackTuple
    unreplied: bool
    assured: bool
    mark: int

class HealthCheck(TypedDict):
    """kube-proxy's health-check server for one Service on one node."""

    namespace: str
    name: str
    port: int
    local_endpoints: int
    healthy: bool


class ModeLanding(TypedDict):
    """One outcome of a flow in one kube-proxy mode (`Cluster.compare_modes`)."""

    delivered_to: Optional[str]
    server_saw: Optional[str]
    reply_from: Optional[str]
    disposition: Disposition
    reason: Optional[str]
    probability: float


class ModeDivergence(TypedDict):
    """Where two modes' traces of a flow part: the first hop that differs in each."""

    modes: Tuple[str, str]
    hops: Tuple[Optional[str], Optional[str]]


# A flow whose outcome differs between iptables, IPVS and nftables mode (`from` is a
# keyword, hence the functional form).
ModeDifference = TypedDict(
    "ModeDifference",
    {
        "from": str,
        "to": str,
        "proto": str,
        "outcomes": Dict[str, List[ModeLanding]],
        "divergences": List[ModeDivergence],
        "text": str,
    },
)
