//! Helpers shared by the scenario tests.

use podnet::trace::HopKind;
use podnet::trace::{Dir, FlowProto, Hop, Trace, TraceOptions};
use podnet::{Cluster, Disposition};

pub fn tcp() -> TraceOptions {
    TraceOptions::default()
}

pub fn udp() -> TraceOptions {
    TraceOptions { proto: Some(FlowProto::Udp), ..TraceOptions::default() }
}

/// The packet number of the first request packet of `proto` carrying `info` (e.g. `S`).
pub fn first_packet(t: &Trace, dir: Dir, proto: &str) -> u32 {
    t.hops
        .iter()
        .find(|h| {
            h.direction == dir
                && matches!(h.kind, HopKind::Tx)
                && h.before.as_ref().is_some_and(|b| b.proto == proto)
        })
        .unwrap_or_else(|| panic!("no {proto} {dir:?} packet in trace:\n{}", t.render(true)))
        .packet
}

/// The hops of one packet.
pub fn hops(t: &Trace, pkt: u32) -> Vec<&Hop> {
    t.hops.iter().filter(|h| h.packet == pkt).collect()
}

/// `(netns, device, action)` of each hop of a packet, for path assertions.
pub fn path(t: &Trace, pkt: u32) -> Vec<(String, String, String)> {
    hops(t, pkt)
        .iter()
        .map(|h| {
            (h.netns.clone(), h.device.clone().unwrap_or_default(), h.kind.action().to_string())
        })
        .collect()
}

/// Asserts that `want` appears in `path` in order (other hops may sit between).
pub fn assert_subsequence(
    path: &[(String, String, String)],
    want: &[(&str, &str, &str)],
    t: &Trace,
) {
    let mut it = path.iter();
    for w in want {
        let found = it.any(|(n, d, a)| n == w.0 && d == w.1 && a == w.2);
        assert!(found, "hop {w:?} missing (or out of order) in path {path:#?}\n{}", t.render(true));
    }
}

/// Seeds, searched in order, until the first trace that `pred` accepts.
pub fn find_seed(
    from: &str,
    to: &str,
    opts: &TraceOptions,
    pred: impl Fn(&Trace) -> bool,
) -> (u64, Cluster, Trace) {
    for seed in 0..200 {
        let mut c = Cluster::seed_with(seed);
        let t = c.trace(from, to, opts).expect("trace runs");
        if pred(&t) {
            return (seed, c, t);
        }
    }
    panic!("no seed in 0..200 gives the wanted outcome for {from} -> {to}");
}

pub fn delivered(t: &Trace) -> bool {
    t.disposition == Disposition::Delivered
}

/// The reference cluster written as Kubernetes YAML plus a PodnetConfig document.
pub fn reference_yaml() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference/cluster.yaml"
    ))
    .expect("the fixture is in the tree")
}

/// `default/api-local`: a LoadBalancer Service (ClusterIP 10.96.0.21, TCP 80 → 8080, nodePort
/// 30090) selecting `app=api` (pod4 on node2), with the given externalTrafficPolicy and
/// loadBalancerSourceRanges; its healthCheckNodePort is allocated on admission.
pub fn add_api_local(c: &mut Cluster, ranges: &[&str], local: bool) {
    use podnet::kube_proxy::{Service, ServicePort, ServiceType, TargetPort};
    let mut s = Service::cluster_ip("default", "api-local", "10.96.0.21".parse().unwrap());
    s.kind = ServiceType::LoadBalancer;
    s.selector = Some([("app".to_string(), "api".to_string())].into());
    s.external_local = local;
    s.lb_source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    s.ports = vec![ServicePort {
        name: "http".into(),
        protocol: podnet::netfilter::Proto::TCP,
        port: 80,
        target_port: TargetPort::Number(8080),
        node_port: 30090,
    }];
    c.add_service(s).unwrap();
}
