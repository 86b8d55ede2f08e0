//! An AWS NAT gateway: nodes without a public IP reach the internet through it, many-to-one.

use crate::common;

use podnet::Cluster;
use podnet::trace::HopKind;

/// The reference cluster with node2 in a private subnet (no public IP) and a NAT gateway.
fn cluster(extra: &str) -> Cluster {
    let base = common::reference_yaml();
    let public = "publicIPs: {node1: 203.0.113.1, node2: 203.0.113.2, node3: 203.0.113.3}";
    assert!(base.contains(public));
    let yaml = base.replace(
        public,
        &format!(
            "publicIPs: {{node1: 203.0.113.1, node3: 203.0.113.3}}\nnatGateway: {{publicIP: 203.0.113.50, privateIP: 192.168.0.50}}{extra}"
        ),
    );
    Cluster::from_yaml(&yaml).unwrap().0
}

#[test]
fn a_node_without_public_ip_egresses_through_the_nat_gateway() {
    let mut c = cluster("");
    let t = c.trace("pod/default/pod3", "203.0.113.10:80", &Default::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    let saw = t.server_saw.as_deref().unwrap();
    assert!(saw.starts_with("203.0.113.50:"), "the NAT gateway's public IP: {saw}");
    // Masquerade on node2, SNAT at the NAT gateway (ports 1024-65535), 1:1 at the igw.
    let nats: Vec<(&str, &str)> = t
        .hops
        .iter()
        .filter(|h| {
            matches!(h.kind, HopKind::Nat { .. }) && h.direction == podnet::trace::Dir::Request
        })
        .filter(|h| !h.detail.starts_with("conntrack"))
        .map(|h| (h.netns.as_str(), h.detail.as_str()))
        .collect();
    let where_: Vec<&str> = nats.iter().map(|n| n.0).collect();
    assert_eq!(where_, vec!["node2", "natgw", "igw"], "{nats:?}");
    assert!(nats[1].1.contains("-> 192.168.0.50:"), "{nats:?}");
    let port: u16 = nats[1].1.rsplit(':').next().unwrap().parse().unwrap();
    assert!(port >= 1024);
    assert!(t.hops.iter().any(|h| h.netns == "vpc" && h.detail.contains("via 192.168.0.50")));
    // node1 still has its own public IP.
    let t = c.trace("pod/default/pod2", "203.0.113.10:80", &Default::default()).unwrap();
    assert!(t.server_saw.as_deref().unwrap().starts_with("203.0.113.1:"));
    // The VPC router's rules, as `ip rule` prints them.
    let rules = c.ip_rules("vpc").unwrap();
    assert!(rules.contains("1000:\tfrom all to 192.168.0.0/24 lookup main"), "{rules}");
    assert!(rules.contains("1100:\tfrom 192.168.0.1 lookup main"), "{rules}");
    assert!(!rules.contains("from 192.168.0.2 lookup main"), "{rules}");
    assert!(rules.contains("1200:\tfrom 192.168.0.0/24 lookup 200"), "{rules}");
}

#[test]
fn in_cluster_traffic_and_inbound_flows_do_not_touch_the_nat_gateway() {
    let mut c = cluster("");
    let t = c.trace("pod/default/pod3", "pod/default/pod1:8080", &Default::default()).unwrap();
    assert!(t.completed);
    assert!(!t.hops.iter().any(|h| h.netns == "natgw" && matches!(h.kind, HopKind::Route)));
    // The load balancer still reaches pod4 on node2 and replies go back the way they came.
    let t = c.trace("host/internet", "203.0.113.100:80", &Default::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert!(!t.hops.iter().any(|h| h.netns == "natgw" && matches!(h.kind, HopKind::Route)));
}

#[test]
fn the_nat_gateway_needs_an_internet_gateway_and_a_free_address() {
    let base = common::reference_yaml();
    let taken = base.replace(
        "internet: 203.0.113.0/24",
        "internet: 203.0.113.0/24\nnatGateway: {publicIP: 203.0.113.100, privateIP: 192.168.0.50}",
    );
    let e = Cluster::from_yaml(&taken).err().expect("refused").to_string();
    assert!(e.contains("natGateway") && e.contains("203.0.113.100"), "{e}");
}
