//! What a rule's statements mean, beside the text `nft list` prints for them: selectors (what
//! a statement reads of the packet), typed values, and statements, as the parser reads them
//! and the evaluator ([`super::run`]) runs them.

use std::net::Ipv4Addr;

use crate::rule::RejectWith;

/// What a selector reads of the packet (`ip daddr`, `th dport`, `ct state`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sel {
    /// `ip saddr`.
    IpSaddr,
    /// `ip daddr`.
    IpDaddr,
    /// `ip protocol`, `meta l4proto`.
    L4proto,
    /// `th sport`/`th dport` (`dst`), or `tcp`/`udp` ports (with the protocol they imply).
    Port { dst: bool, proto: Option<u8> },
    /// `tcp flags`.
    TcpFlags,
    /// `meta mark`.
    Mark,
    /// `meta iifname`.
    Iifname,
    /// `meta oifname`.
    Oifname,
    /// `meta iif`: one existing interface (by index; named when written).
    Iif,
    /// `meta oif`.
    Oif,
    /// `meta nfproto`.
    Nfproto,
    /// `ct state`.
    CtState,
    /// `ct status`.
    CtStatus,
    /// `ct mark`.
    CtMark,
    /// `fib saddr type` (`dst` false) or `fib daddr type`.
    FibType { dst: bool },
    /// `numgen random mod N`.
    Numgen(u32),
}

/// How a selector's values are written and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `ipv4_addr`: an address, a prefix (`10.0.0.0/8`) or a range (`a-b`).
    Addr,
    /// `inet_proto`: `tcp`, `udp`, `sctp`, `icmp` or a number.
    Proto,
    /// `inet_service`: a port or a range.
    Port,
    /// A mark or other 32-bit number.
    Num,
    /// An interface name, `*` matching any tail.
    Iface,
    /// An interface, by index: one that exists, named.
    IfIndex,
    /// `ct_state` bits (`new`, `established`, …): a match is any bit in common.
    CtState,
    /// `ct_status` bits (`dnat`, `snat`, …): a match is any bit in common.
    CtStatus,
    /// `fib_addrtype` (`local`, `unicast`, …).
    FibType,
    /// `tcp_flag` bits.
    TcpFlags,
    /// `nf_proto` (`ipv4`, `ipv6`).
    NfProto,
}

impl Sel {
    pub(crate) fn ty(self) -> Ty {
        match self {
            Sel::IpSaddr | Sel::IpDaddr => Ty::Addr,
            Sel::L4proto => Ty::Proto,
            Sel::Port { .. } => Ty::Port,
            Sel::TcpFlags => Ty::TcpFlags,
            Sel::Mark | Sel::CtMark | Sel::Numgen(_) => Ty::Num,
            Sel::Iifname | Sel::Oifname => Ty::Iface,
            Sel::Iif | Sel::Oif => Ty::IfIndex,
            Sel::Nfproto => Ty::NfProto,
            Sel::CtState => Ty::CtState,
            Sel::CtStatus => Ty::CtStatus,
            Sel::FibType { .. } => Ty::FibType,
        }
    }
}

impl Ty {
    /// The type of a set's key part, as declared (`type ipv4_addr . inet_proto`).
    pub(crate) fn of_set_type(s: &str) -> Option<Ty> {
        Some(match s {
            "ipv4_addr" => Ty::Addr,
            "inet_proto" => Ty::Proto,
            "inet_service" => Ty::Port,
            "mark" | "integer" => Ty::Num,
            "ifname" => Ty::Iface,
            "ct_state" => Ty::CtState,
            "ct_status" => Ty::CtStatus,
            "fib_addrtype" => Ty::FibType,
            "nf_proto" => Ty::NfProto,
            _ => return None,
        })
    }

    /// Whether a match of this type is "any bit in common" rather than equality.
    pub(crate) fn is_flags(self) -> bool {
        matches!(self, Ty::CtState | Ty::CtStatus | Ty::TcpFlags)
    }
}

/// A value written in a rule or an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lit {
    /// A number, or an inclusive range of them (a prefix, `a-b`).
    Range(u32, u32),
    /// Bits, for the flag types.
    Flags(u32),
    /// An interface name; `prefix` when written with a trailing `*`.
    Iface { name: String, prefix: bool },
}

impl Lit {
    /// Whether the value is one number (so it can be looked up by hash).
    pub(crate) fn exact(&self) -> Option<u32> {
        match *self {
            Lit::Range(lo, hi) if lo == hi => Some(lo),
            Lit::Flags(_) | Lit::Iface { .. } | Lit::Range(..) => None,
        }
    }
}

/// A value `nft` would accept for `ty`, or what is expected instead.
pub(crate) fn lit(ty: Ty, s: &str) -> Result<Lit, String> {
    let num = |v: &str| -> Option<u32> {
        match v.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    };
    let bits = |names: &[(&str, u32)], what: &str| -> Result<Lit, String> {
        let mut b = 0;
        for part in s.split(',') {
            match names.iter().find(|(n, _)| *n == part) {
                Some((_, v)) => b |= v,
                None => {
                    let all: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                    return Err(format!("`{part}` is not a {what} ({})", all.join(", ")));
                }
            }
        }
        Ok(Lit::Flags(b))
    };
    match ty {
        Ty::Addr => {
            let bad = || format!("`{s}` is not an IPv4 address, prefix or range");
            if let Some((a, len)) = s.split_once('/') {
                let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
                let len: u32 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let lo = u32::from(a) & mask;
                return Ok(Lit::Range(lo, lo | !mask));
            }
            if let Some((a, b)) = s.split_once('-') {
                let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
                let b: Ipv4Addr = b.parse().map_err(|_| bad())?;
                return Ok(Lit::Range(a.into(), b.into()));
            }
            let a: Ipv4Addr = s.parse().map_err(|_| bad())?;
            Ok(Lit::Range(a.into(), a.into()))
        }
        Ty::Proto => {
            let p = match s {
                "icmp" => 1,
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                n => n.parse::<u8>().map_err(|_| {
                    format!("`{s}` is not a protocol (tcp, udp, sctp, icmp or a number)")
                })?,
            };
            Ok(Lit::Range(u32::from(p), u32::from(p)))
        }
        Ty::Port => {
            let port = |v: &str| v.parse::<u16>().map(u32::from);
            let bad = |_| format!("`{s}` is not a port or a range of ports");
            match s.split_once('-') {
                Some((a, b)) => Ok(Lit::Range(port(a).map_err(bad)?, port(b).map_err(bad)?)),
                None => {
                    let p = port(s).map_err(bad)?;
                    Ok(Lit::Range(p, p))
                }
            }
        }
        Ty::Num => {
            let bad = || format!("`{s}` is not a number");
            match s.split_once('-') {
                Some((a, b)) => Ok(Lit::Range(num(a).ok_or_else(bad)?, num(b).ok_or_else(bad)?)),
                None => num(s).map(|n| Lit::Range(n, n)).ok_or_else(bad),
            }
        }
        Ty::IfIndex if s.contains('*') => Err(format!(
            "interface `{s}` does not exist: `iif`/`oif` take one existing interface (match a name pattern with `iifname \"{s}\"`)"
        )),
        Ty::IfIndex => Ok(Lit::Iface { name: s.to_string(), prefix: false }),
        Ty::Iface => Ok(match s.strip_suffix('*') {
            Some(p) => Lit::Iface { name: p.to_string(), prefix: true },
            None => Lit::Iface { name: s.to_string(), prefix: false },
        }),
        Ty::CtState => bits(
            &[
                ("invalid", ct_state::INVALID),
                ("established", ct_state::ESTABLISHED),
                ("related", ct_state::RELATED),
                ("new", ct_state::NEW),
                ("untracked", ct_state::UNTRACKED),
            ],
            "conntrack state",
        ),
        Ty::CtStatus => bits(
            &[
                ("expected", 1),
                ("seen-reply", crate::conntrack::status::SEEN_REPLY),
                ("assured", crate::conntrack::status::ASSURED),
                ("confirmed", crate::conntrack::status::CONFIRMED),
                ("snat", crate::conntrack::status::SRC_NAT),
                ("dnat", crate::conntrack::status::DST_NAT),
            ],
            "conntrack status",
        ),
        Ty::TcpFlags => bits(
            &[
                ("fin", 0x01),
                ("syn", 0x02),
                ("rst", 0x04),
                ("psh", 0x08),
                ("ack", 0x10),
                ("urg", 0x20),
                ("ecn", 0x40),
                ("cwr", 0x80),
            ],
            "TCP flag",
        ),
        Ty::FibType => {
            let names = [
                ("unspec", 0),
                ("unicast", 1),
                ("local", 2),
                ("broadcast", 3),
                ("anycast", 4),
                ("multicast", 5),
                ("blackhole", 6),
                ("unreachable", 7),
                ("prohibit", 8),
            ];
            match names.iter().find(|(n, _)| *n == s) {
                Some(&(_, v)) => Ok(Lit::Range(v, v)),
                None => Err(format!(
                    "`{s}` is not an address type (unicast, local, broadcast, anycast, multicast, blackhole, unreachable, prohibit)"
                )),
            }
        }
        Ty::NfProto => match s {
            "ipv4" => Ok(Lit::Range(2, 2)),
            "ipv6" => Ok(Lit::Range(10, 10)),
            _ => Err(format!("`{s}` is not ipv4 or ipv6")),
        },
    }
}

/// `ct state` bits as nf_tables numbers them (`NF_CT_STATE_*_BIT`).
pub(crate) mod ct_state {
    pub(crate) const INVALID: u32 = 1;
    pub(crate) const ESTABLISHED: u32 = 2;
    pub(crate) const RELATED: u32 = 4;
    pub(crate) const NEW: u32 = 8;
    pub(crate) const UNTRACKED: u32 = 64;
}

/// A verdict, in a rule or as a verdict map's value. A jump's or goto's target is named,
/// and found by its place in the table's chains after each transaction ([`UNLINKED`] until
/// then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verd {
    Accept,
    Drop,
    Return,
    Continue,
    Jump(String, usize),
    Goto(String, usize),
}

/// The place of a chain or set not looked up yet.
pub(crate) const UNLINKED: usize = usize::MAX;

impl Verd {
    pub(crate) fn parse(s: &str) -> Option<Verd> {
        Some(match s.split_once(' ') {
            None => match s {
                "accept" => Verd::Accept,
                "drop" => Verd::Drop,
                "return" => Verd::Return,
                "continue" => Verd::Continue,
                _ => return None,
            },
            Some(("jump", c)) => Verd::Jump(c.to_string(), UNLINKED),
            Some(("goto", c)) => Verd::Goto(c.to_string(), UNLINKED),
            Some(_) => return None,
        })
    }
}

/// `|`, `&`, `^` on a mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitOp {
    Or,
    And,
    Xor,
}

impl BitOp {
    pub(crate) fn apply(self, a: u32, b: u32) -> u32 {
        match self {
            BitOp::Or => a | b,
            BitOp::And => a & b,
            BitOp::Xor => a ^ b,
        }
    }
}

/// A statement's selectors, inline (kube-proxy concatenates three at most): a packet's walk
/// reads a statement without following a pointer.
pub(crate) type Sels = smallvec::SmallVec<[Sel; 3]>;

/// A value per concatenated selector, inline as [`Sels`].
pub(crate) type Lits = smallvec::SmallVec<[Lit; 3]>;

/// The right-hand side of a match or a map lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rhs {
    /// One value per concatenated selector.
    Value(Lits),
    /// An anonymous set (`{ a, b }`) or map (`{ 0 : goto c, … }`).
    Anon(Vec<(Lits, Option<Verd>)>),
    /// A named set or map (`@name`), and its place in the table's sets.
    Named(String, usize),
}

/// One statement of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stmt {
    /// `SEL [. SEL] [!=] RHS`: the rule goes on when it holds.
    Match { sel: Sels, neg: bool, rhs: Rhs },
    /// `meta mark & MASK [!=|==] VALUE`.
    MarkMatch { sel: Sel, op: BitOp, mask: u32, neg: bool, val: u32 },
    /// `SEL [. SEL] vmap RHS`: the verdict of the element that matches (none: go on).
    Vmap { sel: Sels, map: Rhs },
    /// `meta mark set [meta mark OP] VALUE`.
    MarkSet { sel: Sel, op: Option<BitOp>, val: u32 },
    /// A verdict.
    Verdict(Verd),
    /// `counter`.
    Counter,
    /// `reject [with …]`.
    Reject(RejectWith),
    /// `masquerade [random] [fully-random] [persistent]`.
    Masquerade { random: bool, fully_random: bool, persistent: bool },
    /// `dnat to A[:P]` (`dst`) or `snat to A[:P]`.
    Nat { dst: bool, addr: Ipv4Addr, port: Option<u16> },
    /// `update @SET { SEL [. SEL] }` / `add @SET { … }`, and the set's place.
    Update { set: String, at: usize, sel: Sels },
}
