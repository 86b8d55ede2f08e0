//! nf_tables on packets: a base chain's rules run in order (`nft_do_chain`), statements left to
//! right, each match ending the rule when it fails; `jump` and `goto` with a return stack,
//! verdict maps (`vmap`) looked up by hash, `numgen` as a decision point the flow explorer
//! enumerates, sets filled from the packet path (`update @set`) held per namespace with their
//! timeouts.
//!
//! What a chain decides comes back as the iptables evaluator's [`Verdict`], so the hook
//! pipeline treats both kinds of table alike: `dnat`/`snat`/`masquerade` end the chain as
//! NAT decisions, `reject` and `drop` end the packet.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use smoltcp::time::{Duration, Instant};

use super::expr::{Lit, Rhs, Sel, Stmt, Ty, UNLINKED, Verd, ct_state};
use super::{Element, Family, Table};
use crate::conntrack::CtInfo;
use crate::eval::{PacketCtx, RuleHit, Verdict};
use crate::rng::Rng;
use crate::rule::{NatFlags, NatRange, addrtype};

/// A lookup key: up to four concatenated 32-bit parts, zero-padded.
type Key = [u32; 4];

/// A named set's elements by key.
#[derive(Clone, Debug, Default)]
struct SetIndex {
    /// Elements whose every part is one value, by key.
    exact: FxHashMap<Key, usize>,
    /// Elements with a range, prefix or interface-name part (looked through in order).
    other: Vec<usize>,
    /// A map's verdicts, per element (their targets linked).
    verdicts: Vec<Option<Verd>>,
    /// Filled from the packet path too (`flags dynamic`).
    dynamic: bool,
}

/// What the evaluator reads of a table, built after each transaction (derived from the
/// table, so not compared): its sets' elements by key, and every rule's statements laid out in
/// one array in chain order, so that the chains of one Service (declared together) sit
/// together in memory, as the kernel's rule blobs do.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lookups {
    index: Vec<SetIndex>,
    /// Per chain, its rules' range in `rules`.
    chains: Vec<(u32, u32)>,
    /// Per rule, its statements' range in `ops`.
    rules: Vec<(u32, u32)>,
    ops: Vec<Stmt>,
}

impl PartialEq for Lookups {
    fn eq(&self, _: &Lookups) -> bool {
        true
    }
}

impl Eq for Lookups {}

fn exact_key(lits: &[Lit]) -> Option<Key> {
    if lits.len() > 4 {
        return None;
    }
    let mut k = [0; 4];
    for (slot, l) in k.iter_mut().zip(lits) {
        *slot = l.exact()?;
    }
    Some(k)
}

impl Lookups {
    /// Indexes `t`'s sets and links every rule's and element's chain and set names to
    /// their places.
    pub(crate) fn build(t: &mut Table) {
        let chains = &t.names.0.chains;
        let sets = &t.names.0.sets;
        let link = |v: &mut Verd| {
            if let Verd::Jump(name, at) | Verd::Goto(name, at) = v {
                *at = chains.get(name.as_str()).copied().unwrap_or(UNLINKED);
            }
        };
        let index = t
            .sets
            .iter()
            .map(|s| {
                let mut ix = SetIndex {
                    dynamic: s.flags.iter().any(|f| f == "dynamic"),
                    ..SetIndex::default()
                };
                for (i, e) in s.elements.iter().enumerate() {
                    match exact_key(&e.lits) {
                        Some(k) => {
                            ix.exact.insert(k, i);
                        }
                        None => ix.other.push(i),
                    }
                    let mut v = e.value.as_deref().and_then(Verd::parse);
                    if let Some(v) = v.as_mut() {
                        link(v);
                    }
                    ix.verdicts.push(v);
                }
                ix
            })
            .collect();
        for c in &mut t.chains {
            for r in &mut c.rules {
                for op in &mut r.ops {
                    match op {
                        Stmt::Verdict(v) => link(v),
                        Stmt::Match { rhs, .. } | Stmt::Vmap { map: rhs, .. } => match rhs {
                            Rhs::Named(name, at) => {
                                *at = sets.get(name.as_str()).copied().unwrap_or(UNLINKED);
                            }
                            Rhs::Anon(elems) => {
                                for v in elems.iter_mut().filter_map(|(_, v)| v.as_mut()) {
                                    link(v);
                                }
                            }
                            Rhs::Value(_) => {}
                        },
                        Stmt::Update { set, at, .. } => {
                            *at = sets.get(set.as_str()).copied().unwrap_or(UNLINKED);
                        }
                        _ => {}
                    }
                }
            }
        }
        let (mut chains, mut rules, mut ops) = (Vec::new(), Vec::new(), Vec::new());
        for c in &t.chains {
            let first = rules.len() as u32;
            for r in &c.rules {
                let at = ops.len() as u32;
                ops.extend(r.ops.iter().cloned());
                rules.push((at, ops.len() as u32));
            }
            chains.push((first, rules.len() as u32));
        }
        t.index = Lookups { index, chains, rules, ops };
    }
}

/// A rule that fired in an nf_tables chain: where it is, and the set or map element it
/// matched.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NftHit {
    /// The table's family.
    pub family: Family,
    /// The table.
    pub table: String,
    /// The rule's handle (0 for a base chain's policy).
    pub handle: u64,
    /// The element of a named set or map the rule matched, as `nft list` prints it
    /// (`172.30.0.41 . tcp . 80 : goto service-…`).
    pub element: Option<String>,
}

/// What a namespace's packets write into its nf_tables tables: the elements `update @set`
/// adds, each with its expiry (a set without a timeout keeps them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftState {
    /// table → set → key → expiry.
    dynamic: HashMap<String, HashMap<String, FxHashMap<Key, Option<Instant>>>>,
}

impl NftState {
    /// The elements the packet path added to `table`'s set `set` that have not expired, as
    /// addresses (first key part), sorted.
    pub fn dynamic_elements(&self, table: &str, set: &str, now: Instant) -> Vec<Ipv4Addr> {
        let Some(m) = self.dynamic.get(table).and_then(|t| t.get(set)) else {
            return Vec::new();
        };
        let mut v: Vec<Ipv4Addr> = m
            .iter()
            .filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .map(|(k, _)| Ipv4Addr::from(k[0]))
            .collect();
        v.sort();
        v
    }
}

/// What a chain's rules read and write besides the packet.
pub(crate) struct Run<'a> {
    pub(crate) mark: &'a mut u32,
    pub(crate) rng: &'a mut Rng,
    pub(crate) state: &'a mut NftState,
    pub(crate) hits: Option<&'a mut Vec<RuleHit>>,
    /// The raw packet (for `th` ports of protocols conntrack does not read ports of).
    pub(crate) data: &'a [u8],
    /// The connection's mark.
    pub(crate) ct_mark: u32,
}

/// A value read from the packet.
enum Got<'a> {
    N(u32),
    S(&'a str),
}

fn read<'a>(sel: Sel, p: &PacketCtx<'a>, run: &mut Run<'_>) -> Option<Got<'a>> {
    let t = &p.info.tuple;
    Some(Got::N(match sel {
        Sel::IpSaddr => t.src.into(),
        Sel::IpDaddr => t.dst.into(),
        Sel::L4proto => u32::from(t.proto.0),
        Sel::Port { dst, proto } => {
            if proto.is_some_and(|want| want != t.proto.0) {
                return None;
            }
            if t.proto.has_ports() {
                u32::from(if dst { t.dport } else { t.sport })
            } else {
                // The transport header's first or second 16 bits, whatever the protocol.
                let ihl = usize::from(run.data.first()? & 0x0f) * 4;
                let at = ihl + if dst { 2 } else { 0 };
                let b = run.data.get(at..at + 2)?;
                u32::from(u16::from_be_bytes([b[0], b[1]]))
            }
        }
        Sel::TcpFlags => {
            if t.proto.0 != 6 {
                return None;
            }
            u32::from(p.info.tcp_flags)
        }
        Sel::Mark => *run.mark,
        Sel::CtMark => run.ct_mark,
        Sel::Iifname | Sel::Iif => return p.in_iface.map(Got::S),
        Sel::Oifname | Sel::Oif => return p.out_iface.map(Got::S),
        Sel::Nfproto => 2,
        Sel::CtState => match p.ctinfo {
            CtInfo::New => ct_state::NEW,
            CtInfo::Established => ct_state::ESTABLISHED,
            CtInfo::Related => ct_state::RELATED,
            CtInfo::Invalid => ct_state::INVALID,
            CtInfo::Untracked => ct_state::UNTRACKED,
        },
        Sel::CtStatus => p.ct_status,
        Sel::FibType { dst } => {
            let flags = (p.addr_type)(if dst { t.dst } else { t.src }, None);
            // RTN_* numbers, from the address-type bits.
            [
                (addrtype::LOCAL, 2),
                (addrtype::BROADCAST, 3),
                (addrtype::ANYCAST, 4),
                (addrtype::MULTICAST, 5),
                (addrtype::BLACKHOLE, 6),
                (addrtype::UNREACHABLE, 7),
                (addrtype::PROHIBIT, 8),
            ]
            .iter()
            .find(|(bit, _)| flags & bit != 0)
            .map_or(1, |&(_, n)| n)
        }
        Sel::Numgen(m) => match run.rng.scripted_pick(m as usize) {
            Some(i) => i as u32,
            None => run.rng.range(0, m - 1),
        },
    }))
}

fn lit_holds(ty: Ty, lit: &Lit, got: &Got<'_>) -> bool {
    match (lit, got) {
        (Lit::Flags(b), Got::N(v)) => v & b != 0,
        (&Lit::Range(lo, _), &Got::N(v)) if ty.is_flags() => v & lo != 0,
        (&Lit::Range(lo, hi), &Got::N(v)) => lo <= v && v <= hi,
        (Lit::Iface { name, prefix }, Got::S(s)) => {
            if *prefix {
                s.starts_with(name.as_str())
            } else {
                s == name
            }
        }
        _ => false,
    }
}

fn all_hold(sel: &[Sel], lits: &[Lit], got: &[Got<'_>]) -> bool {
    sel.iter().zip(lits).zip(got).all(|((s, l), g)| lit_holds(s.ty(), l, g))
}

fn key_of(got: &[Got<'_>]) -> Option<Key> {
    if got.len() > 4 {
        return None;
    }
    let mut k = [0; 4];
    for (slot, g) in k.iter_mut().zip(got) {
        match g {
            Got::N(v) => *slot = *v,
            Got::S(_) => return None,
        }
    }
    Some(k)
}

/// The element of `t`'s named set at `si` the values match, if any (the set's static
/// elements, then those the packet path added).
fn lookup(
    t: &Table,
    si: usize,
    sel: &[Sel],
    got: &[Got<'_>],
    run: &Run<'_>,
    now: Instant,
) -> Option<Found> {
    let ix = t.index.index.get(si)?;
    let set = &t.sets[si];
    let key = key_of(got);
    if let Some(k) = key
        && let Some(&i) = ix.exact.get(&k)
    {
        return Some(Found::Static(si, i));
    }
    for &i in &ix.other {
        if all_hold(sel, &set.elements[i].lits, got) {
            return Some(Found::Static(si, i));
        }
    }
    if !ix.dynamic {
        return None;
    }
    let k = key?;
    let d = run.state.dynamic.get(t.name.as_str())?.get(set.name.as_str())?;
    match d.get(&k) {
        Some(exp) if exp.is_none_or(|e| e > now) => Some(Found::Dynamic(k)),
        _ => None,
    }
}

enum Found {
    Static(usize, usize),
    Dynamic(Key),
}

fn element_text(e: &Element) -> String {
    let mut s = String::new();
    e.write(&mut s);
    s
}

/// The values a statement's selectors read (inline: up to four, as kube-proxy's
/// concatenations are).
type Values<'a> = SmallVec<[Got<'a>; 4]>;

/// Runs chain `start` of `t` (a base chain) over a packet: the verdict, with the rules that
/// fired recorded in `run.hits`.
pub(crate) fn run_chain(t: &Table, start: usize, p: &PacketCtx<'_>, run: &mut Run<'_>) -> Verdict {
    let policy = |t: &Table| match t.chains[start].base.as_ref().map(|b| b.policy.as_str()) {
        Some("drop") => Verdict::Drop,
        _ => Verdict::Accept,
    };
    // (chain, next rule) to return to: kube-proxy jumps two deep, so inline.
    let mut stack: SmallVec<[(usize, usize); 8]> = SmallVec::new();
    let (mut chain, mut at) = (start, 0usize);
    let mut depth = 0usize;
    let ix = &t.index;
    loop {
        let (first, last) = ix.chains[chain];
        if at >= (last - first) as usize {
            // Off the end: a regular chain returns, a base chain's policy applies.
            match stack.pop() {
                Some((c, r)) => {
                    (chain, at) = (c, r);
                    continue;
                }
                None => {
                    if last > first || policy(t) == Verdict::Drop {
                        note(run, t, chain, 0, false, None);
                    }
                    return policy(t);
                }
            }
        }
        let (o0, o1) = ix.rules[first as usize + at];
        let rule_ops = &ix.ops[o0 as usize..o1 as usize];
        at += 1;
        let mut element: Option<String> = None;
        let mut outcome: Option<&Verd> = None;
        let mut end: Option<Verdict> = None;
        let mut matched = true;
        for op in rule_ops {
            match op {
                Stmt::Match { sel, neg, rhs } => {
                    let Some(got) =
                        sel.iter().map(|s| read(*s, p, run)).collect::<Option<Values<'_>>>()
                    else {
                        matched = false;
                        break;
                    };
                    let hit = match rhs {
                        Rhs::Value(lits) => all_hold(sel, lits, &got),
                        Rhs::Anon(elems) => elems.iter().any(|(l, _)| all_hold(sel, l, &got)),
                        Rhs::Named(_, si) => match lookup(t, *si, sel, &got, run, p.now) {
                            Some(Found::Static(si, i)) => {
                                if run.hits.is_some() && !neg {
                                    element = Some(element_text(&t.sets[si].elements[i]));
                                }
                                true
                            }
                            Some(Found::Dynamic(k)) => {
                                if run.hits.is_some() && !neg {
                                    element = Some(Ipv4Addr::from(k[0]).to_string());
                                }
                                true
                            }
                            None => false,
                        },
                    };
                    if hit == *neg {
                        matched = false;
                        break;
                    }
                }
                Stmt::MarkMatch { sel, op, mask, neg, val } => {
                    let v = if *sel == Sel::Mark { *run.mark } else { run.ct_mark };
                    if (op.apply(v, *mask) == *val) == *neg {
                        matched = false;
                        break;
                    }
                }
                Stmt::Vmap { sel, map } => {
                    let Some(got) =
                        sel.iter().map(|s| read(*s, p, run)).collect::<Option<Values<'_>>>()
                    else {
                        matched = false;
                        break;
                    };
                    let v = match map {
                        Rhs::Anon(elems) => elems
                            .iter()
                            .find(|(l, _)| all_hold(sel, l, &got))
                            .and_then(|(_, v)| v.as_ref()),
                        Rhs::Named(_, si) => match lookup(t, *si, sel, &got, run, p.now) {
                            Some(Found::Static(si, i)) => {
                                if run.hits.is_some() {
                                    element = Some(element_text(&t.sets[si].elements[i]));
                                }
                                t.index.index[si].verdicts[i].as_ref()
                            }
                            _ => None,
                        },
                        Rhs::Value(_) => None,
                    };
                    match v {
                        Some(v) => {
                            outcome = Some(v);
                            break;
                        }
                        None => {
                            matched = false;
                            break;
                        }
                    }
                }
                Stmt::MarkSet { op, val, .. } => {
                    *run.mark = match op {
                        Some(o) => o.apply(*run.mark, *val),
                        None => *val,
                    };
                }
                Stmt::Verdict(v) => {
                    outcome = Some(v);
                    break;
                }
                Stmt::Counter => {}
                Stmt::Reject(w) => {
                    end = Some(Verdict::Reject(*w));
                    break;
                }
                Stmt::Masquerade { random, fully_random, persistent } => {
                    let flags = NatFlags {
                        random: *random,
                        random_fully: *fully_random,
                        persistent: *persistent,
                    };
                    end = Some(Verdict::Masquerade(None, flags));
                    break;
                }
                Stmt::Nat { dst, addr, port } => {
                    let range =
                        NatRange { addr_lo: *addr, addr_hi: *addr, ports: port.map(|p| (p, p)) };
                    end = Some(if *dst {
                        Verdict::Dnat(range, NatFlags::default())
                    } else {
                        Verdict::Snat(range, NatFlags::default())
                    });
                    break;
                }
                Stmt::Update { at: si, sel, .. } => {
                    let got: Option<Values<'_>> = sel.iter().map(|s| read(*s, p, run)).collect();
                    if let (Some(k), Some(set)) = (got.as_deref().and_then(key_of), t.sets.get(*si))
                    {
                        let timeout = set.timeout.map(|s| p.now + Duration::from_secs(s));
                        run.state
                            .dynamic
                            .entry(t.name.clone())
                            .or_default()
                            .entry(set.name.clone())
                            .or_default()
                            .insert(k, timeout);
                    }
                }
            }
        }
        if !matched {
            continue;
        }
        if let Some(v) = end {
            note(run, t, chain, at, true, element);
            return v;
        }
        let Some(v) = outcome else {
            // Every statement ran (a rule that only sets a mark or updates a set).
            if run.hits.is_some() && rule_ops.iter().any(|o| !matches!(o, Stmt::Counter)) {
                note(run, t, chain, at, true, element);
            }
            continue;
        };
        note(run, t, chain, at, true, element);
        match v {
            Verd::Accept => return Verdict::Accept,
            Verd::Drop => return Verdict::Drop,
            Verd::Continue => {}
            Verd::Return => match stack.pop() {
                Some((c, r)) => (chain, at) = (c, r),
                None => return policy(t),
            },
            Verd::Jump(_, next) | Verd::Goto(_, next) => {
                if *next == UNLINKED {
                    // The parser checks that targets exist and refuses to delete one still
                    // named: nothing is left unlinked after a transaction.
                    debug_assert!(false, "an unlinked jump");
                    return Verdict::Drop;
                }
                depth += 1;
                if depth > 64 {
                    // The kernel refuses rulesets that loop; a walk this deep is one.
                    return Verdict::Drop;
                }
                if matches!(v, Verd::Jump(..)) {
                    stack.push((chain, at));
                }
                (chain, at) = (*next, 0);
            }
        }
    }
}

/// Records that rule `num` (1-based) of `chain` fired, or (`is_rule` false) its policy.
fn note(
    run: &mut Run<'_>,
    t: &Table,
    chain: usize,
    num: usize,
    is_rule: bool,
    element: Option<String>,
) {
    let Some(hits) = run.hits.as_deref_mut() else { return };
    let c = &t.chains[chain];
    let found = if is_rule { num.checked_sub(1).and_then(|i| c.rules.get(i)) } else { None };
    let handle = found.map(|r| r.handle);
    let (rule, comment) = match found {
        Some(r) => (r.stmts.join(" "), r.comment.clone()),
        None => {
            (format!("policy {}", c.base.as_ref().map_or("accept", |b| b.policy.as_str())), None)
        }
    };
    hits.push(RuleHit {
        table: "nft",
        chain: c.name.clone(),
        rule_num: num,
        rule,
        comment,
        nft: Some(Box::new(NftHit {
            family: t.family,
            table: t.name.clone(),
            handle: handle.unwrap_or(0),
            element,
        })),
    });
}
