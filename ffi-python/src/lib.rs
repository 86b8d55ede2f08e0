//! Python bindings of `podnet`: the compiled module `podnet._podnet`.
//!
//! Convert, call core, map the error: nothing else lives here. The Python package `podnet`
//! (under `python/`) re-exports these classes and adds the pytest plugin.
#![forbid(unsafe_code)]

mod error;

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use podnet::trace::{FlowProto, PacketView, TraceOptions};

/// A modelled cluster.
#[pyclass(name = "Cluster", module = "podnet._podnet", unsendable)]
struct Cluster {
    inner: podnet::Cluster,
}

/// `None`: the destination decides (a named port's protocol, HTTP for a URL).
fn proto_arg(proto: Option<&str>) -> PyResult<Option<FlowProto>> {
    proto
        .map(|p| {
            FlowProto::parse(p).ok_or_else(|| {
                error::InvalidInput::new_err(format!(
                    "proto must be 'tcp', 'udp', 'icmp', 'http' or None, not {p:?}"
                ))
            })
        })
        .transpose()
}

fn port_arg(name: &str, v: Option<i64>) -> PyResult<Option<u16>> {
    match v {
        None => Ok(None),
        Some(p) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
        Some(p) => Err(error::InvalidInput::new_err(format!(
            "{name} must be a port from 1 to 65535, not {p}"
        ))),
    }
}

fn options(
    proto: Option<&str>,
    sport: Option<i64>,
    headers: Option<BTreeMap<String, String>>,
    dry_run: bool,
) -> PyResult<TraceOptions> {
    let mut o = TraceOptions {
        proto: proto_arg(proto)?,
        sport: port_arg("sport", sport)?,
        dry_run,
        ..TraceOptions::default()
    };
    if let Some(h) = headers {
        o.headers = h.into_iter().collect();
    }
    Ok(o)
}

#[pymethods]
impl Cluster {
    /// The reference cluster of `podnet demo` (`cni="aws-vpc"`: its AWS VPC CNI variant).
    #[staticmethod]
    #[pyo3(signature = (proxy_mode = "iptables", seed = 0, cni = "bridge"))]
    fn seed(proxy_mode: &str, seed: u64, cni: &str) -> PyResult<Self> {
        let make = match cni.parse::<podnet::Cni>().map_err(error::unknown)? {
            podnet::Cni::Bridge => podnet::Cluster::seed_with,
            podnet::Cni::AwsVpc(_) => podnet::Cluster::seed_aws_with,
        };
        let mode: podnet::ProxyMode = proxy_mode.parse().map_err(error::unknown)?;
        let mut c = make(seed);
        if mode != podnet::ProxyMode::Iptables {
            c.set_proxy_mode(mode);
        }
        Ok(Cluster { inner: c })
    }

    /// A table of a node (or `pod/NS/NAME` for `routes`, `neigh`, `ip-rule`), by name, as
    /// the real tool prints it: `iptables-save`, `iptables-save -c`, `kube-proxy-rules`,
    /// `ipvsadm`, `ipset`, `conntrack`, `routes`, `routes-local`, `neigh`, `fdb`, `ip-rule`, `enis`, `dmesg`,
    /// `drift`.
    fn show(&self, table: &str, who: &str) -> PyResult<String> {
        let t: podnet::Table = table.parse().map_err(error::unknown)?;
        self.inner.show(t, who).map_err(error::cluster)
    }

    /// Loads Kubernetes objects (YAML or JSON text); arguments override the podnet document.
    #[staticmethod]
    #[pyo3(signature = (text, proxy_mode = None, seed = None))]
    fn from_yaml(
        py: Python<'_>,
        text: &str,
        proxy_mode: Option<&str>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let (c, _) = podnet::Cluster::from_yaml(text).map_err(|e| error::load(py, e))?;
        configured(c, proxy_mode, seed)
    }

    /// Loads Kubernetes objects from files and directories.
    #[staticmethod]
    #[pyo3(signature = (paths, proxy_mode = None, seed = None))]
    fn from_files(
        py: Python<'_>,
        paths: Vec<std::path::PathBuf>,
        proxy_mode: Option<&str>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let (c, _) = podnet::Cluster::from_files(&paths).map_err(|e| error::load(py, e))?;
        configured(c, proxy_mode, seed)
    }

    /// Traces one flow; see the package docs for the endpoint forms.
    #[pyo3(signature = (src, dst, proto = None, sport = None, headers = None, dry_run = false, capture = false, rounds = 1))]
    #[allow(clippy::too_many_arguments)] // the Python keyword arguments, one to one
    fn trace(
        &mut self,
        src: &str,
        dst: &str,
        proto: Option<&str>,
        sport: Option<i64>,
        headers: Option<BTreeMap<String, String>>,
        dry_run: bool,
        capture: bool,
        rounds: u32,
    ) -> PyResult<Trace> {
        if rounds == 0 {
            return Err(error::InvalidInput::new_err("rounds must be at least 1"));
        }
        let o = TraceOptions { capture, rounds, ..options(proto, sport, headers, dry_run)? };
        self.inner.trace(src, dst, &o).map(|t| Trace { inner: t }).map_err(error::trace)
    }

    /// Every place a flow can land, each a Trace with `.probability` (dry runs).
    #[pyo3(signature = (src, dst, proto = None))]
    fn trace_all(&self, src: &str, dst: &str, proto: Option<&str>) -> PyResult<Vec<Trace>> {
        let o = options(proto, None, None, false)?;
        Ok(self
            .inner
            .trace_all(src, dst, &o)
            .map_err(error::trace)?
            .into_iter()
            .map(|t| Trace { inner: t })
            .collect())
    }

    /// A reachability matrix: `result[i][j]` is the dry-run trace from `sources[i]` to
    /// `destinations[j]`.
    #[pyo3(signature = (sources, destinations, proto = None))]
    fn reachability(
        &self,
        sources: Vec<String>,
        destinations: Vec<String>,
        proto: Option<&str>,
    ) -> PyResult<Vec<Vec<Trace>>> {
        let o = options(proto, None, None, false)?;
        let s: Vec<&str> = sources.iter().map(String::as_str).collect();
        let d: Vec<&str> = destinations.iter().map(String::as_str).collect();
        let m = self.inner.reachability(&s, &d, &o).map_err(error::trace)?;
        Ok(m.into_iter().map(|row| row.into_iter().map(|t| Trace { inner: t }).collect()).collect())
    }

    /// Runs many flows in order on this cluster; returns compact summaries (no hops).
    fn trace_many(
        &mut self,
        py: Python<'_>,
        flows: Vec<(String, String, String)>,
    ) -> PyResult<Vec<Py<PyDict>>> {
        let mut out = Vec::with_capacity(flows.len());
        for (src, dst, proto) in flows {
            let o =
                TraceOptions { record_hops: false, ..options(Some(&proto), None, None, false)? };
            let t = self.inner.trace(&src, &dst, &o).map_err(error::trace)?;
            let d = PyDict::new(py);
            d.set_item("src", src)?;
            d.set_item("dst", dst)?;
            d.set_item("disposition", t.disposition.to_string())?;
            d.set_item("completed", t.completed)?;
            d.set_item("delivered_to", t.delivered_to)?;
            d.set_item("server_saw", t.server_saw)?;
            d.set_item("reply_from", t.reply_from)?;
            d.set_item("reason", t.reason)?;
            out.push(d.unbind());
        }
        Ok(out)
    }

    /// Runs a node on the rules of a real node's `iptables-save` (either form).
    fn import_iptables(&mut self, py: Python<'_>, node: &str, text: &str) -> PyResult<()> {
        self.inner.import_iptables(node, text).map_err(|e| match &e {
            podnet::ClusterError::IptablesParse { line, column, .. } => {
                let err = error::ParseError::new_err(e.to_string());
                let v = err.value(py);
                let _ = v.setattr("line", *line);
                let _ = v.setattr("column", *column);
                err
            }
            _ => error::cluster(e),
        })
    }

    /// How a node's imported rules differ from the generated ones (`-` missing, `+` extra).
    fn iptables_drift(&self, node: &str) -> PyResult<String> {
        self.inner.iptables_drift(node).map_err(error::cluster)
    }

    /// `ip rule show` of a node or `pod/NS/NAME`.
    fn ip_rules(&self, who: &str) -> PyResult<String> {
        self.inner.ip_rules(who).map_err(error::cluster)
    }

    /// ipamd's view of a node's ENIs (AWS VPC CNI profile).
    fn enis(&self, node: &str) -> PyResult<String> {
        self.inner.enis(node).map_err(error::cluster)
    }

    /// kube-proxy's health-check servers on a node (`healthCheckNodePort` of LoadBalancer
    /// Services with externalTrafficPolicy Local): namespace, name, port, local_endpoints,
    /// healthy (200 or 503).
    fn health_checks(&self, py: Python<'_>, node: &str) -> PyResult<Vec<Py<PyDict>>> {
        let mut out = Vec::new();
        for h in self.inner.health_checks(node).map_err(error::cluster)? {
            let d = PyDict::new(py);
            d.set_item("namespace", &h.namespace)?;
            d.set_item("name", &h.name)?;
            d.set_item("port", h.port)?;
            d.set_item("local_endpoints", h.local_endpoints)?;
            d.set_item("healthy", h.healthy())?;
            out.push(d.unbind());
        }
        Ok(out)
    }

    /// The kernel log lines `LOG` rules wrote on a node (`dmesg` without timestamps).
    fn kernel_log(&self, node: &str) -> PyResult<String> {
        self.inner.kernel_log(node).map_err(error::cluster)
    }

    /// `iptables-restore [--noflush]` on a node (raw and mangle survive kube-proxy's syncs).
    #[pyo3(signature = (node, text, noflush = true))]
    fn iptables_restore(&mut self, node: &str, text: &str, noflush: bool) -> PyResult<()> {
        self.inner.iptables_restore(node, text, noflush).map_err(error::cluster)
    }

    /// `iptables-save` of a node (kernel form); `counters=True` is `iptables-save -c`.
    #[pyo3(signature = (node, counters = false))]
    fn iptables_save(&self, node: &str, counters: bool) -> PyResult<String> {
        self.inner.iptables_save_with(node, counters).map_err(error::cluster)
    }

    /// kube-proxy's restore payload for a node (restore form).
    fn kube_proxy_rules(&self, node: &str) -> PyResult<String> {
        self.inner.kube_proxy_payload(node).map_err(error::cluster)
    }

    /// `ipvsadm -Ln` of a node.
    fn ipvsadm(&self, node: &str) -> PyResult<String> {
        self.inner.ipvsadm(node).map_err(error::cluster)
    }

    /// `ipset list` of a node.
    fn ipset(&self, node: &str) -> PyResult<String> {
        self.inner.ipset_list(node).map_err(error::cluster)
    }

    /// `conntrack -L` of a node.
    fn conntrack(&self, node: &str) -> PyResult<String> {
        self.inner.conntrack(node).map_err(error::cluster)
    }

    /// `ip route` of a node.
    fn routes(&self, node: &str) -> PyResult<String> {
        self.inner.routes(node).map_err(error::cluster)
    }

    /// `ip neigh` of a node.
    fn neigh(&self, node: &str) -> PyResult<String> {
        self.inner.neigh(node).map_err(error::cluster)
    }

    /// `bridge fdb show` of a node.
    fn fdb(&self, node: &str) -> PyResult<String> {
        self.inner.fdb(node).map_err(error::cluster)
    }

    /// Sets a node sysctl (`net.ipv4.ip_forward`, `net.bridge.bridge-nf-call-iptables`,
    /// `net.netfilter.nf_conntrack_max`, `net.netfilter.nf_conntrack_buckets`).
    fn set_sysctl(&mut self, node: &str, key: &str, value: u32) -> PyResult<()> {
        self.inner.set_sysctl(node, key, value).map_err(error::cluster)
    }

    /// Sets `hairpin_mode` on a pod's bridge port.
    fn set_hairpin(&mut self, pod: &str, on: bool) -> PyResult<()> {
        self.inner.set_hairpin(pod, on).map_err(error::cluster)
    }

    /// Sets a pod's Ready condition; kube-proxy re-syncs.
    fn set_ready(&mut self, pod: &str, ready: bool) -> PyResult<()> {
        self.inner.set_ready(pod, ready).map_err(error::cluster)
    }

    /// Advances virtual time (conntrack and FDB ageing).
    #[pyo3(signature = (seconds))]
    fn advance(&mut self, seconds: f64) -> PyResult<()> {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(error::InvalidInput::new_err(format!(
                "seconds must be a non-negative number, not {seconds}"
            )));
        }
        self.inner.advance(podnet::time::Duration::from_millis((seconds * 1000.0) as u64));
        Ok(())
    }

    /// Deletes a Service (`svc/NS/NAME`) or a pod (`pod/NS/NAME`).
    /// Adds Kubernetes objects (YAML or JSON text) to the running cluster, as `kubectl create
    /// -f` would; returns `{"loaded": [...], "skipped": [...]}`.
    fn add(&mut self, py: Python<'_>, text: &str) -> PyResult<Py<PyDict>> {
        let report = self.inner.add_yaml(text).map_err(|e| error::load(py, e))?;
        let d = PyDict::new(py);
        d.set_item("loaded", report.loaded)?;
        d.set_item("skipped", report.skipped)?;
        Ok(d.unbind())
    }

    fn delete(&mut self, what: &str) -> PyResult<()> {
        if what.starts_with("svc/") {
            return self.inner.delete_service(what).map_err(error::cluster);
        }
        if what.starts_with("pod/") {
            return self.inner.delete_pod(what).map_err(error::cluster);
        }
        Err(error::InvalidInput::new_err(format!(
            "cannot delete {what:?}: write svc/NS/NAME or pod/NS/NAME"
        )))
    }
}

fn configured(
    mut c: podnet::Cluster,
    proxy_mode: Option<&str>,
    seed: Option<u64>,
) -> PyResult<Cluster> {
    if let Some(m) = proxy_mode {
        c.set_proxy_mode(m.parse().map_err(error::unknown)?);
    }
    if let Some(s) = seed {
        c.reseed(s);
    }
    Ok(Cluster { inner: c })
}

/// One traced flow.
#[pyclass(name = "Trace", module = "podnet._podnet", frozen)]
struct Trace {
    inner: podnet::Trace,
}

#[pymethods]
impl Trace {
    #[getter]
    fn disposition(&self) -> String {
        self.inner.disposition.to_string()
    }
    #[getter]
    fn completed(&self) -> bool {
        self.inner.completed
    }
    #[getter]
    fn delivered_to(&self) -> Option<String> {
        self.inner.delivered_to.clone()
    }
    #[getter]
    fn server_saw(&self) -> Option<String> {
        self.inner.server_saw.clone()
    }
    #[getter]
    fn reply_from(&self) -> Option<String> {
        self.inner.reply_from.clone()
    }
    /// The HTTP status the client received, for HTTP flows.
    #[getter]
    fn http_status(&self) -> Option<u16> {
        self.inner.http_status
    }
    /// Who produced `http_status`: the backend pod, or an intermediary (an ALB, an ingress
    /// controller, a node's health-check server) that answered by itself, in which case
    /// the request was not delivered and `reason` says why (`http_no_route`, ...).
    #[getter]
    fn http_from(&self) -> Option<String> {
        self.inner.http_from.clone()
    }
    /// With `rounds` above one: how many exchanges were answered.
    #[getter]
    fn answered(&self) -> Option<u32> {
        self.inner.answered
    }
    #[getter]
    fn reason(&self) -> Option<String> {
        self.inner.reason.clone()
    }
    #[getter]
    fn reason_text(&self) -> Option<String> {
        self.inner.reason_text.clone()
    }
    #[getter]
    fn client(&self) -> String {
        self.inner.client.clone()
    }
    #[getter]
    fn probability(&self) -> Option<f64> {
        self.inner.probability
    }
    #[getter]
    fn hops(&self) -> Vec<Hop> {
        self.inner.hops.iter().cloned().map(|h| Hop { inner: h }).collect()
    }
    /// The trace as JSON (the same bytes as the Rust API and the golden files).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }
    /// The frames as pcapng (traced with `capture=True`; otherwise a file with no packets).
    fn pcapng<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &podnet::trace::pcap::to_pcapng(&self.inner.frames))
    }
    /// Readable text; `full` lists every packet.
    #[pyo3(signature = (full = false))]
    fn render(&self, full: bool) -> String {
        self.inner.render(full)
    }
    fn __str__(&self) -> String {
        self.inner.render(false)
    }
    fn __repr__(&self) -> String {
        format!(
            "<podnet.Trace {} -> {}: {}>",
            self.inner.from, self.inner.to, self.inner.disposition
        )
    }
}

/// One hop of a trace.
#[pyclass(name = "Hop", module = "podnet._podnet", frozen)]
struct Hop {
    inner: podnet::Hop,
}

fn view(py: Python<'_>, v: &Option<PacketView>) -> PyResult<Option<Py<PyDict>>> {
    let Some(v) = v else { return Ok(None) };
    let d = PyDict::new(py);
    d.set_item("proto", &v.proto)?;
    d.set_item("src", v.src.to_string())?;
    d.set_item("dst", v.dst.to_string())?;
    d.set_item("sport", v.sport)?;
    d.set_item("dport", v.dport)?;
    d.set_item("info", &v.info)?;
    d.set_item("src_mac", &v.src_mac)?;
    d.set_item("dst_mac", &v.dst_mac)?;
    Ok(Some(d.unbind()))
}

#[pymethods]
impl Hop {
    #[getter]
    fn index(&self) -> usize {
        self.inner.index
    }
    #[getter]
    fn packet(&self) -> u32 {
        self.inner.packet
    }
    #[getter]
    fn direction(&self) -> &'static str {
        match self.inner.direction {
            podnet::trace::Dir::Request => "request",
            podnet::trace::Dir::Reply => "reply",
        }
    }
    #[getter]
    fn node(&self) -> Option<String> {
        self.inner.node.clone()
    }
    #[getter]
    fn netns(&self) -> String {
        self.inner.netns.clone()
    }
    #[getter]
    fn device(&self) -> Option<String> {
        self.inner.device.clone()
    }
    #[getter]
    fn action(&self) -> &'static str {
        self.inner.kind.action()
    }
    #[getter]
    fn hook(&self) -> Option<String> {
        self.inner.kind.hook().map(|h| h.to_string())
    }
    #[getter]
    fn table(&self) -> Option<&'static str> {
        self.inner.kind.table()
    }
    #[getter]
    fn chain(&self) -> Option<String> {
        self.inner.kind.chain().map(str::to_string)
    }
    #[getter]
    fn rule(&self) -> Option<String> {
        self.inner.kind.rule().map(str::to_string)
    }
    #[getter]
    fn origin(&self) -> Option<String> {
        self.inner.kind.origin().map(str::to_string)
    }
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        self.inner.kind.reason()
    }
    #[getter]
    fn detail(&self) -> String {
        self.inner.detail.clone()
    }
    #[getter]
    fn before(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        view(py, &self.inner.before)
    }
    #[getter]
    fn after(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        view(py, &self.inner.after)
    }
    fn __repr__(&self) -> String {
        format!(
            "<podnet.Hop {} {} {} {}>",
            self.inner.index,
            self.inner.netns,
            self.inner.device.as_deref().unwrap_or("-"),
            self.inner.kind.action()
        )
    }
}

/// Every seed scenario id, in the article's order.
#[pyfunction]
fn scenarios() -> Vec<(String, String, String, String, String)> {
    podnet::demo::scenarios()
        .into_iter()
        .map(|s| {
            (
                s.id.to_string(),
                s.figures.to_string(),
                s.from.to_string(),
                s.to.to_string(),
                format!("{:?}", s.proto).to_lowercase(),
            )
        })
        .collect()
}

/// The golden trace of a scenario, on a fresh reference cluster.
#[pyfunction]
#[pyo3(signature = (id, seed = 0))]
fn golden_trace(id: &str, seed: u64) -> PyResult<Trace> {
    podnet::demo::golden_trace(id, seed).map(|t| Trace { inner: t }).map_err(error::trace)
}

#[pymodule]
fn _podnet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Cluster>()?;
    m.add_class::<Trace>()?;
    m.add_class::<Hop>()?;
    m.add_function(wrap_pyfunction!(scenarios, m)?)?;
    m.add_function(wrap_pyfunction!(golden_trace, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)
}
