//! The Linux bridge, after `net/bridge/br_input.c` and `br_forward.c`, and br_netfilter
//! (`br_netfilter_hooks.c`): learn the source MAC, then pass a frame for the bridge's own MAC
//! up, forward to the learned port or flood, never back out of the ingress port unless it
//! has `hairpin_mode`. With `bridge-nf-call-iptables=1`, IPv4 frames entering the bridge run
//! PREROUTING once, before the forwarding decision; a DNAT whose new destination is on the
//! same bridge stays bridged ("bridged DNAT": only the destination MAC changes, no TTL
//! decrement); bridged frames then run FORWARD and POSTROUTING with `-i/-o cbr0` and physdev.

use podnet_netfilter::{Hook, Skb};
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Packet};

use crate::ids::IfIndex;
use crate::net::Mac;
use crate::trace::{HopKind, PacketView, Tag};
use crate::world::DeviceKind;

use super::{Datapath, HostStacks, eth_frame, hop, reason, skb_of_frame};

impl<H: HostStacks> Datapath<'_, H> {
    pub(super) fn bridge_rx(&mut self, br: IfIndex, port: IfIndex, frame: Vec<u8>, tag: Tag) {
        let ns = self.w.devs[br.idx()].netns;
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
        let now = self.w.now;
        if let DeviceKind::Bridge(f) = &mut self.w.devs[br.idx()].kind {
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
        let br_mac = self.w.devs[br.idx()].mac;
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
        let brnf = self.w.netns[ns.idx()].sysctl.bridge_nf_call_iptables;
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
                if ethertype == EthernetProtocol::Ipv4 {
                    self.guard_untracked_bridged(port);
                }
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
        if !self.guard_egress(ns, port, &skb, tag) {
            return;
        }
        let dst_after = Ipv4Packet::new_unchecked(&skb.data[..]).dst_addr();
        let dnat = dst_before.is_some_and(|d| d != dst_after);
        if dnat && !self.w.is_local(ns, dst_after) {
            let src_ip = Ipv4Packet::new_unchecked(&skb.data[..]).src_addr();
            if let Some((out, nexthop, _)) = self.w.route(ns, Some(src_ip), dst_after)
                && out == br
            {
                // Bridged DNAT: stay on the bridge, only the destination MAC changes.
                match self.w.netns[ns.idx()].neigh.lookup(nexthop).map(|n| n.mac) {
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

    pub(super) fn bridged_dnat_continue(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        src_mac: EthernetAddress,
        mac: EthernetAddress,
        skb: Skb,
        tag: Tag,
    ) {
        let ns = self.w.devs[br.idx()].netns;
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
    pub(super) fn br_deliver(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        frame: Vec<u8>,
        tag: Tag,
        skb: Option<Skb>,
    ) {
        let ns = self.w.devs[br.idx()].netns;
        let dst = EthernetFrame::new_unchecked(&frame[..]).dst_addr();
        let now = self.w.now;
        let entry = match &self.w.devs[br.idx()].kind {
            DeviceKind::Bridge(f) => f.lookup(dst, now),
            _ => None,
        };
        match entry {
            Some(e) if e.port == br => {
                self.l2_rx(ns, br, frame, tag);
            }
            Some(e) => {
                if e.port == in_port && !self.w.devs[in_port.idx()].hairpin {
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

    pub(super) fn br_flood(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        frame: &[u8],
        tag: Tag,
        skb: Option<Skb>,
    ) {
        let ns = self.w.devs[br.idx()].netns;
        let ports: Vec<IfIndex> = self.w.netns[ns.idx()]
            .devs
            .iter()
            .copied()
            .filter(|&d| {
                self.w.devs[d.idx()].master == Some(br)
                    && (d != in_port || self.w.devs[d.idx()].hairpin)
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

    pub(super) fn br_forward(
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
    pub(super) fn br_hooks(
        &mut self,
        br: IfIndex,
        in_port: IfIndex,
        out_port: IfIndex,
        mut skb: Skb,
        tag: Tag,
        frame: &mut Vec<u8>,
    ) -> bool {
        let ns = self.w.devs[br.idx()].netns;
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
        let masq = self.w.devs[br.idx()].addrs.first().map(|a| a.ip());
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
    pub(super) fn bridge_output(&mut self, br: IfIndex, frame: Vec<u8>, tag: Tag) {
        let ns = self.w.devs[br.idx()].netns;
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else { return };
        let dst = eth.dst_addr();
        let now = self.w.now;
        let port = match &self.w.devs[br.idx()].kind {
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
                let ports: Vec<IfIndex> = self.w.netns[ns.idx()]
                    .devs
                    .iter()
                    .copied()
                    .filter(|&d| self.w.devs[d.idx()].master == Some(br))
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
}
