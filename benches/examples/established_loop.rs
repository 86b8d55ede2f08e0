//! A tight loop of established packets through a node's hooks, for profilers.
fn main() {
    let mut nf = podnet_benches::node_netfilter(10);
    let pkt = podnet_benches::established_tcp(&mut nf);
    let now = smoltcp::time::Instant::ZERO;
    let t = std::time::Instant::now();
    // PACKETS=N for profilers that run slower (callgrind).
    let n: u32 = std::env::var("PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000_000);
    for _ in 0..n {
        std::hint::black_box(podnet_benches::forward(
            &mut nf,
            &mut podnet_netfilter::Skb::new(pkt.clone()),
            now,
        ));
    }
    println!("{:.0} pkt/s", n as f64 / t.elapsed().as_secs_f64());
}
