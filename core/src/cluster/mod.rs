//! The cluster: nodes, pods and their containers, network namespaces, devices and the
//! underlay, held in arenas and addressed by typed ids.
//!
//! What a kubeadm node with the reference CNI bridge plugin looks like is built here:
//! a root netns with `lo`, `eth0` (the VPC address, default route via the VPC router), the
//! pod bridge `cbr0` holding the node's pod-CIDR gateway address (`.1`), and per pod a veth
//! pair (`eth0` in the pod, `vethN` on the bridge, `hairpin_mode` on). Sysctls default to
//! what such a node runs with: `net.ipv4.ip_forward=1`,
//! `net.bridge.bridge-nf-call-iptables=1`.
//!
//! The underlay is a VPC subnet (an L2 segment joining every node's `eth0` and the VPC
//! router) whose router sends each node's pod CIDR to that node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Rng;

use crate::cni::{Cni, CniState};
use crate::datapath::Fabric;
use crate::kube_proxy::Services;
mod edge;
mod flows;
mod load;
mod modes;
mod nodes;
mod policies;
mod reference;
mod services;
mod tables;
pub use modes::{Divergence, Landing, ModeDifference};
pub use tables::{ConntrackEntry, ConntrackTuple};

pub use crate::error::ClusterError;
use crate::host::Hosts;
use crate::ids::{IfIndex, NetnsId, NodeId, PodId};
use crate::k8s::Unmodelled;
use crate::labels::Labels;
use crate::world::World;
pub use crate::world::{Container, Device, DeviceKind, Netns, Node, Owner, Pod, Segment, Sysctls};

/// Node subnets must not overlap, and each holds its router's address (not its network or
/// broadcast address).
fn check_subnets(cfg: &ClusterConfig) -> Result<(), ClusterError> {
    let all: Vec<(Ipv4Network, Ipv4Addr)> = std::iter::once((cfg.node_subnet, cfg.vpc_router))
        .chain(cfg.extra_node_subnets.iter().copied())
        .collect();
    for (i, (cidr, router)) in all.iter().enumerate() {
        if !cidr.contains(*router) || *router == cidr.network() || *router == cidr.broadcast() {
            return Err(ClusterError::OutsideCidr {
                addr: *router,
                what: "its node subnet (as a usable address for the VPC router)",
                cidr: *cidr,
            });
        }
        if let Some((other, _)) = all[..i].iter().find(|(o, _)| o.overlaps(*cidr)) {
            return Err(ClusterError::InvalidInput {
                field: "nodeSubnets".into(),
                value: cidr.to_string(),
                why: if other == cidr { "listed twice" } else { "overlaps another node subnet" },
            });
        }
    }
    Ok(())
}

/// What a visualiser needs to draw the cluster (serialisable).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Topology {
    /// The VPC router's address.
    pub vpc_router: Ipv4Addr,
    /// The VPC subnet.
    pub node_subnet: String,
    /// Nodes, in creation order.
    pub nodes: Vec<TopologyNode>,
    /// Namespaces outside the nodes: the internet gateway, load balancers, internet hosts.
    pub edge: Vec<TopologyBox>,
}

/// A namespace outside the nodes, as drawn.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TopologyBox {
    /// Namespace name (`igw`, `lb/default/api`, `host/internet`).
    pub netns: String,
    /// `gateway`, `lb`, `alb` or `host`.
    pub kind: &'static str,
    /// Label.
    pub label: String,
    /// Devices: (name, addresses).
    pub devices: Vec<(String, String)>,
}

/// A node as drawn.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TopologyNode {
    /// Name.
    pub name: String,
    /// `eth0` address.
    pub ip: Ipv4Addr,
    /// Pod CIDR.
    pub pod_cidr: String,
    /// `cbr0` address.
    pub bridge_ip: Ipv4Addr,
    /// Pods on the node.
    pub pods: Vec<TopologyPod>,
}

/// A pod as drawn.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TopologyPod {
    /// `pod/NS/NAME`.
    pub key: String,
    /// Name.
    pub name: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// The veth end on the bridge.
    pub veth: String,
    /// Container names.
    pub containers: Vec<String>,
}

/// Cluster-wide settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster CIDR pods come from.
    pub cluster_cidr: Ipv4Network,
    /// The VPC subnet nodes live in (the first one, where the cloud edge attaches).
    pub node_subnet: Ipv4Network,
    /// The VPC router's address in it.
    pub vpc_router: Ipv4Addr,
    /// More node subnets (one per availability zone, as EKS and GKE lay nodes out), each
    /// with the VPC router's address in it. The router routes between subnets.
    pub extra_node_subnets: Vec<(Ipv4Network, Ipv4Addr)>,
    /// Seed for every random choice.
    pub seed: u64,
    /// The Service CIDR ClusterIPs come from (`--service-cluster-ip-range`).
    pub service_cidr: Ipv4Network,
    /// The NodePort range (`--service-node-port-range`), inclusive.
    pub node_port_range: (u16, u16),
    /// How pods get addresses and are wired: the bridge profile (a pod CIDR per node,
    /// host-local, `cbr0`), or the AWS VPC CNI (ENI secondary addresses, a routed veth per pod).
    pub cni: Cni,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_cidr: "10.244.0.0/16".parse().expect("literal"),
            node_subnet: "192.168.0.0/24".parse().expect("literal"),
            vpc_router: Ipv4Addr::new(192, 168, 0, 254),
            extra_node_subnets: Vec::new(),
            seed: 0,
            service_cidr: "10.96.0.0/12".parse().expect("literal"),
            node_port_range: (30000, 32767),
            cni: Cni::Bridge,
        }
    }
}

/// The whole modelled cluster.
///
/// A clone is a copy at rest ([`Cluster::fork`]): host stacks start afresh.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) cfg: ClusterConfig,
    pub(crate) world: World,
    pub(crate) hosts: Hosts,
    pub(crate) fabric: Fabric,
    pub(crate) services: crate::kube_proxy::Services,
    pub(crate) edge: crate::cloud::Edge,
    pub(crate) cni: CniState,
    /// Namespaces' labels (`kubernetes.io/metadata.name` always among them), for the
    /// namespace selectors of policies.
    pub(crate) namespaces: BTreeMap<String, Labels>,
    /// Objects that decide what traffic is allowed and that podnet does not model: every
    /// trace through a pod one of them selects carries a warning.
    pub(crate) unmodelled: Vec<Unmodelled>,
    /// NetworkPolicies, compiled per pod, and how the CNI enforces them.
    pub(crate) policy: crate::policy::Engine,
}

impl Cluster {
    /// An empty cluster: the VPC subnet and its router, no nodes. In the AWS VPC CNI profile
    /// the VPC router is the subnet's `.1`, as in AWS; the subnet must be a /16 to /28.
    pub fn try_new(mut cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let (cni, router) = CniState::new(&cfg.cni, cfg.node_subnet)?;
        if let Some(r) = router {
            cfg.vpc_router = r;
        }
        if cni.aws().is_some() && !cfg.extra_node_subnets.is_empty() {
            return Err(ClusterError::Profile {
                what: "several node subnets".into(),
                profile: "AWS VPC CNI",
                fix: "give the AWS profile one subnet (nodeSubnet); several are modelled for the bridge profile only",
            });
        }
        check_subnets(&cfg)?;
        Ok(Cluster::new_unchecked(cfg, cni))
    }

    /// An empty bridge-profile cluster (see [`Cluster::try_new`] for the AWS profile, whose
    /// settings can be refused).
    pub fn new(cfg: ClusterConfig) -> Cluster {
        let cfg = ClusterConfig { cni: Cni::Bridge, ..cfg };
        check_subnets(&cfg).expect("valid node subnets (Cluster::try_new reports them)");
        let (cni, _) =
            CniState::new(&cfg.cni, cfg.node_subnet).expect("the bridge takes any subnet");
        Cluster::new_unchecked(cfg, cni)
    }

    fn new_unchecked(cfg: ClusterConfig, cni: CniState) -> Cluster {
        let services = Services::new(cfg.service_cidr, cfg.node_port_range, cfg.seed);
        let mut c = Cluster {
            world: World::new(cfg.seed),
            hosts: Hosts::default(),
            fabric: Fabric::default(),
            cfg,
            services,
            edge: crate::cloud::Edge::default(),
            cni,
            namespaces: BTreeMap::new(),
            unmodelled: Vec::new(),
            policy: Default::default(),
        };
        let vpc = c.world.add_netns("vpc", Owner::Router, true);
        c.world.vpc = vpc;
        c.world.netns[vpc.idx()].sysctl.ip_forward = true;
        let subnets: Vec<(Ipv4Network, Ipv4Addr)> =
            std::iter::once((c.cfg.node_subnet, c.cfg.vpc_router))
                .chain(c.cfg.extra_node_subnets.iter().copied())
                .collect();
        for (i, (cidr, router)) in subnets.into_iter().enumerate() {
            // `vpc0` on the first subnet; `vpc1` is the internet gateway's link; the other
            // subnets get `vpc2`, `vpc3`, ...
            let (seg, dev) = if i == 0 {
                ("vpc-subnet".to_string(), "vpc0".to_string())
            } else {
                (format!("vpc-subnet-{}", i + 1), format!("vpc{}", i + 1))
            };
            let segment = c.world.add_segment(&seg);
            let router_dev = c.world.add_device(vpc, &dev, DeviceKind::Ether { segment });
            let addr = Ipv4Network::new(router, cidr.prefix()).expect("valid prefix");
            c.world.add_addr(router_dev, addr);
            if i == 0 {
                c.world.vpc_subnet = segment;
            }
            c.world.subnets.push(crate::world::VpcSubnet { cidr, router, segment, router_dev });
        }
        c
    }

    /// The pod for `pod/NS/NAME` or `NS/NAME`.
    pub fn pod_id(&self, key: &str) -> Result<PodId, ClusterError> {
        let k = key.strip_prefix("pod/").unwrap_or(key);
        let (ns, name) = k.split_once('/').ok_or_else(|| ClusterError::NotFound {
            kind: "pod",
            name: key.into(),
            known: Vec::new(),
            fix: Some("write it as pod/NAMESPACE/NAME"),
        })?;
        self.world.pod_named(ns, name).ok_or_else(|| self.no_such_pod(key))
    }

    /// The error for a pod `key` that does not exist: the pods that do.
    pub(crate) fn no_such_pod(&self, key: &str) -> ClusterError {
        ClusterError::NotFound {
            kind: "pod",
            name: key.into(),
            known: self.world.pods.iter().map(Pod::key).collect(),
            fix: None,
        }
    }

    /// The node named `name` (`node/NAME` accepted).
    pub fn node_id(&self, name: &str) -> Result<NodeId, ClusterError> {
        let n = name.strip_prefix("node/").unwrap_or(name);
        self.world.node_names.get(n).copied().ok_or_else(|| ClusterError::NotFound {
            kind: "node",
            name: name.into(),
            known: self.world.node_names.keys().cloned().collect(),
            fix: None,
        })
    }

    /// Nodes, in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.world.nodes
    }

    /// Pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.world.pods
    }

    /// A device.
    pub fn device(&self, i: IfIndex) -> &Device {
        &self.world.devs[i.idx()]
    }

    /// A namespace.
    pub fn netns(&self, i: NetnsId) -> &Netns {
        &self.world.netns[i.idx()]
    }

    /// The cluster's shape, for drawing.
    pub fn topology(&self) -> Topology {
        Topology {
            vpc_router: self.cfg.vpc_router,
            node_subnet: self.cfg.node_subnet.to_string(),
            nodes: self
                .world
                .nodes
                .iter()
                .map(|n| TopologyNode {
                    name: n.name.clone(),
                    ip: n.ip,
                    pod_cidr: n.pod_cidr.to_string(),
                    bridge_ip: match n.bridge {
                        Some(_) => Ipv4Addr::from(u32::from(n.pod_cidr.network()) + 1),
                        None => crate::cni::POD_GATEWAY,
                    },
                    pods: n
                        .pods
                        .iter()
                        .map(|p| {
                            let p = &self.world.pods[p.idx()];
                            TopologyPod {
                                key: p.key(),
                                name: p.name.clone(),
                                ip: p.ip,
                                veth: self.world.devs[p.host_veth.idx()].name.clone(),
                                containers: p.containers.iter().map(|c| c.name.clone()).collect(),
                            }
                        })
                        .collect(),
                })
                .collect(),
            edge: self
                .world
                .netns
                .iter()
                .filter(|n| {
                    n.name == "igw" || n.name.starts_with("lb/") || n.name.starts_with("host/")
                })
                .map(|n| {
                    let kind = if n.name == "igw" {
                        "gateway"
                    } else if n.name.starts_with("host/") {
                        "host"
                    } else if self
                        .edge
                        .albs
                        .iter()
                        .any(|a| self.world.netns[a.netns.idx()].name == n.name)
                    {
                        "alb"
                    } else {
                        "lb"
                    };
                    let public = self
                        .edge
                        .lbs
                        .iter()
                        .filter(|l| self.world.netns[l.netns.idx()].name == n.name)
                        .map(|l| l.public_ip)
                        .chain(
                            self.edge
                                .albs
                                .iter()
                                .filter(|a| self.world.netns[a.netns.idx()].name == n.name)
                                .map(|a| a.public_ip),
                        )
                        .next();
                    let label = match (kind, public) {
                        ("gateway", _) => "internet gateway".to_string(),
                        (_, Some(p)) => format!("{} ({p})", n.name),
                        _ => n.name.clone(),
                    };
                    let devices = n
                        .devs
                        .iter()
                        .map(|d| &self.world.devs[d.idx()])
                        .filter(|d| d.name != "lo")
                        .map(|d| {
                            (
                                d.name.clone(),
                                d.addrs
                                    .iter()
                                    .filter(|a| a.prefix() < 32)
                                    .map(|a| a.ip().to_string())
                                    .collect::<Vec<_>>()
                                    .join(" "),
                            )
                        })
                        .collect();
                    TopologyBox { netns: n.name.clone(), kind, label, devices }
                })
                .collect(),
        }
    }

    /// Replaces the random seed: every later random choice (ephemeral ports, statistic
    /// matches, NAT ports, load balancer picks) follows the new seed.
    pub fn reseed(&mut self, seed: u64) {
        self.cfg.seed = seed;
        self.world.seed = seed;
        self.world.rng = Rng::new(seed ^ 0x706f_646e_6574);
        for (i, ns) in self.world.netns.iter_mut().enumerate() {
            if let Some(nf) = ns.nf.as_mut() {
                nf.rng = Rng::new(seed.wrapping_add(i as u64 * 7919));
            }
        }
        self.hosts.reset_all();
    }

    /// Current virtual time.
    pub fn now(&self) -> smoltcp::time::Instant {
        self.world.now
    }

    /// Sets a sysctl on a node: `net.ipv4.ip_forward`, `net.bridge.bridge-nf-call-iptables`,
    /// `net.netfilter.nf_conntrack_max` (0: no limit, as in the kernel) or
    /// `net.netfilter.nf_conntrack_buckets` (the hash is resized, entries kept),
    /// `net.ipv4.conf.all.rp_filter` or `net.ipv4.conf.DEVICE.rp_filter` (0 off, the kernel's
    /// default; 1 strict; 2 loose; a device filters with the larger of `all` and its own).
    pub fn set_sysctl(&mut self, node: &str, key: &str, value: u32) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let nsid = self.world.nodes[id.idx()].netns;
        if let Some(dev) =
            key.strip_prefix("net.ipv4.conf.").and_then(|k| k.strip_suffix(".rp_filter"))
        {
            if value > 2 {
                return Err(ClusterError::InvalidInput {
                    field: format!("{key} on {node}"),
                    value: value.to_string(),
                    why: "rp_filter is 0 (off), 1 (strict) or 2 (loose)",
                });
            }
            let v = value as u8;
            if dev == "all" {
                self.world.netns[nsid.idx()].sysctl.rp_filter = v;
                return Ok(());
            }
            let Some(d) = self.world.dev_named(nsid, dev) else {
                return Err(ClusterError::NotFound {
                    kind: "device",
                    name: format!("{dev} on {node}"),
                    known: self.world.netns[nsid.idx()]
                        .devs
                        .iter()
                        .map(|d| self.world.devs[d.idx()].name.clone())
                        .chain(["all".to_string()])
                        .collect(),
                    fix: None,
                });
            };
            self.world.devs[d.idx()].rp_filter = v;
            return Ok(());
        }
        let ns = &mut self.world.netns[nsid.idx()];
        match (key, ns.nf.as_mut()) {
            ("net.ipv4.ip_forward", _) => ns.sysctl.ip_forward = value != 0,
            ("net.bridge.bridge-nf-call-iptables", _) => {
                ns.sysctl.bridge_nf_call_iptables = value != 0;
            }
            ("net.netfilter.nf_conntrack_max", Some(nf)) => {
                nf.conntrack.max = if value == 0 { usize::MAX } else { value as usize };
            }
            ("net.netfilter.nf_conntrack_buckets", Some(_)) if value == 0 => {
                return Err(ClusterError::InvalidInput {
                    field: format!("{key} on {node}"),
                    value: value.to_string(),
                    why: "the conntrack hash needs at least one bucket",
                });
            }
            ("net.netfilter.nf_conntrack_buckets", Some(nf)) => {
                nf.conntrack.set_buckets(value as usize);
            }
            _ => {
                return Err(ClusterError::NotFound {
                    kind: "sysctl",
                    name: key.into(),
                    known: [
                        "net.ipv4.ip_forward",
                        "net.bridge.bridge-nf-call-iptables",
                        "net.netfilter.nf_conntrack_max",
                        "net.netfilter.nf_conntrack_buckets",
                        "net.ipv4.conf.all.rp_filter",
                        "net.ipv4.conf.DEVICE.rp_filter",
                    ]
                    .map(String::from)
                    .to_vec(),
                    fix: None,
                });
            }
        }
        Ok(())
    }

    /// Sets `hairpin_mode` on the bridge port of a pod's veth.
    pub fn set_hairpin(&mut self, pod: &str, on: bool) -> Result<(), ClusterError> {
        let id = self.pod_id(pod)?;
        if self.world.pods[id.idx()].host_network {
            return Err(ClusterError::Profile {
                what: format!("set_hairpin({pod})"),
                profile: "host network",
                fix: "a host-network pod has no veth on the bridge",
            });
        }
        let host = self.world.pods[id.idx()].host_veth;
        self.world.devs[host.idx()].hairpin = on;
        Ok(())
    }

    pub(crate) fn netns_of(&self, who: &str) -> Result<NetnsId, ClusterError> {
        if who.starts_with("pod/") {
            return Ok(self.world.pods[self.pod_id(who)?.idx()].netns);
        }
        if who == "vpc" {
            return Ok(self.world.vpc);
        }
        Ok(self.world.nodes[self.node_id(who)?.idx()].netns)
    }

    /// Advances virtual time: conntrack entries and FDB entries age, neighbours go stale.
    pub fn advance(&mut self, d: smoltcp::time::Duration) {
        self.world.now += d;
        let now = self.world.now;
        for ns in &mut self.world.netns {
            if let Some(nf) = ns.nf.as_mut() {
                nf.conntrack.expire(now);
            }
        }
        for d in &mut self.world.devs {
            if let DeviceKind::Bridge(f) = &mut d.kind {
                f.age(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{TraceError, TraceOptions};

    #[test]
    fn ephemeral_ports_run_out_like_connect_and_time_frees_them() {
        let mut c = Cluster::seed();
        let ns = c.world.pods[c.pod_id("pod/default/pod2").unwrap().idx()].netns;
        let until = c.world.now + smoltcp::time::Duration::from_secs(10);
        let st = c.hosts.stack(&c.world, ns);
        // Every port but 40000 in TIME_WAIT: the one left is found whatever the start.
        st.hold_ports((32768..=60999).filter(|p| *p != 40000), until);
        let t = c.trace("pod/default/pod2", "pod/default/pod1:8080", &TraceOptions::default());
        assert!(t.unwrap().server_saw.unwrap().ends_with(":40000"));
        let st = c.hosts.get_mut(ns).unwrap();
        st.hold_ports([40000], until);
        let e = c
            .trace("pod/default/pod2", "pod/default/pod1:8080", &TraceOptions::default())
            .unwrap_err();
        assert!(matches!(e, TraceError::NoEphemeralPort { held, .. } if held >= 28_232), "{e}");
        assert!(e.to_string().contains("Cannot assign requested address"), "{e}");
        // An explicit source port still works, and TIME_WAIT ends after 10 s.
        let o = TraceOptions { sport: Some(50000), ..TraceOptions::default() };
        assert!(c.trace("pod/default/pod2", "pod/default/pod1:8080", &o).unwrap().completed);
        c.advance(smoltcp::time::Duration::from_secs(11));
        assert!(
            c.trace("pod/default/pod2", "pod/default/pod1:8080", &TraceOptions::default())
                .unwrap()
                .completed
        );
    }
}
