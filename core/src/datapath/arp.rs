//! ARP and the neighbour output queue, after `net/ipv4/arp.c` and `net/core/neighbour.c`:
//! requests for any local address are answered on the receiving device (`arp_ignore=0`), and
//! for the addresses the fabric answers for; requests aimed at us and replies teach the
//! neighbour table; a packet whose next hop is unknown waits for resolution and is dropped
//! after 3 unanswered seconds.

use std::net::Ipv4Addr;

use podnet_netfilter::Skb;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Ipv4Packet};

use crate::ids::{IfIndex, NetnsId};
use crate::net::Mac;
use crate::trace::{HopKind, PacketView, Tag};
use crate::world::Pending;

use super::{
    ARP_TIMEOUT, Datapath, HostStacks, arp_frame, eth_frame, eth_frame_around, hop, reason,
};

impl<H: HostStacks> Datapath<'_, H> {
    pub(super) fn arp_rx(&mut self, ns: NetnsId, dev: IfIndex, payload: &[u8], tag: Tag) {
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
        // Addresses the fabric answers for here though no device holds them (the VPC for ENI
        // secondary addresses, the internet gateway for addresses it routes inward).
        let proxy = self.fabric.proxy_arp(ns, tpa);
        let local = self.w.is_local(ns, tpa) || proxy.is_some();
        let now = self.w.now;
        if local
            || operation == ArpOperation::Reply
            || self.w.netns[ns.idx()].neigh.lookup(spa).is_some()
        {
            let changed = self.w.netns[ns.idx()].neigh.update(spa, sha, dev, now);
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
            let mac = self.w.devs[dev.idx()].mac;
            let reply = arp_frame(ArpOperation::Reply, mac, tpa, sha, spa);
            let detail = match proxy.and_then(|p| p.note.as_deref()) {
                Some(note) => format!("ARP reply {tpa} is-at {} (to {spa}): {note}", Mac(mac)),
                None => format!("ARP reply {tpa} is-at {} (to {spa})", Mac(mac)),
            };
            hop!(self, tag, ns, Some(dev), HopKind::Arp, detail, None, None);
            self.dev_xmit(dev, reply, tag);
        }
        self.flush_pending(ns, spa);
    }

    /// The neighbour layer: frames the packet for a known neighbour and sends it, or holds it
    /// until ARP answers. The packet is taken out of `skb`, which callers pass down their
    /// path by reference rather than moving it at each step.
    pub(super) fn neigh_output(
        &mut self,
        ns: NetnsId,
        dev: IfIndex,
        nexthop: Ipv4Addr,
        skb: &mut Skb,
        tag: Tag,
    ) {
        let known = self.w.netns[ns.idx()].neigh.lookup(nexthop).map(|n| n.mac);
        match known {
            Some(mac) => {
                let ip = std::mem::take(&mut skb.data);
                let frame = eth_frame_around(self.w.devs[dev.idx()].mac, mac, ip);
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

    pub(super) fn pend(
        &mut self,
        ns: NetnsId,
        dev: IfIndex,
        nexthop: Ipv4Addr,
        skb: Skb,
        tag: Tag,
        bridged: Option<(IfIndex, IfIndex, EthernetAddress)>,
    ) {
        let already = self.w.sim.pending.iter().any(|p| p.ns == ns && p.nexthop == nexthop);
        let src = Ipv4Packet::new_checked(&skb.data[..])
            .ok()
            .map(|p| p.src_addr())
            .filter(|a| self.w.is_local(ns, *a));
        let deadline = self.w.now + ARP_TIMEOUT;
        self.w.sim.pending.push(Pending { ns, dev, nexthop, skb, tag, deadline, bridged });
        if already {
            return;
        }
        let mac = self.w.devs[dev.idx()].mac;
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

    pub(super) fn flush_pending(&mut self, ns: NetnsId, ip: Ipv4Addr) {
        let Some(mac) = self.w.netns[ns.idx()].neigh.lookup(ip).map(|n| n.mac) else { return };
        let (ready, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.w.sim.pending)
            .into_iter()
            .partition(|p| p.ns == ns && p.nexthop == ip);
        self.w.sim.pending = rest;
        for p in ready {
            match p.bridged {
                None => {
                    let frame = eth_frame(self.w.devs[p.dev.idx()].mac, mac, &p.skb.data);
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
        let now = self.w.now;
        let (dead, rest): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.w.sim.pending).into_iter().partition(|p| p.deadline <= now);
        self.w.sim.pending = rest;
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
}
