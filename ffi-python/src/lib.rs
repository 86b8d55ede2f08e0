//! Python bindings of `podnet`: the compiled module `podnet._podnet`.
//!
//! Convert, call core, map the error: nothing else lives here. The Python package `podnet`
//! (under `python/`) re-exports these classes and adds the pytest plugin. Every class,
//! method and property carries a docstring (`help()` shows it; the stubs repeat it).
#![forbid(unsafe_code)]

mod error;

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use podnet::k8s::LoadReport;
use podnet::trace::{FlowProto, PacketView, TraceOptions};

/// A modelled Kubernetes cluster: nodes, pods, Services, kube-proxy's rules, the CNI and the
/// cloud edge. Make one with `Cluster.seed()` (the reference cluster of `podnet demo`),
/// `Cluster.from_yaml(text)` or `Cluster.from_files(path)` (what `kubectl get -A -o yaml`
/// prints); trace flows with `trace`, `trace_all`, `reachability` and `trace_many`.
#[pyclass(name = "Cluster", module = "podnet._podnet", unsendable)]
struct Cluster {
    inner: podnet::Cluster,
    /// Every object loaded or skipped so far (from_yaml/from_files, then add).
    report: LoadReport,
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

/// Paths from a path, a string, or a list of either.
fn paths_arg(paths: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if let Ok(p) = paths.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    if let Ok(list) = paths.extract::<Vec<PathBuf>>() {
        if list.is_empty() {
            return Err(error::InvalidInput::new_err(
                "paths is empty: give a file, a directory, or a list of them",
            ));
        }
        return Ok(list);
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "paths must be a path, a string, or a list of them, not {}",
        paths.get_type().name()?
    )))
}

fn report_dict<'py>(py: Python<'py>, r: &LoadReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("loaded", r.loaded.clone())?;
    d.set_item("skipped", r.skipped.clone())?;
    d.set_item("inferred", r.inferred.clone())?;
    d.set_item("warnings", r.warnings.clone())?;
    Ok(d)
}

#[pymethods]
impl Cluster {
    /// The reference cluster of `podnet demo`: three nodes, four pods, Services `web` and
    /// `api`, an internet gateway, a cloud load balancer and an ALB. `cni="aws-vpc"` gives
    /// its AWS VPC CNI variant; `proxy_mode` is `iptables`, `nftables`, `ipvs` or
    /// `ipvs:SCHEDULER`.
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
        Ok(Cluster { inner: c, report: LoadReport::default() })
    }

    /// Loads Kubernetes objects from YAML or JSON text (several documents, `kind: List`);
    /// `proxy_mode` and `seed` override the PodnetConfig document. `load_report` says what
    /// was loaded and what was skipped, and why.
    #[staticmethod]
    #[pyo3(signature = (text, proxy_mode = None, seed = None))]
    fn from_yaml(
        py: Python<'_>,
        text: &str,
        proxy_mode: Option<&str>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let (c, report) = podnet::Cluster::from_yaml(text).map_err(|e| error::load(py, e))?;
        configured(c, report, proxy_mode, seed)
    }

    /// Loads Kubernetes objects from a file or directory, or a list of them (`*.yaml`,
    /// `*.yml`, `*.json`, in name order); as `from_yaml` otherwise.
    #[staticmethod]
    #[pyo3(signature = (paths, proxy_mode = None, seed = None))]
    fn from_files(
        py: Python<'_>,
        paths: &Bound<'_, PyAny>,
        proxy_mode: Option<&str>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let paths = paths_arg(paths)?;
        let (c, report) = podnet::Cluster::from_files(&paths).map_err(|e| error::load(py, e))?;
        configured(c, report, proxy_mode, seed)
    }

    /// What was loaded, what was skipped (with the reason), what was inferred from the
    /// objects (with the PodnetConfig field that overrides it) and what `kubectl apply
    /// --validate=strict` or kube-proxy would flag, as `{"loaded": [...], "skipped": [...],
    /// "inferred": [...], "warnings": [...]}`: every object of `from_yaml`/`from_files` and
    /// of each `add` since. Empty for the reference cluster.
    #[getter]
    fn load_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_dict(py, &self.report)
    }

    /// Traces one flow and returns its `Trace`. Sources: `pod/NS/NAME`, `node/NAME`,
    /// `host/NAME`, or a pod's or node's IP. Destinations: `IP:PORT`, `pod/NS/NAME:PORT`,
    /// `svc/NS/NAME:PORT` (a number or a port name), `http://IP[:PORT]/PATH`; ICMP takes an
    /// IP or a pod. `proto` (`tcp`, `udp`, `icmp`, `http`) defaults to what the destination
    /// implies; `rounds` makes that many exchanges over one socket; `capture=True` keeps
    /// the frames for `Trace.pcapng()`; `dry_run=True` leaves the cluster unchanged.
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
        rounds: i64,
    ) -> PyResult<Trace> {
        if rounds < 1 || rounds > i64::from(u32::MAX) {
            return Err(error::InvalidInput::new_err(format!(
                "rounds must be at least 1, not {rounds}"
            )));
        }
        let o = TraceOptions {
            capture,
            rounds: rounds as u32,
            ..options(proto, sport, headers, dry_run)?
        };
        self.inner.trace(src, dst, &o).map(|t| Trace { inner: t }).map_err(error::trace)
    }

    /// Every place a flow can land, each a `Trace` with `.probability` (dry runs; the
    /// probabilities add up to 1).
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

    /// A reachability matrix: `result[i][j]` is the dry-run `Trace` from `sources[i]` to
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

    /// Runs many flows `(src, dst, proto)` in order on this cluster (`proto` may be None);
    /// returns their `Trace`s without hops (the outcome only, for speed).
    fn trace_many(&mut self, flows: Vec<(String, String, Option<String>)>) -> PyResult<Vec<Trace>> {
        let mut out = Vec::with_capacity(flows.len());
        for (src, dst, proto) in flows {
            let o = TraceOptions {
                record_hops: false,
                ..options(proto.as_deref(), None, None, false)?
            };
            out.push(Trace { inner: self.inner.trace(&src, &dst, &o).map_err(error::trace)? });
        }
        Ok(out)
    }

    /// The nodes: `{"name", "ip", "pod_cidr", "pods", "max_pods"}` each.
    fn nodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for n in self.inner.nodes() {
            let d = PyDict::new(py);
            d.set_item("name", &n.name)?;
            d.set_item("ip", n.ip.to_string())?;
            d.set_item("pod_cidr", n.pod_cidr.to_string())?;
            let live = n.pods.iter().filter(|p| !self.inner.pods()[p.idx()].deleted).count();
            d.set_item("pods", live)?;
            d.set_item("max_pods", n.max_pods)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The pods (not deleted ones): `{"namespace", "name", "ip", "node", "ready",
    /// "terminating", "host_network", "labels"}` each.
    fn pods<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for p in self.inner.pods().iter().filter(|p| !p.deleted) {
            let d = PyDict::new(py);
            d.set_item("namespace", &p.namespace)?;
            d.set_item("name", &p.name)?;
            d.set_item("ip", p.ip.to_string())?;
            d.set_item("node", &self.inner.nodes()[p.node.idx()].name)?;
            d.set_item("ready", p.ready)?;
            d.set_item("terminating", p.terminating)?;
            d.set_item("host_network", p.host_network)?;
            d.set_item("labels", p.labels.clone())?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The Services: `{"namespace", "name", "type", "cluster_ip", "ports"}` each, a port
    /// being `{"name", "protocol", "port", "target_port", "node_port"}` (`node_port` None
    /// when none is allocated; `cluster_ip` None for a headless Service).
    fn services<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        use podnet::kube_proxy::{ServiceType, TargetPort};
        let list = PyList::empty(py);
        for s in self.inner.services() {
            let d = PyDict::new(py);
            d.set_item("namespace", &s.namespace)?;
            d.set_item("name", &s.name)?;
            d.set_item(
                "type",
                match s.kind {
                    ServiceType::ClusterIp => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                },
            )?;
            d.set_item("cluster_ip", s.cluster_ip.map(|i| i.to_string()))?;
            let ports = PyList::empty(py);
            for p in &s.ports {
                let pd = PyDict::new(py);
                pd.set_item("name", &p.name)?;
                pd.set_item("protocol", p.protocol.to_string().to_uppercase())?;
                pd.set_item("port", p.port)?;
                match &p.target_port {
                    TargetPort::Number(n) => pd.set_item("target_port", n)?,
                    TargetPort::Name(n) => pd.set_item("target_port", n)?,
                }
                pd.set_item("node_port", (p.node_port != 0).then_some(p.node_port))?;
                ports.append(pd)?;
            }
            d.set_item("ports", ports)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// A node's connection tracking entries, oldest first: `{"proto", "timeout", "state",
    /// "original", "reply", "unreplied", "assured", "mark"}` each, a tuple being `{"src",
    /// "dst", "sport", "dport"}` (what `conntrack(node)` prints, as values).
    fn conntrack_entries<'py>(&self, py: Python<'py>, node: &str) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let tuple = |t: &podnet::cluster::ConntrackTuple| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            d.set_item("src", t.src.to_string())?;
            d.set_item("dst", t.dst.to_string())?;
            d.set_item("sport", t.sport)?;
            d.set_item("dport", t.dport)?;
            Ok(d)
        };
        for e in self.inner.conntrack_entries(node).map_err(error::cluster)? {
            let d = PyDict::new(py);
            d.set_item("proto", &e.proto)?;
            d.set_item("timeout", e.timeout)?;
            d.set_item("state", &e.state)?;
            d.set_item("original", tuple(&e.original)?)?;
            d.set_item("reply", tuple(&e.reply)?)?;
            d.set_item("unreplied", e.unreplied)?;
            d.set_item("assured", e.assured)?;
            d.set_item("mark", e.mark)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// What podnet loaded and allocated, as `kubectl get RESOURCE -o OUTPUT` prints it:
    /// `resource` is `nodes`, `pods`, `services` or `endpoints`; `output` is None (the
    /// table), `wide`, `json` or `yaml`.
    #[pyo3(signature = (resource, output = None))]
    fn get(&self, resource: &str, output: Option<&str>) -> PyResult<String> {
        let r: podnet::get::Resource = resource.parse().map_err(error::unknown)?;
        let o = match output {
            None => podnet::get::Output::Table,
            Some(o) => o.parse().map_err(error::unknown)?,
        };
        Ok(self.inner.get(r, o))
    }

    /// A table of a node (or `pod/NS/NAME` for `routes`, `routes-local`, `neigh`,
    /// `ip-rule`), by name, as the real tool prints it: `iptables-save`, `iptables-save
    /// -c`, `kube-proxy-rules`, `ipvsadm`, `ipset`, `conntrack`, `routes`, `routes-local`,
    /// `neigh`, `fdb`, `ip-rule`, `enis`, `dmesg`, `drift`.
    fn show(&self, table: &str, who: &str) -> PyResult<String> {
        let t: podnet::Table = table.parse().map_err(error::unknown)?;
        self.inner.show(t, who).map_err(error::cluster)
    }

    /// Runs a node on the rules of a real node's `iptables-save` (either form); a line
    /// podnet cannot read raises `ParseError` with `.line` and `.column`.
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

    /// How a node's imported rules differ from what kube-proxy would write (`-` missing,
    /// `+` extra, chain by chain); empty when nothing differs.
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
    /// Services with externalTrafficPolicy Local): `{"namespace", "name", "port",
    /// "local_endpoints", "healthy"}` each (healthy: it answers 200, else 503).
    fn health_checks<'py>(&self, py: Python<'py>, node: &str) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for h in self.inner.health_checks(node).map_err(error::cluster)? {
            let d = PyDict::new(py);
            d.set_item("namespace", &h.namespace)?;
            d.set_item("name", &h.name)?;
            d.set_item("port", h.port)?;
            d.set_item("local_endpoints", h.local_endpoints)?;
            d.set_item("healthy", h.healthy())?;
            list.append(d)?;
        }
        Ok(list)
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

    /// kube-proxy's `iptables-restore` payload for a node (restore form).
    fn kube_proxy_rules(&self, node: &str) -> PyResult<String> {
        self.inner.kube_proxy_payload(node).map_err(error::cluster)
    }

    /// `ipvsadm -Ln` of a node.
    fn ipvsadm(&self, node: &str) -> PyResult<String> {
        self.inner.ipvsadm(node).map_err(error::cluster)
    }

    /// `nft list ruleset` of a node (kube-proxy's `table ip kube-proxy` in nftables mode).
    fn nft_list_ruleset(&self, node: &str) -> PyResult<String> {
        self.inner.nft_list_ruleset(node).map_err(error::cluster)
    }

    /// Runs `flows` (`(src, dst, proto)` tuples, proto `None` for the one the destination
    /// implies; `None` for every pod against every Service port) under iptables, IPVS and
    /// nftables mode on copies of this cluster, and returns the flows whose outcome differs:
    /// `{"from", "to", "proto", "outcomes": {mode: [{"delivered_to", "server_saw",
    /// "reply_from", "disposition", "reason", "probability"}]}, "divergences": [{"modes":
    /// (a, b), "hops": (hop_a, hop_b)}], "text"}`.
    #[pyo3(signature = (flows = None))]
    fn compare_modes<'py>(
        &self,
        py: Python<'py>,
        flows: Option<Vec<(String, String, Option<String>)>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let flows = match flows {
            None => self.inner.every_pod_to_every_service_port(),
            Some(f) => f
                .into_iter()
                .map(|(a, b, p)| Ok((a, b, proto_arg(p.as_deref())?)))
                .collect::<PyResult<Vec<_>>>()?,
        };
        let diffs = self.inner.compare_modes(&flows).map_err(error::trace)?;
        let list = PyList::empty(py);
        for d in &diffs {
            let o = PyDict::new(py);
            o.set_item("from", &d.from)?;
            o.set_item("to", &d.to)?;
            o.set_item("proto", d.proto.to_string())?;
            let modes = PyDict::new(py);
            for (mode, ls) in &d.outcomes {
                let l = PyList::empty(py);
                for x in ls {
                    let e = PyDict::new(py);
                    e.set_item("delivered_to", &x.delivered_to)?;
                    e.set_item("server_saw", &x.server_saw)?;
                    e.set_item("reply_from", &x.reply_from)?;
                    e.set_item("disposition", x.disposition.to_string())?;
                    e.set_item("reason", &x.reason)?;
                    e.set_item("probability", x.probability)?;
                    l.append(e)?;
                }
                modes.set_item(mode, l)?;
            }
            o.set_item("outcomes", modes)?;
            let divs = PyList::empty(py);
            for v in &d.divergences {
                let e = PyDict::new(py);
                e.set_item("modes", (&v.modes.0, &v.modes.1))?;
                e.set_item("hops", (&v.hops.0, &v.hops.1))?;
                divs.append(e)?;
            }
            o.set_item("divergences", divs)?;
            o.set_item("text", d.to_string())?;
            list.append(o)?;
        }
        Ok(list)
    }

    /// `ipset list` of a node.
    fn ipset(&self, node: &str) -> PyResult<String> {
        self.inner.ipset_list(node).map_err(error::cluster)
    }

    /// `conntrack -L` of a node (`conntrack_entries` gives the same as values).
    fn conntrack(&self, node: &str) -> PyResult<String> {
        self.inner.conntrack(node).map_err(error::cluster)
    }

    /// `ip route` of a node or `pod/NS/NAME`.
    fn routes(&self, who: &str) -> PyResult<String> {
        self.inner.routes(who).map_err(error::cluster)
    }

    /// `ip neigh` of a node or `pod/NS/NAME`.
    fn neigh(&self, who: &str) -> PyResult<String> {
        self.inner.neigh(who).map_err(error::cluster)
    }

    /// `bridge fdb show br cbr0` of a node.
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

    /// Sets a pod's Ready condition; the endpoints follow and kube-proxy re-syncs.
    fn set_ready(&mut self, pod: &str, ready: bool) -> PyResult<()> {
        self.inner.set_ready(pod, ready).map_err(error::cluster)
    }

    /// Advances virtual time by `seconds` (conntrack, FDB and neighbour ageing).
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

    /// Adds Kubernetes objects (YAML or JSON text) to the running cluster, as `kubectl
    /// create -f` would; returns what this call loaded and skipped, `{"loaded": [...],
    /// "skipped": [...]}`, and adds it to `load_report`.
    fn add<'py>(&mut self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyDict>> {
        let report = self.inner.add_yaml(text).map_err(|e| error::load(py, e))?;
        self.report.loaded.extend(report.loaded.iter().cloned());
        self.report.skipped.extend(report.skipped.iter().cloned());
        self.report.warnings.extend(report.warnings.iter().cloned());
        report_dict(py, &report)
    }

    /// Deletes a Service (`svc/NS/NAME`), a pod (`pod/NS/NAME`; kube-proxy re-syncs) or a
    /// NetworkPolicy (`netpol/NS/NAME`; connections already open keep flowing).
    fn delete(&mut self, what: &str) -> PyResult<()> {
        if what.starts_with("svc/") {
            return self.inner.delete_service(what).map_err(error::cluster);
        }
        if what.starts_with("pod/") {
            return self.inner.delete_pod(what).map_err(error::cluster);
        }
        if what.starts_with("netpol/") {
            return self.inner.delete_network_policy(what).map_err(error::cluster);
        }
        Err(error::InvalidInput::new_err(format!(
            "cannot delete {what:?}: write svc/NS/NAME, pod/NS/NAME or netpol/NS/NAME"
        )))
    }

    /// The NetworkPolicies, as `netpol/NS/NAME`, in the order they were added.
    fn network_policies(&self) -> Vec<String> {
        self.inner.network_policies().iter().map(|p| format!("netpol/{}", p.key())).collect()
    }

    /// The NetworkPolicies selecting a pod (`pod/NS/NAME` or `NS/NAME`) and what they allow
    /// it: `{"pod", "policies": [{"name", "directions"}], "ingress_isolated",
    /// "egress_isolated", "ingress": [rule, ...], "egress": [rule, ...]}`, each rule one line
    /// (`NS/NAME spec.ingress[0]: from ...; ports ...`).
    fn policies_for<'py>(&self, py: Python<'py>, pod: &str) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.policies_for(pod).map_err(error::cluster)?;
        let d = PyDict::new(py);
        d.set_item("pod", &s.pod)?;
        let list = PyList::empty(py);
        for (name, dirs) in &s.policies {
            let p = PyDict::new(py);
            p.set_item("name", format!("netpol/{name}"))?;
            p.set_item("directions", dirs.iter().map(|d| d.as_str()).collect::<Vec<_>>())?;
            list.append(p)?;
        }
        d.set_item("policies", list)?;
        d.set_item("ingress_isolated", s.ingress_isolated)?;
        d.set_item("egress_isolated", s.egress_isolated)?;
        d.set_item("ingress", &s.ingress)?;
        d.set_item("egress", &s.egress)?;
        Ok(d)
    }

    /// Where NetworkPolicies are enforced (`post-dnat`, `pre-dnat` or `off`) and whether a
    /// pod's own node is judged by them (`allow` or `policy`), as `(enforcement,
    /// host_traffic)`.
    #[getter]
    fn policy_config(&self) -> (&'static str, &'static str) {
        let c = self.inner.policy_config();
        let e = match c.enforcement {
            podnet::policy::Enforcement::PostDnat => "post-dnat",
            podnet::policy::Enforcement::PreDnat => "pre-dnat",
            podnet::policy::Enforcement::Off => "off",
        };
        let h = match c.host_traffic {
            podnet::policy::HostTraffic::Allow => "allow",
            podnet::policy::HostTraffic::Policy => "policy",
        };
        (e, h)
    }

    /// Sets where NetworkPolicies are enforced: `enforcement` `post-dnat` (after
    /// kube-proxy's DNAT, as iptables-based CNIs), `pre-dnat` (egress before it, as an eBPF
    /// agent at the veth) or `off`; `host_traffic` `allow` (a pod's own node always passes)
    /// or `policy`. A value not given is kept.
    #[pyo3(signature = (enforcement = None, host_traffic = None))]
    fn set_policy_config(
        &mut self,
        enforcement: Option<&str>,
        host_traffic: Option<&str>,
    ) -> PyResult<()> {
        let mut c = self.inner.policy_config();
        if let Some(e) = enforcement {
            c.enforcement = podnet::policy::Enforcement::parse(e).ok_or_else(|| {
                error::InvalidInput::new_err(format!(
                    "enforcement '{e}' is not post-dnat, pre-dnat or off"
                ))
            })?;
        }
        if let Some(h) = host_traffic {
            c.host_traffic = podnet::policy::HostTraffic::parse(h).ok_or_else(|| {
                error::InvalidInput::new_err(format!("host_traffic '{h}' is not allow or policy"))
            })?;
        }
        self.inner.set_policy_config(c);
        Ok(())
    }

    fn __repr__(&self) -> String {
        let pods = self.inner.pods().iter().filter(|p| !p.deleted).count();
        format!(
            "<podnet.Cluster: {} nodes, {pods} pods, {} Services, kube-proxy {}>",
            self.inner.nodes().len(),
            self.inner.services().len(),
            self.inner.proxy_mode()
        )
    }
}

fn configured(
    mut c: podnet::Cluster,
    report: LoadReport,
    proxy_mode: Option<&str>,
    seed: Option<u64>,
) -> PyResult<Cluster> {
    if let Some(m) = proxy_mode {
        c.set_proxy_mode(m.parse().map_err(error::unknown)?);
    }
    if let Some(s) = seed {
        c.reseed(s);
    }
    Ok(Cluster { inner: c, report })
}

/// One traced flow: its outcome (`disposition`, `delivered_to`, `reason`), what each side
/// saw, its `path` on one line, and every hop (`hops`).
#[pyclass(name = "Trace", module = "podnet._podnet", frozen)]
struct Trace {
    inner: podnet::Trace,
}

#[pymethods]
impl Trace {
    /// The source as written.
    #[getter]
    fn src(&self) -> String {
        self.inner.from.clone()
    }
    /// The destination as written.
    #[getter]
    fn dst(&self) -> String {
        self.inner.to.clone()
    }
    /// The protocol the flow ran with: `tcp`, `udp`, `icmp` or `http`.
    #[getter]
    fn proto(&self) -> &'static str {
        self.inner.proto.name()
    }
    /// `delivered` (a server got the request), `dropped` or `rejected` (refused: a REJECT
    /// rule, nothing listening, or an HTTP intermediary answering an error itself).
    #[getter]
    fn disposition(&self) -> String {
        self.inner.disposition.to_string()
    }
    /// Whether the client's whole exchange completed (handshake, request, answer, close).
    #[getter]
    fn completed(&self) -> bool {
        self.inner.completed
    }
    /// Who got the request (`pod/NS/NAME`, `node/NAME`, ...), or None.
    #[getter]
    fn delivered_to(&self) -> Option<String> {
        self.inner.delivered_to.clone()
    }
    /// The client address and port the server saw (after any SNAT).
    #[getter]
    fn server_saw(&self) -> Option<String> {
        self.inner.server_saw.clone()
    }
    /// The address and port the client's answer came from (after reverse NAT).
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
    /// A stable code for why the request was not delivered (`no-route`, `rule`,
    /// `no_listener`, `http_no_route`, ...), or None.
    #[getter]
    fn reason(&self) -> Option<String> {
        self.inner.reason.clone()
    }
    /// The reason in words, naming the rule, device or proxy that decided.
    #[getter]
    fn reason_text(&self) -> Option<String> {
        self.inner.reason_text.clone()
    }
    /// What podnet could not model that may change this outcome in the real cluster (a
    /// policy it does not enforce selecting a pod on the path), one sentence each.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }
    /// The client's address and port.
    #[getter]
    fn client(&self) -> String {
        self.inner.client.clone()
    }
    /// For `trace_all`: the probability of this outcome.
    #[getter]
    fn probability(&self) -> Option<f64> {
        self.inner.probability
    }
    /// The first request packet's path on one line (`pod2 → node1 veth1 → cbr0 [DNAT ...]
    /// → ... → pod3`); None when the trace kept no hops.
    #[getter]
    fn path(&self) -> Option<String> {
        self.inner.path()
    }
    /// Every hop, in order.
    #[getter]
    fn hops(&self) -> Vec<Hop> {
        self.inner.hops.iter().cloned().map(|h| Hop { inner: h }).collect()
    }
    /// The trace as JSON (the same bytes as the Rust API and the golden files).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }
    /// The frames every device received, as a pcapng file (open it in Wireshark). Needs a
    /// trace made with `capture=True`.
    fn pcapng<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        if self.inner.frames.is_empty() {
            return Err(error::InvalidInput::new_err(
                "this trace kept no frames: trace with capture=True",
            ));
        }
        Ok(pyo3::types::PyBytes::new(py, &podnet::trace::pcap::to_pcapng(&self.inner.frames)))
    }
    /// Readable text: the path, the outcome, then hop by hop; `full` lists every packet.
    #[pyo3(signature = (full = false))]
    fn render(&self, full: bool) -> String {
        self.inner.render(full)
    }
    /// The title, the path and the outcome only.
    fn brief(&self) -> String {
        self.inner.render_brief()
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

/// One hop of a trace: where (`netns`, `device`), what (`action`: tx, rx, bridge, fdb,
/// arp, neigh, route, deliver, rule, nat, conntrack, log, drop, ignore), the rule and the
/// Kubernetes object behind it, and the headers before and after.
#[pyclass(name = "Hop", module = "podnet._podnet", frozen)]
struct Hop {
    inner: podnet::Hop,
}

fn view<'py>(py: Python<'py>, v: &Option<PacketView>) -> PyResult<Option<Bound<'py, PyDict>>> {
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
    Ok(Some(d))
}

#[pymethods]
impl Hop {
    /// Its position in the trace (0-based).
    #[getter]
    fn index(&self) -> usize {
        self.inner.index
    }
    /// The packet it belongs to (1-based; ARP frames are packets too).
    #[getter]
    fn packet(&self) -> u32 {
        self.inner.packet
    }
    /// `request` or `reply`.
    #[getter]
    fn direction(&self) -> &'static str {
        match self.inner.direction {
            podnet::trace::Dir::Request => "request",
            podnet::trace::Dir::Reply => "reply",
        }
    }
    /// The node it happened on (a pod's hops report its node).
    #[getter]
    fn node(&self) -> Option<String> {
        self.inner.node.clone()
    }
    /// The network namespace (`node1`, `pod/default/pod1`, `vpc`, `lb/default/api`, ...).
    #[getter]
    fn netns(&self) -> String {
        self.inner.netns.clone()
    }
    /// The device, if any.
    #[getter]
    fn device(&self) -> Option<String> {
        self.inner.device.clone()
    }
    /// What happened: tx, rx, ignore, bridge, fdb, arp, neigh, route, deliver, rule, nat,
    /// conntrack, log or drop.
    #[getter]
    fn action(&self) -> &'static str {
        self.inner.kind.action()
    }
    /// The netfilter hook (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING), if any.
    #[getter]
    fn hook(&self) -> Option<String> {
        self.inner.kind.hook().map(|h| h.to_string())
    }
    /// The table of a rule hop (`nat`, `filter`, `mangle`, `raw`; an nf_tables table with its
    /// family, `ip kube-proxy`).
    #[getter]
    fn table(&self) -> Option<String> {
        self.inner.kind.table().map(str::to_string)
    }
    /// The chain of a rule hop.
    #[getter]
    fn chain(&self) -> Option<String> {
        self.inner.kind.chain().map(str::to_string)
    }
    /// The rule as `iptables-save` prints it (without `-A CHAIN`).
    #[getter]
    fn rule(&self) -> Option<String> {
        self.inner.kind.rule().map(str::to_string)
    }
    /// The Kubernetes object the rule came from (`svc/default/web:http`).
    #[getter]
    fn origin(&self) -> Option<String> {
        self.inner.kind.origin().map(str::to_string)
    }
    /// A drop's stable reason code.
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        self.inner.kind.reason()
    }
    /// What happened, in words.
    #[getter]
    fn detail(&self) -> String {
        self.inner.detail.clone()
    }
    /// The headers before the hop: `{"proto", "src", "dst", "sport", "dport", "info",
    /// "src_mac", "dst_mac"}`.
    #[getter]
    fn before<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        view(py, &self.inner.before)
    }
    /// The headers after the hop, when it rewrote them (NAT).
    #[getter]
    fn after<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
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

/// Every seed scenario as `(id, figures, src, dst, proto)`, in the article's order.
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
                s.proto.name().to_string(),
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
