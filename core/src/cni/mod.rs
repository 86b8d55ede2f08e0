//! The CNI: how a node's pod network is set up, how pods get addresses, and how each pod is
//! wired into its node, as the plugin's ADD and DEL verbs do it.
//!
//! | profile | models |
//! |---|---|
//! | `bridge` | the reference CNI bridge plugin with host-local IPAM: a pod CIDR per node, `cbr0` holding its first address, a veth pair per pod on the bridge (`hairpin_mode` on) |
//! | `aws_vpc` | the AWS VPC CNI: ipamd ([`ipamd`]) gives pods ENI secondary addresses; a routed veth per pod with a `/32` host route, `ip rule`s for pods on secondary ENIs, and egress SNAT to the node's primary address |
//!
//! The node's root namespace with `eth0` exists before the CNI sets its network up (the
//! instance and kubelet made it); the pod's namespace exists before ADD (the runtime made
//! it). The CNI works on the [`World`]'s devices, addresses, routes and rules, and tells the
//! cloud fabric what the VPC delivers by itself (ENI secondary addresses). It knows nothing of
//! Services.

mod aws_vpc;
mod bridge;
pub mod ipamd;

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::datapath::Fabric;
use crate::error::ClusterError;
use crate::ids::{IfIndex, NetnsId, NodeId};
use crate::world::World;

pub use aws_vpc::{AwsVpcConfig, FROM_POD_PRIORITY, POD_GATEWAY, TO_POD_PRIORITY, host_veth_name};
pub use ipamd::WarmTargets;

/// Which CNI a cluster runs, with its settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cni {
    /// A pod CIDR per node, host-local IPAM, pods on the bridge `cbr0` (the seed's figures).
    #[default]
    Bridge,
    /// The AWS VPC CNI: pod IPs are secondary addresses of the nodes' ENIs.
    AwsVpc(AwsVpcConfig),
}

/// `bridge` or `aws-vpc` (with the default [`AwsVpcConfig`]).
impl std::str::FromStr for Cni {
    type Err = crate::error::UnknownValue;

    fn from_str(s: &str) -> Result<Cni, Self::Err> {
        match s {
            "bridge" => Ok(Cni::Bridge),
            "aws-vpc" => Ok(Cni::AwsVpc(AwsVpcConfig::default())),
            _ => Err(crate::error::UnknownValue {
                what: "CNI",
                value: s.into(),
                expected: "bridge or aws-vpc",
            }),
        }
    }
}

/// The profile's name: `bridge` or `aws-vpc` (its settings are not printed).
impl std::fmt::Display for Cni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cni::Bridge => "bridge",
            Cni::AwsVpc(_) => "aws-vpc",
        })
    }
}

/// A pod's address as the CNI's IPAM gave it, and on AWS the ENI that holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PodAddr {
    /// The address.
    pub(crate) ip: Ipv4Addr,
    /// The index of the ENI holding it (AWS; 0 for the bridge).
    pub(crate) eni: usize,
}

/// The CNI's state across the cluster.
#[derive(Clone, Debug)]
pub(crate) enum CniState {
    /// The bridge plugin.
    Bridge(bridge::Bridge),
    /// The AWS VPC CNI.
    AwsVpc(Box<aws_vpc::AwsVpc>),
}

impl CniState {
    /// The state of a cluster about to be created with `cni` on the VPC subnet `subnet`;
    /// for the AWS profile also the VPC router's address (the subnet's `.1`, as in AWS).
    pub(crate) fn new(
        cni: &Cni,
        subnet: Ipv4Network,
    ) -> Result<(CniState, Option<Ipv4Addr>), ClusterError> {
        match cni {
            Cni::Bridge => Ok((CniState::Bridge(bridge::Bridge::default()), None)),
            Cni::AwsVpc(cfg) => {
                let (aws, router) = aws_vpc::AwsVpc::new(cfg.clone(), subnet)?;
                Ok((CniState::AwsVpc(Box::new(aws)), Some(router)))
            }
        }
    }

    /// The profile's name, as errors say it.
    pub(crate) fn profile(&self) -> &'static str {
        match self {
            CniState::Bridge(_) => "bridge",
            CniState::AwsVpc(_) => "AWS VPC CNI",
        }
    }

    /// The AWS VPC CNI's state, in that profile.
    pub(crate) fn aws(&self) -> Option<&aws_vpc::AwsVpc> {
        match self {
            CniState::AwsVpc(a) => Some(a),
            CniState::Bridge(_) => None,
        }
    }

    /// The AWS VPC CNI's state, in that profile, mutably.
    pub(crate) fn aws_mut(&mut self) -> Option<&mut aws_vpc::AwsVpc> {
        match self {
            CniState::AwsVpc(a) => Some(a),
            CniState::Bridge(_) => None,
        }
    }

    /// The bridge plugin's state, in that profile.
    pub(crate) fn bridge_mut(&mut self) -> Option<&mut bridge::Bridge> {
        match self {
            CniState::Bridge(b) => Some(b),
            CniState::AwsVpc(_) => None,
        }
    }

    /// Whether a pod's namespace routes (the AWS profile's pods sit behind a routed veth,
    /// where the bridge profile's are hosts on a bridge).
    pub(crate) fn routed_pods(&self) -> bool {
        matches!(self, CniState::AwsVpc(_))
    }

    /// The pod count kubelet's max-pods admission weighs on `node`, and what it is made of
    /// (in the AWS profile the plugin's own `aws-node` and `kube-proxy` count too).
    pub(crate) fn pods_counted(&self, w: &World, node: NodeId) -> (usize, String) {
        let n = &w.nodes[node.idx()];
        match self {
            CniState::Bridge(_) => {
                (n.pods.len(), "kubelet --max-pods (the node's pods capacity)".into())
            }
            CniState::AwsVpc(a) => a.pods_counted(w, node),
        }
    }

    /// Whether the profile takes a pod with the address `requested` (the AWS VPC CNI gives
    /// every pod its own).
    pub(crate) fn check_request(
        &self,
        pod: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<(), ClusterError> {
        match (self, requested) {
            (CniState::AwsVpc(a), Some(ip)) if !a.subnet.cidr().contains(ip) => {
                Err(ClusterError::Profile {
                    what: format!(
                        "pod {pod} with address {ip}, outside the node subnet {}",
                        a.subnet.cidr()
                    ),
                    profile: "AWS VPC CNI",
                    fix: "pods take addresses of their node's subnet: check status.podIP, or set nodeSubnet in PodnetConfig",
                })
            }
            _ => Ok(()),
        }
    }

    /// The IPAM of a pod's ADD on `node`: the requested address (bridge: reserved in the
    /// node's pod CIDR) or the next free one.
    pub(crate) fn allocate(
        &mut self,
        w: &mut World,
        fabric: &mut Fabric,
        node: NodeId,
        pod: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<PodAddr, ClusterError> {
        match self {
            CniState::Bridge(b) => Ok(PodAddr { ip: b.allocate(w, node, requested)?, eni: 0 }),
            CniState::AwsVpc(a) => a.allocate(w, fabric, node, pod, requested),
        }
    }

    /// The plugin's ADD after IPAM: the veth pair between the pod's namespace `pod_ns` and
    /// its node, wired for the profile. Returns the pod's `eth0` and the host-side end.
    pub(crate) fn add(
        &mut self,
        w: &mut World,
        node: NodeId,
        pod_ns: NetnsId,
        (namespace, name): (&str, &str),
        addr: PodAddr,
    ) -> (IfIndex, IfIndex) {
        match self {
            CniState::Bridge(_) => bridge::Bridge::add(w, node, pod_ns, addr.ip),
            CniState::AwsVpc(a) => a.add(w, node, pod_ns, (namespace, name), addr),
        }
    }

    /// The plugin's DEL: the pod's veth leaves its node, its address goes back to the pool.
    pub(crate) fn del(&mut self, w: &mut World, node: NodeId, ip: Ipv4Addr, host_veth: IfIndex) {
        match self {
            CniState::Bridge(b) => b.del(w, node, ip, host_veth),
            CniState::AwsVpc(a) => a.del(w, node, ip),
        }
    }

    /// In the AWS profile, holds an address a pod of an imported cluster has, so that no
    /// warm pool takes it before the pod's node claims it.
    pub(crate) fn hold_pod_address(&mut self, a: Ipv4Addr) -> Result<(), ClusterError> {
        if let CniState::AwsVpc(aws) = self {
            aws.subnet.hold(a)?;
        }
        Ok(())
    }

    /// In the AWS profile, takes an address of the subnet for something other than an ENI
    /// (a load balancer's private address), so ipamd never hands it out.
    pub(crate) fn take_vpc_address(&mut self, a: Ipv4Addr) -> Result<(), ClusterError> {
        if let CniState::AwsVpc(aws) = self {
            aws.subnet.take(a)?;
        }
        Ok(())
    }

    /// The egress SNAT the plugin writes on a node at `node_ip` (the AWS profile's
    /// `AWS-SNAT-CHAIN-0`), or `None` where another agent does it (ip-masq-agent beside
    /// the bridge plugin).
    pub(crate) fn snat_rules(&self, node_ip: Ipv4Addr) -> Option<String> {
        self.aws().map(|a| a.snat_rules(node_ip))
    }
}
