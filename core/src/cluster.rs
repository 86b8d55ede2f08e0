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

use podnet_netfilter::{Netfilter, Proto, Rng};

use crate::datapath::Fabric;
pub use crate::error::ClusterError;
use crate::host::Hosts;
use crate::host::stack::Side;
use crate::ids::{IfIndex, NetnsId, NodeId, PodId};
use crate::net::fdb::Fdb;
use crate::net::route::{Route, RouteProto};
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
    pub cni: crate::vpc_cni::Cni,
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
            cni: crate::vpc_cni::Cni::Bridge,
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
    pub(crate) aws: Option<crate::vpc_cni::AwsVpc>,
}

impl Cluster {
    /// An empty cluster: the VPC subnet and its router, no nodes. In the AWS VPC CNI profile
    /// the VPC router is the subnet's `.1`, as in AWS; the subnet must be a /16 to /28.
    pub fn try_new(mut cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let aws = match &cfg.cni {
            crate::vpc_cni::Cni::Bridge => None,
            crate::vpc_cni::Cni::AwsVpc(a) => {
                crate::vpc_cni::InstanceType::lookup(&a.instance_type)?;
                let subnet = crate::vpc_cni::VpcSubnet::new(cfg.node_subnet)?;
                cfg.vpc_router = subnet.router();
                Some(crate::vpc_cni::AwsVpc { subnet })
            }
        };
        let mut c = Cluster::new_unchecked(cfg);
        c.aws = aws;
        Ok(c)
    }

    /// An empty bridge-profile cluster (see [`Cluster::try_new`] for the AWS profile, whose
    /// settings can be refused).
    pub fn new(cfg: ClusterConfig) -> Cluster {
        let cfg = ClusterConfig { cni: crate::vpc_cni::Cni::Bridge, ..cfg };
        Cluster::new_unchecked(cfg)
    }

    fn new_unchecked(cfg: ClusterConfig) -> Cluster {
        let services = crate::kube_proxy::Services::new(&cfg);
        let mut c = Cluster {
            world: World::new(cfg.seed),
            hosts: Hosts::default(),
            fabric: Fabric::default(),
            cfg,
            services,
            edge: crate::cloud::Edge::default(),
            aws: None,
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

    /// The reference cluster of the seed article and `podnet demo` (see the README).
    pub fn seed() -> Cluster {
        Cluster::seed_with(0)
    }

    /// The reference cluster with another random seed.
    pub fn seed_with(seed: u64) -> Cluster {
        let mut c = Cluster::new(ClusterConfig { seed, ..ClusterConfig::default() });
        c.add_node("node1", Ipv4Addr::new(192, 168, 0, 1), "10.244.1.0/24".parse().expect("lit"))
            .expect("seed");
        c.add_node("node2", Ipv4Addr::new(192, 168, 0, 2), "10.244.2.0/24".parse().expect("lit"))
            .expect("seed");
        c.add_node("node3", Ipv4Addr::new(192, 168, 0, 3), "10.244.3.0/24".parse().expect("lit"))
            .expect("seed");
        c.seed_pods(Some([
            Ipv4Addr::new(10, 244, 1, 2),
            Ipv4Addr::new(10, 244, 1, 3),
            Ipv4Addr::new(10, 244, 2, 2),
            Ipv4Addr::new(10, 244, 2, 3),
        ]));
        c.seed_services();
        c.seed_edge();
        c
    }

    /// The reference cluster's pods: pod1 (web, with a sidecar) and pod2 (client) on node1,
    /// pod3 (web) and pod4 (api) on node2; at `ips` (bridge profile) or wherever the CNI
    /// puts them.
    pub(crate) fn seed_pods(&mut self, ips: Option<[Ipv4Addr; 4]>) {
        let web = |app: &str| Container {
            name: app.into(),
            ports: vec![(Proto::TCP, 8080), (Proto::UDP, 8080)],
            named_ports: vec![("http".into(), Proto::TCP, 8080)],
        };
        let (n1, n2) = (NodeId(0), NodeId(1));
        let pods =
            [("pod1", n1, "web"), ("pod2", n1, "client"), ("pod3", n2, "web"), ("pod4", n2, "api")];
        for (i, (name, node, app)) in pods.into_iter().enumerate() {
            let mut containers = vec![web(app)];
            if name == "pod1" {
                // A second container sharing pod1's netns: it reaches "web" over localhost.
                containers.push(Container {
                    name: "sidecar".into(),
                    ports: vec![(Proto::TCP, 9090)],
                    ..Container::default()
                });
            }
            let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
            self.add_pod("default", name, node, ips.map(|a| a[i]), labels, containers)
                .expect("seed pod");
        }
    }

    /// Adds a node with its root namespace, `eth0` on the VPC subnet, `cbr0` with the pod
    /// CIDR's first address, and the VPC route for its pod CIDR.
    pub fn add_node(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        pod_cidr: Ipv4Network,
    ) -> Result<NodeId, ClusterError> {
        if self.aws.is_some() {
            return Err(ClusterError::Profile {
                what: format!("add_node({name}) with a pod CIDR"),
                profile: "AWS VPC CNI",
                fix: "add nodes with add_aws_node: pods take ENI addresses, not a pod CIDR",
            });
        }
        if self.world.node_names.contains_key(name) {
            return Err(ClusterError::Duplicate { kind: "node", name: name.into() });
        }
        let subnet = self.cfg.node_subnet;
        if !subnet.contains(ip) {
            return Err(ClusterError::OutsideCidr {
                addr: ip,
                what: "the VPC subnet",
                cidr: subnet,
            });
        }
        if ip == self.cfg.vpc_router
            || ip == subnet.network()
            || ip == subnet.broadcast()
            || self.world.nodes.iter().any(|n| n.ip == ip)
        {
            return Err(ClusterError::AddressTaken {
                addr: ip,
                why: "used by the VPC router, a node, or reserved".into(),
            });
        }
        let pod_cidr = Ipv4Network::new(pod_cidr.network(), pod_cidr.prefix()).expect("valid");
        let cc = self.cfg.cluster_cidr;
        if !cc.contains(pod_cidr.network()) || pod_cidr.prefix() < cc.prefix() {
            return Err(ClusterError::BadPodCidr {
                node: name.into(),
                cidr: pod_cidr,
                why: format!("is not inside the cluster CIDR {cc}"),
            });
        }
        if let Some(other) = self.world.nodes.iter().find(|n| n.pod_cidr.overlaps(pod_cidr)) {
            return Err(ClusterError::BadPodCidr {
                node: name.into(),
                cidr: pod_cidr,
                why: format!("overlaps node '{}' ({})", other.name, other.pod_cidr),
            });
        }
        let id = NodeId(self.world.nodes.len() as u32);
        let ns = self.world.add_netns(name, Owner::Node(id), true);
        self.world.netns[ns.idx()].sysctl =
            Sysctls { ip_forward: true, bridge_nf_call_iptables: true };
        self.world.netns[ns.idx()].nf =
            Some(Box::new(Netfilter::new(self.cfg.seed.wrapping_add(u64::from(id.0) * 7919))));
        let eth0 =
            self.world.add_device(ns, "eth0", DeviceKind::Ether { segment: self.world.vpc_subnet });
        self.world.add_addr(eth0, Ipv4Network::new(ip, subnet.prefix()).expect("valid"));
        let br = self.world.add_device(ns, "cbr0", DeviceKind::Bridge(Fdb::default()));
        let gw = Ipv4Addr::from(u32::from(pod_cidr.network()) + 1);
        self.world.add_addr(br, Ipv4Network::new(gw, pod_cidr.prefix()).expect("valid"));
        let br_mac = self.world.devs[br.idx()].mac;
        if let DeviceKind::Bridge(f) = &mut self.world.devs[br.idx()].kind {
            f.add_local(br_mac, br);
        }
        let vpc_router = self.cfg.vpc_router;
        self.world.add_default_route(ns, vpc_router, eth0);
        let vpc0 = self.world.netns[self.world.vpc.idx()].devs[1];
        self.world.netns[self.world.vpc.idx()].routes.add(Route {
            dst: pod_cidr,
            via: Some(ip),
            dev: vpc0,
            src: None,
            proto: RouteProto::Static,
        });
        self.world.nodes.push(Node {
            name: name.into(),
            ip,
            pod_cidr,
            netns: ns,
            eth0,
            bridge: Some(br),
            aws: None,
            iptables_imported: false,
            max_pods: 110,
            pods: Vec::new(),
            ipam: crate::ipam::HostLocal::new(pod_cidr),
        });
        self.world.node_names.insert(name.into(), id);
        Ok(id)
    }

    /// Adds a pod: its namespace, the veth pair into `cbr0`, its address and default route
    /// via the bridge, and its containers' ports. Without `ip`, the next free address of the
    /// node's pod CIDR is taken.
    pub fn add_pod(
        &mut self,
        namespace: &str,
        name: &str,
        node: NodeId,
        ip: Option<Ipv4Addr>,
        labels: BTreeMap<String, String>,
        containers: Vec<Container>,
    ) -> Result<PodId, ClusterError> {
        let key = (namespace.to_string(), name.to_string());
        let n = self.new_pod_node(namespace, name, node)?;
        let cidr = n.pod_cidr;
        let gw = n.ipam.gateway();
        // Validate container ports before taking an address.
        let mut ports: BTreeMap<(Proto, u16), String> = BTreeMap::new();
        let pod_ns_name = format!("pod/{namespace}/{name}");
        for c in &containers {
            for &(proto, port) in &c.ports {
                if let Some(owner) = ports.get(&(proto, port)) {
                    return Err(ClusterError::AddrInUse {
                        netns: pod_ns_name,
                        proto,
                        port,
                        container: c.name.clone(),
                        owner: owner.clone(),
                    });
                }
                ports.insert((proto, port), c.name.clone());
            }
        }
        let aws_node = self.world.nodes[node.idx()].aws.is_some();
        let mut eni = 0;
        if !aws_node {
            self.admit_max_pods(node, &pod_ns_name)?;
        }
        let ip = if aws_node {
            // The AWS VPC CNI: kubelet's max-pods admission, then ipamd's address.
            if let Some(a) = ip {
                return Err(ClusterError::Profile {
                    what: format!("pod {namespace}/{name} with address {a}"),
                    profile: "AWS VPC CNI",
                    fix: "ipamd assigns pod addresses from the node's ENIs; leave the address out",
                });
            }
            let (a, e) = self.aws_admit_pod(node, &pod_ns_name)?;
            eni = e;
            a
        } else {
            self.host_local(node, ip, cidr)?
        };
        let id = PodId(self.world.pods.len() as u32);
        let ns = self.world.add_netns(&pod_ns_name, Owner::Pod(id), aws_node);
        self.world.netns[ns.idx()].ports = ports;
        let node_ns = self.world.nodes[node.idx()].netns;
        let veth_name = if aws_node {
            crate::vpc_cni::host_veth_name(namespace, name)
        } else {
            format!("veth{}", self.world.nodes[node.idx()].pods.len())
        };
        let eth0 = self.world.add_device(ns, "eth0", DeviceKind::Veth { peer: IfIndex(0) });
        let host = self.world.add_device(node_ns, &veth_name, DeviceKind::Veth { peer: eth0 });
        self.world.devs[eth0.idx()].kind = DeviceKind::Veth { peer: host };
        if aws_node {
            self.aws_wire_pod(node, ns, eth0, host, ip, eni);
        } else {
            let br = self.world.nodes[node.idx()].bridge.expect("a bridge-profile node has cbr0");
            self.world.devs[host.idx()].master = Some(br);
            self.world.devs[host.idx()].hairpin = true;
            let host_mac = self.world.devs[host.idx()].mac;
            if let DeviceKind::Bridge(f) = &mut self.world.devs[br.idx()].kind {
                f.add_local(host_mac, host);
            }
            self.world.add_addr(eth0, Ipv4Network::new(ip, cidr.prefix()).expect("valid"));
            self.world.add_default_route(ns, gw, eth0);
        }
        self.world.pods.push(Pod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            ip,
            labels,
            containers,
            netns: ns,
            eth0,
            host_veth: host,
            ready: true,
            terminating: false,
            deleted: false,
            host_network: false,
        });
        self.register_pod(key, id);
        Ok(id)
    }

    /// The node a new pod goes to, once its name is known to be free.
    fn new_pod_node(
        &self,
        namespace: &str,
        name: &str,
        node: NodeId,
    ) -> Result<&Node, ClusterError> {
        if self.world.pod_names.contains_key(&(namespace.to_string(), name.to_string())) {
            return Err(ClusterError::Duplicate {
                kind: "pod",
                name: format!("{namespace}/{name}"),
            });
        }
        self.world.nodes.get(node.idx()).ok_or_else(|| ClusterError::NotFound {
            kind: "node",
            name: format!("#{}", node.0),
            hint: String::new(),
        })
    }

    /// kubelet's admission: a node runs at most `--max-pods` pods (host-network ones
    /// included; in the AWS profile the plugin's own `aws-node` and `kube-proxy` count too).
    pub(crate) fn admit_max_pods(&self, node: NodeId, pod: &str) -> Result<(), ClusterError> {
        let n = &self.world.nodes[node.idx()];
        let with_ips = n.pods.iter().filter(|p| !self.world.pods[p.idx()].host_network).count();
        let (running, max, why) = match &n.aws {
            Some(st) => {
                let running = n.pods.len() + st.host_network_pods.len();
                let t = &st.ipamd.itype;
                let why = format!(
                    "{with_ips} pods with IPs and {} host-network pods; {} allows {} ENIs × {} addresses",
                    running - with_ips,
                    t.name,
                    t.max_enis,
                    t.ips_per_eni
                );
                (running, st.max_pods, why)
            }
            None => {
                (n.pods.len(), n.max_pods, "kubelet --max-pods (the node's pods capacity)".into())
            }
        };
        if running as u32 >= max {
            return Err(ClusterError::TooManyPods {
                pod: pod.into(),
                node: n.name.clone(),
                running,
                max,
                why,
            });
        }
        Ok(())
    }

    /// Sets a node's `--max-pods` (its `pods` capacity; kubelet's default is 110).
    pub fn set_max_pods(&mut self, node: &str, max: u32) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let n = &mut self.world.nodes[id.idx()];
        n.max_pods = max;
        if let Some(st) = n.aws.as_mut() {
            st.max_pods = max;
        }
        Ok(())
    }

    /// Files a pod pushed to the arena under its node and name; kube-proxy re-syncs.
    fn register_pod(&mut self, key: (String, String), id: PodId) {
        let node = self.world.pods[id.idx()].node;
        self.world.nodes[node.idx()].pods.push(id);
        self.world.pod_names.insert(key, id);
        self.services_changed();
    }

    /// host-local IPAM: a requested address is reserved, otherwise the next one round robin
    /// after the last reserved.
    fn host_local(
        &mut self,
        node: NodeId,
        ip: Option<Ipv4Addr>,
        cidr: Ipv4Network,
    ) -> Result<Ipv4Addr, ClusterError> {
        let ipam = &mut self.world.nodes[node.idx()].ipam;
        Ok(match ip {
            Some(a) => {
                if !cidr.contains(a) {
                    return Err(ClusterError::OutsideCidr {
                        addr: a,
                        what: "the pod CIDR of node",
                        cidr,
                    });
                }
                ipam.reserve(a)?;
                a
            }
            None => ipam.allocate()?,
        })
    }

    /// Deletes a pod (`pod/NS/NAME`): its veth leaves the bridge, host-local releases its
    /// address, its endpoints disappear and kube-proxy re-syncs every node.
    pub fn delete_pod(&mut self, key: &str) -> Result<(), ClusterError> {
        let id = self.pod_id(key)?;
        let (ns_name, name, node, ip, host, netns) = {
            let p = &self.world.pods[id.idx()];
            (p.namespace.clone(), p.name.clone(), p.node, p.ip, p.host_veth, p.netns)
        };
        self.world.pod_names.shift_remove(&(ns_name, name));
        self.world.pods[id.idx()].deleted = true;
        self.world.pods[id.idx()].ready = false;
        if self.world.pods[id.idx()].host_network {
            // Its processes leave the node's namespace: their ports close.
            let p = &self.world.pods[id.idx()];
            let owners: Vec<String> = p
                .containers
                .iter()
                .map(|c| format!("pod/{}/{}/{}", p.namespace, p.name, c.name))
                .collect();
            self.world.netns[netns.idx()].ports.retain(|_, who| !owners.contains(who));
            self.hosts.reset(netns);
            self.world.nodes[node.idx()].pods.retain(|p| *p != id);
            self.services_changed();
            return Ok(());
        }
        self.world.devs[host.idx()].master = None;
        self.hosts.reset(netns);
        if self.world.nodes[node.idx()].aws.is_some() {
            self.aws_release_pod(node, ip);
        }
        let n = &mut self.world.nodes[node.idx()];
        n.pods.retain(|p| *p != id);
        n.ipam.release(ip);
        self.services_changed();
        Ok(())
    }

    /// Adds a pod with `hostNetwork: true`: its containers run in the node's root namespace
    /// and bind their ports there (a port the node or another host-network pod holds is
    /// `address already in use`); its address, and its endpoints' address, is the node's.
    pub fn add_host_network_pod(
        &mut self,
        namespace: &str,
        name: &str,
        node: NodeId,
        labels: BTreeMap<String, String>,
        containers: Vec<Container>,
    ) -> Result<PodId, ClusterError> {
        let key = (namespace.to_string(), name.to_string());
        let n = self.new_pod_node(namespace, name, node)?;
        let (ns, ip, eth0) = (n.netns, n.ip, n.eth0);
        let pod_key = format!("pod/{namespace}/{name}");
        self.admit_max_pods(node, &pod_key)?;
        let mut wanted: Vec<(Proto, u16, String)> = Vec::new();
        for c in &containers {
            for &(proto, port) in &c.ports {
                let who = format!("{pod_key}/{}", c.name);
                let held =
                    self.world.netns[ns.idx()].ports.get(&(proto, port)).cloned().or_else(|| {
                        wanted.iter().find(|w| w.0 == proto && w.1 == port).map(|w| w.2.clone())
                    });
                if let Some(owner) = held {
                    return Err(ClusterError::AddrInUse {
                        netns: self.world.netns[ns.idx()].name.clone(),
                        proto,
                        port,
                        container: who,
                        owner,
                    });
                }
                wanted.push((proto, port, who));
            }
        }
        for (proto, port, who) in wanted {
            self.world.netns[ns.idx()].ports.insert((proto, port), who);
            if let Some(st) = self.hosts.get_mut(ns) {
                st.serve(proto, port);
            }
        }
        let id = PodId(self.world.pods.len() as u32);
        self.world.pods.push(Pod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            ip,
            labels,
            containers,
            netns: ns,
            eth0,
            host_veth: eth0,
            ready: true,
            terminating: false,
            deleted: false,
            host_network: true,
        });
        self.register_pod(key, id);
        Ok(id)
    }

    /// Binds a port in a pod's namespace for one of its containers, as `bind(2)` would:
    /// containers of a pod share one port space, so a second bind fails.
    pub fn bind(
        &mut self,
        pod: &str,
        container: &str,
        proto: Proto,
        port: u16,
    ) -> Result<(), ClusterError> {
        let id = self.pod_id(pod)?;
        let ns = self.world.pods[id.idx()].netns;
        let netns = &mut self.world.netns[ns.idx()];
        if let Some(owner) = netns.ports.get(&(proto, port)) {
            return Err(ClusterError::AddrInUse {
                netns: netns.name.clone(),
                proto,
                port,
                container: container.into(),
                owner: owner.clone(),
            });
        }
        netns.ports.insert((proto, port), container.into());
        if let Some(st) = self.hosts.get_mut(ns) {
            st.serve(proto, port);
        }
        Ok(())
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
                        None => crate::vpc_cni::POD_GATEWAY,
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

    /// `ip route` of a node (or `pod/NS/NAME`).
    pub fn routes(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()].routes.render(&|i| self.world.devs[i.idx()].name.clone()))
    }

    /// `ip neigh` of a node (or `pod/NS/NAME`).
    pub fn neigh(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()]
            .neigh
            .render(self.world.now, &|i| self.world.devs[i.idx()].name.clone()))
    }

    /// `bridge fdb show br cbr0` of a node.
    pub fn fdb(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let Some(br) = self.world.nodes[id.idx()].bridge else {
            return Ok(String::new());
        };
        let br = &self.world.devs[br.idx()];
        match &br.kind {
            DeviceKind::Bridge(f) => {
                Ok(f.render(&br.name, self.world.now, &|i| self.world.devs[i.idx()].name.clone()))
            }
            _ => Ok(String::new()),
        }
    }

    /// `conntrack -L` of a node.
    pub fn conntrack(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        Ok(self.world.netns[self.world.nodes[id.idx()].netns.idx()]
            .nf
            .as_ref()
            .map(|nf| nf.conntrack.list(self.world.now))
            .unwrap_or_default())
    }

    /// The kernel log lines `LOG` rules wrote in a node's (or `pod/NS/NAME`'s, or the
    /// `vpc`'s) namespace, oldest first, as `dmesg` shows them without timestamps.
    pub fn kernel_log(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()].klog.iter().map(|l| format!("{}\n", l.trim_end())).collect())
    }

    /// `iptables-save` of a node (kernel form).
    pub fn iptables_save(&self, node: &str) -> Result<String, ClusterError> {
        self.iptables_save_with(node, false)
    }

    /// [`Cluster::iptables_save`] with per-rule packet and byte counters when `counters` is
    /// set (`iptables-save -c`).
    pub fn iptables_save_with(&self, node: &str, counters: bool) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let nf = self.world.netns[self.world.nodes[id.idx()].netns.idx()].nf.as_ref();
        Ok(nf
            .map(|nf| nf.save_kernel_form_with(&nf.tables.tables_in_use(), counters))
            .unwrap_or_default())
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
            aws: self.aws.clone(),
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
            return self.resolve_service(host, port).map_err(TraceError::from);
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
