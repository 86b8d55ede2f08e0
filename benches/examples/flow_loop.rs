//! A loop of whole UDP flows pod2 → ClusterIP (hops off), for profilers: `FLOWS=N`.
fn main() {
    use podnet::trace::{FlowProto, TraceOptions};
    let n: u32 = std::env::var("FLOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let opts =
        TraceOptions { proto: FlowProto::Udp, record_hops: false, ..TraceOptions::default() };
    let mut c = podnet::Cluster::seed();
    assert!(c.trace("pod/default/pod2", "10.96.0.10:80", &opts).expect("runs").completed);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(c.trace("pod/default/pod2", "10.96.0.10:80", &opts).expect("runs"));
    }
    println!("{:.0} flow/s", f64::from(n) / t.elapsed().as_secs_f64());
}
