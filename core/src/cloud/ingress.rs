//! Ingress: the object, an ALB per Ingress as the AWS Load Balancer Controller builds it
//! (instance mode: its targets are every node's nodePort), and in-cluster Ingress controllers
//! (ingress-nginx style) serving the Ingresses of their class from a pod. Both run the L7
//! proxy of the [`host`](crate::host) layer; here is what configures it.

use std::net::Ipv4Addr;

use podnet_netfilter::Proto;

use crate::cni::CniState;
use crate::error::ClusterError;
use crate::host::l7::{AlbRule, Matching, order_rules};
use crate::host::{Hosts, L7Spec};
use crate::ids::PodId;
use crate::kube_proxy::{EndpointSlice, Services};
use crate::world::{Owner, World};

pub use crate::host::l7::PathType;

use super::gateway::attach_to_vpc;
use super::{Alb, Edge, IngressController, Vpc};

/// One path of an Ingress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressPath {
    /// The path.
    pub path: String,
    /// Its type.
    pub path_type: PathType,
    /// Backend Service name (same namespace).
    pub service: String,
    /// Backend Service port (number or name).
    pub port: String,
}

/// One rule of an Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressRule {
    /// `host`, if any.
    pub host: Option<String>,
    /// Paths.
    pub paths: Vec<IngressPath>,
}

/// One entry of an Ingress's `tls` section (recorded; TLS itself is not terminated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressTls {
    /// `hosts`.
    pub hosts: Vec<String>,
    /// `secretName`.
    pub secret_name: Option<String>,
}

/// An Ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ingress {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `ingressClassName` (or the `kubernetes.io/ingress.class` annotation).
    pub class: Option<String>,
    /// Rules, in manifest order.
    pub rules: Vec<IngressRule>,
    /// `defaultBackend` (Service, port).
    pub default_backend: Option<(String, String)>,
    /// The `tls` section.
    pub tls: Vec<IngressTls>,
}

impl Edge {
    /// Adds an ALB for an Ingress, as the AWS Load Balancer Controller builds it (figure 12):
    /// one listener (port 80), one target group per Service named by the Ingress (instance
    /// mode: every node's nodePort), one rule per path, ordered as the controller orders them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_alb(
        &mut self,
        w: &mut World,
        hosts: &mut Hosts,
        cni: &mut CniState,
        services: &Services,
        net: &Vpc,
        ingress: Ingress,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), ClusterError> {
        cni.take_vpc_address(private_ip)?;
        let ns =
            w.add_netns(&format!("lb/{}/{}", ingress.namespace, ingress.name), Owner::Host, false);
        attach_to_vpc(w, net, ns, "eth0", private_ip);
        w.netns[ns.idx()].ports.insert((Proto::TCP, 80), "listener".into());
        let rules = alb_rules(w, services, &ingress)?;
        let spec =
            L7Spec { port: 80, matching: Matching::Alb, rules: rules.clone(), default: None };
        hosts.set_l7(ns, spec);
        self.albs.push(Alb { ingress, public_ip, private_ip, netns: ns, rules });
        self.sync_igw(w, net);
        Ok(())
    }

    /// Makes pod `NS/NAME` an Ingress controller for `class`, listening on `port` (the pod
    /// must expose it as a containerPort).
    pub(crate) fn add_ingress_controller(
        &mut self,
        w: &World,
        hosts: &mut Hosts,
        pod: PodId,
        class: &str,
        port: u16,
    ) -> Result<(), ClusterError> {
        let p = &w.pods[pod.idx()];
        let key = format!("{}/{}", p.namespace, p.name);
        if !w.netns[p.netns.idx()].ports.contains_key(&(Proto::TCP, port)) {
            return Err(ClusterError::Refused {
                what: format!("pod {key} does not listen on TCP port {port}"),
                fix: "declare it as a containerPort of the controller container",
            });
        }
        if self.controllers.iter().any(|c| c.class == class) {
            return Err(ClusterError::Duplicate {
                kind: "ingress controller for class",
                name: class.into(),
            });
        }
        self.controllers.push(IngressController {
            pod: key,
            class: class.into(),
            port,
            rules: Vec::new(),
            default_backend: None,
        });
        hosts.reset(p.netns);
        Ok(())
    }

    /// Adds an Ingress for the in-cluster controllers (see [`Cluster::add_alb`] for the
    /// ALB). Backends that do not exist (yet) answer 503, as ingress-nginx does.
    pub(crate) fn add_ingress(&mut self, ingress: Ingress) -> Result<(), ClusterError> {
        crate::kube_proxy::dns_label("namespace", &ingress.namespace, false)?;
        if self.ingresses.iter().any(|i| i.namespace == ingress.namespace && i.name == ingress.name)
        {
            return Err(ClusterError::Duplicate {
                kind: "ingress",
                name: format!("{}/{}", ingress.namespace, ingress.name),
            });
        }
        self.ingresses.push(ingress);
        Ok(())
    }

    /// Recomputes each controller's rules and endpoints from its Ingresses and the current
    /// EndpointSlices, as the controller does on every change it watches.
    pub(crate) fn sync_ingress_controllers(
        &mut self,
        w: &World,
        hosts: &mut Hosts,
        services: &Services,
        slices: &[EndpointSlice],
    ) {
        if self.controllers.is_empty() {
            return;
        }
        let targets = |ns: &str, svc: &str, port: &str| -> Vec<(Ipv4Addr, u16)> {
            let Some(s) = services.list.iter().find(|s| s.namespace == ns && s.name == svc) else {
                return Vec::new();
            };
            let Some(p) = s.ports.iter().find(|p| p.name == port || p.port.to_string() == port)
            else {
                return Vec::new();
            };
            slices
                .iter()
                .filter(|sl| sl.namespace == ns && sl.service == svc)
                .flat_map(|sl| {
                    let ep_port = sl
                        .ports
                        .iter()
                        .find(|(n, proto, _)| *n == p.name && *proto == p.protocol)
                        .map(|(_, _, n)| *n);
                    sl.endpoints
                        .iter()
                        .filter(|e| e.ready.unwrap_or(true))
                        .filter_map(move |e| ep_port.map(|n| (e.ip, n)))
                })
                .collect()
        };
        let default_class = self.controllers[0].class.clone();
        let mut updated = Vec::new();
        for ctl in &self.controllers {
            let mut rules = Vec::new();
            let mut default_backend = None;
            for ing in self
                .ingresses
                .iter()
                .filter(|i| i.class.as_deref().unwrap_or(default_class.as_str()) == ctl.class)
            {
                for r in &ing.rules {
                    for p in &r.paths {
                        rules.push(AlbRule {
                            host: r.host.clone(),
                            path: p.path.clone(),
                            path_type: p.path_type,
                            target_group: format!("{}/{}:{}", ing.namespace, p.service, p.port),
                            targets: targets(&ing.namespace, &p.service, &p.port),
                        });
                    }
                }
                if default_backend.is_none()
                    && let Some((svc, port)) = &ing.default_backend
                {
                    default_backend = Some(AlbRule {
                        host: None,
                        path: "/".into(),
                        path_type: PathType::Prefix,
                        target_group: format!("{}/{svc}:{port}", ing.namespace),
                        targets: targets(&ing.namespace, svc, port),
                    });
                }
            }
            updated.push((rules, default_backend));
        }
        for (i, (rules, default_backend)) in updated.into_iter().enumerate() {
            let ctl = &mut self.controllers[i];
            ctl.rules = rules;
            ctl.default_backend = default_backend;
            let Some((pns, pname)) = self.controllers[i].pod.split_once('/') else { continue };
            let Some(id) = w.pod_named(pns, pname) else {
                continue;
            };
            let ns = w.pods[id.idx()].netns;
            let ctl = &self.controllers[i];
            let spec = L7Spec {
                port: ctl.port,
                matching: Matching::Kubernetes,
                rules: ctl.rules.clone(),
                default: ctl.default_backend.clone(),
            };
            hosts.set_l7(ns, spec);
        }
    }
}

fn alb_rules(w: &World, services: &Services, ing: &Ingress) -> Result<Vec<AlbRule>, ClusterError> {
    let mut rules = Vec::new();
    let target = |svc: &str, port: &str| -> Result<(String, Vec<(Ipv4Addr, u16)>), ClusterError> {
        let s = services
            .list
            .iter()
            .find(|s| s.namespace == ing.namespace && s.name == svc)
            .ok_or_else(|| ClusterError::NotFound {
                kind: "service",
                name: format!(
                    "{}/{svc} (backend of ingress {}/{})",
                    ing.namespace, ing.namespace, ing.name
                ),
                known: Vec::new(),
                fix: None,
            })?;
        let p = s.ports.iter().find(|p| p.name == port || p.port.to_string() == port).ok_or_else(
            || ClusterError::NotFound {
                kind: "service port",
                name: format!("{}/{svc}:{port}", ing.namespace),
                known: Vec::new(),
                fix: None,
            },
        )?;
        if p.node_port == 0 {
            return Err(ClusterError::NotFound {
                kind: "nodePort",
                name: format!("{}/{svc}:{port}", ing.namespace),
                known: Vec::new(),
                fix: Some("target type instance needs a NodePort or LoadBalancer Service"),
            });
        }
        Ok((
            format!("{}/{svc}:{port}", ing.namespace),
            w.nodes.iter().map(|n| (n.ip, p.node_port)).collect(),
        ))
    };
    for r in &ing.rules {
        for p in &r.paths {
            let (tg, targets) = target(&p.service, &p.port)?;
            rules.push(AlbRule {
                host: r.host.clone(),
                path: p.path.clone(),
                path_type: p.path_type,
                target_group: tg,
                targets,
            });
        }
    }
    order_rules(&mut rules);
    if let Some((svc, port)) = &ing.default_backend {
        let (tg, targets) = target(svc, port)?;
        rules.push(AlbRule {
            host: None,
            path: "/*".into(),
            path_type: PathType::ImplementationSpecific,
            target_group: tg,
            targets,
        });
    }
    Ok(rules)
}
