//! The `podnet` command-line tool.

use std::process::ExitCode;

use podnet::trace::{FlowProto, TraceOptions};
use podnet::{Cluster, Disposition};

const HELP: &str = "podnet: a software model of the Kubernetes pod network

USAGE:
    podnet demo [--json] [--full] [--seed N] [--cni bridge|aws-vpc]
        Trace every scenario of the seed article on the built-in reference cluster
        (--cni aws-vpc: its AWS VPC CNI variant, pods on ENI addresses).
    podnet trace --from SRC --to DST [--proto tcp|udp|icmp|http] [--sport N] [--seed N]
                 [--rounds N]   (N request/answer exchanges over one socket, as ping -c N)
                 [--proxy-mode iptables|ipvs] [--ipvs-scheduler rr|wrr|lc|wlc|sh|dh|sed|nq]
                 [--all-outcomes]   (every place the flow can land, with its probability; dry run)
                 [--show conntrack,fdb,neigh,routes,iptables] [--json] [--full]
                 [--header 'Name: value'] (HTTP)  [--pcap FILE] (pcapng, one interface per device)
        SRC: pod/NS/NAME, node/NAME or an IP. DST: IP:PORT, pod/NS/NAME:PORT,
        svc/NS/NAME:PORT (number or port name), http://IP[:PORT]/path; ICMP takes an IP.
        Several --from/--to pairs run in order on one cluster.
        --cluster PATH (repeatable): load Kubernetes YAML/JSON files or directories instead
        of the reference cluster (any command).
    podnet reach --from SRC [--from SRC...] --to DST [--to DST...] [--proto P] [--json]
        A reachability matrix: every source against every destination (dry runs).
    podnet check --cluster PATH [--json]
        Validate Kubernetes objects and print what was loaded and what was skipped.
    podnet iptables-save|kube-proxy-rules|ipvsadm|ipset|conntrack|routes|neigh|fdb|ip-rule|enis|dmesg
           --node NAME [--proxy-mode iptables|ipvs] [--cni bridge|aws-vpc] [-c]
           [--from SRC --to DST ...]
        Print a node's tables of the reference cluster, as the real tools print them
        (--node also takes pod/NS/NAME for routes, neigh and ip-rule; enis is ipamd's view).
        Flows given with --from/--to run first; iptables-save -c prints rule counters.
    --iptables NODE=FILE (repeatable, any command): run NODE on the rules of a real node's
        iptables-save instead of the generated ones; `podnet drift --node NODE --iptables
        NODE=FILE` prints how they differ from what kube-proxy would write (- missing, + extra).

EXIT CODES: 0 delivered/ok, 1 not delivered, 2 bad input.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("podnet: {e}");
            ExitCode::from(2)
        }
    }
}

struct Opts {
    json: bool,
    full: bool,
    seed: u64,
    aws: bool,
    from: Vec<String>,
    to: Vec<String>,
    proto: Option<FlowProto>,
    sport: Option<u16>,
    rounds: u32,
    show: Vec<String>,
    node: Option<String>,
    ipvs: Option<podnet::netfilter::ipvs::Scheduler>,
    cluster: Vec<std::path::PathBuf>,
    all_outcomes: bool,
    pcap: Option<std::path::PathBuf>,
    headers: Vec<(String, String)>,
    iptables: Vec<(String, std::path::PathBuf)>,
    counters: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        json: false,
        full: false,
        seed: 0,
        aws: false,
        pcap: None,
        headers: Vec::new(),
        iptables: Vec::new(),
        counters: false,
        from: vec![],
        to: vec![],
        proto: None,
        sport: None,
        rounds: 1,
        show: vec![],
        node: None,
        ipvs: None,
        cluster: vec![],
        all_outcomes: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val =
            |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--full" => o.full = true,
            "--all-outcomes" => o.all_outcomes = true,
            "--seed" => {
                o.seed = val("--seed")?.parse().map_err(|_| "--seed takes a number".to_string())?
            }
            "--from" => o.from.push(val("--from")?),
            "--to" => o.to.push(val("--to")?),
            "--proto" => {
                let v = val("--proto")?;
                o.proto =
                    Some(FlowProto::parse(&v).ok_or_else(|| {
                        format!("unknown --proto '{v}' (tcp, udp, icmp or http)")
                    })?);
            }
            "--sport" => {
                o.sport = Some(
                    val("--sport")?
                        .parse()
                        .map_err(|_| "--sport takes a port number".to_string())?,
                )
            }
            "--rounds" => {
                o.rounds = val("--rounds")?
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| "--rounds takes a count of at least 1".to_string())?
            }
            "--show" => o.show.extend(val("--show")?.split(',').map(str::to_string)),
            "--node" => o.node = Some(val("--node")?),
            "--cluster" => o.cluster.push(val("--cluster")?.into()),
            "--pcap" => o.pcap = Some(val("--pcap")?.into()),
            "--iptables" => {
                let v = val("--iptables")?;
                let (node, file) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--iptables '{v}': write NODE=FILE"))?;
                o.iptables.push((node.to_string(), file.into()));
            }
            "-c" | "--counters" => o.counters = true,
            "--header" => {
                let h = val("--header")?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header '{h}': write 'Name: value'"))?;
                o.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "--cni" => {
                let v = val("--cni")?;
                let cni: podnet::Cni =
                    v.parse().map_err(|_| format!("unknown --cni '{v}' (bridge or aws-vpc)"))?;
                o.aws = cni != podnet::Cni::Bridge;
            }
            "--proxy-mode" => {
                let v = val("--proxy-mode")?;
                o.ipvs = match v.parse::<podnet::ProxyMode>() {
                    Ok(podnet::ProxyMode::Iptables) => None,
                    Ok(podnet::ProxyMode::Ipvs(s)) if v == "ipvs" => Some(o.ipvs.unwrap_or(s)),
                    Ok(podnet::ProxyMode::Ipvs(s)) => Some(s),
                    Err(_) => return Err(format!("unknown --proxy-mode '{v}' (iptables or ipvs)")),
                };
            }
            "--ipvs-scheduler" => {
                let v = val("--ipvs-scheduler")?;
                o.ipvs = Some(podnet::netfilter::ipvs::Scheduler::parse(&v).ok_or_else(|| {
                    format!("unknown --ipvs-scheduler '{v}' (rr, wrr, lc, wlc, sh, dh, sed, nq)")
                })?);
            }
            other => return Err(format!("unknown argument '{other}' (see podnet --help)")),
        }
    }
    Ok(o)
}

fn run(args: &[String]) -> Result<u8, String> {
    let Some(cmd) = args.first() else {
        print!("{HELP}");
        return Ok(2);
    };
    if cmd == "--help" || cmd == "-h" || cmd == "help" {
        print!("{HELP}");
        return Ok(0);
    }
    let o = parse(&args[1..])?;
    match cmd.as_str() {
        "demo" => demo(&o),
        "check" => check(&o),
        "trace" => trace(&o),
        "reach" => reach(&o),
        "iptables-save" | "kube-proxy-rules" | "conntrack" | "routes" | "neigh" | "fdb"
        | "ipvsadm" | "ipset" | "ip-rule" | "enis" | "drift" | "dmesg" => {
            let node = o.node.clone().ok_or("this command needs --node NAME")?;
            let mut c = cluster(&o)?;
            if o.from.len() != o.to.len() {
                return Err("--from and --to come in pairs (flows run before printing)".into());
            }
            // Flows given with the table command run first, so counters and conntrack show
            // what they did.
            let opts = TraceOptions { proto: o.proto, sport: o.sport, ..TraceOptions::default() };
            for (f, t) in o.from.iter().zip(&o.to) {
                c.trace(f, t, &opts).map_err(|e| e.to_string())?;
            }
            let what = if cmd == "iptables-save" && o.counters { "iptables-save -c" } else { cmd };
            print!("{}", table(&c, what, &node)?);
            Ok(0)
        }
        other => Err(format!("unknown command '{other}' (see podnet --help)")),
    }
}

fn table(c: &Cluster, what: &str, node: &str) -> Result<String, String> {
    let t: podnet::Table = what.parse().map_err(|e: podnet::error::UnknownValue| e.to_string())?;
    c.show(t, node).map_err(|e| e.to_string())
}

fn cluster(o: &Opts) -> Result<Cluster, String> {
    let mut c = if o.cluster.is_empty() {
        if o.aws { Cluster::seed_aws_with(o.seed) } else { Cluster::seed_with(o.seed) }
    } else {
        let (c, report) = Cluster::from_files(&o.cluster).map_err(|e| e.to_string())?;
        eprintln!(
            "podnet: loaded {} objects, skipped {}",
            report.loaded.len(),
            report.skipped.len()
        );
        c
    };
    if let Some(s) = o.ipvs {
        c.set_proxy_mode(podnet::ProxyMode::Ipvs(s));
    }
    for (node, file) in &o.iptables {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--iptables {node}={}: {e}", file.display()))?;
        c.import_iptables(node, &text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(c)
}

fn check(o: &Opts) -> Result<u8, String> {
    if o.cluster.is_empty() {
        return Err(
            "check needs --cluster PATH (files or directories of Kubernetes YAML/JSON)".into()
        );
    }
    let (c, report) = Cluster::from_files(&o.cluster).map_err(|e| e.to_string())?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    println!("loaded {} objects:", report.loaded.len());
    for l in &report.loaded {
        println!("  {l}");
    }
    println!("skipped {}:", report.skipped.len());
    for s in &report.skipped {
        println!("  {s}");
    }
    println!("{} nodes, {} pods", c.nodes().len(), c.pods().len());
    Ok(0)
}

fn demo(o: &Opts) -> Result<u8, String> {
    let results = if o.aws { podnet::demo::run_aws(o.seed) } else { podnet::demo::run(o.seed) }
        .map_err(|e| e.to_string())?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    println!(
        "podnet demo: the seed article's scenarios on the reference cluster (seed {})",
        o.seed
    );
    if o.aws {
        let c = Cluster::seed_aws_with(o.seed);
        let ip = |n: &str| c.pods().iter().find(|p| p.name == n).map(|p| p.ip.to_string());
        println!(
            "  AWS VPC CNI variant: m5.large nodes in 192.168.0.0/24 (VPC router 192.168.0.1), no bridge;
  pods take ENI addresses from the top of the subnet."
        );
        println!(
            "  node1 192.168.0.11: pod1 {} (app=web, + sidecar), pod2 {} (app=client)",
            ip("pod1").unwrap_or_default(),
            ip("pod2").unwrap_or_default()
        );
        println!(
            "  node2 192.168.0.12: pod3 {} (app=web), pod4 {} (app=api)",
            ip("pod3").unwrap_or_default(),
            ip("pod4").unwrap_or_default()
        );
        println!("  node3 192.168.0.13: no pods.");
        println!(
            "  Service default/web 10.96.0.10: http TCP 80->8080, udp UDP 80->8080 (endpoints pod1, pod3)\n"
        );
    } else {
        println!(
            "  node1 192.168.0.1 pod CIDR 10.244.1.0/24: pod1 10.244.1.2 (app=web, + sidecar), pod2 10.244.1.3 (app=client)"
        );
        println!(
            "  node2 192.168.0.2 pod CIDR 10.244.2.0/24: pod3 10.244.2.2 (app=web), pod4 10.244.2.3 (app=api)"
        );
        println!("  node3 192.168.0.3 pod CIDR 10.244.3.0/24: no pods. VPC router 192.168.0.254.");
        println!(
            "  Service default/web 10.96.0.10: http TCP 80->8080, udp UDP 80->8080 (endpoints pod1, pod3)\n"
        );
    }
    let mut ok = true;
    for r in &results {
        let fig = if r.scenario.figures.contains('-') { "Figures" } else { "Figure" };
        println!("== {fig} {}: {} ==", r.scenario.figures, r.scenario.title);
        if !o.aws {
            println!("   {}", r.scenario.story);
        }
        print!("{}", r.trace.render(o.full));
        if r.scenario.figures == "1-3" {
            println!(
                "  port conflict: a second container binding 8080 in pod1 gets:\n    {}",
                podnet::demo::port_conflict(o.seed)
            );
        }
        println!();
        ok &= r.trace.disposition == Disposition::Delivered;
    }
    Ok(if ok { 0 } else { 1 })
}

fn reach(o: &Opts) -> Result<u8, String> {
    if o.from.is_empty() || o.to.is_empty() {
        return Err("reach needs at least one --from and one --to".into());
    }
    let c = cluster(o)?;
    let opts =
        TraceOptions { proto: o.proto, headers: o.headers.clone(), ..TraceOptions::default() };
    let from: Vec<&str> = o.from.iter().map(String::as_str).collect();
    let to: Vec<&str> = o.to.iter().map(String::as_str).collect();
    let m = c.reachability(&from, &to, &opts).map_err(|e| e.to_string())?;
    let all = m.iter().flatten().all(|t| t.completed);
    if o.json {
        let cells: Vec<Vec<serde_json::Value>> = m
            .iter()
            .map(|row| {
                row.iter()
                    .map(|t| {
                        serde_json::json!({"from": t.from, "to": t.to, "disposition": t.disposition,
                            "completed": t.completed, "delivered_to": t.delivered_to, "reason": t.reason})
                    })
                    .collect()
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&cells).map_err(|e| e.to_string())?);
        return Ok(if all { 0 } else { 1 });
    }
    let cell = |t: &podnet::Trace| match (&t.delivered_to, t.completed) {
        (Some(d), true) => format!("ok {d}"),
        (Some(d), false) => format!("NOT completed at {d}"),
        (None, _) => format!("{} ({})", t.disposition, t.reason.as_deref().unwrap_or("-")),
    };
    let w0 = from.iter().map(|s| s.len()).max().unwrap_or(0).max(4);
    let widths: Vec<usize> = (0..to.len())
        .map(|j| m.iter().map(|row| cell(&row[j]).len()).chain([to[j].len()]).max().unwrap_or(0))
        .collect();
    let mut line = format!("{:w0$}", "from");
    for (j, d) in to.iter().enumerate() {
        line.push_str(&format!("  {:w$}", d, w = widths[j]));
    }
    println!("{}", line.trim_end());
    for (i, row) in m.iter().enumerate() {
        let mut line = format!("{:w0$}", from[i]);
        for (j, t) in row.iter().enumerate() {
            line.push_str(&format!("  {:w$}", cell(t), w = widths[j]));
        }
        println!("{}", line.trim_end());
    }
    Ok(if all { 0 } else { 1 })
}

fn trace(o: &Opts) -> Result<u8, String> {
    if o.from.is_empty() || o.from.len() != o.to.len() {
        return Err("trace needs --from and --to, as many of one as of the other".into());
    }
    let mut c = cluster(o)?;
    if o.pcap.is_some() && o.all_outcomes {
        return Err("--pcap records one run of each flow; drop --all-outcomes".into());
    }
    let opts = TraceOptions {
        proto: o.proto,
        sport: o.sport,
        rounds: o.rounds,
        headers: o.headers.clone(),
        capture: o.pcap.is_some(),
        ..TraceOptions::default()
    };
    let mut all_ok = true;
    let mut traces = Vec::new();
    for (f, t) in o.from.iter().zip(&o.to) {
        if o.all_outcomes {
            for tr in c.trace_all(f, t, &opts).map_err(|e| e.to_string())? {
                all_ok &= tr.disposition == Disposition::Delivered;
                traces.push(tr);
            }
            continue;
        }
        let tr = c.trace(f, t, &opts).map_err(|e| e.to_string())?;
        all_ok &= tr.disposition == Disposition::Delivered;
        traces.push(tr);
    }
    if let Some(path) = &o.pcap {
        let frames: Vec<podnet::trace::pcap::CapturedFrame> =
            traces.iter().flat_map(|t| t.frames.iter().cloned()).collect();
        std::fs::write(path, podnet::trace::pcap::to_pcapng(&frames))
            .map_err(|e| format!("--pcap {}: {e}", path.display()))?;
        eprintln!("podnet: wrote {} frames to {}", frames.len(), path.display());
    }
    if o.json {
        println!("{}", serde_json::to_string_pretty(&traces).map_err(|e| e.to_string())?);
    } else {
        for t in &traces {
            if let Some(p) = t.probability {
                println!("outcome with probability {p:.4}:");
            }
            print!("{}", t.render(o.full));
        }
        for what in &o.show {
            for n in c.nodes().iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
                println!("--- {what} on {n} ---");
                let key = if what == "iptables" { "iptables-save" } else { what.as_str() };
                print!("{}", table(&c, key, &n)?);
            }
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}
