//! podnet for the browser: an owned handle over a cluster, returning JSON (the same bytes
//! the Rust API and the golden files hold).
//!
//! Convert, call core, map the error: a core error becomes a JS `Error` with the message; a
//! Rust panic is logged to the console by the panic hook and traps, after which the page
//! re-instantiates the module (see `www/app.js`).
#![forbid(unsafe_code)]

use wasm_bindgen::prelude::*;

use podnet::trace::{FlowProto, TraceOptions};

/// Installs the panic hook (called once by the page).
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// A modelled cluster.
#[wasm_bindgen]
pub struct Podnet {
    inner: podnet::Cluster,
}

#[wasm_bindgen]
impl Podnet {
    /// The reference cluster with `seed`.
    #[wasm_bindgen(constructor)]
    pub fn new(seed: u32) -> Podnet {
        Podnet { inner: podnet::Cluster::seed_with(u64::from(seed)) }
    }

    /// A cluster loaded from Kubernetes objects (YAML or JSON); errors carry the place.
    pub fn from_yaml(text: &str) -> Result<Podnet, JsError> {
        podnet::Cluster::from_yaml(text)
            .map(|(c, _)| Podnet { inner: c })
            .map_err(|e| JsError::new(&e.to_string()))
    }

    /// Traces one flow; returns the trace JSON.
    pub fn trace(&mut self, from: &str, to: &str, proto: &str) -> Result<String, JsError> {
        let proto = FlowProto::parse(proto).ok_or_else(|| {
            JsError::new(&format!("proto must be tcp, udp, icmp or http, not {proto:?}"))
        })?;
        let t = self
            .inner
            .trace(from, to, &TraceOptions { proto, ..TraceOptions::default() })
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(t.to_json())
    }

    /// A node table: `iptables-save`, `iptables-save -c` (with rule counters), `conntrack`,
    /// `routes`, `neigh`, `fdb`, `kube-proxy-rules`, `ipvsadm`, `dmesg` (LOG lines).
    pub fn table(&self, node: &str, what: &str) -> Result<String, JsError> {
        let r = match what {
            "iptables-save" => self.inner.iptables_save(node),
            "iptables-save -c" => self.inner.iptables_save_with(node, true),
            "dmesg" => self.inner.kernel_log(node),
            "conntrack" => self.inner.conntrack(node),
            "routes" => self.inner.routes(node),
            "neigh" => self.inner.neigh(node),
            "fdb" => self.inner.fdb(node),
            "kube-proxy-rules" => self.inner.kube_proxy_payload(node),
            "ipvsadm" => self.inner.ipvsadm(node),
            other => return Err(JsError::new(&format!("unknown table {other:?}"))),
        };
        r.map_err(|e| JsError::new(&e.to_string()))
    }

    /// Switches kube-proxy between iptables mode and IPVS mode (round robin).
    pub fn set_ipvs(&mut self, on: bool) {
        use podnet::kube_proxy::ProxyMode;
        self.inner.set_proxy_mode(if on {
            ProxyMode::Ipvs(podnet::netfilter::ipvs::Scheduler::Rr)
        } else {
            ProxyMode::Iptables
        });
    }

    /// The cluster's shape as JSON.
    pub fn topology(&self) -> String {
        serde_json::to_string(&self.inner.topology()).unwrap_or_default()
    }
}

/// Every seed scenario as JSON.
#[wasm_bindgen]
pub fn scenarios() -> String {
    serde_json::to_string(&podnet::demo::scenarios()).unwrap_or_default()
}

/// The golden trace of a scenario on a fresh reference cluster, as JSON.
#[wasm_bindgen]
pub fn golden_trace(id: &str, seed: u32) -> Result<String, JsError> {
    podnet::demo::golden_trace(id, u64::from(seed))
        .map(|t| t.to_json())
        .map_err(|e| JsError::new(&e.to_string()))
}
