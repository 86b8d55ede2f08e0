//! Quick figures: each measurement runs for a couple of seconds (`--seconds`), split into
//! batches; the median, min and max batch rate are printed, one JSON object per line with
//! `--json`. Peak heap memory comes from a counting allocator.
//!
//! `cargo run --release -p podnet-benches --bin figures -- --json` (`--only PREFIX` for the
//! figures whose names start with PREFIX, `--quick` for small sizes and short runs)

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use podnet::Cluster;
use podnet::trace::{FlowProto, TraceOptions};
use podnet_benches::{client, forward, node_netfilter, syn, vip};
use podnet_netfilter::{Conntrack, CtRef, Skb, packet};

struct Counting;
static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// Bytes a thread may allocate or free before it adds them to [`CURRENT`]: threads that
/// allocate at once (a sync writes with two) do not contend on one counter per allocation.
/// The peak is exact to within this much per thread.
const SLACK: isize = 64 * 1024;

thread_local! {
    static PENDING: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn count(delta: isize) {
    let flushed = PENDING.try_with(|p| {
        let v = p.get() + delta;
        if v.abs() < SLACK {
            p.set(v);
            None
        } else {
            p.set(0);
            Some(v)
        }
    });
    // A thread being torn down has no thread-locals left: count directly.
    if let Some(v) = flushed.unwrap_or(Some(delta)) {
        let now = CURRENT.fetch_add(v, Ordering::Relaxed) + v;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

// SAFETY: delegates every call to the system allocator unchanged; it only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // The system's realloc (grows in place when it can), not alloc + copy + free.
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            count(new_size as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

fn reset_peak() {
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
}

struct Figure {
    name: String,
    unit: &'static str,
    median: f64,
    min: f64,
    max: f64,
    iterations: u64,
    peak_bytes: usize,
}

/// Runs `op` (which does `batch` units of work per call) until `secs` elapse; rates per batch.
fn rate(name: &str, unit: &'static str, secs: f64, batch: u64, mut op: impl FnMut()) -> Figure {
    reset_peak();
    let mut rates = Vec::new();
    let start = Instant::now();
    let mut iterations = 0;
    while start.elapsed().as_secs_f64() < secs || rates.len() < 3 {
        let t = Instant::now();
        op();
        let dt = t.elapsed().as_secs_f64();
        rates.push(batch as f64 / dt);
        iterations += batch;
    }
    summarize(name, unit, rates, iterations)
}

/// Runs `a` and `b` (the same work on two subjects) in turn until `secs` elapse; the
/// figure is the ratio of `b`'s time to `a`'s, pair by pair. A ratio of two figures taken
/// seconds apart moves with this machine's phases; one taken pair by pair barely does.
fn paired_ratio(name: &str, secs: f64, mut a: impl FnMut(), mut b: impl FnMut()) -> Figure {
    reset_peak();
    let mut ratios = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs || ratios.len() < 3 {
        let t = Instant::now();
        a();
        let ta = t.elapsed().as_secs_f64();
        let t = Instant::now();
        b();
        ratios.push(t.elapsed().as_secs_f64() / ta);
    }
    let n = ratios.len() as u64;
    summarize(name, "ratio", ratios, n)
}

type Path = fn(&mut podnet_netfilter::Netfilter, &mut Skb, smoltcp::time::Instant) -> bool;
type Build = fn(usize) -> podnet_netfilter::Netfilter;

/// SYNs in a pool of new connections, each from its own client port.
const POOL: usize = 65_536;
/// New connections a batch.
const BATCH: usize = 8_192;

/// New connections to `n` Services (one SYN each, spread over the Services) through a node's
/// netfilter, a batch at a time; conntrack starts empty each time the pool is used up, so
/// every SYN is a new connection and the table never outgrows the pool.
struct NewConns {
    nf: podnet_netfilter::Netfilter,
    path: Path,
    pool: Vec<Vec<u8>>,
    next: usize,
}

impl NewConns {
    fn new(build: Build, path: Path, n: usize) -> NewConns {
        let pool = podnet_benches::syn_pool(n, POOL as u32);
        NewConns { nf: build(n), path, pool, next: 0 }
    }

    /// The pool's first SYN, then conntrack emptied again: whether it passed.
    fn first(&mut self) -> bool {
        let ok = (self.path)(
            &mut self.nf,
            &mut Skb::new(self.pool[0].clone()),
            smoltcp::time::Instant::ZERO,
        );
        self.nf.conntrack = Conntrack::new(usize::MAX);
        ok
    }

    fn batch(&mut self) {
        if self.next + BATCH > self.pool.len() {
            self.next = 0;
            self.nf.conntrack = Conntrack::new(usize::MAX);
        }
        for p in &self.pool[self.next..self.next + BATCH] {
            black_box((self.path)(
                &mut self.nf,
                &mut Skb::new(p.clone()),
                smoltcp::time::Instant::ZERO,
            ));
        }
        self.next += BATCH;
    }
}

fn summarize(name: &str, unit: &'static str, mut v: Vec<f64>, iterations: u64) -> Figure {
    v.sort_by(|a, b| a.total_cmp(b));
    Figure {
        name: name.into(),
        unit,
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
        iterations,
        peak_bytes: PEAK.load(Ordering::Relaxed).max(0) as usize,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    const USAGE: &str = "usage: figures [--json] [--quick] [--seconds S] [--only PREFIX] [--trace-many]\n\
        \n  --json         one JSON object per figure\n  --quick        small sizes and short runs\n\
        \x20 --seconds S    measure each figure for S seconds (default 2, 0.2 with --quick)\n\
        \x20 --only PREFIX  just the figures whose names start with PREFIX\n\
        \x20 --trace-many   stop after the trace_many_native figure";
    let (mut json, mut quick, mut secs, mut only) = (false, false, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--quick" => quick = true,
            "--trace-many" => {}
            "--seconds" => {
                let v = it.next().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0);
                secs = Some(v.unwrap_or_else(|| {
                    eprintln!("figures: --seconds takes a positive number\n{USAGE}");
                    std::process::exit(2)
                }));
            }
            "--only" => {
                only = Some(it.next().cloned().unwrap_or_else(|| {
                    eprintln!("figures: --only takes a figure name prefix\n{USAGE}");
                    std::process::exit(2)
                }));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("figures: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let secs: f64 = secs.unwrap_or(if quick { 0.2 } else { 2.0 });
    // `--only PREFIX`: just the figures whose names start with PREFIX.
    let want = |section: &str| {
        only.as_deref().is_none_or(|o| section.starts_with(o) || o.starts_with(section))
    };
    let sizes: &[usize] = if quick { &[10, 100] } else { &[10, 1_000, 10_000, 30_000] };
    let mut out: Vec<Figure> = Vec::new();
    let mut emit = |f: Figure| {
        use std::io::Write;
        // Rates in whole units; ratios to two decimals.
        let digits = if f.unit == "ratio" { 2 } else { 0 };
        let round = |x: f64| {
            let k = 10f64.powi(digits);
            (x * k).round() / k
        };
        let line = if json {
            serde_json::json!({"name": f.name, "unit": f.unit, "median": round(f.median), "min": round(f.min), "max": round(f.max), "iterations": f.iterations, "peak_bytes": f.peak_bytes}).to_string()
        } else {
            let d = digits as usize;
            format!(
                "{:<44} {:>14.d$} {:<8} (min {:.d$}, max {:.d$}, {} iterations, peak heap {:.1} MiB)",
                f.name,
                f.median,
                f.unit,
                f.min,
                f.max,
                f.iterations,
                f.peak_bytes as f64 / 1048576.0
            )
        };
        // A closed pipe (`| head`) ends the run quietly.
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            std::process::exit(0);
        }
        out.push(f);
    };

    if want("trace_many") {
        // The native side of the Python `trace_many` bench (ffi-python/bench/trace_many.py):
        // the same flows and summaries, no interpreter.
        let mut c = Cluster::seed();
        let flows = podnet_benches::TRACE_MANY_FLOWS;
        emit(rate("trace_many_native", "flow/s", secs, 50 * flows.len() as u64, || {
            for _ in 0..50 {
                for &(from, to, proto) in flows {
                    black_box(podnet_benches::summary(&mut c, from, to, proto));
                }
            }
            // One virtual second per batch (as the Python side does): finished TCP connections
            // leave TIME_WAIT instead of using up every ephemeral port.
            c.advance(smoltcp::time::Duration::from_secs(1));
        }));
        if args.iter().any(|a| a == "--trace-many") {
            return;
        }
    }

    if want("netfilter_established") {
        // A packet of an established TCP connection through a node's hooks (PREROUTING,
        // FORWARD, POSTROUTING): conntrack hit, stored DNAT replayed.
        let mut nf = node_netfilter(10);
        let pkt = podnet_benches::established_tcp(&mut nf);
        emit(rate("netfilter_established_packet", "pkt/s", secs, 10_000, || {
            for _ in 0..10_000 {
                black_box(forward(
                    &mut nf,
                    &mut Skb::new(pkt.clone()),
                    smoltcp::time::Instant::ZERO,
                ));
            }
        }));
    }

    if want("new_conn") {
        // New connections through kube-proxy's rules (iptables mode) and its virtual services
        // (IPVS mode).
        let modes: [(&str, Build, Path); 3] = [
            ("iptables", node_netfilter, forward),
            ("ipvs", podnet_benches::node_netfilter_ipvs, podnet_benches::forward_ipvs),
            ("nftables", podnet_benches::node_netfilter_nft, forward),
        ];
        for (mode, build, path) in modes {
            for &n in sizes {
                let mut conns = NewConns::new(build, path, n);
                assert!(conns.first(), "a new connection passes");
                emit(rate(
                    &format!("new_conn_{mode}_{n}_services"),
                    "conn/s",
                    secs,
                    BATCH as u64,
                    || conns.batch(),
                ));
            }
        }
    }

    // The cost of a new connection (iptables mode) at the largest size up to 10,000 Services
    // against 10 Services, measured batch against batch: the target is this ratio, and two
    // figures taken seconds apart on a noisy machine do not give it.
    let big = sizes.iter().copied().filter(|&n| n > 10 && n <= 10_000).max();
    if let Some(big) = big.filter(|_| want("ratio_new_conn")) {
        let [mut small, mut large] = [10, big].map(|n| NewConns::new(node_netfilter, forward, n));
        // One pass over each pool first: counters fitted, blobs laid out, rules read once.
        for _ in 0..POOL / BATCH {
            small.batch();
            large.batch();
        }
        emit(paired_ratio(
            &format!("ratio_new_conn_iptables_{big}_to_10_services"),
            secs,
            || small.batch(),
            || large.batch(),
        ));
        // The same for nftables mode: a verdict-map lookup, flat in the number of Services.
        let [mut small, mut large] =
            [10, big].map(|n| NewConns::new(podnet_benches::node_netfilter_nft, forward, n));
        for _ in 0..POOL / BATCH {
            small.batch();
            large.batch();
        }
        emit(paired_ratio(
            &format!("ratio_new_conn_nftables_{big}_to_10_services"),
            secs,
            || small.batch(),
            || large.batch(),
        ));
    }

    if want("conntrack") {
        // Conntrack insert and lookup.
        let infos: Vec<_> = (0..65_536u32)
            .map(|k| {
                let (s, p) = client(k);
                packet::parse(&syn(s, p, vip(1), 80)).expect("valid")
            })
            .collect();
        emit(rate("conntrack_insert", "op/s", secs, infos.len() as u64, || {
            let mut ct = Conntrack::new(usize::MAX);
            for i in &infos {
                if let CtRef::Unconfirmed(e) = ct.lookup(i, smoltcp::time::Instant::ZERO) {
                    black_box(ct.confirm(*e, smoltcp::time::Instant::ZERO).ok());
                }
            }
        }));
    }

    if want("flow_") {
        // Whole flows through the reference cluster, hops not recorded.
        let opts = TraceOptions {
            proto: Some(FlowProto::Udp),
            record_hops: false,
            ..TraceOptions::default()
        };
        for (name, from, to) in [
            ("flow_udp_same_node", "pod/default/pod1", "10.244.1.3:8080"),
            ("flow_udp_cross_node", "pod/default/pod1", "10.244.2.2:8080"),
            ("flow_udp_pod_to_clusterip", "pod/default/pod2", "10.96.0.10:80"),
            ("flow_udp_egress_via_gateway", "pod/default/pod2", "203.0.113.10:80"),
            ("flow_tcp_lb_nodeport_pod", "host/internet", "203.0.113.100:80"),
        ] {
            let mut c = Cluster::seed();
            let opts = if name.starts_with("flow_tcp") {
                TraceOptions { proto: Some(FlowProto::Tcp), ..opts.clone() }
            } else {
                opts.clone()
            };
            assert!(c.trace(from, to, &opts).expect("warm-up").completed, "{name} completes");
            emit(rate(name, "flow/s", secs, 200, || {
                for _ in 0..200 {
                    black_box(c.trace(from, to, &opts).expect("runs"));
                }
                // 200 flows per virtual second: TIME_WAIT (10 s) holds about 2,000 ports.
                c.advance(smoltcp::time::Duration::from_secs(1));
            }));
        }
    }

    if want("new_conn_netpol") || want("ratio_new_conn_netpol") {
        // A new connection through isolated pods: whole UDP flows pod2 → pod4:8080 (node1 to
        // node2), pod2 isolated for egress and pod4 for ingress, each connection judged at
        // both host-side interfaces, against the same flow with no policy; 1,000 policies in
        // the namespace (the two that apply and 998 for apps without a pod here). The ratio
        // is taken batch against batch, alternating.
        let traced = TraceOptions { proto: Some(FlowProto::Udp), ..TraceOptions::default() };
        let opts = TraceOptions { record_hops: false, ..traced.clone() };
        let flow = |c: &mut Cluster| {
            for _ in 0..200 {
                black_box(c.trace("pod/default/pod2", "10.244.2.3:8080", &opts).expect("runs"));
            }
            c.advance(smoltcp::time::Duration::from_secs(1));
        };
        let mut cs = [0, 1000].map(podnet_benches::seed_with_policies);
        for (c, n) in cs.iter_mut().zip([0, 1000]) {
            let t = c.trace("pod/default/pod2", "10.244.2.3:8080", &traced).expect("warm-up");
            assert!(t.completed, "pod2 reaches pod4 with {n} policies");
            assert_eq!(t.hops.iter().any(|h| h.kind.action() == "policy"), n > 0);
            if want("new_conn_netpol") {
                emit(rate(&format!("new_conn_netpol_{n}_policies"), "flow/s", secs, 200, || {
                    flow(c)
                }));
            }
        }
        if want("ratio_new_conn_netpol") {
            let mut ratios = Vec::new();
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs || ratios.len() < 5 {
                let [a, b] = &mut cs;
                let t = Instant::now();
                flow(a);
                let plain = t.elapsed().as_secs_f64();
                let t = Instant::now();
                flow(b);
                ratios.push(t.elapsed().as_secs_f64() / plain);
            }
            let n = ratios.len() as u64;
            emit(summarize("ratio_new_conn_netpol_1000_to_0_policies", "ratio", ratios, n));
        }
    }

    if want("netpol_load") {
        // 1,000 NetworkPolicies added to a loaded cluster of 10,000 pods (100 nodes × 100
        // pods, 100 apps): parsed, checked and compiled per pod.
        let (nodes, per, n) = if quick { (10, 10, 100) } else { (100, 100, 1_000) };
        let (base, _) = Cluster::from_yaml(&podnet_benches::cluster_yaml(nodes, per, 100))
            .expect("the generated cluster loads");
        let yaml = podnet_benches::policies_yaml(n, 100);
        reset_peak();
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs.max(0.5)) || times.len() < 3 {
            let mut c = base.fork();
            let t = Instant::now();
            c.add_yaml(&yaml).expect("the policies load");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            black_box(c);
        }
        let count = times.len() as u64;
        emit(summarize(
            &format!("netpol_load_{n}_policies_{}_pods", nodes * per),
            "ms",
            times,
            count,
        ));
    }

    if want("established_") {
        // Established packets end to end: one flow of many exchanges per path, so every packet
        // after the first exchange follows conntrack on each node (and the LB and gateway). UDP
        // exchanges are two packets (datagram and echo), counted as packets; TCP exchanges are an
        // echo write and its answer with their ACKs, counted as exchanges.
        const ROUNDS: u32 = 500;
        for path in podnet_benches::ESTABLISHED_PATHS {
            let mut c = Cluster::seed();
            let opts = podnet_benches::established_flow(&mut c, path, ROUNDS);
            let (name, from, to, proto, _) = *path;
            let (unit, per) = if proto == "udp" { ("pkt/s", 2) } else { ("exchange/s", 1) };
            emit(rate(&format!("established_{name}"), unit, secs, u64::from(ROUNDS) * per, || {
                let t = c.trace(from, to, &opts).expect("runs");
                assert_eq!(t.answered, Some(ROUNDS));
                // 0.1 virtual second per flow: a TCP flow's TIME_WAIT passes as it would.
                c.advance(smoltcp::time::Duration::from_millis(100));
            }));
        }
    }

    if want("ipam") {
        // IPAM for a 5,000-node, 150,000-pod cluster: a /24 per node from 10.0.0.0/8
        // (kube-controller-manager), then 30 pod addresses per node (host-local).
        reset_peak();
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs.max(0.5)) || times.len() < 3 {
            let t = Instant::now();
            let mut cidrs =
                podnet::ipam::ClusterCidrAllocator::new("10.0.0.0/8".parse().expect("literal"), 24)
                    .expect("valid");
            let mut pods = 0usize;
            for _ in 0..5_000 {
                let mut node = podnet::ipam::HostLocal::new(cidrs.allocate().expect("room"));
                for _ in 0..30 {
                    black_box(node.allocate().expect("room"));
                    pods += 1;
                }
            }
            assert_eq!(pods, 150_000);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let count = times.len() as u64;
        emit(summarize("ipam_5000_nodes_150000_pods", "ms", times, count));
    }

    if want("vpc_cni") {
        // The AWS VPC CNI's ipamd for 1,000 m5.large nodes filled to 27 pods each in a /16:
        // ENIs attached as the warm pool drains, 27,000 pod addresses.
        reset_peak();
        let mut times = Vec::new();
        let start = Instant::now();
        let m5 = podnet::cni::ipamd::InstanceType::lookup("m5.large").expect("in the table");
        while start.elapsed() < Duration::from_secs_f64(secs.max(0.5)) || times.len() < 3 {
            let t = Instant::now();
            let mut subnet =
                podnet::cni::ipamd::VpcSubnet::new("10.0.0.0/16".parse().expect("literal"))
                    .expect("valid");
            let now = smoltcp::time::Instant::ZERO;
            for n in 0..1_000u32 {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + 4 + n);
                let mut d = podnet::cni::ipamd::Ipamd::new(
                    "n",
                    m5,
                    podnet::cni::ipamd::WarmTargets::default(),
                    ip,
                    &mut subnet,
                    now,
                )
                .expect("room");
                for k in 0..27 {
                    black_box(d.assign(&format!("p{k}"), &mut subnet, now).expect("room"));
                }
            }
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let count = times.len() as u64;
        emit(summarize("vpc_cni_1000_nodes_27000_pods", "ms", times, count));
    }

    if want("cluster_load") {
        // A whole cluster from YAML: 50 nodes, 1,500 pods, 100 Services; every object admitted,
        // every node programmed (nodes with the same rules share one copy).
        let yaml = podnet_benches::cluster_yaml(50, 30, 100);
        reset_peak();
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs.max(0.5)) || times.len() < 3 {
            let t = Instant::now();
            black_box(Cluster::from_yaml(&yaml).expect("the generated cluster loads"));
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let count = times.len() as u64;
        emit(summarize("cluster_load_50_nodes_1500_pods_100_services", "ms", times, count));
    }

    if want("kube_proxy") {
        // A full kube-proxy sync: build the rules and load them into a node's tables (what a
        // node's sync does; the figure stops when the new tables are in place, and freeing them
        // afterwards is its own figure); then the same through text, as an `iptables-restore`
        // of the payload (parse and free included).
        let (n, e) = if quick { (100, 10) } else { (10_000, 10) };
        let (svcs, slices) = podnet_benches::services(n, e);
        let cfg = podnet_benches::proxy_config();
        reset_peak();
        let (mut times, mut frees) = (Vec::new(), Vec::new());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs.max(1.0)) || times.len() < 3 {
            let t = Instant::now();
            let mut rs = podnet_netfilter::Ruleset::default();
            podnet::kube_proxy::sync_iptables_rules(&cfg, &svcs, &slices)
                .load_into(&mut rs)
                .expect("loads");
            let rs = black_box(rs);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            drop(rs);
            frees.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let count = times.len() as u64;
        emit(summarize(&format!("kube_proxy_sync_{n}x{e}"), "ms", times, count));
        emit(summarize(&format!("kube_proxy_sync_free_{n}x{e}"), "ms", frees, count));
        reset_peak();
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs.max(1.0)) || times.len() < 3 {
            let t = Instant::now();
            let text = podnet::kube_proxy::sync_iptables(&cfg, &svcs, &slices);
            let mut rs = podnet_netfilter::Ruleset::default();
            rs.restore(&text, false).expect("parses");
            black_box(rs);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let count = times.len() as u64;
        emit(summarize(&format!("kube_proxy_payload_restore_{n}x{e}"), "ms", times, count));
        // nftables mode: the full sync's transaction written and applied to an empty ruleset
        // (parsed, checked, indexed).
        reset_peak();
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs.max(1.0)) || times.len() < 3 {
            let t = Instant::now();
            let text = podnet_benches::nftables_payload(&svcs, &slices);
            let mut rs = podnet_netfilter::nft::Ruleset::default();
            rs.apply(&text).expect("applies");
            black_box(rs);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let count = times.len() as u64;
        emit(summarize(&format!("kube_proxy_nftables_sync_{n}x{e}"), "ms", times, count));
    }
}
