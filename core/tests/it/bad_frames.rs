//! Malformed and truncated frames injected anywhere give a traced drop or are ignored,
//! never a panic; valid frames still work after them.

use podnet::Cluster;
use podnet::trace::HopKind;
use proptest::prelude::*;

/// A valid TCP SYN from pod2 to pod1, as pod2's eth0 would send it to its gateway.
fn syn_frame(c: &Cluster) -> Vec<u8> {
    let pod2 = &c.pods()[c.pod_id("pod/default/pod2").unwrap().0 as usize];
    let src_mac = c.device(pod2.eth0).mac.0;
    let node = &c.nodes()[0];
    let gw_mac = c.device(node.bridge.expect("bridge profile")).mac.0;
    let mut f = Vec::new();
    f.extend_from_slice(&gw_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 244, 1, 3, 10, 244, 2, 2];
    let mut tcp =
        vec![0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0];
    let sum = |b: &[u8], init: u32| {
        let mut s = init;
        for c in b.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    let h = sum(&ip, 0);
    ip[10..12].copy_from_slice(&h.to_be_bytes());
    let pseudo: u32 = [0x0af4u32, 0x0103, 0x0af4, 0x0202, 6, 20].iter().sum();
    let t = sum(&tcp, pseudo);
    tcp[16..18].copy_from_slice(&t.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

#[test]
fn truncated_valid_frame_at_every_length_is_dropped_or_ignored() {
    let mut c = Cluster::seed();
    let frame = syn_frame(&c);
    // Whole frame: forwarded towards pod3's node.
    let hops = c.inject_frame("node1", "veth1", &frame).unwrap();
    assert!(hops.iter().any(|h| h.netns == "vpc" && matches!(h.kind, HopKind::Route)), "{hops:#?}");
    for n in 0..frame.len() {
        let hops = c.inject_frame("node1", "veth1", &frame[..n]).unwrap();
        let dropped = hops.iter().any(|h| {
            matches!(h.kind, HopKind::Drop { .. }) && h.kind.reason() == Some("malformed")
        });
        let ignored = hops.iter().any(|h| matches!(h.kind, HopKind::Ignore));
        assert!(dropped || ignored, "length {n}: {hops:#?}");
    }
}

#[test]
fn unknown_injection_points_are_errors() {
    let mut c = Cluster::seed();
    let e = c.inject_frame("node9", "eth0", &[]).unwrap_err();
    assert!(e.to_string().contains("namespaces: "), "{e}");
    let e = c.inject_frame("node1", "eth9", &[]).unwrap_err();
    assert!(e.to_string().contains("devices: lo, eth0, cbr0"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn arbitrary_bytes_at_any_device_never_panic(point in 0usize..64, bytes in prop::collection::vec(any::<u8>(), 0..200), mutate in any::<bool>()) {
        let mut c = Cluster::seed();
        let points = c.injection_points();
        let (ns, dev) = points[point % points.len()].clone();
        let frame = if mutate {
            // Mostly-valid frames reach deeper code than noise does.
            let mut f = syn_frame(&c);
            for (i, b) in bytes.iter().enumerate().take(8) {
                let at = usize::from(*b) % f.len();
                f[at] ^= bytes.get(i + 8).copied().unwrap_or(1);
            }
            f
        } else {
            bytes
        };
        let _ = c.inject_frame(&ns, &dev, &frame).unwrap();
        // The cluster still works afterwards.
        let t = c.trace("pod/default/pod1", "pod/default/pod2:8080", &podnet::TraceOptions::default()).unwrap();
        prop_assert!(t.completed);
    }
}

/// An IPv4 packet from pod1 to `dst` whose TCP header is cut to 10 bytes, with a valid IPv4
/// header (total length 30) behind a broadcast Ethernet header.
fn short_tcp_frame(dst: [u8; 4]) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 30, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 244, 1, 2];
    ip.extend_from_slice(&dst);
    let mut s: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0]);
    f
}

#[test]
fn a_router_forwards_a_transport_header_it_does_not_read() {
    // `ip_rcv` checks the IPv4 header only: the VPC router (no netfilter) forwards the
    // packet, and node2's PREROUTING, which reads the TCP header, drops it.
    let mut c = Cluster::seed();
    let hops = c.inject_frame("vpc", "vpc0", &short_tcp_frame([10, 244, 2, 2])).unwrap();
    assert!(hops.iter().any(|h| h.netns == "vpc" && matches!(h.kind, HopKind::Route)), "{hops:#?}");
    let drop =
        hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).expect("dropped somewhere");
    assert_eq!(drop.netns, "node2", "{hops:#?}");
    assert_eq!(drop.kind.reason(), Some("malformed"));
    assert!(drop.detail.contains("TCP") || drop.detail.contains("tcp"), "{}", drop.detail);
    // A bad header checksum stops it at the router.
    let mut bad = short_tcp_frame([10, 244, 2, 2]);
    bad[14 + 10] ^= 0xff;
    let hops = c.inject_frame("vpc", "vpc0", &bad).unwrap();
    let drop = hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).expect("dropped");
    assert_eq!((drop.netns.as_str(), drop.kind.reason()), ("vpc", Some("malformed")));
    assert!(drop.detail.contains("checksum"), "{}", drop.detail);
}

#[test]
fn a_routed_pod_reads_the_transport_header_before_its_stack_does() {
    // An AWS VPC CNI pod routes for itself and has no netfilter: what it cannot read is
    // dropped with its reason before delivery, not handed to the stack to vanish.
    let mut c = Cluster::seed_aws();
    let ip = c.pods()[c.pod_id("pod/default/pod3").unwrap().0 as usize].ip.octets();
    let hops = c.inject_frame("pod/default/pod3", "eth0", &short_tcp_frame(ip)).unwrap();
    let drop = hops.iter().find(|h| matches!(h.kind, HopKind::Drop { .. })).expect("dropped");
    assert_eq!(
        (drop.netns.as_str(), drop.kind.reason()),
        ("pod/default/pod3", Some("malformed")),
        "{hops:#?}"
    );
    assert!(!hops.iter().any(|h| matches!(h.kind, HopKind::Deliver)), "{hops:#?}");
}
