//! A full nftables-mode sync at 10,000 Services × 10 endpoints, in its two halves: writing
//! kube-proxy's transaction, and `nft -f` of it into an empty ruleset (for a profiler).
//! `cargo run --release -p podnet-benches --example nft_sync [SERVICES] [ENDPOINTS]`

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let n = args.next().unwrap_or(10_000);
    let e = args.next().unwrap_or(10);
    let (svcs, slices) = podnet_benches::services(n, e);
    let t = Instant::now();
    let text = podnet_benches::nftables_payload(&svcs, &slices);
    let written = t.elapsed();
    let t = Instant::now();
    let mut rs = podnet_netfilter::nft::Ruleset::default();
    rs.apply(&text).expect("applies");
    let applied = t.elapsed();
    println!(
        "{n}x{e}: {} lines written in {written:?}, applied in {applied:?}",
        text.lines().count()
    );
}
