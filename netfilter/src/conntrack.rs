//! Connection tracking, after `net/netfilter/nf_conntrack_core.c` and the per-protocol
//! trackers (`nf_conntrack_proto_tcp.c`, `_udp.c`, `_icmp.c`).
//!
//! A packet of an unknown connection gets an *unconfirmed* [`Entry`] that travels with it
//! (in [`CtRef::Unconfirmed`]); the entry enters the table only when the packet survives to
//! the end of POSTROUTING or INPUT ([`Conntrack::confirm`]). A dropped packet's entry is simply
//! dropped with it, as in Linux. NAT decisions are stored in the entry (its reply tuple and
//! the `SRC_NAT`/`DST_NAT` status bits) and replayed on every later packet of both directions.
//!
//! The table is laid out as the kernel's (see [`Conntrack`]): `nf_conntrack_buckets` hash
//! chains of tuple hashes, one per direction of every entry, and the kernel's early drop when
//! `nf_conntrack_max` is reached.
//!
//! Differences from Linux, on purpose: TCP window tracking is not modelled (sequence numbers
//! are not checked, as with `nf_conntrack_tcp_be_liberal=1`); expectations and helpers are
//! not modelled; the table-full check and its early drop happen when an entry is confirmed,
//! not when it is allocated (the kernel also counts unconfirmed entries against the limit).

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
    /// A SYN seen from the reply direction too (simultaneous open).
    SynSent2,
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
            TcpState::SynSent2 => "SYN_SENT2",
        })
    }
}

/// A TCP segment's class for the state table (`get_conntrack_index`): RST, then SYN (with
/// or without ACK), then FIN, then ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpIndex {
    /// SYN without ACK.
    Syn,
    /// SYN and ACK.
    SynAck,
    /// FIN (no SYN or RST).
    Fin,
    /// ACK (no SYN, FIN or RST).
    Ack,
    /// RST.
    Rst,
    /// None of them.
    None,
}

impl TcpIndex {
    /// The class of a segment with these flags.
    pub fn of(flags: u8) -> TcpIndex {
        let has = |f: u8| flags & f != 0;
        if has(tcp_flags::RST) {
            TcpIndex::Rst
        } else if has(tcp_flags::SYN) {
            if has(tcp_flags::ACK) { TcpIndex::SynAck } else { TcpIndex::Syn }
        } else if has(tcp_flags::FIN) {
            TcpIndex::Fin
        } else if has(tcp_flags::ACK) {
            TcpIndex::Ack
        } else {
            TcpIndex::None
        }
    }
}

/// What a packet did to the entry it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Tracked (its state and timeout follow).
    Tracked,
    /// Invalid for the connection's state (`--ctstate INVALID`); the entry is unchanged.
    Invalid,
    /// A SYN reopening a closed connection: the entry died and the packet starts anew.
    Reopen,
}

/// A cell of the state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    To(TcpState),
    /// `sIG`: let through without changing the state.
    Ignore,
    /// `sIV`: invalid.
    Invalid,
}

/// `tcp_conntracks[dir][index][state]`, the kernel's table, row for row.
fn tcp_next(dir: Direction, index: TcpIndex, state: TcpState) -> Next {
    use TcpState::*;
    const SS: Next = Next::To(SynSent);
    const SR: Next = Next::To(SynRecv);
    const ES: Next = Next::To(Established);
    const FW: Next = Next::To(FinWait);
    const CW: Next = Next::To(CloseWait);
    const LA: Next = Next::To(LastAck);
    const TW: Next = Next::To(TimeWait);
    const CL: Next = Next::To(Close);
    const S2: Next = Next::To(SynSent2);
    const IV: Next = Next::Invalid;
    const IG: Next = Next::Ignore;
    // Columns: NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK,
    // TIME_WAIT, CLOSE, SYN_SENT2.
    const ORIGINAL: [[Next; 10]; 6] = [
        /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ];
    const REPLY: [[Next; 10]; 6] = [
        /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ];
    let row = match index {
        TcpIndex::Syn => 0,
        TcpIndex::SynAck => 1,
        TcpIndex::Fin => 2,
        TcpIndex::Ack => 3,
        TcpIndex::Rst => 4,
        TcpIndex::None => 5,
    };
    let col = state as usize;
    match dir {
        Direction::Original => ORIGINAL[row][col],
        Direction::Reply => REPLY[row][col],
    }
}

/// Whether a TCP segment with these flags can start an entry (`tcp_new`): a SYN, or, as
/// `nf_conntrack_tcp_loose=1` allows, a segment in the middle of a connection (an ACK).
pub fn tcp_can_start(flags: u8) -> bool {
    matches!(tcp_next(Direction::Original, TcpIndex::of(flags), TcpState::None), Next::To(_))
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
    /// `nf_conntrack_tcp_timeout_unacknowledged`: also the cap on a connection picked up
    /// mid-stream until a reply is seen.
    pub tcp_unack: Duration,
    pub udp: Duration,
    pub udp_stream: Duration,
    pub icmp: Duration,
    pub generic: Duration,
}

impl Timeouts {
    /// The timeout of a TCP state.
    pub fn tcp_timeout(&self, s: TcpState) -> Duration {
        match s {
            TcpState::None | TcpState::SynSent | TcpState::SynSent2 => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
        }
    }
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
            tcp_unack: s(300),
            udp: s(30),
            udp_stream: s(120),
            icmp: s(30),
            generic: s(600),
        }
    }
}

/// One tracked connection.
///
/// The fields a hash-chain walk and a lookup read (both tuples, status, state, expiry) come
/// first, so that in the table they share the cache line of the chain links.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    /// The tuple of the original direction, as first seen.
    pub orig: Tuple,
    /// The tuple a reply is expected to carry (after NAT).
    pub reply: Tuple,
    /// [`status`] bits.
    pub status: u32,
    /// TCP state (`None` for other protocols).
    pub tcp: TcpState,
    /// TCP: which direction sent the first FIN (`IP_CT_TCP_FLAG_CLOSE_INIT`).
    close_init: [bool; 2],
    /// TCP: the direction and flag class of the last packet that changed or was ignored in
    /// the state (`last_dir`, `last_index`).
    last: Option<(Direction, TcpIndex)>,
    /// TCP: a simultaneous open was seen (`IP_CT_TCP_SIMULTANEOUS_OPEN`).
    simultaneous: bool,
    /// When the entry times out.
    pub expires: Instant,
    /// UDP: two seconds after the first packet. A flow that saw a reply is a stream (the
    /// longer timeout, ASSURED) only once it is still active past this (`stream_ts`).
    pub stream_ts: Instant,
    /// The connection mark (`ct mark`).
    pub mark: u32,
    /// Packets and bytes per direction.
    pub counters: [(u64, u64); 2],
    /// Insertion order; `conntrack -L` lists entries in this order.
    pub seq: u64,
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
            close_init: [false; 2],
            last: None,
            simultaneous: false,
            expires: now,
            mark: 0,
            counters: [(0, 0); 2],
            stream_ts: now + Duration::from_secs(2),
        };
        // A new TCP entry starts from a segment `tcp_can_start` accepts: always tracked.
        let _ = e.update(info, Direction::Original, now, t);
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

    /// Advances the protocol state for a packet seen in `dir` and refreshes the timeout, as
    /// `nf_conntrack_in` does: the protocol's handler first (`nf_conntrack_tcp_packet`,
    /// `nf_conntrack_udp_packet`), which sees `SEEN_REPLY` as it was before this packet,
    /// then `SEEN_REPLY` for a reply.
    ///
    /// TCP follows `nf_conntrack_tcp_packet`: the kernel's state table (`tcp_conntracks`),
    /// its ignored and invalid packets, the reopening of a closed connection by a new SYN,
    /// and its timeout rules: a RST gives CLOSE's 10 s; before any reply, a RST kills the
    /// entry (it expires now), a retransmitted SYN in SYN_SENT renews nothing (not even the
    /// counters), and an ESTABLISHED entry picked up mid-stream gets the 300 s
    /// "unacknowledged" timeout instead of five days; ASSURED is set on a packet that keeps
    /// ESTABLISHED (after SYN_RECV or a picked-up ESTABLISHED) once a reply was seen.
    /// Sequence and window tracking (`tcp_in_window`, and the timeouts for retransmissions,
    /// unacknowledged data and zero windows) is not modelled: every segment is in window.
    pub fn update(
        &mut self,
        info: &PacketInfo,
        dir: Direction,
        now: Instant,
        t: &Timeouts,
    ) -> Update {
        let replied = self.status & status::SEEN_REPLY != 0;
        let refresh = match info.tuple.proto {
            Proto::TCP => match self.tcp_packet(info.tcp_flags, dir, replied, now, t) {
                Ok(r) => r,
                Err(u) => return u,
            },
            // nf_conntrack_udp_packet: replied and still active after two seconds.
            Proto::UDP if replied && now > self.stream_ts => {
                self.status |= status::ASSURED;
                Some(t.udp_stream)
            }
            Proto::UDP => Some(t.udp),
            Proto::ICMP => Some(t.icmp),
            _ => Some(t.generic),
        };
        if let Some(timeout) = refresh {
            let c = &mut self.counters[dir.index()];
            c.0 += 1;
            c.1 += u64::from(info.len);
            self.expires = now + timeout;
        }
        if dir == Direction::Reply {
            self.status |= status::SEEN_REPLY;
        }
        Update::Tracked
    }

    /// `nf_conntrack_tcp_packet` with every segment in window: the timeout to refresh to
    /// (`None`: leave the timeout and counters alone), or how the packet fails. A killed
    /// entry expires now.
    fn tcp_packet(
        &mut self,
        flags: u8,
        dir: Direction,
        replied: bool,
        now: Instant,
        t: &Timeouts,
    ) -> Result<Option<Duration>, Update> {
        let index = TcpIndex::of(flags);
        let (old, mut new) = match tcp_next(dir, index, self.tcp) {
            Next::Invalid => return Err(Update::Invalid),
            Next::To(TcpState::SynSent)
                if matches!(self.tcp, TcpState::TimeWait | TcpState::Close) =>
            {
                // A SYN reopening a connection one side closed, or this side reset: the old
                // entry dies and the packet starts a new one.
                let reset_here = self.last == Some((dir, TcpIndex::Rst));
                if self.close_init[0] || self.close_init[1] || reset_here {
                    self.expires = now;
                    return Err(Update::Reopen);
                }
                return Ok(self.ignore(dir, index));
            }
            Next::Ignore => {
                // A SYN/ACK answering a SYN ignored in the other direction: client and
                // server are in sync, and the table gets back in sync as if from SYN_SENT
                // (the kernel also checks the acknowledged sequence number).
                let answers = matches!(self.last, Some((d, TcpIndex::Syn)) if d != dir);
                if index != TcpIndex::SynAck || !answers {
                    return Ok(self.ignore(dir, index));
                }
                (TcpState::SynSent, TcpState::SynRecv)
            }
            Next::To(s) => (self.tcp, s),
        };
        match new {
            TcpState::SynSent2 => self.simultaneous = true,
            TcpState::SynRecv
                if dir == Direction::Reply && index == TcpIndex::Ack && self.simultaneous =>
            {
                new = TcpState::Established;
            }
            _ => {}
        }
        self.last = Some((dir, index));
        self.tcp = new;
        if old != new && new == TcpState::FinWait {
            self.close_init[dir.index()] = true;
        }
        let rst = index == TcpIndex::Rst;
        let mut timeout = if rst { t.tcp_close } else { t.tcp_timeout(new) };
        if !replied {
            if rst {
                // "If only reply is a RST, we can consider ourselves not to have an
                // established connection": nf_ct_kill_acct.
                self.expires = now;
                return Ok(None);
            }
            if index == TcpIndex::Syn && old == TcpState::SynSent {
                // Do not renew the timeout on a SYN retransmit.
                return Ok(None);
            }
            if new == TcpState::Established {
                // A mid-connection pickup (loose=1): no five-day timeout before a reply.
                timeout = timeout.min(t.tcp_unack);
            }
        } else if self.status & status::ASSURED == 0
            && matches!(old, TcpState::SynRecv | TcpState::Established)
            && new == TcpState::Established
        {
            self.status |= status::ASSURED;
        }
        Ok(Some(timeout))
    }

    /// An ignored packet: noted as the last one, the state and timeout left alone.
    fn ignore(&mut self, dir: Direction, index: TcpIndex) -> Option<Duration> {
        self.last = Some((dir, index));
        None
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

/// The conntrack table of one network namespace, laid out as the kernel's
/// (`nf_conntrack_hash`): a fixed array of `nf_conntrack_buckets` hash chains, each
/// holding the *tuple hashes* of both directions of every entry, and the entries themselves
/// in a slab addressed by [`CtId`] whose chunks never move.
///
/// - The bucket array is sized once (it never rehashes) and allocated, zeroed, when the
///   first entry goes in, so a namespace that tracks nothing costs nothing.
/// - A lookup hashes the tuple, reads one bucket head and walks its chain (on average under
///   one other entry at the default size).
/// - When `nf_conntrack_max` is reached, a new connection early-drops as the kernel does
///   (`early_drop`): starting at the new tuple's bucket, up to eight buckets are scanned;
///   expired entries met on the way are collected, and every entry that is not ASSURED in the
///   first bucket holding any is deleted. If none is found, the packet is dropped.
///   The kernel's garbage-collection worker is modelled by [`Conntrack::expire`]
///   (the cluster calls it whenever virtual time advances), and by one full sweep at a
///   virtual instant when early drop finds nothing.
/// - Dumps iterate in insertion order, never in hash order, so they are deterministic.
#[derive(Clone)]
pub struct Conntrack {
    chunks: Vec<Box<[Slot]>>,
    /// Slots handed out so far (the slab's high-water mark).
    used: u32,
    free: Vec<u32>,
    /// One head per bucket: a tuple hash (see [`node`]) or [`NIL`]; empty until the first
    /// insert.
    heads: Vec<u32>,
    buckets: usize,
    next_seq: u64,
    count: usize,
    swept_at: Option<Instant>,
    /// Boxes that carried confirmed entries, for the next new connections' unconfirmed
    /// entries (at most [`SPARE_BOXES`]): a steady stream of new connections allocates none.
    #[allow(clippy::vec_box, reason = "the boxes themselves are what is kept")]
    spare: Vec<Box<Entry>>,
    /// `net.netfilter.nf_conntrack_max`.
    pub max: usize,
    /// Protocol timeouts.
    pub timeouts: Timeouts,
    /// Counters.
    pub stats: Stats,
}

/// One slab slot: an entry and the next tuple hash of each direction's chain
/// (`hlist_nulls_node` of `tuplehash[dir]`).
#[derive(Clone, Default)]
#[repr(C, align(64))]
struct Slot {
    next: [u32; 2],
    entry: Option<Entry>,
}

/// Slots per slab chunk.
const CHUNK: usize = 1024;
/// The end of a chain. A node is `(id << 1 | direction) + 1`.
const NIL: u32 = 0;
/// How many emptied boxes of unconfirmed entries a table keeps for reuse.
const SPARE_BOXES: usize = 16;
/// `NF_CT_EVICTION_RANGE`: buckets an early drop looks at.
const EVICTION_RANGE: usize = 8;
/// The kernel's default `nf_conntrack_buckets` on a 64-bit machine with more than 4 GiB.
pub const DEFAULT_BUCKETS: usize = 262_144;

fn node(id: CtId, dir: Direction) -> u32 {
    (id.0 << 1 | dir.index() as u32) + 1
}

fn unnode(n: u32) -> (CtId, Direction) {
    let n = n - 1;
    (CtId(n >> 1), if n & 1 == 0 { Direction::Original } else { Direction::Reply })
}

/// The tuple's hash (the kernel keys it with a boot-time random seed; a fixed one keeps
/// traces reproducible).
fn tuple_hash(t: &Tuple) -> u32 {
    let a = u64::from(u32::from(t.src)) << 32 | u64::from(u32::from(t.dst));
    let b = u64::from(t.sport) << 32 | u64::from(t.dport) << 16 | u64::from(t.proto.0);
    let mut h = (a ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    h = (h.rotate_left(29) ^ b).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32 ^ h as u32
}

impl Default for Conntrack {
    /// `nf_conntrack_max` equal to the number of buckets, as the kernel sets it by default.
    fn default() -> Self {
        Conntrack::new(DEFAULT_BUCKETS)
    }
}

impl fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("count", &self.count)
            .field("max", &self.max)
            .field("buckets", &self.buckets)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Conntrack {
    /// An empty table holding at most `max` entries, with the default number of buckets.
    pub fn new(max: usize) -> Conntrack {
        Conntrack::with_buckets(max, DEFAULT_BUCKETS)
    }

    /// An empty table holding at most `max` entries in `buckets` hash chains
    /// (`nf_conntrack_buckets`, at least one).
    pub fn with_buckets(max: usize, buckets: usize) -> Conntrack {
        Conntrack {
            chunks: Vec::new(),
            used: 0,
            free: Vec::new(),
            heads: Vec::new(),
            buckets: buckets.max(1),
            next_seq: 0,
            count: 0,
            swept_at: None,
            spare: Vec::new(),
            max,
            timeouts: Timeouts::default(),
            stats: Stats::default(),
        }
    }

    /// `net.netfilter.nf_conntrack_buckets`.
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Resizes the hash (writing `nf_conntrack_buckets`, `nf_conntrack_hash_resize`): every
    /// entry is chained again into `buckets` chains (at least one); entries and their ids stay.
    pub fn set_buckets(&mut self, buckets: usize) {
        self.buckets = buckets.max(1);
        if self.heads.is_empty() {
            return;
        }
        self.heads = vec![NIL; self.buckets];
        let live: Vec<(CtId, [Tuple; 2])> =
            self.ids().map(|(id, e)| (id, [e.orig, e.reply])).collect();
        for (id, tuples) in live {
            self.hash_in(id, tuples);
        }
    }

    /// Puts the tuple hashes of entry `id`, whose tuples are `[original, reply]`, at the
    /// heads of their buckets' chains.
    fn hash_in(&mut self, id: CtId, tuples: [Tuple; 2]) {
        for (d, dir) in [Direction::Original, Direction::Reply].into_iter().enumerate() {
            let b = self.bucket(&tuples[d]);
            let head = self.heads[b];
            if let Some(slot) = self.slot_mut(id) {
                slot.next[d] = head;
                self.heads[b] = node(id, dir);
            }
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

    /// Asks for the line a lookup of `t` reads first, its bucket's head; with `chained`,
    /// asked a stage later, for the first entry on that bucket's chain (read from the head
    /// the earlier stage fetched). A hint, for a list of packets or a lookup to come: it
    /// changes nothing.
    pub(crate) fn read_ahead(&self, t: &Tuple, chained: bool) {
        if self.heads.is_empty() {
            return;
        }
        let b = self.bucket(t);
        if !chained {
            crate::prefetch::line(&self.heads[b]);
        } else if let Some(slot) =
            self.heads.get(b).filter(|&&n| n != NIL).and_then(|&n| self.slot(unnode(n).0))
        {
            crate::prefetch::line(slot);
        }
    }

    fn slot(&self, id: CtId) -> Option<&Slot> {
        let i = id.0 as usize;
        self.chunks.get(i / CHUNK).map(|c| &c[i % CHUNK])
    }

    fn slot_mut(&mut self, id: CtId) -> Option<&mut Slot> {
        let i = id.0 as usize;
        self.chunks.get_mut(i / CHUNK).map(|c| &mut c[i % CHUNK])
    }

    /// The entry with this id.
    pub fn get(&self, id: CtId) -> Option<&Entry> {
        self.slot(id)?.entry.as_ref()
    }

    /// The entry with this id, mutably.
    pub fn get_mut(&mut self, id: CtId) -> Option<&mut Entry> {
        self.slot_mut(id)?.entry.as_mut()
    }

    fn bucket(&self, t: &Tuple) -> usize {
        // reciprocal_scale(hash, size)
        ((u64::from(tuple_hash(t)) * self.buckets as u64) >> 32) as usize
    }

    /// The tuple hashes chained from bucket `b`.
    fn chain(&self, b: usize) -> impl Iterator<Item = (CtId, Direction)> + '_ {
        let mut n = self.heads.get(b).copied().unwrap_or(NIL);
        let mut steps = 0usize;
        std::iter::from_fn(move || {
            if n == NIL {
                return None;
            }
            steps += 1;
            debug_assert!(steps <= 2 * self.used as usize, "conntrack hash chain {b} loops");
            let (id, dir) = unnode(n);
            n = self.slot(id).map_or(NIL, |s| s.next[dir.index()]);
            Some((id, dir))
        })
    }

    /// Which entry and direction carry `tuple`, expired or not (`__nf_conntrack_find`).
    fn find_any(&self, tuple: &Tuple) -> Option<(CtId, Direction)> {
        if self.heads.is_empty() {
            return None;
        }
        self.chain(self.bucket(tuple))
            .find(|&(id, dir)| self.get(id).is_some_and(|e| e.tuple(dir) == tuple))
    }

    /// Finds the connection a tuple belongs to, ignoring entries that have timed out.
    pub fn find(&mut self, tuple: &Tuple, now: Instant) -> Option<(CtId, Direction)> {
        let (id, dir) = self.find_any(tuple)?;
        if self.get(id).is_some_and(|e| e.expires <= now) {
            self.remove(id);
            self.stats.expired += 1;
            return None;
        }
        Some((id, dir))
    }

    /// The connection a packet seen after NAT belongs to, without touching the table: the
    /// packet's tuple is looked up as it is (a packet before NAT, or one NAT left alone) and
    /// inverted (a packet NAT rewrote travels opposite to the tuple it now inverts), live
    /// entries only. Returns the entry, the way the packet travels and its `ctinfo`: a reply
    /// or a packet of a connection that has seen one is `Established`, an ICMP error about a
    /// known connection `Related`, the first packets of a connection `New`; `None` when no
    /// entry knows the packet (it was never tracked). What a policy engine reading the
    /// kernel's conntrack at a device (after every hook) learns of a packet.
    pub fn peek(&self, info: &PacketInfo, now: Instant) -> Option<(CtId, Direction, CtInfo)> {
        let live = |(id, dir): (CtId, Direction)| {
            self.get(id).filter(|e| e.expires > now).map(|e| (id, dir, e.status))
        };
        if let Some(inner) = &info.icmp_inner {
            let hit = self.find_any(inner).and_then(live).or_else(|| {
                self.find_any(&inner.invert()).and_then(live).map(|(i, d, s)| (i, d.flip(), s))
            });
            return hit.map(|(id, dir, _)| (id, dir.flip(), CtInfo::Related));
        }
        let (id, dir, st) = self.find_any(&info.tuple).and_then(live).or_else(|| {
            self.find_any(&info.tuple.invert()).and_then(live).map(|(i, d, s)| (i, d.flip(), s))
        })?;
        let ctinfo = if dir == Direction::Reply || st & status::SEEN_REPLY != 0 {
            CtInfo::Established
        } else {
            CtInfo::New
        };
        Some((id, dir, ctinfo))
    }

    /// Whether any live entry uses `tuple` in either direction (`nf_conntrack_tuple_taken`).
    pub fn tuple_taken(&self, tuple: &Tuple) -> bool {
        self.find_any(tuple).is_some()
    }

    /// Looks a packet up (`nf_conntrack_in`): an existing connection is updated and returned
    /// confirmed; an unknown one gets a new unconfirmed entry.
    pub fn lookup(&mut self, info: &PacketInfo, now: Instant) -> CtRef {
        if let Some((id, dir)) = self.find(&info.tuple, now) {
            self.stats.found += 1;
            let i = id.0 as usize;
            let e = self.chunks[i / CHUNK][i % CHUNK].entry.as_mut().expect("chained entry exists");
            match e.update(info, dir, now, &self.timeouts) {
                Update::Tracked => {
                    let ctinfo = if dir == Direction::Reply || e.status & status::SEEN_REPLY != 0 {
                        CtInfo::Established
                    } else {
                        CtInfo::New
                    };
                    return CtRef::Confirmed(id, dir, ctinfo);
                }
                Update::Invalid => {
                    self.stats.invalid += 1;
                    return CtRef::Invalid;
                }
                // The old connection is gone; the SYN is looked up again, as new
                // (nf_conntrack_in's NF_REPEAT).
                Update::Reopen => {
                    self.remove(id);
                }
            }
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
        if info.tuple.proto == Proto::TCP && !tcp_can_start(info.tcp_flags) {
            // tcp_new: only a SYN, or an ACK picked up mid-stream, starts a connection.
            self.stats.invalid += 1;
            return CtRef::Invalid;
        }
        let e = Entry::new(info, now, &self.timeouts);
        CtRef::Unconfirmed(match self.spare.pop() {
            Some(mut b) => {
                *b = e;
                b
            }
            None => Box::new(e),
        })
    }

    /// [`Conntrack::confirm`] for an entry as [`Conntrack::lookup`] handed it out; its box is
    /// kept for a later new connection.
    pub fn confirm_boxed(&mut self, entry: Box<Entry>, now: Instant) -> Result<CtId, ConfirmError> {
        let e = Entry::clone(&entry);
        if self.spare.len() < SPARE_BOXES {
            self.spare.push(entry);
        }
        self.confirm(e, now)
    }

    /// Inserts an unconfirmed entry (`__nf_conntrack_confirm`). When the table is full, an
    /// early drop makes room (see the type's docs); if it cannot, the packet must be dropped.
    pub fn confirm(&mut self, mut entry: Entry, now: Instant) -> Result<CtId, ConfirmError> {
        if self.find_any(&entry.orig).is_some() || self.find_any(&entry.reply).is_some() {
            self.stats.insert_failed += 1;
            return Err(ConfirmError::Clash);
        }
        if self.count >= self.max && !self.early_drop(&entry.orig, now) {
            // The gc worker, which the kernel kicks when an early drop fails.
            if self.swept_at != Some(now) {
                self.swept_at = Some(now);
                self.expire(now);
            }
            if self.count >= self.max {
                self.stats.drop += 1;
                return Err(ConfirmError::TableFull);
            }
        }
        if self.heads.is_empty() {
            self.heads = vec![NIL; self.buckets];
        }
        entry.status |= status::CONFIRMED;
        entry.seq = self.next_seq;
        self.next_seq += 1;
        let id = match self.free.pop() {
            Some(i) => CtId(i),
            None => {
                if self.used as usize == self.chunks.len() * CHUNK {
                    self.chunks.push(vec![Slot::default(); CHUNK].into_boxed_slice());
                }
                self.used += 1;
                CtId(self.used - 1)
            }
        };
        let tuples = [entry.orig, entry.reply];
        self.slot_mut(id).expect("allocated above").entry = Some(entry);
        self.hash_in(id, tuples);
        self.count += 1;
        self.stats.insert += 1;
        Ok(id)
    }

    /// `early_drop`: from the bucket of `tuple` on, up to [`EVICTION_RANGE`] buckets, deletes
    /// the entries that are not ASSURED in the first bucket holding any. Expired entries on
    /// the way are collected. Whether anything was early-dropped.
    fn early_drop(&mut self, tuple: &Tuple, now: Instant) -> bool {
        if self.heads.is_empty() {
            return false;
        }
        let start = self.bucket(tuple);
        for i in 0..EVICTION_RANGE.min(self.buckets) {
            let b = (start + i) % self.buckets;
            let mut expired = smallvec::SmallVec::<[CtId; 8]>::new();
            let mut victims = smallvec::SmallVec::<[CtId; 8]>::new();
            for (id, _) in self.chain(b) {
                let Some(e) = self.get(id) else { continue };
                if e.expires <= now {
                    expired.push(id);
                } else if e.status & status::ASSURED == 0 {
                    victims.push(id);
                }
            }
            for id in expired {
                if self.remove(id).is_some() {
                    self.stats.expired += 1;
                }
            }
            let mut drops = 0;
            for id in victims {
                drops += u64::from(self.remove(id).is_some());
            }
            if drops > 0 {
                self.stats.early_drop += drops;
                return true;
            }
        }
        false
    }

    /// Takes the tuple hash `n` out of bucket `b`'s chain.
    fn unlink(&mut self, b: usize, n: u32) {
        let (id, dir) = unnode(n);
        let next = self.slot(id).map_or(NIL, |s| s.next[dir.index()]);
        if self.heads[b] == n {
            self.heads[b] = next;
            return;
        }
        let mut prev = self.heads[b];
        while prev != NIL {
            let (pid, pdir) = unnode(prev);
            let Some(p) = self.slot_mut(pid) else { return };
            if p.next[pdir.index()] == n {
                p.next[pdir.index()] = next;
                return;
            }
            prev = p.next[pdir.index()];
        }
    }

    /// Removes an entry.
    pub fn remove(&mut self, id: CtId) -> Option<Entry> {
        let (orig, reply) = {
            let e = self.get(id)?;
            (e.orig, e.reply)
        };
        self.unlink(self.bucket(&orig), node(id, Direction::Original));
        self.unlink(self.bucket(&reply), node(id, Direction::Reply));
        let slot = self.slot_mut(id)?;
        slot.next = [NIL; 2];
        let e = slot.entry.take()?;
        self.free.push(id.0);
        self.count -= 1;
        Some(e)
    }

    /// Ids of the live entries, in slab order.
    fn ids(&self) -> impl Iterator<Item = (CtId, &Entry)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .take(self.used as usize)
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_ref().map(|e| (CtId(i as u32), e)))
    }

    /// Removes every entry that has timed out by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let n = self.delete_where(|e| e.expires <= now);
        self.stats.expired += n as u64;
        n
    }

    /// Deletes the entries `pred` selects (`conntrack -D`); returns how many.
    pub fn delete_where(&mut self, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        let doomed: Vec<CtId> = self.ids().filter(|(_, e)| pred(e)).map(|(id, _)| id).collect();
        for id in &doomed {
            self.remove(*id);
        }
        doomed.len()
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (CtId, &Entry)> {
        let mut v: Vec<(CtId, &Entry)> = self.ids().collect();
        v.sort_by_key(|(_, e)| e.seq);
        v.into_iter()
    }

    /// `conntrack -L` output at virtual time `now` (one line per live entry, oldest first;
    /// an entry that timed out or was killed is gone, though its slot is reclaimed lazily).
    pub fn list(&self, now: Instant) -> String {
        let mut out = String::new();
        for (_, e) in self.iter().filter(|(_, e)| e.expires > now) {
            out.push_str(&format_entry(e, now));
            out.push('\n');
        }
        out
    }
}

/// One `conntrack -L` line. The timeout is in whole seconds, rounded down, as ctnetlink
/// reports it (`nf_ct_expires(ct) / HZ`): `119` half a second into a 120 s timeout.
pub fn format_entry(e: &Entry, now: Instant) -> String {
    use std::fmt::Write;
    let secs = (e.expires - now.min(e.expires)).total_millis() / 1000;
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

    // The TCP observations below were made on Linux 6.18 in three network namespaces
    // (client 10.99.1.1, a router tracking connections in FORWARD, server 10.99.2.2:5000),
    // reading `conntrack -L -o extended` in the router; the scripts are
    // `netfilter/tests/kernel/conntrack_tcp.py`.

    /// `conntrack -L`'s line, without the leading `tcp      6 ` and trailing `mark=0 use=1`.
    fn shown(ct: &Conntrack, now: Instant) -> Vec<String> {
        ct.list(now)
            .lines()
            .map(|l| {
                l.trim_start_matches("tcp      6 ").trim_end_matches(" mark=0 use=1").to_string()
            })
            .collect()
    }

    const C: [u8; 4] = [10, 99, 1, 1];
    const S: [u8; 4] = [10, 99, 2, 2];
    const TUPLES: &str = "src=10.99.1.1 dst=10.99.2.2 sport=40000 dport=5000";
    const REPLY: &str = "src=10.99.2.2 dst=10.99.1.1 sport=5000 dport=40000";

    /// A connect to a server that drops SYNs, the client retransmitting at 1, 3 and 7 s:
    /// `119 SYN_SENT`, then 118, 116, 112 and 110 at 1.5, 3.5, 7.5 and 9.5 s, the packet
    /// counter staying at 1 (`nf_conntrack_tcp_packet`: "do not renew timeout on SYN
    /// retransmit").
    #[test]
    fn syn_retransmits_do_not_renew_syn_sent() {
        let mut ct = Conntrack::default();
        let at = Instant::from_millis;
        let syn = info(C, 40000, S, 5000, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&syn, at(0)) else { panic!("a new entry") };
        let id = ct.confirm(*e, at(0)).unwrap();
        for t in [1_000, 3_000, 7_000] {
            assert!(matches!(ct.lookup(&syn, at(t)), CtRef::Confirmed(..)));
        }
        assert_eq!(shown(&ct, at(9_500)), [format!("110 SYN_SENT {TUPLES} [UNREPLIED] {REPLY}")]);
        assert_eq!(ct.get(id).unwrap().counters[0].0, 1, "retransmits are not counted either");
    }

    /// A connection picked up mid-stream (the router's table flushed, then the client sends
    /// data; the server's answer held back, then the client's): `299 ESTABLISHED ...
    /// [UNREPLIED]` after the client's segment; `300 ESTABLISHED` without ASSURED after the
    /// server's first answer; `431999 ESTABLISHED ... [ASSURED]` after the next segment.
    #[test]
    fn a_loose_pickup_waits_for_a_reply_and_one_more_packet_before_five_days() {
        let mut ct = Conntrack::default();
        let at = Instant::from_millis;
        let data = info(C, 40000, S, 5000, tcp_flags::ACK | tcp_flags::PSH);
        let CtRef::Unconfirmed(e) = ct.lookup(&data, at(0)) else { panic!("picked up") };
        ct.confirm(*e, at(0)).unwrap();
        assert_eq!(shown(&ct, at(300)), [format!("299 ESTABLISHED {TUPLES} [UNREPLIED] {REPLY}")]);
        let answer = info(S, 5000, C, 40000, tcp_flags::ACK | tcp_flags::PSH);
        assert!(matches!(ct.lookup(&answer, at(1_000)), CtRef::Confirmed(..)));
        assert_eq!(shown(&ct, at(1_000)), [format!("300 ESTABLISHED {TUPLES} {REPLY}")]);
        assert!(matches!(ct.lookup(&answer, at(1_400)), CtRef::Confirmed(..)));
        assert_eq!(
            shown(&ct, at(1_400)),
            [format!("432000 ESTABLISHED {TUPLES} {REPLY} [ASSURED]")]
        );
        assert_eq!(
            shown(&ct, at(1_500)),
            [format!("431999 ESTABLISHED {TUPLES} {REPLY} [ASSURED]")]
        );
        // Only an ACK-class segment is picked up: a FIN or a SYN/ACK with no entry is invalid.
        let fin = info(C, 40001, S, 5000, tcp_flags::FIN | tcp_flags::ACK);
        assert!(matches!(ct.lookup(&fin, at(2_000)), CtRef::Invalid));
        let synack = info(S, 5000, C, 40002, tcp_flags::SYN | tcp_flags::ACK);
        assert!(matches!(ct.lookup(&synack, at(2_000)), CtRef::Invalid));
    }

    /// What a policy engine after every hook reads of packets of a DNATed connection
    /// (client C:40000 → 10.96.0.1:80, DNAT to S:5000): the first packets are NEW in their
    /// original direction before and after the rewrite, replies are ESTABLISHED (before and
    /// after reverse NAT), and after a reply the client's packets are ESTABLISHED too
    /// (`ctinfo` as `nf_conntrack_in` sets it); a packet no entry knows is untracked.
    #[test]
    fn peek_finds_a_packet_before_and_after_nat() {
        let mut ct = Conntrack::default();
        let at = Instant::from_millis;
        let vip = [10, 96, 0, 1];
        let syn = info(C, 40000, vip, 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(mut e) = ct.lookup(&syn, at(0)) else { panic!("a new entry") };
        e.set_nat(Manip::Dst, Ipv4Addr::from(S), 5000);
        ct.confirm(*e, at(0)).unwrap();
        let dnatted = info(C, 40000, S, 5000, tcp_flags::SYN);
        let ctinfo = |p: &PacketInfo| ct.peek(p, at(1)).map(|(_, d, i)| (d, i));
        assert_eq!(ctinfo(&syn), Some((Direction::Original, CtInfo::New)));
        assert_eq!(ctinfo(&dnatted), Some((Direction::Original, CtInfo::New)));
        let synack = info(S, 5000, C, 40000, tcp_flags::SYN | tcp_flags::ACK);
        let unnatted = info(vip, 80, C, 40000, tcp_flags::SYN | tcp_flags::ACK);
        assert_eq!(ctinfo(&synack), Some((Direction::Reply, CtInfo::Established)));
        assert_eq!(ctinfo(&unnatted), Some((Direction::Reply, CtInfo::Established)));
        assert!(ctinfo(&info(C, 40001, S, 5000, tcp_flags::SYN)).is_none());
        ct.lookup(&synack, at(2));
        let ack = info(C, 40000, S, 5000, tcp_flags::ACK);
        assert_eq!(ct.peek(&ack, at(3)).map(|x| x.2), Some(CtInfo::Established));
        // Expired entries are not found.
        assert!(ct.peek(&ack, at(10_000_000)).is_none());
    }

    /// A SYN to a port nobody listens on, answered by a RST: the entry is gone at once
    /// (`conntrack -L` empty). A RST on an established connection: `9 CLOSE ... [ASSURED]`
    /// 0.3 s later.
    #[test]
    fn a_rst_kills_an_unanswered_entry_and_closes_an_established_one_for_ten_seconds() {
        let mut ct = Conntrack::default();
        let at = Instant::from_millis;
        let syn = info(C, 40000, S, 5000, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&syn, at(0)) else { panic!("a new entry") };
        ct.confirm(*e, at(0)).unwrap();
        let rst = info(S, 5000, C, 40000, tcp_flags::RST | tcp_flags::ACK);
        assert!(
            matches!(ct.lookup(&rst, at(1)), CtRef::Confirmed(..)),
            "the RST itself is tracked"
        );
        assert!(shown(&ct, at(1)).is_empty());
        assert!(matches!(ct.lookup(&syn, at(2)), CtRef::Unconfirmed(_)), "the next SYN is new");
        // Established: handshake, then the client resets.
        let mut ct = Conntrack::default();
        let CtRef::Unconfirmed(e) = ct.lookup(&syn, at(0)) else { panic!("a new entry") };
        ct.confirm(*e, at(0)).unwrap();
        for (p, t) in [
            (info(S, 5000, C, 40000, tcp_flags::SYN | tcp_flags::ACK), 1),
            (info(C, 40000, S, 5000, tcp_flags::ACK), 2),
            (info(S, 5000, C, 40000, tcp_flags::ACK), 3),
        ] {
            assert!(matches!(ct.lookup(&p, at(t)), CtRef::Confirmed(..)));
        }
        assert_eq!(shown(&ct, at(3)), [format!("432000 ESTABLISHED {TUPLES} {REPLY} [ASSURED]")]);
        let reset = info(C, 40000, S, 5000, tcp_flags::RST);
        assert!(matches!(ct.lookup(&reset, at(1_000)), CtRef::Confirmed(..)));
        assert_eq!(shown(&ct, at(1_300)), [format!("9 CLOSE {TUPLES} {REPLY} [ASSURED]")]);
        // The client's next SYN on the same tuple reopens: the reset connection dies and a
        // new one starts (nf_conntrack_tcp_packet's "reopen a closed/aborted connection").
        assert!(matches!(ct.lookup(&syn, at(2_000)), CtRef::Unconfirmed(_)));
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

    fn syn_from(ct: &mut Conntrack, sport: u16, t: Instant) -> Result<CtId, ConfirmError> {
        let i = info([10, 0, 0, 1], sport, [10, 0, 0, 2], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&i, t) else { panic!("new entry expected") };
        ct.confirm(*e, t)
    }

    /// A confirmed entry's box carries the next new connection's entry, filled afresh; a
    /// clash refuses the entry and still keeps its box.
    #[test]
    fn boxes_of_confirmed_entries_carry_the_next_new_connections() {
        let mut ct = Conntrack::default();
        let t0 = Instant::from_secs(0);
        let first = info([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&first, t0) else { panic!("new entry expected") };
        let id = ct.confirm_boxed(e, t0).unwrap();
        assert_eq!(ct.spare.len(), 1, "the confirmed entry's box is kept");
        let second = info([10, 0, 0, 1], 1001, [10, 0, 0, 2], 80, tcp_flags::SYN);
        let CtRef::Unconfirmed(e) = ct.lookup(&second, t0) else { panic!("new entry expected") };
        assert!(ct.spare.is_empty(), "and carries the next new connection's entry");
        assert_eq!(*e, Entry::new(&second, t0, &ct.timeouts), "which holds only that entry");
        assert_eq!(ct.get(id).map(|c| c.orig), Some(first.tuple));
        // The same tuple again: a clash, whose box is kept all the same.
        let CtRef::Unconfirmed(again) = Conntrack::default().lookup(&first, t0) else {
            panic!("new entry expected")
        };
        assert_eq!(ct.confirm_boxed(again, t0), Err(ConfirmError::Clash));
        assert_eq!(ct.spare.len(), 1);
        // Never more than a few kept.
        for port in 2000..2000 + 2 * SPARE_BOXES as u16 {
            let i = info([10, 0, 0, 1], port, [10, 0, 0, 2], 80, tcp_flags::SYN);
            let CtRef::Unconfirmed(b) = Conntrack::default().lookup(&i, t0) else {
                panic!("new entry expected")
            };
            ct.confirm_boxed(b, t0).unwrap();
        }
        assert_eq!(ct.spare.len(), SPARE_BOXES);
    }

    /// One bucket holds every tuple hash, so the early drop sees all entries: it deletes
    /// every one that is not ASSURED in that bucket (`early_drop_list`), then refuses once
    /// all are assured.
    #[test]
    fn full_table_early_drops_the_unassured_of_a_bucket_then_refuses() {
        let mut ct = Conntrack::with_buckets(3, 1);
        let t0 = Instant::from_secs(0);
        for port in [1000, 1001, 1002] {
            syn_from(&mut ct, port, t0).unwrap();
        }
        let first = ct.iter().next().map(|(id, _)| id).unwrap();
        ct.get_mut(first).unwrap().status |= status::ASSURED;
        syn_from(&mut ct, 1003, t0).unwrap();
        assert_eq!(ct.stats.early_drop, 2);
        assert_eq!(ct.len(), 2);
        let ports: Vec<u16> = ct.iter().map(|(_, e)| e.orig.sport).collect();
        assert_eq!(ports, [1000, 1003]);
        syn_from(&mut ct, 1004, t0).unwrap();
        let ids: Vec<CtId> = ct.iter().map(|(id, _)| id).collect();
        for id in ids {
            ct.get_mut(id).unwrap().status |= status::ASSURED;
        }
        assert_eq!(syn_from(&mut ct, 1005, t0), Err(ConfirmError::TableFull));
        assert_eq!((ct.len(), ct.stats.drop), (3, 1));
        // Once they time out, the sweep a failed early drop starts makes room.
        let later = t0 + ct.timeouts.tcp_syn_sent;
        syn_from(&mut ct, 1006, later).unwrap();
        assert_eq!(ct.len(), 1);
    }

    /// The early drop looks only near the new tuple's bucket, as the kernel's does: an
    /// unassured entry far away in the hash does not make room.
    #[test]
    fn early_drop_only_scans_eight_buckets_from_the_new_tuple() {
        let t0 = Instant::from_secs(0);
        let buckets = 1024;
        let mut ct = Conntrack::with_buckets(1, buckets);
        syn_from(&mut ct, 1000, t0).unwrap();
        let held =
            ct.iter().next().map(|(_, e)| (ct.bucket(&e.orig), ct.bucket(&e.reply))).unwrap();
        let near = |ct: &Conntrack, port: u16| {
            let i = info([10, 0, 0, 1], port, [10, 0, 0, 2], 80, tcp_flags::SYN);
            let b = ct.bucket(&i.tuple);
            [held.0, held.1].iter().any(|&h| (h + buckets - b) % buckets < EVICTION_RANGE)
        };
        let far = (2000..u16::MAX).find(|&p| !near(&ct, p)).unwrap();
        assert_eq!(syn_from(&mut ct, far, t0), Err(ConfirmError::TableFull));
        let close = (2000..u16::MAX).find(|&p| near(&ct, p)).unwrap();
        syn_from(&mut ct, close, t0).unwrap();
        assert_eq!((ct.stats.early_drop, ct.len()), (1, 1));
    }

    /// Chains hold both directions of many entries; removing from the middle of a chain
    /// keeps every other entry reachable.
    #[test]
    fn entries_sharing_buckets_stay_reachable_through_removals_and_resizes() {
        let t0 = Instant::from_secs(0);
        let mut ct = Conntrack::with_buckets(usize::MAX, 7);
        let ids: Vec<CtId> = (0..200).map(|p| syn_from(&mut ct, 3000 + p, t0).unwrap()).collect();
        for id in ids.iter().step_by(3) {
            ct.remove(*id).unwrap();
        }
        for (k, id) in ids.iter().enumerate() {
            let e = info([10, 0, 0, 1], 3000 + k as u16, [10, 0, 0, 2], 80, tcp_flags::SYN);
            let found = ct.find(&e.tuple, t0);
            let back = ct.find(&e.tuple.invert(), t0);
            if k % 3 == 0 {
                assert_eq!((found, back), (None, None));
            } else {
                assert_eq!(found, Some((*id, Direction::Original)));
                assert_eq!(back, Some((*id, Direction::Reply)));
            }
        }
        assert_eq!(ct.len(), 200 - 67);
        // A resize chains every entry again.
        let listing = ct.list(t0);
        ct.set_buckets(3);
        assert_eq!(ct.buckets(), 3);
        assert_eq!(ct.list(t0), listing);
        for k in (1..200u16).filter(|k| k % 3 != 0) {
            let e = info([10, 0, 0, 1], 3000 + k, [10, 0, 0, 2], 80, tcp_flags::SYN);
            assert!(ct.tuple_taken(&e.tuple) && ct.tuple_taken(&e.tuple.invert()));
        }
        // Freed slots are used again.
        syn_from(&mut ct, 9000, t0).unwrap();
        assert!(
            ct.iter()
                .any(|(id, e)| e.orig.sport == 9000 && ids.iter().step_by(3).any(|&x| x == id))
        );
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
