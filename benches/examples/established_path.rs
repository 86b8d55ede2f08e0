//! Established packets end to end, for profilers: `PATH_NAME=udp_pod_to_clusterip_remote`
//! (a name from `podnet_benches::ESTABLISHED_PATHS`), `FLOWS=N` flows of `ROUNDS=R`
//! exchanges each. Prints exchanges per second.
fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let name = env("PATH_NAME", "udp_pod_to_clusterip_remote");
    let flows: u32 = env("FLOWS", "100").parse().expect("FLOWS is a number");
    let rounds: u32 = env("ROUNDS", "500").parse().expect("ROUNDS is a number");
    let path = podnet_benches::ESTABLISHED_PATHS
        .iter()
        .find(|p| p.0 == name)
        .unwrap_or_else(|| panic!("PATH_NAME: one of {:?}", podnet_benches::ESTABLISHED_PATHS));
    let mut c = podnet::Cluster::seed();
    let opts = podnet_benches::established_flow(&mut c, path, rounds);
    let start = std::time::Instant::now();
    for _ in 0..flows {
        let t = c.trace(path.1, path.2, &opts).expect("runs");
        assert_eq!(t.answered, Some(rounds));
        c.advance(smoltcp::time::Duration::from_millis(100));
    }
    let n = f64::from(flows) * f64::from(rounds);
    println!("{name}: {:.0} exchange/s", n / start.elapsed().as_secs_f64());
}
