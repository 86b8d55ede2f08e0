//! NetworkPolicy meets kube-proxy's NAT: what a policy sees at a pod's host-side interface
//! is the packet after DNAT (the endpoint and its target port) and, for ingress, after SNAT
//! (a masqueraded client is its node's address; a hairpinned pod is its bridge's), as the
//! Kubernetes docs warn ("cluster ingress and egress mechanisms often require rewriting the
//! source or destination IP of packets … the behavior of NetworkPolicy … is undefined" for
//! rewritten traffic, and a pod's own node is always allowed). The pre-DNAT profile shows
//! the other answer an engine hooked before kube-proxy gives (amazon-network-policy-
//! controller-k8s#210).

use podnet::Cluster;
use podnet::policy::{Enforcement, HostTraffic, PolicyConfig};
use podnet::trace::{Disposition, Trace, TraceOptions};

fn netpol(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{}\n",
        spec.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
    )
}

fn with(policy: &str) -> Cluster {
    let mut c = Cluster::from_yaml(&crate::common::reference_yaml()).unwrap().0;
    c.add_yaml(policy).unwrap();
    c
}

fn run(c: &Cluster, from: &str, to: &str) -> Trace {
    c.fork().trace(from, to, &TraceOptions::default()).unwrap()
}

fn delivered(t: &Trace) {
    assert_eq!(t.disposition, Disposition::Delivered, "{}", t.render(false));
}

fn denied(t: &Trace, reason: &str, text: &str) {
    assert_eq!(t.reason.as_deref(), Some(reason), "{}", t.render(false));
    assert_eq!(t.reason_text.as_deref(), Some(text), "{}", t.render(false));
}

/// pod4 (app=api, node2) takes connections from one ipBlock only.
fn api_from(cidr: &str) -> String {
    netpol(
        "api-from",
        &format!(
            "podSelector: {{matchLabels: {{app: api}}}}\ningress:\n- from:\n  - ipBlock: {{cidr: {cidr}}}"
        ),
    )
}

#[test]
fn a_masqueraded_client_is_seen_as_the_node_that_masqueraded_it() {
    // The internet host (203.0.113.10) → node1's public address, NodePort 30080 of
    // default/api (externalTrafficPolicy: Cluster); node1 has no endpoint: it masquerades to
    // its own address (192.168.0.1) and forwards to pod4 on node2.
    let c = with(&api_from("203.0.113.10/32"));
    let t = run(&c, "host/internet", "203.0.113.1:30080");
    denied(
        &t,
        "policy_denied_ingress",
        "pod default/pod4 is isolated for ingress by netpol/default/api-from; no rule allows 192.168.0.1 → 10.244.2.3 TCP 8080",
    );
    let c = with(&api_from("192.168.0.1/32"));
    delivered(&run(&c, "host/internet", "203.0.113.1:30080"));
}

#[test]
fn with_external_traffic_policy_local_the_client_keeps_its_address() {
    // api-local: the same pod, externalTrafficPolicy: Local, NodePort 30090, through node2
    // (the node with the endpoint): no masquerade, pod4 sees the internet host.
    let mut c = with(&api_from("203.0.113.10/32"));
    crate::common::add_api_local(&mut c, &[], true);
    let t = run(&c, "host/internet", "203.0.113.2:30090");
    delivered(&t);
    assert_eq!(t.server_saw.as_deref().map(|s| s.split(':').next().unwrap()), Some("203.0.113.10"));
    // eTP Cluster through node1: masqueraded, denied.
    let mut c = with(&api_from("203.0.113.10/32"));
    crate::common::add_api_local(&mut c, &[], false);
    let t = run(&c, "host/internet", "203.0.113.1:30090");
    assert_eq!(t.reason.as_deref(), Some("policy_denied_ingress"), "{}", t.render(false));
}

#[test]
fn a_pod_reaching_itself_through_its_service_arrives_from_the_bridge() {
    // pod4 → default/api (its only endpoint is pod4): DNAT back to itself, hairpin
    // masquerade to node2's bridge address 10.244.2.1. A policy allowing pod4's own label
    // does not allow it: the packet is not from pod4's address any more.
    let c = with(&netpol(
        "api-from-api",
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: api}}",
    ));
    let t = run(&c, "pod/default/pod4", "svc/default/api:http");
    denied(
        &t,
        "policy_denied_ingress",
        "pod default/pod4 is isolated for ingress by netpol/default/api-from-api; no rule allows 10.244.2.1 → 10.244.2.3 TCP 8080",
    );
    // Its own address, not through the Service: never leaves the pod.
    delivered(&run(&c, "pod/default/pod4", "pod/default/pod4:8080"));
    // The bridge address as an ipBlock allows the hairpin.
    let c = with(&api_from("10.244.2.1/32"));
    delivered(&run(&c, "pod/default/pod4", "svc/default/api:http"));
}

#[test]
fn a_policy_on_the_target_port_allows_what_the_service_sends_to_its_port() {
    // default/api: port 80 → targetPort 8080. pod2 → ClusterIP:80 reaches pod4 on 8080.
    let on = |port: &str| {
        netpol(
            "api-port",
            &format!(
                "podSelector: {{matchLabels: {{app: api}}}}\ningress:\n- ports:\n  - port: {port}"
            ),
        )
    };
    let t = run(&with(&on("8080")), "pod/default/pod2", "svc/default/api:http");
    delivered(&t);
    let hop = t.hops.iter().find(|h| h.kind.action() == "policy").unwrap();
    assert_eq!(hop.kind.origin(), Some("netpol/default/api-port"));
    assert_eq!(hop.node.as_deref(), Some("node2"));
    assert_eq!(hop.device.as_deref(), Some("veth1"));
    assert!(
        hop.detail.ends_with("allowed by netpol/default/api-port spec.ingress[0]"),
        "{}",
        hop.detail
    );
    // The named port of pod4's container resolves to 8080 as well.
    delivered(&run(&with(&on("http")), "pod/default/pod2", "svc/default/api:http"));
    // The Service port is not what the pod receives.
    let t = run(&with(&on("80")), "pod/default/pod2", "svc/default/api:http");
    assert_eq!(t.reason.as_deref(), Some("policy_denied_ingress"), "{}", t.render(false));
}

/// pod2 (app=client) may open connections to the Service CIDR only.
fn client_to_service_cidr() -> String {
    netpol(
        "client-out",
        "podSelector: {matchLabels: {app: client}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {cidr: 10.96.0.0/12}",
    )
}

/// pod2 may open connections to app=api pods on 8080 only.
fn client_to_api_pods() -> String {
    netpol(
        "client-out",
        "podSelector: {matchLabels: {app: client}}\npolicyTypes: [Egress]\negress:\n- to:\n  - podSelector: {matchLabels: {app: api}}\n  ports: [{port: 8080}]",
    )
}

fn pre_dnat(mut c: Cluster) -> Cluster {
    c.set_policy_config(PolicyConfig {
        enforcement: Enforcement::PreDnat,
        ..PolicyConfig::default()
    });
    c
}

#[test]
fn post_dnat_egress_sees_the_endpoint() {
    // An ipBlock of the Service CIDR allows nothing after DNAT: the packet goes to pod4.
    let t = run(&with(&client_to_service_cidr()), "pod/default/pod2", "svc/default/api:http");
    denied(
        &t,
        "policy_denied_egress",
        "pod default/pod2 is isolated for egress by netpol/default/client-out; no rule allows 10.244.1.3 → 10.244.2.3 TCP 8080",
    );
    // A pod selector of the endpoints allows the Service.
    delivered(&run(&with(&client_to_api_pods()), "pod/default/pod2", "svc/default/api:http"));
}

#[test]
fn pre_dnat_egress_sees_the_cluster_ip_and_lets_the_service_bypass_pod_rules() {
    // Judged before kube-proxy: the ClusterIP is in the allowed block, so pod2 reaches pod4,
    // which its policy allows no rule to reach directly: the bypass of
    // amazon-network-policy-controller-k8s#210.
    let c = pre_dnat(with(&client_to_service_cidr()));
    let t = run(&c, "pod/default/pod2", "svc/default/api:http");
    delivered(&t);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"));
    let t = run(&c, "pod/default/pod2", "pod/default/pod4:8080");
    denied(
        &t,
        "policy_denied_egress",
        "pod default/pod2 is isolated for egress by netpol/default/client-out; no rule allows 10.244.1.3 → 10.244.2.3 TCP 8080",
    );
    // And the other way round: a pod selector no longer matches the ClusterIP.
    let c = pre_dnat(with(&client_to_api_pods()));
    let t = run(&c, "pod/default/pod2", "svc/default/api:http");
    denied(
        &t,
        "policy_denied_egress",
        "pod default/pod2 is isolated for egress by netpol/default/client-out; no rule allows 10.244.1.3 → 10.96.0.20 TCP 80",
    );
}

#[test]
fn the_pods_own_node_is_allowed_unless_host_traffic_is_policed() {
    let deny = netpol("deny", "podSelector: {}\npolicyTypes: [Ingress]");
    let mut c = with(&deny);
    // node2's kubelet probing pod4, and a pod of another node, denied.
    delivered(&run(&c, "node/node2", "pod/default/pod4:8080"));
    let t = run(&c, "node/node1", "pod/default/pod4:8080");
    assert_eq!(t.reason.as_deref(), Some("policy_denied_ingress"), "{}", t.render(false));
    c.set_policy_config(PolicyConfig {
        host_traffic: HostTraffic::Policy,
        ..PolicyConfig::default()
    });
    let t = run(&c, "node/node2", "pod/default/pod4:8080");
    denied(
        &t,
        "policy_denied_ingress",
        "pod default/pod4 is isolated for ingress by netpol/default/deny; no rule allows 10.244.2.1 → 10.244.2.3 TCP 8080",
    );
}

#[test]
fn enforcement_off_and_the_podnet_config_document() {
    let deny = netpol("deny", "podSelector: {}\npolicyTypes: [Ingress]");
    let yaml = crate::common::reference_yaml().replacen(
        "kind: PodnetConfig\n",
        "kind: PodnetConfig\nnetworkPolicy: {enforcement: 'off', hostTraffic: policy}\n",
        1,
    );
    let (c, report) = Cluster::from_yaml(&(yaml + "---\n" + &deny)).unwrap();
    assert!(
        report.skipped.iter().any(|s| s
            == "NetworkPolicy: 1 loaded, not enforced (networkPolicy.enforcement is off in the PodnetConfig)"),
        "{report:?}"
    );
    assert_eq!(
        c.policy_config(),
        PolicyConfig { enforcement: Enforcement::Off, host_traffic: HostTraffic::Policy }
    );
    delivered(&run(&c, "pod/default/pod2", "pod/default/pod4:8080"));
    let bad = crate::common::reference_yaml().replacen(
        "kind: PodnetConfig\n",
        "kind: PodnetConfig\nnetworkPolicy: {enforcement: ebpf}\n",
        1,
    );
    let e = Cluster::from_yaml(&bad).err().unwrap().to_string();
    assert!(
        e.contains("networkPolicy.enforcement (post-dnat, pre-dnat or off) 'ebpf' is not valid"),
        "{e}"
    );
}

#[test]
fn policy_summary_of_a_pod() {
    let c = with(
        &(netpol("deny", "podSelector: {}\npolicyTypes: [Ingress]")
            + "---\n"
            + &client_to_api_pods()),
    );
    let s = c.policies_for("pod/default/pod2").unwrap();
    assert_eq!(s.pod, "default/pod2");
    assert!(s.ingress_isolated && s.egress_isolated);
    assert!(s.ingress.is_empty());
    assert_eq!(
        s.egress,
        vec!["default/client-out spec.egress[0]: to pods app=api of namespace default; ports TCP 8080".to_string()]
    );
    let s = c.policies_for("pod/default/pod4").unwrap();
    assert!(s.ingress_isolated && !s.egress_isolated);
}

/// The AWS VPC CNI profile routes each pod over its own veth (no bridge): egress is judged
/// after PREROUTING in `ip_rcv`, ingress as the node transmits on the pod's veth, the same
/// verdicts as on a bridge.
#[test]
fn the_aws_profile_enforces_at_the_routed_veths() {
    let mut c = Cluster::seed_aws();
    c.add_yaml(&netpol(
        "api-from-client",
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}",
    ))
    .unwrap();
    let t = run(&c, "pod/default/pod2", "svc/default/api:http");
    delivered(&t);
    let hop = t.hops.iter().find(|h| h.kind.action() == "policy").unwrap();
    assert_eq!(hop.kind.origin(), Some("netpol/default/api-from-client"));
    let t = run(&c, "pod/default/pod1", "svc/default/api:http");
    assert_eq!(t.reason.as_deref(), Some("policy_denied_ingress"), "{}", t.render(false));
    // Egress on the routed veth, after DNAT and before it.
    c.add_yaml(&client_to_service_cidr()).unwrap();
    let t = run(&c, "pod/default/pod2", "svc/default/api:http");
    assert_eq!(t.reason.as_deref(), Some("policy_denied_egress"), "{}", t.render(false));
    let c = pre_dnat(c);
    delivered(&run(&c, "pod/default/pod2", "svc/default/api:http"));
}

/// Without br_netfilter, frames bridged between two pods of one node never meet conntrack:
/// a policy engine reading conntrack cannot tell a new connection from a reply, so podnet
/// lets them through and says so instead of guessing.
#[test]
fn untracked_bridged_frames_pass_with_a_warning() {
    // pod1 and pod2 share node1's bridge.
    let mut c = with(&netpol("deny", "podSelector: {}\npolicyTypes: [Ingress, Egress]"));
    let t = run(&c, "pod/default/pod2", "pod/default/pod1:8080");
    assert_eq!(t.reason.as_deref(), Some("policy_denied_egress"), "{}", t.render(false));
    c.set_sysctl("node1", "net.bridge.bridge-nf-call-iptables", 0).unwrap();
    let t = run(&c, "pod/default/pod2", "pod/default/pod1:8080");
    delivered(&t);
    assert!(
        t.warnings.iter().any(|w| w.starts_with(
            "NetworkPolicy egress rules were not enforced on packets conntrack never saw"
        )),
        "{:?}",
        t.warnings
    );
    assert!(
        t.warnings.iter().any(|w| w.starts_with("NetworkPolicy ingress rules")),
        "{:?}",
        t.warnings
    );
}
