//! Each kind of object in the model's terms: a Node's address, pod CIDR and pods
//! capacity; a Service; a Pod's containers, address and state; an EndpointSlice; an
//! Ingress. Errors name the object, the field and the place.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use podnet_netfilter::Proto;

use crate::cloud::{Ingress, IngressPath, IngressRule, IngressTls, PathType};
use crate::kube_proxy::{
    EndpointSlice, Service, ServicePort, ServiceType, SliceEndpoint, TargetPort,
};
use crate::world::Container;

use super::{LoadError, LoadReport, Place, obj_err, proto};

/// A Node as the model takes it.
#[derive(Clone, Debug)]
pub(crate) struct NodeSpec {
    /// `metadata.name`.
    pub(crate) name: String,
    /// Its (first) IPv4 InternalIP.
    pub(crate) ip: Ipv4Addr,
    /// Its other IPv4 InternalIP and ExternalIP addresses, in `status.addresses` order.
    pub(crate) more_ips: Vec<Ipv4Addr>,
    /// `spec.podCIDR` (required in the bridge profile, unused in the AWS one).
    pub(crate) pod_cidr: Option<Ipv4Network>,
    /// `status.capacity.pods`: kubelet's `--max-pods`.
    pub(crate) max_pods: Option<u32>,
}

/// A Node: its name, address, pod CIDR (required when `needs_pod_cidr`) and capacity.
pub(crate) fn node(
    place: &Place,
    n: &core::Node,
    needs_pod_cidr: bool,
) -> Result<NodeSpec, LoadError> {
    let name = n.metadata.name.clone().unwrap_or_default();
    let obj = format!("Node/{name}");
    let ip = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| obj_err(place, obj.clone(), "no IPv4 InternalIP in status.addresses"))?;
    let pod_cidr = if needs_pod_cidr {
        let cidr = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .ok_or_else(|| obj_err(place, obj.clone(), "no spec.podCIDR: the bridge profile routes each node's pod CIDR; set it (kube-controller-manager --allocate-node-cidrs)"))?;
        Some(cidr.parse().map_err(|_| {
            obj_err(place, obj.clone(), format!("spec.podCIDR '{cidr}' is not an IPv4 CIDR"))
        })?)
    } else {
        None
    };
    let max_pods = pods_capacity(place, &obj, n)?;
    let mut more_ips = Vec::new();
    for a in n.status.as_ref().and_then(|s| s.addresses.as_ref()).into_iter().flatten() {
        if (a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            && let Ok(x) = a.address.parse::<Ipv4Addr>()
            && x != ip
            && !more_ips.contains(&x)
        {
            more_ips.push(x);
        }
    }
    Ok(NodeSpec { name, ip, more_ips, pod_cidr, max_pods })
}

/// A Service, its ClusterIP left unset when it asks for one to be allocated (the second
/// value says so; `clusterIP: None` is headless).
pub(crate) fn service(place: &Place, s: &core::Service) -> Result<(Service, bool), LoadError> {
    let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = s.metadata.name.clone().unwrap_or_default();
    let obj = format!("Service/{ns}/{name}");
    let spec = s.spec.clone().unwrap_or_default();
    let (cluster_ip, allocate) = match spec.cluster_ip.as_deref() {
        None | Some("") => (None, true),
        Some("None") => (None, false),
        Some(ip) => (
            Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                obj_err(place, obj.clone(), format!("spec.clusterIP '{ip}' is not IPv4"))
            })?),
            false,
        ),
    };
    let kind = match spec.type_.as_deref() {
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        _ => ServiceType::ClusterIp,
    };
    let mut ports = Vec::new();
    for p in spec.ports.clone().unwrap_or_default() {
        let target = match &p.target_port {
            None => TargetPort::Number(p.port as u16),
            Some(IntOrString::Int(n)) => TargetPort::Number(*n as u16),
            Some(IntOrString::String(s)) => TargetPort::Name(s.clone()),
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol: proto(&p.protocol),
            port: p.port as u16,
            target_port: target,
            node_port: p.node_port.unwrap_or(0) as u16,
        });
    }
    let lb_ips = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_ref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut ranges = Vec::new();
    for r in spec.load_balancer_source_ranges.clone().unwrap_or_default() {
        ranges.push(r.trim().parse::<Ipv4Network>().map_err(|_| {
            obj_err(
                place,
                obj.clone(),
                format!("loadBalancerSourceRanges entry '{r}' is not an IPv4 CIDR"),
            )
        })?);
    }
    let svc = Service {
        namespace: ns,
        name,
        kind,
        cluster_ip,
        ports,
        selector: spec.selector.clone().map(|m| m.into_iter().collect()),
        external_ips: spec
            .external_ips
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.parse().ok())
            .collect(),
        lb_ips,
        lb_source_ranges: ranges,
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        affinity_timeout: (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800) as u32
        }),
        health_check_node_port: spec.health_check_node_port.unwrap_or(0) as u16,
        allocate_lb_node_ports: spec.allocate_load_balancer_node_ports.unwrap_or(true),
    };
    Ok((svc, allocate))
}

/// What becomes of a Pod: skipped (with the reason the report gives), or a pod to add.
pub(crate) enum PodDecision {
    /// Not modelled: not scheduled, or no address yet.
    Skip(String),
    /// A pod to add.
    Add(PodSpec),
}

/// A Pod as the model takes it.
#[derive(Clone, Debug)]
pub(crate) struct PodSpec {
    /// `metadata.namespace`.
    pub(crate) namespace: String,
    /// `metadata.name`.
    pub(crate) name: String,
    /// `spec.nodeName`.
    pub(crate) node: String,
    /// `status.podIP`: `None` for a pod being created (its CNI gives it one) and for a
    /// host-network pod (the node's).
    pub(crate) ip: Option<Ipv4Addr>,
    /// Labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Containers with their ports.
    pub(crate) containers: Vec<Container>,
    /// The Ready condition (a Running pod without conditions is ready; so is one written
    /// without status, once it runs).
    pub(crate) ready: bool,
    /// `deletionTimestamp` set.
    pub(crate) terminating: bool,
    /// `hostNetwork: true`.
    pub(crate) host_network: bool,
}

/// A Pod: its node, address (`status.podIP`, kept in every CNI profile), labels and
/// containers.
pub(crate) fn pod(place: &Place, p: &core::Pod) -> Result<PodDecision, LoadError> {
    let ns = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = p.metadata.name.clone().unwrap_or_default();
    let obj = format!("Pod/{ns}/{name}");
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    let Some(node) = spec.node_name.clone() else {
        return Ok(PodDecision::Skip(format!(
            "{obj}: not scheduled (phase {}), skipped",
            status.phase.as_deref().unwrap_or("Pending")
        )));
    };
    // A manifest without status is a pod being created now: the CNI's IPAM gives it an
    // address. A status without an IP is a pod that has none yet.
    let host_network = spec.host_network == Some(true);
    let ip = match (&p.status, status.pod_ip.clone()) {
        // The node's address, whatever the status says.
        _ if host_network => None,
        (None, _) => None,
        (Some(_), Some(ip)) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
            obj_err(place, obj.clone(), format!("status.podIP '{ip}' is not IPv4"))
        })?),
        (Some(_), None) => {
            return Ok(PodDecision::Skip(format!(
                "{obj}: no pod IP yet (phase {}), skipped",
                status.phase.as_deref().unwrap_or("Pending")
            )));
        }
    };
    let labels: BTreeMap<String, String> =
        p.metadata.labels.clone().map(|m| m.into_iter().collect()).unwrap_or_default();
    let containers: Vec<Container> = spec
        .containers
        .iter()
        .map(|k| {
            let ports = k.ports.clone().unwrap_or_default();
            Container {
                name: k.name.clone(),
                ports: ports
                    .iter()
                    .map(|cp| (proto(&cp.protocol), cp.container_port as u16))
                    .collect(),
                named_ports: ports
                    .iter()
                    .filter_map(|cp| {
                        Some((cp.name.clone()?, proto(&cp.protocol), cp.container_port as u16))
                    })
                    .collect(),
            }
        })
        .collect();
    let terminating = p.metadata.deletion_timestamp.is_some();
    let ready =
        match status.conditions.as_ref().and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")) {
            Some(cond) => cond.status == "True",
            // Written without status: created now, and Ready once it runs.
            None => p.status.is_none() || status.phase.as_deref() == Some("Running"),
        } && !terminating;
    Ok(PodDecision::Add(PodSpec {
        namespace: ns,
        name,
        node,
        ip,
        labels,
        containers,
        ready,
        terminating,
        host_network,
    }))
}

/// An EndpointSlice, or why it is skipped (the report's line).
pub(crate) fn endpoint_slice(
    place: &Place,
    s: &discovery::EndpointSlice,
    report: &mut LoadReport,
) -> Result<Option<EndpointSlice>, LoadError> {
    let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let obj = format!("EndpointSlice/{ns}/{}", s.metadata.name.clone().unwrap_or_default());
    let Some(svc) =
        s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned()
    else {
        report.skipped.push(format!("{obj}: no kubernetes.io/service-name label, skipped"));
        return Ok(None);
    };
    if s.address_type != "IPv4" {
        report
            .skipped
            .push(format!("{obj}: addressType {} is not modelled, skipped", s.address_type));
        return Ok(None);
    }
    let ports = s
        .ports
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (p.name.clone().unwrap_or_default(), proto(&p.protocol), p.port.unwrap_or(0) as u16)
        })
        .collect();
    let mut endpoints = Vec::new();
    for e in &s.endpoints {
        for a in &e.addresses {
            let ip = a.parse::<Ipv4Addr>().map_err(|_| {
                obj_err(place, obj.clone(), format!("endpoint address '{a}' is not IPv4"))
            })?;
            let cond = e.conditions.clone().unwrap_or_default();
            endpoints.push(SliceEndpoint {
                ip,
                node_name: e.node_name.clone(),
                ready: cond.ready,
                serving: cond.serving,
                terminating: cond.terminating,
            });
        }
    }
    report.loaded.push(obj);
    Ok(Some(EndpointSlice { namespace: ns, service: svc, ports, endpoints }))
}

/// An Ingress object as the ALB model takes it.
pub(crate) fn ingress(
    place: &Place,
    obj: &str,
    ns: &str,
    name: &str,
    ing: &networking::Ingress,
) -> Result<Ingress, LoadError> {
    let spec = ing.spec.clone().unwrap_or_default();
    let backend = |b: &networking::IngressBackend, at: &str| {
        let svc = b.service.as_ref().ok_or_else(|| {
            obj_err(place, obj.into(), format!("{at}: only Service backends are modelled"))
        })?;
        let port = svc
            .port
            .as_ref()
            .and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()));
        let port = port.ok_or_else(|| {
            obj_err(place, obj.into(), format!("{at}.service.port: a number or a name"))
        })?;
        Ok::<_, LoadError>((svc.name.clone(), port))
    };
    let mut rules = Vec::new();
    for (i, r) in spec.rules.clone().unwrap_or_default().iter().enumerate() {
        let mut paths = Vec::new();
        for (j, p) in
            r.http.as_ref().map(|h| h.paths.clone()).unwrap_or_default().iter().enumerate()
        {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            let path_type = match p.path_type.as_str() {
                "Exact" => PathType::Exact,
                "Prefix" => PathType::Prefix,
                "ImplementationSpecific" => PathType::ImplementationSpecific,
                other => {
                    return Err(obj_err(
                        place,
                        obj.into(),
                        format!(
                            "{at}.pathType '{other}' (Exact, Prefix or ImplementationSpecific)"
                        ),
                    ));
                }
            };
            let (service, port) = backend(&p.backend, &format!("{at}.backend"))?;
            paths.push(IngressPath {
                path: p.path.clone().unwrap_or_else(|| "/".into()),
                path_type,
                service,
                port,
            });
        }
        rules.push(IngressRule { host: r.host.clone(), paths });
    }
    let default_backend = match &spec.default_backend {
        Some(b) => Some(backend(b, "spec.defaultBackend")?),
        None => None,
    };
    let class = spec.ingress_class_name.clone().or_else(|| {
        ing.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/ingress.class").cloned())
    });
    let tls = spec
        .tls
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|t| IngressTls { hosts: t.hosts.unwrap_or_default(), secret_name: t.secret_name })
        .collect();
    Ok(Ingress { namespace: ns.into(), name: name.into(), class, rules, default_backend, tls })
}

/// `status.capacity.pods` of a Node: kubelet's `--max-pods`.
fn pods_capacity(place: &Place, obj: &str, n: &core::Node) -> Result<Option<u32>, LoadError> {
    let Some(q) = n.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("pods"))
    else {
        return Ok(None);
    };
    q.0.parse().map(Some).map_err(|_| {
        obj_err(place, obj.into(), format!("status.capacity.pods '{}' is not a count of pods", q.0))
    })
}

/// The (protocol, port) pairs a Service sends to a pod with these labels and containers:
/// its targetPorts, named ones resolved from the containers' named ports.
pub(crate) fn target_ports(
    s: &Service,
    ns: &str,
    labels: &BTreeMap<String, String>,
    containers: &[Container],
) -> Vec<(Proto, u16)> {
    let selects = s.namespace == ns
        && s.selector.as_ref().is_some_and(|sel| {
            !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
    if !selects {
        return Vec::new();
    }
    s.ports
        .iter()
        .filter_map(|sp| {
            let port = match &sp.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(n) => containers
                    .iter()
                    .flat_map(|k| &k.named_ports)
                    .find(|(pn, pr, _)| pn == n && *pr == sp.protocol)
                    .map(|(_, _, p)| *p),
            };
            port.map(|p| (sp.protocol, p))
        })
        .collect()
}
