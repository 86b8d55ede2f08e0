//! The netfilter crate alone, tracing off: an established packet, a new connection through
//! kube-proxy's rules at 10 / 1,000 / 10,000 / 30,000 Services in iptables and IPVS modes
//! (and in iptables mode with PREROUTING taking receive batches as lists),
//! conntrack insert, lookup and expiry (100k and 1M entries), and a new connection refused by
//! a full table.

use std::hint::black_box;
use std::time::{Duration, Instant as WallInstant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use podnet_benches::{
    client, established_tcp, forward, forward_ipvs, node_netfilter, node_netfilter_ipvs, syn,
    syn_pool, vip,
};
use podnet_netfilter::{Conntrack, Skb, packet};
use smoltcp::time::Instant;

fn established(c: &mut Criterion) {
    let mut nf = node_netfilter(10);
    let pkt = established_tcp(&mut nf);
    c.bench_function("netfilter/established_packet", |b| {
        b.iter(|| {
            let mut skb = Skb::new(pkt.clone());
            black_box(forward(&mut nf, &mut skb, Instant::ZERO))
        })
    });
}

/// The next `n` SYNs of `pool` from `*k` (a whole number of them fit in the pool). When the
/// pool wraps, conntrack is emptied (untimed), so that every SYN stays a new connection.
fn next_syns<'p>(
    pool: &'p [Vec<u8>],
    k: &mut usize,
    nf: &mut podnet_netfilter::Netfilter,
    n: usize,
) -> &'p [Vec<u8>] {
    if *k + n > pool.len() {
        *k = 0;
        nf.conntrack = Conntrack::new(usize::MAX);
    }
    *k += n;
    &pool[*k - n..*k]
}

fn new_connections(c: &mut Criterion) {
    new_connections_in(c, "netfilter/new_conn", node_netfilter, forward);
    new_connections_in(c, "netfilter/new_conn_ipvs", node_netfilter_ipvs, forward_ipvs);
}

fn new_connections_in(
    c: &mut Criterion,
    group: &str,
    build: fn(usize) -> podnet_netfilter::Netfilter,
    path: fn(&mut podnet_netfilter::Netfilter, &mut Skb, Instant) -> bool,
) {
    let mut g = c.benchmark_group(group);
    for n in [10usize, 1_000, 10_000, 30_000] {
        let mut nf = build(n);
        {
            // The path works before it is timed.
            let (src, sport) = client(u32::MAX >> 2);
            assert!(path(&mut nf, &mut Skb::new(syn(src, sport, vip(0), 80)), Instant::ZERO));
        }
        // A pool of distinct SYNs; conntrack is emptied (untimed) when the pool wraps.
        let pool = syn_pool(n, 65_536);
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut skb = Skb::new(next_syns(&pool, &mut k, &mut nf, 1)[0].clone());
                    let t = WallInstant::now();
                    black_box(path(&mut nf, &mut skb, Instant::ZERO));
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

/// conntrack at a million entries: lookup of a live one, a miss-then-insert, and expiring
/// them all at once (virtual time past every timeout).
fn conntrack_1m(c: &mut Criterion) {
    const N: u32 = 1_000_000;
    let fill = || {
        // As an operator raising nf_conntrack_max to a million would raise the hash size too.
        let mut ct = Conntrack::with_buckets(usize::MAX, 1 << 20);
        for k in 0..N {
            let (src, sport) = client(k);
            let info = packet::parse(&syn(src, sport, vip(1), 80)).expect("valid");
            if let podnet_netfilter::CtRef::Unconfirmed(e) = ct.lookup(&info, Instant::ZERO) {
                ct.confirm(*e, Instant::ZERO).expect("distinct");
            }
        }
        ct
    };
    let mut ct = fill();
    let probes: Vec<_> = (0..4096u32)
        .map(|k| {
            let (src, sport) = client(k.wrapping_mul(244_141) % N);
            packet::parse(&syn(src, sport, vip(1), 80)).expect("valid")
        })
        .collect();
    let mut g = c.benchmark_group("conntrack_1m");
    g.sample_size(10);
    let mut i = 0;
    g.bench_function("lookup", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            black_box(ct.lookup(&probes[i], Instant::ZERO))
        })
    });
    let fresh: Vec<_> = (0..65_536u32)
        .map(|k| {
            let (src, sport) = client(k);
            packet::parse(&syn(src, sport, vip(2), 80)).expect("valid")
        })
        .collect();
    let mut k = 0;
    g.bench_function("insert", |b| {
        b.iter(|| {
            k += 1;
            if k == fresh.len() {
                k = 0;
                let _ = ct.delete_where(|e| e.orig.dst == vip(2));
            }
            if let podnet_netfilter::CtRef::Unconfirmed(e) = ct.lookup(&fresh[k], Instant::ZERO) {
                black_box(ct.confirm(*e, Instant::ZERO).ok());
            }
        })
    });
    // nf_conntrack_max reached with every entry ASSURED: a new connection's packet looks for
    // something to early-drop, finds nothing and is refused.
    let mut full = Conntrack::with_buckets(N as usize, 1 << 20);
    full.timeouts = ct.timeouts.clone();
    for k in 0..N {
        let (src, sport) = client(k);
        let info = packet::parse(&syn(src, sport, vip(1), 80)).expect("valid");
        if let podnet_netfilter::CtRef::Unconfirmed(mut e) = full.lookup(&info, Instant::ZERO) {
            e.status |= podnet_netfilter::conntrack::status::ASSURED;
            full.confirm(*e, Instant::ZERO).expect("room until the limit");
        }
    }
    g.bench_function("refused_when_full", |b| {
        b.iter(|| {
            k = (k + 1) % fresh.len();
            if let podnet_netfilter::CtRef::Unconfirmed(e) = full.lookup(&fresh[k], Instant::ZERO) {
                black_box(full.confirm(*e, Instant::ZERO).expect_err("the table is full"));
            }
        })
    });
    drop(full);
    g.bench_function("expire_all", |b| {
        b.iter_batched(
            fill,
            |mut ct| black_box(ct.expire(Instant::from_secs(1_000_000))),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, established, new_connections, conntrack, conntrack_1m);
criterion_main!(benches);
