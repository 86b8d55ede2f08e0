"""podnet: a deterministic, explainable model of the Kubernetes pod network.

    import podnet
    c = podnet.Cluster.seed()
    t = c.trace("pod/default/pod2", "10.96.0.10:80")
    assert t.delivered_to in ("pod/default/pod1", "pod/default/pod3")
    assert t.reply_from == "10.96.0.10:80"

Sources: "pod/NS/NAME", "node/NAME", or an IP. Destinations: "IP:PORT", "pod/NS/NAME:PORT",
"svc/NS/NAME:PORT" (number or port name), "http://IP[:PORT]/path"; ICMP takes a bare IP.
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

__all__ = [
    "AddressExhausted",
    "AddressInUse",
    "Cluster",
    "Error",
    "Hop",
    "InvalidInput",
    "Livelock",
    "NotFound",
    "ParseError",
    "Trace",
    "__version__",
    "golden_trace",
    "scenarios",
]
