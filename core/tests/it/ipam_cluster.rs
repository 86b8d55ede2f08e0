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

#[test]
fn kubelet_refuses_pods_beyond_max_pods_from_the_node_capacity() {
    let y = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0/24}\nstatus: {capacity: {pods: \"3\"}, addresses: [{type: InternalIP, address: 192.168.0.5}]}\n";
    let (mut c, _) = Cluster::from_yaml(y).unwrap();
    let n = c.node_id("n1").unwrap();
    for i in 0..3 {
        c.add_pod("default", &format!("p{i}"), n, None, Default::default(), vec![]).unwrap();
    }
    let e = c.add_pod("default", "p3", n, None, Default::default(), vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pod pod/default/p3 is unschedulable on node 'n1': Too many pods (3 of max 3: kubelet --max-pods (the node's pods capacity))"
    );
    // The default is kubelet's 110.
    let mut c = Cluster::seed();
    let n = c.node_id("node3").unwrap();
    for i in 0..110 {
        c.add_pod("default", &format!("q{i}"), n, None, Default::default(), vec![]).unwrap();
    }
    assert!(matches!(
        c.add_pod("default", "q110", n, None, Default::default(), vec![]),
        Err(ClusterError::TooManyPods { max: 110, .. })
    ));
    let bad = y.replace("pods: \"3\"", "pods: lots");
    let e = Cluster::from_yaml(&bad).err().unwrap().to_string();
    assert!(e.contains("status.capacity.pods 'lots' is not a count of pods"), "{e}");
}
