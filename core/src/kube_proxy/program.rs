//! A kube-proxy sync written into the nodes: each node's filter and nat tables (iptables
//! mode), or its IPVS virtual services, ipsets, `kube-ipvs0` addresses and the iptables
//! rules IPVS mode keeps; its health-check servers; and the conntrack entries of UDP
//! endpoints that went away.
//!
//! What the world does not say about a node comes in a [`NodeSetup`]: kube-proxy's
//! local-traffic detector (the CNI decides where pods' addresses come from) and the egress
//! SNAT rules another agent writes beside kube-proxy's (ip-masq-agent, or the AWS VPC CNI's
//! `AWS-SNAT-CHAIN-0`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use podnet_netfilter::{ParseError, Proto, Ruleset, TableName};

use crate::error::ClusterError;
use crate::host::{HealthServer, Hosts};
use crate::ids::NodeId;
use crate::world::{DeviceKind, Node, World};

use super::ServicePort;
use super::iptables::merge_restore;
use super::{
    EndpointSlice, ProxyConfig, ProxyMode, Services, base_jumps, base_jumps_ipvs, health_checks,
    sync_iptables, sync_iptables_rules, sync_ipvs,
};

/// What a node's sync needs to know beyond the world.
#[derive(Clone, Debug)]
pub(crate) struct NodeSetup {
    /// `--detect-local-mode=ClusterCIDR`: the range pods' addresses come from.
    pub(crate) local_cidr: Option<Ipv4Network>,
    /// Every address of the node (its InternalIPs and ExternalIPs), the primary first.
    pub(crate) node_ips: Vec<Ipv4Addr>,
    /// The egress SNAT rules another agent writes on the node (`iptables-restore` input,
    /// applied with `--noflush` after kube-proxy's).
    pub(crate) egress: String,
}

/// Who holds the health-check ports in a node's port table.
const HEALTH_OWNER: &str = "kube-proxy";

impl Services {
    /// A full sync of every node, each with its [`NodeSetup`] (by node index; nodes whose
    /// rules were imported from a real node keep them); returns the EndpointSlices it worked
    /// from, for the other controllers.
    pub(crate) fn program(
        &mut self,
        w: &mut World,
        hosts: &mut Hosts,
        setups: &[NodeSetup],
    ) -> Vec<EndpointSlice> {
        let slices = self.endpoint_slices(w);
        self.clear_stale_udp(w, &slices);
        if self.mode != ProxyMode::Nftables {
            self.sync_errors.clear();
        }
        // iptables mode: nodes whose payload cannot differ share one copy of the tables
        // (copy-on-write; see `Netfilter::tables`). A payload depends on the node only
        // through its endpoints of Services with a Local traffic policy, its addresses in
        // loadBalancerSourceRanges and its egress rules; that is the key.
        // Nodes whose rules come out the same share one ruleset: same local endpoints, same
        // source-range verdicts, same egress rules, and the same per-node kube-proxy
        // settings (a NodeCIDR detector, the nodePortAddresses addresses).
        type Key = (Vec<Ipv4Addr>, bool, String, Option<Ipv4Network>, Option<Vec<Ipv4Addr>>);
        let mut shared: HashMap<Key, Arc<Ruleset>> = HashMap::new();
        // nftables mode: nodes given the same transaction share one ruleset.
        let mut shared_nft: HashMap<String, Arc<podnet_netfilter::nft::Ruleset>> = HashMap::new();
        let local_policy: BTreeSet<(&str, &str)> = self
            .list
            .iter()
            .filter(|s| s.internal_local || s.external_local)
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        let local_slices: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|sl| local_policy.contains(&(sl.namespace.as_str(), sl.service.as_str())))
            .collect();
        let ranges: Vec<Ipv4Network> =
            self.list.iter().flat_map(|s| s.lb_source_ranges.iter().copied()).collect();
        for (n, setup) in setups.iter().enumerate().take(w.nodes.len()) {
            let node_id = NodeId(n as u32);
            // kube-proxy sets its node's conntrack timeouts when it starts (its
            // `conntrack` settings), whatever rules the node runs.
            if let Some(nf) = w.netns[w.nodes[n].netns.idx()].nf.as_mut() {
                let st = &self.settings;
                let t = &mut nf.conntrack.timeouts;
                let secs = |s: u32| smoltcp::time::Duration::from_secs(u64::from(s));
                if let Some(s) = st.conntrack_tcp_established {
                    t.tcp_established = secs(s);
                }
                if let Some(s) = st.conntrack_tcp_close_wait {
                    t.tcp_close_wait = secs(s);
                }
                if let Some(s) = st.conntrack_udp {
                    t.udp = secs(s);
                }
                if let Some(s) = st.conntrack_udp_stream {
                    t.udp_stream = secs(s);
                }
            }
            if self.imported.contains(&node_id) {
                // The node runs rules imported from its real iptables-save: keep them.
                continue;
            }
            let node = &w.nodes[n];
            let ns = node.netns;
            let cfg = self.proxy_config(node, setup);
            match self.mode {
                ProxyMode::Iptables => {
                    let mut local_eps: Vec<Ipv4Addr> = local_slices
                        .iter()
                        .flat_map(|sl| &sl.endpoints)
                        .filter(|e| e.node_name.as_deref() == Some(node.name.as_str()))
                        .map(|e| e.ip)
                        .collect();
                    local_eps.sort();
                    let in_ranges = ranges.iter().any(|r| r.contains(node.ip));
                    let key = (
                        local_eps,
                        in_ranges,
                        setup.egress.clone(),
                        cfg.local_cidr,
                        cfg.node_port_addresses.clone(),
                    );
                    let tables = shared
                        .entry(key)
                        .or_insert_with(|| {
                            Arc::new(self.iptables_mode_rules(&cfg, &slices, &setup.egress))
                        })
                        .clone();
                    set_ipvs_addresses(w, node_id, &[]);
                    if let Some(nf) = w.netns[ns.idx()].nf.as_mut() {
                        let own = TableName::ALL
                            .iter()
                            .filter(|t| !matches!(t, TableName::Filter | TableName::Nat))
                            .any(|t| !nf.tables().is_pristine(*t));
                        if own {
                            // Something else wrote raw or mangle here: keep it.
                            for t in [TableName::Filter, TableName::Nat] {
                                nf.tables_mut().set_table(t, tables.table(t).clone());
                            }
                        } else {
                            nf.set_tables(tables);
                        }
                        nf.ipvs = podnet_netfilter::ipvs::Ipvs::default();
                        nf.sets = podnet_netfilter::ipset::IpSets::default();
                        drop_kube_proxy_nft(nf);
                    }
                }
                ProxyMode::Nftables => {
                    let text = self.nftables_payload(&cfg, node, &slices);
                    let egress = egress_only(&setup.egress);
                    let node_name = node.name.clone();
                    set_ipvs_addresses(w, node_id, &[]);
                    if let Some(nf) = w.netns[ns.idx()].nf.as_mut() {
                        // kube-proxy cleans up the other modes' rules when it starts; the
                        // egress agent's iptables rules stay.
                        let tables = nf.tables_mut();
                        for t in [TableName::Filter, TableName::Nat] {
                            tables.set_table(t, egress.table(t).clone());
                        }
                        nf.ipvs = podnet_netfilter::ipvs::Ipvs::default();
                        nf.sets = podnet_netfilter::ipset::IpSets::default();
                        // A full sync replaces the table. When nft refuses the transaction
                        // (kube-proxy logs "nftables sync failed" and retries), the node has
                        // no kube-proxy table: Services do not work there, as on a real one.
                        // Other software's tables stay; kube-proxy's own is written anew
                        // (a copy of the old one is made only when there are others).
                        let others = nf.nft().tables.iter().any(|t| {
                            (t.family, t.name.as_str())
                                != (podnet_netfilter::nft::Family::Ip, "kube-proxy")
                        });
                        let (mut rules, replace) = if !others {
                            (podnet_netfilter::nft::Ruleset::default(), "")
                        } else if nf
                            .nft()
                            .table(podnet_netfilter::nft::Family::Ip, "kube-proxy")
                            .is_some()
                        {
                            ((**nf.nft()).clone(), "delete table ip kube-proxy\n")
                        } else {
                            ((**nf.nft()).clone(), "")
                        };
                        if let Some(same) = shared_nft.get(&text).filter(|_| !others) {
                            self.sync_errors.remove(&node_name);
                            nf.set_nft(Arc::clone(same));
                            continue;
                        }
                        let applied = rules.apply(&format!("{replace}{text}"));
                        let ok = applied.is_ok();
                        match applied {
                            Ok(()) => {
                                self.sync_errors.remove(&node_name);
                            }
                            Err(e) => {
                                let _ = rules.apply(replace);
                                self.sync_errors.insert(
                                    node_name,
                                    format!("nftables sync failed: nft -f: {e}"),
                                );
                            }
                        }
                        let rules = Arc::new(rules);
                        if !others && ok {
                            shared_nft.insert(text, Arc::clone(&rules));
                        }
                        nf.set_nft(rules);
                    }
                }
                ProxyMode::Ipvs(sched) => {
                    let cfg = ProxyConfig { node_ips: ipvs_node_ips(w, node), ..cfg };
                    let sync = sync_ipvs(&cfg, &self.list, &slices, sched);
                    set_ipvs_addresses(w, node_id, &sync.bound);
                    if let Some(nf) = w.netns[ns.idx()].nf.as_mut() {
                        let tables = nf.tables_mut();
                        tables
                            .restore(&sync.iptables, false)
                            .expect("kube-proxy's own payload always parses");
                        tables
                            .restore(base_jumps_ipvs(), true)
                            .expect("the built-in jumps always parse");
                        tables
                            .restore(&setup.egress, true)
                            .expect("the egress SNAT rules always parse");
                        let mut sets = podnet_netfilter::ipset::IpSets::default();
                        for (name, kind, comment, members) in &sync.sets {
                            sets.create(name, *kind, comment);
                            for m in members {
                                sets.add(name, m)
                                    .expect("kube-proxy's own set members fit their sets");
                            }
                        }
                        nf.sets = sets;
                        nf.ipvs.replace(sync.services);
                        drop_kube_proxy_nft(nf);
                    }
                }
            }
        }
        self.sync_health_checks(w, hosts, &slices);
        slices
    }

    /// kube-proxy deletes the conntrack entries of UDP endpoints that went away
    /// (`conntrack -D -p udp --reply-src EP --reply-port-src PORT`), so clients stop sending
    /// to them at once; TCP is left to conntrack and the endpoints' RSTs.
    fn clear_stale_udp(&mut self, w: &mut World, slices: &[EndpointSlice]) {
        let now_eps: BTreeSet<(Ipv4Addr, u16)> = slices
            .iter()
            .flat_map(|s| {
                let ports: Vec<u16> = s
                    .ports
                    .iter()
                    .filter(|(_, p, _)| *p == Proto::UDP)
                    .map(|(_, _, n)| *n)
                    .collect();
                s.endpoints
                    .iter()
                    .filter(|e| e.ready.unwrap_or(true))
                    .flat_map(move |e| ports.clone().into_iter().map(move |p| (e.ip, p)))
            })
            .collect();
        let gone: Vec<(Ipv4Addr, u16)> = self.udp_endpoints.difference(&now_eps).copied().collect();
        self.udp_endpoints = now_eps;
        if gone.is_empty() {
            return;
        }
        for n in 0..w.nodes.len() {
            let ns = w.nodes[n].netns;
            if let Some(nf) = w.netns[ns.idx()].nf.as_mut() {
                nf.conntrack.delete_where(|e| {
                    e.orig.proto == Proto::UDP && gone.contains(&(e.reply.src, e.reply.sport))
                });
            }
        }
    }

    /// Starts, updates or stops each node's health-check servers (`healthCheckNodePort`).
    fn sync_health_checks(&self, w: &mut World, hosts: &mut Hosts, slices: &[EndpointSlice]) {
        for n in 0..w.nodes.len() {
            let checks = health_checks(&w.nodes[n].name, &self.list, slices);
            let ns_id = w.nodes[n].netns;
            let ns = &mut w.netns[ns_id.idx()];
            let old_ports: Vec<u16> =
                hosts.health(ns_id).map(|h| h.keys().copied().collect()).unwrap_or_default();
            for p in &old_ports {
                if ns.ports.get(&(Proto::TCP, *p)).is_some_and(|o| o == HEALTH_OWNER) {
                    ns.ports.remove(&(Proto::TCP, *p));
                }
            }
            // A hostNetwork process already holding the port keeps it (kube-proxy fails to
            // listen there and logs it).
            let want: BTreeMap<u16, HealthServer> = checks
                .iter()
                .filter(|h| !ns.ports.contains_key(&(Proto::TCP, h.port)))
                .map(|h| {
                    let unhealthy = (!h.healthy()).then(|| {
                        format!(
                            "kube-proxy's health check server for svc/{}/{} answered 503: no ready local endpoint on this node",
                            h.namespace, h.name
                        )
                    });
                    (h.port, HealthServer { response: h.response(), unhealthy })
                })
                .collect();
            for p in want.keys() {
                ns.ports.insert((Proto::TCP, *p), HEALTH_OWNER.to_string());
            }
            // Listening sockets follow the port set: a changed set rebuilds the stack.
            hosts.set_health(ns_id, want);
        }
    }

    /// kube-proxy's settings on a node.
    fn proxy_config(&self, node: &Node, setup: &NodeSetup) -> ProxyConfig {
        use super::{DetectLocal, NodePortAddress};
        let st = &self.settings;
        let (local_cidr, local_iface) = match &st.detect_local {
            DetectLocal::Default => (setup.local_cidr, None),
            DetectLocal::ClusterCidr(c) => (*c, None),
            DetectLocal::NodeCidr => (Some(node.pod_cidr), None),
            DetectLocal::BridgeInterface(b) => (None, Some(b.clone())),
            DetectLocal::InterfaceNamePrefix(p) => (None, Some(format!("{p}+"))),
        };
        let node_ips =
            if setup.node_ips.is_empty() { vec![node.ip] } else { setup.node_ips.clone() };
        // nodePortAddresses selects among the node's addresses and loopback; localhost
        // NodePorts stay on only when loopback is among them (kube-proxy's NewProxier).
        let loopback = std::net::Ipv4Addr::LOCALHOST;
        let node_port_addresses = st.node_port_addresses.as_ref().map(|list| {
            let mut out: Vec<std::net::Ipv4Addr> = Vec::new();
            for a in node_ips.iter().copied().chain([loopback]) {
                let hit = list.iter().any(|e| match e {
                    NodePortAddress::Cidr(c) => c.contains(a),
                    NodePortAddress::Primary => a == node.ip,
                });
                if hit && !out.contains(&a) {
                    out.push(a);
                }
            }
            out
        });
        let localhost_nodeports = st.localhost_nodeports
            && node_port_addresses.as_ref().is_none_or(|a| a.contains(&loopback));
        ProxyConfig {
            node_name: node.name.clone(),
            node_ips,
            local_cidr,
            local_iface,
            masquerade_bit: st.masquerade_bit,
            node_port_addresses,
            masquerade_all: self.masquerade_all,
            random_fully: self.random_fully,
            nfacct: false,
            localhost_nodeports,
        }
    }

    /// Everything iptables mode puts on a node: kube-proxy's payload, the built-in chain
    /// jumps, and the egress SNAT, as restoring the payload and then the other two with
    /// `--noflush` leaves the tables.
    fn iptables_mode_rules(
        &self,
        cfg: &ProxyConfig,
        slices: &[EndpointSlice],
        egress: &str,
    ) -> Ruleset {
        let mut payload = sync_iptables_rules(cfg, &self.list, slices);
        // kube-proxy ensures the chains its jumps lead to (`EnsureChain`) whether or not its
        // payload fills them: KUBE-FIREWALL stays empty with localhost NodePorts off.
        if !payload.filter.iter().any(|(c, _)| c.as_str() == "KUBE-FIREWALL") {
            payload.filter.push((
                podnet_netfilter::ChainName::new("KUBE-FIREWALL").expect("fits"),
                Vec::new(),
            ));
        }
        payload.append_restore(base_jumps()).expect("the built-in jumps always parse");
        payload.append_restore(egress).expect("the egress SNAT rules always parse");
        let mut rs = Ruleset::default();
        payload.load_into(&mut rs).expect("kube-proxy's chains and jumps are consistent");
        rs
    }

    /// The `nft -f` transaction of a full nftables-mode sync on `node`.
    pub(crate) fn nftables_payload(
        &self,
        cfg: &ProxyConfig,
        node: &Node,
        slices: &[EndpointSlice],
    ) -> String {
        // nftables mode's nodePortAddresses default is `primary`: the node's own address.
        let cfg = ProxyConfig {
            node_port_addresses: Some(cfg.node_port_addresses.clone().unwrap_or(vec![node.ip])),
            ..cfg.clone()
        };
        super::sync_nftables(&cfg, &self.list, slices, &[self.service_cidr])
    }

    /// The rules a sync would write on `node` now (for comparing with what it has).
    pub(crate) fn expected_rules(&self, w: &World, node: &Node, setup: &NodeSetup) -> Ruleset {
        let slices = self.endpoint_slices(w);
        let cfg = self.proxy_config(node, setup);
        match self.mode {
            ProxyMode::Iptables => self.iptables_mode_rules(&cfg, &slices, &setup.egress),
            ProxyMode::Nftables => egress_only(&setup.egress),
            ProxyMode::Ipvs(sched) => {
                let sync = sync_ipvs(&cfg, &self.list, &slices, sched);
                let text = merge_restore(&[&sync.iptables, base_jumps_ipvs(), &setup.egress]);
                let mut rs = Ruleset::default();
                rs.restore(&text, false).expect("kube-proxy's own payload always parses");
                rs
            }
        }
    }

    /// What kube-proxy writes on `node` in its mode: the iptables-mode restore payload
    /// (restore form; IPVS mode's iptables rules), or nftables mode's `nft -f` transaction.
    pub(crate) fn payload(&self, w: &World, node: &Node, setup: &NodeSetup) -> String {
        let cfg = self.proxy_config(node, setup);
        let slices = self.endpoint_slices(w);
        match self.mode {
            ProxyMode::Iptables => sync_iptables(&cfg, &self.list, &slices),
            ProxyMode::Nftables => self.nftables_payload(&cfg, node, &slices),
            ProxyMode::Ipvs(sched) => sync_ipvs(&cfg, &self.list, &slices, sched).iptables,
        }
    }

    /// Runs `node` on the rules of a real node's `iptables-save` from now on: later syncs
    /// leave it alone.
    pub(crate) fn import(
        &mut self,
        w: &mut World,
        node: NodeId,
        text: &str,
    ) -> Result<(), ParseError> {
        let mut rs = Ruleset::default();
        rs.restore(text, false)?;
        let ns = w.nodes[node.idx()].netns;
        if let Some(nf) = w.netns[ns.idx()].nf.as_mut() {
            nf.set_tables(Arc::new(rs));
        }
        self.imported.insert(node);
        Ok(())
    }

    /// Whether `node` runs rules imported from a real node.
    pub(crate) fn is_imported(&self, node: NodeId) -> bool {
        self.imported.contains(&node)
    }

    /// `svc/NS/NAME` (or `NS/NAME`) and a port (number or name) as ClusterIP, port and
    /// protocol. A named port is that port, whatever `proto` says (the caller checks they
    /// agree); a number is the port of protocol `proto` with that number, or, with no
    /// protocol asked, the only one (TCP where the number carries both).
    pub(crate) fn resolve(
        &self,
        key: &str,
        port: &str,
        proto: Option<Proto>,
    ) -> Result<(Ipv4Addr, u16, Proto), ClusterError> {
        let k = key.strip_prefix("svc/").unwrap_or(key);
        let wanted = k.split_once('/');
        let svc =
            self.list.iter().find(|s| wanted == Some((s.namespace.as_str(), s.name.as_str())));
        let svc = svc.ok_or_else(|| ClusterError::NotFound {
            kind: "service",
            name: key.into(),
            known: self.list.iter().map(|s| format!("svc/{}/{}", s.namespace, s.name)).collect(),
            fix: None,
        })?;
        let named = svc.ports.iter().find(|p| !p.name.is_empty() && p.name == port);
        let numbered = || {
            let n: u16 = port.parse().ok()?;
            let mut same = svc.ports.iter().filter(|p| p.port == n);
            match proto {
                Some(want) => same.find(|p| p.protocol == want),
                None => {
                    let all: Vec<&ServicePort> = same.collect();
                    all.iter().find(|p| p.protocol == Proto::TCP).or(all.first()).copied()
                }
            }
        };
        let p = named.or_else(numbered).ok_or_else(|| ClusterError::NotFound {
            kind: "port",
            name: match proto {
                Some(want) if port.parse::<u16>().is_ok() => {
                    format!("{key}:{port}/{}", want.to_string().to_uppercase())
                }
                _ => format!("{key}:{port}"),
            },
            known: svc
                .ports
                .iter()
                .map(|p| {
                    let name = if p.name.is_empty() { "(unnamed)" } else { p.name.as_str() };
                    format!("{name}={}/{}", p.port, p.protocol.to_string().to_uppercase())
                })
                .collect(),
            fix: None,
        })?;
        let ip = svc.cluster_ip.ok_or_else(|| ClusterError::NotFound {
            kind: "ClusterIP",
            name: key.into(),
            known: Vec::new(),
            fix: Some("it is a headless Service"),
        })?;
        Ok((ip, p.port, p.protocol))
    }
}

/// The node addresses IPVS mode serves NodePorts on: its `eth0` address, and the bridge's
/// address where pods sit on one.
fn ipvs_node_ips(w: &World, node: &Node) -> Vec<Ipv4Addr> {
    let mut ips = vec![node.ip];
    if let Some(br) = node.bridge
        && let Some(a) = w.devs[br.idx()].addrs.first()
    {
        ips.push(a.ip());
    }
    ips
}

/// The iptables tables of a node where kube-proxy writes none: the egress agent's rules.
fn egress_only(egress: &str) -> Ruleset {
    let mut rs = Ruleset::default();
    rs.restore(egress, true).expect("the egress SNAT rules always parse");
    rs
}

/// Removes the `ip kube-proxy` nf_tables table (kube-proxy in another mode cleans up
/// nftables mode's table when it starts).
fn drop_kube_proxy_nft(nf: &mut podnet_netfilter::Netfilter) {
    if nf.nft().table(podnet_netfilter::nft::Family::Ip, "kube-proxy").is_some() {
        let _ = nf.nft_apply("delete table ip kube-proxy\n");
    }
}

/// Binds `addrs` to the node's `kube-ipvs0` dummy device (created on first use).
fn set_ipvs_addresses(w: &mut World, node: NodeId, addrs: &[Ipv4Addr]) {
    let ns = w.nodes[node.idx()].netns;
    let existing = w.dev_named(ns, "kube-ipvs0");
    let dev = match (existing, addrs.is_empty()) {
        (Some(d), _) => d,
        (None, true) => return,
        (None, false) => w.add_device(ns, "kube-ipvs0", DeviceKind::Dummy),
    };
    let addrs = addrs.iter().map(|a| Ipv4Network::new(*a, 32).expect("/32"));
    w.set_addrs(dev, addrs.collect());
}
