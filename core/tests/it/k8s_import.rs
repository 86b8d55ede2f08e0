//! Loading clusters from Kubernetes objects, and every kind of bad input.

use std::path::PathBuf;

use podnet::Cluster;
use podnet::trace::TraceOptions;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shop")
}

#[test]
fn a_kubectl_dump_loads_and_traces() {
    let (mut c, report) = Cluster::from_files(&[fixture()]).unwrap();
    for o in [
        "Node/ip-10-0-0-11",
        "Pod/shop/frontend-7d9f8c6b5-abcde",
        "Service/shop/backend",
        "EndpointSlice/legacy/legacy-db-abc12",
        "Pod/legacy/db-0",
    ] {
        assert!(report.loaded.iter().any(|l| l == o), "{o} not loaded: {report:?}");
    }
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.starts_with("Pod/shop/backend-5c4b9d7f8-ddddd: not scheduled")),
        "{report:?}"
    );
    assert!(report.skipped.iter().any(|s| s.starts_with("ConfigMap/shop-config")), "{report:?}");
    assert!(report.skipped.iter().any(|s| s.starts_with("Ingress/shop")), "{report:?}");
    // The frontend reaches the backend Service; the named targetPort resolves per pod (9000
    // on one, 9001 on the other); the terminating pod gets no new connections.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let t = c
            .trace(
                "pod/shop/frontend-7d9f8c6b5-abcde",
                "svc/shop/backend:api",
                &TraceOptions::default(),
            )
            .unwrap();
        assert!(t.completed, "{}", t.render(true));
        seen.insert(t.delivered_to.unwrap());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![
            "pod/shop/backend-5c4b9d7f8-aaaaa".to_string(),
            "pod/shop/backend-5c4b9d7f8-bbbbb".to_string()
        ]
    );
    let rules = c.kube_proxy_payload("ip-10-0-0-11").unwrap();
    assert!(
        rules.contains("--to-destination 10.244.1.7:9000")
            && rules.contains("--to-destination 10.244.2.9:9001"),
        "{rules}"
    );
    // The Service whose EndpointSlice was given uses it.
    let t = c
        .trace(
            "pod/shop/frontend-7d9f8c6b5-abcde",
            "svc/legacy/legacy-db:pg",
            &TraceOptions::default(),
        )
        .unwrap();
    assert_eq!(t.delivered_to.as_deref(), Some("pod/legacy/db-0"));
    // The podnet document chose the underlay and the seed.
    assert!(c.routes("ip-10-0-0-11").unwrap().starts_with("default via 10.0.0.1 dev eth0"));
    // NodePort to the frontend from another node.
    let t = c.trace("node/ip-10-0-0-13", "10.0.0.11:31080", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
}

#[test]
fn the_same_objects_as_one_json_list_load_the_same() {
    let yaml = std::fs::read_to_string(fixture().join("30-legacy.json")).unwrap();
    let nodes = std::fs::read_to_string(fixture().join("10-nodes.yaml")).unwrap();
    let cfg = std::fs::read_to_string(fixture().join("00-podnet.yaml")).unwrap();
    let (mut c, report) = Cluster::from_yaml(&format!("{cfg}---\n{nodes}---\n{yaml}")).unwrap();
    assert!(report.loaded.iter().any(|l| l == "Pod/legacy/db-0"));
    let t =
        c.trace("node/ip-10-0-0-11", "svc/legacy/legacy-db:pg", &TraceOptions::default()).unwrap();
    assert_eq!(t.delivered_to.as_deref(), Some("pod/legacy/db-0"), "{}", t.render(false));
}

fn err(text: &str) -> podnet::k8s::LoadError {
    match Cluster::from_yaml(text) {
        Ok(_) => panic!("loaded but should not:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn bad_input_names_the_place_and_the_fix() {
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.0.0/24}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.5}]}\n";
    // A type error: path and line (counted in the whole file, after the first document).
    let e = err(&format!(
        "{node}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  clusterIP: 10.96.0.9\n  ports:\n  - port: eighty\n"
    ));
    let s = e.to_string();
    assert!(
        s.contains("document 2") && s.contains("spec.ports[0].port") && s.contains("eighty"),
        "{s}"
    );
    assert_eq!((e.line(), e.column()), (Some(13), Some(11)), "{s}");
    // Broken YAML.
    let e = err("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n");
    assert!(e.line().is_some(), "{e}");
    // No kind.
    let e = err("apiVersion: v1\nmetadata: {name: x}\n");
    assert!(e.to_string().contains("has no `kind`"), "{e}");
    // A node without a pod CIDR.
    let e = err(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.5}]}\n",
    );
    assert!(e.to_string().contains("Node/n1: no spec.podCIDR"), "{e}");
    // A pod whose IP is outside its node's pod CIDR.
    let e = err(&format!(
        "{node}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: a}}\nspec: {{nodeName: n1, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: 10.9.9.9}}\n"
    ));
    assert!(e.to_string().contains("Pod/a/p") && e.to_string().contains("outside"), "{e}");
    // A pod on a node that does not exist.
    let e = err(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: ghost, containers: [{name: c}]}\nstatus: {phase: Running, podIP: 10.244.0.2}\n",
    );
    assert!(e.to_string().contains("spec.nodeName") && e.to_string().contains("ghost"), "{e}");
    // A podnet document with an unknown field.
    let e = err("apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nproxyMod: ipvs\n");
    assert!(e.to_string().contains("unknown field `proxyMod`"), "{e}");
    // Files that do not exist.
    let e = Cluster::from_files(&[PathBuf::from("/nonexistent/dir")]).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
}

#[test]
fn carriage_returns_are_line_breaks_for_locations() {
    // Found by fuzzing: YAML breaks lines at a lone CR, so locations must count it too.
    let text = "apiVersion: v1\rkind: Service\rmetadata: {name: s}\rspec:\r  clusterIP: 10.96.0.9\r  ports:\r  - port: eighty\r";
    let e = Cluster::from_yaml(text).err().unwrap();
    assert_eq!((e.line(), e.column()), (Some(7), Some(11)), "{e}");
    let crlf = text.replace('\r', "\r\n");
    let e = Cluster::from_yaml(&crlf).err().unwrap();
    assert_eq!((e.line(), e.column()), (Some(7), Some(11)), "{e}");
}

#[test]
fn the_fuzzer_input_with_lone_carriage_returns_reports_a_line_inside_it() {
    let text = include_str!("../regressions/k8s-yaml-lone-cr.yaml");
    let e = Cluster::from_yaml(text).err().expect("the input is not valid YAML");
    let lines = text.split(['\n', '\r']).count();
    assert!(e.line().is_some_and(|l| l <= lines), "{e}");
}

#[test]
fn the_reference_cluster_written_as_yaml_runs_every_seed_scenario_like_the_built_in_one() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let (mut c, report) = Cluster::from_files(&[dir]).unwrap();
    assert!(report.loaded.contains(&"Ingress/default/shop".to_string()), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    let mut seed = Cluster::seed();
    for s in podnet::demo::scenarios().into_iter().filter(|s| !s.ipvs) {
        let o = TraceOptions { proto: Some(s.proto), ..TraceOptions::default() };
        let (a, b) = (c.trace(s.from, s.to, &o).unwrap(), seed.trace(s.from, s.to, &o).unwrap());
        assert!(a.completed, "{}: {}", s.id, a.render(true));
        assert_eq!(a.disposition, b.disposition, "{}", s.id);
        assert_eq!(a.reply_from, b.reply_from, "{}", s.id);
        assert_eq!(a.http_status, b.http_status, "{}", s.id);
        if !s.to.starts_with("svc/")
            && !s.to.contains("203.0.113.100")
            && !s.to.contains("203.0.113.200")
        {
            assert_eq!(a.delivered_to, b.delivered_to, "{}", s.id);
        }
    }
    // The podnet document is checked like the objects.
    let bad =
        "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\npublicIPs: {node1: 203.0.113.1}\n";
    let e = Cluster::from_yaml(bad).err().unwrap().to_string();
    assert!(e.contains("publicIPs needs an internet gateway: set `internet`"), "{e}");
    let bad = "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\ninternet: 203.0.113.0/24\nalbs: [{ingress: default/nope, publicIP: 203.0.113.5, privateIP: 192.168.0.5}]\n";
    let e = Cluster::from_yaml(bad).err().unwrap().to_string();
    assert!(e.contains("albs names Ingress default/nope which is not in the input"), "{e}");
    let bad = "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nsysctls: {node9: {net.ipv4.ip_forward: 0}}\n";
    let e = Cluster::from_yaml(bad).err().unwrap().to_string();
    assert!(
        e.contains("PodnetConfig sysctls.node9.net.ipv4.ip_forward: no node named 'node9'"),
        "{e}"
    );
}

#[test]
fn names_the_api_server_would_refuse_are_refused_not_written_into_rules() {
    // Found by fuzzing: a quote in a namespace broke kube-proxy's payload.
    let text = include_str!("../regressions/k8s-yaml-quote-in-namespace.yaml");
    let e = Cluster::from_yaml(text).err().expect("an invalid namespace");
    assert!(
        e.to_string()
            .contains("namespace 'tainers\":default' is invalid: it must be a DNS-1123 label"),
        "{e}"
    );
    let text = include_str!("../regressions/k8s-yaml-crash-2.json");
    assert!(Cluster::from_yaml(text).is_err());
    let mut c = Cluster::seed();
    let e = c
        .add_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: 9lives}\nspec: {ports: [{port: 80}]}\n")
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("Service name '9lives' is invalid: it must be a DNS-1035 label"),
        "{e}"
    );
    let e = c
        .add_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {ports: [{name: HTTP, port: 80}]}\n")
        .err()
        .unwrap();
    assert!(e.to_string().contains("Service port name 'HTTP' is invalid"), "{e}");
}

/// Objects that decide what traffic is allowed and that podnet does not model are not
/// silently dropped: each is reported, and every trace through a pod it selects says so.
/// Selection follows the APIs: a CiliumNetworkPolicy's `endpointSelector` in its own
/// namespace (matchExpressions with apimachinery's operators), an AdminNetworkPolicy's
/// `subject.namespaces` against the namespace's labels, `kubernetes.io/metadata.name`
/// included, which the API server sets on every namespace.
#[test]
fn unmodelled_policies_are_reported_and_warned_about_on_every_trace_they_touch() {
    let yaml = crate::common::reference_yaml()
        + r#"
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-only, namespace: default}
spec:
  endpointSelector:
    matchExpressions: [{key: app, operator: In, values: [web]}]
  ingress: []
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: lockdown}
spec:
  priority: 10
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
  ingress: []
"#;
    let (mut c, report) = Cluster::from_yaml(&yaml).unwrap();
    for o in ["CiliumNetworkPolicy/default/web-only", "AdminNetworkPolicy/lockdown"] {
        assert!(
            report.skipped.iter().any(|s| s.starts_with(&format!("{o}: not modelled"))),
            "{report:?}"
        );
    }
    let opts = TraceOptions::default();
    // pod1 and pod3 are app=web: a flow to the Service lands on one of them.
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &opts).unwrap();
    let to = t.delivered_to.clone().unwrap();
    assert_eq!(
        t.warnings,
        vec![format!(
            "{to} is selected by CiliumNetworkPolicy/default/web-only: a policy podnet does not enforce yet, so the real cluster may drop what this trace delivers"
        )]
    );
    assert!(t.render(false).contains("\n  warning: "), "{}", t.render(false));
    assert!(t.to_json().contains("\"warnings\": ["));
    // pod4 (app=api) in default: neither policy selects it, nor pod2.
    let t = c.trace("pod/default/pod2", "pod/default/pod4:8080", &opts).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert!(!t.to_json().contains("warnings"));
}
