//! Whole flows through the reference cluster, hops not recorded: one UDP datagram and its
//! reply through each seed path (smoltcp at both ends, every hop of the datapath),
//! established packets on each path (one flow of many exchanges), full
//! kube-proxy syncs at 1,000 and 10,000 Services × 10 endpoints, and building a 5,000-node
//! cluster.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use podnet::Cluster;
use podnet::trace::{FlowProto, TraceOptions};

const PATHS: [(&str, &str, &str); 5] = [
    ("same_node", "pod/default/pod1", "10.244.1.3:8080"),
    ("cross_node", "pod/default/pod1", "10.244.2.2:8080"),
    ("pod_to_clusterip", "pod/default/pod2", "10.96.0.10:80"),
    // Masquerade on node1, 1:1 NAT at the internet gateway.
    ("egress_via_gateway", "pod/default/pod2", "203.0.113.10:80"),
    // Gateway, cloud LB (DNAT + SNAT), NodePort DNAT and masquerade on the node; the
    // Service is TCP only, so this one is a whole TCP exchange (handshake, data, close).
    ("tcp_lb_nodeport_pod", "host/internet", "203.0.113.100:80"),
];

fn flows(c: &mut Criterion) {
    let opts =
        TraceOptions { proto: Some(FlowProto::Udp), record_hops: false, ..TraceOptions::default() };
    for (name, from, to) in PATHS {
        let mut cl = Cluster::seed();
        let (label, opts) = match name.strip_prefix("tcp_") {
            Some(rest) => {
                (rest.to_string(), TraceOptions { proto: Some(FlowProto::Tcp), ..opts.clone() })
            }
            None => (format!("udp_{name}"), opts.clone()),
        };
        assert!(cl.trace(from, to, &opts).expect("warm-up").completed, "{name} completes");
        let mut n = 0u32;
        c.bench_function(&format!("flow/{label}"), |b| {
            b.iter(|| {
                // 200 flows per virtual second: TIME_WAIT (10 s) holds about 2,000 ports.
                n += 1;
                if n.is_multiple_of(200) {
                    cl.advance(smoltcp::time::Duration::from_secs(1));
                }
                black_box(cl.trace(from, to, &opts).expect("runs"))
            })
        });
    }
    let traced = TraceOptions { proto: Some(FlowProto::Udp), ..TraceOptions::default() };
    let mut cl = Cluster::seed();
    c.bench_function("flow/udp_pod_to_clusterip_traced", |b| {
        b.iter(|| black_box(cl.trace("pod/default/pod2", "10.96.0.10:80", &traced).expect("runs")))
    });
}

/// Established packets end to end: one flow of 100 exchanges per iteration on each path of
/// `ESTABLISHED_PATHS` (throughput in exchanges; a UDP exchange is two packets).
fn established(c: &mut Criterion) {
    const ROUNDS: u32 = 100;
    let mut g = c.benchmark_group("established");
    g.throughput(criterion::Throughput::Elements(u64::from(ROUNDS)));
    for path in podnet_benches::ESTABLISHED_PATHS {
        let mut cl = Cluster::seed();
        let opts = podnet_benches::established_flow(&mut cl, path, ROUNDS);
        g.bench_function(path.0, |b| {
            b.iter(|| {
                let t = cl.trace(path.1, path.2, &opts).expect("runs");
                cl.advance(smoltcp::time::Duration::from_millis(100));
                black_box(t)
            })
        });
    }
    g.finish();
}

fn sync(c: &mut Criterion) {
    let cfg = podnet_benches::proxy_config();
    let mut g = c.benchmark_group("kube_proxy");
    g.sample_size(10);
    for n in [1_000, 10_000] {
        let (svcs, slices) = podnet_benches::services(n, 10);
        g.bench_function(format!("sync_{n}x10"), |b| {
            b.iter(|| {
                let mut rs = podnet_netfilter::Ruleset::default();
                podnet::kube_proxy::sync_iptables_rules(&cfg, &svcs, &slices)
                    .load_into(&mut rs)
                    .expect("loads");
                black_box(rs)
            })
        });
        g.bench_function(format!("sync_{n}x10_as_text"), |b| {
            b.iter(|| {
                let text = podnet::kube_proxy::sync_iptables(&cfg, &svcs, &slices);
                let mut rs = podnet_netfilter::Ruleset::default();
                rs.restore(&text, false).expect("parses");
                black_box(rs)
            })
        });
    }
    g.finish();
}

/// Building the large cluster from its YAML: 5,000 nodes, 150,000 pods, 10,000 Services
/// (parse, admission, IPAM, every node's namespaces and devices, one kube-proxy sync shared
/// by the nodes). About ten seconds an iteration; `--test` runs it once.
fn cluster_build(c: &mut Criterion) {
    let yaml = podnet_benches::large_cluster_yaml(5_000, 30, 10_000);
    let mut g = c.benchmark_group("cluster_build");
    g.sample_size(10);
    g.bench_function("5000_nodes_150000_pods_10000_services", |b| {
        b.iter(|| black_box(Cluster::from_yaml(&yaml).expect("loads")))
    });
    g.finish();
}

criterion_group!(benches, flows, established, sync, cluster_build);
criterion_main!(benches);
