//! The host layer: the smoltcp stacks that pods, nodes' own addresses and hosts outside the
//! cluster run, and the applications on them.
//!
//! | module | models |
//! |---|---|
//! | `stack` | a namespace's smoltcp interfaces (`eth0`, `lo`) and sockets; echo and HTTP servers, one-shot clients |
//! | [`l7`] | the L7 proxy of an ALB or an in-cluster Ingress controller: HTTP parsing, rule matching, rewriting |
//!
//! `Hosts` keeps one stack per namespace, made when a frame or a client first needs it,
//! from what the [`World`] says of the namespace (its addresses, its default gateway, the
//! ports its processes bound) and from the applications the upper layers configured here
//! (kube-proxy's health-check servers, an L7 proxy). It implements the datapath's
//! `HostStacks` interface. Stacks are not part of a copy of the cluster: a copy starts its
//! own afresh.

pub mod l7;
pub(crate) mod stack;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use smoltcp::time::Instant;

use podnet_netfilter::Proto;

use crate::datapath::HostStacks;
use crate::ids::NetnsId;
use crate::world::{Owner, World};

use stack::{Side, Stack};

/// An L7 proxy's configuration: its port, how it matches, its rules and default backend.
#[derive(Clone, Debug)]
pub(crate) struct L7Spec {
    /// The port it listens on.
    pub(crate) port: u16,
    /// How it picks a rule.
    pub(crate) matching: l7::Matching,
    /// Its rules, in order.
    pub(crate) rules: Vec<l7::AlbRule>,
    /// Where requests no rule matches go.
    pub(crate) default: Option<l7::AlbRule>,
}

/// An HTTP server with a fixed answer: kube-proxy's health-check server for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HealthServer {
    /// The response it writes to every request.
    pub(crate) response: Vec<u8>,
    /// When it answers 503: why, as a trace's reason says it.
    pub(crate) unhealthy: Option<String>,
}

/// Every namespace's host stack, and the applications configured for them.
#[derive(Default)]
pub(crate) struct Hosts {
    /// By namespace index; `None` until first needed.
    stacks: Vec<Option<Box<Stack>>>,
    /// kube-proxy's health-check servers of a node: port → the HTTP response it writes.
    health: BTreeMap<NetnsId, BTreeMap<u16, HealthServer>>,
    /// The L7 proxy a namespace runs.
    l7: BTreeMap<NetnsId, L7Spec>,
}

impl Hosts {
    /// `ns`'s stack, if it has one.
    pub(crate) fn get_mut(&mut self, ns: NetnsId) -> Option<&mut Stack> {
        self.stacks.get_mut(ns.idx()).and_then(|s| s.as_deref_mut())
    }

    /// `ns`'s stack, made first if it has none.
    pub(crate) fn stack(&mut self, w: &World, ns: NetnsId) -> &mut Stack {
        if self.stacks.len() <= ns.idx() {
            self.stacks.resize_with(ns.idx() + 1, || None);
        }
        if self.stacks[ns.idx()].is_none() {
            let st = self.make(w, ns);
            self.stacks[ns.idx()] = Some(Box::new(st));
        }
        self.stacks[ns.idx()].as_deref_mut().expect("made above")
    }

    /// Forgets `ns`'s stack: the next use makes it afresh (its ports or applications
    /// changed, or its processes are gone).
    pub(crate) fn reset(&mut self, ns: NetnsId) {
        if let Some(s) = self.stacks.get_mut(ns.idx()) {
            *s = None;
        }
    }

    /// Forgets every stack (a new seed: ports and sequence numbers start again).
    pub(crate) fn reset_all(&mut self) {
        self.stacks.clear();
    }

    /// kube-proxy's health-check servers of `ns`.
    pub(crate) fn health(&self, ns: NetnsId) -> Option<&BTreeMap<u16, HealthServer>> {
        self.health.get(&ns)
    }

    /// Sets `ns`'s health-check servers: a running stack answers with the new responses at
    /// once when the ports stay the same; otherwise it is made afresh, listening on the new
    /// ports.
    pub(crate) fn set_health(&mut self, ns: NetnsId, servers: BTreeMap<u16, HealthServer>) {
        let old = self.health.get(&ns);
        let same_ports = old.map_or(servers.is_empty(), |o| o.keys().eq(servers.keys()));
        if !same_ports {
            self.reset(ns);
        } else if let Some(st) = self.get_mut(ns) {
            st.health = servers.clone();
        }
        if servers.is_empty() {
            self.health.remove(&ns);
        } else {
            self.health.insert(ns, servers);
        }
    }

    /// Sets the L7 proxy `ns` runs; a running stack takes the new rules at once.
    pub(crate) fn set_l7(&mut self, ns: NetnsId, spec: L7Spec) {
        if let Some(st) = self.get_mut(ns) {
            st.set_l7_rules(spec.rules.clone(), spec.default.clone());
        }
        self.l7.insert(ns, spec);
    }

    /// Makes `ns`'s stack: an Ethernet stack on `eth0` for a pod or host, or an IP-medium
    /// stack holding every address of a router (a node's root namespace), so that local
    /// destinations nobody serves answer like the kernel (RST, port unreachable).
    fn make(&self, w: &World, ns: NetnsId) -> Stack {
        let seed = w.seed.wrapping_mul(0x9e37_79b9).wrapping_add(u64::from(ns.0) * 0x1000_0001 + 1);
        let now = w.now;
        let n = &w.netns[ns.idx()];
        let eth0 = w.dev_named(ns, "eth0");
        let mut stack = match n.owner {
            _ if n.router || eth0.is_none() => {
                let addrs: Vec<(Ipv4Addr, u8)> = n
                    .devs
                    .iter()
                    .flat_map(|d| w.devs[d.idx()].addrs.iter())
                    .filter(|a| !a.ip().is_loopback())
                    .map(|a| (a.ip(), a.prefix()))
                    .collect();
                let name = match n.owner {
                    Owner::Node(node) => w.nodes[node.idx()].name.clone(),
                    Owner::Pod(p) => w.pods[p.idx()].name.clone(),
                    _ => n.name.clone(),
                };
                Stack::ip(&name, &addrs, matches!(n.owner, Owner::Pod(_)), seed, now)
            }
            _ => {
                let d = &w.devs[eth0.expect("checked above").idx()];
                let a = d.addrs[0];
                let gw = n.routes.lookup(Ipv4Addr::new(1, 1, 1, 1)).and_then(|r| r.via);
                let name = match n.owner {
                    Owner::Pod(p) => w.pods[p.idx()].name.clone(),
                    _ => n.name.trim_start_matches("host/").to_string(),
                };
                Stack::ethernet(
                    &name,
                    d.mac,
                    a.ip(),
                    a.prefix(),
                    gw,
                    matches!(n.owner, Owner::Pod(_)),
                    seed,
                    now,
                )
            }
        };
        let l7 = self.l7.get(&ns);
        for &(proto, port) in n.ports.keys() {
            if l7.is_none_or(|s| !(proto == Proto::TCP && port == s.port)) {
                stack.serve(proto, port);
            }
        }
        if let Some(s) = l7 {
            stack.serve_l7(s.port, s.matching, s.rules.clone(), s.default.clone());
        }
        stack.health = self.health.get(&ns).cloned().unwrap_or_default();
        stack
    }
}

/// A copy holds the applications' configuration, not the stacks: a copy of the cluster
/// starts its stacks afresh (empty socket tables and ARP caches).
impl Clone for Hosts {
    fn clone(&self) -> Hosts {
        Hosts { stacks: Vec::new(), health: self.health.clone(), l7: self.l7.clone() }
    }
}

impl HostStacks for Hosts {
    fn ingest(&mut self, w: &World, ns: NetnsId, frame: Vec<u8>) {
        self.stack(w, ns).ingest(Side::Main, frame);
    }

    fn refuse_client(&mut self, w: &World, ns: NetnsId, client: usize) {
        self.stack(w, ns).refuse_client(client);
    }

    fn poll(&mut self, ns: NetnsId, now: Instant, out: &mut Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
        let st = self.get_mut(ns)?;
        st.poll(now, out);
        Some(std::mem::take(&mut st.lo_log))
    }
}
