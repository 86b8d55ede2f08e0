//! kube-proxy in IPVS mode, after `pkg/proxy/ipvs/proxier.go`.

use std::fmt::Write;
use std::net::Ipv4Addr;

use podnet_netfilter::Proto;

use super::iptables::{Ep, endpoints_for, sorted_services};
use super::{EndpointSlice, ProxyConfig, Service};

/// What kube-proxy programs on a node in IPVS mode.
#[derive(Clone, Debug)]
pub struct IpvsSync {
    /// The iptables restore payload IPVS mode still writes (nat and filter).
    pub iptables: String,
    /// ipsets: (name, type, comment, members).
    pub sets: Vec<(&'static str, podnet_netfilter::ipset::SetType, &'static str, Vec<String>)>,
    /// Virtual services.
    pub services:
        indexmap::IndexMap<(Proto, Ipv4Addr, u16), podnet_netfilter::ipvs::VirtualService>,
    /// Addresses bound to `kube-ipvs0`.
    pub bound: Vec<Ipv4Addr>,
}

/// kube-proxy in IPVS mode (after `pkg/proxy/ipvs/proxier.go`): virtual servers per
/// ClusterIP:port, externalIP, LB IP and nodeIP:nodePort; real servers from ready endpoints
/// (Local policy without local endpoints falls back to all of them, as IPVS mode does); the
/// ipsets and the iptables rules it still installs.
pub fn sync_ipvs(
    cfg: &ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    scheduler: podnet_netfilter::ipvs::Scheduler,
) -> IpvsSync {
    use podnet_netfilter::ipset::SetType;
    use podnet_netfilter::ipvs::{RealServer, VirtualService};
    let mut by_svc: std::collections::HashMap<(&str, &str), Vec<&EndpointSlice>> =
        std::collections::HashMap::new();
    for sl in slices {
        by_svc.entry((sl.namespace.as_str(), sl.service.as_str())).or_default().push(sl);
    }
    let mut vss = indexmap::IndexMap::new();
    let mut bound = Vec::new();
    let (mut cluster_ip, mut loop_back, mut np_tcp, mut np_udp, mut hc, mut ext) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut lb, mut lb_local, mut lb_fw, mut lb_cidr) = (vec![], vec![], vec![], vec![]);
    for svc in sorted_services(services) {
        let Some(cip) = svc.cluster_ip else { continue };
        let mine = by_svc
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in &svc.ports {
            let eps = endpoints_for(cfg, port, mine);
            let ready: Vec<&Ep> = eps.iter().filter(|e| e.ready).collect();
            let local: Vec<&Ep> = ready.iter().copied().filter(|e| e.local).collect();
            let proto = port.protocol;
            let p = proto.to_string();
            let reals = |list: &[&Ep]| {
                list.iter()
                    .map(|e| RealServer {
                        addr: e.ip,
                        port: e.port,
                        weight: 1,
                        active: 0,
                        inactive: 0,
                    })
                    .collect::<Vec<_>>()
            };
            // Local policy with no local endpoints falls back to every endpoint in IPVS mode.
            let pick = |local_only: bool| {
                if local_only && !local.is_empty() { reals(&local) } else { reals(&ready) }
            };
            let mut add = |addr: Ipv4Addr, vport: u16, local_only: bool| {
                let mut vs = VirtualService::new(scheduler, svc.affinity_timeout);
                vs.reals = pick(local_only);
                vss.insert((proto, addr, vport), vs);
            };
            add(cip, port.port, svc.internal_local);
            bound.push(cip);
            cluster_ip.push(format!("{cip},{p}:{}", port.port));
            for ip in &svc.external_ips {
                add(*ip, port.port, svc.external_local);
                bound.push(*ip);
                ext.push(format!("{ip},{p}:{}", port.port));
            }
            for ip in &svc.lb_ips {
                add(*ip, port.port, svc.external_local);
                bound.push(*ip);
                let member = format!("{ip},{p}:{}", port.port);
                if svc.external_local {
                    lb_local.push(member.clone());
                }
                if !svc.lb_source_ranges.is_empty() {
                    lb_fw.push(member.clone());
                    for r in &svc.lb_source_ranges {
                        lb_cidr.push(format!("{member},{r}"));
                    }
                }
                lb.push(member);
            }
            if port.node_port != 0 {
                for ip in &cfg.node_ips {
                    add(*ip, port.node_port, svc.external_local);
                }
                match proto {
                    Proto::UDP => np_udp.push(port.node_port.to_string()),
                    _ => np_tcp.push(port.node_port.to_string()),
                }
            }
            for e in eps.iter().filter(|e| e.local) {
                loop_back.push(format!("{},{p}:{},{}", e.ip, e.port, e.ip));
            }
            if svc.needs_health_check() && svc.health_check_node_port != 0 {
                hc.push(svc.health_check_node_port.to_string());
            }
        }
    }
    bound.sort();
    bound.dedup();
    let ipvs_ips: Vec<String> = bound.iter().map(ToString::to_string).collect();
    // KUBE-CLUSTER-IP's masquerade rule: everything with masqueradeAll, traffic the local
    // detector does not call pod traffic, or with no detector the node's traffic whose
    // source is a virtual address (`src,dst`).
    let (cip_flags, masq_src) = if cfg.masquerade_all {
        ("dst,dst", String::new())
    } else if let Some(c) = cfg.local_cidr {
        ("dst,dst", format!(" ! -s {c}"))
    } else if let Some(i) = &cfg.local_iface {
        ("dst,dst", format!(" ! -i {i}"))
    } else {
        ("src,dst", String::new())
    };
    let mark = format!("{:#x}", 1u32 << cfg.masquerade_bit.min(31));
    let rf = if cfg.random_fully { " --random-fully" } else { "" };
    let mut nat = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    nat.push_str("-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n");
    if !loop_back.is_empty() {
        nat.push_str("-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE\n");
    }
    for (set, proto, members) in
        [("KUBE-NODE-PORT-TCP", "tcp", &np_tcp), ("KUBE-NODE-PORT-UDP", "udp", &np_udp)]
    {
        if !members.is_empty() {
            let _ = writeln!(
                nat,
                "-A KUBE-NODE-PORT -p {proto} -m comment --comment \"Kubernetes nodeport {} port for masquerade purpose\" -m set --match-set {set} dst -j KUBE-MARK-MASQ",
                proto.to_uppercase()
            );
        }
    }
    if !cluster_ip.is_empty() {
        let _ = writeln!(
            nat,
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP {cip_flags}{masq_src} -j KUBE-MARK-MASQ"
        );
    }
    if !ext.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ\n");
    }
    if !lb.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER\n");
    }
    if !lb_local.is_empty() {
        nat.push_str("-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN\n");
    }
    nat.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n");
    nat.push_str("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ\n");
    if !cluster_ip.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n");
    }
    if !lb.is_empty() {
        nat.push_str("-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT\n");
    }
    let _ = writeln!(nat, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}");
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN\n-A KUBE-POSTROUTING -j MARK --xor-mark {mark}"
    );
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{rf}"
    );
    nat.push_str("COMMIT\n");
    let mut filter = String::from(
        "*filter\n:KUBE-FORWARD - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-SOURCE-RANGES-FIREWALL - [0:0]\n:KUBE-IPVS-FILTER - [0:0]\n:KUBE-IPVS-OUT-FILTER - [0:0]\n",
    );
    if !lb_fw.is_empty() {
        filter.push_str("-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL\n");
        filter.push_str("-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source cidr for packet filter purpose\" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN\n");
    }
    filter.push_str("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP\n");
    filter.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    filter.push_str("-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT\n");
    for set in
        ["KUBE-LOAD-BALANCER", "KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL"]
    {
        let _ = writeln!(filter, "-A KUBE-IPVS-FILTER -m set --match-set {set} dst,dst -j RETURN");
    }
    filter.push_str(
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN\n",
    );
    filter.push_str("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT\n");
    filter.push_str("COMMIT\n");
    let sets = vec![
        (
            "KUBE-CLUSTER-IP",
            SetType::HashIpPort,
            "Kubernetes service cluster ip + port for masquerade purpose",
            cluster_ip,
        ),
        (
            "KUBE-LOOP-BACK",
            SetType::HashIpPortIp,
            "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
            loop_back,
        ),
        (
            "KUBE-EXTERNAL-IP",
            SetType::HashIpPort,
            "Kubernetes service external ip + port for masquerade and filter purpose",
            ext,
        ),
        (
            "KUBE-EXTERNAL-IP-LOCAL",
            SetType::HashIpPort,
            "Kubernetes service external ip + port with externalTrafficPolicy=local",
            vec![],
        ),
        ("KUBE-LOAD-BALANCER", SetType::HashIpPort, "Kubernetes service lb portal", lb),
        (
            "KUBE-LOAD-BALANCER-LOCAL",
            SetType::HashIpPort,
            "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
            lb_local,
        ),
        (
            "KUBE-LOAD-BALANCER-FW",
            SetType::HashIpPort,
            "Kubernetes service load balancer ip + port for load balancer with sourceRange",
            lb_fw,
        ),
        (
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            SetType::HashIpPortNet,
            "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
            lb_cidr,
        ),
        (
            "KUBE-NODE-PORT-TCP",
            SetType::BitmapPort,
            "Kubernetes nodeport TCP port for masquerade purpose",
            np_tcp,
        ),
        (
            "KUBE-NODE-PORT-UDP",
            SetType::BitmapPort,
            "Kubernetes nodeport UDP port for masquerade purpose",
            np_udp,
        ),
        (
            "KUBE-HEALTH-CHECK-NODE-PORT",
            SetType::BitmapPort,
            "Kubernetes health check node port",
            hc,
        ),
        (
            "KUBE-IPVS-IPS",
            SetType::HashIp,
            "Kubernetes service IP addresses bound to kube-ipvs0",
            ipvs_ips,
        ),
    ];
    IpvsSync { iptables: format!("{filter}{nat}"), sets, services: vss, bound }
}

/// The jumps IPVS mode installs in the built-in chains.
pub fn base_jumps_ipvs() -> &'static str {
    "*filter\n\
:INPUT ACCEPT [0:0]\n\
:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER\n\
-A INPUT -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
-A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT\n\
-A FORWARD -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
-A OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER\n\
COMMIT\n\
*nat\n\
:PREROUTING ACCEPT [0:0]\n\
:INPUT ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
COMMIT\n"
}
