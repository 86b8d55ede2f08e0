//! The world: every node, pod, network namespace, device and L2 segment of the model, held
//! in arenas and addressed by typed ids ([`NodeId`], [`PodId`], [`NetnsId`], [`IfIndex`],
//! [`SegmentId`]), never by references between objects; the virtual clock; the random
//! source; and the frame queue the datapath works through.
//!
//! What lives here is what `ip link`, `ip addr` and `ip route` would show on a host, plus
//! the bookkeeping of which pod or node owns a namespace. How frames cross it is the
//! datapath's business; who creates devices and addresses is the
//! CNI's, kube-proxy's and the cloud's (the layers above). This layer knows no Kubernetes
//! object beyond the pods and nodes it hosts, and no cloud product.
//!
//! A `World` is [`Clone`]: a dry run works on a copy (the host stacks, which live in the
//! [`host`](crate::host) layer, are not part of it).

mod queue;

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
use crate::net::route::{LocalKind, LocalTable, Route, RouteProto, RouteTable, RoutingPolicy};

pub(crate) use queue::{Event, Pending, SimState};

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
    /// `net.ipv4.conf.<dev>.rp_filter` (0 off, 1 strict, 2 loose; the kernel default 0).
    pub rp_filter: u8,
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
    /// `net.ipv4.conf.all.rp_filter`: a device filters with the larger of this and its own.
    pub rp_filter: u8,
}

/// A network namespace.
#[derive(Clone)]
pub struct Netns {
    /// Name, as podnet prints it (`node1`, `pod/default/pod1`, `vpc`).
    pub name: String,
    /// Owner.
    pub owner: Owner,
    /// Devices, in creation order.
    pub devs: Vec<IfIndex>,
    /// The `local` routing table: the addresses of those devices, what `ip_rcv` asks of
    /// every packet (is it for this host?) and what a host's own output consults first;
    /// kept in step by `World::set_addrs`, the one place addresses change.
    pub local: LocalTable,
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
    /// Kernel log lines written by `LOG` rules, oldest first (the last 10,000).
    pub(crate) klog: Vec<String>,
}

/// A node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name.
    pub name: String,
    /// VPC address (`eth0`).
    pub ip: Ipv4Addr,
    /// Pod CIDR (in the AWS VPC CNI profile, the VPC subnet pods take addresses from).
    pub pod_cidr: Ipv4Network,
    /// Root namespace.
    pub netns: NetnsId,
    /// `eth0`.
    pub eth0: IfIndex,
    /// `cbr0` (the bridge profile; `None` in the AWS VPC CNI profile).
    pub bridge: Option<IfIndex>,
    /// kubelet's `--max-pods` (110 unless set; the AWS profile's figure follows the
    /// instance type).
    pub max_pods: u32,
    /// Pods on it, in creation order.
    pub pods: Vec<PodId>,
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

/// A subnet of the VPC: an L2 segment joining its nodes' `eth0`, with the VPC router's
/// address on it (the router routes between subnets and to every pod CIDR).
#[derive(Clone, Debug)]
pub struct VpcSubnet {
    /// Its range.
    pub cidr: Ipv4Network,
    /// The VPC router's address in it.
    pub router: Ipv4Addr,
    /// Its segment.
    pub segment: SegmentId,
    /// The VPC router's device on it.
    pub router_dev: IfIndex,
}

/// An L2 segment outside the nodes.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Name.
    pub name: String,
    /// Attached devices.
    pub ports: Vec<IfIndex>,
}

/// A borrowed `(namespace, name)` that hashes and compares like the owned key of
/// [`World::pod_names`].
struct PodKey<'a>(&'a str, &'a str);

impl std::hash::Hash for PodKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state);
    }
}

impl indexmap::Equivalent<(String, String)> for PodKey<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// Everything the model's hosts are made of, and the clock and random source they share.
///
/// A clone is a copy of the world at rest: every arena, the clock and the random source;
/// the frame queue and the run's records start empty (a copy is taken between runs).
#[derive(Clone)]
pub struct World {
    /// The seed every random choice derives from.
    pub(crate) seed: u64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) pods: Vec<Pod>,
    pub(crate) netns: Vec<Netns>,
    pub(crate) devs: Vec<Device>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) node_names: IndexMap<String, NodeId>,
    pub(crate) pod_names: IndexMap<(String, String), PodId>,
    /// The VPC router's namespace.
    pub(crate) vpc: NetnsId,
    /// The VPC subnet's segment (the first subnet's, where the cloud edge attaches).
    pub(crate) vpc_subnet: SegmentId,
    /// Every node subnet of the VPC, the first one first.
    pub(crate) subnets: Vec<VpcSubnet>,
    /// The internet's segment, once an internet gateway exists.
    pub(crate) inet_segment: Option<SegmentId>,
    pub(crate) now: Instant,
    pub(crate) rng: Rng,
    /// The frame queue and what the current run records.
    pub(crate) sim: SimState,
}

impl World {
    /// An empty world: no namespace, no device.
    pub(crate) fn new(seed: u64) -> World {
        World {
            seed,
            nodes: Vec::new(),
            pods: Vec::new(),
            netns: Vec::new(),
            devs: Vec::new(),
            segments: Vec::new(),
            node_names: IndexMap::new(),
            pod_names: IndexMap::new(),
            vpc: NetnsId(0),
            vpc_subnet: SegmentId(0),
            subnets: Vec::new(),
            inet_segment: None,
            now: Instant::ZERO,
            rng: Rng::new(seed ^ 0x706f_646e_6574),
            sim: SimState::default(),
        }
    }

    /// The pod `namespace/name`, looked up without allocating a key.
    pub(crate) fn pod_named(&self, namespace: &str, name: &str) -> Option<PodId> {
        self.pod_names.get(&PodKey(namespace, name)).copied()
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
            local: LocalTable::default(),
            routes: RouteTable::default(),
            policy: RoutingPolicy::default(),
            neigh: NeighTable::default(),
            sysctl: Sysctls { ip_forward: false, bridge_nf_call_iptables: false, rp_filter: 0 },
            nf: None,
            ports: BTreeMap::new(),
            router,
            klog: Vec::new(),
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
            rp_filter: 0,
        });
        self.netns[netns.idx()].devs.push(id);
        id
    }

    /// Gives a device these addresses, and its namespace the list of its local addresses
    /// that goes with them.
    pub(crate) fn set_addrs(&mut self, dev: IfIndex, addrs: Vec<Ipv4Network>) {
        self.devs[dev.idx()].addrs = addrs;
        let ns = self.devs[dev.idx()].netns;
        self.netns[ns.idx()].local = self.local_table_of(ns);
    }

    /// The `local` table a namespace's device addresses make.
    fn local_table_of(&self, ns: NetnsId) -> LocalTable {
        let devs = self.netns[ns.idx()].devs.iter();
        LocalTable::from_addrs(
            devs.flat_map(|d| self.devs[d.idx()].addrs.iter().map(move |a| (*d, *a))),
        )
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

    /// The device called `name` in a namespace.
    pub(crate) fn dev_named(&self, ns: NetnsId, name: &str) -> Option<IfIndex> {
        self.netns[ns.idx()].devs.iter().copied().find(|d| self.devs[d.idx()].name == name)
    }

    /// Adds a node's root namespace (forwarding, bridge netfilter on, its own netfilter
    /// seeded with `nf_seed`) with `eth0` on the VPC subnet holding `addr`.
    pub(crate) fn add_node(
        &mut self,
        name: &str,
        addr: Ipv4Network,
        pod_cidr: Ipv4Network,
        max_pods: u32,
        nf_seed: u64,
        segment: SegmentId,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        let ns = self.add_netns(name, Owner::Node(id), true);
        self.netns[ns.idx()].sysctl =
            Sysctls { ip_forward: true, bridge_nf_call_iptables: true, rp_filter: 0 };
        self.netns[ns.idx()].nf = Some(Box::new(Netfilter::new(nf_seed)));
        let eth0 = self.add_device(ns, "eth0", DeviceKind::Ether { segment });
        self.add_addr(eth0, addr);
        self.nodes.push(Node {
            name: name.into(),
            ip: addr.ip(),
            pod_cidr,
            netns: ns,
            eth0,
            bridge: None,
            max_pods,
            pods: Vec::new(),
        });
        self.node_names.insert(name.into(), id);
        id
    }

    /// Adds a veth pair: `a` in namespace `ns_a`, its peer `b` in `ns_b`.
    pub(crate) fn add_veth_pair(
        &mut self,
        ns_a: NetnsId,
        a: &str,
        ns_b: NetnsId,
        b: &str,
    ) -> (IfIndex, IfIndex) {
        let end_a = self.add_device(ns_a, a, DeviceKind::Veth { peer: IfIndex(0) });
        let end_b = self.add_device(ns_b, b, DeviceKind::Veth { peer: end_a });
        self.devs[end_a.idx()].kind = DeviceKind::Veth { peer: end_b };
        (end_a, end_b)
    }

    /// A device.
    pub fn device(&self, i: IfIndex) -> &Device {
        &self.devs[i.idx()]
    }

    /// A namespace.
    pub fn netns(&self, i: NetnsId) -> &Netns {
        &self.netns[i.idx()]
    }
}

impl World {
    /// Who owns a namespace, as traces name it: `pod/NS/NAME`, `node/NAME`, or the
    /// namespace's own name (`vpc`, `host/internet`, `lb/default/api`).
    pub(crate) fn owner_name(&self, ns: NetnsId) -> String {
        match &self.netns[ns.idx()].owner {
            Owner::Pod(p) => self.pods[p.idx()].key(),
            Owner::Node(n) => format!("node/{}", self.nodes[n.idx()].name),
            _ => self.netns[ns.idx()].name.clone(),
        }
    }

    /// The route `ns` takes to `dst` (from `src`, for `ip rule` selectors), as `ip route get`
    /// finds it: the output device, the next hop (`dst` itself when on link), and the route's
    /// preferred source.
    pub(crate) fn route(
        &self,
        ns: NetnsId,
        src: Option<Ipv4Addr>,
        dst: Ipv4Addr,
    ) -> Option<(IfIndex, Ipv4Addr, Option<Ipv4Addr>)> {
        let n = &self.netns[ns.idx()];
        // Rule 0: `from all lookup local`. One of the host's own addresses is reached over
        // `lo`, from that address.
        if let Some(l) = n.local.lookup(dst)
            && l.kind == LocalKind::Local
        {
            return Some((n.devs[0], dst, Some(l.src)));
        }
        let r = n.policy.lookup(&n.routes, src, dst)?;
        Some((r.dev, r.via.unwrap_or(dst), r.src))
    }

    /// The node subnet holding `a`.
    pub(crate) fn subnet_of(&self, a: Ipv4Addr) -> Option<&VpcSubnet> {
        self.subnets.iter().find(|s| s.cidr.contains(a))
    }

    /// Whether `a` is an address of namespace `ns` (the kernel's local table).
    pub(crate) fn is_local(&self, ns: NetnsId, a: Ipv4Addr) -> bool {
        debug_assert_eq!(
            self.netns[ns.idx()].local,
            self.local_table_of(ns),
            "a device's addresses changed without World::set_addrs"
        );
        a.is_loopback() || self.netns[ns.idx()].local.is_local(a)
    }
}
