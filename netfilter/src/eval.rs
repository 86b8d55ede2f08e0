//! Rule evaluation with iptables' semantics (`ipt_do_table` in `net/ipv4/netfilter/ip_tables.c`):
//! first match wins, jumps push a return point, `-g` does not, RETURN pops, falling off a user
//! chain returns, falling off a built-in chain applies its policy. Non-terminal targets
//! (MARK, LOG, a rule without target) continue with the next rule.
//!
//! **Dispatch index.** A chain with many rules (kube-proxy's `KUBE-SERVICES` holds one per
//! Service port) gets a `ChainIndex`: rules that can only match one exact
//! (destination address, protocol, destination port) are bucketed by that key; every other
//! rule stays in a residual list. Evaluation walks the merge of the packet's bucket and the
//! residual list in rule order, so the first match is exactly the one a linear walk finds,
//! at a cost independent of the number of Services. A bucket keeps a copy of its first
//! rule's blob entry (below), so finding a Service's rule reads the bucket and nothing else.
//!
//! **The blob.** A table is walked in its blob ([`Table::link`] places the chains; the
//! first walk lays it out), laid out as the kernel lays out an x_tables table
//! (`xt_table_info.entries`): one array, chain after chain, each chain a head entry (which
//! chain, how many rules, whether it has an index) then one entry per rule, a jump's target
//! held as the position of the target chain's head and a NAT target's data (DNAT's
//! address, ports and flags) in an entry after the chain's rules, as the kernel keeps a
//! target's data inside its rule's entry. Chains follow each other depth first from the
//! built-in chains, so a kube-proxy Service's `KUBE-SVC-` chain sits just before its
//! `KUBE-SEP-` chains: a new connection's walk reads a few adjacent cache lines, not one
//! chain header, rule list and rule apiece scattered over the heap.
//!
//! **Quick checks.** A rule's entry is a small copy of what the rule requires of a
//! packet's addresses, protocol, destination port and connection state (`Quick`). A rule
//! whose checks fail is passed by without reading the rule; a rule those checks describe
//! whole (kube-proxy's rules are: addresses, protocol, port, comment, connection state, a
//! random draw) is matched without reading it, and only a target with other data (MARK's
//! value, LOG's prefix) is read from the rule. Only what a rule's walk would look at before
//! any match that changes state (`-m statistic`, `-m recent`) goes into its checks, so
//! passing a rule by changes nothing a linear walk would have changed. The linear walk
//! (`indexed` false) reads every rule, for comparison.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

use crate::conntrack::CtInfo;
use crate::counters::TableCounters;
use crate::ipset::IpSets;
use crate::packet::{PacketInfo, Proto};
use crate::rule::{
    Match, NatFlags, NatRange, RecentCmd, RejectWith, Rule, SetFlag, Target, addrtype, ctstate,
};
use crate::table::{Policy, Table};

/// A small deterministic PRNG (SplitMix64): all randomness in podnet flows from a seed.
///
/// A generator can also be *scripted* ([`Rng::scripted`]): load-balancing decisions
/// (`-m statistic`, IPVS scheduling) then follow a list of forced choices and record the
/// decision points they meet, which is how every possible outcome of a flow is enumerated.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    script: Option<std::sync::Arc<std::sync::Mutex<Choices>>>,
}

impl PartialEq for Rng {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state && self.script.is_none() == other.script.is_none()
    }
}

impl Eq for Rng {}

/// Forced choices and the decision points met, shared by every generator of a cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choices {
    /// Choices to make, in order (option index at each decision point).
    pub forced: Vec<usize>,
    /// Decision points met so far: (number of options, chosen option, probability of each).
    pub met: Vec<(usize, Vec<f64>)>,
}

impl Choices {
    fn choose(&mut self, probs: Vec<f64>) -> usize {
        let i = self.met.len();
        let pick = self.forced.get(i).copied().unwrap_or(0).min(probs.len() - 1);
        self.met.push((pick, probs));
        pick
    }
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed, script: None }
    }

    /// A generator whose decisions follow `script` (see the type docs).
    pub fn scripted(seed: u64, script: std::sync::Arc<std::sync::Mutex<Choices>>) -> Rng {
        Rng { state: seed, script: Some(script) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform value in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi - lo) + 1;
        lo + (self.next_u64() % span) as u32
    }

    /// `-m statistic --mode random`: true with probability `threshold / 2^31`, as
    /// xt_statistic decides it; a scripted generator records a decision point instead.
    pub fn statistic(&mut self, threshold: u32) -> bool {
        if let Some(s) = &self.script {
            let p = f64::from(threshold) / f64::from(0x8000_0000u32);
            // Option 0: the rule does not match (the walk goes on); option 1: it matches.
            return s.lock().expect("choices lock").choose(vec![1.0 - p, p]) == 1;
        }
        (self.next_u32() & 0x7fff_ffff) < threshold
    }

    /// A scripted choice among `n` equally likely options, if this generator is scripted.
    pub fn scripted_pick(&mut self, n: usize) -> Option<usize> {
        let s = self.script.as_ref()?;
        Some(s.lock().expect("choices lock").choose(vec![1.0 / n as f64; n]))
    }
}

/// `xt_recent` lists: per list name, per address, the times it was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentLists {
    lists: BTreeMap<String, HashMap<Ipv4Addr, Vec<Instant>>>,
}

impl RecentLists {
    /// Addresses in one list (sorted), for `/proc/net/xt_recent/NAME`-style dumps.
    pub fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> =
            self.lists.get(name).map(|m| m.keys().copied().collect()).unwrap_or_default();
        v.sort();
        v
    }
}

/// What the packet looks like to rules, and what surrounds it.
pub struct PacketCtx<'a> {
    /// The packet (after any NAT earlier in this traversal).
    pub info: &'a PacketInfo,
    /// Input interface (`-i`).
    pub in_iface: Option<&'a str>,
    /// Output interface (`-o`).
    pub out_iface: Option<&'a str>,
    /// Bridge port the frame came in on (`--physdev-in`).
    pub physdev_in: Option<&'a str>,
    /// Bridge port the frame leaves by (`--physdev-out`).
    pub physdev_out: Option<&'a str>,
    /// Whether the packet is being bridged (br_netfilter), not routed.
    pub bridged: bool,
    /// The packet's conntrack state.
    pub ctinfo: CtInfo,
    /// Conntrack status bits of its connection.
    pub ct_status: u32,
    /// The original destination of its connection.
    pub ct_origdst: Option<Ipv4Addr>,
    /// Address type of an address, optionally limited to one interface (`RTN_*` bits).
    pub addr_type: &'a dyn Fn(Ipv4Addr, Option<&str>) -> u16,
    /// Virtual time.
    pub now: Instant,
}

/// Mutable state rules read and write.
pub struct EvalState<'a> {
    /// The packet mark.
    pub mark: &'a mut u32,
    /// Randomness for `-m statistic`.
    pub rng: &'a mut Rng,
    /// `-m recent` lists.
    pub recent: &'a mut RecentLists,
    /// ipsets for `-m set`.
    pub sets: &'a IpSets,
    /// When `Some`, every rule whose target fires is recorded.
    pub hits: Option<&'a mut Vec<RuleHit>>,
    /// `--log-prefix` of each `LOG` rule that fired, in order.
    pub logs: Vec<String>,
    /// Where the walk counts packets and bytes: this namespace's counters for the table
    /// walked (see [`crate::counters`]; fitted to the table as the walk starts).
    pub counters: &'a mut crate::counters::TableCounters,
}

/// A rule (or a policy) that acted on a packet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleHit {
    /// Table.
    pub table: &'static str,
    /// Chain.
    pub chain: String,
    /// 1-based rule number; 0 for the chain policy.
    pub rule_num: usize,
    /// The rule as written (restore form), or `:CHAIN POLICY` for a policy.
    pub rule: String,
    /// The rule's comment, which names the Kubernetes object for kube-proxy rules.
    pub comment: Option<String>,
}

/// The terminal outcome of a table traversal.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Continue (ACCEPT, or a policy of ACCEPT).
    Accept,
    /// DROP (or policy DROP).
    Drop,
    /// REJECT.
    Reject(RejectWith),
    /// DNAT decided.
    Dnat(NatRange, NatFlags),
    /// SNAT decided.
    Snat(NatRange, NatFlags),
    /// MASQUERADE decided.
    Masquerade(Option<(u16, u16)>, NatFlags),
    /// NOTRACK.
    Notrack,
}

/// A fast hasher for small fixed-size keys (tuples, addresses): FxHash's multiply-rotate.
/// Lookups only; nothing is ever iterated in hash order.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.write_u64(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let tail = rest.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
            self.write_u64(tail);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

/// Per-chain dispatch index (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChainIndex {
    /// A Service port's rules (one to four: cluster IP, external IPs, load balancers).
    buckets: Buckets,
    /// The rules of the buckets that hold more than one, after the first.
    more: Vec<u32>,
    residual: Vec<u32>,
}

/// One (destination, protocol, port)'s rules. The first one's blob entry is kept here: the
/// lookup that finds the rule has its checks and where it jumps, and a new connection's walk
/// reads one entry, not the bucket and then the rule's entry elsewhere in the blob.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bucket {
    /// The first rule's blob entry, as [`Table::blob`] holds it.
    entry: Quick,
    /// The first rule.
    first: u32,
    /// The others, at `more[at..at + len]`.
    at: u32,
    len: u32,
}

/// A dispatch index's buckets by (destination, protocol, port): open addressing with linear
/// probing, at most half full, one cache line a slot holding the key and the bucket with its
/// first rule's entry. A new connection's lookup in 10,000 Services reads one line, where a
/// general hash map reads its control bytes, then a slot that may straddle two lines.
#[derive(Clone, Debug, PartialEq)]
struct Buckets {
    slots: Vec<Slot>,
    /// How far a key's hash is shifted to give its home slot (64 less log2 of the slots).
    shift: u32,
}

/// A slot of [`Buckets`]: `key` 0 when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
struct Slot {
    bucket: Bucket,
    key: u64,
}

// A slot is one cache line.
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Buckets {
    /// Room for `keys` keys, at most half the slots.
    fn with_keys(keys: usize) -> Buckets {
        let n = (keys * 2).next_power_of_two().max(2);
        Buckets { slots: vec![Slot::default(); n], shift: 64 - n.trailing_zeros() }
    }

    /// The key of (destination, protocol, port), never 0.
    fn key(dst: Ipv4Addr, proto: u8, dport: u16) -> u64 {
        1 << 56 | u64::from(u32::from(dst)) << 24 | u64::from(proto) << 16 | u64::from(dport)
    }

    /// The slot that holds `key`, or the empty one where it would go.
    #[inline]
    fn slot(&self, key: u64) -> usize {
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
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline(never)]
    fn get(&self, key: u64) -> Option<&Bucket> {
        let s = &self.slots[self.slot(key)];
        (s.key == key).then_some(&s.bucket)
    }
}

/// Chains shorter than this are walked linearly.
const INDEX_MIN_RULES: usize = 16;

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

/// Stages of reading ahead for a packet of a list ([`read_ahead`]), each a packet later
/// than the one before, so that each reads lines the one before asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ahead {
    /// The home slot of the packet's key in each dispatch index.
    Slot,
    /// From the slot: the rule's counters and the chain its rule jumps to.
    Chain,
    /// From that chain's head: the counters of its rules and of the chains it jumps to,
    /// numbered after it (depth first: a Service's endpoint chains follow its chain).
    Jumped,
}

/// The dispatch key of (destination, protocol, port), to read ahead with.
pub(crate) fn ahead_key(dst: Ipv4Addr, proto: u8, dport: u16) -> u64 {
    Buckets::key(dst, proto, dport)
}

/// Most lines one chain's reading ahead asks for, rules and counters apart.
const AHEAD_LINES: usize = 8;

/// Asks for the lines a walk of `table` will read for a packet of `key` in its indexed
/// chains, one [`Ahead`] stage at a time. Reads only lines an earlier stage asked for.
pub(crate) fn read_ahead(table: &Table, counters: &TableCounters, key: u64, stage: Ahead) {
    for &ci in table.indexed_chains() {
        let Some(idx) = table.chains.get_index(ci as usize).and_then(|(_, c)| c.index.as_deref())
        else {
            continue;
        };
        let b = &idx.buckets;
        let bucket = match stage {
            Ahead::Slot => {
                crate::prefetch::line(&b.slots[b.home(key)]);
                continue;
            }
            Ahead::Chain | Ahead::Jumped => match b.get(key) {
                Some(bucket) if matches!(bucket.entry.kind, Kind::Jump | Kind::Goto) => bucket,
                _ => continue,
            },
        };
        let (to, blob) = (bucket.entry.to as usize, table.blob());
        if stage == Ahead::Chain {
            let first = table.chains[ci as usize].jumps_at as usize + bucket.first as usize;
            crate::prefetch::lines(counters.rules_at(first..first + 1), 1);
            crate::prefetch::lines(blob.get(to..).unwrap_or_default(), AHEAD_LINES);
        } else if let Some(head) = blob.get(to).filter(|h| h.kind == Kind::Head) {
            // The chain's rules and, numbered after them, those of the chains it jumps to
            // (a Service's endpoint chains, two rules each).
            let (first, len) = (head.src as usize, head.dst as usize);
            crate::prefetch::lines(counters.rules_at(first..first + 3 * len), AHEAD_LINES);
        }
    }
}

/// Whether looking at `m` leaves everything as it was (a random draw, an `nth` count or a
/// `recent` list do not).
fn pure(m: &Match) -> bool {
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
    to: u32,
    /// A head: the number of the chain's first rule in the table (see [`crate::counters`]).
    src: u32,
    src_mask: u32,
    /// A head: how many rules the chain has.
    dst: u32,
    dst_mask: u32,
    dport_lo: u16,
    dport_hi: u16,
    /// The threshold of a final `-m statistic --mode random` ([`quick::RANDOM`]); with a
    /// mark check instead ([`quick::MARK`]), the mark's mask.
    threshold: u32,
    proto: u8,
    /// [`quick`] flags; a head's are [`quick::INDEXED`] or none.
    flags: u8,
    /// What the rule's target does to a walk.
    kind: Kind,
    /// The connection states (`ctstate` bits INVALID, ESTABLISHED, RELATED, NEW, UNTRACKED)
    /// a packet can be in and still match the rule (see [`states_of`]): a rule with
    /// `-m conntrack --ctstate NEW` is passed by at once for an established packet.
    states: u8,
}

// A chain's checks are read in a walk: two to a cache line.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Quick>() == 32);

/// [`Quick`]'s flags and target kinds.
mod quick {
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
enum Kind {
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
    fn of(t: &Target) -> Kind {
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
mod nat_data {
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

    /// The verdict of the NAT target whose data entry this is ([`Quick::nat_data`]).
    fn nat_verdict(&self) -> Verdict {
        let ports = (self.flags & nat_data::PORTS != 0).then_some((self.dport_lo, self.dport_hi));
        let flags = NatFlags {
            random: self.flags & nat_data::RANDOM != 0,
            random_fully: self.flags & nat_data::RANDOM_FULLY != 0,
            persistent: self.flags & nat_data::PERSISTENT != 0,
        };
        let range = NatRange { addr_lo: self.src.into(), addr_hi: self.dst.into(), ports };
        match self.proto {
            nat_data::DNAT => Verdict::Dnat(range, flags),
            nat_data::SNAT => Verdict::Snat(range, flags),
            _ => Verdict::Masquerade(ports, flags),
        }
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
    fn draw(&self, rng: &mut Rng) -> bool {
        self.flags & quick::RANDOM == 0
            || rng.statistic(self.threshold) != (self.flags & quick::RANDOM_INV != 0)
    }

    /// Whether the packet's mark, as it is at this rule of the walk, passes the rule's mark
    /// check, if it has one.
    #[inline]
    fn marked(&self, mark: u32) -> bool {
        self.flags & quick::MARK == 0
            || ((mark & self.threshold) == self.to) != (self.flags & quick::MARK_INV != 0)
    }

    /// Whether the packet passes the checks (if it does not, the rule cannot match it).
    #[inline]
    fn admits(&self, t: &Probe) -> bool {
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
struct Probe {
    src: u32,
    dst: u32,
    proto: u8,
    dport: u16,
}

impl Probe {
    fn of(t: &crate::packet::Tuple) -> Probe {
        Probe { src: u32::from(t.src), dst: u32::from(t.dst), proto: t.proto.0, dport: t.dport }
    }
}

/// The real connection states (`ctstate` INVALID, ESTABLISHED, RELATED, NEW, UNTRACKED).
const REAL_STATES: u8 =
    ctstate::INVALID | ctstate::ESTABLISHED | ctstate::RELATED | ctstate::NEW | ctstate::UNTRACKED;

/// The (dst, proto, dport) a rule can only match, if it is that specific. A rule with a
/// match that changes state when it is looked at (`-m statistic` draws a random number or
/// counts, `-m recent` may record) before its port match is not indexed: a linear walk
/// reaches that match for a packet to another port, so skipping the rule would change what
/// later packets see.
fn exact_key(r: &Rule) -> Option<(Ipv4Addr, u8, u16)> {
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

/// Evaluates `chain` of `table` (a built-in chain) for a packet; returns the verdict.
/// `indexed` false forces a linear walk (used to check the index against it).
pub fn eval_chain(
    table: &Table,
    chain: &str,
    pkt: &PacketCtx<'_>,
    st: &mut EvalState<'_>,
    indexed: bool,
) -> Verdict {
    let Some(start) = table.chains.get(chain) else { return Verdict::Accept };
    st.counters.fit(table);
    eval_from(table, start.head, pkt, st, indexed)
}

/// The chains to return to (`-j` pushes, `RETURN` and falling off pop). kube-proxy nests
/// four deep at most, so the first levels live inline and a packet's walk allocates nothing.
#[derive(Default)]
struct ReturnStack {
    inline: [(u32, usize); 8],
    len: usize,
    spill: Vec<(u32, usize)>,
}

impl ReturnStack {
    /// Pushes (the blob position of a chain's head, the rule to go on from).
    fn push(&mut self, v: (u32, usize)) {
        if self.len < self.inline.len() {
            self.inline[self.len] = v;
            self.len += 1;
        } else {
            self.spill.push(v);
        }
    }

    fn pop(&mut self) -> Option<(u32, usize)> {
        if let Some(v) = self.spill.pop() {
            return Some(v);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.inline[self.len])
    }
}

/// Evaluates the built-in chain of `hook` (built-in chains sit first in a table, in
/// [`crate::table::TableName::builtin_chains`] order, so no name lookup is needed).
pub fn eval_hook(
    table: &Table,
    hook: crate::table::Hook,
    pkt: &PacketCtx<'_>,
    st: &mut EvalState<'_>,
    indexed: bool,
) -> Verdict {
    let Some(start) = table.name.builtin_position(hook) else {
        return Verdict::Accept;
    };
    debug_assert_eq!(
        table.chains.get_index(start).map(|(k, _)| k.as_str()),
        Some(hook.chain_name())
    );
    if empty_hook(table, st.counters, hook, pkt.info.len) {
        return Verdict::Accept;
    }
    walk_from(table, start, pkt, st, indexed)
}

/// [`eval_hook`] for a hook whose built-in chain (at `start`) has a walk to make
/// ([`has_walk`]), as the hook pipeline has already found.
pub(crate) fn walk_hook(
    table: &Table,
    hook: crate::table::Hook,
    pkt: &PacketCtx<'_>,
    st: &mut EvalState<'_>,
    indexed: bool,
) -> Verdict {
    debug_assert!(has_walk(table, hook), "the caller found a walk to make");
    match table.name.builtin_position(hook) {
        Some(start) => walk_from(table, start, pkt, st, indexed),
        None => Verdict::Accept,
    }
}

/// Walks from built-in chain `start`, its counters fitted to the table first.
fn walk_from(
    table: &Table,
    start: usize,
    pkt: &PacketCtx<'_>,
    st: &mut EvalState<'_>,
    indexed: bool,
) -> Verdict {
    st.counters.fit(table);
    eval_from(table, table.chains[start].head, pkt, st, indexed)
}

/// Whether the table has nothing to walk at this hook: no such built-in chain, or an empty
/// one with policy ACCEPT (whose policy then counts the packet of `len` bytes in `counters`).
#[inline]
pub fn empty_hook(
    table: &Table,
    counters: &mut crate::counters::TableCounters,
    hook: crate::table::Hook,
    len: u16,
) -> bool {
    let Some(start) = table.name.builtin_position(hook) else {
        return true;
    };
    if walks(&table.chains[start]) {
        return false;
    }
    counters.fit(table);
    counters.count_policy(start, len);
    true
}

/// Whether the table has a walk to make at this hook (see [`empty_hook`]).
pub(crate) fn has_walk(table: &Table, hook: crate::table::Hook) -> bool {
    table.name.builtin_position(hook).is_some_and(|start| walks(&table.chains[start]))
}

/// Whether a built-in chain has anything a walk must look at: rules, or a DROP policy.
fn walks(c: &crate::table::Chain) -> bool {
    !c.rules.is_empty() || c.policy == Some(Policy::Drop)
}

/// The chain a walk is in, as its head entry in the blob gives it.
#[derive(Clone, Copy)]
struct InChain {
    /// The blob position of the head; the chain's rules follow it.
    head: usize,
    /// The chain's index in its table.
    chain: usize,
    /// The number of its first rule in the table (see [`crate::counters`]).
    first: usize,
    /// How many rules it has.
    len: usize,
    /// Whether it has a dispatch index.
    indexed: bool,
}

impl InChain {
    /// The chain whose head is at `head` in a table's blob (`None`: not a head, which
    /// [`Table::link`] never makes).
    #[inline]
    fn enter(blob: &[Quick], head: u32) -> Option<InChain> {
        let q = blob.get(head as usize).filter(|q| q.kind == Kind::Head)?;
        Some(InChain {
            head: head as usize,
            chain: q.to as usize,
            first: q.src as usize,
            len: q.dst as usize,
            indexed: q.flags & quick::INDEXED != 0,
        })
    }
}

/// Walks `table` from the chain whose head is at blob position `start`.
fn eval_from(
    table: &Table,
    start: u32,
    pkt: &PacketCtx<'_>,
    st: &mut EvalState<'_>,
    indexed: bool,
) -> Verdict {
    let tname = table.name.name();
    let mut stack = ReturnStack::default();
    let state = state_bit(pkt.ctinfo);
    let probe = Probe::of(&pkt.info.tuple);
    let blob = table.blob();
    // Only a blob `Table::link` did not make lacks a head where a chain starts.
    let Some(mut c) = InChain::enter(blob, start) else { return Verdict::Drop };
    let mut ri = 0usize;
    // Bounded: a chain loop (impossible through restore's checks, possible by hand) ends here.
    let mut budget = 1_000_000u32;
    loop {
        budget -= 1;
        if budget == 0 {
            return Verdict::Drop;
        }
        let next = next_candidate(table, &c, ri, pkt, indexed);
        let Some(next) = next else {
            // Fell off the chain.
            match stack.pop() {
                Some((h, r)) => {
                    let Some(back) = InChain::enter(blob, h) else { return Verdict::Drop };
                    c = back;
                    ri = r;
                    continue;
                }
                None => {
                    let (name, ch) = table.chains.get_index(c.chain).expect("chain index valid");
                    if ch.policy.is_some() {
                        st.counters.count_policy(c.chain, pkt.info.len);
                    }
                    let policy = ch.policy.unwrap_or(Policy::Accept);
                    let worth_showing = !ch.rules.is_empty() || policy == Policy::Drop;
                    if let Some(h) = st.hits.as_deref_mut().filter(|_| worth_showing) {
                        let p = if policy == Policy::Drop { "DROP" } else { "ACCEPT" };
                        h.push(RuleHit {
                            table: tname,
                            chain: name.to_string(),
                            rule_num: 0,
                            rule: format!(":{name} {p}"),
                            comment: None,
                        });
                    }
                    return if policy == Policy::Drop { Verdict::Drop } else { Verdict::Accept };
                }
            }
        };
        let (i, kept) = next;
        let pos = c.first + i;
        let Some(q) = kept.or_else(|| blob.get(c.head + 1 + i)) else { return Verdict::Drop };
        debug_assert_eq!(Some(q), blob.get(c.head + 1 + i), "the index keeps the blob's entry");
        // The rule itself, read only when the checks cannot decide (or to show it).
        let rule = || table.chains.get_index(c.chain).and_then(|(_, ch)| ch.rules.get(i));
        // A rule for other connection states cannot match: no need to look at it; nor can
        // one whose quick checks fail. A rule they describe whole is decided by them.
        let matched = if q.states & state == 0 || (indexed && !q.admits(&probe)) {
            false
        } else if indexed && q.flags & quick::WHOLE != 0 {
            q.marked(*st.mark) && q.draw(st.rng)
        } else {
            let Some(r) = rule() else { return Verdict::Drop };
            // The rule's position, for state the namespace keeps per rule (`--mode nth`).
            st.counters.matching(Some(pos));
            let m = rule_matches(r, pkt, st);
            st.counters.matching(None);
            m
        };
        if !matched {
            ri = i + 1;
            continue;
        }
        st.counters.count_rule(pos, pkt.info.len);
        if let Some(h) = st.hits.as_deref_mut() {
            let (name, ch) = table.chains.get_index(c.chain).expect("chain index valid");
            let rule = &ch.rules[i];
            h.push(RuleHit {
                table: tname,
                chain: name.to_string(),
                rule_num: i + 1,
                rule: rule.restore_text().into_owned(),
                comment: rule.comment().map(str::to_string),
            });
        }
        // The target: from the quick checks, or the rule when it has more to it.
        match q.kind {
            Kind::Accept => return Verdict::Accept,
            Kind::Return => match stack.pop() {
                Some((h, r)) => {
                    let Some(back) = InChain::enter(blob, h) else { return Verdict::Drop };
                    c = back;
                    ri = r;
                }
                None => {
                    let policy = table.chains[c.chain].policy.unwrap_or(Policy::Accept);
                    return if policy == Policy::Drop { Verdict::Drop } else { Verdict::Accept };
                }
            },
            Kind::Jump | Kind::Goto => {
                let Some(to) = InChain::enter(blob, q.to) else { return Verdict::Drop };
                if q.kind == Kind::Jump {
                    if to.len == 0 {
                        // An empty chain returns at once (kube-proxy keeps several so).
                        ri = i + 1;
                        continue;
                    }
                    stack.push((c.head as u32, i + 1));
                }
                c = to;
                ri = 0;
            }
            Kind::Drop => return Verdict::Drop,
            Kind::Nat => match blob.get(q.to as usize).filter(|d| d.kind == Kind::NatData) {
                Some(d) => return d.nat_verdict(),
                None => return Verdict::Drop,
            },
            Kind::Other | Kind::Head | Kind::NatData => match rule().map(|r| &r.target) {
                Some(Target::Log(prefix)) => {
                    st.logs.push(prefix.clone());
                    ri = i + 1;
                }
                Some(Target::Mark { value, mask }) => {
                    *st.mark = (*st.mark & !mask) ^ value;
                    ri = i + 1;
                }
                // Only a blob `Table::link` did not make lacks the rule.
                None => return Verdict::Drop,
                Some(Target::Reject(w)) => return Verdict::Reject(*w),
                Some(Target::Notrack) => return Verdict::Notrack,
                // No target, TRACE. DROP, NAT and the jumps have kinds of their own
                // (`Kind::of`) and never come here.
                _ => ri = i + 1,
            },
        }
    }
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

/// A packet's real connection state as a `ctstate` bit.
fn state_bit(info: CtInfo) -> u8 {
    match info {
        CtInfo::New => ctstate::NEW,
        CtInfo::Established => ctstate::ESTABLISHED,
        CtInfo::Related => ctstate::RELATED,
        CtInfo::Invalid => ctstate::INVALID,
        CtInfo::Untracked => ctstate::UNTRACKED,
    }
}

/// The first rule at or after `from` that could match, by index or linearly, and its blob
/// entry when the index holds it.
#[inline]
fn next_candidate<'t>(
    table: &'t Table,
    c: &InChain,
    from: usize,
    pkt: &PacketCtx<'_>,
    indexed: bool,
) -> Option<(usize, Option<&'t Quick>)> {
    // Only the long chains that have an index read their chain (they are few, and hot).
    let index = || table.chains.get_index(c.chain).and_then(|(_, ch)| ch.index.as_deref());
    match (c.indexed && indexed).then(index).flatten() {
        Some(idx) => {
            let t = &pkt.info.tuple;
            let key = Buckets::key(t.dst, t.proto.0, t.dport);
            let first_ge = |v: &[u32]| -> Option<u32> {
                let p = v.partition_point(|&x| (x as usize) < from);
                v.get(p).copied()
            };
            let a = idx.buckets.get(key).and_then(|b| {
                if from <= b.first as usize {
                    Some((b.first, Some(&b.entry)))
                } else {
                    let more = idx.more.get(b.at as usize..(b.at + b.len) as usize)?;
                    first_ge(more).map(|i| (i, None))
                }
            });
            let b = first_ge(&idx.residual);
            match (a, b) {
                (Some(a), Some(b)) if b < a.0 => Some((b as usize, None)),
                (Some((a, q)), _) => Some((a as usize, q)),
                (None, b) => b.map(|b| (b as usize, None)),
            }
        }
        None => (from < c.len).then_some((from, None)),
    }
}

fn iface_matches(pattern: &str, iface: Option<&str>) -> bool {
    let Some(name) = iface else { return false };
    match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Whether every match of `rule` holds for the packet (`ip_packet_match` plus extensions).
pub fn rule_matches(rule: &Rule, pkt: &PacketCtx<'_>, st: &mut EvalState<'_>) -> bool {
    let t = &pkt.info.tuple;
    if let Some(n) = &rule.src
        && n.value.contains(t.src) == n.invert
    {
        return false;
    }
    if let Some(n) = &rule.dst
        && n.value.contains(t.dst) == n.invert
    {
        return false;
    }
    if let Some(n) = &rule.in_iface
        && iface_matches(&n.value, pkt.in_iface) == n.invert
    {
        return false;
    }
    if let Some(n) = &rule.out_iface
        && iface_matches(&n.value, pkt.out_iface) == n.invert
    {
        return false;
    }
    if let Some(n) = &rule.proto
        && (n.value == t.proto) == n.invert
    {
        return false;
    }
    rule.matches.iter().all(|m| ext_matches(m, pkt, st))
}

fn ext_matches(m: &Match, pkt: &PacketCtx<'_>, st: &mut EvalState<'_>) -> bool {
    let info = pkt.info;
    let t = &info.tuple;
    match m {
        Match::Ports { proto, sport, dport, tcp_flags } => {
            if t.proto != *proto {
                return false;
            }
            if let Some(p) = sport
                && p.value.contains(t.sport) == p.invert
            {
                return false;
            }
            if let Some(p) = dport
                && p.value.contains(t.dport) == p.invert
            {
                return false;
            }
            if let Some(f) = tcp_flags
                && ((info.tcp_flags & f.value.0) == f.value.1) == f.invert
            {
                return false;
            }
            true
        }
        Match::Icmp { icmp_type } => {
            let Some((ty, code)) = info.icmp else { return false };
            match icmp_type {
                None => true,
                Some(n) => {
                    let hit = n.value.0 == 255
                        || (n.value.0 == ty && n.value.1.is_none_or(|c| c == code));
                    hit != n.invert
                }
            }
        }
        Match::Multiport { which, ports } => {
            if !t.proto.has_ports() {
                return false;
            }
            let hit = ports.value.iter().any(|r| match which {
                0 => r.contains(t.sport),
                1 => r.contains(t.dport),
                _ => r.contains(t.sport) || r.contains(t.dport),
            });
            hit != ports.invert
        }
        Match::Comment(_) | Match::Nfacct(_) => true,
        Match::Conntrack { ctstate: cs, ctorigdst, .. } => {
            if let Some(n) = cs {
                let mut bits = state_bit(pkt.ctinfo);
                if pkt.ct_status & crate::conntrack::status::SRC_NAT != 0 {
                    bits |= ctstate::SNAT;
                }
                if pkt.ct_status & crate::conntrack::status::DST_NAT != 0 {
                    bits |= ctstate::DNAT;
                }
                if (bits & n.value != 0) == n.invert {
                    return false;
                }
            }
            if let Some(n) = ctorigdst {
                let hit = pkt.ct_origdst.is_some_and(|a| n.value.contains(a));
                if hit == n.invert {
                    return false;
                }
            }
            true
        }
        Match::Mark(n) => ((*st.mark & n.value.1) == n.value.0) != n.invert,
        Match::AddrType { src, dst, limit_iface_in, limit_iface_out } => {
            let limit = if *limit_iface_in {
                pkt.in_iface
            } else if *limit_iface_out {
                pkt.out_iface
            } else {
                None
            };
            let check = |n: &crate::rule::Neg<u16>, a: Ipv4Addr| {
                let ty = (pkt.addr_type)(a, limit);
                let ty = if ty == 0 { addrtype::UNICAST } else { ty };
                (ty & n.value != 0) != n.invert
            };
            src.as_ref().is_none_or(|n| check(n, t.src))
                && dst.as_ref().is_none_or(|n| check(n, t.dst))
        }
        Match::Random { threshold, invert, .. } => {
            // xt_statistic: (get_random_u32() & 0x7FFFFFFF) < probability.
            st.rng.statistic(*threshold) != *invert
        }
        Match::Nth { every, count, invert, .. } => {
            // xt_statistic: count cycles 0..every-1 from --packet; the packet that wraps it
            // to 0 matches.
            // The running count is the namespace's own (rules may be shared); a rule matched
            // outside a chain walk counts in the rule.
            let step = |c: u32| if c + 1 >= *every { 0 } else { c + 1 };
            let next = match st.counters.nth_slot(count.get()) {
                Some(slot) => {
                    *slot = step(*slot);
                    *slot
                }
                None => {
                    let next = step(count.get());
                    count.set(next);
                    next
                }
            };
            (next == 0) != *invert
        }
        Match::Recent(r) => {
            let crate::rule::RecentMatch {
                name,
                cmd,
                seconds,
                hitcount,
                reap,
                rdest,
                mask,
                invert,
            } = &**r;
            let addr = if *rdest { t.dst } else { t.src };
            let addr = Ipv4Addr::from(u32::from(addr) & u32::from(*mask));
            let list = st.recent.lists.entry(name.clone()).or_default();
            let hit = match cmd {
                RecentCmd::Set => {
                    list.entry(addr).or_default().push(pkt.now);
                    true
                }
                RecentCmd::Remove => list.remove(&addr).is_some(),
                RecentCmd::Rcheck | RecentCmd::Update => {
                    let window = seconds.map(|s| Duration::from_secs(u64::from(s)));
                    let seen = list.get_mut(&addr);
                    match seen {
                        None => false,
                        Some(times) => {
                            if *reap && let Some(w) = window {
                                times.retain(|&at| at + w >= pkt.now);
                            }
                            let recent: usize = times
                                .iter()
                                .filter(|&&at| window.is_none_or(|w| at + w >= pkt.now))
                                .count();
                            let ok = recent > 0 && hitcount.is_none_or(|h| recent >= h as usize);
                            if ok && *cmd == RecentCmd::Update {
                                times.push(pkt.now);
                            }
                            ok
                        }
                    }
                }
            };
            hit != *invert
        }
        Match::Set(m) => {
            let crate::rule::SetMatch { name, flags, invert } = &**m;
            let pick_addr = |f: SetFlag| if f == SetFlag::Src { t.src } else { t.dst };
            let pick_port = |f: SetFlag| if f == SetFlag::Src { t.sport } else { t.dport };
            st.sets.test(name, flags, &pick_addr, &pick_port, t.proto) != *invert
        }
        Match::Physdev(m) => {
            let crate::rule::PhysdevMatch { phys_in, phys_out, is_in, is_out, is_bridged } = &**m;
            let chk = |n: &Option<crate::rule::Neg<String>>, dev: Option<&str>| {
                n.as_ref().is_none_or(|n| iface_matches(&n.value, dev) != n.invert)
            };
            chk(phys_in, pkt.physdev_in)
                && chk(phys_out, pkt.physdev_out)
                && is_in.is_none_or(|want| pkt.physdev_in.is_some() == want)
                && is_out.is_none_or(|want| pkt.physdev_out.is_some() == want)
                && is_bridged.is_none_or(|want| pkt.bridged == want)
        }
    }
}

/// Whether a protocol is one the DNAT/SNAT port fields apply to.
pub(crate) fn nat_has_ports(p: Proto) -> bool {
    p.has_ports() || p == Proto::ICMP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(text: &str) -> Quick {
        Quick::of(&Rule::parse(text).expect("the test rules parse"), NO_JUMP, REAL_STATES)
    }

    /// Keys whose probes start at the same slot are all found, each with its own bucket, by
    /// probing on; a key never put in is not.
    #[test]
    fn buckets_find_every_key_when_probes_collide() {
        // Scattered addresses (consecutive ones, as cluster IPs mostly are, spread without
        // a collision).
        let keys: Vec<u64> = (0..3_000u32)
            .map(|i| Buckets::key(Ipv4Addr::from(i.wrapping_mul(0x2c1b_3c6d) ^ 0x0a60_0000), 6, 80))
            .collect();
        let mut b = Buckets::with_keys(keys.len());
        for (n, &k) in keys.iter().enumerate() {
            let at = b.slot(k);
            assert_eq!(b.slots[at].key, 0, "a new key lands on an empty slot");
            b.slots[at] = Slot { key: k, bucket: Bucket { first: n as u32, ..Bucket::default() } };
        }
        let moved_on = keys.iter().filter(|&&k| b.slot(k) != b.home(k)).count();
        assert!(moved_on > 100, "3,000 keys in 8,192 slots collide ({moved_on} moved on)");
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(b.get(k).map(|x| x.first), Some(n as u32));
        }
        assert_eq!(b.get(Buckets::key(Ipv4Addr::new(192, 0, 2, 1), 6, 80)), None);
        assert_eq!(b.get(Buckets::key(Ipv4Addr::from(0x0a60_0000), 17, 80)), None);
        assert_eq!(b.get(Buckets::key(Ipv4Addr::from(0x0a60_0000), 6, 81)), None);
    }

    /// A NAT target's data entry gives back the target exactly: addresses, port range or
    /// none, and every flag.
    #[test]
    fn nat_data_entries_give_back_their_targets() {
        for text in [
            "-j DNAT --to-destination 10.244.1.2:8080",
            "-j DNAT --to-destination 10.244.1.2",
            "-j DNAT --to-destination 10.244.1.2-10.244.1.9:80-90 --random --persistent",
            "-j SNAT --to-source 192.168.0.1",
            "-j SNAT --to-source 192.168.0.1-192.168.0.4:1024-65535 --random-fully",
            "-j MASQUERADE",
            "-j MASQUERADE --to-ports 30000-32767 --random",
            "-j MASQUERADE --random-fully",
        ] {
            let rule = Rule::parse(text).expect("the test rules parse");
            let want = match rule.target {
                Target::Dnat(r, f) => Verdict::Dnat(r, f),
                Target::Snat(r, f) => Verdict::Snat(r, f),
                Target::Masquerade(p, f) => Verdict::Masquerade(p, f),
                ref t => panic!("not a NAT target: {t:?}"),
            };
            let data = Quick::nat_data(&rule.target).expect("a NAT target has data");
            assert_eq!(data.nat_verdict(), want, "{text}");
            assert_eq!(quick(text).kind, Kind::Nat, "{text}");
        }
        assert_eq!(Quick::nat_data(&Rule::parse("-j ACCEPT").unwrap().target), None);
    }

    /// kube-proxy's rules are read whole from their quick checks; rules with more to them
    /// are not, and only what comes before a random draw is checked early.
    #[test]
    fn quick_checks_read_kube_proxy_rules_whole() {
        for text in [
            "-d 10.96.0.10/32 -p tcp -m comment --comment \"ns/svc:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-X",
            "! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment x -m tcp --dport 80 -j KUBE-MARK-MASQ",
            "-m comment --comment x -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-X",
            "-s 10.244.1.2/32 -m comment --comment x -j KUBE-MARK-MASQ",
            "-p tcp -m comment --comment x -m tcp -j DNAT --to-destination 10.244.1.2:8080",
            "-m conntrack --ctstate NEW -m comment --comment x -j KUBE-SERVICES",
            "-s 0.0.0.0/0 -j ACCEPT",
            "-m comment --comment x -m mark --mark 0x4000/0x4000 -j ACCEPT",
            "-m mark ! --mark 0x4000/0x4000 -j RETURN",
        ] {
            assert_ne!(quick(text).flags & quick::WHOLE, 0, "{text}");
        }
        for text in [
            "-i eth0 -j ACCEPT",
            // A mark check has the places of the jump and of the draw: not with either.
            "-m mark --mark 0x4000/0x4000 -j KUBE-MARK-MASQ",
            "-m mark --mark 0x1/0x1 -m statistic --mode random --probability 0.5 -j ACCEPT",
            "-m mark --mark 0x1/0x1 -m mark --mark 0x2/0x2 -j ACCEPT",
            "-m mark --mark 0x1/0x1 -j MARK --or-mark 0x2",
            "-p tcp -m tcp --sport 80 -j ACCEPT",
            "-m statistic --mode random --probability 0.5 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-m conntrack ! --ctstate NEW -j ACCEPT",
            "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        ] {
            assert_eq!(quick(text).flags & quick::WHOLE, 0, "{text}");
        }
        // The port after a draw is not checked early: a packet to port 81 still draws.
        let t = |dport| crate::packet::Tuple {
            src: Ipv4Addr::new(10, 244, 1, 2),
            dst: Ipv4Addr::new(10, 96, 0, 10),
            proto: Proto::TCP,
            sport: 40000,
            dport,
        };
        let draw_first = quick(
            "-m statistic --mode random --probability 0.5 -p tcp -m tcp --dport 80 -j ACCEPT",
        );
        let t = |dport| Probe::of(&t(dport));
        assert!(draw_first.admits(&t(81)));
        let port_first = quick(
            "-p tcp -m tcp --dport 80 -m statistic --mode random --probability 0.5 -j ACCEPT",
        );
        assert!(port_first.admits(&t(80)) && !port_first.admits(&t(81)));
        // Anywhere admits every address; nowhere (`! -d 0.0.0.0/0`) none.
        assert!(quick("-s 0.0.0.0/0 -d 0.0.0.0/0 -j ACCEPT").admits(&t(80)));
        assert!(!quick("! -d 0.0.0.0/0 -j ACCEPT").admits(&t(80)));
        assert!(!quick("! -p tcp -j ACCEPT").admits(&t(80)));
    }
}
