//! The Kubernetes loader: any text either loads or fails with an error; a loaded cluster
//! answers its table views, says what its NetworkPolicies do to each pod, and traces a flow
//! between its first two pods (through whatever policies the input holds).
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
            let pods: Vec<String> =
                c.pods().iter().filter(|p| !p.deleted).take(2).map(|p| p.key()).collect();
            for p in &pods {
                let _ = c.policies_for(p).map(|s| s.to_string());
            }
            if let [a, b] = &pods[..] {
                let opts = podnet::trace::TraceOptions { dry_run: true, ..Default::default() };
                let mut c = c;
                let _ = c.trace(a.as_str(), format!("{b}:80").as_str(), &opts);
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
