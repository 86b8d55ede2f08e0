//! Adding Kubernetes objects to a running cluster: API-server admission of Services,
//! host-local addresses for new pods, and the errors a user meets.

use podnet::Cluster;
use podnet::trace::TraceOptions;

const ECHO: &str = "\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: tcp, port: 7000, targetPort: 7007, protocol: TCP}
";

#[test]
fn a_service_without_cluster_ip_is_allocated_one_and_its_pods_serve_the_target_port() {
    let mut c = Cluster::seed();
    let report = c.add_yaml(ECHO).unwrap();
    assert_eq!(report.loaded, vec!["Service/default/echo".to_string()]);
    let rules = c.kube_proxy_payload("node1").unwrap();
    let line = rules
        .lines()
        .find(|l| l.contains("default/echo:tcp cluster IP") && l.starts_with("-A KUBE-SERVICES"))
        .unwrap_or_else(|| panic!("no KUBE-SERVICES rule for echo:\n{rules}"));
    let ip: std::net::Ipv4Addr =
        line.split(" -d ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    // Dynamic picks come from the upper band of 10.96.0.0/12 (the lower 256 stay static).
    let off = u32::from(ip) - u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0));
    assert!((257..(1 << 20) - 1).contains(&off), "{ip} is not in the dynamic band");
    // pod1 and pod3 did not listen on 7007 before; now the Service reaches them.
    let mut landed = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let t =
            c.trace("pod/default/pod2", format!("{ip}:7000"), &TraceOptions::default()).unwrap();
        assert!(t.completed, "{}", t.render(true));
        assert_eq!(t.reply_from.as_deref(), Some(format!("{ip}:7000").as_str()));
        landed.insert(t.delivered_to.unwrap());
    }
    assert_eq!(
        landed.into_iter().collect::<Vec<_>>(),
        vec!["pod/default/pod1".to_string(), "pod/default/pod3".to_string()]
    );
}

#[test]
fn cluster_ip_allocation_is_deterministic_for_a_seed() {
    let pick = |seed| {
        let mut c = Cluster::seed_with(seed);
        c.add_yaml(ECHO).unwrap();
        c.kube_proxy_payload("node1").unwrap()
    };
    assert_eq!(pick(3), pick(3));
    assert_eq!(pick(3), std::thread::spawn(move || pick(3)).join().unwrap());
    // Another process loading the same objects with the same seed allocates the same.
    let dir = std::env::temp_dir().join(format!("podnet-k8s-add-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.yaml"), crate::common::reference_yaml()).unwrap();
    std::fs::write(dir.join("echo.yaml"), ECHO).unwrap();
    let load = |seed: u64| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_podnet"))
            .args(["kube-proxy-rules", "--node", "node1", "--seed", &seed.to_string(), "--cluster"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (mut c, _) = Cluster::from_files(std::slice::from_ref(&dir)).unwrap();
    c.reseed(3);
    let there = load(3);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(there, c.kube_proxy_payload("node1").unwrap());
}

#[test]
fn a_pod_without_status_gets_the_next_host_local_address_and_joins_the_service() {
    let mut c = Cluster::seed();
    let pod = "\
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: default, labels: {app: web}}
spec:
  nodeName: node2
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 8080}]
";
    c.add_yaml(pod).unwrap();
    // node2 had .2 and .3; host-local goes on round robin after the last reserved.
    assert!(
        c.routes("pod/default/web2").unwrap().contains("10.244.2.4"),
        "{}",
        c.routes("pod/default/web2").unwrap()
    );
    let t = c.trace("pod/default/pod2", "pod/default/web2:8080", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.server_saw.as_deref().map(|s| s.starts_with("10.244.1.3:")), Some(true));
    let rules = c.kube_proxy_payload("node1").unwrap();
    assert!(rules.contains("--to-destination 10.244.2.4:8080"), "{rules}");
}

#[test]
fn conflicts_and_duplicates_are_refused_with_the_object_named() {
    let mut c = Cluster::seed();
    let taken = "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n";
    let e = c.add_yaml(taken).unwrap_err().to_string();
    assert_eq!(
        e,
        "<input>: document 1: Service/default/other: Service CIDR 10.96.0.10 is already allocated in 10.96.0.0/12"
    );
    let node_port = "apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.99\n  ports: [{port: 80, nodePort: 30081}]\n";
    let e = c.add_yaml(node_port).unwrap_err().to_string();
    assert_eq!(
        e,
        "<input>: document 1: Service/default/np: NodePort range 30081 is already allocated in 30000-32767"
    );
    // The refused Service kept nothing: its ClusterIP is free for the next one.
    let retry = node_port.replace("30081", "30999");
    c.add_yaml(&retry).unwrap();
    let e = c.add_yaml(ECHO.replace("echo", "web").as_str()).unwrap_err().to_string();
    assert!(e.contains("Service/default/web: already exists"), "{e}");
    let cfg = "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nseed: 4\n";
    let e = c.add_yaml(cfg).unwrap_err().to_string();
    assert!(e.contains("cluster settings are read only when a cluster is created"), "{e}");
    let outside = "apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  clusterIP: 172.30.0.1\n  ports: [{port: 80}]\n";
    let e = c.add_yaml(outside).unwrap_err().to_string();
    assert!(
        e.contains("Service/default/far: ClusterIP 172.30.0.1 of svc/default/far is outside the Service CIDR 10.96.0.0/12; set serviceCidr in PodnetConfig"),
        "{e}"
    );
}

#[test]
fn a_new_nodeport_service_gets_a_port_from_the_dynamic_band() {
    let mut c = Cluster::seed();
    c.add_yaml(&ECHO.replace("  selector:", "  type: NodePort\n  selector:")).unwrap();
    let rules = c.kube_proxy_payload("node1").unwrap();
    let line = rules
        .lines()
        .find(|l| l.starts_with("-A KUBE-NODEPORTS") && l.contains("default/echo:tcp"))
        .unwrap_or_else(|| panic!("{rules}"));
    let port: u16 =
        line.split("--dport ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    // The static band of 30000-32767 is its first 86 ports: min(max(16, 2768/32), 128) in
    // Kubernetes' portallocator (calculateRangeOffset).
    assert!((30086..=32767).contains(&port), "{port}");
    let t = c.trace("node/node2", format!("192.168.0.1:{port}"), &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
}
