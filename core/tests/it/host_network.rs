//! hostNetwork pods: they run in the node's namespace, with the node's address and ports.

use std::collections::BTreeMap;

use podnet::netfilter::Proto;
use podnet::trace::TraceOptions;
use podnet::{Cluster, ClusterError, Container};

fn exporter() -> Vec<Container> {
    vec![Container {
        name: "exporter".into(),
        ports: vec![(Proto::TCP, 9100)],
        named_ports: Vec::new(),
    }]
}

#[test]
fn a_host_network_pod_serves_on_its_node_address_and_backs_services() {
    let mut c = Cluster::seed();
    let n2 = c.node_id("node2").unwrap();
    let labels = BTreeMap::from([("app".to_string(), "exporter".to_string())]);
    c.add_host_network_pod("monitoring", "exporter", n2, labels, exporter()).unwrap();
    assert_eq!(
        c.pods().iter().find(|p| p.name == "exporter").unwrap().ip.to_string(),
        "192.168.0.2"
    );
    let t = c
        .trace("pod/default/pod1", "pod/monitoring/exporter:9100", &TraceOptions::default())
        .unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/monitoring/exporter"));
    assert_eq!(
        t.server_saw.as_deref().map(|s| s.starts_with("10.244.1.2:")),
        Some(true),
        "no masquerade inside the VPC"
    );
    // A Service selecting it has the node's address as its endpoint.
    c.add_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: metrics, namespace: monitoring}\nspec:\n  selector: {app: exporter}\n  ports: [{port: 80, targetPort: 9100}]\n").unwrap();
    let rules = c.kube_proxy_payload("node1").unwrap();
    assert!(rules.contains("--to-destination 192.168.0.2:9100"), "{rules}");
    let t =
        c.trace("pod/default/pod2", "svc/monitoring/metrics:80", &TraceOptions::default()).unwrap();
    assert!(
        t.completed && t.delivered_to.as_deref() == Some("pod/monitoring/exporter"),
        "{}",
        t.render(true)
    );
    // A second one wanting the same port on the same node cannot bind it.
    let e = c
        .add_host_network_pod("monitoring", "exporter2", n2, BTreeMap::new(), exporter())
        .unwrap_err();
    assert!(matches!(e, ClusterError::AddrInUse { port: 9100, .. }), "{e}");
    assert!(e.to_string().contains("bound by container 'pod/monitoring/exporter/exporter'"), "{e}");
    // Deleting it closes its port.
    c.delete_pod("pod/monitoring/exporter").unwrap();
    let t = c.trace("pod/default/pod1", "192.168.0.2:9100", &TraceOptions::default()).unwrap();
    assert!(!t.completed);
    c.add_host_network_pod("monitoring", "exporter2", n2, BTreeMap::new(), exporter()).unwrap();
}

#[test]
fn host_network_pods_load_from_yaml_and_count_against_max_pods_on_aws() {
    let y = "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\ncni: aws-vpc\ninstanceType: t3.small\nnodeSubnet: 10.0.0.0/24\n---\n\
apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.20}]}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: agent, namespace: kube-system}\nspec: {nodeName: n1, hostNetwork: true, containers: [{name: a, image: x, ports: [{containerPort: 61678}]}]}\nstatus: {phase: Running, podIP: 10.0.0.20}\n";
    let (mut c, report) = Cluster::from_yaml(y).unwrap();
    assert!(report.loaded.contains(&"Pod/kube-system/agent".to_string()), "{report:?}");
    let enis = c.enis("n1").unwrap();
    assert!(enis.contains("0 assigned"), "a host-network pod takes no ENI address: {enis}");
    let t = c.trace("node/n1", "10.0.0.20:61678", &TraceOptions::default()).unwrap();
    assert_eq!(t.delivered_to.as_deref(), Some("pod/kube-system/agent"), "{}", t.render(true));
    // t3.small: max pods 11 = 9 with addresses + 2 host-network; this one is the 3rd.
    let n = c.node_id("n1").unwrap();
    for k in 0..8 {
        c.add_pod("default", &format!("p{k}"), n, None, BTreeMap::new(), Vec::new()).unwrap();
    }
    let e = c.add_pod("default", "p8", n, None, BTreeMap::new(), Vec::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains("Too many pods (11 of max 11: 8 pods with IPs and 3 host-network pods"),
        "{e}"
    );
}
