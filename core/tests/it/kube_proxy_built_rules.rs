//! A node's sync loads kube-proxy's rules as built rules ([`sync_iptables_rules`]), never as
//! text. For random Services and endpoints these must be exactly what restoring the payload
//! text ([`sync_iptables`]) gives: the same meaning rule by rule, and the same restore and
//! kernel forms. That checks the restore printer of built rules against the parser too.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use podnet::kube_proxy::{
    EndpointSlice, ProxyConfig, Service, ServicePort, SliceEndpoint, TargetPort, sync_iptables,
    sync_iptables_rules,
};
use podnet::netfilter::rule::Spelling;
use podnet::netfilter::{Proto, Rule, Ruleset, TableName};

/// An endpoint: its node (0 and 1 are nodes, 2 none), ready, serving, terminating.
type EndpointSpec = (u8, Option<bool>, Option<bool>, Option<bool>);

#[derive(Clone, Debug)]
struct Spec {
    ports: Vec<(u8, bool)>,
    external_ips: u8,
    lb_ips: u8,
    source_ranges: u8,
    external_local: bool,
    internal_local: bool,
    affinity: Option<u32>,
    health_check: bool,
    endpoints: Vec<EndpointSpec>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec((0u8..3, any::<bool>()), 1..3),
        0u8..3,
        0u8..3,
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1u32..20_000),
        any::<bool>(),
        proptest::collection::vec(
            (
                0u8..3,
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
            ),
            0..5,
        ),
    )
        .prop_map(
            |(
                ports,
                external_ips,
                lb_ips,
                source_ranges,
                external_local,
                internal_local,
                affinity,
                health_check,
                endpoints,
            )| Spec {
                ports,
                external_ips,
                lb_ips,
                source_ranges,
                external_local,
                internal_local,
                affinity,
                health_check,
                endpoints,
            },
        )
}

const PROTOS: [Proto; 3] = [Proto::TCP, Proto::UDP, Proto::SCTP];

fn objects(specs: &[Spec]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for (i, sp) in specs.iter().enumerate() {
        let name = format!("svc-{i}");
        let i32 = i as u32;
        let mut s = Service::cluster_ip("ns", &name, Ipv4Addr::from(0x0a60_0000 + i32));
        s.ports = sp
            .ports
            .iter()
            .enumerate()
            .map(|(k, (proto, node_port))| ServicePort {
                name: format!("p{k}"),
                protocol: PROTOS[usize::from(*proto)],
                port: 80 + k as u16,
                target_port: TargetPort::Number(8080),
                node_port: if *node_port { 30000 + (i * 4 + k) as u16 } else { 0 },
            })
            .collect();
        s.external_ips = (0..sp.external_ips)
            .map(|k| Ipv4Addr::from(0xc0a8_0000 + 4 * i32 + u32::from(k)))
            .collect();
        s.lb_ips =
            (0..sp.lb_ips).map(|k| Ipv4Addr::from(0xcb00_0000 + 4 * i32 + u32::from(k))).collect();
        s.lb_source_ranges = (0..sp.source_ranges)
            .map(|k| if k == 0 { "192.168.0.0/24" } else { "198.51.100.0/24" }.parse().unwrap())
            .collect();
        s.external_local = sp.external_local;
        s.internal_local = sp.internal_local;
        s.affinity_timeout = sp.affinity;
        if sp.health_check {
            s.health_check_node_port = 33000 + i as u16;
        }
        slices.push(EndpointSlice {
            namespace: "ns".into(),
            service: name,
            ports: s.ports.iter().map(|p| (p.name.clone(), p.protocol, 8080)).collect(),
            endpoints: sp
                .endpoints
                .iter()
                .enumerate()
                .map(|(k, (node, ready, serving, terminating))| SliceEndpoint {
                    ip: Ipv4Addr::from(0x0af4_0000 + 8 * i32 + k as u32),
                    node_name: (*node < 2).then(|| format!("node{node}")),
                    ready: *ready,
                    serving: *serving,
                    terminating: *terminating,
                })
                .collect(),
        });
        svcs.push(s);
    }
    (svcs, slices)
}

fn config(flags: u8) -> ProxyConfig {
    ProxyConfig {
        node_name: "node0".into(),
        node_ips: vec![Ipv4Addr::new(192, 168, 0, 1)],
        local_cidr: (flags & 1 == 0).then(|| "10.244.0.0/16".parse().unwrap()),
        local_iface: None,
        masquerade_bit: 14,
        node_port_addresses: None,
        masquerade_all: flags & 2 != 0,
        random_fully: flags & 4 != 0,
        nfacct: flags & 8 != 0,
        localhost_nodeports: flags & 16 != 0,
    }
}

/// A rule's meaning: everything but its spelling.
fn meaning(r: &Rule) -> Rule {
    Rule { spelling: Spelling::Text("".into()), ..r.clone() }
}

fn assert_same(built: &Ruleset, parsed: &Ruleset) {
    for t in [TableName::Filter, TableName::Nat] {
        let (b, p) = (built.table(t), parsed.table(t));
        let names = |x: &podnet::netfilter::table::Table| -> Vec<String> {
            x.chains.keys().map(|k| k.to_string()).collect()
        };
        assert_eq!(names(b), names(p), "{t}: chains");
        for (name, chain) in &b.chains {
            let other = &p.chains[name.as_str()];
            assert_eq!(chain.declared, other.declared, "{t} {name}: declared");
            assert_eq!(chain.rules.len(), other.rules.len(), "{t} {name}: rule count");
            for (x, y) in chain.rules.iter().zip(&other.rules) {
                assert_eq!(meaning(x), meaning(y), "{t} {name}: {}", y.restore_text());
            }
        }
    }
    assert_eq!(built.save_restore_form(), parsed.save_restore_form());
    let tables = [TableName::Filter, TableName::Nat];
    assert_eq!(built.save_kernel_form(&tables), parsed.save_kernel_form(&tables));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn built_rules_are_what_restoring_the_payload_gives(
        specs in proptest::collection::vec(spec(), 1..6),
        flags in 0u8..32,
    ) {
        let (svcs, slices) = objects(&specs);
        let cfg = config(flags);
        let mut built = Ruleset::default();
        sync_iptables_rules(&cfg, &svcs, &slices).load_into(&mut built).unwrap();
        let mut parsed = Ruleset::default();
        parsed.restore(&sync_iptables(&cfg, &svcs, &slices), false).unwrap();
        assert_same(&built, &parsed);
    }
}

/// A sync large enough to be written by two threads loads the same rules as its text.
#[test]
fn a_large_sync_loads_what_its_payload_restores() {
    let specs: Vec<Spec> = (0..700)
        .map(|i| Spec {
            ports: vec![(i as u8 % 3, i % 2 == 0)],
            external_ips: (i % 3) as u8,
            lb_ips: (i % 2) as u8,
            source_ranges: (i % 3) as u8,
            external_local: i % 5 == 0,
            internal_local: i % 7 == 0,
            affinity: (i % 4 == 0).then_some(10_800),
            health_check: i % 6 == 0,
            endpoints: (0..(i % 5) as u8).map(|k| (k % 3, None, None, None)).collect(),
        })
        .collect();
    let (svcs, slices) = objects(&specs);
    let cfg = config(16);
    let mut built = Ruleset::default();
    sync_iptables_rules(&cfg, &svcs, &slices).load_into(&mut built).unwrap();
    let mut parsed = Ruleset::default();
    parsed.restore(&sync_iptables(&cfg, &svcs, &slices), false).unwrap();
    assert_same(&built, &parsed);
}
