//! The policy engine: NetworkPolicies compiled per pod, answering the datapath's
//! [`Guard`] at pods' host-side interfaces.
//!
//! Compiled once, kept current by small updates: for each pod, the policies that isolate it
//! for ingress and for egress (a pod's namespace's policies, matched against its labels
//! once), so a check costs the rules of the policies selecting that pod, whatever the number
//! of other policies; pods by address (peers are recognised by their IP, as CNIs do with
//! ipsets or identities) and by host-side interface.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::Ipv4Addr;

use podnet_netfilter::Proto;

use crate::datapath::{Guard, Stage, Verdict};
use crate::ids::{IfIndex, PodId};
use crate::labels::Labels;
use crate::world::World;

use super::{Direction, NetworkPolicy, Peer, PeerRef, PodRef, PortRef};

/// Where policies are enforced (`networkPolicy.enforcement` in PodnetConfig).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// At pods' host-side interfaces after kube-proxy's DNAT: egress sees the endpoint and
    /// its port, as iptables-based CNIs (Calico, kube-router) and Cilium's socket-level
    /// load balancing do.
    #[default]
    PostDnat,
    /// Egress before kube-proxy's DNAT: the ClusterIP and Service port the pod wrote, as an
    /// eBPF agent at the veth's TC hook sees them (the AWS network policy agent).
    PreDnat,
    /// Not enforced: a CNI without NetworkPolicy support (flannel, the bridge plugin alone).
    Off,
}

impl Enforcement {
    /// Reads `post-dnat`, `pre-dnat` or `off`.
    pub fn parse(s: &str) -> Option<Enforcement> {
        match s {
            "post-dnat" => Some(Enforcement::PostDnat),
            "pre-dnat" => Some(Enforcement::PreDnat),
            "off" => Some(Enforcement::Off),
            _ => None,
        }
    }
}

/// Whether connections between a pod and its own node are judged by policies
/// (`networkPolicy.hostTraffic`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostTraffic {
    /// Always allowed (kubelet probes, hostNetwork pods): what the Kubernetes docs promise
    /// and Calico and Cilium do by default.
    #[default]
    Allow,
    /// Judged like any other peer (the node's address is an ipBlock peer).
    Policy,
}

impl HostTraffic {
    /// Reads `allow` or `policy`.
    pub fn parse(s: &str) -> Option<HostTraffic> {
        match s {
            "allow" => Some(HostTraffic::Allow),
            "policy" => Some(HostTraffic::Policy),
            _ => None,
        }
    }
}

/// How the cluster's CNI enforces NetworkPolicy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyConfig {
    /// Where.
    pub enforcement: Enforcement,
    /// The pod's own node.
    pub host_traffic: HostTraffic,
}

/// What policies do to one pod (`podnet policy --pod`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PolicySummary {
    /// `NS/NAME`.
    pub pod: String,
    /// The policies selecting it (`NS/NAME`), each with the directions it isolates.
    pub policies: Vec<(String, Vec<Direction>)>,
    /// Whether it is isolated for ingress; then only `ingress` is allowed.
    pub ingress_isolated: bool,
    /// Whether it is isolated for egress; then only `egress` is allowed.
    pub egress_isolated: bool,
    /// What may connect to it: one line per rule, `NS/NAME spec.ingress[i]: from …; ports …`.
    pub ingress: Vec<String>,
    /// What it may connect to, likewise.
    pub egress: Vec<String>,
}

impl std::fmt::Display for PolicySummary {
    /// As `podnet policy --pod` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let iso = |b: bool| if b { "isolated" } else { "not isolated" };
        writeln!(
            f,
            "pod {}: {} for ingress, {} for egress",
            self.pod,
            iso(self.ingress_isolated),
            iso(self.egress_isolated)
        )?;
        if self.policies.is_empty() {
            writeln!(f, "selected by no NetworkPolicy")?;
        } else {
            writeln!(f, "selected by:")?;
            for (k, dirs) in &self.policies {
                let d: Vec<&str> = dirs.iter().map(|d| d.as_str()).collect();
                writeln!(f, "  netpol/{k} ({})", d.join(", "))?;
            }
        }
        for (word, isolated, lines) in [
            ("ingress", self.ingress_isolated, &self.ingress),
            ("egress", self.egress_isolated, &self.egress),
        ] {
            if !isolated {
                writeln!(f, "{word} allowed: everything (no policy isolates it for {word})")?;
            } else if lines.is_empty() {
                writeln!(
                    f,
                    "{word} allowed: nothing but replies to its own connections and, unless hostTraffic is policy, its own node"
                )?;
            } else {
                writeln!(f, "{word} allowed:")?;
                for l in lines {
                    writeln!(f, "  {l}")?;
                }
            }
        }
        Ok(())
    }
}

/// The compiled policies of a cluster.
#[derive(Clone, Debug, Default)]
pub(crate) struct Engine {
    /// How they are enforced.
    pub(crate) cfg: PolicyConfig,
    /// The policies, in load order.
    pub(crate) policies: Vec<NetworkPolicy>,
    /// Namespaces' labels.
    namespaces: BTreeMap<String, Labels>,
    /// Labels of no namespace (never read: every pod's namespace has an entry).
    no_labels: Labels,
    /// The policies of each namespace (a policy selects pods of its own namespace only).
    by_ns: BTreeMap<String, Vec<u32>>,
    /// Per pod (by id): the policies isolating it for ingress and for egress.
    per_pod: Vec<[Vec<u32>; 2]>,
    /// Per pod: its named container ports.
    named: Vec<Vec<(String, Proto, u16)>>,
    /// Pods (not host-network, not deleted) by address.
    by_ip: HashMap<Ipv4Addr, PodId>,
    /// Pods by host-side interface.
    by_dev: HashMap<IfIndex, PodId>,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Engine {
    /// Compiles everything again (after policies or namespaces changed).
    pub(crate) fn rebuild(&mut self, w: &World, namespaces: &BTreeMap<String, Labels>) {
        self.namespaces = namespaces.clone();
        self.by_ns.clear();
        for (k, p) in self.policies.iter().enumerate() {
            self.by_ns.entry(p.namespace.clone()).or_default().push(k as u32);
        }
        self.per_pod.clear();
        self.named.clear();
        self.by_ip.clear();
        self.by_dev.clear();
        for i in 0..w.pods.len() {
            self.pod_changed(w, PodId(i as u32));
        }
    }

    /// Compiles pod `id` again (added, deleted).
    pub(crate) fn pod_changed(&mut self, w: &World, id: PodId) {
        let i = id.idx();
        if self.per_pod.len() <= i {
            self.per_pod.resize_with(i + 1, Default::default);
            self.named.resize_with(i + 1, Vec::new);
        }
        let p = &w.pods[i];
        if self.by_ip.get(&p.ip) == Some(&id) {
            self.by_ip.remove(&p.ip);
        }
        if self.by_dev.get(&p.host_veth) == Some(&id) {
            self.by_dev.remove(&p.host_veth);
        }
        if p.deleted || p.host_network {
            self.per_pod[i] = Default::default();
            self.named[i].clear();
            return;
        }
        self.namespaces.entry(p.namespace.clone()).or_insert_with(|| {
            Labels::from([("kubernetes.io/metadata.name".to_string(), p.namespace.clone())])
        });
        self.by_ip.insert(p.ip, id);
        self.by_dev.insert(p.host_veth, id);
        self.named[i] = p.containers.iter().flat_map(|c| c.named_ports.iter().cloned()).collect();
        let ns_labels = self.ns_labels(&p.namespace);
        let me = PodRef {
            namespace: &p.namespace,
            namespace_labels: ns_labels,
            labels: &p.labels,
            named_ports: &[],
        };
        let mut lists: [Vec<u32>; 2] = Default::default();
        for &k in self.by_ns.get(&p.namespace).map_or(&[][..], |v| v) {
            let pol = &self.policies[k as usize];
            for d in [Direction::Ingress, Direction::Egress] {
                if pol.isolates(&me, d) {
                    lists[dir_index(d)].push(k);
                }
            }
        }
        self.per_pod[i] = lists;
    }

    /// A namespace's labels; a namespace no object described has the one label the API
    /// server sets on every namespace (kept so, see [`Engine::pod_changed`]).
    fn ns_labels(&self, ns: &str) -> &Labels {
        self.namespaces.get(ns).unwrap_or(&self.no_labels)
    }

    fn isolating(&self, pod: PodId, dir: Direction) -> &[u32] {
        self.per_pod.get(pod.idx()).map_or(&[], |l| &l[dir_index(dir)])
    }

    /// What policies do to pod `id`.
    pub(crate) fn summary(&self, w: &World, id: PodId) -> PolicySummary {
        let p = &w.pods[id.idx()];
        let mut policies: Vec<(String, Vec<Direction>)> = Vec::new();
        let mut lines: [Vec<String>; 2] = Default::default();
        for d in [Direction::Ingress, Direction::Egress] {
            for &k in self.isolating(id, d) {
                let pol = &self.policies[k as usize];
                match policies.iter_mut().find(|(n, _)| *n == pol.key()) {
                    Some((_, ds)) => ds.push(d),
                    None => policies.push((pol.key(), vec![d])),
                }
                let rules = match d {
                    Direction::Ingress => &pol.ingress,
                    Direction::Egress => &pol.egress,
                };
                for (r, rule) in rules.iter().enumerate() {
                    let mut s = format!("{} spec.{}[{r}]: ", pol.key(), d.as_str());
                    let word = if d == Direction::Ingress { "from" } else { "to" };
                    if rule.peers.is_empty() {
                        let _ = write!(s, "{word} anywhere");
                    } else {
                        let peers: Vec<String> =
                            rule.peers.iter().map(|x| describe_peer(x, &pol.namespace)).collect();
                        let _ = write!(s, "{word} {}", peers.join(" or "));
                    }
                    if rule.ports.is_empty() {
                        s.push_str("; every port");
                    } else {
                        let ports: Vec<String> = rule
                            .ports
                            .iter()
                            .map(|pp| {
                                let proto = pp.protocol.to_string().to_ascii_uppercase();
                                match &pp.port {
                                    None => format!("{proto} every port"),
                                    Some(PortRef::Number(a, None)) => format!("{proto} {a}"),
                                    Some(PortRef::Number(a, Some(b))) => format!("{proto} {a}-{b}"),
                                    Some(PortRef::Name(n)) => format!("{proto} {n}"),
                                }
                            })
                            .collect();
                        let _ = write!(s, "; ports {}", ports.join(", "));
                    }
                    lines[dir_index(d)].push(s);
                }
            }
        }
        let [ingress, egress] = lines;
        PolicySummary {
            pod: format!("{}/{}", p.namespace, p.name),
            ingress_isolated: !self.isolating(id, Direction::Ingress).is_empty(),
            egress_isolated: !self.isolating(id, Direction::Egress).is_empty(),
            policies,
            ingress,
            egress,
        }
    }
}

/// A peer as `kubectl describe netpol` words it.
fn describe_peer(p: &Peer, own_ns: &str) -> String {
    match p {
        Peer::IpBlock { cidr, except } if except.is_empty() => format!("ipBlock {cidr}"),
        Peer::IpBlock { cidr, except } => {
            let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
            format!("ipBlock {cidr} except {}", ex.join(", "))
        }
        Peer::Pods { namespaces, pods } => {
            let pods = match pods {
                None => "every pod".to_string(),
                Some(s) if s.is_empty() => "every pod".to_string(),
                Some(s) => format!("pods {s}"),
            };
            match namespaces {
                None => format!("{pods} of namespace {own_ns}"),
                Some(s) if s.is_empty() => format!("{pods} of every namespace"),
                Some(s) => format!("{pods} of namespaces {s}"),
            }
        }
    }
}

impl Guard for Engine {
    fn stage(&self) -> Option<Stage> {
        if self.policies.is_empty() {
            return None;
        }
        match self.cfg.enforcement {
            Enforcement::PostDnat => Some(Stage::PostDnat),
            Enforcement::PreDnat => Some(Stage::PreDnat),
            Enforcement::Off => None,
        }
    }

    fn host_traffic_allowed(&self) -> bool {
        self.cfg.host_traffic == HostTraffic::Allow
    }

    fn pod_of_host_dev(&self, dev: IfIndex) -> Option<PodId> {
        self.by_dev.get(&dev).copied()
    }

    fn policy_key(&self, policy: usize) -> String {
        self.policies.get(policy).map(NetworkPolicy::key).unwrap_or_default()
    }

    fn isolated(&self, pod: PodId, dir: Direction) -> bool {
        !self.isolating(pod, dir).is_empty()
    }

    fn check(
        &self,
        w: &World,
        pod: PodId,
        dir: Direction,
        peer: Ipv4Addr,
        proto: Proto,
        port: u16,
    ) -> Verdict {
        let list = self.isolating(pod, dir);
        if list.is_empty() {
            return Verdict::NotIsolated;
        }
        let me_pod = &w.pods[pod.idx()];
        let me = PodRef {
            namespace: &me_pod.namespace,
            namespace_labels: self.ns_labels(&me_pod.namespace),
            labels: &me_pod.labels,
            named_ports: &self.named[pod.idx()],
        };
        let peer_id = self.by_ip.get(&peer).copied();
        let peer_ref = match peer_id {
            Some(id) => {
                let pp = &w.pods[id.idx()];
                Some(PodRef {
                    namespace: &pp.namespace,
                    namespace_labels: self.ns_labels(&pp.namespace),
                    labels: &pp.labels,
                    named_ports: &self.named[id.idx()],
                })
            }
            None => None,
        };
        let peer = PeerRef { ip: peer, pod: peer_ref };
        let dest = match dir {
            Direction::Ingress => Some(&me),
            Direction::Egress => peer.pod.as_ref(),
        };
        for &k in list {
            let pol = &self.policies[k as usize];
            if let Some(r) = pol.allowing_rule(dir, &peer, dest, proto, port) {
                return Verdict::Allowed { policy: k as usize, rule: r };
            }
        }
        Verdict::Denied(list.iter().map(|&k| k as usize).collect())
    }
}
