//! The netfilter crate alone, tracing off: an established packet, a new connection through
//! kube-proxy's rules at 10 / 1,000 / 10,000 Services, conntrack insert and lookup.

use std::hint::black_box;
use std::time::{Duration, Instant as WallInstant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use podnet_benches::{client, forward, node_netfilter, syn, vip};
use podnet_netfilter::{Conntrack, Skb, packet};
use smoltcp::time::Instant;

fn established(c: &mut Criterion) {
    let mut nf = node_netfilter(10);
    let (src, sport) = client(1);
    let pkt = syn(src, sport, vip(3), 80);
    let mut first = Skb::new(pkt.clone());
    assert!(forward(&mut nf, &mut first, Instant::ZERO));
    c.bench_function("netfilter/established_packet", |b| {
        b.iter(|| {
            let mut skb = Skb::new(pkt.clone());
            black_box(forward(&mut nf, &mut skb, Instant::ZERO))
        })
    });
}

fn new_connections(c: &mut Criterion) {
    let mut g = c.benchmark_group("netfilter/new_conn");
    for n in [10usize, 1_000, 10_000] {
        let mut nf = node_netfilter(n);
        // A pool of distinct SYNs; conntrack is emptied (untimed) when the pool wraps.
        let pool: Vec<Vec<u8>> = (0..65_536u32)
            .map(|k| {
                let (src, sport) = client(k);
                syn(src, sport, vip(k as usize % n), 80)
            })
            .collect();
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if k == pool.len() {
                        k = 0;
                        nf.conntrack = Conntrack::new(usize::MAX);
                    }
                    let mut skb = Skb::new(pool[k].clone());
                    k += 1;
                    let t = WallInstant::now();
                    black_box(forward(&mut nf, &mut skb, Instant::ZERO));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn conntrack(c: &mut Criterion) {
    let infos: Vec<_> = (0..100_000u32)
        .map(|k| {
            let (src, sport) = client(k);
            packet::parse(&syn(src, sport, vip(1), 80)).expect("valid")
        })
        .collect();
    c.bench_function("conntrack/insert", |b| {
        b.iter_custom(|iters| {
            let mut ct = Conntrack::new(usize::MAX);
            let t = WallInstant::now();
            for i in 0..iters as usize {
                if i % infos.len() == 0 && i > 0 {
                    ct = Conntrack::new(usize::MAX);
                }
                if let podnet_netfilter::CtRef::Unconfirmed(e) =
                    ct.lookup(&infos[i % infos.len()], Instant::ZERO)
                {
                    black_box(ct.confirm(*e, Instant::ZERO).ok());
                }
            }
            t.elapsed()
        })
    });
    let mut ct = Conntrack::new(usize::MAX);
    for i in &infos {
        if let podnet_netfilter::CtRef::Unconfirmed(e) = ct.lookup(i, Instant::ZERO) {
            ct.confirm(*e, Instant::ZERO).expect("distinct");
        }
    }
    let mut i = 0;
    c.bench_function("conntrack/lookup_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % infos.len();
            black_box(ct.lookup(&infos[i], Instant::ZERO))
        })
    });
}

criterion_group!(benches, established, new_connections, conntrack);
criterion_main!(benches);
