//! The Kubernetes loader: any text either loads or fails with an error; a loaded cluster
//! answers its table views.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match podnet::Cluster::from_yaml(text) {
        Ok((c, _report)) => {
            let nodes: Vec<String> = c.nodes().iter().map(|n| n.name.clone()).collect();
            for n in nodes.iter().take(4) {
                let _ = c.iptables_save(n);
                let _ = c.routes(n);
                let _ = c.kube_proxy_payload(n);
            }
        }
        Err(e) => {
            // Errors name a place: a line is never past the input.
            if let Some(l) = e.line() {
                let breaks = text.split(['\n', '\r']).count();
                assert!(l <= breaks + 1, "line {l} past the input: {e}");
            }
        }
    }
});
