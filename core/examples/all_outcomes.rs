//! Every place a flow can land, with its probability: a client's connection to the `web`
//! Service goes to pod1 or pod3, as kube-proxy's `-m statistic` rules pick; a connection from
//! the internet to the `api` load balancer goes through whichever node the load balancer picks.
//!
//! `cargo run -p podnet --example all_outcomes`

use podnet::{Cluster, TraceOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let c = Cluster::seed();
    for (from, to) in
        [("pod/default/pod2", "svc/default/web:http"), ("host/internet", "203.0.113.100:80")]
    {
        println!("{from} -> {to}:");
        let outcomes = c.trace_all(from, to, &TraceOptions::default())?;
        let mut total = 0.0;
        for t in &outcomes {
            let p = t.probability.unwrap_or(0.0);
            total += p;
            println!(
                "  {:>5.1}%  {} to {} (server saw {})",
                p * 100.0,
                t.disposition,
                t.delivered_to.as_deref().unwrap_or("-"),
                t.server_saw.as_deref().unwrap_or("-")
            );
        }
        println!("  total {:.1}%", total * 100.0);
    }
    Ok(())
}
