//! The seed article's scenarios, traced on the reference cluster ([`Cluster::seed`]).
//!
//! Each scenario names the article's figures it reproduces. `podnet demo` runs them all, in
//! order, on one cluster, so caches and conntrack carry over as they would on real nodes.

use serde::Serialize;

use crate::cluster::Cluster;
use crate::trace::{FlowProto, Trace, TraceOptions};

/// One scenario of the seed.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Stable id, also the golden file name (`fig04_06_same_node`).
    pub id: &'static str,
    /// The figures it reproduces (`"6"`, `"8-9"`).
    pub figures: &'static str,
    /// Title.
    pub title: &'static str,
    /// What the article says happens, in one line.
    pub story: &'static str,
    /// Source.
    pub from: &'static str,
    /// Destination.
    pub to: &'static str,
    /// Protocol.
    pub proto: FlowProto,
    /// Run with kube-proxy in IPVS mode (round robin) instead of iptables mode.
    pub ipvs: bool,
}

/// Every scenario available, in the article's order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            id: "fig01_03_container",
            figures: "1-3",
            title: "container to container in one pod",
            story: "containers of a pod share one network namespace: the sidecar reaches the web container over localhost",
            from: "pod/default/pod1",
            to: "127.0.0.1:8080",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig04_06_same_node",
            figures: "4-6",
            title: "pod to pod on the same node",
            story: "pod1 eth0 -> veth0 -> cbr0 (ARP, FDB learning) -> veth1 -> pod2 eth0",
            from: "pod/default/pod1",
            to: "pod/default/pod2:8080",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig07_cross_node",
            figures: "7",
            title: "pod to pod across nodes",
            story: "pod1 -> cbr0 -> node1 routes via eth0 to the VPC router -> node2 eth0 -> cbr0 -> pod3",
            from: "pod/default/pod1",
            to: "pod/default/pod3:8080",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig08_09_service_tcp",
            figures: "8-9",
            title: "pod to Service (iptables mode)",
            story: "pod2 -> 10.96.0.10:80 is DNATed by kube-proxy's rules in nat PREROUTING to a random endpoint; the reply is un-DNATed by conntrack",
            from: "pod/default/pod2",
            to: "svc/default/web:http",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig08_09_service_udp",
            figures: "8-9",
            title: "pod to Service over UDP",
            story: "the same Service port over UDP: one datagram out, its echo back from the VIP",
            from: "pod/default/pod2",
            to: "svc/default/web:udp",
            proto: FlowProto::Udp,
            ipvs: false,
        },
        Scenario {
            id: "fig08_09_service_ipvs",
            figures: "8-9",
            title: "pod to Service (IPVS mode)",
            story: "the VIP sits on kube-ipvs0, so the packet is local; IPVS picks a real server round robin in LOCAL_IN and conntrack keeps the choice",
            from: "pod/default/pod2",
            to: "svc/default/web:http",
            proto: FlowProto::Tcp,
            ipvs: true,
        },
        Scenario {
            id: "fig10_egress",
            figures: "10",
            title: "pod to the internet (egress)",
            story: "node1 masquerades pod2's address to its own (192.168.0.1), the internet gateway maps that to 203.0.113.1; the reply is restored hop by hop",
            from: "pod/default/pod2",
            to: "203.0.113.10:80",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig11_load_balancer",
            figures: "11",
            title: "internet to a LoadBalancer Service",
            story: "the cloud load balancer picks a node for the flow and sends it to the node port; kube-proxy there DNATs to pod4, wherever it runs",
            from: "host/internet",
            to: "203.0.113.100:80",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig12_node_port",
            figures: "12",
            title: "internet to a NodePort",
            story: "any node's IP and nodePort reach the Service: node1 DNATs to pod4 on node2 and masquerades to its own address",
            from: "host/internet",
            to: "203.0.113.1:30080",
            proto: FlowProto::Tcp,
            ipvs: false,
        },
        Scenario {
            id: "fig13_ingress",
            figures: "12-13",
            title: "internet to an Ingress on an ALB",
            story: "the ALB reads the HTTP path, picks the /api rule's target group and a node, and opens its own connection to that node's nodePort",
            from: "host/internet",
            to: "http://203.0.113.200/api/orders",
            proto: FlowProto::Http,
            ipvs: false,
        },
    ]
}

/// A scenario and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct DemoResult {
    /// The scenario.
    pub scenario: Scenario,
    /// Its trace.
    pub trace: Trace,
}

/// Runs every scenario on the reference cluster built with `seed`.
pub fn run(seed: u64) -> Result<Vec<DemoResult>, crate::trace::TraceError> {
    run_on(seed, Cluster::seed_with)
}

/// Every scenario on the AWS VPC CNI variant of the reference cluster
/// ([`Cluster::seed_aws`]).
pub fn run_aws(seed: u64) -> Result<Vec<DemoResult>, crate::trace::TraceError> {
    run_on(seed, Cluster::seed_aws_with)
}

fn run_on(
    seed: u64,
    make: fn(u64) -> Cluster,
) -> Result<Vec<DemoResult>, crate::trace::TraceError> {
    let mut c = make(seed);
    let mut ipvs = make(seed);
    ipvs.set_proxy_mode(crate::kube_proxy::ProxyMode::Ipvs(podnet_netfilter::ipvs::Scheduler::Rr));
    let mut out = Vec::new();
    for s in scenarios() {
        let opts = TraceOptions { proto: Some(s.proto), ..TraceOptions::default() };
        let cluster = if s.ipvs { &mut ipvs } else { &mut c };
        let trace = cluster.trace(s.from, s.to, &opts)?;
        out.push(DemoResult { scenario: s, trace });
    }
    Ok(out)
}

/// Traces one scenario on a fresh reference cluster: the trace the golden files under
/// `core/tests/golden/` hold, and that the Python and browser builds must reproduce byte
/// for byte.
pub fn golden_trace(id: &str, seed: u64) -> Result<Trace, crate::trace::TraceError> {
    let s = scenarios().into_iter().find(|s| s.id == id).ok_or_else(|| {
        crate::trace::TraceError::BadEndpoint {
            what: "scenario",
            text: id.into(),
            hint: format!(
                "known scenarios: {}",
                scenarios().iter().map(|s| s.id).collect::<Vec<_>>().join(", ")
            ),
        }
    })?;
    let mut c = Cluster::seed_with(seed);
    if s.ipvs {
        c.set_proxy_mode(crate::kube_proxy::ProxyMode::Ipvs(podnet_netfilter::ipvs::Scheduler::Rr));
    }
    c.trace(s.from, s.to, &TraceOptions { proto: Some(s.proto), ..TraceOptions::default() })
}

/// What the article says about port conflicts, shown by the demo: a second container of
/// pod1 binding the web container's port fails.
pub fn port_conflict(seed: u64) -> String {
    let mut c = Cluster::seed_with(seed);
    match c.bind("pod/default/pod1", "sidecar", podnet_netfilter::Proto::TCP, 8080) {
        Ok(()) => "unexpected: the bind succeeded".into(),
        Err(e) => e.to_string(),
    }
}
