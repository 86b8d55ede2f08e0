//! The AWS VPC CNI plugin (amazon-vpc-cni-k8s) on its nodes: ENIs as devices, a routed veth
//! per pod, policy routing, and egress SNAT.
//!
//! - Each ENI ipamd attaches is a device (`eth0` the primary, `eth1`… secondary) on the VPC
//!   subnet; a secondary ENI's routes live in a table of its own (device index + 1), not in
//!   main.
//! - EC2 delivers every secondary address (and prefix address) to its ENI: the VPC router
//!   answers ARP for it and forwards to that ENI (permanent neighbour entries; the fabric's
//!   proxy ARP).
//! - A pod gets its address as a `/32` on `eth0`, a default route via 169.254.1.1 that a
//!   permanent neighbour entry resolves to the host side of its veth (`eni` + 11 hex digits
//!   of `sha1("NS.NAME")`), a host route on the node, `ip rule to POD lookup main` (512) and,
//!   on a secondary ENI, `ip rule from POD to VPC lookup <ENI table>` (1536; to everywhere
//!   with external SNAT).
//! - Egress: `AWS-SNAT-CHAIN-0` SNATs traffic leaving the VPC to the node's primary address,
//!   unless external SNAT is on.
//!
//! The address management itself (ipamd, instance limits, warm pools) is [`super::ipamd`].

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::datapath::Fabric;
use crate::error::ClusterError;
use crate::ids::{IfIndex, NetnsId, NodeId};
use crate::net::route::{MAIN_TABLE, PolicyRule, Route, RouteProto, RouteTable};
use crate::world::{DeviceKind, World};

use super::PodAddr;
use super::ipamd::{InstanceType, Ipamd, VpcSubnet, WarmTargets};

/// The pods' default gateway in the AWS profile: a dummy next hop that a permanent neighbour
/// entry resolves to the host side of the pod's veth (no ARP on the wire).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// `ip rule` priority of `to <pod IP> lookup main` (the plugin's `toContainerRulePriority`).
pub const TO_POD_PRIORITY: u32 = 512;
/// `ip rule` priority of `from <pod IP> lookup <ENI table>` (`fromContainerRulePriority`).
pub const FROM_POD_PRIORITY: u32 = 1536;

/// How a trace explains the VPC answering ARP for a pod address: EC2 delivers every ENI
/// secondary address (and prefix address) to its ENI itself.
const ENI_SECONDARY: &str = "an ENI secondary address, delivered by the VPC";

/// Settings of the AWS VPC CNI profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsVpcConfig {
    /// Every node's instance type (`m5.large`).
    pub instance_type: String,
    /// ipamd's warm-pool settings.
    pub targets: WarmTargets,
    /// `AWS_VPC_K8S_CNI_EXTERNALSNAT`: no SNAT on the node; pods on secondary ENIs leave
    /// through their own ENI for every destination.
    pub external_snat: bool,
    /// kubelet `--max-pods` (`None`: the EKS figure for the instance type).
    pub max_pods: Option<u32>,
}

impl Default for AwsVpcConfig {
    fn default() -> Self {
        AwsVpcConfig {
            instance_type: "m5.large".into(),
            targets: WarmTargets::default(),
            external_snat: false,
            max_pods: None,
        }
    }
}

/// A node's ENIs.
#[derive(Clone, Debug)]
pub(crate) struct NodeEnis {
    /// The node's ipamd.
    pub(crate) ipamd: Ipamd,
    /// The device of each ENI (`eth0`, `eth1`, …), in [`Ipamd::enis`] order.
    pub(crate) devices: Vec<IfIndex>,
    /// Host-network pods that count against max pods but take no pod IP.
    pub(crate) host_network_pods: Vec<String>,
}

/// The plugin's state: its settings, EC2's address book of the subnet, each node's ENIs.
#[derive(Clone, Debug)]
pub(crate) struct AwsVpc {
    /// The settings.
    pub(crate) cfg: AwsVpcConfig,
    /// The subnet's addresses.
    pub(crate) subnet: VpcSubnet,
    /// Each node's ENIs, by node index.
    nodes: Vec<Option<NodeEnis>>,
}

/// The host-side veth name the plugin gives a pod: `eni` and 11 hex digits of
/// `sha1("<namespace>.<name>")`.
pub fn host_veth_name(namespace: &str, name: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{namespace}.{name}")).digest().to_string();
    format!("eni{}", &digest[..11])
}

impl AwsVpc {
    /// The plugin's state for a VPC subnet (a /16 to /28) and its router's address (the
    /// subnet's `.1`, as in AWS).
    pub(crate) fn new(
        cfg: AwsVpcConfig,
        subnet: Ipv4Network,
    ) -> Result<(AwsVpc, Ipv4Addr), ClusterError> {
        InstanceType::lookup(&cfg.instance_type)?;
        let subnet = VpcSubnet::new(subnet)?;
        let router = subnet.router();
        Ok((AwsVpc { cfg, subnet, nodes: Vec::new() }, router))
    }

    /// The instance type's max-pods figure (EKS's, or the configured `--max-pods`).
    pub(crate) fn max_pods(&self) -> Result<u32, ClusterError> {
        let itype = InstanceType::lookup(&self.cfg.instance_type)?;
        Ok(self.cfg.max_pods.unwrap_or(itype.max_pods(self.cfg.targets.prefix_delegation)))
    }

    /// A new instance's ipamd, with `ip` its primary address (taken from the subnet), before
    /// the node exists: it fails when the subnet has no room.
    pub(crate) fn ipamd_for(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        now: smoltcp::time::Instant,
    ) -> Result<Ipamd, ClusterError> {
        let itype = *InstanceType::lookup(&self.cfg.instance_type)?;
        Ok(Ipamd::new(name, &itype, self.cfg.targets.clone(), ip, &mut self.subnet, now)?)
    }

    /// Sets up `node`'s pod network with its ipamd: ipamd fills the warm pool (attaching
    /// ENIs as `eth1`, … with their own route tables), and EC2 delivers the ENIs' secondary
    /// addresses in the VPC.
    pub(crate) fn add_node(
        &mut self,
        w: &mut World,
        fabric: &mut Fabric,
        node: NodeId,
        ipamd: Ipamd,
    ) {
        if self.nodes.len() <= node.idx() {
            self.nodes.resize(node.idx() + 1, None);
        }
        self.nodes[node.idx()] = Some(NodeEnis {
            ipamd,
            devices: vec![w.nodes[node.idx()].eth0],
            host_network_pods: vec!["kube-system/aws-node".into(), "kube-system/kube-proxy".into()],
        });
        self.sync_enis(w, fabric, node);
    }

    /// `node`'s ENIs.
    pub(crate) fn node(&self, node: NodeId) -> Option<&NodeEnis> {
        self.nodes.get(node.idx()).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, node: NodeId) -> &mut NodeEnis {
        self.nodes
            .get_mut(node.idx())
            .and_then(Option::as_mut)
            .expect("an AWS-profile node has its ENIs")
    }

    /// The pod count kubelet's max-pods admission weighs on `node`, and what it is made of.
    pub(crate) fn pods_counted(&self, w: &World, node: NodeId) -> (usize, String) {
        let n = &w.nodes[node.idx()];
        let with_ips = n.pods.iter().filter(|p| !w.pods[p.idx()].host_network).count();
        let Some(st) = self.node(node) else { return (n.pods.len(), String::new()) };
        let running = n.pods.len() + st.host_network_pods.len();
        let t = &st.ipamd.itype;
        let why = format!(
            "{with_ips} pods with IPs and {} host-network pods; {} allows {} ENIs × {} addresses",
            running - with_ips,
            t.name,
            t.max_enis,
            t.ips_per_eni
        );
        (running, why)
    }

    /// Makes the model follow ipamd: a device and route table per attached ENI, and EC2's
    /// delivery of every secondary address to its ENI (permanent neighbour entries in the
    /// VPC router, which answers ARP for them: the VPC routes pod IPs natively).
    fn sync_enis(&mut self, w: &mut World, fabric: &mut Fabric, node: NodeId) {
        let state = self.node(node).expect("an AWS-profile node").clone();
        let ns = w.nodes[node.idx()].netns;
        let subnet = self.subnet.cidr();
        let router = self.subnet.router();
        let mut devices = state.devices.clone();
        for (i, eni) in state.ipamd.enis.iter().enumerate().skip(devices.len()) {
            let dev = w.add_device(ns, &eni.device, DeviceKind::Ether { segment: w.vpc_subnet });
            // The plugin keeps a secondary ENI's routes out of main: table <device index + 1>
            // (so the address is set without the connected route `add_addr` would add).
            w.set_addrs(
                dev,
                vec![Ipv4Network::new(eni.primary_ip, subnet.prefix()).expect("valid")],
            );
            let mut table = RouteTable::default();
            table.add(Route {
                dst: Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("default"),
                via: Some(router),
                dev,
                src: None,
                proto: RouteProto::Boot,
            });
            table.add(Route {
                dst: subnet,
                via: None,
                dev,
                src: Some(eni.primary_ip),
                proto: RouteProto::Kernel,
            });
            w.netns[ns.idx()].policy.tables.insert(i as u32 + 1, table);
            devices.push(dev);
        }
        let vpc = w.vpc;
        let vpc0 = w.netns[vpc.idx()].devs[1];
        for (eni, dev) in state.ipamd.enis.iter().zip(&devices) {
            let mac = w.devs[dev.idx()].mac;
            for a in eni.pod_ips() {
                w.netns[vpc.idx()].neigh.add_permanent(a, mac, vpc0);
                // The VPC's router answers ARP for it and forwards to the ENI that holds it.
                fabric.proxy_arp_mut(vpc, Some(ENI_SECONDARY)).addrs.insert(a);
            }
        }
        self.node_mut(node).devices = devices;
    }

    /// The IPAM of a pod's ADD: an address from ipamd (which may attach an ENI first), or
    /// the address an imported pod already has.
    pub(crate) fn allocate(
        &mut self,
        w: &mut World,
        fabric: &mut Fabric,
        node: NodeId,
        pod: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<PodAddr, ClusterError> {
        let now = w.now;
        let st = self.nodes.get_mut(node.idx()).and_then(Option::as_mut).expect("an AWS node");
        let (ip, eni) = match requested {
            None => st.ipamd.assign(pod, &mut self.subnet, now).map_err(|e| {
                ClusterError::FailedToAssign { pod: pod.into(), reason: e.to_string() }
            })?,
            Some(ip) => st.ipamd.assign_exact(pod, ip, &mut self.subnet, now).map_err(|why| {
                ClusterError::AddressTaken {
                    addr: ip,
                    why: format!("pod {pod} cannot have it: {why}"),
                }
            })?,
        };
        self.sync_enis(w, fabric, node);
        Ok(PodAddr { ip, eni })
    }

    /// The plugin's wiring of a pod: the routed veth (`eth0` in the pod, `eni…` on the
    /// node), `/32` on `eth0`, the default route via 169.254.1.1 with its permanent
    /// neighbour entry, the node's host route to the pod and the `ip rule`s that send a
    /// secondary ENI's pods out of it.
    pub(crate) fn add(
        &self,
        w: &mut World,
        node: NodeId,
        pod_ns: NetnsId,
        (namespace, name): (&str, &str),
        addr: PodAddr,
    ) -> (IfIndex, IfIndex) {
        let node_ns = w.nodes[node.idx()].netns;
        let (eth0, host) =
            w.add_veth_pair(pod_ns, "eth0", node_ns, &host_veth_name(namespace, name));
        let ip = addr.ip;
        let host_mac = w.devs[host.idx()].mac;
        w.add_addr(eth0, Ipv4Network::new(ip, 32).expect("/32"));
        w.netns[pod_ns.idx()].routes.add(Route {
            dst: Ipv4Network::new(POD_GATEWAY, 32).expect("/32"),
            via: None,
            dev: eth0,
            src: None,
            proto: RouteProto::Boot,
        });
        w.add_default_route(pod_ns, POD_GATEWAY, eth0);
        w.netns[pod_ns.idx()].neigh.add_permanent(POD_GATEWAY, host_mac, eth0);
        let host_route = Ipv4Network::new(ip, 32).expect("/32");
        let n = &mut w.netns[node_ns.idx()];
        n.routes.add(Route {
            dst: host_route,
            via: None,
            dev: host,
            src: None,
            proto: RouteProto::Boot,
        });
        n.policy.add_rule(PolicyRule {
            priority: TO_POD_PRIORITY,
            from: None,
            to: Some(host_route),
            table: MAIN_TABLE,
        });
        if addr.eni > 0 {
            n.policy.add_rule(PolicyRule {
                priority: FROM_POD_PRIORITY,
                from: Some(host_route),
                to: (!self.cfg.external_snat).then_some(self.subnet.cidr()),
                table: addr.eni as u32 + 1,
            });
        }
        (eth0, host)
    }

    /// DEL: the pod's routes and rules go, its address cools down in ipamd.
    pub(crate) fn del(&mut self, w: &mut World, node: NodeId, ip: Ipv4Addr) {
        let now = w.now;
        let node_ns = w.nodes[node.idx()].netns;
        let n = &mut w.netns[node_ns.idx()];
        n.routes.remove(Ipv4Network::new(ip, 32).expect("/32"));
        n.policy.remove_rules_for(ip);
        self.node_mut(node).ipamd.release(ip, now);
    }

    /// The egress SNAT on a node (`AWS-SNAT-CHAIN-0`): traffic to destinations outside the
    /// VPC leaves with the node's primary address, unless external SNAT is on.
    pub(crate) fn snat_rules(&self, node_ip: Ipv4Addr) -> String {
        if self.cfg.external_snat {
            return String::new();
        }
        format!(
            "*nat\n:AWS-SNAT-CHAIN-0 - [0:0]\n\
-A POSTROUTING -m comment --comment \"AWS SNAT CHAIN\" -j AWS-SNAT-CHAIN-0\n\
-A AWS-SNAT-CHAIN-0 -d {} -m comment --comment \"AWS SNAT CHAIN\" -j RETURN\n\
-A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment \"AWS, SNAT\" -m addrtype ! --dst-type LOCAL -j SNAT --to-source {node_ip} --random-fully\n\
COMMIT\n",
            self.subnet.cidr()
        )
    }

    /// ipamd's view of a node: ENIs with their addresses and which pod holds each.
    pub(crate) fn enis(&self, w: &World, node: NodeId) -> String {
        let Some(st) = self.node(node) else { return String::new() };
        let d = &st.ipamd;
        let n = &w.nodes[node.idx()];
        let mut out = format!(
            "{} {}: {} of {} ENIs, {} pod IPs attached, {} assigned, max pods {}\n",
            n.name,
            d.itype.name,
            d.enis.len(),
            d.itype.max_enis,
            d.total(),
            d.assigned(),
            n.max_pods
        );
        for e in &d.enis {
            out.push_str(&format!("{} {} primary {}\n", e.device, e.id, e.primary_ip));
            for p in &e.prefixes {
                out.push_str(&format!("  prefix {p}\n"));
            }
            for a in e.pod_ips() {
                if let Some(pod) = d.owner(a) {
                    out.push_str(&format!("  {a} {pod}\n"));
                } else if e.prefixes.is_empty() {
                    out.push_str(&format!("  {a} -\n"));
                }
            }
        }
        out
    }
}
