//! The façade's loader: a cluster built from Kubernetes objects (what `kubectl get -o yaml`
//! prints) and a PodnetConfig document, or objects added to a running cluster. The
//! [`k8s`](crate::k8s) layer reads and converts each object; here they are applied in the
//! order a cluster comes up: nodes, Services, pods, EndpointSlices, then the cloud edge.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use k8s_openapi::api::networking::v1 as networking;

use crate::cloud::LbMode;
use crate::error::ClusterError;
use crate::ids::PodId;
use crate::k8s::{
    self, LbModeDoc, LoadError, LoadReport, Objects, Place, PodnetConfig, obj_err, refused,
};
use crate::kube_proxy::Services;

use super::{Cluster, ClusterConfig};

impl Cluster {
    /// Loads Kubernetes objects from YAML or JSON text (several documents, `kind: List`).
    pub fn from_yaml(text: &str) -> Result<(Cluster, LoadReport), LoadError> {
        Cluster::build(Objects::from_text(text)?)
    }

    /// Loads Kubernetes objects from files and directories (`*.yaml`, `*.yml`, `*.json`,
    /// in name order).
    pub fn from_files(paths: &[PathBuf]) -> Result<(Cluster, LoadReport), LoadError> {
        Cluster::build(Objects::from_files(paths)?)
    }

    /// Adds Kubernetes objects to a running cluster, as `kubectl create -f` would: nodes
    /// join, Services are admitted by the API server (a ClusterIP is allocated when none is
    /// requested, requested addresses and nodePorts are reserved or refused), scheduled pods
    /// get their address from the node's host-local IPAM when they have no status, new
    /// Services' targetPorts are served by the pods they select, and kube-proxy re-syncs
    /// every node. An object that already exists, or cannot be admitted, is an error naming
    /// it; as with `kubectl create -f`, the objects before it stay added.
    pub fn add_yaml(&mut self, text: &str) -> Result<LoadReport, LoadError> {
        let mut objs = Objects::from_text(text)?;
        if let Some((place, _)) = &objs.config {
            return Err(obj_err(
                place,
                "PodnetConfig".into(),
                "cluster settings are read only when a cluster is created (from_yaml, from_files); drop this document",
            ));
        }
        if let Some((place, what, _)) = &objs.kube_proxy {
            return Err(obj_err(
                place,
                what.clone(),
                "kube-proxy's configuration is read only when a cluster is created (from_yaml, from_files); drop this document",
            ));
        }
        let ingresses = std::mem::take(&mut objs.ingresses);
        let mut report = self.apply(objs)?;
        // Ingresses go to the in-cluster controller of their class (the first controller for
        // those without one); ALBs are set up with the cluster.
        let first_class = self.edge.controllers.first().map(|c| c.class.clone());
        for (place, ing) in ingresses {
            let (obj, ingress) = ingress_of(&place, &ing)?;
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

    /// A cluster from its objects: the PodnetConfig document's settings, the objects, then
    /// the edge it describes.
    fn build(mut objs: Objects) -> Result<(Cluster, LoadReport), LoadError> {
        let mut cfg = ClusterConfig::default();
        let s = match &objs.config {
            Some((place, pc)) => pc.settings(place)?,
            None => Default::default(),
        };
        let aws = matches!(s.cni, Some(crate::cni::Cni::AwsVpc(_)));
        // What the PodnetConfig does not say, the objects imply.
        let inferred = k8s::infer(&objs, aws);
        let mut said = Vec::new();
        let subnets = s.node_subnets.or_else(|| {
            inferred.node_subnets.map(|(v, text)| {
                said.push(text);
                v
            })
        });
        if let Some(list) = subnets {
            (cfg.node_subnet, cfg.vpc_router) = list[0];
            cfg.extra_node_subnets = list[1..].to_vec();
        }
        let mut pick = |given: Option<_>, inferred: Option<(_, String)>, default| {
            given
                .or_else(|| {
                    inferred.map(|(v, text)| {
                        said.push(text);
                        v
                    })
                })
                .unwrap_or(default)
        };
        // The cluster CIDR kube-proxy is configured with is the cluster's, unless the
        // PodnetConfig says otherwise.
        let from_kube_proxy = objs.kube_proxy.as_ref().and_then(|(_, what, k)| {
            k.cluster_cidr.map(|c| (c, format!("cluster CIDR {c} from {what} (clusterCIDR); set clusterCidr in PodnetConfig to override")))
        });
        let cluster_inferred = from_kube_proxy.or(inferred.cluster_cidr);
        cfg.cluster_cidr = pick(s.cluster_cidr, cluster_inferred, cfg.cluster_cidr);
        cfg.service_cidr = pick(s.service_cidr, inferred.service_cidr, cfg.service_cidr);
        cfg.node_port_range = match (s.node_port_range, inferred.node_port_range) {
            (Some(r), _) => r,
            (None, Some((r, text))) => {
                said.push(text);
                r
            }
            (None, None) => cfg.node_port_range,
        };
        cfg.seed = s.seed.unwrap_or(cfg.seed);
        cfg.cni = s.cni.unwrap_or(cfg.cni);
        // kube-proxy's mode: the PodnetConfig's proxyMode when given (an explicit choice),
        // else the KubeProxyConfiguration's.
        let kpc = objs.kube_proxy.take();
        let mut mode = s.proxy_mode;
        let mut kp_notes = Vec::new();
        if let Some((_, what, k)) = &kpc {
            match (s.proxy_mode_given, k.mode) {
                (false, Some(m)) => mode = m,
                (true, Some(m)) if m != mode => kp_notes.push(format!(
                    "{what}: mode {m} is overridden by the PodnetConfig's proxyMode {mode}"
                )),
                _ => {}
            }
            if !k.unmodelled.is_empty() {
                kp_notes.push(format!(
                    "{what}: fields read but not modelled (they do not change podnet's rules): {}",
                    k.unmodelled.join(", ")
                ));
            }
            if k.settings.node_port_addresses.is_some()
                && matches!(mode, crate::kube_proxy::ProxyMode::Ipvs(_))
            {
                kp_notes.push(format!("{what}: nodePortAddresses is modelled in iptables and nftables modes only; IPVS mode's NodePorts answer on every local address here"));
            }
            if mode == crate::kube_proxy::ProxyMode::Nftables
                && matches!(
                    k.settings.detect_local,
                    crate::kube_proxy::DetectLocal::InterfaceNamePrefix(_)
                )
            {
                kp_notes.push(format!("{what}: detectLocalMode InterfaceNamePrefix in nftables mode: kube-proxy writes `iif != PREFIX*`, which nft refuses (Interface does not exist), so its syncs fail and nodes run without kube-proxy's table"));
            }
        }
        let config_place = objs.config.as_ref().map(|(p, _)| p.clone());
        let mut c = Cluster::try_new(cfg).map_err(|e| match &config_place {
            Some(p) => refused(p, "PodnetConfig", e),
            None => LoadError::Parse {
                place: Place {
                    file: "<input>".into(),
                    doc: 0,
                    line: None,
                    column: None,
                    field: None,
                },
                msg: e.to_string(),
            },
        })?;
        c.services.mode = mode;
        if let Some(p) = s.policy {
            c.policy.cfg = p;
        }
        if let Some((_, _, k)) = kpc {
            c.services.settings = k.settings;
            c.services.masquerade_all = k.masquerade_all;
        }
        let edge = objs.config.clone();
        let ingresses = std::mem::take(&mut objs.ingresses);
        let mut report = c.apply(objs)?;
        report.inferred = said;
        report.skipped.extend(kp_notes);
        let policies = c.policy.policies.len();
        if policies > 0 && c.policy.cfg.enforcement == crate::policy::Enforcement::Off {
            report.skipped.push(format!(
                "NetworkPolicy: {policies} loaded, not enforced (networkPolicy.enforcement is off in the PodnetConfig)"
            ));
        }
        c.apply_edge(edge, ingresses, &mut report)?;
        Ok((c, report))
    }

    /// Adds the objects and re-syncs once, also when an object fails (the ones before it
    /// stay added).
    fn apply(&mut self, objs: Objects) -> Result<LoadReport, LoadError> {
        self.services.sync_deferred = true;
        let r = self.apply_objects(objs);
        self.services.sync_deferred = false;
        self.services_changed();
        r
    }

    fn apply_objects(&mut self, mut objs: Objects) -> Result<LoadReport, LoadError> {
        let mut report = std::mem::take(&mut objs.report);
        let empty = objs.config.is_none()
            && objs.nodes.is_empty()
            && objs.pods.is_empty()
            && objs.services.is_empty()
            && objs.slices.is_empty()
            && objs.ingresses.is_empty()
            && objs.namespaces.is_empty()
            && objs.unmodelled.is_empty()
            && objs.network_policies.is_empty();
        if empty {
            report.warnings.push(
                "the input holds no Kubernetes objects: give the output of kubectl get -A -o yaml (see the README's \"Your own cluster\")".into(),
            );
        }
        let new_namespaces = !objs.namespaces.is_empty();
        self.namespaces.extend(std::mem::take(&mut objs.namespaces));
        self.unmodelled.append(&mut objs.unmodelled);
        self.load_nodes(&objs, &mut report)?;
        // Services first: their targetPorts become listening ports of the pods they select.
        let first_new_service = self.services.list.len();
        let service_places = self.load_services(&objs, &mut report)?;
        let new_pods = self.load_pods(&objs, &mut report)?;
        self.serve_new_services(&new_pods, first_new_service, &service_places)?;
        self.load_slices(&objs, first_new_service, &mut report)?;
        report.warnings.extend(self.lint_services(first_new_service, &objs));
        if !objs.network_policies.is_empty() || new_namespaces {
            self.policy.policies.append(&mut objs.network_policies);
            self.policies_changed();
        }
        Ok(report)
    }

    /// What kube-proxy would find wrong with the new Services: a selector that selects no
    /// pod (no endpoints: kube-proxy rejects the Service's traffic), a named targetPort that
    /// no selected pod declares (kube-proxy has no endpoint for that port).
    fn lint_services(&self, first_new_service: usize, objs: &Objects) -> Vec<String> {
        let mut out = Vec::new();
        let with_slices: HashSet<(String, String)> = objs
            .slices
            .iter()
            .filter_map(|(_, s)| {
                let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let svc = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?.clone();
                Some((ns, svc))
            })
            .collect();
        for svc in &self.services.list[first_new_service..] {
            let Some(sel) = svc.selector.as_ref().filter(|s| !s.is_empty()) else { continue };
            if with_slices.contains(&(svc.namespace.clone(), svc.name.clone())) {
                continue;
            }
            let obj = format!("Service/{}/{}", svc.namespace, svc.name);
            let selected: Vec<&crate::world::Pod> = self
                .world
                .pods
                .iter()
                .filter(|p| {
                    !p.deleted
                        && p.namespace == svc.namespace
                        && sel.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .collect();
            if selected.is_empty() {
                let shown: Vec<String> = sel.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                out.push(format!(
                    "{obj}: spec.selector {{{}}} selects no pod: the Service has no endpoints and kube-proxy rejects its traffic",
                    shown.join(", ")
                ));
                continue;
            }
            for (i, p) in svc.ports.iter().enumerate() {
                if let crate::kube_proxy::TargetPort::Name(n) = &p.target_port
                    && !selected.iter().any(|pod| {
                        pod.containers.iter().any(|c| {
                            c.named_ports
                                .iter()
                                .any(|(name, proto, _)| name == n && *proto == p.protocol)
                        })
                    })
                {
                    out.push(format!(
                        "{obj}: spec.ports[{i}].targetPort \"{n}\" names no {} container port of the pods it selects: kube-proxy has no endpoint for this port",
                        p.protocol.to_string().to_uppercase()
                    ));
                }
            }
        }
        out
    }

    /// Nodes join: in the bridge profile with their pod CIDR, in the AWS profile with ipamd.
    /// In the AWS profile the addresses the input's pods have are held first, so that no
    /// node's warm pool takes one before the pod's own node claims it.
    fn load_nodes(&mut self, objs: &Objects, report: &mut LoadReport) -> Result<(), LoadError> {
        let aws = self.cni.aws().is_some();
        if aws {
            for (place, p) in &objs.pods {
                let host = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
                let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()?.parse().ok());
                if let (false, true, Some(ip)) = (host, scheduled, ip) {
                    let ns = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                    let obj = format!("Pod/{ns}/{}", p.metadata.name.clone().unwrap_or_default());
                    let key = format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default());
                    self.cni.check_request(&key, Some(ip)).map_err(|e| refused(place, &obj, e))?;
                    self.cni.hold_pod_address(ip).map_err(|e| refused(place, &obj, e))?;
                }
            }
        }
        for (place, n) in &objs.nodes {
            let spec = k8s::node(place, n, !aws)?;
            let obj = format!("Node/{}", spec.name);
            let added = match spec.pod_cidr {
                // The AWS VPC CNI: pods take ENI addresses; a podCIDR, if any, is unused.
                _ if aws => self.add_aws_node(&spec.name, spec.ip),
                Some(cidr) => self.add_node(&spec.name, spec.ip, cidr),
                None => unreachable!("the bridge profile's nodes have a pod CIDR or an error"),
            };
            let id = added.map_err(|e| refused(place, &obj, e))?;
            // Every InternalIP and ExternalIP is an address of the node.
            for ip in &spec.more_ips {
                self.add_node_address(id, *ip).map_err(|e| refused(place, &obj, e))?;
            }
            if let Some(max) = spec.max_pods {
                self.set_max_pods(&spec.name, max).map_err(|e| refused(place, &obj, e))?;
            }
            report.loaded.push(obj);
        }
        Ok(())
    }

    /// Services, admitted as the API server does it; returns where each came from.
    fn load_services(
        &mut self,
        objs: &Objects,
        report: &mut LoadReport,
    ) -> Result<Vec<Place>, LoadError> {
        let mut places = Vec::new();
        for (place, s) in &objs.services {
            let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = s.metadata.name.clone().unwrap_or_default();
            let obj = format!("Service/{ns}/{name}");
            if self.services.list.iter().any(|x| x.namespace == ns && x.name == name) {
                return Err(obj_err(
                    place,
                    obj,
                    "already exists: delete it first (services are immutable here, as with kubectl create)",
                ));
            }
            let (mut svc, allocate) = k8s::service(place, s)?;
            if allocate {
                svc.cluster_ip =
                    Some(self.allocate_cluster_ip().map_err(|e| refused(place, &obj, e))?);
            }
            crate::kube_proxy::validate_service(&svc).map_err(|e| refused(place, &obj, e))?;
            self.services.admit(&mut svc).map_err(|e| match e {
                crate::ipam::IpamError::OutOfRange { what, value, range, .. } => {
                    let (field, knob) = if what == "Service CIDR" {
                        ("ClusterIP", "serviceCidr")
                    } else {
                        ("nodePort", "serviceNodePortRange")
                    };
                    obj_err(
                        place,
                        obj.clone(),
                        format!(
                            "{field} {value} of svc/{ns}/{name} is outside the {what} {range}; set {knob} in PodnetConfig"
                        ),
                    )
                }
                e => refused(place, &obj, e.into()),
            })?;
            // Topology-aware routing: kube-proxy keeps the endpoints hinted for the
            // client's zone; podnet does not, and says so in traces to these pods.
            if let Some(td) = s.spec.as_ref().and_then(|sp| sp.traffic_distribution.as_deref())
                && let Some(sel) = svc.selector.clone()
            {
                report.skipped.push(format!(
                    "{obj}: spec.trafficDistribution {td} not modelled (every endpoint is used, not those of the client's zone); traces to its pods carry a warning"
                ));
                self.unmodelled.push(crate::k8s::Unmodelled {
                    object: format!("{obj} (trafficDistribution: {td})"),
                    effect: "topology-aware routing podnet does not model, so the real cluster may pick an endpoint in the client's zone where this trace picked any",
                    namespaces: crate::k8s::NamespaceScope::One(ns.clone()),
                    pods: Some(crate::labels::LabelSelector::with_labels(sel.into_iter().collect())),
                });
            }
            self.services.list.push(svc);
            places.push(place.clone());
            report.loaded.push(obj);
        }
        Ok(places)
    }

    /// Pods, each serving the targetPorts of the Services that select it; returns the pods
    /// added. A pod kubelet or the CNI refuses (too many pods, no address) is kept by the
    /// API server without a network, and reported as skipped.
    fn load_pods(
        &mut self,
        objs: &Objects,
        report: &mut LoadReport,
    ) -> Result<HashSet<PodId>, LoadError> {
        let mut new_pods = HashSet::new();
        let by_selector = services_by_selector(&self.services);
        for (place, p) in &objs.pods {
            let mut spec = match k8s::pod(place, p)? {
                k8s::PodDecision::Skip(why) => {
                    report.skipped.push(why);
                    continue;
                }
                k8s::PodDecision::Add(spec) => spec,
            };
            let obj = format!("Pod/{}/{}", spec.namespace, spec.name);
            let node_id = self
                .node_id(&spec.node)
                .map_err(|e| obj_err(place, obj.clone(), format!("spec.nodeName: {e}")))?;
            // Serve the targetPorts of the Services that select this pod.
            let candidates: Vec<usize> = spec
                .labels
                .iter()
                .filter_map(|(k, v)| {
                    by_selector.get(&(spec.namespace.clone(), k.clone(), v.clone()))
                })
                .flatten()
                .copied()
                .collect();
            for s in candidates.iter().map(|&i| &self.services.list[i]) {
                for (proto, port) in
                    k8s::target_ports(s, &spec.namespace, &spec.labels, &spec.containers)
                {
                    if !spec.containers.iter().any(|k| k.ports.contains(&(proto, port)))
                        && let Some(first) = spec.containers.first_mut()
                    {
                        first.ports.push((proto, port));
                    }
                }
            }
            let (ns, name) = (spec.namespace.as_str(), spec.name.as_str());
            let (spec_host, node) = (spec.host_network, spec.node.clone());
            let added = if spec.host_network {
                self.add_host_network_pod(ns, name, node_id, spec.labels, spec.containers)
            } else {
                self.add_pod(ns, name, node_id, spec.ip, spec.labels, spec.containers)
            };
            let id = match added {
                Ok(id) => id,
                // The API server keeps such a pod; it just never gets a network.
                Err(
                    e @ (ClusterError::TooManyPods { .. } | ClusterError::FailedToAssign { .. }),
                ) => {
                    report.skipped.push(format!("{obj}: {e}"));
                    continue;
                }
                // A dump whose pod address is outside its node's podCIDR contradicts
                // itself: say which two objects disagree.
                Err(ClusterError::OutsideCidr { addr, cidr, .. }) if !spec_host => {
                    return Err(obj_err(
                        place,
                        obj,
                        format!(
                            "status.podIP {addr} is outside the podCIDR {cidr} of Node/{node} (spec.nodeName): the two objects disagree; fix the pod's status.podIP or spec.nodeName, or the node's spec.podCIDR"
                        ),
                    ));
                }
                Err(e) => return Err(refused(place, &obj, e)),
            };
            self.world.pods[id.idx()].ready = spec.ready;
            self.world.pods[id.idx()].terminating = spec.terminating;
            new_pods.insert(id);
            report.loaded.push(obj);
        }
        Ok(new_pods)
    }

    /// Pods that were there before serve the targetPorts of the new Services that select
    /// them.
    fn serve_new_services(
        &mut self,
        new_pods: &HashSet<PodId>,
        first_new_service: usize,
        service_places: &[Place],
    ) -> Result<(), LoadError> {
        for i in 0..self.world.pods.len() {
            let id = PodId(i as u32);
            let p = &self.world.pods[i];
            if p.deleted || new_pods.contains(&id) {
                continue;
            }
            let (ns, labels, containers) =
                (p.namespace.clone(), p.labels.clone(), p.containers.clone());
            let key = format!("pod/{ns}/{}", p.name);
            let Some(first) = containers.first().map(|k| k.name.clone()) else { continue };
            for (k, place) in service_places.iter().enumerate() {
                let s = self.services.list[first_new_service + k].clone();
                for (proto, port) in k8s::target_ports(&s, &ns, &labels, &containers) {
                    let netns = self.world.pods[i].netns;
                    if !self.world.netns[netns.idx()].ports.contains_key(&(proto, port)) {
                        self.bind(&key, &first, proto, port).map_err(|e| {
                            refused(place, &format!("Service/{}/{}", s.namespace, s.name), e)
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// EndpointSlices given in the input; Services that have some do not get derived ones.
    fn load_slices(
        &mut self,
        objs: &Objects,
        first_new_service: usize,
        report: &mut LoadReport,
    ) -> Result<(), LoadError> {
        for (place, s) in &objs.slices {
            if let Some(slice) = k8s::endpoint_slice(place, s, report)? {
                self.services.slices.push(slice);
            }
        }
        let Services { list, slices, .. } = &mut self.services;
        for s in &mut list[first_new_service..] {
            if slices.iter().any(|sl| sl.namespace == s.namespace && sl.service == s.name) {
                s.selector = None;
            }
        }
        Ok(())
    }

    /// The PodnetConfig document's edge (internet gateway, public addresses, internet hosts,
    /// cloud load balancers, Ingress controllers, ALBs for Ingresses, a NAT gateway) and
    /// sysctls, after the Kubernetes objects.
    fn apply_edge(
        &mut self,
        config: Option<(Place, PodnetConfig)>,
        ingresses: Vec<(Place, networking::Ingress)>,
        report: &mut LoadReport,
    ) -> Result<(), LoadError> {
        let (place, pc) = match config {
            Some(x) => x,
            None => (
                Place { file: "<input>".into(), doc: 0, line: None, column: None, field: None },
                PodnetConfig::default(),
            ),
        };
        let place = &place;
        let fail =
            |what: String, e: ClusterError| refused(place, &format!("PodnetConfig {what}"), e);
        if let Some(net) = &pc.internet {
            let net: Ipv4Network = net.parse().map_err(|_| {
                obj_err(
                    place,
                    "PodnetConfig".into(),
                    format!("internet '{net}' is not an IPv4 CIDR"),
                )
            })?;
            self.add_internet_gateway(net);
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
            self.set_public_ip(&node, ip).map_err(|e| fail(format!("publicIPs.{node}"), e))?;
        }
        for h in pc.internet_hosts.clone().unwrap_or_default() {
            self.add_internet_host(&h.name, h.ip, h.port)
                .map_err(|e| fail(format!("internetHosts {}", h.name), e))?;
        }
        for lb in pc.load_balancers.clone().unwrap_or_default() {
            if pc.internet.is_none() {
                return Err(needs_gateway("loadBalancers"));
            }
            let mode = match lb.mode {
                LbModeDoc::Proxy => LbMode::Proxy,
                LbModeDoc::PreserveClientIp => LbMode::PreserveClientIp,
                LbModeDoc::PassThrough => LbMode::PassThrough,
            };
            self.add_cloud_lb_with(
                &format!("svc/{}", lb.service),
                lb.public_ip,
                lb.private_ip,
                mode,
            )
            .map_err(|e| fail(format!("loadBalancers {}", lb.service), e))?;
        }
        let controllers = pc.ingress_controllers.clone().unwrap_or_default();
        for ctl in &controllers {
            self.add_ingress_controller(&format!("pod/{}", ctl.pod), &ctl.class, ctl.port)
                .map_err(|e| fail(format!("ingressControllers {}", ctl.pod), e))?;
        }
        let albs = pc.albs.clone().unwrap_or_default();
        for (iplace, ing) in ingresses {
            let ns = ing.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = ing.metadata.name.clone().unwrap_or_default();
            let Some(alb) = albs.iter().find(|a| a.ingress == format!("{ns}/{name}")) else {
                let (obj, ingress) = ingress_of(&iplace, &ing)?;
                // Ingresses without a class go to the first controller (the default class).
                let served = controllers.first().is_some_and(|first| {
                    let class = ingress.class.as_deref().unwrap_or(first.class.as_str());
                    controllers.iter().any(|ctl| ctl.class == class)
                });
                if served {
                    self.add_ingress(ingress).map_err(|e| refused(&iplace, &obj, e))?;
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
            let (obj, ingress) = ingress_of(&iplace, &ing)?;
            self.add_alb(ingress, alb.public_ip, alb.private_ip)
                .map_err(|e| refused(&iplace, &obj, e))?;
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
            self.add_nat_gateway(gw.public_ip, gw.private_ip)
                .map_err(|e| fail("natGateway".into(), e))?;
        }
        for (node, values) in pc.sysctls.clone().unwrap_or_default() {
            for (key, v) in values {
                self.set_sysctl(&node, &key, v)
                    .map_err(|e| fail(format!("sysctls.{node}.{key}"), e))?;
            }
        }
        Ok(())
    }
}

/// An Ingress object, named `Ingress/NS/NAME`, as the model takes it.
fn ingress_of(
    place: &Place,
    ing: &networking::Ingress,
) -> Result<(String, crate::cloud::Ingress), LoadError> {
    let ns = ing.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = ing.metadata.name.clone().unwrap_or_default();
    let obj = format!("Ingress/{ns}/{name}");
    let ingress = k8s::ingress(place, &obj, &ns, &name, ing)?;
    Ok((obj, ingress))
}

/// Services by the first pair of their selector, so each pod checks only its candidates.
fn services_by_selector(services: &Services) -> HashMap<(String, String, String), Vec<usize>> {
    let mut by_selector: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    for (i, s) in services.list.iter().enumerate() {
        if let Some((k, v)) = s.selector.as_ref().and_then(|sel| sel.iter().next()) {
            by_selector.entry((s.namespace.clone(), k.clone(), v.clone())).or_default().push(i);
        }
    }
    by_selector
}
