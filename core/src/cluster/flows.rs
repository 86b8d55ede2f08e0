//! The façade's flows: a flow's endpoints resolved against the cluster (pods, Services,
//! nodes, hosts, addresses), then run by the simulator; every outcome of a flow; a
//! reachability matrix; frames injected at a device.

use std::net::{IpAddr, Ipv4Addr};

use crate::endpoint::{Endpoint, IntoEndpoint, PortRef, Role};
use crate::error::{ClusterError, TraceError};
use crate::host::stack::Side;
use crate::ids::NetnsId;
use crate::net::route::LocalKind;
use crate::run::{Flow, Sim, Source};
use crate::trace::{FlowProto, Hop, Trace, TraceOptions};
use podnet_netfilter::Proto;

use super::Cluster;

impl Cluster {
    /// Traces one flow from `from` to `to`, each an [`Endpoint`] or its text:
    /// `pod/NS/NAME`, `node/NAME`, `host/NAME` or the IP of a pod or node as the source;
    /// `IP:PORT`, `pod/NS/NAME:PORT`, `svc/NS/NAME:PORT` (a number or a port name) or
    /// `http://IP[:PORT]/path` as the destination (a bare IP or a pod for ICMP).
    pub fn trace(
        &mut self,
        from: impl IntoEndpoint,
        to: impl IntoEndpoint,
        opts: &TraceOptions,
    ) -> Result<Trace, TraceError> {
        let (from, to) = (from.into_endpoint(Role::Source), to.into_endpoint(Role::Destination));
        if opts.dry_run {
            let mut c = self.fork();
            let o = TraceOptions { dry_run: false, ..opts.clone() };
            return c.trace(from?.1, to?.1, &o);
        }
        let flow = self.flow(from?, to?, opts.proto)?;
        let mut t = self.sim().trace(&flow, opts)?;
        self.warn_unmodelled(&mut t, flow.src.ns);
        Ok(t)
    }

    /// Every place a flow can land, each with its probability, as dry runs: each endpoint a
    /// Service can pick (`-m statistic` rules, IPVS scheduling) and each node a cloud load
    /// balancer can pick. Decision points are enumerated exhaustively (up to 256 paths); the
    /// probabilities of the outcomes returned add up to 1 when nothing was cut off.
    ///
    /// The ALB's choice of target is round robin state inside its L7 hop and is not
    /// enumerated: each ALB rule contributes its current target only.
    pub fn trace_all(
        &self,
        from: impl IntoEndpoint,
        to: impl IntoEndpoint,
        opts: &TraceOptions,
    ) -> Result<Vec<Trace>, TraceError> {
        let (from, to) = (from.into_endpoint(Role::Source), to.into_endpoint(Role::Destination));
        let flow = self.flow(from?, to?, opts.proto)?;
        let mut all = crate::run::trace_all(
            &self.world,
            &self.hosts,
            &self.fabric,
            &self.policy,
            &flow,
            opts,
        )?;
        for t in &mut all {
            self.warn_unmodelled(t, flow.src.ns);
        }
        Ok(all)
    }

    /// Adds a warning to `t` for every object podnet does not model that selects a pod the
    /// flow touched: its source (namespace `src`), every pod namespace a hop passed, the pod
    /// it was delivered to and the one that answered.
    fn warn_unmodelled(&self, t: &mut Trace, src: NetnsId) {
        // A node where kube-proxy's last sync failed runs without its rules.
        for (node, err) in &self.services.sync_errors {
            if t.hops.iter().any(|h| h.node.as_deref() == Some(node.as_str())) {
                t.warnings.push(format!(
                    "kube-proxy on node {node}: {err}; the node has no kube-proxy rules, so Services do not work through it"
                ));
            }
        }
        if self.unmodelled.is_empty() {
            return;
        }
        let w = &self.world;
        let mut keys: Vec<String> = Vec::new();
        let mut add = |k: &str| {
            if k.starts_with("pod/") && !keys.iter().any(|x| x == k) {
                keys.push(k.to_string());
            }
        };
        add(&w.owner_name(src));
        // Where IP packets went (an ARP broadcast reaches every pod on a bridge).
        for h in t.hops.iter().filter(|h| h.before.as_ref().is_none_or(|b| b.proto != "arp")) {
            add(&h.netns);
        }
        for k in [&t.delivered_to, &t.http_from].into_iter().flatten() {
            add(k);
        }
        for key in keys {
            let Ok(id) = self.pod_id(&key) else { continue };
            let pod = &w.pods[id.idx()];
            let implied;
            let ns_labels = match self.namespaces.get(&pod.namespace) {
                Some(l) => l,
                None => {
                    implied = crate::labels::Labels::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        pod.namespace.clone(),
                    )]);
                    &implied
                }
            };
            for u in &self.unmodelled {
                if u.may_select(&pod.namespace, ns_labels, &pod.labels) {
                    t.warnings.push(format!("{key} is selected by {u}: {}", u.effect));
                }
            }
        }
    }

    /// A reachability matrix: one dry-run trace per (source, destination), rows in the order
    /// of `sources`.
    pub fn reachability<S, D>(
        &self,
        sources: &[S],
        destinations: &[D],
        opts: &TraceOptions,
    ) -> Result<Vec<Vec<Trace>>, TraceError>
    where
        S: IntoEndpoint + Clone,
        D: IntoEndpoint + Clone,
    {
        let opts = TraceOptions { dry_run: false, ..opts.clone() };
        sources
            .iter()
            .map(|s| {
                destinations
                    .iter()
                    .map(|d| self.fork().trace(s.clone(), d.clone(), &opts))
                    .collect()
            })
            .collect()
    }

    /// Delivers raw bytes to a device, as if its link peer had sent them, and runs the
    /// datapath until it settles; returns the hops (drops carry their reason). For testing
    /// what the model does with any frame, malformed ones included.
    pub fn inject_frame(
        &mut self,
        netns: &str,
        device: &str,
        frame: &[u8],
    ) -> Result<Vec<Hop>, TraceError> {
        let w = &self.world;
        let ns = w.netns.iter().position(|n| n.name == netns).map(|i| NetnsId(i as u32));
        let ns = ns.ok_or_else(|| TraceError::BadEndpoint {
            what: "namespace",
            text: netns.into(),
            hint: format!(
                "namespaces: {}",
                w.netns.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let dev = w.dev_named(ns, device).ok_or_else(|| TraceError::BadEndpoint {
            what: "device",
            text: format!("{netns} {device}"),
            hint: format!(
                "devices: {}",
                w.netns[ns.idx()]
                    .devs
                    .iter()
                    .map(|d| w.devs[d.idx()].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        self.sim().inject_frame(dev, frame)
    }

    /// Every (namespace, device) pair a frame can be injected at.
    pub fn injection_points(&self) -> Vec<(String, String)> {
        let w = &self.world;
        w.netns
            .iter()
            .flat_map(|n| n.devs.iter().map(|d| (n.name.clone(), w.devs[d.idx()].name.clone())))
            .collect()
    }

    /// A copy of the cluster's state for dry runs. Host stacks are not copied: the copy
    /// starts them afresh (empty socket tables and ARP caches), so a dry run may show ARP
    /// exchanges a committed run would not.
    pub fn fork(&self) -> Cluster {
        self.clone()
    }

    /// The simulator over this cluster's world.
    fn sim(&mut self) -> Sim<'_> {
        Sim {
            w: &mut self.world,
            hosts: &mut self.hosts,
            fabric: &self.fabric,
            guard: &self.policy,
        }
    }

    /// A flow from `from` to `to` (each an endpoint and its text), resolved; `proto` is the
    /// protocol asked for, if any (the destination decides otherwise).
    fn flow(
        &self,
        (from, from_text): (Endpoint, String),
        (to, to_text): (Endpoint, String),
        proto: Option<FlowProto>,
    ) -> Result<Flow, TraceError> {
        let (dst_ip, dst_port, proto) = self.resolve_destination(&to, &to_text, proto)?;
        let src = self.resolve_source(&from, dst_ip)?;
        let proxies = self
            .edge
            .albs
            .iter()
            .map(|a| (a.netns, 80))
            .chain(self.edge.controllers.iter().filter_map(|c| {
                let id = self.pod_id(&c.pod).ok()?;
                Some((self.world.pods[id.idx()].netns, c.port))
            }))
            .collect();
        Ok(Flow { from: from_text, to: to_text, src, dst: (dst_ip, dst_port), proto, proxies })
    }

    /// The pod `namespace/name`.
    fn pod_in(&self, namespace: &str, name: &str) -> Result<crate::ids::PodId, ClusterError> {
        self.world
            .pod_named(namespace, name)
            .ok_or_else(|| self.no_such_pod(&format!("pod/{namespace}/{name}")))
    }

    /// The client of a flow that goes to `dst`.
    fn resolve_source(&self, from: &Endpoint, dst: Ipv4Addr) -> Result<Source, TraceError> {
        let w = &self.world;
        let unknown = || TraceError::BadEndpoint {
            what: "source",
            text: from.to_string(),
            hint: "write pod/NAMESPACE/NAME, node/NAME, or the IP of a pod or node".into(),
        };
        match from {
            Endpoint::Pod { namespace, name, .. } => {
                let p = &w.pods[self.pod_in(namespace, name)?.idx()];
                // The `local` table first: the pod's own address and 127/8 are reached over
                // `lo`, from the local route's source; nothing leaves the pod.
                Ok(match w.netns[p.netns.idx()].local.lookup(dst) {
                    Some(l) if l.kind == LocalKind::Local => {
                        Source { ns: p.netns, side: Side::Lo, ip: l.src }
                    }
                    _ => Source { ns: p.netns, side: Side::Main, ip: p.ip },
                })
            }
            Endpoint::Node { name } => {
                let n = &w.nodes[self.node_id(name)?.idx()];
                // The node's stack picks its source like smoltcp: an address in the
                // destination's subnet, else its first (eth0) address.
                // One of its own addresses, from that address (the `local` table).
                let local = w.netns[n.netns.idx()].local.lookup(dst);
                let ip = match (local, n.bridge) {
                    (Some(l), _) if l.kind == LocalKind::Local => l.src,
                    (_, Some(_)) if n.pod_cidr.contains(dst) => {
                        Ipv4Addr::from(u32::from(n.pod_cidr.network()) + 1)
                    }
                    _ => n.ip,
                };
                Ok(Source { ns: n.netns, side: Side::Main, ip })
            }
            Endpoint::Host { .. } => {
                let text = from.to_string();
                let ns = w.netns.iter().position(|n| n.name == text).map(|i| NetnsId(i as u32));
                let ns = ns.ok_or_else(|| TraceError::BadEndpoint {
                    what: "source",
                    text: text.clone(),
                    hint: format!(
                        "hosts: {}",
                        w.netns
                            .iter()
                            .filter(|n| n.name.starts_with("host/"))
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
                let eth0 = w.dev_named(ns, "eth0");
                let ip = eth0
                    .and_then(|d| w.devs[d.idx()].addrs.first())
                    .map(|a| a.ip())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                Ok(Source { ns, side: Side::Main, ip })
            }
            Endpoint::Addr { ip: IpAddr::V4(ip), port: None } => {
                if let Some(p) = w.pods.iter().find(|p| p.ip == *ip && !p.deleted) {
                    return Ok(Source { ns: p.netns, side: Side::Main, ip: *ip });
                }
                if let Some(n) = w.nodes.iter().find(|n| n.ip == *ip) {
                    return Ok(Source { ns: n.netns, side: Side::Main, ip: *ip });
                }
                Err(unknown())
            }
            _ => Err(unknown()),
        }
    }

    /// The address, port and protocol of a flow to `to` (written `text`), `asked` the
    /// protocol asked for: a named port decides the protocol, a URL means HTTP, and a
    /// protocol asked for that contradicts either is an error.
    fn resolve_destination(
        &self,
        to: &Endpoint,
        text: &str,
        asked: Option<FlowProto>,
    ) -> Result<(Ipv4Addr, u16, FlowProto), TraceError> {
        let bad = |hint: &str| TraceError::BadEndpoint {
            what: "destination",
            text: text.to_string(),
            hint: hint.into(),
        };
        let forms = "write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT";
        let v4 = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => Ok(*a),
            IpAddr::V6(_) => Err(bad("IPv6 is not modelled yet: give an IPv4 address")),
        };
        // The flow protocol for a port of `implied` protocol: what was asked, when it agrees.
        let agree = |implied: Proto| -> Result<FlowProto, TraceError> {
            let flow = match (implied, asked) {
                (Proto::TCP, Some(FlowProto::Http)) => FlowProto::Http,
                (Proto::TCP, _) => FlowProto::Tcp,
                (Proto::UDP, _) => FlowProto::Udp,
                (p, _) => {
                    return Err(bad(&format!(
                        "its port is {}, which podnet does not model yet (TCP and UDP are)",
                        p.to_string().to_uppercase()
                    )));
                }
            };
            match asked {
                Some(a) if a.l4() != implied => Err(TraceError::ProtocolMismatch {
                    destination: text.to_string(),
                    implied: implied.to_string().to_uppercase(),
                    asked: a.name().to_uppercase(),
                }),
                _ => Ok(flow),
            }
        };
        let pod = |namespace: &str, name: &str| -> Result<&crate::world::Pod, TraceError> {
            Ok(&self.world.pods[self.pod_in(namespace, name)?.idx()])
        };
        if asked == Some(FlowProto::Icmp) {
            return match to {
                Endpoint::Addr { ip, .. } => Ok((v4(ip)?, 0, FlowProto::Icmp)),
                Endpoint::Pod { namespace, name, .. } => {
                    Ok((pod(namespace, name)?.ip, 0, FlowProto::Icmp))
                }
                Endpoint::Url { .. } => Err(TraceError::ProtocolMismatch {
                    destination: text.to_string(),
                    implied: "HTTP".into(),
                    asked: "ICMP".into(),
                }),
                _ => Err(bad("ICMP takes a bare IP or pod/NAMESPACE/NAME")),
            };
        }
        match to {
            Endpoint::Url { ip, port, .. } => match asked {
                None | Some(FlowProto::Http) => Ok((v4(ip)?, port.unwrap_or(80), FlowProto::Http)),
                Some(a) => Err(TraceError::ProtocolMismatch {
                    destination: text.to_string(),
                    implied: "HTTP".into(),
                    asked: a.name().to_uppercase(),
                }),
            },
            Endpoint::Service { namespace, name, port } => {
                let (ip, port, implied) = self.services.resolve(
                    &format!("svc/{namespace}/{name}"),
                    &port.to_string(),
                    asked.map(FlowProto::l4),
                )?;
                Ok((ip, port, agree(implied)?))
            }
            Endpoint::Pod { namespace, name, port: Some(p) } => {
                let pod = pod(namespace, name)?;
                let named = pod.containers.iter().flat_map(|c| &c.named_ports);
                let listed = pod.containers.iter().flat_map(|c| &c.ports);
                match p {
                    PortRef::Name(n) => {
                        let found = named.clone().find(|(pn, ..)| pn == n);
                        let (_, implied, number) = found.ok_or_else(|| {
                            let known: Vec<String> =
                                named.map(|(pn, pr, n)| format!("{pn}={n}/{pr}")).collect();
                            bad(&if known.is_empty() {
                                "the pod names no containerPorts: give a port number".to_string()
                            } else {
                                format!("no containerPort of that name ({})", known.join(", "))
                            })
                        })?;
                        Ok((pod.ip, *number, agree(*implied)?))
                    }
                    PortRef::Number(0) => Err(bad("the port must be a number from 1 to 65535")),
                    PortRef::Number(n) => {
                        // A number: what was asked, else the protocol the pod serves it on
                        // (TCP when it serves both, or neither).
                        let on = |pr: Proto| listed.clone().any(|&(p, q)| p == pr && q == *n);
                        let proto = match asked {
                            Some(a) => a,
                            None if on(Proto::UDP) && !on(Proto::TCP) => FlowProto::Udp,
                            None => FlowProto::Tcp,
                        };
                        Ok((pod.ip, *n, proto))
                    }
                }
            }
            Endpoint::Addr { ip, port: Some(p) } if *p > 0 => {
                Ok((v4(ip)?, *p, asked.unwrap_or(FlowProto::Tcp)))
            }
            Endpoint::Addr { port: Some(_), .. } => {
                Err(bad("the port must be a number from 1 to 65535"))
            }
            _ => Err(bad(forms)),
        }
    }
}
