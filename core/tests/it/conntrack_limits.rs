//! `net.netfilter.nf_conntrack_max` and `nf_conntrack_buckets` on a node: a full table
//! refuses new flows with the kernel's message, and its early drop makes room only by deleting
//! unassured entries in the buckets next to the new tuple's.

use podnet::trace::{FlowProto, TraceOptions};
use podnet::{Cluster, Disposition};

fn udp(sport: u16) -> TraceOptions {
    TraceOptions { proto: Some(FlowProto::Udp), sport: Some(sport), ..TraceOptions::default() }
}

/// The client ports of node1's connections, in `conntrack -L` order.
fn client_ports(c: &Cluster) -> Vec<u16> {
    c.conntrack("node1")
        .unwrap()
        .lines()
        .filter_map(|l| l.split("sport=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn a_full_table_refuses_new_flows_until_the_early_drop_finds_room() {
    let mut c = Cluster::seed();
    c.set_sysctl("node1", "net.netfilter.nf_conntrack_max", 2).unwrap();
    for sport in [40001, 40002] {
        let t = c.trace("pod/default/pod2", "10.96.0.10:80", &udp(sport)).unwrap();
        assert!(t.completed, "{}", t.render(true));
    }
    assert_eq!(client_ports(&c), [40001, 40002]);

    // Answered within two seconds, so not ASSURED: the early drop may delete them, but it
    // looks only at eight buckets from the new tuple's, and in 262,144 they are elsewhere.
    let t = c.trace("pod/default/pod2", "10.96.0.10:80", &udp(40003)).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    assert_eq!(t.reason.as_deref(), Some("conntrack-full"));
    assert_eq!(t.reason_text.as_deref(), Some("nf_conntrack: table full, dropping packet"));
    assert_eq!(client_ports(&c), [40001, 40002], "nothing early-dropped, nothing added");

    // In one bucket the early drop sees both, and deletes both.
    c.set_sysctl("node1", "net.netfilter.nf_conntrack_buckets", 1).unwrap();
    assert_eq!(client_ports(&c), [40001, 40002], "a resize keeps the entries");
    let t = c.trace("pod/default/pod2", "10.96.0.10:80", &udp(40004)).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(client_ports(&c), [40004]);

    // 0 lifts the limit, as in the kernel.
    c.set_sysctl("node1", "net.netfilter.nf_conntrack_max", 0).unwrap();
    for sport in 40005..40008 {
        let t = c.trace("pod/default/pod2", "10.96.0.10:80", &udp(sport)).unwrap();
        assert!(t.completed, "{}", t.render(true));
    }
    assert_eq!(client_ports(&c), [40004, 40005, 40006, 40007]);

    let err = c.set_sysctl("node1", "net.netfilter.nf_conntrack_buckets", 0).unwrap_err();
    assert!(err.to_string().contains("at least one bucket"), "{err}");
}
