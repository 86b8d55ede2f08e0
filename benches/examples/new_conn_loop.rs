//! A tight loop of new connections through kube-proxy's rules at `SERVICES` Services
//! (iptables mode), for profilers: `SERVICES=10000 CONNS=65536 ROUNDS=1`. Under callgrind,
//! collect only the loop with `--toggle-collect='*new_conn_loop::run*'`.
use podnet_netfilter::{Netfilter, Skb, conntrack::Conntrack};

#[inline(never)]
fn run(nf: &mut Netfilter, pool: &[Vec<u8>]) -> usize {
    let now = smoltcp::time::Instant::ZERO;
    let mut accepted = 0;
    for p in pool {
        accepted += podnet_benches::forward(nf, &mut Skb::new(p.clone()), now) as usize;
    }
    accepted
}

#[inline(never)]
fn warm(nf: &mut Netfilter, pool: &[Vec<u8>]) {
    let now = smoltcp::time::Instant::ZERO;
    for p in pool {
        std::hint::black_box(podnet_benches::forward(nf, &mut Skb::new(p.clone()), now));
    }
}

fn main() {
    let var = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = var("SERVICES", 10);
    let conns = var("CONNS", 65_536);
    let mut nf = podnet_benches::node_netfilter(n);
    let pool = podnet_benches::syn_pool(n, conns as u32);
    // One pass first, as the figure's first seconds: the counters are fitted to the tables
    // and the rules have been read once before the measured pass.
    warm(&mut nf, &pool);
    // ROUNDS passes, each from an empty conntrack table (as the figure's passes), so that a
    // sampling profiler sees the loop rather than the setup.
    let mut rates: Vec<f64> = (0..var("ROUNDS", 1).max(1))
        .map(|_| {
            nf.conntrack = Conntrack::new(usize::MAX);
            let t = std::time::Instant::now();
            let accepted = run(&mut nf, &pool);
            assert_eq!(accepted, conns);
            conns as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!("{:.0} conn/s (median of {})", rates[rates.len() / 2], rates.len());
}
