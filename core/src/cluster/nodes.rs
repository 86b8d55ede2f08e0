//! The façade's nodes and pods: what the cloud, kubelet and the CNI do when a node joins or
//! a pod is created or deleted.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Proto;

use crate::error::ClusterError;
use crate::ids::{NodeId, PodId};
use crate::world::{Container, Node, Owner, Pod};

use super::Cluster;

impl Cluster {
    /// Adds a node with its root namespace, `eth0` on the VPC subnet, `cbr0` with the pod
    /// CIDR's first address, and the VPC route for its pod CIDR.
    pub fn add_node(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        pod_cidr: Ipv4Network,
    ) -> Result<NodeId, ClusterError> {
        if self.cni.bridge_mut().is_none() {
            return Err(ClusterError::Profile {
                what: format!("add_node({name}) with a pod CIDR"),
                profile: "AWS VPC CNI",
                fix: "add nodes with add_aws_node: pods take ENI addresses, not a pod CIDR",
            });
        }
        if self.world.node_names.contains_key(name) {
            return Err(ClusterError::Duplicate { kind: "node", name: name.into() });
        }
        let Some(sn) = self.world.subnet_of(ip) else {
            return Err(ClusterError::NoNodeSubnet {
                node: name.into(),
                addr: ip,
                subnets: self.world.subnets.iter().map(|s| s.cidr.to_string()).collect(),
            });
        };
        let subnet = sn.cidr;
        if ip == sn.router
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
                why: format!(
                    "is not inside the cluster CIDR {cc}: set clusterCidr in PodnetConfig to a range holding every node's podCIDR"
                ),
            });
        }
        if let Some(other) = self.world.nodes.iter().find(|n| n.pod_cidr.overlaps(pod_cidr)) {
            return Err(ClusterError::BadPodCidr {
                node: name.into(),
                cidr: pod_cidr,
                why: format!("overlaps node '{}' ({})", other.name, other.pod_cidr),
            });
        }
        let id = self.join_node(name, ip, pod_cidr, 110);
        let bridge = self.cni.bridge_mut().expect("checked above");
        bridge.add_node(&mut self.world, id, pod_cidr);
        Ok(id)
    }

    /// Gives a node another address on `eth0` (a second InternalIP, an ExternalIP): with its
    /// subnet's prefix when it is in a node subnet, else as a /32 the VPC router sends to
    /// the node. It is LOCAL to the node (kube-proxy's `addrtype`) and a NodePort target.
    pub fn add_node_address(&mut self, node: NodeId, ip: Ipv4Addr) -> Result<(), ClusterError> {
        let n = &self.world.nodes[node.idx()];
        let (eth0, primary, name) = (n.eth0, n.ip, n.name.clone());
        let taken = self
            .world
            .nodes
            .iter()
            .any(|m| self.world.devs[m.eth0.idx()].addrs.iter().any(|a| a.ip() == ip))
            || self.world.subnets.iter().any(|s| s.router == ip);
        if taken {
            return Err(ClusterError::AddressTaken {
                addr: ip,
                why: format!("node '{name}' cannot take it: a node or the VPC router has it"),
            });
        }
        let prefix = self.world.subnet_of(ip).map_or(32, |s| s.cidr.prefix());
        let mut addrs = self.world.devs[eth0.idx()].addrs.clone();
        addrs.push(Ipv4Network::new(ip, prefix).expect("valid"));
        self.world.set_addrs(eth0, addrs);
        if prefix == 32 {
            let vpc = self.world.vpc;
            let dev = self.world.subnet_of(primary).unwrap_or(&self.world.subnets[0]).router_dev;
            self.world.netns[vpc.idx()].routes.add(crate::net::route::Route {
                dst: Ipv4Network::new(ip, 32).expect("/32"),
                via: Some(primary),
                dev,
                src: None,
                proto: crate::net::route::RouteProto::Static,
            });
        }
        self.services_changed();
        Ok(())
    }

    /// Adds a node in the AWS VPC CNI profile: its root namespace with `eth0` (the primary
    /// ENI, `ip` its primary address), ipamd, which fills the warm pool (attaching ENIs as
    /// `eth1`, … with their own route tables), and EC2's delivery of the ENIs' secondary
    /// addresses in the VPC.
    pub fn add_aws_node(&mut self, name: &str, ip: Ipv4Addr) -> Result<NodeId, ClusterError> {
        let now = self.world.now;
        let Some(aws) = self.cni.aws_mut() else {
            return Err(ClusterError::Profile {
                what: format!("add_aws_node({name})"),
                profile: "bridge",
                fix: "add nodes with add_node and a pod CIDR, or create the cluster with the AWS VPC CNI profile",
            });
        };
        if self.world.node_names.contains_key(name) {
            return Err(ClusterError::Duplicate { kind: "node", name: name.into() });
        }
        let max_pods = aws.max_pods()?;
        let ipamd = aws.ipamd_for(name, ip, now)?;
        let subnet = aws.subnet.cidr();
        let id = self.join_node(name, ip, subnet, max_pods);
        let aws = self.cni.aws_mut().expect("checked above");
        aws.add_node(&mut self.world, &mut self.fabric, id, ipamd);
        Ok(id)
    }

    /// A node joining its VPC subnet: its root namespace (forwarding, bridge netfilter on,
    /// its own netfilter), `eth0` with its address, and the default route via the VPC
    /// router. The CNI sets up its pod network next.
    fn join_node(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        pod_cidr: Ipv4Network,
        max_pods: u32,
    ) -> NodeId {
        let sn = self.world.subnet_of(ip).unwrap_or(&self.world.subnets[0]);
        let (prefix, router, segment) = (sn.cidr.prefix(), sn.router, sn.segment);
        let nf_seed = self.cfg.seed.wrapping_add(self.world.nodes.len() as u64 * 7919);
        let addr = Ipv4Network::new(ip, prefix).expect("valid");
        let id = self.world.add_node(name, addr, pod_cidr, max_pods, nf_seed, segment);
        let (ns, eth0) = (self.world.nodes[id.idx()].netns, self.world.nodes[id.idx()].eth0);
        self.world.add_default_route(ns, router, eth0);
        id
    }

    /// Adds a pod: its namespace, the CNI's ADD (the veth pair into `cbr0`, its address and
    /// default route via the bridge; or the AWS VPC CNI's routed veth), and its containers'
    /// ports. Without `ip`, the CNI's IPAM picks the address.
    pub fn add_pod(
        &mut self,
        namespace: &str,
        name: &str,
        node: NodeId,
        ip: Option<Ipv4Addr>,
        labels: BTreeMap<String, String>,
        containers: Vec<Container>,
    ) -> Result<PodId, ClusterError> {
        self.new_pod_node(namespace, name, node)?;
        // Validate container ports before taking an address.
        let mut ports: BTreeMap<(Proto, u16), String> = BTreeMap::new();
        let pod_key = format!("pod/{namespace}/{name}");
        for c in &containers {
            for &(proto, port) in &c.ports {
                if let Some(owner) = ports.get(&(proto, port)) {
                    return Err(ClusterError::AddrInUse {
                        netns: pod_key,
                        proto,
                        port,
                        container: c.name.clone(),
                        owner: owner.clone(),
                    });
                }
                ports.insert((proto, port), c.name.clone());
            }
        }
        self.cni.check_request(&format!("{namespace}/{name}"), ip)?;
        self.admit_max_pods(node, &pod_key)?;
        let addr = self.cni.allocate(&mut self.world, &mut self.fabric, node, &pod_key, ip)?;
        let id = PodId(self.world.pods.len() as u32);
        let ns = self.world.add_netns(&pod_key, Owner::Pod(id), self.cni.routed_pods());
        self.world.netns[ns.idx()].ports = ports;
        let (eth0, host) = self.cni.add(&mut self.world, node, ns, (namespace, name), addr);
        self.world.pods.push(Pod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            ip: addr.ip,
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
        self.register_pod(id);
        Ok(id)
    }

    /// The node a new pod goes to, once its name is known to be free.
    fn new_pod_node(
        &self,
        namespace: &str,
        name: &str,
        node: NodeId,
    ) -> Result<&Node, ClusterError> {
        if self.world.pod_named(namespace, name).is_some() {
            return Err(ClusterError::Duplicate {
                kind: "pod",
                name: format!("{namespace}/{name}"),
            });
        }
        self.world.nodes.get(node.idx()).ok_or_else(|| ClusterError::NotFound {
            kind: "node",
            name: format!("#{}", node.0),
            known: Vec::new(),
            fix: None,
        })
    }

    /// kubelet's admission: a node runs at most `--max-pods` pods (host-network ones
    /// included; in the AWS profile the plugin's own `aws-node` and `kube-proxy` count too).
    pub(crate) fn admit_max_pods(&self, node: NodeId, pod: &str) -> Result<(), ClusterError> {
        let n = &self.world.nodes[node.idx()];
        let (running, why) = self.cni.pods_counted(&self.world, node);
        if running as u32 >= n.max_pods {
            return Err(ClusterError::TooManyPods {
                pod: pod.into(),
                node: n.name.clone(),
                running,
                max: n.max_pods,
                why,
            });
        }
        Ok(())
    }

    /// Sets a node's `--max-pods` (its `pods` capacity; kubelet's default is 110).
    pub fn set_max_pods(&mut self, node: &str, max: u32) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        self.world.nodes[id.idx()].max_pods = max;
        Ok(())
    }

    /// Files a pod pushed to the arena under its node and name; kube-proxy re-syncs.
    fn register_pod(&mut self, id: PodId) {
        let p = &self.world.pods[id.idx()];
        let (node, key) = (p.node, (p.namespace.clone(), p.name.clone()));
        self.world.nodes[node.idx()].pods.push(id);
        self.world.pod_names.insert(key, id);
        self.policy.pod_changed(&self.world, id);
        self.services_changed();
    }

    /// Deletes a pod (`pod/NS/NAME`): the CNI's DEL (its veth leaves the node, its address
    /// goes back to the pool), its endpoints disappear and kube-proxy re-syncs every node.
    pub fn delete_pod(&mut self, key: &str) -> Result<(), ClusterError> {
        let id = self.pod_id(key)?;
        let (ns_name, name, node, ip, host, netns) = {
            let p = &self.world.pods[id.idx()];
            (p.namespace.clone(), p.name.clone(), p.node, p.ip, p.host_veth, p.netns)
        };
        self.world.pod_names.shift_remove(&(ns_name, name));
        self.world.pods[id.idx()].deleted = true;
        self.world.pods[id.idx()].ready = false;
        self.hosts.reset(netns);
        if self.world.pods[id.idx()].host_network {
            // Its processes leave the node's namespace: their ports close.
            let p = &self.world.pods[id.idx()];
            let owners: Vec<String> = p
                .containers
                .iter()
                .map(|c| format!("pod/{}/{}/{}", p.namespace, p.name, c.name))
                .collect();
            self.world.netns[netns.idx()].ports.retain(|_, who| !owners.contains(who));
        } else {
            self.cni.del(&mut self.world, node, ip, host);
        }
        self.world.nodes[node.idx()].pods.retain(|p| *p != id);
        self.policy.pod_changed(&self.world, id);
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
        self.register_pod(id);
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
}
