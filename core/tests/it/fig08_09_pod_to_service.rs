//! Seed figures 8-9: pod to Service through kube-proxy's iptables rules: DNAT in nat
//! PREROUTING as the packet enters node1 from the bridge, conntrack, reply un-DNAT.

use crate::common;

use std::collections::BTreeMap;

use podnet::Cluster;
use podnet::trace::Dir;
use podnet::trace::HopKind;

fn to_pod3(t: &podnet::Trace) -> bool {
    t.delivered_to.as_deref() == Some("pod/default/pod3")
}

fn to_pod1(t: &podnet::Trace) -> bool {
    t.delivered_to.as_deref() == Some("pod/default/pod1")
}

#[test]
fn request_is_dnated_in_prerouting_on_node1_and_reply_comes_from_the_vip() {
    let (_, c, t) =
        common::find_seed("pod/default/pod2", "svc/default/web:http", &common::tcp(), to_pod3);
    assert!(t.completed, "{}", t.render(true));
    let sport = t.client.rsplit(':').next().unwrap();
    // The endpoint sees the client's own pod IP: no SNAT for pod traffic.
    assert_eq!(t.server_saw.as_deref(), Some(format!("10.244.1.3:{sport}").as_str()));
    // The client only ever sees the VIP.
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
    let syn = common::first_packet(&t, Dir::Request, "tcp");
    let hops = common::hops(&t, syn);
    let dnat = hops.iter().find(|h| matches!(h.kind, HopKind::Nat { .. })).expect("a DNAT hop");
    assert_eq!(
        (
            dnat.node.as_deref(),
            dnat.device.as_deref(),
            dnat.kind.hook().map(|k| k.to_string()).as_deref()
        ),
        (Some("node1"), Some("cbr0"), Some("PREROUTING"))
    );
    assert_eq!(dnat.detail, "DNAT 10.96.0.10:80 -> 10.244.2.2:8080");
    assert_eq!(dnat.before.as_ref().unwrap().dst.to_string(), "10.96.0.10");
    assert_eq!(dnat.after.as_ref().unwrap().dst.to_string(), "10.244.2.2");
    // The rules that chose it, with the Service they came from.
    let chains: Vec<&str> = hops
        .iter()
        .filter(|h| {
            matches!(h.kind, HopKind::Rule { .. })
                && h.kind.hook().map(|k| k.to_string()).as_deref() == Some("PREROUTING")
        })
        .filter_map(|h| h.kind.chain())
        .collect();
    assert!(
        chains.contains(&"KUBE-SERVICES")
            && chains.iter().any(|c| c.starts_with("KUBE-SVC-"))
            && chains.iter().any(|c| c.starts_with("KUBE-SEP-")),
        "{chains:?}"
    );
    assert!(
        hops.iter()
            .filter(|h| h.kind.chain().is_some_and(|c| c.starts_with("KUBE-SEP-")))
            .all(|h| h.kind.origin() == Some("svc/default/web:http"))
    );
    // node2 sees a plain pod-to-pod flow: no NAT there.
    assert!(
        !t.hops
            .iter()
            .any(|h| h.node.as_deref() == Some("node2") && matches!(h.kind, HopKind::Nat { .. }))
    );
    // Figure 9: the reply's source is rewritten back to the VIP on node1.
    let synack = common::first_packet(&t, Dir::Reply, "tcp");
    let un = common::hops(&t, synack)
        .into_iter()
        .find(|h| matches!(h.kind, HopKind::Nat { .. }))
        .expect("reverse NAT on the reply");
    assert_eq!(un.node.as_deref(), Some("node1"));
    assert_eq!(
        un.detail,
        "conntrack: reverse DNAT (source restored) 10.244.2.2:8080 -> 10.96.0.10:80"
    );
    // conntrack on node1 recorded the choice and followed TCP to the end of the close.
    let ct = c.conntrack("node1").unwrap();
    let line = ct
        .lines()
        .find(|l| l.contains("dst=10.96.0.10"))
        .unwrap_or_else(|| panic!("no entry:\n{ct}"));
    assert!(line.contains(&format!("src=10.244.1.3 dst=10.96.0.10 sport={sport} dport=80 src=10.244.2.2 dst=10.244.1.3 sport=8080 dport={sport}")), "{line}");
    assert!(line.contains("TIME_WAIT") && line.contains("[ASSURED]"), "{line}");
    let ct2 = c.conntrack("node2").unwrap();
    assert!(
        ct2.contains(&format!("src=10.244.1.3 dst=10.244.2.2 sport={sport} dport=8080")),
        "node2 tracks the plain flow:\n{ct2}"
    );
}

#[test]
fn same_node_endpoint_is_bridged_back_out_of_cbr0() {
    let (_, _, t) =
        common::find_seed("pod/default/pod2", "svc/default/web:http", &common::tcp(), to_pod1);
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
    let syn = common::first_packet(&t, Dir::Request, "tcp");
    let hops = common::hops(&t, syn);
    assert!(
        hops.iter()
            .any(|h| matches!(h.kind, HopKind::Bridge) && h.detail.starts_with("bridged DNAT")),
        "{}",
        t.render(true)
    );
    assert!(!hops.iter().any(|h| matches!(h.kind, HopKind::Route)), "bridged DNAT is not routed");
    assert!(!hops.iter().any(|h| h.node.as_deref() == Some("node2")));
}

#[test]
fn endpoints_are_chosen_in_proportion() {
    let mut c = Cluster::seed_with(7);
    let mut count: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..400 {
        let t = c.trace("pod/default/pod2", "svc/default/web:udp", &common::udp()).unwrap();
        assert!(t.completed, "{}", t.render(true));
        *count.entry(t.delivered_to.unwrap()).or_default() += 1;
    }
    let pod1 = count["pod/default/pod1"];
    let pod3 = count["pod/default/pod3"];
    assert_eq!(pod1 + pod3, 400);
    // Binomial(400, 0.5): mean 200, sd 10; +-4 sd.
    assert!((160..=240).contains(&pod1), "{count:?}");
}

#[test]
fn udp_to_the_service_echoes_from_the_vip() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "10.96.0.10:80", &common::udp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
    assert!(
        c.conntrack("node1")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("udp") && l.contains("dst=10.96.0.10"))
    );
}

#[test]
fn iptables_save_on_a_node_holds_the_service_chains() {
    let c = Cluster::seed();
    let save = c.iptables_save("node1").unwrap();
    assert!(save.contains("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"), "{save}");
    assert!(save.contains("-m statistic --mode random --probability 0.50000000000"), "{save}");
    assert!(save.contains("-j MASQUERADE --random-fully"), "{save}");
}

/// The text a person reads: the path first, on one line, with the DNAT where kube-proxy's
/// rules do it (PREROUTING on the client's node, at the bridge); each packet's heading once;
/// every rule hop as `iptables-save` prints that rule, so it is found verbatim in the node's
/// dump; the NAT hop naming the rule behind it and the Service; the receivers of an ARP
/// broadcast that had nothing to do with it on one line.
#[test]
fn the_text_reads_as_a_path_then_packets_with_rules_as_iptables_save_prints_them() {
    let mut c = Cluster::seed();
    let t = loop {
        let t = c.trace("pod/default/pod2", "10.96.0.10:80", &common::tcp()).unwrap();
        if to_pod3(&t) {
            break t;
        }
    };
    let text = t.render(true);
    assert_eq!(
        t.path().unwrap(),
        "pod2 → node1 veth1 → cbr0 [DNAT 10.96.0.10:80 → 10.244.2.2:8080] → eth0 → vpc vpc0 → node2 eth0 → cbr0 → pod3"
    );
    assert!(text.lines().nth(1).unwrap().starts_with("  path: pod2 → node1"), "{text}");
    let headings: Vec<&str> = text.lines().filter(|l| l.starts_with("  packet ")).collect();
    let mut numbers: Vec<&str> = headings.iter().map(|l| l.split(' ').nth(3).unwrap()).collect();
    let n = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), n, "each heading once: {headings:?}");
    let saved = c.iptables_save("node1").unwrap();
    for h in t.hops.iter().filter(|h| h.node.as_deref() == Some("node1")) {
        if let (Some(chain), Some(rule)) = (h.kind.chain(), h.kind.rule())
            && !rule.starts_with(':')
        {
            let line = format!("-A {chain} {rule}");
            assert!(saved.lines().any(|l| l == line), "{line} is not in iptables-save");
            assert!(text.contains(&line), "{line}");
        }
    }
    assert!(
        text.contains("DNAT 10.96.0.10:80 -> 10.244.2.2:8080 (by nat KUBE-SEP-"),
        "the NAT hop names its rule: {text}"
    );
    assert!(text.contains(": received the broadcast ("), "{text}");
    assert!(t.render_brief().lines().count() <= 3, "{}", t.render_brief());
}
