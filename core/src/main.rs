//! The `podnet` command-line tool: traces, reachability matrices, a node's tables and what
//! was loaded, on the reference cluster or on Kubernetes objects (`--cluster`).
//!
//! Every value is checked before any work is done; a flag that means nothing to a command
//! is an error. Exit codes: 0 ok (every flow delivered), 1 a flow not delivered or
//! differences found (`drift`), 2 bad input. A closed standard output ends the program
//! quietly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use podnet::endpoint::{Endpoint, Role};
use podnet::get::{Output, Resource};
use podnet::netfilter::ipvs::Scheduler;
use podnet::policy::{Enforcement, HostTraffic};
use podnet::trace::{FlowProto, TraceOptions};
use podnet::{Cluster, Cni, Disposition, ProxyMode, Table};

const EXIT_CODES: &str = "Exit codes: 0 ok (every flow delivered), 1 a flow not delivered or \
differences found, 2 bad input.";

/// A software model of the Kubernetes pod network: every hop of a flow, explained.
#[derive(Parser)]
#[command(
    name = "podnet",
    version,
    after_help = EXIT_CODES,
    arg_required_else_help = true,
    disable_help_subcommand = true,
    term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace every scenario of the seed article on the built-in reference cluster
    Demo(DemoArgs),
    /// Trace flows hop by hop, through every device, hook, chain and rule
    Trace(TraceArgs),
    /// A reachability matrix: every source against every destination (dry runs)
    Reach(ReachArgs),
    /// Run flows under iptables, IPVS and nftables mode and list those whose outcome differs
    #[command(name = "compare-modes")]
    CompareModes(CompareModesArgs),
    /// Read Kubernetes objects and say what was loaded and what was skipped, and why
    Check(CheckArgs),
    /// List what podnet loaded and allocated, as kubectl get does
    Get(GetArgs),
    /// A node's iptables rules, as iptables-save prints them (kernel form)
    #[command(name = "iptables-save")]
    IptablesSave(IptablesSaveArgs),
    /// What kube-proxy writes for a node (iptables-restore; nft -f in nftables mode)
    #[command(name = "kube-proxy-rules")]
    KubeProxyRules(TableArgs),
    /// A node's IPVS virtual servers, as ipvsadm -Ln prints them
    Ipvsadm(TableArgs),
    /// A node's ipsets, as ipset list prints them
    Ipset(TableArgs),
    /// A node's nf_tables ruleset, as nft list ruleset prints it
    Nft(TableArgs),
    /// A node's connection tracking table, as conntrack -L prints it
    Conntrack(TableArgs),
    /// The main routing table of a node or pod, as ip route prints it
    Routes(TableArgs),
    /// The local routing table of a node or pod, as ip route show table local prints it
    #[command(name = "routes-local")]
    RoutesLocal(TableArgs),
    /// The neighbour (ARP) table of a node or pod, as ip neigh prints it
    Neigh(TableArgs),
    /// A node's bridge forwarding database, as bridge fdb show prints it
    Fdb(TableArgs),
    /// The routing policy of a node or pod, as ip rule show prints it
    #[command(name = "ip-rule")]
    IpRule(TableArgs),
    /// ipamd's ENIs and addresses on a node (AWS VPC CNI)
    Enis(TableArgs),
    /// The kernel log lines LOG rules wrote on a node
    Dmesg(TableArgs),
    /// How a node's imported iptables-save differs from what kube-proxy would write
    Drift(DriftArgs),
    /// The NetworkPolicies selecting a pod and what they allow it
    Policy(PolicyArgs),
}

#[derive(Args)]
struct PolicyArgs {
    /// The pod: pod/NS/NAME or NS/NAME
    #[arg(long, value_name = "POD", required = true)]
    pod: String,
    /// Print it as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Where the cluster comes from and how it runs.
#[derive(Args)]
struct ClusterArgs {
    /// Kubernetes YAML/JSON files or directories to load instead of the reference cluster
    /// (repeatable)
    #[arg(long = "cluster", value_name = "PATH")]
    cluster: Vec<PathBuf>,
    /// Seed for every random choice (default: 0, or the PodnetConfig's)
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// The reference cluster's CNI: bridge, or aws-vpc for its AWS VPC CNI variant
    #[arg(long, value_name = "CNI", conflicts_with = "cluster")]
    cni: Option<Cni>,
    /// kube-proxy's mode on every node: iptables, nftables, ipvs, or ipvs:SCHEDULER
    #[arg(long, value_name = "MODE")]
    proxy_mode: Option<ProxyMode>,
    /// IPVS scheduler (rr, wrr, lc, wlc, sh, dh, sed, nq); implies --proxy-mode ipvs
    #[arg(long, value_name = "SCHEDULER", value_parser = scheduler)]
    ipvs_scheduler: Option<Scheduler>,
    /// Run NODE on the rules of a real node's iptables-save dump instead of the generated
    /// ones (repeatable)
    #[arg(long = "iptables", value_name = "NODE=FILE", value_parser = node_file)]
    iptables: Vec<(String, PathBuf)>,
    /// Where NetworkPolicies are enforced: post-dnat (after kube-proxy, as iptables-based
    /// CNIs do), pre-dnat (egress before kube-proxy, as an eBPF agent at the veth) or off
    #[arg(long, value_name = "WHERE", value_parser = enforcement)]
    policy_enforcement: Option<Enforcement>,
    /// Whether a pod's own node is judged by NetworkPolicies: allow (default) or policy
    #[arg(long, value_name = "HOW", value_parser = host_traffic)]
    policy_host_traffic: Option<HostTraffic>,
}

fn enforcement(s: &str) -> Result<Enforcement, String> {
    Enforcement::parse(s).ok_or_else(|| format!("'{s}' is not post-dnat, pre-dnat or off"))
}

fn host_traffic(s: &str) -> Result<HostTraffic, String> {
    HostTraffic::parse(s).ok_or_else(|| format!("'{s}' is not allow or policy"))
}

/// Flows: sources and destinations in pairs.
#[derive(Args)]
struct FlowArgs {
    /// Where a flow starts: pod/NS/NAME, node/NAME, host/NAME, or the IP of a pod or node
    /// (repeatable; the n-th --from goes with the n-th --to)
    #[arg(long, value_name = "SRC", value_parser = source)]
    from: Vec<String>,
    /// Where it goes: IP:PORT, pod/NS/NAME:PORT, svc/NS/NAME:PORT (a number or a port
    /// name), http://IP[:PORT]/PATH; ICMP takes an IP or pod/NS/NAME
    #[arg(long, value_name = "DST", value_parser = destination)]
    to: Vec<String>,
    /// tcp, udp, icmp or http (default: what the destination implies: a named port's
    /// protocol, http for a URL, else tcp)
    #[arg(long, value_name = "PROTO")]
    proto: Option<FlowProto>,
    /// The client's source port (default: an ephemeral port, as Linux picks one)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    sport: Option<u16>,
}

#[derive(Args)]
struct DemoArgs {
    /// Print the traces as JSON
    #[arg(long)]
    json: bool,
    /// List every packet of each exchange
    #[arg(long)]
    full: bool,
    /// Seed for every random choice
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// bridge, or aws-vpc for the AWS VPC CNI variant of the reference cluster
    #[arg(long, value_name = "CNI", default_value = "bridge")]
    cni: Cni,
}

#[derive(Args)]
struct TraceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    flows: FlowArgs,
    /// Request/answer exchanges over one socket (as ping -c N): every one after the first
    /// takes the established path
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Every place the flow can land, with its probability (dry runs)
    #[arg(long, conflicts_with = "pcap")]
    all_outcomes: bool,
    /// After the traces, print these tables of every node (comma-separated: conntrack,
    /// iptables-save, routes, neigh, fdb, ...)
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    show: Vec<Table>,
    /// An HTTP request header, 'Name: value' (repeatable)
    #[arg(long, value_name = "HEADER", value_parser = header)]
    header: Vec<(String, String)>,
    /// Write every frame each device received to FILE (pcapng, one interface per device)
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Print the traces as JSON
    #[arg(long, conflicts_with_all = ["brief", "full"])]
    json: bool,
    /// List every packet of each exchange
    #[arg(long)]
    full: bool,
    /// Print only the path and the outcome of each trace
    #[arg(long, conflicts_with = "full")]
    brief: bool,
}

#[derive(Args)]
struct ReachArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    flows: FlowArgs,
    /// An HTTP request header, 'Name: value' (repeatable)
    #[arg(long, value_name = "HEADER", value_parser = header)]
    header: Vec<(String, String)>,
    /// Print the matrix as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CompareModesArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    flows: FlowArgs,
    /// Every pod against every Service port (ClusterIP and port, with its protocol), besides
    /// the --from/--to pairs
    #[arg(long)]
    all: bool,
    /// Print the differences as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Kubernetes YAML/JSON files or directories (repeatable)
    #[arg(long = "cluster", value_name = "PATH", required = true)]
    cluster: Vec<PathBuf>,
    /// Print the load report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GetArgs {
    /// nodes, pods, services (svc) or endpoints (ep)
    #[arg(value_name = "RESOURCE")]
    resource: Resource,
    /// wide, json or yaml
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    output: Option<Output>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args)]
struct TableArgs {
    /// The node (or pod/NS/NAME for routes, routes-local, neigh and ip-rule)
    #[arg(long, value_name = "NAME", required = true)]
    node: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Flows to run first, so that counters and connection tracking show what they did
    #[command(flatten)]
    flows: FlowArgs,
}

#[derive(Args)]
struct IptablesSaveArgs {
    /// Print each rule's packet and byte counters (iptables-save -c)
    #[arg(short = 'c', long = "counters")]
    counters: bool,
    #[command(flatten)]
    table: TableArgs,
}

#[derive(Args)]
struct DriftArgs {
    /// The node whose imported rules to compare (with --iptables NODE=FILE)
    #[arg(long, value_name = "NAME", required = true)]
    node: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn scheduler(s: &str) -> Result<Scheduler, String> {
    Scheduler::parse(s).ok_or_else(|| "use rr, wrr, lc, wlc, sh, dh, sed or nq".into())
}

fn node_file(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() && !f.is_empty() => Ok((n.into(), f.into())),
        _ => Err("write NODE=FILE".into()),
    }
}

fn header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
        _ => Err("write 'Name: value'".into()),
    }
}

fn source(s: &str) -> Result<String, String> {
    Endpoint::parse_as(s, Role::Source).map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn destination(s: &str) -> Result<String, String> {
    Endpoint::parse_as(s, Role::Destination).map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// Why a command stopped: bad input (exit 2) or a write to a closed output (exit 0).
enum Stop {
    Bad(String),
    ClosedOutput,
}

impl<E: std::fmt::Display> From<E> for Stop {
    fn from(e: E) -> Stop {
        Stop::Bad(e.to_string())
    }
}

/// Standard output, locked once; a closed pipe stops the program quietly.
struct Out(std::io::StdoutLock<'static>);

impl Out {
    fn put(&mut self, s: &str) -> Result<(), Stop> {
        match self.0.write_all(s.as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Stop::ClosedOutput),
            Err(e) => Err(Stop::Bad(format!("writing the output: {e}"))),
        }
    }

    fn line(&mut self, s: &str) -> Result<(), Stop> {
        self.put(s)?;
        self.put("\n")
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and exit 0; a usage error exits 2.
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let mut out = Out(std::io::stdout().lock());
    let result = match cli.command {
        Command::Demo(a) => demo(&a, &mut out),
        Command::Trace(a) => trace(&a, &mut out),
        Command::Reach(a) => reach(&a, &mut out),
        Command::CompareModes(a) => compare_modes(&a, &mut out),
        Command::Check(a) => check(&a, &mut out),
        Command::Get(a) => get(&a, &mut out),
        Command::IptablesSave(a) => {
            let t = if a.counters { Table::IptablesSaveCounters } else { Table::IptablesSave };
            table(t, &a.table, &mut out)
        }
        Command::KubeProxyRules(a) => table(Table::KubeProxyRules, &a, &mut out),
        Command::Ipvsadm(a) => table(Table::Ipvsadm, &a, &mut out),
        Command::Ipset(a) => table(Table::Ipset, &a, &mut out),
        Command::Nft(a) => table(Table::Nft, &a, &mut out),
        Command::Conntrack(a) => table(Table::Conntrack, &a, &mut out),
        Command::Routes(a) => table(Table::Routes, &a, &mut out),
        Command::RoutesLocal(a) => table(Table::RoutesLocal, &a, &mut out),
        Command::Neigh(a) => table(Table::Neigh, &a, &mut out),
        Command::Fdb(a) => table(Table::Fdb, &a, &mut out),
        Command::IpRule(a) => table(Table::IpRule, &a, &mut out),
        Command::Enis(a) => table(Table::Enis, &a, &mut out),
        Command::Dmesg(a) => table(Table::Dmesg, &a, &mut out),
        Command::Drift(a) => drift(&a, &mut out),
        Command::Policy(a) => policy(&a, &mut out),
    };
    let _ = out.0.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Stop::ClosedOutput) => ExitCode::SUCCESS,
        Err(Stop::Bad(e)) => {
            // As clap words its own: `error: ...`.
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The cluster the arguments describe, with its proxy mode, seed and imported rules.
fn cluster(a: &ClusterArgs) -> Result<Cluster, Stop> {
    let mode = match (a.proxy_mode, a.ipvs_scheduler) {
        (Some(ProxyMode::Iptables), Some(_)) => {
            return Err(Stop::Bad(
                "--ipvs-scheduler goes with IPVS: drop it or use --proxy-mode ipvs".into(),
            ));
        }
        (_, Some(s)) => Some(ProxyMode::Ipvs(s)),
        (m, None) => m,
    };
    let mut c = if a.cluster.is_empty() {
        let seed = a.seed.unwrap_or(0);
        match a.cni.clone().unwrap_or(Cni::Bridge) {
            Cni::Bridge => Cluster::seed_with(seed),
            _ => Cluster::seed_aws_with(seed),
        }
    } else {
        let (mut c, report) = Cluster::from_files(&a.cluster)?;
        let inferred = match report.inferred.len() {
            0 => String::new(),
            n => format!(", inferred {n} settings"),
        };
        eprintln!(
            "podnet: loaded {} objects, skipped {}{inferred} (podnet check --cluster ... lists them)",
            report.loaded.len(),
            report.skipped.len()
        );
        if let Some(s) = a.seed {
            c.reseed(s);
        }
        c
    };
    if let Some(m) = mode {
        c.set_proxy_mode(m);
    }
    let mut pc = c.policy_config();
    if let Some(e) = a.policy_enforcement {
        pc.enforcement = e;
    }
    if let Some(h) = a.policy_host_traffic {
        pc.host_traffic = h;
    }
    c.set_policy_config(pc);
    for (node, file) in &a.iptables {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Stop::Bad(format!("--iptables {node}={}: {e}", file.display())))?;
        c.import_iptables(node, &text)
            .map_err(|e| Stop::Bad(format!("{}: {e}", file.display())))?;
    }
    Ok(c)
}

/// The flows' pairs, checked: as many sources as destinations.
fn pairs(f: &FlowArgs, need: bool) -> Result<Vec<(&str, &str)>, Stop> {
    if f.from.len() != f.to.len() || (need && f.from.is_empty()) {
        return Err(Stop::Bad(format!(
            "--from and --to come in pairs ({} --from, {} --to)",
            f.from.len(),
            f.to.len()
        )));
    }
    Ok(f.from.iter().map(String::as_str).zip(f.to.iter().map(String::as_str)).collect())
}

fn demo(a: &DemoArgs, out: &mut Out) -> Result<u8, Stop> {
    let aws = a.cni != Cni::Bridge;
    let results = if aws { podnet::demo::run_aws(a.seed) } else { podnet::demo::run(a.seed) }?;
    if a.json {
        out.line(&serde_json::to_string_pretty(&results)?)?;
        return Ok(0);
    }
    out.line(&format!(
        "podnet demo: the seed article's scenarios on the reference cluster (seed {})",
        a.seed
    ))?;
    if aws {
        let c = Cluster::seed_aws_with(a.seed);
        let ip = |n: &str| {
            c.pods().iter().find(|p| p.name == n).map(|p| p.ip.to_string()).unwrap_or_default()
        };
        out.line(
            "  AWS VPC CNI variant: m5.large nodes in 192.168.0.0/24 (VPC router 192.168.0.1), no bridge;\n  pods take ENI addresses from the top of the subnet (podnet's deterministic choice).",
        )?;
        out.line(&format!(
            "  node1 192.168.0.11: pod1 {} (app=web, + sidecar), pod2 {} (app=client)",
            ip("pod1"),
            ip("pod2")
        ))?;
        out.line(&format!(
            "  node2 192.168.0.12: pod3 {} (app=web), pod4 {} (app=api)",
            ip("pod3"),
            ip("pod4")
        ))?;
        out.line("  node3 192.168.0.13: no pods.")?;
    } else {
        out.line("  node1 192.168.0.1 pod CIDR 10.244.1.0/24: pod1 10.244.1.2 (app=web, + sidecar), pod2 10.244.1.3 (app=client)")?;
        out.line("  node2 192.168.0.2 pod CIDR 10.244.2.0/24: pod3 10.244.2.2 (app=web), pod4 10.244.2.3 (app=api)")?;
        out.line("  node3 192.168.0.3 pod CIDR 10.244.3.0/24: no pods. VPC router 192.168.0.254.")?;
    }
    out.line("  Service default/web 10.96.0.10: http TCP 80->8080, udp UDP 80->8080 (endpoints pod1, pod3)\n")?;
    let mut ok = true;
    for r in &results {
        let fig = if r.scenario.figures.contains('-') { "Figures" } else { "Figure" };
        out.line(&format!("== {fig} {}: {} ==", r.scenario.figures, r.scenario.title))?;
        if !aws {
            out.line(&format!("   {}", r.scenario.story))?;
        }
        out.put(&r.trace.render(a.full))?;
        if r.scenario.figures == "1-3" {
            out.line(&format!(
                "  port conflict: a second container binding 8080 in pod1 gets:\n    {}",
                podnet::demo::port_conflict(a.seed)
            ))?;
        }
        out.line("")?;
        ok &= r.trace.disposition == Disposition::Delivered;
    }
    Ok(if ok { 0 } else { 1 })
}

fn trace(a: &TraceArgs, out: &mut Out) -> Result<u8, Stop> {
    let flows = pairs(&a.flows, true)?;
    let mut c = cluster(&a.cluster)?;
    let opts = TraceOptions {
        proto: a.flows.proto,
        sport: a.flows.sport,
        rounds: a.rounds,
        headers: a.header.clone(),
        capture: a.pcap.is_some(),
        ..TraceOptions::default()
    };
    let mut all_ok = true;
    let mut traces = Vec::new();
    for (f, t) in flows {
        let got =
            if a.all_outcomes { c.trace_all(f, t, &opts)? } else { vec![c.trace(f, t, &opts)?] };
        for tr in got {
            all_ok &= tr.disposition == Disposition::Delivered;
            traces.push(tr);
        }
    }
    if let Some(path) = &a.pcap {
        let frames: Vec<podnet::trace::pcap::CapturedFrame> =
            traces.iter().flat_map(|t| t.frames.iter().cloned()).collect();
        std::fs::write(path, podnet::trace::pcap::to_pcapng(&frames))
            .map_err(|e| Stop::Bad(format!("--pcap {}: {e}", path.display())))?;
        eprintln!("podnet: wrote {} frames to {}", frames.len(), path.display());
    }
    if a.json {
        out.line(&serde_json::to_string_pretty(&traces)?)?;
    } else {
        for t in &traces {
            if let Some(p) = t.probability {
                out.line(&format!("outcome with probability {p:.4}:"))?;
            }
            out.put(&if a.brief { t.render_brief() } else { t.render(a.full) })?;
        }
    }
    for what in &a.show {
        let nodes: Vec<String> = c.nodes().iter().map(|n| n.name.clone()).collect();
        for n in nodes {
            out.line(&format!("--- {what} on {n} ---"))?;
            out.put(&c.show(*what, &n)?)?;
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

fn compare_modes(a: &CompareModesArgs, out: &mut Out) -> Result<u8, Stop> {
    let pairs = pairs(&a.flows, !a.all)?;
    if a.flows.sport.is_some() {
        return Err(Stop::Bad(
            "--sport means nothing to compare-modes (each outcome picks its own)".into(),
        ));
    }
    let c = cluster(&a.cluster)?;
    let mut flows: Vec<(String, String, Option<FlowProto>)> =
        pairs.iter().map(|(f, t)| (f.to_string(), t.to_string(), a.flows.proto)).collect();
    if a.all {
        flows.extend(c.every_pod_to_every_service_port());
    }
    let diffs = c.compare_modes(&flows)?;
    if a.json {
        out.line(&serde_json::to_string_pretty(&diffs)?)?;
    } else {
        for d in &diffs {
            out.put(&d.to_string())?;
        }
        out.line(&format!(
            "{} of {} flows differ between iptables, ipvs and nftables mode",
            diffs.len(),
            flows.len()
        ))?;
    }
    Ok(if diffs.is_empty() { 0 } else { 1 })
}

fn reach(a: &ReachArgs, out: &mut Out) -> Result<u8, Stop> {
    if a.flows.from.is_empty() || a.flows.to.is_empty() {
        return Err(Stop::Bad("reach needs at least one --from and one --to".into()));
    }
    if a.flows.sport.is_some() {
        return Err(Stop::Bad("--sport means nothing to reach (every cell picks its own)".into()));
    }
    let c = cluster(&a.cluster)?;
    let opts =
        TraceOptions { proto: a.flows.proto, headers: a.header.clone(), ..TraceOptions::default() };
    let from: Vec<&str> = a.flows.from.iter().map(String::as_str).collect();
    let to: Vec<&str> = a.flows.to.iter().map(String::as_str).collect();
    let m = c.reachability(&from, &to, &opts)?;
    let all = m.iter().flatten().all(|t| t.disposition == Disposition::Delivered);
    if a.json {
        let cells: Vec<Vec<serde_json::Value>> = m
            .iter()
            .map(|row| {
                row.iter()
                    .map(|t| {
                        serde_json::json!({"from": t.from, "to": t.to, "proto": t.proto,
                            "disposition": t.disposition, "completed": t.completed,
                            "delivered_to": t.delivered_to, "reason": t.reason,
                            "http_status": t.http_status, "warnings": t.warnings})
                    })
                    .collect()
            })
            .collect();
        out.line(&serde_json::to_string_pretty(&cells)?)?;
        return Ok(if all { 0 } else { 1 });
    }
    let warned = m.iter().flatten().any(|t| !t.warnings.is_empty());
    let cell = |t: &podnet::Trace| {
        let mut s = match (&t.delivered_to, t.disposition) {
            (Some(d), Disposition::Delivered) if t.completed => format!("ok {d}"),
            (Some(d), _) => format!("NOT completed at {d}"),
            (None, _) => format!("{} ({})", t.disposition, t.reason.as_deref().unwrap_or("-")),
        };
        if !t.warnings.is_empty() {
            s.push_str(" (!)");
        }
        s
    };
    let w0 = from.iter().map(|s| s.len()).max().unwrap_or(0).max(4);
    let widths: Vec<usize> = (0..to.len())
        .map(|j| m.iter().map(|row| cell(&row[j]).len()).chain([to[j].len()]).max().unwrap_or(0))
        .collect();
    let mut line = format!("{:w0$}", "from");
    for (j, d) in to.iter().enumerate() {
        line.push_str(&format!("  {:w$}", d, w = widths[j]));
    }
    out.line(line.trim_end())?;
    for (i, row) in m.iter().enumerate() {
        let mut line = format!("{:w0$}", from[i]);
        for (j, t) in row.iter().enumerate() {
            line.push_str(&format!("  {:w$}", cell(t), w = widths[j]));
        }
        out.line(line.trim_end())?;
    }
    if warned {
        out.line("(!) a pod on the path is selected by an object podnet does not model (trace the cell to see which); the real cluster may decide otherwise")?;
    }
    Ok(if all { 0 } else { 1 })
}

fn check(a: &CheckArgs, out: &mut Out) -> Result<u8, Stop> {
    let (c, report) = Cluster::from_files(&a.cluster)?;
    if a.json {
        out.line(&serde_json::to_string_pretty(&report)?)?;
        return Ok(0);
    }
    out.line(&format!("loaded {} objects:", report.loaded.len()))?;
    for l in &report.loaded {
        out.line(&format!("  {l}"))?;
    }
    out.line(&format!("skipped {}:", report.skipped.len()))?;
    for s in &report.skipped {
        out.line(&format!("  {s}"))?;
    }
    if !report.inferred.is_empty() {
        out.line(&format!("inferred {}:", report.inferred.len()))?;
        for s in &report.inferred {
            out.line(&format!("  {s}"))?;
        }
    }
    if !report.warnings.is_empty() {
        out.line(&format!("warnings {}:", report.warnings.len()))?;
        for s in &report.warnings {
            out.line(&format!("  {s}"))?;
        }
    }
    out.line(&format!("{} nodes, {} pods", c.nodes().len(), c.pods().len()))?;
    Ok(if report.warnings.is_empty() { 0 } else { 1 })
}

fn get(a: &GetArgs, out: &mut Out) -> Result<u8, Stop> {
    let c = cluster(&a.cluster)?;
    out.put(&c.get(a.resource, a.output.unwrap_or_default()))?;
    Ok(0)
}

fn policy(a: &PolicyArgs, out: &mut Out) -> Result<u8, Stop> {
    let c = cluster(&a.cluster)?;
    let s = c.policies_for(&a.pod)?;
    if a.json {
        out.line(&serde_json::to_string_pretty(&s)?)?;
    } else {
        out.put(&s.to_string())?;
    }
    Ok(0)
}

fn table(t: Table, a: &TableArgs, out: &mut Out) -> Result<u8, Stop> {
    let flows = pairs(&a.flows, false)?;
    let mut c = cluster(&a.cluster)?;
    // Flows run first, so counters and connection tracking show what they did.
    let opts =
        TraceOptions { proto: a.flows.proto, sport: a.flows.sport, ..TraceOptions::default() };
    for (f, to) in flows {
        c.trace(f, to, &opts)?;
    }
    let text = c.show(t, &a.node)?;
    if t == Table::Ipvsadm && !matches!(c.proxy_mode(), ProxyMode::Ipvs(_)) {
        eprintln!(
            "podnet: {} runs kube-proxy in {} mode, which programs no IPVS virtual servers (--proxy-mode ipvs switches it)",
            a.node,
            c.proxy_mode()
        );
    }
    if t == Table::Nft && c.proxy_mode() != ProxyMode::Nftables && text.is_empty() {
        eprintln!(
            "podnet: {} runs kube-proxy in {} mode, which writes no nf_tables rules (--proxy-mode nftables switches it)",
            a.node,
            c.proxy_mode()
        );
    }
    out.put(&text)?;
    Ok(0)
}

fn drift(a: &DriftArgs, out: &mut Out) -> Result<u8, Stop> {
    if !a.cluster.iptables.iter().any(|(n, _)| *n == a.node) {
        return Err(Stop::Bad(format!(
            "drift compares a node's imported rules: add --iptables {}=FILE (its iptables-save)",
            a.node
        )));
    }
    let c = cluster(&a.cluster)?;
    let text = c.show(Table::Drift, &a.node)?;
    if text.is_empty() {
        eprintln!(
            "podnet: {}'s rules are what kube-proxy and the egress agent would write",
            a.node
        );
    }
    out.put(&text)?;
    Ok(if text.is_empty() { 0 } else { 1 })
}
