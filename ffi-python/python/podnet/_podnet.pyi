"""Type stubs for the compiled module podnet._podnet."""

from typing import Dict, List, Optional, Sequence, Tuple, Union

__version__: str

from .types import (
    Action,
    ConntrackEntry,
    Direction,
    Disposition,
    Enforcement,
    HealthCheck,
    HostTraffic,
    Headers,
    LoadReport,
    ModeDifference,
    NodeInfo,
    PodInfo,
    PolicySummary,
    Proto,
    Reason,
    ServiceInfo,
    StrPath,
)

class Error(Exception):
    """Base class of every podnet error."""

class NotFound(Error):
    """A pod, node, Service, port or sysctl that does not exist."""

class InvalidInput(Error):
    """An endpoint, address or argument podnet cannot read or take."""

class AddressInUse(Error):
    """A port or address is already taken."""

class AddressExhausted(Error):
    """A pool or range has no free address left."""

class Livelock(Error):
    """A flow never settled (a forwarding loop)."""

class ParseError(Error):
    """Input that could not be read; `.line`, `.column` and `.field` (the field path, as
    `items[9].spec.ports[0].port`) say where (None when unknown)."""

    line: Optional[int]
    column: Optional[int]
    field: Optional[str]
    file: str
    document: int

class Hop:
    """One hop of a trace: where, what, the rule and the object behind it, the headers."""

    @property
    def index(self) -> int:
        """Its position in the trace (0-based)."""
    @property
    def packet(self) -> int:
        """The packet it belongs to (1-based; ARP frames are packets too)."""
    @property
    def direction(self) -> Direction:
        """`request` or `reply`."""
    @property
    def node(self) -> Optional[str]:
        """The node it happened on (a pod's hops report its node)."""
    @property
    def netns(self) -> str:
        """The network namespace (`node1`, `pod/default/pod1`, `vpc`, ...)."""
    @property
    def device(self) -> Optional[str]:
        """The device, if any."""
    @property
    def action(self) -> Action:
        """What happened."""
    @property
    def hook(self) -> Optional[str]:
        """The netfilter hook, if any."""
    @property
    def table(self) -> Optional[str]:
        """The table of a rule hop."""
    @property
    def chain(self) -> Optional[str]:
        """The chain of a rule hop."""
    @property
    def rule(self) -> Optional[str]:
        """The rule as `iptables-save` prints it (without `-A CHAIN`)."""
    @property
    def origin(self) -> Optional[str]:
        """The Kubernetes object the rule came from (`svc/default/web:http`)."""
    @property
    def reason(self) -> Optional[Reason]:
        """A drop's stable reason code."""
    @property
    def detail(self) -> str:
        """What happened, in words."""
    @property
    def before(self) -> Optional[Headers]:
        """The headers before the hop."""
    @property
    def after(self) -> Optional[Headers]:
        """The headers after the hop, when it rewrote them (NAT)."""

class Trace:
    """One traced flow: its outcome, what each side saw, its path, every hop."""

    @property
    def src(self) -> str:
        """The source as written."""
    @property
    def dst(self) -> str:
        """The destination as written."""
    @property
    def proto(self) -> Proto:
        """The protocol the flow ran with."""
    @property
    def disposition(self) -> Disposition:
        """`delivered`, `dropped` or `rejected`."""
    @property
    def completed(self) -> bool:
        """Whether the client's whole exchange completed."""
    @property
    def delivered_to(self) -> Optional[str]:
        """Who got the request (`pod/NS/NAME`, `node/NAME`, ...), or None."""
    @property
    def server_saw(self) -> Optional[str]:
        """The client address and port the server saw (after any SNAT)."""
    @property
    def reply_from(self) -> Optional[str]:
        """The address and port the client's answer came from."""
    @property
    def http_status(self) -> Optional[int]:
        """The HTTP status the client received, for HTTP flows."""
    @property
    def http_from(self) -> Optional[str]:
        """Who produced `http_status`: the backend, or an intermediary answering itself."""
    @property
    def answered(self) -> Optional[int]:
        """With `rounds` above one: how many exchanges were answered."""
    @property
    def reason(self) -> Optional[Reason]:
        """A stable code for why the request was not delivered, or None."""
    @property
    def reason_text(self) -> Optional[str]:
        """The reason in words."""
    @property
    def warnings(self) -> List[str]:
        """What podnet could not model that may change this outcome in the real cluster."""
    @property
    def client(self) -> str:
        """The client's address and port."""
    @property
    def probability(self) -> Optional[float]:
        """For `trace_all`: the probability of this outcome."""
    @property
    def path(self) -> Optional[str]:
        """The first request packet's path on one line; None without hops."""
    @property
    def hops(self) -> List[Hop]:
        """Every hop, in order."""
    def to_json(self) -> str:
        """The trace as JSON (the same bytes as the Rust API and the golden files)."""
    def pcapng(self) -> bytes:
        """The frames every device received, as pcapng; needs `capture=True`."""
    def render(self, full: bool = False) -> str:
        """Readable text; `full` lists every packet."""
    def brief(self) -> str:
        """The title, the path and the outcome only."""

class Cluster:
    """A modelled Kubernetes cluster."""

    @staticmethod
    def seed(proxy_mode: str = "iptables", seed: int = 0, cni: str = "bridge") -> "Cluster":
        """The reference cluster of `podnet demo` (`cni="aws-vpc"`: its AWS VPC CNI variant)."""
    @staticmethod
    def from_yaml(text: str, proxy_mode: Optional[str] = None, seed: Optional[int] = None) -> "Cluster":
        """Loads Kubernetes objects from YAML or JSON text."""
    @staticmethod
    def from_files(
        paths: Union[StrPath, Sequence[StrPath]], proxy_mode: Optional[str] = None, seed: Optional[int] = None
    ) -> "Cluster":
        """Loads Kubernetes objects from a file or directory, or a list of them."""
    @property
    def load_report(self) -> LoadReport:
        """What was loaded and what was skipped, and why."""
    def trace(
        self,
        src: str,
        dst: str,
        proto: Optional[str] = None,
        sport: Optional[int] = None,
        headers: Optional[Dict[str, str]] = None,
        dry_run: bool = False,
        capture: bool = False,
        rounds: int = 1,
    ) -> Trace:
        """Traces one flow."""
    def trace_many(self, flows: Sequence[Tuple[str, str, Optional[str]]]) -> List[Trace]:
        """Runs many flows in order; their Traces without hops."""
    def trace_all(self, src: str, dst: str, proto: Optional[str] = None) -> List[Trace]:
        """Every place a flow can land, each with its probability (dry runs)."""
    def reachability(
        self, sources: List[str], destinations: List[str], proto: Optional[str] = None
    ) -> List[List[Trace]]:
        """A matrix of dry-run traces, `result[i][j]` from `sources[i]` to `destinations[j]`."""
    def nodes(self) -> List[NodeInfo]:
        """The nodes."""
    def pods(self) -> List[PodInfo]:
        """The pods."""
    def services(self) -> List[ServiceInfo]:
        """The Services."""
    def conntrack_entries(self, node: str) -> List[ConntrackEntry]:
        """A node's connection tracking entries, oldest first."""
    def get(self, resource: str, output: Optional[str] = None) -> str:
        """What `kubectl get RESOURCE -o OUTPUT` would print of what podnet loaded."""
    def show(self, table: str, who: str) -> str:
        """A table of a node or pod by name, as the real tool prints it."""
    def iptables_save(self, node: str, counters: bool = False) -> str:
        """`iptables-save` of a node (kernel form)."""
    def kernel_log(self, node: str) -> str:
        """The kernel log lines `LOG` rules wrote on a node."""
    def iptables_restore(self, node: str, text: str, noflush: bool = True) -> None:
        """`iptables-restore [--noflush]` on a node."""
    def kube_proxy_rules(self, node: str) -> str:
        """kube-proxy's restore payload for a node."""
    def ip_rules(self, who: str) -> str:
        """`ip rule show` of a node or pod."""
    def import_iptables(self, node: str, text: str) -> None:
        """Runs a node on the rules of a real node's `iptables-save`."""
    def iptables_drift(self, node: str) -> str:
        """How a node's imported rules differ from what kube-proxy would write."""
    def enis(self, node: str) -> str:
        """ipamd's view of a node's ENIs."""
    def health_checks(self, node: str) -> List[HealthCheck]:
        """kube-proxy's health-check servers on a node."""
    def ipvsadm(self, node: str) -> str:
        """`ipvsadm -Ln` of a node."""
    def ipset(self, node: str) -> str:
        """`ipset list` of a node."""
    def nft_list_ruleset(self, node: str) -> str:
        """`nft list ruleset` of a node."""
    def compare_modes(
        self, flows: Optional[Sequence[Tuple[str, str, Optional[str]]]] = None
    ) -> List[ModeDifference]:
        """The flows whose outcome differs between iptables, IPVS and nftables mode (`None`:
        every pod against every Service port)."""
    def conntrack(self, node: str) -> str:
        """`conntrack -L` of a node."""
    def routes(self, who: str) -> str:
        """`ip route` of a node or pod."""
    def neigh(self, who: str) -> str:
        """`ip neigh` of a node or pod."""
    def fdb(self, node: str) -> str:
        """`bridge fdb show` of a node."""
    def set_sysctl(self, node: str, key: str, value: int) -> None:
        """Sets a node sysctl."""
    def set_hairpin(self, pod: str, on: bool) -> None:
        """Sets `hairpin_mode` on a pod's bridge port."""
    def set_ready(self, pod: str, ready: bool) -> None:
        """Sets a pod's Ready condition."""
    def advance(self, seconds: float) -> None:
        """Advances virtual time."""
    def add(self, text: str) -> LoadReport:
        """Adds Kubernetes objects to the running cluster, as `kubectl create -f` would."""
    def delete(self, what: str) -> None:
        """Deletes a Service (`svc/NS/NAME`), a pod (`pod/NS/NAME`) or a NetworkPolicy
        (`netpol/NS/NAME`)."""
    def network_policies(self) -> List[str]:
        """The NetworkPolicies, as `netpol/NS/NAME`, in the order they were added."""
    def policies_for(self, pod: str) -> PolicySummary:
        """The NetworkPolicies selecting a pod and what they allow it."""
    @property
    def policy_config(self) -> Tuple[Enforcement, HostTraffic]:
        """Where NetworkPolicies are enforced, and whether a pod's own node is judged by them."""
    def set_policy_config(
        self, enforcement: Optional[Enforcement] = None, host_traffic: Optional[HostTraffic] = None
    ) -> None:
        """Sets where NetworkPolicies are enforced (`post-dnat`, `pre-dnat`, `off`) and whether
        a pod's own node is judged by them (`allow`, `policy`)."""

def scenarios() -> List[Tuple[str, str, str, str, str]]:
    """Every seed scenario as `(id, figures, src, dst, proto)`."""

def golden_trace(id: str, seed: int = 0) -> Trace:
    """The golden trace of a scenario, on a fresh reference cluster."""
