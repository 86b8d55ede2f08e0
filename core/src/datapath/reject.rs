//! What REJECT sends back, after `net/ipv4/netfilter/nf_reject_ipv4.c`: an ICMP destination
//! unreachable quoting the packet (`nf_send_unreach`), or a TCP RST from the address the
//! client wrote to (`nf_send_reset`).

use podnet_netfilter::Skb;
use podnet_netfilter::rule::RejectWith;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::ids::NetnsId;
use crate::trace::{Dir, HopKind, PacketView, Tag};

use super::{Datapath, HostStacks, build_ip, hop};

impl<H: HostStacks> Datapath<'_, H> {
    /// Sends REJECT's answer back to the sender of `orig`, from the address the route back
    /// to the sender would use (`nf_send_unreach` / `nf_send_reset`).
    pub(super) fn send_reject(&mut self, ns: NetnsId, orig: &[u8], with: RejectWith, tag: Tag) {
        let Ok(p) = Ipv4Packet::new_checked(orig) else { return };
        let (osrc, odst) = (p.src_addr(), p.dst_addr());
        let Some((dev, nexthop, prefsrc)) = self.w.route(ns, None, osrc) else { return };
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
                self.w.sim.next_pkt += 1;
                self.w.sim.next_pkt
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
