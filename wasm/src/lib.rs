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

    /// Traces one flow; returns the trace JSON. `proto` is `tcp`, `udp`, `icmp`, `http`, or
    /// empty for the protocol the destination implies (a named port's, HTTP for a URL).
    pub fn trace(&mut self, from: &str, to: &str, proto: &str) -> Result<String, JsError> {
        let proto = match proto {
            "" => None,
            p => Some(FlowProto::parse(p).ok_or_else(|| {
                JsError::new(&format!("proto must be tcp, udp, icmp or http, not {proto:?}"))
            })?),
        };
        let t = self
            .inner
            .trace(from, to, &TraceOptions { proto, ..TraceOptions::default() })
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(t.to_json())
    }

    /// A table of a node (or `pod/NS/NAME`) by name, as the real tool prints it:
    /// `iptables-save`, `iptables-save -c` (with rule counters), `kube-proxy-rules`,
    /// `ipvsadm`, `ipset`, `nft`, `conntrack`, `routes`, `routes-local`, `neigh`, `fdb`, `ip-rule`, `enis`, `dmesg`
    /// (LOG lines), `drift`.
    pub fn table(&self, node: &str, what: &str) -> Result<String, JsError> {
        let t: podnet::Table =
            what.parse().map_err(|e: podnet::error::UnknownValue| JsError::new(&e.to_string()))?;
        self.inner.show(t, node).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The names of every table, as `table` takes them.
    pub fn tables() -> Vec<String> {
        podnet::Table::ALL.iter().map(|t| t.to_string()).collect()
    }

    /// Switches kube-proxy between iptables mode and IPVS mode (round robin).
    pub fn set_ipvs(&mut self, on: bool) {
        self.inner.set_proxy_mode(if on { "ipvs" } else { "iptables" }.parse().expect("modes"));
    }

    /// Switches kube-proxy's mode: `iptables`, `nftables`, `ipvs` or `ipvs:SCHEDULER`.
    pub fn set_proxy_mode(&mut self, mode: &str) -> Result<(), JsError> {
        let m: podnet::ProxyMode =
            mode.parse().map_err(|e: podnet::error::UnknownValue| JsError::new(&e.to_string()))?;
        self.inner.set_proxy_mode(m);
        Ok(())
    }

    /// Where NetworkPolicies are enforced: `post-dnat`, `pre-dnat` or `off`.
    pub fn set_policy_enforcement(&mut self, enforcement: &str) -> Result<(), JsError> {
        let e = podnet::policy::Enforcement::parse(enforcement).ok_or_else(|| {
            JsError::new(&format!("'{enforcement}' is not post-dnat, pre-dnat or off"))
        })?;
        let mut c = self.inner.policy_config();
        c.enforcement = e;
        self.inner.set_policy_config(c);
        Ok(())
    }

    /// The NetworkPolicies selecting a pod and what they allow it, as `podnet policy`
    /// prints them.
    pub fn policies_for(&self, pod: &str) -> Result<String, JsError> {
        self.inner
            .policies_for(pod)
            .map(|s| s.to_string())
            .map_err(|e| JsError::new(&e.to_string()))
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
