//! `podnet-netfilter`: a deterministic model of Linux netfilter for IPv4.
//!
//! It knows packets, never pods. The layers, bottom up:
//!
//! - [`packet`]: the netfilter view of IPv4 bytes (tuples, flags) and in-place NAT rewrites
//!   with incremental checksums.
//! - [`conntrack`]: connection tracking with the kernel's states, timeouts, table limit and
//!   NAT bindings.
//! - [`rule`]: iptables matches and targets, parsed from `iptables-restore` tokens or made in
//!   code with [`RuleBuilder`], printed in restore form (as written) and in `iptables-save`
//!   kernel form.
//! - [`table`]: tables and chains, `iptables-restore` input in (or built chains,
//!   [`Ruleset::load`]), restore and kernel forms out.
//! - [`counters`]: each namespace's packet and byte counters, apart from the rules, so
//!   namespaces share one copy of the same rules while their packets flow.
//! - [`eval`]: first-match rule evaluation over each table's blob (chains laid out as the
//!   kernel lays out an x_tables table: rule after rule, jumps as positions), with a
//!   dispatch index that keeps long chains O(1) in the number of Services, and per-rule
//!   quick checks that pass rules by, or match them, without reading them.
//! - [`ipset`]: the set types kube-proxy's IPVS mode uses.
//! - [`ipvs`]: IPVS virtual services, schedulers and `ipvsadm -Ln`.
//! - [`log`]: the `LOG` target's kernel log line.
//! - [`testing`]: rule shapes shared by the property tests and the fuzz targets.
//! - [`hook`]: the per-hook pipeline ([`Netfilter::hook`]) that ties them together the way
//!   the kernel orders them, for one packet or a list ([`Netfilter::hook_list`], which reads
//!   the next packets' rules ahead).
//!
//! The crate's one `unsafe` block is the cache prefetch hint that reading ahead uses (a
//! private module, `prefetch`): it reads and changes nothing the program can see.
//!
//! Time ([`smoltcp::time::Instant`]) and randomness ([`Rng`]) are inputs: the same inputs and
//! seed always give the same verdicts, NAT ports and statistic picks.
#![deny(unsafe_code)]

pub mod conntrack;
pub mod counters;
pub mod eval;
pub mod hook;
pub mod ipset;
pub mod ipvs;
pub mod log;
pub mod packet;
mod prefetch;
pub mod rule;
pub mod table;
pub mod testing;

pub use conntrack::{Conntrack, CtInfo, CtRef, Direction};
pub use counters::{Counters, TableCounters};
pub use eval::{Rng, RuleHit, Verdict};
pub use hook::{DropCause, HookEnv, HookReport, HookVerdict, NatApplied, NatList, Netfilter, Skb};
pub use packet::{Manip, PacketInfo, Proto, Tuple};
pub use rule::{ChainName, Match, Rule, RuleBuilder, Spelling, Target};
pub use table::{Hook, ParseError, Ruleset, TableName};
