//! The reference CNI bridge plugin with host-local IPAM, as kubeadm clusters with the
//! `bridge` plugin run it: the node's pod CIDR on the bridge `cbr0` (its first address the
//! pods' gateway), the VPC routing the pod CIDR to the node, and per pod a veth pair with
//! `eth0` in the pod and `vethN` on the bridge (`hairpin_mode` on), the pod's address from
//! host-local (round robin after the last address handed out).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::error::ClusterError;
use crate::ids::{IfIndex, NetnsId, NodeId};
use crate::ipam::HostLocal;
use crate::net::fdb::Fdb;
use crate::net::route::{Route, RouteProto};
use crate::world::{DeviceKind, World};

/// The plugin's state: each node's host-local pool, by node index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bridge {
    host_local: Vec<Option<HostLocal>>,
}

impl Bridge {
    /// Sets up `node`'s pod network: `cbr0` with the pod CIDR's first address, and the VPC
    /// router's route for the pod CIDR via the node's address.
    pub(crate) fn add_node(&mut self, w: &mut World, node: NodeId, pod_cidr: Ipv4Network) {
        let (ns, ip) = (w.nodes[node.idx()].netns, w.nodes[node.idx()].ip);
        let br = w.add_device(ns, "cbr0", DeviceKind::Bridge(Fdb::default()));
        let gw = Ipv4Addr::from(u32::from(pod_cidr.network()) + 1);
        w.add_addr(br, Ipv4Network::new(gw, pod_cidr.prefix()).expect("valid"));
        let br_mac = w.devs[br.idx()].mac;
        if let DeviceKind::Bridge(f) = &mut w.devs[br.idx()].kind {
            f.add_local(br_mac, br);
        }
        w.nodes[node.idx()].bridge = Some(br);
        // The VPC router reaches the node on the node's own subnet.
        let vpc0 = w.subnet_of(ip).unwrap_or(&w.subnets[0]).router_dev;
        let vpc = w.vpc;
        w.netns[vpc.idx()].routes.add(Route {
            dst: pod_cidr,
            via: Some(ip),
            dev: vpc0,
            src: None,
            proto: RouteProto::Static,
        });
        if self.host_local.len() <= node.idx() {
            self.host_local.resize(node.idx() + 1, None);
        }
        self.host_local[node.idx()] = Some(HostLocal::new(pod_cidr));
    }

    /// host-local IPAM: a requested address is reserved, otherwise the next one round robin
    /// after the last reserved.
    pub(crate) fn allocate(
        &mut self,
        w: &World,
        node: NodeId,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, ClusterError> {
        let cidr = w.nodes[node.idx()].pod_cidr;
        let ipam = self.pool(node);
        Ok(match requested {
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

    /// ADD: the veth pair (`eth0` in the pod, `vethN` on `cbr0` with `hairpin_mode` on),
    /// the pod's address and its default route via the bridge.
    pub(crate) fn add(
        w: &mut World,
        node: NodeId,
        pod_ns: NetnsId,
        ip: Ipv4Addr,
    ) -> (IfIndex, IfIndex) {
        let n = &w.nodes[node.idx()];
        let (node_ns, cidr, br) = (n.netns, n.pod_cidr, n.bridge.expect("a bridge node has cbr0"));
        let veth_name = format!("veth{}", n.pods.len());
        let (eth0, host) = w.add_veth_pair(pod_ns, "eth0", node_ns, &veth_name);
        w.devs[host.idx()].master = Some(br);
        w.devs[host.idx()].hairpin = true;
        let host_mac = w.devs[host.idx()].mac;
        if let DeviceKind::Bridge(f) = &mut w.devs[br.idx()].kind {
            f.add_local(host_mac, host);
        }
        w.add_addr(eth0, Ipv4Network::new(ip, cidr.prefix()).expect("valid"));
        let gw = Ipv4Addr::from(u32::from(cidr.network()) + 1);
        w.add_default_route(pod_ns, gw, eth0);
        (eth0, host)
    }

    /// DEL: the veth leaves the bridge, host-local releases the address.
    pub(crate) fn del(&mut self, w: &mut World, node: NodeId, ip: Ipv4Addr, host_veth: IfIndex) {
        w.devs[host_veth.idx()].master = None;
        self.pool(node).release(ip);
    }

    fn pool(&mut self, node: NodeId) -> &mut HostLocal {
        self.host_local
            .get_mut(node.idx())
            .and_then(Option::as_mut)
            .expect("a bridge-profile node has a host-local pool")
    }
}
