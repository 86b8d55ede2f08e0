//! Loads a large generated cluster and reports the time of each phase and the peak memory
//! (run under `/usr/bin/time -v` for the latter): `cargo run --release -p podnet-benches
//! --example large_cluster -- NODES PODS_PER_NODE SERVICES`.
//!
//! The parse-only figure loads the same text with the pods unscheduled (no `nodeName`), so
//! every document is read and checked but no pod is built.
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|x| x.parse().ok()).collect();
    let nodes = a.first().copied().unwrap_or(5000);
    let per = a.get(1).copied().unwrap_or(30);
    let svcs = a.get(2).copied().unwrap_or(10_000);
    let t = std::time::Instant::now();
    let y = podnet_benches::large_cluster_yaml(nodes, per, svcs);
    println!("generate YAML: {:?} ({} MiB)", t.elapsed(), y.len() >> 20);
    let unscheduled = y.replace("spec: {nodeName: ", "spec: {schedulerName: ");
    let t = std::time::Instant::now();
    let (_, report) = podnet::Cluster::from_yaml(&unscheduled).expect("loads");
    println!("parse (pods unscheduled): {:?}; {} skipped", t.elapsed(), report.skipped.len());
    let t = std::time::Instant::now();
    let (c, report) = podnet::Cluster::from_yaml(&y).expect("loads");
    println!(
        "load (parse + build every node): {:?}; {} objects, {} skipped",
        t.elapsed(),
        report.loaded.len(),
        report.skipped.len()
    );
    println!("{} nodes, {} pods", c.nodes().len(), c.pods().len());
}
