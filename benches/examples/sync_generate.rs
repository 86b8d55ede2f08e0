//! Profiling target: a kube-proxy sync (`SERVICES=N`, 10 endpoints each): the rules built
//! and loaded into a ruleset, three times; `TEXT=1` generates the restore payload instead
//! (and `RESTORE=1` with it also restores that text).
fn main() {
    let n: usize = std::env::var("SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let text = std::env::var_os("TEXT").is_some();
    let restore = std::env::var_os("RESTORE").is_some();
    let (svcs, slices) = podnet_benches::services(n, 10);
    let cfg = podnet_benches::proxy_config();
    let iters: usize = std::env::var("ITER").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut best = [std::time::Duration::MAX; 3];
    for _ in 0..iters {
        let t = std::time::Instant::now();
        if !text {
            let payload = podnet::kube_proxy::sync_iptables_rules(&cfg, &svcs, &slices);
            let build = t.elapsed();
            let t = std::time::Instant::now();
            let mut rs = podnet_netfilter::Ruleset::default();
            payload.load_into(&mut rs).expect("kube-proxy's chains load");
            let load = t.elapsed();
            let t = std::time::Instant::now();
            drop(rs);
            let drop = t.elapsed();
            println!("build: {build:?}  load: {load:?}  drop: {drop:?}");
            for (b, d) in best.iter_mut().zip([build, load, drop]) {
                *b = (*b).min(d);
            }
            continue;
        }
        let text = podnet::kube_proxy::sync_iptables(&cfg, &svcs, &slices);
        println!("generate: {:?} ({} bytes)", t.elapsed(), text.len());
        if restore {
            let t = std::time::Instant::now();
            let mut rs = podnet_netfilter::Ruleset::default();
            rs.restore(&text, false).expect("kube-proxy's payload restores");
            println!("restore:  {:?}", t.elapsed());
        }
    }
    if !text {
        println!("min build: {:?}  load: {:?}  drop: {:?}", best[0], best[1], best[2]);
    }
}
