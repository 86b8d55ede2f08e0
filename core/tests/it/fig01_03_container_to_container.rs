//! Seed figures 1-3: containers of a pod share one network namespace.

use crate::common;

use podnet::netfilter::Proto;
use podnet::{Cluster, ClusterError, Container};

#[test]
fn sidecar_reaches_web_container_over_localhost() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod1", "127.0.0.1:8080", &common::tcp()).unwrap();
    assert!(common::delivered(&t), "{}", t.render(true));
    assert!(t.completed);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod1"));
    assert!(t.server_saw.as_deref().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(t.reply_from.as_deref(), Some("127.0.0.1:8080"));
    // Nothing leaves the pod: every hop is on the pod's lo.
    assert!(
        t.hops.iter().all(|h| h.netns == "pod/default/pod1" && h.device.as_deref() == Some("lo")),
        "{}",
        t.render(true)
    );
}

#[test]
fn two_containers_cannot_bind_the_same_port() {
    let mut c = Cluster::seed();
    let err = c.bind("pod/default/pod1", "sidecar", Proto::TCP, 8080).unwrap_err();
    match &err {
        ClusterError::AddrInUse { owner, port, .. } => {
            assert_eq!(owner, "web");
            assert_eq!(*port, 8080);
        }
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    assert!(err.to_string().contains("address already in use"));
    // A free port binds, and is then served over localhost.
    c.bind("pod/default/pod1", "sidecar", Proto::TCP, 7070).unwrap();
    let t = c.trace("pod/default/pod1", "127.0.0.1:7070", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // The same port over UDP is a different socket and is free.
    c.bind("pod/default/pod1", "sidecar", Proto::UDP, 7070).unwrap();
}

#[test]
fn a_pod_spec_with_conflicting_container_ports_is_refused() {
    let mut c = Cluster::seed();
    let n = c.node_id("node3").unwrap();
    let a = Container { name: "a".into(), ports: vec![(Proto::TCP, 80)], ..Container::default() };
    let b = Container { name: "b".into(), ports: vec![(Proto::TCP, 80)], ..Container::default() };
    let err = c.add_pod("default", "clash", n, None, Default::default(), vec![a, b]).unwrap_err();
    assert!(matches!(err, ClusterError::AddrInUse { .. }), "{err}");
    assert!(c.pod_id("pod/default/clash").is_err(), "nothing was created");
}

#[test]
fn nothing_listening_on_localhost_is_refused() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod1", "127.0.0.1:6000", &common::tcp()).unwrap();
    assert_eq!(t.disposition, podnet::Disposition::Rejected, "{}", t.render(true));
    assert!(!t.completed);
}

/// A pod reaching its own address: Linux's rule 0 looks up the `local` table first, which
/// holds `local 10.244.1.2 dev eth0 … src 10.244.1.2`, so `ip route get 10.244.1.2` in the
/// pod says `local 10.244.1.2 dev lo src 10.244.1.2` and the packet never reaches `eth0`
/// (no ARP for its own address, no trip through the veth and a bridge hairpin).
#[test]
fn a_pod_reaching_its_own_address_goes_over_lo() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod1", "10.244.1.2:8080", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod1"));
    // The source is the local route's `src`, the pod's own address.
    assert!(t.server_saw.as_deref().unwrap().starts_with("10.244.1.2:"), "{:?}", t.server_saw);
    assert!(
        t.hops.iter().all(|h| h.netns == "pod/default/pod1" && h.device.as_deref() == Some("lo")),
        "{}",
        t.render(true)
    );
    assert!(t.hops.iter().all(|h| h.before.as_ref().is_none_or(|b| b.proto != "arp")));
}

/// `ip route show table local` in a pod, as Linux 6.18 prints it for a netns holding
/// `10.244.1.2/24` on `eth0` and `127.0.0.1/8` on `lo` (observed in a namespace made for
/// the purpose; iproute2's trailing spaces and the veth's `linkdown` flag left out).
#[test]
fn the_local_table_lists_own_addresses_and_broadcasts_as_linux_does() {
    let c = Cluster::seed();
    let got = c.show("routes-local".parse().unwrap(), "pod/default/pod1").unwrap();
    assert_eq!(
        got,
        "local 10.244.1.2 dev eth0 proto kernel scope host src 10.244.1.2\n\
         broadcast 10.244.1.255 dev eth0 proto kernel scope link src 10.244.1.2\n\
         local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1\n\
         local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1\n\
         broadcast 127.255.255.255 dev lo proto kernel scope link src 127.0.0.1\n"
    );
}
