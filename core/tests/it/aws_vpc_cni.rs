//! The AWS VPC CNI profile end to end: pod IPs are ENI secondary addresses routed natively by
//! the VPC, pods are wired with routed veths (no bridge), secondary ENIs get policy routing,
//! egress is SNATed to the node's primary address, and kubelet and the CNI refuse pods the
//! way Kubernetes shows them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use podnet::cni::{AwsVpcConfig, Cni, host_veth_name};
use podnet::trace::HopKind;
use podnet::trace::TraceOptions;
use podnet::{Cluster, ClusterConfig, ClusterError, Container};

fn pod_ip(c: &Cluster, name: &str) -> Ipv4Addr {
    c.pods().iter().find(|p| p.name == name && !p.deleted).unwrap().ip
}

fn hops(t: &podnet::Trace) -> Vec<String> {
    // "[ 12] node2 eth0   rule  ..." -> "node2 eth0 rule ..."
    t.render(true)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('[')?.split_once(']').map(|x| x.1.to_string()))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn web() -> Vec<Container> {
    vec![Container {
        name: "c".into(),
        ports: vec![(podnet::netfilter::Proto::TCP, 8080), (podnet::netfilter::Proto::UDP, 8080)],
        named_ports: Vec::new(),
    }]
}

fn one_node(cfg: AwsVpcConfig) -> (Cluster, podnet::ids::NodeId) {
    let mut c = Cluster::try_new(ClusterConfig {
        node_subnet: "192.168.0.0/24".parse().unwrap(),
        cni: Cni::AwsVpc(cfg),
        ..ClusterConfig::default()
    })
    .unwrap();
    let n = c.add_aws_node("node1", Ipv4Addr::new(192, 168, 0, 11)).unwrap();
    (c, n)
}

#[test]
fn pods_are_routed_veths_with_a_static_gateway_and_enis_hold_their_addresses() {
    let c = Cluster::seed_aws();
    let ip1 = pod_ip(&c, "pod1");
    assert_eq!(
        ip1,
        Ipv4Addr::new(192, 168, 0, 254),
        "podnet's EC2 hands out the top of the subnet first (its deterministic choice; EC2 documents no order)"
    );
    // Inside the pod: a /32, the dummy gateway and its permanent neighbour entry.
    assert_eq!(
        c.routes("pod/default/pod1").unwrap(),
        "default via 169.254.1.1 dev eth0\n169.254.1.1 dev eth0 scope link\n"
    );
    let veth = host_veth_name("default", "pod1");
    assert!(veth.starts_with("eni") && veth.len() == 14, "{veth}");
    assert!(c.neigh("pod/default/pod1").unwrap().starts_with("169.254.1.1 dev eth0 lladdr "));
    assert!(c.neigh("pod/default/pod1").unwrap().trim_end().ends_with("PERMANENT"));
    // On the node: no bridge, a host route per pod, `to <pod> lookup main`.
    let routes = c.routes("node1").unwrap();
    assert!(routes.contains(&format!("{ip1} dev {veth} scope link\n")), "{routes}");
    assert!(!routes.contains("cbr0"), "{routes}");
    assert!(c.fdb("node1").unwrap().is_empty());
    assert!(
        c.ip_rules("node1").unwrap().contains(&format!("512:\tfrom all to {ip1} lookup main\n"))
    );
    // ipamd: eth0 holds pod1 and pod2; the warm target attached eth1 with a full ENI's worth.
    let enis = c.enis("node1").unwrap();
    assert!(
        enis.starts_with(
            "node1 m5.large: 2 of 3 ENIs, 18 pod IPs attached, 2 assigned, max pods 29\n"
        ),
        "{enis}"
    );
    assert!(enis.contains(&format!("  {ip1} pod/default/pod1\n")), "{enis}");
    let e = c.enis("nodeX").unwrap_err();
    assert!(matches!(e, ClusterError::NotFound { .. }));
    assert!(
        Cluster::seed()
            .enis("node1")
            .unwrap_err()
            .to_string()
            .contains("ENIs exist in the AWS VPC CNI profile only")
    );
}

#[test]
fn pod_to_pod_across_nodes_is_delivered_by_the_vpc_to_the_eni() {
    let mut c = Cluster::seed_aws();
    let (ip1, ip3) = (pod_ip(&c, "pod1"), pod_ip(&c, "pod3"));
    let t = c.trace("pod/default/pod1", "pod/default/pod3:8080", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.server_saw.as_deref().map(|s| s.starts_with(&format!("{ip1}:"))), Some(true));
    let h = hops(&t);
    // The pod's frame leaves for the host veth without ARP (the static neighbour).
    assert!(
        h.iter().any(|l| l.starts_with("pod/default/pod1 eth0 tx neighbour 169.254.1.1 is ")),
        "{h:#?}"
    );
    assert!(!h.iter().any(|l| l.contains("who-has 169.254.1.1")), "{h:#?}");
    // The VPC answers for the ENI address and forwards to the ENI's MAC.
    assert!(
        h.iter().any(|l| l.contains(&format!("ARP reply {ip3} is-at"))
            && l.contains("an ENI secondary address, delivered by the VPC")),
        "{h:#?}"
    );
    assert!(
        h.iter().any(
            |l| l.starts_with("vpc vpc0 route") && l.contains(&format!("route {ip3} dev vpc0"))
        ),
        "{h:#?}"
    );
    // node2 routes the pod's /32 to its veth; nothing crosses a bridge.
    let veth3 = host_veth_name("default", "pod3");
    assert!(
        h.iter().any(|l| l.starts_with("node2 eth0 route")
            && l.contains(&format!("route {ip3} dev {veth3}"))),
        "{h:#?}"
    );
    assert!(!h.iter().any(|l| l.contains("cbr0")), "{h:#?}");
}

#[test]
fn a_pod_on_a_secondary_eni_leaves_through_it_and_egress_is_snatted_to_the_primary_address() {
    let mut c = Cluster::seed_aws();
    // node2's eth0 holds 9 pod addresses: pod3, pod4 and 7 more; the next pod lands on eth1.
    for k in 0..8 {
        let id = c.node_id("node2").unwrap();
        c.add_pod("default", &format!("f{k}"), id, None, BTreeMap::new(), web()).unwrap();
    }
    let ip = pod_ip(&c, "f7");
    let enis = c.enis("node2").unwrap();
    let eth1 = enis.split("eth1 ").nth(1).unwrap();
    assert!(eth1.contains(&format!("  {ip} pod/default/f7\n")), "{enis}");
    let rules = c.ip_rules("node2").unwrap();
    assert!(rules.contains(&format!("1536:\tfrom {ip} to 192.168.0.0/24 lookup 2\n")), "{rules}");
    assert!(c.route_table("node2", 2).unwrap().starts_with("default via 192.168.0.1 dev eth1\n"));
    // Inside the VPC: out of eth1 (table 2), back in on eth1.
    let t = c.trace("pod/default/f7", "pod/default/pod1:8080", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    let h = hops(&t);
    assert!(h.iter().any(|l| l.starts_with("node2 eth1 tx ")), "{h:#?}");
    assert!(
        t.hops.iter().any(|x| x.direction == podnet::trace::Dir::Reply
            && x.netns == "node2"
            && x.device.as_deref() == Some("eth1")
            && matches!(x.kind, HopKind::Rx)),
        "{h:#?}"
    );
    // To the internet: main table, out of eth0, SNAT to the node's primary address, then the
    // gateway's 1:1 NAT to its public address.
    let t = c.trace("pod/default/f7", "203.0.113.10:80", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.server_saw.as_deref().map(|s| s.starts_with("203.0.113.2:")), Some(true));
    let h = hops(&t);
    assert!(
        h.iter().any(|l| l.starts_with("node2 eth0 rule")
            && l.contains("-j SNAT --to-source 192.168.0.12 --random-fully")),
        "{h:#?}"
    );
}

#[test]
fn every_seed_scenario_lands_where_it_does_in_the_bridge_profile() {
    let mut bridge = Cluster::seed();
    let mut aws = Cluster::seed_aws();
    for s in podnet::demo::scenarios() {
        let o = TraceOptions { proto: Some(s.proto), ..TraceOptions::default() };
        let a = aws.trace(s.from, s.to, &o).unwrap();
        let b = bridge.trace(s.from, s.to, &o).unwrap();
        assert_eq!(
            (a.disposition, a.completed, a.delivered_to.is_some()),
            (b.disposition, b.completed, b.delivered_to.is_some()),
            "{}: {}\n{}",
            s.id,
            a.render(false),
            b.render(false)
        );
        assert!(a.completed, "{}: {}", s.id, a.render(true));
        // Pod destinations are the same pods (Services pick by seeded chance on each side).
        if !s.to.starts_with("svc/")
            && !s.to.starts_with("203.0.113.100")
            && !s.to.starts_with("http")
            && !s.to.contains(":30080")
        {
            assert_eq!(a.delivered_to, b.delivered_to, "{}", s.id);
        }
    }
}

#[test]
fn an_m5_large_takes_29_pods_and_kubelet_refuses_the_next() {
    let (mut c, n) = one_node(AwsVpcConfig::default());
    for k in 0..27 {
        c.add_pod("default", &format!("p{k}"), n, None, BTreeMap::new(), web()).unwrap();
    }
    let e = c.add_pod("default", "p27", n, None, BTreeMap::new(), web()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pod pod/default/p27 is unschedulable on node 'node1': Too many pods (29 of max 29: 27 pods with IPs and 2 host-network pods; m5.large allows 3 ENIs × 10 addresses)"
    );
    assert!(c.enis("node1").unwrap().starts_with(
        "node1 m5.large: 3 of 3 ENIs, 27 pod IPs attached, 27 assigned, max pods 29\n"
    ));
}

#[test]
fn a_pod_that_gets_no_address_stays_container_creating() {
    // kubelet allows more pods than the ENIs can address (a custom --max-pods).
    let (mut c, n) = one_node(AwsVpcConfig { max_pods: Some(110), ..AwsVpcConfig::default() });
    for k in 0..27 {
        c.add_pod("default", &format!("p{k}"), n, None, BTreeMap::new(), web()).unwrap();
    }
    let e = c.add_pod("default", "p27", n, None, BTreeMap::new(), web()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pod pod/default/p27 stays ContainerCreating: failed to assign an IP address to container: ipamd on node1 has no free address (27 assigned, 0 cooling down, 3 of 3 ENIs attached; m5.large allows 3 ENIs of 10 addresses)"
    );
    assert!(c.pod_id("pod/default/p27").is_err(), "the pod has no network namespace");
    // Deleting a pod frees its address after ipamd's 30 s cooldown.
    let freed = pod_ip(&c, "p3");
    c.delete_pod("pod/default/p3").unwrap();
    assert!(!c.routes("node1").unwrap().contains(&format!("{freed} dev")));
    assert!(!c.ip_rules("node1").unwrap().contains(&freed.to_string()));
    assert!(matches!(
        c.add_pod("default", "p27", n, None, BTreeMap::new(), web()),
        Err(ClusterError::FailedToAssign { .. })
    ));
    c.advance(podnet::time::Duration::from_secs(31));
    c.add_pod("default", "p27", n, None, BTreeMap::new(), web()).unwrap();
    assert_eq!(pod_ip(&c, "p27"), freed);
}

#[test]
fn profile_mismatches_and_bad_settings_are_refused() {
    let e = Cluster::seed().add_aws_node("n", Ipv4Addr::new(192, 168, 0, 9)).unwrap_err();
    assert!(e.to_string().contains("this cluster uses the bridge profile"), "{e}");
    let (mut c, n) = one_node(AwsVpcConfig::default());
    let e = c
        .add_node("n2", Ipv4Addr::new(192, 168, 0, 12), "10.244.2.0/24".parse().unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("add nodes with add_aws_node"), "{e}");
    // A pod that has an address (imported): EC2 assigns that free address to an ENI.
    c.add_pod("default", "x", n, Some(Ipv4Addr::new(192, 168, 0, 50)), BTreeMap::new(), web())
        .unwrap();
    assert_eq!(pod_ip(&c, "x"), Ipv4Addr::new(192, 168, 0, 50));
    assert!(c.enis("node1").unwrap().contains("192.168.0.50"), "{}", c.enis("node1").unwrap());
    // One outside the subnet, or one a node has, is refused with both named.
    let e = c
        .add_pod("default", "y", n, Some(Ipv4Addr::new(10, 9, 0, 5)), BTreeMap::new(), web())
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "pod default/y with address 10.9.0.5, outside the node subnet 192.168.0.0/24"
        ),
        "{e}"
    );
    let e = c
        .add_pod("default", "z", n, Some(Ipv4Addr::new(192, 168, 0, 11)), BTreeMap::new(), web())
        .unwrap_err();
    assert!(
        e.to_string().contains("192.168.0.11 is not free in the VPC subnet 192.168.0.0/24"),
        "{e}"
    );
    let e = c.add_aws_node("node2", Ipv4Addr::new(192, 168, 0, 254)).unwrap_err();
    assert_eq!(e.to_string(), "VPC subnet 192.168.0.254 is already allocated in 192.168.0.0/24");
    let bad = |cfg: AwsVpcConfig, subnet: &str| {
        Cluster::try_new(ClusterConfig {
            node_subnet: subnet.parse().unwrap(),
            cni: Cni::AwsVpc(cfg),
            ..ClusterConfig::default()
        })
        .err()
        .map(|e| e.to_string())
    };
    assert!(
        bad(AwsVpcConfig { instance_type: "x1.tiny".into(), ..Default::default() }, "10.0.0.0/24")
            .unwrap()
            .contains("instance type 'x1.tiny' is not in podnet's ENI limits table")
    );
    assert_eq!(
        bad(AwsVpcConfig::default(), "10.0.0.0/30").unwrap(),
        "subnet 10.0.0.0/30: AWS subnets are /16 to /28"
    );
}

#[test]
fn the_aws_profile_loads_from_yaml_and_reports_pods_it_cannot_run() {
    let mut y = String::from(
        "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\ncni: aws-vpc\ninstanceType: t3.small\nnodeSubnet: 10.0.0.0/24\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: ip-10-0-0-20}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.20}]}\n",
    );
    // t3.small: 3 ENIs × 3 pod addresses, max pods 11 (9 + 2 host-network pods).
    for k in 0..10 {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{k}, labels: {{app: a}}}}\nspec:\n  nodeName: ip-10-0-0-20\n  containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]\n"
        ));
    }
    let (mut c, report) = Cluster::from_yaml(&y).unwrap();
    assert_eq!(report.loaded.iter().filter(|l| l.starts_with("Pod/")).count(), 9);
    assert_eq!(
        report.skipped,
        vec!["Pod/default/p9: pod pod/default/p9 is unschedulable on node 'ip-10-0-0-20': Too many pods (11 of max 11: 9 pods with IPs and 2 host-network pods; t3.small allows 3 ENIs × 4 addresses)".to_string()]
    );
    assert!(c.enis("ip-10-0-0-20").unwrap().starts_with(
        "ip-10-0-0-20 t3.small: 3 of 3 ENIs, 9 pod IPs attached, 9 assigned, max pods 11\n"
    ));
    let t = c.trace("pod/default/p0", "pod/default/p8:8080", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // Pods from a dump keep their EKS addresses: ipamd's ENIs are rebuilt around them, and no
    // warm pool takes one first (10.0.0.254 is the top of the subnet, the first address a
    // warm pool would take).
    let base = y.split("---\napiVersion: v1\nkind: Pod").next().unwrap();
    let (mut c, _) = Cluster::from_yaml(&format!(
        "{base}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: old}}\nspec: {{nodeName: ip-10-0-0-20, containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]}}\nstatus: {{phase: Running, podIP: 10.0.0.254}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: older}}\nspec: {{nodeName: ip-10-0-0-20, containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]}}\nstatus: {{phase: Running, podIP: 10.0.0.77}}\n",
    ))
    .unwrap();
    assert_eq!(pod_ip(&c, "old"), "10.0.0.254".parse::<Ipv4Addr>().unwrap());
    assert_eq!(pod_ip(&c, "older"), "10.0.0.77".parse::<Ipv4Addr>().unwrap());
    let enis = c.enis("ip-10-0-0-20").unwrap();
    assert!(enis.contains("10.0.0.77") && enis.contains("10.0.0.254"), "{enis}");
    let t = c.trace("pod/default/old", "pod/default/older:8080", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // An address outside the subnet names the pod and the subnet.
    let e = Cluster::from_yaml(&format!(
        "{base}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: far}}\nspec: {{nodeName: ip-10-0-0-20, containers: [{{name: c, image: x}}]}}\nstatus: {{phase: Running, podIP: 10.1.0.7}}\n",
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("Pod/default/far: pod default/far with address 10.1.0.7, outside the node subnet 10.0.0.0/24"), "{e}");
    let e =
        Cluster::from_yaml("apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\ncni: calico\n")
            .err()
            .unwrap()
            .to_string();
    assert!(e.contains("cni (bridge or aws-vpc) 'calico' is not valid"), "{e}");
}

#[test]
fn external_snat_sends_secondary_eni_pods_out_of_their_own_eni_for_every_destination() {
    let (mut c, n) = one_node(AwsVpcConfig { external_snat: true, ..AwsVpcConfig::default() });
    for k in 0..10 {
        c.add_pod("default", &format!("p{k}"), n, None, BTreeMap::new(), web()).unwrap();
    }
    let ip = pod_ip(&c, "p9");
    // No `to <VPC CIDR>` on the rule, and no SNAT chain on the node.
    assert!(c.ip_rules("node1").unwrap().contains(&format!("1536:\tfrom {ip} lookup 2\n")));
    assert!(!c.iptables_save("node1").unwrap().contains("AWS-SNAT-CHAIN-0"));
    // In the default mode the same pod gets the VPC-scoped rule and the SNAT chain.
    let (mut d, n) = one_node(AwsVpcConfig::default());
    for k in 0..10 {
        d.add_pod("default", &format!("p{k}"), n, None, BTreeMap::new(), web()).unwrap();
    }
    let ip = pod_ip(&d, "p9");
    assert!(
        d.ip_rules("node1")
            .unwrap()
            .contains(&format!("1536:\tfrom {ip} to 192.168.0.0/24 lookup 2\n"))
    );
    assert!(
        d.iptables_save("node1")
            .unwrap()
            .contains("-j SNAT --to-source 192.168.0.11 --random-fully")
    );
}

#[test]
fn a_secondary_eni_pod_reaches_a_service_through_its_own_eni() {
    let mut c = Cluster::seed_aws();
    let id = c.node_id("node2").unwrap();
    for k in 0..8 {
        c.add_pod("default", &format!("f{k}"), id, None, BTreeMap::new(), web()).unwrap();
    }
    let mut via_eth1 = 0;
    for _ in 0..8 {
        let t =
            c.trace("pod/default/f7", "svc/default/web:http", &TraceOptions::default()).unwrap();
        assert!(t.completed, "{}", t.render(true));
        assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
        if t.delivered_to.as_deref() == Some("pod/default/pod1") {
            // To node1: DNAT on node2, then table 2 sends it out of eth1.
            let h = hops(&t);
            assert!(h.iter().any(|l| l.starts_with("node2 eth1 tx ")), "{h:#?}");
            via_eth1 += 1;
        }
    }
    assert!(via_eth1 > 0, "some flows land on pod1 on node1");
}
