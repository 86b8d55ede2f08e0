//! The netfilter view of an IPv4 packet: its connection tuple, the header fields rules match
//! on, and in-place NAT rewrites with incremental checksum updates.
//!
//! Follows `net/netfilter/nf_conntrack_proto_*.c` for what makes a tuple and
//! `net/netfilter/nf_nat_proto.c` for how NAT edits bytes: addresses and ports are changed
//! with smoltcp's setters and every affected checksum is patched with RFC 1624's
//! `HC' = ~(~HC + ~m + m')`, never recomputed from a `Repr` (which would normalise the header).
//!
//! ICMP echo tuples carry the echo identifier in both port slots, so that
//! [`Tuple::invert`] stays an involution; Linux keeps the id in `src.u.icmp.id` and the type
//! in `dst`, which amounts to the same identity for echo request/reply pairs.

use std::fmt;
use std::net::Ipv4Addr;

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

/// An IP protocol number as iptables names it (`-p tcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Proto(pub u8);

impl Proto {
    /// ICMP (1).
    pub const ICMP: Proto = Proto(1);
    /// TCP (6).
    pub const TCP: Proto = Proto(6);
    /// UDP (17).
    pub const UDP: Proto = Proto(17);
    /// SCTP (132).
    pub const SCTP: Proto = Proto(132);

    /// Parses an iptables protocol name or number (`tcp`, `udp`, `icmp`, `sctp`, `6`).
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::TCP),
            "udp" => Some(Proto::UDP),
            "icmp" => Some(Proto::ICMP),
            "sctp" => Some(Proto::SCTP),
            n => n.parse().ok().map(Proto),
        }
    }

    /// Whether packets of this protocol carry ports in their tuple.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::TCP | Proto::UDP | Proto::SCTP)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Proto::TCP => f.write_str("tcp"),
            Proto::UDP => f.write_str("udp"),
            Proto::ICMP => f.write_str("icmp"),
            Proto::SCTP => f.write_str("sctp"),
            Proto(n) => write!(f, "{n}"),
        }
    }
}

/// A connection tuple: what conntrack keys a direction of a connection by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Tuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub proto: Proto,
    /// Source port (ICMP echo: the identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: the identifier).
    pub dport: u16,
}

impl Tuple {
    /// The tuple of the other direction (`nf_ct_invert_tuple`).
    #[must_use]
    pub fn invert(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

impl fmt::Display for Tuple {
    /// `conntrack -L` style: `src=10.244.1.3 dst=10.96.0.10 sport=40000 dport=80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={} dst={}", self.src, self.dst)?;
        if self.proto.has_ports() {
            write!(f, " sport={} dport={}", self.sport, self.dport)?;
        } else if self.proto == Proto::ICMP {
            write!(f, " id={}", self.sport)?;
        }
        Ok(())
    }
}

/// TCP flag bits as they sit in the header's 13th byte.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// What netfilter reads from a packet before any rule runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// The packet's own tuple.
    pub tuple: Tuple,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP type and code, for ICMP packets.
    pub icmp: Option<(u8, u8)>,
    /// For ICMP errors: the tuple of the packet quoted inside, as it was sent.
    pub icmp_inner: Option<Tuple>,
    /// Total length of the IPv4 packet in bytes.
    pub len: u16,
    /// The TTL.
    pub ttl: u8,
}

impl PacketInfo {
    /// Whether this is an ICMP error (destination unreachable, time exceeded, ...).
    pub fn is_icmp_error(&self) -> bool {
        self.icmp_inner.is_some()
    }
}

/// Why a packet could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The IPv4 header is short, has a bad version or length, or a wrong checksum.
    #[error("malformed IPv4 header: {0}")]
    BadIpv4(&'static str),
    /// The transport header is cut short.
    #[error("truncated {0} header")]
    Truncated(Proto),
    /// Fragments are not modelled.
    #[error("IPv4 fragments are not modelled (MF set or offset non-zero)")]
    Fragment,
}

/// Reads the netfilter view of an IPv4 packet (`bytes` starts at the IPv4 header).
pub fn parse(bytes: &[u8]) -> Result<PacketInfo, PacketError> {
    parse_with(bytes, true)
}

/// [`parse`] without verifying the IPv4 header checksum: for packets already checked where
/// they entered (as `ip_rcv` checks once, not every hook) or just rewritten with their
/// checksums updated. Lengths, version and fragments are still checked.
pub fn parse_trusted(bytes: &[u8]) -> Result<PacketInfo, PacketError> {
    parse_with(bytes, false)
}

/// The checks `ip_rcv` makes of an IPv4 header before routing (`ip_rcv_core`): the lengths,
/// the version and the header checksum; and, as [`parse`] does, no fragment (the model
/// does not reassemble). The transport header is not read: a router forwards whatever it
/// carries, and the host that delivers it reads it ([`parse_trusted`] there).
pub fn check_header(bytes: &[u8]) -> Result<(), PacketError> {
    checked_ipv4(bytes, true).map(|_| ())
}

/// The IPv4 header of `bytes` after [`check_header`]'s checks (the checksum's only when
/// `verify`).
#[inline]
fn checked_ipv4(bytes: &[u8], verify: bool) -> Result<Ipv4Packet<&[u8]>, PacketError> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|_| PacketError::BadIpv4("length"))?;
    if ip.version() != 4 {
        return Err(PacketError::BadIpv4("version"));
    }
    if verify && !ip.verify_checksum() {
        return Err(PacketError::BadIpv4("checksum"));
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(PacketError::Fragment);
    }
    Ok(ip)
}

fn parse_with(bytes: &[u8], verify: bool) -> Result<PacketInfo, PacketError> {
    let ip = checked_ipv4(bytes, verify)?;
    let proto = Proto(u8::from(ip.next_header()));
    let (sport, dport, tcp_flags, icmp, icmp_inner) = l4_fields(proto, ip.payload())?;
    Ok(PacketInfo {
        tuple: Tuple { src: ip.src_addr(), dst: ip.dst_addr(), proto, sport, dport },
        tcp_flags,
        icmp,
        icmp_inner,
        len: ip.total_len(),
        ttl: ip.hop_limit(),
    })
}

type L4Fields = (u16, u16, u8, Option<(u8, u8)>, Option<Tuple>);

fn l4_fields(proto: Proto, payload: &[u8]) -> Result<L4Fields, PacketError> {
    match proto {
        Proto::TCP => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| PacketError::Truncated(proto))?;
            Ok((tcp.src_port(), tcp.dst_port(), payload[13], None, None))
        }
        Proto::UDP => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| PacketError::Truncated(proto))?;
            Ok((udp.src_port(), udp.dst_port(), 0, None, None))
        }
        Proto::SCTP => {
            if payload.len() < 12 {
                return Err(PacketError::Truncated(proto));
            }
            let sport = u16::from_be_bytes([payload[0], payload[1]]);
            let dport = u16::from_be_bytes([payload[2], payload[3]]);
            Ok((sport, dport, 0, None, None))
        }
        Proto::ICMP => {
            let icmp =
                Icmpv4Packet::new_checked(payload).map_err(|_| PacketError::Truncated(proto))?;
            let ty = u8::from(icmp.msg_type());
            let code = icmp.msg_code();
            match icmp.msg_type() {
                Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply => {
                    let id = icmp.echo_ident();
                    Ok((id, id, 0, Some((ty, code)), None))
                }
                Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded => {
                    // The quoted packet: its IPv4 header plus at least 8 bytes of transport.
                    let inner = icmp.data();
                    if !quote_is_ipv4(inner) {
                        return Err(PacketError::Truncated(proto));
                    }
                    let inner_ip = Ipv4Packet::new_unchecked(inner);
                    let iproto = Proto(u8::from(inner_ip.next_header()));
                    let ihl = usize::from(inner_ip.header_len());
                    let l4 = &inner[ihl.min(inner.len())..];
                    let (isport, idport) = if iproto.has_ports() && l4.len() >= 4 {
                        (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
                    } else if iproto == Proto::ICMP && l4.len() >= 6 {
                        let id = u16::from_be_bytes([l4[4], l4[5]]);
                        (id, id)
                    } else {
                        (0, 0)
                    };
                    let t = Tuple {
                        src: inner_ip.src_addr(),
                        dst: inner_ip.dst_addr(),
                        proto: iproto,
                        sport: isport,
                        dport: idport,
                    };
                    Ok((0, 0, 0, Some((ty, code)), Some(t)))
                }
                _ => Ok((0, 0, 0, Some((ty, code)), None)),
            }
        }
        _ => Ok((0, 0, 0, None, None)),
    }
}

/// Which side of a packet a NAT manipulation rewrites (`enum nf_nat_manip_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Manip {
    /// Source NAT: rewrites the source address and port.
    Src,
    /// Destination NAT: rewrites the destination address and port.
    Dst,
}

/// Rewrites the source or destination address and port of an IPv4 packet in place, patching
/// the IPv4, TCP/UDP and ICMP checksums incrementally (`nf_nat_ipv4_manip_pkt`).
///
/// For an ICMP error the quoted inner packet is rewritten too (its opposite side), as
/// `nf_nat_icmp_reply_translation` does, so that the receiver can match it to its socket.
pub fn rewrite(
    bytes: &mut [u8],
    manip: Manip,
    addr: Ipv4Addr,
    port: u16,
) -> Result<(), PacketError> {
    let mut ip =
        Ipv4Packet::new_checked(&mut *bytes).map_err(|_| PacketError::BadIpv4("length"))?;
    let old_addr = match manip {
        Manip::Src => ip.src_addr(),
        Manip::Dst => ip.dst_addr(),
    };
    match manip {
        Manip::Src => ip.set_src_addr(addr),
        Manip::Dst => ip.set_dst_addr(addr),
    }
    // The address's change, summed once for the IPv4 header and the transport checksum
    // over the pseudo-header.
    let change = addr_change(old_addr, addr);
    let ip_csum = csum_apply(ip.checksum(), change);
    ip.set_checksum(ip_csum);
    let proto = IpProtocol::from(u8::from(ip.next_header()));
    let payload = ip.payload_mut();
    match proto {
        IpProtocol::Tcp => {
            let mut tcp =
                TcpPacket::new_checked(payload).map_err(|_| PacketError::Truncated(Proto::TCP))?;
            let old_port = match manip {
                Manip::Src => tcp.src_port(),
                Manip::Dst => tcp.dst_port(),
            };
            match manip {
                Manip::Src => tcp.set_src_port(port),
                Manip::Dst => tcp.set_dst_port(port),
            }
            tcp.set_checksum(csum_apply(tcp.checksum(), change + word_change(old_port, port)));
        }
        IpProtocol::Udp => {
            let mut udp =
                UdpPacket::new_checked(payload).map_err(|_| PacketError::Truncated(Proto::UDP))?;
            let old_port = match manip {
                Manip::Src => udp.src_port(),
                Manip::Dst => udp.dst_port(),
            };
            match manip {
                Manip::Src => udp.set_src_port(port),
                Manip::Dst => udp.set_dst_port(port),
            }
            // A zero UDP checksum means "none" and stays zero (RFC 768).
            if udp.checksum() != 0 {
                let c = csum_apply(udp.checksum(), change + word_change(old_port, port));
                udp.set_checksum(if c == 0 { 0xffff } else { c });
            }
        }
        IpProtocol::Icmp => {
            rewrite_icmp(payload, manip, old_addr, addr, port)?;
        }
        p if u8::from(p) == Proto::SCTP.0 => rewrite_sctp(payload, manip, port)?,
        _ => {}
    }
    Ok(())
}

/// SCTP (`sctp_manip_pkt`): the port, then the checksum over the whole SCTP packet made
/// again (it is a CRC32c, which no incremental update serves, and it does not cover the IPv4
/// addresses).
fn rewrite_sctp(payload: &mut [u8], manip: Manip, port: u16) -> Result<(), PacketError> {
    if payload.len() < 12 {
        return Err(PacketError::Truncated(Proto::SCTP));
    }
    let at = match manip {
        Manip::Src => 0,
        Manip::Dst => 2,
    };
    payload[at..at + 2].copy_from_slice(&port.to_be_bytes());
    let sum = sctp_checksum(payload);
    payload[8..12].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The checksum of an SCTP packet (`sctp` starts at its common header): CRC32c (RFC 9260,
/// appendix A) of the packet with its checksum field taken as zero. The header carries it
/// least significant byte first, as the kernel's `sctp_compute_cksum` stores it.
pub fn sctp_checksum(sctp: &[u8]) -> u32 {
    // The CRC over the header up to the checksum field, four zero bytes, then the rest.
    let head = sctp.get(..8).unwrap_or(sctp);
    let crc =
        crc32c::crc32c_append(crc32c::crc32c(head), &[0; 4][..sctp.len().saturating_sub(8).min(4)]);
    crc32c::crc32c_append(crc, sctp.get(12..).unwrap_or_default())
}

fn rewrite_icmp(
    payload: &mut [u8],
    manip: Manip,
    old_addr: Ipv4Addr,
    addr: Ipv4Addr,
    port: u16,
) -> Result<(), PacketError> {
    let mut icmp = Icmpv4Packet::new_checked(&mut *payload)
        .map_err(|_| PacketError::Truncated(Proto::ICMP))?;
    match icmp.msg_type() {
        Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply => {
            let old_id = icmp.echo_ident();
            if old_id != port {
                icmp.set_echo_ident(port);
                let c = csum_replace2(icmp.checksum(), old_id, port);
                icmp.set_checksum(c);
            }
        }
        Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded => {
            // The quoted packet travelled the other way: a source rewrite of the error is a
            // destination rewrite of the quote, and vice versa. Only rewrite when the quote
            // really carries the old address there.
            let inner_manip = match manip {
                Manip::Src => Manip::Dst,
                Manip::Dst => Manip::Src,
            };
            let old_sum = icmp.checksum();
            let data = icmp.data_mut();
            let before: Vec<u8> = data.to_vec();
            let quoted_addr =
                quote_is_ipv4(data).then(|| Ipv4Packet::new_unchecked(&*data)).map(|p| {
                    match inner_manip {
                        Manip::Src => p.src_addr(),
                        Manip::Dst => p.dst_addr(),
                    }
                });
            if quoted_addr == Some(old_addr) {
                rewrite_quoted(data, inner_manip, addr, port);
            }
            // The ICMP checksum covers the quote: patch it word by word.
            let mut c = old_sum;
            for (a, b) in before.chunks(2).zip(data.chunks(2)) {
                let o = u16::from_be_bytes([a[0], *a.get(1).unwrap_or(&0)]);
                let n = u16::from_be_bytes([b[0], *b.get(1).unwrap_or(&0)]);
                if o != n {
                    c = csum_replace2(c, o, n);
                }
            }
            icmp.set_checksum(c);
        }
        _ => {}
    }
    Ok(())
}

/// Whether an ICMP error's quote starts with a whole IPv4 header (version 4, a header length
/// of at least 20 bytes that the quote holds). Its total length is not checked: RFC 792
/// quotes the header and only the first 8 bytes of the data, so the quoted total length
/// exceeds the quote; conntrack (`nf_conntrack_inet_error`) reads the header and ports only.
fn quote_is_ipv4(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] >> 4 == 4 && {
        let ihl = usize::from(data[0] & 0x0f) * 4;
        ihl >= 20 && ihl <= data.len()
    }
}

/// Rewrites a quoted (possibly truncated) packet inside an ICMP error: address and header
/// checksum always; the port when the 8 quoted transport bytes hold it. The quoted transport
/// checksum is left alone, as Linux leaves it (it cannot be verified over a truncated quote).
fn rewrite_quoted(data: &mut [u8], manip: Manip, addr: Ipv4Addr, port: u16) {
    if !quote_is_ipv4(data) {
        return;
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut *data);
    let old = match manip {
        Manip::Src => ip.src_addr(),
        Manip::Dst => ip.dst_addr(),
    };
    match manip {
        Manip::Src => ip.set_src_addr(addr),
        Manip::Dst => ip.set_dst_addr(addr),
    }
    let c = csum_replace4(ip.checksum(), old, addr);
    ip.set_checksum(c);
    let proto = Proto(u8::from(ip.next_header()));
    let ihl = usize::from(ip.header_len());
    if proto.has_ports() && data.len() >= ihl + 4 {
        let off = ihl + if manip == Manip::Src { 0 } else { 2 };
        data[off..off + 2].copy_from_slice(&port.to_be_bytes());
    }
}

/// RFC 1624 incremental update of a 16-bit one's complement checksum for one changed word.
pub fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    csum_apply(check, word_change(old, new))
}

/// RFC 1624 incremental update for a changed IPv4 address (two words).
pub fn csum_replace4(check: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    csum_apply(check, addr_change(old, new))
}

/// What one 16-bit word changing from `old` to `new` adds to a checksum's sum (RFC 1624,
/// eqn. 3: `~m + m'`), unfolded so that several changes add up before one fold.
fn word_change(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// [`word_change`] for the two words of an IPv4 address.
fn addr_change(old: Ipv4Addr, new: Ipv4Addr) -> u32 {
    let (o, n) = (u32::from(old), u32::from(new));
    word_change((o >> 16) as u16, (n >> 16) as u16) + word_change(o as u16, n as u16)
}

/// `check` updated by the summed changes of up to six words (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`). Adding the changes up before folding gives what updating word
/// by word gives: one's complement addition does not depend on the order.
fn csum_apply(check: u16, change: u32) -> u16 {
    debug_assert!(change <= 6 * 0x1fffe, "at most six words change");
    let mut sum = u32::from(!check) + change;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Verifies every checksum a receiving host would check: IPv4 header, and TCP/UDP over the
/// pseudo-header, ICMP over its message, SCTP's CRC32c over its packet. Used by tests and the
/// tracer's integrity checks.
pub fn checksums_valid(bytes: &[u8]) -> bool {
    use smoltcp::wire::IpAddress;
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else { return false };
    if !ip.verify_checksum() {
        return false;
    }
    let src = IpAddress::Ipv4(ip.src_addr());
    let dst = IpAddress::Ipv4(ip.dst_addr());
    let payload = ip.payload();
    match IpProtocol::from(u8::from(ip.next_header())) {
        IpProtocol::Tcp => {
            TcpPacket::new_checked(payload).is_ok_and(|t| t.verify_checksum(&src, &dst))
        }
        IpProtocol::Udp => {
            UdpPacket::new_checked(payload).is_ok_and(|u| u.verify_checksum(&src, &dst))
        }
        IpProtocol::Icmp => Icmpv4Packet::new_checked(payload).is_ok_and(|i| i.verify_checksum()),
        p if u8::from(p) == Proto::SCTP.0 => {
            payload.len() >= 12 && payload[8..12] == sctp_checksum(payload).to_le_bytes()
        }
        _ => true,
    }
}

/// Well-formed packets from a few fields, for tests, fuzzers and benches.
#[doc(hidden)]
pub mod build {
    /// A TCP segment `src:sport -> dst:dport` with `flags` and valid checksums.
    pub fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        ipv4(src, dst, 6, &t)
    }

    /// A UDP datagram `src:sport -> dst:dport` with one byte of data and valid checksums.
    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        udp_with(src, sport, dst, dport, b"x")
    }

    /// A UDP datagram carrying `data`, with valid checksums.
    pub fn udp_with(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; 8];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(data);
        ipv4(src, dst, 17, &u)
    }

    /// An IPv4 packet (DF, TTL 64) around `l4`, every checksum filled in from scratch.
    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        use smoltcp::wire::{Icmpv4Packet, IpAddress, Ipv4Packet, TcpPacket, UdpPacket};
        let mut b = vec![0u8; 20 + l4.len()];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        b[4..6].copy_from_slice(&0x1c46u16.to_be_bytes());
        b[6] = 0x40;
        b[8] = 64;
        b[9] = proto;
        b[12..16].copy_from_slice(&src);
        b[16..20].copy_from_slice(&dst);
        b[20..].copy_from_slice(l4);
        let (s, d) = (
            IpAddress::v4(src[0], src[1], src[2], src[3]),
            IpAddress::v4(dst[0], dst[1], dst[2], dst[3]),
        );
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        ip.fill_checksum();
        let payload = ip.payload_mut();
        match proto {
            6 => TcpPacket::new_unchecked(payload).fill_checksum(&s, &d),
            17 => UdpPacket::new_unchecked(payload).fill_checksum(&s, &d),
            1 => Icmpv4Packet::new_unchecked(payload).fill_checksum(),
            _ => {}
        }
        b
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TCP SYN 10.244.1.3:40000 -> 10.96.0.10:80 with valid checksums, as bytes.
    pub(crate) fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        tcp(src, sport, dst, dport, tcp_flags::SYN)
    }

    /// A TCP segment with `flags` and valid checksums.
    pub(crate) fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        build::tcp(src, sport, dst, dport, flags)
    }

    pub(crate) fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, data: &[u8]) -> Vec<u8> {
        build::udp_with(src, sport, dst, dport, data)
    }

    /// Builds an IPv4 packet and fills every checksum from scratch (test fixture only).
    pub(crate) fn build(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        build::ipv4(src, dst, proto, l4)
    }

    #[test]
    fn parses_tcp_syn_bytes() {
        let p = tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80);
        let info = parse(&p).unwrap();
        assert_eq!(info.tuple.src, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(info.tuple.dport, 80);
        assert_eq!(info.tcp_flags, tcp_flags::SYN);
        assert_eq!(info.len, 40);
    }

    /// SCTP's checksum is CRC32c: the iSCSI check values (RFC 3720, B.4) hold, and a NAT of
    /// an SCTP packet rewrites its port and leaves a checksum the receiver accepts (fuzzing
    /// found the port left as it was while conntrack expected the new one).
    #[test]
    fn sctp_nat_rewrites_the_port_and_its_crc32c() {
        // 32 zero bytes: `aa 36 91 8a` on the wire.
        assert_eq!(sctp_checksum(&[0u8; 32]).to_le_bytes(), [0xaa, 0x36, 0x91, 0x8a]);
        // The checksum field itself counts as zero.
        let ascending: Vec<u8> = (0u8..32).collect();
        let zeroed: Vec<u8> = (0u8..32).map(|i| if (8..12).contains(&i) { 0 } else { i }).collect();
        assert_eq!(sctp_checksum(&ascending), sctp_checksum(&zeroed));
        let mut l4 = vec![0u8; 16];
        l4[0..2].copy_from_slice(&5000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&9000u16.to_be_bytes());
        l4[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        l4[12..16].copy_from_slice(&[1, 0, 0, 4]);
        let sum = sctp_checksum(&l4);
        l4[8..12].copy_from_slice(&sum.to_le_bytes());
        let mut p = build([10, 244, 1, 3], [192, 0, 2, 1], 132, &l4);
        rewrite(&mut p, Manip::Src, Ipv4Addr::new(192, 168, 0, 1), 61000).unwrap();
        let info = parse(&p).unwrap();
        assert_eq!((info.tuple.src, info.tuple.sport), (Ipv4Addr::new(192, 168, 0, 1), 61000));
        assert_eq!(info.tuple.dport, 9000);
        assert!(checksums_valid(&p));
        let stored = u32::from_le_bytes([p[28], p[29], p[30], p[31]]);
        assert_ne!(stored, sum, "the port is covered by the checksum");
        p[29] ^= 1;
        assert!(!checksums_valid(&p), "a wrong SCTP checksum is seen");
    }

    #[test]
    fn dnat_rewrite_keeps_checksums_valid_and_other_fields() {
        let mut p = tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80);
        let ident_before = &p[4..8].to_vec();
        rewrite(&mut p, Manip::Dst, Ipv4Addr::new(10, 244, 2, 2), 8080).unwrap();
        assert!(checksums_valid(&p));
        let info = parse(&p).unwrap();
        assert_eq!(info.tuple.dst, Ipv4Addr::new(10, 244, 2, 2));
        assert_eq!(info.tuple.dport, 8080);
        assert_eq!(&p[4..8], &ident_before[..], "ident and flags untouched");
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = udp([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53, b"hi");
        p[26] = 0;
        p[27] = 0;
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        rewrite(&mut p, Manip::Src, Ipv4Addr::new(192, 168, 0, 1), 2000).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
    }

    #[test]
    fn truncated_packets_are_errors_not_panics() {
        let p = tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80);
        for n in 0..p.len() {
            let _ = parse(&p[..n]);
            let mut cut = p[..n].to_vec();
            let _ = rewrite(&mut cut, Manip::Dst, Ipv4Addr::LOCALHOST, 1);
        }
        assert!(parse(&p[..30]).is_err());
    }

    #[test]
    fn csum_replace_matches_recompute() {
        // RFC 1624 section 4 example: HC 0xdd2f, m 0x5555 -> m' 0x3285 gives HC' 0x0000.
        assert_eq!(csum_replace2(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    /// A 16-bit word, often one at an end of its range, where the sums carry.
    fn word() -> impl proptest::strategy::Strategy<Value = u16> {
        use proptest::prelude::*;
        prop_oneof![Just(0u16), Just(1), Just(0xfffe), Just(0xffff), any::<u16>()]
    }

    /// A 32-bit word made of two [`word`]s.
    fn two_words() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::prelude::*;
        (word(), word()).prop_map(|(h, l)| u32::from(h) << 16 | u32::from(l))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// An address and a port changed at once update a checksum exactly as the three
        /// words updated one by one do (RFC 1624, eqn. 3 applied word by word).
        #[test]
        fn summed_changes_update_as_word_by_word(
            check in word(),
            old in two_words(),
            new in two_words(),
            old_port in word(),
            new_port in word(),
        ) {
            let word_by_word = [
                ((old >> 16) as u16, (new >> 16) as u16),
                (old as u16, new as u16),
                (old_port, new_port),
            ]
            .iter()
            .fold(check, |c, &(o, n)| {
                let mut sum = u32::from(!c) + u32::from(!o) + u32::from(n);
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                !(sum as u16)
            });
            let change = addr_change(old.into(), new.into()) + word_change(old_port, new_port);
            proptest::prop_assert_eq!(csum_apply(check, change), word_by_word);
        }
    }
}
