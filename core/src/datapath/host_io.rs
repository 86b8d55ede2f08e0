//! Where frames meet host stacks: the receive filter (`eth_type_trans`'s PACKET_OTHERHOST),
//! delivery to a pod's or host's stack (noting what the trace's recorder watches for), and
//! what a stack transmits: out of its `eth0`, or into local output for a router's own stack.

use podnet_netfilter::{Skb, packet};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};

use crate::ids::{IfIndex, NetnsId};
use crate::net::Mac;
use crate::trace::{Dir, HopKind, PacketView, Tag};

use super::{Datapath, HostStacks, hop, reason};

impl<H: HostStacks> Datapath<'_, H> {
    /// Parses a frame received on `dev` and keeps it only if it is addressed to `dev` (its
    /// MAC, broadcast or multicast), as `eth_type_trans` marks anything else
    /// PACKET_OTHERHOST and the stack ignores it. Records the drop or the ignore.
    pub(super) fn frame_for<'f>(
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
        let mac = self.w.devs[dev.idx()].mac;
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

    pub(super) fn endpoint_rx(&mut self, ns: NetnsId, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
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
                        self.w.devs[dev.idx()].addrs.iter().any(|a| a.ip() == target_protocol_addr);
                    if mine || operation == ArpOperation::Reply {
                        let now = self.w.now;
                        self.w.netns[ns.idx()].neigh.update(
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
                let refused = match (self.w.sim.rec.as_mut(), packet::parse_trusted(eth.payload()))
                {
                    (Some(rec), Ok(info)) => {
                        rec.observe_host_rx(ns, &info, tag);
                        rec.refusal(ns, &info)
                    }
                    _ => None,
                };
                if let Some((idx, _)) = refused {
                    self.hosts.refuse_client(self.w, ns, idx);
                }
            }
            _ => {}
        }
        self.w.sim.active.insert(ns);
        self.hosts.ingest(self.w, ns, frame);
        self.poll_stack(ns);
    }

    /// Polls a namespace's stack at the current time and sends what it transmitted; packets
    /// that crossed `lo` are recorded as hops on `lo`.
    pub(crate) fn poll_stack(&mut self, ns: NetnsId) {
        let now = self.w.now;
        let mut out = std::mem::take(&mut self.w.sim.host_out);
        let Some(looped) = self.hosts.poll(ns, now, &mut out) else {
            self.w.sim.host_out = out;
            return;
        };
        let lo = self.w.netns[ns.idx()].devs[0];
        for ip in looped {
            let dir = match (&self.w.sim.rec, packet::parse(&ip)) {
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
            if let Some(rec) = self.w.sim.rec.as_mut() {
                rec.observe_loopback(ns, &ip, tag);
            }
        }
        self.host_tx(ns, &mut out);
        self.w.sim.host_out = out;
    }

    /// Sends what a host stack transmitted out of its `eth0`, emptying `frames`.
    pub(crate) fn host_tx(&mut self, ns: NetnsId, frames: &mut Vec<Vec<u8>>) {
        if frames.is_empty() {
            return;
        }
        if self.w.netns[ns.idx()].router {
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
        let eth0 = self.w.dev_named(ns, "eth0").expect("host has eth0");
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

    pub(super) fn dir_of(&self, ns: NetnsId, ip: Option<&[u8]>) -> Dir {
        match &self.w.sim.rec {
            Some(r) => r.dir_of_sent(ns, ip),
            None => Dir::Request,
        }
    }
}
