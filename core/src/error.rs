//! Every error type of the crate, in one place: what went wrong and what to do about it.
//!
//! - [`ClusterError`]: building or changing a cluster (names, addresses, pools, profiles).
//! - [`IpamError`]: an address or port pool refused (exhausted, conflict, out of range).
//! - [`TraceError`]: a flow could not be started or did not settle.
//! - [`LoadError`]: Kubernetes YAML/JSON that could not be read or modelled, with its
//!   [`Place`] (file, document, line, column).
//! - [`UnknownValue`]: a name outside a closed set (a proxy mode, a CNI, a table).

use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Proto;

/// Errors from building or changing a cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// A name is used twice.
    #[error("{kind} '{name}' already exists: names must be unique")]
    Duplicate {
        /// Object kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A name does not exist.
    #[error("no {kind} named '{name}'{}", not_found_tail(.kind, .known, .fix))]
    NotFound {
        /// Object kind (`pod`, `node`, `service`, `port`, `sysctl`, …).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What exists of that kind (listed in the message when any is).
        known: Vec<String>,
        /// What to do, when the name is written wrong or something must come first.
        fix: Option<&'static str>,
    },
    /// A node's address is in none of the node subnets.
    #[error("node '{node}' has address {addr}, in none of the node subnets ({}): add its subnet to nodeSubnets in PodnetConfig", subnets.join(", "))]
    NoNodeSubnet {
        /// The node.
        node: String,
        /// Its address.
        addr: Ipv4Addr,
        /// The subnets there are.
        subnets: Vec<String>,
    },
    /// An address is outside the range it must come from.
    #[error("address {addr} is outside {what} {cidr}: pick an address inside it")]
    OutsideCidr {
        /// The address.
        addr: Ipv4Addr,
        /// Which range.
        what: &'static str,
        /// The range.
        cidr: Ipv4Network,
    },
    /// An address is taken or reserved.
    #[error("address {addr} is not available: {why}")]
    AddressTaken {
        /// The address.
        addr: Ipv4Addr,
        /// Why.
        why: String,
    },
    /// A port is already bound in a network namespace.
    #[error(
        "bind {proto}/{port} in {netns} by container '{container}': address already in use (bound by container '{owner}'); containers of a pod share one port space"
    )]
    AddrInUse {
        /// The namespace.
        netns: String,
        /// Protocol.
        proto: Proto,
        /// Port.
        port: u16,
        /// Who tried.
        container: String,
        /// Who has it.
        owner: String,
    },
    /// A name the API server would refuse.
    #[error("{what} '{name}' is invalid: it must be {rule}, as the API server requires")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An operation of the other CNI profile.
    #[error("{what}: this cluster uses the {profile} profile; {fix}")]
    Profile {
        /// What was attempted.
        what: String,
        /// The cluster's profile.
        profile: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// An imported `iptables-save` dump could not be read.
    #[error("iptables-save for node '{node}', line {line}, column {column}: {msg}")]
    IptablesParse {
        /// The node.
        node: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong.
        msg: String,
    },
    /// kubelet's max-pods admission refused the pod (it stays Pending).
    #[error(
        "pod {pod} is unschedulable on node '{node}': Too many pods ({running} of max {max}: {why})"
    )]
    TooManyPods {
        /// The pod.
        pod: String,
        /// The node.
        node: String,
        /// Pods counted.
        running: usize,
        /// kubelet's `--max-pods`.
        max: u32,
        /// What the count is made of.
        why: String,
    },
    /// The CNI could not give the pod an address (it stays ContainerCreating).
    #[error("pod {pod} stays ContainerCreating: {reason}")]
    FailedToAssign {
        /// The pod.
        pod: String,
        /// The CNI's reason.
        reason: String,
    },
    /// A value podnet cannot take: the field it was given for, the value, and why.
    #[error("{field} = {value:?}: {why}")]
    InvalidInput {
        /// The field, setting or argument (`net.netfilter.nf_conntrack_buckets`).
        field: String,
        /// The value given.
        value: String,
        /// Why it cannot be taken, and what can.
        why: &'static str,
    },
    /// A request the cluster cannot honour as asked.
    #[error("{what}: {fix}")]
    Refused {
        /// What was asked and why it cannot be.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// An address pool refused (exhausted, conflict, reserved address).
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// A pod CIDR overlaps another node's or is outside the cluster CIDR.
    #[error("pod CIDR {cidr} for node '{node}' {why}")]
    BadPodCidr {
        /// The node.
        node: String,
        /// The CIDR.
        cidr: Ipv4Network,
        /// Why.
        why: String,
    },
}

/// The end of a not-found message: what exists (` (pods: a, b)`), then what to do.
fn not_found_tail(kind: &str, known: &[String], fix: &Option<&'static str>) -> String {
    let mut s = String::new();
    if !known.is_empty() {
        s = format!(" ({kind}s: {})", known.join(", "));
    }
    if let Some(f) = fix {
        s.push_str(": ");
        s.push_str(f);
    }
    s
}

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Nothing free is left.
    #[error("{what} {range} is exhausted ({used} in use): {fix}")]
    Exhausted {
        /// What pool.
        what: &'static str,
        /// The range.
        range: String,
        /// How many are in use.
        used: usize,
        /// What to do.
        fix: &'static str,
    },
    /// A requested value is already allocated.
    #[error("{what} {value} is already allocated in {range}")]
    Conflict {
        /// What pool.
        what: &'static str,
        /// The value.
        value: String,
        /// The range.
        range: String,
    },
    /// A requested value is outside the range or reserved.
    #[error("{what} {value} is not in the range {range}{why}")]
    OutOfRange {
        /// What pool.
        what: &'static str,
        /// The value.
        value: String,
        /// The range.
        range: String,
        /// Extra reason.
        why: String,
    },
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}

/// Errors from starting a trace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The source or destination names nothing known.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An endpoint string could not be read.
    #[error("cannot read {what} '{text}': {hint}")]
    BadEndpoint {
        /// `source` or `destination`.
        what: &'static str,
        /// The text.
        text: String,
        /// How to write it.
        hint: String,
    },
    /// The protocol asked for contradicts the one the destination implies.
    #[error(
        "{destination} implies {implied}, but {asked} was asked for: drop the protocol (the destination decides it) or name a port of {asked}"
    )]
    ProtocolMismatch {
        /// The destination as written.
        destination: String,
        /// What it implies (`UDP`, `HTTP`, …): a named port's protocol, or HTTP for a URL.
        implied: String,
        /// What was asked (`TCP`).
        asked: String,
    },
    /// The simulation did not settle (a forwarding loop).
    #[error("the flow did not settle after {0} frames: a forwarding loop? (trace aborted)")]
    Livelock(u64),
    /// Every port of `ip_local_port_range` is held (connect's EADDRNOTAVAIL).
    #[error(
        "{client}: no free ephemeral port in 32768-60999 (Cannot assign requested address): {held} are held by open connections or TIME_WAIT (10 s); advance time (Cluster::advance) or pass a source port"
    )]
    NoEphemeralPort {
        /// The client.
        client: String,
        /// Ports held.
        held: usize,
    },
}

/// Where in the input a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// File (or `<input>`).
    pub file: String,
    /// 1-based document index in the file.
    pub doc: usize,
    /// 1-based line in the file, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// The field the problem is in, as a path from the document's root
    /// (`items[9].spec.ports[0].port`), when known.
    pub field: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.doc)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ", line {l}, column {c}")?;
        }
        Ok(())
    }
}

/// Why loading failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{path}: {msg}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        msg: String,
    },
    /// A document is not valid YAML/JSON or does not fit its kind's schema.
    #[error("{place}: {msg}")]
    Parse {
        /// Where.
        place: Place,
        /// What was wrong, with the field path.
        msg: String,
    },
    /// The cluster refused an object (a name or address already taken, a pool exhausted).
    #[error("{place}: {object}: {error}")]
    Refused {
        /// Where.
        place: Place,
        /// `Kind/namespace/name`.
        object: String,
        /// The cluster's reason.
        error: Box<ClusterError>,
    },
    /// An object is well-formed but cannot be modelled as it stands.
    #[error("{place}: {object}: {msg}")]
    Object {
        /// Where.
        place: Place,
        /// `Kind/namespace/name`.
        object: String,
        /// What is wrong and how to fix it.
        msg: String,
    },
}

impl LoadError {
    /// The line of the problem, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            LoadError::Parse { place, .. }
            | LoadError::Object { place, .. }
            | LoadError::Refused { place, .. } => place.line.map(|l| l as usize),
            LoadError::Io { .. } => None,
        }
    }

    /// The field path of the problem (`items[9].spec.ports[0].port`), if known.
    pub fn field(&self) -> Option<&str> {
        match self {
            LoadError::Parse { place, .. }
            | LoadError::Object { place, .. }
            | LoadError::Refused { place, .. } => place.field.as_deref(),
            LoadError::Io { .. } => None,
        }
    }

    /// The column of the problem, if known.
    pub fn column(&self) -> Option<usize> {
        match self {
            LoadError::Parse { place, .. }
            | LoadError::Object { place, .. }
            | LoadError::Refused { place, .. } => place.column.map(|c| c as usize),
            LoadError::Io { .. } => None,
        }
    }
}

/// A name outside a closed set: a proxy mode, a CNI profile, a table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}' ({expected})")]
pub struct UnknownValue {
    /// What was named (`proxy mode`).
    pub what: &'static str,
    /// The name given.
    pub value: String,
    /// The names there are.
    pub expected: &'static str,
}
