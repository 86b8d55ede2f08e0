//! NetworkPolicy truth tables, in the style of the Kubernetes e2e NetworkPolicy suite
//! (`test/e2e/network/netpol`): namespaces x, y and z, each with pods a, b and c serving TCP
//! and UDP on 80 and 81 (container ports `serve-80-tcp`, `serve-81-udp`, …), spread over two
//! nodes; each case applies policies and probes the full 9×9 matrix of pod IPs on a port
//! and protocol. The expected matrices are written per case from the API's semantics
//! (`networking.k8s.io/v1` reference and the "Network Policies" concept page), as the e2e
//! suite writes its `Reachability` by hand: all allowed, then what the case's policies
//! cut. A pod reaching itself never leaves its namespace and is always allowed (the e2e
//! suite's `AllowLoopback`).

use podnet::Cluster;
use podnet::trace::{Disposition, TraceOptions};

const NS: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A pod of the matrix: its namespace, name, node (1 or 2) and address.
#[derive(Clone, Copy, Debug)]
struct P {
    ns: &'static str,
    pod: &'static str,
    node: u8,
    ip: [u8; 4],
}

impl P {
    fn is(&self, key: &str) -> bool {
        key == format!("{}/{}", self.ns, self.pod)
    }
}

fn pods() -> Vec<P> {
    // Spread so that every namespace has pods on both nodes.
    let place = [
        (1, 10),
        (1, 11),
        (2, 10), // x/a x/b x/c
        (2, 11),
        (1, 12),
        (2, 12), // y/…
        (1, 13),
        (2, 13),
        (1, 14), // z/…
    ];
    let mut v = Vec::new();
    for (i, ns) in NS.iter().enumerate() {
        for (j, pod) in PODS.iter().enumerate() {
            let (node, host) = place[i * 3 + j];
            v.push(P { ns, pod, node, ip: [10, 244, node - 1, host] });
        }
    }
    v
}

fn cluster_yaml() -> String {
    let mut y = String::from(
        "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nclusterCidr: 10.244.0.0/16\nnodeSubnet: 10.0.0.0/24\n",
    );
    for n in 1..=2 {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node{n}}}\nspec: {{podCIDR: 10.244.{}.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: 10.0.0.1{n}}}]}}\n",
            n - 1
        ));
    }
    for ns in NS {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n"
        ));
    }
    for p in pods() {
        let ip = p.ip.map(|b| b.to_string()).join(".");
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec:\n  nodeName: node{node}\n  containers:\n  - name: c\n    ports:\n    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}\n    - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}\n    - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}\n    - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: \"True\"}}]}}\n",
            pod = p.pod,
            ns = p.ns,
            node = p.node,
        ));
    }
    y
}

/// Which way to probe: port and protocol.
#[derive(Clone, Copy, Debug)]
struct Probe(u16, &'static str);

const TCP80: Probe = Probe(80, "tcp");
const TCP81: Probe = Probe(81, "tcp");
const UDP80: Probe = Probe(80, "udp");
const UDP81: Probe = Probe(81, "udp");

/// The matrix a probe gives: `got[from][to]`.
fn probe(c: &Cluster, probe: Probe) -> Vec<Vec<bool>> {
    let all = pods();
    let opts = TraceOptions { proto: Some(probe.1.parse().unwrap()), ..TraceOptions::default() };
    all.iter()
        .map(|from| {
            all.iter()
                .map(|to| {
                    let t = c
                        .fork()
                        .trace(
                            format!("pod/{}/{}", from.ns, from.pod).as_str(),
                            format!("pod/{}/{}:{}", to.ns, to.pod, probe.0).as_str(),
                            &opts,
                        )
                        .unwrap();
                    if t.disposition == Disposition::Delivered {
                        return true;
                    }
                    let reason = t.reason.clone().unwrap_or_default();
                    assert!(
                        reason.starts_with("policy_denied_"),
                        "{}/{} -> {}/{}: not delivered for another reason than a policy: {reason}: {:?}",
                        from.ns,
                        from.pod,
                        to.ns,
                        to.pod,
                        t.reason_text
                    );
                    false
                })
                .collect()
        })
        .collect()
}

/// Applies `policies` (YAML) to the matrix cluster and checks each probe against `expect`
/// (from, to) → allowed; self-connections are always allowed.
/// Whether a connection from the first pod to the second is allowed.
type Expect<'a> = &'a dyn Fn(&P, &P) -> bool;

fn case(name: &str, policies: &str, probes: &[(Probe, Expect<'_>)]) {
    let mut c = Cluster::from_yaml(&cluster_yaml()).unwrap().0;
    if !policies.trim().is_empty() {
        let r = c.add_yaml(policies).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
    }
    let all = pods();
    for (p, expect) in probes {
        let got = probe(&c, *p);
        let mut wrong = Vec::new();
        let mut table = String::from("      ");
        for t in &all {
            table.push_str(&format!("{}/{} ", t.ns, t.pod));
        }
        table.push('\n');
        for (i, f) in all.iter().enumerate() {
            table.push_str(&format!("{}/{}   ", f.ns, f.pod));
            for (j, t) in all.iter().enumerate() {
                let want = i == j || expect(f, t);
                let mark = match (want, got[i][j]) {
                    (true, true) => ".",
                    (false, false) => "X",
                    (true, false) => "!X",
                    (false, true) => "!.",
                };
                table.push_str(&format!("{mark:<4}"));
                if want != got[i][j] {
                    wrong.push(format!("{}/{} -> {}/{}", f.ns, f.pod, t.ns, t.pod));
                }
            }
            table.push('\n');
        }
        assert!(
            wrong.is_empty(),
            "case {name}, probe {:?}: {} cells differ ({}); '.' allowed, 'X' denied, '!' marks a wrong cell:\n{table}",
            p,
            wrong.len(),
            wrong.join(", ")
        );
    }
}

fn netpol(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{}\n---\n",
        spec.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
    )
}

fn all(_: &P, _: &P) -> bool {
    true
}

#[test]
fn no_policy_allows_everything() {
    case("none", "", &[(TCP80, &all), (UDP81, &all)]);
}

#[test]
fn default_deny_ingress() {
    let p = netpol("x", "deny", "podSelector: {}\npolicyTypes: [Ingress]");
    case("default deny ingress", &p, &[(TCP80, &|_, t| t.ns != "x"), (UDP80, &|_, t| t.ns != "x")]);
}

#[test]
fn default_deny_egress() {
    let p = netpol("x", "deny", "podSelector: {}\npolicyTypes: [Egress]");
    case("default deny egress", &p, &[(TCP80, &|f, _| f.ns != "x"), (UDP81, &|f, _| f.ns != "x")]);
}

#[test]
fn default_deny_all() {
    let p = netpol("x", "deny", "podSelector: {}\npolicyTypes: [Ingress, Egress]");
    case("default deny all", &p, &[(TCP80, &|f, t| f.ns != "x" && t.ns != "x")]);
}

#[test]
fn allow_ingress_from_same_namespace() {
    let p = netpol("x", "same-ns", "podSelector: {}\ningress:\n- from:\n  - podSelector: {}");
    case("same namespace", &p, &[(TCP80, &|f, t| t.ns != "x" || f.ns == "x")]);
}

#[test]
fn allow_ingress_from_one_pod_of_the_namespace() {
    let p = netpol(
        "x",
        "a-from-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}",
    );
    case("pod selector", &p, &[(TCP80, &|f, t| !t.is("x/a") || f.is("x/b"))]);
}

#[test]
fn allow_ingress_from_a_namespace() {
    let p = netpol(
        "x",
        "a-from-y",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}",
    );
    case("namespace selector", &p, &[(TCP80, &|f, t| !t.is("x/a") || f.ns == "y")]);
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_and() {
    let p = netpol(
        "x",
        "a-from-y-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: b}}",
    );
    case("AND", &p, &[(TCP80, &|f, t| !t.is("x/a") || f.is("y/b"))]);
}

#[test]
fn namespace_and_pod_selector_in_two_peers_is_or() {
    let p = netpol(
        "x",
        "a-from-y-or-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n  - podSelector: {matchLabels: {pod: b}}",
    );
    // The lone podSelector selects pods of the policy's own namespace only.
    case("OR", &p, &[(TCP80, &|f, t| !t.is("x/a") || f.ns == "y" || f.is("x/b"))]);
}

#[test]
fn namespace_selector_match_expressions_in() {
    let p = netpol(
        "x",
        "from-y-z",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: ns, operator: In, values: [y, z]}]",
    );
    case("ns In", &p, &[(TCP80, &|f, t| t.ns != "x" || f.ns != "x")]);
}

#[test]
fn namespace_selector_match_expressions_not_in() {
    let p = netpol(
        "x",
        "not-from-y",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: ns, operator: NotIn, values: [y]}]",
    );
    case("ns NotIn", &p, &[(TCP80, &|f, t| t.ns != "x" || f.ns != "y")]);
}

#[test]
fn namespace_selected_by_its_metadata_name_label() {
    // The API server labels every namespace with kubernetes.io/metadata.name.
    let p = netpol(
        "x",
        "from-z",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}",
    );
    case("metadata.name", &p, &[(TCP80, &|f, t| t.ns != "x" || f.ns == "z")]);
}

#[test]
fn pod_selector_match_expressions() {
    let p = netpol(
        "x",
        "not-from-a",
        "podSelector: {}\ningress:\n- from:\n  - podSelector:\n      matchExpressions: [{key: pod, operator: NotIn, values: [a]}]",
    );
    case("pod NotIn", &p, &[(TCP80, &|f, t| t.ns != "x" || (f.ns == "x" && f.pod != "a"))]);
    let p = netpol(
        "x",
        "from-a-b",
        "podSelector: {}\ningress:\n- from:\n  - podSelector:\n      matchExpressions: [{key: pod, operator: In, values: [a, b]}]",
    );
    case("pod In", &p, &[(TCP80, &|f, t| t.ns != "x" || (f.ns == "x" && f.pod != "c"))]);
    let p = netpol(
        "x",
        "from-labelled",
        "podSelector: {}\ningress:\n- from:\n  - podSelector:\n      matchExpressions: [{key: pod, operator: Exists}]\n    namespaceSelector: {}",
    );
    case("Exists, every namespace", &p, &[(TCP80, &all)]);
    let p = netpol(
        "x",
        "from-unlabelled",
        "podSelector: {}\ningress:\n- from:\n  - podSelector:\n      matchExpressions: [{key: pod, operator: DoesNotExist}]\n    namespaceSelector: {}",
    );
    case("DoesNotExist", &p, &[(TCP80, &|_, t| t.ns != "x")]);
}

#[test]
fn pod_selector_of_the_policy_picks_the_isolated_pods() {
    let p = netpol("x", "deny-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]");
    case("only x/a isolated", &p, &[(TCP80, &|_, t| !t.is("x/a"))]);
    let p =
        netpol("x", "deny-none", "podSelector: {matchLabels: {pod: d}}\npolicyTypes: [Ingress]");
    case("selects no pod", &p, &[(TCP80, &all)]);
}

#[test]
fn a_policy_applies_in_its_own_namespace_only() {
    let p = netpol("y", "deny", "podSelector: {}\npolicyTypes: [Ingress]");
    case("y only", &p, &[(TCP80, &|_, t| t.ns != "y")]);
}

#[test]
fn allow_one_port_number() {
    let p =
        netpol("x", "on-81", "podSelector: {}\ningress:\n- ports:\n  - {port: 81, protocol: TCP}");
    case(
        "port 81",
        &p,
        &[(TCP80, &|_, t| t.ns != "x"), (TCP81, &all), (UDP81, &|_, t| t.ns != "x")],
    );
}

#[test]
fn port_protocol_defaults_to_tcp() {
    let p = netpol("x", "on-80", "podSelector: {}\ningress:\n- ports:\n  - port: 80");
    case("TCP default", &p, &[(TCP80, &all), (UDP80, &|_, t| t.ns != "x")]);
}

#[test]
fn allow_udp_only() {
    let p =
        netpol("x", "udp-80", "podSelector: {}\ningress:\n- ports:\n  - {port: 80, protocol: UDP}");
    case(
        "UDP 80",
        &p,
        &[(UDP80, &all), (TCP80, &|_, t| t.ns != "x"), (UDP81, &|_, t| t.ns != "x")],
    );
}

#[test]
fn protocol_without_a_port_allows_every_port_of_it() {
    let p = netpol("x", "any-udp", "podSelector: {}\ningress:\n- ports:\n  - protocol: UDP");
    case("UDP, any port", &p, &[(UDP80, &all), (UDP81, &all), (TCP81, &|_, t| t.ns != "x")]);
}

#[test]
fn sctp_rules_do_not_allow_tcp() {
    let p =
        netpol("x", "sctp", "podSelector: {}\ningress:\n- ports:\n  - {port: 80, protocol: SCTP}");
    case("SCTP 80", &p, &[(TCP80, &|_, t| t.ns != "x"), (UDP80, &|_, t| t.ns != "x")]);
}

#[test]
fn named_ingress_port_resolves_on_the_selected_pod() {
    let p = netpol("x", "named", "podSelector: {}\ningress:\n- ports:\n  - port: serve-81-tcp");
    case("serve-81-tcp", &p, &[(TCP81, &all), (TCP80, &|_, t| t.ns != "x")]);
    // A name exists per protocol: serve-80-udp names UDP 80, and a TCP rule with that name
    // matches nothing.
    let p = netpol(
        "x",
        "named-udp",
        "podSelector: {}\ningress:\n- ports:\n  - {port: serve-80-udp, protocol: UDP}",
    );
    case("serve-80-udp", &p, &[(UDP80, &all), (UDP81, &|_, t| t.ns != "x")]);
    let p = netpol(
        "x",
        "named-wrong-proto",
        "podSelector: {}\ningress:\n- ports:\n  - {port: serve-80-udp, protocol: TCP}",
    );
    case(
        "serve-80-udp over TCP",
        &p,
        &[(TCP80, &|_, t| t.ns != "x"), (UDP80, &|_, t| t.ns != "x")],
    );
}

#[test]
fn end_port_ranges() {
    let p = netpol(
        "x",
        "80-81",
        "podSelector: {}\ningress:\n- ports:\n  - {port: 80, endPort: 81, protocol: TCP}",
    );
    case("80-81", &p, &[(TCP80, &all), (TCP81, &all)]);
    let p =
        netpol("x", "81-90", "podSelector: {}\ningress:\n- ports:\n  - {port: 81, endPort: 90}");
    case("81-90", &p, &[(TCP80, &|_, t| t.ns != "x"), (TCP81, &all)]);
}

#[test]
fn several_ports_in_one_rule() {
    let p = netpol(
        "x",
        "two-ports",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n  ports:\n  - {port: 80, protocol: TCP}\n  - {port: 81, protocol: UDP}",
    );
    let from_y = |f: &P, t: &P| t.ns != "x" || f.ns == "y";
    case("two ports", &p, &[(TCP80, &from_y), (UDP81, &from_y), (TCP81, &|_, t| t.ns != "x")]);
}

#[test]
fn rules_of_one_policy_add_up() {
    let p = netpol(
        "x",
        "two-rules",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n  ports: [{port: 80}]\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n  ports: [{port: 81}]",
    );
    case(
        "two rules",
        &p,
        &[
            (TCP80, &|f, t| !t.is("x/a") || f.is("x/b")),
            (TCP81, &|f, t| !t.is("x/a") || f.ns == "y"),
        ],
    );
}

#[test]
fn policies_selecting_one_pod_add_up() {
    let p = netpol(
        "x",
        "from-b",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}",
    ) + &netpol(
        "x",
        "from-z-c",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: z}}\n    podSelector: {matchLabels: {pod: c}}",
    );
    case("union", &p, &[(TCP80, &|f, t| !t.is("x/a") || f.is("x/b") || f.is("z/c"))]);
}

#[test]
fn deny_all_and_allow_some_add_up_to_allow_some() {
    let p = netpol("x", "deny", "podSelector: {}\npolicyTypes: [Ingress]")
        + &netpol(
            "x",
            "allow-y",
            "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}",
        );
    case("deny + allow", &p, &[(TCP80, &|f, t| t.ns != "x" || f.ns == "y")]);
}

#[test]
fn an_empty_rule_allows_everything_and_no_rule_nothing() {
    let p = netpol("x", "allow-all", "podSelector: {}\ningress:\n- {}");
    case("ingress: [{}]", &p, &[(TCP80, &all), (UDP81, &all)]);
    let p = netpol("x", "no-rules", "podSelector: {}\ningress: []");
    case("ingress: []", &p, &[(TCP80, &|_, t| t.ns != "x")]);
    let p = netpol("x", "allow-all-out", "podSelector: {}\npolicyTypes: [Egress]\negress:\n- {}");
    case("egress: [{}]", &p, &[(TCP80, &all)]);
}

#[test]
fn policy_types_default_to_ingress_and_to_egress_when_egress_rules_exist() {
    // No policyTypes, egress rules: Ingress and Egress; no ingress rule, so x's pods take
    // no connection, and may open connections to y only.
    let p = netpol(
        "x",
        "egress-only-rules",
        "podSelector: {}\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}",
    );
    case("default types", &p, &[(TCP80, &|f, t| t.ns != "x" && (f.ns != "x" || t.ns == "y"))]);
    // policyTypes [Egress]: ingress rules written are ignored, and ingress is not isolated.
    let p = netpol(
        "x",
        "egress-typed",
        "podSelector: {}\npolicyTypes: [Egress]\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: nothing}}",
    );
    case("Egress only", &p, &[(TCP80, &|f, _| f.ns != "x")]);
}

#[test]
fn egress_to_a_namespace() {
    let p = netpol(
        "x",
        "to-y",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}",
    );
    case(
        "egress to y",
        &p,
        &[(TCP80, &|f, t| f.ns != "x" || t.ns == "y"), (UDP80, &|f, t| f.ns != "x" || t.ns == "y")],
    );
}

#[test]
fn egress_to_a_port() {
    let p = netpol(
        "x",
        "to-81",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: 81",
    );
    case("egress port 81", &p, &[(TCP81, &all), (TCP80, &|f, _| f.ns != "x")]);
}

#[test]
fn egress_named_port_resolves_on_the_destination_pod() {
    let p = netpol(
        "x",
        "to-named",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- ports:\n  - port: serve-80-tcp",
    );
    case("egress serve-80-tcp", &p, &[(TCP80, &all), (TCP81, &|f, _| f.ns != "x")]);
}

#[test]
fn egress_to_an_ip_block() {
    // Node 2's pod range: x/c, y/a, y/c, z/b.
    let p = netpol(
        "x",
        "to-node2-pods",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {cidr: 10.244.1.0/24}",
    );
    case("egress ipBlock", &p, &[(TCP80, &|f, t| f.ns != "x" || t.node == 2)]);
}

#[test]
fn ingress_from_an_ip_block_and_its_except() {
    let p = netpol(
        "x",
        "from-node1-pods",
        "podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.244.0.0/24}",
    );
    case("ipBlock", &p, &[(TCP80, &|f, t| t.ns != "x" || f.node == 1)]);
    // y/b is 10.244.0.12.
    let p = netpol(
        "x",
        "from-node1-but-y-b",
        "podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.244.0.0/24, except: [10.244.0.12/32]}",
    );
    case("ipBlock except", &p, &[(TCP80, &|f, t| t.ns != "x" || (f.node == 1 && !f.is("y/b")))]);
    let p = netpol(
        "x",
        "from-anywhere",
        "podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 0.0.0.0/0}",
    );
    case("0.0.0.0/0", &p, &[(TCP80, &all)]);
}

#[test]
fn every_namespace_selector() {
    let p =
        netpol("x", "from-all-ns", "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}");
    case("namespaceSelector {}", &p, &[(TCP80, &all)]);
    let p = netpol(
        "x",
        "from-all-a",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}\n    podSelector: {matchLabels: {pod: a}}",
    );
    case("every namespace's a", &p, &[(TCP80, &|f, t| t.ns != "x" || f.pod == "a")]);
}

#[test]
fn both_ends_must_allow() {
    // x may open connections to y; y takes connections from nobody: denied at y.
    let p = netpol(
        "x",
        "to-y",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}",
    ) + &netpol("y", "deny", "podSelector: {}\npolicyTypes: [Ingress]");
    case(
        "egress yes, ingress no",
        &p,
        // x may only reach y, and y takes nothing: x reaches nothing.
        &[(TCP80, &|f, t| t.ns != "y" && f.ns != "x")],
    );
    // y takes connections from x: allowed at both ends.
    let p = netpol(
        "x",
        "to-y",
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}",
    ) + &netpol(
        "y",
        "from-x",
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}",
    );
    case(
        "both allow",
        &p,
        &[(TCP80, &|f, t| (t.ns != "y" || f.ns == "x") && (f.ns != "x" || t.ns == "y"))],
    );
}

#[test]
fn replies_pass_through_isolated_pods() {
    // x/a may open connections to x/b only and takes none; its replies to... nobody, but
    // x/b's replies to x/a come back: the connection is allowed, both directions flow.
    let p = netpol(
        "x",
        "a-locked",
        "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress, Egress]\negress:\n- to:\n  - podSelector: {matchLabels: {pod: b}}",
    );
    let rule = |f: &P, t: &P| !t.is("x/a") && (!f.is("x/a") || t.is("x/b"));
    case("stateful", &p, &[(TCP80, &rule), (UDP81, &rule)]);
}

#[test]
fn policies_added_and_deleted_at_run_time() {
    let mut c = Cluster::from_yaml(&cluster_yaml()).unwrap().0;
    let before = probe(&c, TCP80);
    assert!(before.iter().flatten().all(|&b| b));
    c.add_yaml(&netpol("z", "deny", "podSelector: {}\npolicyTypes: [Ingress]")).unwrap();
    let during = probe(&c, TCP80);
    let all = pods();
    for (i, f) in all.iter().enumerate() {
        for (j, t) in all.iter().enumerate() {
            assert_eq!(during[i][j], i == j || t.ns != "z", "{f:?} -> {t:?}");
        }
    }
    c.delete_network_policy("netpol/z/deny").unwrap();
    assert_eq!(probe(&c, TCP80), before);
    let e = c.delete_network_policy("netpol/z/deny").unwrap_err().to_string();
    assert_eq!(e, "no networkpolicy named 'netpol/z/deny': write it as netpol/NAMESPACE/NAME");
}
