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

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Rng;

use crate::cni::{Cni, CniState};
use crate::datapath::Fabric;
use crate::kube_proxy::Services;
mod edge;
mod load;
mod nodes;
mod reference;
mod services;
mod tables;

pub use crate::error::ClusterError;
use crate::host::Hosts;
use crate::host::stack::Side;
use crate::ids::{IfIndex, NetnsId, NodeId, PodId};
use crate::run::{Flow, Sim, Source};
use crate::trace::{FlowProto, Hop, Trace, TraceError, TraceOptions};
use crate::world::World;
pub use crate::world::{Container, Device, DeviceKind, Netns, Node, Owner, Pod, Segment, Sysctls};

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
    /// The VPC subnet nodes live in.
    pub node_subnet: Ipv4Network,
    /// The VPC router's address in it.
    pub vpc_router: Ipv4Addr,
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
            seed: 0,
            service_cidr: "10.96.0.0/12".parse().expect("literal"),
            node_port_range: (30000, 32767),
            cni: Cni::Bridge,
        }
    }
}

/// The whole modelled cluster.
pub struct Cluster {
    pub(crate) cfg: ClusterConfig,
    pub(crate) world: World,
    pub(crate) hosts: Hosts,
    pub(crate) fabric: Fabric,
    pub(crate) services: crate::kube_proxy::Services,
    pub(crate) edge: crate::cloud::Edge,
    pub(crate) cni: CniState,
}

impl Cluster {
    /// An empty cluster: the VPC subnet and its router, no nodes. In the AWS VPC CNI profile
    /// the VPC router is the subnet's `.1`, as in AWS; the subnet must be a /16 to /28.
    pub fn try_new(mut cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let (cni, router) = CniState::new(&cfg.cni, cfg.node_subnet)?;
        if let Some(r) = router {
            cfg.vpc_router = r;
        }
        Ok(Cluster::new_unchecked(cfg, cni))
    }

    /// An empty bridge-profile cluster (see [`Cluster::try_new`] for the AWS profile, whose
    /// settings can be refused).
    pub fn new(cfg: ClusterConfig) -> Cluster {
        let cfg = ClusterConfig { cni: Cni::Bridge, ..cfg };
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
        };
        c.world.vpc_subnet = c.world.add_segment("vpc-subnet");
        let vpc = c.world.add_netns("vpc", Owner::Router, true);
        c.world.vpc = vpc;
        c.world.netns[vpc.idx()].sysctl.ip_forward = true;
        let addr =
            Ipv4Network::new(c.cfg.vpc_router, c.cfg.node_subnet.prefix()).expect("valid prefix");
        let dev =
            c.world.add_device(vpc, "vpc0", DeviceKind::Ether { segment: c.world.vpc_subnet });
        c.world.add_addr(dev, addr);
        c
    }

    /// The pod for `pod/NS/NAME` or `NS/NAME`.
    pub fn pod_id(&self, key: &str) -> Result<PodId, ClusterError> {
        let k = key.strip_prefix("pod/").unwrap_or(key);
        let (ns, name) = k.split_once('/').ok_or_else(|| ClusterError::NotFound {
            kind: "pod",
            name: key.into(),
            hint: ": write it as pod/NAMESPACE/NAME".into(),
        })?;
        self.world.pod_names.get(&(ns.to_string(), name.to_string())).copied().ok_or_else(|| {
            ClusterError::NotFound {
                kind: "pod",
                name: key.into(),
                hint: format!(
                    " (pods: {})",
                    self.world.pods.iter().map(Pod::key).collect::<Vec<_>>().join(", ")
                ),
            }
        })
    }

    /// The node named `name` (`node/NAME` accepted).
    pub fn node_id(&self, name: &str) -> Result<NodeId, ClusterError> {
        let n = name.strip_prefix("node/").unwrap_or(name);
        self.world.node_names.get(n).copied().ok_or_else(|| ClusterError::NotFound {
            kind: "node",
            name: name.into(),
            hint: format!(
                " (nodes: {})",
                self.world.node_names.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
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
    /// `net.netfilter.nf_conntrack_buckets` (the hash is resized, entries kept).
    pub fn set_sysctl(&mut self, node: &str, key: &str, value: u32) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let ns = &mut self.world.netns[self.world.nodes[id.idx()].netns.idx()];
        match (key, ns.nf.as_mut()) {
            ("net.ipv4.ip_forward", _) => ns.sysctl.ip_forward = value != 0,
            ("net.bridge.bridge-nf-call-iptables", _) => {
                ns.sysctl.bridge_nf_call_iptables = value != 0;
            }
            ("net.netfilter.nf_conntrack_max", Some(nf)) => {
                nf.conntrack.max = if value == 0 { usize::MAX } else { value as usize };
            }
            ("net.netfilter.nf_conntrack_buckets", Some(_)) if value == 0 => {
                return Err(ClusterError::Refused {
                    what: format!("{key}=0 on {node}"),
                    fix: "the conntrack hash needs at least one bucket",
                });
            }
            ("net.netfilter.nf_conntrack_buckets", Some(nf)) => {
                nf.conntrack.set_buckets(value as usize);
            }
            _ => {
                return Err(ClusterError::NotFound {
                    kind: "sysctl",
                    name: key.into(),
                    hint: " (modelled: net.ipv4.ip_forward, net.bridge.bridge-nf-call-iptables, \
                           net.netfilter.nf_conntrack_max, net.netfilter.nf_conntrack_buckets)"
                        .into(),
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

// ----- flows -----

impl Cluster {
    /// Traces one flow from `from` (`pod/NS/NAME`, `node/NAME`, `host/NAME`, or an IP) to
    /// `to` (`IP:PORT`, `pod/NS/NAME:PORT`, `svc/NS/NAME:PORT` with a number or port name,
    /// `http://IP[:PORT]/path`; a bare IP for ICMP).
    pub fn trace(
        &mut self,
        from: &str,
        to: &str,
        opts: &TraceOptions,
    ) -> Result<Trace, TraceError> {
        if opts.dry_run {
            let mut c = self.fork();
            let o = TraceOptions { dry_run: false, ..opts.clone() };
            return c.trace(from, to, &o);
        }
        let flow = self.flow(from, to, opts.proto)?;
        self.sim().trace(&flow, opts)
    }

    /// Every place a flow can land, each with its probability, as dry runs: each endpoint a
    /// Service can pick (`-m statistic` rules, IPVS scheduling) and each node a cloud load
    /// balancer can pick. Decision points are enumerated exhaustively (up to 256 paths); the
    /// probabilities of the outcomes returned add up to 1 when nothing was cut off.
    ///
    /// The ALB's choice of target is round robin state inside its L7 hop and is not
    /// enumerated: each ALB rule contributes its current target only.
    pub fn trace_all(
        &self,
        from: &str,
        to: &str,
        opts: &TraceOptions,
    ) -> Result<Vec<Trace>, TraceError> {
        let flow = self.flow(from, to, opts.proto)?;
        crate::run::trace_all(&self.world, &self.hosts, &self.fabric, &flow, opts)
    }

    /// A reachability matrix: one dry-run trace per (source, destination), rows in the order
    /// of `sources`.
    pub fn reachability(
        &self,
        sources: &[&str],
        destinations: &[&str],
        opts: &TraceOptions,
    ) -> Result<Vec<Vec<Trace>>, TraceError> {
        let opts = TraceOptions { dry_run: false, ..opts.clone() };
        sources
            .iter()
            .map(|s| destinations.iter().map(|d| self.fork().trace(s, d, &opts)).collect())
            .collect()
    }

    /// Delivers raw bytes to a device, as if its link peer had sent them, and runs the
    /// datapath until it settles; returns the hops (drops carry their reason). For testing
    /// what the model does with any frame, malformed ones included.
    pub fn inject_frame(
        &mut self,
        netns: &str,
        device: &str,
        frame: &[u8],
    ) -> Result<Vec<Hop>, TraceError> {
        let w = &self.world;
        let ns = w.netns.iter().position(|n| n.name == netns).map(|i| NetnsId(i as u32));
        let ns = ns.ok_or_else(|| TraceError::BadEndpoint {
            what: "namespace",
            text: netns.into(),
            hint: format!(
                "namespaces: {}",
                w.netns.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let dev = w.dev_named(ns, device).ok_or_else(|| TraceError::BadEndpoint {
            what: "device",
            text: format!("{netns} {device}"),
            hint: format!(
                "devices: {}",
                w.netns[ns.idx()]
                    .devs
                    .iter()
                    .map(|d| w.devs[d.idx()].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        self.sim().inject_frame(dev, frame)
    }

    /// Every (namespace, device) pair a frame can be injected at.
    pub fn injection_points(&self) -> Vec<(String, String)> {
        let w = &self.world;
        w.netns
            .iter()
            .flat_map(|n| n.devs.iter().map(|d| (n.name.clone(), w.devs[d.idx()].name.clone())))
            .collect()
    }

    /// A copy of the cluster's state for dry runs. Host stacks are not copied: the copy
    /// starts them afresh (empty socket tables and ARP caches), so a dry run may show ARP
    /// exchanges a committed run would not.
    pub fn fork(&self) -> Cluster {
        let (world, hosts) = crate::run::fork(&self.world, &self.hosts);
        Cluster {
            cfg: self.cfg.clone(),
            world,
            hosts,
            fabric: self.fabric.clone(),
            services: self.services.clone(),
            edge: self.edge.clone(),
            cni: self.cni.clone(),
        }
    }

    /// The simulator over this cluster's world.
    fn sim(&mut self) -> Sim<'_> {
        Sim { w: &mut self.world, hosts: &mut self.hosts, fabric: &self.fabric }
    }

    /// A flow from `from` to `to`, resolved.
    fn flow(&self, from: &str, to: &str, proto: FlowProto) -> Result<Flow, TraceError> {
        let dst = self.resolve_destination(to, proto)?;
        let src = self.resolve_source(from, dst.0)?;
        let proxies = self
            .edge
            .albs
            .iter()
            .map(|a| (a.netns, 80))
            .chain(self.edge.controllers.iter().filter_map(|c| {
                let id = self.pod_id(&format!("pod/{}", c.pod)).ok()?;
                Some((self.world.pods[id.idx()].netns, c.port))
            }))
            .collect();
        Ok(Flow { from: from.into(), to: to.into(), src, dst, proxies })
    }

    fn resolve_source(&self, from: &str, dst: Ipv4Addr) -> Result<Source, TraceError> {
        if from.starts_with("pod/") {
            let p = &self.world.pods[self.pod_id(from)?.idx()];
            let lo = dst.is_loopback();
            return Ok(Source {
                ns: p.netns,
                side: if lo { Side::Lo } else { Side::Main },
                ip: if lo { Ipv4Addr::LOCALHOST } else { p.ip },
            });
        }
        if from.starts_with("node/") {
            let n = &self.world.nodes[self.node_id(from)?.idx()];
            // The node's stack picks its source like smoltcp: an address in the destination's
            // subnet, else its first (eth0) address.
            let ip = self
                .world
                .nodes
                .iter()
                .find(|x| x.netns == n.netns)
                .map(|x| {
                    if x.bridge.is_some() && x.pod_cidr.contains(dst) {
                        Ipv4Addr::from(u32::from(x.pod_cidr.network()) + 1)
                    } else {
                        x.ip
                    }
                })
                .unwrap_or(n.ip);
            return Ok(Source { ns: n.netns, side: Side::Main, ip });
        }
        if from.starts_with("host/") {
            let ns = self
                .world
                .netns
                .iter()
                .position(|n| n.name == from)
                .map(|i| NetnsId(i as u32))
                .ok_or_else(|| TraceError::BadEndpoint {
                    what: "source",
                    text: from.into(),
                    hint: format!(
                        "hosts: {}",
                        self.world
                            .netns
                            .iter()
                            .filter(|n| n.name.starts_with("host/"))
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            let eth0 = self.world.dev_named(ns, "eth0");
            let ip = eth0
                .and_then(|d| self.world.devs[d.idx()].addrs.first())
                .map(|a| a.ip())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            return Ok(Source { ns, side: Side::Main, ip });
        }
        if let Ok(ip) = from.parse::<Ipv4Addr>() {
            if let Some(p) = self.world.pods.iter().find(|p| p.ip == ip && !p.deleted) {
                return Ok(Source { ns: p.netns, side: Side::Main, ip });
            }
            if let Some(n) = self.world.nodes.iter().find(|n| n.ip == ip) {
                return Ok(Source { ns: n.netns, side: Side::Main, ip });
            }
        }
        Err(TraceError::BadEndpoint {
            what: "source",
            text: from.into(),
            hint: "write pod/NAMESPACE/NAME, node/NAME, or the IP of a pod or node".into(),
        })
    }

    fn resolve_destination(
        &self,
        to: &str,
        proto: FlowProto,
    ) -> Result<(Ipv4Addr, u16), TraceError> {
        let bad = |hint: &str| TraceError::BadEndpoint {
            what: "destination",
            text: to.into(),
            hint: hint.into(),
        };
        if proto == FlowProto::Icmp {
            let host = to.split(':').next().unwrap_or(to);
            if let Ok(ip) = host.parse::<Ipv4Addr>() {
                return Ok((ip, 0));
            }
            if host.starts_with("pod/") {
                return Ok((
                    self.world.pods[self.pod_id(to.rsplit_once(':').map_or(to, |x| x.0))?.idx()].ip,
                    0,
                ));
            }
            return Err(bad("ICMP takes a bare IP or pod/NAMESPACE/NAME"));
        }
        if let Some(rest) = to.strip_prefix("http://") {
            let host = rest.split('/').next().unwrap_or(rest);
            let (h, p) = host.split_once(':').unwrap_or((host, "80"));
            let ip = h
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("URLs take an IP host: http://10.96.0.10/path"))?;
            return Ok((ip, p.parse().map_err(|_| bad("bad port in URL"))?));
        }
        let (host, port) = to
            .rsplit_once(':')
            .ok_or_else(|| bad("write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT"))?;
        if host.starts_with("svc/") {
            return self.services.resolve(host, port).map_err(TraceError::from);
        }
        let port: u16 =
            port.parse().map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        if host.starts_with("pod/") {
            return Ok((self.world.pods[self.pod_id(host)?.idx()].ip, port));
        }
        let ip = host
            .parse::<Ipv4Addr>()
            .map_err(|_| bad("write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT"))?;
        Ok((ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
