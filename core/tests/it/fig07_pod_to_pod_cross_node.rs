//! Seed figure 7: pod to pod across nodes, routed by the VPC on each node's pod CIDR.

use crate::common;

use podnet::Cluster;
use podnet::trace::Dir;
use podnet::trace::HopKind;

#[test]
fn pod1_to_pod3_goes_through_gateway_vpc_router_and_node2_bridge() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod1", "pod/default/pod3:8080", &common::tcp()).unwrap();
    assert!(common::delivered(&t) && t.completed, "{}", t.render(true));
    // The pod ARPs for its gateway (the bridge's .1), not for the remote pod.
    let arp = common::first_packet(&t, Dir::Request, "arp");
    assert_eq!(
        common::hops(&t, arp)[0].before.as_ref().unwrap().info.as_deref(),
        Some("who-has 10.244.1.1 tell 10.244.1.2")
    );
    let syn = common::first_packet(&t, Dir::Request, "tcp");
    let p = common::path(&t, syn);
    common::assert_subsequence(
        &p,
        &[
            ("pod/default/pod1", "eth0", "tx"),
            ("node1", "veth0", "rx"),
            ("node1", "cbr0", "route"),
            ("node1", "eth0", "tx"),
            ("vpc", "vpc0", "rx"),
            ("vpc", "vpc0", "route"),
            ("node2", "eth0", "rx"),
            ("node2", "eth0", "route"),
            ("node2", "cbr0", "bridge"),
            ("pod/default/pod3", "eth0", "rx"),
        ],
        &t,
    );
    let routes: Vec<&str> = common::hops(&t, syn)
        .iter()
        .filter(|h| matches!(h.kind, HopKind::Route))
        .map(|h| h.detail.as_str())
        .collect();
    assert_eq!(
        routes,
        vec![
            "route 10.244.2.2 via 192.168.0.254 dev eth0: forward",
            "route 10.244.2.2 via 192.168.0.2 dev vpc0: forward",
            "route 10.244.2.2 dev cbr0: forward",
        ]
    );
    // No NAT anywhere: rule 1 of the Kubernetes network model.
    let sport = t.client.rsplit(':').next().unwrap();
    assert_eq!(t.server_saw.as_deref(), Some(format!("10.244.1.2:{sport}").as_str()));
    assert!(!t.hops.iter().any(|h| matches!(h.kind, HopKind::Nat { .. })));
}

#[test]
fn node_tables_show_the_wiring() {
    let mut c = Cluster::seed();
    c.trace("pod/default/pod1", "pod/default/pod3:8080", &common::tcp()).unwrap();
    let routes = c.routes("node1").unwrap();
    assert!(routes.starts_with("default via 192.168.0.254 dev eth0\n"), "{routes}");
    assert!(routes.contains("10.244.1.0/24 dev cbr0 proto kernel scope link src 10.244.1.1"));
    let vpc = c.routes("vpc").unwrap();
    assert!(vpc.contains("10.244.2.0/24 via 192.168.0.2 dev vpc0 proto static"), "{vpc}");
    let neigh = c.neigh("node1").unwrap();
    assert!(neigh.contains("192.168.0.254 dev eth0 lladdr"), "{neigh}");
    assert!(neigh.contains("10.244.1.2 dev cbr0 lladdr"), "{neigh}");
}

#[test]
fn bad_endpoints_are_clear_errors() {
    let mut c = Cluster::seed();
    let e = c.trace("pod/default/nope", "10.244.2.2:8080", &common::tcp()).unwrap_err();
    assert!(e.to_string().contains("no pod named 'pod/default/nope'"), "{e}");
    assert!(e.to_string().contains("pod/default/pod1"), "lists what exists: {e}");
    let e = c.trace("pod/default/pod1", "10.244.2.2", &common::tcp()).unwrap_err();
    assert!(e.to_string().contains("IP:PORT"), "{e}");
    let e = c.trace("pod/default/pod1", "10.244.2.2:0", &common::tcp()).unwrap_err();
    assert!(e.to_string().contains("1 to 65535"), "{e}");
    let n = c.node_id("node1").unwrap();
    let e = c
        .add_pod("default", "x", n, Some("10.244.2.9".parse().unwrap()), Default::default(), vec![])
        .unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    let e = c
        .add_node("node1", "192.168.0.9".parse().unwrap(), "10.244.9.0/24".parse().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = c
        .add_node("node9", "192.168.0.9".parse().unwrap(), "10.244.1.0/24".parse().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("overlaps node 'node1'"), "{e}");
}

#[test]
fn unreachable_destination_times_out_with_a_reason() {
    let mut c = Cluster::seed();
    // Inside node3's pod CIDR, but no pod there: node3 ARPs and nobody answers.
    let t = c.trace("pod/default/pod1", "10.244.3.77:8080", &common::udp()).unwrap();
    assert_eq!(t.disposition, podnet::Disposition::Dropped, "{}", t.render(true));
    assert_eq!(t.reason.as_deref(), Some("arp-failed"));
    assert!(t.reply_from.is_none());
}
