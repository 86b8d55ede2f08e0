//! Seed figures 4-6: pod to pod on one node, over veth pairs and the cbr0 bridge.

use crate::common;

use podnet::Cluster;
use podnet::trace::Dir;
use podnet::trace::HopKind;

#[test]
fn pod1_to_pod2_crosses_veth_bridge_veth() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod1", "pod/default/pod2:8080", &common::tcp()).unwrap();
    assert!(common::delivered(&t) && t.completed, "{}", t.render(true));
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod2"));
    let sport = t.client.rsplit(':').next().unwrap();
    assert_eq!(t.server_saw.as_deref(), Some(format!("10.244.1.2:{sport}").as_str()));
    assert_eq!(t.reply_from.as_deref(), Some("10.244.1.3:8080"));

    // ARP first: pod1 asks for pod2 directly (same subnet), pod2 answers.
    let arp = common::first_packet(&t, Dir::Request, "arp");
    let h = &common::hops(&t, arp)[0];
    assert_eq!(
        h.before.as_ref().unwrap().info.as_deref(),
        Some("who-has 10.244.1.3 tell 10.244.1.2")
    );
    let arp_reply = common::first_packet(&t, Dir::Reply, "arp");
    assert!(
        common::hops(&t, arp_reply)[0]
            .before
            .as_ref()
            .unwrap()
            .info
            .as_deref()
            .unwrap()
            .starts_with("10.244.1.3 is-at")
    );

    // Figure 6: eth0 -> veth0 (1) -> cbr0 (2) -> veth1 (3) -> eth0 (4), never routed.
    let syn = common::first_packet(&t, Dir::Request, "tcp");
    let p = common::path(&t, syn);
    common::assert_subsequence(
        &p,
        &[
            ("pod/default/pod1", "eth0", "tx"),
            ("node1", "veth0", "rx"),
            ("node1", "cbr0", "bridge"),
            ("pod/default/pod2", "eth0", "rx"),
        ],
        &t,
    );
    assert!(!p.iter().any(|(_, _, a)| a == "route"), "bridged traffic is not routed: {p:?}");
    let fwd =
        common::hops(&t, syn).into_iter().find(|h| matches!(h.kind, HopKind::Bridge)).unwrap();
    assert!(fwd.detail.contains("is on veth1: forward"), "{}", fwd.detail);
}

#[test]
fn bridge_learns_both_macs_and_node_sees_them_in_fdb() {
    let mut c = Cluster::seed();
    let before = c.fdb("node1").unwrap();
    assert!(
        !before.lines().any(|l| !l.ends_with("permanent")),
        "no learned entries yet:\n{before}"
    );
    c.trace("pod/default/pod1", "pod/default/pod2:8080", &common::tcp()).unwrap();
    let fdb = c.fdb("node1").unwrap();
    let mac = |pod: &str| {
        let p = &c.pods()[c.pod_id(pod).unwrap().0 as usize];
        podnet::net::Mac(c.device(p.eth0).mac).to_string()
    };
    assert!(fdb.contains(&format!("{} dev veth0 master cbr0\n", mac("pod/default/pod1"))), "{fdb}");
    assert!(fdb.contains(&format!("{} dev veth1 master cbr0\n", mac("pod/default/pod2"))), "{fdb}");
    // Learned entries age out after 300 s of silence.
    c.advance(smoltcp::time::Duration::from_secs(301));
    assert!(!c.fdb("node1").unwrap().contains("dev veth0 master cbr0\n"));
}

#[test]
fn udp_and_icmp_work_on_the_same_path() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod1", "10.244.1.3:8080", &common::udp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("10.244.1.3:8080"));
    let icmp = podnet::TraceOptions { proto: Some(podnet::FlowProto::Icmp), ..Default::default() };
    let t = c.trace("pod/default/pod1", "10.244.1.3", &icmp).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("10.244.1.3"));
}

#[test]
fn traces_are_deterministic_for_a_seed() {
    // Same seed, byte-identical traces: in this thread, in another thread, and in another
    // process (the CLI; a process has its own hash seeds and allocation addresses). A Service
    // flow, so that random endpoint picks are part of what must agree.
    let run = || {
        let mut c = Cluster::seed_with(42);
        c.trace("pod/default/pod1", "svc/default/web:http", &common::tcp()).unwrap().to_json()
    };
    let here = run();
    assert_eq!(here, run());
    assert_eq!(here, std::thread::spawn(run).join().unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podnet"))
        .args([
            "trace",
            "--seed",
            "42",
            "--from",
            "pod/default/pod1",
            "--to",
            "svc/default/web:http",
        ])
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let there: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let here: serde_json::Value = serde_json::from_str(&here).unwrap();
    assert_eq!(there, serde_json::Value::Array(vec![here]));
}
