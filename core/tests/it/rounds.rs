//! Flows of many exchanges (`TraceOptions::rounds`, `podnet trace --rounds`): every
//! exchange after the first travels the conntrack entries the first one created.

use podnet::trace::HopKind;
use podnet::trace::{Dir, FlowProto, TraceOptions};
use podnet::{Cluster, Disposition};

fn opts(proto: FlowProto, rounds: u32) -> TraceOptions {
    TraceOptions { proto: Some(proto), rounds, ..TraceOptions::default() }
}

/// Request packets that walked a `KUBE-SVC-…` chain (a new connection's NAT decision).
fn svc_rule_walks(t: &podnet::trace::Trace) -> usize {
    t.hops
        .iter()
        .filter(|h| h.direction == Dir::Request && matches!(h.kind, HopKind::Rule { .. }))
        .filter(|h| h.kind.chain().is_some_and(|c| c.starts_with("KUBE-SVC-")))
        .map(|h| h.packet)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn later_udp_datagrams_follow_conntrack_not_the_rules() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "10.96.0.10:80", &opts(FlowProto::Udp, 5)).unwrap();
    assert_eq!(t.disposition, Disposition::Delivered);
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.answered, Some(5));
    // One endpoint for the whole flow, chosen once, by the first datagram.
    assert_eq!(svc_rule_walks(&t), 1, "{}", t.render(true));
    let dnat_replays =
        t.hops.iter().filter(|h| h.detail.contains("DNAT of the established")).count();
    assert_eq!(dnat_replays, 4, "{}", t.render(true));
    // Five datagrams each way reached the endpoint and came back un-DNATed.
    let ct = c.conntrack("node1").unwrap();
    let line = ct.lines().find(|l| l.contains("dport=80 ")).expect("node1 tracks the flow");
    assert!(line.starts_with("udp      17 30 "), "replied within 2 s: not yet a stream: {line}");
    assert!(!line.contains("ASSURED"), "{line}");
}

#[test]
fn a_udp_flow_active_past_two_seconds_becomes_an_assured_stream() {
    let mut c = Cluster::seed();
    let o = TraceOptions { sport: Some(41000), ..opts(FlowProto::Udp, 2) };
    assert!(c.trace("pod/default/pod2", "10.96.0.10:80", &o).unwrap().completed);
    c.advance(smoltcp::time::Duration::from_secs(3));
    let t = c.trace("pod/default/pod2", "10.96.0.10:80", &o).unwrap();
    assert!(t.completed);
    assert_eq!(svc_rule_walks(&t), 0, "the same 5-tuple is established:\n{}", t.render(true));
    let ct = c.conntrack("node1").unwrap();
    let line = ct.lines().find(|l| l.contains("sport=41000 dport=80 ")).expect("tracked");
    assert!(line.starts_with("udp      17 120 "), "{line}");
    assert!(line.contains("[ASSURED]"), "{line}");
}

#[test]
fn tcp_rounds_are_echo_writes_on_one_connection() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "10.96.0.10:80", &opts(FlowProto::Tcp, 4)).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.answered, Some(4));
    assert_eq!(svc_rule_walks(&t), 1, "one SYN walks the rules:\n{}", t.render(true));
    // One connection carries every round: the client sent one SYN, and four data segments.
    let client_sent = |info: &str| {
        t.hops
            .iter()
            .filter(|h| h.netns == "pod/default/pod2" && matches!(h.kind, HopKind::Tx))
            .filter(|h| h.before.as_ref().is_some_and(|b| b.info.as_deref() == Some(info)))
            .count()
    };
    assert_eq!(client_sent("S"), 1, "{}", t.render(true));
    assert_eq!(client_sent("P."), 4, "{}", t.render(true));
    let ct = c.conntrack("node1").unwrap();
    assert!(ct.lines().any(|l| l.starts_with("tcp ") && l.contains("TIME_WAIT")), "{ct}");
}

#[test]
fn icmp_rounds_are_ping_count() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "10.244.2.2", &opts(FlowProto::Icmp, 3)).unwrap();
    assert!(t.completed);
    assert_eq!(t.answered, Some(3));
    let seqs: Vec<String> = t
        .hops
        .iter()
        .filter(|h| {
            h.direction == Dir::Request
                && matches!(h.kind, HopKind::Tx)
                && h.netns.starts_with("pod")
        })
        .filter_map(|h| h.before.as_ref()?.info.clone())
        .filter(|i| i.starts_with("echo request"))
        .collect();
    assert_eq!(seqs.len(), 3, "{seqs:?}");
    assert!(
        seqs.iter().zip(["seq 1", "seq 2", "seq 3"]).all(|(s, want)| s.ends_with(want)),
        "{seqs:?}"
    );
}

#[test]
fn a_lost_exchange_is_not_completed() {
    // No endpoints: the first datagram is rejected, so none of the rounds is answered.
    let mut c = Cluster::seed();
    use podnet::kube_proxy::{Service, ServicePort, TargetPort};
    let mut svc = Service::cluster_ip("default", "empty", "10.96.0.77".parse().unwrap());
    svc.ports = vec![ServicePort {
        name: String::new(),
        protocol: podnet::netfilter::Proto::UDP,
        port: 80,
        target_port: TargetPort::Number(8080),
        node_port: 0,
    }];
    c.add_service(svc).unwrap();
    let t = c.trace("pod/default/pod2", "10.96.0.77:80", &opts(FlowProto::Udp, 3)).unwrap();
    assert_eq!(t.disposition, Disposition::Rejected);
    assert!(!t.completed);
    assert_eq!(t.answered, Some(0));
    // One round is the plain flow: no `answered` in its JSON.
    let one = c.trace("pod/default/pod2", "10.96.0.10:80", &opts(FlowProto::Udp, 1)).unwrap();
    assert_eq!(one.answered, None);
    assert!(!one.to_json().contains("answered"));
}

#[test]
fn tcp_servers_answer_between_udp_flows_to_the_same_pod() {
    // A pod's TCP servers are left alone while only datagrams arrive; each connection that
    // comes after must still be answered, closed and listened for again, more connections
    // in turn than the pod keeps listening sockets.
    let mut c = Cluster::seed();
    for i in 0..6 {
        let u = c.trace("pod/default/pod2", "pod/default/pod1:8080", &opts(FlowProto::Udp, 3));
        assert_eq!(u.unwrap().answered, Some(3), "UDP flow {i}");
        let t = c.trace("pod/default/pod2", "pod/default/pod1:8080", &opts(FlowProto::Tcp, 2));
        let t = t.unwrap();
        assert!(t.completed, "TCP flow {i}:\n{}", t.render(true));
        assert_eq!(t.answered, Some(2), "TCP flow {i}");
    }
}
