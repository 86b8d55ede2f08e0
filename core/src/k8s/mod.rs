//! Loading a cluster from Kubernetes objects: what `kubectl get -o yaml` (or `-o json`)
//! prints, multi-document files, `kind: List`, several files or directories.
//!
//! Kinds read: Node, Pod, Service, EndpointSlice, Ingress, Namespace (with its labels), plus
//! the policies and mesh authorization podnet does not model yet ([`Unmodelled`]: kept with
//! the pods they select, so traces through those pods carry a warning), and an optional
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
//! conflicts are errors. `Cluster::add_yaml` adds objects to a running cluster. EndpointSlices are derived from
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
//! names `Cluster::set_sysctl` takes).
//! Ingresses neither on an ALB nor served by a controller are recorded and skipped.
//!
//! `hostNetwork: true` pods run in their node's root namespace with the node's address.
//!
//! This layer reads and converts: documents into typed objects by kind, each object into
//! the model's terms (a node's address and pod CIDR, a [`Service`](crate::kube_proxy::Service), a pod's
//! containers and state, an EndpointSlice, an Ingress), with errors that name the place.
//! The façade applies them in order (nodes, Services, pods, slices, the edge).

mod config;
mod objects;
mod unmodelled;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;

use podnet_netfilter::Proto;

use crate::error::ClusterError;

pub use crate::error::{LoadError, Place};
pub(crate) use config::{LbModeDoc, PodnetConfig};
pub(crate) use objects::{PodDecision, endpoint_slice, ingress, node, pod, service, target_ports};
pub use unmodelled::{NamespaceScope, Unmodelled};

/// What was loaded, and what was not.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    /// `Kind/ns/name` of every object used.
    pub loaded: Vec<String>,
    /// Objects skipped, with the reason.
    pub skipped: Vec<String>,
}

struct Doc {
    place: Place,
    value: serde_json::Value,
    text: Option<String>,
    line_offset: usize,
}

/// The objects of an input, by kind, before the cluster is built.
#[derive(Default)]
pub(crate) struct Objects {
    /// The PodnetConfig document, if any.
    pub(crate) config: Option<(Place, PodnetConfig)>,
    /// Nodes.
    pub(crate) nodes: Vec<(Place, core::Node)>,
    /// Pods.
    pub(crate) pods: Vec<(Place, core::Pod)>,
    /// Services.
    pub(crate) services: Vec<(Place, core::Service)>,
    /// EndpointSlices.
    pub(crate) slices: Vec<(Place, discovery::EndpointSlice)>,
    /// Ingresses.
    pub(crate) ingresses: Vec<(Place, networking::Ingress)>,
    /// Namespaces and their labels.
    pub(crate) namespaces: Vec<(String, crate::labels::Labels)>,
    /// Objects podnet does not model that select pods (policies, mesh authorization).
    pub(crate) unmodelled: Vec<Unmodelled>,
    /// What was recorded or skipped while reading.
    pub(crate) report: LoadReport,
}

impl Objects {
    /// The objects of YAML or JSON text (several documents, `kind: List`).
    pub(crate) fn from_text(text: &str) -> Result<Objects, LoadError> {
        let mut objs = Objects::default();
        read_text("<input>", text, &mut objs)?;
        Ok(objs)
    }

    /// The objects of files and directories (`*.yaml`, `*.yml`, `*.json`, in name order).
    pub(crate) fn from_files(paths: &[PathBuf]) -> Result<Objects, LoadError> {
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
        Ok(objs)
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
        "Namespace" => {
            let mut labels = match d.value.pointer("/metadata/labels") {
                None | Some(serde_json::Value::Null) => crate::labels::Labels::new(),
                Some(l) => serde_json::from_value(l.clone()).map_err(|e| LoadError::Parse {
                    place: d.place.clone(),
                    msg: format!("metadata.labels: {e}"),
                })?,
            };
            // The API server sets it on every namespace (NamespaceDefaultLabelName, 1.22+).
            labels.insert("kubernetes.io/metadata.name".into(), name.clone());
            objs.namespaces.push((name.clone(), labels));
            objs.report.loaded.push(format!("Namespace/{name}"));
        }
        "" => {
            return Err(LoadError::Parse { place: d.place.clone(), msg: "document has no `kind` (expected Node, Pod, Service, EndpointSlice, Ingress, Namespace, List or PodnetConfig)".into() });
        }
        other => match unmodelled::read(&api, other, &d.value) {
            Some(Ok(u)) => {
                objs.report.skipped.push(format!(
                    "{}: not modelled ({}); traces through the pods it selects carry a warning",
                    u.object,
                    u.effect.split(',').next().unwrap_or(u.effect)
                ));
                objs.unmodelled.push(u);
            }
            Some(Err(msg)) => return Err(LoadError::Parse { place: d.place.clone(), msg }),
            None => objs.report.skipped.push(format!("{other}/{name}: kind not modelled, skipped")),
        },
    }
    Ok(())
}

/// A refusal of the cluster for `object` at `place`.
pub(crate) fn refused(place: &Place, object: &str, error: ClusterError) -> LoadError {
    LoadError::Refused { place: place.clone(), object: object.into(), error: Box::new(error) }
}

/// An object at `place` that cannot be modelled as it stands.
pub(crate) fn obj_err(place: &Place, object: String, msg: impl Into<String>) -> LoadError {
    LoadError::Object { place: place.clone(), object, msg: msg.into() }
}

/// A Kubernetes `protocol` field (TCP when absent).
pub(crate) fn proto(p: &Option<String>) -> Proto {
    match p.as_deref() {
        Some("UDP") => Proto::UDP,
        Some("SCTP") => Proto::SCTP,
        _ => Proto::TCP,
    }
}
