//! Profiling target: kube-proxy payload generation only (`SERVICES=N`, 10 endpoints each;
//! `RESTORE=1` also restores it into a ruleset).
fn main() {
    let n: usize = std::env::var("SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let restore = std::env::var_os("RESTORE").is_some();
    let (svcs, slices) = podnet_benches::services(n, 10);
    let cfg = podnet_benches::proxy_config();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let text = podnet::kube_proxy::sync_iptables(&cfg, &svcs, &slices);
        println!("generate: {:?} ({} bytes)", t.elapsed(), text.len());
        if restore {
            let t = std::time::Instant::now();
            let mut rs = podnet_netfilter::Ruleset::default();
            rs.restore(&text, false).expect("kube-proxy's payload restores");
            println!("restore:  {:?}", t.elapsed());
        }
    }
}
