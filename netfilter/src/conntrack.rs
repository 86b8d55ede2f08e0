//! Connection tracking, after `net/netfilter/nf_conntrack_core.c` and the per-protocol
//! trackers (`nf_conntrack_proto_tcp.c`, `_udp.c`, `_icmp.c`).
//!
//! A packet of an unknown connection gets an *unconfirmed* [`Entry`] that travels with it
//! (in [`CtRef::Unconfirmed`]); the entry enters the table only when the packet survives to
//! the end of POSTROUTING or INPUT ([`Conntrack::confirm`]). A dropped packet's entry is simply
//! dropped with it, as in Linux. NAT decisions are stored in the entry (its reply tuple and
//! the `SRC_NAT`/`DST_NAT` status bits) and replayed on every later packet of both directions.
//!
//! Differences from Linux, on purpose: TCP window tracking is not modelled (sequence numbers
//! are not checked, as with `nf_conntrack_tcp_be_liberal=1`); expectations and helpers are
//! not modelled.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

use crate::packet::{Manip, PacketInfo, Proto, Tuple, tcp_flags};

/// The index of a confirmed entry in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtId(pub u32);

/// Which way a packet travels relative to the packet that created its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Direction {
    /// Same direction as the first packet (`IP_CT_DIR_ORIGINAL`).
    Original,
    /// The other way (`IP_CT_DIR_REPLY`).
    Reply,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }

    /// The opposite direction.
    pub fn flip(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }
}

/// The state a packet is in, relative to its connection (`enum ip_conntrack_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum CtInfo {
    /// The first packet(s) of a connection, before any reply.
    New,
    /// A packet of a connection that has seen traffic both ways, or any reply.
    Established,
    /// An ICMP error about a tracked connection.
    Related,
    /// Not trackable (a malformed packet, an ICMP error about nothing known).
    Invalid,
    /// Exempted with `-j NOTRACK` / `-j CT --notrack`.
    Untracked,
}

/// Status bits of an entry (`enum ip_conntrack_status`).
pub mod status {
    /// A reply has been seen.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// The connection will not be early-dropped.
    pub const ASSURED: u32 = 1 << 2;
    /// The entry is in the table.
    pub const CONFIRMED: u32 = 1 << 3;
    /// Source NAT applies in the original direction.
    pub const SRC_NAT: u32 = 1 << 4;
    /// Destination NAT applies in the original direction.
    pub const DST_NAT: u32 = 1 << 5;
    /// The source-NAT decision has been made (possibly a null binding).
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    /// The destination-NAT decision has been made (possibly a null binding).
    pub const DST_NAT_DONE: u32 = 1 << 8;
}

/// TCP connection states (`enum tcp_conntrack`), as `conntrack -L` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub enum TcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        })
    }
}

/// Timeouts, with the Linux 6.x defaults (`net.netfilter.nf_conntrack_*_timeout*`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    pub udp: Duration,
    pub udp_stream: Duration,
    pub icmp: Duration,
    pub generic: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp: s(30),
            udp_stream: s(120),
            icmp: s(30),
            generic: s(600),
        }
    }
}

/// One tracked connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Insertion order; `conntrack -L` lists entries in this order.
    pub seq: u64,
    /// The tuple of the original direction, as first seen.
    pub orig: Tuple,
    /// The tuple a reply is expected to carry (after NAT).
    pub reply: Tuple,
    /// [`status`] bits.
    pub status: u32,
    /// TCP state (`None` for other protocols).
    pub tcp: TcpState,
    fin_seen: [bool; 2],
    /// When the entry times out.
    pub expires: Instant,
    /// The connection mark (`ct mark`).
    pub mark: u32,
    /// Packets and bytes per direction.
    pub counters: [(u64, u64); 2],
    /// UDP: two seconds after the first packet. A flow that saw a reply is a stream (the
    /// longer timeout, ASSURED) only once it is still active past this (`stream_ts`).
    pub stream_ts: Instant,
}

impl Entry {
    /// A fresh, unconfirmed entry for a packet that matched nothing in the table.
    pub fn new(info: &PacketInfo, now: Instant, t: &Timeouts) -> Entry {
        let mut e = Entry {
            seq: 0,
            orig: info.tuple,
            reply: info.tuple.invert(),
            status: 0,
            tcp: TcpState::None,
            fin_seen: [false; 2],
            expires: now,
            mark: 0,
            counters: [(0, 0); 2],
            stream_ts: now + Duration::from_secs(2),
        };
        e.update(info, Direction::Original, now, t);
        e
    }

    /// The tuple a packet travelling in `dir` carries.
    pub fn tuple(&self, dir: Direction) -> &Tuple {
        match dir {
            Direction::Original => &self.orig,
            Direction::Reply => &self.reply,
        }
    }

    /// Whether any NAT applies to this connection.
    pub fn is_natted(&self) -> bool {
        self.status & (status::SRC_NAT | status::DST_NAT) != 0
    }

    /// The address and port a packet in `dir` must carry on side `manip` after NAT, or `None`
    /// when this entry does not translate that side (`nf_nat_packet`).
    pub fn nat_target(&self, dir: Direction, manip: Manip) -> Option<(Ipv4Addr, u16)> {
        let mut bit = match manip {
            Manip::Src => status::SRC_NAT,
            Manip::Dst => status::DST_NAT,
        };
        if dir == Direction::Reply {
            bit ^= status::SRC_NAT | status::DST_NAT;
        }
        if self.status & bit == 0 {
            return None;
        }
        let target = self.tuple(dir.flip()).invert();
        Some(match manip {
            Manip::Src => (target.src, target.sport),
            Manip::Dst => (target.dst, target.dport),
        })
    }

    /// Records a NAT decision on an unconfirmed entry: the original direction will carry
    /// `addr:port` on side `manip`, and the reply tuple changes to match.
    pub fn set_nat(&mut self, manip: Manip, addr: Ipv4Addr, port: u16) {
        match manip {
            Manip::Dst => {
                self.reply.src = addr;
                self.reply.sport = port;
                self.status |= status::DST_NAT | status::DST_NAT_DONE;
            }
            Manip::Src => {
                self.reply.dst = addr;
                self.reply.dport = port;
                self.status |= status::SRC_NAT | status::SRC_NAT_DONE;
            }
        }
    }

    /// Advances the protocol state for a packet seen in `dir` and refreshes the timeout.
    pub fn update(&mut self, info: &PacketInfo, dir: Direction, now: Instant, t: &Timeouts) {
        let c = &mut self.counters[dir.index()];
        c.0 += 1;
        c.1 += u64::from(info.len);
        if dir == Direction::Reply {
            self.status |= status::SEEN_REPLY;
        }
        let timeout = match info.tuple.proto {
            Proto::TCP => {
                self.tcp = self.tcp_next(dir, info.tcp_flags);
                if self.tcp == TcpState::Established {
                    self.status |= status::ASSURED;
                }
                match self.tcp {
                    TcpState::None | TcpState::SynSent => t.tcp_syn_sent,
                    TcpState::SynRecv => t.tcp_syn_recv,
                    TcpState::Established => t.tcp_established,
                    TcpState::FinWait => t.tcp_fin_wait,
                    TcpState::CloseWait => t.tcp_close_wait,
                    TcpState::LastAck => t.tcp_last_ack,
                    TcpState::TimeWait => t.tcp_time_wait,
                    TcpState::Close => t.tcp_close,
                }
            }
            // nf_conntrack_udp_packet: replied and still active after two seconds.
            Proto::UDP if self.status & status::SEEN_REPLY != 0 && now > self.stream_ts => {
                self.status |= status::ASSURED;
                t.udp_stream
            }
            Proto::UDP => t.udp,
            Proto::ICMP => t.icmp,
            _ => t.generic,
        };
        self.expires = now + timeout;
    }

    fn tcp_next(&mut self, dir: Direction, flags: u8) -> TcpState {
        use TcpState::*;
        let d = dir.index();
        let syn = flags & tcp_flags::SYN != 0;
        let ack = flags & tcp_flags::ACK != 0;
        let fin = flags & tcp_flags::FIN != 0;
        if flags & tcp_flags::RST != 0 {
            return Close;
        }
        match (self.tcp, dir) {
            (None | Close | TimeWait, Direction::Original) if syn && !ack => {
                self.fin_seen = [false; 2];
                SynSent
            }
            // Loose pick-up of a connection seen mid-stream (nf_conntrack_tcp_loose=1).
            (None, _) => Established,
            (SynSent, Direction::Reply) if syn && ack => SynRecv,
            (SynRecv, Direction::Original) if ack && !syn => Established,
            (Established, _) if fin => {
                self.fin_seen[d] = true;
                FinWait
            }
            (FinWait, _) if !self.fin_seen[d] && fin => {
                self.fin_seen[d] = true;
                LastAck
            }
            (FinWait, _) if !self.fin_seen[d] && ack => CloseWait,
            (CloseWait, _) if !self.fin_seen[d] && fin => {
                self.fin_seen[d] = true;
                LastAck
            }
            (LastAck, _) if ack && !fin => TimeWait,
            (s, _) => s,
        }
    }

    fn proto_name(&self) -> &'static str {
        match self.orig.proto {
            Proto::TCP => "tcp",
            Proto::UDP => "udp",
            Proto::ICMP => "icmp",
            Proto::SCTP => "sctp",
            _ => "unknown",
        }
    }
}

/// Attachment of a packet to conntrack (what `skb->_nfct` holds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CtRef {
    /// Not looked up yet.
    #[default]
    None,
    /// `NOTRACK`: conntrack ignores this packet.
    Untracked,
    /// Could not be tracked.
    Invalid,
    /// A new connection, not yet in the table.
    Unconfirmed(Box<Entry>),
    /// A packet of a connection in the table, and which way it travels.
    Confirmed(CtId, Direction, CtInfo),
}

/// Why a connection could not be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// `nf_conntrack_max` reached and nothing could be early-dropped.
    #[error("nf_conntrack: table full, dropping packet (raise net.netfilter.nf_conntrack_max)")]
    TableFull,
    /// Another entry already owns one of the tuples (a clash).
    #[error("nf_conntrack: insert failed, a connection with the same tuple exists")]
    Clash,
}

/// Table counters, as `conntrack -S` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct Stats {
    pub found: u64,
    pub insert: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub invalid: u64,
    pub expired: u64,
}

/// The conntrack table of one network namespace.
///
/// Lookups are one hash probe by tuple; entries live in a slab addressed by [`CtId`];
/// dumps iterate in insertion order, never in hash order.
#[derive(Clone, Debug)]
pub struct Conntrack {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    index: HashMap<Tuple, (CtId, Direction), crate::eval::FastBuild>,
    next_seq: u64,
    count: usize,
    /// `net.netfilter.nf_conntrack_max`.
    pub max: usize,
    /// Protocol timeouts.
    pub timeouts: Timeouts,
    /// Counters.
    pub stats: Stats,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(262_144)
    }
}

impl Conntrack {
    /// An empty table holding at most `max` entries.
    pub fn new(max: usize) -> Conntrack {
        Conntrack {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            next_seq: 0,
            count: 0,
            max,
            timeouts: Timeouts::default(),
            stats: Stats::default(),
        }
    }

    /// Number of confirmed entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entry with this id.
    pub fn get(&self, id: CtId) -> Option<&Entry> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The entry with this id, mutably.
    pub fn get_mut(&mut self, id: CtId) -> Option<&mut Entry> {
        self.slots.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// Finds the connection a tuple belongs to, ignoring entries that have timed out.
    pub fn find(&mut self, tuple: &Tuple, now: Instant) -> Option<(CtId, Direction)> {
        let (id, dir) = *self.index.get(tuple)?;
        if self.get(id).is_some_and(|e| e.expires <= now) {
            self.remove(id);
            self.stats.expired += 1;
            return None;
        }
        Some((id, dir))
    }

    /// Whether any live entry uses `tuple` in either direction (`nf_conntrack_tuple_taken`).
    pub fn tuple_taken(&self, tuple: &Tuple) -> bool {
        self.index.contains_key(tuple)
    }

    /// Looks a packet up (`nf_conntrack_in`): an existing connection is updated and returned
    /// confirmed; an unknown one gets a new unconfirmed entry.
    pub fn lookup(&mut self, info: &PacketInfo, now: Instant) -> CtRef {
        if let Some((id, dir)) = self.find(&info.tuple, now) {
            self.stats.found += 1;
            let timeouts = self.timeouts.clone();
            let e = self.get_mut(id).expect("indexed entry exists");
            e.update(info, dir, now, &timeouts);
            let ctinfo = if dir == Direction::Reply || e.status & status::SEEN_REPLY != 0 {
                CtInfo::Established
            } else {
                CtInfo::New
            };
            return CtRef::Confirmed(id, dir, ctinfo);
        }
        if let Some(inner) = info.icmp_inner {
            // An ICMP error quotes a packet this host forwarded or sent: find that packet's
            // connection; the error travels the other way.
            return match self.find(&inner, now) {
                Some((id, dir)) => CtRef::Confirmed(id, dir.flip(), CtInfo::Related),
                None => {
                    self.stats.invalid += 1;
                    CtRef::Invalid
                }
            };
        }
        if info.tuple.proto == Proto::TCP && info.tcp_flags & tcp_flags::RST != 0 {
            self.stats.invalid += 1;
            return CtRef::Invalid;
        }
        CtRef::Unconfirmed(Box::new(Entry::new(info, now, &self.timeouts)))
    }

    /// Inserts an unconfirmed entry (`__nf_conntrack_confirm`). When the table is full, one
    /// entry that is not assured is early-dropped first (the oldest); if there is none, the
    /// packet must be dropped.
    pub fn confirm(&mut self, mut entry: Entry, now: Instant) -> Result<CtId, ConfirmError> {
        if self.index.contains_key(&entry.orig) || self.index.contains_key(&entry.reply) {
            self.stats.insert_failed += 1;
            return Err(ConfirmError::Clash);
        }
        if self.count >= self.max {
            self.expire(now);
        }
        if self.count >= self.max {
            let victim = self
                .iter()
                .filter(|(_, e)| e.status & status::ASSURED == 0)
                .min_by_key(|(_, e)| e.seq)
                .map(|(id, _)| id);
            match victim {
                Some(id) => {
                    self.remove(id);
                    self.stats.early_drop += 1;
                }
                None => {
                    self.stats.drop += 1;
                    return Err(ConfirmError::TableFull);
                }
            }
        }
        entry.status |= status::CONFIRMED;
        entry.seq = self.next_seq;
        self.next_seq += 1;
        let id = match self.free.pop() {
            Some(i) => CtId(i),
            None => {
                self.slots.push(None);
                CtId((self.slots.len() - 1) as u32)
            }
        };
        self.index.insert(entry.orig, (id, Direction::Original));
        self.index.insert(entry.reply, (id, Direction::Reply));
        self.slots[id.0 as usize] = Some(entry);
        self.count += 1;
        self.stats.insert += 1;
        Ok(id)
    }

    /// Removes an entry.
    pub fn remove(&mut self, id: CtId) -> Option<Entry> {
        let e = self.slots.get_mut(id.0 as usize)?.take()?;
        self.index.remove(&e.orig);
        self.index.remove(&e.reply);
        self.free.push(id.0);
        self.count -= 1;
        Some(e)
    }

    /// Removes every entry that has timed out by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let dead: Vec<CtId> =
            self.iter().filter(|(_, e)| e.expires <= now).map(|(id, _)| id).collect();
        for id in &dead {
            self.remove(*id);
        }
        self.stats.expired += dead.len() as u64;
        dead.len()
    }

    /// Deletes the entries `pred` selects (`conntrack -D`); returns how many.
    pub fn delete_where(&mut self, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        let doomed: Vec<CtId> = self.iter().filter(|(_, e)| pred(e)).map(|(id, _)| id).collect();
        for id in &doomed {
            self.remove(*id);
        }
        doomed.len()
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (CtId, &Entry)> {
        let mut v: Vec<(CtId, &Entry)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (CtId(i as u32), e)))
            .collect();
        v.sort_by_key(|(_, e)| e.seq);
        v.into_iter()
    }

    /// `conntrack -L` output at virtual time `now` (one line per entry, oldest first).
    pub fn list(&self, now: Instant) -> String {
        let mut out = String::new();
        for (_, e) in self.iter() {
            out.push_str(&format_entry(e, now));
            out.push('\n');
        }
        out
    }
}

/// One `conntrack -L` line.
pub fn format_entry(e: &Entry, now: Instant) -> String {
    use std::fmt::Write;
    let secs = (e.expires - now.min(e.expires)).total_millis().div_ceil(1000);
    let mut s = format!("{:<8} {} {} ", e.proto_name(), e.orig.proto.0, secs);
    if e.orig.proto == Proto::TCP {
        let _ = write!(s, "{} ", e.tcp);
    }
    s.push_str(&tuple_text(&e.orig, true));
    if e.status & status::SEEN_REPLY == 0 {
        s.push_str(" [UNREPLIED]");
    }
    s.push(' ');
    s.push_str(&tuple_text(&e.reply, false));
    if e.status & status::ASSURED != 0 {
        s.push_str(" [ASSURED]");
    }
    let _ = write!(s, " mark={} use=1", e.mark);
    s
}

fn tuple_text(t: &Tuple, original: bool) -> String {
    if t.proto == Proto::ICMP {
        let ty = if original { 8 } else { 0 };
        format!("src={} dst={} type={ty} code=0 id={}", t.src, t.dst, t.sport)
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{self, tests::tcp_syn};

    fn info(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> PacketInfo {
        let mut p = packet::parse(&tcp_syn(src, sport, dst, dport)).unwrap();
        p.tcp_flags = flags;
        p
    }

    /// What Linux 6.18 showed in `/proc/net/nf_conntrack` for a UDP echo between two
    /// namespaces: replied within two seconds, `udp 17 29 ...` (no ASSURED); a packet after
    /// two seconds, `udp 17 119 ... [ASSURED]`.
    #[test]
    fn udp_becomes_an_assured_stream_only_after_two_seconds() {
        let mut ct = Conntrack::default();
        let at = Instant::from_millis;
        let orig =
            packet::parse(&packet::tests::udp([10, 0, 0, 1], 40000, [10, 0, 0, 2], 9000, b"x"))
                .unwrap();
        let reply =
            packet::parse(&packet::tests::udp([10, 0, 0, 2], 9000, [10, 0, 0, 1], 40000, b"x"))
                .unwrap();
        let CtRef::Unconfirmed(e) = ct.lookup(&orig, at(0)) else { panic!("new entry expected") };
        let id = ct.confirm(*e, at(0)).unwrap();
        for t in [10, 20, 30] {
            ct.lookup(&reply, at(t));
            ct.lookup(&orig, at(t + 1));
        }
        let e = ct.get(id).unwrap();
        assert_eq!(e.status & status::ASSURED, 0);
        assert_eq!(e.expires, at(31) + Duration::from_secs(30));
        ct.lookup(&orig, at(2_100));
        let e = ct.get(id).unwrap();
        assert_ne!(e.status & status::ASSURED, 0);
        assert_eq!(e.expires, at(2_100) + Duration::from_secs(120));
        // Never replied: never a stream, however long it lasts.
        let lone =
            packet::parse(&packet::tests::udp([10, 0, 0, 3], 40000, [10, 0, 0, 2], 9000, b"x"))
                .unwrap();
        let CtRef::Unconfirmed(e) = ct.lookup(&lone, at(0)) else { panic!("new entry expected") };
        let id = ct.confirm(*e, at(0)).unwrap();
        ct.lookup(&lone, at(5_000));
        assert_eq!(ct.get(id).unwrap().status & status::ASSURED, 0);
    }

    #[test]
    fn tcp_handshake_and_close_walk_the_kernel_states() {
        use tcp_flags::*;
        let mut ct = Conntrack::default();
        let t0 = Instant::from_secs(0);
        let syn = info([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80, SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&syn, t0) else { panic!("new entry expected") };
        assert_eq!(e.tcp, TcpState::SynSent);
        let id = ct.confirm(*e, t0).unwrap();
        let reply = |f| info([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000, f);
        let orig = |f| info([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80, f);
        assert!(matches!(
            ct.lookup(&reply(SYN | ACK), t0),
            CtRef::Confirmed(_, Direction::Reply, CtInfo::Established)
        ));
        assert_eq!(ct.get(id).unwrap().tcp, TcpState::SynRecv);
        ct.lookup(&orig(ACK), t0);
        assert_eq!(ct.get(id).unwrap().tcp, TcpState::Established);
        assert!(ct.get(id).unwrap().status & status::ASSURED != 0);
        ct.lookup(&orig(FIN | ACK), t0);
        assert_eq!(ct.get(id).unwrap().tcp, TcpState::FinWait);
        ct.lookup(&reply(ACK), t0);
        assert_eq!(ct.get(id).unwrap().tcp, TcpState::CloseWait);
        ct.lookup(&reply(FIN | ACK), t0);
        assert_eq!(ct.get(id).unwrap().tcp, TcpState::LastAck);
        ct.lookup(&orig(ACK), t0);
        assert_eq!(ct.get(id).unwrap().tcp, TcpState::TimeWait);
        // TIME_WAIT lasts 120 s.
        assert_eq!(ct.expire(Instant::from_secs(119)), 0);
        assert_eq!(ct.expire(Instant::from_secs(120)), 1);
    }

    #[test]
    fn nat_targets_follow_nf_nat_packet() {
        let mut ct = Conntrack::default();
        let t0 = Instant::from_secs(0);
        let syn = info([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(mut e) = ct.lookup(&syn, t0) else { panic!() };
        e.set_nat(Manip::Dst, Ipv4Addr::new(10, 244, 2, 2), 8080);
        assert_eq!(
            e.nat_target(Direction::Original, Manip::Dst),
            Some((Ipv4Addr::new(10, 244, 2, 2), 8080))
        );
        assert_eq!(e.nat_target(Direction::Original, Manip::Src), None);
        // Replies get their source put back to the VIP.
        assert_eq!(
            e.nat_target(Direction::Reply, Manip::Src),
            Some((Ipv4Addr::new(10, 96, 0, 10), 80))
        );
        ct.confirm(*e, t0).unwrap();
        let back =
            info([10, 244, 2, 2], 8080, [10, 244, 1, 3], 40000, tcp_flags::SYN | tcp_flags::ACK);
        assert!(matches!(ct.lookup(&back, t0), CtRef::Confirmed(_, Direction::Reply, _)));
        let listing = ct.list(t0);
        assert_eq!(
            listing.trim_end(),
            "tcp      6 60 SYN_RECV src=10.244.1.3 dst=10.96.0.10 sport=40000 dport=80 \
             src=10.244.2.2 dst=10.244.1.3 sport=8080 dport=40000 mark=0 use=1"
        );
    }

    #[test]
    fn full_table_early_drops_unassured_then_refuses() {
        let mut ct = Conntrack::new(2);
        let t0 = Instant::from_secs(0);
        for port in [1000, 1001] {
            let i = info([10, 0, 0, 1], port, [10, 0, 0, 2], 80, tcp_flags::SYN);
            let CtRef::Unconfirmed(e) = ct.lookup(&i, t0) else { panic!() };
            ct.confirm(*e, t0).unwrap();
        }
        let i = info([10, 0, 0, 1], 1002, [10, 0, 0, 2], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&i, t0) else { panic!() };
        ct.confirm(*e, t0).unwrap();
        assert_eq!(ct.stats.early_drop, 1);
        assert_eq!(ct.len(), 2);
        // Make both assured: now nothing can be early-dropped.
        let ids: Vec<CtId> = ct.iter().map(|(id, _)| id).collect();
        for id in ids {
            ct.get_mut(id).unwrap().status |= status::ASSURED;
        }
        let i = info([10, 0, 0, 1], 1003, [10, 0, 0, 2], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&i, t0) else { panic!() };
        assert_eq!(ct.confirm(*e, t0), Err(ConfirmError::TableFull));
        assert_eq!(ct.len(), 2);
    }

    #[test]
    fn icmp_error_about_a_connection_is_related() {
        let mut ct = Conntrack::default();
        let t0 = Instant::from_secs(0);
        let i = info([10, 0, 0, 1], 5000, [10, 0, 0, 2], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&i, t0) else { panic!() };
        ct.confirm(*e, t0).unwrap();
        let mut err = i;
        err.tuple = Tuple {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            proto: Proto::ICMP,
            sport: 0,
            dport: 0,
        };
        err.icmp = Some((3, 3));
        err.icmp_inner = Some(i.tuple);
        assert!(matches!(
            ct.lookup(&err, t0),
            CtRef::Confirmed(_, Direction::Reply, CtInfo::Related)
        ));
    }
}
