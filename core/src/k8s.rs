//! Loading a cluster from Kubernetes objects: what `kubectl get -o yaml` (or `-o json`)
//! prints, multi-document files, `kind: List`, several files or directories.
//!
//! Kinds read: Node, Pod, Service, EndpointSlice, Ingress, Namespace, plus an optional
//! podnet document (`apiVersion: podnet.dev/v1alpha1`, `kind: PodnetConfig`) for what
//! Kubernetes objects do not say: `clusterCidr` (10.244.0.0/16), `serviceCidr`
//! (10.96.0.0/12), `nodeSubnet` (192.168.0.0/24) and `vpcRouter` (192.168.0.254),
//! `proxyMode` (iptables or ipvs), `ipvsScheduler` (rr) and `seed` (0); `cni` (`bridge`, or
//! `aws-vpc` for the AWS VPC CNI, with `instanceType` (m5.large), `warmEniTarget`,
//! `warmIpTarget`, `minimumIpTarget`, `enablePrefixDelegation`, `warmPrefixTarget`,
//! `externalSnat` and `maxPods`). In the AWS profile nodes need no podCIDR, `nodeSubnet` is
//! the VPC subnet pods take addresses from, and ipamd assigns pod addresses.
//! Unknown kinds are reported and skipped. Malformed documents fail with the file, the
//! document index, line and column, and the field path.
//!
//! Pods follow Kubernetes' rules for endpoints: ready from the Ready condition (a Running pod
//! with an IP when conditions are absent), terminating from `deletionTimestamp`; pods
//! without a node, or with a status but no IP, are skipped and reported. A scheduled pod
//! written without status is being created: host-local gives it the node's next address.
//! Services are admitted as the API server does it: a ClusterIP is allocated from the
//! Service CIDR when none is written, requested ClusterIPs and nodePorts are reserved, and
//! conflicts are errors. [`Cluster::add_yaml`] adds objects to a running cluster. EndpointSlices are derived from
//! selectors for Services that have none in the input. Pods serve every declared
//! containerPort and the targetPorts of the Services that select them.
//!
//! The podnet document can also describe the edge: `internet` (the internet side of an
//! internet gateway), `publicIPs` (node → address, 1:1 NAT), `internetHosts` (`name`, `ip`,
//! `port`), `natGateway` (`publicIP`, `privateIP`: egress for nodes without a public IP),
//! `loadBalancers` (`service` NS/NAME, `publicIP`, `privateIP`, `mode`: `proxy`,
//! `preserveClientIP` or `passThrough`), `albs` (`ingress`
//! NS/NAME of an Ingress in the input, `publicIP`, `privateIP`), `ingressControllers` (`pod`
//! NS/NAME, `class`, `port`: in-cluster controllers that serve the Ingresses of their class,
//! and those without a class for the first one), and `sysctls` (node → name → value, the
//! names [`Cluster::set_sysctl`](crate::Cluster::set_sysctl) takes).
//! Ingresses neither on an ALB nor served by a controller are recorded and skipped.
//!
//! `hostNetwork: true` pods run in their node's root namespace with the node's address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use podnet_netfilter::Proto;

use crate::cluster::{Cluster, ClusterConfig, Container};
pub use crate::error::{LoadError, Place};
use crate::kube_proxy::{
    EndpointSlice, ProxyMode, Service, ServicePort, ServiceType, Services, SliceEndpoint,
    TargetPort,
};

/// What was loaded, and what was not.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    /// `Kind/ns/name` of every object used.
    pub loaded: Vec<String>,
    /// Objects skipped, with the reason.
    pub skipped: Vec<String>,
}

/// The podnet document.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodnetConfig {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    cluster_cidr: Option<String>,
    node_subnet: Option<String>,
    vpc_router: Option<Ipv4Addr>,
    service_cidr: Option<String>,
    proxy_mode: Option<String>,
    ipvs_scheduler: Option<String>,
    seed: Option<u64>,
    cni: Option<String>,
    instance_type: Option<String>,
    warm_eni_target: Option<u32>,
    warm_ip_target: Option<u32>,
    minimum_ip_target: Option<u32>,
    enable_prefix_delegation: Option<bool>,
    warm_prefix_target: Option<u32>,
    external_snat: Option<bool>,
    max_pods: Option<u32>,
    /// The internet side of an internet gateway (e.g. 203.0.113.0/24).
    internet: Option<String>,
    /// Node name to public address (1:1 NAT at the gateway).
    #[serde(rename = "publicIPs")]
    public_ips: Option<BTreeMap<String, Ipv4Addr>>,
    internet_hosts: Option<Vec<HostDoc>>,
    load_balancers: Option<Vec<LbDoc>>,
    /// Ingresses to put on ALBs (AWS Load Balancer Controller model).
    albs: Option<Vec<AlbDoc>>,
    /// Pods that are in-cluster Ingress controllers.
    ingress_controllers: Option<Vec<ControllerDoc>>,
    /// A NAT gateway for nodes without a public IP.
    nat_gateway: Option<NatGatewayDoc>,
    /// Node name to sysctl name to value.
    sysctls: Option<BTreeMap<String, BTreeMap<String, u32>>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatGatewayDoc {
    #[serde(rename = "publicIP")]
    public_ip: Ipv4Addr,
    #[serde(rename = "privateIP")]
    private_ip: Ipv4Addr,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ControllerDoc {
    /// `NS/NAME` of the controller pod.
    pod: String,
    /// The IngressClass it serves.
    class: String,
    /// Its HTTP port (80 by default).
    #[serde(default = "http_port")]
    port: u16,
}

fn http_port() -> u16 {
    80
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HostDoc {
    name: String,
    ip: Ipv4Addr,
    port: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LbDoc {
    /// `NS/NAME` of a LoadBalancer Service.
    service: String,
    #[serde(rename = "publicIP")]
    public_ip: Ipv4Addr,
    #[serde(rename = "privateIP")]
    private_ip: Ipv4Addr,
    /// `proxy` (default), `preserveClientIP` or `passThrough`.
    #[serde(default)]
    mode: LbModeDoc,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
enum LbModeDoc {
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
struct AlbDoc {
    /// `NS/NAME` of an Ingress in the input.
    ingress: String,
    #[serde(rename = "publicIP")]
    public_ip: Ipv4Addr,
    #[serde(rename = "privateIP")]
    private_ip: Ipv4Addr,
}

struct Doc {
    place: Place,
    value: serde_json::Value,
    text: Option<String>,
    line_offset: usize,
}

/// The objects of an input, by kind, before the cluster is built.
#[derive(Default)]
struct Objects {
    config: Option<(Place, PodnetConfig)>,
    nodes: Vec<(Place, core::Node)>,
    pods: Vec<(Place, core::Pod)>,
    services: Vec<(Place, core::Service)>,
    slices: Vec<(Place, discovery::EndpointSlice)>,
    ingresses: Vec<(Place, k8s_openapi::api::networking::v1::Ingress)>,
    report: LoadReport,
}

impl Cluster {
    /// Loads Kubernetes objects from YAML or JSON text (several documents, `kind: List`).
    pub fn from_yaml(text: &str) -> Result<(Cluster, LoadReport), LoadError> {
        let mut objs = Objects::default();
        read_text("<input>", text, &mut objs)?;
        build(objs)
    }

    /// Adds Kubernetes objects to a running cluster, as `kubectl create -f` would: nodes
    /// join, Services are admitted by the API server (a ClusterIP is allocated when none is
    /// requested, requested addresses and nodePorts are reserved or refused), scheduled pods
    /// get their address from the node's host-local IPAM when they have no status, new
    /// Services' targetPorts are served by the pods they select, and kube-proxy re-syncs
    /// every node. An object that already exists, or cannot be admitted, is an error naming
    /// it; as with `kubectl create -f`, the objects before it stay added.
    pub fn add_yaml(&mut self, text: &str) -> Result<LoadReport, LoadError> {
        let mut objs = Objects::default();
        read_text("<input>", text, &mut objs)?;
        if let Some((place, _)) = &objs.config {
            return Err(obj_err(
                place,
                "PodnetConfig".into(),
                "cluster settings are read only when a cluster is created (from_yaml, from_files); drop this document",
            ));
        }
        let ingresses = std::mem::take(&mut objs.ingresses);
        let mut report = apply(self, objs)?;
        // Ingresses go to the in-cluster controller of their class (the first controller for
        // those without one); ALBs are set up with the cluster.
        let first_class = self.edge.controllers.first().map(|c| c.class.clone());
        for (place, ing) in ingresses {
            let ns = ing.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = ing.metadata.name.clone().unwrap_or_default();
            let obj = format!("Ingress/{ns}/{name}");
            let ingress = to_ingress(&place, &obj, &ns, &name, &ing)?;
            let class = ingress.class.clone().or_else(|| first_class.clone());
            if class.is_some_and(|k| self.edge.controllers.iter().any(|c| c.class == k)) {
                self.add_ingress(ingress).map_err(|e| refused(&place, &obj, e))?;
                report.loaded.push(obj);
            } else {
                report.skipped.push(format!(
                    "{obj}: recorded; no controller serves its class (ALBs are described by the PodnetConfig document when a cluster is created)"
                ));
            }
        }
        Ok(report)
    }

    /// Loads Kubernetes objects from files and directories (`*.yaml`, `*.yml`, `*.json`,
    /// in name order).
    pub fn from_files(paths: &[PathBuf]) -> Result<(Cluster, LoadReport), LoadError> {
        let mut objs = Objects::default();
        for p in paths {
            for file in expand(p)? {
                let text = std::fs::read_to_string(&file).map_err(|e| LoadError::Io {
                    path: file.display().to_string(),
                    msg: e.to_string(),
                })?;
                read_text(&file.display().to_string(), &text, &mut objs)?;
            }
        }
        build(objs)
    }
}

fn expand(p: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io =
        |e: std::io::Error| LoadError::Io { path: p.display().to_string(), msg: e.to_string() };
    if p.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
            .collect();
        files.sort();
        Ok(files)
    } else if p.exists() {
        Ok(vec![p.to_path_buf()])
    } else {
        Err(LoadError::Io {
            path: p.display().to_string(),
            msg: "no such file or directory".into(),
        })
    }
}

/// Splits YAML text into documents, remembering the line each starts at.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            if !cur.trim().is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 1;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        docs.push((start, cur));
    }
    docs
}

fn read_text(file: &str, text: &str, objs: &mut Objects) -> Result<(), LoadError> {
    // YAML takes a lone CR as a line break too; with every break a LF, the document split and
    // the parser's line numbers agree (and match what editors show).
    let normalized;
    let text = if text.contains('\r') {
        normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        text
    };
    let trimmed = text.trim_start();
    let docs: Vec<(usize, String)> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![(0, text.to_string())]
    } else {
        split_documents(text)
    };
    for (i, (offset, doc)) in docs.into_iter().enumerate() {
        let place = Place { file: file.into(), doc: i + 1, line: None, column: None };
        let value: serde_json::Value =
            serde_norway::from_str(&doc).map_err(|e| parse_error(&place, offset, &e))?;
        if value.is_null() {
            continue;
        }
        let d = Doc { place, value, text: Some(doc), line_offset: offset };
        classify(d, objs)?;
    }
    Ok(())
}

fn parse_error(place: &Place, offset: usize, e: &serde_norway::Error) -> LoadError {
    let mut p = place.clone();
    if let Some(loc) = e.location() {
        p.line = Some(loc.line() + offset);
        p.column = Some(loc.column());
    }
    // serde_norway appends " at line L column C" for the document; the place says it for
    // the file instead.
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    LoadError::Parse { place: p, msg }
}

fn typed<T: serde::de::DeserializeOwned>(d: &Doc) -> Result<T, LoadError> {
    // The document is already a value: read the type from it, and go back to the text only
    // to say where a problem is.
    match T::deserialize(&d.value) {
        Ok(v) => Ok(v),
        Err(e) => match &d.text {
            Some(t) => {
                serde_norway::from_str(t).map_err(|e| parse_error(&d.place, d.line_offset, &e))
            }
            None => Err(LoadError::Parse { place: d.place.clone(), msg: e.to_string() }),
        },
    }
}

fn classify(d: Doc, objs: &mut Objects) -> Result<(), LoadError> {
    let kind = d.value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let api = d.value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let name =
        d.value.pointer("/metadata/name").and_then(|k| k.as_str()).unwrap_or("?").to_string();
    match kind.as_str() {
        "List" => {
            let items =
                d.value.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default();
            for (j, item) in items.into_iter().enumerate() {
                let place =
                    Place { file: format!("{} (items[{j}])", d.place.file), ..d.place.clone() };
                classify(Doc { place, value: item, text: None, line_offset: 0 }, objs)?;
            }
        }
        "PodnetConfig" if api.starts_with("podnet.dev/") => {
            objs.config = Some((d.place.clone(), typed(&d)?))
        }
        "Node" => objs.nodes.push((d.place.clone(), typed(&d)?)),
        "Pod" => objs.pods.push((d.place.clone(), typed(&d)?)),
        "Service" => objs.services.push((d.place.clone(), typed(&d)?)),
        "EndpointSlice" => objs.slices.push((d.place.clone(), typed(&d)?)),
        "Ingress" => objs.ingresses.push((d.place.clone(), typed(&d)?)),
        "Namespace" => objs.report.loaded.push(format!("Namespace/{name}")),
        "" => {
            return Err(LoadError::Parse { place: d.place.clone(), msg: "document has no `kind` (expected Node, Pod, Service, EndpointSlice, Ingress, Namespace, List or PodnetConfig)".into() });
        }
        other => objs.report.skipped.push(format!("{other}/{name}: kind not modelled, skipped")),
    }
    Ok(())
}

fn refused(place: &Place, object: &str, error: crate::cluster::ClusterError) -> LoadError {
    LoadError::Refused { place: place.clone(), object: object.into(), error: Box::new(error) }
}

fn obj_err(place: &Place, object: String, msg: impl Into<String>) -> LoadError {
    LoadError::Object { place: place.clone(), object, msg: msg.into() }
}

fn proto(p: &Option<String>) -> Proto {
    match p.as_deref() {
        Some("UDP") => Proto::UDP,
        Some("SCTP") => Proto::SCTP,
        _ => Proto::TCP,
    }
}

fn build(mut objs: Objects) -> Result<(Cluster, LoadReport), LoadError> {
    let mut cfg = ClusterConfig::default();
    let mut mode = ProxyMode::Iptables;
    if let Some((place, pc)) = &objs.config {
        let bad = |what: &str, v: &str| {
            obj_err(place, "PodnetConfig".into(), format!("{what} '{v}' is not valid"))
        };
        if let Some(c) = &pc.cluster_cidr {
            cfg.cluster_cidr = c.parse().map_err(|_| bad("clusterCIDR", c))?;
        }
        if let Some(c) = &pc.node_subnet {
            cfg.node_subnet = c.parse().map_err(|_| bad("nodeSubnet", c))?;
        }
        if let Some(r) = pc.vpc_router {
            cfg.vpc_router = r;
        }
        if let Some(c) = &pc.service_cidr {
            cfg.service_cidr = c.parse().map_err(|_| bad("serviceCidr", c))?;
        }
        if let Some(s) = pc.seed {
            cfg.seed = s;
        }
        match pc.cni.as_deref() {
            None | Some("bridge") => {}
            Some("aws-vpc") => {
                let d = crate::vpc_cni::AwsVpcConfig::default();
                let t = crate::vpc_cni::WarmTargets::default();
                cfg.cni = crate::vpc_cni::Cni::AwsVpc(crate::vpc_cni::AwsVpcConfig {
                    instance_type: pc.instance_type.clone().unwrap_or(d.instance_type),
                    targets: crate::vpc_cni::WarmTargets {
                        warm_eni_target: pc.warm_eni_target.unwrap_or(t.warm_eni_target),
                        warm_ip_target: pc.warm_ip_target,
                        minimum_ip_target: pc.minimum_ip_target,
                        prefix_delegation: pc.enable_prefix_delegation.unwrap_or(false),
                        warm_prefix_target: pc.warm_prefix_target.unwrap_or(t.warm_prefix_target),
                    },
                    external_snat: pc.external_snat.unwrap_or(false),
                    max_pods: pc.max_pods,
                });
            }
            Some(other) => return Err(bad("cni (bridge or aws-vpc)", other)),
        }
        let sched = match pc.ipvs_scheduler.as_deref() {
            None => podnet_netfilter::ipvs::Scheduler::Rr,
            Some(s) => podnet_netfilter::ipvs::Scheduler::parse(s)
                .ok_or_else(|| bad("ipvsScheduler", s))?,
        };
        mode = match pc.proxy_mode.as_deref() {
            None | Some("iptables") => ProxyMode::Iptables,
            Some("ipvs") => ProxyMode::Ipvs(sched),
            Some(other) => return Err(bad("proxyMode (iptables or ipvs)", other)),
        };
        let _ = (&pc.api_version, &pc.kind);
    }
    let config_place = objs.config.as_ref().map(|(p, _)| p.clone());
    let mut c = Cluster::try_new(cfg).map_err(|e| match &config_place {
        Some(p) => refused(p, "PodnetConfig", e),
        None => LoadError::Parse {
            place: Place { file: "<input>".into(), doc: 0, line: None, column: None },
            msg: e.to_string(),
        },
    })?;
    c.services.mode = mode;
    let edge = objs.config.clone();
    let ingresses = std::mem::take(&mut objs.ingresses);
    let mut report = apply(&mut c, objs)?;
    apply_edge(&mut c, edge, ingresses, &mut report)?;
    Ok((c, report))
}

/// The podnet document's edge (internet gateway, public addresses, internet hosts, cloud load
/// balancers, ALBs for Ingresses) and sysctls, after the Kubernetes objects.
fn apply_edge(
    c: &mut Cluster,
    config: Option<(Place, PodnetConfig)>,
    ingresses: Vec<(Place, k8s_openapi::api::networking::v1::Ingress)>,
    report: &mut LoadReport,
) -> Result<(), LoadError> {
    let (place, pc) = match config {
        Some(x) => x,
        None => (
            Place { file: "<input>".into(), doc: 0, line: None, column: None },
            PodnetConfig::default(),
        ),
    };
    let place = &place;
    let fail =
        |what: String, e: crate::ClusterError| refused(place, &format!("PodnetConfig {what}"), e);
    if let Some(net) = &pc.internet {
        let net: Ipv4Network = net.parse().map_err(|_| {
            obj_err(place, "PodnetConfig".into(), format!("internet '{net}' is not an IPv4 CIDR"))
        })?;
        c.add_internet_gateway(net);
    }
    let needs_gateway = |what: &str| {
        obj_err(
            place,
            "PodnetConfig".into(),
            format!("{what} needs an internet gateway: set `internet` (e.g. 203.0.113.0/24)"),
        )
    };
    for (node, ip) in pc.public_ips.clone().unwrap_or_default() {
        if pc.internet.is_none() {
            return Err(needs_gateway("publicIPs"));
        }
        c.set_public_ip(&node, ip).map_err(|e| fail(format!("publicIPs.{node}"), e))?;
    }
    for h in pc.internet_hosts.clone().unwrap_or_default() {
        c.add_internet_host(&h.name, h.ip, h.port)
            .map_err(|e| fail(format!("internetHosts {}", h.name), e))?;
    }
    for lb in pc.load_balancers.clone().unwrap_or_default() {
        if pc.internet.is_none() {
            return Err(needs_gateway("loadBalancers"));
        }
        let mode = match lb.mode {
            LbModeDoc::Proxy => crate::cloud::LbMode::Proxy,
            LbModeDoc::PreserveClientIp => crate::cloud::LbMode::PreserveClientIp,
            LbModeDoc::PassThrough => crate::cloud::LbMode::PassThrough,
        };
        c.add_cloud_lb_with(&format!("svc/{}", lb.service), lb.public_ip, lb.private_ip, mode)
            .map_err(|e| fail(format!("loadBalancers {}", lb.service), e))?;
    }
    let controllers = pc.ingress_controllers.clone().unwrap_or_default();
    for ctl in &controllers {
        c.add_ingress_controller(&format!("pod/{}", ctl.pod), &ctl.class, ctl.port)
            .map_err(|e| fail(format!("ingressControllers {}", ctl.pod), e))?;
    }
    let albs = pc.albs.clone().unwrap_or_default();
    for (iplace, ing) in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = ing.metadata.name.clone().unwrap_or_default();
        let obj = format!("Ingress/{ns}/{name}");
        let Some(alb) = albs.iter().find(|a| a.ingress == format!("{ns}/{name}")) else {
            let ingress = to_ingress(&iplace, &obj, &ns, &name, &ing)?;
            // Ingresses without a class go to the first controller (the default class).
            let served = controllers.first().is_some_and(|first| {
                let class = ingress.class.as_deref().unwrap_or(first.class.as_str());
                controllers.iter().any(|ctl| ctl.class == class)
            });
            if served {
                c.add_ingress(ingress).map_err(|e| refused(&iplace, &obj, e))?;
                report.loaded.push(obj);
            } else {
                report.skipped.push(format!(
                    "{obj}: recorded; no ALB or controller for it (list it under `albs`, or a controller of its class under `ingressControllers`, in the PodnetConfig document)"
                ));
            }
            continue;
        };
        if pc.internet.is_none() {
            return Err(needs_gateway("albs"));
        }
        let ingress = to_ingress(&iplace, &obj, &ns, &name, &ing)?;
        c.add_alb(ingress, alb.public_ip, alb.private_ip).map_err(|e| refused(&iplace, &obj, e))?;
        report.loaded.push(obj);
    }
    if let Some(a) =
        albs.iter().find(|a| !report.loaded.contains(&format!("Ingress/{}", a.ingress)))
    {
        return Err(obj_err(
            place,
            "PodnetConfig".into(),
            format!("albs names Ingress {} which is not in the input", a.ingress),
        ));
    }
    if let Some(gw) = &pc.nat_gateway {
        if pc.internet.is_none() {
            return Err(needs_gateway("natGateway"));
        }
        c.add_nat_gateway(gw.public_ip, gw.private_ip).map_err(|e| fail("natGateway".into(), e))?;
    }
    for (node, values) in pc.sysctls.clone().unwrap_or_default() {
        for (key, v) in values {
            c.set_sysctl(&node, &key, v).map_err(|e| fail(format!("sysctls.{node}.{key}"), e))?;
        }
    }
    Ok(())
}

/// An Ingress object as the ALB model takes it.
fn to_ingress(
    place: &Place,
    obj: &str,
    ns: &str,
    name: &str,
    ing: &k8s_openapi::api::networking::v1::Ingress,
) -> Result<crate::ingress::Ingress, LoadError> {
    use crate::ingress::{IngressPath, IngressRule, PathType};
    let spec = ing.spec.clone().unwrap_or_default();
    let backend = |b: &k8s_openapi::api::networking::v1::IngressBackend, at: &str| {
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
        .map(|t| crate::ingress::IngressTls {
            hosts: t.hosts.unwrap_or_default(),
            secret_name: t.secret_name,
        })
        .collect();
    Ok(crate::ingress::Ingress {
        namespace: ns.into(),
        name: name.into(),
        class,
        rules,
        default_backend,
        tls,
    })
}

/// Adds the objects to `c` and re-syncs once, also when an object fails (the ones before
/// it stay added).
fn apply(c: &mut Cluster, objs: Objects) -> Result<LoadReport, LoadError> {
    c.services.sync_deferred = true;
    let r = apply_objects(c, objs);
    c.services.sync_deferred = false;
    c.services_changed();
    r
}

fn apply_objects(c: &mut Cluster, mut objs: Objects) -> Result<LoadReport, LoadError> {
    let mut report = std::mem::take(&mut objs.report);
    // Nodes.
    for (place, n) in &objs.nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let obj = format!("Node/{name}");
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| obj_err(place, obj.clone(), "no IPv4 InternalIP in status.addresses"))?;
        if c.aws.is_some() {
            // The AWS VPC CNI: pods take ENI addresses; a podCIDR, if any, is unused.
            c.add_aws_node(&name, ip).map_err(|e| refused(place, &obj, e))?;
            if let Some(max) = pods_capacity(place, &obj, n)? {
                c.set_max_pods(&name, max).map_err(|e| refused(place, &obj, e))?;
            }
            report.loaded.push(obj);
            continue;
        }
        let cidr = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .ok_or_else(|| obj_err(place, obj.clone(), "no spec.podCIDR: the bridge profile routes each node's pod CIDR; set it (kube-controller-manager --allocate-node-cidrs)"))?;
        let cidr: Ipv4Network = cidr.parse().map_err(|_| {
            obj_err(place, obj.clone(), format!("spec.podCIDR '{cidr}' is not an IPv4 CIDR"))
        })?;
        c.add_node(&name, ip, cidr).map_err(|e| refused(place, &obj, e))?;
        if let Some(max) = pods_capacity(place, &obj, n)? {
            c.set_max_pods(&name, max).map_err(|e| refused(place, &obj, e))?;
        }
        report.loaded.push(obj);
    }
    // Services first (their targetPorts become listening ports of the pods they select).
    let first_new_service = c.services.list.len();
    let mut service_places: Vec<Place> = Vec::new();
    for (place, s) in &objs.services {
        let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = s.metadata.name.clone().unwrap_or_default();
        let obj = format!("Service/{ns}/{name}");
        let spec = s.spec.clone().unwrap_or_default();
        if c.services.list.iter().any(|x| x.namespace == ns && x.name == name) {
            return Err(obj_err(
                place,
                obj,
                "already exists: delete it first (services are immutable here, as with kubectl create)",
            ));
        }
        let cluster_ip = match spec.cluster_ip.as_deref() {
            None | Some("") => Some(c.allocate_cluster_ip().map_err(|e| refused(place, &obj, e))?),
            Some("None") => None,
            Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                obj_err(place, obj.clone(), format!("spec.clusterIP '{ip}' is not IPv4"))
            })?),
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
        let mut svc = Service {
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
        };
        crate::kube_proxy::validate_service(&svc).map_err(|e| refused(place, &obj, e))?;
        c.services.admit(&mut svc).map_err(|e| refused(place, &obj, e.into()))?;
        c.services.list.push(svc);
        service_places.push(place.clone());
        report.loaded.push(obj);
    }
    // Pods.
    let mut new_pods = std::collections::HashSet::new();
    // Services by the first pair of their selector, so each pod checks only its candidates.
    let mut by_selector: std::collections::HashMap<(&str, &str, &str), Vec<usize>> =
        std::collections::HashMap::new();
    for (i, s) in c.services.list.iter().enumerate() {
        if let Some((k, v)) = s.selector.as_ref().and_then(|sel| sel.iter().next()) {
            by_selector.entry((&s.namespace, k, v)).or_default().push(i);
        }
    }
    let by_selector: std::collections::HashMap<(String, String, String), Vec<usize>> = by_selector
        .into_iter()
        .map(|((a, b, cc), v)| ((a.to_string(), b.to_string(), cc.to_string()), v))
        .collect();
    for (place, p) in &objs.pods {
        let ns = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = p.metadata.name.clone().unwrap_or_default();
        let obj = format!("Pod/{ns}/{name}");
        let spec = p.spec.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let Some(node) = spec.node_name.clone() else {
            report.skipped.push(format!(
                "{obj}: not scheduled (phase {}), skipped",
                status.phase.as_deref().unwrap_or("Pending")
            ));
            continue;
        };
        // A manifest without status is a pod being created now: the CNI's host-local IPAM
        // gives it an address. A status without an IP is a pod that has none yet.
        let host_network = spec.host_network == Some(true);
        let ip = match (&p.status, status.pod_ip.clone()) {
            // The node's address, whatever the status says.
            _ if host_network => None,
            (None, _) => None,
            (Some(_), Some(_)) if c.aws.is_some() => {
                return Err(obj_err(
                    place,
                    obj,
                    "status.podIP is set, but in the AWS VPC CNI profile podnet's ipamd assigns pod addresses: drop the pod's status",
                ));
            }
            (Some(_), Some(ip)) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                obj_err(place, obj.clone(), format!("status.podIP '{ip}' is not IPv4"))
            })?),
            (Some(_), None) => {
                report.skipped.push(format!(
                    "{obj}: no pod IP yet (phase {}), skipped",
                    status.phase.as_deref().unwrap_or("Pending")
                ));
                continue;
            }
        };
        let node_id = c
            .node_id(&node)
            .map_err(|e| obj_err(place, obj.clone(), format!("spec.nodeName: {e}")))?;
        let labels: BTreeMap<String, String> =
            p.metadata.labels.clone().map(|m| m.into_iter().collect()).unwrap_or_default();
        let mut containers: Vec<Container> = spec
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
        // Serve the targetPorts of the Services that select this pod.
        let candidates: Vec<usize> = labels
            .iter()
            .filter_map(|(k, v)| by_selector.get(&(ns.clone(), k.clone(), v.clone())))
            .flatten()
            .copied()
            .collect();
        for s in candidates.iter().map(|&i| &c.services.list[i]) {
            for (proto, port) in target_ports(s, &ns, &labels, &containers) {
                if !containers.iter().any(|k| k.ports.contains(&(proto, port)))
                    && let Some(first) = containers.first_mut()
                {
                    first.ports.push((proto, port));
                }
            }
        }
        let terminating = p.metadata.deletion_timestamp.is_some();
        let ready = match status
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        {
            Some(cond) => cond.status == "True",
            // Written without status: created now, and Ready once it runs.
            None => p.status.is_none() || status.phase.as_deref() == Some("Running"),
        } && !terminating;
        let added = if host_network {
            c.add_host_network_pod(&ns, &name, node_id, labels, containers)
        } else {
            c.add_pod(&ns, &name, node_id, ip, labels, containers)
        };
        let id = match added {
            Ok(id) => id,
            // The API server keeps such a pod; it just never gets a network.
            Err(e @ crate::ClusterError::TooManyPods { .. }) => {
                report.skipped.push(format!("{obj}: {e}"));
                continue;
            }
            Err(e @ crate::ClusterError::FailedToAssign { .. }) => {
                report.skipped.push(format!("{obj}: {e}"));
                continue;
            }
            Err(e) => return Err(refused(place, &obj, e)),
        };
        c.world.pods[id.idx()].ready = ready;
        c.world.pods[id.idx()].terminating = terminating;
        new_pods.insert(id);
        report.loaded.push(obj);
    }
    // Pods that were there before serve the targetPorts of the new Services that select them.
    for i in 0..c.world.pods.len() {
        let id = crate::ids::PodId(i as u32);
        if c.world.pods[i].deleted || new_pods.contains(&id) {
            continue;
        }
        let (ns, labels, containers) = (
            c.world.pods[i].namespace.clone(),
            c.world.pods[i].labels.clone(),
            c.world.pods[i].containers.clone(),
        );
        let key = format!("pod/{ns}/{}", c.world.pods[i].name);
        let Some(first) = containers.first().map(|k| k.name.clone()) else { continue };
        for (k, place) in service_places.iter().enumerate() {
            let s = c.services.list[first_new_service + k].clone();
            for (proto, port) in target_ports(&s, &ns, &labels, &containers) {
                let netns = c.world.pods[i].netns;
                if !c.world.netns[netns.idx()].ports.contains_key(&(proto, port)) {
                    c.bind(&key, &first, proto, port).map_err(|e| {
                        refused(place, &format!("Service/{}/{}", s.namespace, s.name), e)
                    })?;
                }
            }
        }
    }
    // EndpointSlices given in the input.
    for (place, s) in &objs.slices {
        let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let obj = format!("EndpointSlice/{ns}/{}", s.metadata.name.clone().unwrap_or_default());
        let Some(svc) =
            s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned()
        else {
            report.skipped.push(format!("{obj}: no kubernetes.io/service-name label, skipped"));
            continue;
        };
        if s.address_type != "IPv4" {
            report
                .skipped
                .push(format!("{obj}: addressType {} is not modelled, skipped", s.address_type));
            continue;
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
        c.services.slices.push(EndpointSlice { namespace: ns, service: svc, ports, endpoints });
        report.loaded.push(obj);
    }
    // Services with slices in the input do not get derived ones.
    let Services { list, slices, .. } = &mut c.services;
    for s in &mut list[first_new_service..] {
        if slices.iter().any(|sl| sl.namespace == s.namespace && sl.service == s.name) {
            s.selector = None;
        }
    }
    Ok(report)
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
fn target_ports(
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
