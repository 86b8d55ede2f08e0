//! A loop of whole flows (hops off), for profilers: `FLOWS=N FROM=.. TO=.. PROTO=udp|tcp`
//! (default: UDP pod2 → the web ClusterIP). Prints the rate of each tenth of the run, so a
//! rate that falls as state accumulates shows.
fn main() {
    use podnet::trace::{FlowProto, TraceOptions};
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let n: u32 = env("FLOWS", "100000").parse().expect("FLOWS is a number");
    let (from, to) = (env("FROM", "pod/default/pod2"), env("TO", "10.96.0.10:80"));
    let proto = FlowProto::parse(&env("PROTO", "udp")).expect("PROTO is tcp, udp, icmp or http");
    let opts = TraceOptions { proto: Some(proto), record_hops: false, ..TraceOptions::default() };
    let mut c = podnet::Cluster::seed();
    assert!(c.trace(&from, &to, &opts).expect("runs").completed);
    let start = std::time::Instant::now();
    let tenth = (n / 10).max(1);
    let mut t = std::time::Instant::now();
    for i in 1..=n {
        std::hint::black_box(c.trace(&from, &to, &opts).expect("runs"));
        if i % tenth == 0 {
            println!("flows {:>7}: {:.0} flow/s", i, f64::from(tenth) / t.elapsed().as_secs_f64());
            t = std::time::Instant::now();
        }
    }
    println!("all: {:.0} flow/s", f64::from(n) / start.elapsed().as_secs_f64());
}
