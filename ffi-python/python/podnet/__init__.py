"""podnet: a deterministic, explainable model of the Kubernetes pod network.

    import podnet
    c = podnet.Cluster.from_files("manifests/")     # what `kubectl get -A -o yaml` prints
    t = c.trace("pod/shop/frontend-0", "svc/shop/backend:api")
    print(t.path)                                   # frontend-0 → node1 ... [DNAT ...] → backend-1
    assert t.disposition == "delivered", t.render()

Sources: "pod/NS/NAME", "node/NAME", "host/NAME", or the IP of a pod or node. Destinations:
"IP:PORT", "pod/NS/NAME:PORT", "svc/NS/NAME:PORT" (a number or a port name: a named port
decides the protocol), "http://IP[:PORT]/PATH"; ICMP takes an IP or a pod.

Every bad value raises a subclass of `podnet.Error` (`InvalidInput`, `NotFound`,
`ParseError` with `.line` and `.column`, ...). The pytest plugin (`podnet.pytest`) adds the
`podnet_cluster` and `seed_cluster` fixtures and assertions that explain their failures.
"""

from ._podnet import (
    AddressExhausted,
    AddressInUse,
    Cluster,
    Error,
    Hop,
    InvalidInput,
    Livelock,
    NotFound,
    ParseError,
    Trace,
    __version__,
    golden_trace,
    scenarios,
)
from .types import (
    Action,
    ConntrackEntry,
    ConntrackTuple,
    Direction,
    Disposition,
    Enforcement,
    HealthCheck,
    Headers,
    HostTraffic,
    LoadReport,
    ModeDifference,
    ModeDivergence,
    ModeLanding,
    NodeInfo,
    PodInfo,
    PolicyRef,
    PolicySummary,
    Proto,
    Reason,
    ServiceInfo,
    ServicePortInfo,
)

__all__ = [
    "Action",
    "AddressExhausted",
    "AddressInUse",
    "Cluster",
    "ConntrackEntry",
    "ConntrackTuple",
    "Direction",
    "Disposition",
    "Enforcement",
    "Error",
    "HealthCheck",
    "Headers",
    "HostTraffic",
    "Hop",
    "InvalidInput",
    "Livelock",
    "LoadReport",
    "ModeDifference",
    "ModeDivergence",
    "ModeLanding",
    "NodeInfo",
    "NotFound",
    "ParseError",
    "PodInfo",
    "PolicyRef",
    "PolicySummary",
    "Proto",
    "Reason",
    "ServiceInfo",
    "ServicePortInfo",
    "Trace",
    "__version__",
    "golden_trace",
    "scenarios",
]
