//! nf_tables rulesets as `nft` reads and prints them: tables, base and regular chains, named
//! sets and maps (verdict maps included), and rules made of the expressions kube-proxy's
//! nftables mode writes.
//!
//! - [`Ruleset::apply`] reads `nft -f` input: `add`/`create` of tables, chains, sets, maps,
//!   rules and elements, `flush` and `delete` of them, one command per line, as kube-proxy's
//!   syncs write them (full and incremental). A command or expression podnet does not model
//!   is an error naming the line, the column and what is understood.
//! - [`Ruleset::list`] prints `nft list ruleset` as nftables 1.0.x does: standard priority
//!   names (`dstnat - 10`), `policy accept;` on base chains, named set elements sorted as nft
//!   sorts them (the key's bytes as one little-endian number) and wrapped as it wraps them (two
//!   addresses, five ports or numbers per line, one concatenation per line), one-element
//!   anonymous sets unwrapped, `meta mark` operations in hexadecimal, timeouts as `3h`.
//! - Rules run on packets (`run`): the hook pipeline ([`crate::hook`]) calls each base
//!   chain at its priority among the iptables tables, and nat chains from the NAT core.
//!   Verdict maps are looked up by hash, so a packet's cost does not grow with the number of
//!   Services; `numgen random mod N` is a decision point the flow explorer enumerates
//!   (as `-m statistic` is); elements `update @set` adds live in each namespace's
//!   [`NftState`] with their timeouts.

mod expr;
mod parse;
mod run;

use std::fmt::{self, Write};

pub use parse::NftError;
pub(crate) use run::{Lookups, Run, run_chain};
pub use run::{NftHit, NftState};

/// An address family of nf_tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `ip`: IPv4.
    Ip,
    /// `ip6`.
    Ip6,
    /// `inet`: both.
    Inet,
}

impl Family {
    fn parse(s: &str) -> Option<Family> {
        match s {
            "ip" => Some(Family::Ip),
            "ip6" => Some(Family::Ip6),
            "inet" => Some(Family::Inet),
            _ => None,
        }
    }

    /// As `nft` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }
}

/// A base chain's hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub kind: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: String,
    /// The priority, as a number.
    pub priority: i32,
    /// `accept` (the default) or `drop`.
    pub policy: String,
}

/// A rule: its statements as `nft list` prints them, its handle and comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The kernel's handle (numbered per table, from 1, in the order things were added).
    pub handle: u64,
    /// The statements, each printed in `nft list` form.
    pub stmts: Vec<String>,
    /// `comment "..."`.
    pub comment: Option<String>,
    /// What the statements mean, one per statement.
    pub(crate) ops: Vec<expr::Stmt>,
}

/// A chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// The hook, for a base chain.
    pub base: Option<BaseChain>,
    /// `comment "..."`.
    pub comment: Option<String>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// One element of a set or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The key's parts (one per concatenated type), as written.
    pub key: Vec<String>,
    /// `comment "..."`.
    pub comment: Option<String>,
    /// A map's value (`goto CHAIN`, `drop`, …).
    pub value: Option<String>,
    /// The key's parts as typed values.
    pub(crate) lits: expr::Lits,
}

/// A named set or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Its name.
    pub name: String,
    /// A map (`add map`) rather than a set.
    pub map: bool,
    /// The key's types (`ipv4_addr`, `inet_proto`, `inet_service`), concatenated.
    pub key: Vec<String>,
    /// A map's value type (`verdict`).
    pub data: Option<String>,
    /// `flags` (`interval`, `dynamic`, `timeout`, `constant`).
    pub flags: Vec<String>,
    /// `timeout`, in seconds.
    pub timeout: Option<u64>,
    /// `size`.
    pub size: Option<u32>,
    /// `comment "..."`.
    pub comment: Option<String>,
    /// The elements, in the order they were added (a deleted element's place taken by the
    /// last one).
    pub elements: Vec<Element>,
    /// Elements by key.
    pub(crate) keys: Derived<rustc_hash::FxHashMap<Vec<String>, usize>>,
}

/// Data derived from what it sits beside (an index), kept up to date with it: not compared.
#[derive(Clone, Debug, Default)]
pub(crate) struct Derived<T>(pub(crate) T);

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Derived<T>) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

impl Set {
    /// Adds `e`, or replaces the element with its key.
    pub(crate) fn insert(&mut self, e: Element) {
        match self.keys.0.get(&e.key) {
            Some(&i) => self.elements[i] = e,
            None => {
                self.keys.0.insert(e.key.clone(), self.elements.len());
                self.elements.push(e);
            }
        }
    }

    /// Removes the element with `key`; whether there was one.
    pub(crate) fn remove(&mut self, key: &[String]) -> bool {
        let Some(i) = self.keys.0.remove(key) else { return false };
        self.elements.swap_remove(i);
        if let Some(moved) = self.elements.get(i) {
            self.keys.0.insert(moved.key.clone(), i);
        }
        true
    }

    /// Removes every element.
    pub(crate) fn clear(&mut self) {
        self.elements.clear();
        self.keys.0.clear();
    }
}

/// A table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Its family.
    pub family: Family,
    /// Its name.
    pub name: String,
    /// `comment "..."`.
    pub comment: Option<String>,
    /// Sets and maps, in the order they were added.
    pub sets: Vec<Set>,
    /// Chains, in the order they were added.
    pub chains: Vec<Chain>,
    /// The last handle given.
    handles: u64,
    /// Chains and sets by name (their places in `chains` and `sets`).
    pub(crate) names: Derived<Names>,
    /// Set elements by key for the evaluator: rebuilt after each transaction.
    pub(crate) index: Lookups,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    pub(crate) chains: rustc_hash::FxHashMap<String, usize>,
    pub(crate) sets: rustc_hash::FxHashMap<String, usize>,
}

/// Every nf_tables table of a network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The tables, in the order they were added.
    pub tables: Vec<Table>,
    /// Per hook (in [`crate::table::Hook`] order), the base chains of `ip` and `inet` tables
    /// as the kernel calls them: by priority, then in the order they were added.
    hooks: Derived<[Vec<BaseRef>; 5]>,
}

/// A base chain on a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BaseRef {
    pub(crate) priority: i32,
    /// A `nat` chain: consulted by the NAT core, once per connection.
    pub(crate) nat: bool,
    pub(crate) table: usize,
    pub(crate) chain: usize,
}

impl Table {
    /// An empty table.
    fn new(family: Family, name: String, comment: Option<String>) -> Table {
        Table {
            family,
            name,
            comment,
            sets: Vec::new(),
            chains: Vec::new(),
            handles: 0,
            names: Derived::default(),
            index: Lookups::default(),
        }
    }

    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chain_at(name).map(|i| &self.chains[i])
    }

    /// The set or map named `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.set_at(name).map(|i| &self.sets[i])
    }

    fn chain_at(&self, name: &str) -> Option<usize> {
        self.names.0.chains.get(name).copied()
    }

    fn set_at(&self, name: &str) -> Option<usize> {
        self.names.0.sets.get(name).copied()
    }

    fn push_chain(&mut self, c: Chain) {
        self.names.0.chains.insert(c.name.clone(), self.chains.len());
        self.chains.push(c);
    }

    fn push_set(&mut self, s: Set) {
        self.names.0.sets.insert(s.name.clone(), self.sets.len());
        self.sets.push(s);
    }

    /// After chains or sets were removed: their places again.
    fn renumber(&mut self) {
        let n = &mut self.names.0;
        n.chains = self.chains.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        n.sets = self.sets.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    }
}

impl Ruleset {
    /// The table `family name`.
    pub fn table(&self, family: Family, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.family == family && t.name == name)
    }

    /// Applies `nft -f` input, all or nothing (nft runs a file as one transaction): on an
    /// error the ruleset is left as it was.
    pub fn apply(&mut self, text: &str) -> Result<(), NftError> {
        let mut next = self.clone();
        parse::apply(&mut next, text)?;
        next.reindex();
        *self = next;
        Ok(())
    }

    /// Whether there is no table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Rebuilds the lookups the evaluator uses.
    fn reindex(&mut self) {
        let mut hooks: [Vec<BaseRef>; 5] = Default::default();
        for (ti, t) in self.tables.iter_mut().enumerate() {
            Lookups::build(t);
            if t.family == Family::Ip6 {
                continue;
            }
            for (ci, c) in t.chains.iter().enumerate() {
                let Some(b) = &c.base else { continue };
                let Some(h) = hook_index(&b.hook) else { continue };
                hooks[h].push(BaseRef {
                    priority: b.priority,
                    nat: b.kind == "nat",
                    table: ti,
                    chain: ci,
                });
            }
        }
        for h in &mut hooks {
            h.sort_by_key(|b| b.priority);
        }
        self.hooks = Derived(hooks);
    }

    /// The base chains on `hook`, in the order the kernel calls them.
    pub(crate) fn on_hook(&self, hook: crate::table::Hook) -> &[BaseRef] {
        &self.hooks.0[hook as usize]
    }

    /// `nft list ruleset`.
    pub fn list(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let _ = t.write_list(&mut out);
        }
        out
    }
}

/// A hook's place in [`crate::table::Hook`] order.
fn hook_index(h: &str) -> Option<usize> {
    use crate::table::Hook;
    Some(match h {
        "prerouting" => Hook::PreRouting,
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        "output" => Hook::Output,
        "postrouting" => Hook::PostRouting,
        _ => return None,
    } as usize)
}

/// The standard priority names `nft` prints for a hook of the `ip`/`ip6`/`inet` families
/// (`std_prios` in nftables' `src/rule.c`): `raw` -300, `mangle` -150, `dstnat` -100 at
/// prerouting, `filter` 0, `security` 50, `srcnat` 100 at postrouting; a priority within 10
/// of one prints as an offset from it (`dstnat - 10`).
fn priority_name(hook: &str, prio: i32) -> String {
    let names: &[(&str, i32)] = match hook {
        "prerouting" => {
            &[("raw", -300), ("mangle", -150), ("dstnat", -100), ("filter", 0), ("security", 50)]
        }
        "postrouting" => {
            &[("raw", -300), ("mangle", -150), ("filter", 0), ("security", 50), ("srcnat", 100)]
        }
        _ => &[("raw", -300), ("mangle", -150), ("filter", 0), ("security", 50)],
    };
    for &(name, base) in names {
        let off = prio - base;
        match off {
            0 => return name.to_string(),
            1..=10 => return format!("{name} + {off}"),
            -10..=-1 => return format!("{name} - {}", -off),
            _ => {}
        }
    }
    prio.to_string()
}

/// A time as `nft` prints it: `3h`, `1d2h`, `90s` → `1m30s`.
fn time(secs: u64) -> String {
    let mut s = String::new();
    let (d, h, m, x) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    for (v, u) in [(d, "d"), (h, "h"), (m, "m"), (x, "s")] {
        if v > 0 {
            let _ = write!(s, "{v}{u}");
        }
    }
    if s.is_empty() { "0s".into() } else { s }
}

/// An element key part's bytes as the kernel stores it (each part in a 32-bit register).
fn key_bytes(ty: &str, v: &str) -> Vec<u8> {
    let mut b = match ty {
        "ipv4_addr" => v
            .split('/')
            .next()
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .map(|a| a.octets().to_vec())
            .unwrap_or_default(),
        "inet_proto" => vec![match v {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            "icmp" => 1,
            n => n.parse().unwrap_or(0),
        }],
        "inet_service" => v.parse::<u16>().unwrap_or(0).to_be_bytes().to_vec(),
        _ => v.as_bytes().to_vec(),
    };
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b
}

impl Set {
    /// The elements in the order `nft list` prints them: by the key's bytes read as one
    /// little-endian number (nftables sorts the elements it lists with `mpz_cmp` on values
    /// imported in host byte order; on x86-64, little-endian).
    fn sorted_elements(&self) -> Vec<&Element> {
        let mut v: Vec<(Vec<u8>, &Element)> = self
            .elements
            .iter()
            .map(|e| {
                let mut k: Vec<u8> = Vec::new();
                for (ty, part) in self.key.iter().zip(&e.key) {
                    k.extend(key_bytes(ty, part));
                }
                k.reverse();
                (k, e)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, e)| e).collect()
    }

    /// How many elements `nft` prints on a line (`calculate_delim` in nftables'
    /// `src/expression.c`): 2 addresses, 5 numbers, ports or protocols, else 1.
    fn per_line(&self) -> usize {
        if self.key.len() != 1 {
            return 1;
        }
        match self.key[0].as_str() {
            "ipv4_addr" | "ipv6_addr" | "ct_state" | "ct_status" | "pkttype" => 2,
            "inet_proto" | "inet_service" | "integer" | "mark" | "nf_proto" | "ifindex" => 5,
            _ => 1,
        }
    }
}

impl Element {
    fn write(&self, out: &mut String) {
        out.push_str(&self.key.join(" . "));
        if let Some(c) = &self.comment {
            let _ = write!(out, " comment \"{c}\"");
        }
        if let Some(v) = &self.value {
            let _ = write!(out, " : {v}");
        }
    }
}

impl Table {
    fn write_list(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "table {} {} {{", self.family.as_str(), self.name)?;
        if let Some(c) = &self.comment {
            writeln!(out, "\tcomment \"{c}\"")?;
        }
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push('\n');
            }
            first = false;
        };
        for s in &self.sets {
            sep(out);
            writeln!(out, "\t{} {} {{", if s.map { "map" } else { "set" }, s.name)?;
            let key = s.key.join(" . ");
            match &s.data {
                Some(d) => writeln!(out, "\t\ttype {key} : {d}")?,
                None => writeln!(out, "\t\ttype {key}")?,
            }
            let dynamic = s.flags.iter().any(|f| f == "dynamic");
            // Sets updated from the packet path get nft's default size.
            if let Some(size) = s.size.or(dynamic.then_some(65_535)) {
                writeln!(out, "\t\tsize {size}")?;
            }
            if !s.flags.is_empty() {
                writeln!(out, "\t\tflags {}", s.flags.join(","))?;
            }
            if let Some(t) = s.timeout {
                writeln!(out, "\t\ttimeout {}", time(t))?;
            }
            if let Some(c) = &s.comment {
                writeln!(out, "\t\tcomment \"{c}\"")?;
            }
            if !s.elements.is_empty() {
                out.push_str("\t\telements = { ");
                let per = s.per_line();
                for (i, e) in s.sorted_elements().into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(if i % per == 0 { ",\n\t\t\t     " } else { ", " });
                    }
                    e.write(out);
                }
                out.push_str(" }\n");
            }
            writeln!(out, "\t}}")?;
        }
        for c in &self.chains {
            sep(out);
            writeln!(out, "\tchain {} {{", c.name)?;
            if let Some(b) = &c.base {
                writeln!(
                    out,
                    "\t\ttype {} hook {} priority {}; policy {};",
                    b.kind,
                    b.hook,
                    priority_name(&b.hook, b.priority),
                    b.policy
                )?;
            }
            if let Some(cm) = &c.comment {
                writeln!(out, "\t\tcomment \"{cm}\"")?;
            }
            for r in &c.rules {
                out.push_str("\t\t");
                out.push_str(&r.stmts.join(" "));
                if let Some(cm) = &r.comment {
                    let _ = write!(out, " comment \"{cm}\"");
                }
                out.push('\n');
            }
            writeln!(out, "\t}}")?;
        }
        writeln!(out, "}}")
    }
}

#[cfg(test)]
mod tests;
