//! The podnet document (`apiVersion: podnet.dev/v1alpha1`, `kind: PodnetConfig`): what
//! Kubernetes objects do not say about a cluster (its addresses, its CNI, its kube-proxy
//! mode, the cloud edge around it).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use crate::cni::{AwsVpcConfig, Cni, WarmTargets};
use crate::kube_proxy::ProxyMode;
use crate::policy::{Enforcement, HostTraffic, PolicyConfig};

use super::{LoadError, Place, obj_err};

/// The podnet document.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PodnetConfig {
    #[serde(default)]
    pub(crate) api_version: String,
    #[serde(default)]
    pub(crate) kind: String,
    pub(crate) cluster_cidr: Option<String>,
    pub(crate) node_subnet: Option<String>,
    pub(crate) vpc_router: Option<Ipv4Addr>,
    /// Several node subnets, each with the VPC router's address (default: its first host).
    pub(crate) node_subnets: Option<Vec<SubnetDoc>>,
    /// The API server's `--service-node-port-range` (`30000-32767`).
    pub(crate) service_node_port_range: Option<String>,
    pub(crate) service_cidr: Option<String>,
    pub(crate) proxy_mode: Option<String>,
    pub(crate) ipvs_scheduler: Option<String>,
    pub(crate) seed: Option<u64>,
    pub(crate) cni: Option<String>,
    pub(crate) instance_type: Option<String>,
    pub(crate) warm_eni_target: Option<u32>,
    pub(crate) warm_ip_target: Option<u32>,
    pub(crate) minimum_ip_target: Option<u32>,
    pub(crate) enable_prefix_delegation: Option<bool>,
    pub(crate) warm_prefix_target: Option<u32>,
    pub(crate) external_snat: Option<bool>,
    pub(crate) max_pods: Option<u32>,
    /// The internet side of an internet gateway (e.g. 203.0.113.0/24).
    pub(crate) internet: Option<String>,
    /// Node name to public address (1:1 NAT at the gateway).
    #[serde(rename = "publicIPs")]
    pub(crate) public_ips: Option<BTreeMap<String, Ipv4Addr>>,
    pub(crate) internet_hosts: Option<Vec<HostDoc>>,
    pub(crate) load_balancers: Option<Vec<LbDoc>>,
    /// Ingresses to put on ALBs (AWS Load Balancer Controller model).
    pub(crate) albs: Option<Vec<AlbDoc>>,
    /// Pods that are in-cluster Ingress controllers.
    pub(crate) ingress_controllers: Option<Vec<ControllerDoc>>,
    /// A NAT gateway for nodes without a public IP.
    pub(crate) nat_gateway: Option<NatGatewayDoc>,
    /// Node name to sysctl name to value.
    pub(crate) sysctls: Option<BTreeMap<String, BTreeMap<String, u32>>>,
    /// How the CNI enforces NetworkPolicy.
    pub(crate) network_policy: Option<NetworkPolicyDoc>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NetworkPolicyDoc {
    /// `post-dnat` (default), `pre-dnat` or `off`.
    pub(crate) enforcement: Option<String>,
    /// `allow` (default) or `policy`.
    pub(crate) host_traffic: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubnetDoc {
    pub(crate) cidr: String,
    pub(crate) router: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatGatewayDoc {
    #[serde(rename = "publicIP")]
    pub(crate) public_ip: Ipv4Addr,
    #[serde(rename = "privateIP")]
    pub(crate) private_ip: Ipv4Addr,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ControllerDoc {
    /// `NS/NAME` of the controller pod.
    pub(crate) pod: String,
    /// The IngressClass it serves.
    pub(crate) class: String,
    /// Its HTTP port (80 by default).
    #[serde(default = "http_port")]
    pub(crate) port: u16,
}

fn http_port() -> u16 {
    80
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HostDoc {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) port: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LbDoc {
    /// `NS/NAME` of a LoadBalancer Service.
    pub(crate) service: String,
    #[serde(rename = "publicIP")]
    pub(crate) public_ip: Ipv4Addr,
    #[serde(rename = "privateIP")]
    pub(crate) private_ip: Ipv4Addr,
    /// `proxy` (default), `preserveClientIP` or `passThrough`.
    #[serde(default)]
    pub(crate) mode: LbModeDoc,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) enum LbModeDoc {
    #[default]
    #[serde(rename = "proxy")]
    Proxy,
    #[serde(rename = "preserveClientIP")]
    PreserveClientIp,
    #[serde(rename = "passThrough")]
    PassThrough,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AlbDoc {
    /// `NS/NAME` of an Ingress in the input.
    pub(crate) ingress: String,
    #[serde(rename = "publicIP")]
    pub(crate) public_ip: Ipv4Addr,
    #[serde(rename = "privateIP")]
    pub(crate) private_ip: Ipv4Addr,
}

/// The cluster settings a PodnetConfig document gives (each `None` keeps the default).
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings {
    /// `clusterCidr`.
    pub(crate) cluster_cidr: Option<Ipv4Network>,
    /// `nodeSubnet` and `vpcRouter`, or `nodeSubnets`: each subnet with its router.
    pub(crate) node_subnets: Option<Vec<(Ipv4Network, Ipv4Addr)>>,
    /// `serviceNodePortRange`.
    pub(crate) node_port_range: Option<(u16, u16)>,
    /// `serviceCidr`.
    pub(crate) service_cidr: Option<Ipv4Network>,
    /// `seed`.
    pub(crate) seed: Option<u64>,
    /// `cni` and its settings.
    pub(crate) cni: Option<Cni>,
    /// `proxyMode` and `ipvsScheduler`.
    pub(crate) proxy_mode: ProxyMode,
    /// Whether `proxyMode` was given.
    pub(crate) proxy_mode_given: bool,
    /// `networkPolicy`.
    pub(crate) policy: Option<PolicyConfig>,
}

impl PodnetConfig {
    /// The settings this document gives, checked.
    pub(crate) fn settings(&self, place: &Place) -> Result<Settings, LoadError> {
        let bad = |what: &str, v: &str| {
            obj_err(place, "PodnetConfig".into(), format!("{what} '{v}' is not valid"))
        };
        let cidr = |what: &str, v: &Option<String>| -> Result<Option<Ipv4Network>, LoadError> {
            v.as_ref().map(|c| c.parse().map_err(|_| bad(what, c))).transpose()
        };
        let cni = match self.cni.as_deref().map(str::parse::<Cni>) {
            None => None,
            Some(Ok(Cni::Bridge)) => Some(Cni::Bridge),
            Some(Ok(Cni::AwsVpc(d))) => {
                let t = WarmTargets::default();
                Some(Cni::AwsVpc(AwsVpcConfig {
                    instance_type: self.instance_type.clone().unwrap_or(d.instance_type),
                    targets: WarmTargets {
                        warm_eni_target: self.warm_eni_target.unwrap_or(t.warm_eni_target),
                        warm_ip_target: self.warm_ip_target,
                        minimum_ip_target: self.minimum_ip_target,
                        prefix_delegation: self.enable_prefix_delegation.unwrap_or(false),
                        warm_prefix_target: self.warm_prefix_target.unwrap_or(t.warm_prefix_target),
                    },
                    external_snat: self.external_snat.unwrap_or(false),
                    max_pods: self.max_pods,
                }))
            }
            Some(Err(e)) => return Err(bad("cni (bridge or aws-vpc)", &e.value)),
        };
        let sched = match self.ipvs_scheduler.as_deref() {
            None => podnet_netfilter::ipvs::Scheduler::Rr,
            Some(s) => podnet_netfilter::ipvs::Scheduler::parse(s)
                .ok_or_else(|| bad("ipvsScheduler", s))?,
        };
        let proxy_mode = match self.proxy_mode.as_deref().map(str::parse::<ProxyMode>) {
            None => ProxyMode::Iptables,
            Some(Ok(ProxyMode::Ipvs(_))) if self.ipvs_scheduler.is_some() => ProxyMode::Ipvs(sched),
            Some(Ok(mode)) => mode,
            Some(Err(e)) => return Err(bad("proxyMode (iptables or ipvs)", &e.value)),
        };
        let _ = (&self.api_version, &self.kind);
        // A subnet's router defaults to its first host address, where AWS and GCP put it.
        let first_host = |n: Ipv4Network| Ipv4Addr::from(u32::from(n.network()) + 1);
        let node_subnets = match (&self.node_subnet, &self.node_subnets) {
            (Some(_), Some(_)) => {
                return Err(obj_err(
                    place,
                    "PodnetConfig".into(),
                    "nodeSubnet and nodeSubnets both given: list every subnet in nodeSubnets",
                ));
            }
            (Some(_), None) => {
                let n = cidr("nodeSubnet", &self.node_subnet)?.expect("given");
                Some(vec![(n, self.vpc_router.unwrap_or_else(|| first_host(n)))])
            }
            (None, Some(list)) => {
                if self.vpc_router.is_some() {
                    return Err(obj_err(
                        place,
                        "PodnetConfig".into(),
                        "vpcRouter goes with nodeSubnet; with nodeSubnets give each subnet its router",
                    ));
                }
                if list.is_empty() {
                    return Err(bad("nodeSubnets", "[]"));
                }
                let mut v = Vec::new();
                for d in list {
                    let n: Ipv4Network =
                        d.cidr.parse().map_err(|_| bad("nodeSubnets[].cidr", &d.cidr))?;
                    v.push((n, d.router.unwrap_or_else(|| first_host(n))));
                }
                Some(v)
            }
            (None, None) if self.vpc_router.is_some() => {
                return Err(obj_err(
                    place,
                    "PodnetConfig".into(),
                    "vpcRouter without nodeSubnet: give the subnet it is in (nodeSubnet)",
                ));
            }
            (None, None) => None,
        };
        let node_port_range = match &self.service_node_port_range {
            None => None,
            Some(r) => {
                let range = r.split_once('-').and_then(|(a, b)| {
                    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
                    (a > 0 && a <= b).then_some((a, b))
                });
                Some(range.ok_or_else(|| bad("serviceNodePortRange (as 30000-32767)", r))?)
            }
        };
        let policy = match &self.network_policy {
            None => None,
            Some(d) => {
                let mut c = PolicyConfig::default();
                if let Some(e) = &d.enforcement {
                    c.enforcement = Enforcement::parse(e).ok_or_else(|| {
                        bad("networkPolicy.enforcement (post-dnat, pre-dnat or off)", e)
                    })?;
                }
                if let Some(h) = &d.host_traffic {
                    c.host_traffic = HostTraffic::parse(h)
                        .ok_or_else(|| bad("networkPolicy.hostTraffic (allow or policy)", h))?;
                }
                Some(c)
            }
        };
        Ok(Settings {
            policy,
            cluster_cidr: cidr("clusterCidr", &self.cluster_cidr)?,
            node_subnets,
            node_port_range,
            service_cidr: cidr("serviceCidr", &self.service_cidr)?,
            seed: self.seed,
            cni,
            proxy_mode,
            proxy_mode_given: self.proxy_mode.is_some(),
        })
    }
}
