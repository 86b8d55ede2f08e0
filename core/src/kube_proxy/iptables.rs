//! kube-proxy in iptables mode (v1.31–v1.33 behaviour), after
//! `pkg/proxy/iptables/proxier.go`: Services and EndpointSlices in, the exact
//! `iptables-restore` payload kube-proxy writes out, per node.
//!
//! The payload is emitted already in the order kube-proxy's tests sort it to
//! (`sortIPTablesRules`: `KUBE-NODEPORTS`, then `KUBE-SERVICES`, then the other chains by
//! name; rules in those two chains by service name, the NodePorts jump last), so that for the
//! objects of `TestOverallIPTablesRules` it equals the golden dump byte for byte. Chain names
//! use kube-proxy's recipe: `base32(sha256("ns/name:port" + proto))[:16]` (the base32 is
//! written here: the recipe takes 16 characters of RFC 4648's alphabet without padding, a
//! dozen lines, where a crate would add a dependency for one call).
//!
//! The payload is generated once, as built rules ([`sync_iptables_rules`], netfilter's
//! `RuleBuilder`): a node's sync loads those into its tables directly
//! ([`IptablesPayload::load_into`]) and the text ([`sync_iptables`], `iptables-save`'s
//! restore form) is printed from them, in kube-proxy's spelling. At 10,000 Services × 10
//! endpoints that is a third of a million rules, so nothing per rule is formatted or parsed;
//! comments are shared strings and chain names inline, and past a few hundred Services two
//! threads take eight runs of the sorted Service list in turn and the runs are merged, which
//! gives the same payload byte for byte.
//!
//! The jumps from the built-in chains, which kube-proxy installs separately with
//! `EnsureRule`, are added per node ([`base_jumps`]).

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use sha2::{Digest, Sha256};

use podnet_netfilter::rule::{
    Match, NatFlags, NatRange, Neg, PortRange, RecentCmd, RecentMatch, RejectWith, RuleError,
};
use podnet_netfilter::{ChainName, Proto, Rule, RuleBuilder, Ruleset, TableName, Target};

use super::{EndpointSlice, ProxyConfig, Service, ServicePort};

/// kube-proxy's chain-name hash: `base32(sha256(s))[:16]`.
pub fn chain_hash(s: &str) -> String {
    String::from_utf8_lossy(&hash16(&[s])).into_owned()
}

/// The first `n` (at most 16) characters of [`chain_hash`]`(s)`: nftables mode names its
/// chains with 8.
pub(super) fn hash_prefix(s: &str, n: usize) -> String {
    let h = hash16(&[s]);
    String::from_utf8_lossy(&h[..n.min(16)]).into_owned()
}

/// [`chain_hash`] of the concatenation of `parts`, without concatenating them.
fn hash16(parts: &[&str]) -> [u8; 16] {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 16];
    let (mut buf, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &b in digest.iter() {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && n < 16 {
            bits -= 5;
            out[n] = ALPHABET[((buf >> bits) & 31) as usize];
            n += 1;
        }
    }
    out
}

/// `PREFIX` + [`chain_hash`] of the concatenated `parts`: a chain name (inline, no
/// allocation).
fn chain_name(prefix: &str, parts: &[&str]) -> ChainName {
    let h = hash16(parts);
    let hash = std::str::from_utf8(&h).unwrap_or_default();
    ChainName::concat(&[&prefix[..prefix.len().min(12)], hash])
        .expect("a 12-character prefix and a 16-character hash fit a chain name")
}

/// One of kube-proxy's fixed chain names.
fn kube_chain(name: &str) -> ChainName {
    ChainName::new(name).expect("kube-proxy's fixed chain names fit")
}

/// An endpoint's `IP:port` text, held inline (one per endpoint: no allocation each).
#[derive(Clone, Copy)]
struct EpKey {
    /// `255.255.255.255:65535` is 21 bytes.
    buf: [u8; 21],
    len: u8,
}

impl EpKey {
    fn new(ip: Ipv4Addr, port: u16) -> EpKey {
        let mut key = EpKey { buf: [0; 21], len: 0 };
        let _ = podnet_netfilter::rule::write_ipv4(&mut key, ip);
        let _ = write!(key, ":{port}");
        key
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap_or_default()
    }

    /// The text's bytes (they sort as the text does).
    fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Write for EpKey {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let at = usize::from(self.len);
        let dst = self.buf.get_mut(at..at + s.len()).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len += s.len() as u8;
        Ok(())
    }
}

pub(super) struct Ep {
    pub(super) ip: Ipv4Addr,
    pub(super) port: u16,
    /// `IP:port`.
    key: EpKey,
    /// `KUBE-SEP-…` for this endpoint of the Service port being written.
    sep: ChainName,
    pub(super) local: bool,
    pub(super) ready: bool,
    pub(super) serving: bool,
    pub(super) terminating: bool,
}

/// One table's chains being written, in creation order. Chains written to by name from
/// anywhere (`KUBE-SERVICES`, …) are indexed by name; a Service port's own chains (its
/// `KUBE-SVC-`, `KUBE-SEP-`… chains, unique by their hashed names) are only written while
/// that port is, so they are found among the chains declared since [`Chains::begin`]
/// without indexing a hundred thousand names.
#[derive(Default)]
struct Chains {
    index: std::collections::HashMap<ChainName, usize, rustc_hash::FxBuildHasher>,
    list: Vec<(ChainName, Vec<Rule>)>,
    /// The chain written last (rules come in runs per chain).
    last: usize,
    /// Where the current Service port's chains start in `list`.
    recent: usize,
}

/// A chain rules are written to: one of kube-proxy's fixed names or a Service port's own.
trait ChainArg {
    fn chain(self) -> ChainName;
}

impl ChainArg for &str {
    fn chain(self) -> ChainName {
        kube_chain(self)
    }
}

impl ChainArg for &ChainName {
    fn chain(self) -> ChainName {
        *self
    }
}

impl Chains {
    fn entry(&mut self, chain: impl ChainArg) -> &mut Vec<Rule> {
        let chain = chain.chain();
        if self.list.get(self.last).is_some_and(|(n, _)| *n == chain) {
            return &mut self.list[self.last].1;
        }
        let i = match self.index.get(&chain) {
            Some(&i) => i,
            None => match self.list[self.recent..].iter().position(|(n, _)| *n == chain) {
                Some(k) => self.recent + k,
                None => {
                    self.index.insert(chain, self.list.len());
                    self.list.push((chain, Vec::new()));
                    self.list.len() - 1
                }
            },
        };
        self.last = i;
        &mut self.list[i].1
    }

    /// Starts a Service port: the chains it declares are looked up from here.
    fn begin(&mut self) {
        self.recent = self.list.len();
    }

    /// Declares one of the current Service port's own chains, with room for `rules` rules.
    /// Such a chain's name is hashed, never one of the fixed names [`Chains::index`] holds,
    /// so only the port's own chains are searched.
    fn declare(&mut self, chain: ChainName, rules: usize) {
        let found =
            self.list[self.recent..].iter().position(|(n, _)| *n == chain).map(|k| self.recent + k);
        let i = found.unwrap_or_else(|| {
            self.list.push((chain, Vec::new()));
            self.list.len() - 1
        });
        self.last = i;
        self.list[i].1.reserve_exact(rules);
    }
}

/// The rules being written, by table and chain.
struct Out {
    filter: Chains,
    nat: Chains,
    /// Reused to format text that becomes an `Arc<str>` (one allocation, not two).
    scratch: String,
    /// [`Out::probability`] by `n`.
    probabilities: Vec<Option<f64>>,
    /// `KUBE-MARK-MASQ`, the target half the rules jump to, allocated once.
    mark_masq: ChainName,
}

/// From this many Services on, a sync writes their rules with two threads.
const PARALLEL_SERVICES: usize = 512;
/// Into how many runs a sync with two threads cuts the sorted Services: a thread that
/// finishes early takes the next run.
const WRITER_RUNS: usize = 8;

impl Out {
    /// The chains every payload declares, in kube-proxy's order, and no rules yet.
    fn new(cfg: &ProxyConfig) -> Out {
        let mut o = Out {
            filter: Chains::default(),
            nat: Chains::default(),
            scratch: String::new(),
            probabilities: Vec::new(),
            mark_masq: kube_chain("KUBE-MARK-MASQ"),
        };
        for c in [
            "KUBE-NODEPORTS",
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-PROXY-FIREWALL",
        ] {
            o.filter.entry(c);
        }
        if cfg.localhost_nodeports {
            o.filter.entry("KUBE-FIREWALL");
        }
        for c in ["KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"] {
            o.nat_chain(c);
        }
        o
    }

    fn filter(&mut self, chain: impl ChainArg, rule: Result<Rule, RuleError>) {
        self.filter.entry(chain).push(rule.expect("kube-proxy's rule shapes are valid"));
    }
    fn nat(&mut self, chain: impl ChainArg, rule: Result<Rule, RuleError>) {
        self.nat.entry(chain).push(rule.expect("kube-proxy's rule shapes are valid"));
    }
    fn nat_chain(&mut self, chain: &str) {
        self.nat.entry(chain);
    }
    /// Declares a nat chain that will hold `rules` rules (room for exactly those: a
    /// Service's chains are a third of a million rules at 10,000 Services).
    fn nat_chain_for(&mut self, chain: ChainName, rules: usize) {
        self.nat.declare(chain, rules);
    }
    /// `computeProbability`: `1/n` as the `%0.10f` text iptables reads back (the kernel's
    /// threshold comes from that text, not from `1/n`). Remembered per `n`.
    fn probability(&mut self, n: usize) -> f64 {
        if self.probabilities.len() <= n {
            self.probabilities.resize(n + 1, None);
        }
        *self.probabilities[n].get_or_insert_with(|| {
            format!("{:.10}", 1.0 / n as f64).parse().unwrap_or(1.0 / n as f64)
        })
    }

    /// `parts` joined, as one shared string (built in a reused buffer, without formatting).
    fn text(&mut self, parts: &[&str]) -> Arc<str> {
        self.scratch.clear();
        for p in parts {
            self.scratch.push_str(p);
        }
        Arc::from(self.scratch.as_str())
    }
}

/// `-m comment --comment TEXT`, the start of nearly every rule kube-proxy writes.
fn commented(text: impl Into<Arc<str>>) -> RuleBuilder {
    let mut b = RuleBuilder::new();
    b.comment(text);
    b
}

/// `-m comment --comment TEXT -m PROTO -p PROTO [-d IP] --dport PORT`: how kube-proxy
/// matches a Service port.
fn service_match(
    text: impl Into<Arc<str>>,
    proto: Proto,
    dst: Option<Ipv4Network>,
    port: u16,
) -> RuleBuilder {
    let mut b = commented(text);
    b.module(ports(proto, port)).proto(proto);
    if let Some(d) = dst {
        b.dst(d, false);
    }
    b.options();
    b
}

fn host(ip: Ipv4Addr) -> Ipv4Network {
    Ipv4Network::from(ip)
}

/// kube-proxy's iptables-mode payload for one node, as built rules: the filter and nat
/// chains it writes, each table in the order its `iptables-restore` input lists them
/// (`KUBE-NODEPORTS`, `KUBE-SERVICES`, then the other chains by name).
#[derive(Clone, Debug)]
pub struct IptablesPayload {
    /// The filter table's chains and their rules.
    pub filter: Vec<(ChainName, Vec<Rule>)>,
    /// The nat table's chains and their rules.
    pub nat: Vec<(ChainName, Vec<Rule>)>,
}

impl IptablesPayload {
    /// The `iptables-restore` input kube-proxy writes for it.
    pub fn restore_text(&self) -> String {
        let rules: usize = self.filter.iter().chain(&self.nat).map(|(_, r)| r.len()).sum();
        let mut s = String::with_capacity(rules * 128);
        for (table, chains) in [("filter", &self.filter), ("nat", &self.nat)] {
            let _ = writeln!(s, "*{table}");
            for (n, _) in chains {
                let _ = writeln!(s, ":{n} - [0:0]");
            }
            for (n, rules) in chains {
                for r in rules {
                    s.push_str("-A ");
                    s.push_str(n);
                    s.push(' ');
                    r.write_restore(&mut s);
                    s.push('\n');
                }
            }
            s.push_str("COMMIT\n");
        }
        s
    }

    /// Loads the payload into `rs` as `iptables-restore` without `--noflush` does (filter,
    /// then nat), without printing and parsing it.
    pub fn load_into(self, rs: &mut Ruleset) -> Result<(), String> {
        rs.load(TableName::Filter, self.filter)?;
        rs.load(TableName::Nat, self.nat)
    }

    /// Adds restore input of the shape the built-in jumps and the egress agents are written
    /// in (`*filter`/`*nat`, chain declarations, `-A CHAIN rule`, `COMMIT`) as restoring it
    /// with `--noflush` after the payload would: declared chains are added (a built-in one
    /// is listed, so it is declared), rules appended.
    pub(crate) fn append_restore(
        &mut self,
        text: &str,
    ) -> Result<(), podnet_netfilter::ParseError> {
        let mut table: Option<&mut Vec<(ChainName, Vec<Rule>)>> = None;
        for (i, line) in text.lines().enumerate() {
            let err =
                |col: usize, msg: String| podnet_netfilter::ParseError { line: i + 1, col, msg };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                table = Some(match name {
                    "filter" => &mut self.filter,
                    "nat" => &mut self.nat,
                    _ => {
                        return Err(err(2, format!("table '{name}' is not one kube-proxy writes")));
                    }
                });
                continue;
            }
            if line == "COMMIT" {
                table = None;
                continue;
            }
            let Some(chains) = table.as_deref_mut() else {
                return Err(err(1, "a line outside '*filter' or '*nat'".into()));
            };
            // From the end: the chains this input names are the ones it added there (the
            // payload's own hundred thousand come first and are never named here).
            let position = |chains: &mut Vec<(ChainName, Vec<Rule>)>, name: ChainName| {
                chains.iter().rposition(|(n, _)| *n == name).unwrap_or_else(|| {
                    chains.push((name, Vec::new()));
                    chains.len() - 1
                })
            };
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                let name = ChainName::new(name).map_err(|e| err(2, e.to_string()))?;
                position(chains, name);
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, args) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(at) = chains.iter().rposition(|(n, _)| *n == chain) else {
                    return Err(err(4, format!("chain '{chain}' is not declared")));
                };
                let rule = Rule::parse(args).map_err(|e| err(4 + chain.len() + e.col, e.msg))?;
                chains[at].1.push(rule);
            } else {
                return Err(err(1, format!("unsupported line '{line}' (expected :CHAIN or -A)")));
            }
        }
        Ok(())
    }
}

/// Generates kube-proxy's `iptables-restore` payload (filter and nat) for one node.
pub fn sync_iptables(cfg: &ProxyConfig, services: &[Service], slices: &[EndpointSlice]) -> String {
    sync_iptables_rules(cfg, services, slices).restore_text()
}

/// What [`sync_iptables`] writes, as built rules: a node's sync loads these straight into
/// its tables ([`IptablesPayload::load_into`]), with no text in between.
pub fn sync_iptables_rules(
    cfg: &ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
) -> IptablesPayload {
    sync_iptables_rules_with(cfg, services, slices, services.len() >= PARALLEL_SERVICES)
}

/// [`sync_iptables_rules`], with the Services' rules written by two threads or by one.
fn sync_iptables_rules_with(
    cfg: &ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    two_threads: bool,
) -> IptablesPayload {
    let svcs = sorted_services(services);
    // Slices by Service (the endpointslice cache), so each Service port looks up its own.
    let mut by_svc: std::collections::HashMap<
        (&str, &str),
        Vec<&EndpointSlice>,
        rustc_hash::FxBuildHasher,
    > = std::collections::HashMap::with_capacity_and_hasher(slices.len(), Default::default());
    for sl in slices {
        by_svc.entry((sl.namespace.as_str(), sl.service.as_str())).or_default().push(sl);
    }
    // The Services' rules, in runs of the sorted list that up to two threads take in turn
    // (so neither waits on the other long), joined in order: the same payload, byte for
    // byte, as one thread writes.
    let write = |svcs: &[&Service]| {
        let mut o = Out::new(cfg);
        // Room in the name index for every chain these Services make: one per endpoint and
        // up to four per port.
        let chains: usize = svcs
            .iter()
            .map(|svc| {
                let eps: usize = by_svc
                    .get(&(svc.namespace.as_str(), svc.name.as_str()))
                    .map_or(0, |sl| sl.iter().map(|s| s.endpoints.len()).sum());
                eps + 4 * svc.ports.len()
            })
            .sum();
        o.nat.list.reserve(chains);
        for svc in svcs {
            let Some(cip) = svc.cluster_ip else { continue };
            let mine = by_svc
                .get(&(svc.namespace.as_str(), svc.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            for port in &svc.ports {
                let mut eps = endpoints_for(cfg, port, mine);
                o.filter.begin();
                o.nat.begin();
                service_port(cfg, svc, port, cip, &mut eps, &mut o);
            }
        }
        (ordered(o.filter), ordered(o.nat))
    };
    let done = if two_threads {
        let runs: Vec<&[&Service]> = svcs.chunks(svcs.len().div_ceil(WRITER_RUNS)).collect();
        podnet_netfilter::table::in_two_threads(runs.len(), |i| write(runs[i]))
    } else {
        vec![write(&svcs)]
    };
    let (filter, nat): (Vec<Ordered>, Vec<Ordered>) = done.into_iter().unzip();
    let (mut filter, mut nat) = (merge_ordered(filter), merge_ordered(nat));
    // Fixed rules.
    let fixed = |text: &str| Rule::parse(text).expect("kube-proxy's fixed rules parse");
    let masq =
        Target::Masquerade(None, NatFlags { random_fully: cfg.random_fully, ..Default::default() });
    let masq = commented("kubernetes service traffic requiring SNAT")
        .target(masq)
        .expect("kube-proxy's rule shapes are valid");
    let mark = format!("{:#x}", 1u32 << cfg.masquerade_bit.min(31));
    chain_of(&mut nat, "KUBE-MARK-MASQ").push(fixed(&format!("-j MARK --or-mark {mark}")));
    chain_of(&mut nat, "KUBE-POSTROUTING").extend([
        fixed(&format!("-m mark ! --mark {mark}/{mark} -j RETURN")),
        fixed(&format!("-j MARK --xor-mark {mark}")),
        masq,
    ]);
    if cfg.localhost_nodeports {
        chain_of(&mut filter, "KUBE-FIREWALL").push(fixed("-m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"));
    }
    let invalid = if cfg.nfacct {
        "-m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP"
    } else {
        "-m conntrack --ctstate INVALID -j DROP"
    };
    chain_of(&mut filter, "KUBE-FORWARD").extend([
        fixed(invalid),
        fixed(&format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT")),
        fixed("-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ]);
    // The jump to KUBE-NODEPORTS, last in KUBE-SERVICES: every local address (without
    // 127.0.0.0/8 when localhost NodePorts are off), or one rule per nodePortAddresses
    // address (loopback ones skipped when localhost NodePorts are off).
    let last = "kubernetes service nodeports; NOTE: this must be the last rule in this chain";
    let loopback = Ipv4Network::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("/8");
    let tail: Vec<Rule> = match &cfg.node_port_addresses {
        None => {
            let mut b = commented(last);
            b.matching(local_dst());
            if !cfg.localhost_nodeports {
                b.dst(loopback, true);
            }
            vec![b.jump(kube_chain("KUBE-NODEPORTS")).expect("kube-proxy's rule shapes are valid")]
        }
        Some(addrs) => addrs
            .iter()
            .filter(|a| cfg.localhost_nodeports || !a.is_loopback())
            .map(|a| {
                commented(last)
                    .dst(Ipv4Network::new(*a, 32).expect("/32"), false)
                    .jump(kube_chain("KUBE-NODEPORTS"))
                    .expect("kube-proxy's rule shapes are valid")
            })
            .collect(),
    };
    chain_of(&mut nat, "KUBE-SERVICES").extend(tail);
    IptablesPayload { filter, nat }
}

/// The Services by namespace, then name, on their names' [`str_key`]s.
pub(super) fn sorted_services(services: &[Service]) -> Vec<&Service> {
    let mut keyed: Vec<_> =
        services.iter().map(|s| (str_key(&s.namespace), str_key(&s.name), s)).collect();
    keyed.sort_unstable_by(|(ns_a, name_a, a), (ns_b, name_b, b)| {
        cmp_keyed(*ns_a, *ns_b, &a.namespace, &b.namespace)
            .then_with(|| cmp_keyed(*name_a, *name_b, &a.name, &b.name))
    });
    keyed.into_iter().map(|(_, _, s)| s).collect()
}

/// A string's sort key: its first 16 bytes as one number ([`head`]) and its length. Kept
/// beside what is sorted, it ends most comparisons without reading the string.
fn str_key(s: &str) -> (u128, usize) {
    (head(s.as_bytes()), s.len())
}

/// How `x` and `y` compare, from their [`str_key`]s `a` and `b`: equal heads and equal
/// lengths of at most 16 bytes are equal strings; otherwise the strings decide.
fn cmp_keyed(a: (u128, usize), b: (u128, usize), x: &str, y: &str) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then_with(|| if a.1 == b.1 && a.1 <= 16 { std::cmp::Ordering::Equal } else { x.cmp(y) })
}

/// `sortIPTablesRules`'s chain order: the two head chains first, then by name.
fn rank(n: &[u8]) -> u8 {
    match n {
        b"KUBE-NODEPORTS" => 0,
        b"KUBE-SERVICES" => 1,
        _ => 2,
    }
}

/// A chain name's first 16 bytes as one number: chain names differ early (`KUBE-SEP-` and
/// 7 hash characters), so most comparisons end here.
fn head(n: &[u8]) -> u128 {
    match n.first_chunk::<16>() {
        Some(b) => u128::from_be_bytes(*b),
        None => {
            let mut b = [0u8; 16];
            for (d, s) in b.iter_mut().zip(n) {
                *d = *s;
            }
            u128::from_be_bytes(b)
        }
    }
}

/// One table's chains in restore order, with each chain's sort key ([`rank`], [`head`])
/// alongside, so merging compares keys, not names.
struct Ordered {
    keys: Vec<(u8, u128)>,
    chains: Vec<(ChainName, Vec<Rule>)>,
}

/// Restore order for one table's chains (see [`rank`]); the head chains' rules are put in
/// order by [`merge_ordered`].
fn ordered(chains: Chains) -> Ordered {
    let mut list = chains.list;
    let mut keys: Vec<(u8, u128, u32)> = list
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (rank(n.as_bytes()), head(n.as_bytes()), i as u32))
        .collect();
    keys.sort_unstable_by(|a, b| {
        (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| list[a.2 as usize].0.cmp(&list[b.2 as usize].0))
    });
    let chains = keys
        .iter()
        .map(|k| {
            let (n, r) = &mut list[k.2 as usize];
            (*n, std::mem::take(r))
        })
        .collect();
    Ordered { keys: keys.into_iter().map(|k| (k.0, k.1)).collect(), chains }
}

/// Ordered chain lists as one, as if one writer had written the first list's Services, then
/// the second's, and so on: a chain in several gets their rules in that order. The head
/// chains' rules then go stably by the Service name in their comment (what kube-proxy's
/// sort does). One pass, choosing the least head among the lists.
fn merge_ordered(lists: Vec<Ordered>) -> Vec<(ChainName, Vec<Rule>)> {
    let mut lists: Vec<_> =
        lists.into_iter().map(|o| (o.keys, 0usize, o.chains.into_iter())).collect();
    let mut out = Vec::with_capacity(lists.iter().map(|(_, _, c)| c.len()).sum());
    let name_at =
        |c: &std::vec::IntoIter<(ChainName, Vec<Rule>)>| c.as_slice().first().map(|c| c.0);
    loop {
        // The list with the least (key, name) at its head, and whether another has it too.
        let mut best: Option<(usize, (u8, u128))> = None;
        let mut tied = false;
        for (i, (keys, at, chains)) in lists.iter().enumerate() {
            let Some(&k) = keys.get(*at) else { continue };
            let Some((b, bk)) = best else {
                best = Some((i, k));
                continue;
            };
            match k.cmp(&bk).then_with(|| name_at(chains).cmp(&name_at(&lists[b].2))) {
                std::cmp::Ordering::Less => (best, tied) = (Some((i, k)), false),
                std::cmp::Ordering::Equal => tied = true,
                std::cmp::Ordering::Greater => {}
            }
        }
        let Some((b, key)) = best else { break };
        let Some(name) = name_at(&lists[b].2) else { break };
        let mut rules: Vec<Rule> = Vec::new();
        for (keys, at, chains) in lists.iter_mut().skip(b) {
            if !(keys.get(*at) == Some(&key) && name_at(chains) == Some(name)) {
                continue;
            }
            *at += 1;
            if let Some((_, more)) = chains.next() {
                if rules.is_empty() {
                    rules = more;
                } else {
                    rules.extend(more);
                }
            }
            if !tied {
                break;
            }
        }
        if key.0 < 2 {
            // A stable sort of runs that are each in order: a merge, earlier lists first.
            rules = by_service(rules);
        }
        out.push((name, rules));
    }
    out
}

/// Rules stably by [`service_of`], on the Service names' [`str_key`]s (each comment read
/// once).
fn by_service(rules: Vec<Rule>) -> Vec<Rule> {
    let mut keys: Vec<((u128, usize), u32)> =
        rules.iter().enumerate().map(|(i, r)| (str_key(service_of(r)), i as u32)).collect();
    let service = |i: u32| service_of(&rules[i as usize]);
    keys.sort_by(|(a, i), (b, j)| cmp_keyed(*a, *b, service(*i), service(*j)));
    let mut slots: Vec<Option<Rule>> = rules.into_iter().map(Some).collect();
    keys.iter().filter_map(|k| slots.get_mut(k.1 as usize).and_then(Option::take)).collect()
}

/// A chain of an ordered list by name (every chain [`Out::new`] declares is there).
fn chain_of<'a>(list: &'a mut Vec<(ChainName, Vec<Rule>)>, name: &str) -> &'a mut Vec<Rule> {
    let at = match list.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            list.push((kube_chain(name), Vec::new()));
            list.len() - 1
        }
    };
    &mut list[at].1
}

/// The Service a rule belongs to: the first word of its comment.
fn service_of(r: &Rule) -> &str {
    let c = r.comment().unwrap_or("");
    // Both separators are ASCII, so the cut is at a character boundary.
    c.as_bytes().iter().position(|b| matches!(b, b' ' | b'"')).map_or(c, |i| &c[..i])
}

pub(super) fn endpoints_for(
    cfg: &ProxyConfig,
    port: &ServicePort,
    slices: &[&EndpointSlice],
) -> Vec<Ep> {
    let mut eps: Vec<Ep> = Vec::with_capacity(slices.iter().map(|sl| sl.endpoints.len()).sum());
    for sl in slices {
        let Some(&(_, _, p)) =
            sl.ports.iter().find(|(n, proto, _)| *n == port.name && *proto == port.protocol)
        else {
            continue;
        };
        for e in &sl.endpoints {
            if eps.iter().any(|x| x.ip == e.ip && x.port == p) {
                continue;
            }
            eps.push(Ep {
                ip: e.ip,
                port: p,
                key: EpKey::new(e.ip, p),
                sep: kube_chain("KUBE-SEP-"),
                local: e.node_name.as_deref() == Some(cfg.node_name.as_str()),
                ready: e.ready.unwrap_or(true),
                serving: e.serving.unwrap_or(true),
                terminating: e.terminating.unwrap_or(false),
            });
        }
    }
    eps.sort_by(|a, b| a.key.bytes().cmp(b.key.bytes()));
    eps
}

/// Endpoints picked for a policy chain (inline up to 16: no allocation each).
pub(super) type Picked<'e> = smallvec::SmallVec<[&'e Ep; 16]>;

/// kube-proxy's `CategorizeEndpoints` for one Service port and what follows from it: the
/// endpoints of the cluster and the local policy (ready ones, else serving terminating
/// ones), and which chains and verdicts the port needs. iptables and nftables mode share it.
pub(super) struct Categorized<'e> {
    pub(super) cluster: Picked<'e>,
    pub(super) local: Picked<'e>,
    /// Usable endpoints on any node.
    pub(super) has_endpoints: bool,
    pub(super) uses_cluster_chain: bool,
    pub(super) uses_local_chain: bool,
    /// ClusterIP traffic has somewhere to go (not internalTrafficPolicy Local without
    /// local endpoints).
    pub(super) has_internal: bool,
    /// External traffic has somewhere to go (likewise for externalTrafficPolicy).
    pub(super) has_external: bool,
    /// The port's external chain is written (it is reachable from outside and has
    /// endpoints).
    pub(super) uses_ext_chain: bool,
}

pub(super) fn categorize<'e>(svc: &Service, port: &ServicePort, eps: &'e [Ep]) -> Categorized<'e> {
    let ready: Picked = eps.iter().filter(|e| e.ready).collect();
    let cluster: Picked = if ready.is_empty() {
        eps.iter().filter(|e| e.serving && e.terminating).collect()
    } else {
        ready
    };
    let local_ready: Picked = eps.iter().filter(|e| e.local && e.ready).collect();
    let local: Picked = if local_ready.is_empty() {
        eps.iter().filter(|e| e.local && e.serving && e.terminating).collect()
    } else {
        local_ready
    };
    let has_endpoints = !cluster.is_empty() || !local.is_empty();
    let ext_ok = svc.externally_accessible(port);
    Categorized {
        uses_cluster_chain: !cluster.is_empty() && (!svc.internal_local || ext_ok),
        uses_local_chain: !local.is_empty()
            && (svc.internal_local || (svc.external_local && ext_ok)),
        has_internal: has_endpoints && !(svc.internal_local && local.is_empty()),
        has_external: has_endpoints && !(svc.external_local && local.is_empty()),
        uses_ext_chain: has_endpoints && ext_ok,
        has_endpoints,
        cluster,
        local,
    }
}

fn service_port(
    cfg: &ProxyConfig,
    svc: &Service,
    port: &ServicePort,
    cip: Ipv4Addr,
    eps: &mut [Ep],
    o: &mut Out,
) {
    let name = if port.name.is_empty() {
        format!("{}/{}", svc.namespace, svc.name)
    } else {
        format!("{}/{}:{}", svc.namespace, svc.name, port.name)
    };
    let cip = host(cip);
    let name_comment: Arc<str> = Arc::from(name.as_str());
    let cluster_ip_comment: Arc<str> = Arc::from(format!("{name} cluster IP"));
    let pr = port.protocol;
    let proto: std::borrow::Cow<'static, str> = match pr {
        Proto::TCP => "tcp".into(),
        Proto::UDP => "udp".into(),
        Proto::SCTP => "sctp".into(),
        other => other.to_string().into(),
    };
    for e in eps.iter_mut() {
        e.sep = chain_name("KUBE-SEP-", &[&name, &proto, e.key.as_str()]);
    }
    let eps = &*eps;
    // The chains a ClusterIP-only port never uses are not named (each name is a SHA-256).
    let svc_chain = chain_name("KUBE-SVC-", &[&name, &proto]);
    let svl_chain = std::cell::LazyCell::new(|| chain_name("KUBE-SVL-", &[&name, &proto]));
    let ext_chain = std::cell::LazyCell::new(|| chain_name("KUBE-EXT-", &[&name, &proto]));
    let fw_chain = std::cell::LazyCell::new(|| chain_name("KUBE-FW-", &[&name, &proto]));
    let Categorized {
        cluster,
        local,
        has_endpoints,
        uses_cluster_chain,
        uses_local_chain,
        has_internal,
        has_external,
        uses_ext_chain,
    } = categorize(svc, port, eps);
    let internal_chain = if svc.internal_local { &*svl_chain } else { &svc_chain };
    let external_chain = if svc.external_local { &*svl_chain } else { &svc_chain };
    let uses_fw = has_endpoints && !svc.lb_ips.is_empty() && !svc.lb_source_ranges.is_empty();
    // What the filter table does with traffic for a Service port that has nowhere to go.
    let filter_target = |has: bool| {
        if !has_endpoints {
            (Target::Reject(RejectWith::PortUnreachable), format!("{name} has no endpoints"))
        } else if !has {
            (Target::Drop, format!("{name} has no local endpoints"))
        } else {
            (Target::Accept, String::new())
        }
    };
    if has_internal {
        o.nat(
            "KUBE-SERVICES",
            service_match(cluster_ip_comment.clone(), pr, Some(cip), port.port)
                .jump(*internal_chain),
        );
    } else {
        let (t, c) = filter_target(has_internal);
        o.filter("KUBE-SERVICES", service_match(c, pr, Some(cip), port.port).target(t));
    }
    for ip in &svc.external_ips {
        let ip = host(*ip);
        if has_endpoints {
            o.nat(
                "KUBE-SERVICES",
                service_match(format!("{name} external IP"), pr, Some(ip), port.port)
                    .jump(*ext_chain),
            );
        }
        if !has_external {
            let (t, c) = filter_target(has_external);
            o.filter("KUBE-EXTERNAL-SERVICES", service_match(c, pr, Some(ip), port.port).target(t));
        }
    }
    for ip in &svc.lb_ips {
        let ip = host(*ip);
        if has_endpoints {
            let to = if uses_fw { &*fw_chain } else { &*ext_chain };
            o.nat(
                "KUBE-SERVICES",
                service_match(format!("{name} loadbalancer IP"), pr, Some(ip), port.port).jump(*to),
            );
        }
        if uses_fw {
            o.filter(
                "KUBE-PROXY-FIREWALL",
                service_match(
                    format!("{name} traffic not accepted by {}", *fw_chain),
                    pr,
                    Some(ip),
                    port.port,
                )
                .target(Target::Drop),
            );
        }
        if !has_external {
            let (t, c) = filter_target(has_external);
            o.filter("KUBE-EXTERNAL-SERVICES", service_match(c, pr, Some(ip), port.port).target(t));
        }
    }
    if port.node_port != 0 {
        if has_endpoints {
            if cfg.localhost_nodeports && cfg.nfacct {
                let localhost = Ipv4Network::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("/8");
                o.nat(
                    "KUBE-NODEPORTS",
                    service_match(name_comment.clone(), pr, Some(localhost), port.node_port)
                        .matching(Match::Nfacct("localhost_nps_accepted_pkts".into()))
                        .jump(*ext_chain),
                );
            }
            o.nat(
                "KUBE-NODEPORTS",
                service_match(name_comment.clone(), pr, None, port.node_port).jump(*ext_chain),
            );
        }
        if !has_external {
            let (t, c) = filter_target(has_external);
            o.filter(
                "KUBE-EXTERNAL-SERVICES",
                commented(c)
                    .matching(local_dst())
                    .module(ports(pr, port.node_port))
                    .proto(pr)
                    .options()
                    .target(t),
            );
        }
    }
    if svc.needs_health_check() && svc.health_check_node_port != 0 {
        o.filter(
            "KUBE-NODEPORTS",
            service_match(
                format!("{name} health check node port"),
                Proto::TCP,
                None,
                svc.health_check_node_port,
            )
            .target(Target::Accept),
        );
    }
    if !has_endpoints {
        return;
    }
    // Rules per endpoint in a policy chain: the jump, and the affinity check.
    let per_ep = 1 + usize::from(svc.affinity_timeout.is_some());
    if uses_cluster_chain {
        o.nat_chain_for(svc_chain, 1 + cluster.len() * per_ep);
    }
    if uses_local_chain {
        o.nat_chain_for(*svl_chain, 1 + local.len() * per_ep);
    }
    if uses_ext_chain {
        o.nat_chain_for(*ext_chain, 4);
    }
    if uses_fw {
        o.nat_chain_for(*fw_chain, svc.lb_source_ranges.len() + svc.lb_ips.len() + 1);
    }
    if has_internal {
        let mut masq = service_match(cluster_ip_comment.clone(), pr, Some(cip), port.port);
        if cfg.masquerade_all {
            o.nat(internal_chain, masq.jump(o.mark_masq));
        } else if let Some(pc) = cfg.local_cidr {
            o.nat(internal_chain, masq.src(pc, true).jump(o.mark_masq));
        } else if let Some(iface) = &cfg.local_iface {
            o.nat(internal_chain, masq.in_iface(iface, true).jump(o.mark_masq));
        }
    }
    if uses_ext_chain {
        if !svc.external_local {
            o.nat(
                &*ext_chain,
                commented(format!("masquerade traffic for {name} external destinations"))
                    .jump(o.mark_masq),
            );
        } else {
            let mut pod_traffic =
                commented(format!("pod traffic for {name} external destinations"));
            if let Some(pc) = cfg.local_cidr {
                o.nat(&*ext_chain, pod_traffic.src(pc, false).jump(svc_chain));
            } else if let Some(iface) = &cfg.local_iface {
                o.nat(&*ext_chain, pod_traffic.in_iface(iface, false).jump(svc_chain));
            }
            o.nat(
                &*ext_chain,
                commented(format!("masquerade LOCAL traffic for {name} external destinations"))
                    .matching(local_src())
                    .jump(o.mark_masq),
            );
            o.nat(
                &*ext_chain,
                commented(format!("route LOCAL traffic for {name} external destinations"))
                    .matching(local_src())
                    .jump(svc_chain),
            );
        }
        if has_external {
            o.nat(&*ext_chain, RuleBuilder::new().jump(*external_chain));
        }
    }
    if uses_fw {
        for r in &svc.lb_source_ranges {
            o.nat(
                &*fw_chain,
                commented(format!("{name} loadbalancer IP")).src(*r, false).jump(*ext_chain),
            );
        }
        if svc.lb_source_ranges.iter().any(|r| cfg.node_ips.iter().any(|ip| r.contains(*ip))) {
            for ip in &svc.lb_ips {
                o.nat(
                    &*fw_chain,
                    commented(format!("{name} loadbalancer IP"))
                        .src(host(*ip), false)
                        .jump(*ext_chain),
                );
            }
        }
        o.nat(
            &*fw_chain,
            commented(format!("other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"))
                .build(),
        );
    }
    let recent = |sep: &str, cmd: RecentCmd, seconds: Option<u32>| {
        Match::Recent(Box::new(RecentMatch {
            name: sep.to_string(),
            cmd,
            seconds,
            hitcount: None,
            reap: seconds.is_some(),
            rdest: false,
            mask: Ipv4Addr::BROADCAST,
            invert: false,
        }))
    };
    let write_policy = |chain: &ChainName, list: &[&Ep], o: &mut Out| {
        let comments: Vec<Arc<str>> =
            list.iter().map(|e| o.text(&[&name, " -> ", e.key.as_str()])).collect();
        if let Some(t) = svc.affinity_timeout {
            for (e, c) in list.iter().zip(&comments) {
                o.nat(
                    chain,
                    commented(c.clone())
                        .matching(recent(&e.sep, RecentCmd::Rcheck, Some(t)))
                        .jump(e.sep),
                );
            }
        }
        let n = list.len();
        for (i, (e, c)) in list.iter().zip(comments).enumerate() {
            let mut b = commented(c);
            if i + 1 < n {
                b.matching(Match::random(o.probability(n - i), false));
            }
            o.nat(chain, b.jump(e.sep));
        }
    };
    if uses_cluster_chain {
        write_policy(&svc_chain, &cluster, o);
    }
    if uses_local_chain {
        write_policy(&svl_chain, &local, o);
    }
    // SEP chains for every endpoint a policy chain uses.
    let mut used: Vec<&Ep> = Vec::new();
    if uses_cluster_chain {
        used.extend(cluster.iter().copied());
    }
    if uses_local_chain {
        for e in &local {
            if !used.iter().any(|u| u.ip == e.ip && u.port == e.port) {
                used.push(e);
            }
        }
    }
    for e in used {
        o.nat_chain_for(e.sep, 2);
        let c = &e.sep;
        let masq = commented(name_comment.clone()).src(host(e.ip), false).jump(o.mark_masq);
        o.nat(c, masq);
        let mut b = commented(name_comment.clone());
        if svc.affinity_timeout.is_some() {
            b.matching(recent(c, RecentCmd::Set, None));
        }
        let to = NatRange { addr_lo: e.ip, addr_hi: e.ip, ports: Some((e.port, e.port)) };
        o.nat(
            c,
            b.module(ports_only(pr))
                .proto(pr)
                .options()
                .target(Target::Dnat(to, NatFlags::default())),
        );
    }
}

/// `-m PROTO --dport PORT` (its options written where the caller puts them).
fn ports(proto: Proto, port: u16) -> Match {
    Match::Ports {
        proto,
        sport: None,
        dport: Some(Neg { value: PortRange { lo: port, hi: port }, invert: false }),
        tcp_flags: None,
    }
}

/// `-m PROTO` without port options (`-m tcp -p tcp` before a DNAT).
fn ports_only(proto: Proto) -> Match {
    Match::Ports { proto, sport: None, dport: None, tcp_flags: None }
}

/// `-m addrtype --src-type LOCAL`.
fn local_src() -> Match {
    Match::AddrType {
        src: Some(Neg { value: podnet_netfilter::rule::addrtype::LOCAL, invert: false }),
        dst: None,
        limit_iface_in: false,
        limit_iface_out: false,
    }
}

/// `-m addrtype --dst-type LOCAL`.
fn local_dst() -> Match {
    Match::AddrType {
        src: None,
        dst: Some(Neg { value: podnet_netfilter::rule::addrtype::LOCAL, invert: false }),
        limit_iface_in: false,
        limit_iface_out: false,
    }
}

/// Several `iptables-restore` inputs as one: each table's chain declarations, then its
/// rules in input order. Applied without `--noflush` it gives what applying the first input
/// and then the others with `--noflush` gives, as long as no later input re-declares a chain
/// an earlier one filled (true of kube-proxy's payload, the built-in jumps and
/// ip-masq-agent's chain) — and it parses every line once, without copying tables.
pub(crate) fn merge_restore(inputs: &[&str]) -> String {
    let mut tables: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    let mut seen: std::collections::HashSet<(usize, &str)> = std::collections::HashSet::new();
    for input in inputs {
        let mut cur: Option<usize> = None;
        for line in input.lines() {
            if let Some(name) = line.strip_prefix('*') {
                cur = Some(match tables.iter().position(|(n, _, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        tables.push((name, Vec::new(), Vec::new()));
                        tables.len() - 1
                    }
                });
            } else if line == "COMMIT" {
                cur = None;
            } else if let Some(i) = cur {
                if line.starts_with(':') {
                    if seen.insert((i, line)) {
                        tables[i].1.push(line);
                    }
                } else {
                    tables[i].2.push(line);
                }
            }
        }
    }
    let mut out = String::with_capacity(inputs.iter().map(|i| i.len()).sum::<usize>() + 64);
    for (name, decls, rules) in tables {
        out.push('*');
        out.push_str(name);
        out.push('\n');
        for l in decls.iter().chain(&rules) {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The jumps kube-proxy (and kubelet) install in the built-in chains with `EnsureRule`, as
/// `iptables-save` shows them on a node.
pub fn base_jumps() -> &'static str {
    "*filter\n\
:INPUT ACCEPT [0:0]\n\
:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A INPUT -j KUBE-FIREWALL\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -j KUBE-FIREWALL\n\
COMMIT\n\
*nat\n\
:PREROUTING ACCEPT [0:0]\n\
:INPUT ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
COMMIT\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ClusterError;
    use crate::kube_proxy::{SliceEndpoint, TargetPort, validate_service};

    #[test]
    fn hash_recipe_matches_kube_proxy_vectors() {
        for (input, want) in [
            ("ns1/svc1:p80tcp", "XPGD46QRK7WJZT7O"),
            ("ns2/svc2:p8080tcp", "2VJB64SDSIJUP5T6"),
            ("ns1/svc1:p80tcp10.180.0.1:80", "SXIVWICOYRO3J4NJ"),
            ("ns3/svc3:p8081tcp203.0.113.4:8081", "RUVVH7YV3PHQBDOS"),
            ("ns1/svc1tcp", "AQI2S6QIMU7PVVRP"),
        ] {
            assert_eq!(chain_hash(input), want, "{input}");
        }
    }

    #[test]
    fn comments_with_quotes_are_escaped_so_the_payload_always_parses() {
        let mut s = Service::cluster_ip("q\"ns", "we b\\x", Ipv4Addr::new(10, 96, 0, 9));
        s.ports.push(ServicePort {
            name: "p".into(),
            protocol: Proto::TCP,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: 0,
        });
        let slice = EndpointSlice {
            namespace: s.namespace.clone(),
            service: s.name.clone(),
            ports: vec![("p".into(), Proto::TCP, 8080)],
            endpoints: vec![SliceEndpoint {
                ip: Ipv4Addr::new(10, 244, 1, 2),
                node_name: None,
                ready: None,
                serving: None,
                terminating: None,
            }],
        };
        let cfg = ProxyConfig {
            node_name: "n".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 0, 1)],
            local_cidr: None,
            local_iface: None,
            masquerade_bit: 14,
            node_port_addresses: None,
            masquerade_all: false,
            random_fully: false,
            nfacct: false,
            localhost_nodeports: false,
        };
        let text = sync_iptables(&cfg, &[s], &[slice]);
        let mut rs = podnet_netfilter::Ruleset::default();
        rs.restore(&text, false).unwrap();
        let saved = rs.save_kernel_form(&rs.tables_in_use());
        assert!(saved.contains(r#"--comment "q\"ns/we b\\x:p cluster IP""#), "{saved}");
        assert!(matches!(
            validate_service(&Service::cluster_ip("a", "B", Ipv4Addr::LOCALHOST)),
            Err(ClusterError::InvalidName { .. })
        ));
    }

    /// Rules by Service: the stable sort by the comment's first word, also for Services
    /// whose names share their first 16 bytes or are prefixes of one another.
    #[test]
    fn rules_sort_stably_by_service() {
        let names = [
            "default/web-frontend:https",
            "default/web-frontend:http",
            "default/web",
            "default/web-frontend:http",
            "kube-system/kube-dns:dns",
            "default/web-frontend:http2",
            "default/web",
        ];
        let rules: Vec<Rule> = names
            .iter()
            .enumerate()
            .map(|(i, n)| commented(format!("{n} rule {i}")).target(Target::Accept).expect("valid"))
            .collect();
        let mut want = rules.clone();
        want.sort_by(|a, b| service_of(a).cmp(service_of(b)));
        let comments = |r: &[Rule]| r.iter().map(|r| r.comment().map(str::to_owned)).collect();
        let got: Vec<_> = comments(&by_service(rules));
        assert_eq!(got, comments(&want));
    }

    /// Sorting by the names' heads gives the order of the names themselves: prefixes,
    /// names that share their first 16 bytes, names of exactly 16 bytes.
    #[test]
    fn services_sort_by_namespace_then_name() {
        let long = "a".repeat(16);
        let names = [
            "a".to_string(),
            "a-b".into(),
            "ab".into(),
            "b".into(),
            long.clone(),
            format!("{long}0"),
            format!("{long}1"),
            format!("{long}00"),
            long[..15].to_string(),
        ];
        let mut svcs = Vec::new();
        for ns in ["ns", "ns-a", "n", &long, &format!("{long}x")] {
            for (i, name) in names.iter().rev().enumerate() {
                svcs.push(Service::cluster_ip(ns, name, Ipv4Addr::from(i as u32)));
            }
        }
        let got: Vec<(&str, &str)> = sorted_services(&svcs)
            .iter()
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        let mut want: Vec<(&str, &str)> =
            svcs.iter().map(|s| (s.namespace.as_str(), s.name.as_str())).collect();
        want.sort();
        assert_eq!(got, want);
    }

    /// Two threads writing runs of the Services give the payload one thread writes, byte
    /// for byte, with the head chains' rules in kube-proxy's order.
    #[test]
    fn two_threads_write_the_payload_one_thread_writes() {
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for i in 0..40u32 {
            let name = format!("s{}", 40 - i);
            // Two namespaces whose order as names ("ns" < "ns-a") and as comment text
            // ("ns-a/…" < "ns/…") differ, as do "s1" and "s10".
            let ns = if i % 5 == 0 { "ns-a" } else { "ns" };
            let mut s = Service::cluster_ip(ns, &name, Ipv4Addr::from(0x0a60_0000 + i));
            s.ports.push(ServicePort {
                name: "http".into(),
                protocol: Proto::TCP,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: if i % 2 == 0 { 30000 + i as u16 } else { 0 },
            });
            s.external_local = i % 3 == 0;
            s.affinity_timeout = (i % 4 == 0).then_some(10_800);
            slices.push(EndpointSlice {
                namespace: ns.into(),
                service: name,
                ports: vec![("http".into(), Proto::TCP, 8080)],
                endpoints: (0..i % 4)
                    .map(|k| SliceEndpoint {
                        ip: Ipv4Addr::from(0x0af4_0000 + i * 8 + k),
                        node_name: Some(format!("node{}", k % 2)),
                        ready: None,
                        serving: None,
                        terminating: None,
                    })
                    .collect(),
            });
            svcs.push(s);
        }
        let cfg = ProxyConfig {
            node_name: "node0".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 0, 1)],
            local_cidr: Some("10.244.0.0/16".parse().unwrap()),
            local_iface: None,
            masquerade_bit: 14,
            node_port_addresses: None,
            masquerade_all: false,
            random_fully: true,
            nfacct: false,
            localhost_nodeports: true,
        };
        let one = sync_iptables_rules_with(&cfg, &svcs, &slices, false).restore_text();
        let two = sync_iptables_rules_with(&cfg, &svcs, &slices, true).restore_text();
        assert!(one.contains("KUBE-SEP-"), "{one}");
        assert_eq!(one, two);
        // The head chains' rules go by the comment's text (kube-proxy's sort), not by
        // (namespace, name): "ns-a/…" first, and "ns/s11:http" before "ns/s1:http"; the
        // NodePorts jump stays last.
        let nat = one.split_once("*nat").map_or("", |x| x.1);
        let services: Vec<&str> = nat
            .lines()
            .filter_map(|l| l.strip_prefix("-A KUBE-SERVICES -m comment --comment "))
            .filter_map(|l| l.trim_start_matches('"').split([' ', '"']).next())
            .collect();
        assert_eq!(services.len(), 31, "{nat}");
        assert!(services[..30].is_sorted(), "{services:?}");
        assert_eq!((services[0], services[30]), ("ns-a/s10:http", "kubernetes"), "{services:?}");
        let at = |s: &str| services.iter().position(|x| *x == s);
        assert!(at("ns/s11:http") < at("ns/s1:http"), "{services:?}");
    }

    #[test]
    fn probabilities_match_compute_probability() {
        // `computeProbability` is `%0.10f` of `1/n`; the restore form prints what was given.
        for (n, want) in [(2u32, "0.5000000000"), (3, "0.3333333333"), (100001, "0.0000099999")] {
            let cfg = ProxyConfig {
                node_name: String::new(),
                node_ips: Vec::new(),
                local_cidr: None,
                local_iface: None,
                masquerade_bit: 14,
                node_port_addresses: None,
                masquerade_all: false,
                random_fully: false,
                nfacct: false,
                localhost_nodeports: false,
            };
            let p = Out::new(&cfg).probability(n as usize);
            let r = RuleBuilder::new()
                .matching(Match::random(p, false))
                .jump(kube_chain("KUBE-SEP-X"))
                .unwrap();
            assert_eq!(
                r.restore_text(),
                format!("-m statistic --mode random --probability {want} -j KUBE-SEP-X")
            );
        }
    }
}
