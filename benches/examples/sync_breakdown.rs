//! Where a large kube-proxy sync spends its time.
fn main() {
    let (svcs, slices) = podnet_benches::services(10_000, 10);
    let cfg = podnet_benches::proxy_config();
    let t = std::time::Instant::now();
    let text = podnet::kube_proxy::sync_iptables(&cfg, &svcs, &slices);
    println!("generate: {:?} ({} lines)", t.elapsed(), text.lines().count());
    let t = std::time::Instant::now();
    let mut rs = podnet_netfilter::Ruleset::default();
    rs.restore(&text, false).unwrap();
    println!("restore:  {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let copy = rs.clone();
    println!("clone:    {:?}", t.elapsed());
    drop(copy);
    let t = std::time::Instant::now();
    let mut n = 0;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("-A ") {
            let args = rest.split_once(' ').map(|x| x.1).unwrap_or("");
            n += podnet_netfilter::Rule::parse(args).map(|r| r.matches.len()).unwrap_or(0);
        }
    }
    println!("parse rules only: {:?} ({n})", t.elapsed());
}
