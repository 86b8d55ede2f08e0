//! A user's own cluster, loaded as `kubectl` prints it with no PodnetConfig document: the
//! settings the objects imply are inferred and said, nodes in several subnets reach each
//! other through the VPC router, and bad input gets an error naming the object, the field
//! and the fix.

use podnet::Cluster;
use podnet::k8s::LoadError;
use podnet::trace::{Disposition, TraceOptions};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str) -> (Cluster, podnet::k8s::LoadReport) {
    Cluster::from_files(&[fixture(name)]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Delivered, with the path and what the server saw.
fn reach(c: &mut Cluster, from: &str, to: &str) -> podnet::Trace {
    let t = c.trace(from, to, &TraceOptions::default()).unwrap();
    assert_eq!(t.disposition, Disposition::Delivered, "{}", t.render(true));
    assert!(t.completed, "{}", t.render(true));
    t
}

#[test]
fn an_eks_shaped_dump_loads_as_it_is_and_its_settings_are_inferred() {
    let (mut c, report) = load("eks/cluster.yaml");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let inferred = report.inferred.join("\n");
    assert!(inferred.contains("node subnets 10.0.1.0/24 (router 10.0.1.1; ip-10-0-1-11.ec2.internal), 10.0.2.0/24 (router 10.0.2.1; ip-10-0-2-12.ec2.internal)"), "{inferred}");
    assert!(inferred.contains("cluster CIDR 10.32.0.0/23"), "{inferred}");
    assert!(inferred.contains("Service CIDR 172.20.0.0/17"), "{inferred}");
    // Each node's default route is its own subnet's router (AWS: the subnet's first host).
    assert_eq!(
        c.routes("node/ip-10-0-2-12.ec2.internal").unwrap().lines().next(),
        Some("default via 10.0.2.1 dev eth0")
    );
    // Pod to pod across subnets: through the VPC router, from one subnet to the other, and
    // no address translated.
    let t =
        reach(&mut c, "pod/shop/frontend-7d9c6b7f5-abcde", "pod/shop/backend-5c8f7d6b4-fghij:9000");
    assert!(
        t.path().unwrap().contains("vpc vpc0 → vpc2 → ip-10-0-2-12.ec2.internal eth0"),
        "{}",
        t.path().unwrap()
    );
    assert_eq!(t.server_saw.as_deref(), Some("10.32.0.5:33651"));
    // Pod to Service.
    let t = reach(&mut c, "pod/shop/frontend-7d9c6b7f5-abcde", "svc/shop/backend:api");
    assert_eq!(t.reply_from.as_deref(), Some("172.20.12.40:80"));
    // The NodePort through each node, from a pod of the other subnet's node.
    for node in ["10.0.1.11", "10.0.2.12"] {
        let t = reach(&mut c, "pod/shop/backend-5c8f7d6b4-fghij", &format!("{node}:31080"));
        assert_eq!(t.delivered_to.as_deref(), Some("pod/shop/frontend-7d9c6b7f5-abcde"));
    }
}

#[test]
fn a_gke_shaped_dump_loads_with_its_alias_ranges_and_service_range() {
    let (mut c, report) = load("gke/cluster.yaml");
    let inferred = report.inferred.join("\n");
    assert!(inferred.contains("node subnets 10.132.0.0/24 (router 10.132.0.1;"), "{inferred}");
    assert!(inferred.contains("cluster CIDR 10.52.0.0/22"), "{inferred}");
    assert!(inferred.contains("Service CIDR 34.118.224.0/20"), "{inferred}");
    // A named UDP port: DNS through kube-dns's Service.
    let t = reach(&mut c, "pod/prod/client", "svc/kube-system/kube-dns:dns");
    assert_eq!(t.proto, podnet::trace::FlowProto::Udp);
    assert_eq!(t.reply_from.as_deref(), Some("34.118.224.10:53"));
    let t = reach(&mut c, "pod/prod/client", "pod/prod/web-0:8080");
    assert!(t.path().unwrap().contains("vpc"), "{}", t.path().unwrap());
    // Every node address is the node's: the ExternalIPs too (LOCAL to kube-proxy's
    // addrtype match, so the NodePort answers there).
    for node in ["10.132.0.2", "10.132.0.3", "10.132.0.4", "34.76.10.2", "34.76.10.3"] {
        let t = reach(&mut c, "pod/prod/client", &format!("{node}:30443"));
        assert!(t.delivered_to.as_deref().unwrap().starts_with("pod/prod/web-"));
    }
    let local = c.routes_local("node/gke-prod-default-pool-1a2b3c4d-x1").unwrap();
    assert!(local.contains("local 34.76.10.2 dev eth0"), "{local}");
}

/// A PodnetConfig value overrides the inference, and a real conflict names the object, the
/// range and the field that sets it.
#[test]
fn podnet_config_overrides_and_conflicts_name_the_field() {
    let eks = std::fs::read_to_string(fixture("eks/cluster.yaml")).unwrap();
    let with = |cfg: &str| {
        Cluster::from_yaml(&format!(
            "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\n{cfg}---\n{eks}"
        ))
    };
    let (c, report) = with("nodeSubnets: [{cidr: 10.0.0.0/22}]\nclusterCidr: 10.32.0.0/16\nserviceCidr: 172.20.0.0/16\n").unwrap();
    assert!(report.inferred.is_empty(), "{:?}", report.inferred);
    assert_eq!(
        c.routes("node/ip-10-0-1-11.ec2.internal").unwrap().lines().next(),
        Some("default via 10.0.0.1 dev eth0")
    );
    let e = with("serviceCidr: 10.96.0.0/12\n").err().unwrap().to_string();
    assert!(e.ends_with("Service/default/kubernetes: ClusterIP 172.20.0.1 of svc/default/kubernetes is outside the Service CIDR 10.96.0.0/12; set serviceCidr in PodnetConfig"), "{e}");
    let e = with("nodeSubnet: 10.0.1.0/24\n").err().unwrap().to_string();
    assert!(e.ends_with("node 'ip-10-0-2-12.ec2.internal' has address 10.0.2.12, in none of the node subnets (10.0.1.0/24): add its subnet to nodeSubnets in PodnetConfig"), "{e}");
    let e = with("clusterCidr: 10.244.0.0/16\n").err().unwrap().to_string();
    assert!(e.ends_with("Node/ip-10-0-1-11.ec2.internal: pod CIDR 10.32.0.0/24 for node 'ip-10-0-1-11.ec2.internal' is not inside the cluster CIDR 10.244.0.0/16: set clusterCidr in PodnetConfig to a range holding every node's podCIDR"), "{e}");
    // A pod whose address is outside its node's podCIDR: the dump contradicts itself.
    let moved = eks.replace("podIP: 10.32.1.7", "podIP: 10.32.0.77");
    let e = Cluster::from_yaml(&moved).err().unwrap().to_string();
    assert!(e.ends_with("Pod/shop/backend-5c8f7d6b4-fghij: status.podIP 10.32.0.77 is outside the podCIDR 10.32.1.0/24 of Node/ip-10-0-2-12.ec2.internal (spec.nodeName): the two objects disagree; fix the pod's status.podIP or spec.nodeName, or the node's spec.podCIDR"), "{e}");
    let e = with("serviceNodePortRange: 30000-31000\n").err().unwrap().to_string();
    assert!(e.ends_with("nodePort 31080 of svc/shop/frontend is outside the NodePort range 30000-31000; set serviceNodePortRange in PodnetConfig"), "{e}");
    let e = with("vpcRouter: 10.0.1.1\n").err().unwrap().to_string();
    assert!(e.contains("vpcRouter without nodeSubnet"), "{e}");
    // A nodeSubnet without vpcRouter puts the router at the subnet's first host, on the
    // subnet (not 192.168.0.254).
    let one = "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nnodeSubnet: 10.9.0.0/24\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0/24}\nstatus: {addresses: [{type: InternalIP, address: 10.9.0.10}]}\n";
    let (c, _) = Cluster::from_yaml(one).unwrap();
    assert_eq!(c.routes("node/n1").unwrap().lines().next(), Some("default via 10.9.0.1 dev eth0"));
}

/// A type error names the field path and the line and column in the file (the item of a
/// `kind: List` included).
#[test]
fn type_errors_name_the_field_path_and_the_line() {
    let eks = std::fs::read_to_string(fixture("eks/cluster.yaml")).unwrap();
    let bad = eks.replace(
        "{name: api, port: 80, protocol: TCP",
        "{name: api, port: fourfortythree, protocol: TCP",
    );
    let e = Cluster::from_yaml(&bad).err().unwrap();
    let line = bad.lines().position(|l| l.contains("fourfortythree")).unwrap() + 1;
    assert_eq!(e.field(), Some("items[6].spec.ports[0].port"));
    assert_eq!(e.line(), Some(line));
    assert!(
        e.to_string().contains(&format!("line {line}, column 31: items[6].spec.ports[0].port: invalid type: string \"fourfortythree\", expected i32")),
        "{e}"
    );
    assert!(matches!(e, LoadError::Parse { .. }));
    // A document of its own, and JSON.
    let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - port: 80\n  - port: eighty\n";
    let e = Cluster::from_yaml(doc).err().unwrap();
    assert_eq!((e.field(), e.line(), e.column()), (Some("spec.ports[1].port"), Some(7), Some(11)));
    let json = "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"a\"},\n \"spec\": {\"ports\": [{\"port\": true}]}}]}\n";
    let e = Cluster::from_yaml(json).err().unwrap();
    assert_eq!((e.field(), e.line()), (Some("items[0].spec.ports[0].port"), Some(3)));
}

/// `check`'s flags: what `kubectl apply --validate=strict` and kube-proxy would flag.
#[test]
fn unknown_fields_empty_selectors_unknown_port_names_and_empty_input_are_flagged() {
    let eks = std::fs::read_to_string(fixture("eks/cluster.yaml")).unwrap();
    let bad = eks
        .replace("targetPort: api}", "targetPortt: api}")
        .replace("selector: {app: frontend}", "selector: {app: frontendd}")
        .replace(
            "{name: http, containerPort: 8080, protocol: TCP}",
            "{name: web, containerPort: 8080, protocol: TCP}",
        );
    let (_, report) = Cluster::from_yaml(&bad).unwrap();
    let w = report.warnings.join("\n");
    assert!(w.contains("Service/shop/backend: unknown field \"spec.ports[0].targetPortt\""), "{w}");
    assert!(w.contains("kubectl apply --validate=strict rejects it"), "{w}");
    assert!(
        w.contains("Service/shop/frontend: spec.selector {app: frontendd} selects no pod"),
        "{w}"
    );
    // With the typo fixed the selector matches, and the named port is checked.
    let bad = eks.replace(
        "{name: http, containerPort: 8080, protocol: TCP}",
        "{name: web, containerPort: 8080, protocol: TCP}",
    );
    let (_, report) = Cluster::from_yaml(&bad).unwrap();
    assert_eq!(
        report.warnings,
        [
            "Service/shop/frontend: spec.ports[0].targetPort \"http\" names no TCP container port of the pods it selects: kube-proxy has no endpoint for this port"
        ]
    );
    let (_, report) = Cluster::from_yaml("# nothing\n").unwrap();
    assert!(
        report.warnings[0].starts_with("the input holds no Kubernetes objects"),
        "{:?}",
        report.warnings
    );
}

/// The README's worked example: the objects and kube-proxy's ConfigMap, nothing else.
#[test]
fn the_worked_example_runs_kube_proxy_as_its_config_map_says() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/own-cluster");
    let (mut c, report) = Cluster::from_files(&[dir]).unwrap();
    assert!(
        report.inferred.iter().any(|s| s.starts_with(
            "cluster CIDR 10.32.0.0/16 from ConfigMap/kube-system/kube-proxy (clusterCIDR)"
        )),
        "{:?}",
        report.inferred
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let rules = c.kube_proxy_payload("ip-10-0-2-12.ec2.internal").unwrap();
    assert!(rules.contains("--dport 80 ! -s 10.32.0.0/16 -j KUBE-MARK-MASQ"), "{rules}");
    assert!(
        rules.contains("this must be the last rule in this chain\" -d 10.0.2.12 -j KUBE-NODEPORTS"),
        "{rules}"
    );
    let t = reach(&mut c, "pod/shop/frontend-7d9c6b7f5-abcde", "svc/shop/backend:api");
    assert_eq!(t.server_saw.as_deref(), Some("10.32.0.5:33651"));
}

/// Service fields kube-proxy and the API server honour: `allocateLoadBalancerNodePorts:
/// false` allocates no nodePort (Kubernetes API: "nodePorts will not be automatically
/// allocated for services with type LoadBalancer"); a given `healthCheckNodePort` is kept;
/// `trafficDistribution`, not modelled, is reported and warned about in traces.
#[test]
fn service_fields_are_honoured_or_reported() {
    let mut c = Cluster::seed();
    c.add_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: nlb, namespace: default}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.50\n  allocateLoadBalancerNodePorts: false\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32001\n  selector: {app: api}\n  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]\n",
    )
    .unwrap();
    let svc = c.services().iter().find(|s| s.name == "nlb").unwrap().clone();
    assert_eq!(svc.ports[0].node_port, 0);
    assert_eq!(svc.health_check_node_port, 32001);
    let rules = c.kube_proxy_payload("node1").unwrap();
    // No NodePort jump for it (the health check port's ACCEPT rule stays).
    assert!(
        !rules.lines().any(|l| l.starts_with("-A KUBE-NODEPORTS")
            && l.contains("default/nlb:http")
            && l.contains("-j KUBE-EXT-")),
        "{rules}"
    );
    assert!(rules.contains(
        "\"default/nlb:http health check node port\" -m tcp -p tcp --dport 32001 -j ACCEPT"
    ));
    let eks = std::fs::read_to_string(fixture("eks/cluster.yaml")).unwrap();
    let td = eks.replace(
        "selector: {app: backend}",
        "selector: {app: backend}\n    trafficDistribution: PreferClose",
    );
    let (mut c, report) = Cluster::from_yaml(&td).unwrap();
    assert!(report.skipped.iter().any(|s| {
        s.starts_with("Service/shop/backend: spec.trafficDistribution PreferClose not modelled")
    }));
    let t = reach(&mut c, "pod/shop/frontend-7d9c6b7f5-abcde", "svc/shop/backend:api");
    assert!(
        t.warnings.iter().any(|w| w.contains("trafficDistribution: PreferClose")),
        "{:?}",
        t.warnings
    );
}

/// NetworkPolicies are read in full and enforced (the named port resolved on the backend's
/// containerPorts), and a malformed one is an error naming the object and the field.
#[test]
fn network_policies_are_read_and_bad_ones_refused() {
    let eks = std::fs::read_to_string(fixture("eks/cluster.yaml")).unwrap();
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: backend-in, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: backend}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: frontend}}}], ports: [{port: api}]}]\n";
    let (mut c, report) = Cluster::from_yaml(&format!("{eks}---\n{np}")).unwrap();
    let p = &c.network_policies()[0];
    assert_eq!(
        (p.key(), p.types.clone()),
        ("shop/backend-in".to_string(), vec![podnet::policy::Direction::Ingress])
    );
    assert!(report.loaded.iter().any(|s| s == "NetworkPolicy/shop/backend-in"), "{report:?}");
    let t = reach(&mut c, "pod/shop/frontend-7d9c6b7f5-abcde", "svc/shop/backend:api");
    let allowed = t.hops.iter().find(|h| h.kind.action() == "policy").unwrap();
    assert_eq!(allowed.kind.origin(), Some("netpol/shop/backend-in"));
    let t = c
        .trace("pod/shop/backend-5c8f7d6b4-fghij", "svc/shop/backend:api", &TraceOptions::default())
        .unwrap();
    assert_eq!(t.reason.as_deref(), Some("policy_denied_ingress"), "{}", t.render(false));
    let bad = np.replace("{port: api}", "{port: api, endPort: 9001}");
    let e = Cluster::from_yaml(&format!("{eks}---\n{bad}")).err().unwrap().to_string();
    assert!(e.ends_with("NetworkPolicy/shop/backend-in: spec.ingress[0].ports[0]: endPort needs a numeric port, not \"api\""), "{e}");
}
