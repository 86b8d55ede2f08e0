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
//! Frames move with zero latency in FIFO order; virtual time advances only when nothing is
//! queued, to the next timer any host stack has. Every loop is bounded.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use podnet_netfilter::hook::{DropCause, HookEnv, HookReport, HookVerdict};
use podnet_netfilter::packet::{self, Manip};
use podnet_netfilter::rule::{RejectWith, addrtype};
use podnet_netfilter::{Hook, Skb};

use crate::cluster::{Cluster, DeviceKind, Owner};
use crate::ids::{IfIndex, NetnsId};
use crate::net::Mac;
use crate::stack::{Side, Stack};
use crate::trace::{Dir, HopKind, PacketView, Recorder};

/// Records a hop when hops are being kept; the arguments are evaluated only then, so the
/// untraced fast path formats nothing.
macro_rules! hop {
    ($c:expr, $tag:expr, $ns:expr, $dev:expr, $kind:expr, $detail:expr, $before:expr, $after:expr $(,)?) => {
        if $c.tracing() {
            $c.hop($tag, $ns, $dev, $kind, $detail, $before, $after);
        }
    };
}

/// Which packet of a flow a frame carries, and which way it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) dir: Dir,
    pub(crate) pkt: u32,
}

pub(crate) struct Event {
    dev: IfIndex,
    frame: Vec<u8>,
    tag: Tag,
}

/// A packet waiting for ARP.
pub(crate) struct Pending {
    ns: NetnsId,
    dev: IfIndex,
    nexthop: Ipv4Addr,
    skb: Skb,
    tag: Tag,
    deadline: Instant,
    /// For bridged DNAT: (bridge, ingress port, original source MAC).
    bridged: Option<(IfIndex, IfIndex, EthernetAddress)>,
}

impl Pending {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// The namespaces whose stacks a run touched, in namespace order: a sorted list, since a
/// run touches a few (the client's, the server's, a node's) and every delivered packet
/// asks to be in it.
#[derive(Default)]
pub(crate) struct ActiveSet(Vec<NetnsId>);

impl ActiveSet {
    /// Adds `ns` if it is not in the set yet.
    #[inline]
    pub(crate) fn insert(&mut self, ns: NetnsId) {
        if let Err(at) = self.0.binary_search(&ns) {
            self.0.insert(at, ns);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// The namespaces, in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, NetnsId> {
        self.0.iter()
    }
}

/// Queues and the trace recorder.
#[derive(Default)]
pub(crate) struct SimState {
    pub(crate) queue: VecDeque<Event>,
    pub(crate) pending: Vec<Pending>,
    pub(crate) rec: Option<Recorder>,
    pub(crate) next_pkt: u32,
    /// Stacks touched by the current run (polled when time advances).
    pub(crate) active: ActiveSet,
    pub(crate) events: u64,
    /// Extra exchanges the current run makes (a flow's rounds after its first); each may
    /// process [`MAX_EVENTS`] more frames before the livelock guard trips.
    pub(crate) extra_rounds: u64,
    /// Frames as devices received them, while a trace captures.
    pub(crate) capture: Option<Vec<(Instant, IfIndex, Vec<u8>)>>,
    /// What a host stack's poll transmitted, on its way out (kept, so a poll allocates no
    /// list).
    pub(crate) host_out: Vec<Vec<u8>>,
}

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
    pub const TTL: &str = "ttl-exceeded";
    pub const ARP_FAILED: &str = "arp-failed";
    pub const RULE: &str = "rule";
    pub const CONNTRACK_FULL: &str = "conntrack-full";
    pub const NAT_EXHAUSTED: &str = "nat-exhausted";
    pub const NO_LISTENER: &str = "no-listener";
}

impl Cluster {
    fn dev_name(&self, d: IfIndex) -> String {
        self.devs[d.idx()].name.clone()
    }

    /// Whether hops are being recorded.
    pub(crate) fn tracing(&self) -> bool {
        self.sim.rec.as_ref().is_some_and(|r| r.keep_hops)
    }

    /// An IP packet as a hop shows it, when hops are being recorded.
    fn ip_view(&self, ip: &[u8]) -> Option<PacketView> {
        if self.tracing() { PacketView::of_ip(ip) } else { None }
    }

    pub(crate) fn new_tag(&mut self, dir: Dir) -> Tag {
        self.sim.next_pkt += 1;
        Tag { dir, pkt: self.sim.next_pkt }
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
        let node = match &self.netns[ns.idx()].owner {
            Owner::Node(n) => Some(self.nodes[n.idx()].name.clone()),
            Owner::Pod(p) => Some(self.nodes[self.pods[p.idx()].node.idx()].name.clone()),
            _ => None,
        };
        let netns = self.netns[ns.idx()].name.clone();
        let device = dev.map(|d| self.dev_name(d));
        if let Some(rec) = self.sim.rec.as_mut() {
            rec.push(tag, node, netns, device, kind, detail, before, after);
        }
    }

    fn drop_hop(
        &mut self,
        tag: Tag,
        ns: NetnsId,
        dev: Option<IfIndex>,
        code: &'static str,
        text: String,
        view: Option<PacketView>,
    ) {
        hop!(self, tag, ns, dev, HopKind::Drop { reason: code }, text.clone(), view, None);
        if let Some(rec) = self.sim.rec.as_mut() {
            rec.note_drop(tag, code, text);
        }
    }

    /// A frame leaves `dev`.
    pub(crate) fn dev_xmit(&mut self, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
        match &self.devs[dev.idx()].kind {
            &DeviceKind::Veth { peer } => self.sim.queue.push_back(Event { dev: peer, frame, tag }),
            &DeviceKind::Ether { segment } => {
                let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else { return };
                let dst = eth.dst_addr();
                let ports = &self.segments[segment.idx()].ports;
                let owner =
                    ports.iter().copied().find(|&p| p != dev && self.devs[p.idx()].mac == dst);
                match owner {
                    Some(p) if dst.is_unicast() => {
                        self.sim.queue.push_back(Event { dev: p, frame, tag })
                    }
                    _ => {
                        for &p in ports.iter().filter(|&&p| p != dev) {
                            self.sim.queue.push_back(Event { dev: p, frame: frame.clone(), tag });
                        }
                    }
                }
            }
            DeviceKind::Bridge(_) => self.bridge_output(dev, frame, tag),
            DeviceKind::Loopback | DeviceKind::Dummy => {
                self.sim.queue.push_back(Event { dev, frame, tag })
            }
        }
    }

    /// Queues a frame for reception on `dev`.
    pub(crate) fn deliver(&mut self, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
        self.sim.queue.push_back(Event { dev, frame, tag });
    }

    /// Processes every queued frame; returns false if the livelock guard tripped.
    pub(crate) fn run_queue(&mut self) -> bool {
        while let Some(ev) = self.sim.queue.pop_front() {
            self.sim.events += 1;
            if self.sim.events > MAX_EVENTS * (1 + self.sim.extra_rounds) {
                self.sim.queue.clear();
                return false;
            }
            self.rx(ev);
        }
        true
    }

    fn rx(&mut self, ev: Event) {
        let Event { dev, frame, tag } = ev;
        let now = self.now;
        if let Some(cap) = self.sim.capture.as_mut() {
            cap.push((now, dev, frame.clone()));
        }
        let ns = self.devs[dev.idx()].netns;
        let router = self.netns[ns.idx()].router;
        // A forwarding namespace's bridge port hands the frame to its bridge.
        let bridge = self.devs[dev.idx()].master.filter(|_| router);
        hop!(
            self,
            tag,
            ns,
            Some(dev),
            HopKind::Rx,
            match bridge {
                Some(br) => format!("received on bridge port of {}", self.dev_name(br)),
                None => "received".into(),
            },
            PacketView::of_frame(&frame),
            None,
        );
        match (router, bridge) {
            (false, _) => self.endpoint_rx(ns, dev, frame, tag),
            (true, Some(br)) => self.bridge_rx(br, dev, frame, tag),
            (true, None) => self.l2_rx(ns, dev, frame, tag),
        }
    }

    // ----- hosts (pods, internet hosts): smoltcp stacks -----

    pub(crate) fn ensure_stack(&mut self, ns: NetnsId) {
        if self.netns[ns.idx()].stack.is_some() {
            return;
        }
        let seed =
            self.cfg.seed.wrapping_mul(0x9e37_79b9).wrapping_add(u64::from(ns.0) * 0x1000_0001 + 1);
        let now = self.now;
        let n = &self.netns[ns.idx()];
        let eth0 = self.dev_named(ns, "eth0");
        let mut stack = match n.owner {
            // Forwarding namespaces (and anything without an eth0) get an IP-medium stack
            // holding all their addresses: local destinations nobody serves answer like the
            // kernel (RST, port unreachable).
            _ if n.router || eth0.is_none() => {
                let addrs: Vec<(Ipv4Addr, u8)> = n
                    .devs
                    .iter()
                    .flat_map(|d| self.devs[d.idx()].addrs.iter())
                    .filter(|a| !a.ip().is_loopback())
                    .map(|a| (a.ip(), a.prefix()))
                    .collect();
                let name = match n.owner {
                    Owner::Node(node) => self.nodes[node.idx()].name.clone(),
                    Owner::Pod(p) => self.pods[p.idx()].name.clone(),
                    _ => n.name.clone(),
                };
                Stack::ip(&name, &addrs, matches!(n.owner, Owner::Pod(_)), seed, now)
            }
            _ => {
                let d = &self.devs[eth0.expect("checked above").idx()];
                let a = d.addrs[0];
                let gw = n.routes.lookup(Ipv4Addr::new(1, 1, 1, 1)).and_then(|r| r.via);
                let name = match n.owner {
                    Owner::Pod(p) => self.pods[p.idx()].name.clone(),
                    _ => n.name.trim_start_matches("host/").to_string(),
                };
                Stack::ethernet(
                    &name,
                    d.mac,
                    a.ip(),
                    a.prefix(),
                    gw,
                    matches!(n.owner, Owner::Pod(_)),
                    seed,
                    now,
                )
            }
        };
        let l7 = self.l7_of(ns);
        for &(proto, port) in n.ports.keys() {
            if l7
                .as_ref()
                .is_none_or(|(p, ..)| !(proto == podnet_netfilter::Proto::TCP && port == *p))
            {
                stack.serve(proto, port);
            }
        }
        if let Some((port, matching, rules, default)) = l7 {
            stack.serve_l7(port, matching, rules, default);
        }
        stack.health = n.health.clone();
        self.netns[ns.idx()].stack = Some(Box::new(stack));
    }

    /// Parses a frame received on `dev` and keeps it only if it is addressed to `dev` (its
    /// MAC, broadcast or multicast), as `eth_type_trans` marks anything else
    /// PACKET_OTHERHOST and the stack ignores it. Records the drop or the ignore.
    fn frame_for<'f>(
        &mut self,
        ns: NetnsId,
        dev: IfIndex,
        frame: &'f [u8],
        tag: Tag,
    ) -> Option<EthernetFrame<&'f [u8]>> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.drop_hop(
                tag,
                ns,
                Some(dev),
                reason::MALFORMED,
                "truncated Ethernet frame".into(),
                None,
            );
            return None;
        };
        let mac = self.devs[dev.idx()].mac;
        let dst = eth.dst_addr();
        if dst != mac && !dst.is_broadcast() && !dst.is_multicast() {
            hop!(
                self,
                tag,
                ns,
                Some(dev),
                HopKind::Ignore,
                format!(
                    "frame for {} is not for {} ({}): PACKET_OTHERHOST, ignored",
                    Mac(dst),
                    self.dev_name(dev),
                    Mac(mac)
                ),
                None,
                None
            );
            return None;
        }
        Some(eth)
    }

    fn endpoint_rx(&mut self, ns: NetnsId, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
        let Some(eth) = self.frame_for(ns, dev, &frame, tag) else { return };
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                if let Ok(arp) = ArpPacket::new_checked(eth.payload())
                    && let Ok(ArpRepr::EthernetIpv4 {
                        operation,
                        source_hardware_addr,
                        source_protocol_addr,
                        target_protocol_addr,
                        ..
                    }) = ArpRepr::parse(&arp)
                {
                    let mine =
                        self.devs[dev.idx()].addrs.iter().any(|a| a.ip() == target_protocol_addr);
                    if mine || operation == ArpOperation::Reply {
                        let now = self.now;
                        self.netns[ns.idx()].neigh.update(
                            source_protocol_addr,
                            source_hardware_addr,
                            dev,
                            now,
                        );
                    }
                }
            }
            EthernetProtocol::Ipv4 => {
                // Read once for the recorder: who got the request or the answer, and whether
                // it is an ICMP error that ends the client's attempt.
                let refused = match (self.sim.rec.as_mut(), packet::parse_trusted(eth.payload())) {
                    (Some(rec), Ok(info)) => {
                        rec.observe_host_rx(ns, &info, tag);
                        rec.refusal(ns, &info)
                    }
                    _ => None,
                };
                if let Some((idx, _)) = refused {
                    self.ensure_stack(ns);
                    if let Some(st) = self.netns[ns.idx()].stack.as_mut() {
                        st.refuse_client(idx);
                    }
                }
            }
            _ => {}
        }
        self.ensure_stack(ns);
        self.sim.active.insert(ns);
        self.netns[ns.idx()].stack.as_mut().expect("ensured").ingest(Side::Main, frame);
        self.poll_stack(ns);
    }

    /// Polls a namespace's stack at the current time and sends what it transmitted; packets
    /// that crossed `lo` are recorded as hops on `lo`.
    pub(crate) fn poll_stack(&mut self, ns: NetnsId) {
        let now = self.now;
        let Some(st) = self.netns[ns.idx()].stack.as_mut() else { return };
        let mut out = std::mem::take(&mut self.sim.host_out);
        st.poll(now, &mut out);
        let looped: Vec<Vec<u8>> = std::mem::take(&mut st.lo_log);
        let lo = self.netns[ns.idx()].devs[0];
        for ip in looped {
            let dir = match (&self.sim.rec, packet::parse(&ip)) {
                (Some(r), Ok(i)) if r.is_client_port(i.tuple.sport) => Dir::Request,
                _ => Dir::Reply,
            };
            let tag = self.new_tag(dir);
            hop!(
                self,
                tag,
                ns,
                Some(lo),
                HopKind::Tx,
                "sent over loopback".into(),
                PacketView::of_ip(&ip),
                None,
            );
            hop!(
                self,
                tag,
                ns,
                Some(lo),
                HopKind::Rx,
                "received over loopback".into(),
                PacketView::of_ip(&ip),
                None,
            );
            if let Some(rec) = self.sim.rec.as_mut() {
                rec.observe_loopback(ns, &ip, tag);
            }
        }
        self.host_tx(ns, &mut out);
        self.sim.host_out = out;
    }

    /// Sends what a host stack transmitted out of its `eth0`, emptying `frames`.
    pub(crate) fn host_tx(&mut self, ns: NetnsId, frames: &mut Vec<Vec<u8>>) {
        if frames.is_empty() {
            return;
        }
        if self.netns[ns.idx()].router {
            // A node's own stack: IP packets into local output.
            for ip in frames.drain(..) {
                let dir = self.dir_of(ns, Some(&ip));
                let tag = self.new_tag(dir);
                hop!(
                    self,
                    tag,
                    ns,
                    None,
                    HopKind::Tx,
                    format!("sent by the {} own stack", self.whose(ns)),
                    PacketView::of_ip(&ip),
                    None,
                );
                self.local_out(ns, Skb::new(ip), tag);
            }
            return;
        }
        let eth0 = self.dev_named(ns, "eth0").expect("host has eth0");
        for f in frames.drain(..) {
            let ip = EthernetFrame::new_checked(&f[..])
                .ok()
                .filter(|e| e.ethertype() == EthernetProtocol::Ipv4)
                .map(|_| &f[EthernetFrame::<&[u8]>::header_len()..]);
            let dir = self.dir_of(ns, ip);
            let tag = self.new_tag(dir);
            hop!(
                self,
                tag,
                ns,
                Some(eth0),
                HopKind::Tx,
                "sent".into(),
                PacketView::of_frame(&f),
                None,
            );
            self.dev_xmit(eth0, f, tag);
        }
    }

    fn dir_of(&self, ns: NetnsId, ip: Option<&[u8]>) -> Dir {
        match &self.sim.rec {
            Some(r) => r.dir_of_sent(ns, ip),
            None => Dir::Request,
        }
    }

    // ----- forwarding namespaces -----

    fn l2_rx(&mut self, ns: NetnsId, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
        let Some(eth) = self.frame_for(ns, dev, &frame, tag) else { return };
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let payload = eth.payload().to_vec();
                self.arp_rx(ns, dev, &payload, tag);
            }
            EthernetProtocol::Ipv4 => {
                let skb = skb_of_frame(frame);
                self.ip_rcv(ns, dev, skb, tag, false);
            }
            other => {
                hop!(
                    self,
                    tag,
                    ns,
                    Some(dev),
                    HopKind::Ignore,
                    format!("ethertype {other} not modelled: ignored"),
                    None,
                    None,
                );
            }
        }
    }

    fn arp_rx(&mut self, ns: NetnsId, dev: IfIndex, payload: &[u8], tag: Tag) {
        let parsed = ArpPacket::new_checked(payload).ok().and_then(|p| ArpRepr::parse(&p).ok());
        let Some(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        }) = parsed
        else {
            self.drop_hop(
                tag,
                ns,
                Some(dev),
                reason::MALFORMED,
                "malformed ARP packet".into(),
                None,
            );
            return;
        };
        // In the AWS VPC CNI profile the VPC delivers ENI secondary addresses itself: its
        // router answers ARP for them and forwards to the ENI that holds the address.
        let vpc_proxy = ns == self.vpc && self.is_eni_secondary(tpa);
        // The internet gateway answers for pass-through LB addresses it routes inward.
        let igw_proxy = Some(ns) == self.edge.igw
            && self
                .edge
                .lbs
                .iter()
                .any(|l| l.mode == crate::cloud::LbMode::PassThrough && l.public_ip == tpa);
        let local = self.is_local(ns, tpa) || vpc_proxy || igw_proxy;
        let now = self.now;
        if local
            || operation == ArpOperation::Reply
            || self.netns[ns.idx()].neigh.lookup(spa).is_some()
        {
            let changed = self.netns[ns.idx()].neigh.update(spa, sha, dev, now);
            if changed {
                hop!(
                    self,
                    tag,
                    ns,
                    Some(dev),
                    HopKind::Neigh,
                    format!("neighbour {spa} lladdr {} REACHABLE (learned from ARP)", Mac(sha)),
                    None,
                    None,
                );
            }
        }
        if operation == ArpOperation::Request && local {
            let mac = self.devs[dev.idx()].mac;
            let reply = arp_frame(ArpOperation::Reply, mac, tpa, sha, spa);
            let detail = if vpc_proxy {
                format!(
                    "ARP reply {tpa} is-at {} (to {spa}): an ENI secondary address, delivered by the VPC",
                    Mac(mac)
                )
            } else {
                format!("ARP reply {tpa} is-at {} (to {spa})", Mac(mac))
            };
            hop!(self, tag, ns, Some(dev), HopKind::Arp, detail, None, None);
            self.dev_xmit(dev, reply, tag);
        }
        self.flush_pending(ns, spa);
    }

    /// `node's` or `pod's` (a routed pod of the AWS profile has our L3 code and a stack).
    fn whose(&self, ns: NetnsId) -> &'static str {
        match self.netns[ns.idx()].owner {
            Owner::Pod(_) => "pod's",
            _ => "node's",
        }
    }

    /// Whether `a` is an address of this namespace (the kernel's local table).
    pub(crate) fn is_local(&self, ns: NetnsId, a: Ipv4Addr) -> bool {
        debug_assert_eq!(
            self.netns[ns.idx()].local,
            self.addrs_in(ns),
            "a device's addresses changed without Cluster::set_addrs"
        );
        a.is_loopback() || self.netns[ns.idx()].local.contains(&a)
    }

    /// Runs one netfilter hook in `ns` with trace hops; returns whether the packet goes on.
    /// A namespace without netfilter (a pod's) lets every packet on, checked inline.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn nf_hook(
        &mut self,
        ns: NetnsId,
        hook: Hook,
        skb: &mut Skb,
        tag: Tag,
        in_dev: Option<IfIndex>,
        out_dev: Option<IfIndex>,
        phys: (Option<IfIndex>, Option<IfIndex>),
        masq_addr: Option<Ipv4Addr>,
    ) -> bool {
        self.netns[ns.idx()].nf.is_none()
            || self.nf_hook_run(ns, hook, skb, tag, in_dev, out_dev, phys, masq_addr)
    }

    /// [`Cluster::nf_hook`] in a namespace that has netfilter.
    #[allow(clippy::too_many_arguments)]
    fn nf_hook_run(
        &mut self,
        ns: NetnsId,
        hook: Hook,
        skb: &mut Skb,
        tag: Tag,
        in_dev: Option<IfIndex>,
        out_dev: Option<IfIndex>,
        phys: (Option<IfIndex>, Option<IfIndex>),
        masq_addr: Option<Ipv4Addr>,
    ) -> bool {
        let Some(mut nf) = self.netns[ns.idx()].nf.take() else { return true };
        // Asked only when a rule has `-m addrtype`: the namespace's addresses, looked up in
        // place (nothing is collected per packet).
        let addr_type = |a: Ipv4Addr, dev: Option<&str>| -> u16 {
            let local = a.is_loopback()
                || self.netns[ns.idx()].devs.iter().any(|d| {
                    let d = &self.devs[d.idx()];
                    d.addrs.iter().any(|x| x.ip() == a) && dev.is_none_or(|want| want == d.name)
                });
            if local { addrtype::LOCAL } else { addrtype::UNICAST }
        };
        let name = |d: Option<IfIndex>| d.map(|d| self.devs[d.idx()].name.as_str());
        let tracing = self.tracing();
        // Boxed, so that with hops off the empty view is dropped without a call.
        let before = if tracing { PacketView::of_ip(&skb.data).map(Box::new) } else { None };
        let env = HookEnv {
            in_iface: name(in_dev),
            out_iface: name(out_dev),
            physdev_in: name(phys.0),
            physdev_out: name(phys.1),
            bridged: phys.0.is_some() || phys.1.is_some(),
            masq_addr,
            addr_type: &addr_type,
            now: self.now,
            trace: tracing,
        };
        let mut report = HookReport::accept();
        nf.hook_into(hook, skb, &env, &mut report);
        let ct_line = match &skb.ct {
            podnet_netfilter::CtRef::Confirmed(id, _, _)
                if tracing && (report.confirmed || !report.nat.is_empty()) =>
            {
                nf.conntrack
                    .get(*id)
                    .map(|e| podnet_netfilter::conntrack::format_entry(e, self.now))
            }
            _ => None,
        };
        self.netns[ns.idx()].nf = Some(nf);
        // A packet's usual hook, tracing off: accepted, no rule to show, no line to log.
        if !tracing && report.is_quiet_accept() {
            // Such a report holds nothing to free (no notes, no drop text): forgetting it
            // spares the drop glue's call on every hook.
            std::mem::forget(report);
            return true;
        }
        self.nf_hook_outcome(ns, hook, skb, tag, in_dev.or(out_dev), &report, before, ct_line)
    }

    /// What [`Cluster::nf_hook_run`] makes of a hook's report beyond a quiet accept: the
    /// kernel log, the trace's hops, and a drop or reject. Kept out of line, so that the
    /// usual hook's code stays small.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn nf_hook_outcome(
        &mut self,
        ns: NetnsId,
        hook: Hook,
        skb: &Skb,
        tag: Tag,
        dev: Option<IfIndex>,
        report: &HookReport,
        before: Option<Box<PacketView>>,
        ct_line: Option<String>,
    ) -> bool {
        let tracing = self.tracing();
        if !report.logs().is_empty() {
            let klog = &mut self.netns[ns.idx()].klog;
            klog.extend(report.logs().iter().cloned());
            if klog.len() > KLOG_LINES {
                let extra = klog.len() - KLOG_LINES;
                klog.drain(..extra);
            }
        }
        if tracing {
            for line in report.logs() {
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Log { hook },
                    format!("kernel: {line}"),
                    None,
                    None,
                );
            }
            for h in report.hits() {
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Rule {
                        hook,
                        table: h.table,
                        chain: h.chain.clone(),
                        rule_num: h.rule_num,
                        rule: h.rule.clone(),
                        comment: h.comment.clone(),
                    },
                    String::new(),
                    None,
                    None,
                );
            }
            for n in &report.nat {
                use podnet_netfilter::Direction;
                let what = match (n.manip, n.decided_here, n.dir) {
                    (Manip::Dst, true, _) if report.ipvs.is_some() => "IPVS: scheduled, DNAT",
                    (Manip::Dst, true, _) => "DNAT",
                    (Manip::Src, true, _) => "SNAT",
                    (Manip::Dst, false, Direction::Original) => {
                        "conntrack: DNAT of the established connection"
                    }
                    (Manip::Src, false, Direction::Original) => {
                        "conntrack: SNAT of the established connection"
                    }
                    (Manip::Dst, false, Direction::Reply) => {
                        "conntrack: reverse SNAT (destination restored)"
                    }
                    (Manip::Src, false, Direction::Reply) => {
                        "conntrack: reverse DNAT (source restored)"
                    }
                };
                let detail = format!("{what} {}:{} -> {}:{}", n.from.0, n.from.1, n.to.0, n.to.1);
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Nat { hook },
                    detail,
                    before.as_deref().cloned(),
                    PacketView::of_ip(&skb.data),
                );
            }
            if let Some(line) = ct_line {
                let verb =
                    if report.confirmed { "conntrack: new entry" } else { "conntrack: entry used" };
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Conntrack { hook },
                    format!("{verb}: {line}"),
                    None,
                    None,
                );
            }
        }
        match &report.verdict {
            HookVerdict::Accept => true,
            HookVerdict::Drop(cause) => {
                let (code, text) = match cause {
                    DropCause::Rule => {
                        (reason::RULE, format!("dropped by a DROP rule or policy in {hook}"))
                    }
                    DropCause::Malformed(m) => (reason::MALFORMED, m.clone()),
                    DropCause::ConntrackFull => {
                        (reason::CONNTRACK_FULL, "nf_conntrack: table full, dropping packet".into())
                    }
                    DropCause::ConntrackClash => {
                        (reason::CONNTRACK_FULL, "nf_conntrack: insert clash".into())
                    }
                    DropCause::NatExhausted => {
                        (reason::NAT_EXHAUSTED, "no free source port for SNAT/MASQUERADE".into())
                    }
                    DropCause::NoMasqAddress => (
                        reason::NAT_EXHAUSTED,
                        "MASQUERADE: no address on the output device".into(),
                    ),
                };
                self.drop_hop(tag, ns, dev, code, text, PacketView::of_ip(&skb.data));
                false
            }
            &HookVerdict::Reject(with) => {
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Drop { reason: reason::RULE },
                    format!("REJECT --reject-with {} in {hook}", with.name()),
                    PacketView::of_ip(&skb.data),
                    None,
                );
                if let Some(rec) = self.sim.rec.as_mut() {
                    rec.note_reject(tag, with);
                }
                self.send_reject(ns, &skb.data, with, tag);
                false
            }
        }
    }

    fn ip_rcv(&mut self, ns: NetnsId, dev: IfIndex, mut skb: Skb, tag: Tag, prerouting_done: bool) {
        // `ip_rcv`'s header checks. A namespace with netfilter makes them in its PREROUTING
        // hook (here, or on the bridge before), dropping as malformed with the same reason;
        // that hook reads the transport header too, which without netfilter only the
        // delivering host does (`local_in`).
        let checked = prerouting_done || self.netns[ns.idx()].nf.is_some();
        if !checked && let Err(e) = packet::check_header(&skb.data) {
            self.drop_hop(tag, ns, Some(dev), reason::MALFORMED, e.to_string(), None);
            return;
        }
        if !prerouting_done
            && !self.nf_hook(
                ns,
                Hook::PreRouting,
                &mut skb,
                tag,
                Some(dev),
                None,
                (None, None),
                None,
            )
        {
            return;
        }
        let dst = Ipv4Packet::new_unchecked(&skb.data[..]).dst_addr();
        if self.is_local(ns, dst) {
            self.local_in(ns, dev, skb, tag);
        } else {
            self.forward(ns, dev, &mut skb, tag);
        }
    }

    pub(crate) fn route(
        &self,
        ns: NetnsId,
        src: Option<Ipv4Addr>,
        dst: Ipv4Addr,
    ) -> Option<(IfIndex, Ipv4Addr, Option<Ipv4Addr>)> {
        let n = &self.netns[ns.idx()];
        let r = n.policy.lookup(&n.routes, src, dst)?;
        Some((r.dev, r.via.unwrap_or(dst), r.src))
    }

    fn source_for(
        &self,
        ns: NetnsId,
        dev: IfIndex,
        towards: Ipv4Addr,
        prefsrc: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        prefsrc.or_else(|| {
            let addrs = &self.devs[dev.idx()].addrs;
            addrs
                .iter()
                .find(|a| {
                    Ipv4Network::new(a.network(), a.prefix()).is_ok_and(|n| n.contains(towards))
                })
                .or(addrs.first())
                .map(|a| a.ip())
                // A device without addresses (a routed veth): the kernel picks another
                // device's address (`inet_select_addr`).
                .or_else(|| {
                    self.netns[ns.idx()]
                        .devs
                        .iter()
                        .flat_map(|d| &self.devs[d.idx()].addrs)
                        .find(|a| !a.ip().is_loopback())
                        .map(|a| a.ip())
                })
        })
    }

    fn forward(&mut self, ns: NetnsId, in_dev: IfIndex, skb: &mut Skb, tag: Tag) {
        if !self.netns[ns.idx()].sysctl.ip_forward {
            self.drop_hop(
                tag,
                ns,
                Some(in_dev),
                reason::FORWARDING_OFF,
                "net.ipv4.ip_forward=0: not forwarding".into(),
                self.ip_view(&skb.data),
            );
            return;
        }
        let (src, dst, ttl) = {
            let p = Ipv4Packet::new_unchecked(&skb.data[..]);
            (p.src_addr(), p.dst_addr(), p.hop_limit())
        };
        let edge = self.edge_nexthop(ns, &skb.data);
        let routed = match &edge {
            Some((hop_to, _)) => self.route(ns, None, *hop_to),
            None => self.route(ns, Some(src), dst),
        };
        let Some((out, nexthop, prefsrc)) = routed else {
            self.drop_hop(
                tag,
                ns,
                Some(in_dev),
                reason::NO_ROUTE,
                format!("no route to {dst}"),
                self.ip_view(&skb.data),
            );
            return;
        };
        if let Some((_, why)) = edge {
            hop!(self, tag, ns, Some(in_dev), HopKind::Route, why, None, None);
        }
        hop!(
            self,
            tag,
            ns,
            Some(in_dev),
            HopKind::Route,
            format!(
                "route {dst}{} dev {}: forward",
                if nexthop == dst { String::new() } else { format!(" via {nexthop}") },
                self.dev_name(out)
            ),
            None,
            None,
        );
        if ttl <= 1 {
            self.drop_hop(
                tag,
                ns,
                Some(in_dev),
                reason::TTL,
                "TTL expired in transit (ICMP time exceeded not modelled)".into(),
                self.ip_view(&skb.data),
            );
            return;
        }
        skb.decrease_ttl();
        if !self.nf_hook(ns, Hook::Forward, skb, tag, Some(in_dev), Some(out), (None, None), None) {
            return;
        }
        self.post_routing(ns, out, nexthop, prefsrc, skb, tag);
    }

    /// POSTROUTING, then the neighbour layer (`ip_finish_output`). The address MASQUERADE
    /// would take is worked out only when netfilter may still ask for it: a namespace
    /// without netfilter, or a packet whose connection's NAT is settled, never asks.
    fn post_routing(
        &mut self,
        ns: NetnsId,
        out: IfIndex,
        nexthop: Ipv4Addr,
        prefsrc: Option<Ipv4Addr>,
        skb: &mut Skb,
        tag: Tag,
    ) {
        let asked = self.netns[ns.idx()].nf.is_some() && skb.may_masquerade();
        let masq = if asked { self.source_for(ns, out, nexthop, prefsrc) } else { None };
        if !self.nf_hook(ns, Hook::PostRouting, skb, tag, None, Some(out), (None, None), masq) {
            return;
        }
        self.neigh_output(ns, out, nexthop, skb, tag);
    }

    fn local_in(&mut self, ns: NetnsId, dev: IfIndex, mut skb: Skb, tag: Tag) {
        if !self.nf_hook(ns, Hook::Input, &mut skb, tag, Some(dev), None, (None, None), None) {
            return;
        }
        let dst = Ipv4Packet::new_unchecked(&skb.data[..]).dst_addr();
        if !self.is_local(ns, dst) {
            // IPVS rewrote the destination to a real server (ip_vs_nat_xmit): route it out.
            self.ipvs_xmit(ns, skb, tag);
            return;
        }
        // The transport header, as the stack reads it: netfilter's hooks read it already (a
        // packet they could not read went no further) and left their reading with the packet;
        // a namespace without netfilter reads it here first.
        let read = skb.reading().copied().map_or_else(|| packet::parse_trusted(&skb.data), Ok);
        let info = match read {
            Ok(info) => info,
            Err(e) => {
                self.drop_hop(tag, ns, Some(dev), reason::MALFORMED, e.to_string(), None);
                return;
            }
        };
        hop!(
            self,
            tag,
            ns,
            Some(dev),
            HopKind::Deliver,
            format!("local delivery to the {} stack", self.whose(ns)),
            PacketView::of_ip(&skb.data),
            None,
        );
        if let Some(rec) = self.sim.rec.as_mut() {
            rec.observe_host_rx(ns, &info, tag);
        }
        self.ensure_stack(ns);
        self.sim.active.insert(ns);
        self.netns[ns.idx()].stack.as_mut().expect("ensured").ingest(Side::Main, skb.data);
        self.poll_stack(ns);
    }

    /// What IPVS does with a scheduled packet in NAT mode: route to the real server, then
    /// POSTROUTING (masquerade, conntrack confirm) and the neighbour layer.
    fn ipvs_xmit(&mut self, ns: NetnsId, mut skb: Skb, tag: Tag) {
        let (src, dst) = {
            let p = Ipv4Packet::new_unchecked(&skb.data[..]);
            (p.src_addr(), p.dst_addr())
        };
        let Some((out, nexthop, prefsrc)) = self.route(ns, Some(src), dst) else {
            self.drop_hop(
                tag,
                ns,
                None,
                reason::NO_ROUTE,
                format!("IPVS: no route to real server {dst}"),
                PacketView::of_ip(&skb.data),
            );
            return;
        };
        hop!(
            self,
            tag,
            ns,
            Some(out),
            HopKind::Route,
            format!("IPVS: route real server {dst} via {nexthop} dev {}", self.dev_name(out)),
            None,
            None
        );
        self.post_routing(ns, out, nexthop, prefsrc, &mut skb, tag);
    }

    /// Output of locally generated packets (`__ip_local_out`, `ip_output`).
    pub(crate) fn local_out(&mut self, ns: NetnsId, mut skb: Skb, tag: Tag) {
        let (src, dst) = match Ipv4Packet::new_checked(&skb.data[..]) {
            Ok(p) => (p.src_addr(), p.dst_addr()),
            Err(_) => return,
        };
        let first = self.route(ns, Some(src), dst);
        if !self.nf_hook(
            ns,
            Hook::Output,
            &mut skb,
            tag,
            None,
            first.map(|r| r.0),
            (None, None),
            None,
        ) {
            return;
        }
        let dst2 = Ipv4Packet::new_unchecked(&skb.data[..]).dst_addr();
        if self.is_local(ns, dst2) {
            // Back into the host through lo: POSTROUTING, then INPUT.
            let lo = self.netns[ns.idx()].devs[0];
            if !self.nf_hook(
                ns,
                Hook::PostRouting,
                &mut skb,
                tag,
                None,
                Some(lo),
                (None, None),
                Some(src),
            ) {
                return;
            }
            self.local_in(ns, lo, skb, tag);
            return;
        }
        let Some((out, nexthop, prefsrc)) = self.route(ns, Some(src), dst2) else {
            self.drop_hop(
                tag,
                ns,
                None,
                reason::NO_ROUTE,
                format!("no route to {dst2}"),
                PacketView::of_ip(&skb.data),
            );
            return;
        };
        let via = if nexthop == dst2 { String::new() } else { format!(" via {nexthop}") };
        hop!(
            self,
            tag,
            ns,
            None,
            HopKind::Route,
            format!("route {dst2}{via} dev {}: output", self.dev_name(out)),
            None,
            None,
        );
        self.post_routing(ns, out, nexthop, prefsrc, &mut skb, tag);
    }

    /// The neighbour layer: frames the packet for a known neighbour and sends it, or holds it
    /// until ARP answers. The packet is taken out of `skb`, which callers pass down their
    /// path by reference rather than moving it at each step.
    fn neigh_output(
        &mut self,
        ns: NetnsId,
        dev: IfIndex,
        nexthop: Ipv4Addr,
        skb: &mut Skb,
        tag: Tag,
    ) {
        let known = self.netns[ns.idx()].neigh.lookup(nexthop).map(|n| n.mac);
        match known {
            Some(mac) => {
                let ip = std::mem::take(&mut skb.data);
                let frame = eth_frame_around(self.devs[dev.idx()].mac, mac, ip);
                hop!(
                    self,
                    tag,
                    ns,
                    Some(dev),
                    HopKind::Tx,
                    format!("neighbour {nexthop} is {}: transmit", Mac(mac)),
                    PacketView::of_frame(&frame),
                    None,
                );
                self.dev_xmit(dev, frame, tag);
            }
            None => {
                let held = std::mem::replace(skb, Skb::new(Vec::new()));
                self.pend(ns, dev, nexthop, held, tag, None);
            }
        }
    }

    fn pend(
        &mut self,
        ns: NetnsId,
        dev: IfIndex,
        nexthop: Ipv4Addr,
        skb: Skb,
        tag: Tag,
        bridged: Option<(IfIndex, IfIndex, EthernetAddress)>,
    ) {
        let already = self.sim.pending.iter().any(|p| p.ns == ns && p.nexthop == nexthop);
        let src = Ipv4Packet::new_checked(&skb.data[..])
            .ok()
            .map(|p| p.src_addr())
            .filter(|a| self.is_local(ns, *a));
        let deadline = self.now + ARP_TIMEOUT;
        self.sim.pending.push(Pending { ns, dev, nexthop, skb, tag, deadline, bridged });
        if already {
            return;
        }
        let mac = self.devs[dev.idx()].mac;
        let spa = src
            .or_else(|| self.source_for(ns, dev, nexthop, None))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let req = arp_frame(ArpOperation::Request, mac, spa, EthernetAddress([0; 6]), nexthop);
        hop!(
            self,
            tag,
            ns,
            Some(dev),
            HopKind::Arp,
            format!(
                "neighbour {nexthop} unknown: ARP who-has {nexthop} tell {spa} (packet queued)"
            ),
            None,
            None,
        );
        self.dev_xmit(dev, req, tag);
    }

    fn flush_pending(&mut self, ns: NetnsId, ip: Ipv4Addr) {
        let Some(mac) = self.netns[ns.idx()].neigh.lookup(ip).map(|n| n.mac) else { return };
        let (ready, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.sim.pending)
            .into_iter()
            .partition(|p| p.ns == ns && p.nexthop == ip);
        self.sim.pending = rest;
        for p in ready {
            match p.bridged {
                None => {
                    let frame = eth_frame(self.devs[p.dev.idx()].mac, mac, &p.skb.data);
                    hop!(
                        self,
                        p.tag,
                        ns,
                        Some(p.dev),
                        HopKind::Tx,
                        format!("neighbour {ip} resolved to {}: transmit queued packet", Mac(mac)),
                        PacketView::of_frame(&frame),
                        None,
                    );
                    self.dev_xmit(p.dev, frame, p.tag);
                }
                Some((br, in_port, src_mac)) => {
                    self.bridged_dnat_continue(br, in_port, src_mac, mac, p.skb, p.tag)
                }
            }
        }
    }

    /// Drops packets whose ARP resolution timed out.
    pub(crate) fn expire_pending(&mut self) {
        let now = self.now;
        let (dead, rest): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.sim.pending).into_iter().partition(|p| p.deadline <= now);
        self.sim.pending = rest;
        for p in dead {
            let view = PacketView::of_ip(&p.skb.data);
            self.drop_hop(
                p.tag,
                p.ns,
                Some(p.dev),
                reason::ARP_FAILED,
                format!("no ARP reply from {}: neighbour FAILED, packet dropped", p.nexthop),
                view,
            );
        }
    }

    // ----- the bridge -----

    fn bridge_rx(&mut self, br: IfIndex, port: IfIndex, frame: Vec<u8>, tag: Tag) {
        let ns = self.devs[br.idx()].netns;
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            self.drop_hop(
                tag,
                ns,
                Some(port),
                reason::MALFORMED,
                "truncated Ethernet frame".into(),
                None,
            );
            return;
        };
        let (src, dst, ethertype) = (eth.src_addr(), eth.dst_addr(), eth.ethertype());
        let now = self.now;
        if let DeviceKind::Bridge(f) = &mut self.devs[br.idx()].kind {
            let learn = f.update(src, port, now);
            if matches!(learn, crate::net::fdb::Learn::New | crate::net::fdb::Learn::Moved) {
                let p = self.dev_name(port);
                let b = self.dev_name(br);
                hop!(
                    self,
                    tag,
                    ns,
                    Some(br),
                    HopKind::Fdb,
                    format!("fdb learn {} dev {p} master {b}", Mac(src)),
                    None,
                    None,
                );
            }
        }
        let br_mac = self.devs[br.idx()].mac;
        if dst.is_broadcast() || dst.is_multicast() {
            hop!(
                self,
                tag,
                ns,
                Some(br),
                HopKind::Bridge,
                format!(
                    "{} is broadcast: flood to every other port and pass up to {}",
                    Mac(dst),
                    self.dev_name(br)
                ),
                None,
                None,
            );
            self.br_flood(br, port, &frame, tag, None);
            self.l2_rx(ns, br, frame, tag);
            return;
        }
        let brnf = self.netns[ns.idx()].sysctl.bridge_nf_call_iptables;
        if ethertype != EthernetProtocol::Ipv4 || !brnf {
            if dst == br_mac {
                hop!(
                    self,
                    tag,
                    ns,
                    Some(br),
                    HopKind::Bridge,
                    format!(
                        "frame for the bridge's own MAC {}: pass up to {}",
                        Mac(dst),
                        self.dev_name(br)
                    ),
                    None,
                    None,
                );
                self.l2_rx(ns, br, frame, tag);
            } else {
                self.br_deliver(br, port, frame, tag, None);
            }
            return;
        }
        // br_netfilter: PREROUTING for every IPv4 frame entering the bridge.
        let mut skb = skb_of_frame(frame);
        let dst_before = Ipv4Packet::new_checked(&skb.data[..]).map(|p| p.dst_addr()).ok();
        if !self.nf_hook(
            ns,
            Hook::PreRouting,
            &mut skb,
            tag,
            Some(br),
            None,
            (Some(port), None),
            None,
        ) {
            return;
        }
        let dst_after = Ipv4Packet::new_unchecked(&skb.data[..]).dst_addr();
        let dnat = dst_before.is_some_and(|d| d != dst_after);
        if dnat && !self.is_local(ns, dst_after) {
            let src_ip = Ipv4Packet::new_unchecked(&skb.data[..]).src_addr();
            if let Some((out, nexthop, _)) = self.route(ns, Some(src_ip), dst_after)
                && out == br
            {
                // Bridged DNAT: stay on the bridge, only the destination MAC changes.
                match self.netns[ns.idx()].neigh.lookup(nexthop).map(|n| n.mac) {
                    Some(mac) => self.bridged_dnat_continue(br, port, src, mac, skb, tag),
                    None => self.pend(ns, br, nexthop, skb, tag, Some((br, port, src))),
                }
                return;
            }
        }
        if dst == br_mac || dnat {
            let why = if dnat {
                "DNAT to a destination routed elsewhere"
            } else {
                "frame for the bridge's own MAC"
            };
            hop!(
                self,
                tag,
                ns,
                Some(br),
                HopKind::Bridge,
                format!("{why}: pass up to {} for routing", self.dev_name(br)),
                None,
                None,
            );
            self.ip_rcv(ns, br, skb, tag, true);
            return;
        }
        let frame = eth_frame(src, dst, &skb.data);
        self.br_deliver(br, port, frame, tag, Some(skb));
    }

    fn bridged_dnat_continue(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        src_mac: EthernetAddress,
        mac: EthernetAddress,
        skb: Skb,
        tag: Tag,
    ) {
        let ns = self.devs[br.idx()].netns;
        hop!(
            self,
            tag,
            ns,
            Some(br),
            HopKind::Bridge,
            format!(
                "bridged DNAT: new destination is on {} too, destination MAC rewritten to {} (no routing, no TTL decrement)",
                self.dev_name(br),
                Mac(mac)
            ),
            None,
            None
        );
        let frame = eth_frame(src_mac, mac, &skb.data);
        self.br_deliver(br, in_port, frame, tag, Some(skb));
    }

    /// Forwards a unicast frame by the FDB, or floods it.
    fn br_deliver(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        frame: Vec<u8>,
        tag: Tag,
        skb: Option<Skb>,
    ) {
        let ns = self.devs[br.idx()].netns;
        let dst = EthernetFrame::new_unchecked(&frame[..]).dst_addr();
        let now = self.now;
        let entry = match &self.devs[br.idx()].kind {
            DeviceKind::Bridge(f) => f.lookup(dst, now),
            _ => None,
        };
        match entry {
            Some(e) if e.port == br => {
                self.l2_rx(ns, br, frame, tag);
            }
            Some(e) => {
                if e.port == in_port && !self.devs[in_port.idx()].hairpin {
                    let p = self.dev_name(in_port);
                    self.drop_hop(tag, ns, Some(br), reason::HAIRPIN_OFF, format!("{} is behind the ingress port {p} and hairpin_mode is off: frame dropped", Mac(dst)), PacketView::of_frame(&frame));
                    return;
                }
                let hair =
                    if e.port == in_port { " (hairpin: back out of the ingress port)" } else { "" };
                hop!(
                    self,
                    tag,
                    ns,
                    Some(br),
                    HopKind::Bridge,
                    format!("fdb: {} is on {}: forward{hair}", Mac(dst), self.dev_name(e.port)),
                    None,
                    None,
                );
                self.br_forward(br, in_port, e.port, frame, tag, skb);
            }
            None => {
                hop!(
                    self,
                    tag,
                    ns,
                    Some(br),
                    HopKind::Bridge,
                    format!("fdb: {} unknown: flood", Mac(dst)),
                    None,
                    None,
                );
                self.br_flood(br, in_port, &frame, tag, skb);
            }
        }
    }

    fn br_flood(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        frame: &[u8],
        tag: Tag,
        skb: Option<Skb>,
    ) {
        let ns = self.devs[br.idx()].netns;
        let ports: Vec<IfIndex> = self.netns[ns.idx()]
            .devs
            .iter()
            .copied()
            .filter(|&d| {
                self.devs[d.idx()].master == Some(br)
                    && (d != in_port || self.devs[d.idx()].hairpin)
            })
            .collect();
        // Netfilter runs once, on the first copy; the others carry the same bytes.
        let mut skb = skb;
        let mut bytes: Option<Vec<u8>> = None;
        for p in ports {
            if let Some(s) = skb.take() {
                let mut frame2 = frame.to_vec();
                if !self.br_hooks(br, in_port, p, s, tag, &mut frame2) {
                    return;
                }
                bytes = Some(frame2.clone());
                self.dev_xmit(p, frame2, tag);
            } else {
                let f = bytes.clone().unwrap_or_else(|| frame.to_vec());
                self.dev_xmit(p, f, tag);
            }
        }
    }

    fn br_forward(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        out_port: IfIndex,
        mut frame: Vec<u8>,
        tag: Tag,
        skb: Option<Skb>,
    ) {
        if let Some(s) = skb
            && !self.br_hooks(br, in_port, out_port, s, tag, &mut frame)
        {
            return;
        }
        self.dev_xmit(out_port, frame, tag);
    }

    /// br_netfilter FORWARD and POSTROUTING for a bridged IPv4 frame; rewrites `frame`.
    fn br_hooks(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        out_port: IfIndex,
        mut skb: Skb,
        tag: Tag,
        frame: &mut Vec<u8>,
    ) -> bool {
        let ns = self.devs[br.idx()].netns;
        if !self.nf_hook(
            ns,
            Hook::Forward,
            &mut skb,
            tag,
            Some(br),
            Some(br),
            (Some(in_port), Some(out_port)),
            None,
        ) {
            return false;
        }
        let masq = self.devs[br.idx()].addrs.first().map(|a| a.ip());
        if !self.nf_hook(
            ns,
            Hook::PostRouting,
            &mut skb,
            tag,
            None,
            Some(br),
            (None, Some(out_port)),
            masq,
        ) {
            return false;
        }
        let (s, d) = {
            let e = EthernetFrame::new_unchecked(&frame[..]);
            (e.src_addr(), e.dst_addr())
        };
        *frame = eth_frame(s, d, &skb.data);
        true
    }

    /// Frames the bridge device itself sends (routed output onto the bridge).
    fn bridge_output(&mut self, br: IfIndex, frame: Vec<u8>, tag: Tag) {
        let ns = self.devs[br.idx()].netns;
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else { return };
        let dst = eth.dst_addr();
        let now = self.now;
        let port = match &self.devs[br.idx()].kind {
            DeviceKind::Bridge(f) if dst.is_unicast() => f.lookup(dst, now).map(|e| e.port),
            _ => None,
        };
        match port {
            Some(p) if p != br => {
                hop!(
                    self,
                    tag,
                    ns,
                    Some(br),
                    HopKind::Bridge,
                    format!("fdb: {} is on {}: forward", Mac(dst), self.dev_name(p)),
                    None,
                    None,
                );
                self.dev_xmit(p, frame, tag);
            }
            _ => {
                let ports: Vec<IfIndex> = self.netns[ns.idx()]
                    .devs
                    .iter()
                    .copied()
                    .filter(|&d| self.devs[d.idx()].master == Some(br))
                    .collect();
                hop!(
                    self,
                    tag,
                    ns,
                    Some(br),
                    HopKind::Bridge,
                    format!("{}: flood to all ports", Mac(dst)),
                    None,
                    None,
                );
                for p in ports {
                    self.dev_xmit(p, frame.clone(), tag);
                }
            }
        }
    }

    // ----- REJECT -----

    /// Sends REJECT's answer back to the sender of `orig`, from the address the route back
    /// to the sender would use (`nf_send_unreach` / `nf_send_reset`).
    fn send_reject(&mut self, ns: NetnsId, orig: &[u8], with: RejectWith, tag: Tag) {
        let Ok(p) = Ipv4Packet::new_checked(orig) else { return };
        let (osrc, odst) = (p.src_addr(), p.dst_addr());
        let Some((dev, nexthop, prefsrc)) = self.route(ns, None, osrc) else { return };
        let Some(src) = self.source_for(ns, dev, nexthop, prefsrc) else { return };
        let pkt = match with.icmp_code() {
            Some(code) => {
                let quote_len = orig.len().min(548);
                let header = Ipv4Repr {
                    src_addr: osrc,
                    dst_addr: odst,
                    next_header: p.next_header(),
                    payload_len: quote_len.saturating_sub(usize::from(p.header_len())),
                    hop_limit: p.hop_limit(),
                };
                let reason = match code {
                    0 => Icmpv4DstUnreachable::NetUnreachable,
                    1 => Icmpv4DstUnreachable::HostUnreachable,
                    2 => Icmpv4DstUnreachable::ProtoUnreachable,
                    13 => Icmpv4DstUnreachable::CommProhibited,
                    _ => Icmpv4DstUnreachable::PortUnreachable,
                };
                let icmp = Icmpv4Repr::DstUnreachable {
                    reason,
                    header,
                    data: &orig[usize::from(p.header_len()).min(quote_len)..quote_len],
                };
                build_ip(src, osrc, IpProtocol::Icmp, icmp.buffer_len(), |buf| {
                    icmp.emit(
                        &mut Icmpv4Packet::new_unchecked(buf),
                        &ChecksumCapabilities::default(),
                    );
                })
            }
            None => {
                let Ok(tcp) = TcpPacket::new_checked(p.payload()) else { return };
                if tcp.rst() {
                    return;
                }
                let seg_len = tcp.payload().len() + usize::from(tcp.syn()) + usize::from(tcp.fin());
                let repr = TcpRepr {
                    src_port: tcp.dst_port(),
                    dst_port: tcp.src_port(),
                    control: TcpControl::Rst,
                    seq_number: if tcp.ack() { tcp.ack_number() } else { TcpSeqNumber(0) },
                    ack_number: if tcp.ack() { None } else { Some(tcp.seq_number() + seg_len) },
                    window_len: 0,
                    window_scale: None,
                    max_seg_size: None,
                    sack_permitted: false,
                    sack_ranges: [None; 3],
                    timestamp: None,
                    payload: &[],
                };
                // The RST comes from the address the client wrote to, as nf_send_reset does.
                build_ip(odst, osrc, IpProtocol::Tcp, repr.buffer_len(), |buf| {
                    repr.emit(
                        &mut TcpPacket::new_unchecked(buf),
                        &odst.into(),
                        &osrc.into(),
                        &ChecksumCapabilities::default(),
                    );
                })
            }
        };
        let rtag = Tag {
            dir: Dir::Reply,
            pkt: {
                self.sim.next_pkt += 1;
                self.sim.next_pkt
            },
        };
        hop!(
            self,
            rtag,
            ns,
            None,
            HopKind::Tx,
            format!("REJECT answer from {src} to {osrc}"),
            PacketView::of_ip(&pkt),
            None,
        );
        let _ = tag;
        self.local_out(ns, Skb::new(pkt), rtag);
    }
}

/// The IPv4 packet of an Ethernet frame as an skb, in the frame's own buffer (the header
/// moves out of the way; the buffer keeps room for it to come back at the next hop).
fn skb_of_frame(mut frame: Vec<u8>) -> Skb {
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
fn eth_frame_around(src: EthernetAddress, dst: EthernetAddress, mut ip: Vec<u8>) -> Vec<u8> {
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

fn arp_frame(
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

fn build_ip(
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
