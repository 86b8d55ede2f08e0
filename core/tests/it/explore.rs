//! Enumerating every outcome of a flow, and reachability matrices.

use std::collections::BTreeMap;

use podnet::kube_proxy::ProxyMode;
use podnet::netfilter::ipvs::Scheduler;
use podnet::trace::TraceOptions;
use podnet::{Cluster, Disposition};

fn landing(ts: &[podnet::Trace]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for t in ts {
        *m.entry(t.delivered_to.clone().unwrap_or_default()).or_insert(0.0) +=
            t.probability.unwrap();
    }
    m
}

#[test]
fn service_outcomes_are_each_endpoint_with_its_probability() {
    let c = Cluster::seed();
    let before = c.conntrack("node1").unwrap();
    let all =
        c.trace_all("pod/default/pod2", "svc/default/web:http", &TraceOptions::default()).unwrap();
    assert_eq!(all.len(), 2);
    let m = landing(&all);
    assert_eq!(m.len(), 2);
    assert!(
        (m["pod/default/pod1"] - 0.5).abs() < 1e-9 && (m["pod/default/pod3"] - 0.5).abs() < 1e-9,
        "{m:?}"
    );
    assert!(all.iter().all(|t| t.completed && t.disposition == Disposition::Delivered));
    assert_eq!(c.conntrack("node1").unwrap(), before, "dry runs change nothing");
}

#[test]
fn load_balancer_outcomes_cover_every_node() {
    let c = Cluster::seed();
    let all = c.trace_all("host/internet", "203.0.113.100:80", &TraceOptions::default()).unwrap();
    assert_eq!(all.len(), 3, "one outcome per node the LB can pick");
    let total: f64 = all.iter().map(|t| t.probability.unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    for t in &all {
        assert!((t.probability.unwrap() - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    }
    let via: Vec<String> = all
        .iter()
        .map(|t| t.server_saw.clone().unwrap().split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(via.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "{via:?}");
}

#[test]
fn ipvs_outcomes_are_every_real_server() {
    let mut c = Cluster::seed();
    c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
    let m = landing(
        &c.trace_all("pod/default/pod2", "svc/default/web:http", &TraceOptions::default()).unwrap(),
    );
    assert_eq!(m.keys().cloned().collect::<Vec<_>>(), vec!["pod/default/pod1", "pod/default/pod3"]);
}

#[test]
fn reachability_matrix() {
    let c = Cluster::seed();
    let m = c
        .reachability(
            &["pod/default/pod1", "pod/default/pod4"],
            &["svc/default/web:http", "203.0.113.10:80", "10.244.3.99:80"],
            &TraceOptions::default(),
        )
        .unwrap();
    assert_eq!(m.len(), 2);
    for row in &m {
        assert!(row[0].completed && row[1].completed);
        assert_eq!(row[2].disposition, Disposition::Dropped);
    }
}
