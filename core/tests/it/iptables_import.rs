//! A real node's `iptables-save` replaces the generated rules; drift shows how it differs from
//! what kube-proxy would write.

use std::collections::BTreeSet;

use podnet::trace::TraceOptions;
use podnet::{Cluster, ClusterError};

#[test]
fn the_node_own_rules_round_trip_without_drift() {
    let mut c = Cluster::seed();
    let saved = c.iptables_save("node1").unwrap();
    c.import_iptables("node1", &saved).unwrap();
    assert_eq!(c.iptables_drift("node1").unwrap(), "");
    assert_eq!(c.iptables_save("node1").unwrap(), saved);
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &TraceOptions::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // Nodes without an import have no drift to report.
    assert_eq!(c.iptables_drift("node2").unwrap(), "");
}

#[test]
fn a_stale_rule_set_sends_every_flow_to_the_remaining_endpoint_and_drift_names_the_rule() {
    let mut c = Cluster::seed();
    let saved = c.iptables_save("node1").unwrap();
    // A node whose rules lost pod3's endpoint of web:http (a sync that never happened): the
    // service chain's last jump goes, and pod1's jump keeps its probability.
    let pod3_jump = saved
        .lines()
        .find(|l| {
            l.starts_with("-A KUBE-SVC-") && l.contains("default/web:http -> 10.244.2.2:8080")
        })
        .unwrap()
        .to_string();
    let stale: String =
        saved.lines().filter(|l| *l != pod3_jump).map(|l| format!("{l}\n")).collect();
    c.import_iptables("node1", &stale).unwrap();
    let drift = c.iptables_drift("node1").unwrap();
    assert_eq!(drift, format!("*nat\n- {pod3_jump}\n"));
    // With the jump gone, flows that the statistic match passes over fall off the end of the
    // chain, so only pod1 is ever reached through the ClusterIP.
    let mut landed = BTreeSet::new();
    for _ in 0..20 {
        let t =
            c.trace("pod/default/pod2", "svc/default/web:http", &TraceOptions::default()).unwrap();
        landed.insert(t.delivered_to.unwrap_or_else(|| "nowhere".into()));
    }
    assert!(
        landed.contains("pod/default/pod1") && !landed.contains("pod/default/pod3"),
        "{landed:?}"
    );
    // kube-proxy's syncs leave the imported rules alone (counters aside: the traces counted).
    let rules = |t: &str| {
        t.lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect::<Vec<_>>()
    };
    c.set_ready("pod/default/pod3", false).unwrap();
    assert_eq!(rules(&c.iptables_save("node1").unwrap()), rules(&stale));
}

#[test]
fn extra_and_reordered_rules_show_up() {
    let mut c = Cluster::seed();
    let saved = c.iptables_save("node2").unwrap();
    // The first COMMIT closes *filter.
    let extra = saved.replacen("COMMIT\n", "-A INPUT -s 203.0.113.0/24 -j DROP\nCOMMIT\n", 1);
    c.import_iptables("node2", &extra).unwrap();
    assert_eq!(
        c.iptables_drift("node2").unwrap(),
        "*filter\n+ -A INPUT -s 203.0.113.0/24 -j DROP\n"
    );
    // Two FORWARD rules swapped: same rules, another order.
    let fwd: Vec<&str> = saved.lines().filter(|l| l.starts_with("-A FORWARD ")).collect();
    let swapped =
        saved.replacen(fwd[0], "@@", 1).replacen(fwd[1], fwd[0], 1).replacen("@@", fwd[1], 1);
    c.import_iptables("node2", &swapped).unwrap();
    assert_eq!(
        c.iptables_drift("node2").unwrap(),
        "*filter\n~ chain FORWARD: the same rules in another order\n"
    );
}

#[test]
fn unreadable_dumps_name_the_line_and_column() {
    let mut c = Cluster::seed();
    let e = c
        .import_iptables(
            "node1",
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m frobnicate -j ACCEPT\nCOMMIT\n",
        )
        .unwrap_err();
    assert!(matches!(e, ClusterError::IptablesParse { line: 3, .. }), "{e}");
    assert!(e.to_string().starts_with("iptables-save for node 'node1', line 3, column "), "{e}");
    assert!(matches!(c.import_iptables("node9", ""), Err(ClusterError::NotFound { .. })));
    // Nothing changed on node1.
    assert_eq!(c.iptables_drift("node1").unwrap(), "");
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &TraceOptions::default()).unwrap();
    assert!(t.completed);
}

#[test]
fn no_drift_for_a_node_own_rules_in_every_profile_and_mode() {
    for aws in [false, true] {
        for ipvs in [false, true] {
            let mut c = if aws { Cluster::seed_aws() } else { Cluster::seed() };
            if ipvs {
                c.set_proxy_mode(podnet::kube_proxy::ProxyMode::Ipvs(
                    podnet::netfilter::ipvs::Scheduler::Rr,
                ));
            }
            let saved = c.iptables_save("node2").unwrap();
            c.import_iptables("node2", &saved).unwrap();
            assert_eq!(c.iptables_drift("node2").unwrap(), "", "aws {aws}, ipvs {ipvs}");
        }
    }
}
