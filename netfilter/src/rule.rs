//! iptables rules: the matches and targets kube-proxy, CNIs and the cloud edge use, parsed
//! from `iptables-restore` tokens and printed the way `iptables-save` v1.8 prints them.
//!
//! A [`Rule`] keeps two things: its meaning (the parsed base matches, `-m` extensions and
//! target, used for evaluation) and its [`Spelling`] (used to print the restore form byte for
//! byte): the argument text as written for a parsed rule, or, for a rule made in code with a
//! [`RuleBuilder`] (kube-proxy's payload is hundreds of thousands of them), the order its
//! parts were given in, printed in the notation restore input uses. The kernel form is generated from the meaning, in the
//! order and notation the kernel hands back to `iptables-save` (checked against
//! iptables v1.8.9 on Linux 6.18): `! -s`, `-d a/32`, `-i`, `-o`, `-p`, then each extension
//! as `-m name` in the order given, then the target.

use std::fmt::{self, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use crate::packet::Proto;

/// An inclusive port range (`80`, `30000:32767`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Whether `p` is in the range.
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}:{}", self.lo, self.hi)
        }
    }
}

/// A value with its `!`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neg<T> {
    /// The value.
    pub value: T,
    /// Whether the match is inverted.
    pub invert: bool,
}

fn bang(invert: bool) -> &'static str {
    if invert { "! " } else { "" }
}

/// Connection-tracking states for `--ctstate` / `--state` (bit set).
pub mod ctstate {
    /// INVALID.
    pub const INVALID: u8 = 1;
    /// ESTABLISHED.
    pub const ESTABLISHED: u8 = 2;
    /// RELATED.
    pub const RELATED: u8 = 4;
    /// NEW.
    pub const NEW: u8 = 8;
    /// UNTRACKED.
    pub const UNTRACKED: u8 = 16;
    /// SNAT (virtual state: the connection is source-NATed).
    pub const SNAT: u8 = 32;
    /// DNAT (virtual state: the connection is destination-NATed).
    pub const DNAT: u8 = 64;
    /// Names in the order iptables prints them.
    pub const NAMES: [(u8, &str); 7] = [
        (INVALID, "INVALID"),
        (NEW, "NEW"),
        (RELATED, "RELATED"),
        (ESTABLISHED, "ESTABLISHED"),
        (UNTRACKED, "UNTRACKED"),
        (SNAT, "SNAT"),
        (DNAT, "DNAT"),
    ];
}

/// Address types for `-m addrtype` (bit set, as `RTN_*`).
pub mod addrtype {
    /// UNSPEC.
    pub const UNSPEC: u16 = 1;
    /// UNICAST.
    pub const UNICAST: u16 = 2;
    /// LOCAL.
    pub const LOCAL: u16 = 4;
    /// BROADCAST.
    pub const BROADCAST: u16 = 8;
    /// ANYCAST.
    pub const ANYCAST: u16 = 16;
    /// MULTICAST.
    pub const MULTICAST: u16 = 32;
    /// BLACKHOLE.
    pub const BLACKHOLE: u16 = 64;
    /// UNREACHABLE.
    pub const UNREACHABLE: u16 = 128;
    /// PROHIBIT.
    pub const PROHIBIT: u16 = 256;
    /// Names as iptables spells them.
    pub const NAMES: [(u16, &str); 9] = [
        (UNSPEC, "UNSPEC"),
        (UNICAST, "UNICAST"),
        (LOCAL, "LOCAL"),
        (BROADCAST, "BROADCAST"),
        (ANYCAST, "ANYCAST"),
        (MULTICAST, "MULTICAST"),
        (BLACKHOLE, "BLACKHOLE"),
        (UNREACHABLE, "UNREACHABLE"),
        (PROHIBIT, "PROHIBIT"),
    ];
}

/// `-m recent` commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecentCmd {
    /// `--set`: add the address.
    Set,
    /// `--rcheck`: is the address in the list?
    Rcheck,
    /// `--update`: rcheck and refresh.
    Update,
    /// `--remove`: remove the address if present.
    Remove,
}

/// `-m set` direction flags (`src`, `dst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetFlag {
    /// Take the value from the source address/port.
    Src,
    /// Take the value from the destination address/port.
    Dst,
}

/// The count of `-m statistic --mode nth` a namespace starts from (an atomic so rule sets can
/// be shared between threads). In a chain walk each namespace counts on in its own
/// [`crate::counters::TableCounters`], so namespaces sharing the rules do not share the count;
/// [`crate::counters::TableCounters::fold_into`] writes a namespace's count back here.
#[derive(Debug, Default)]
pub struct NthCount(std::sync::atomic::AtomicU32);

impl NthCount {
    /// The current value.
    pub fn get(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the value.
    pub fn set(&self, v: u32) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for NthCount {
    fn clone(&self) -> Self {
        NthCount(std::sync::atomic::AtomicU32::new(self.get()))
    }
}

impl PartialEq for NthCount {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// An `-m` extension match.
#[derive(Clone, Debug, PartialEq)]
pub enum Match {
    /// `-m tcp` / `-m udp` / `-m sctp`: ports (and TCP flags).
    Ports {
        /// Which protocol module.
        proto: Proto,
        /// `--sport`.
        sport: Option<Neg<PortRange>>,
        /// `--dport`.
        dport: Option<Neg<PortRange>>,
        /// `--tcp-flags mask comp` (or `--syn`).
        tcp_flags: Option<Neg<(u8, u8)>>,
    },
    /// `-m icmp --icmp-type`.
    Icmp {
        /// Type and optional code.
        icmp_type: Option<Neg<(u8, Option<u8>)>>,
    },
    /// `-m multiport --sports|--dports|--ports`.
    Multiport {
        /// 0 = source, 1 = destination, 2 = either.
        which: u8,
        /// The ports (boxed, as rare matches are, so every rule's matches stay small).
        ports: Box<Neg<Vec<PortRange>>>,
    },
    /// `-m comment --comment` (shared: a Service's rules carry one comment many times).
    Comment(Arc<str>),
    /// `-m conntrack` (`--ctstate`, `--ctorigdst`) or `-m state --state`.
    Conntrack {
        /// Whether it was written as `-m state --state`.
        legacy_state: bool,
        /// `--ctstate` bit set.
        ctstate: Option<Neg<u8>>,
        /// `--ctorigdst`.
        ctorigdst: Option<Neg<Ipv4Network>>,
    },
    /// `-m mark --mark value[/mask]`.
    Mark(Neg<(u32, u32)>),
    /// `-m addrtype`.
    AddrType {
        /// `--src-type`.
        src: Option<Neg<u16>>,
        /// `--dst-type`.
        dst: Option<Neg<u16>>,
        /// `--limit-iface-in`.
        limit_iface_in: bool,
        /// `--limit-iface-out`.
        limit_iface_out: bool,
    },
    /// `-m statistic --mode random --probability p` (as the kernel's 31-bit fraction).
    Random {
        /// `lround(p * 2^31)`.
        threshold: u32,
        /// `p` as written (the restore form of a built rule prints it with 10 decimals, as
        /// kube-proxy writes it; the kernel form prints the threshold back with 11).
        probability: f64,
        /// Inverted.
        invert: bool,
    },
    /// `-m statistic --mode nth --every n --packet p`.
    Nth {
        /// `--every`.
        every: u32,
        /// `--packet`.
        packet: u32,
        /// The kernel's running counter (starts at `packet`).
        count: NthCount,
        /// Inverted.
        invert: bool,
    },
    /// `-m recent` (boxed: rare, and a rule's matches stay small).
    Recent(Box<RecentMatch>),
    /// `-m set --match-set name flags`.
    Set(Box<SetMatch>),
    /// `-m physdev` (bridge ports under br_netfilter).
    Physdev(Box<PhysdevMatch>),
    /// `-m nfacct --nfacct-name`: counts, always matches.
    Nfacct(Box<str>),
}

/// `-m recent`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentMatch {
    /// The list name (`--name`, default `DEFAULT`).
    pub name: String,
    /// The command.
    pub cmd: RecentCmd,
    /// `--seconds`.
    pub seconds: Option<u32>,
    /// `--hitcount`.
    pub hitcount: Option<u32>,
    /// `--reap`.
    pub reap: bool,
    /// `--rdest` (else `--rsource`).
    pub rdest: bool,
    /// `--mask`.
    pub mask: Ipv4Addr,
    /// Inverted.
    pub invert: bool,
}

/// `-m set --match-set name flags`.
#[derive(Clone, Debug, PartialEq)]
pub struct SetMatch {
    /// Set name.
    pub name: String,
    /// Direction flags.
    pub flags: Vec<SetFlag>,
    /// Inverted.
    pub invert: bool,
}

/// `-m physdev` (bridge ports under br_netfilter).
#[derive(Clone, Debug, PartialEq)]
pub struct PhysdevMatch {
    /// `--physdev-in`.
    pub phys_in: Option<Neg<String>>,
    /// `--physdev-out`.
    pub phys_out: Option<Neg<String>>,
    /// `--physdev-is-in`.
    pub is_in: Option<bool>,
    /// `--physdev-is-out`.
    pub is_out: Option<bool>,
    /// `--physdev-is-bridged`.
    pub is_bridged: Option<bool>,
}

/// What REJECT sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RejectWith {
    /// ICMP port unreachable (the default).
    PortUnreachable,
    /// ICMP host unreachable.
    HostUnreachable,
    /// ICMP net unreachable.
    NetUnreachable,
    /// ICMP protocol unreachable.
    ProtoUnreachable,
    /// ICMP administratively prohibited.
    AdminProhibited,
    /// A TCP RST.
    TcpReset,
}

impl RejectWith {
    fn parse(s: &str) -> Option<RejectWith> {
        Some(match s {
            "icmp-port-unreachable" | "port-unreach" => RejectWith::PortUnreachable,
            "icmp-host-unreachable" | "host-unreach" => RejectWith::HostUnreachable,
            "icmp-net-unreachable" | "net-unreach" => RejectWith::NetUnreachable,
            "icmp-proto-unreachable" | "proto-unreach" => RejectWith::ProtoUnreachable,
            "icmp-admin-prohibited" | "admin-prohib" => RejectWith::AdminProhibited,
            "tcp-reset" | "tcp-rst" => RejectWith::TcpReset,
            _ => return None,
        })
    }

    /// The name `iptables-save` prints.
    pub fn name(self) -> &'static str {
        match self {
            RejectWith::PortUnreachable => "icmp-port-unreachable",
            RejectWith::HostUnreachable => "icmp-host-unreachable",
            RejectWith::NetUnreachable => "icmp-net-unreachable",
            RejectWith::ProtoUnreachable => "icmp-proto-unreachable",
            RejectWith::AdminProhibited => "icmp-admin-prohibited",
            RejectWith::TcpReset => "tcp-reset",
        }
    }

    /// ICMP destination-unreachable code, for the ICMP variants.
    pub fn icmp_code(self) -> Option<u8> {
        match self {
            RejectWith::NetUnreachable => Some(0),
            RejectWith::HostUnreachable => Some(1),
            RejectWith::ProtoUnreachable => Some(2),
            RejectWith::PortUnreachable => Some(3),
            RejectWith::AdminProhibited => Some(13),
            RejectWith::TcpReset => None,
        }
    }
}

/// A NAT address range with optional port range (`--to-destination 10.0.0.1:80`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NatRange {
    /// First address.
    pub addr_lo: Ipv4Addr,
    /// Last address.
    pub addr_hi: Ipv4Addr,
    /// Port range, when given.
    pub ports: Option<(u16, u16)>,
}

impl fmt::Display for NatRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr_lo)?;
        if self.addr_hi != self.addr_lo {
            write!(f, "-{}", self.addr_hi)?;
        }
        if let Some((lo, hi)) = self.ports {
            write!(f, ":{lo}")?;
            if hi != lo {
                write!(f, "-{hi}")?;
            }
        }
        Ok(())
    }
}

/// NAT port-selection flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatFlags {
    /// `--random`: randomise the port hash.
    pub random: bool,
    /// `--random-fully`: fully random port choice (never keeps the source port).
    pub random_fully: bool,
    /// `--persistent`.
    pub persistent: bool,
}

/// A rule's target.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// No `-j`: the rule only counts.
    None,
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j RETURN`.
    Return,
    /// `-j CHAIN`.
    Jump(ChainName),
    /// `-g CHAIN`.
    Goto(ChainName),
    /// `-j REJECT`.
    Reject(RejectWith),
    /// `-j DNAT --to-destination`.
    Dnat(NatRange, NatFlags),
    /// `-j SNAT --to-source`.
    Snat(NatRange, NatFlags),
    /// `-j MASQUERADE [--to-ports]`.
    Masquerade(Option<(u16, u16)>, NatFlags),
    /// `-j MARK`: `mark = (mark & !mask) ^ value` (every MARK option reduces to this).
    Mark {
        /// XOR value.
        value: u32,
        /// Mask of bits cleared first.
        mask: u32,
    },
    /// `-j LOG [--log-prefix]`: recorded in the trace.
    Log(String),
    /// `-j TRACE`.
    Trace,
    /// `-j NOTRACK` or `-j CT --notrack`.
    Notrack,
}

/// A chain name, held inline: iptables takes 1 to 28 characters (`XT_EXTENSION_MAXNAMELEN`
/// less its NUL), so a name is a 29-byte value that copies without allocating. Jump targets
/// and a table's chains are keyed by it; it hashes, compares and sorts as its text does, so
/// tables are looked up by `&str` too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChainName {
    len: u8,
    bytes: [u8; ChainName::MAX],
}

/// Why a text is not a chain name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad chain name '{0}' (1 to 28 characters)")]
pub struct ChainNameError(pub String);

impl ChainName {
    /// The longest name iptables takes.
    pub const MAX: usize = 28;

    /// `name`, if it is 1 to 28 bytes long.
    pub fn new(name: &str) -> Result<ChainName, ChainNameError> {
        ChainName::concat(&[name])
    }

    /// The concatenation of `parts` (`KUBE-SEP-` and a hash), without an intermediate
    /// string.
    pub fn concat(parts: &[&str]) -> Result<ChainName, ChainNameError> {
        let mut c = ChainName { len: 0, bytes: [0; ChainName::MAX] };
        for p in parts {
            let at = usize::from(c.len);
            let Some(dst) = c.bytes.get_mut(at..at + p.len()) else {
                return Err(ChainNameError(parts.concat()));
            };
            dst.copy_from_slice(p.as_bytes());
            c.len += p.len() as u8;
        }
        if c.len == 0 {
            return Err(ChainNameError(String::new()));
        }
        Ok(c)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ever filled from whole `&str`s: always valid UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::ops::Deref for ChainName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for ChainName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Hashes as its text does (`str`'s `Hash`), so maps keyed by names find `&str` keys.
impl std::hash::Hash for ChainName {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(self.as_bytes());
        h.write_u8(0xff);
    }
}

impl PartialOrd for ChainName {
    fn partial_cmp(&self, other: &ChainName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Sorts as its text does.
impl Ord for ChainName {
    fn cmp(&self, other: &ChainName) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialEq<str> for ChainName {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ChainName {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl TryFrom<&str> for ChainName {
    type Error = ChainNameError;
    fn try_from(name: &str) -> Result<ChainName, ChainNameError> {
        ChainName::new(name)
    }
}

impl serde::Serialize for ChainName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `-s`.
    pub src: Option<Neg<Ipv4Network>>,
    /// `-d`.
    pub dst: Option<Neg<Ipv4Network>>,
    /// `-i` (a trailing `+` is a prefix wildcard).
    pub in_iface: Option<Box<Neg<String>>>,
    /// `-o`.
    pub out_iface: Option<Box<Neg<String>>>,
    /// `-p`.
    pub proto: Option<Neg<Proto>>,
    /// `-m` extensions, in the order given (two fit inline: most rules allocate nothing
    /// for them).
    pub matches: Matches,
    /// The target.
    pub target: Target,
    /// How the restore form spells it.
    pub spelling: Spelling,
    /// Packet and byte counters.
    pub counters: (u64, u64),
}

/// A rule's `-m` extensions.
pub type Matches = smallvec::SmallVec<[Match; 2]>;

// A kube-proxy sync writes a third of a million rules and a walk reads them one after
// another: their size is memory traffic. On 64-bit targets a match is 24 bytes (rare, large
// matches are boxed) and a rule 160.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Match>() == 24);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Rule>() == 160);

/// Why a rule could not be parsed; `col` is a 1-based character column in `text`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {col}: {msg}")]
pub struct RuleError {
    /// 1-based column of the offending token.
    pub col: usize,
    /// What was wrong and what was expected.
    pub msg: String,
}

impl Rule {
    /// Parses the arguments of one rule (the text after `-A CHAIN `).
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let toks = tokenize(text)?;
        Parser { toks: &toks, pos: 0 }.rule(text)
    }

    /// The rule in `iptables-save` kernel form (without `-A CHAIN `).
    pub fn kernel_form(&self) -> String {
        let mut s = String::new();
        let sep = |s: &mut String| {
            if !s.is_empty() {
                s.push(' ');
            }
        };
        if let Some(n) = &self.src {
            sep(&mut s);
            let _ = write!(s, "{}-s {}", bang(n.invert), n.value);
        }
        if let Some(n) = &self.dst {
            sep(&mut s);
            let _ = write!(s, "{}-d {}", bang(n.invert), n.value);
        }
        if let Some(n) = &self.in_iface {
            sep(&mut s);
            let _ = write!(s, "{}-i {}", bang(n.invert), n.value);
        }
        if let Some(n) = &self.out_iface {
            sep(&mut s);
            let _ = write!(s, "{}-o {}", bang(n.invert), n.value);
        }
        if let Some(n) = &self.proto {
            sep(&mut s);
            let _ = write!(s, "{}-p {}", bang(n.invert), n.value);
        }
        for m in &self.matches {
            sep(&mut s);
            write_match(&mut s, m);
        }
        if self.target != Target::None {
            sep(&mut s);
            write_target(&mut s, &self.target);
        }
        s
    }

    /// The comment of the rule's first `-m comment`, if any.
    pub fn comment(&self) -> Option<&str> {
        self.matches.iter().find_map(|m| match m {
            Match::Comment(c) => Some(&**c),
            _ => None,
        })
    }

    /// The rule in restore form (without `-A CHAIN `): as written for a parsed rule, from its
    /// parts for a built one.
    pub fn restore_text(&self) -> std::borrow::Cow<'_, str> {
        match &self.spelling {
            Spelling::Text(t) => std::borrow::Cow::Borrowed(t),
            Spelling::Built(_) => {
                let mut s = String::with_capacity(96);
                self.write_restore(&mut s);
                std::borrow::Cow::Owned(s)
            }
        }
    }

    /// Appends [`Rule::restore_text`] to `s` (no intermediate `String` for a built rule).
    pub fn write_restore(&self, s: &mut String) {
        let parts = match &self.spelling {
            Spelling::Text(t) => return s.push_str(t),
            Spelling::Built(p) => p,
        };
        let start = s.len();
        for part in parts.iter() {
            let before = s.len();
            if before > start {
                s.push(' ');
            }
            let at = s.len();
            match part {
                Part::Src => write_addr_opt(s, "-s", self.src.as_ref()),
                Part::Dst => write_addr_opt(s, "-d", self.dst.as_ref()),
                Part::InIface => write_iface_opt(s, "-i", self.in_iface.as_deref()),
                Part::OutIface => write_iface_opt(s, "-o", self.out_iface.as_deref()),
                Part::Proto => {
                    if let Some(p) = &self.proto {
                        let _ = write!(s, "{}-p {}", bang(p.invert), p.value);
                    }
                }
                Part::Module(i) => {
                    if let Some(m) = self.matches.get(usize::from(i)) {
                        s.push_str("-m ");
                        s.push_str(module_name(m));
                    }
                }
                Part::Options(i) => {
                    if let Some(m) = self.matches.get(usize::from(i)) {
                        write_restore_options(s, m);
                    }
                }
                Part::Target => write_restore_target(s, &self.target),
            }
            if s.len() == at {
                // The part printed nothing (a match without options): no separator either.
                s.truncate(before);
            }
        }
    }
}

/// How a rule is spelled in restore form.
#[derive(Clone, Debug, PartialEq)]
pub enum Spelling {
    /// The argument text as written in restore input (after `-A CHAIN `).
    Text(Box<str>),
    /// A rule made with [`RuleBuilder`]: its parts in the order they were given.
    Built(Parts),
}

/// One part of a built rule's restore form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `[!] -s ADDR[/LEN]` (a /32 is written as the bare address, as kube-proxy writes it).
    Src,
    /// `[!] -d ADDR[/LEN]`.
    Dst,
    /// `[!] -i IFACE`.
    InIface,
    /// `[!] -o IFACE`.
    OutIface,
    /// `[!] -p PROTO`.
    Proto,
    /// `-m NAME` of match `i`.
    Module(u8),
    /// The options of match `i` (`--dport 80`, `--comment "…"`).
    Options(u8),
    /// `-j TARGET [options]`.
    Target,
}

/// The parts of a built rule, inline (no allocation per rule), one byte each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    len: u8,
    codes: [u8; Parts::CAP],
}

impl Parts {
    const CAP: usize = 14;
    /// Part codes: the fixed parts are 0 to 5, `Module(i)` is `MODULE + i` and `Options(i)`
    /// is `OPTIONS + i`, for `i` below [`Parts::MAX_MATCH`].
    const MODULE: u8 = 64;
    const OPTIONS: u8 = 128;
    const MAX_MATCH: u8 = 64;

    /// The parts in order.
    pub fn iter(&self) -> impl Iterator<Item = Part> + '_ {
        self.codes[..usize::from(self.len)].iter().map(|&c| match c {
            0 => Part::Src,
            1 => Part::Dst,
            2 => Part::InIface,
            3 => Part::OutIface,
            4 => Part::Proto,
            Parts::OPTIONS.. => Part::Options(c - Parts::OPTIONS),
            Parts::MODULE.. => Part::Module(c - Parts::MODULE),
            _ => Part::Target,
        })
    }

    /// Appends `p`; false when it does not fit.
    fn push(&mut self, p: Part) -> bool {
        let code = match p {
            Part::Src => 0,
            Part::Dst => 1,
            Part::InIface => 2,
            Part::OutIface => 3,
            Part::Proto => 4,
            Part::Target => 5,
            Part::Module(i) if i < Parts::MAX_MATCH => Parts::MODULE + i,
            Part::Options(i) if i < Parts::MAX_MATCH => Parts::OPTIONS + i,
            Part::Module(_) | Part::Options(_) => return false,
        };
        match self.codes.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = code;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

/// Makes a [`Rule`] in code, part by part in the order restore input would spell it, without
/// text to parse: `RuleBuilder::new().comment("ns/svc:http cluster IP").module(ports)
/// .proto(Proto::TCP).dst(ip).options().jump("KUBE-SVC-…")` is the rule
/// `-m comment --comment "ns/svc:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80
/// -j KUBE-SVC-…`, meaning and spelling both.
///
/// The builder checks what the parser checks of a rule's shape (a `-m tcp` needs `-p tcp`,
/// a comment needs text); [`RuleBuilder::build`] reports a violation as a [`RuleError`]
/// naming the part.
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    rule: Rule,
    parts: Parts,
    overflow: bool,
}

impl Default for RuleBuilder {
    fn default() -> Self {
        RuleBuilder::new()
    }
}

impl RuleBuilder {
    /// An empty rule (no matches, no target).
    #[inline]
    pub fn new() -> RuleBuilder {
        RuleBuilder {
            rule: Rule {
                src: None,
                dst: None,
                in_iface: None,
                out_iface: None,
                proto: None,
                matches: Matches::new(),
                target: Target::None,
                spelling: Spelling::Text(Box::default()),
                counters: (0, 0),
            },
            parts: Parts { len: 0, codes: [0; Parts::CAP] },
            overflow: false,
        }
    }

    #[inline]
    fn part(&mut self, p: Part) -> &mut RuleBuilder {
        self.overflow |= !self.parts.push(p);
        self
    }

    /// `[!] -s NET`.
    #[inline]
    pub fn src(&mut self, net: Ipv4Network, invert: bool) -> &mut RuleBuilder {
        self.rule.src = Some(Neg { value: net, invert });
        self.part(Part::Src)
    }

    /// `[!] -d NET`.
    #[inline]
    pub fn dst(&mut self, net: Ipv4Network, invert: bool) -> &mut RuleBuilder {
        self.rule.dst = Some(Neg { value: net, invert });
        self.part(Part::Dst)
    }

    /// `[!] -i IFACE`.
    #[inline]
    pub fn in_iface(&mut self, iface: &str, invert: bool) -> &mut RuleBuilder {
        self.rule.in_iface = Some(Box::new(Neg { value: iface.into(), invert }));
        self.part(Part::InIface)
    }

    /// `[!] -o IFACE`.
    #[inline]
    pub fn out_iface(&mut self, iface: &str, invert: bool) -> &mut RuleBuilder {
        self.rule.out_iface = Some(Box::new(Neg { value: iface.into(), invert }));
        self.part(Part::OutIface)
    }

    /// `-p PROTO`.
    #[inline]
    pub fn proto(&mut self, p: Proto) -> &mut RuleBuilder {
        self.rule.proto = Some(Neg { value: p, invert: false });
        self.part(Part::Proto)
    }

    /// `-m NAME OPTIONS`: a match with its options written right after it.
    #[inline]
    pub fn matching(&mut self, m: Match) -> &mut RuleBuilder {
        let i = self.rule.matches.len() as u8;
        self.module(m).part(Part::Options(i))
    }

    /// `-m NAME` alone: the match's options are written where [`RuleBuilder::options`] is
    /// called (kube-proxy writes `-m tcp -p tcp -d IP --dport 80`).
    #[inline]
    pub fn module(&mut self, m: Match) -> &mut RuleBuilder {
        let i = self.rule.matches.len();
        self.rule.matches.push(m);
        self.overflow |= i > usize::from(u8::MAX);
        self.part(Part::Module(i as u8))
    }

    /// The options of the latest [`RuleBuilder::module`], here.
    #[inline]
    pub fn options(&mut self) -> &mut RuleBuilder {
        let i = self.rule.matches.len().saturating_sub(1) as u8;
        self.part(Part::Options(i))
    }

    /// `-m comment --comment TEXT`.
    #[inline]
    pub fn comment(&mut self, text: impl Into<Arc<str>>) -> &mut RuleBuilder {
        self.matching(Match::Comment(text.into()))
    }

    /// `-j CHAIN`; finishes the rule.
    #[inline]
    pub fn jump(&mut self, chain: ChainName) -> Result<Rule, RuleError> {
        self.target(Target::Jump(chain))
    }

    /// The target; finishes the rule.
    #[inline]
    pub fn target(&mut self, t: Target) -> Result<Rule, RuleError> {
        self.rule.target = t;
        self.part(Part::Target);
        self.build()
    }

    /// Finishes the rule (without a target unless one was given), leaving the builder
    /// empty.
    pub fn build(&mut self) -> Result<Rule, RuleError> {
        for (i, m) in self.rule.matches.iter().enumerate() {
            check_match(m, &self.rule.proto)
                .map_err(|msg| RuleError { col: i + 1, msg: format!("match {}: {msg}", i + 1) })?;
        }
        let parts = self.parts;
        let overflow = self.overflow;
        let mut rule = std::mem::take(self).rule;
        rule.spelling = Spelling::Built(parts);
        if overflow {
            // More parts than fit inline: the kernel form is an exact spelling too.
            rule.spelling = Spelling::Text(rule.kernel_form().into());
        }
        Ok(rule)
    }
}

impl Match {
    /// `-m statistic --mode random --probability p`: the kernel keeps `lround(p * 2^31)`
    /// (libxt_statistic).
    pub fn random(p: f64, invert: bool) -> Match {
        let threshold = (p * f64::from(0x8000_0000u32)).round() as u32;
        Match::Random { threshold, probability: p, invert }
    }
}

fn write_addr_opt(s: &mut String, opt: &str, n: Option<&Neg<Ipv4Network>>) {
    let Some(n) = n else { return };
    let _ = write!(s, "{}{opt} ", bang(n.invert));
    let _ = write_ipv4(s, n.value.ip());
    if n.value.prefix() != 32 {
        let _ = write!(s, "/{}", n.value.prefix());
    }
}

fn write_iface_opt(s: &mut String, opt: &str, n: Option<&Neg<String>>) {
    if let Some(n) = n {
        let _ = write!(s, "{}{opt} {}", bang(n.invert), n.value);
    }
}

/// Writes a dotted quad without `Ipv4Addr`'s padding-aware formatter (a third of the time
/// of formatting kube-proxy's payload went there).
pub fn write_ipv4(w: &mut impl Write, a: Ipv4Addr) -> fmt::Result {
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    w.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
}

/// `-m recent`'s command and the options that qualify it: `[!] --rcheck --seconds S --reap
/// --hitcount H`.
fn write_recent_command(
    s: &mut String,
    cmd: RecentCmd,
    invert: bool,
    seconds: Option<u32>,
    reap: bool,
    hitcount: Option<u32>,
) {
    s.push_str(bang(invert));
    s.push_str(match cmd {
        RecentCmd::Set => "--set",
        RecentCmd::Rcheck => "--rcheck",
        RecentCmd::Update => "--update",
        RecentCmd::Remove => "--remove",
    });
    if let Some(sec) = seconds {
        let _ = write!(s, " --seconds {sec}");
    }
    if reap {
        s.push_str(" --reap");
    }
    if let Some(h) = hitcount {
        let _ = write!(s, " --hitcount {h}");
    }
}

/// The `-m` name of a match.
fn module_name(m: &Match) -> &'static str {
    match m {
        Match::Ports { proto, .. } => match *proto {
            Proto::TCP => "tcp",
            Proto::UDP => "udp",
            _ => "sctp",
        },
        Match::Icmp { .. } => "icmp",
        Match::Multiport { .. } => "multiport",
        Match::Comment(_) => "comment",
        Match::Conntrack { legacy_state: true, .. } => "state",
        Match::Conntrack { .. } => "conntrack",
        Match::Mark(_) => "mark",
        Match::AddrType { .. } => "addrtype",
        Match::Random { .. } | Match::Nth { .. } => "statistic",
        Match::Recent(_) => "recent",
        Match::Set(_) => "set",
        Match::Physdev(_) => "physdev",
        Match::Nfacct(_) => "nfacct",
    }
}

/// A `--comment` argument as restore input spells it: bare when it is one word, else in
/// double quotes with quotes and backslashes escaped.
pub fn write_comment_arg(s: &mut String, c: &str) {
    if !c.is_empty() && !c.contains([' ', '"', '\\', '\t']) {
        s.push_str(c);
    } else {
        write_quoted(s, c);
    }
}

/// A match's options in restore notation: the kernel form's, except where kube-proxy's
/// spelling differs (comments quoted only when needed, the probability with 10 decimals,
/// `-m recent`'s options in the order it writes them).
fn write_restore_options(s: &mut String, m: &Match) {
    match m {
        Match::Ports { sport, dport, tcp_flags: None, .. } => {
            let mut sep = "";
            for (opt, p) in [("--sport", sport), ("--dport", dport)] {
                if let Some(p) = p {
                    let _ = write!(s, "{sep}{}{opt} ", bang(p.invert));
                    if p.value.lo == p.value.hi {
                        let _ = write!(s, "{}", p.value.lo);
                    } else {
                        let _ = write!(s, "{}", p.value);
                    }
                    sep = " ";
                }
            }
        }
        Match::Comment(c) => {
            s.push_str("--comment ");
            write_comment_arg(s, c);
        }
        Match::Random { probability, invert, .. } => {
            let _ = write!(s, "--mode random {}--probability {probability:.10}", bang(*invert));
        }
        Match::Recent(r) => {
            let RecentMatch { name, cmd, seconds, hitcount, reap, rdest, mask, invert } = &**r;
            let _ = write!(s, "--name {name} ");
            write_recent_command(s, *cmd, *invert, *seconds, *reap, *hitcount);
            if *mask != Ipv4Addr::BROADCAST {
                let _ = write!(s, " --mask {mask}");
            }
            if *rdest {
                s.push_str(" --rdest");
            }
        }
        _ => {
            // The kernel form's options: what follows `-m NAME `.
            let mut k = String::new();
            write_match(&mut k, m);
            let name_len = "-m ".len() + module_name(m).len();
            s.push_str(k.get(name_len..).unwrap_or("").trim_start());
        }
    }
}

/// A target in restore notation: a plain `-j REJECT` for the default ICMP port
/// unreachable (as kube-proxy writes it), the kernel form otherwise.
fn write_restore_target(s: &mut String, t: &Target) {
    match t {
        Target::Reject(RejectWith::PortUnreachable) => s.push_str("-j REJECT"),
        Target::Jump(c) => {
            s.push_str("-j ");
            s.push_str(c);
        }
        Target::Dnat(r, f) if *f == NatFlags::default() && r.addr_lo == r.addr_hi => {
            s.push_str("-j DNAT --to-destination ");
            let _ = write_ipv4(s, r.addr_lo);
            if let Some((lo, hi)) = r.ports {
                let _ = write!(s, ":{lo}");
                if hi != lo {
                    let _ = write!(s, "-{hi}");
                }
            }
        }
        t => write_target(s, t),
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    write_quoted(&mut q, s);
    q
}

/// `text` in double quotes, quotes and backslashes escaped, as iptables-restore reads it.
fn write_quoted(s: &mut String, text: &str) {
    s.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
}

fn write_match(s: &mut String, m: &Match) {
    match m {
        Match::Ports { proto, sport, dport, tcp_flags } => {
            let _ = write!(s, "-m {proto}");
            if let Some(p) = sport {
                let _ = write!(s, " {}--sport {}", bang(p.invert), p.value);
            }
            if let Some(p) = dport {
                let _ = write!(s, " {}--dport {}", bang(p.invert), p.value);
            }
            if let Some(f) = tcp_flags {
                let _ = write!(
                    s,
                    " {}--tcp-flags {} {}",
                    bang(f.invert),
                    tcp_flag_names(f.value.0),
                    tcp_flag_names(f.value.1)
                );
            }
        }
        Match::Icmp { icmp_type } => {
            s.push_str("-m icmp");
            if let Some(t) = icmp_type {
                let _ = write!(s, " {}--icmp-type {}", bang(t.invert), t.value.0);
                if let Some(c) = t.value.1 {
                    let _ = write!(s, "/{c}");
                }
            }
        }
        Match::Multiport { which, ports } => {
            let opt = ["--sports", "--dports", "--ports"][usize::from(*which).min(2)];
            let list: Vec<String> = ports.value.iter().map(ToString::to_string).collect();
            let _ = write!(s, "-m multiport {}{opt} {}", bang(ports.invert), list.join(","));
        }
        Match::Comment(c) => {
            let _ = write!(s, "-m comment --comment {}", quote(c));
        }
        Match::Conntrack { legacy_state, ctstate, ctorigdst } => {
            if *legacy_state {
                s.push_str("-m state");
                if let Some(st) = ctstate {
                    let _ = write!(s, " {}--state {}", bang(st.invert), ctstate_names(st.value));
                }
                return;
            }
            s.push_str("-m conntrack");
            if let Some(st) = ctstate {
                let _ = write!(s, " {}--ctstate {}", bang(st.invert), ctstate_names(st.value));
            }
            if let Some(d) = ctorigdst {
                let _ = write!(s, " {}--ctorigdst {}", bang(d.invert), d.value);
            }
        }
        Match::Mark(n) => {
            let _ = write!(s, "-m mark {}--mark {:#x}", bang(n.invert), n.value.0);
            if n.value.1 != u32::MAX {
                let _ = write!(s, "/{:#x}", n.value.1);
            }
        }
        Match::AddrType { src, dst, limit_iface_in, limit_iface_out } => {
            s.push_str("-m addrtype");
            if let Some(t) = src {
                let _ = write!(s, " {}--src-type {}", bang(t.invert), addrtype_names(t.value));
            }
            if let Some(t) = dst {
                let _ = write!(s, " {}--dst-type {}", bang(t.invert), addrtype_names(t.value));
            }
            if *limit_iface_in {
                s.push_str(" --limit-iface-in");
            }
            if *limit_iface_out {
                s.push_str(" --limit-iface-out");
            }
        }
        Match::Random { threshold, invert, .. } => {
            let p = f64::from(*threshold) / f64::from(0x8000_0000u32);
            let _ = write!(s, "-m statistic --mode random {}--probability {p:.11}", bang(*invert));
        }
        Match::Nth { every, packet, invert, .. } => {
            let _ = write!(
                s,
                "-m statistic --mode nth {}--every {every} --packet {packet}",
                bang(*invert)
            );
        }
        Match::Recent(r) => {
            let RecentMatch { name, cmd, seconds, hitcount, reap, rdest, mask, invert } = &**r;
            s.push_str("-m recent ");
            write_recent_command(s, *cmd, *invert, *seconds, *reap, *hitcount);
            let _ = write!(
                s,
                " --name {name} --mask {mask} {}",
                if *rdest { "--rdest" } else { "--rsource" }
            );
        }
        Match::Set(m) => {
            let SetMatch { name, flags, invert } = &**m;
            let f: Vec<&str> =
                flags.iter().map(|f| if *f == SetFlag::Src { "src" } else { "dst" }).collect();
            let _ = write!(s, "-m set {}--match-set {name} {}", bang(*invert), f.join(","));
        }
        Match::Physdev(m) => {
            let PhysdevMatch { phys_in, phys_out, is_in, is_out, is_bridged } = &**m;
            s.push_str("-m physdev");
            if let Some(n) = phys_in {
                let _ = write!(s, " {}--physdev-in {}", bang(n.invert), n.value);
            }
            if let Some(n) = phys_out {
                let _ = write!(s, " {}--physdev-out {}", bang(n.invert), n.value);
            }
            for (v, name) in [(is_in, "is-in"), (is_out, "is-out"), (is_bridged, "is-bridged")] {
                if let Some(inv) = v {
                    let _ = write!(s, " {}--physdev-{name}", bang(!*inv));
                }
            }
        }
        Match::Nfacct(name) => {
            let _ = write!(s, "-m nfacct --nfacct-name {name}");
        }
    }
}

fn write_target(s: &mut String, t: &Target) {
    let flags = |s: &mut String, f: &NatFlags| {
        if f.random {
            s.push_str(" --random");
        }
        if f.random_fully {
            s.push_str(" --random-fully");
        }
        if f.persistent {
            s.push_str(" --persistent");
        }
    };
    match t {
        Target::None => {}
        Target::Accept => s.push_str("-j ACCEPT"),
        Target::Drop => s.push_str("-j DROP"),
        Target::Return => s.push_str("-j RETURN"),
        Target::Jump(c) => {
            let _ = write!(s, "-j {c}");
        }
        Target::Goto(c) => {
            let _ = write!(s, "-g {c}");
        }
        Target::Reject(w) => {
            let _ = write!(s, "-j REJECT --reject-with {}", w.name());
        }
        Target::Dnat(r, f) => {
            let _ = write!(s, "-j DNAT --to-destination {r}");
            flags(s, f);
        }
        Target::Snat(r, f) => {
            let _ = write!(s, "-j SNAT --to-source {r}");
            flags(s, f);
        }
        Target::Masquerade(ports, f) => {
            s.push_str("-j MASQUERADE");
            if let Some((lo, hi)) = ports {
                let _ = write!(s, " --to-ports {lo}");
                if hi != lo {
                    let _ = write!(s, "-{hi}");
                }
            }
            flags(s, f);
        }
        Target::Mark { value, mask } => {
            let _ = write!(s, "-j MARK --set-xmark {value:#x}/{mask:#x}");
        }
        Target::Log(prefix) => {
            s.push_str("-j LOG");
            if !prefix.is_empty() {
                let _ = write!(s, " --log-prefix {}", quote(prefix));
            }
        }
        Target::Trace => s.push_str("-j TRACE"),
        Target::Notrack => s.push_str("-j CT --notrack"),
    }
}

fn ctstate_names(bits: u8) -> String {
    ctstate::NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn addrtype_names(bits: u16) -> String {
    addrtype::NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

const TCP_FLAG_NAMES: [(u8, &str); 6] =
    [(0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG")];

fn tcp_flag_names(bits: u8) -> String {
    if bits == 0 {
        return "NONE".into();
    }
    TCP_FLAG_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

/// A token and the 1-based column it started at. Tokens without quotes or escapes borrow
/// the line (most of a kube-proxy payload); the rest own their unquoted text.
#[derive(Clone, Debug)]
pub(crate) struct Tok<'t> {
    pub(crate) s: std::borrow::Cow<'t, str>,
    pub(crate) col: usize,
}

impl<'t> Tok<'t> {
    /// A finished word: `raw` as written, or `owned` when quotes or escapes changed it.
    fn new(
        raw: &'t str,
        owned: Option<String>,
        in_quote: bool,
        col: usize,
    ) -> Result<Tok<'t>, RuleError> {
        if in_quote {
            return Err(RuleError { col, msg: "unterminated double quote".into() });
        }
        let s = match owned {
            Some(o) => std::borrow::Cow::Owned(o),
            None => std::borrow::Cow::Borrowed(raw),
        };
        Ok(Tok { s, col })
    }
}

/// Splits a rule line as iptables-restore does: whitespace-separated words, double quotes
/// group words, a backslash escapes the next character inside quotes.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Tok<'_>>, RuleError> {
    if text.is_ascii() { tokenize_ascii(text) } else { tokenize_chars(text) }
}

/// [`tokenize`] for ASCII text (every rule kube-proxy writes): bytes are characters, so a
/// column is a byte offset plus one.
fn tokenize_ascii(text: &str) -> Result<Vec<Tok<'_>>, RuleError> {
    // `char::is_whitespace` over ASCII.
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let b = text.as_bytes();
    let n = b.len();
    let mut toks = Vec::with_capacity(16);
    let mut i = 0;
    while i < n {
        if ws(b[i]) {
            i += 1;
            continue;
        }
        let (start, col) = (i, i + 1);
        let mut owned: Option<String> = None;
        let mut in_quote = false;
        let mut end = n;
        while i < n {
            let c = b[i];
            if !in_quote && ws(c) {
                end = i;
                break;
            }
            i += 1;
            match c {
                b'"' => {
                    owned.get_or_insert_with(|| text[start..i - 1].to_string());
                    in_quote = !in_quote;
                }
                b'\\' if in_quote => {
                    let o = owned.get_or_insert_with(|| text[start..i - 1].to_string());
                    if i < n {
                        o.push(char::from(b[i]));
                        i += 1;
                    }
                }
                _ => {
                    if let Some(o) = owned.as_mut() {
                        o.push(char::from(c));
                    }
                }
            }
        }
        toks.push(Tok::new(&text[start..end], owned, in_quote, col)?);
    }
    Ok(toks)
}

/// [`tokenize`] for any text, columns counted in characters.
fn tokenize_chars(text: &str) -> Result<Vec<Tok<'_>>, RuleError> {
    let mut toks = Vec::with_capacity(16);
    // Columns count characters, tracked as we go (never recounted from the line start).
    let mut chars = text.char_indices().enumerate().peekable();
    while let Some(&(col0, (start, c))) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let col = col0 + 1;
        let mut owned: Option<String> = None;
        let mut in_quote = false;
        let mut end = text.len();
        while let Some(&(_, (i, c))) = chars.peek() {
            if !in_quote && c.is_whitespace() {
                end = i;
                break;
            }
            chars.next();
            match c {
                '"' => {
                    owned.get_or_insert_with(|| text[start..i].to_string());
                    in_quote = !in_quote;
                }
                '\\' if in_quote => {
                    let o = owned.get_or_insert_with(|| text[start..i].to_string());
                    if let Some((_, (_, n))) = chars.next() {
                        o.push(n);
                    }
                }
                _ => {
                    if let Some(o) = owned.as_mut() {
                        o.push(c);
                    }
                }
            }
        }
        toks.push(Tok::new(&text[start..end], owned, in_quote, col)?);
    }
    Ok(toks)
}

struct Parser<'a> {
    toks: &'a [Tok<'a>],
    pos: usize,
}

/// Which `-m` module an option belongs to while parsing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Module {
    Ports(Proto),
    Icmp,
    Multiport,
    Comment,
    Conntrack,
    State,
    Mark,
    AddrType,
    Statistic,
    Recent,
    Set,
    Physdev,
    Nfacct,
}

impl Module {
    fn from_name(name: &str) -> Option<Module> {
        Some(match name {
            "tcp" => Module::Ports(Proto::TCP),
            "udp" => Module::Ports(Proto::UDP),
            "sctp" => Module::Ports(Proto::SCTP),
            "icmp" => Module::Icmp,
            "multiport" => Module::Multiport,
            "comment" => Module::Comment,
            "conntrack" => Module::Conntrack,
            "state" => Module::State,
            "mark" => Module::Mark,
            "addrtype" => Module::AddrType,
            "statistic" => Module::Statistic,
            "recent" => Module::Recent,
            "set" => Module::Set,
            "physdev" => Module::Physdev,
            "nfacct" => Module::Nfacct,
            _ => return None,
        })
    }

    fn owns(self, opt: &str) -> bool {
        let opts: &[&str] = match self {
            Module::Ports(Proto::TCP) => &[
                "--sport",
                "--dport",
                "--source-port",
                "--destination-port",
                "--tcp-flags",
                "--syn",
            ],
            Module::Ports(_) => &["--sport", "--dport", "--source-port", "--destination-port"],
            Module::Icmp => &["--icmp-type"],
            Module::Multiport => {
                &["--sports", "--dports", "--ports", "--source-ports", "--destination-ports"]
            }
            Module::Comment => &["--comment"],
            Module::Conntrack => &["--ctstate", "--ctorigdst"],
            Module::State => &["--state"],
            Module::Mark => &["--mark"],
            Module::AddrType => {
                &["--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out"]
            }
            Module::Statistic => &["--mode", "--probability", "--every", "--packet"],
            Module::Recent => &[
                "--name",
                "--set",
                "--rcheck",
                "--update",
                "--remove",
                "--seconds",
                "--reap",
                "--hitcount",
                "--rsource",
                "--rdest",
                "--mask",
            ],
            Module::Set => &["--match-set"],
            Module::Physdev => &[
                "--physdev-in",
                "--physdev-out",
                "--physdev-is-in",
                "--physdev-is-out",
                "--physdev-is-bridged",
            ],
            Module::Nfacct => &["--nfacct-name"],
        };
        opts.contains(&opt)
    }

    fn empty(self) -> Match {
        match self {
            Module::Ports(proto) => {
                Match::Ports { proto, sport: None, dport: None, tcp_flags: None }
            }
            Module::Icmp => Match::Icmp { icmp_type: None },
            Module::Multiport => Match::Multiport {
                which: 1,
                ports: Box::new(Neg { value: Vec::new(), invert: false }),
            },
            Module::Comment => Match::Comment(Arc::from("")),
            Module::Conntrack | Module::State => Match::Conntrack {
                legacy_state: self == Module::State,
                ctstate: None,
                ctorigdst: None,
            },
            Module::Mark => Match::Mark(Neg { value: (0, u32::MAX), invert: false }),
            Module::AddrType => Match::AddrType {
                src: None,
                dst: None,
                limit_iface_in: false,
                limit_iface_out: false,
            },
            Module::Statistic => Match::Random { threshold: 0, probability: 0.0, invert: false },
            Module::Recent => Match::Recent(Box::new(RecentMatch {
                name: "DEFAULT".into(),
                cmd: RecentCmd::Rcheck,
                seconds: None,
                hitcount: None,
                reap: false,
                rdest: false,
                mask: Ipv4Addr::BROADCAST,
                invert: false,
            })),
            Module::Set => Match::Set(Box::new(SetMatch {
                name: String::new(),
                flags: Vec::new(),
                invert: false,
            })),
            Module::Physdev => Match::Physdev(Box::new(PhysdevMatch {
                phys_in: None,
                phys_out: None,
                is_in: None,
                is_out: None,
                is_bridged: None,
            })),
            Module::Nfacct => Match::Nfacct(Box::default()),
        }
    }
}

impl<'a> Parser<'a> {
    fn err<T>(&self, col: usize, msg: impl Into<String>) -> Result<T, RuleError> {
        Err(RuleError { col, msg: msg.into() })
    }

    fn end_col(&self) -> usize {
        self.toks.last().map_or(1, |t| t.col + t.s.chars().count())
    }

    fn value(&mut self, opt: &Tok<'_>) -> Result<&'a Tok<'a>, RuleError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => self.err(self.end_col(), format!("option {} needs a value", opt.s)),
        }
    }

    fn peek_is_value(&self) -> bool {
        self.toks.get(self.pos).is_some_and(|t| !t.s.starts_with('-') || t.s == "-")
    }

    fn rule(mut self, text: &str) -> Result<Rule, RuleError> {
        let mut rule = Rule {
            src: None,
            dst: None,
            in_iface: None,
            out_iface: None,
            proto: None,
            matches: Matches::new(),
            target: Target::None,
            spelling: Spelling::Text(text.trim().into()),
            counters: (0, 0),
        };
        let mut modules: Vec<Module> = Vec::new();
        let mut target_tok: Option<(&Tok<'_>, Vec<&Tok<'_>>)> = None;
        let mut goto = false;
        let mut invert = false;
        while self.pos < self.toks.len() {
            let tok = &self.toks[self.pos];
            self.pos += 1;
            if let Some((_, opts)) = target_tok.as_mut()
                && tok.s.starts_with("--")
            {
                // Target options.
                opts.push(tok);
                while self.peek_is_value() {
                    opts.push(&self.toks[self.pos]);
                    self.pos += 1;
                }
                continue;
            }
            match &*tok.s {
                "!" => {
                    if invert {
                        return self.err(tok.col, "double '!'");
                    }
                    invert = true;
                    continue;
                }
                "-s" | "--source" | "--src" => {
                    let v = self.value(tok)?;
                    rule.src = Some(Neg { value: parse_net(v)?, invert });
                }
                "-d" | "--destination" | "--dst" => {
                    let v = self.value(tok)?;
                    rule.dst = Some(Neg { value: parse_net(v)?, invert });
                }
                "-i" | "--in-interface" => {
                    let v = self.value(tok)?;
                    rule.in_iface = Some(Box::new(Neg { value: v.s.to_string(), invert }));
                }
                "-o" | "--out-interface" => {
                    let v = self.value(tok)?;
                    rule.out_iface = Some(Box::new(Neg { value: v.s.to_string(), invert }));
                }
                "-p" | "--protocol" => {
                    let v = self.value(tok)?;
                    let value = if v.s == "all" {
                        None
                    } else {
                        Some(Proto::parse(&v.s).ok_or_else(|| RuleError {
                            col: v.col,
                            msg: format!("unknown protocol '{}' (expected tcp, udp, icmp, sctp, all or a number)", v.s),
                        })?)
                    };
                    rule.proto = value.map(|value| Neg { value, invert });
                }
                "-m" | "--match" => {
                    if invert {
                        return self.err(tok.col, "'!' cannot precede -m");
                    }
                    let v = self.value(tok)?;
                    let m = Module::from_name(&v.s).ok_or_else(|| RuleError {
                        col: v.col,
                        msg: format!("unsupported match extension '-m {}'", v.s),
                    })?;
                    modules.push(m);
                    rule.matches.push(m.empty());
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    if invert {
                        return self.err(tok.col, "'!' cannot precede a target");
                    }
                    if target_tok.is_some() {
                        return self.err(tok.col, "more than one target");
                    }
                    goto = tok.s == "-g" || tok.s == "--goto";
                    let v = self.value(tok)?;
                    target_tok = Some((v, Vec::new()));
                }
                o if o.starts_with("--") => {
                    // An extension option: the latest loaded module that knows it.
                    let idx = match modules.iter().rposition(|m| m.owns(o)) {
                        Some(i) => i,
                        None => {
                            // iptables loads the protocol's own match implicitly.
                            let implicit = rule
                                .proto
                                .as_ref()
                                .filter(|p| !p.invert)
                                .and_then(|p| Module::from_name(&p.value.to_string()));
                            match implicit {
                                Some(m) if m.owns(o) => {
                                    modules.push(m);
                                    rule.matches.push(m.empty());
                                    modules.len() - 1
                                }
                                _ => {
                                    return self.err(
                                        tok.col,
                                        format!("unknown option '{o}' (no loaded match extension takes it)"),
                                    );
                                }
                            }
                        }
                    };
                    self.module_opt(&mut rule.matches[idx], tok, invert)?;
                }
                _ => {
                    return self.err(
                        tok.col,
                        format!(
                            "unexpected '{}' (expected an option such as -s, -d, -p, -m or -j)",
                            tok.s
                        ),
                    );
                }
            }
            invert = false;
        }
        if invert {
            return self.err(self.end_col(), "'!' at the end of the rule");
        }
        for m in &rule.matches {
            check_match(m, &rule.proto).map_err(|msg| RuleError { col: 1, msg })?;
        }
        if let Some((t, opts)) = target_tok {
            rule.target = parse_target(t, &opts, goto)?;
        }
        Ok(rule)
    }

    fn module_opt(&mut self, m: &mut Match, tok: &Tok<'_>, invert: bool) -> Result<(), RuleError> {
        let o = &*tok.s;
        match m {
            Match::Ports { sport, dport, tcp_flags, .. } => match o {
                "--sport" | "--source-port" => {
                    let v = self.value(tok)?;
                    *sport = Some(Neg { value: parse_port_range(v)?, invert });
                }
                "--dport" | "--destination-port" => {
                    let v = self.value(tok)?;
                    *dport = Some(Neg { value: parse_port_range(v)?, invert });
                }
                "--syn" => *tcp_flags = Some(Neg { value: (0x17, 0x02), invert }),
                _ => {
                    let mask = self.value(tok)?;
                    let comp = self.value(tok)?;
                    *tcp_flags = Some(Neg {
                        value: (parse_tcp_flags(mask)?, parse_tcp_flags(comp)?),
                        invert,
                    });
                }
            },
            Match::Icmp { icmp_type } => {
                let v = self.value(tok)?;
                let (t, c) = match v.s.split_once('/') {
                    Some((t, c)) => (t, Some(c)),
                    None => (&*v.s, None),
                };
                let ty = icmp_type_number(t).ok_or_else(|| RuleError {
                    col: v.col,
                    msg: format!("unknown ICMP type '{t}'"),
                })?;
                let code = c.map(|c| parse_num::<u8>(c, v.col)).transpose()?;
                *icmp_type = Some(Neg { value: (ty, code), invert });
            }
            Match::Multiport { which, ports } => {
                *which = match o {
                    "--sports" | "--source-ports" => 0,
                    "--dports" | "--destination-ports" => 1,
                    _ => 2,
                };
                let v = self.value(tok)?;
                let mut list = Vec::new();
                for p in v.s.split(',') {
                    list.push(parse_port_range(&Tok {
                        s: std::borrow::Cow::Borrowed(p),
                        col: v.col,
                    })?);
                }
                **ports = Neg { value: list, invert };
            }
            Match::Comment(c) => {
                *c = Arc::from(&*self.value(tok)?.s);
            }
            Match::Conntrack { ctstate, ctorigdst, .. } => match o {
                "--ctstate" | "--state" => {
                    let v = self.value(tok)?;
                    let mut bits = 0;
                    for name in v.s.split(',') {
                        bits |= ctstate::NAMES
                            .iter()
                            .find(|(_, n)| *n == name)
                            .map(|(b, _)| *b)
                            .ok_or_else(|| RuleError {
                                col: v.col,
                                msg: format!("unknown conntrack state '{name}'"),
                            })?;
                    }
                    *ctstate = Some(Neg { value: bits, invert });
                }
                _ => {
                    let v = self.value(tok)?;
                    *ctorigdst = Some(Neg { value: parse_net(v)?, invert });
                }
            },
            Match::Mark(n) => {
                let v = self.value(tok)?;
                *n = Neg { value: parse_value_mask(v)?, invert };
            }
            Match::AddrType { src, dst, limit_iface_in, limit_iface_out } => match o {
                "--src-type" | "--dst-type" => {
                    let v = self.value(tok)?;
                    let mut bits = 0;
                    for name in v.s.split(',') {
                        bits |= addrtype::NAMES
                            .iter()
                            .find(|(_, n)| *n == name)
                            .map(|(b, _)| *b)
                            .ok_or_else(|| RuleError {
                            col: v.col,
                            msg: format!("unknown address type '{name}'"),
                        })?;
                    }
                    let n = Some(Neg { value: bits, invert });
                    if o == "--src-type" { *src = n } else { *dst = n }
                }
                "--limit-iface-in" => *limit_iface_in = true,
                _ => *limit_iface_out = true,
            },
            Match::Random { .. } | Match::Nth { .. } => self.statistic_opt(m, tok, invert)?,
            Match::Recent(r) => {
                let RecentMatch { name, cmd, seconds, hitcount, reap, rdest, mask, invert: inv } =
                    &mut **r;
                match o {
                    "--name" => *name = self.value(tok)?.s.to_string(),
                    "--set" | "--rcheck" | "--update" | "--remove" => {
                        *cmd = match o {
                            "--set" => RecentCmd::Set,
                            "--rcheck" => RecentCmd::Rcheck,
                            "--update" => RecentCmd::Update,
                            _ => RecentCmd::Remove,
                        };
                        *inv = invert;
                    }
                    "--seconds" => {
                        let v = self.value(tok)?;
                        *seconds = Some(parse_num(&v.s, v.col)?);
                    }
                    "--hitcount" => {
                        let v = self.value(tok)?;
                        *hitcount = Some(parse_num(&v.s, v.col)?);
                    }
                    "--reap" => *reap = true,
                    "--rsource" => *rdest = false,
                    "--rdest" => *rdest = true,
                    _ => {
                        let v = self.value(tok)?;
                        *mask = v.s.parse().map_err(|_| RuleError {
                            col: v.col,
                            msg: format!("bad --mask '{}' (expected a dotted IPv4 netmask)", v.s),
                        })?;
                    }
                }
            }
            Match::Set(m) => {
                let SetMatch { name, flags, invert: inv } = &mut **m;
                *name = self.value(tok)?.s.to_string();
                let f = self.value(tok)?;
                for part in f.s.split(',') {
                    flags.push(match part {
                        "src" => SetFlag::Src,
                        "dst" => SetFlag::Dst,
                        _ => {
                            return self.err(
                                f.col,
                                format!("bad set flag '{part}' (expected src or dst)"),
                            );
                        }
                    });
                }
                *inv = invert;
            }
            Match::Physdev(m) => match o {
                "--physdev-in" => {
                    m.phys_in = Some(Neg { value: self.value(tok)?.s.to_string(), invert })
                }
                "--physdev-out" => {
                    m.phys_out = Some(Neg { value: self.value(tok)?.s.to_string(), invert })
                }
                "--physdev-is-in" => m.is_in = Some(!invert),
                "--physdev-is-out" => m.is_out = Some(!invert),
                _ => m.is_bridged = Some(!invert),
            },
            Match::Nfacct(n) => *n = self.value(tok)?.s.as_ref().into(),
        }
        Ok(())
    }

    fn statistic_opt(
        &mut self,
        m: &mut Match,
        tok: &Tok<'_>,
        invert: bool,
    ) -> Result<(), RuleError> {
        let v = self.value(tok)?;
        match &*tok.s {
            "--mode" => match &*v.s {
                "random" => {
                    if !matches!(m, Match::Random { .. }) {
                        *m = Match::Random { threshold: 0, probability: 0.0, invert: false };
                    }
                }
                "nth" => {
                    if !matches!(m, Match::Nth { .. }) {
                        *m = Match::Nth {
                            every: 0,
                            packet: 0,
                            count: NthCount::default(),
                            invert: false,
                        };
                    }
                }
                other => {
                    return self.err(
                        v.col,
                        format!("unknown statistic mode '{other}' (expected random or nth)"),
                    );
                }
            },
            "--probability" => {
                let p: f64 = v.s.parse().map_err(|_| RuleError {
                    col: v.col,
                    msg: format!("bad probability '{}' (expected a number from 0 to 1)", v.s),
                })?;
                if !(0.0..=1.0).contains(&p) {
                    return self.err(v.col, format!("probability {p} is outside 0..1"));
                }
                *m = Match::random(p, invert);
            }
            "--every" => {
                let n = parse_num(&v.s, v.col)?;
                if let Match::Nth { every, invert: i, .. } = m {
                    *every = n;
                    *i = invert;
                }
            }
            _ => {
                let n = parse_num(&v.s, v.col)?;
                if let Match::Nth { packet, count, .. } = m {
                    *packet = n;
                    count.set(n);
                }
            }
        }
        Ok(())
    }
}

/// What a complete rule needs of a match: `-m tcp` needs `-p tcp`, a comment its text, a
/// set its name, `--mode nth` its `--every`, `-m nfacct` its `--nfacct-name` (iptables
/// refuses it without one).
fn check_match(m: &Match, proto: &Option<Neg<Proto>>) -> Result<(), String> {
    match m {
        Match::Ports { proto: p, .. } => {
            let ok = proto.as_ref().is_some_and(|x| x.value == *p && !x.invert);
            if !ok {
                return Err(format!("-m {p} needs -p {p}"));
            }
        }
        Match::Comment(c) if c.is_empty() => return Err("-m comment needs --comment".into()),
        Match::Set(m) if m.name.is_empty() => {
            return Err("-m set needs --match-set".into());
        }
        Match::Nth { every: 0, .. } => return Err("--mode nth needs --every N".into()),
        Match::Nfacct(n) if n.is_empty() => {
            return Err("-m nfacct needs --nfacct-name NAME".into());
        }
        _ => {}
    }
    Ok(())
}

fn parse_target(t: &Tok<'_>, opts: &[&Tok<'_>], goto: bool) -> Result<Target, RuleError> {
    let err = |col, msg: String| Err(RuleError { col, msg });
    // Option name -> values.
    let mut kv: Vec<(&Tok<'_>, Vec<&Tok<'_>>)> = Vec::new();
    for o in opts {
        if o.s.starts_with("--") {
            kv.push((o, Vec::new()));
        } else if let Some(last) = kv.last_mut() {
            last.1.push(o);
        }
    }
    let one =
        |name: &str| kv.iter().find(|(k, _)| k.s == name).and_then(|(_, v)| v.first().copied());
    let has = |name: &str| kv.iter().any(|(k, _)| k.s == name);
    let known = |allowed: &[&str]| -> Result<(), RuleError> {
        for (k, _) in &kv {
            if !allowed.contains(&&*k.s) {
                return Err(RuleError {
                    col: k.col,
                    msg: format!("option '{}' is not an option of target {}", k.s, t.s),
                });
            }
        }
        Ok(())
    };
    let flags = || NatFlags {
        random: has("--random"),
        random_fully: has("--random-fully"),
        persistent: has("--persistent"),
    };
    if goto {
        known(&[])?;
        return ChainName::new(&t.s)
            .map(Target::Goto)
            .map_err(|e| RuleError { col: t.col, msg: format!("-g: {e}") });
    }
    Ok(match &*t.s {
        "ACCEPT" | "DROP" | "RETURN" | "TRACE" | "NOTRACK" => {
            known(&[])?;
            match &*t.s {
                "ACCEPT" => Target::Accept,
                "DROP" => Target::Drop,
                "RETURN" => Target::Return,
                "TRACE" => Target::Trace,
                _ => Target::Notrack,
            }
        }
        "REJECT" => {
            known(&["--reject-with"])?;
            match one("--reject-with") {
                None => Target::Reject(RejectWith::PortUnreachable),
                Some(v) => Target::Reject(RejectWith::parse(&v.s).ok_or_else(|| RuleError {
                    col: v.col,
                    msg: format!("unknown --reject-with '{}'", v.s),
                })?),
            }
        }
        "DNAT" => {
            known(&["--to-destination", "--random", "--persistent"])?;
            let Some(v) = one("--to-destination") else {
                return err(t.col, "DNAT needs --to-destination ADDR[:PORT]".into());
            };
            Target::Dnat(parse_nat_range(v)?, flags())
        }
        "SNAT" => {
            known(&["--to-source", "--random", "--random-fully", "--persistent"])?;
            let Some(v) = one("--to-source") else {
                return err(t.col, "SNAT needs --to-source ADDR[:PORTS]".into());
            };
            Target::Snat(parse_nat_range(v)?, flags())
        }
        "MASQUERADE" => {
            known(&["--to-ports", "--random", "--random-fully"])?;
            let ports = match one("--to-ports") {
                None => None,
                Some(v) => {
                    let (lo, hi) = match v.s.split_once('-') {
                        Some((a, b)) => (parse_num(a, v.col)?, parse_num(b, v.col)?),
                        None => {
                            let p = parse_num(&v.s, v.col)?;
                            (p, p)
                        }
                    };
                    Some((lo, hi))
                }
            };
            Target::Masquerade(ports, flags())
        }
        "MARK" => {
            known(&["--set-xmark", "--set-mark", "--or-mark", "--xor-mark", "--and-mark"])?;
            let Some((k, v)) = kv.first() else {
                return err(
                    t.col,
                    "MARK needs --set-xmark, --set-mark, --or-mark, --xor-mark or --and-mark"
                        .into(),
                );
            };
            let Some(v) = v.first() else {
                return err(k.col, format!("{} needs a value", k.s));
            };
            let (val, mask) = parse_value_mask(v)?;
            match &*k.s {
                "--set-xmark" => Target::Mark { value: val, mask },
                "--set-mark" => Target::Mark { value: val, mask: mask | val },
                "--or-mark" => Target::Mark { value: val, mask: val },
                "--xor-mark" => Target::Mark { value: val, mask: 0 },
                _ => Target::Mark { value: 0, mask: !val },
            }
        }
        "LOG" => {
            known(&["--log-prefix", "--log-level"])?;
            Target::Log(one("--log-prefix").map(|v| v.s.to_string()).unwrap_or_default())
        }
        "CT" => {
            known(&["--notrack"])?;
            if !has("--notrack") {
                return err(t.col, "only 'CT --notrack' is modelled".into());
            }
            Target::Notrack
        }
        name => {
            if !opts.is_empty() {
                return err(opts[0].col, format!("chain jump '-j {name}' takes no options"));
            }
            if name.starts_with('-') || name.is_empty() {
                return err(t.col, format!("bad target '{name}'"));
            }
            Target::Jump(ChainName::new(name).map_err(|e| RuleError {
                col: t.col,
                msg: format!("-j: {e} (or a target podnet models)"),
            })?)
        }
    })
}

fn parse_num<T: std::str::FromStr>(s: &str, col: usize) -> Result<T, RuleError> {
    s.parse().map_err(|_| RuleError { col, msg: format!("bad number '{s}'") })
}

fn parse_u32_any(s: &str, col: usize) -> Result<u32, RuleError> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| RuleError {
        col,
        msg: format!("bad mark value '{s}' (expected a number, e.g. 0x4000)"),
    })
}

fn parse_value_mask(v: &Tok<'_>) -> Result<(u32, u32), RuleError> {
    match v.s.split_once('/') {
        Some((a, b)) => Ok((parse_u32_any(a, v.col)?, parse_u32_any(b, v.col)?)),
        None => Ok((parse_u32_any(&v.s, v.col)?, u32::MAX)),
    }
}

/// Parses `10.0.0.1`, `10.0.0.0/8` or `10.0.0.0/255.0.0.0`, normalising leading zeros the
/// way kube-proxy's input validation and iptables' own parser would reject or accept them.
pub(crate) fn parse_net(v: &Tok<'_>) -> Result<Ipv4Network, RuleError> {
    let bad = || RuleError {
        col: v.col,
        msg: format!("bad address '{}' (expected A.B.C.D or A.B.C.D/N)", v.s),
    };
    let (a, m) = match v.s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (&*v.s, None),
    };
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix = match m {
        None => 32,
        Some(m) if m.contains('.') => {
            let mask: Ipv4Addr = m.parse().map_err(|_| bad())?;
            ipnetwork::ipv4_mask_to_prefix(mask).map_err(|_| bad())?
        }
        Some(m) => m.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(bad)?,
    };
    // iptables stores the masked address: 10.1.2.3/8 is saved as 10.0.0.0/8.
    let net = Ipv4Network::new(addr, prefix).map_err(|_| bad())?;
    Ipv4Network::new(net.network(), prefix).map_err(|_| bad())
}

fn parse_port_range(v: &Tok<'_>) -> Result<PortRange, RuleError> {
    let p = |s: &str| -> Result<u16, RuleError> {
        s.parse().map_err(|_| RuleError {
            col: v.col,
            msg: format!("bad port '{s}' (expected 0-65535)"),
        })
    };
    let (lo, hi) = match v.s.split_once(':') {
        Some((a, b)) => {
            (if a.is_empty() { 0 } else { p(a)? }, if b.is_empty() { 65535 } else { p(b)? })
        }
        None => {
            let x = p(&v.s)?;
            (x, x)
        }
    };
    if lo > hi {
        return Err(RuleError { col: v.col, msg: format!("port range '{}' is reversed", v.s) });
    }
    Ok(PortRange { lo, hi })
}

fn parse_tcp_flags(v: &Tok<'_>) -> Result<u8, RuleError> {
    let mut bits = 0;
    for f in v.s.split(',') {
        bits |=
            match f {
                "ALL" => 0x3f,
                "NONE" => 0,
                _ => TCP_FLAG_NAMES.iter().find(|(_, n)| *n == f).map(|(b, _)| *b).ok_or_else(
                    || RuleError { col: v.col, msg: format!("unknown TCP flag '{f}'") },
                )?,
            };
    }
    Ok(bits)
}

fn icmp_type_number(s: &str) -> Option<u8> {
    Some(match s {
        "echo-reply" | "pong" => 0,
        "destination-unreachable" => 3,
        "echo-request" | "ping" => 8,
        "time-exceeded" | "ttl-exceeded" => 11,
        "any" => 255,
        _ => return s.parse().ok(),
    })
}

fn parse_nat_range(v: &Tok<'_>) -> Result<NatRange, RuleError> {
    let bad =
        |what: &str| RuleError { col: v.col, msg: format!("bad NAT range '{}': {what}", v.s) };
    let (addrs, ports) = match v.s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (&*v.s, None),
    };
    let (lo, hi) = match addrs.split_once('-') {
        Some((a, b)) => (a, b),
        None => (addrs, addrs),
    };
    let addr_lo: Ipv4Addr = lo.parse().map_err(|_| bad("expected an IPv4 address"))?;
    let addr_hi: Ipv4Addr = hi.parse().map_err(|_| bad("expected an IPv4 address"))?;
    let ports = match ports {
        None => None,
        Some(p) => {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let a: u16 = a.parse().map_err(|_| bad("expected a port"))?;
            let b: u16 = b.parse().map_err(|_| bad("expected a port"))?;
            Some((a, b))
        }
    };
    Ok(NatRange { addr_lo, addr_hi, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule's meaning: everything but its spelling.
    fn meaning(r: &Rule) -> Rule {
        Rule { spelling: Spelling::Text("".into()), ..r.clone() }
    }

    #[test]
    fn built_rules_print_as_kube_proxy_writes_them_and_parse_back_to_the_same_rule() {
        let ip = |s: &str| -> Ipv4Network { s.parse().unwrap() };
        let ports = |p: u16| Match::Ports {
            proto: Proto::TCP,
            sport: None,
            dport: Some(Neg { value: PortRange { lo: p, hi: p }, invert: false }),
            tcp_flags: None,
        };
        let cases: Vec<(Rule, &str)> = vec![
            (
                RuleBuilder::new()
                    .comment("ns1/svc1:p80 cluster IP")
                    .module(ports(80))
                    .proto(Proto::TCP)
                    .dst(ip("172.30.0.41"), false)
                    .options()
                    .src(ip("10.0.0.0/8"), true)
                    .jump(ChainName::new("KUBE-MARK-MASQ").unwrap())
                    .unwrap(),
                r#"-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            ),
            (
                RuleBuilder::new()
                    .comment("ns1/svc1:p80")
                    .matching(Match::random(0.5, false))
                    .jump(ChainName::new("KUBE-SEP-X").unwrap())
                    .unwrap(),
                "-m comment --comment ns1/svc1:p80 -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-X",
            ),
            (
                RuleBuilder::new()
                    .comment(r#"q"uote\d"#)
                    .in_iface("cbr0", false)
                    .out_iface("eth+", true)
                    .target(Target::Reject(RejectWith::PortUnreachable))
                    .unwrap(),
                r#"-m comment --comment "q\"uote\\d" -i cbr0 ! -o eth+ -j REJECT"#,
            ),
            (
                RuleBuilder::new()
                    .module(Match::Ports {
                        proto: Proto::UDP,
                        sport: None,
                        dport: None,
                        tcp_flags: None,
                    })
                    .proto(Proto::UDP)
                    .options()
                    .target(Target::Dnat(
                        NatRange {
                            addr_lo: Ipv4Addr::new(10, 244, 1, 2),
                            addr_hi: Ipv4Addr::new(10, 244, 1, 2),
                            ports: Some((8080, 8080)),
                        },
                        NatFlags::default(),
                    ))
                    .unwrap(),
                "-m udp -p udp -j DNAT --to-destination 10.244.1.2:8080",
            ),
        ];
        for (rule, text) in cases {
            assert_eq!(rule.restore_text(), text);
            let parsed = Rule::parse(text).unwrap();
            assert_eq!(meaning(&rule), meaning(&parsed), "{text}");
            assert_eq!(rule.kernel_form(), parsed.kernel_form());
        }
    }

    #[test]
    fn nfacct_needs_a_name_as_iptables_does() {
        // Found by fuzzing: accepted without one, the kernel form printed an empty
        // `--nfacct-name` that restore then refused.
        for text in ["-m nfacct -j ACCEPT", "-m nfacct --nfacct-name \"\" -j ACCEPT"] {
            let err = Rule::parse(text).unwrap_err();
            assert!(err.msg.contains("-m nfacct needs --nfacct-name"), "{text}: {err}");
        }
        let r = Rule::parse("-m nfacct --nfacct-name pkts -j ACCEPT").unwrap();
        assert_eq!(Rule::parse(&r.kernel_form()).unwrap().kernel_form(), r.kernel_form());
    }

    #[test]
    fn a_built_rule_is_checked_like_a_parsed_one() {
        let err = RuleBuilder::new()
            .matching(Match::Ports { proto: Proto::TCP, sport: None, dport: None, tcp_flags: None })
            .jump(ChainName::new("X").unwrap())
            .unwrap_err();
        assert!(err.msg.contains("-m tcp needs -p tcp"), "{err}");
        let err = RuleBuilder::new().comment("").build().unwrap_err();
        assert!(err.msg.contains("needs --comment"), "{err}");
    }

    #[test]
    fn a_built_rule_with_more_parts_than_fit_inline_is_spelled_in_kernel_form() {
        let mut b = RuleBuilder::new();
        for i in 0..20 {
            b.comment(format!("c{i}"));
        }
        let rule = b.jump(ChainName::new("X").unwrap()).unwrap();
        assert!(matches!(rule.spelling, Spelling::Text(_)));
        assert_eq!(rule.restore_text(), rule.kernel_form());
        assert_eq!(meaning(&Rule::parse(&rule.restore_text()).unwrap()), meaning(&rule));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The ASCII fast path splits, unquotes and places columns exactly as the general one.
        #[test]
        fn ascii_tokenizer_matches_the_general_one(text in "[a-c \t\"\\\\!-]{0,24}") {
            let view = |r: Result<Vec<Tok<'_>>, RuleError>| {
                r.map(|v| v.into_iter().map(|t| (t.s.into_owned(), t.col)).collect::<Vec<_>>())
            };
            proptest::prop_assert_eq!(view(tokenize_ascii(&text)), view(tokenize_chars(&text)));
        }
    }

    #[test]
    fn kube_proxy_service_rule_parses_and_prints_kernel_form() {
        let text = r#"-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#;
        let r = Rule::parse(text).unwrap();
        assert_eq!(r.restore_text(), text);
        assert_eq!(r.comment(), Some("ns1/svc1:p80 cluster IP"));
        assert_eq!(
            r.kernel_form(),
            r#"-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#
        );
    }

    #[test]
    fn mark_options_reduce_to_xmark_like_the_kernel() {
        let or = Rule::parse("-j MARK --or-mark 0x4000").unwrap();
        assert_eq!(or.kernel_form(), "-j MARK --set-xmark 0x4000/0x4000");
        let xor = Rule::parse("-j MARK --xor-mark 0x4000").unwrap();
        assert_eq!(xor.kernel_form(), "-j MARK --set-xmark 0x4000/0x0");
    }

    #[test]
    fn probability_is_stored_as_the_kernel_fraction() {
        let r = Rule::parse("-m statistic --mode random --probability 0.3333333333 -j X").unwrap();
        assert_eq!(r.kernel_form(), "-m statistic --mode random --probability 0.33333333349 -j X");
    }

    #[test]
    fn implicit_protocol_match_is_loaded_for_dport() {
        let r = Rule::parse("-p udp --dport 53 -j ACCEPT").unwrap();
        assert_eq!(r.kernel_form(), "-p udp -m udp --dport 53 -j ACCEPT");
    }

    #[test]
    fn errors_name_the_column_and_the_fix() {
        let e = Rule::parse("-m tcp -p tcp --dport eighty -j ACCEPT").unwrap_err();
        assert_eq!(e.col, 23);
        assert!(e.msg.contains("bad port 'eighty'"), "{e}");
        let e = Rule::parse("-m bogus -j ACCEPT").unwrap_err();
        assert_eq!(e.col, 4);
        assert!(e.msg.contains("unsupported match extension"));
        let e = Rule::parse("--dport 80 -j ACCEPT").unwrap_err();
        assert!(e.msg.contains("unknown option '--dport'"));
        let e = Rule::parse(r#"-m comment --comment "open"#).unwrap_err();
        assert!(e.msg.contains("unterminated"));
        let e = Rule::parse("-m tcp --dport 80 -j ACCEPT").unwrap_err();
        assert!(e.msg.contains("-m tcp needs -p tcp"), "{e}");
        let e = Rule::parse("-j DNAT").unwrap_err();
        assert!(e.msg.contains("--to-destination"));
    }

    #[test]
    fn recent_prints_kernel_defaults() {
        let r = Rule::parse(
            "-m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN",
        )
        .unwrap();
        assert_eq!(
            r.kernel_form(),
            "-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-I77PXRDZVX7PMWMN --mask 255.255.255.255 --rsource -j KUBE-SEP-I77PXRDZVX7PMWMN"
        );
    }
}
