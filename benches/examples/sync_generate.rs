//! Profiling target: kube-proxy payload generation only.
fn main() {
    let (svcs, slices) = podnet_benches::services(10_000, 10);
    let cfg = podnet_benches::proxy_config();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let text = podnet::kube_proxy::sync_iptables(&cfg, &svcs, &slices);
        println!("generate: {:?} ({} bytes)", t.elapsed(), text.len());
    }
}
