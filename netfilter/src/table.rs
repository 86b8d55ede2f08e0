//! The iptables tables of one network namespace (raw, mangle, nat, filter), their built-in
//! and user chains, and the two text forms: `iptables-restore` input in and out, and what
//! `iptables-save` prints after the kernel has the rules (the "kernel form").
//!
//! Restore semantics follow `iptables-restore`: without `--noflush` each table named in the
//! input is flushed and its user chains deleted first; a `:CHAIN` line creates the chain or,
//! when it exists, flushes it (kube-proxy's partial syncs rely on this); `-X` deletes a chain.
//! The whole input is checked before anything changes: a bad line leaves the tables as they
//! were.

use std::fmt::{self, Write};

use indexmap::IndexMap;

use crate::rule::{ChainName, Rule, RuleError, Target};

/// A netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Hook {
    /// NF_INET_PRE_ROUTING.
    PreRouting,
    /// NF_INET_LOCAL_IN.
    Input,
    /// NF_INET_FORWARD.
    Forward,
    /// NF_INET_LOCAL_OUT.
    Output,
    /// NF_INET_POST_ROUTING.
    PostRouting,
}

impl Hook {
    /// The built-in chain name for this hook.
    pub fn chain_name(self) -> &'static str {
        match self {
            Hook::PreRouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::PostRouting => "POSTROUTING",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.chain_name())
    }
}

/// An iptables table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum TableName {
    /// raw (priority -300).
    Raw,
    /// mangle (-150).
    Mangle,
    /// nat (-100 for DNAT, 100 for SNAT).
    Nat,
    /// filter (0).
    Filter,
}

impl TableName {
    /// All tables, in index order.
    pub const ALL: [TableName; 4] =
        [TableName::Raw, TableName::Mangle, TableName::Nat, TableName::Filter];

    /// The order iptables-nft's `iptables-save` prints tables in.
    pub const SAVE_ORDER: [TableName; 4] =
        [TableName::Mangle, TableName::Raw, TableName::Filter, TableName::Nat];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            TableName::Raw => "raw",
            TableName::Mangle => "mangle",
            TableName::Nat => "nat",
            TableName::Filter => "filter",
        }
    }

    fn parse(s: &str) -> Option<TableName> {
        TableName::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The built-in chains, in the order `iptables-save` prints them.
    pub fn builtin_chains(self) -> &'static [Hook] {
        match self {
            TableName::Raw => &[Hook::PreRouting, Hook::Output],
            TableName::Mangle => {
                &[Hook::PreRouting, Hook::Input, Hook::Forward, Hook::Output, Hook::PostRouting]
            }
            TableName::Nat => &[Hook::PreRouting, Hook::Input, Hook::Output, Hook::PostRouting],
            TableName::Filter => &[Hook::Input, Hook::Forward, Hook::Output],
        }
    }

    /// Where the built-in chain of `hook` sits among [`TableName::builtin_chains`] (which is
    /// also its chain number: built-in chains come first), or `None` if the table has none.
    #[inline]
    pub fn builtin_position(self, hook: Hook) -> Option<usize> {
        use Hook::*;
        match (self, hook) {
            (TableName::Raw, PreRouting) => Some(0),
            (TableName::Raw, Output) => Some(1),
            (TableName::Mangle, h) => Some(h as usize),
            (TableName::Nat, PreRouting) => Some(0),
            (TableName::Nat, Input) => Some(1),
            (TableName::Nat, Output) => Some(2),
            (TableName::Nat, PostRouting) => Some(3),
            (TableName::Filter, Input) => Some(0),
            (TableName::Filter, Forward) => Some(1),
            (TableName::Filter, Output) => Some(2),
            _ => None,
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A built-in chain's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Policy {
    /// ACCEPT.
    Accept,
    /// DROP.
    Drop,
}

/// Counts kept apart from the rules, which a counted save adds to the rules' own: a
/// namespace's packets through shared rules ([`crate::counters::Counters`]).
pub trait ExtraCounts {
    /// The count of the rule at position `pos` of `table` (see [`Table::link`]).
    fn rule(&self, table: &Table, pos: usize) -> (u64, u64);
    /// The count of the policy of the built-in chain at index `chain` of `table`.
    fn policy(&self, table: &Table, chain: usize) -> (u64, u64);
}

/// A chain: its rules, and for built-in chains a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// `None` for user chains.
    pub policy: Option<Policy>,
    /// Policy counters (built-in chains).
    pub counters: (u64, u64),
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// Whether the restore input declared this chain (`:NAME`), so the restore form repeats it.
    pub declared: bool,
    /// The number of this chain's first rule in its table (filled by [`Table::link`]): a
    /// namespace counts its packets by these numbers (see [`crate::counters`]).
    pub(crate) jumps_at: u32,
    /// Where this chain's head entry sits in its table's blob (filled by [`Table::link`]).
    pub(crate) head: u32,
    /// Dispatch index for long chains (see [`crate::eval`]), boxed: few chains have one, and
    /// a table of a hundred thousand short chains stays small.
    pub(crate) index: Option<Box<crate::compile::ChainIndex>>,
}

impl Chain {
    fn new(policy: Option<Policy>) -> Chain {
        Chain {
            policy,
            counters: (0, 0),
            rules: Vec::new(),
            declared: false,
            jumps_at: 0,
            head: 0,
            index: None,
        }
    }
}

/// A chain name as iptables takes it: 1 to 28 characters (`XT_EXTENSION_MAXNAMELEN` less
/// the terminator).
fn check_chain_name(name: &str, line: usize, col: usize) -> Result<ChainName, ParseError> {
    ChainName::new(name).map_err(|e| ParseError { line, col, msg: e.to_string() })
}

/// From this many chains on, [`Table::link`] resolves jumps with two threads.
const PARALLEL_LINK_CHAINS: usize = 8192;
/// Into how many pieces a large table's chains are cut for the two threads that link them.
const LINK_PIECES: usize = 16;

/// One table of one namespace.
#[derive(Clone, Debug)]
pub struct Table {
    /// Which table.
    pub name: TableName,
    /// Chains by name: built-in chains first, then user chains in creation order.
    pub chains: IndexMap<ChainName, Chain, rustc_hash::FxBuildHasher>,
    /// For every rule, in table order, what [`Table::link`] resolved its target to: the
    /// index of the chain it jumps or goes to, [`NAT_TARGET`] for a NAT target, or
    /// [`crate::compile::NO_JUMP`].
    targets: Vec<u32>,
    /// The chains in blob order (see [`Table::blob`]), as [`Table::link`] chose it.
    order: Vec<u32>,
    /// The table as a walk reads it ([`Table::blob`]), laid out on first use.
    blob: Blob,
    /// How many rules [`Table::link`] numbered.
    rules: usize,
    /// The generation of the numbering of the rules: [`Table::link`] steps it each time it
    /// renumbers them (see [`crate::counters`]); a clone keeps it.
    layout: u64,
}

/// Tables are equal when their chains and rules are (however their rules were numbered).
impl PartialEq for Table {
    fn eq(&self, other: &Table) -> bool {
        self.name == other.name && self.chains == other.chains && self.targets == other.targets
    }
}

impl Table {
    /// A table with its built-in chains (policy ACCEPT) and no rules.
    pub fn new(name: TableName) -> Table {
        let mut chains = IndexMap::default();
        for h in name.builtin_chains() {
            let name = ChainName::new(h.chain_name()).expect("built-in chain names fit");
            chains.insert(name, Chain::new(Some(Policy::Accept)));
        }
        let mut t = Table {
            name,
            chains,
            targets: Vec::new(),
            order: Vec::new(),
            blob: Blob::default(),
            rules: 0,
            layout: 0,
        };
        t.link().expect("built-in chains have no rules to link");
        t
    }

    /// The numbering of the rules [`Table::link`] last made (see [`crate::counters`]).
    pub(crate) fn layout(&self) -> u64 {
        self.layout
    }

    /// How many rules [`Table::link`] numbered.
    pub(crate) fn rule_count(&self) -> usize {
        self.rules
    }

    /// Resolves jump targets (failing, and changing nothing, when a rule jumps to a chain
    /// that does not exist), numbers the rules, places the chains in the table's blob (the
    /// array a walk reads, laid out when a packet first needs it: see [`crate::eval`]) and
    /// rebuilds dispatch indices. Called after every change.
    ///
    /// The blob holds the chains in depth-first order from the built-in chains, each
    /// chain's targets in rule order: a kube-proxy Service's `KUBE-SVC-` chain is followed
    /// by its `KUBE-SEP-` chains, so a new connection's walk through them reads adjacent
    /// cache lines, and so does the count of its rules (numbered in the same order).
    pub fn link(&mut self) -> Result<(), String> {
        self.link_with(self.chains.len() >= PARALLEL_LINK_CHAINS)
    }

    /// [`Table::link`], with two threads (where a second one can start) or one.
    fn link_with(&mut self, two_threads: bool) -> Result<(), String> {
        use crate::compile::{ChainIndex, NO_JUMP};
        let n = self.chains.len();
        let starts = self.rule_starts();
        let rules = starts[n];
        // Two threads take pieces of the chains in turn: the chains that jump most (a
        // kube-proxy payload's KUBE-SVC- chains sort last) are not all one thread's.
        let job = |k: usize| self.jump_targets(k * n / LINK_PIECES..(k + 1) * n / LINK_PIECES);
        let done = if two_threads {
            in_two_threads(LINK_PIECES, job)
        } else {
            vec![self.jump_targets(0..n)]
        };
        // In table order, so an error names the first chain that jumps nowhere.
        let (mut targets, mut sizes) = (Vec::with_capacity(rules), Vec::with_capacity(n));
        for piece in done {
            let (t, s) = piece?;
            targets.extend(t);
            sizes.extend(s);
        }
        let order = depth_first(n, &starts, &targets);
        let mut place = vec![(0u32, 0u32); n];
        let (mut head, mut at) = (0usize, 0usize);
        for &ci in &order {
            place[ci] = (head as u32, at as u32);
            head += sizes[ci] as usize;
            at += starts[ci + 1] - starts[ci];
        }
        if head >= NO_JUMP as usize {
            return Err(format!("table {} has more rules than fit in it", self.name));
        }
        let heads: Vec<u32> = place.iter().map(|&(head, _)| head).collect();
        for (ci, (chain, &(head, at))) in self.chains.values_mut().zip(&place).enumerate() {
            chain.head = head;
            chain.jumps_at = at;
            chain.index = None;
            if ChainIndex::wanted(chain.rules.len()) {
                let own = &targets[starts[ci]..starts[ci + 1]];
                // How many NAT targets' data come before each rule's own.
                let nat_before: Vec<u32> = own
                    .iter()
                    .scan(0u32, |n, &t| {
                        let before = *n;
                        *n += u32::from(t == NAT_TARGET);
                        Some(before)
                    })
                    .collect();
                let entry = |i: usize| rule_entry(chain, i, own[i], &heads, nat_before[i]);
                chain.index = ChainIndex::build(&chain.rules, entry);
            }
        }
        self.targets = targets;
        self.order = order.into_iter().map(|ci| ci as u32).collect();
        self.blob = Blob::default();
        self.rules = rules;
        self.layout = self.layout.wrapping_add(1);
        Ok(())
    }

    /// The table as a walk reads it, laid out as the kernel lays out an x_tables table
    /// (`xt_table_info.entries`): chain after chain in the order [`Table::link`] chose, each
    /// a head entry, one entry per rule with the rule's quick checks (see [`crate::eval`]),
    /// a jump's target held as the blob position of the target chain's head, then the data
    /// of the chain's NAT targets. Laid out when a packet first walks the table (a node's
    /// sync does not pay for it; the first packet after a sync of 10,000 Services does, in
    /// time and in memory: about a third of what the rules take, shared with them by every
    /// namespace given the same rules).
    pub(crate) fn blob(&self) -> &[crate::compile::Quick] {
        self.blob.0.get_or_init(|| self.lay_out())
    }

    /// Where each chain's rules start, rule after rule in table order (the order of
    /// [`Table`]'s resolved targets), and after the last chain the number of rules.
    fn rule_starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.chains.len() + 1);
        starts.push(0);
        for c in self.chains.values() {
            starts.push(starts[starts.len() - 1] + c.rules.len());
        }
        starts
    }

    /// Lays out [`Table::blob`].
    fn lay_out(&self) -> Vec<crate::compile::Quick> {
        use crate::compile::{ChainIndex, Quick};
        let n = self.chains.len();
        let heads: Vec<u32> = self.chains.values().map(|c| c.head).collect();
        let starts = self.rule_starts();
        let two_threads = n >= PARALLEL_LINK_CHAINS;
        let pieces = if two_threads { LINK_PIECES } else { 1 };
        let job = |k: usize| {
            let mut out = Vec::new();
            let order = &self.order[k * n / pieces..(k + 1) * n / pieces];
            for &ci in order {
                let ci = ci as usize;
                let Some((_, chain)) = self.chains.get_index(ci) else { continue };
                let len = chain.rules.len();
                out.push(Quick::head(
                    ci as u32,
                    chain.jumps_at,
                    len as u32,
                    ChainIndex::wanted(len),
                ));
                let targets = self.targets.get(starts[ci]..).unwrap_or_default();
                push_chain_entries(&mut out, chain, targets, &heads);
            }
            out
        };
        let done = if two_threads { in_two_threads(pieces, job) } else { vec![job(0)] };
        let mut blob = Vec::with_capacity(done.iter().map(Vec::len).sum());
        for piece in done {
            blob.extend(piece);
        }
        blob
    }

    /// What each rule of chains `range` resolves to, rule after rule: the index of the
    /// chain it jumps or goes to, [`NAT_TARGET`], or [`crate::compile::NO_JUMP`]; and how many
    /// blob entries each chain takes (its head, its rules, its NAT targets' data).
    fn jump_targets(&self, range: std::ops::Range<usize>) -> Result<(Vec<u32>, Vec<u32>), String> {
        let rules = self.chains[range.clone()].values().map(|c| c.rules.len()).sum();
        let mut all = Vec::with_capacity(rules);
        let mut sizes = Vec::with_capacity(range.len());
        // The target looked up last is reused without hashing it again (half a kube-proxy
        // payload jumps to KUBE-MARK-MASQ).
        let mut last: Option<(ChainName, u32)> = None;
        for (cname, chain) in &self.chains[range] {
            for r in &chain.rules {
                let to = match &r.target {
                    Target::Jump(t) | Target::Goto(t) => match last {
                        Some((n, i)) if n == *t => i,
                        _ => {
                            let i = self.chains.get_index_of(t).ok_or_else(|| {
                                format!(
                                    "chain {cname} jumps to '{t}', which is neither a target nor a chain in table {}",
                                    self.name
                                )
                            })? as u32;
                            last = Some((*t, i));
                            i
                        }
                    },
                    t if crate::compile::Quick::nat_data(t).is_some() => NAT_TARGET,
                    _ => crate::compile::NO_JUMP,
                };
                all.push(to);
            }
            let own = &all[all.len() - chain.rules.len()..];
            let data = own.iter().filter(|&&t| t == NAT_TARGET).count();
            sizes.push((1 + own.len() + data) as u32);
        }
        Ok((all, sizes))
    }

    /// Whether this chain is a built-in one.
    pub fn is_builtin(&self, chain: &str) -> bool {
        self.name.builtin_chains().iter().any(|h| h.chain_name() == chain)
    }
}

/// Appends the blob entries of `chain` (see [`Table::blob`]) to `out`: one per rule, then the
/// data of its NAT targets, in rule order. `targets` holds what [`Table::link`] resolved the
/// chain's rules to, `heads` where each chain's head sits in the blob.
fn push_chain_entries(
    out: &mut Vec<crate::compile::Quick>,
    chain: &Chain,
    targets: &[u32],
    heads: &[u32],
) {
    let mut nat_before = 0;
    for (i, &t) in targets.iter().take(chain.rules.len()).enumerate() {
        out.push(rule_entry(chain, i, t, heads, nat_before));
        nat_before += u32::from(t == NAT_TARGET);
    }
    // `Table::link` sized the chain by its NAT_TARGET marks.
    for (r, &t) in chain.rules.iter().zip(targets) {
        if t == NAT_TARGET {
            out.extend(crate::compile::Quick::nat_data(&r.target));
        }
    }
}

/// The blob entry of rule `i` of `chain`, which [`Table::link`] resolved to `t`: a jump's
/// target is the head of the chain it reaches (`heads`), a NAT target's the position of its
/// data after the chain's rules, behind the data of `nat_before` earlier NAT targets.
fn rule_entry(
    chain: &Chain,
    i: usize,
    t: u32,
    heads: &[u32],
    nat_before: u32,
) -> crate::compile::Quick {
    use crate::compile::{NO_JUMP, Quick, states_of};
    let r = &chain.rules[i];
    let to = if t == NAT_TARGET {
        chain.head + chain.rules.len() as u32 + nat_before + 1
    } else {
        heads.get(t as usize).copied().unwrap_or(NO_JUMP)
    };
    Quick::of(r, to, states_of(r))
}

/// `work(0)` to `work(jobs - 1)` on two threads (one where no second thread can start, as
/// in WebAssembly), each taking the next job when it is done with its last, so neither waits
/// long on the other; the results in job order.
#[doc(hidden)]
pub fn in_two_threads<T: Send>(jobs: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take_jobs = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if k >= jobs {
                break;
            }
            done.push((k, work(k)));
        }
        done
    };
    let mut done = std::thread::scope(|scope| {
        let other = std::thread::Builder::new().spawn_scoped(scope, take_jobs);
        let mut done = take_jobs();
        if let Ok(h) = other {
            done.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        done
    });
    done.sort_by_key(|(k, _)| *k);
    done.into_iter().map(|(_, t)| t).collect()
}

/// In [`Table`]'s resolved targets: a NAT target, whose data the blob keeps after its
/// chain's rules.
const NAT_TARGET: u32 = u32::MAX - 1;

/// A table's blob (see [`Table::blob`]): laid out on first use, kept by a clone (the rules
/// it follows are the same), not compared (it follows from the rules) and not printed.
#[derive(Clone, Default)]
struct Blob(std::sync::OnceLock<Vec<crate::compile::Quick>>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let laid_out = self.0.get().map_or(0, Vec::len);
        write!(f, "Blob({laid_out} entries laid out)")
    }
}

/// The `n` chains of a table in depth-first order from the first (the built-in chains),
/// each chain's targets in rule order; a chain no walk can reach comes where its table
/// order puts it among the roots. `starts` holds where each chain's rules start in
/// `targets`, which holds the chain each rule jumps or goes to.
fn depth_first(n: usize, starts: &[usize], targets: &[u32]) -> Vec<usize> {
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let mut stack = Vec::new();
    for root in 0..n {
        stack.push(root as u32);
        while let Some(ci) = stack.pop() {
            let ci = ci as usize;
            if std::mem::replace(&mut seen[ci], true) {
                continue;
            }
            order.push(ci);
            // Pushed last to first, so the first rule's target is walked first.
            let to = targets[starts[ci]..starts[ci + 1]].iter().rev();
            stack.extend(to.filter(|&&t| (t as usize) < n && !seen[t as usize]));
        }
    }
    order
}

/// All tables of one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Ruleset {
    tables: [Table; 4],
    /// Tables in the order restore input first named them (the restore form keeps it).
    order: Vec<TableName>,
}

impl Default for Ruleset {
    fn default() -> Self {
        Ruleset { tables: TableName::ALL.map(Table::new), order: Vec::new() }
    }
}

/// Why restore input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What was wrong and what was expected.
    pub msg: String,
}

impl Ruleset {
    /// One table.
    pub fn table(&self, t: TableName) -> &Table {
        &self.tables[t as usize]
    }

    /// Whether a table is as a fresh namespace has it: built-in chains only, no rules,
    /// ACCEPT policies.
    pub fn is_pristine(&self, t: TableName) -> bool {
        let table = self.table(t);
        table.chains.len() == t.builtin_chains().len()
            && table
                .chains
                .values()
                .all(|c| c.rules.is_empty() && c.policy == Some(Policy::Accept) && !c.declared)
    }

    /// One table, mutably. Call [`Table::link`] after changing it.
    pub fn table_mut(&mut self, t: TableName) -> &mut Table {
        &mut self.tables[t as usize]
    }

    /// Puts `table` in place of table `t`, a generation after the one it replaces, so that
    /// counters kept for the old one never count for the new one's rules.
    pub fn set_table(&mut self, t: TableName, mut table: Table) {
        let old = &self.tables[t as usize];
        table.layout = table.layout.max(old.layout).wrapping_add(1);
        debug_assert_eq!(table.name, t, "a table goes in its own slot");
        self.tables[t as usize] = table;
    }

    /// Applies `iptables-restore` input. With `noflush` false, every table the input names is
    /// flushed first. The input is validated in full before anything changes.
    pub fn restore(&mut self, text: &str, noflush: bool) -> Result<(), ParseError> {
        // Tables the input names are built aside (fresh when flushing, a copy with
        // `noflush`) and swapped in only when all of the input applied.
        let mut staged: [Option<Table>; 4] = [None, None, None, None];
        let mut order = self.order.clone();
        self.apply(text, noflush, &mut staged, &mut order)?;
        for (i, t) in staged.into_iter().enumerate() {
            if let Some(t) = t {
                self.tables[i] = t;
            }
        }
        self.order = order;
        Ok(())
    }

    /// Replaces table `t` with chains built in code, as `iptables-restore` without
    /// `--noflush` replaces a table its input names: the built-in chains start empty with
    /// policy ACCEPT, every chain listed is declared (`:NAME - [0:0]`, or `:NAME ACCEPT
    /// [0:0]` for a built-in one) in the order given, and its rules are appended in order.
    /// Nothing changes when a chain name is invalid or a rule jumps
    /// to a chain that does not exist; the error says which.
    pub fn load(
        &mut self,
        t: TableName,
        chains: impl IntoIterator<Item = (ChainName, Vec<Rule>)>,
    ) -> Result<(), String> {
        let mut table = Table::new(t);
        let chains = chains.into_iter();
        table.chains.reserve(chains.size_hint().0);
        for (name, rules) in chains {
            let chain = table.chains.entry(name).or_insert_with(|| Chain::new(None));
            chain.declared = true;
            chain.rules = rules;
        }
        table.link()?;
        self.tables[t as usize] = table;
        if !self.order.contains(&t) {
            self.order.push(t);
        }
        Ok(())
    }

    fn apply(
        &self,
        text: &str,
        noflush: bool,
        staged: &mut [Option<Table>; 4],
        order: &mut Vec<TableName>,
    ) -> Result<(), ParseError> {
        let mut current: Option<(TableName, usize)> = None;
        let err = |line: usize, col: usize, msg: String| ParseError { line, col, msg };
        for (i, raw) in text.lines().enumerate() {
            let ln = i + 1;
            let line = raw.trim_end();
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len() + 1;
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('*') {
                if let Some((t, l)) = current {
                    return Err(err(
                        ln,
                        indent,
                        format!("table {} opened at line {l} has no COMMIT before this *{name}", t),
                    ));
                }
                let t = TableName::parse(name.trim()).ok_or_else(|| {
                    err(
                        ln,
                        indent + 1,
                        format!("unknown table '{name}' (expected raw, mangle, nat or filter)"),
                    )
                })?;
                let slot = &mut staged[t as usize];
                if !noflush {
                    *slot = Some(Table::new(t));
                } else if slot.is_none() {
                    *slot = Some(self.table(t).clone());
                }
                if !order.contains(&t) {
                    order.push(t);
                }
                current = Some((t, ln));
                continue;
            }
            let Some((t, _)) = current else {
                return Err(err(
                    ln,
                    indent,
                    "rule or chain outside a table: start the block with '*filter', '*nat', ..."
                        .into(),
                ));
            };
            let table = staged[t as usize].as_mut().expect("staged at the table's header");
            if trimmed == "COMMIT" {
                table.link().map_err(|m| err(ln, indent, m))?;
                current = None;
                continue;
            }
            if let Some(decl) = trimmed.strip_prefix(':') {
                Self::declare(table, decl, ln, indent)?;
                continue;
            }
            Self::command(table, trimmed, ln, indent)?;
        }
        if let Some((t, l)) = current {
            return Err(err(
                text.lines().count().max(1),
                1,
                format!("table {t} opened at line {l} is missing its COMMIT line"),
            ));
        }
        Ok(())
    }

    fn declare(table: &mut Table, decl: &str, ln: usize, col: usize) -> Result<(), ParseError> {
        let mut parts = decl.split_whitespace();
        let name = parts.next().unwrap_or("");
        let key = check_chain_name(name, ln, col + 1)?;
        let policy = parts.next().unwrap_or("-");
        let builtin = table.is_builtin(name);
        let policy = match (policy, builtin) {
            ("-", false) => None,
            ("ACCEPT", true) => Some(Policy::Accept),
            ("DROP", true) => Some(Policy::Drop),
            (p, true) => {
                return Err(ParseError {
                    line: ln,
                    col,
                    msg: format!("built-in chain {name} needs policy ACCEPT or DROP, not '{p}'"),
                });
            }
            (p, false) => {
                return Err(ParseError {
                    line: ln,
                    col,
                    msg: format!("user chain {name} takes policy '-', not '{p}'"),
                });
            }
        };
        let chain = table.chains.entry(key).or_insert_with(|| Chain::new(policy));
        chain.rules.clear();
        chain.policy = policy;
        chain.declared = true;
        Ok(())
    }

    fn command(table: &mut Table, line: &str, ln: usize, col: usize) -> Result<(), ParseError> {
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest_trim = rest.trim_start();
        let rest_col = col + line.len() - rest_trim.len();
        let (chain, args) = rest_trim.split_once(char::is_whitespace).unwrap_or((rest_trim, ""));
        let args_trim = args.trim_start();
        let args_col = rest_col + rest_trim.len() - args_trim.len();
        let t = table.name;
        let missing =
            |what: &str| ParseError { line: ln, col: rest_col, msg: format!("{cmd} needs {what}") };
        let no_chain = |c: &str| ParseError {
            line: ln,
            col: rest_col,
            msg: format!(
                "chain '{c}' does not exist in table {t}: declare it first with ':{c} - [0:0]'"
            ),
        };
        match cmd {
            "-A" | "--append" | "-I" | "--insert" => {
                if chain.is_empty() {
                    return Err(missing("a chain name"));
                }
                let (pos, args, args_col) = if cmd.starts_with("-I") || cmd == "--insert" {
                    match args_trim.split_once(char::is_whitespace) {
                        Some((n, r)) if n.parse::<usize>().is_ok() => {
                            let r2 = r.trim_start();
                            (
                                Some(n.parse::<usize>().unwrap_or(1)),
                                r2,
                                args_col + args_trim.len() - r2.len(),
                            )
                        }
                        _ => (Some(1), args_trim, args_col),
                    }
                } else {
                    (None, args_trim, args_col)
                };
                let rule = Rule::parse(args).map_err(|e: RuleError| ParseError {
                    line: ln,
                    col: args_col + e.col - 1,
                    msg: e.msg,
                })?;
                let c = table.chains.get_mut(chain).ok_or_else(|| no_chain(chain))?;
                match pos {
                    None => c.rules.push(rule),
                    Some(p) => {
                        let at = p.saturating_sub(1).min(c.rules.len());
                        c.rules.insert(at, rule);
                    }
                }
            }
            "-N" | "--new-chain" => {
                if chain.is_empty() {
                    return Err(missing("a chain name"));
                }
                let key = check_chain_name(chain, ln, rest_col)?;
                if !args_trim.is_empty() {
                    return Err(ParseError {
                        line: ln,
                        col: args_col,
                        msg: format!("-N takes only a chain name, not '{args_trim}'"),
                    });
                }
                table.chains.entry(key).or_insert_with(|| Chain::new(None));
            }
            "-F" | "--flush" => {
                if chain.is_empty() {
                    for c in table.chains.values_mut() {
                        c.rules.clear();
                    }
                } else {
                    table.chains.get_mut(chain).ok_or_else(|| no_chain(chain))?.rules.clear();
                }
            }
            "-X" | "--delete-chain" => {
                if chain.is_empty() {
                    table.chains.retain(|k, _| {
                        t.builtin_chains().iter().any(|h| h.chain_name() == k.as_str())
                    });
                } else {
                    if table.is_builtin(chain) {
                        return Err(ParseError {
                            line: ln,
                            col: rest_col,
                            msg: format!("cannot delete built-in chain {chain}"),
                        });
                    }
                    table.chains.shift_remove(chain).ok_or_else(|| no_chain(chain))?;
                }
            }
            other => {
                return Err(ParseError {
                    line: ln,
                    col,
                    msg: format!(
                        "unsupported command '{other}' (restore input takes -A, -I, -N, -F and -X)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The restore form: what was written, in chain order, as `iptables-restore` input.
    /// Only tables that have declared chains or rules are printed.
    pub fn save_restore_form(&self) -> String {
        let mut out = String::new();
        let mut order = self.order.clone();
        order.extend(TableName::SAVE_ORDER.iter().filter(|t| !self.order.contains(t)));
        for t in order.iter().map(|t| self.table(*t)) {
            let user_or_declared: Vec<(&ChainName, &Chain)> = t
                .chains
                .iter()
                .filter(|(n, c)| c.declared || !t.is_builtin(n) || !c.rules.is_empty())
                .collect();
            if user_or_declared.is_empty() {
                continue;
            }
            let _ = writeln!(out, "*{}", t.name);
            for (name, c) in &user_or_declared {
                let policy = match c.policy {
                    Some(Policy::Accept) => "ACCEPT",
                    Some(Policy::Drop) => "DROP",
                    None => "-",
                };
                let _ = writeln!(out, ":{name} {policy} [{}:{}]", c.counters.0, c.counters.1);
            }
            for (name, c) in &user_or_declared {
                for r in &c.rules {
                    let _ = writeln!(out, "-A {name} {}", r.restore_text());
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The kernel form, as `iptables-save` (v1.8, nf_tables) prints it, without its dated
    /// comment lines: built-in chains with policy and counters, user chains sorted by name,
    /// then the rules chain by chain in that same order. Tables without any user chain or rule
    /// are printed too once they exist in the kernel; `tables` picks which.
    pub fn save_kernel_form(&self, tables: &[TableName]) -> String {
        self.save_kernel_form_with(tables, false)
    }

    /// [`Ruleset::save_kernel_form`], with each rule's packet and byte counters in front of
    /// it when `counters` is set, as `iptables-save -c` prints them (`[5:300] -A ...`).
    pub fn save_kernel_form_with(&self, tables: &[TableName], counters: bool) -> String {
        self.save_kernel_form_counted(tables, counters, None)
    }

    /// [`Ruleset::save_kernel_form_with`], with a namespace's own counts (`extra`, see
    /// [`crate::counters`]) added to the rules' and policies' counters.
    pub fn save_kernel_form_counted(
        &self,
        tables: &[TableName],
        counters: bool,
        extra: Option<&dyn ExtraCounts>,
    ) -> String {
        let add = |a: (u64, u64), b: (u64, u64)| (a.0 + b.0, a.1 + b.1);
        let mut out = String::new();
        for t in tables.iter().map(|t| self.table(*t)) {
            let _ = writeln!(out, "*{}", t.name);
            let mut order: Vec<&ChainName> = Vec::new();
            for h in t.name.builtin_chains() {
                let name = h.chain_name();
                if let Some((ci, k, c)) = t.chains.get_full(name) {
                    let p = if c.policy == Some(Policy::Drop) { "DROP" } else { "ACCEPT" };
                    let n = add(c.counters, extra.map_or((0, 0), |e| e.policy(t, ci)));
                    let _ = writeln!(out, ":{name} {p} [{}:{}]", n.0, n.1);
                    order.push(k);
                }
            }
            let mut user: Vec<&ChainName> = t.chains.keys().filter(|k| !t.is_builtin(k)).collect();
            user.sort();
            for name in &user {
                let _ = writeln!(out, ":{name} - [0:0]");
            }
            order.extend(user);
            for name in order {
                let chain = &t.chains[name.as_str()];
                for (i, r) in chain.rules.iter().enumerate() {
                    if counters {
                        let at = chain.jumps_at as usize + i;
                        let n = add(r.counters, extra.map_or((0, 0), |e| e.rule(t, at)));
                        let _ = write!(out, "[{}:{}] ", n.0, n.1);
                    }
                    let k = r.kernel_form();
                    if k.is_empty() {
                        let _ = writeln!(out, "-A {name}");
                    } else {
                        let _ = writeln!(out, "-A {name} {k}");
                    }
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The tables that have anything beyond empty built-in chains with ACCEPT policy.
    pub fn tables_in_use(&self) -> Vec<TableName> {
        self.tables
            .iter()
            .filter(|t| {
                t.chains.iter().any(|(n, c)| {
                    !t.is_builtin(n) || !c.rules.is_empty() || c.policy == Some(Policy::Drop)
                })
            })
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .into_iter()
            .fold(Vec::new(), |mut v, t| {
                v.push(t);
                v.sort_by_key(|t| TableName::SAVE_ORDER.iter().position(|x| x == t));
                v
            })
    }
}

/// How `actual` differs from `expected`, table by table and chain by chain, in kernel form:
/// `- ` lines are in `expected` only, `+ ` lines in `actual` only (rules compared as
/// multisets, so a moved rule is not reported twice); a chain with the same rules in another
/// order gets a `~ ` line. Empty when they agree.
pub fn drift(expected: &Ruleset, actual: &Ruleset) -> String {
    let mut out = String::new();
    for t in TableName::SAVE_ORDER {
        let (e, a) = (expected.table(t), actual.table(t));
        let mut lines: Vec<String> = Vec::new();
        let mut names: Vec<&ChainName> = e.chains.keys().collect();
        names.extend(a.chains.keys().filter(|k| !e.chains.contains_key(*k)));
        for name in names {
            let rules = |c: Option<&Chain>| -> Vec<String> {
                c.map(|c| {
                    c.rules.iter().map(|r| format!("-A {name} {}", r.kernel_form())).collect()
                })
                .unwrap_or_default()
            };
            let (ec, ac) = (e.chains.get(name), a.chains.get(name));
            let policy = |c: &Chain| match c.policy {
                Some(Policy::Accept) => "ACCEPT",
                Some(Policy::Drop) => "DROP",
                None => "-",
            };
            match (ec, ac) {
                (Some(x), None) => lines.push(format!("- :{name} {}", policy(x))),
                (None, Some(x)) => lines.push(format!("+ :{name} {}", policy(x))),
                (Some(x), Some(y)) if x.policy != y.policy => {
                    lines.push(format!("- :{name} {}", policy(x)));
                    lines.push(format!("+ :{name} {}", policy(y)));
                }
                _ => {}
            }
            let (er, ar) = (rules(ec), rules(ac));
            let mut left: Vec<&String> = ar.iter().collect();
            let mut missing = Vec::new();
            for r in &er {
                match left.iter().position(|x| *x == r) {
                    Some(i) => {
                        left.remove(i);
                    }
                    None => missing.push(r),
                }
            }
            lines.extend(missing.iter().map(|r| format!("- {r}")));
            lines.extend(left.iter().map(|r| format!("+ {r}")));
            if missing.is_empty() && left.is_empty() && er != ar {
                lines.push(format!("~ chain {name}: the same rules in another order"));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "*{}", t);
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct position of a hook's built-in chain is where the list puts it, and where a
    /// fresh table numbers that chain.
    #[test]
    fn builtin_position_is_the_position_in_the_list() {
        let hooks = [Hook::PreRouting, Hook::Input, Hook::Forward, Hook::Output, Hook::PostRouting];
        for t in [TableName::Raw, TableName::Mangle, TableName::Nat, TableName::Filter] {
            let table = Table::new(t);
            for h in hooks {
                let listed = t.builtin_chains().iter().position(|x| *x == h);
                assert_eq!(t.builtin_position(h), listed, "{t} {h:?}");
                if let Some(i) = listed {
                    assert_eq!(
                        table.chains.get_index(i).map(|(k, _)| k.as_str()),
                        Some(h.chain_name())
                    );
                }
            }
        }
    }

    /// The blob keeps a Service's chains together: each `KUBE-SVC-` chain is followed by
    /// the `KUBE-SEP-` chains it jumps to, in rule order, then comes the next Service; the
    /// rules are numbered in the same order, and each DNAT's data follows its chain's rules.
    #[test]
    fn blob_follows_jumps_depth_first() {
        use crate::compile::NO_JUMP;
        let mut text = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
        );
        // Declared as kube-proxy declares them: sorted, every SEP chain before every SVC one.
        for s in 0..3 {
            for e in 0..3 {
                text.push_str(&format!(":KUBE-SEP-{s}{e} - [0:0]\n"));
            }
        }
        for s in 0..3 {
            text.push_str(&format!(":KUBE-SVC-{s} - [0:0]\n"));
        }
        text.push_str(
            "-A PREROUTING -j KUBE-SERVICES\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
        );
        for s in 0..3 {
            text.push_str(&format!(
                "-A KUBE-SERVICES -d 10.96.0.{s}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-{s}\n"
            ));
            for e in 0..3 {
                text.push_str(&format!(
                    "-A KUBE-SVC-{s} -m statistic --mode random --probability 0.5 -j KUBE-SEP-{s}{e}\n\
                     -A KUBE-SEP-{s}{e} -s 10.244.{s}.{e}/32 -j KUBE-MARK-MASQ\n\
                     -A KUBE-SEP-{s}{e} -p tcp -m tcp -j DNAT --to-destination 10.244.{s}.{e}:8080\n"
                ));
            }
        }
        text.push_str("COMMIT\n");
        let mut rs = Ruleset::default();
        rs.restore(&text, false).unwrap();
        let t = rs.table(TableName::Nat);
        let blob = t.blob();
        let chain = |c: &str| &t.chains[c];
        for s in 0..3 {
            let svc = chain(&format!("KUBE-SVC-{s}"));
            let mut next = svc.head as usize + 1 + svc.rules.len();
            let mut rule = svc.jumps_at as usize + svc.rules.len();
            for e in 0..3 {
                let sep = chain(&format!("KUBE-SEP-{s}{e}"));
                // The SVC chain's rules jump to the heads that follow.
                assert_eq!(blob[svc.head as usize + 1 + e].to(), sep.head);
                assert_eq!((sep.head as usize, sep.jumps_at as usize), (next, rule), "SEP-{s}{e}");
                // Head, two rules, the DNAT's data.
                let dnat = blob[next + 2];
                assert_eq!(dnat.to() as usize, next + 3);
                assert_ne!(dnat.to(), NO_JUMP);
                next += 4;
                rule += 2;
                // The first SEP chain's first rule is the first to jump to KUBE-MARK-MASQ,
                // which comes next.
                if s == 0 && e == 0 {
                    let masq = chain("KUBE-MARK-MASQ");
                    assert_eq!(masq.head as usize, next);
                    next += 1 + masq.rules.len();
                    rule += masq.rules.len();
                }
            }
            if s < 2 {
                assert_eq!(chain(&format!("KUBE-SVC-{}", s + 1)).head as usize, next);
            }
        }
        // Every head and rule has its entry, and every DNAT one more.
        let rules: usize = t.chains.values().map(|c| c.rules.len()).sum();
        assert_eq!(blob.len(), t.chains.len() + rules + 9);
    }

    /// A table large enough to be linked by two threads in pieces links as one thread links
    /// it, and a jump to nowhere is reported for the first chain that makes one.
    #[test]
    fn large_tables_link_in_pieces_as_in_one() {
        let rule = |t: &str| Rule::parse(t).unwrap();
        let n = 3 * PARALLEL_LINK_CHAINS;
        let name = |i: usize| ChainName::new(&format!("C{i}")).unwrap();
        let chains = (0..n).map(|i| {
            // Jumps forward and back, many in the last chains (as KUBE-SVC- chains sort last).
            let mut rules =
                vec![rule(&format!("-p tcp -m conntrack --ctstate NEW -j C{}", (i * 7919) % n))];
            if i > n - n / 8 {
                rules.extend((1..6).map(|k| rule(&format!("-j C{}", (i + k * 104_729) % n))));
            }
            rules.push(rule("-j ACCEPT"));
            (name(i), rules)
        });
        let mut rs = Ruleset::default();
        rs.load(TableName::Filter, chains.clone()).unwrap();
        let table = rs.table(TableName::Filter);
        let mut one = table.clone();
        one.link_with(false).unwrap();
        assert_eq!(table.blob(), one.blob());
        assert_eq!(
            table.blob().len(),
            table.chains.values().map(|c| 1 + c.rules.len()).sum::<usize>()
        );
        // The new-connection rules, in the first chains and the last, keep their states.
        let states = |c: &str| table.blob()[table.chains[c].head as usize + 1].states();
        assert_eq!(
            (states("C0"), states(&format!("C{}", n - 1))),
            (crate::rule::ctstate::NEW, crate::rule::ctstate::NEW)
        );

        let broken = chains.map(|(c, mut rules)| {
            if c.as_str() == "C30000" || c.as_str() == "C5000" {
                rules.push(rule("-j NOWHERE"));
            }
            (c, rules)
        });
        let err = Ruleset::default().load(TableName::Filter, broken).unwrap_err();
        assert!(err.starts_with("chain C5000 jumps to 'NOWHERE'"), "{err}");
    }

    #[test]
    fn loading_built_chains_is_restoring_them() {
        let rule = |t: &str| Rule::parse(t).unwrap();
        let mut loaded = Ruleset::default();
        loaded
            .load(
                TableName::Nat,
                vec![
                    (ChainName::new("PREROUTING").unwrap(), vec![rule("-j KUBE-SERVICES")]),
                    (
                        ChainName::new("KUBE-SERVICES").unwrap(),
                        vec![rule("-d 10.96.0.10 -j KUBE-SVC-A")],
                    ),
                    (
                        ChainName::new("KUBE-SVC-A").unwrap(),
                        vec![rule("-j DNAT --to-destination 10.244.1.2")],
                    ),
                ],
            )
            .unwrap();
        let mut restored = Ruleset::default();
        restored
            .restore(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n\
                 -A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.96.0.10 -j KUBE-SVC-A\n\
                 -A KUBE-SVC-A -j DNAT --to-destination 10.244.1.2\nCOMMIT\n",
                false,
            )
            .unwrap();
        assert_eq!(loaded, restored);
        assert_eq!(loaded.save_restore_form(), restored.save_restore_form());
    }

    #[test]
    fn loading_a_jump_to_a_missing_chain_changes_nothing() {
        let mut rs = Ruleset::default();
        rs.restore("*nat\n:KEEP - [0:0]\nCOMMIT\n", false).unwrap();
        let before = rs.clone();
        let err = rs
            .load(
                TableName::Nat,
                vec![(ChainName::new("A").unwrap(), vec![Rule::parse("-j NOPE").unwrap()])],
            )
            .unwrap_err();
        assert!(err.contains("jumps to 'NOPE'"), "{err}");
        assert_eq!(rs, before);
        let err = ChainName::new(&"X".repeat(29)).unwrap_err().to_string();
        assert!(err.contains("1 to 28 characters"), "{err}");
        assert!(ChainName::new("").is_err() && ChainName::new(&"X".repeat(28)).is_ok());
    }

    #[test]
    fn restore_errors_carry_line_and_column() {
        let mut rs = Ruleset::default();
        let e = rs
            .restore("*nat\n:KUBE-X - [0:0]\n-A KUBE-X -p tcp --dport x -j ACCEPT\nCOMMIT\n", false)
            .unwrap_err();
        assert_eq!((e.line, e.col), (3, 26));
        assert!(e.msg.contains("bad port 'x'"), "{e}");
        let e = rs.restore("*nat\n-A KUBE-Y -j ACCEPT\nCOMMIT\n", false).unwrap_err();
        assert!(e.msg.contains("chain 'KUBE-Y' does not exist"), "{e}");
        let e = rs.restore("*nat\n:A - [0:0]\n-A A -j KUBE-NOWHERE\nCOMMIT\n", false).unwrap_err();
        assert!(e.msg.contains("KUBE-NOWHERE"), "{e}");
        let e = rs.restore("*nat\n:A - [0:0]\n", false).unwrap_err();
        assert!(e.msg.contains("missing its COMMIT"), "{e}");
        let e = rs.restore("*bogus\nCOMMIT\n", false).unwrap_err();
        assert!(e.msg.contains("unknown table"), "{e}");
        // Nothing changed by the failed restores.
        assert_eq!(rs, Ruleset::default());
    }

    /// Found by fuzzing: `-N` took a name longer than iptables allows (and words after it),
    /// so the kernel form printed a declaration that restore then refused.
    #[test]
    fn new_chain_names_are_checked_like_declared_ones() {
        let mut rs = Ruleset::default();
        let e = rs
            .restore("*filter\n-N KUBE-EXTERNAL-KUBE-EXT-PNZBNJ2[0:0]\nCOMMIT\n", false)
            .unwrap_err();
        assert_eq!((e.line, e.col), (2, 4));
        assert!(e.msg.contains("1 to 28 characters"), "{e}");
        let e = rs.restore("*filter\n-N KUBE-X -d 10.0.0.1\nCOMMIT\n", false).unwrap_err();
        assert_eq!((e.line, e.col), (2, 11));
        assert!(e.msg.contains("-N takes only a chain name"), "{e}");
        assert_eq!(rs, Ruleset::default());
        rs.restore("*filter\n-N KUBE-X\nCOMMIT\n", false).unwrap();
        let kernel = rs.save_kernel_form(&[TableName::Filter]);
        let mut again = Ruleset::default();
        again.restore(&kernel, false).unwrap();
        assert_eq!(again.save_kernel_form(&[TableName::Filter]), kernel);
    }

    #[test]
    fn noflush_declaration_flushes_only_that_chain() {
        let mut rs = Ruleset::default();
        rs.restore("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j ACCEPT\n-A B -j ACCEPT\nCOMMIT\n", false)
            .unwrap();
        rs.restore("*nat\n:A - [0:0]\n-A A -j DROP\nCOMMIT\n", true).unwrap();
        let nat = rs.table(TableName::Nat);
        assert_eq!(nat.chains["A"].rules.len(), 1);
        assert_eq!(nat.chains["A"].rules[0].target, Target::Drop);
        assert_eq!(nat.chains["B"].rules.len(), 1);
        rs.restore("*nat\n-X B\nCOMMIT\n", true).unwrap();
        assert!(!rs.table(TableName::Nat).chains.contains_key("B"));
    }
}
