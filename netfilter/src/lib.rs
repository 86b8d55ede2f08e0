//! `podnet-netfilter`: a deterministic model of Linux netfilter for IPv4.
//!
//! It knows packets, never pods. The modules, bottom up (each uses only those above it; a
//! test in `core/tests/it/layering.rs` holds the order):
//!
//! - [`packet`]: the netfilter view of IPv4 bytes (tuples, flags) and in-place NAT rewrites
//!   with incremental checksums; [`rng`]: the seeded random source.
//! - [`conntrack`]: connection tracking with the kernel's states, timeouts, table limit and
//!   NAT bindings.
//! - [`rule`]: iptables matches and targets, parsed from `iptables-restore` tokens or made in
//!   code with [`RuleBuilder`], printed in restore form (as written) and in `iptables-save`
//!   kernel form. [`ipset`]: the set types kube-proxy's IPVS mode uses. [`log`]: the `LOG`
//!   target's kernel log line.
//! - `compile` (internal): what rules become for a fast walk: per-rule quick checks and
//!   the dispatch index that keeps long chains O(1) in the number of Services.
//! - [`table`]: tables and chains, `iptables-restore` input in (or built chains,
//!   [`Ruleset::load`]), restore and kernel forms out; each table lays its chains out in a
//!   blob of compiled entries, as the kernel lays out an x_tables table.
//! - [`counters`]: each namespace's packet and byte counters, apart from the rules, so
//!   namespaces share one copy of the same rules while their packets flow.
//! - [`eval`]: first-match rule evaluation over a table's blob.
//! - [`nft`]: nf_tables rulesets: `nft -f` input (kube-proxy's nftables mode) in, `nft list
//!   ruleset` out, and base chains run on packets (verdict maps by hash, `numgen` as a
//!   decision point, `update @set` per namespace), deciding as [`eval`]'s tables decide.
//! - [`ipvs`]: IPVS virtual services, schedulers and `ipvsadm -Ln`.
//! - [`hook`]: the per-hook pipeline ([`Netfilter::hook`]) that ties them together the way
//!   the kernel orders them: iptables tables and nf_tables base chains by priority, the nat
//!   table and nat chains consulted by the NAT core once per connection.
//!
//! The crate's one `unsafe` block is a cache prefetch hint (a private module, `prefetch`):
//! it reads and changes nothing the program can see.
//!
//! Time ([`smoltcp::time::Instant`]) and randomness ([`Rng`]) are inputs: the same inputs and
//! seed always give the same verdicts, NAT ports and statistic picks.
#![deny(unsafe_code)]

mod compile;
pub mod conntrack;
pub mod counters;
pub mod eval;
pub mod hook;
pub mod ipset;
pub mod ipvs;
pub mod log;
pub mod nft;
pub mod packet;
mod prefetch;
pub mod rng;
pub mod rule;
pub mod table;
#[doc(hidden)]
pub mod testing;

pub use conntrack::{Conntrack, CtInfo, CtRef, Direction};
pub use counters::{Counters, TableCounters};
pub use eval::{RuleHit, Verdict};
pub use hook::{DropCause, HookEnv, HookReport, HookVerdict, NatApplied, NatList, Netfilter, Skb};
pub use packet::{Manip, PacketInfo, Proto, Tuple};
pub use rng::{Choices, Rng};
pub use rule::{ChainName, Match, Rule, RuleBuilder, Spelling, Target};
pub use table::{Hook, ParseError, Ruleset, TableName};
