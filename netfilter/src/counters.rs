//! Packet and byte counters, kept apart from the rules they count for.
//!
//! The kernel keeps a rule's counters beside the rule (one copy per CPU). Here the rules of a
//! namespace ([`crate::Ruleset`]) are shared copy-on-write by every namespace given the same
//! ones: kube-proxy writes identical rules on most nodes, and 5,000 nodes should hold one
//! copy, not 5,000. If packets counted into the rules, a node's first packet would copy all
//! of them. So a namespace's packets count into its own [`Counters`], laid out by rule
//! position within each table (the order [`crate::table::Table::link`] numbers rules in), and
//! the rules stay shared while packets flow.
//!
//! What `iptables-save -c` prints for a rule is its own counters (what restore set, `[5:300]`)
//! plus the namespace's. [`crate::Netfilter::tables_mut`] folds the namespace's counts into its
//! own copy of the rules before any change, so no count is lost when rules move.
//!
//! A table's layout is named by its generation, which [`crate::table::Table::link`] steps
//! each time it renumbers the rules; counters made for another generation start again from
//! zero (they belonged to rules that are gone: the kernel, too, starts a replaced table's
//! rules at zero). Generations only tell apart the layouts one namespace's table goes
//! through: a namespace given other tables starts its counters afresh
//! ([`crate::Netfilter::set_tables`]), and a table put in place of another takes the next
//! generation ([`Ruleset::set_table`]).

use crate::table::{ExtraCounts, Ruleset, Table, TableName};

/// Most built-in chains a table has (mangle's five).
const MAX_BUILTIN: usize = 5;

/// One table's counters in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// The table layout these are for (0: none yet).
    layout: u64,
    /// Per rule, by position in the table: packets and bytes.
    rules: Vec<(u64, u64)>,
    /// Per built-in chain, in the table's built-in order: what reached its policy.
    policies: [(u64, u64); MAX_BUILTIN],
    /// Whether anything was counted since the last fold.
    dirty: bool,
    /// `-m statistic --mode nth` running counts, by rule position and the match's place
    /// among the rule's nth matches (the rule holds where a namespace's count starts).
    nth: Vec<((usize, u8), u32)>,
    /// The position of the rule being matched during a chain walk, and how many of its nth
    /// matches were looked at so far.
    at: Option<(usize, u8)>,
}

impl TableCounters {
    /// Makes these counters fit `table`: zeroed and resized when its rules were renumbered
    /// since they were last fitted. One comparison when nothing changed.
    #[inline]
    pub fn fit(&mut self, table: &Table) {
        if self.layout != table.layout() {
            self.refit(table);
        }
    }

    #[cold]
    fn refit(&mut self, table: &Table) {
        self.layout = table.layout();
        // Zeroed allocation: pages no packet touches cost no memory.
        self.rules = vec![(0, 0); table.rule_count()];
        self.policies = [(0, 0); MAX_BUILTIN];
        self.dirty = false;
        self.nth.clear();
    }

    /// This namespace's `--mode nth` count of the rule being matched, starting at `start`
    /// (the rule's own count) the first time; `None` outside a chain walk.
    pub(crate) fn nth_slot(&mut self, start: u32) -> Option<&mut u32> {
        let at = self.at?;
        // The rule's matches run in order and stop at the first miss, so the n-th nth match
        // reached is always the same match.
        self.at = Some((at.0, at.1.saturating_add(1)));
        self.dirty = true;
        let k = match self.nth.iter().position(|(p, _)| *p == at) {
            Some(k) => k,
            None => {
                self.nth.push((at, start));
                self.nth.len() - 1
            }
        };
        Some(&mut self.nth[k].1)
    }

    /// Starts (`Some(pos)`) or ends (`None`) matching the rule at `pos` in a chain walk.
    #[inline]
    pub(crate) fn matching(&mut self, pos: Option<usize>) {
        self.at = pos.map(|p| (p, 0));
    }

    /// Counts a packet of `len` bytes for the rule at `pos` (its chain's first rule position
    /// plus its index).
    #[inline]
    pub(crate) fn count_rule(&mut self, pos: usize, len: u16) {
        self.dirty |= count(self.rules.get_mut(pos), len);
    }

    /// Counts a packet of `len` bytes for the policy of built-in chain `chain` (its index in
    /// the table); user chains have no policy and no policy counters.
    #[inline]
    pub(crate) fn count_policy(&mut self, chain: usize, len: u16) {
        self.dirty |= count(self.policies.get_mut(chain), len);
    }

    /// This namespace's counts for the rule at `pos` of `table` (zero when these counters
    /// were made for another layout of it).
    pub fn rule(&self, table: &Table, pos: usize) -> (u64, u64) {
        self.read(table, &self.rules, pos)
    }

    /// This namespace's counts for the policy of the chain at index `chain` of `table`.
    pub fn policy(&self, table: &Table, chain: usize) -> (u64, u64) {
        self.read(table, &self.policies, chain)
    }

    fn read(&self, table: &Table, counts: &[(u64, u64)], i: usize) -> (u64, u64) {
        let mine = self.layout == table.layout();
        counts.get(i).copied().filter(|_| mine).unwrap_or((0, 0))
    }

    /// Adds these counts into the rules' and chains' own counters of `table` and starts
    /// again from zero.
    pub fn fold_into(&mut self, table: &mut Table) {
        if !self.dirty || self.layout != table.layout() {
            return;
        }
        for (k, chain) in table.chains.values_mut().enumerate() {
            if let Some(p) = self.policies.get(k).filter(|_| chain.policy.is_some()) {
                chain.counters.0 += p.0;
                chain.counters.1 += p.1;
            }
            let at = chain.jumps_at as usize;
            for (i, r) in chain.rules.iter_mut().enumerate() {
                if let Some(c) = self.rules.get(at + i) {
                    r.counters.0 += c.0;
                    r.counters.1 += c.1;
                }
                let nth = r.matches.iter().filter_map(|m| match m {
                    crate::rule::Match::Nth { count, .. } => Some(count),
                    _ => None,
                });
                for (k, count) in nth.enumerate() {
                    let key = (at + i, u8::try_from(k).unwrap_or(u8::MAX));
                    if let Some(&(_, n)) = self.nth.iter().find(|(p, _)| *p == key) {
                        count.set(n);
                    }
                }
            }
        }
        self.rules.iter_mut().for_each(|c| *c = (0, 0));
        self.nth.clear();
        self.policies = [(0, 0); MAX_BUILTIN];
        self.dirty = false;
    }
}

/// Counts a packet of `len` bytes in `slot`, if there is one; whether it counted.
#[inline]
fn count(slot: Option<&mut (u64, u64)>, len: u16) -> bool {
    let Some(c) = slot else { return false };
    c.0 += 1;
    c.1 += u64::from(len);
    true
}

/// One namespace's counters, table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    tables: [TableCounters; 4],
}

impl Counters {
    /// One table's counters.
    pub fn table(&self, t: TableName) -> &TableCounters {
        &self.tables[t as usize]
    }

    /// One table's counters, mutably.
    pub fn table_mut(&mut self, t: TableName) -> &mut TableCounters {
        &mut self.tables[t as usize]
    }

    /// Adds every count into `rules`' own counters and starts again from zero (before `rules`
    /// change: see the module documentation).
    pub fn fold_into(&mut self, rules: &mut Ruleset) {
        for t in TableName::ALL {
            self.tables[t as usize].fold_into(rules.table_mut(t));
        }
    }

    /// Whether anything is counted here that `rules` does not hold yet.
    pub fn is_dirty(&self) -> bool {
        self.tables.iter().any(|t| t.dirty)
    }
}

/// A namespace's counts, table by table, as a counted save adds them.
impl ExtraCounts for Counters {
    fn rule(&self, table: &Table, pos: usize) -> (u64, u64) {
        self.table(table.name).rule(table, pos)
    }

    fn policy(&self, table: &Table, chain: usize) -> (u64, u64) {
        self.table(table.name).policy(table, chain)
    }
}
