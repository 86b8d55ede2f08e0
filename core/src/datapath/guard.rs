//! Where a policy engine stops packets: at a pod's host-side interface, as CNIs that enforce
//! NetworkPolicy on a node do, stateful through the node's conntrack.
//!
//! - Egress (connections a pod opens) is judged as the packet comes in from the pod's
//!   host-side interface, right after PREROUTING (on the bridge with br_netfilter, or in
//!   `ip_rcv`), so after kube-proxy's DNAT: the destination is the endpoint and its port
//!   ([`Stage::PostDnat`]), or, for an engine hooked before kube-proxy (an eBPF agent at the
//!   veth's TC hook), the destination the pod wrote, read from the connection's original
//!   tuple: the ClusterIP and the Service port ([`Stage::PreDnat`]).
//! - Ingress (connections to a pod) is judged as the node transmits on the pod's host-side
//!   interface, after POSTROUTING: the source is what SNAT left (a node address for a
//!   masqueraded Service, the bridge address for a hairpin).
//! - Only a connection's first packets are judged (`ctinfo` NEW); replies, later packets and
//!   related ICMP errors pass, as `-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT` lets
//!   them. A packet conntrack never saw (bridged with `bridge-nf-call-iptables=0`,
//!   `NOTRACK`) cannot be told from a reply: it passes, and the trace says policies were not
//!   enforced on it.
//! - Connections between a pod and its own node (kubelet probes, hostNetwork pods, the pod
//!   calling its node) pass when the engine allows host traffic, as the Kubernetes docs
//!   promise ("traffic to and from the node where a Pod is running is always allowed").
//!
//! The datapath knows no NetworkPolicy: it asks a [`Guard`], which the
//! [`policy`](crate::policy) layer implements.

use std::net::Ipv4Addr;

use podnet_netfilter::conntrack::{CtId, CtInfo};
use podnet_netfilter::{Proto, Skb, packet};

use crate::ids::{IfIndex, NetnsId, PodId};
use crate::trace::{HopKind, PacketView, Tag};
use crate::world::World;

use super::{Datapath, HostStacks, hop};

/// A direction of traffic, as the selected pod sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    /// Connections to the pod.
    Ingress,
    /// Connections from the pod.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Where egress is judged (ingress is always judged after every NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// After kube-proxy's DNAT: the endpoint.
    PostDnat,
    /// Before it: the address and port the pod wrote.
    PreDnat,
}

/// A policy engine's answer for a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No policy isolates the pod in this direction.
    NotIsolated,
    /// Allowed by a rule: the policy (its index, see [`Guard::policy_key`]) and the rule's
    /// index among the direction's rules.
    Allowed {
        /// The policy.
        policy: usize,
        /// The rule.
        rule: usize,
    },
    /// Denied: the policies isolating the pod, none of which allows it.
    Denied(Vec<usize>),
}

/// What the datapath asks a policy engine.
pub(crate) trait Guard: Sync {
    /// Where egress is judged; `None` when nothing is enforced (no policy, or enforcement
    /// off): the datapath then asks nothing.
    fn stage(&self) -> Option<Stage>;
    /// Whether connections between a pod and its own node pass without policy.
    fn host_traffic_allowed(&self) -> bool;
    /// The pod whose host-side interface `dev` is.
    fn pod_of_host_dev(&self, dev: IfIndex) -> Option<PodId>;
    /// A policy's `NS/NAME`.
    fn policy_key(&self, policy: usize) -> String;
    /// Whether any policy isolates `pod` for `dir` (cheap; asked before a full check).
    fn isolated(&self, pod: PodId, dir: Direction) -> bool;
    /// The verdict on a new connection of `pod` in `dir` with `peer`, to `port` (the
    /// destination's port: `pod`'s for ingress, the peer's for egress).
    fn check(
        &self,
        w: &World,
        pod: PodId,
        dir: Direction,
        peer: Ipv4Addr,
        proto: Proto,
        port: u16,
    ) -> Verdict;
}

/// The engine of a cluster without policies: nothing enforced.
#[cfg(test)]
pub(crate) struct NoGuard;

#[cfg(test)]
impl Guard for NoGuard {
    fn stage(&self) -> Option<Stage> {
        None
    }
    fn host_traffic_allowed(&self) -> bool {
        true
    }
    fn pod_of_host_dev(&self, _: IfIndex) -> Option<PodId> {
        None
    }
    fn policy_key(&self, _: usize) -> String {
        String::new()
    }
    fn isolated(&self, _: PodId, _: Direction) -> bool {
        false
    }
    fn check(&self, _: &World, _: PodId, _: Direction, _: Ipv4Addr, _: Proto, _: u16) -> Verdict {
        Verdict::NotIsolated
    }
}

/// Reason codes of policy drops.
pub(crate) const DENIED_INGRESS: &str = "policy_denied_ingress";
/// See [`DENIED_INGRESS`].
pub(crate) const DENIED_EGRESS: &str = "policy_denied_egress";

impl<H: HostStacks> Datapath<'_, H> {
    /// Egress: a packet that came in on `port` (a bridge port or a routed veth) of node
    /// namespace `ns` and has been through PREROUTING. Returns whether it goes on.
    pub(super) fn guard_egress(&mut self, ns: NetnsId, port: IfIndex, skb: &Skb, tag: Tag) -> bool {
        let Some(stage) = self.guard.stage() else { return true };
        let pod = match self.guard.pod_of_host_dev(port) {
            Some(p) => Some(p),
            // Routed up from a bridge without br_netfilter: the port is gone, the source
            // address says which of the bridge's pods sent it.
            None if matches!(self.w.devs[port.idx()].kind, crate::world::DeviceKind::Bridge(_)) => {
                let src = smoltcp::wire::Ipv4Packet::new_unchecked(&skb.data[..]).src_addr();
                self.w.netns[ns.idx()].devs.iter().find_map(|&d| {
                    self.guard.pod_of_host_dev(d).filter(|p| {
                        self.w.devs[d.idx()].master == Some(port) && self.w.pods[p.idx()].ip == src
                    })
                })
            }
            None => None,
        };
        let Some(pod) = pod else { return true };
        if !self.guard.isolated(pod, Direction::Egress) {
            return true;
        }
        let Ok(info) = packet::parse_trusted(&skb.data) else { return true };
        if info.icmp.is_some_and(|(t, _)| t != 8) {
            // Only echo requests open ICMP "connections"; errors and replies are judged by
            // conntrack (RELATED / ESTABLISHED).
            return true;
        }
        let nf = self.w.netns[ns.idx()].nf.as_ref();
        // The connection's original tuple: the packet as the pod wrote it.
        let (new, orig) = match &skb.ct {
            podnet_netfilter::CtRef::Unconfirmed(e) => (true, Some(e.orig)),
            podnet_netfilter::CtRef::Confirmed(id, _, ctinfo) => {
                (*ctinfo == CtInfo::New, nf.and_then(|nf| nf.conntrack.get(*id)).map(|e| e.orig))
            }
            podnet_netfilter::CtRef::None | podnet_netfilter::CtRef::Untracked => {
                self.guard_untracked("egress");
                return true;
            }
            podnet_netfilter::CtRef::Invalid => return true,
        };
        if !new {
            return true;
        }
        let (dst, dport) = match (stage, orig) {
            (Stage::PreDnat, Some(o)) => (o.dst, o.dport),
            _ => (info.tuple.dst, info.tuple.dport),
        };
        if self.guard.host_traffic_allowed() && self.w.is_local(ns, info.tuple.dst) {
            return true;
        }
        let v = self.guard.check(self.w, pod, Direction::Egress, dst, info.tuple.proto, dport);
        self.guard_verdict(
            ns,
            Some(port),
            pod,
            Direction::Egress,
            v,
            &info,
            dst,
            dport,
            tag,
            &skb.data,
        )
    }

    /// Ingress: node namespace `ns` transmits `frame` on `dev`. Returns whether it goes on.
    pub(super) fn guard_ingress(&mut self, dev: IfIndex, frame: &[u8], tag: Tag) -> bool {
        if self.guard.stage().is_none() {
            return true;
        }
        let Some(pod) = self.guard.pod_of_host_dev(dev) else { return true };
        if !self.guard.isolated(pod, Direction::Ingress) {
            return true;
        }
        let Some(ip) = frame
            .get(14..)
            .filter(|_| frame.len() > 14 && u16::from_be_bytes([frame[12], frame[13]]) == 0x0800)
        else {
            return true;
        };
        let Ok(info) = packet::parse_trusted(ip) else { return true };
        let ns = self.w.devs[dev.idx()].netns;
        let Some(nf) = self.w.netns[ns.idx()].nf.as_ref() else { return true };
        let Some((id, _, ctinfo)) = nf.conntrack.peek(&info, self.w.now) else {
            self.guard_untracked("ingress");
            return true;
        };
        if ctinfo != CtInfo::New {
            return true;
        }
        if self.guard.host_traffic_allowed() && self.opened_by_node(ns, id) {
            return true;
        }
        let (src, dport) = (info.tuple.src, info.tuple.dport);
        let v = self.guard.check(self.w, pod, Direction::Ingress, src, info.tuple.proto, dport);
        self.guard_verdict(ns, Some(dev), pod, Direction::Ingress, v, &info, src, dport, tag, ip)
    }

    /// Whether connection `id` of `ns` was opened by the node itself (its original source is
    /// one of the node's addresses).
    fn opened_by_node(&self, ns: NetnsId, id: CtId) -> bool {
        self.w.netns[ns.idx()]
            .nf
            .as_ref()
            .and_then(|nf| nf.conntrack.get(id))
            .is_some_and(|e| self.w.is_local(ns, e.orig.src))
    }

    fn guard_untracked(&mut self, dir: &str) {
        if let Some(rec) = self.w.sim.rec.as_mut() {
            rec.note_warning(format!(
                "NetworkPolicy {dir} rules were not enforced on packets conntrack never saw (bridged with bridge-nf-call-iptables=0, or NOTRACK): a policy engine cannot tell them from replies"
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn guard_verdict(
        &mut self,
        ns: NetnsId,
        dev: Option<IfIndex>,
        pod: PodId,
        dir: Direction,
        v: Verdict,
        info: &packet::PacketInfo,
        peer: Ipv4Addr,
        port: u16,
        tag: Tag,
        ip: &[u8],
    ) -> bool {
        if matches!(v, Verdict::NotIsolated)
            || (matches!(v, Verdict::Allowed { .. }) && !self.tracing())
        {
            return true;
        }
        let p = &self.w.pods[pod.idx()];
        let who = format!("{}/{}", p.namespace, p.name);
        let proto = info.tuple.proto;
        let what = if proto == Proto::ICMP {
            "ICMP".to_string()
        } else {
            format!("{} {port}", proto.to_string().to_ascii_uppercase())
        };
        let (from, to) = match dir {
            Direction::Ingress => (peer.to_string(), format!("{} {what}", info.tuple.dst)),
            Direction::Egress => (p.ip.to_string(), format!("{peer} {what}")),
        };
        match v {
            Verdict::NotIsolated => true,
            Verdict::Allowed { policy, rule } => {
                let policy = self.guard.policy_key(policy);
                let rule = format!("spec.{}[{rule}]", dir.as_str());
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Policy { direction: dir.as_str(), origin: format!("netpol/{policy}") },
                    format!("pod {who}: {from} → {to} allowed by netpol/{policy} {rule}"),
                    None,
                    None,
                );
                true
            }
            Verdict::Denied(by) => {
                let list: Vec<String> =
                    by.iter().map(|&k| format!("netpol/{}", self.guard.policy_key(k))).collect();
                let text = format!(
                    "pod {who} is isolated for {} by {}; no rule allows {from} → {to}",
                    dir.as_str(),
                    list.join(", ")
                );
                let code = match dir {
                    Direction::Ingress => DENIED_INGRESS,
                    Direction::Egress => DENIED_EGRESS,
                };
                let view = if self.tracing() { PacketView::of_ip(ip) } else { None };
                self.drop_hop(tag, ns, dev, code, text, view);
                false
            }
        }
    }

    /// A bridged frame with `bridge-nf-call-iptables=0` leaves `port` untracked: when its
    /// pod is isolated for egress, the trace says policies were not enforced on it.
    pub(super) fn guard_untracked_bridged(&mut self, port: IfIndex) {
        if self.guard.stage().is_some()
            && self
                .guard
                .pod_of_host_dev(port)
                .is_some_and(|p| self.guard.isolated(p, Direction::Egress))
        {
            self.guard_untracked("egress");
        }
    }
}
