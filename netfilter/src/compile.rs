//! The compile step: what a table's rules become so a walk reads few bytes per rule.
//!
//! - **Quick checks** ([`Quick`]): a rule's entry in its table's blob, a small copy of what
//!   the rule requires of a packet's addresses, protocol, destination port, mark and
//!   connection state, and where it jumps or what NAT it does. A rule whose checks fail is
//!   passed by without reading it; a rule the checks describe whole (kube-proxy's are) is
//!   matched without reading it.
//! - **Dispatch index** ([`ChainIndex`]): a long chain's rules that can only match one exact
//!   (destination, protocol, destination port) are bucketed by that key, the others kept in
//!   a residual list, so a walk of `KUBE-SERVICES` costs the same at 10 or 10,000 Services.
//!
//! A table ([`crate::table`]) lays its chains out in a blob of these entries when it links
//! its rules; evaluation ([`crate::eval`]) walks the blob. This module knows rules, not
//! tables: dependencies run one way, rules → compile → table → eval.

use std::net::Ipv4Addr;

use crate::rng::Rng;
use crate::rule::{Match, NatFlags, NatRange, Rule, Target, ctstate};

/// Per-chain dispatch index (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChainIndex {
    /// A Service port's rules (one to four: cluster IP, external IPs, load balancers).
    pub(crate) buckets: Buckets,
    /// The rules of the buckets that hold more than one, after the first.
    pub(crate) more: Vec<u32>,
    pub(crate) residual: Vec<u32>,
}

/// One (destination, protocol, port)'s rules. The first one's blob entry is kept here: the
/// lookup that finds the rule has its checks and where it jumps, and a new connection's walk
/// reads one entry, not the bucket and then the rule's entry elsewhere in the blob.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Bucket {
    /// The first rule's blob entry, as [`Table::blob`] holds it.
    pub(crate) entry: Quick,
    /// The first rule.
    pub(crate) first: u32,
    /// The others, at `more[at..at + len]`.
    pub(crate) at: u32,
    pub(crate) len: u32,
}

/// A dispatch index's buckets by (destination, protocol, port): open addressing with linear
/// probing, at most half full, one cache line a slot holding the key and the bucket with its
/// first rule's entry. A new connection's lookup in 10,000 Services reads one line, where a
/// general hash map reads its control bytes, then a slot that may straddle two lines.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Buckets {
    pub(crate) slots: Vec<Slot>,
    /// How far a key's hash is shifted to give its home slot (64 less log2 of the slots).
    pub(crate) shift: u32,
}

/// A slot of [`Buckets`]: `key` 0 when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub(crate) bucket: Bucket,
    pub(crate) key: u64,
}

// A slot is one cache line.
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Buckets {
    /// Room for `keys` keys, at most half the slots.
    pub(crate) fn with_keys(keys: usize) -> Buckets {
        let n = (keys * 2).next_power_of_two().max(2);
        Buckets { slots: vec![Slot::default(); n], shift: 64 - n.trailing_zeros() }
    }

    /// The key of (destination, protocol, port), never 0.
    pub(crate) fn key(dst: Ipv4Addr, proto: u8, dport: u16) -> u64 {
        1 << 56 | u64::from(u32::from(dst)) << 24 | u64::from(proto) << 16 | u64::from(dport)
    }

    /// The slot that holds `key`, or the empty one where it would go.
    #[inline]
    pub(crate) fn slot(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        // At most half full: an empty slot ends every probe.
        while self.slots[i].key != key && self.slots[i].key != 0 {
            i = (i + 1) & mask;
        }
        i
    }

    /// Where a probe for `key` starts. Fibonacci hashing: the product's high bits spread
    /// neighbouring addresses.
    #[inline]
    pub(crate) fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline(never)]
    pub(crate) fn get(&self, key: u64) -> Option<&Bucket> {
        let s = &self.slots[self.slot(key)];
        (s.key == key).then_some(&s.bucket)
    }
}

/// Chains shorter than this are walked linearly.
pub(crate) const INDEX_MIN_RULES: usize = 16;

impl ChainIndex {
    /// Whether a chain of `len` rules gets an index.
    pub(crate) fn wanted(len: usize) -> bool {
        len >= INDEX_MIN_RULES
    }

    /// The index of a chain of `rules`; `entry` makes the blob entry of a rule (by its
    /// position in the chain), asked only for each bucket's first rule.
    pub(crate) fn build(rules: &[Rule], entry: impl Fn(usize) -> Quick) -> Option<Box<ChainIndex>> {
        if !ChainIndex::wanted(rules.len()) {
            return None;
        }
        let mut buckets = Buckets::with_keys(rules.len());
        let (mut later, mut residual) = (Vec::new(), Vec::new());
        for (i, r) in rules.iter().enumerate() {
            match exact_key(r) {
                Some((dst, proto, dport)) => {
                    let key = Buckets::key(dst, proto, dport);
                    let at = buckets.slot(key);
                    let s = &mut buckets.slots[at];
                    if s.key == key {
                        later.push((key, i as u32));
                    } else {
                        s.key = key;
                        s.bucket = Bucket { entry: entry(i), first: i as u32, at: 0, len: 0 };
                    }
                }
                None => residual.push(i as u32),
            }
        }
        // The rules after a bucket's first, grouped by bucket (a stable sort keeps each
        // bucket's in rule order).
        later.sort_by_key(|&(k, _)| k);
        let mut more = Vec::with_capacity(later.len());
        for group in later.chunk_by(|a, b| a.0 == b.0) {
            let at = buckets.slot(group[0].0);
            let b = &mut buckets.slots[at].bucket;
            (b.at, b.len) = (more.len() as u32, group.len() as u32);
            more.extend(group.iter().map(|&(_, i)| i));
        }
        Some(Box::new(ChainIndex { buckets, more, residual }))
    }
}

/// Whether looking at `m` leaves everything as it was (a random draw, an `nth` count or a
/// `recent` list do not).
pub(crate) fn pure(m: &Match) -> bool {
    !matches!(m, Match::Random { .. } | Match::Nth { .. } | Match::Recent(_))
}

/// What a rule requires of a packet, in a form checked with a few compares (see the module
/// docs).
///
/// A table's blob ([`Table::link`]) holds one per rule, and before each chain's rules one
/// *head* entry ([`Kind::Head`], made by [`Quick::head`]) that says which chain follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Quick {
    /// Where a jump or goto leads: the blob position of the target chain's head
    /// ([`NO_JUMP`] for a rule that neither jumps nor goes). A head: its chain's index. A
    /// rule with a mark check ([`quick::MARK`], which only a rule that neither jumps nor goes
    /// has): the mark's value.
    pub(crate) to: u32,
    /// A head: the number of the chain's first rule in the table (see [`crate::counters`]).
    pub(crate) src: u32,
    pub(crate) src_mask: u32,
    /// A head: how many rules the chain has.
    pub(crate) dst: u32,
    pub(crate) dst_mask: u32,
    pub(crate) dport_lo: u16,
    pub(crate) dport_hi: u16,
    /// The threshold of a final `-m statistic --mode random` ([`quick::RANDOM`]); with a
    /// mark check instead ([`quick::MARK`]), the mark's mask.
    pub(crate) threshold: u32,
    pub(crate) proto: u8,
    /// [`quick`] flags; a head's are [`quick::INDEXED`] or none.
    pub(crate) flags: u8,
    /// What the rule's target does to a walk.
    pub(crate) kind: Kind,
    /// The connection states (`ctstate` bits INVALID, ESTABLISHED, RELATED, NEW, UNTRACKED)
    /// a packet can be in and still match the rule (see [`states_of`]): a rule with
    /// `-m conntrack --ctstate NEW` is passed by at once for an established packet.
    pub(crate) states: u8,
}

// A chain's checks are read in a walk: two to a cache line.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Quick>() == 32);

/// [`Quick`]'s flags and target kinds.
pub(crate) mod quick {
    pub const SRC_INV: u8 = 1;
    pub const DST_INV: u8 = 2;
    /// The packet's protocol must be `proto`.
    pub const PROTO: u8 = 4;
    /// The packet's protocol must not be `proto`.
    pub const PROTO_INV: u8 = 8;
    /// The checks (with the entry's connection states) are the whole rule.
    pub const WHOLE: u8 = 16;
    /// A whole rule ends with a random draw against `threshold`.
    pub const RANDOM: u8 = 32;
    /// That draw is inverted.
    pub const RANDOM_INV: u8 = 64;
    /// The packet's mark, masked with `threshold`, must be `to` (`-m mark --mark to/threshold`,
    /// as kube-proxy's `KUBE-FORWARD` and `KUBE-POSTROUTING` have it). Only on a rule that
    /// neither jumps nor goes and draws nothing, whose `to` and `threshold` are free.
    pub const MARK: u8 = 128;
    /// That mark check is inverted (`! --mark`). The bit of [`RANDOM_INV`]: a rule with a mark
    /// check has no random draw.
    pub const MARK_INV: u8 = 64;
    /// A head's chain has a dispatch index.
    pub const INDEXED: u8 = 1;
}

/// In a blob entry's `to`: the rule neither jumps nor goes to a chain.
pub(crate) const NO_JUMP: u32 = u32::MAX;

/// What a matched rule's target does to a walk, when that is all the walk needs of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Kind {
    Jump,
    Goto,
    Accept,
    Return,
    Drop,
    /// DNAT, SNAT or MASQUERADE: the rule's `to` holds the blob position of its target's
    /// data entry ([`Kind::NatData`]), as the kernel keeps a target's data in its entry.
    Nat,
    /// A target with more to it (data, or an effect on the packet): read from the rule.
    #[default]
    Other,
    /// Not a rule: a chain's head entry.
    Head,
    /// Not a rule: the data of a NAT target ([`Quick::nat_data`]).
    NatData,
}

impl Kind {
    pub(crate) fn of(t: &Target) -> Kind {
        match t {
            Target::Jump(_) => Kind::Jump,
            Target::Goto(_) => Kind::Goto,
            Target::Accept => Kind::Accept,
            Target::Return => Kind::Return,
            Target::Drop => Kind::Drop,
            Target::Dnat(..) | Target::Snat(..) | Target::Masquerade(..) => Kind::Nat,
            _ => Kind::Other,
        }
    }
}

/// A NAT target's data entry: which target (in `proto`) and its flags.
pub(crate) mod nat_data {
    pub const DNAT: u8 = 1;
    pub const SNAT: u8 = 2;
    pub const MASQUERADE: u8 = 3;
    /// A port range is given (`dport_lo..=dport_hi`).
    pub const PORTS: u8 = 1;
    pub const RANDOM: u8 = 2;
    pub const RANDOM_FULLY: u8 = 4;
    pub const PERSISTENT: u8 = 8;
}

impl Quick {
    /// The head entry of the chain at index `chain` of its table, whose rules are numbered
    /// from `first` on, `len` of them.
    pub(crate) fn head(chain: u32, first: u32, len: u32, indexed: bool) -> Quick {
        Quick {
            to: chain,
            src: first,
            dst: len,
            flags: if indexed { quick::INDEXED } else { 0 },
            kind: Kind::Head,
            ..Quick::default()
        }
    }

    /// The data entry of NAT target `t` (`None` for another target): the range's
    /// addresses in `src` and `dst`, its ports in `dport_lo..=dport_hi`.
    pub(crate) fn nat_data(t: &Target) -> Option<Quick> {
        let (which, range, flags) = match t {
            Target::Dnat(r, f) => (nat_data::DNAT, *r, *f),
            Target::Snat(r, f) => (nat_data::SNAT, *r, *f),
            Target::Masquerade(ports, f) => {
                let any = Ipv4Addr::UNSPECIFIED;
                (nat_data::MASQUERADE, NatRange { addr_lo: any, addr_hi: any, ports: *ports }, *f)
            }
            _ => return None,
        };
        let NatFlags { random, random_fully, persistent } = flags;
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        let (lo, hi) = range.ports.unwrap_or((0, 0));
        Some(Quick {
            src: range.addr_lo.into(),
            dst: range.addr_hi.into(),
            dport_lo: lo,
            dport_hi: hi,
            proto: which,
            flags: bit(range.ports.is_some(), nat_data::PORTS)
                | bit(random, nat_data::RANDOM)
                | bit(random_fully, nat_data::RANDOM_FULLY)
                | bit(persistent, nat_data::PERSISTENT),
            kind: Kind::NatData,
            ..Quick::default()
        })
    }

    /// The checks of `r`, which jumps or goes to the chain whose head is at `to` in the
    /// blob ([`NO_JUMP`] for none; for a NAT target, the position of its data entry) and
    /// can match packets in connection `states`.
    pub(crate) fn of(r: &Rule, to: u32, states: u8) -> Quick {
        let mut q = Quick { to, states, dport_hi: u16::MAX, ..Quick::default() };
        let mut whole = r.in_iface.is_none() && r.out_iface.is_none();
        let net = |n: &crate::rule::Neg<ipnetwork::Ipv4Network>| {
            (u32::from(n.value.network()), u32::from(n.value.mask()), n.invert)
        };
        if let Some((a, m, inv)) = r.src.as_ref().map(net) {
            (q.src, q.src_mask) = (a, m);
            q.flags |= if inv { quick::SRC_INV } else { 0 };
        }
        if let Some((a, m, inv)) = r.dst.as_ref().map(net) {
            (q.dst, q.dst_mask) = (a, m);
            q.flags |= if inv { quick::DST_INV } else { 0 };
        }
        if let Some(p) = &r.proto {
            q.proto = p.value.0;
            q.flags |= if p.invert { quick::PROTO_INV } else { quick::PROTO };
        }
        let mut ports_seen = false;
        let mut mark = None;
        let mut rest = r.matches.iter();
        while let Some(m) = rest.next() {
            match m {
                Match::Comment(_) | Match::Nfacct(_) => {}
                Match::Ports { proto, sport, dport, tcp_flags } if !ports_seen => {
                    ports_seen = true;
                    if q.flags & (quick::PROTO | quick::PROTO_INV) == 0 {
                        q.proto = proto.0;
                        q.flags |= quick::PROTO;
                    } else if q.flags & quick::PROTO_INV != 0 || q.proto != proto.0 {
                        whole = false;
                    }
                    match dport {
                        Some(d) if !d.invert => (q.dport_lo, q.dport_hi) = (d.value.lo, d.value.hi),
                        Some(_) => whole = false,
                        None => {}
                    }
                    whole &= sport.is_none() && tcp_flags.is_none();
                }
                Match::Mark(n) if mark.is_none() => mark = Some((n.value, n.invert)),
                // The entry's connection states are this match whole (see `states_of`).
                Match::Conntrack { ctstate: Some(n), ctorigdst: None, .. }
                    if !n.invert && n.value & !REAL_STATES == 0 => {}
                Match::Random { threshold, invert, .. } => {
                    // Drawn last, after every other check, as the walk would draw it, and
                    // nothing is checked after it: only comments may follow.
                    if rest.all(|m| matches!(m, Match::Comment(_) | Match::Nfacct(_))) {
                        q.threshold = *threshold;
                        q.flags |= quick::RANDOM | if *invert { quick::RANDOM_INV } else { 0 };
                    } else {
                        whole = false;
                    }
                    break;
                }
                m if pure(m) => whole = false,
                _ => {
                    // Nothing after a match that changes state may be checked early.
                    whole = false;
                    break;
                }
            }
        }
        q.kind = Kind::of(&r.target);
        if let Some((value_mask, invert)) = mark {
            // The mark's value and mask take the places of the jump and of the draw, which
            // the rule must then not have.
            if matches!(q.kind, Kind::Accept | Kind::Return | Kind::Drop)
                && q.flags & quick::RANDOM == 0
            {
                (q.to, q.threshold) = value_mask;
                q.flags |= quick::MARK | if invert { quick::MARK_INV } else { 0 };
            } else {
                whole = false;
            }
        }
        if whole {
            q.flags |= quick::WHOLE;
        }
        q
    }

    /// The connection states a packet can be in and still match the rule.
    #[cfg(test)]
    pub(crate) fn states(&self) -> u8 {
        self.states
    }

    /// Where a jump leads, or a NAT target's data sits (see the field).
    #[cfg(test)]
    pub(crate) fn to(&self) -> u32 {
        self.to
    }

    /// Whether a rule the checks describe whole matches once they pass: its random draw,
    /// if it ends with one.
    #[inline]
    pub(crate) fn draw(&self, rng: &mut Rng) -> bool {
        self.flags & quick::RANDOM == 0
            || rng.statistic(self.threshold) != (self.flags & quick::RANDOM_INV != 0)
    }

    /// Whether the packet's mark, as it is at this rule of the walk, passes the rule's mark
    /// check, if it has one.
    #[inline]
    pub(crate) fn marked(&self, mark: u32) -> bool {
        self.flags & quick::MARK == 0
            || ((mark & self.threshold) == self.to) != (self.flags & quick::MARK_INV != 0)
    }

    /// Whether the packet passes the checks (if it does not, the rule cannot match it).
    #[inline]
    pub(crate) fn admits(&self, t: &Probe) -> bool {
        let src = (t.src & self.src_mask == self.src) != (self.flags & quick::SRC_INV != 0);
        let dst = (t.dst & self.dst_mask == self.dst) != (self.flags & quick::DST_INV != 0);
        let proto = if self.flags & quick::PROTO != 0 {
            t.proto == self.proto && (self.dport_lo..=self.dport_hi).contains(&t.dport)
        } else {
            self.flags & quick::PROTO_INV == 0 || t.proto != self.proto
        };
        src && dst && proto
    }
}

/// What the quick checks read of a packet, in the form they compare it: the addresses as
/// host-order numbers, made once per walk rather than once per rule.
#[derive(Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) proto: u8,
    pub(crate) dport: u16,
}

impl Probe {
    pub(crate) fn of(t: &crate::packet::Tuple) -> Probe {
        Probe { src: u32::from(t.src), dst: u32::from(t.dst), proto: t.proto.0, dport: t.dport }
    }
}

/// The real connection states (`ctstate` INVALID, ESTABLISHED, RELATED, NEW, UNTRACKED).
pub(crate) const REAL_STATES: u8 =
    ctstate::INVALID | ctstate::ESTABLISHED | ctstate::RELATED | ctstate::NEW | ctstate::UNTRACKED;

/// The (dst, proto, dport) a rule can only match, if it is that specific. A rule with a
/// match that changes state when it is looked at (`-m statistic` draws a random number or
/// counts, `-m recent` may record) before its port match is not indexed: a linear walk
/// reaches that match for a packet to another port, so skipping the rule would change what
/// later packets see.
pub(crate) fn exact_key(r: &Rule) -> Option<(Ipv4Addr, u8, u16)> {
    let dst = r.dst.as_ref().filter(|d| !d.invert && d.value.prefix() == 32)?.value.ip();
    let proto = r.proto.as_ref().filter(|p| !p.invert)?.value;
    for m in &r.matches {
        match m {
            Match::Ports { dport: Some(d), .. } if !d.invert && d.value.lo == d.value.hi => {
                return Some((dst, proto.0, d.value.lo));
            }
            Match::Random { .. } | Match::Nth { .. } | Match::Recent(_) => return None,
            _ => {}
        }
    }
    None
}

/// The real connection states (`ctstate` INVALID, ESTABLISHED, RELATED, NEW, UNTRACKED) a
/// packet may be in and still match `r`: all of them, unless a plain (not inverted)
/// `--ctstate`/`--state` without the virtual SNAT/DNAT states narrows them.
pub(crate) fn states_of(r: &crate::rule::Rule) -> u8 {
    // Only a match a walk reaches before any match that changes state may pass the rule by.
    r.matches.iter().take_while(|m| pure(m)).fold(REAL_STATES, |mask, m| match m {
        Match::Conntrack { ctstate: Some(n), .. } if !n.invert && n.value & !REAL_STATES == 0 => {
            mask & n.value
        }
        _ => mask,
    })
}
