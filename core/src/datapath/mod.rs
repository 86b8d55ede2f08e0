//! The datapath: how frames move between devices and what a forwarding namespace does with
//! them, the way Linux does it.
//!
//! - veth: what one end transmits, the peer receives.
//! - L2 segments (the VPC subnet): frames go to the port owning the destination MAC;
//!   broadcast and unknown unicast go to every other port.
//! - bridge (`net/bridge/br_input.c`, `br_forward.c`): learn the source MAC, then for a frame
//!   to the bridge's own MAC pass it up; otherwise forward to the learned port, or flood;
//!   never back out of the ingress port unless it has `hairpin_mode`.
//! - br_netfilter (`net/bridge/br_netfilter_hooks.c`), with `bridge-nf-call-iptables=1`:
//!   IPv4 frames entering the bridge run PREROUTING once, before the forwarding decision
//!   (ip_rcv will not run it again). If DNAT changed the destination and the new destination
//!   routes back out of the same bridge, the frame stays bridged with only its destination
//!   MAC rewritten ("bridged DNAT", no TTL decrement); otherwise it goes up to be routed.
//!   Bridged IPv4 frames then run FORWARD and POSTROUTING with `-i/-o cbr0` and physdev.
//! - routing (`net/ipv4/ip_input.c`, `ip_forward.c`, `ip_output.c`): local destinations go
//!   to INPUT and the namespace's stack; others need `ip_forward`, a route, TTL > 1, then
//!   FORWARD (after the TTL decrement), POSTROUTING and neighbour resolution. Local output
//!   takes OUTPUT (and is re-routed if DNAT changed it) then POSTROUTING.
//! - ARP (`net/ipv4/arp.c`): requests for any local address are answered on the receiving
//!   device (`arp_ignore=0`); requests aimed at us and replies teach the neighbour table;
//!   packets wait for resolution, and are dropped after 3 unanswered seconds.
//!
//! - the VPC fabric ([`fabric`]): what the cloud delivers by other means than a routing
//!   table (a load balancer spreading flows, replies steered back to it, addresses the VPC
//!   answers ARP for), as data the cloud and CNI layers fill in.
//!
//! Frames move with zero latency in FIFO order; virtual time advances only when nothing is
//! queued, to the next timer any host stack has. Every loop is bounded.
//!
//! The datapath works on a [`World`] through a [`Datapath`], which also holds the host
//! stacks (behind the [`HostStacks`] interface the [`host`](crate::host) layer fills, so
//! frames for a pod or a host reach its smoltcp stack) and the [`Fabric`]. It knows no
//! Kubernetes object, no kube-proxy mode and no load-balancer model.
//!
//! | file | models |
//! |---|---|
//! | [`dev`] | device transmit: veth pairs, L2 segments, receive dispatch |
//! | [`host_io`] | where frames meet host stacks: receive filtering, delivery, stack output |
//! | [`bridge`] | the Linux bridge and br_netfilter |
//! | [`ipv4`] | IPv4 receive, forward, local delivery and local output, routing lookups |
//! | [`arp`] | ARP and the neighbour output queue |
//! | [`nf`] | the netfilter glue: one hook, its trace hops and its verdict |
//! | [`reject`] | the answers REJECT sends |
//! | [`fabric`] | the cloud fabric's forwarding |
//! | [`guard`] | where a policy engine judges connections: pods' host-side interfaces |

mod arp;
mod bridge;
mod dev;
pub(crate) mod fabric;
mod guard;
mod host_io;
mod ipv4;
mod nf;
mod reject;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

use podnet_netfilter::Skb;

use crate::ids::{IfIndex, NetnsId};
use crate::trace::{Dir, HopKind, PacketView, Tag};
use crate::world::{Owner, World};

pub(crate) use fabric::{Fabric, Steer};
pub use guard::Direction;
#[cfg(test)]
pub(crate) use guard::NoGuard;
pub(crate) use guard::{Guard, Stage, Verdict};

/// Records a hop when hops are being kept; the arguments are evaluated only then, so the
/// untraced fast path formats nothing.
macro_rules! hop {
    ($c:expr, $tag:expr, $ns:expr, $dev:expr, $kind:expr, $detail:expr, $before:expr, $after:expr $(,)?) => {
        if $c.tracing() {
            $c.hop($tag, $ns, $dev, $kind, $detail, $before, $after);
        }
    };
}
pub(crate) use hop;

/// How long a packet waits for an ARP reply (3 probes, 1 s apart).
const ARP_TIMEOUT: Duration = Duration::from_secs(3);
/// Kernel log lines (`LOG` targets) a namespace keeps, oldest dropped first.
const KLOG_LINES: usize = 10_000;
/// Livelock guard: frames processed per run.
pub(crate) const MAX_EVENTS: u64 = 200_000;

/// Reasons for drops, as stable codes.
pub(crate) mod reason {
    pub const MALFORMED: &str = "malformed";
    pub const HAIRPIN_OFF: &str = "hairpin-off";
    pub const NO_ROUTE: &str = "no-route";
    pub const FORWARDING_OFF: &str = "forwarding-off";
    pub const MARTIAN_SOURCE: &str = "martian-source";
    pub const RP_FILTER: &str = "rp-filter";
    pub const TTL: &str = "ttl-exceeded";
    pub const ARP_FAILED: &str = "arp-failed";
    pub const RULE: &str = "rule";
    pub const CONNTRACK_FULL: &str = "conntrack-full";
    pub const NAT_EXHAUSTED: &str = "nat-exhausted";
    pub const NO_LISTENER: &str = "no-listener";
}

/// The host stacks of the namespaces that are not routers (pods, internet hosts, load
/// balancers) and of routers' own addresses: what the datapath hands delivered frames to.
/// The [`host`](crate::host) layer implements it.
pub(crate) trait HostStacks {
    /// Hands a received frame (Ethernet for a host with `eth0`, an IP packet for a router's
    /// own stack) to `ns`'s stack, creating the stack first if it has none yet.
    fn ingest(&mut self, w: &World, ns: NetnsId, frame: Vec<u8>);
    /// Ends client `client` of `ns`'s stack as refused (an ICMP error came back for it).
    fn refuse_client(&mut self, w: &World, ns: NetnsId, client: usize);
    /// Polls `ns`'s stack at `now`, appending what it transmitted to `out`; returns the IP
    /// packets that crossed its `lo` since the last poll, or `None` when `ns` has no stack.
    fn poll(&mut self, ns: NetnsId, now: Instant, out: &mut Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>>;
}

/// The datapath at work on a world: frames in, frames through devices, bridges, routing and
/// netfilter, frames delivered to host stacks. Built for one step of a run and dropped.
pub(crate) struct Datapath<'a, H: HostStacks> {
    /// The world the frames cross.
    pub(crate) w: &'a mut World,
    /// The host stacks frames are delivered to.
    pub(crate) hosts: &'a mut H,
    /// What the cloud fabric forwards by other means than routing tables.
    pub(crate) fabric: &'a Fabric,
    /// The policy engine: which connections pods' host-side interfaces let through.
    pub(crate) guard: &'a dyn Guard,
}

impl<H: HostStacks> Datapath<'_, H> {
    pub(super) fn dev_name(&self, d: IfIndex) -> String {
        self.w.devs[d.idx()].name.clone()
    }

    /// Whether hops are being recorded.
    pub(crate) fn tracing(&self) -> bool {
        self.w.sim.rec.as_ref().is_some_and(|r| r.keep_hops)
    }

    /// An IP packet as a hop shows it, when hops are being recorded.
    pub(super) fn ip_view(&self, ip: &[u8]) -> Option<PacketView> {
        if self.tracing() { PacketView::of_ip(ip) } else { None }
    }

    pub(crate) fn new_tag(&mut self, dir: Dir) -> Tag {
        self.w.sim.next_pkt += 1;
        Tag { dir, pkt: self.w.sim.next_pkt }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hop(
        &mut self,
        tag: Tag,
        ns: NetnsId,
        dev: Option<IfIndex>,
        kind: HopKind,
        detail: String,
        before: Option<PacketView>,
        after: Option<PacketView>,
    ) {
        if !self.tracing() {
            return;
        }
        let node = match &self.w.netns[ns.idx()].owner {
            Owner::Node(n) => Some(self.w.nodes[n.idx()].name.clone()),
            Owner::Pod(p) => Some(self.w.nodes[self.w.pods[p.idx()].node.idx()].name.clone()),
            _ => None,
        };
        let netns = self.w.netns[ns.idx()].name.clone();
        let device = dev.map(|d| self.dev_name(d));
        if let Some(rec) = self.w.sim.rec.as_mut() {
            rec.push(tag, node, netns, device, kind, detail, before, after);
        }
    }

    pub(super) fn drop_hop(
        &mut self,
        tag: Tag,
        ns: NetnsId,
        dev: Option<IfIndex>,
        code: &'static str,
        text: String,
        view: Option<PacketView>,
    ) {
        hop!(self, tag, ns, dev, HopKind::Drop { reason: code }, text.clone(), view, None);
        if let Some(rec) = self.w.sim.rec.as_mut() {
            rec.note_drop(tag, code, text);
        }
    }

    /// `node's` or `pod's` (a routed pod of the AWS profile has our L3 code and a stack).
    pub(super) fn whose(&self, ns: NetnsId) -> &'static str {
        match self.w.netns[ns.idx()].owner {
            Owner::Pod(_) => "pod's",
            _ => "node's",
        }
    }
}

/// The IPv4 packet of an Ethernet frame as an skb, in the frame's own buffer (the header
/// moves out of the way; the buffer keeps room for it to come back at the next hop).
pub(super) fn skb_of_frame(mut frame: Vec<u8>) -> Skb {
    let mac_header = frame.get(..ETH_HEADER).and_then(|h| h.try_into().ok());
    frame.drain(..ETH_HEADER.min(frame.len()));
    let mut skb = Skb::new(frame);
    skb.mac_header = mac_header;
    skb
}

/// Ethernet's header length.
const ETH_HEADER: usize = 14;

/// [`eth_frame`] in the packet's own buffer: the header is put in front of it (no new buffer
/// when it came off a frame, see [`skb_of_frame`]).
pub(super) fn eth_frame_around(
    src: EthernetAddress,
    dst: EthernetAddress,
    mut ip: Vec<u8>,
) -> Vec<u8> {
    let n = ip.len();
    ip.resize(n + ETH_HEADER, 0);
    ip.copy_within(..n, ETH_HEADER);
    let repr = EthernetRepr { src_addr: src, dst_addr: dst, ethertype: EthernetProtocol::Ipv4 };
    repr.emit(&mut EthernetFrame::new_unchecked(&mut ip[..]));
    ip
}

pub(crate) fn eth_frame(src: EthernetAddress, dst: EthernetAddress, ip: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr { src_addr: src, dst_addr: dst, ethertype: EthernetProtocol::Ipv4 };
    let mut f = vec![0u8; repr.buffer_len() + ip.len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    repr.emit(&mut e);
    e.payload_mut().copy_from_slice(ip);
    f
}

pub(super) fn arp_frame(
    op: ArpOperation,
    sha: EthernetAddress,
    spa: Ipv4Addr,
    tha: EthernetAddress,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_hardware_addr: tha,
        target_protocol_addr: tpa,
    };
    let dst = if op == ArpOperation::Request { EthernetAddress::BROADCAST } else { tha };
    let eth = EthernetRepr { src_addr: sha, dst_addr: dst, ethertype: EthernetProtocol::Arp };
    let mut f = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    eth.emit(&mut e);
    arp.emit(&mut ArpPacket::new_unchecked(e.payload_mut()));
    f
}

pub(super) fn build_ip(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr =
        Ipv4Repr { src_addr: src, dst_addr: dst, next_header: proto, payload_len, hop_limit: 64 };
    let mut b = vec![0u8; repr.buffer_len() + payload_len];
    let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
    repr.emit(&mut p, &ChecksumCapabilities::default());
    fill(p.payload_mut());
    b
}
