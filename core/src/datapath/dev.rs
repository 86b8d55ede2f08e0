//! Device transmit and receive: what one end of a veth pair sends its peer receives; an L2
//! segment (the VPC subnet) hands a frame to the port owning its destination MAC, and floods
//! broadcast and unknown unicast; a received frame goes to the bridge its device is a port
//! of, to a router's L2 input, or to a host's stack.

use smoltcp::wire::{EthernetFrame, EthernetProtocol};

use crate::ids::{IfIndex, NetnsId};
use crate::trace::{HopKind, PacketView, Tag};
use crate::world::{DeviceKind, Event};

use super::{Datapath, HostStacks, MAX_EVENTS, hop, skb_of_frame};

impl<H: HostStacks> Datapath<'_, H> {
    /// A frame leaves `dev`.
    pub(crate) fn dev_xmit(&mut self, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
        match &self.w.devs[dev.idx()].kind {
            &DeviceKind::Veth { peer } => {
                if self.guard.stage().is_some() && !self.guard_ingress(dev, &frame, tag) {
                    return;
                }
                self.w.sim.queue.push_back(Event { dev: peer, frame, tag })
            }
            &DeviceKind::Ether { segment } => {
                let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else { return };
                let dst = eth.dst_addr();
                let ports = &self.w.segments[segment.idx()].ports;
                let owner =
                    ports.iter().copied().find(|&p| p != dev && self.w.devs[p.idx()].mac == dst);
                match owner {
                    Some(p) if dst.is_unicast() => {
                        self.w.sim.queue.push_back(Event { dev: p, frame, tag })
                    }
                    _ => {
                        for &p in ports.iter().filter(|&&p| p != dev) {
                            self.w.sim.queue.push_back(Event { dev: p, frame: frame.clone(), tag });
                        }
                    }
                }
            }
            DeviceKind::Bridge(_) => self.bridge_output(dev, frame, tag),
            DeviceKind::Loopback | DeviceKind::Dummy => {
                self.w.sim.queue.push_back(Event { dev, frame, tag })
            }
        }
    }

    /// Queues a frame for reception on `dev`.
    pub(crate) fn deliver(&mut self, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
        self.w.sim.queue.push_back(Event { dev, frame, tag });
    }

    /// Processes every queued frame; returns false if the livelock guard tripped.
    pub(crate) fn run_queue(&mut self) -> bool {
        while let Some(ev) = self.w.sim.queue.pop_front() {
            self.w.sim.events += 1;
            if self.w.sim.events > MAX_EVENTS * (1 + self.w.sim.extra_rounds) {
                self.w.sim.queue.clear();
                return false;
            }
            self.rx(ev);
        }
        true
    }

    pub(super) fn rx(&mut self, ev: Event) {
        let Event { dev, frame, tag } = ev;
        let now = self.w.now;
        if let Some(cap) = self.w.sim.capture.as_mut() {
            cap.push((now, dev, frame.clone()));
        }
        let ns = self.w.devs[dev.idx()].netns;
        let router = self.w.netns[ns.idx()].router;
        // A forwarding namespace's bridge port hands the frame to its bridge.
        let bridge = self.w.devs[dev.idx()].master.filter(|_| router);
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

    pub(super) fn l2_rx(&mut self, ns: NetnsId, dev: IfIndex, frame: Vec<u8>, tag: Tag) {
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
}
