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
