//! kube-proxy's own configuration (a KubeProxyConfiguration, alone or in the kube-proxy
//! ConfigMap) changes the rules exactly as kube-proxy v1.33 writes them. Expected rules are
//! kube-proxy's (`pkg/proxy/iptables/proxier.go` and its `TestNodePorts`,
//! `TestMasqueradeRule`, `TestOverallIPTablesRules`; the reference notes in
//! `kube-proxy.md` §1.4 and §1.11), and each setting's effect is traced.

use podnet::Cluster;
use podnet::trace::TraceOptions;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The kubeadm cluster with this KubeProxyConfiguration body.
fn with(body: &str) -> Cluster {
    let cluster = std::fs::read_to_string(fixture("kubeadm/cluster.yaml")).unwrap();
    let text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}---\n{cluster}"
    );
    Cluster::from_yaml(&text).unwrap_or_else(|e| panic!("{e}")).0
}

fn rules(c: &Cluster) -> String {
    c.kube_proxy_payload("worker-1").unwrap()
}

const SVC_MASQ: &str = "-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.140.20 --dport 80";
const NODEPORTS: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
const FIREWALL: &str = "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP";

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// The ConfigMap as kubeadm writes it: masqueradeAll and `nodePortAddresses: [primary]`
/// from the operator, the rest defaults; what podnet does not model is listed.
#[test]
fn the_kubeadm_config_map_is_read_and_what_is_not_modelled_is_listed() {
    let (c, report) = Cluster::from_files(&[fixture("kubeadm")]).unwrap();
    assert!(report.loaded.contains(&"ConfigMap/kube-system/kube-proxy".to_string()));
    assert!(
        report.skipped.contains(&"ConfigMap/kube-system/kube-proxy: fields read but not modelled (they do not change podnet's rules): bindAddress, clientConnection.kubeconfig".to_string()),
        "{:?}",
        report.skipped
    );
    let r = rules(&c);
    // masqueradeAll: the ClusterIP masquerade rule has no source condition.
    assert_eq!(lines_starting(&r, SVC_MASQ), [format!("{SVC_MASQ} -j KUBE-MARK-MASQ")]);
    // nodePortAddresses [primary]: one jump per address, `-d` and no addrtype; no loopback,
    // so localhost NodePorts are off and KUBE-FIREWALL stays empty.
    assert_eq!(
        lines_starting(&r, NODEPORTS),
        [format!("{NODEPORTS} -d 10.1.0.11 -j KUBE-NODEPORTS")]
    );
    assert!(!r.contains(FIREWALL), "{r}");
    let save = c.iptables_save("worker-1").unwrap();
    assert!(save.contains("\n:KUBE-FIREWALL - [0:0]\n"), "the chain exists, empty");
}

#[test]
fn detect_local_modes_write_kube_proxys_conditions() {
    // ClusterCIDR (the default mode): `! -s <clusterCIDR>`.
    let r = rules(&with("clusterCIDR: 10.244.0.0/16\n"));
    assert_eq!(
        lines_starting(&r, SVC_MASQ),
        [format!("{SVC_MASQ} ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")]
    );
    // NodeCIDR: this node's podCIDR, each node its own (in the rules each node runs).
    let c = with("detectLocalMode: NodeCIDR\n");
    let r = rules(&c);
    assert_eq!(
        lines_starting(&r, SVC_MASQ),
        [format!("{SVC_MASQ} ! -s 10.244.1.0/24 -j KUBE-MARK-MASQ")]
    );
    for (node, cidr) in [("cp-1", "10.244.0.0/24"), ("worker-1", "10.244.1.0/24")] {
        let save = c.iptables_save(node).unwrap();
        assert!(save.contains(&format!("! -s {cidr} -d 10.96.140.20/32")), "{node}: {save}");
    }
    // BridgeInterface and InterfaceNamePrefix: the arrival interface.
    let r =
        rules(&with("detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n"));
    assert_eq!(lines_starting(&r, SVC_MASQ), [format!("{SVC_MASQ} ! -i cbr0 -j KUBE-MARK-MASQ")]);
    let r = rules(&with(
        "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: veth}\n",
    ));
    assert_eq!(lines_starting(&r, SVC_MASQ), [format!("{SVC_MASQ} ! -i veth+ -j KUBE-MARK-MASQ")]);
    // No clusterCIDR: the no-op detector, and no masquerade rule at all.
    let r = rules(&with("mode: \"\"\n"));
    assert!(lines_starting(&r, SVC_MASQ).is_empty(), "{r}");
}

#[test]
fn masquerade_bit_and_localhost_node_ports() {
    let r = rules(&with(
        "clusterCIDR: 10.244.0.0/16\niptables: {masqueradeBit: 15, localhostNodePorts: false}\n",
    ));
    // TestMasqueradeRule's rules with bit 15.
    assert!(r.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x8000\n"), "{r}");
    assert!(r.contains("-A KUBE-POSTROUTING -m mark ! --mark 0x8000/0x8000 -j RETURN\n-A KUBE-POSTROUTING -j MARK --xor-mark 0x8000\n"), "{r}");
    assert!(r.contains("-m mark --mark 0x8000/0x8000 -j ACCEPT"), "{r}");
    // Localhost NodePorts off: ` ! -d 127.0.0.0/8` on the addrtype jump, no KUBE-FIREWALL rule.
    assert_eq!(
        lines_starting(&r, NODEPORTS),
        [format!("{NODEPORTS} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")]
    );
    assert!(!r.contains(FIREWALL));
    // Defaults: on, and the firewall rule.
    let r = rules(&with("clusterCIDR: 10.244.0.0/16\n"));
    assert_eq!(
        lines_starting(&r, NODEPORTS),
        [format!("{NODEPORTS} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")]
    );
    assert!(r.contains(FIREWALL));
    // nodePortAddresses with loopback in it keeps localhost NodePorts (TestNodePorts).
    let r = rules(&with("nodePortAddresses: [10.1.0.0/24, 127.0.0.0/8]\n"));
    assert_eq!(
        lines_starting(&r, NODEPORTS),
        [
            format!("{NODEPORTS} -d 10.1.0.11 -j KUBE-NODEPORTS"),
            format!("{NODEPORTS} -d 127.0.0.1 -j KUBE-NODEPORTS")
        ]
    );
    assert!(r.contains(FIREWALL));
}

/// What each setting changes in a flow.
#[test]
fn each_setting_shows_in_a_trace() {
    let t = |c: &mut Cluster, from: &str, to: &str| {
        c.trace(from, to, &TraceOptions::default()).unwrap()
    };
    // Default detector: a pod reaching a ClusterIP keeps its address.
    let mut c = with("clusterCIDR: 10.244.0.0/16\n");
    let r = t(&mut c, "pod/default/client", "svc/default/web:http");
    assert_eq!(r.server_saw.as_deref(), Some("10.244.0.7:33651"), "{}", r.render(true));
    // masqueradeAll: the same flow arrives from client's node.
    let mut c = with("clusterCIDR: 10.244.0.0/16\niptables: {masqueradeAll: true}\n");
    let r = t(&mut c, "pod/default/client", "svc/default/web:http");
    assert!(r.server_saw.as_deref().unwrap().starts_with("10.1.0.10:"), "{}", r.render(true));
    // nodePortAddresses [primary]: the NodePort answers on the node's address only.
    let mut c = with("nodePortAddresses: [primary]\n");
    assert!(t(&mut c, "pod/default/client", "10.1.0.11:30080").completed);
    let r = t(&mut c, "node/worker-1", "127.0.0.1:30080");
    assert_eq!(r.disposition, podnet::Disposition::Rejected, "{}", r.render(true));
}

#[test]
fn bad_or_unsupported_configuration_is_refused_with_the_field() {
    let err = |body: &str| {
        let cluster = std::fs::read_to_string(fixture("kubeadm/cluster.yaml")).unwrap();
        let text = format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}---\n{cluster}"
        );
        Cluster::from_yaml(&text).err().unwrap().to_string()
    };
    assert!(
        err("mode: userspace\n").contains("mode: 'userspace' is not iptables, ipvs or nftables")
    );
    assert!(
        err("iptables: {masqueradeBit: 40}\n")
            .contains("iptables.masqueradeBit: expected a bit number 0-31, not 40")
    );
    assert!(
        err("detectLocalMode: BridgeInterface\n")
            .contains("detectLocal.bridgeInterface: BridgeInterface mode needs the bridge's name")
    );
    assert!(
        err("nodePortAddresses: [10.1.0.0/33]\n")
            .contains("nodePortAddresses[0]: '10.1.0.0/33' is not a CIDR or \"primary\"")
    );
    // An explicit PodnetConfig proxyMode wins over the configuration's, and says so.
    let cluster = std::fs::read_to_string(fixture("kubeadm/cluster.yaml")).unwrap();
    let text = format!(
        "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nproxyMode: iptables\n---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n---\n{cluster}"
    );
    let (_, report) = Cluster::from_yaml(&text).unwrap();
    assert!(report.skipped.iter().any(|s| {
        s.contains("mode nftables is overridden by the PodnetConfig's proxyMode iptables")
    }));
    // IPVS mode from the configuration, with its scheduler.
    let c = with("mode: ipvs\nipvs: {scheduler: lc}\n");
    assert!(c.ipvsadm("worker-1").unwrap().contains("TCP  10.96.140.20:80 lc"));
}

/// The kubeadm dump with its ConfigMap and no PodnetConfig: pod to pod, pod to Service, and
/// the NodePort through each node's primary address (nodePortAddresses: [primary]).
#[test]
fn the_kubeadm_dump_runs_pod_to_pod_to_service_and_node_ports() {
    let (mut c, _) = Cluster::from_files(&[fixture("kubeadm")]).unwrap();
    let go = |c: &mut Cluster, to: &str| {
        let t = c.trace("pod/default/client", to, &TraceOptions::default()).unwrap();
        assert!(t.completed, "{}", t.render(true));
        t
    };
    go(&mut c, "pod/default/web-1:8080");
    go(&mut c, "svc/default/web:http");
    for node in ["10.1.0.10", "10.1.0.11"] {
        let t = go(&mut c, &format!("{node}:30080"));
        assert_eq!(t.delivered_to.as_deref(), Some("pod/default/web-1"));
    }
}

/// The detector and the localhost and mark settings, in flows.
#[test]
fn detector_localhost_and_mark_settings_show_in_flows() {
    let t = |c: &mut Cluster, from: &str, to: &str| {
        c.trace(from, to, &TraceOptions { sport: Some(40123), ..TraceOptions::default() }).unwrap()
    };
    // The node reaching a ClusterIP: with a detector its traffic is not pod traffic, so it
    // is masqueraded (MASQUERADE --random-fully picks a new source port); with the no-op
    // detector nothing marks it and the endpoint sees the node's own port.
    let mut c = with("clusterCIDR: 10.244.0.0/16\n");
    let r = t(&mut c, "node/cp-1", "svc/default/web:http");
    assert!(r.completed, "{}", r.render(true));
    assert_ne!(r.server_saw.as_deref(), Some("10.1.0.10:40123"), "{}", r.render(true));
    let mut c = with("mode: \"\"\n");
    let r = t(&mut c, "node/cp-1", "svc/default/web:http");
    assert_eq!(r.server_saw.as_deref(), Some("10.1.0.10:40123"), "{}", r.render(true));
    // NodeCIDR: a pod of the node is pod traffic, not masqueraded.
    let mut c = with("detectLocalMode: NodeCIDR\n");
    let r = t(&mut c, "pod/default/client", "svc/default/web:http");
    assert_eq!(r.server_saw.as_deref(), Some("10.244.0.7:40123"), "{}", r.render(true));
    // Localhost NodePorts off: 127.0.0.1:30080 is not a NodePort.
    let mut c = with("clusterCIDR: 10.244.0.0/16\niptables: {localhostNodePorts: false}\n");
    let r = t(&mut c, "node/worker-1", "127.0.0.1:30080");
    assert_eq!(r.disposition, podnet::Disposition::Rejected, "{}", r.render(true));
    // Another masquerade bit: masqueradeAll still masquerades (the mark set is the mark
    // KUBE-POSTROUTING looks for).
    let mut c =
        with("clusterCIDR: 10.244.0.0/16\niptables: {masqueradeAll: true, masqueradeBit: 15}\n");
    let r = t(&mut c, "pod/default/client", "svc/default/web:http");
    assert!(r.server_saw.as_deref().unwrap().starts_with("10.1.0.10:"), "{}", r.render(true));
}

/// kube-proxy sets its node's conntrack timeouts at start (KubeProxyConntrackConfiguration:
/// `tcpEstablishedTimeout` 24h and `tcpCloseWaitTimeout` 1h by default; 0 leaves the
/// kernel's 5 days): an established connection through a node shows them.
#[test]
fn kube_proxy_sets_the_nodes_conntrack_timeouts() {
    let established = |c: &mut Cluster| {
        let t = c
            .trace("pod/default/client", "svc/default/web:http", &TraceOptions::default())
            .unwrap();
        assert!(t.completed, "{}", t.render(true));
        let line = t
            .hops
            .iter()
            .find(|h| h.detail.contains(" ESTABLISHED src=10.244.0.7"))
            .map(|h| h.detail.clone())
            .unwrap_or_else(|| panic!("{}", t.render(true)));
        line.split_whitespace().nth(5).unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(established(&mut with("clusterCIDR: 10.244.0.0/16\n")), 86_400);
    assert_eq!(established(&mut with("conntrack: {tcpEstablishedTimeout: 2h0m0s}\n")), 7_200);
    assert_eq!(established(&mut with("conntrack: {tcpEstablishedTimeout: 0s}\n")), 432_000);
    let e = Cluster::from_yaml(&format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack: {{udpTimeout: soon}}\n---\n{}",
        std::fs::read_to_string(fixture("kubeadm/cluster.yaml")).unwrap()
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("conntrack.udpTimeout: 'soon' is not a duration (as 24h0m0s)"), "{e}");
}

/// `mode: nftables`: kube-proxy writes table `ip kube-proxy` with its own masquerade settings
/// (`nftables.masqueradeBit`), and an InterfaceNamePrefix detector, whose `iif != veth*`
/// nft refuses, leaves the nodes without kube-proxy's rules, said at load and on every flow.
#[test]
fn nftables_mode_from_the_configuration() {
    let mut c =
        with("mode: nftables\nnftables: {masqueradeBit: 13}\niptables: {masqueradeBit: 5}\n");
    assert_eq!(c.proxy_mode(), podnet::kube_proxy::ProxyMode::Nftables);
    let list = c.nft_list_ruleset("worker-1").unwrap();
    assert!(list.contains("meta mark set meta mark | 0x00002000"), "{list}");
    let payload = rules(&c);
    assert!(payload.starts_with("add table ip kube-proxy"), "{payload}");
    let t =
        c.trace("pod/default/client", "svc/default/web:http", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);

    let cluster = std::fs::read_to_string(fixture("kubeadm/cluster.yaml")).unwrap();
    let text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\ndetectLocalMode: InterfaceNamePrefix\ndetectLocal: {{interfaceNamePrefix: veth}}\n---\n{cluster}"
    );
    let (mut c, report) = Cluster::from_yaml(&text).unwrap();
    assert!(
        report.skipped.iter().any(|s| s.contains("which nft refuses (Interface does not exist)")),
        "{:?}",
        report.skipped
    );
    assert!(c.nft_list_ruleset("worker-1").unwrap().is_empty());
    let t =
        c.trace("pod/default/client", "svc/default/web:http", &TraceOptions::default()).unwrap();
    assert!(!t.completed, "{}", t.render(true));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("nftables sync failed") && w.contains("does not exist")),
        "{:?}",
        t.warnings
    );
}
