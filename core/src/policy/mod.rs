//! NetworkPolicy (`networking.k8s.io/v1`) semantics, as the Kubernetes API defines them:
//!
//! - a policy selects pods of its namespace (`podSelector`; empty selects every pod);
//! - `policyTypes` defaults to `Ingress`, plus `Egress` when the policy has egress rules;
//! - a pod is isolated for a direction when any policy selecting it has that type, and then
//!   a connection in that direction is allowed when any such policy has a rule that allows
//!   it (policies add up; order does not matter);
//! - a rule allows a peer and a port when its `from`/`to` peers (none: every peer) match the
//!   peer and its `ports` (none: every port) match the port;
//! - a peer is a `podSelector` (pods of the policy's namespace), a `namespaceSelector` (every
//!   pod of the namespaces it selects), both in one peer (the selected pods of the selected
//!   namespaces: AND; separate peers are OR), or an `ipBlock` (a CIDR minus its `except`
//!   ranges, matched on the peer's address);
//! - a port is a protocol (TCP by default; UDP, SCTP), a number or a container port name
//!   (resolved against the destination pod's containerPorts), and `endPort` for a range.
//!
//! Connection-oriented: a policy decides the first packet of a connection; replies and
//! related packets follow conntrack. The engine compiles the policies per pod (which
//! policies isolate it, in each direction) and answers the datapath's
//! guard at pods' host-side interfaces (see the datapath's `guard`); [`PolicyConfig`] says where
//! (after kube-proxy's DNAT, or before it as an eBPF agent at the veth does) and whether a
//! pod's own node is exempt.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use podnet_netfilter::Proto;

use crate::labels::{LabelSelector, Labels};

pub use crate::datapath::Direction;

mod engine;
pub(crate) use engine::Engine;
pub use engine::{Enforcement, HostTraffic, PolicyConfig, PolicySummary};

/// A port of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// A number, with `endPort` for a range.
    Number(u16, Option<u16>),
    /// A container port name of the destination pod.
    Name(String),
}

/// One entry of a rule's `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPort {
    /// The protocol (TCP when not given).
    pub protocol: Proto,
    /// The port; `None`: every port of the protocol.
    pub port: Option<PortRef>,
}

/// One peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods: `namespaces` `None` means the policy's own namespace; `pods` `None` means every
    /// pod of the namespaces.
    Pods {
        /// `namespaceSelector`.
        namespaces: Option<LabelSelector>,
        /// `podSelector`.
        pods: Option<LabelSelector>,
    },
    /// `ipBlock`.
    IpBlock {
        /// The range.
        cidr: Ipv4Network,
        /// Ranges taken out of it.
        except: Vec<Ipv4Network>,
    },
}

/// One ingress or egress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// `from` (ingress) or `to` (egress); empty: every peer.
    pub peers: Vec<Peer>,
    /// `ports`; empty: every port.
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `podSelector`.
    pub pod_selector: LabelSelector,
    /// The directions it isolates (`policyTypes`, or their default).
    pub types: Vec<Direction>,
    /// Ingress rules.
    pub ingress: Vec<PolicyRule>,
    /// Egress rules.
    pub egress: Vec<PolicyRule>,
}

/// A pod, as policies see it.
#[derive(Clone, Copy, Debug)]
pub struct PodRef<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its namespace's labels (`kubernetes.io/metadata.name` among them).
    pub namespace_labels: &'a Labels,
    /// Its labels.
    pub labels: &'a Labels,
    /// Its containerPorts: (name, protocol, number).
    pub named_ports: &'a [(String, Proto, u16)],
}

/// The other end of a connection: its address, and the pod it is, if it is one.
#[derive(Clone, Copy, Debug)]
pub struct PeerRef<'a> {
    /// Its address (after NAT, as the selected pod's side sees it).
    pub ip: Ipv4Addr,
    /// The pod, when the address is a pod's.
    pub pod: Option<PodRef<'a>>,
}

/// What the policies say of one connection in one direction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Decision {
    /// No policy of that type selects the pod: everything is allowed.
    NotIsolated,
    /// Allowed, by these policies (`namespace/name`).
    Allowed(Vec<String>),
    /// Denied: these policies isolate the pod and none allows the connection.
    Denied(Vec<String>),
}

impl NetworkPolicy {
    /// The types a policy has when `policyTypes` is not written: Ingress, and Egress when
    /// it has egress rules.
    pub fn default_types(has_egress: bool) -> Vec<Direction> {
        let mut t = vec![Direction::Ingress];
        if has_egress {
            t.push(Direction::Egress);
        }
        t
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether it selects `pod` for direction `dir`.
    pub fn isolates(&self, pod: &PodRef<'_>, dir: Direction) -> bool {
        self.namespace == pod.namespace
            && self.types.contains(&dir)
            && self.pod_selector.matches(pod.labels)
    }

    /// Whether one of its rules for `dir` allows `peer` on `proto`/`port`. `dest` is the
    /// destination pod, whose containerPorts resolve named ports: the selected pod for
    /// ingress, the peer for egress.
    pub fn allows(
        &self,
        dir: Direction,
        peer: &PeerRef<'_>,
        dest: Option<&PodRef<'_>>,
        proto: Proto,
        port: u16,
    ) -> bool {
        self.allowing_rule(dir, peer, dest, proto, port).is_some()
    }

    /// The index of the first of its rules for `dir` that allows `peer` on `proto`/`port`.
    pub fn allowing_rule(
        &self,
        dir: Direction,
        peer: &PeerRef<'_>,
        dest: Option<&PodRef<'_>>,
        proto: Proto,
        port: u16,
    ) -> Option<usize> {
        let rules = match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        rules.iter().position(|r| {
            (r.peers.is_empty() || r.peers.iter().any(|p| self.peer_matches(p, peer)))
                && (r.ports.is_empty()
                    || r.ports.iter().any(|p| port_matches(p, dest, proto, port)))
        })
    }

    fn peer_matches(&self, p: &Peer, peer: &PeerRef<'_>) -> bool {
        match p {
            Peer::IpBlock { cidr, except } => {
                cidr.contains(peer.ip) && !except.iter().any(|e| e.contains(peer.ip))
            }
            Peer::Pods { namespaces, pods } => {
                let Some(pod) = &peer.pod else { return false };
                let ns_ok = match namespaces {
                    None => pod.namespace == self.namespace,
                    Some(sel) => sel.matches(pod.namespace_labels),
                };
                ns_ok && pods.as_ref().is_none_or(|sel| sel.matches(pod.labels))
            }
        }
    }
}

fn port_matches(p: &PolicyPort, dest: Option<&PodRef<'_>>, proto: Proto, port: u16) -> bool {
    if p.protocol != proto {
        return false;
    }
    match &p.port {
        None => true,
        Some(PortRef::Number(lo, None)) => port == *lo,
        Some(PortRef::Number(lo, Some(hi))) => (*lo..=*hi).contains(&port),
        // A name matches when the destination pod has a containerPort of that name, the
        // protocol and the number.
        Some(PortRef::Name(n)) => dest.is_some_and(|d| {
            d.named_ports.iter().any(|(name, pr, num)| name == n && *pr == proto && *num == port)
        }),
    }
}

/// The decision of `policies` for a connection of direction `dir` at `pod` with `peer`, on
/// `proto`/`port` (the destination port: `pod`'s for ingress, the peer's for egress).
pub fn decide(
    policies: &[NetworkPolicy],
    dir: Direction,
    pod: &PodRef<'_>,
    peer: &PeerRef<'_>,
    proto: Proto,
    port: u16,
) -> Decision {
    let isolating: Vec<&NetworkPolicy> = policies.iter().filter(|p| p.isolates(pod, dir)).collect();
    if isolating.is_empty() {
        return Decision::NotIsolated;
    }
    let dest = match dir {
        Direction::Ingress => Some(pod),
        Direction::Egress => peer.pod.as_ref(),
    };
    let allowing: Vec<String> = isolating
        .iter()
        .filter(|p| p.allows(dir, peer, dest, proto, port))
        .map(|p| p.key())
        .collect();
    if allowing.is_empty() {
        Decision::Denied(isolating.iter().map(|p| p.key()).collect())
    } else {
        Decision::Allowed(allowing)
    }
}
