//! Where a Service's address is rewritten: traces pod2 → the `web` Service's ClusterIP on the
//! reference cluster and prints the NAT hops of the SYN and of the SYN-ACK with the headers
//! before and after each, and the kube-proxy rule (and Service) behind the DNAT.
//!
//! `cargo run -p podnet --example hop_rewrite`

use podnet::trace::Dir;
use podnet::{Cluster, HopKind, TraceOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &TraceOptions::default())?;
    println!("{} -> {}: {}", t.from, t.to, t.disposition);
    // The SYN (the first request packet with a NAT hop) and the SYN-ACK (the first reply).
    let first = |dir: Dir| {
        t.hops.iter().find(|h| h.direction == dir && matches!(h.kind, HopKind::Nat { .. }))
    };
    let packets: Vec<u32> =
        [Dir::Request, Dir::Reply].map(first).iter().flatten().map(|h| h.packet).collect();
    for h in t.hops.iter().filter(|h| packets.contains(&h.packet)) {
        match &h.kind {
            HopKind::Nat { hook } => {
                let (before, after) = (h.before.as_ref(), h.after.as_ref());
                println!("  [{}] {} {hook}: {}", h.index, h.netns, h.detail);
                if let (Some(b), Some(a)) = (before, after) {
                    println!("      before {b}\n      after  {a}");
                }
            }
            HopKind::Rule { table: "nat", chain, rule, origin: Some(o), .. }
                if rule.contains("DNAT") =>
            {
                println!("  [{}] {} nat {chain}: {rule}  <- {o}", h.index, h.netns);
            }
            _ => {}
        }
    }
    Ok(())
}
