//! Frames injected at any device of the reference cluster, with the edge's optional parts
//! added (a client-IP-preserving and a pass-through load balancer, a NAT gateway, an
//! in-cluster Ingress controller, a LOG rule): never a panic, and afterwards a Service flow
//! still completes (unless the frame spoofs ARP or a cluster MAC, which breaks Linux too).
#![no_main]
use std::cell::RefCell;
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use podnet::Cluster;
use podnet::cloud::LbMode;
use podnet::cluster::Container;
use podnet::cloud::{Ingress, IngressPath, IngressRule, PathType};
use podnet::kube_proxy::{Service, ServicePort, ServiceType, TargetPort};
use podnet::netfilter::Proto;

fn lb_service(c: &mut Cluster, name: &str, ip: &str, selector: &str, local: bool) {
    let mut s = Service::cluster_ip("default", name, ip.parse().unwrap());
    s.kind = ServiceType::LoadBalancer;
    s.selector = Some(BTreeMap::from([("app".to_string(), selector.to_string())]));
    s.external_local = local;
    s.lb_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    s.ports = vec![ServicePort {
        name: "http".into(),
        protocol: Proto::TCP,
        port: 80,
        target_port: TargetPort::Number(8080),
        node_port: 0,
    }];
    c.add_service(s).unwrap();
}

fn base() -> Cluster {
    let mut c = Cluster::seed();
    lb_service(&mut c, "nlb", "10.96.0.21", "api", true);
    c.add_cloud_lb_with(
        "svc/default/nlb",
        "203.0.113.101".parse().unwrap(),
        "192.168.0.101".parse().unwrap(),
        LbMode::PreserveClientIp,
    )
    .unwrap();
    lb_service(&mut c, "gcp", "10.96.0.22", "web", false);
    c.add_cloud_lb_with(
        "svc/default/gcp",
        "203.0.113.102".parse().unwrap(),
        "192.168.0.102".parse().unwrap(),
        LbMode::PassThrough,
    )
    .unwrap();
    c.add_nat_gateway("203.0.113.50".parse().unwrap(), "192.168.0.50".parse().unwrap()).unwrap();
    let node3 = c.node_id("node3").unwrap();
    let ctl = Container { name: "c".into(), ports: vec![(Proto::TCP, 80)], named_ports: vec![] };
    c.add_pod("default", "ingress", node3, None, BTreeMap::new(), vec![ctl]).unwrap();
    c.add_ingress_controller("pod/default/ingress", "nginx", 80).unwrap();
    let path = |p: &str, svc: &str| IngressPath {
        path: p.into(),
        path_type: PathType::Prefix,
        service: svc.into(),
        port: "80".into(),
    };
    c.add_ingress(Ingress {
        namespace: "default".into(),
        name: "i".into(),
        class: Some("nginx".into()),
        rules: vec![IngressRule { host: None, paths: vec![path("/", "web"), path("/a", "api")] }],
        ..Ingress::default()
    })
    .unwrap();
    c.iptables_restore(
        "node2",
        "*mangle\n-A PREROUTING -j LOG --log-prefix \"fuzz: \"\nCOMMIT\n",
        true,
    )
    .unwrap();
    c
}

thread_local! {
    // Built once; every input runs on a fork, so inputs never see each other's state.
    static BASE: RefCell<Cluster> = RefCell::new(base());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else { return };
    let mut c = BASE.with(|b| b.borrow().fork());
    let points = c.injection_points();
    let (ns, dev) = &points[usize::from(pick) % points.len()];
    let _ = c.inject_frame(ns, dev, frame).expect("injection points are valid");
    // The cluster keeps working: a Service flow across the bridge and the nat table still
    // completes. Only what breaks it on Linux too is let off: an ARP frame (it can rewrite a
    // neighbour entry) or a frame sent from a cluster device's MAC (`02:50:…`: the bridge
    // learns that MAC on the wrong port). Even then the trace must run.
    let spoofs = frame.len() >= 14 && (frame[12..14] == [0x08, 0x06] || frame[6..8] == [0x02, 0x50]);
    let t = c
        .trace("pod/default/pod1", "svc/default/web:http", &podnet::TraceOptions::default())
        .expect("the trace runs after any injected frame");
    assert!(spoofs || t.completed, "a frame at {ns}/{dev} broke the cluster:\n{}", t.render(true));
});
