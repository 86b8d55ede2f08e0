//! kube-proxy in IPVS mode: the seed's Service scenarios, and how IPVS mode differs.

use crate::common;

use std::collections::BTreeSet;

use podnet::kube_proxy::ProxyMode;
use podnet::netfilter::ipvs::Scheduler;
use podnet::trace::HopKind;
use podnet::trace::{FlowProto, TraceOptions};
use podnet::{Cluster, Disposition};

fn ipvs(seed: u64) -> Cluster {
    let mut c = Cluster::seed_with(seed);
    c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
    c
}

#[test]
fn pod_to_service_is_scheduled_by_ipvs_in_local_in() {
    let mut c = ipvs(0);
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
    assert!(t.server_saw.as_deref().unwrap().starts_with("10.244.1.3:"), "no SNAT for pod clients");
    let sched = t
        .hops
        .iter()
        .find(|h| matches!(h.kind, HopKind::Nat { .. }) && h.detail.starts_with("IPVS: scheduled"))
        .expect("an IPVS hop");
    assert_eq!(
        (sched.node.as_deref(), sched.kind.hook().map(|k| k.to_string()).as_deref()),
        (Some("node1"), Some("INPUT"))
    );
    // The VIP is a local address: it sits on kube-ipvs0.
    let routes = c.routes("node1").unwrap();
    assert!(!routes.contains("10.96.0.10"), "VIPs are /32 addresses, no routes: {routes}");
    let ipvsadm = c.ipvsadm("node1").unwrap();
    assert!(
        ipvsadm.contains("TCP  10.96.0.10:80 rr\n  -> 10.244.1.2:8080              Masq    1"),
        "{ipvsadm}"
    );
    let sets = c.ipset_list("node1").unwrap();
    assert!(
        sets.contains("Name: KUBE-CLUSTER-IP\nType: hash:ip,port")
            && sets.contains("10.96.0.10,tcp:80"),
        "{sets}"
    );
    assert!(c.conntrack("node1").unwrap().contains("dst=10.96.0.10"));
}

#[test]
fn round_robin_alternates_endpoints() {
    let mut c = ipvs(0);
    let udp = common::udp();
    let picks: Vec<String> = (0..4)
        .map(|_| {
            c.trace("pod/default/pod2", "svc/default/web:udp", &udp).unwrap().delivered_to.unwrap()
        })
        .collect();
    assert_ne!(picks[0], picks[1], "{picks:?}");
    assert_eq!(picks[0], picks[2]);
    assert_eq!(picks[1], picks[3]);
}

#[test]
fn iptables_and_ipvs_modes_agree_on_where_flows_can_land() {
    let flows = [
        ("pod/default/pod2", "svc/default/web:http", FlowProto::Tcp),
        ("pod/default/pod2", "svc/default/web:udp", FlowProto::Udp),
        ("pod/default/pod1", "svc/default/api:http", FlowProto::Tcp),
        ("node/node3", "svc/default/web:http", FlowProto::Tcp),
        ("host/internet", "203.0.113.3:30081", FlowProto::Tcp),
    ];
    for (from, to, proto) in flows {
        let opts = TraceOptions { proto: Some(proto), ..TraceOptions::default() };
        let landing = |mode: Option<Scheduler>| -> BTreeSet<String> {
            let mut out = BTreeSet::new();
            for seed in 0..12 {
                let mut c = Cluster::seed_with(seed);
                if let Some(s) = mode {
                    c.set_proxy_mode(ProxyMode::Ipvs(s));
                }
                for _ in 0..2 {
                    let t = c.trace(from, to, &opts).unwrap();
                    assert!(t.completed, "{from} -> {to} ({mode:?}):\n{}", t.render(true));
                    out.insert(t.delivered_to.unwrap());
                }
            }
            out
        };
        assert_eq!(landing(None), landing(Some(Scheduler::Rr)), "{from} -> {to}");
    }
}

#[test]
fn hairpin_is_masqueraded_by_kube_loop_back_and_its_reply_needs_bridge_hairpin() {
    // On a fresh node, round robin gives pod1's first connection to pod1 itself.
    let first = |hairpin: bool| {
        let mut c = ipvs(0);
        c.set_hairpin("pod/default/pod1", hairpin).unwrap();
        c.trace("pod/default/pod1", "svc/default/web:http", &common::tcp()).unwrap()
    };
    let t = first(true);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod1"), "{}", t.render(false));
    assert!(t.completed, "{}", t.render(true));
    assert!(
        t.server_saw.as_deref().unwrap().starts_with("10.244.1.1:"),
        "masqueraded by KUBE-LOOP-BACK: {:?}",
        t.server_saw
    );
    assert!(t.hops.iter().any(|h| {
        h.kind.rule().is_some_and(|r| r.contains("KUBE-LOOP-BACK dst,dst,src -j MASQUERADE"))
    }));
    // The request is routed out of cbr0 by IPVS (no hairpin needed), but the reply to the
    // masqueraded source is reverse-NATed in br_netfilter's PREROUTING into a bridged DNAT
    // back out of pod1's own port: without hairpin_mode the SYN-ACK dies there. Only when
    // the SYN_RECV entry times out (60 s) does a retransmitted SYN get scheduled afresh.
    let t = first(false);
    let drop = t.hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).expect("a drop");
    assert_eq!(drop.kind.reason(), Some("hairpin-off"));
    assert_eq!(drop.direction, podnet::trace::Dir::Reply);
    assert!(
        t.ended_ms - t.started_ms >= 60_000,
        "the retry waited for conntrack to forget the choice"
    );
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod3"), "{}", t.render(false));
}

#[test]
fn ping_to_a_vip_is_rejected_by_kube_ipvs_filter() {
    // kube-proxy v1.31-1.33 rejects NEW traffic to kube-ipvs0 addresses that is not a
    // Service port, ICMP included; older versions let VIPs answer ping.
    let mut c = ipvs(0);
    let icmp = TraceOptions { proto: Some(FlowProto::Icmp), ..TraceOptions::default() };
    let t = c.trace("pod/default/pod2", "10.96.0.10", &icmp).unwrap();
    assert_eq!(t.disposition, Disposition::Rejected, "{}", t.render(true));
    assert!(t.hops.iter().any(|h| {
        h.kind.chain() == Some("KUBE-IPVS-FILTER")
            && h.kind
                .rule()
                .is_some_and(|r| r.ends_with("-j REJECT --reject-with icmp-port-unreachable"))
    }));
    // A port of the VIP that no Service uses is rejected the same way.
    let t = c.trace("pod/default/pod2", "10.96.0.10:22", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Rejected);
}

#[test]
fn node_port_works_in_ipvs_mode() {
    let mut c = ipvs(0);
    let t = c.trace("host/internet", "203.0.113.1:30080", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    assert!(
        t.server_saw.as_deref().unwrap().starts_with("192.168.0.1:"),
        "KUBE-NODE-PORT marks it for masquerade: {:?}",
        t.server_saw
    );
}

#[test]
fn switching_back_to_iptables_removes_ipvs_state() {
    let mut c = ipvs(0);
    c.set_proxy_mode(ProxyMode::Iptables);
    assert!(!c.ipvsadm("node1").unwrap().contains("TCP"));
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &common::tcp()).unwrap();
    assert!(t.completed);
    assert!(!t.hops.iter().any(|h| h.detail.starts_with("IPVS")));
}

/// The (TTL, TCP flags) of every TCP segment pod3's `eth0` received for a connection from
/// pod2 to `to` (two rounds, so later packets are among them), or `None` when the flow
/// landed elsewhere.
fn ttls_at_pod3(c: &mut Cluster, to: &str) -> Option<Vec<(u8, u8)>> {
    let opts = TraceOptions { capture: true, rounds: 2, ..common::tcp() };
    let t = c.trace("pod/default/pod2", to, &opts).unwrap();
    assert!(t.completed, "{}", t.render(true));
    (t.delivered_to.as_deref() == Some("pod/default/pod3")).then(|| {
        t.frames
            .iter()
            .filter(|f| f.netns == "pod/default/pod3" && f.data.len() > 34 && f.data[23] == 6)
            .map(|f| (f.data[22], f.data[14 + 20 + 13]))
            .collect()
    })
}

/// IPVS sends every packet of a connection to a remote real server with the TTL one less,
/// as routing would (`__ip_vs_get_out_rt` calls `decrement_ttl`): the first packet (the
/// scheduled SYN) and the later ones arrive with the TTL of a pod-to-pod flow over the same
/// path, in IPVS mode as in iptables mode.
#[test]
fn ipvs_decrements_the_ttl_of_first_and_later_packets_as_routing_does() {
    // rr: of two connections, one goes to pod3.
    let mut c = ipvs(0);
    let via_vip = (0..2).find_map(|_| ttls_at_pod3(&mut c, "svc/default/web:http")).unwrap();
    let direct = ttls_at_pod3(&mut c, "10.244.2.2:8080").unwrap();
    // pod2 sends with 64; node1, the VPC router and node2 each take one.
    for got in [&direct, &via_vip] {
        assert!(got.len() >= 4 && got.iter().all(|&(ttl, _)| ttl == 61), "{got:?}");
        assert!(got.iter().any(|&(_, flags)| flags == 0x02), "the SYN is among them");
    }
    let mut ipt = Cluster::seed();
    let got = (0..8).find_map(|_| ttls_at_pod3(&mut ipt, "svc/default/web:http")).unwrap();
    assert!(got.iter().all(|&(ttl, _)| ttl == 61), "iptables mode: {got:?}");
}
