//! kube-proxy's `TestOverallIPTablesRules`: the same objects must give the same restore
//! payload, byte for byte (after the test's own sort, which `sync_iptables` applies).

use std::net::Ipv4Addr;

use podnet::kube_proxy::{
    EndpointSlice, ProxyConfig, Service, ServicePort, ServiceType, SliceEndpoint, TargetPort,
    sync_iptables,
};
use podnet::netfilter::{Proto, Ruleset};

const GOLDEN: &str = include_str!("../../../netfilter/tests/data/kube-proxy-overall.restore");

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn port(node_port: u16) -> ServicePort {
    ServicePort {
        name: "p80".into(),
        protocol: Proto::TCP,
        port: 80,
        target_port: TargetPort::Number(80),
        node_port,
    }
}

fn slice(svc: &str, eps: &[(&str, Option<&str>)]) -> EndpointSlice {
    let ns = format!("ns{}", &svc[3..]);
    EndpointSlice {
        namespace: ns,
        service: svc.into(),
        ports: vec![("p80".into(), Proto::TCP, 80)],
        endpoints: eps
            .iter()
            .map(|(a, n)| SliceEndpoint {
                ip: ip(a),
                node_name: n.map(str::to_string),
                ready: None,
                serving: None,
                terminating: None,
            })
            .collect(),
    }
}

fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut s1 = Service::cluster_ip("ns1", "svc1", ip("172.30.0.41"));
    s1.ports = vec![port(0)];
    let mut s2 = Service::cluster_ip("ns2", "svc2", ip("172.30.0.42"));
    s2.kind = ServiceType::LoadBalancer;
    s2.external_local = true;
    s2.ports = vec![port(3001)];
    s2.lb_ips = vec![ip("1.2.3.4")];
    s2.external_ips = vec![ip("192.168.99.22")];
    s2.health_check_node_port = 30000;
    let mut s3 = Service::cluster_ip("ns3", "svc3", ip("172.30.0.43"));
    s3.kind = ServiceType::NodePort;
    s3.ports = vec![port(3003)];
    let mut s4 = Service::cluster_ip("ns4", "svc4", ip("172.30.0.44"));
    s4.kind = ServiceType::NodePort;
    s4.ports = vec![port(0)];
    s4.external_ips = vec![ip("192.168.99.33")];
    let mut s5 = Service::cluster_ip("ns5", "svc5", ip("172.30.0.45"));
    s5.kind = ServiceType::LoadBalancer;
    s5.ports = vec![port(3002)];
    s5.lb_ips = vec![ip("5.6.7.8")];
    s5.health_check_node_port = 30000;
    s5.lb_source_ranges = vec![" 203.0.113.0/25".trim().parse().unwrap()];
    s5.affinity_timeout = Some(10800);
    let mut s6 = Service::cluster_ip("ns6", "svc6", ip("172.30.0.46"));
    s6.ports = vec![port(0)];
    let slices = vec![
        slice("svc1", &[("10.180.0.1", None)]),
        slice("svc2", &[("10.180.0.2", None)]),
        slice("svc3", &[("10.180.0.3", None)]),
        slice("svc4", &[("10.180.0.4", None), ("10.180.0.5", Some("test-node"))]),
        slice("svc5", &[("10.180.0.3", None)]),
    ];
    (vec![s1, s2, s3, s4, s5, s6], slices)
}

fn config() -> ProxyConfig {
    ProxyConfig {
        node_name: "test-node".into(),
        node_ips: vec![ip("192.168.0.2")],
        local_cidr: Some("10.0.0.0/8".parse().unwrap()),
        local_iface: None,
        masquerade_bit: 14,
        node_port_addresses: None,
        masquerade_all: false,
        random_fully: false,
        nfacct: true,
        localhost_nodeports: true,
    }
}

#[test]
fn overall_iptables_rules_match_kube_proxy_golden_dump() {
    let (svcs, slices) = objects();
    let ours = sync_iptables(&config(), &svcs, &slices);
    let golden: String =
        GOLDEN.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    if ours != golden {
        for (i, (a, b)) in ours.lines().zip(golden.lines()).enumerate() {
            if a != b {
                panic!("first difference at line {}:\n ours:   {a}\n golden: {b}", i + 1);
            }
        }
        panic!(
            "line counts differ: ours {} golden {}",
            ours.lines().count(),
            golden.lines().count()
        );
    }
    // And the netfilter crate accepts it as iptables-restore would.
    Ruleset::default().restore(&ours, false).unwrap();
}

#[test]
fn random_fully_is_appended_when_enabled() {
    let (svcs, slices) = objects();
    let out = sync_iptables(&ProxyConfig { random_fully: true, ..config() }, &svcs, &slices);
    assert!(out.contains("-j MASQUERADE --random-fully\n"));
}

/// kube-proxy's `TestOverallNFTablesRules`: the same objects (its `NewFakeProxier`: node
/// 192.168.0.2, `nodePortAddresses` 192.168.0.2/32, pod CIDR 10.0.0.0/8, service CIDR
/// 172.30.0.0/16) give the same transaction. kube-proxy's test compares the lines sorted
/// (`assertNFTablesTransactionEqual`), and so does this one.
#[test]
fn overall_nftables_rules_match_kube_proxy_golden_dump() {
    const NFT_GOLDEN: &str =
        include_str!("../../../netfilter/tests/data/kube-proxy-overall-nftables-dump.txt");
    let (svcs, slices) = objects();
    let cfg = ProxyConfig { node_port_addresses: Some(vec![ip("192.168.0.2")]), ..config() };
    let ours = podnet::kube_proxy::sync_nftables(
        &cfg,
        &svcs,
        &slices,
        &["172.30.0.0/16".parse().unwrap()],
    );
    let sorted = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let (a, b) = (sorted(&ours), sorted(NFT_GOLDEN));
    for l in &a {
        assert!(b.contains(l), "ours has a line the golden dump lacks:\n{l}");
    }
    for l in &b {
        assert!(a.contains(l), "the golden dump has a line ours lacks:\n{l}");
    }
    assert_eq!(a, b);
    // nft reads it as one transaction, and lists it as nft listed the same rules live.
    let mut rs = podnet::netfilter::nft::Ruleset::default();
    rs.apply(&ours).unwrap();
    assert_eq!(
        rs.list(),
        include_str!("../../../netfilter/tests/data/kube-proxy-overall.nft-list-ruleset")
    );
}
