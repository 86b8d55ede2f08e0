//! A node's first packet when it shares its rules with other nodes (`SERVICES=N`, 2
//! endpoints each): the packet counts into the node's own counters, so nothing is copied.
//! Also times a copy of the whole ruleset, what a first packet would cost if it counted
//! into the rules themselves.
fn main() {
    let n: usize = std::env::var("SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let shared = podnet_benches::node_netfilter(n);
    let (src, sport) = podnet_benches::client(1);
    let pkt = podnet_benches::syn(src, sport, podnet_benches::vip(3), 80);
    let now = smoltcp::time::Instant::ZERO;
    let mut nodes: Vec<_> = (0..5).map(|_| shared.clone()).collect();
    let t = std::time::Instant::now();
    for nf in &mut nodes {
        assert!(podnet_benches::forward(nf, &mut podnet_netfilter::Skb::new(pkt.clone()), now));
    }
    let first = t.elapsed() / 5;
    assert!(nodes.iter().all(|nf| std::sync::Arc::ptr_eq(nf.tables(), shared.tables())));
    let t = std::time::Instant::now();
    let copy = (**shared.tables()).clone();
    let copy_time = t.elapsed();
    drop(copy);
    println!(
        "{n} Services: first packet on a sharing node {first:?}; a copy of the rules {copy_time:?}"
    );
}
