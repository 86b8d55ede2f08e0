//! The facts each golden trace must show, written from Linux's and kube-proxy's behaviour,
//! not from podnet's output: where the DNAT happens, the addresses each side sees, the
//! conntrack entry each node holds. A golden file blessed with a wrong trace fails here.

use podnet::Cluster;
use podnet::demo::scenarios;
use podnet::kube_proxy::ProxyMode;
use podnet::netfilter::ipvs::Scheduler;
use podnet::trace::TraceOptions;
use serde_json::Value;

/// The golden file of a scenario, and the cluster after running the same flow on a fresh
/// reference cluster (checked to be the golden run itself).
fn golden(id: &str) -> (Value, Cluster) {
    let path = format!("{}/tests/golden/{id}.json", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let s = scenarios().into_iter().find(|s| s.id == id).unwrap();
    let mut c = Cluster::seed();
    if s.ipvs {
        c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
    }
    let t =
        c.trace(s.from, s.to, &TraceOptions { proto: Some(s.proto), ..TraceOptions::default() });
    let again: Value = serde_json::from_str(&t.unwrap().to_json()).unwrap();
    assert_eq!(again["hops"], v["hops"], "{id}: the golden file is this run");
    (v, c)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn hops(v: &Value) -> &Vec<Value> {
    v["hops"].as_array().unwrap()
}

/// `(netns, device, detail)` of every hop whose action is `nat`.
fn nats(v: &Value) -> Vec<(String, String, String)> {
    hops(v)
        .iter()
        .filter(|h| h["action"] == "nat")
        .map(|h| {
            let d = h["device"].as_str().unwrap_or("").to_string();
            (s(h, "netns").to_string(), d, s(h, "detail").to_string())
        })
        .collect()
}

/// The NAT decisions (not conntrack's replays of them) a trace made.
fn decided(v: &Value) -> Vec<(String, String, String)> {
    nats(v).into_iter().filter(|n| !n.2.starts_with("conntrack:")).collect()
}

/// Whether a rule of a chain named `chain` (or starting with it, for kube-proxy's hashed
/// names ending in `-`) whose text holds every one of `parts` was hit.
fn hit(v: &Value, chain: &str, parts: &[&str]) -> bool {
    hops(v).iter().any(|h| {
        h["action"] == "rule"
            && h["chain"]
                .as_str()
                .is_some_and(|c| c == chain || (chain.ends_with('-') && c.starts_with(chain)))
            && h["rule"].as_str().is_some_and(|r| parts.iter().all(|p| r.contains(p)))
    })
}

/// `conntrack -L` lines of a node.
fn ct(c: &Cluster, node: &str) -> String {
    c.conntrack(node).unwrap()
}

#[test]
fn containers_of_a_pod_talk_over_its_loopback_and_nothing_leaves() {
    let (v, _) = golden("fig01_03_container");
    for h in hops(&v) {
        assert_eq!(s(h, "netns"), "pod/default/pod1", "{h}");
        assert_eq!(h["device"].as_str().unwrap_or("lo"), "lo", "{h}");
    }
    assert!(s(&v, "server_saw").starts_with("127.0.0.1:"));
}

#[test]
fn pods_on_one_node_are_bridged_without_nat() {
    let (v, c) = golden("fig04_06_same_node");
    let places: std::collections::BTreeSet<&str> = hops(&v).iter().map(|h| s(h, "netns")).collect();
    assert_eq!(
        places.into_iter().collect::<Vec<_>>(),
        ["node1", "pod/default/pod1", "pod/default/pod2"],
        "nothing leaves node1"
    );
    assert!(nats(&v).is_empty(), "{:?}", nats(&v));
    // Same subnet: pod1 ARPs for pod2 itself (no gateway), and the bridge learns MACs.
    let first = &hops(&v)[0];
    assert_eq!((s(first, "netns"), s(first, "action")), ("pod/default/pod1", "tx"));
    assert_eq!(first["before"]["dst_mac"], "ff:ff:ff:ff:ff:ff");
    assert!(
        first["before"]["info"].as_str().unwrap().starts_with("who-has 10.244.1.3 tell 10.244.1.2")
    );
    assert!(hops(&v).iter().any(|h| h["action"] == "fdb"));
    assert_eq!(s(&v, "server_saw").split(':').next(), Some("10.244.1.2"));
    assert_eq!(s(&v, "reply_from"), "10.244.1.3:8080");
    // br_netfilter (bridge-nf-call-iptables=1) tracks the bridged connection on node1.
    let t = ct(&c, "node1");
    assert!(t.contains("src=10.244.1.2 dst=10.244.1.3 sport=33651 dport=8080 src=10.244.1.3 dst=10.244.1.2 sport=8080 dport=33651"), "{t}");
}

#[test]
fn pods_across_nodes_are_routed_through_the_vpc_without_snat() {
    let (v, c) = golden("fig07_cross_node");
    assert!(hops(&v).iter().any(|h| s(h, "netns") == "vpc"));
    assert!(decided(&v).is_empty(), "pod-to-pod is never translated: {:?}", decided(&v));
    // ip-masq-agent's nonMasqueradeCIDRs hold the cluster CIDR: the pod's own address
    // arrives.
    assert!(hit(&v, "IP-MASQ-AGENT", &["-d 10.244.0.0/16", "-j RETURN"]));
    assert_eq!(s(&v, "server_saw").split(':').next(), Some("10.244.1.2"));
    for node in ["node1", "node2"] {
        let t = ct(&c, node);
        assert!(
            t.contains(
                "src=10.244.1.2 dst=10.244.2.2 sport=33651 dport=8080 src=10.244.2.2 dst=10.244.1.2"
            ),
            "{node}: {t}"
        );
    }
}

/// kube-proxy's DNAT happens once, on the client's node, in PREROUTING (here on the bridge,
/// through br_netfilter); the endpoint sees the client pod's address (no masquerade for a
/// client that is not the endpoint), the client sees the ClusterIP answer; node1's entry
/// holds the translation and node2's only the plain pod-to-pod tuple.
fn service_flow(id: &str, proto: &str) {
    let (v, c) = golden(id);
    let d = decided(&v);
    assert_eq!(d.len(), 1, "{id}: one DNAT: {d:?}");
    let (ns, dev, detail) = &d[0];
    assert_eq!((ns.as_str(), dev.as_str()), ("node1", "cbr0"), "{id}");
    let to = detail.strip_prefix("DNAT 10.96.0.10:80 -> ").unwrap_or_else(|| panic!("{detail}"));
    let pod = s(&v, "delivered_to");
    let ip = c.pods().iter().find(|p| format!("pod/default/{}", p.name) == pod).unwrap().ip;
    assert_eq!(to, format!("{ip}:8080"), "{id}");
    assert_eq!(s(&v, "server_saw").split(':').next(), Some("10.244.1.3"), "{id}");
    assert_eq!(s(&v, "reply_from"), "10.96.0.10:80", "{id}");
    let n1 = ct(&c, "node1");
    assert!(n1.starts_with(proto), "{n1}");
    assert!(n1.contains(&format!("src=10.244.1.3 dst=10.96.0.10 sport=33651 dport=80 src={ip} dst=10.244.1.3 sport=8080 dport=33651")), "{id}: {n1}");
    let n2 = ct(&c, "node2");
    assert!(n2.contains(&format!("src=10.244.1.3 dst={ip} sport=33651 dport=8080 src={ip} dst=10.244.1.3 sport=8080 dport=33651")), "{id}: {n2}");
}

#[test]
fn a_clusterip_tcp_flow_is_translated_once_on_the_clients_node() {
    service_flow("fig08_09_service_tcp", "tcp");
}

#[test]
fn a_clusterip_udp_flow_is_translated_once_on_the_clients_node() {
    service_flow("fig08_09_service_udp", "udp");
}

/// IPVS mode: the virtual server schedules at LOCAL_IN of the client's node (no iptables
/// DNAT rule), the endpoint sees the client, the client sees the virtual address answer.
#[test]
fn ipvs_schedules_on_the_clients_node() {
    let (v, c) = golden("fig08_09_service_ipvs");
    let d = decided(&v);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].0.as_str(), d[0].1.as_str()), ("node1", "cbr0"));
    assert!(d[0].2.starts_with("IPVS: scheduled, DNAT 10.96.0.10:80 -> "), "{}", d[0].2);
    assert!(!hops(&v).iter().any(|h| h["rule"].as_str().is_some_and(|r| r.contains("-j DNAT"))));
    assert_eq!(s(&v, "server_saw").split(':').next(), Some("10.244.1.3"));
    assert_eq!(s(&v, "reply_from"), "10.96.0.10:80");
    assert!(c.ipvsadm("node1").unwrap().contains("TCP  10.96.0.10:80 rr"));
}

/// Egress to the internet: ip-masq-agent masquerades what leaves the cluster CIDR to the
/// node's address, and the internet gateway maps that 1:1 to the node's public address.
#[test]
fn egress_is_masqueraded_by_the_node_then_mapped_by_the_gateway() {
    let (v, c) = golden("fig10_egress");
    let d: Vec<(String, String)> = decided(&v).into_iter().map(|n| (n.0, n.2)).collect();
    assert_eq!(
        d,
        [
            ("node1".to_string(), "SNAT 10.244.1.3:33651 -> 192.168.0.1:33651".to_string()),
            ("igw".to_string(), "SNAT 192.168.0.1:33651 -> 203.0.113.1:33651".to_string()),
        ]
    );
    assert!(hit(&v, "IP-MASQ-AGENT", &["-j MASQUERADE"]));
    assert_eq!(s(&v, "server_saw"), "203.0.113.1:33651");
    assert_eq!(s(&v, "reply_from"), "203.0.113.10:80");
    let n1 = ct(&c, "node1");
    assert!(n1.contains("src=10.244.1.3 dst=203.0.113.10 sport=33651 dport=80 src=203.0.113.10 dst=192.168.0.1 sport=80 dport=33651"), "{n1}");
}

/// A NodePort from outside (`externalTrafficPolicy: Cluster`): the gateway maps the public
/// address to the node, kube-proxy DNATs to an endpoint and masquerades (the client is not
/// local), so the endpoint sees the node; the client sees the address it called.
#[test]
fn a_node_port_is_translated_and_masqueraded_by_the_receiving_node() {
    let (v, c) = golden("fig12_node_port");
    let d = decided(&v);
    let at: Vec<&str> = d.iter().map(|n| n.0.as_str()).collect();
    assert_eq!(at, ["igw", "node1", "node1"], "{d:?}");
    assert_eq!(d[0].2, "DNAT 203.0.113.1:30080 -> 192.168.0.1:30080");
    assert!(d[1].2.starts_with("DNAT 192.168.0.1:30080 -> 10.244.2.3:8080"), "{}", d[1].2);
    assert!(d[2].2.starts_with("SNAT 203.0.113.10:33651 -> 192.168.0.1:"), "{}", d[2].2);
    // kube-proxy: "masquerade traffic for default/api:http external destinations".
    assert!(hit(&v, "KUBE-EXT-", &["-j KUBE-MARK-MASQ"]));
    assert!(s(&v, "server_saw").starts_with("192.168.0.1:"));
    assert_eq!(s(&v, "reply_from"), "203.0.113.1:30080");
    let n2 = ct(&c, "node2");
    assert!(n2.contains("src=192.168.0.1 dst=10.244.2.3"), "the endpoint's node sees node1: {n2}");
    let n1 = ct(&c, "node1");
    assert!(n1.contains("src=203.0.113.10 dst=192.168.0.1 sport=33651 dport=30080 src=10.244.2.3 dst=192.168.0.1 sport=8080"), "{n1}");
}

/// A cloud load balancer in front of the NodePort: the LB translates to a node's NodePort
/// and proxies from its own address, then the node as for a NodePort.
#[test]
fn a_load_balancer_reaches_the_node_port_of_a_node() {
    let (v, _) = golden("fig11_load_balancer");
    let d = decided(&v);
    let at: Vec<&str> = d.iter().map(|n| n.0.as_str()).collect();
    assert_eq!(at, ["igw", "lb/default/api", "lb/default/api", "node1", "node1"], "{d:?}");
    assert!(d[1].2.ends_with(":30080"), "{}", d[1].2);
    assert!(d[3].2.starts_with("DNAT 192.168.0.1:30080 -> 10.244.2.3:8080"));
    assert!(s(&v, "server_saw").starts_with("192.168.0.1:"));
    assert_eq!(s(&v, "reply_from"), "203.0.113.100:80");
}

/// An ALB in instance mode: its own connection to a node's NodePort, then as a NodePort.
#[test]
fn an_alb_proxies_to_the_node_port_of_its_target() {
    let (v, _) = golden("fig13_ingress");
    assert_eq!(s(&v, "delivered_to"), "pod/default/pod4");
    assert!(s(&v, "server_saw").starts_with("192.168.0."), "the pod sees a node");
    assert_eq!(s(&v, "reply_from"), "203.0.113.200:80");
    assert!(decided(&v).iter().any(|n| n.0 == "node1" && n.2.starts_with("DNAT 192.168.0.1:30080 -> 10.244.2.3:8080")));
    assert_eq!(v["http_status"], 200);
}

#[test]
fn every_golden_scenario_has_facts_here() {
    let here = include_str!("golden_facts.rs");
    for s in scenarios() {
        assert!(here.contains(&format!("\"{}\"", s.id)), "{} has no independent facts", s.id);
    }
}
