//! The `podnet` command line: commands, output formats and exit codes (0 delivered, 1 not
//! delivered, 2 bad input).
#![cfg(feature = "cli")]

use std::process::Command;

fn podnet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_traces_every_figure_in_both_profiles() {
    let (code, out, _) = podnet(&["demo"]);
    assert_eq!(code, 0);
    for fig in ["Figures 1-3", "Figures 4-6", "Figure 7", "Figures 8-9", "Figure 10", "Figure 11"] {
        assert!(out.contains(&format!("== {fig}:")), "{fig} missing");
    }
    let (code, out, _) = podnet(&["demo", "--cni", "aws-vpc"]);
    assert_eq!(code, 0);
    assert!(out.contains("AWS VPC CNI variant"), "{out}");
    assert!(!out.contains("cbr0 ("), "no bridge in the AWS variant's traces");
}

#[test]
fn trace_json_exit_codes_and_bad_input() {
    let (code, out, _) =
        podnet(&["trace", "--from", "pod/default/pod2", "--to", "svc/default/web:http", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["disposition"], "delivered");
    assert_eq!(v[0]["reply_from"], "10.96.0.10:80");
    let (code, _, _) =
        podnet(&["trace", "--from", "pod/default/pod1", "--to", "10.244.9.9:80", "--proto", "udp"]);
    assert_eq!(code, 1, "nobody at 10.244.9.9");
    let (code, _, err) =
        podnet(&["trace", "--from", "pod/default/nope", "--to", "10.244.1.2:8080"]);
    assert_eq!(code, 2);
    assert!(err.contains("no pod named 'pod/default/nope'"), "{err}");
    let (code, _, err) = podnet(&["trace", "--from", "pod/default/pod1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--from and --to come in pairs (1 --from, 0 --to)"), "{err}");
    let (code, _, err) = podnet(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand 'frobnicate'"), "{err}");
}

#[test]
fn reach_prints_a_matrix() {
    let (code, out, _) = podnet(&[
        "reach",
        "--from",
        "pod/default/pod1",
        "--from",
        "pod/default/pod2",
        "--to",
        "svc/default/web:udp",
        "--to",
        "10.244.9.9:8080",
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 1, "10.244.9.9 is unreachable");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("from") && lines[0].contains("svc/default/web:udp"));
    for (row, from) in lines[1..].iter().zip(["pod/default/pod1", "pod/default/pod2"]) {
        let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        // The Service's endpoints are pod1 and pod3; nothing is at 10.244.9.9 (no pod, and
        // node1's route for 10.244.0.0/16 is the VPC's, which has no route to it).
        assert_eq!(cells[0], from, "{out}");
        assert!(cells[1].starts_with("ok pod/default/pod"), "{out}");
        assert!(cells[2].starts_with("dropped"), "{out}");
    }
}

#[test]
fn a_protocol_that_contradicts_the_named_port_is_refused() {
    // The `http` port of default/web is TCP; asking for UDP is an error, not a TCP flow.
    let (code, _, err) = podnet(&[
        "trace",
        "--from",
        "pod/default/pod2",
        "--to",
        "svc/default/web:http",
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("svc/default/web:http implies TCP, but UDP was asked for"), "{err}");
}

#[test]
fn a_named_port_decides_the_protocol() {
    // `udp` names the Service's UDP port: the flow is UDP without --proto.
    let (code, out, err) =
        podnet(&["trace", "--from", "pod/default/pod2", "--to", "svc/default/web:udp", "--json"]);
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t[0]["proto"], "udp", "{out}");
}

#[test]
fn pcap_and_drift_write_and_read_files() {
    let dir = std::env::temp_dir().join(format!("podnet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("flow.pcapng");
    let (code, _, err) = podnet(&[
        "trace",
        "--from",
        "pod/default/pod2",
        "--to",
        "svc/default/web:http",
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote ") && err.contains(" frames to "), "{err}");
    assert_eq!(&std::fs::read(&pcap).unwrap()[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
    let (_, saved, _) = podnet(&["iptables-save", "--node", "node1"]);
    let file = dir.join("node1.save");
    std::fs::write(&file, saved.replacen("COMMIT\n", "-A INPUT -j DROP\nCOMMIT\n", 1)).unwrap();
    let arg = format!("node1={}", file.display());
    let (code, out, err) = podnet(&["drift", "--node", "node1", "--iptables", &arg]);
    assert_eq!(code, 1, "differences found: {err}");
    assert_eq!(out, "*filter\n+ -A INPUT -j DROP\n");
    // The unchanged dump: no differences, exit 0.
    std::fs::write(&file, &saved).unwrap();
    let (code, out, err) = podnet(&["drift", "--node", "node1", "--iptables", &arg]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (code, _, err) =
        podnet(&["drift", "--node", "node1", "--iptables", "node1=/nonexistent/x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--iptables node1=/nonexistent/x"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn iptables_save_c_prints_the_counters_of_flows_run_first() {
    let (code, out, _) = podnet(&[
        "iptables-save",
        "--node",
        "node1",
        "-c",
        "--from",
        "pod/default/pod2",
        "--to",
        "svc/default/web:udp",
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 0, "{out}");
    let rules: Vec<&str> = out.lines().filter(|l| l.contains("-A ")).collect();
    assert!(rules.iter().all(|l| l.starts_with('[')), "{out}");
    // The one new connection went through exactly one endpoint's DNAT rule, once.
    let dnat: Vec<&&str> =
        rules.iter().filter(|l| l.contains("default/web:udp") && l.contains("-j DNAT")).collect();
    assert_eq!(dnat.iter().filter(|l| l.starts_with("[1:")).count(), 1, "{dnat:#?}");
    assert_eq!(dnat.iter().filter(|l| l.starts_with("[0:0]")).count(), dnat.len() - 1);
    // Without -c: no counters.
    let (_, plain, _) = podnet(&["iptables-save", "--node", "node1"]);
    assert!(plain.lines().filter(|l| l.contains("-A ")).all(|l| l.starts_with("-A ")));
}

/// `--help` of the tool and of `trace`, and the main error messages, as golden files:
/// regenerate with `PODNET_BLESS=1 cargo test -p podnet --test it cli::` when a change is
/// meant.
#[test]
fn help_and_error_messages_match_their_golden_files() {
    let cases: &[(&str, &[&str], i32, bool)] = &[
        ("help", &["--help"], 0, false),
        ("trace-help", &["trace", "--help"], 0, false),
        ("get-help", &["get", "--help"], 0, false),
        ("no-arguments", &[], 2, true),
        ("unknown-pod", &["trace", "--from", "pod/default/nope", "--to", "10.96.0.10:80"], 2, true),
        ("bad-endpoint", &["trace", "--from", "pod/x", "--to", "10.96.0.10:80"], 2, true),
        (
            "bad-table",
            &["trace", "--from", "pod/default/pod2", "--to", "10.96.0.10:80", "--show", "foo"],
            2,
            true,
        ),
        (
            "flag-of-another-command",
            &["reach", "--from", "pod/default/pod1", "--to", "10.96.0.10:80", "--pcap", "f"],
            2,
            true,
        ),
        (
            "protocol-mismatch",
            &[
                "trace",
                "--from",
                "pod/default/pod2",
                "--to",
                "svc/default/web:http",
                "--proto",
                "udp",
            ],
            2,
            true,
        ),
        (
            "unknown-port",
            &["trace", "--from", "pod/default/pod2", "--to", "svc/default/web:81"],
            2,
            true,
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cli");
    let bless = std::env::var_os("PODNET_BLESS").is_some();
    for (name, args, want, stderr) in cases {
        let (code, out, err) = podnet(args);
        assert_eq!(code, *want, "{name}: {out}{err}");
        let got = if *stderr { err } else { out };
        let path = dir.join(format!("{name}.txt"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; bless with PODNET_BLESS=1", path.display()));
        assert_eq!(got, golden, "{name} differs from {}", path.display());
    }
}

/// What a user of kubectl expects of a command line: `--flag=value`, `--version`, a flag
/// that means nothing to the command refused, values checked before any work (nothing is
/// printed before an error), a closed pipe ending the program quietly.
#[test]
fn the_command_line_behaves_like_kubectl() {
    let (code, out, _) = podnet(&["--version"]);
    assert_eq!((code, out.as_str()), (0, concat!("podnet ", env!("CARGO_PKG_VERSION"), "\n")));
    let (code, out, _) =
        podnet(&["trace", "--from=pod/default/pod2", "--to=10.96.0.10:80", "--brief"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (code, out, _) =
        podnet(&["trace", "--from", "pod/default/pod2", "--to", "10.96.0.10:80", "--show", "foo"]);
    assert_eq!((code, out.as_str()), (2, ""), "rejected before the trace printed");
    let (code, _, err) = podnet(&["ipvsadm", "--node", "node1"]);
    assert_eq!(code, 0);
    assert!(err.contains("node1 runs kube-proxy in iptables mode"), "{err}");
    // `podnet demo | head -1`: the reader goes away after one line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every `cargo run --release -- …` command of the README runs and exits 0, in a scratch
/// directory that holds what the commands name (the fixtures, a node's `iptables-save`).
#[test]
fn every_command_in_the_readme_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let dir = std::env::temp_dir().join(format!("podnet-readme-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("core/tests")).unwrap();
    let fixtures = dir.join("core/tests/fixtures");
    if !fixtures.exists() {
        std::os::unix::fs::symlink(root.join("core/tests/fixtures"), &fixtures).unwrap();
    }
    let examples = dir.join("examples");
    if !examples.exists() {
        std::os::unix::fs::symlink(root.join("examples"), &examples).unwrap();
    }
    let (_, saved, _) = podnet(&["iptables-save", "--node", "node1"]);
    std::fs::write(dir.join("node1.iptables-save"), saved).unwrap();
    let mut ran = 0;
    for line in readme.lines().filter_map(|l| l.strip_prefix("cargo run --release -- ")) {
        let cmd = line.split(" #").next().unwrap();
        // A command whose comment says `exit 1` shows a flow that is not delivered.
        let want = if line.contains("# exit 1") { 1 } else { 0 };
        let args: Vec<&str> = cmd.split_whitespace().collect();
        let out = Command::new(env!("CARGO_BIN_EXE_podnet"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(want),
            "podnet {cmd}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty() || !out.stderr.is_empty(), "podnet {cmd} printed nothing");
        ran += 1;
    }
    assert!(ran >= 15, "only {ran} commands found in the README");
    let _ = std::fs::remove_dir_all(dir);
}

/// The wrong answers the command line gave, each pinned where it was found.
#[test]
fn the_command_line_answers_what_the_cluster_does() {
    // An ALB's own 404 is not a delivery: exit 1, and the status line says who answered.
    let (code, out, _) =
        podnet(&["trace", "--from", "host/internet", "--to", "http://203.0.113.200/nothere"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\n  http: 404 Not Found from lb/default/shop\n"), "{out}");
    assert!(out.contains("\n  result: rejected;"), "{out}");
    // http:// means HTTP without --proto.
    let (code, out, _) = podnet(&[
        "trace",
        "--from",
        "host/internet",
        "--to",
        "http://203.0.113.200/api/orders",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v[0]["proto"].as_str(), v[0]["http_status"].as_u64()), (Some("http"), Some(200)));
    // A pod reaching its own address stays on its lo.
    let (code, out, _) =
        podnet(&["trace", "--from", "pod/default/pod1", "--to", "10.244.1.2:8080", "--brief"]);
    assert_eq!(code, 0);
    assert!(out.contains("\n  path: pod1 lo\n"), "{out}");
    // A policy podnet does not enforce is said, not skipped with one line; a NetworkPolicy
    // is enforced, and the drop names it.
    let dir = std::env::temp_dir().join(format!("podnet-netpol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/cluster.yaml");
    std::fs::write(
        dir.join("netpol.yaml"),
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny, namespace: default}\nspec: {endpointSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: default}\nspec: {podSelector: {matchLabels: {app: api}}}\n",
    )
    .unwrap();
    let (code, out, _) = podnet(&[
        "trace",
        "--cluster",
        fixture.to_str().unwrap(),
        "--cluster",
        dir.join("netpol.yaml").to_str().unwrap(),
        "--from",
        "pod/default/pod2",
        "--to",
        "pod/default/pod4:8080",
        "--brief",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  warning: pod/default/pod2 is selected by CiliumNetworkPolicy/default/deny: a policy podnet does not enforce yet"),
        "{out}"
    );
    assert!(out.contains("\n  reason: policy_denied_ingress: pod default/pod4 is isolated for ingress by netpol/default/deny; no rule allows 10.244.1.3 → 10.244.2.3 TCP 8080\n"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `check` prints what was inferred and what it flags, and exits 1 on a flag.
#[test]
fn check_prints_inferences_and_flags() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let example = root.join("examples/own-cluster");
    let (code, out, _) = podnet(&["check", "--cluster", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("inferred 3:\n  node subnets 10.0.1.0/24 (router 10.0.1.1;"), "{out}");
    assert!(
        out.contains(
            "  cluster CIDR 10.32.0.0/16 from ConfigMap/kube-system/kube-proxy (clusterCIDR)"
        ),
        "{out}"
    );
    let empty = std::env::temp_dir().join(format!("podnet-empty-{}.yaml", std::process::id()));
    std::fs::write(&empty, "# nothing here\n").unwrap();
    let (code, out, _) = podnet(&["check", "--cluster", empty.to_str().unwrap()]);
    let _ = std::fs::remove_file(&empty);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("warnings 1:\n  the input holds no Kubernetes objects"), "{out}");
}

/// `policy --pod` lists the policies selecting a pod and what they allow it (the rules in
/// the words of `kubectl describe networkpolicy`), and `--policy-enforcement` switches where
/// egress is judged: a Service CIDR ipBlock allows the Service before DNAT, not after.
#[test]
fn policy_lists_what_selects_a_pod_and_enforcement_is_a_flag() {
    let dir = std::env::temp_dir().join(format!("podnet-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/cluster.yaml");
    std::fs::write(
        dir.join("netpol.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: client-out, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: client}}\n  egress:\n  - to: [{ipBlock: {cidr: 10.96.0.0/12}}]\n    ports: [{port: 80}, {port: 53, protocol: UDP}]\n",
    )
    .unwrap();
    let netpol = dir.join("netpol.yaml");
    let cluster = ["--cluster", fixture.to_str().unwrap(), "--cluster", netpol.to_str().unwrap()];
    let args = |extra: &[&'static str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(cluster.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        podnet(&refs)
    };
    let (code, out, _) = run(args(&["policy", "--pod", "default/pod2"]));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "pod default/pod2: isolated for ingress, isolated for egress\n\
         selected by:\n  netpol/default/client-out (ingress, egress)\n\
         ingress allowed: nothing but replies to its own connections and, unless hostTraffic is policy, its own node\n\
         egress allowed:\n  default/client-out spec.egress[0]: to ipBlock 10.96.0.0/12; ports TCP 80, UDP 53\n"
    );
    let (code, out, _) = run(args(&["policy", "--pod", "pod/default/pod4", "--json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ingress_isolated"], false);
    let trace = |e: &'static str| {
        run(args(&[
            "trace",
            "--from",
            "pod/default/pod2",
            "--to",
            "svc/default/api:http",
            "--brief",
            "--policy-enforcement",
            e,
        ]))
    };
    let (code, out, _) = trace("post-dnat");
    assert_eq!(code, 1);
    assert!(out.contains("\n  reason: policy_denied_egress: pod default/pod2 is isolated for egress by netpol/default/client-out; no rule allows 10.244.1.3 → 10.244.2.3 TCP 8080\n"), "{out}");
    let (code, out, _) = trace("pre-dnat");
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = trace("ebpf");
    assert_eq!(code, 2);
    assert!(err.contains("'ebpf' is not post-dnat, pre-dnat or off"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
