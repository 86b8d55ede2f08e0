//! Profiling target: restoring a kube-proxy payload (`SERVICES=N`, 10 endpoints each) into
//! a fresh ruleset, three times.
fn main() {
    let n: usize = std::env::var("SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let (svcs, slices) = podnet_benches::services(n, 10);
    let text = podnet::kube_proxy::sync_iptables(&podnet_benches::proxy_config(), &svcs, &slices);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut rs = podnet_netfilter::Ruleset::default();
        rs.restore(&text, false).expect("kube-proxy's payload restores");
        println!("restore: {:?}", t.elapsed());
    }
}
