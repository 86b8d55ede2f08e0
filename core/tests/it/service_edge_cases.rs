//! Service behaviours beyond the seed's happy path, each as Linux and kube-proxy do it:
//! hairpin, br_netfilter off, Services without endpoints, node-local clients.

use crate::common;

use std::collections::BTreeMap;

use podnet::kube_proxy::{EndpointSlice, Service, ServicePort, SliceEndpoint, TargetPort};
use podnet::netfilter::Proto;
use podnet::trace::HopKind;
use podnet::{Cluster, Disposition};

fn self_hit(t: &podnet::Trace) -> bool {
    t.delivered_to.as_deref() == Some("pod/default/pod1")
}

#[test]
fn hairpin_is_masqueraded_to_the_bridge_address_with_a_fresh_port() {
    let (_, _, t) =
        common::find_seed("pod/default/pod1", "svc/default/web:http", &common::tcp(), self_hit);
    assert!(t.completed, "{}", t.render(true));
    let sport: u16 = t.client.rsplit(':').next().unwrap().parse().unwrap();
    let saw = t.server_saw.clone().unwrap();
    let (addr, port) = saw.split_once(':').unwrap();
    assert_eq!(addr, "10.244.1.1", "masqueraded to node1's bridge address");
    assert_ne!(port.parse::<u16>().unwrap(), sport, "--random-fully picks a fresh port");
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
    assert!(
        t.hops.iter().any(|h| matches!(h.kind, HopKind::Bridge) && h.detail.contains("hairpin")),
        "{}",
        t.render(true)
    );
}

#[test]
fn hairpin_off_drops_at_the_bridge_and_leaves_no_conntrack_entry() {
    // A Service whose only endpoint is pod1: pod1 reaching it must hairpin.
    let mut c = Cluster::seed();
    let mut solo = Service::cluster_ip("default", "solo", "10.96.0.40".parse().unwrap());
    solo.ports.push(ServicePort {
        name: "http".into(),
        protocol: Proto::TCP,
        port: 80,
        target_port: TargetPort::Number(8080),
        node_port: 0,
    });
    c.add_service(solo).unwrap();
    c.add_endpoint_slice(EndpointSlice {
        namespace: "default".into(),
        service: "solo".into(),
        ports: vec![("http".into(), Proto::TCP, 8080)],
        endpoints: vec![SliceEndpoint {
            ip: "10.244.1.2".parse().unwrap(),
            node_name: Some("node1".into()),
            ready: None,
            serving: None,
            terminating: None,
        }],
    });
    let on = c.trace("pod/default/pod1", "svc/default/solo:http", &common::tcp()).unwrap();
    assert!(on.completed, "hairpin on works:\n{}", on.render(true));
    assert!(on.server_saw.as_deref().unwrap().starts_with("10.244.1.1:"));

    c.set_hairpin("pod/default/pod1", false).unwrap();
    let before = c.conntrack("node1").unwrap();
    let t = c.trace("pod/default/pod1", "svc/default/solo:http", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    assert_eq!(t.reason.as_deref(), Some("hairpin-off"));
    assert!(!t.completed);
    let drop = t.hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).unwrap();
    assert_eq!(
        (drop.netns.as_str(), drop.device.as_deref(), drop.kind.reason()),
        ("node1", Some("cbr0"), Some("hairpin-off"))
    );
    let sport = t.client.rsplit(':').next().unwrap();
    let after = c.conntrack("node1").unwrap();
    assert!(
        !after.contains(&format!("sport={sport} dport=80")),
        "no entry for the dropped flow:\n{after}"
    );
    // The dropped SYNs added nothing (an unconfirmed entry dies with its packet). When a
    // SYN reuses the tuple of the earlier connection's TIME_WAIT entry, that entry is
    // killed for it, as nf_conntrack_tcp_packet does for a reopened connection.
    assert!(
        after.lines().all(|l| before.contains(l)),
        "conntrack gained entries from the dropped SYNs:\n{before}\n---\n{after}"
    );
}

#[test]
fn hairpin_off_with_two_endpoints_fails_only_when_the_pick_is_the_client_itself() {
    // The SYN that picks pod1 dies at the bridge and leaves no conntrack entry, so its
    // retransmission is a new connection to conntrack and is load-balanced afresh: each
    // attempt picks pod1 (dropped, hairpin off) or pod3 (delivered), and nothing else.
    let mut recovered = 0;
    for seed in 0..60 {
        let mut c = Cluster::seed_with(seed);
        c.set_hairpin("pod/default/pod1", false).unwrap();
        let t = c.trace("pod/default/pod1", "svc/default/web:http", &common::tcp()).unwrap();
        let drops = t.hops.iter().filter(|h| matches!(h.kind, HopKind::Drop { .. })).count();
        let hairpin = t.hops.iter().filter(|h| h.kind.reason() == Some("hairpin-off")).count();
        assert_eq!(drops, hairpin, "every drop is the hairpin one\n{}", t.render(true));
        if t.disposition == Disposition::Delivered {
            assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod3"), "{}", t.render(true));
            assert!(t.completed, "{}", t.render(true));
            recovered += usize::from(drops > 0);
        } else {
            // Every attempt picked the client itself.
            assert!(drops > 0 && t.delivered_to.is_none(), "{}", t.render(true));
        }
    }
    // About half the first picks are pod1; their retransmissions reach pod3 in most seeds.
    assert!(recovered > 0, "no seed shows a dropped SYN followed by a delivery to pod3");
}

#[test]
fn without_br_netfilter_a_same_node_reply_escapes_reverse_nat() {
    let pod1 = |t: &podnet::Trace| t.delivered_to.as_deref() == Some("pod/default/pod1");
    let (seed, _, _) =
        common::find_seed("pod/default/pod2", "svc/default/web:http", &common::tcp(), pod1);
    let mut c = Cluster::seed_with(seed);
    c.set_sysctl("node1", "net.bridge.bridge-nf-call-iptables", 0).unwrap();
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &common::tcp()).unwrap();
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod1"), "{}", t.render(true));
    assert_eq!(
        t.reply_from.as_deref(),
        Some("10.244.1.2:8080"),
        "the SYN-ACK comes from the pod IP"
    );
    assert!(!t.completed, "the exchange does not complete");

    let (seed, _, _) =
        common::find_seed("pod/default/pod2", "svc/default/web:udp", &common::udp(), pod1);
    let mut c = Cluster::seed_with(seed);
    c.set_sysctl("node1", "net.bridge.bridge-nf-call-iptables", 0).unwrap();
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &common::udp()).unwrap();
    assert_eq!(t.reply_from.as_deref(), Some("10.244.1.2:8080"), "{}", t.render(true));
}

fn add_empty_service(c: &mut Cluster) {
    let mut s = Service::cluster_ip("default", "empty", "10.96.0.30".parse().unwrap());
    s.selector = Some(BTreeMap::from([("app".to_string(), "nothing".to_string())]));
    for (name, proto) in [("http", Proto::TCP), ("dns", Proto::UDP)] {
        s.ports.push(ServicePort {
            name: name.into(),
            protocol: proto,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: 0,
        });
    }
    c.add_service(s).unwrap();
}

#[test]
fn service_without_endpoints_is_rejected_with_port_unreachable_from_the_node() {
    let mut c = Cluster::seed();
    add_empty_service(&mut c);
    for opts in [common::tcp(), common::udp()] {
        let t = c.trace("pod/default/pod2", "10.96.0.30:80", &opts).unwrap();
        assert_eq!(t.disposition, Disposition::Rejected, "{}", t.render(true));
        assert_eq!(t.reason.as_deref(), Some("rule"));
        assert_eq!(
            t.reply_from.as_deref(),
            Some("10.244.1.1"),
            "ICMP from node1's address on the route back"
        );
        assert!(!t.completed);
        let reject = t
            .hops
            .iter()
            .find(|h| {
                matches!(h.kind, HopKind::Rule { .. })
                    && h.kind.rule().is_some_and(|r| {
                        r.ends_with("-j REJECT --reject-with icmp-port-unreachable")
                    })
            })
            .expect("the REJECT rule");
        assert_eq!(reject.kind.chain(), Some("KUBE-SERVICES"));
        assert_eq!(reject.kind.table(), Some("filter"));
        assert!(reject.kind.origin().is_some_and(|o| o.starts_with("svc/default/empty")));
    }
}

#[test]
fn node_local_client_reaches_the_service_through_nat_output() {
    let mut c = Cluster::seed();
    let t = c.trace("node/node1", "svc/default/web:http", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert!(
        t.hops.iter().any(|h| matches!(h.kind, HopKind::Nat { .. })
            && h.kind.hook().map(|k| k.to_string()).as_deref() == Some("OUTPUT")
            && h.detail.starts_with("DNAT 10.96.0.10:80")),
        "{}",
        t.render(true)
    );
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
}

#[test]
fn not_ready_endpoint_leaves_the_rotation() {
    let mut c = Cluster::seed();
    c.set_ready("pod/default/pod3", false).unwrap();
    for _ in 0..10 {
        let t = c.trace("pod/default/pod2", "svc/default/web:udp", &common::udp()).unwrap();
        assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod1"));
    }
    c.set_ready("pod/default/pod1", false).unwrap();
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &common::udp()).unwrap();
    assert_eq!(
        t.disposition,
        Disposition::Rejected,
        "no endpoints left: REJECT\n{}",
        t.render(true)
    );
}

#[test]
fn removing_a_udp_endpoint_clears_its_conntrack_entries() {
    let mut c = Cluster::seed();
    // Find the endpoint a UDP flow from pod2 landed on, then take that pod out of service.
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &common::udp()).unwrap();
    let pod = t.delivered_to.clone().unwrap();
    let ip = if pod.ends_with("pod1") { "10.244.1.2" } else { "10.244.2.2" };
    let sport = t.client.rsplit(':').next().unwrap().to_string();
    let has_entry = |c: &Cluster| {
        c.conntrack("node1").unwrap().lines().any(|l| {
            l.starts_with("udp") && l.contains(&format!("sport={sport} dport=80 src={ip}"))
        })
    };
    assert!(has_entry(&c));
    c.set_ready(&pod, false).unwrap();
    assert!(!has_entry(&c), "{}", c.conntrack("node1").unwrap());
    // The same client socket now reaches the remaining endpoint at once.
    let opts = podnet::TraceOptions { sport: Some(sport.parse().unwrap()), ..common::udp() };
    let again = c.trace("pod/default/pod2", "svc/default/web:udp", &opts).unwrap();
    assert!(again.completed);
    assert_ne!(again.delivered_to.as_deref(), Some(pod.as_str()));
}
