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
        self.sim().trace(&flow, opts)
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
        crate::run::trace_all(&self.world, &self.hosts, &self.fabric, &flow, opts)
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
        Sim { w: &mut self.world, hosts: &mut self.hosts, fabric: &self.fabric }
    }

    /// A flow from `from` to `to` (each an endpoint and its text), resolved.
    fn flow(
        &self,
        (from, from_text): (Endpoint, String),
        (to, to_text): (Endpoint, String),
        proto: FlowProto,
    ) -> Result<Flow, TraceError> {
        let dst = self.resolve_destination(&to, proto)?;
        let src = self.resolve_source(&from, dst.0)?;
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
        Ok(Flow { from: from_text, to: to_text, src, dst, proxies })
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

    /// The address and port a flow of `proto` to `to` goes to.
    fn resolve_destination(
        &self,
        to: &Endpoint,
        proto: FlowProto,
    ) -> Result<(Ipv4Addr, u16), TraceError> {
        let bad = |hint: &str| TraceError::BadEndpoint {
            what: "destination",
            text: to.to_string(),
            hint: hint.into(),
        };
        let forms = "write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT";
        let v4 = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => Ok(*a),
            IpAddr::V6(_) => Err(bad("IPv6 is not modelled yet: give an IPv4 address")),
        };
        let port_number = |p: &PortRef| match p {
            PortRef::Number(n) if *n > 0 => Ok(*n),
            _ => Err(bad("the port must be a number from 1 to 65535")),
        };
        let pod_ip = |namespace: &str, name: &str| -> Result<Ipv4Addr, TraceError> {
            Ok(self.world.pods[self.pod_in(namespace, name)?.idx()].ip)
        };
        if proto == FlowProto::Icmp {
            return match to {
                Endpoint::Addr { ip, .. } => Ok((v4(ip)?, 0)),
                Endpoint::Pod { namespace, name, .. } => Ok((pod_ip(namespace, name)?, 0)),
                _ => Err(bad("ICMP takes a bare IP or pod/NAMESPACE/NAME")),
            };
        }
        match to {
            Endpoint::Url { ip, port, .. } => Ok((v4(ip)?, port.unwrap_or(80))),
            Endpoint::Service { namespace, name, port } => self
                .services
                .resolve(&format!("svc/{namespace}/{name}"), &port.to_string())
                .map_err(TraceError::from),
            Endpoint::Pod { namespace, name, port: Some(p) } => {
                let port = port_number(p)?;
                Ok((pod_ip(namespace, name)?, port))
            }
            Endpoint::Addr { ip, port: Some(p) } => {
                let port = port_number(&PortRef::Number(*p))?;
                Ok((v4(ip)?, port))
            }
            _ => Err(bad(forms)),
        }
    }
}
