//! What the objects imply about the network underneath, for the settings a PodnetConfig
//! document does not give: the node subnets (from the Nodes' InternalIPs), the cluster CIDR
//! (from the Nodes' podCIDRs and the pod IPs), the Service CIDR (from the ClusterIPs) and
//! the NodePort range (from the nodePorts). Each inference is said in the load report, with
//! the PodnetConfig field that overrides it.
//!
//! The rules, so that a user can predict them:
//! - a default that already holds everything observed is kept (10.244.0.0/16 for pods,
//!   10.96.0.0/12 for Services, 30000-32767 for NodePorts, 192.168.0.0/24 for nodes);
//! - otherwise a range is the smallest CIDR holding every observed address (the NodePort
//!   range: the default widened to the observed ports);
//! - node subnets are a /24 around each InternalIP (nodes sharing a /24 share a subnet), each
//!   with the VPC router at its first host address, or its last when a node holds the first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::Objects;

/// The settings inferred, each with the sentence the load report carries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inferred {
    pub(crate) node_subnets: Option<(Vec<(Ipv4Network, Ipv4Addr)>, String)>,
    pub(crate) cluster_cidr: Option<(Ipv4Network, String)>,
    pub(crate) service_cidr: Option<(Ipv4Network, String)>,
    pub(crate) node_port_range: Option<((u16, u16), String)>,
}

/// The smallest CIDR holding every address of `addrs` (none for an empty list).
pub(crate) fn smallest_cidr(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Option<Ipv4Network> {
    let v: Vec<u32> = addrs.into_iter().map(u32::from).collect();
    let (lo, hi) = (*v.iter().min()?, *v.iter().max()?);
    let prefix = (lo ^ hi).leading_zeros().min(32) as u8;
    let net = Ipv4Network::new(Ipv4Addr::from(lo), prefix).expect("prefix <= 32");
    Some(Ipv4Network::new(net.network(), prefix).expect("prefix <= 32"))
}

fn names(v: &[String]) -> String {
    match v.len() {
        0..=3 => v.join(", "),
        n => format!("{}, … ({n} nodes)", v[..2].join(", ")),
    }
}

/// Infers what `objs` imply. `aws`: the AWS VPC CNI profile (its one subnet is the pods'
/// too, and is not inferred).
pub(crate) fn infer(objs: &Objects, aws: bool) -> Inferred {
    let mut out = Inferred::default();
    // Nodes: InternalIP and podCIDR, as the loader reads them (objects it cannot read are
    // reported by the loader, not here).
    let nodes: Vec<(String, Ipv4Addr, Option<Ipv4Network>)> = objs
        .nodes
        .iter()
        .filter_map(|(place, n)| super::node(place, n, false).ok().map(|s| (s, n)))
        .map(|(s, n)| {
            let cidr =
                n.spec.as_ref().and_then(|x| x.pod_cidr.as_deref()).and_then(|c| c.parse().ok());
            (s.name, s.ip, cidr)
        })
        .collect();
    let default_subnet: Ipv4Network = "192.168.0.0/24".parse().expect("literal");
    if !aws && !nodes.is_empty() && !nodes.iter().all(|n| default_subnet.contains(n.1)) {
        let mut by_net: BTreeMap<Ipv4Network, Vec<(String, Ipv4Addr)>> = BTreeMap::new();
        for (name, ip, _) in &nodes {
            let net = Ipv4Network::new(*ip, 24).expect("24");
            let net = Ipv4Network::new(net.network(), 24).expect("24");
            by_net.entry(net).or_default().push((name.clone(), *ip));
        }
        let mut subnets = Vec::new();
        let mut said = Vec::new();
        for (net, members) in by_net {
            let first = Ipv4Addr::from(u32::from(net.network()) + 1);
            let last = Ipv4Addr::from(u32::from(net.broadcast()) - 1);
            let router = if members.iter().any(|m| m.1 == first) { last } else { first };
            let who: Vec<String> = members.into_iter().map(|m| m.0).collect();
            said.push(format!("{net} (router {router}; {})", names(&who)));
            subnets.push((net, router));
        }
        let text = format!(
            "node subnets {} inferred from the Nodes' InternalIPs (a /24 around each); set nodeSubnets in PodnetConfig to override",
            said.join(", ")
        );
        out.node_subnets = Some((subnets, text));
    }
    // Pods: the podCIDRs and the addresses of pods on the pod network.
    let pod_ips: Vec<Ipv4Addr> = objs
        .pods
        .iter()
        .filter(|(_, p)| !p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false))
        .filter_map(|(_, p)| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
        .collect();
    if !aws {
        let observed: Vec<Ipv4Addr> = nodes
            .iter()
            .filter_map(|n| n.2)
            .flat_map(|c| [c.network(), c.broadcast()])
            .chain(pod_ips.iter().copied())
            .collect();
        let default: Ipv4Network = "10.244.0.0/16".parse().expect("literal");
        if !observed.iter().all(|a| default.contains(*a))
            && let Some(c) = smallest_cidr(observed)
        {
            let text = format!(
                "cluster CIDR {c} inferred from the Nodes' podCIDRs and the pod IPs (the smallest range holding them); set clusterCidr in PodnetConfig to override"
            );
            out.cluster_cidr = Some((c, text));
        }
    }
    // Services: ClusterIPs and nodePorts.
    let specs = objs.services.iter().filter_map(|(_, s)| s.spec.as_ref());
    let cluster_ips: Vec<Ipv4Addr> =
        specs.clone().filter_map(|s| s.cluster_ip.as_deref()?.parse().ok()).collect();
    let default: Ipv4Network = "10.96.0.0/12".parse().expect("literal");
    if !cluster_ips.iter().all(|a| default.contains(*a))
        && let Some(c) = smallest_cidr(cluster_ips.iter().copied())
    {
        let text = format!(
            "Service CIDR {c} inferred from the ClusterIPs (the smallest range holding them); set serviceCidr in PodnetConfig to override"
        );
        out.service_cidr = Some((c, text));
    }
    let ports: Vec<u16> = specs
        .flat_map(|s| s.ports.iter().flatten().filter_map(|p| p.node_port))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    let (lo, hi) = (
        ports.iter().copied().min().unwrap_or(30000).min(30000),
        ports.iter().copied().max().unwrap_or(32767).max(32767),
    );
    if (lo, hi) != (30000, 32767) {
        let text = format!(
            "NodePort range {lo}-{hi} inferred from the nodePorts (the default 30000-32767 widened to hold them); set serviceNodePortRange in PodnetConfig to override"
        );
        out.node_port_range = Some(((lo, hi), text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_cidr_holds_every_address() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            smallest_cidr([a("172.20.0.10"), a("172.20.12.40")]).unwrap().to_string(),
            "172.20.0.0/20"
        );
        assert_eq!(
            smallest_cidr([a("10.32.0.0"), a("10.32.1.255")]).unwrap().to_string(),
            "10.32.0.0/23"
        );
        assert_eq!(smallest_cidr([a("10.0.0.1")]).unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(smallest_cidr([a("1.0.0.0"), a("200.0.0.0")]).unwrap().to_string(), "0.0.0.0/0");
        assert!(smallest_cidr([]).is_none());
    }
}
