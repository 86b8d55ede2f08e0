//! What podnet loaded and allocated, as `kubectl get` shows it: nodes, pods, Services and
//! endpoints, as a table (`-o wide` for more columns) or as Kubernetes objects in JSON or
//! YAML (a `v1` `List`, which podnet loads back).
//!
//! Tables follow kubectl's printers (`pkg/printers/internalversion`): upper-case headers,
//! columns padded by three spaces, `<none>` for an empty value, a Service's ports as
//! `80/TCP` or `80:30080/TCP`, endpoints as `IP:PORT` with only the first three shown and
//! `+ N more...` after them. Columns kubectl shows that podnet has no value for (AGE,
//! RESTARTS, VERSION) are left out rather than made up.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cluster::Cluster;
use crate::error::UnknownValue;
use crate::kube_proxy::{EndpointSlice, Service, ServiceType, TargetPort};
use podnet_netfilter::Proto;

/// What `podnet get` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Nodes: address, pod CIDR, pods.
    Nodes,
    /// Pods: address, node, readiness.
    Pods,
    /// Services: type, ClusterIP, external addresses, ports and nodePorts.
    Services,
    /// Endpoints: each Service's ready addresses (not-ready ones with `-o wide`).
    Endpoints,
}

impl FromStr for Resource {
    type Err = UnknownValue;

    /// kubectl's names, singular and plural, and its short names (`no`, `po`, `svc`, `ep`).
    fn from_str(s: &str) -> Result<Resource, UnknownValue> {
        Ok(match s {
            "nodes" | "node" | "no" => Resource::Nodes,
            "pods" | "pod" | "po" => Resource::Pods,
            "services" | "service" | "svc" => Resource::Services,
            "endpoints" | "endpoint" | "ep" => Resource::Endpoints,
            _ => {
                return Err(UnknownValue {
                    what: "resource",
                    value: s.into(),
                    expected: "nodes, pods, services or endpoints",
                });
            }
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Nodes => "nodes",
            Resource::Pods => "pods",
            Resource::Services => "services",
            Resource::Endpoints => "endpoints",
        })
    }
}

/// How `podnet get` prints (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// kubectl's table.
    #[default]
    Table,
    /// The table with more columns (`-o wide`).
    Wide,
    /// A `v1` `List` in JSON (`-o json`).
    Json,
    /// A `v1` `List` in YAML (`-o yaml`).
    Yaml,
}

impl FromStr for Output {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Output, UnknownValue> {
        Ok(match s {
            "wide" => Output::Wide,
            "json" => Output::Json,
            "yaml" => Output::Yaml,
            _ => {
                return Err(UnknownValue {
                    what: "output format",
                    value: s.into(),
                    expected: "wide, json or yaml",
                });
            }
        })
    }
}

impl Cluster {
    /// The cluster's `resource`, as `kubectl get` prints it with `output`.
    pub fn get(&self, resource: Resource, output: Output) -> String {
        let wide = output == Output::Wide;
        match output {
            Output::Table | Output::Wide => {
                let rows = match resource {
                    Resource::Nodes => self.node_rows(wide),
                    Resource::Pods => self.pod_rows(wide),
                    Resource::Services => self.service_rows(wide),
                    Resource::Endpoints => self.endpoint_rows(wide),
                };
                table(&rows)
            }
            Output::Json | Output::Yaml => {
                let items: Vec<serde_json::Value> = match resource {
                    Resource::Nodes => self.node_objects(),
                    Resource::Pods => self.pod_objects(),
                    Resource::Services => self.service_objects(),
                    Resource::Endpoints => self.endpoints_objects(),
                };
                let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                if output == Output::Json {
                    serde_json::to_string_pretty(&list).expect("JSON values serialise") + "\n"
                } else {
                    serde_norway::to_string(&list).expect("JSON values serialise as YAML")
                }
            }
        }
    }

    /// The Services, in the order they were created.
    pub fn services(&self) -> &[Service] {
        &self.services.list
    }

    fn node_rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut head = vec!["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR", "PODS"];
        if wide {
            head.extend(["EXTERNAL-IP", "MAX-PODS"]);
        }
        let mut rows = vec![head.into_iter().map(String::from).collect()];
        for n in &self.world.nodes {
            let pods = n.pods.iter().filter(|p| !self.world.pods[p.idx()].deleted).count();
            let mut r = vec![
                n.name.clone(),
                "Ready".into(),
                n.ip.to_string(),
                n.pod_cidr.to_string(),
                pods.to_string(),
            ];
            if wide {
                r.push(
                    self.edge.public_ips.get(&n.name).map_or("<none>".into(), |i| i.to_string()),
                );
                r.push(n.max_pods.to_string());
            }
            rows.push(r);
        }
        rows
    }

    fn pod_rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut head = vec!["NAMESPACE", "NAME", "READY", "STATUS", "IP", "NODE"];
        if wide {
            head.extend(["HOST-NETWORK", "LABELS"]);
        }
        let mut rows = vec![head.into_iter().map(String::from).collect()];
        for p in self.world.pods.iter().filter(|p| !p.deleted) {
            let n = p.containers.len().max(1);
            let mut r = vec![
                p.namespace.clone(),
                p.name.clone(),
                format!("{}/{n}", if p.ready { n } else { 0 }),
                if p.terminating { "Terminating" } else { "Running" }.into(),
                p.ip.to_string(),
                self.world.nodes[p.node.idx()].name.clone(),
            ];
            if wide {
                r.push(p.host_network.to_string());
                r.push(labels_text(&p.labels));
            }
            rows.push(r);
        }
        rows
    }

    fn external_ips(&self, s: &Service) -> Vec<String> {
        let key = format!("{}/{}", s.namespace, s.name);
        let mut ips: Vec<String> = s.external_ips.iter().map(|i| i.to_string()).collect();
        ips.extend(s.lb_ips.iter().map(|i| i.to_string()));
        ips.extend(
            self.edge.lbs.iter().filter(|l| l.service == key).map(|l| l.public_ip.to_string()),
        );
        ips
    }

    fn service_rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut head = vec!["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"];
        if wide {
            head.push("SELECTOR");
        }
        let mut rows = vec![head.into_iter().map(String::from).collect()];
        for s in &self.services.list {
            let ext = self.external_ips(s);
            let ext = match (ext.is_empty(), s.kind) {
                (false, _) => ext.join(","),
                (true, ServiceType::LoadBalancer) => "<pending>".into(),
                (true, _) => "<none>".into(),
            };
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| match p.node_port {
                    0 => format!("{}/{}", p.port, upper(p.protocol)),
                    np => format!("{}:{np}/{}", p.port, upper(p.protocol)),
                })
                .collect();
            let mut r = vec![
                s.namespace.clone(),
                s.name.clone(),
                type_name(s.kind).into(),
                s.cluster_ip.map_or("None".into(), |i| i.to_string()),
                ext,
                if ports.is_empty() { "<none>".into() } else { ports.join(",") },
            ];
            if wide {
                r.push(s.selector.as_ref().map_or("<none>".into(), labels_text));
            }
            rows.push(r);
        }
        rows
    }

    /// A Service's endpoints as kubectl's Endpoints have them: (ready, not ready) addresses
    /// with ports, over all its slices.
    fn endpoint_lists(&self, s: &Service, slices: &[EndpointSlice]) -> (Vec<String>, Vec<String>) {
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for sl in slices.iter().filter(|sl| sl.namespace == s.namespace && sl.service == s.name) {
            // kubectl's formatEndpoints: each port, then each address.
            for (_, _, port) in &sl.ports {
                for e in &sl.endpoints {
                    let into = if e.ready.unwrap_or(true) { &mut ready } else { &mut not_ready };
                    into.push(format!("{}:{port}", e.ip));
                }
            }
        }
        (ready, not_ready)
    }

    fn endpoint_rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut head = vec!["NAMESPACE", "NAME", "ENDPOINTS"];
        if wide {
            head.push("NOT-READY");
        }
        let mut rows = vec![head.into_iter().map(String::from).collect()];
        let slices = self.endpoint_slices();
        for s in &self.services.list {
            let (ready, not_ready) = self.endpoint_lists(s, &slices);
            let list = |v: &[String], all: bool| -> String {
                // kubectl's formatEndpoints: the first three, then "+ N more...".
                match v.len() {
                    0 => "<none>".into(),
                    n if n > 3 && !all => format!("{} + {} more...", v[..3].join(","), n - 3),
                    _ => v.join(","),
                }
            };
            let mut r = vec![s.namespace.clone(), s.name.clone(), list(&ready, wide)];
            if wide {
                r.push(list(&not_ready, true));
            }
            rows.push(r);
        }
        rows
    }

    fn node_objects(&self) -> Vec<serde_json::Value> {
        self.world
            .nodes
            .iter()
            .map(|n| {
                let mut addresses = vec![core::NodeAddress {
                    type_: "InternalIP".into(),
                    address: n.ip.to_string(),
                }];
                if let Some(p) = self.edge.public_ips.get(&n.name) {
                    addresses.push(core::NodeAddress {
                        type_: "ExternalIP".into(),
                        address: p.to_string(),
                    });
                }
                let node = core::Node {
                    metadata: ObjectMeta { name: Some(n.name.clone()), ..Default::default() },
                    spec: Some(core::NodeSpec {
                        pod_cidr: Some(n.pod_cidr.to_string()),
                        pod_cidrs: Some(vec![n.pod_cidr.to_string()]),
                        ..Default::default()
                    }),
                    status: Some(core::NodeStatus {
                        addresses: Some(addresses),
                        capacity: Some(BTreeMap::from([(
                            "pods".to_string(),
                            k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                                n.max_pods.to_string(),
                            ),
                        )])),
                        conditions: Some(vec![core::NodeCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                };
                with_kind(&node, "Node")
            })
            .collect()
    }

    fn pod_objects(&self) -> Vec<serde_json::Value> {
        self.world
            .pods
            .iter()
            .filter(|p| !p.deleted)
            .map(|p| {
                let containers = p
                    .containers
                    .iter()
                    .map(|c| {
                        let mut ports: Vec<core::ContainerPort> = c
                            .named_ports
                            .iter()
                            .map(|(name, proto, port)| core::ContainerPort {
                                name: Some(name.clone()),
                                protocol: Some(upper(*proto)),
                                container_port: i32::from(*port),
                                ..Default::default()
                            })
                            .collect();
                        for (proto, port) in &c.ports {
                            if !c.named_ports.iter().any(|(_, pr, po)| pr == proto && po == port) {
                                ports.push(core::ContainerPort {
                                    protocol: Some(upper(*proto)),
                                    container_port: i32::from(*port),
                                    ..Default::default()
                                });
                            }
                        }
                        core::Container {
                            name: c.name.clone(),
                            ports: (!ports.is_empty()).then_some(ports),
                            ..Default::default()
                        }
                    })
                    .collect();
                let node = &self.world.nodes[p.node.idx()];
                let pod = core::Pod {
                    metadata: ObjectMeta {
                        name: Some(p.name.clone()),
                        namespace: Some(p.namespace.clone()),
                        labels: (!p.labels.is_empty()).then(|| p.labels.clone()),
                        deletion_timestamp: None,
                        ..Default::default()
                    },
                    spec: Some(core::PodSpec {
                        node_name: Some(node.name.clone()),
                        host_network: p.host_network.then_some(true),
                        containers,
                        ..Default::default()
                    }),
                    status: Some(core::PodStatus {
                        phase: Some("Running".into()),
                        pod_ip: Some(p.ip.to_string()),
                        pod_ips: Some(vec![core::PodIP { ip: p.ip.to_string() }]),
                        host_ip: Some(node.ip.to_string()),
                        conditions: Some(vec![core::PodCondition {
                            type_: "Ready".into(),
                            status: if p.ready { "True" } else { "False" }.into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                };
                let mut v = with_kind(&pod, "Pod");
                if p.terminating {
                    // A terminating pod has a deletionTimestamp; podnet keeps no clock of
                    // wall time, so the epoch stands in for it.
                    v["metadata"]["deletionTimestamp"] = "1970-01-01T00:00:00Z".into();
                }
                v
            })
            .collect()
    }

    fn service_objects(&self) -> Vec<serde_json::Value> {
        self.services
            .list
            .iter()
            .map(|s| {
                let ports = s
                    .ports
                    .iter()
                    .map(|p| core::ServicePort {
                        name: (!p.name.is_empty()).then(|| p.name.clone()),
                        protocol: Some(upper(p.protocol)),
                        port: i32::from(p.port),
                        target_port: Some(match &p.target_port {
                            TargetPort::Number(n) => IntOrString::Int(i32::from(*n)),
                            TargetPort::Name(n) => IntOrString::String(n.clone()),
                        }),
                        node_port: (p.node_port != 0).then_some(i32::from(p.node_port)),
                        ..Default::default()
                    })
                    .collect();
                let external = s.kind != ServiceType::ClusterIp;
                let lb_ingress: Vec<core::LoadBalancerIngress> = s
                    .lb_ips
                    .iter()
                    .map(|i| i.to_string())
                    .chain(
                        self.edge
                            .lbs
                            .iter()
                            .filter(|l| l.service == format!("{}/{}", s.namespace, s.name))
                            .map(|l| l.public_ip.to_string()),
                    )
                    .map(|ip| core::LoadBalancerIngress { ip: Some(ip), ..Default::default() })
                    .collect();
                let svc = core::Service {
                    metadata: ObjectMeta {
                        name: Some(s.name.clone()),
                        namespace: Some(s.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(core::ServiceSpec {
                        type_: Some(type_name(s.kind).into()),
                        cluster_ip: Some(s.cluster_ip.map_or("None".into(), |i| i.to_string())),
                        cluster_ips: Some(vec![
                            s.cluster_ip.map_or("None".into(), |i| i.to_string()),
                        ]),
                        ports: Some(ports),
                        selector: s.selector.clone(),
                        external_ips: (!s.external_ips.is_empty())
                            .then(|| s.external_ips.iter().map(|i| i.to_string()).collect()),
                        external_traffic_policy: external
                            .then(|| if s.external_local { "Local" } else { "Cluster" }.into()),
                        internal_traffic_policy: Some(
                            if s.internal_local { "Local" } else { "Cluster" }.into(),
                        ),
                        session_affinity: Some(
                            if s.affinity_timeout.is_some() { "ClientIP" } else { "None" }.into(),
                        ),
                        session_affinity_config: s.affinity_timeout.map(|t| {
                            core::SessionAffinityConfig {
                                client_ip: Some(core::ClientIPConfig {
                                    timeout_seconds: Some(t as i32),
                                }),
                            }
                        }),
                        health_check_node_port: (s.health_check_node_port != 0)
                            .then_some(i32::from(s.health_check_node_port)),
                        load_balancer_source_ranges: (!s.lb_source_ranges.is_empty())
                            .then(|| s.lb_source_ranges.iter().map(|r| r.to_string()).collect()),
                        ..Default::default()
                    }),
                    status: (!lb_ingress.is_empty()).then(|| core::ServiceStatus {
                        load_balancer: Some(core::LoadBalancerStatus { ingress: Some(lb_ingress) }),
                        ..Default::default()
                    }),
                };
                with_kind(&svc, "Service")
            })
            .collect()
    }

    fn endpoints_objects(&self) -> Vec<serde_json::Value> {
        let slices = self.endpoint_slices();
        self.services
            .list
            .iter()
            .map(|s| {
                let mut subsets = Vec::new();
                for sl in
                    slices.iter().filter(|sl| sl.namespace == s.namespace && sl.service == s.name)
                {
                    let addr = |e: &crate::kube_proxy::SliceEndpoint| core::EndpointAddress {
                        ip: e.ip.to_string(),
                        node_name: e.node_name.clone(),
                        ..Default::default()
                    };
                    let ready: Vec<_> =
                        sl.endpoints.iter().filter(|e| e.ready.unwrap_or(true)).map(addr).collect();
                    let not_ready: Vec<_> = sl
                        .endpoints
                        .iter()
                        .filter(|e| !e.ready.unwrap_or(true))
                        .map(addr)
                        .collect();
                    subsets.push(core::EndpointSubset {
                        addresses: (!ready.is_empty()).then_some(ready),
                        not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                        ports: Some(
                            sl.ports
                                .iter()
                                .map(|(name, proto, port)| core::EndpointPort {
                                    name: (!name.is_empty()).then(|| name.clone()),
                                    protocol: Some(upper(*proto)),
                                    port: i32::from(*port),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                    });
                }
                let ep = core::Endpoints {
                    metadata: ObjectMeta {
                        name: Some(s.name.clone()),
                        namespace: Some(s.namespace.clone()),
                        ..Default::default()
                    },
                    subsets: (!subsets.is_empty()).then_some(subsets),
                };
                with_kind(&ep, "Endpoints")
            })
            .collect()
    }
}

/// An object's JSON with `apiVersion: v1` and `kind` first, as kubectl prints it.
fn with_kind<T: serde::Serialize>(obj: &T, kind: &str) -> serde_json::Value {
    let body = serde_json::to_value(obj).expect("Kubernetes types serialise");
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), "v1".into());
    out.insert("kind".into(), kind.into());
    if let serde_json::Value::Object(m) = body {
        out.extend(m);
    }
    serde_json::Value::Object(out)
}

fn upper(p: Proto) -> String {
    p.to_string().to_uppercase()
}

fn type_name(t: ServiceType) -> &'static str {
    match t {
        ServiceType::ClusterIp => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "<none>".into();
    }
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Rows as kubectl's tab writer prints them: each column as wide as its widest cell, three
/// spaces between columns, no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
