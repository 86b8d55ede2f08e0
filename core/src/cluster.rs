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

use indexmap::IndexMap;
use ipnetwork::Ipv4Network;
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;

use podnet_netfilter::{Netfilter, Proto, Rng};

use crate::ids::{IfIndex, NetnsId, NodeId, PodId, SegmentId};
use crate::net::fdb::Fdb;
use crate::net::neigh::NeighTable;
use crate::net::route::{Route, RouteProto, RouteTable, RoutingPolicy};
use crate::stack::Stack;

/// What kind of device.
#[derive(Clone, Debug)]
pub enum DeviceKind {
    /// `lo`.
    Loopback,
    /// One end of a veth pair.
    Veth {
        /// The other end.
        peer: IfIndex,
    },
    /// A Linux bridge and its forwarding database.
    Bridge(Fdb),
    /// A NIC on an L2 segment (a node's `eth0`, the VPC router's port).
    Ether {
        /// The segment.
        segment: SegmentId,
    },
    /// A dummy device (`kube-ipvs0`).
    Dummy,
}

/// A network device.
#[derive(Clone, Debug)]
pub struct Device {
    /// Name inside its namespace.
    pub name: String,
    /// Its namespace.
    pub netns: NetnsId,
    /// MAC address.
    pub mac: EthernetAddress,
    /// Kind.
    pub kind: DeviceKind,
    /// Addresses with their prefix (host bits kept: `10.244.1.1/24`).
    pub addrs: Vec<Ipv4Network>,
    /// The bridge this device is a port of.
    pub master: Option<IfIndex>,
    /// Bridge port `hairpin_mode`.
    pub hairpin: bool,
}

/// Who a namespace belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A node's root namespace.
    Node(NodeId),
    /// A pod's namespace.
    Pod(PodId),
    /// A router of the underlay (the VPC router).
    Router,
    /// A host outside the cluster.
    Host,
}

/// Per-namespace sysctls that change forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctls {
    /// `net.ipv4.ip_forward`.
    pub ip_forward: bool,
    /// `net.bridge.bridge-nf-call-iptables`.
    pub bridge_nf_call_iptables: bool,
}

/// A network namespace.
pub struct Netns {
    /// Name, as podnet prints it (`node1`, `pod/default/pod1`, `vpc`).
    pub name: String,
    /// Owner.
    pub owner: Owner,
    /// Devices, in creation order.
    pub devs: Vec<IfIndex>,
    /// The addresses of those devices, what `ip_rcv` asks of every packet (is it for this
    /// host?): kept in step by [`Cluster::set_addrs`], the one place addresses change.
    pub(crate) local: Vec<Ipv4Addr>,
    /// Main routing table.
    pub routes: RouteTable,
    /// `ip rule` and extra tables.
    pub policy: RoutingPolicy,
    /// Neighbour table (for pods: what the pod's stack learned, as seen on the wire).
    pub neigh: NeighTable,
    /// Sysctls.
    pub sysctl: Sysctls,
    /// Netfilter, for namespaces that forward.
    pub nf: Option<Box<Netfilter>>,
    /// Ports bound by processes (containers), with who bound them.
    pub ports: BTreeMap<(Proto, u16), String>,
    /// Whether podnet's router code forwards here (node root, VPC router) or a host stack
    /// answers (pods, hosts).
    pub router: bool,
    /// kube-proxy's health-check servers on a node: port → the HTTP response it writes.
    pub(crate) health: BTreeMap<u16, Vec<u8>>,
    /// Kernel log lines written by `LOG` rules, oldest first (the last 10,000).
    pub(crate) klog: Vec<String>,
    pub(crate) stack: Option<Box<Stack>>,
}

/// A node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name.
    pub name: String,
    /// VPC address (`eth0`).
    pub ip: Ipv4Addr,
    /// Pod CIDR.
    pub pod_cidr: Ipv4Network,
    /// Root namespace.
    pub netns: NetnsId,
    /// `eth0`.
    pub eth0: IfIndex,
    /// `cbr0` (the bridge profile; `None` in the AWS VPC CNI profile).
    pub bridge: Option<IfIndex>,
    /// The AWS VPC CNI's ipamd and the ENI devices (`eth0`, `eth1`, …), in the AWS profile.
    pub aws: Option<crate::vpc_cni::NodeEnis>,
    /// Its iptables came from a real node's `iptables-save` ([`Cluster::import_iptables`]).
    pub iptables_imported: bool,
    /// kubelet's `--max-pods` (110 unless set; the AWS profile keeps its own figure).
    pub max_pods: u32,
    /// Pods on it, in creation order.
    pub pods: Vec<PodId>,
    /// host-local IPAM of its pod CIDR.
    pub ipam: crate::ipam::HostLocal,
}

/// A container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Ports it listens on.
    pub ports: Vec<(Proto, u16)>,
    /// Named container ports (what a Service's named `targetPort` refers to).
    pub named_ports: Vec<(String, Proto, u16)>,
}

/// A pod.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it runs on.
    pub node: NodeId,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Containers.
    pub containers: Vec<Container>,
    /// Its network namespace.
    pub netns: NetnsId,
    /// `eth0` inside the pod.
    pub eth0: IfIndex,
    /// The veth end on the node's bridge.
    pub host_veth: IfIndex,
    /// Ready condition (endpoints follow it).
    pub ready: bool,
    /// Being deleted (`deletionTimestamp` set): its endpoints are terminating.
    pub terminating: bool,
    /// Deleted: gone from the node (kept in the arena so ids stay stable).
    pub deleted: bool,
    /// `hostNetwork: true`: it runs in the node's root namespace, with the node's address.
    pub host_network: bool,
}

impl Pod {
    /// `pod/NS/NAME`.
    pub fn key(&self) -> String {
        format!("pod/{}/{}", self.namespace, self.name)
    }
}

/// An L2 segment outside the nodes.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Name.
    pub name: String,
    /// Attached devices.
    pub ports: Vec<IfIndex>,
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

/// Errors from building or changing a cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// A name is used twice.
    #[error("{kind} '{name}' already exists: names must be unique")]
    Duplicate {
        /// Object kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A name does not exist.
    #[error("no {kind} named '{name}'{hint}")]
    NotFound {
        /// Object kind.
        kind: &'static str,
        /// The name.
        name: String,
        /// What exists instead.
        hint: String,
    },
    /// An address is outside the range it must come from.
    #[error("address {addr} is outside {what} {cidr}: pick an address inside it")]
    OutsideCidr {
        /// The address.
        addr: Ipv4Addr,
        /// Which range.
        what: &'static str,
        /// The range.
        cidr: Ipv4Network,
    },
    /// An address is taken or reserved.
    #[error("address {addr} is not available: {why}")]
    AddressTaken {
        /// The address.
        addr: Ipv4Addr,
        /// Why.
        why: String,
    },
    /// A port is already bound in a network namespace.
    #[error(
        "bind {proto}/{port} in {netns} by container '{container}': address already in use (bound by container '{owner}'); containers of a pod share one port space"
    )]
    AddrInUse {
        /// The namespace.
        netns: String,
        /// Protocol.
        proto: Proto,
        /// Port.
        port: u16,
        /// Who tried.
        container: String,
        /// Who has it.
        owner: String,
    },
    /// A name the API server would refuse.
    #[error("{what} '{name}' is invalid: it must be {rule}, as the API server requires")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An operation of the other CNI profile.
    #[error("{what}: this cluster uses the {profile} profile; {fix}")]
    Profile {
        /// What was attempted.
        what: String,
        /// The cluster's profile.
        profile: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// An imported `iptables-save` dump could not be read.
    #[error("iptables-save for node '{node}', line {line}, column {column}: {msg}")]
    IptablesParse {
        /// The node.
        node: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong.
        msg: String,
    },
    /// kubelet's max-pods admission refused the pod (it stays Pending).
    #[error(
        "pod {pod} is unschedulable on node '{node}': Too many pods ({running} of max {max}: {why})"
    )]
    TooManyPods {
        /// The pod.
        pod: String,
        /// The node.
        node: String,
        /// Pods counted.
        running: usize,
        /// kubelet's `--max-pods`.
        max: u32,
        /// What the count is made of.
        why: String,
    },
    /// The CNI could not give the pod an address (it stays ContainerCreating).
    #[error("pod {pod} stays ContainerCreating: {reason}")]
    FailedToAssign {
        /// The pod.
        pod: String,
        /// The CNI's reason.
        reason: String,
    },
    /// A request the cluster cannot honour as asked.
    #[error("{what}: {fix}")]
    Refused {
        /// What was asked and why it cannot be.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// An address pool refused (exhausted, conflict, reserved address).
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    /// A pod CIDR overlaps another node's or is outside the cluster CIDR.
    #[error("pod CIDR {cidr} for node '{node}' {why}")]
    BadPodCidr {
        /// The node.
        node: String,
        /// The CIDR.
        cidr: Ipv4Network,
        /// Why.
        why: String,
    },
}

/// The whole modelled cluster.
pub struct Cluster {
    pub(crate) cfg: ClusterConfig,
    pub(crate) nodes: Vec<Node>,
    pub(crate) pods: Vec<Pod>,
    pub(crate) netns: Vec<Netns>,
    pub(crate) devs: Vec<Device>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) node_names: IndexMap<String, NodeId>,
    pub(crate) pod_names: IndexMap<(String, String), PodId>,
    pub(crate) vpc: NetnsId,
    pub(crate) vpc_subnet: SegmentId,
    pub(crate) now: Instant,
    pub(crate) rng: Rng,
    pub(crate) sim: crate::sim::SimState,
    pub(crate) services: crate::kube_proxy::Services,
    pub(crate) edge: crate::cloud::Edge,
    pub(crate) inet_segment: Option<SegmentId>,
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
                Some(crate::vpc_cni::AwsVpc { subnet, ec2: std::collections::BTreeSet::new() })
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
            rng: Rng::new(cfg.seed ^ 0x706f_646e_6574),
            cfg,
            nodes: Vec::new(),
            pods: Vec::new(),
            netns: Vec::new(),
            devs: Vec::new(),
            segments: Vec::new(),
            node_names: IndexMap::new(),
            pod_names: IndexMap::new(),
            vpc: NetnsId(0),
            vpc_subnet: SegmentId(0),
            now: Instant::ZERO,
            sim: crate::sim::SimState::default(),
            services,
            edge: crate::cloud::Edge::default(),
            inet_segment: None,
            aws: None,
        };
        c.vpc_subnet = c.add_segment("vpc-subnet");
        let vpc = c.add_netns("vpc", Owner::Router, true);
        c.vpc = vpc;
        c.netns[vpc.idx()].sysctl.ip_forward = true;
        let addr =
            Ipv4Network::new(c.cfg.vpc_router, c.cfg.node_subnet.prefix()).expect("valid prefix");
        let dev = c.add_device(vpc, "vpc0", DeviceKind::Ether { segment: c.vpc_subnet });
        c.add_addr(dev, addr);
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

    pub(crate) fn add_segment(&mut self, name: &str) -> SegmentId {
        self.segments.push(Segment { name: name.into(), ports: Vec::new() });
        SegmentId((self.segments.len() - 1) as u32)
    }

    pub(crate) fn add_netns(&mut self, name: &str, owner: Owner, router: bool) -> NetnsId {
        let id = NetnsId(self.netns.len() as u32);
        self.netns.push(Netns {
            name: name.into(),
            owner,
            devs: Vec::new(),
            local: Vec::new(),
            routes: RouteTable::default(),
            policy: RoutingPolicy::default(),
            neigh: NeighTable::default(),
            sysctl: Sysctls { ip_forward: false, bridge_nf_call_iptables: false },
            nf: None,
            ports: BTreeMap::new(),
            router,
            health: BTreeMap::new(),
            klog: Vec::new(),
            stack: None,
        });
        let lo = self.add_device(id, "lo", DeviceKind::Loopback);
        self.add_addr(lo, "127.0.0.1/8".parse().expect("lit"));
        id
    }

    pub(crate) fn add_device(&mut self, netns: NetnsId, name: &str, kind: DeviceKind) -> IfIndex {
        let id = IfIndex(self.devs.len() as u32);
        // Locally administered, deterministic MACs: 02:pn:..:ifindex.
        let b = id.0.to_be_bytes();
        let mac = EthernetAddress([0x02, 0x50, b[0], b[1], b[2], b[3]]);
        if let DeviceKind::Ether { segment } = kind {
            self.segments[segment.idx()].ports.push(id);
        }
        self.devs.push(Device {
            name: name.into(),
            netns,
            mac,
            kind,
            addrs: Vec::new(),
            master: None,
            hairpin: false,
        });
        self.netns[netns.idx()].devs.push(id);
        id
    }

    /// Gives a device these addresses, and its namespace the list of its local addresses
    /// that goes with them.
    pub(crate) fn set_addrs(&mut self, dev: IfIndex, addrs: Vec<Ipv4Network>) {
        self.devs[dev.idx()].addrs = addrs;
        let ns = self.devs[dev.idx()].netns;
        self.netns[ns.idx()].local = self.addrs_in(ns);
    }

    /// The addresses of a namespace's devices, device by device.
    pub(crate) fn addrs_in(&self, ns: NetnsId) -> Vec<Ipv4Addr> {
        let devs = self.netns[ns.idx()].devs.iter();
        devs.flat_map(|d| self.devs[d.idx()].addrs.iter().map(|a| a.ip())).collect()
    }

    /// Adds an address and its connected route (`proto kernel scope link`).
    pub(crate) fn add_addr(&mut self, dev: IfIndex, addr: Ipv4Network) {
        let mut addrs = self.devs[dev.idx()].addrs.clone();
        addrs.push(addr);
        self.set_addrs(dev, addrs);
        if addr.prefix() < 32 && self.devs[dev.idx()].name != "lo" {
            let ns = self.devs[dev.idx()].netns;
            let net = Ipv4Network::new(addr.network(), addr.prefix()).expect("valid");
            self.netns[ns.idx()].routes.add(Route {
                dst: net,
                via: None,
                dev,
                src: Some(addr.ip()),
                proto: RouteProto::Kernel,
            });
        }
    }

    /// Adds `default via GATEWAY dev DEV` to a namespace's main table.
    pub(crate) fn add_default_route(&mut self, ns: NetnsId, via: Ipv4Addr, dev: IfIndex) {
        let dst = Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("the default prefix");
        self.netns[ns.idx()].routes.add(Route {
            dst,
            via: Some(via),
            dev,
            src: None,
            proto: RouteProto::Boot,
        });
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
        if self.node_names.contains_key(name) {
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
            || self.nodes.iter().any(|n| n.ip == ip)
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
        if let Some(other) = self.nodes.iter().find(|n| n.pod_cidr.overlaps(pod_cidr)) {
            return Err(ClusterError::BadPodCidr {
                node: name.into(),
                cidr: pod_cidr,
                why: format!("overlaps node '{}' ({})", other.name, other.pod_cidr),
            });
        }
        let id = NodeId(self.nodes.len() as u32);
        let ns = self.add_netns(name, Owner::Node(id), true);
        self.netns[ns.idx()].sysctl = Sysctls { ip_forward: true, bridge_nf_call_iptables: true };
        self.netns[ns.idx()].nf =
            Some(Box::new(Netfilter::new(self.cfg.seed.wrapping_add(u64::from(id.0) * 7919))));
        let eth0 = self.add_device(ns, "eth0", DeviceKind::Ether { segment: self.vpc_subnet });
        self.add_addr(eth0, Ipv4Network::new(ip, subnet.prefix()).expect("valid"));
        let br = self.add_device(ns, "cbr0", DeviceKind::Bridge(Fdb::default()));
        let gw = Ipv4Addr::from(u32::from(pod_cidr.network()) + 1);
        self.add_addr(br, Ipv4Network::new(gw, pod_cidr.prefix()).expect("valid"));
        let br_mac = self.devs[br.idx()].mac;
        if let DeviceKind::Bridge(f) = &mut self.devs[br.idx()].kind {
            f.add_local(br_mac, br);
        }
        let vpc_router = self.cfg.vpc_router;
        self.add_default_route(ns, vpc_router, eth0);
        let vpc0 = self.netns[self.vpc.idx()].devs[1];
        self.netns[self.vpc.idx()].routes.add(Route {
            dst: pod_cidr,
            via: Some(ip),
            dev: vpc0,
            src: None,
            proto: RouteProto::Static,
        });
        self.nodes.push(Node {
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
        self.node_names.insert(name.into(), id);
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
        let aws_node = self.nodes[node.idx()].aws.is_some();
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
        let id = PodId(self.pods.len() as u32);
        let ns = self.add_netns(&pod_ns_name, Owner::Pod(id), aws_node);
        self.netns[ns.idx()].ports = ports;
        let node_ns = self.nodes[node.idx()].netns;
        let veth_name = if aws_node {
            crate::vpc_cni::host_veth_name(namespace, name)
        } else {
            format!("veth{}", self.nodes[node.idx()].pods.len())
        };
        let eth0 = self.add_device(ns, "eth0", DeviceKind::Veth { peer: IfIndex(0) });
        let host = self.add_device(node_ns, &veth_name, DeviceKind::Veth { peer: eth0 });
        self.devs[eth0.idx()].kind = DeviceKind::Veth { peer: host };
        if aws_node {
            self.aws_wire_pod(node, ns, eth0, host, ip, eni);
        } else {
            let br = self.nodes[node.idx()].bridge.expect("a bridge-profile node has cbr0");
            self.devs[host.idx()].master = Some(br);
            self.devs[host.idx()].hairpin = true;
            let host_mac = self.devs[host.idx()].mac;
            if let DeviceKind::Bridge(f) = &mut self.devs[br.idx()].kind {
                f.add_local(host_mac, host);
            }
            self.add_addr(eth0, Ipv4Network::new(ip, cidr.prefix()).expect("valid"));
            self.add_default_route(ns, gw, eth0);
        }
        self.pods.push(Pod {
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
        if self.pod_names.contains_key(&(namespace.to_string(), name.to_string())) {
            return Err(ClusterError::Duplicate {
                kind: "pod",
                name: format!("{namespace}/{name}"),
            });
        }
        self.nodes.get(node.idx()).ok_or_else(|| ClusterError::NotFound {
            kind: "node",
            name: format!("#{}", node.0),
            hint: String::new(),
        })
    }

    /// kubelet's admission: a node runs at most `--max-pods` pods (host-network ones
    /// included; in the AWS profile the plugin's own `aws-node` and `kube-proxy` count too).
    pub(crate) fn admit_max_pods(&self, node: NodeId, pod: &str) -> Result<(), ClusterError> {
        let n = &self.nodes[node.idx()];
        let with_ips = n.pods.iter().filter(|p| !self.pods[p.idx()].host_network).count();
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
        let n = &mut self.nodes[id.idx()];
        n.max_pods = max;
        if let Some(st) = n.aws.as_mut() {
            st.max_pods = max;
        }
        Ok(())
    }

    /// Files a pod pushed to the arena under its node and name; kube-proxy re-syncs.
    fn register_pod(&mut self, key: (String, String), id: PodId) {
        let node = self.pods[id.idx()].node;
        self.nodes[node.idx()].pods.push(id);
        self.pod_names.insert(key, id);
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
        let ipam = &mut self.nodes[node.idx()].ipam;
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
            let p = &self.pods[id.idx()];
            (p.namespace.clone(), p.name.clone(), p.node, p.ip, p.host_veth, p.netns)
        };
        self.pod_names.shift_remove(&(ns_name, name));
        self.pods[id.idx()].deleted = true;
        self.pods[id.idx()].ready = false;
        if self.pods[id.idx()].host_network {
            // Its processes leave the node's namespace: their ports close.
            let p = &self.pods[id.idx()];
            let owners: Vec<String> = p
                .containers
                .iter()
                .map(|c| format!("pod/{}/{}/{}", p.namespace, p.name, c.name))
                .collect();
            self.netns[netns.idx()].ports.retain(|_, who| !owners.contains(who));
            self.netns[netns.idx()].stack = None;
            self.nodes[node.idx()].pods.retain(|p| *p != id);
            self.services_changed();
            return Ok(());
        }
        self.devs[host.idx()].master = None;
        self.netns[netns.idx()].stack = None;
        if self.nodes[node.idx()].aws.is_some() {
            self.aws_release_pod(node, ip);
        }
        let n = &mut self.nodes[node.idx()];
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
                let held = self.netns[ns.idx()].ports.get(&(proto, port)).cloned().or_else(|| {
                    wanted.iter().find(|w| w.0 == proto && w.1 == port).map(|w| w.2.clone())
                });
                if let Some(owner) = held {
                    return Err(ClusterError::AddrInUse {
                        netns: self.netns[ns.idx()].name.clone(),
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
            self.netns[ns.idx()].ports.insert((proto, port), who);
            if let Some(st) = self.netns[ns.idx()].stack.as_mut() {
                st.serve(proto, port);
            }
        }
        let id = PodId(self.pods.len() as u32);
        self.pods.push(Pod {
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
        let ns = self.pods[id.idx()].netns;
        let netns = &mut self.netns[ns.idx()];
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
        if let Some(st) = netns.stack.as_mut() {
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
        self.pod_names.get(&(ns.to_string(), name.to_string())).copied().ok_or_else(|| {
            ClusterError::NotFound {
                kind: "pod",
                name: key.into(),
                hint: format!(
                    " (pods: {})",
                    self.pods.iter().map(Pod::key).collect::<Vec<_>>().join(", ")
                ),
            }
        })
    }

    /// The node named `name` (`node/NAME` accepted).
    pub fn node_id(&self, name: &str) -> Result<NodeId, ClusterError> {
        let n = name.strip_prefix("node/").unwrap_or(name);
        self.node_names.get(n).copied().ok_or_else(|| ClusterError::NotFound {
            kind: "node",
            name: name.into(),
            hint: format!(
                " (nodes: {})",
                self.node_names.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// Nodes, in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The device called `name` in a namespace.
    pub(crate) fn dev_named(&self, ns: NetnsId, name: &str) -> Option<IfIndex> {
        self.netns[ns.idx()].devs.iter().copied().find(|d| self.devs[d.idx()].name == name)
    }

    /// A device.
    pub fn device(&self, i: IfIndex) -> &Device {
        &self.devs[i.idx()]
    }

    /// A namespace.
    pub fn netns(&self, i: NetnsId) -> &Netns {
        &self.netns[i.idx()]
    }

    /// The cluster's shape, for drawing.
    pub fn topology(&self) -> Topology {
        Topology {
            vpc_router: self.cfg.vpc_router,
            node_subnet: self.cfg.node_subnet.to_string(),
            nodes: self
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
                            let p = &self.pods[p.idx()];
                            TopologyPod {
                                key: p.key(),
                                name: p.name.clone(),
                                ip: p.ip,
                                veth: self.devs[p.host_veth.idx()].name.clone(),
                                containers: p.containers.iter().map(|c| c.name.clone()).collect(),
                            }
                        })
                        .collect(),
                })
                .collect(),
            edge: self
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
                        .any(|a| self.netns[a.netns.idx()].name == n.name)
                    {
                        "alb"
                    } else {
                        "lb"
                    };
                    let public = self
                        .edge
                        .lbs
                        .iter()
                        .filter(|l| self.netns[l.netns.idx()].name == n.name)
                        .map(|l| l.public_ip)
                        .chain(
                            self.edge
                                .albs
                                .iter()
                                .filter(|a| self.netns[a.netns.idx()].name == n.name)
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
                        .map(|d| &self.devs[d.idx()])
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
        self.rng = Rng::new(seed ^ 0x706f_646e_6574);
        for (i, ns) in self.netns.iter_mut().enumerate() {
            if let Some(nf) = ns.nf.as_mut() {
                nf.rng = Rng::new(seed.wrapping_add(i as u64 * 7919));
            }
            ns.stack = None;
        }
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Sets a sysctl on a node: `net.ipv4.ip_forward`, `net.bridge.bridge-nf-call-iptables`,
    /// `net.netfilter.nf_conntrack_max` (0: no limit, as in the kernel) or
    /// `net.netfilter.nf_conntrack_buckets` (the hash is resized, entries kept).
    pub fn set_sysctl(&mut self, node: &str, key: &str, value: u32) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let ns = &mut self.netns[self.nodes[id.idx()].netns.idx()];
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
        if self.pods[id.idx()].host_network {
            return Err(ClusterError::Profile {
                what: format!("set_hairpin({pod})"),
                profile: "host network",
                fix: "a host-network pod has no veth on the bridge",
            });
        }
        let host = self.pods[id.idx()].host_veth;
        self.devs[host.idx()].hairpin = on;
        Ok(())
    }

    /// `ip route` of a node (or `pod/NS/NAME`).
    pub fn routes(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.netns[ns.idx()].routes.render(&|i| self.devs[i.idx()].name.clone()))
    }

    /// `ip neigh` of a node (or `pod/NS/NAME`).
    pub fn neigh(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.netns[ns.idx()].neigh.render(self.now, &|i| self.devs[i.idx()].name.clone()))
    }

    /// `bridge fdb show br cbr0` of a node.
    pub fn fdb(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let Some(br) = self.nodes[id.idx()].bridge else {
            return Ok(String::new());
        };
        let br = &self.devs[br.idx()];
        match &br.kind {
            DeviceKind::Bridge(f) => {
                Ok(f.render(&br.name, self.now, &|i| self.devs[i.idx()].name.clone()))
            }
            _ => Ok(String::new()),
        }
    }

    /// `conntrack -L` of a node.
    pub fn conntrack(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        Ok(self.netns[self.nodes[id.idx()].netns.idx()]
            .nf
            .as_ref()
            .map(|nf| nf.conntrack.list(self.now))
            .unwrap_or_default())
    }

    /// The kernel log lines `LOG` rules wrote in a node's (or `pod/NS/NAME`'s, or the
    /// `vpc`'s) namespace, oldest first, as `dmesg` shows them without timestamps.
    pub fn kernel_log(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.netns[ns.idx()].klog.iter().map(|l| format!("{}\n", l.trim_end())).collect())
    }

    /// `iptables-save` of a node (kernel form).
    pub fn iptables_save(&self, node: &str) -> Result<String, ClusterError> {
        self.iptables_save_with(node, false)
    }

    /// [`Cluster::iptables_save`] with per-rule packet and byte counters when `counters` is
    /// set (`iptables-save -c`).
    pub fn iptables_save_with(&self, node: &str, counters: bool) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let nf = self.netns[self.nodes[id.idx()].netns.idx()].nf.as_ref();
        Ok(nf
            .map(|nf| nf.save_kernel_form_with(&nf.tables.tables_in_use(), counters))
            .unwrap_or_default())
    }

    pub(crate) fn netns_of(&self, who: &str) -> Result<NetnsId, ClusterError> {
        if who.starts_with("pod/") {
            return Ok(self.pods[self.pod_id(who)?.idx()].netns);
        }
        if who == "vpc" {
            return Ok(self.vpc);
        }
        Ok(self.nodes[self.node_id(who)?.idx()].netns)
    }

    /// Advances virtual time: conntrack entries and FDB entries age, neighbours go stale.
    pub fn advance(&mut self, d: smoltcp::time::Duration) {
        self.now += d;
        let now = self.now;
        for ns in &mut self.netns {
            if let Some(nf) = ns.nf.as_mut() {
                nf.conntrack.expire(now);
            }
        }
        for d in &mut self.devs {
            if let DeviceKind::Bridge(f) = &mut d.kind {
                f.age(now);
            }
        }
    }
}
