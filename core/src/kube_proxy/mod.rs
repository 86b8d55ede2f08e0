//! kube-proxy, and the Services and EndpointSlices it reads.
//!
//! | module | models |
//! |---|---|
//! | [`iptables`] | iptables mode (v1.31–v1.33, after `pkg/proxy/iptables/proxier.go`): the exact `iptables-restore` payload per node |
//! | [`ipvs`] | IPVS mode (after `pkg/proxy/ipvs/proxier.go`): virtual services, ipsets and the iptables rules it still writes |
//! | [`nftables`] | nftables mode (v1.33, after `pkg/proxy/nftables/proxier.go`): the `nft -f` transaction of a full sync per node |
//! | [`health`] | the health-check servers on `healthCheckNodePort` |
//! | `endpoints` | the EndpointSlice controller: slices derived from Service selectors |
//! | `program` | a sync: every node's rules, `kube-ipvs0` addresses and health-check servers written into the world |
//!
//! The generators are pure: Services, slices and a node's [`ProxyConfig`] in, rules out.
//! [`Services`] holds the cluster's Services and slices with the API server's allocators,
//! and writes a sync into the nodes (`Services::program`), knowing nodes and namespaces but
//! not how packets cross them.
//!
//! Not modelled yet: topology hints, large-cluster mode (comments dropped above 1,000
//! endpoints), partial syncs (every change re-syncs in full, which yields the same state).

mod endpoints;
pub mod health;
pub mod iptables;
pub mod ipvs;
pub mod nftables;
mod program;

pub(crate) use program::NodeSetup;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Proto;

use crate::error::ClusterError;

pub use health::{HealthCheck, health_checks};
pub use iptables::{IptablesPayload, base_jumps, chain_hash, sync_iptables, sync_iptables_rules};
pub use ipvs::{IpvsSync, base_jumps_ipvs, sync_ipvs};
pub use nftables::sync_nftables;

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
    /// `allocateLoadBalancerNodePorts` (true): false leaves a LoadBalancer Service's ports
    /// without a nodePort unless one is asked for.
    pub allocate_lb_node_ports: bool,
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
            allocate_lb_node_ports: true,
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

/// Node-specific kube-proxy settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// This node's addresses.
    pub node_ips: Vec<Ipv4Addr>,
    /// `--detect-local-mode=ClusterCIDR` (the cluster CIDR) or `NodeCIDR` (the node's pod
    /// CIDR): traffic from this range is pod traffic. `None` with `local_iface` `None`: no
    /// local detector.
    pub local_cidr: Option<Ipv4Network>,
    /// `--detect-local-mode=BridgeInterface` (the bridge, `cbr0`) or `InterfaceNamePrefix`
    /// (the prefix with `+`, `veth+`): traffic arriving on it is pod traffic. Used when
    /// `local_cidr` is `None`.
    pub local_iface: Option<String>,
    /// `iptables.masqueradeBit`: the fwmark bit KUBE-MARK-MASQ sets (14: `0x4000`).
    pub masquerade_bit: u8,
    /// `nodePortAddresses`: the node addresses NodePorts answer on (`None`: every local
    /// address, by `-m addrtype --dst-type LOCAL`).
    pub node_port_addresses: Option<Vec<Ipv4Addr>>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// MASQUERADE `--random-fully` (kube-proxy adds it when iptables supports it).
    pub random_fully: bool,
    /// nfacct counters (needs the kernel's nfnetlink_acct).
    pub nfacct: bool,
    /// `--iptables-localhost-nodeports`.
    pub localhost_nodeports: bool,
}

/// How kube-proxy tells pod traffic from other traffic (`detectLocalMode`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DetectLocal {
    /// No KubeProxyConfiguration given: `ClusterCIDR` with the cluster's own CIDR (the
    /// pods' subnet in the AWS VPC CNI profile).
    #[default]
    Default,
    /// `ClusterCIDR`: sources in `clusterCIDR`; without one kube-proxy runs its no-op
    /// detector and writes no rule that needs a detector.
    ClusterCidr(Option<Ipv4Network>),
    /// `NodeCIDR`: sources in the node's own pod CIDR.
    NodeCidr,
    /// `BridgeInterface`: packets arriving on this bridge.
    BridgeInterface(String),
    /// `InterfaceNamePrefix`: packets arriving on an interface with this prefix.
    InterfaceNamePrefix(String),
}

/// One entry of `nodePortAddresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    /// The node addresses in this CIDR.
    Cidr(Ipv4Network),
    /// `primary`: the node's primary address.
    Primary,
}

/// kube-proxy's own configuration (a `KubeProxyConfiguration`), for the fields that change
/// the rules it writes; the defaults are kube-proxy v1.33's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeProxySettings {
    /// `detectLocalMode` with `clusterCIDR` and `detectLocal`.
    pub detect_local: DetectLocal,
    /// `iptables.masqueradeBit` (14).
    pub masquerade_bit: u8,
    /// `iptables.localhostNodePorts` (true).
    pub localhost_nodeports: bool,
    /// `nodePortAddresses` (`None`: every local address).
    pub node_port_addresses: Option<Vec<NodePortAddress>>,
    /// `conntrack.tcpEstablishedTimeout` in seconds (24h): kube-proxy sets its node's
    /// `nf_conntrack_tcp_timeout_established` at start; `None` leaves the kernel's (5 days).
    pub conntrack_tcp_established: Option<u32>,
    /// `conntrack.tcpCloseWaitTimeout` in seconds (1h): `nf_conntrack_tcp_timeout_close_wait`.
    pub conntrack_tcp_close_wait: Option<u32>,
    /// `conntrack.udpTimeout` in seconds (unset: the kernel's 30 s).
    pub conntrack_udp: Option<u32>,
    /// `conntrack.udpStreamTimeout` in seconds (unset: the kernel's 120 s).
    pub conntrack_udp_stream: Option<u32>,
}

impl Default for KubeProxySettings {
    fn default() -> Self {
        KubeProxySettings {
            detect_local: DetectLocal::Default,
            masquerade_bit: 14,
            localhost_nodeports: true,
            node_port_addresses: None,
            conntrack_tcp_established: Some(86_400),
            conntrack_tcp_close_wait: Some(3_600),
            conntrack_udp: None,
            conntrack_udp_stream: None,
        }
    }
}

/// kube-proxy's mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables mode (the default).
    #[default]
    Iptables,
    /// IPVS mode, with this scheduler.
    Ipvs(podnet_netfilter::ipvs::Scheduler),
    /// nftables mode (GA since v1.33): table `ip kube-proxy`, verdict maps.
    Nftables,
}

/// `iptables`, `nftables`, `ipvs` (round robin) or `ipvs:SCHEDULER` (`rr`, `wrr`, `lc`, `wlc`,
/// `sh`, `dh`, `sed`, `nq`).
impl std::str::FromStr for ProxyMode {
    type Err = crate::error::UnknownValue;

    fn from_str(s: &str) -> Result<ProxyMode, Self::Err> {
        use podnet_netfilter::ipvs::Scheduler;
        let unknown = || crate::error::UnknownValue {
            what: "proxy mode",
            value: s.into(),
            expected: "iptables, nftables, ipvs or ipvs:SCHEDULER with rr, wrr, lc, wlc, sh, dh, sed or nq",
        };
        match s.split_once(':') {
            None if s == "iptables" => Ok(ProxyMode::Iptables),
            None if s == "nftables" => Ok(ProxyMode::Nftables),
            None if s == "ipvs" => Ok(ProxyMode::Ipvs(Scheduler::Rr)),
            Some(("ipvs", sched)) => {
                Scheduler::parse(sched).map(ProxyMode::Ipvs).ok_or_else(unknown)
            }
            _ => Err(unknown()),
        }
    }
}

/// As [`FromStr`](std::str::FromStr) reads it: `iptables`, `nftables`, `ipvs`, `ipvs:wrr`.
impl std::fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use podnet_netfilter::ipvs::Scheduler;
        match self {
            ProxyMode::Iptables => f.write_str("iptables"),
            ProxyMode::Nftables => f.write_str("nftables"),
            ProxyMode::Ipvs(Scheduler::Rr) => f.write_str("ipvs"),
            ProxyMode::Ipvs(s) => write!(f, "ipvs:{}", s.name()),
        }
    }
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
    /// The rest of kube-proxy's configuration that changes its rules.
    pub settings: KubeProxySettings,
    /// iptables or IPVS.
    pub mode: ProxyMode,
    /// UDP endpoints as of the last sync (to clear conntrack for the ones that go away).
    pub udp_endpoints: std::collections::BTreeSet<(Ipv4Addr, u16)>,
    /// The API server's ClusterIP allocator.
    pub cluster_ips: crate::ipam::BandAllocator,
    /// The Service CIDR (the cluster's one ServiceCIDR).
    pub service_cidr: Ipv4Network,
    /// The API server's NodePort allocator.
    pub node_ports: crate::ipam::BandAllocator,
    /// The API server's random source (its own, so allocations do not shift datapath choices).
    pub api_rng: podnet_netfilter::Rng,
    /// Set while a batch of objects is applied: one sync at the end instead of one per pod.
    pub(crate) sync_deferred: bool,
    /// Nodes running rules imported from a real node's `iptables-save`: syncs leave them be.
    pub(crate) imported: std::collections::BTreeSet<crate::ids::NodeId>,
    /// Nodes whose last sync the kernel refused (nftables mode: `nft -f` failed), by node
    /// name, with nft's error: kube-proxy logs it and retries, and the node runs without
    /// kube-proxy's table meanwhile.
    pub sync_errors: BTreeMap<String, String>,
}

impl Services {
    /// No Services yet; ClusterIPs come from `service_cidr`, nodePorts from `node_ports`
    /// (inclusive), and the API server's random choices from `seed`.
    pub(crate) fn new(service_cidr: Ipv4Network, node_ports: (u16, u16), seed: u64) -> Services {
        Services {
            list: Vec::new(),
            slices: Vec::new(),
            random_fully: true,
            masquerade_all: false,
            settings: KubeProxySettings::default(),
            mode: ProxyMode::Iptables,
            udp_endpoints: std::collections::BTreeSet::new(),
            cluster_ips: crate::ipam::BandAllocator::service_cidr(service_cidr),
            service_cidr,
            node_ports: crate::ipam::BandAllocator::node_ports(node_ports.0, node_ports.1),
            api_rng: podnet_netfilter::Rng::new(seed ^ 0x6b75_6265_6170_6973),
            sync_deferred: false,
            imported: std::collections::BTreeSet::new(),
            sync_errors: BTreeMap::new(),
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
            let wants_node_port = svc.kind == ServiceType::NodePort
                || (svc.kind == ServiceType::LoadBalancer && svc.allocate_lb_node_ports);
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

    /// The API server's create: a Service whose name is free and valid, its addresses
    /// admitted ([`Services::admit`]).
    pub(crate) fn add(&mut self, mut svc: Service) -> Result<(), ClusterError> {
        if self.list.iter().any(|s| s.namespace == svc.namespace && s.name == svc.name) {
            return Err(ClusterError::Duplicate {
                kind: "service",
                name: format!("{}/{}", svc.namespace, svc.name),
            });
        }
        validate_service(&svc)?;
        self.admit(&mut svc)?;
        self.list.push(svc);
        Ok(())
    }

    /// The API server's delete of `svc/NS/NAME` (or `NS/NAME`): its addresses go back to the
    /// pools.
    pub(crate) fn delete(&mut self, key: &str) -> Result<Service, ClusterError> {
        let k = key.strip_prefix("svc/").unwrap_or(key);
        let Some(i) = self.list.iter().position(|s| format!("{}/{}", s.namespace, s.name) == k)
        else {
            return Err(ClusterError::NotFound {
                kind: "service",
                name: key.into(),
                known: Vec::new(),
                fix: None,
            });
        };
        let svc = self.list.remove(i);
        self.release(&svc);
        Ok(svc)
    }

    /// A free ClusterIP, as the API server picks one for a Service that requests none:
    /// random (seeded) in the upper band, the lower band kept for static requests. It is
    /// reserved only when a Service carrying it is added.
    pub(crate) fn free_cluster_ip(&mut self) -> Result<Ipv4Addr, ClusterError> {
        let v = self.cluster_ips.allocate(&mut self.api_rng)?;
        self.cluster_ips.release(v);
        Ok(Ipv4Addr::from(v))
    }
}
