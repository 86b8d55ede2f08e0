//! kube-proxy in nftables mode (the v1.33 layout), after `pkg/proxy/nftables/proxier.go`:
//! Services and EndpointSlices in, the `nft -f` transaction of a full sync out, per node.
//!
//! One table, `ip kube-proxy`. Base chains at kube-proxy's priorities
//! (`filter-prerouting-pre-dnat` and `filter-output-pre-dnat` at dstnat − 10, so firewall
//! checks see the Service address; `nat-prerouting`/`nat-output` at dstnat; the filter
//! chains of forward, input and output at filter; `nat-postrouting` at srcnat). Traffic finds
//! its Service through verdict maps keyed on `ip daddr . meta l4proto . th dport`
//! (`service-ips`) and `meta l4proto . th dport` (`service-nodeports`), so a packet's cost
//! does not grow with the number of Services. Per Service port: `service-` (cluster
//! policy), `local-` (local policy), `external-`, `firewall-` chains and an `endpoint-`
//! chain per endpoint, named `PREFIX + base32(sha256(name))[:8] + "-" + name` with name
//! `ns/svc/proto/port[__ip/port]` (kube-proxy's `hashAndTruncate`).
//!
//! What differs from iptables mode, as kube-proxy does it: a packet to a ClusterIP on a port
//! the Service lacks is rejected (`cluster-ips-check`), one to an unallocated address of the
//! service CIDR dropped; NodePorts answer only on `nodePortAddresses` (the node's primary
//! address when unset), never on 127.0.0.1; endpoints are picked with `numgen random mod N`
//! in one step rather than a cascade of probabilities.
//!
//! The transaction declares everything before it is used (table, sets and maps, chains, then
//! rules, then elements): `nft -f` reads it as one transaction. Within a Service, chains are
//! declared `service-`, `local-`, `external-`, the endpoint chains by name, `firewall-`;
//! kube-proxy walks a Go map, so a real node's order varies from sync to sync and only the
//! set of objects is fixed (kube-proxy's own tests compare sorted lines, as ours do).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Proto;

use super::iptables::{Categorized, Ep, categorize, endpoints_for, hash_prefix, sorted_services};
use super::{EndpointSlice, ProxyConfig, Service, ServicePort};

/// kube-proxy's `hashAndTruncate`: `base32(sha256(name))[:8] + "-" + name`, cut to 240
/// characters (the last three `...`) when longer.
pub fn hash_and_truncate(name: &str) -> String {
    let mut s = hash_prefix(name, 8);
    s.push('-');
    s.push_str(name);
    if s.len() > 240 {
        let mut cut = 237;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn proto_name(p: Proto) -> String {
    match p {
        Proto::TCP => "tcp".into(),
        Proto::UDP => "udp".into(),
        Proto::SCTP => "sctp".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// The transaction being written: declarations, rules and elements kept apart so that
/// everything is declared before it is used.
#[derive(Default)]
struct Tx {
    decl: String,
    rules: String,
    elems: String,
}

const T: &str = "ip kube-proxy";

impl Tx {
    fn chain(&mut self, name: &str) {
        let _ = writeln!(self.decl, "add chain {T} {name}");
    }
    fn rule(&mut self, chain: &str, rule: &str) {
        let _ = writeln!(self.rules, "add rule {T} {chain} {rule}");
    }
    fn rule_commented(&mut self, chain: &str, rule: &str, comment: &str) {
        let _ = writeln!(self.rules, "add rule {T} {chain} {rule} comment \"{comment}\"");
    }
    fn elem(&mut self, set: &str, elem: &str) {
        let _ = writeln!(self.elems, "add element {T} {set} {{ {elem} }}");
    }
}

/// The `nft -f` input of a full kube-proxy sync on the node `cfg` describes, for `services`
/// and `slices`; `service_cidrs` are the cluster's ServiceCIDRs (traffic to an unallocated
/// address in them is dropped).
pub fn sync_nftables(
    cfg: &ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    service_cidrs: &[Ipv4Network],
) -> String {
    let mut tx = Tx::default();
    base(cfg, service_cidrs, &mut tx);
    let mut cluster_ips: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut by_svc: std::collections::HashMap<(&str, &str), Vec<&EndpointSlice>> =
        std::collections::HashMap::new();
    for sl in slices {
        by_svc.entry((sl.namespace.as_str(), sl.service.as_str())).or_default().push(sl);
    }
    for svc in sorted_services(services) {
        let Some(cip) = svc.cluster_ip else { continue };
        let mine =
            by_svc.get(&(svc.namespace.as_str(), svc.name.as_str())).map_or(&[][..], Vec::as_slice);
        for port in &svc.ports {
            let eps = endpoints_for(cfg, port, mine);
            if cluster_ips.insert(cip) {
                tx.elem("cluster-ips", &cip.to_string());
            }
            service_port(cfg, svc, port, cip, &eps, &mut tx);
        }
    }
    let mut out = tx.decl;
    out.push_str(&tx.rules);
    out.push_str(&tx.elems);
    out
}

/// `setupNFTables`: the table, its sets and maps, base and helper chains and their rules.
fn base(cfg: &ProxyConfig, service_cidrs: &[Ipv4Network], tx: &mut Tx) {
    let d = &mut tx.decl;
    let _ = writeln!(d, "add table {T} {{ comment \"rules for kube-proxy\" ; }}");
    let _ = writeln!(
        d,
        "add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    let match_all = cfg.node_port_addresses.is_none();
    if !match_all {
        let _ = writeln!(
            d,
            "add set {T} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
        );
    }
    for (name, key, comment) in [
        (
            "firewall-ips",
            "ipv4_addr . inet_proto . inet_service",
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
        (
            "no-endpoint-nodeports",
            "inet_proto . inet_service",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "service-ips",
            "ipv4_addr . inet_proto . inet_service",
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        ("service-nodeports", "inet_proto . inet_service", "NodePort traffic"),
    ] {
        let _ =
            writeln!(d, "add map {T} {name} {{ type {key} : verdict ; comment \"{comment}\" ; }}");
    }
    for (name, hook) in [
        ("cluster-ips-check", None),
        ("filter-prerouting-pre-dnat", Some(("filter", "prerouting", -110))),
        ("filter-output-pre-dnat", Some(("filter", "output", -110))),
        ("filter-forward", Some(("filter", "forward", 0))),
        ("filter-input", Some(("filter", "input", 0))),
        ("filter-output", Some(("filter", "output", 0))),
        ("firewall-check", None),
        ("mark-for-masquerade", None),
        ("masquerading", None),
        ("nat-output", Some(("nat", "output", -100))),
        ("nat-postrouting", Some(("nat", "postrouting", 100))),
        ("nat-prerouting", Some(("nat", "prerouting", -100))),
        ("nodeport-endpoints-check", None),
        ("reject-chain", None),
        ("services", None),
        ("service-endpoints-check", None),
    ] {
        match (name, hook) {
            (_, Some((ty, hook, prio))) => {
                let _ = writeln!(
                    d,
                    "add chain {T} {name} {{ type {ty} hook {hook} priority {prio} ; }}"
                );
            }
            ("reject-chain", None) => {
                let _ = writeln!(
                    d,
                    "add chain {T} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
                );
            }
            _ => tx_chain(d, name),
        }
    }
    tx.rule_commented(
        "cluster-ips-check",
        "ip daddr @cluster-ips reject",
        "Reject traffic to invalid ports of ClusterIPs",
    );
    if !service_cidrs.is_empty() {
        let cidrs: Vec<String> = service_cidrs.iter().map(ToString::to_string).collect();
        tx.rule_commented(
            "cluster-ips-check",
            &format!("ip daddr {{ {} }} drop", cidrs.join(",")),
            "Drop traffic to unallocated ClusterIPs",
        );
    }
    for (chain, to) in [
        ("filter-prerouting-pre-dnat", "firewall-check"),
        ("filter-forward", "service-endpoints-check"),
        ("filter-forward", "cluster-ips-check"),
        ("filter-input", "nodeport-endpoints-check"),
        ("filter-input", "service-endpoints-check"),
        ("filter-output", "service-endpoints-check"),
        ("filter-output-pre-dnat", "firewall-check"),
        ("filter-output", "cluster-ips-check"),
    ] {
        tx.rule(chain, &format!("ct state new jump {to}"));
    }
    tx.rule("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips");
    let mark = format!("{:#x}", 1u32 << cfg.masquerade_bit.min(31));
    tx.rule("mark-for-masquerade", &format!("mark set mark or {mark}"));
    tx.rule("masquerading", &format!("mark and {mark} == 0 return"));
    tx.rule("masquerading", &format!("mark set mark xor {mark}"));
    tx.rule("masquerading", "masquerade fully-random");
    tx.rule("nat-output", "jump services");
    tx.rule("nat-postrouting", "jump masquerading");
    tx.rule("nat-prerouting", "jump services");
    let no_localhost = "ip daddr != 127.0.0.0/8";
    if match_all {
        tx.rule(
            "nodeport-endpoints-check",
            &format!("{no_localhost} meta l4proto . th dport vmap @no-endpoint-nodeports"),
        );
    } else {
        tx.rule(
            "nodeport-endpoints-check",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        );
    }
    tx.rule("reject-chain", "reject");
    tx.rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips");
    if match_all {
        tx.rule(
            "services",
            &format!(
                "fib daddr type local {no_localhost} meta l4proto . th dport vmap @service-nodeports"
            ),
        );
    } else {
        tx.rule(
            "services",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        );
        // localhost NodePorts are not supported in nftables mode: loopback addresses among
        // nodePortAddresses are skipped (kube-proxy logs it).
        for a in cfg.node_port_addresses.iter().flatten().filter(|a| !a.is_loopback()) {
            tx.elem("nodeport-ips", &a.to_string());
        }
    }
    tx.rule(
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
}

fn tx_chain(d: &mut String, name: &str) {
    let _ = writeln!(d, "add chain {T} {name}");
}

/// One Service port's chains, rules and elements (`syncProxyRules`' loop body).
fn service_port(
    cfg: &ProxyConfig,
    svc: &Service,
    port: &ServicePort,
    cip: Ipv4Addr,
    eps: &[Ep],
    tx: &mut Tx,
) {
    let proto = proto_name(port.protocol);
    let base = hash_and_truncate(&format!("{}/{}/{proto}/{}", svc.namespace, svc.name, port.name));
    let port_name = if port.name.is_empty() {
        format!("{}/{}", svc.namespace, svc.name)
    } else {
        format!("{}/{}:{}", svc.namespace, svc.name, port.name)
    };
    let cluster_chain = format!("service-{base}");
    let local_chain = format!("local-{base}");
    let ext_chain = format!("external-{base}");
    let fw_chain = format!("firewall-{base}");
    let ep_base = |e: &Ep| {
        hash_and_truncate(&format!(
            "{}/{}/{proto}/{}__{}/{}",
            svc.namespace, svc.name, port.name, e.ip, e.port
        ))
    };
    let Categorized {
        cluster,
        local,
        has_endpoints,
        uses_cluster_chain,
        uses_local_chain,
        has_internal,
        has_external,
        uses_ext_chain,
    } = categorize(svc, port, eps);
    let internal_chain = if svc.internal_local { &local_chain } else { &cluster_chain };
    let external_policy = if svc.external_local { &local_chain } else { &cluster_chain };
    let uses_fw = !svc.lb_ips.is_empty() && !svc.lb_source_ranges.is_empty();
    let verdict = |has: bool| {
        if !has_endpoints {
            "goto reject-chain"
        } else if !has {
            "drop"
        } else {
            ""
        }
    };
    let mut reachable: Vec<&Ep> = Vec::new();
    if uses_cluster_chain {
        reachable.extend(cluster.iter().copied());
    }
    if uses_local_chain {
        for e in &local {
            if !reachable.iter().any(|u| u.ip == e.ip && u.port == e.port) {
                reachable.push(e);
            }
        }
    }
    // Declarations.
    let affinity = svc.affinity_timeout;
    if let Some(t) = affinity {
        for e in &reachable {
            let _ = writeln!(
                tx.decl,
                "add set {T} affinity-{} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {t}s ; }}",
                ep_base(e)
            );
        }
    }
    if uses_cluster_chain {
        tx.chain(&cluster_chain);
    }
    if uses_local_chain {
        tx.chain(&local_chain);
    }
    if uses_ext_chain {
        tx.chain(&ext_chain);
    }
    let mut ep_chains: Vec<(String, &Ep)> =
        reachable.iter().map(|e| (format!("endpoint-{}", ep_base(e)), *e)).collect();
    ep_chains.sort_by(|a, b| a.0.cmp(&b.0));
    for (c, _) in &ep_chains {
        tx.chain(c);
    }
    if uses_fw {
        tx.chain(&fw_chain);
    }
    // Elements.
    let key = |ip: Ipv4Addr| format!("{ip} . {proto} . {}", port.port);
    if has_internal {
        tx.elem("service-ips", &format!("{} : goto {internal_chain}", key(cip)));
    } else {
        tx.elem(
            "no-endpoint-services",
            &format!("{} comment \"{port_name}\" : {}", key(cip), verdict(has_internal)),
        );
    }
    for ip in &svc.external_ips {
        if has_endpoints {
            tx.elem("service-ips", &format!("{} : goto {ext_chain}", key(*ip)));
        }
        if !has_external {
            tx.elem(
                "no-endpoint-services",
                &format!("{} comment \"{port_name}\" : {}", key(*ip), verdict(has_external)),
            );
        }
    }
    for ip in &svc.lb_ips {
        if has_endpoints {
            tx.elem("service-ips", &format!("{} : goto {ext_chain}", key(*ip)));
        }
        if uses_fw {
            tx.elem("firewall-ips", &format!("{} : goto {fw_chain}", key(*ip)));
        }
    }
    if !has_external {
        for ip in &svc.lb_ips {
            tx.elem(
                "no-endpoint-services",
                &format!("{} comment \"{port_name}\" : {}", key(*ip), verdict(has_external)),
            );
        }
    }
    if port.node_port != 0 {
        let np = format!("{proto} . {}", port.node_port);
        if has_endpoints {
            tx.elem("service-nodeports", &format!("{np} : goto {ext_chain}"));
        }
        if !has_external {
            tx.elem(
                "no-endpoint-nodeports",
                &format!("{np} comment \"{port_name}\" : {}", verdict(has_external)),
            );
        }
    }
    // Rules.
    if has_internal {
        if cfg.masquerade_all {
            tx.rule(internal_chain, &format!("ip daddr {cip} jump mark-for-masquerade"));
        } else if let Some(not_local) = if_not_local(cfg) {
            tx.rule(
                internal_chain,
                &format!("ip daddr {cip} {not_local} jump mark-for-masquerade"),
            );
        }
    }
    if uses_ext_chain {
        if !svc.external_local {
            tx.rule(&ext_chain, "jump mark-for-masquerade");
        } else {
            if let Some(local) = if_local(cfg) {
                tx.rule_commented(
                    &ext_chain,
                    &format!("{local} goto {cluster_chain}"),
                    "short-circuit pod traffic",
                );
            }
            tx.rule_commented(
                &ext_chain,
                "fib saddr type local jump mark-for-masquerade",
                "masquerade local traffic",
            );
            tx.rule_commented(
                &ext_chain,
                &format!("fib saddr type local goto {cluster_chain}"),
                "short-circuit local traffic",
            );
        }
        if has_external {
            tx.rule(&ext_chain, &format!("goto {external_policy}"));
        }
    }
    if uses_fw {
        let mut sources: Vec<String> =
            svc.lb_source_ranges.iter().map(ToString::to_string).collect();
        if svc.lb_source_ranges.iter().any(|r| cfg.node_ips.first().is_some_and(|n| r.contains(*n)))
        {
            sources.extend(svc.lb_ips.iter().map(ToString::to_string));
        }
        tx.rule(&fw_chain, &format!("ip saddr != {{ {} }} drop", sources.join(", ")));
    }
    let ep_chain_of = |e: &Ep| format!("endpoint-{}", ep_base(e));
    let policy = |tx: &mut Tx, chain: &str, list: &[&Ep]| {
        if affinity.is_some() {
            for e in list {
                tx.rule(
                    chain,
                    &format!("ip saddr @affinity-{} goto {}", ep_base(e), ep_chain_of(e)),
                );
            }
        }
        let arms: Vec<String> = list
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} : goto {}", ep_chain_of(e)))
            .collect();
        tx.rule(
            chain,
            &format!("numgen random mod {} vmap {{ {} }}", list.len(), arms.join(" , ")),
        );
    };
    if uses_cluster_chain {
        policy(tx, &cluster_chain, &cluster);
    }
    if uses_local_chain {
        policy(tx, &local_chain, &local);
    }
    for (c, e) in &ep_chains {
        tx.rule(c, &format!("ip saddr {} jump mark-for-masquerade", e.ip));
        if affinity.is_some() {
            tx.rule(c, &format!("update @affinity-{} {{ ip saddr }}", ep_base(e)));
        }
        tx.rule(c, &format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port));
    }
}

/// The local-traffic detector's nftables match (`IfLocalNFT`), if there is one.
fn if_local(cfg: &ProxyConfig) -> Option<String> {
    match (&cfg.local_cidr, &cfg.local_iface) {
        (Some(c), _) => Some(format!("ip saddr {c}")),
        (None, Some(i)) => Some(format!("iif {}", nft_iface(i))),
        (None, None) => None,
    }
}

/// `IfNotLocalNFT`.
fn if_not_local(cfg: &ProxyConfig) -> Option<String> {
    match (&cfg.local_cidr, &cfg.local_iface) {
        (Some(c), _) => Some(format!("ip saddr != {c}")),
        (None, Some(i)) => Some(format!("iif != {}", nft_iface(i))),
        (None, None) => None,
    }
}

/// An interface of the detector as kube-proxy writes it for nft: a prefix (iptables `veth+`)
/// as `veth*`.
fn nft_iface(i: &str) -> String {
    match i.strip_suffix('+') {
        Some(p) => format!("{p}*"),
        None => i.to_string(),
    }
}
