//! Loading a cluster from Kubernetes objects: what `kubectl get -o yaml` (or `-o json`)
//! prints, multi-document files, `kind: List`, several files or directories.
//!
//! Kinds read: Node, Pod, Service, EndpointSlice, Ingress, Namespace (with its labels),
//! kube-proxy's configuration (`kube_proxy_config`: a KubeProxyConfiguration, or the
//! `kube-system/kube-proxy` ConfigMap holding one), plus the policies and mesh authorization
//! podnet does not model yet ([`Unmodelled`]: kept with the pods they select, so traces
//! through those pods carry a warning), and an optional podnet document (`apiVersion:
//! podnet.dev/v1alpha1`, `kind: PodnetConfig`) for what Kubernetes objects do not say:
//! `nodeSubnets` (`[{cidr, router}]`) or `nodeSubnet` and `vpcRouter` (a subnet's router
//! defaults to its first host address), `clusterCidr`, `serviceCidr`,
//! `serviceNodePortRange`, `proxyMode` (iptables or ipvs), `ipvsScheduler` (rr) and `seed`
//! (0); `cni` (`bridge`, or `aws-vpc` for the AWS VPC CNI, with `instanceType` (m5.large),
//! `warmEniTarget`, `warmIpTarget`, `minimumIpTarget`, `enablePrefixDelegation`,
//! `warmPrefixTarget`, `externalSnat` and `maxPods`). In the AWS profile nodes need no
//! podCIDR, `nodeSubnet` is the VPC subnet pods take addresses from, and ipamd assigns pod
//! addresses. What the PodnetConfig does not give is inferred from the objects (`infer`:
//! node subnets, the cluster and Service CIDRs, the NodePort range) and said in the load
//! report. Type errors name the field path (`items[6].spec.ports[0].port`), the line and the
//! column; fields a schema does not know are reported as warnings, as `kubectl apply
//! --validate=strict` reports them.
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
pub(crate) mod infer;
pub(crate) mod kube_proxy_config;
pub(crate) mod netpol;
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
pub(crate) use infer::infer;
pub(crate) use kube_proxy_config::KubeProxyConfig;
pub(crate) use objects::{PodDecision, endpoint_slice, ingress, node, pod, service, target_ports};
pub use unmodelled::{NamespaceScope, Unmodelled};

/// What was loaded, and what was not.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    /// `Kind/ns/name` of every object used.
    pub loaded: Vec<String>,
    /// Objects skipped, with the reason.
    pub skipped: Vec<String>,
    /// Settings inferred from the objects (node subnets, cluster and Service CIDRs, the
    /// NodePort range), each with the PodnetConfig field that overrides it.
    pub inferred: Vec<String>,
    /// What `kubectl apply --validate=strict` or kube-proxy would flag, with the object and
    /// the field: unknown fields, a Service selecting no pod, a named targetPort no selected
    /// pod declares, an input without objects.
    pub warnings: Vec<String>,
}

struct Doc {
    place: Place,
    value: serde_json::Value,
    text: Option<String>,
    line_offset: usize,
    /// For an item of a `List` document: the List's text, its line offset and the index.
    list: Option<(std::rc::Rc<String>, usize, usize)>,
}

/// The objects of an input, by kind, before the cluster is built.
#[derive(Default)]
pub(crate) struct Objects {
    /// The PodnetConfig document, if any.
    pub(crate) config: Option<(Place, PodnetConfig)>,
    /// kube-proxy's configuration (a KubeProxyConfiguration, or the kube-proxy ConfigMap's),
    /// with the object it came from.
    pub(crate) kube_proxy: Option<(Place, String, KubeProxyConfig)>,
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
    /// NetworkPolicies, read in full.
    pub(crate) network_policies: Vec<crate::policy::NetworkPolicy>,
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
        let place = Place { file: file.into(), doc: i + 1, line: None, column: None, field: None };
        let value: serde_json::Value =
            serde_norway::from_str(&doc).map_err(|e| parse_error(&place, offset, &e))?;
        if value.is_null() {
            continue;
        }
        let d = Doc { place, value, text: Some(doc), line_offset: offset, list: None };
        classify(d, objs)?;
    }
    Ok(())
}

fn parse_error(place: &Place, offset: usize, e: &serde_norway::Error) -> LoadError {
    let mut p = place.clone();
    if let Some(loc) = e.location() {
        p.line = u32::try_from(loc.line() + offset).ok();
        p.column = u32::try_from(loc.column()).ok();
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

/// A typed object, with the fields its schema does not know recorded as warnings (as
/// `kubectl apply --validate=strict` reports them).
fn typed_linted<T: serde::de::DeserializeOwned + serde::Serialize>(
    d: &Doc,
    objs: &mut Objects,
) -> Result<T, LoadError> {
    let v: T = typed(d)?;
    if let Ok(known) = serde_json::to_value(&v) {
        let mut unknown = Vec::new();
        unknown_fields(&d.value, &known, "", &mut unknown);
        let kind = d.value.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        let ns = d.value.pointer("/metadata/namespace").and_then(|k| k.as_str());
        let name = d.value.pointer("/metadata/name").and_then(|k| k.as_str()).unwrap_or("?");
        let obj = match ns {
            Some(ns) => format!("{kind}/{ns}/{name}"),
            None => format!("{kind}/{name}"),
        };
        for f in unknown {
            objs.report.warnings.push(format!(
                "{obj}: unknown field \"{f}\" ({}; kubectl apply --validate=strict rejects it)",
                d.place
            ));
        }
    }
    Ok(v)
}

fn typed<T: serde::de::DeserializeOwned>(d: &Doc) -> Result<T, LoadError> {
    // The document is already a value: read the type from it, and go back to the text only
    // to say where a problem is (the field path, the line and the column).
    match T::deserialize(&d.value) {
        Ok(v) => Ok(v),
        Err(e) => Err(located::<T>(d).unwrap_or_else(|| {
            let (field, msg) = match serde_path_to_error::deserialize::<_, T>(&d.value) {
                Err(pe) if !pe.path().to_string().is_empty() && pe.path().to_string() != "." => {
                    (Some(pe.path().to_string()), pe.inner().to_string())
                }
                _ => (None, e.to_string()),
            };
            let mut place = d.place.clone();
            place.field = field.clone();
            LoadError::Parse {
                place,
                msg: match field {
                    Some(f) => format!("{f}: {msg}"),
                    None => msg,
                },
            }
        })),
    }
}

/// The paths of `input` that `known` (the same object after a round trip through its typed
/// schema) lacks; null values are absent either way and not counted.
fn unknown_fields(
    input: &serde_json::Value,
    known: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match k.get(key) {
                    None => out.push(p),
                    Some(kv) => unknown_fields(v, kv, &p, out),
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (v, kv)) in i.iter().zip(k).enumerate() {
                unknown_fields(v, kv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Where in the document's text deserializing `T` fails: the field path and the line and
/// column, re-reading the text (a `List` item by its index) with serde_norway, which tracks
/// positions.
fn located<T: serde::de::DeserializeOwned>(d: &Doc) -> Option<LoadError> {
    let (text, offset, item) = match (&d.text, &d.list) {
        (Some(t), _) => (t.as_str(), d.line_offset, None),
        (None, Some((t, offset, j))) => (t.as_str(), *offset, Some(*j)),
        (None, None) => return None,
    };
    let de = serde_norway::Deserializer::from_str(text);
    let r = match item {
        None => serde_path_to_error::deserialize::<_, T>(de).map(|_| ()),
        Some(j) => {
            let mut track = serde_path_to_error::Track::new();
            let res = serde::de::DeserializeSeed::deserialize(
                ListItem::<T> { index: j, _t: std::marker::PhantomData },
                serde_path_to_error::Deserializer::new(de, &mut track),
            );
            res.map_err(|e| serde_path_to_error::Error::new(track.path(), e))
        }
    };
    let e = r.err()?;
    let path = e.path().to_string();
    let inner = e.into_inner();
    let mut place = d.place.clone();
    if let Some(loc) = inner.location() {
        place.line = u32::try_from(loc.line() + offset).ok();
        place.column = u32::try_from(loc.column()).ok();
    }
    let msg = inner.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let path = (!path.is_empty() && path != ".").then_some(path);
    place.field = path.clone();
    Some(LoadError::Parse {
        place,
        // serde_norway names the path itself in most messages.
        msg: match path {
            Some(p) if !msg.starts_with(&p) => format!("{p}: {msg}"),
            _ => msg,
        },
    })
}

/// Deserializes item `index` of a `List` document's `items` as `T`, skipping everything
/// else, so that an error in it carries the text's position.
struct ListItem<T> {
    index: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for ListItem<T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ListItem<T> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a List")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let index = self.index;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(Items::<T> { index, _t: std::marker::PhantomData })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Items<T> {
    index: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for Items<T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Items<T> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            seq.next_element::<serde::de::IgnoredAny>()?;
        }
        seq.next_element::<T>()?;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
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
            let text = d.text.map(std::rc::Rc::new);
            for (j, item) in items.into_iter().enumerate() {
                let place =
                    Place { file: format!("{} (items[{j}])", d.place.file), ..d.place.clone() };
                let list = text.clone().map(|t| (t, d.line_offset, j));
                classify(Doc { place, value: item, text: None, line_offset: 0, list }, objs)?;
            }
        }
        "PodnetConfig" if api.starts_with("podnet.dev/") => {
            objs.config = Some((d.place.clone(), typed(&d)?))
        }
        "Node" => {
            let v = typed_linted(&d, objs)?;
            objs.nodes.push((d.place.clone(), v))
        }
        "Pod" => {
            let v = typed_linted(&d, objs)?;
            objs.pods.push((d.place.clone(), v))
        }
        "Service" => {
            let v = typed_linted(&d, objs)?;
            objs.services.push((d.place.clone(), v))
        }
        "EndpointSlice" => {
            let v = typed_linted(&d, objs)?;
            objs.slices.push((d.place.clone(), v))
        }
        "Ingress" => {
            let v = typed_linted(&d, objs)?;
            objs.ingresses.push((d.place.clone(), v))
        }
        "KubeProxyConfiguration" if api.starts_with("kubeproxy.config.k8s.io/") => {
            let what = "KubeProxyConfiguration".to_string();
            let kpc = kube_proxy_config::read(&d.place, &what, &d.value)?;
            set_kube_proxy(objs, &d.place, what, kpc)?;
        }
        "ConfigMap"
            if d.value.pointer("/metadata/namespace").and_then(|n| n.as_str())
                == Some("kube-system")
                && matches!(name.as_str(), "kube-proxy" | "kube-proxy-config") =>
        {
            let what = format!("ConfigMap/kube-system/{name}");
            let key = ["config.conf", "config"]
                .into_iter()
                .find(|k| d.value.pointer(&format!("/data/{k}")).is_some());
            let text = key.and_then(|k| d.value.get("data")?.get(k)?.as_str());
            match text {
                None => objs.report.skipped.push(format!(
                    "{what}: no data key config.conf (or config) holding a KubeProxyConfiguration, skipped"
                )),
                Some(text) => {
                    let key = key.expect("found");
                    let v: serde_json::Value = serde_norway::from_str(text).map_err(|e| {
                        obj_err(&d.place, what.clone(), format!("data.{key}: {e}"))
                    })?;
                    if v.get("kind").and_then(|k| k.as_str()) != Some("KubeProxyConfiguration") {
                        return Err(obj_err(
                            &d.place,
                            what,
                            format!("data.{key} is not a KubeProxyConfiguration (kind: KubeProxyConfiguration)"),
                        ));
                    }
                    let kpc = kube_proxy_config::read(&d.place, &format!("{what} data.{key}"), &v)?;
                    set_kube_proxy(objs, &d.place, what, kpc)?;
                }
            }
        }
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
                // NetworkPolicies are read in full and enforced (see `policy`).
                if other == "NetworkPolicy" && api == "networking.k8s.io/v1" {
                    let p = netpol::network_policy(&d.value).map_err(|msg| LoadError::Parse {
                        place: d.place.clone(),
                        msg: format!("{}: {msg}", u.object),
                    })?;
                    objs.network_policies.push(p);
                    objs.report.loaded.push(u.object);
                    return Ok(());
                }
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

/// Records kube-proxy's configuration; a second one is an error (which would kube-proxy run?).
fn set_kube_proxy(
    objs: &mut Objects,
    place: &Place,
    what: String,
    kpc: KubeProxyConfig,
) -> Result<(), LoadError> {
    if let Some((_, first, _)) = &objs.kube_proxy {
        return Err(obj_err(
            place,
            what,
            format!("kube-proxy's configuration is given twice (first: {first}): keep one"),
        ));
    }
    objs.report.loaded.push(what.clone());
    objs.kube_proxy = Some((place.clone(), what, kpc));
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
