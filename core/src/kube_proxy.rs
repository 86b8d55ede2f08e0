//! kube-proxy in iptables mode (v1.31–v1.33 behaviour), after
//! `pkg/proxy/iptables/proxier.go`: Services and EndpointSlices in, the exact
//! `iptables-restore` payload kube-proxy writes out, per node; and IPVS mode
//! ([`sync_ipvs`]): virtual services, ipsets and the iptables rules it still writes.
//!
//! The payload is emitted already in the order kube-proxy's tests sort it to
//! (`sortIPTablesRules`: `KUBE-NODEPORTS`, then `KUBE-SERVICES`, then the other chains by
//! name; rules in those two chains by service name, the NodePorts jump last), so that for the
//! objects of `TestOverallIPTablesRules` it equals the golden dump byte for byte. Chain names
//! use kube-proxy's recipe: `base32(sha256("ns/name:port" + proto))[:16]`.
//!
//! The payload is generated once, as built rules ([`sync_iptables_rules`], netfilter's
//! `RuleBuilder`): a node's sync loads those into its tables directly
//! ([`IptablesPayload::load_into`]) and the text ([`sync_iptables`],
//! [`Cluster::kube_proxy_payload`], `iptables-save`'s restore form) is printed from them, in
//! kube-proxy's spelling. At 10,000 Services × 10 endpoints that is a third of a million
//! rules, so nothing per rule is formatted or parsed; comments are shared strings and chain
//! names inline, and past a few hundred Services two threads take eight runs of the sorted
//! Service list in turn and the runs are merged, which gives the same payload byte for byte.
//!
//! The jumps from the built-in chains, which kube-proxy installs separately with
//! `EnsureRule`, are added per node ([`base_jumps`]).
//!
//! Not modelled yet: topology hints, large-cluster mode (comments dropped above 1,000
//! endpoints), partial syncs (every change re-syncs in full, which yields the same state).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use sha2::{Digest, Sha256};

use podnet_netfilter::rule::{
    Match, NatFlags, NatRange, Neg, PortRange, RecentCmd, RecentMatch, RejectWith, RuleError,
};
use podnet_netfilter::{ChainName, Proto, Rule, RuleBuilder, Ruleset, TableName, Target};

use crate::cluster::{Cluster, ClusterError};

/// A Service's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    /// ClusterIP.
    ClusterIp,
    /// NodePort.
    NodePort,
    /// LoadBalancer.
    LoadBalancer,
}

/// `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (may be empty for a single-port Service).
    pub name: String,
    /// Protocol.
    pub protocol: Proto,
    /// The Service port.
    pub port: u16,
    /// Where it goes on the pods.
    pub target_port: TargetPort,
    /// The node port, 0 for none.
    pub node_port: u16,
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ServiceType,
    /// ClusterIP (`None`: headless).
    pub cluster_ip: Option<Ipv4Addr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Selector (`None`: endpoints are given, not derived).
    pub selector: Option<BTreeMap<String, String>>,
    /// `externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (VIP mode).
    pub lb_ips: Vec<Ipv4Addr>,
    /// `loadBalancerSourceRanges`.
    pub lb_source_ranges: Vec<Ipv4Network>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `healthCheckNodePort`.
    pub health_check_node_port: u16,
}

impl Service {
    /// A ClusterIP Service with TCP ports and a selector.
    pub fn cluster_ip(namespace: &str, name: &str, ip: Ipv4Addr) -> Service {
        Service {
            namespace: namespace.into(),
            name: name.into(),
            kind: ServiceType::ClusterIp,
            cluster_ip: Some(ip),
            ports: Vec::new(),
            selector: None,
            external_ips: Vec::new(),
            lb_ips: Vec::new(),
            lb_source_ranges: Vec::new(),
            external_local: false,
            internal_local: false,
            affinity_timeout: None,
            health_check_node_port: 0,
        }
    }

    /// kube-proxy's `NeedsHealthCheck`: a LoadBalancer Service with
    /// `externalTrafficPolicy: Local` (its nodes serve `healthCheckNodePort`).
    pub fn needs_health_check(&self) -> bool {
        self.kind == ServiceType::LoadBalancer && self.external_local
    }

    fn externally_accessible(&self, p: &ServicePort) -> bool {
        p.node_port != 0 || !self.lb_ips.is_empty() || !self.external_ips.is_empty()
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// Address.
    pub ip: Ipv4Addr,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `conditions.ready` (nil means true).
    pub ready: Option<bool>,
    /// `conditions.serving` (nil means true).
    pub serving: Option<bool>,
    /// `conditions.terminating` (nil means false).
    pub terminating: Option<bool>,
}

/// An EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Namespace.
    pub namespace: String,
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    /// Ports: (name, protocol, port).
    pub ports: Vec<(String, Proto, u16)>,
    /// Endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One of kube-proxy's health-check servers: for a LoadBalancer Service with
/// `externalTrafficPolicy: Local`, every node listens on the Service's `healthCheckNodePort`
/// and tells the cloud load balancer how many ready endpoints of the Service it holds
/// (`pkg/proxy/healthcheck/service_health.go`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheck {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// `healthCheckNodePort` (TCP).
    pub port: u16,
    /// Ready endpoints on this node (distinct addresses over all of the Service's ports).
    pub local_endpoints: usize,
}

impl HealthCheck {
    /// Whether the node passes: kube-proxy answers 200 with local endpoints, 503 without.
    pub fn healthy(&self) -> bool {
        self.local_endpoints > 0
    }

    /// The HTTP response kube-proxy writes (Go's `net/http`, without its `Date` header so
    /// traces stay deterministic).
    pub fn response(&self) -> Vec<u8> {
        let body = format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": true\n}}",
            self.namespace, self.name, self.local_endpoints
        );
        let status = if self.healthy() { "200 OK" } else { "503 Service Unavailable" };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.local_endpoints,
            body.len()
        )
        .into_bytes()
    }
}

/// The health checks a node serves, from the Services and their EndpointSlices.
pub fn health_checks(
    node: &str,
    services: &[Service],
    slices: &[EndpointSlice],
) -> Vec<HealthCheck> {
    services
        .iter()
        .filter(|s| s.needs_health_check() && s.health_check_node_port != 0)
        .map(|s| {
            let local: std::collections::BTreeSet<Ipv4Addr> = slices
                .iter()
                .filter(|sl| sl.namespace == s.namespace && sl.service == s.name)
                .flat_map(|sl| &sl.endpoints)
                .filter(|e| e.node_name.as_deref() == Some(node) && e.ready.unwrap_or(true))
                .map(|e| e.ip)
                .collect();
            HealthCheck {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                port: s.health_check_node_port,
                local_endpoints: local.len(),
            }
        })
        .collect()
}

/// Node-specific kube-proxy settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// This node's addresses.
    pub node_ips: Vec<Ipv4Addr>,
    /// `--detect-local-mode=ClusterCIDR`: the cluster CIDR (`None`: no local detector).
    pub local_cidr: Option<Ipv4Network>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// MASQUERADE `--random-fully` (kube-proxy adds it when iptables supports it).
    pub random_fully: bool,
    /// nfacct counters (needs the kernel's nfnetlink_acct).
    pub nfacct: bool,
    /// `--iptables-localhost-nodeports`.
    pub localhost_nodeports: bool,
}

/// kube-proxy's chain-name hash: `base32(sha256(s))[:16]`.
pub fn chain_hash(s: &str) -> String {
    String::from_utf8_lossy(&hash16(&[s])).into_owned()
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

struct Ep {
    ip: Ipv4Addr,
    port: u16,
    /// `IP:port`.
    key: EpKey,
    /// `KUBE-SEP-…` for this endpoint of the Service port being written.
    sep: ChainName,
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// One table's chains being written, in creation order. Chains written to by name from
/// anywhere (`KUBE-SERVICES`, …) are indexed by name; a Service port's own chains (its
/// `KUBE-SVC-`, `KUBE-SEP-`… chains, unique by their hashed names) are only written while
/// that port is, so they are found among the chains declared since [`Chains::begin`]
/// without indexing a hundred thousand names.
#[derive(Default)]
struct Chains {
    index: std::collections::HashMap<ChainName, usize, podnet_netfilter::eval::FastBuild>,
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

/// The API server's naming rules for what kube-proxy writes into its rules: a namespace is
/// a DNS-1123 label, a Service name a DNS-1035 label, a port name a DNS-1123 label.
pub(crate) fn validate_service(s: &Service) -> Result<(), ClusterError> {
    dns_label("namespace", &s.namespace, false)?;
    dns_label("Service name", &s.name, true)?;
    for p in s.ports.iter().filter(|p| !p.name.is_empty()) {
        dns_label("Service port name", &p.name, false)?;
    }
    Ok(())
}

/// A DNS-1123 label (`letter_first`: a DNS-1035 label).
pub(crate) fn dns_label(
    what: &'static str,
    v: &str,
    letter_first: bool,
) -> Result<(), ClusterError> {
    let b = v.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(inner)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && (!letter_first || b[0].is_ascii_lowercase());
    if ok {
        return Ok(());
    }
    Err(ClusterError::InvalidName {
        what,
        name: v.into(),
        rule: if letter_first {
            "a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
        } else {
            "a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        },
    })
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
    fn append_restore(&mut self, text: &str) -> Result<(), podnet_netfilter::ParseError> {
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
        podnet_netfilter::eval::FastBuild,
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
    chain_of(&mut nat, "KUBE-MARK-MASQ").push(fixed("-j MARK --or-mark 0x4000"));
    chain_of(&mut nat, "KUBE-POSTROUTING").extend([
        fixed("-m mark ! --mark 0x4000/0x4000 -j RETURN"),
        fixed("-j MARK --xor-mark 0x4000"),
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
        fixed("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT"),
        fixed("-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ]);
    let nodeports_last =
        commented("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
            .matching(local_dst())
            .jump(kube_chain("KUBE-NODEPORTS"))
            .expect("kube-proxy's rule shapes are valid");
    chain_of(&mut nat, "KUBE-SERVICES").push(nodeports_last);
    IptablesPayload { filter, nat }
}

/// The Services by namespace, then name, on their names' [`str_key`]s.
fn sorted_services(services: &[Service]) -> Vec<&Service> {
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

fn endpoints_for(cfg: &ProxyConfig, port: &ServicePort, slices: &[&EndpointSlice]) -> Vec<Ep> {
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
    // CategorizeEndpoints (inline up to 16 endpoints a category: no allocation each).
    type Picked<'e> = smallvec::SmallVec<[&'e Ep; 16]>;
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
    let uses_cluster_chain = !cluster.is_empty() && (!svc.internal_local || ext_ok);
    let uses_local_chain =
        !local.is_empty() && (svc.internal_local || (svc.external_local && ext_ok));
    let internal_chain = if svc.internal_local { &*svl_chain } else { &svc_chain };
    let has_internal = has_endpoints && !(svc.internal_local && local.is_empty());
    let external_chain = if svc.external_local { &*svl_chain } else { &svc_chain };
    let has_external = has_endpoints && !(svc.external_local && local.is_empty());
    let uses_ext_chain = has_endpoints && ext_ok;
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
            if let Some(pc) = cfg.local_cidr {
                o.nat(
                    &*ext_chain,
                    commented(format!("pod traffic for {name} external destinations"))
                        .src(pc, false)
                        .jump(svc_chain),
                );
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
fn merge_restore(inputs: &[&str]) -> String {
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

/// Services and endpoints the cluster holds, and how kube-proxy runs.
#[derive(Clone, Debug)]
pub struct Services {
    /// Services, by creation.
    pub list: Vec<Service>,
    /// Slices given explicitly (Services without selector, or imported).
    pub slices: Vec<EndpointSlice>,
    /// MASQUERADE `--random-fully`.
    pub random_fully: bool,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// iptables or IPVS.
    pub mode: ProxyMode,
    /// UDP endpoints as of the last sync (to clear conntrack for the ones that go away).
    pub udp_endpoints: std::collections::BTreeSet<(Ipv4Addr, u16)>,
    /// The API server's ClusterIP allocator.
    pub cluster_ips: crate::ipam::BandAllocator,
    /// The API server's NodePort allocator.
    pub node_ports: crate::ipam::BandAllocator,
    /// The API server's random source (its own, so allocations do not shift datapath choices).
    pub api_rng: podnet_netfilter::Rng,
    /// Set while a batch of objects is applied: one sync at the end instead of one per pod.
    pub(crate) sync_deferred: bool,
}

impl Services {
    pub(crate) fn new(cfg: &crate::cluster::ClusterConfig) -> Services {
        Services {
            list: Vec::new(),
            slices: Vec::new(),
            random_fully: true,
            masquerade_all: false,
            mode: ProxyMode::Iptables,
            udp_endpoints: std::collections::BTreeSet::new(),
            cluster_ips: crate::ipam::BandAllocator::service_cidr(cfg.service_cidr),
            node_ports: crate::ipam::BandAllocator::node_ports(
                cfg.node_port_range.0,
                cfg.node_port_range.1,
            ),
            api_rng: podnet_netfilter::Rng::new(cfg.seed ^ 0x6b75_6265_6170_6973),
            sync_deferred: false,
        }
    }

    /// The API server's admission of a Service's addresses: a requested ClusterIP and
    /// nodePorts are reserved (or refused on conflict), an unset nodePort of a NodePort or
    /// LoadBalancer Service is allocated. All or nothing.
    pub(crate) fn admit(&mut self, svc: &mut Service) -> Result<(), crate::ipam::IpamError> {
        let mut taken: Vec<(bool, u32)> = Vec::new();
        let result = (|| {
            if let Some(ip) = svc.cluster_ip {
                self.cluster_ips.allocate_exact(u32::from(ip))?;
                taken.push((true, u32::from(ip)));
            }
            let wants_node_port =
                matches!(svc.kind, ServiceType::NodePort | ServiceType::LoadBalancer);
            for p in &mut svc.ports {
                if p.node_port != 0 {
                    self.node_ports.allocate_exact(u32::from(p.node_port))?;
                    taken.push((false, u32::from(p.node_port)));
                } else if wants_node_port {
                    let v = self.node_ports.allocate(&mut self.api_rng)?;
                    p.node_port = v as u16;
                    taken.push((false, v));
                }
            }
            if svc.health_check_node_port != 0 {
                self.node_ports.allocate_exact(u32::from(svc.health_check_node_port))?;
                taken.push((false, u32::from(svc.health_check_node_port)));
            } else if svc.needs_health_check() {
                // The API server allocates a healthCheckNodePort for a LoadBalancer
                // Service with externalTrafficPolicy Local that asks for none.
                let v = self.node_ports.allocate(&mut self.api_rng)?;
                svc.health_check_node_port = v as u16;
                taken.push((false, v));
            }
            Ok(())
        })();
        if result.is_err() {
            for (ip, v) in taken {
                if ip { self.cluster_ips.release(v) } else { self.node_ports.release(v) }
            }
        }
        result
    }

    /// Releases what [`Services::admit`] reserved.
    pub(crate) fn release(&mut self, svc: &Service) {
        if let Some(ip) = svc.cluster_ip {
            self.cluster_ips.release(u32::from(ip));
        }
        for p in &svc.ports {
            if p.node_port != 0 {
                self.node_ports.release(u32::from(p.node_port));
            }
        }
        if svc.health_check_node_port != 0 {
            self.node_ports.release(u32::from(svc.health_check_node_port));
        }
    }
}

impl Cluster {
    pub(crate) fn seed_services(&mut self) {
        let mut web = Service::cluster_ip("default", "web", Ipv4Addr::new(10, 96, 0, 10));
        web.kind = ServiceType::NodePort;
        web.selector = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        web.ports = vec![
            ServicePort {
                name: "http".into(),
                protocol: Proto::TCP,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: 30081,
            },
            ServicePort {
                name: "udp".into(),
                protocol: Proto::UDP,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: 30082,
            },
        ];
        self.add_service(web).expect("the seed's Service fits the default ranges");
    }

    /// Adds a Service and re-syncs every node. As the API server does, its ClusterIP and
    /// nodePorts are reserved (a conflict is an error) and a NodePort or LoadBalancer
    /// Service's unset nodePorts are allocated; see [`Cluster::allocate_cluster_ip`] for a
    /// Service without a requested ClusterIP.
    pub fn add_service(&mut self, mut svc: Service) -> Result<(), ClusterError> {
        if self.services.list.iter().any(|s| s.namespace == svc.namespace && s.name == svc.name) {
            return Err(ClusterError::Duplicate {
                kind: "service",
                name: format!("{}/{}", svc.namespace, svc.name),
            });
        }
        validate_service(&svc)?;
        self.services.admit(&mut svc)?;
        self.services.list.push(svc);
        self.services_changed();
        Ok(())
    }

    /// A free ClusterIP from the Service CIDR, as the API server picks one for a Service
    /// that requests none: random (seeded) in the upper band, the lower band kept for
    /// static requests. It is reserved when a Service carrying it is added with
    /// [`Cluster::add_service`].
    pub fn allocate_cluster_ip(&mut self) -> Result<Ipv4Addr, ClusterError> {
        let v = self.services.cluster_ips.allocate(&mut self.services.api_rng)?;
        self.services.cluster_ips.release(v);
        Ok(Ipv4Addr::from(v))
    }

    /// Adds an EndpointSlice for a Service without selector, and re-syncs every node.
    pub fn add_endpoint_slice(&mut self, slice: EndpointSlice) {
        self.services.slices.push(slice);
        self.services_changed();
    }

    /// Removes a Service (`svc/NS/NAME`) and re-syncs every node.
    pub fn delete_service(&mut self, key: &str) -> Result<(), ClusterError> {
        let k = key.strip_prefix("svc/").unwrap_or(key);
        let Some(i) =
            self.services.list.iter().position(|s| format!("{}/{}", s.namespace, s.name) == k)
        else {
            return Err(ClusterError::NotFound {
                kind: "service",
                name: key.into(),
                hint: String::new(),
            });
        };
        let svc = self.services.list.remove(i);
        self.services.release(&svc);
        self.services_changed();
        Ok(())
    }

    /// Sets a pod's Ready condition; its endpoints follow and every node re-syncs.
    pub fn set_ready(&mut self, pod: &str, ready: bool) -> Result<(), ClusterError> {
        let id = self.pod_id(pod)?;
        self.world.pods[id.idx()].ready = ready;
        self.services_changed();
        Ok(())
    }

    /// The endpoints controller: slices for every Service with a selector. Ready follows the
    /// pod's Ready condition; a terminating pod's endpoint is serving and terminating. A named
    /// `targetPort` is resolved per pod from its containers' named ports, so pods whose
    /// numbers differ get their own slices.
    pub fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        let mut out = self.services.slices.clone();
        // Pods by (namespace, label, value): a Service looks at the pods its selector's first
        // pair names, not at every pod.
        let mut by_label: std::collections::HashMap<(&str, &str, &str), Vec<usize>> =
            std::collections::HashMap::new();
        for (i, p) in self.world.pods.iter().enumerate().filter(|(_, p)| !p.deleted) {
            for (k, v) in &p.labels {
                by_label.entry((&p.namespace, k, v)).or_default().push(i);
            }
        }
        for svc in &self.services.list {
            let Some(sel) = &svc.selector else { continue };
            let Some((k0, v0)) = sel.iter().next() else { continue };
            let mut by_ports: BTreeMap<Vec<(String, Proto, u16)>, Vec<SliceEndpoint>> =
                BTreeMap::new();
            let candidates = by_label
                .get(&(svc.namespace.as_str(), k0.as_str(), v0.as_str()))
                .map(Vec::as_slice);
            for p in candidates
                .unwrap_or(&[])
                .iter()
                .map(|&i| &self.world.pods[i])
                .filter(|p| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            {
                let ports: Vec<(String, Proto, u16)> = svc
                    .ports
                    .iter()
                    .filter_map(|sp| match &sp.target_port {
                        TargetPort::Number(n) => Some((sp.name.clone(), sp.protocol, *n)),
                        TargetPort::Name(name) => p
                            .containers
                            .iter()
                            .flat_map(|c| &c.named_ports)
                            .find(|(n, pr, _)| n == name && *pr == sp.protocol)
                            .map(|(_, _, port)| (sp.name.clone(), sp.protocol, *port)),
                    })
                    .collect();
                by_ports.entry(ports).or_default().push(SliceEndpoint {
                    ip: p.ip,
                    node_name: Some(self.world.nodes[p.node.idx()].name.clone()),
                    ready: Some(p.ready && !p.terminating),
                    serving: Some(p.ready || p.terminating),
                    terminating: Some(p.terminating),
                });
            }
            if by_ports.is_empty() {
                by_ports.insert(Vec::new(), Vec::new());
            }
            for (ports, endpoints) in by_ports {
                out.push(EndpointSlice {
                    namespace: svc.namespace.clone(),
                    service: svc.name.clone(),
                    ports,
                    endpoints,
                });
            }
        }
        out
    }

    /// Re-programs every node's iptables from the Services and endpoints (a full sync), with
    /// the built-in chain jumps and ip-masq-agent's egress rules.
    pub(crate) fn services_changed(&mut self) {
        if self.services.sync_deferred {
            return;
        }
        let slices = self.endpoint_slices();
        // kube-proxy deletes the conntrack entries of UDP endpoints that went away
        // (`conntrack -D -p udp --reply-src EP --reply-port-src PORT`), so clients stop
        // sending to them at once; TCP is left to conntrack and the endpoints' RSTs.
        let udp_eps = |slices: &[EndpointSlice]| -> std::collections::BTreeSet<(Ipv4Addr, u16)> {
            slices
                .iter()
                .flat_map(|s| {
                    let ports: Vec<u16> = s
                        .ports
                        .iter()
                        .filter(|(_, p, _)| *p == Proto::UDP)
                        .map(|(_, _, n)| *n)
                        .collect();
                    s.endpoints
                        .iter()
                        .filter(|e| e.ready.unwrap_or(true))
                        .flat_map(move |e| ports.clone().into_iter().map(move |p| (e.ip, p)))
                })
                .collect()
        };
        let now_eps = udp_eps(&slices);
        let gone: Vec<(Ipv4Addr, u16)> =
            self.services.udp_endpoints.difference(&now_eps).copied().collect();
        self.services.udp_endpoints = now_eps;
        if !gone.is_empty() {
            for n in 0..self.world.nodes.len() {
                let ns = self.world.nodes[n].netns;
                if let Some(nf) = self.world.netns[ns.idx()].nf.as_mut() {
                    nf.conntrack.delete_where(|e| {
                        e.orig.proto == Proto::UDP && gone.contains(&(e.reply.src, e.reply.sport))
                    });
                }
            }
        }
        // iptables mode: nodes whose payload cannot differ share one copy of the tables
        // (copy-on-write; see `Netfilter::tables`). A payload depends on the node only
        // through its endpoints of Services with a Local traffic policy and its addresses
        // in loadBalancerSourceRanges; that is the key.
        let mut shared: std::collections::HashMap<
            (Vec<Ipv4Addr>, bool, Option<Ipv4Addr>),
            std::sync::Arc<podnet_netfilter::Ruleset>,
        > = std::collections::HashMap::new();
        let local_policy: std::collections::BTreeSet<(String, String)> = self
            .services
            .list
            .iter()
            .filter(|s| s.internal_local || s.external_local)
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect();
        let local_slices: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|sl| local_policy.contains(&(sl.namespace.clone(), sl.service.clone())))
            .collect();
        let ranges: Vec<Ipv4Network> =
            self.services.list.iter().flat_map(|s| s.lb_source_ranges.iter().copied()).collect();
        for n in 0..self.world.nodes.len() {
            let node = &self.world.nodes[n];
            let cfg = self.proxy_config(node);
            let ns = node.netns;
            let node_id = crate::ids::NodeId(n as u32);
            if node.iptables_imported {
                // The node runs rules imported from its real iptables-save: keep them.
                continue;
            }
            match self.services.mode {
                ProxyMode::Iptables => {
                    let mut local_eps: Vec<Ipv4Addr> = local_slices
                        .iter()
                        .flat_map(|sl| &sl.endpoints)
                        .filter(|e| e.node_name.as_deref() == Some(node.name.as_str()))
                        .map(|e| e.ip)
                        .collect();
                    local_eps.sort();
                    // AWS's SNAT rule names the node's own address.
                    let aws_ip = self.aws.is_some().then_some(node.ip);
                    let key = (local_eps, ranges.iter().any(|r| r.contains(node.ip)), aws_ip);
                    let tables = shared
                        .entry(key)
                        .or_insert_with(|| {
                            std::sync::Arc::new(self.iptables_mode_rules(node, &cfg, &slices))
                        })
                        .clone();
                    self.set_ipvs_addresses(node_id, &[]);
                    if let Some(nf) = self.world.netns[ns.idx()].nf.as_mut() {
                        let own = TableName::ALL
                            .iter()
                            .filter(|t| !matches!(t, TableName::Filter | TableName::Nat))
                            .any(|t| !nf.tables.is_pristine(*t));
                        if own {
                            // Something else wrote raw or mangle here: keep it.
                            for t in [TableName::Filter, TableName::Nat] {
                                *nf.tables_mut().table_mut(t) = tables.table(t).clone();
                            }
                        } else {
                            nf.tables = tables;
                        }
                        nf.ipvs = podnet_netfilter::ipvs::Ipvs::default();
                        nf.sets = podnet_netfilter::ipset::IpSets::default();
                    }
                }
                ProxyMode::Ipvs(sched) => {
                    let mut node_ips = vec![node.ip];
                    if node.bridge.is_some() {
                        node_ips.push(Ipv4Addr::from(u32::from(node.pod_cidr.network()) + 1));
                    }
                    let cfg = ProxyConfig { node_ips, ..cfg };
                    let egress = self.egress_rules(node);
                    let sync = sync_ipvs(&cfg, &self.services.list, &slices, sched);
                    self.set_ipvs_addresses(node_id, &sync.bound);
                    if let Some(nf) = self.world.netns[ns.idx()].nf.as_mut() {
                        nf.tables_mut()
                            .restore(&sync.iptables, false)
                            .expect("kube-proxy's own payload always parses");
                        nf.tables_mut()
                            .restore(base_jumps_ipvs(), true)
                            .expect("the built-in jumps always parse");
                        nf.tables_mut()
                            .restore(&egress, true)
                            .expect("the egress SNAT rules always parse");
                        let mut sets = podnet_netfilter::ipset::IpSets::default();
                        for (name, kind, comment, members) in &sync.sets {
                            sets.create(name, *kind, comment);
                            for m in members {
                                sets.add(name, m)
                                    .expect("kube-proxy's own set members fit their sets");
                            }
                        }
                        nf.sets = sets;
                        nf.ipvs.replace(sync.services);
                    }
                }
            }
        }
        self.sync_health_checks(&slices);
        self.sync_lbs();
        self.sync_ingress_controllers();
    }

    /// Starts, updates or stops each node's health-check servers (`healthCheckNodePort`).
    fn sync_health_checks(&mut self, slices: &[EndpointSlice]) {
        const OWNER: &str = "kube-proxy";
        for n in 0..self.world.nodes.len() {
            let checks = health_checks(&self.world.nodes[n].name, &self.services.list, slices);
            let ns_id = self.world.nodes[n].netns;
            let ns = &mut self.world.netns[ns_id.idx()];
            let old_ports: Vec<u16> =
                self.hosts.health(ns_id).map(|h| h.keys().copied().collect()).unwrap_or_default();
            for p in &old_ports {
                if ns.ports.get(&(Proto::TCP, *p)).is_some_and(|o| o == OWNER) {
                    ns.ports.remove(&(Proto::TCP, *p));
                }
            }
            // A hostNetwork process already holding the port keeps it (kube-proxy fails to
            // listen there and logs it).
            let want: BTreeMap<u16, Vec<u8>> = checks
                .iter()
                .filter(|h| !ns.ports.contains_key(&(Proto::TCP, h.port)))
                .map(|h| (h.port, h.response()))
                .collect();
            for p in want.keys() {
                ns.ports.insert((Proto::TCP, *p), OWNER.to_string());
            }
            // Listening sockets follow the port set: a changed set rebuilds the stack.
            self.hosts.set_health(ns_id, want);
        }
    }

    /// kube-proxy's health-check servers on `node`, with what each answers now.
    pub fn health_checks(&self, node: &str) -> Result<Vec<HealthCheck>, ClusterError> {
        let id = self.node_id(node)?;
        Ok(health_checks(
            &self.world.nodes[id.idx()].name,
            &self.services.list,
            &self.endpoint_slices(),
        ))
    }

    /// kube-proxy's settings on a node.
    fn proxy_config(&self, node: &crate::cluster::Node) -> ProxyConfig {
        ProxyConfig {
            node_name: node.name.clone(),
            node_ips: vec![node.ip],
            // The pods' range: the cluster CIDR, or the VPC subnet in the AWS profile.
            local_cidr: Some(if self.aws.is_some() {
                self.cfg.node_subnet
            } else {
                self.cfg.cluster_cidr
            }),
            masquerade_all: self.services.masquerade_all,
            random_fully: self.services.random_fully,
            nfacct: false,
            localhost_nodeports: true,
        }
    }

    /// Everything iptables mode puts on a node: kube-proxy's payload, the built-in chain
    /// jumps, and the egress SNAT ([`Cluster::egress_rules`]), as restoring the payload and
    /// then the other two with `--noflush` leaves the tables.
    fn iptables_mode_rules(
        &self,
        node: &crate::cluster::Node,
        cfg: &ProxyConfig,
        slices: &[EndpointSlice],
    ) -> Ruleset {
        let mut payload = sync_iptables_rules(cfg, &self.services.list, slices);
        payload.append_restore(base_jumps()).expect("the built-in jumps always parse");
        payload
            .append_restore(&self.egress_rules(node))
            .expect("the egress SNAT rules always parse");
        let mut rs = Ruleset::default();
        payload.load_into(&mut rs).expect("kube-proxy's chains and jumps are consistent");
        rs
    }

    /// Replaces a node's iptables with an `iptables-save` dump of a real node (kernel or
    /// restore form): traces then follow the rules the node really has, and kube-proxy's
    /// syncs leave the node alone. See [`Cluster::iptables_drift`].
    pub fn import_iptables(&mut self, node: &str, text: &str) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let ns = self.world.nodes[id.idx()].netns;
        let mut rs = podnet_netfilter::Ruleset::default();
        rs.restore(text, false).map_err(|e| ClusterError::IptablesParse {
            node: node.into(),
            line: e.line,
            column: e.col,
            msg: e.msg,
        })?;
        if let Some(nf) = self.world.netns[ns.idx()].nf.as_mut() {
            nf.tables = std::sync::Arc::new(rs);
        }
        self.world.nodes[id.idx()].iptables_imported = true;
        Ok(())
    }

    /// Runs `iptables-restore [--noflush]` on a node, as an administrator (or another
    /// agent) would, on top of what kube-proxy wrote. kube-proxy's syncs rewrite the filter
    /// and nat tables and keep raw and mangle, so rules meant to stay belong there (or use
    /// [`Cluster::import_iptables`] to pin the whole node).
    pub fn iptables_restore(
        &mut self,
        node: &str,
        text: &str,
        noflush: bool,
    ) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let ns = self.world.nodes[id.idx()].netns;
        if let Some(nf) = self.world.netns[ns.idx()].nf.as_mut() {
            nf.tables_mut().restore(text, noflush).map_err(|e| ClusterError::IptablesParse {
                node: node.into(),
                line: e.line,
                column: e.col,
                msg: e.msg,
            })?;
        }
        Ok(())
    }

    /// How a node's imported rules differ from what podnet's kube-proxy and the egress
    /// agent would write there now, chain by chain in kernel form: `-` lines are expected
    /// but missing, `+` lines are on the node but not expected; a chain whose rules match but
    /// in another order is reported as reordered. Empty when nothing drifted (or nothing
    /// was imported).
    pub fn iptables_drift(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let n = &self.world.nodes[id.idx()];
        let Some(nf) = self.world.netns[n.netns.idx()].nf.as_ref() else {
            return Ok(String::new());
        };
        if !n.iptables_imported {
            return Ok(String::new());
        }
        let expected = match self.services.mode {
            ProxyMode::Iptables => {
                self.iptables_mode_rules(n, &self.proxy_config(n), &self.endpoint_slices())
            }
            ProxyMode::Ipvs(sched) => {
                let sync = sync_ipvs(
                    &self.proxy_config(n),
                    &self.services.list,
                    &self.endpoint_slices(),
                    sched,
                );
                let text =
                    merge_restore(&[&sync.iptables, base_jumps_ipvs(), &self.egress_rules(n)]);
                let mut rs = Ruleset::default();
                rs.restore(&text, false).expect("kube-proxy's own payload always parses");
                rs
            }
        };
        Ok(podnet_netfilter::table::drift(&expected, &nf.tables))
    }

    /// Resolves `svc/NS/NAME` and a port (number or name) to ClusterIP:port.
    pub(crate) fn resolve_service(
        &self,
        key: &str,
        port: &str,
    ) -> Result<(Ipv4Addr, u16), ClusterError> {
        let k = key.strip_prefix("svc/").unwrap_or(key);
        let svc = self
            .services
            .list
            .iter()
            .find(|s| format!("{}/{}", s.namespace, s.name) == k)
            .ok_or_else(|| ClusterError::NotFound {
                kind: "service",
                name: key.into(),
                hint: format!(
                    " (services: {})",
                    self.services
                        .list
                        .iter()
                        .map(|s| format!("svc/{}/{}", s.namespace, s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let p =
            svc.ports.iter().find(|p| p.name == port || p.port.to_string() == port).ok_or_else(
                || ClusterError::NotFound {
                    kind: "port",
                    name: format!("{key}:{port}"),
                    hint: format!(
                        " (ports: {})",
                        svc.ports
                            .iter()
                            .map(|p| format!("{}={}", p.name, p.port))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            )?;
        let ip = svc.cluster_ip.ok_or_else(|| ClusterError::NotFound {
            kind: "ClusterIP",
            name: key.into(),
            hint: " (headless Service)".into(),
        })?;
        Ok((ip, p.port))
    }

    /// kube-proxy's restore payload for a node (what it wrote, restore form).
    pub fn kube_proxy_payload(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let cfg = self.proxy_config(&self.world.nodes[id.idx()]);
        Ok(sync_iptables(&cfg, &self.services.list, &self.endpoint_slices()))
    }

    /// Switches kube-proxy's mode and re-syncs every node.
    pub fn set_proxy_mode(&mut self, mode: ProxyMode) {
        self.services.mode = mode;
        self.services_changed();
    }

    /// `ipvsadm -Ln` of a node.
    pub fn ipvsadm(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        Ok(self.world.netns[self.world.nodes[id.idx()].netns.idx()]
            .nf
            .as_ref()
            .map(|nf| nf.ipvs.list())
            .unwrap_or_default())
    }

    /// `ipset list` of a node.
    pub fn ipset_list(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        Ok(self.world.netns[self.world.nodes[id.idx()].netns.idx()]
            .nf
            .as_ref()
            .map(|nf| nf.sets.list())
            .unwrap_or_default())
    }

    /// Binds `addrs` to the node's `kube-ipvs0` dummy device (created on first use).
    fn set_ipvs_addresses(&mut self, node: crate::ids::NodeId, addrs: &[Ipv4Addr]) {
        let ns = self.world.nodes[node.idx()].netns;
        let existing = self.world.dev_named(ns, "kube-ipvs0");
        let dev = match (existing, addrs.is_empty()) {
            (Some(d), _) => d,
            (None, true) => return,
            (None, false) => {
                self.world.add_device(ns, "kube-ipvs0", crate::cluster::DeviceKind::Dummy)
            }
        };
        let addrs = addrs.iter().map(|a| ipnetwork::Ipv4Network::new(*a, 32).expect("/32"));
        self.world.set_addrs(dev, addrs.collect());
    }

    /// Sets MASQUERADE `--random-fully` (on by default) and re-syncs.
    pub fn set_random_fully(&mut self, on: bool) {
        self.services.random_fully = on;
        self.services_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn tables(c: &Cluster, node: &str) -> std::sync::Arc<podnet_netfilter::Ruleset> {
        let n = c.node_id(node).unwrap();
        c.world.netns[c.world.nodes[n.idx()].netns.idx()].nf.as_ref().unwrap().tables.clone()
    }

    #[test]
    fn nodes_with_the_same_rules_share_one_copy_until_one_diverges() {
        use std::sync::Arc;
        let mut c = Cluster::seed();
        let (t1, t2, t3) = (tables(&c, "node1"), tables(&c, "node2"), tables(&c, "node3"));
        assert!(Arc::ptr_eq(&t1, &t2) && Arc::ptr_eq(&t2, &t3));
        let before = c.iptables_save_with("node2", true).unwrap();
        drop((t1, t2, t3));
        // Packets through node1 count on node1's own counters, not in the rules: all three
        // nodes still share one copy of them, and only node1's iptables-save -c counted.
        let t = c.trace("pod/default/pod2", "pod/default/pod1:8080", &Default::default()).unwrap();
        assert!(t.completed);
        assert!(Arc::ptr_eq(&tables(&c, "node1"), &tables(&c, "node2")));
        assert!(Arc::ptr_eq(&tables(&c, "node2"), &tables(&c, "node3")));
        assert_eq!(c.iptables_save_with("node2", true).unwrap(), before);
        let counted = c.iptables_save_with("node1", true).unwrap();
        assert_ne!(counted, before);
        assert!(
            counted.contains(":FORWARD ACCEPT [") && !counted.contains(":FORWARD ACCEPT [0:0]")
        );
        assert!(
            counted.lines().any(|l| l.contains("-j KUBE-FORWARD") && !l.starts_with("[0:0]")),
            "{counted}"
        );
        // A Service with a Local policy and an endpoint on node2 only: node2's rules differ,
        // node1 and node3 (no local endpoint) share theirs again after the sync.
        let mut s = Service::cluster_ip("default", "api-local", Ipv4Addr::new(10, 96, 0, 21));
        s.kind = ServiceType::NodePort;
        s.external_local = true;
        s.selector = Some(BTreeMap::from([("app".to_string(), "api".to_string())]));
        s.ports = vec![ServicePort {
            name: "http".into(),
            protocol: Proto::TCP,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: 30090,
        }];
        c.add_service(s).unwrap();
        assert!(Arc::ptr_eq(&tables(&c, "node1"), &tables(&c, "node3")));
        assert!(!Arc::ptr_eq(&tables(&c, "node1"), &tables(&c, "node2")));
        let (n1, n2) =
            (c.kube_proxy_payload("node1").unwrap(), c.kube_proxy_payload("node2").unwrap());
        assert!(n1.contains("default/api-local:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30090 -j DROP"), "{n1}");
        assert!(!n2.contains("api-local:http has no local endpoints"), "{n2}");
        assert_eq!(
            c.iptables_save("node1").unwrap().contains("KUBE-SVL-"),
            c.iptables_save("node3").unwrap().contains("KUBE-SVL-")
        );
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

/// kube-proxy's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables mode (the default).
    Iptables,
    /// IPVS mode, with this scheduler.
    Ipvs(podnet_netfilter::ipvs::Scheduler),
}

/// What kube-proxy programs on a node in IPVS mode.
#[derive(Clone, Debug)]
pub struct IpvsSync {
    /// The iptables restore payload IPVS mode still writes (nat and filter).
    pub iptables: String,
    /// ipsets: (name, type, comment, members).
    pub sets: Vec<(&'static str, podnet_netfilter::ipset::SetType, &'static str, Vec<String>)>,
    /// Virtual services.
    pub services:
        indexmap::IndexMap<(Proto, Ipv4Addr, u16), podnet_netfilter::ipvs::VirtualService>,
    /// Addresses bound to `kube-ipvs0`.
    pub bound: Vec<Ipv4Addr>,
}

/// kube-proxy in IPVS mode (after `pkg/proxy/ipvs/proxier.go`): virtual servers per
/// ClusterIP:port, externalIP, LB IP and nodeIP:nodePort; real servers from ready endpoints
/// (Local policy without local endpoints falls back to all of them, as IPVS mode does); the
/// ipsets and the iptables rules it still installs.
pub fn sync_ipvs(
    cfg: &ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    scheduler: podnet_netfilter::ipvs::Scheduler,
) -> IpvsSync {
    use podnet_netfilter::ipset::SetType;
    use podnet_netfilter::ipvs::{RealServer, VirtualService};
    let mut by_svc: std::collections::HashMap<(&str, &str), Vec<&EndpointSlice>> =
        std::collections::HashMap::new();
    for sl in slices {
        by_svc.entry((sl.namespace.as_str(), sl.service.as_str())).or_default().push(sl);
    }
    let mut vss = indexmap::IndexMap::new();
    let mut bound = Vec::new();
    let (mut cluster_ip, mut loop_back, mut np_tcp, mut np_udp, mut hc, mut ext) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut lb, mut lb_local, mut lb_fw, mut lb_cidr) = (vec![], vec![], vec![], vec![]);
    for svc in sorted_services(services) {
        let Some(cip) = svc.cluster_ip else { continue };
        let mine = by_svc
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in &svc.ports {
            let eps = endpoints_for(cfg, port, mine);
            let ready: Vec<&Ep> = eps.iter().filter(|e| e.ready).collect();
            let local: Vec<&Ep> = ready.iter().copied().filter(|e| e.local).collect();
            let proto = port.protocol;
            let p = proto.to_string();
            let reals = |list: &[&Ep]| {
                list.iter()
                    .map(|e| RealServer {
                        addr: e.ip,
                        port: e.port,
                        weight: 1,
                        active: 0,
                        inactive: 0,
                    })
                    .collect::<Vec<_>>()
            };
            // Local policy with no local endpoints falls back to every endpoint in IPVS mode.
            let pick = |local_only: bool| {
                if local_only && !local.is_empty() { reals(&local) } else { reals(&ready) }
            };
            let mut add = |addr: Ipv4Addr, vport: u16, local_only: bool| {
                let mut vs = VirtualService::new(scheduler, svc.affinity_timeout);
                vs.reals = pick(local_only);
                vss.insert((proto, addr, vport), vs);
            };
            add(cip, port.port, svc.internal_local);
            bound.push(cip);
            cluster_ip.push(format!("{cip},{p}:{}", port.port));
            for ip in &svc.external_ips {
                add(*ip, port.port, svc.external_local);
                bound.push(*ip);
                ext.push(format!("{ip},{p}:{}", port.port));
            }
            for ip in &svc.lb_ips {
                add(*ip, port.port, svc.external_local);
                bound.push(*ip);
                let member = format!("{ip},{p}:{}", port.port);
                if svc.external_local {
                    lb_local.push(member.clone());
                }
                if !svc.lb_source_ranges.is_empty() {
                    lb_fw.push(member.clone());
                    for r in &svc.lb_source_ranges {
                        lb_cidr.push(format!("{member},{r}"));
                    }
                }
                lb.push(member);
            }
            if port.node_port != 0 {
                for ip in &cfg.node_ips {
                    add(*ip, port.node_port, svc.external_local);
                }
                match proto {
                    Proto::UDP => np_udp.push(port.node_port.to_string()),
                    _ => np_tcp.push(port.node_port.to_string()),
                }
            }
            for e in eps.iter().filter(|e| e.local) {
                loop_back.push(format!("{},{p}:{},{}", e.ip, e.port, e.ip));
            }
            if svc.needs_health_check() && svc.health_check_node_port != 0 {
                hc.push(svc.health_check_node_port.to_string());
            }
        }
    }
    bound.sort();
    bound.dedup();
    let ipvs_ips: Vec<String> = bound.iter().map(ToString::to_string).collect();
    let masq_src = match cfg.local_cidr {
        Some(c) if !cfg.masquerade_all => format!(" ! -s {c}"),
        _ => String::new(),
    };
    let rf = if cfg.random_fully { " --random-fully" } else { "" };
    let mut nat = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    nat.push_str("-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n");
    if !loop_back.is_empty() {
        nat.push_str("-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE\n");
    }
    for (set, proto, members) in
        [("KUBE-NODE-PORT-TCP", "tcp", &np_tcp), ("KUBE-NODE-PORT-UDP", "udp", &np_udp)]
    {
        if !members.is_empty() {
            let _ = writeln!(
                nat,
                "-A KUBE-NODE-PORT -p {proto} -m comment --comment \"Kubernetes nodeport {} port for masquerade purpose\" -m set --match-set {set} dst -j KUBE-MARK-MASQ",
                proto.to_uppercase()
            );
        }
    }
    if !cluster_ip.is_empty() {
        let _ = writeln!(
            nat,
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst{masq_src} -j KUBE-MARK-MASQ"
        );
    }
    if !ext.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ\n");
    }
    if !lb.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER\n");
    }
    if !lb_local.is_empty() {
        nat.push_str("-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN\n");
    }
    nat.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n");
    nat.push_str("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ\n");
    if !cluster_ip.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n");
    }
    if !lb.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT\n");
    }
    nat.push_str("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n");
    nat.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n");
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{rf}"
    );
    nat.push_str("COMMIT\n");
    let mut filter = String::from(
        "*filter\n:KUBE-FORWARD - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-SOURCE-RANGES-FIREWALL - [0:0]\n:KUBE-IPVS-FILTER - [0:0]\n:KUBE-IPVS-OUT-FILTER - [0:0]\n",
    );
    if !lb_fw.is_empty() {
        filter.push_str("-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL\n");
        filter.push_str("-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source cidr for packet filter purpose\" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN\n");
    }
    filter.push_str("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP\n");
    filter.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n");
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    filter.push_str("-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT\n");
    for set in
        ["KUBE-LOAD-BALANCER", "KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL"]
    {
        let _ = writeln!(filter, "-A KUBE-IPVS-FILTER -m set --match-set {set} dst,dst -j RETURN");
    }
    filter.push_str(
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN\n",
    );
    filter.push_str("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT\n");
    filter.push_str("COMMIT\n");
    let sets = vec![
        (
            "KUBE-CLUSTER-IP",
            SetType::HashIpPort,
            "Kubernetes service cluster ip + port for masquerade purpose",
            cluster_ip,
        ),
        (
            "KUBE-LOOP-BACK",
            SetType::HashIpPortIp,
            "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
            loop_back,
        ),
        (
            "KUBE-EXTERNAL-IP",
            SetType::HashIpPort,
            "Kubernetes service external ip + port for masquerade and filter purpose",
            ext,
        ),
        (
            "KUBE-EXTERNAL-IP-LOCAL",
            SetType::HashIpPort,
            "Kubernetes service external ip + port with externalTrafficPolicy=local",
            vec![],
        ),
        ("KUBE-LOAD-BALANCER", SetType::HashIpPort, "Kubernetes service lb portal", lb),
        (
            "KUBE-LOAD-BALANCER-LOCAL",
            SetType::HashIpPort,
            "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
            lb_local,
        ),
        (
            "KUBE-LOAD-BALANCER-FW",
            SetType::HashIpPort,
            "Kubernetes service load balancer ip + port for load balancer with sourceRange",
            lb_fw,
        ),
        (
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            SetType::HashIpPortNet,
            "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
            lb_cidr,
        ),
        (
            "KUBE-NODE-PORT-TCP",
            SetType::BitmapPort,
            "Kubernetes nodeport TCP port for masquerade purpose",
            np_tcp,
        ),
        (
            "KUBE-NODE-PORT-UDP",
            SetType::BitmapPort,
            "Kubernetes nodeport UDP port for masquerade purpose",
            np_udp,
        ),
        (
            "KUBE-HEALTH-CHECK-NODE-PORT",
            SetType::BitmapPort,
            "Kubernetes health check node port",
            hc,
        ),
        (
            "KUBE-IPVS-IPS",
            SetType::HashIp,
            "Kubernetes service IP addresses bound to kube-ipvs0",
            ipvs_ips,
        ),
    ];
    IpvsSync { iptables: format!("{filter}{nat}"), sets, services: vss, bound }
}

/// The jumps IPVS mode installs in the built-in chains.
pub fn base_jumps_ipvs() -> &'static str {
    "*filter\n\
:INPUT ACCEPT [0:0]\n\
:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER\n\
-A INPUT -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
-A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT\n\
-A FORWARD -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
-A OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER\n\
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
