//! kube-proxy in nftables mode: the seed's scenarios land where they land in iptables mode,
//! and the differences kube-proxy documents between the modes show.

use crate::common;

use std::collections::BTreeMap;

use podnet::kube_proxy::ProxyMode;
use podnet::trace::{FlowProto, HopKind, TraceOptions};
use podnet::{Cluster, Disposition};

fn nft(seed: u64) -> Cluster {
    let mut c = Cluster::seed_with(seed);
    c.set_proxy_mode(ProxyMode::Nftables);
    c
}

/// Every outcome of a flow: (who answered, the address the server saw, where the reply
/// came from, the disposition) → probability.
fn outcomes(
    mode: ProxyMode,
    from: &str,
    to: &str,
    proto: FlowProto,
) -> BTreeMap<(String, String, String, String), f64> {
    let mut c = Cluster::seed_with(0);
    c.set_proxy_mode(mode);
    let opts = TraceOptions { proto: Some(proto), ..TraceOptions::default() };
    let mut out = BTreeMap::new();
    for t in c.trace_all(from, to, &opts).unwrap() {
        // The client's port is the node's pick under masquerade (fully random in both
        // modes): compare the address.
        let saw = t.server_saw.clone().unwrap_or_default();
        let saw_ip = saw.rsplit_once(':').map_or(saw.clone(), |(a, _)| a.to_string());
        let key = (
            t.delivered_to.clone().unwrap_or_default(),
            saw_ip,
            t.reply_from.clone().unwrap_or_default(),
            format!("{:?}", t.disposition),
        );
        *out.entry(key).or_insert(0.0) += t.probability.unwrap_or(1.0);
    }
    out
}

#[test]
fn the_seed_scenarios_from_figure_8_on_land_where_iptables_mode_lands_them() {
    let all = podnet::demo::scenarios();
    let from8 = all.iter().position(|s| s.figures.starts_with('8')).expect("figure 8");
    let scenarios = &all[from8..];
    assert_eq!(scenarios.len(), 7, "figures 8 to 13");
    for s in scenarios {
        let want = outcomes(ProxyMode::Iptables, s.from, s.to, s.proto);
        let got = outcomes(ProxyMode::Nftables, s.from, s.to, s.proto);
        assert_eq!(got.len(), want.len(), "{}: {got:#?} vs {want:#?}", s.id);
        for ((k, p), (k2, p2)) in got.iter().zip(&want) {
            assert_eq!(k, k2, "{}", s.id);
            assert!((p - p2).abs() < 1e-9, "{}: {k:?} {p} vs {p2}", s.id);
        }
    }
}

#[test]
fn a_pod_to_a_service_goes_through_the_service_ips_map() {
    let mut c = nft(0);
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("10.96.0.10:80"));
    let map = t
        .hops
        .iter()
        .find_map(|h| match &h.kind {
            HopKind::NftRule { chain, element: Some(e), origin, table, .. }
                if chain == "services" =>
            {
                Some((table.clone(), e.clone(), origin.clone()))
            }
            _ => None,
        })
        .expect("a services map hit");
    assert_eq!(map.0, "ip kube-proxy");
    assert!(map.1.starts_with("10.96.0.10 . tcp . 80 : goto service-"), "{}", map.1);
    assert_eq!(map.2.as_deref(), Some("svc/default/web:http"));
    // The same Service in the listing, as nft prints it.
    let list = c.nft_list_ruleset("node1").unwrap();
    assert!(list.starts_with("table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n"));
    assert!(list.contains("10.96.0.10 . tcp . 80 : goto service-"), "{list}");
    // kube-proxy writes no iptables rules of its own in nftables mode.
    let save = c.iptables_save("node1").unwrap();
    assert!(!save.contains("KUBE-"), "{save}");
}

#[test]
fn a_cluster_ip_port_the_service_lacks_is_rejected_in_nftables_mode_only() {
    // kubernetes#122692: iptables mode has no rule for it, and the packet leaves by the
    // default route; nftables mode's cluster-ips-check rejects it.
    let mut c = nft(0);
    let t = c.trace("pod/default/pod2", "10.96.0.10:81", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Rejected, "{}", t.render(true));
    assert_eq!(
        t.reason_text.as_deref(),
        Some("rejected by an nftables reject rule (icmp-port-unreachable)"),
        "said as what rejected it, also without hops recorded"
    );
    assert!(
        t.hops.iter().any(|h| h.kind.chain() == Some("cluster-ips-check")),
        "{}",
        t.render(true)
    );
    let mut c = Cluster::seed_with(0);
    let t = c.trace("pod/default/pod2", "10.96.0.10:81", &common::tcp()).unwrap();
    assert_ne!(t.disposition, Disposition::Rejected, "{}", t.render(true));
    assert!(!t.hops.iter().any(|h| matches!(h.kind, HopKind::Rule { .. } if h.kind.rule().is_some_and(|r| r.contains("REJECT")))));
}

#[test]
fn a_pod_reaching_itself_through_its_service_is_masqueraded_to_the_bridge() {
    let c = nft(0);
    let opts = common::tcp();
    let all = c.trace_all("pod/default/pod1", "svc/default/web:http", &opts).unwrap();
    let own = all
        .iter()
        .find(|t| t.delivered_to.as_deref() == Some("pod/default/pod1"))
        .expect("one outcome lands on pod1");
    assert!(own.completed, "{}", own.render(true));
    assert!(own.server_saw.as_deref().unwrap().starts_with("10.244.1.1:"), "{:?}", own.server_saw);
}

#[test]
fn node_ports_answer_on_the_nodes_primary_address_only() {
    // nftables mode's nodePortAddresses default is `primary`: 127.0.0.1 is not a NodePort
    // address there, as it is in iptables mode (localhost NodePorts).
    let mut c = nft(0);
    let t = c.trace("node/node1", "127.0.0.1:30080", &common::tcp()).unwrap();
    assert!(t.delivered_to.is_none(), "{}", t.render(true));
    let mut c = Cluster::seed_with(0);
    let t = c.trace("node/node1", "127.0.0.1:30080", &common::tcp()).unwrap();
    assert!(t.delivered_to.is_some(), "{}", t.render(true));
}
