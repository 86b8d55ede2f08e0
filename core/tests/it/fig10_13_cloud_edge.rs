//! Seed figures 10-13: egress through masquerade and the internet gateway, a cloud load
//! balancer, NodePorts, and an Ingress on an ALB.

use crate::common;

use podnet::trace::HopKind;
use podnet::trace::{Dir, FlowProto, TraceOptions};
use podnet::{Cluster, Disposition};

fn http(headers: &[(&str, &str)]) -> TraceOptions {
    TraceOptions {
        proto: Some(FlowProto::Http),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..TraceOptions::default()
    }
}

fn nat_hops(t: &podnet::Trace, dir: Dir) -> Vec<(String, String)> {
    t.hops
        .iter()
        .filter(|h| matches!(h.kind, HopKind::Nat { .. }) && h.direction == dir)
        .map(|h| (h.netns.clone(), h.detail.clone()))
        .collect()
}

#[test]
fn fig10_pod_egress_is_masqueraded_then_mapped_by_the_gateway() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "203.0.113.10:80", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("host/internet"));
    assert!(t.server_saw.as_deref().unwrap().starts_with("203.0.113.1:"), "{:?}", t.server_saw);
    assert_eq!(t.reply_from.as_deref(), Some("203.0.113.10:80"));
    let syn = common::first_packet(&t, Dir::Request, "tcp");
    let nats: Vec<_> = common::hops(&t, syn)
        .into_iter()
        .filter(|h| matches!(h.kind, HopKind::Nat { .. }))
        .map(|h| (h.netns.clone(), h.detail.clone()))
        .collect();
    assert_eq!(nats.len(), 2, "{nats:?}");
    assert_eq!(nats[0].0, "node1");
    assert!(
        nats[0].1.starts_with("SNAT 10.244.1.3:") && nats[0].1.contains("-> 192.168.0.1:"),
        "{nats:?}"
    );
    assert_eq!(nats[1].0, "igw");
    assert!(
        nats[1].1.starts_with("SNAT 192.168.0.1:") && nats[1].1.contains("-> 203.0.113.1:"),
        "{nats:?}"
    );
    // The masquerade came from ip-masq-agent's chain.
    assert!(common::hops(&t, syn).iter().any(|h| h.kind.chain() == Some("IP-MASQ-AGENT")
        && h.kind.rule().is_some_and(|r| r.ends_with("-j MASQUERADE"))));
    // Every rewrite is undone on the way back, each layer restoring what it changed.
    let back = nat_hops(&t, Dir::Reply);
    assert!(back.iter().any(|(n, d)| n == "igw" && d.contains("-> 192.168.0.1:")), "{back:?}");
    assert!(back.iter().any(|(n, d)| n == "node1" && d.contains("-> 10.244.1.3:")), "{back:?}");
}

#[test]
fn fig11_load_balancer_spreads_flows_over_nodes_and_node3_forwards_to_pod4() {
    let through = |node_ip: &'static str| {
        move |t: &podnet::Trace| {
            t.hops.iter().any(|h| {
                h.netns == "lb/default/api"
                    && h.detail.starts_with("DNAT")
                    && h.detail.contains(&format!("-> {node_ip}:30080"))
            })
        }
    };
    let (_, _, t) = common::find_seed(
        "host/internet",
        "203.0.113.100:80",
        &common::tcp(),
        through("192.168.0.3"),
    );
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert_eq!(
        t.reply_from.as_deref(),
        Some("203.0.113.100:80"),
        "the client only sees the load balancer"
    );
    // node3 runs no backend: kube-proxy there DNATs to pod4 on node2.
    assert!(
        t.hops.iter().any(|h| h.netns == "node3"
            && h.detail.starts_with("DNAT 192.168.0.3:30080 -> 10.244.2.3:8080")),
        "{}",
        t.render(true)
    );
    assert!(
        t.server_saw.as_deref().unwrap().starts_with("192.168.0.3:"),
        "node3 masquerades to its eth0 address: {:?}",
        t.server_saw
    );
    // Over seeds, every node gets flows.
    for ip in ["192.168.0.1", "192.168.0.2"] {
        common::find_seed("host/internet", "203.0.113.100:80", &common::tcp(), through(ip));
    }
}

#[test]
fn fig12_node_port_source_depends_on_where_the_endpoint_runs() {
    let mut c = Cluster::seed();
    let local = c.trace("host/internet", "203.0.113.2:30080", &common::tcp()).unwrap();
    assert!(local.completed, "{}", local.render(true));
    assert_eq!(local.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert!(
        local.server_saw.as_deref().unwrap().starts_with("10.244.2.1:"),
        "local endpoint: masqueraded to node2's bridge: {:?}",
        local.server_saw
    );
    assert_eq!(local.reply_from.as_deref(), Some("203.0.113.2:30080"));
    let remote = c.trace("host/internet", "203.0.113.1:30080", &common::tcp()).unwrap();
    assert!(remote.completed);
    assert!(
        remote.server_saw.as_deref().unwrap().starts_with("192.168.0.1:"),
        "remote endpoint: masqueraded to node1's eth0: {:?}",
        remote.server_saw
    );
    let chains: Vec<&str> = remote
        .hops
        .iter()
        .filter(|h| h.netns == "node1" && matches!(h.kind, HopKind::Rule { .. }))
        .filter_map(|h| h.kind.chain())
        .collect();
    assert!(
        chains.contains(&"KUBE-NODEPORTS") && chains.iter().any(|c| c.starts_with("KUBE-EXT-")),
        "{chains:?}"
    );
}

#[test]
fn fig13_alb_routes_by_path_and_host_over_its_own_connections() {
    let mut c = Cluster::seed();
    let web = c.trace("host/internet", "http://203.0.113.200/web/index.html", &http(&[])).unwrap();
    assert!(web.completed, "{}", web.render(true));
    assert!(
        matches!(web.delivered_to.as_deref(), Some("pod/default/pod1" | "pod/default/pod3")),
        "{:?}",
        web.delivered_to
    );
    assert_eq!(web.http_status, Some(200));
    assert_eq!(web.reply_from.as_deref(), Some("203.0.113.200:80"));
    let api = c.trace("host/internet", "http://203.0.113.200/api/orders", &http(&[])).unwrap();
    assert_eq!(api.delivered_to.as_deref(), Some("pod/default/pod4"));
    let host = c
        .trace("host/internet", "http://203.0.113.200/", &http(&[("Host", "shop.example.com")]))
        .unwrap();
    assert!(
        matches!(host.delivered_to.as_deref(), Some("pod/default/pod1" | "pod/default/pod3")),
        "{}",
        host.render(false)
    );
    // The ALB's own connection to the node: a new TCP connection from its private address.
    assert!(
        api.hops.iter().any(|h| h.netns == "lb/default/shop"
            && matches!(h.kind, HopKind::Tx)
            && h.before.as_ref().is_some_and(|b| b.src.to_string() == "192.168.0.200"
                && b.dport == Some(30080)
                && b.info.as_deref() == Some("S"))),
        "{}",
        api.render(true)
    );
    // No listener rule matches: the ALB answers 404 itself (the AWS default action of the
    // controller's listener is a fixed 404), and no backend got the request.
    let none = c.trace("host/internet", "http://203.0.113.200/nope", &http(&[])).unwrap();
    assert_eq!(none.http_status, Some(404));
    assert_eq!(none.http_from.as_deref(), Some("lb/default/shop"), "the L7 hop answered itself");
    assert_eq!(none.delivered_to, None);
    assert_eq!(none.disposition, Disposition::Rejected);
    assert_eq!(none.reason.as_deref(), Some("http_no_route"));
    let why = none.reason_text.as_deref().unwrap();
    assert!(
        why.starts_with("lb/default/shop: the ALB has no rule for Host 203.0.113.200 path /nope"),
        "{why}"
    );
    // A backend's own answer is delivered, and says who answered.
    assert_eq!(api.http_from, api.delivered_to);
}

#[test]
fn malformed_http_gets_400_from_the_alb() {
    let mut c = Cluster::seed();
    let t = c
        .trace("host/internet", "http://203.0.113.200/web", &http(&[("Bad Header", "x")]))
        .unwrap();
    assert_eq!(t.http_status, Some(400), "{}", t.render(true));
    assert_eq!(t.http_from.as_deref(), Some("lb/default/shop"));
    assert_eq!(
        (t.disposition, t.reason.as_deref()),
        (Disposition::Rejected, Some("http_bad_request"))
    );
    assert_eq!(t.delivered_to, None);
}

fn local_lb_service(c: &mut Cluster, ranges: &[&str]) {
    common::add_api_local(c, ranges, true);
    c.add_cloud_lb(
        "svc/default/api-local",
        "203.0.113.101".parse().unwrap(),
        "192.168.0.101".parse().unwrap(),
    )
    .unwrap();
}

#[test]
fn external_traffic_policy_local_keeps_the_client_ip_and_skips_nodes_without_endpoints() {
    let mut c = Cluster::seed();
    local_lb_service(&mut c, &[]);
    // node2 runs pod4: the client's own address reaches the pod.
    let t = c.trace("host/internet", "203.0.113.2:30090", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert!(
        t.server_saw.as_deref().unwrap().starts_with("203.0.113.10:"),
        "client IP preserved: {:?}",
        t.server_saw
    );
    // node1 runs no endpoint: kube-proxy drops external traffic there.
    let t = c.trace("host/internet", "203.0.113.1:30090", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    assert!(t.hops.iter().any(|h| h.kind.chain() == Some("KUBE-EXTERNAL-SERVICES")
        && h.kind.rule().is_some_and(|r| r.ends_with("-j DROP"))));
    // Pods still reach it through any node (the short-circuit to all endpoints).
    let t = c.trace("pod/default/pod2", "192.168.0.1:30090", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // The load balancer's health checks leave only node2 in rotation.
    let all = c.trace_all("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(all.len(), 1, "only the node with a local endpoint gets traffic");
    assert!(all[0].completed && (all[0].probability.unwrap() - 1.0).abs() < 1e-9);
    assert!(all[0].hops.iter().any(|h| h.netns == "lb/default/api-local" && h.detail.contains("-> 192.168.0.2:30090")));
}

#[test]
fn load_balancer_source_ranges_are_enforced_by_the_load_balancer() {
    let mut c = Cluster::seed();
    local_lb_service(&mut c, &["198.51.100.0/24"]);
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    let drop = t.hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).unwrap();
    assert_eq!(drop.netns, "lb/default/api-local");
    assert!(t.hops.iter().any(|h| h.kind.chain() == Some("LB-SOURCE-RANGES")));
    let mut c = Cluster::seed();
    local_lb_service(&mut c, &["198.51.100.0/24", "203.0.113.0/24"]);
    assert!(c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap().completed);
}

/// A target that refuses the ALB's connection: with its only pod gone, the Service has no
/// endpoints and kube-proxy REJECTs the node port (`KUBE-EXTERNAL-SERVICES`, "has no
/// endpoints"), the connection is refused, and the ALB answers 502 itself (AWS documents
/// 502 Bad Gateway for "the target closed the connection" and "the load balancer failed to
/// establish a connection to the target").
#[test]
fn the_alb_answers_502_when_its_target_refuses() {
    let mut c = Cluster::seed();
    c.delete_pod("pod/default/pod4").unwrap();
    let t = c.trace("host/internet", "http://203.0.113.200/api/orders", &http(&[])).unwrap();
    assert_eq!(t.http_status, Some(502), "{}", t.render(true));
    assert_eq!(t.http_from.as_deref(), Some("lb/default/shop"));
    assert_eq!(
        (t.disposition, t.reason.as_deref()),
        (Disposition::Rejected, Some("http_bad_gateway"))
    );
    assert_eq!(t.delivered_to, None);
    let why = t.reason_text.as_deref().unwrap();
    assert!(why.contains("could not connect to target 192.168.0."), "{why}");
    assert!(why.contains("path /api (Prefix) -> default/api:80"), "{why}");
    assert!(t.render(false).contains("  http: 502 Bad Gateway from lb/default/shop\n"));
}
