//! The cloud edge, after an AWS VPC as the seed article describes it:
//!
//! - an **internet gateway** (its own namespace `igw`) doing 1:1 NAT between each node's
//!   (and each load balancer's) private address and its public one, with netfilter rules
//!   (`DNAT` in PREROUTING, `SNAT` in POSTROUTING) so every rewrite is traced like any other;
//! - a **NAT gateway** (namespace `natgw`) for nodes without a public address: the VPC
//!   router sends their internet-bound traffic to it (policy rules, table 200) and it
//!   translates many-to-one before the internet gateway maps its own address;
//! - **hosts on the internet** (`host/NAME`, smoltcp stacks serving TCP and UDP 80);
//! - **node egress masquerade** as ip-masq-agent programs it: traffic leaving for anything
//!   outside the non-masquerade CIDRs (the cluster CIDR and the VPC CIDR) is masqueraded to
//!   the node's address;
//! - **cloud L4 load balancers** for LoadBalancer Services, in three models ([`LbMode`]):
//!   AWS instance mode as a full proxy (the LB picks a node per flow, seeded, and sends to
//!   `nodeIP:nodePort` from its private address); an NLB with client-IP preservation (the
//!   node sees the client, and the VPC hands the node's replies back to the LB); and the LB
//!   IP passed through to the nodes (GCP, MetalLB), where kube-proxy's own LB-IP rules
//!   apply and replies go straight back from the node;
//! - **health checks**: with externalTrafficPolicy Local the LB sends only to nodes whose
//!   kube-proxy health-check server (`healthCheckNodePort`) answers 200, and
//!   loadBalancerSourceRanges are the LB's security group in the AWS models (kube-proxy's
//!   `KUBE-FW` chains and `KUBE-PROXY-FIREWALL` enforce them in the pass-through model).
//!
//! Differences from AWS, on purpose: the L4 load balancer is modelled as a NAT hop (DNAT to
//! the node, SNAT to its private address) rather than a TCP-terminating proxy; addresses,
//! ports and the path are what a full proxy shows, but the TCP handshake runs end to end.
//! The LB's health verdict is computed from the same state the node's health-check server
//! answers from; the probes themselves are not sent on the wire (any trace can send one).
//!
//! | module | models |
//! |---|---|
//! | `gateway` | the internet gateway, hosts on the internet, the NAT gateway |
//! | `lb` | cloud L4 load balancers, their health checks and security groups |
//! | [`ingress`] | the Ingress object, ALBs, in-cluster Ingress controllers |
//!
//! The edge's state is [`Edge`]; its methods take the parts of the cluster they change
//! (the world, the host stacks' L7 configuration, the fabric) and read (Services, slices).

mod gateway;
pub mod ingress;
mod lb;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::host::l7::AlbRule;
use crate::ids::NetnsId;

pub use ingress::{Ingress, IngressPath, IngressRule, IngressTls, PathType};

/// The link between the VPC router and the internet gateway.
const LINK_VPC: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 1);
const LINK_IGW: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 2);

/// How a cloud L4 load balancer hands a flow to a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum LbMode {
    /// AWS instance mode as a full proxy (a CLB, or an NLB with client-IP preservation
    /// off): the LB sends to `nodeIP:nodePort` from its own private address.
    #[default]
    Proxy,
    /// NLB with client-IP preservation: the LB sends to `nodeIP:nodePort` keeping the
    /// client's address; the VPC returns the node's replies to the LB, which restores its
    /// own address as their source.
    PreserveClientIp,
    /// The LB IP passed through to the nodes (a GCP network LB, MetalLB): the Service's
    /// `status.loadBalancer.ingress` holds the public IP, the LB forwards each flow
    /// unchanged to a node (flow hash), kube-proxy's own LB-IP rules (`KUBE-EXT`,
    /// `KUBE-FW`, loadBalancerSourceRanges) take it from there, and replies leave the node
    /// straight to the client from the LB IP (direct server return).
    PassThrough,
}

/// A cloud L4 load balancer in front of a Service's node ports.
#[derive(Clone, Debug)]
pub struct CloudLb {
    /// The Service (`NS/NAME`).
    pub service: String,
    /// Public address (through the internet gateway).
    pub public_ip: Ipv4Addr,
    /// Private address in the VPC subnet.
    pub private_ip: Ipv4Addr,
    /// Its namespace.
    pub netns: NetnsId,
    /// How it hands flows to nodes.
    pub mode: LbMode,
    /// The nodes it sends to: those passing the health check (`healthCheckNodePort` for
    /// externalTrafficPolicy Local), or all of them when none passes (AWS fails open).
    pub targets: Vec<Ipv4Addr>,
}

/// An Application Load Balancer for an Ingress (target type instance).
#[derive(Clone, Debug)]
pub struct Alb {
    /// The Ingress (`NS/NAME`).
    pub ingress: Ingress,
    /// Public address.
    pub public_ip: Ipv4Addr,
    /// Private address in the VPC subnet.
    pub private_ip: Ipv4Addr,
    /// Its namespace.
    pub netns: NetnsId,
    /// Listener rules on port 80, ordered, with their targets.
    pub rules: Vec<AlbRule>,
}

/// An in-cluster Ingress controller (ingress-nginx style): a pod that terminates HTTP on
/// `port`, picks a rule of the Ingresses of its class by the Kubernetes matching rules and
/// proxies to the backend Service's ready endpoints (pod IP and target port, round robin)
/// over its own connection. Put a LoadBalancer Service with a cloud load balancer in front
/// of the pod to reach it from outside.
#[derive(Clone, Debug)]
pub struct IngressController {
    /// The controller pod (`NS/NAME`).
    pub pod: String,
    /// The IngressClass it serves. Ingresses without a class go to the first controller.
    pub class: String,
    /// The port it listens on.
    pub port: u16,
    /// Its rules, from every Ingress of its class, with the endpoints behind each.
    pub rules: Vec<AlbRule>,
    /// The first default backend among those Ingresses.
    pub default_backend: Option<AlbRule>,
}

/// The edge's state.
#[derive(Clone, Debug, Default)]
pub struct Edge {
    /// ALBs for Ingresses.
    pub albs: Vec<Alb>,
    /// Ingresses for in-cluster controllers.
    pub ingresses: Vec<Ingress>,
    /// In-cluster Ingress controllers.
    pub controllers: Vec<IngressController>,
    /// The internet gateway's namespace.
    pub igw: Option<NetnsId>,
    /// Public address of each node, by node name.
    pub public_ips: BTreeMap<String, Ipv4Addr>,
    /// Load balancers.
    pub lbs: Vec<CloudLb>,
    /// The internet segment's subnet.
    pub internet: Option<Ipv4Network>,
    /// A NAT gateway for nodes without a public address.
    pub nat_gateway: Option<NatGateway>,
}

impl Edge {
    /// Whether a node, a load balancer, an ALB or the NAT gateway already has `ip`.
    fn public_ip_taken(&self, ip: Ipv4Addr) -> bool {
        self.lbs.iter().any(|l| l.public_ip == ip)
            || self.albs.iter().any(|a| a.public_ip == ip)
            || self.public_ips.values().any(|p| *p == ip)
            || self.nat_gateway.as_ref().is_some_and(|g| g.public_ip == ip)
    }
}

/// An AWS NAT gateway: a namespace in the VPC subnet that translates many-to-one (SNAT to
/// its private address, ports 1024-65535), published as its public address by the internet
/// gateway. The VPC router sends internet-bound traffic from addresses without a public IP
/// of their own (nodes, and pods under external SNAT) to it, as a private subnet's route
/// table `0.0.0.0/0 → nat-gateway` does.
#[derive(Clone, Debug)]
pub struct NatGateway {
    /// Public address.
    pub public_ip: Ipv4Addr,
    /// Private address in the VPC subnet.
    pub private_ip: Ipv4Addr,
    /// Its namespace (`natgw`).
    pub netns: NetnsId,
}

/// The VPC router's policy-rule priorities for NAT gateway routing, and its table.
const NATGW_RULES: std::ops::RangeInclusive<u32> = 1000..=1200;
const NATGW_TABLE: u32 = 200;

/// What the edge needs to know of the VPC: its subnet, its router's address, the cluster
/// CIDR routed inside it, and the seed its random choices come from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vpc {
    /// The VPC subnet the nodes live in.
    pub(crate) subnet: Ipv4Network,
    /// The VPC router's address in it.
    pub(crate) router: Ipv4Addr,
    /// The cluster CIDR pods come from.
    pub(crate) cluster_cidr: Ipv4Network,
    /// The cluster's seed.
    pub(crate) seed: u64,
}

/// ip-masq-agent's rules for a node: masquerade everything leaving for destinations outside
/// the non-masquerade CIDRs (the cluster CIDR and the node subnets).
pub(crate) fn masq_agent_rules(cluster_cidr: Ipv4Network, node_subnets: &[Ipv4Network]) -> String {
    let node_subnet = node_subnets[0];
    let more: String = node_subnets[1..]
        .iter()
        .map(|n| format!("-A IP-MASQ-AGENT -d {n} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n"))
        .collect();
    format!(
        "*nat\n:IP-MASQ-AGENT - [0:0]\n\
-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n\
-A IP-MASQ-AGENT -d {cluster_cidr} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n\
-A IP-MASQ-AGENT -d {node_subnet} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n\
{more}-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE\n\
COMMIT\n"
    )
}
