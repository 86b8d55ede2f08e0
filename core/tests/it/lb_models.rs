//! The cloud L4 load balancer's models and kube-proxy's health-check servers: a full proxy
//! (the default), an NLB with client-IP preservation, and an LB IP passed through to the
//! nodes where kube-proxy's own LB-IP rules apply.

use crate::common;

use podnet::cloud::LbMode;
use podnet::trace::HopKind;
use podnet::trace::{Dir, FlowProto, TraceOptions};
use podnet::{Cluster, Disposition};

fn with_lb(ranges: &[&str], local: bool, mode: LbMode) -> Cluster {
    let mut c = Cluster::seed();
    common::add_api_local(&mut c, ranges, local);
    c.add_cloud_lb_with(
        "svc/default/api-local",
        "203.0.113.101".parse().unwrap(),
        "192.168.0.101".parse().unwrap(),
        mode,
    )
    .unwrap();
    c
}

fn http_get() -> TraceOptions {
    TraceOptions {
        proto: Some(FlowProto::Http),
        path: "/healthz".into(),
        ..TraceOptions::default()
    }
}

/// The HTTP response bytes the client received, from the captured frames.
fn response_body(t: &podnet::Trace) -> String {
    let mut out = Vec::new();
    for f in t.frames.iter().filter(|f| f.netns == "host/internet") {
        // Ethernet (14) + IPv4 header + TCP header.
        let ip = &f.data[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 6 {
            continue;
        }
        let tcp = &ip[ihl..usize::from(u16::from_be_bytes([ip[2], ip[3]]))];
        let off = usize::from(tcp[12] >> 4) * 4;
        out.extend_from_slice(&tcp[off..]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_api_server_allocates_a_health_check_node_port_and_every_node_serves_it() {
    let c = with_lb(&[], true, LbMode::Proxy);
    let hc: Vec<_> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| c.health_checks(n).unwrap().pop().expect("one Local LoadBalancer Service"))
        .collect();
    let port = hc[0].port;
    assert!((30000..=32767).contains(&port), "from the NodePort range: {port}");
    assert!(hc.iter().all(|h| h.port == port && h.name == "api-local"));
    let counts: Vec<usize> = hc.iter().map(|h| h.local_endpoints).collect();
    assert_eq!(counts, vec![0, 1, 0], "pod4 runs on node2");
    // kube-proxy's filter rule accepts the port on every node, endpoints or not.
    let save = c.iptables_save("node1").unwrap();
    assert!(
        save.contains(&format!(
            "-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/api-local:http health check node port\" -m tcp --dport {port} -j ACCEPT"
        )),
        "{save}"
    );
    // A Cluster-policy LoadBalancer Service gets none.
    let mut c = Cluster::seed();
    common::add_api_local(&mut c, &[], false);
    assert!(c.health_checks("node1").unwrap().is_empty());
}

#[test]
fn the_health_check_server_answers_200_with_local_endpoints_and_503_without() {
    let mut c = with_lb(&[], true, LbMode::Proxy);
    let port = c.health_checks("node2").unwrap()[0].port;
    let opts = TraceOptions { capture: true, ..http_get() };
    let t = c.trace("host/internet", format!("203.0.113.2:{port}"), &opts).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("node/node2"));
    assert_eq!(t.http_status, Some(200));
    let body = response_body(&t);
    assert!(body.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"), "{body}");
    assert!(body.contains("X-Load-Balancing-Endpoint-Weight: 1\r\n"), "{body}");
    assert!(
        body.ends_with(
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"api-local\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
        ),
        "{body}"
    );
    assert_eq!(t.http_from.as_deref(), Some("node/node2"));
    let t = c.trace("host/internet", format!("203.0.113.1:{port}"), &opts).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.http_status, Some(503));
    assert!(response_body(&t).contains("\"localEndpoints\": 0,"));
    // The 503 is the health server's own verdict: no backend behind it got the request.
    assert_eq!(t.http_from.as_deref(), Some("node/node1"));
    assert_eq!(t.disposition, podnet::Disposition::Rejected);
    assert_eq!(t.reason.as_deref(), Some("http_no_local_endpoints"));
    assert!(t.reason_text.as_deref().unwrap().contains("svc/default/api-local"));
    // IPVS mode serves the same (its KUBE-HEALTH-CHECK-NODE-PORT set admits the port).
    let mut ipvs = with_lb(&[], true, LbMode::Proxy);
    ipvs.set_proxy_mode(podnet::kube_proxy::ProxyMode::Ipvs(
        podnet::netfilter::ipvs::Scheduler::Rr,
    ));
    let t = ipvs.trace("host/internet", format!("203.0.113.2:{port}"), &opts).unwrap();
    assert_eq!(t.http_status, Some(200), "{}", t.render(true));
    assert!(ipvs.ipset_list("node2").unwrap().contains(&format!("\n{port}\n")));
    // pod4 moves away (deleted): node2 turns 503 as well, without a stale answer.
    c.delete_pod("pod/default/pod4").unwrap();
    let t = c.trace("host/internet", format!("203.0.113.2:{port}"), &opts).unwrap();
    assert_eq!(t.http_status, Some(503), "{}", t.render(true));
}

#[test]
fn preserved_client_ip_reaches_a_local_endpoint_and_the_reply_returns_through_the_lb() {
    let mut c = with_lb(&[], true, LbMode::PreserveClientIp);
    let all = c.trace_all("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(all.len(), 1, "health checks leave only node2");
    let t = &all[0];
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert!(
        t.server_saw.as_deref().unwrap().starts_with("203.0.113.10:"),
        "the client's address reaches the pod: {:?}",
        t.server_saw
    );
    assert_eq!(t.reply_from.as_deref(), Some("203.0.113.101:80"));
    // The SYN-ACK leaves node2 for the client and the VPC hands it back to the LB.
    let synack = common::first_packet(t, Dir::Reply, "tcp");
    let hops = common::hops(t, synack);
    assert!(
        hops.iter().any(|h| h.netns == "vpc"
            && h.detail.contains("client-IP preservation")
            && h.detail.contains("192.168.0.101")),
        "{}",
        t.render(true)
    );
    assert!(hops.iter().any(|h| h.netns == "lb/default/api-local"));
    // trace_all ran dry runs: the committed trace is the one outcome it explored, and a
    // second connection (a new source port) lands on the same local endpoint.
    let first = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(first.server_saw, t.server_saw, "{}", first.render(true));
    let again = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert!(again.completed, "{}", again.render(true));
    assert_eq!(again.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert!(again.server_saw.as_deref().unwrap().starts_with("203.0.113.10:"));
    assert_ne!(again.server_saw, first.server_saw, "a new connection has a new source port");
}

#[test]
fn preserved_client_ip_with_cluster_policy_is_masqueraded_by_the_node() {
    let c = with_lb(&[], false, LbMode::PreserveClientIp);
    let all = c.trace_all("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(all.len(), 3, "every node is a target");
    for t in &all {
        assert!(t.completed, "{}", t.render(true));
        // The node sees the client (no LB SNAT) but kube-proxy masquerades for Cluster.
        assert!(!t.server_saw.as_deref().unwrap().starts_with("203.0.113.10:"));
        assert!(!t.server_saw.as_deref().unwrap().starts_with("192.168.0.101:"));
        assert!(t.hops.iter().any(|h| h.netns.starts_with("node")
            && h.before.as_ref().is_some_and(|b| b.src.to_string() == "203.0.113.10")));
    }
    // The full proxy, for contrast: nodes see the LB.
    let mut c = with_lb(&[], true, LbMode::Proxy);
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert!(t.server_saw.as_deref().unwrap().starts_with("192.168.0.101:"), "{:?}", t.server_saw);
}

#[test]
fn pass_through_lb_ip_is_handled_by_kube_proxy_and_replies_go_direct() {
    let mut c = with_lb(&[], false, LbMode::PassThrough);
    // kube-proxy programs the LB IP on every node.
    let save = c.iptables_save("node3").unwrap();
    assert!(
        save.contains("-A KUBE-SERVICES -d 203.0.113.101/32 -p tcp -m comment --comment \"default/api-local:http loadbalancer IP\" -m tcp --dport 80 -j KUBE-EXT-"),
        "{save}"
    );
    let all = c.trace_all("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(all.len(), 1, "the LB hashes a flow to one node");
    let t = &all[0];
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert_eq!(t.reply_from.as_deref(), Some("203.0.113.101:80"));
    let syn = common::first_packet(t, Dir::Request, "tcp");
    let hops = common::hops(t, syn);
    let pick = hops
        .iter()
        .find(|h| h.netns == "lb/default/api-local" && h.detail.contains("pass-through"))
        .unwrap_or_else(|| panic!("{}", t.render(true)));
    assert!(pick.detail.contains("destination 203.0.113.101 kept"), "{}", pick.detail);
    // The gateway does not translate the LB address; the node's KUBE-EXT chain does DNAT.
    assert!(!hops.iter().any(|h| h.netns == "igw" && matches!(h.kind, HopKind::Nat { .. })));
    assert!(hops.iter().any(|h| h.kind.chain().is_some_and(|ch| ch.starts_with("KUBE-EXT-"))));
    // Replies leave the node straight for the client (no LB on the way back).
    let synack = common::first_packet(t, Dir::Reply, "tcp");
    assert!(
        !common::hops(t, synack)
            .iter()
            .any(|h| h.netns == "lb/default/api-local" && matches!(h.kind, HopKind::Route)),
        "{}",
        t.render(true)
    );
    // Different client ports spread over the nodes, each flow staying on one node.
    let mut nodes = std::collections::BTreeSet::new();
    for sport in 40000..40030 {
        let opts = TraceOptions { sport: Some(sport), ..common::tcp() };
        let t = c.trace("host/internet", "203.0.113.101:80", &opts).unwrap();
        assert!(t.completed, "{}", t.render(true));
        let node = t
            .hops
            .iter()
            .find(|h| h.netns.starts_with("node") && matches!(h.kind, HopKind::Rule { .. }))
            .map(|h| h.netns.clone())
            .unwrap();
        nodes.insert(node);
    }
    assert_eq!(nodes.len(), 3, "{nodes:?}");
}

#[test]
fn pass_through_with_local_policy_keeps_the_client_ip_on_healthy_nodes_only() {
    let mut c = with_lb(&[], true, LbMode::PassThrough);
    for sport in 40000..40010 {
        let opts = TraceOptions { sport: Some(sport), ..common::tcp() };
        let t = c.trace("host/internet", "203.0.113.101:80", &opts).unwrap();
        assert!(t.completed, "{}", t.render(true));
        assert!(t.server_saw.as_deref().unwrap().starts_with("203.0.113.10:"));
        assert!(
            !t.hops.iter().any(|h| (h.netns == "node1" || h.netns == "node3")
                && matches!(h.kind, HopKind::Rule { .. })),
            "{}",
            t.render(true)
        );
    }
}

#[test]
fn source_ranges_in_pass_through_are_kube_proxys_firewall() {
    let mut c = with_lb(&["198.51.100.0/24"], false, LbMode::PassThrough);
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    let drop = t.hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).unwrap();
    assert!(drop.netns.starts_with("node"), "dropped on the node, not the LB: {}", t.render(true));
    assert!(t.hops.iter().any(|h| h.kind.chain().is_some_and(|ch| ch.starts_with("KUBE-FW-"))));
    let mut c = with_lb(&["198.51.100.0/24", "203.0.113.0/24"], false, LbMode::PassThrough);
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // The AWS model enforces the same ranges at the LB itself.
    let mut c = with_lb(&["198.51.100.0/24"], false, LbMode::PreserveClientIp);
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped);
    assert_eq!(
        t.hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).unwrap().netns,
        "lb/default/api-local"
    );
}

#[test]
fn a_cloud_lb_needs_a_load_balancer_service_and_a_free_public_ip() {
    let mut c = Cluster::seed();
    let e = c
        .add_cloud_lb(
            "svc/default/web",
            "203.0.113.102".parse().unwrap(),
            "192.168.0.102".parse().unwrap(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("set spec.type: LoadBalancer"), "{e}");
    common::add_api_local(&mut c, &[], false);
    let e = c
        .add_cloud_lb(
            "svc/default/api-local",
            "203.0.113.100".parse().unwrap(),
            "192.168.0.102".parse().unwrap(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("203.0.113.100 is not available"), "{e}");
}

#[test]
fn pass_through_in_ipvs_mode_lands_on_the_lb_ip_bound_to_kube_ipvs0() {
    use podnet::kube_proxy::ProxyMode;
    use podnet::netfilter::ipvs::Scheduler;
    let mut c = with_lb(&[], false, LbMode::PassThrough);
    c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert_eq!(t.reply_from.as_deref(), Some("203.0.113.101:80"));
    assert!(t.hops.iter().any(|h| h.detail.contains("IPVS")), "{}", t.render(true));
    // loadBalancerSourceRanges through IPVS mode's ipsets.
    let mut c = with_lb(&["198.51.100.0/24"], false, LbMode::PassThrough);
    c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
    let t = c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    assert!(
        t.hops.iter().any(|h| h.kind.chain() == Some("KUBE-SOURCE-RANGES-FIREWALL")
            && h.kind.rule().is_some_and(|r| r.ends_with("-j DROP"))),
        "{}",
        t.render(true)
    );
    let sets = c.ipset_list("node1").unwrap();
    assert!(sets.contains("203.0.113.101,tcp:80,198.51.100.0/24"), "{sets}");
    let mut c = with_lb(&["203.0.113.0/24"], false, LbMode::PassThrough);
    c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
    assert!(c.trace("host/internet", "203.0.113.101:80", &common::tcp()).unwrap().completed);
}

#[test]
fn load_balancer_modes_load_from_yaml() {
    let base = common::reference_yaml();
    assert!(base.contains("privateIP: 192.168.0.100}"), "the fixture names the api LB");
    let yaml =
        base.replace("privateIP: 192.168.0.100}", "privateIP: 192.168.0.100, mode: passThrough}");
    let (mut c, _) = Cluster::from_yaml(&yaml).unwrap();
    assert_eq!(c.load_balancers()[0].mode, LbMode::PassThrough);
    assert!(c.iptables_save("node1").unwrap().contains("-d 203.0.113.100/32"));
    let t = c.trace("host/internet", "203.0.113.100:80", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    let bad = base.replace("privateIP: 192.168.0.100}", "privateIP: 192.168.0.100, mode: dsr}");
    let e = Cluster::from_yaml(&bad).err().expect("an unknown mode is refused").to_string();
    assert!(e.contains("dsr") && e.contains("passThrough"), "{e}");
}
