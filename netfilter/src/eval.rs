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

use crate::compile::{Kind, Probe, Quick, nat_data, quick};
use crate::conntrack::CtInfo;
use crate::ipset::IpSets;
use crate::packet::{PacketInfo, Proto};
use crate::rng::Rng;
use crate::rule::{
    Match, NatFlags, NatRange, RecentCmd, RejectWith, Rule, SetFlag, Target, addrtype, ctstate,
};
use crate::table::{Policy, Table};

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
    /// The rule as `iptables-save` prints it (kernel form, without `-A CHAIN`), or
    /// `:CHAIN POLICY` for a policy.
    pub rule: String,
    /// The rule's comment, which names the Kubernetes object for kube-proxy rules.
    pub comment: Option<String>,
    /// For a rule of an nf_tables chain (`table` is then `"nft"`): its table, handle and the
    /// set or map element it matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nft: Option<Box<crate::nft::NftHit>>,
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
                            nft: None,
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
                rule: rule.kernel_form(),
                comment: rule.comment().map(str::to_string),
                nft: None,
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
                Some(d) => return nat_verdict(d),
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
            let key = crate::compile::Buckets::key(t.dst, t.proto.0, t.dport);
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
                // conntrack_mt adds the NAT states only when the packet has an entry: an
                // invalid or untracked one has none (`nf_ct_get` returns NULL).
                let has_entry = !matches!(pkt.ctinfo, CtInfo::Invalid | CtInfo::Untracked);
                if has_entry && pkt.ct_status & crate::conntrack::status::SRC_NAT != 0 {
                    bits |= ctstate::SNAT;
                }
                if has_entry && pkt.ct_status & crate::conntrack::status::DST_NAT != 0 {
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

/// The verdict of the NAT target whose data entry `q` is ([`Quick::nat_data`]).
fn nat_verdict(q: &Quick) -> Verdict {
    let ports = (q.flags & nat_data::PORTS != 0).then_some((q.dport_lo, q.dport_hi));
    let flags = NatFlags {
        random: q.flags & nat_data::RANDOM != 0,
        random_fully: q.flags & nat_data::RANDOM_FULLY != 0,
        persistent: q.flags & nat_data::PERSISTENT != 0,
    };
    let range = NatRange { addr_lo: q.src.into(), addr_hi: q.dst.into(), ports };
    match q.proto {
        nat_data::DNAT => Verdict::Dnat(range, flags),
        nat_data::SNAT => Verdict::Snat(range, flags),
        _ => Verdict::Masquerade(ports, flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{Bucket, Buckets, NO_JUMP, REAL_STATES, Slot};

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
            assert_eq!(nat_verdict(&data), want, "{text}");
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
