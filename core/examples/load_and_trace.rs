//! Loads a cluster from Kubernetes YAML (what `kubectl get -A -o yaml` prints, plus an
//! optional PodnetConfig document) and traces one flow through it.
//!
//! `cargo run -p podnet --example load_and_trace [-- DIR_OR_FILE FROM TO]`; without
//! arguments, the shop example under `core/tests/fixtures/shop`.

use std::path::PathBuf;

use podnet::{Cluster, TraceOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, from, to) = match args.as_slice() {
        [p, f, t] => (PathBuf::from(p), f.clone(), t.clone()),
        _ => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shop"),
            "pod/shop/frontend-7d9f8c6b5-abcde".to_string(),
            "svc/shop/backend:api".to_string(),
        ),
    };
    let (mut cluster, report) = Cluster::from_files(&[path])?;
    println!("loaded {} objects, skipped {}", report.loaded.len(), report.skipped.len());
    for s in &report.skipped {
        println!("  skipped {s}");
    }
    let trace = cluster.trace(from.as_str(), to.as_str(), &TraceOptions::default())?;
    print!("{}", trace.render(false));
    Ok(())
}
