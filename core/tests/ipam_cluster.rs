//! Pod addresses come from host-local IPAM on each node.

use podnet::{Cluster, ClusterConfig, ClusterError};

#[test]
fn pods_get_addresses_round_robin_until_the_node_cidr_is_exhausted() {
    let mut c = Cluster::new(ClusterConfig::default());
    let n =
        c.add_node("n1", "192.168.0.5".parse().unwrap(), "10.244.9.0/28".parse().unwrap()).unwrap();
    // .2 .. .14 are usable in a /28.
    let mut ips = Vec::new();
    for i in 0..13 {
        let id =
            c.add_pod("default", &format!("p{i}"), n, None, Default::default(), vec![]).unwrap();
        ips.push(c.pods()[id.0 as usize].ip.to_string());
    }
    assert_eq!(ips.first().map(String::as_str), Some("10.244.9.2"));
    assert_eq!(ips.last().map(String::as_str), Some("10.244.9.14"));
    let e = c.add_pod("default", "one-too-many", n, None, Default::default(), vec![]).unwrap_err();
    assert!(matches!(e, ClusterError::Ipam(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "pod CIDR 10.244.9.0/28 is exhausted (13 in use): the node has no free pod address; delete pods or give nodes larger pod CIDRs"
    );
    let e = c
        .add_pod(
            "default",
            "dup",
            n,
            Some("10.244.9.3".parse().unwrap()),
            Default::default(),
            vec![],
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "pod IP 10.244.9.3 is already allocated in 10.244.9.0/28");
}
