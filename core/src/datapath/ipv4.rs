//! IPv4 receive, forward, local delivery and local output, after `net/ipv4/ip_input.c`,
//! `ip_forward.c` and `ip_output.c`: local destinations go to INPUT and the namespace's
//! stack; others need `ip_forward`, a route, TTL > 1, then FORWARD (after the TTL
//! decrement), POSTROUTING and neighbour resolution. Local output takes OUTPUT (re-routed if
//! DNAT changed it) then POSTROUTING. Routing asks `ip rule` and the tables it names.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use podnet_netfilter::{Hook, Skb, packet};
use smoltcp::wire::Ipv4Packet;

use crate::ids::{IfIndex, NetnsId};
use crate::trace::{HopKind, PacketView, Tag};

use super::{Datapath, HostStacks, hop, reason};

impl<H: HostStacks> Datapath<'_, H> {
    pub(super) fn ip_rcv(
        &mut self,
        ns: NetnsId,
        dev: IfIndex,
        mut skb: Skb,
        tag: Tag,
        prerouting_done: bool,
    ) {
        // `ip_rcv`'s header checks. A namespace with netfilter makes them in its PREROUTING
        // hook (here, or on the bridge before), dropping as malformed with the same reason;
        // that hook reads the transport header too, which without netfilter only the
        // delivering host does (`local_in`).
        let checked = prerouting_done || self.w.netns[ns.idx()].nf.is_some();
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
        if !prerouting_done && !self.guard_egress(ns, dev, &skb, tag) {
            return;
        }
        let (src, dst) = {
            let p = Ipv4Packet::new_unchecked(&skb.data[..]);
            (p.src_addr(), p.dst_addr())
        };
        if let Some((why, detail)) = self.validate_source(ns, dev, src, dst) {
            self.drop_hop(tag, ns, Some(dev), why, detail, self.ip_view(&skb.data));
            return;
        }
        if self.w.is_local(ns, dst) {
            self.local_in(ns, dev, skb, tag);
        } else {
            self.forward(ns, dev, &mut skb, tag);
        }
    }

    /// The input route's source checks (`ip_route_input_slow` and `fib_validate_source`):
    /// a multicast, limited-broadcast, loopback or own source arriving on a device other than
    /// `lo` is a martian; with `rp_filter` (the larger of `conf.all` and the device's) the route
    /// back to the source must leave by the arrival device (1, strict) or merely exist (2,
    /// loose). Packets that looped back over `lo` keep their route and are not checked.
    fn validate_source(
        &self,
        ns: NetnsId,
        dev: IfIndex,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Option<(&'static str, String)> {
        let n = &self.w.netns[ns.idx()];
        if n.devs.first() == Some(&dev) {
            return None;
        }
        let name = self.dev_name(dev);
        let martian = |what: &str| {
            Some((reason::MARTIAN_SOURCE, format!("martian source {src} on {name} ({what})")))
        };
        if src.is_multicast() || src.is_broadcast() {
            return martian("a multicast or broadcast source");
        }
        if src.is_loopback() {
            return martian("a loopback source on a device other than lo");
        }
        if src.is_unspecified() && !dst.is_broadcast() {
            return martian("source 0.0.0.0 to an address other than 255.255.255.255");
        }
        if self.w.is_local(ns, src) {
            return martian("one of this namespace's own addresses");
        }
        let rpf = n.sysctl.rp_filter.max(self.w.devs[dev.idx()].rp_filter);
        if rpf == 0 || src.is_unspecified() {
            return None;
        }
        match self.w.route(ns, Some(dst), src) {
            None => Some((
                reason::RP_FILTER,
                format!("rp_filter={rpf} on {name}: no route back to {src}"),
            )),
            Some((out, _, _)) if out != dev && rpf == 1 => Some((
                reason::RP_FILTER,
                format!(
                    "rp_filter=1 (strict) on {name}: the route back to {src} leaves by {}",
                    self.dev_name(out)
                ),
            )),
            Some(_) => None,
        }
    }

    pub(super) fn source_for(
        &self,
        ns: NetnsId,
        dev: IfIndex,
        towards: Ipv4Addr,
        prefsrc: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        prefsrc.or_else(|| {
            let addrs = &self.w.devs[dev.idx()].addrs;
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
                    self.w.netns[ns.idx()]
                        .devs
                        .iter()
                        .flat_map(|d| &self.w.devs[d.idx()].addrs)
                        .find(|a| !a.ip().is_loopback())
                        .map(|a| a.ip())
                })
        })
    }

    pub(super) fn forward(&mut self, ns: NetnsId, in_dev: IfIndex, skb: &mut Skb, tag: Tag) {
        if !self.w.netns[ns.idx()].sysctl.ip_forward {
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
        let edge = self.fabric.nexthop(self.w, ns, &skb.data);
        let routed = match &edge {
            Some((hop_to, _)) => self.w.route(ns, None, *hop_to),
            None => self.w.route(ns, Some(src), dst),
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
    pub(super) fn post_routing(
        &mut self,
        ns: NetnsId,
        out: IfIndex,
        nexthop: Ipv4Addr,
        prefsrc: Option<Ipv4Addr>,
        skb: &mut Skb,
        tag: Tag,
    ) {
        let asked = self.w.netns[ns.idx()].nf.is_some() && skb.may_masquerade();
        let masq = if asked { self.source_for(ns, out, nexthop, prefsrc) } else { None };
        if !self.nf_hook(ns, Hook::PostRouting, skb, tag, None, Some(out), (None, None), masq) {
            return;
        }
        self.neigh_output(ns, out, nexthop, skb, tag);
    }

    pub(super) fn local_in(&mut self, ns: NetnsId, dev: IfIndex, mut skb: Skb, tag: Tag) {
        if !self.nf_hook(ns, Hook::Input, &mut skb, tag, Some(dev), None, (None, None), None) {
            return;
        }
        let dst = Ipv4Packet::new_unchecked(&skb.data[..]).dst_addr();
        if !self.w.is_local(ns, dst) {
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
        if let Some(rec) = self.w.sim.rec.as_mut() {
            rec.observe_host_rx(ns, &info, tag);
        }
        self.w.sim.active.insert(ns);
        self.hosts.ingest(self.w, ns, skb.data);
        self.poll_stack(ns);
    }

    /// What IPVS does with a scheduled packet in NAT mode: route to the real server, then
    /// POSTROUTING (masquerade, conntrack confirm) and the neighbour layer.
    pub(super) fn ipvs_xmit(&mut self, ns: NetnsId, mut skb: Skb, tag: Tag) {
        let (src, dst) = {
            let p = Ipv4Packet::new_unchecked(&skb.data[..]);
            (p.src_addr(), p.dst_addr())
        };
        let Some((out, nexthop, prefsrc)) = self.w.route(ns, Some(src), dst) else {
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
        // `__ip_vs_get_out_rt` decrements the TTL of a packet sent to a non-local real server
        // (`decrement_ttl`), dropping it at 1 as forwarding does.
        if Ipv4Packet::new_unchecked(&skb.data[..]).hop_limit() <= 1 {
            self.drop_hop(
                tag,
                ns,
                Some(out),
                reason::TTL,
                "IPVS: TTL expired (ICMP time exceeded not modelled)".into(),
                self.ip_view(&skb.data),
            );
            return;
        }
        skb.decrease_ttl();
        self.post_routing(ns, out, nexthop, prefsrc, &mut skb, tag);
    }

    /// Output of locally generated packets (`__ip_local_out`, `ip_output`).
    pub(crate) fn local_out(&mut self, ns: NetnsId, mut skb: Skb, tag: Tag) {
        let (src, dst) = match Ipv4Packet::new_checked(&skb.data[..]) {
            Ok(p) => (p.src_addr(), p.dst_addr()),
            Err(_) => return,
        };
        let first = self.w.route(ns, Some(src), dst);
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
        if self.w.is_local(ns, dst2) {
            // Back into the host through lo: POSTROUTING, then INPUT.
            let lo = self.w.netns[ns.idx()].devs[0];
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
        let Some((out, nexthop, prefsrc)) = self.w.route(ns, Some(src), dst2) else {
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
}
