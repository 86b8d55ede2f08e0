//! The three kube-proxy modes compared flow by flow on the reference cluster.

use podnet::trace::FlowProto;
use podnet::{Cluster, Disposition};

/// Every pod to every Service port, and one ClusterIP port no Service has: the only
/// difference is that port (kubernetes#122692). iptables mode has no rule for it and the
/// packet leaves by the default route, to be lost beyond the node; nftables mode's
/// `cluster-ips-check` rejects it in FORWARD; IPVS mode rejects it too, in INPUT, since the
/// ClusterIP is a local address on `kube-ipvs0` and kube-proxy's `KUBE-IPVS-FILTER` rejects
/// what is not a Service port (v1.31 and later).
#[test]
fn on_the_reference_cluster_only_a_cluster_ip_port_the_service_lacks_differs() {
    let c = Cluster::seed();
    let mut flows = c.every_pod_to_every_service_port();
    assert_eq!(flows.len(), 12, "4 pods × 3 Service ports");
    flows.push(("pod/default/pod2".into(), "10.96.0.10:81".into(), Some(FlowProto::Tcp)));
    let diffs = c.compare_modes(&flows).unwrap();
    assert_eq!(diffs.len(), 1, "{}", diffs.iter().map(ToString::to_string).collect::<String>());
    let d = &diffs[0];
    assert_eq!((d.from.as_str(), d.to.as_str()), ("pod/default/pod2", "10.96.0.10:81"));
    let by_mode = |m: &str| &d.outcomes.iter().find(|(x, _)| x == m).unwrap().1;
    assert_eq!(by_mode("iptables")[0].disposition, Disposition::Dropped);
    for m in ["ipvs", "nftables"] {
        let l = &by_mode(m)[0];
        assert_eq!(l.disposition, Disposition::Rejected, "{m}");
        assert_eq!(l.reply_from.as_deref(), Some("10.244.1.1"), "{m}: the node's bridge answers");
    }
    let nft = d.divergences.iter().find(|x| x.modes.1 == "nftables").unwrap();
    assert!(
        nft.hops.1.as_deref().unwrap().contains("drop reject with icmp port-unreachable"),
        "{nft:?}"
    );
    assert!(nft.hops.1.as_deref().unwrap().contains("cluster-ips-check"), "{nft:?}");
    assert!(nft.hops.1.as_deref().unwrap().contains("in FORWARD"), "{nft:?}");
    let ipvs = d.divergences.iter().find(|x| x.modes.1 == "ipvs").unwrap();
    assert!(ipvs.hops.1.as_deref().unwrap().contains("in INPUT"), "{ipvs:?}");
}

/// A flow that is the same in every mode is not listed; the comparison runs on copies and
/// leaves the cluster's own mode and state alone.
#[test]
fn identical_outcomes_are_not_listed_and_the_cluster_is_untouched() {
    let c = Cluster::seed();
    let flows = vec![("pod/default/pod1".to_string(), "svc/default/web:http".to_string(), None)];
    assert!(c.compare_modes(&flows).unwrap().is_empty());
    assert_eq!(c.proxy_mode(), podnet::ProxyMode::Iptables);
    assert!(c.nft_list_ruleset("node1").unwrap().is_empty());
}
