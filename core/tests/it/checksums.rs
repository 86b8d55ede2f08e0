//! Every frame of a delivered flow, on every device it reached, carries valid IPv4, TCP, UDP
//! and ICMP checksums: NAT rewrites (DNAT, SNAT, MASQUERADE, the gateway's 1:1 NAT, IPVS)
//! keep them right hop by hop, in both CNI profiles and both proxy modes.

use podnet::Cluster;
use podnet::trace::{FlowProto, TraceOptions};
use proptest::prelude::*;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

/// Checks one frame; returns a description of the first bad checksum, or of the header that
/// does not parse (a frame podnet emitted that no parser accepts is as wrong as a bad sum).
fn bad_checksum(frame: &[u8]) -> Option<String> {
    let eth = match EthernetFrame::new_checked(frame) {
        Ok(e) => e,
        Err(_) => return Some(format!("Ethernet header of a {}-byte frame", frame.len())),
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = match Ipv4Packet::new_checked(eth.payload()) {
        Ok(ip) => ip,
        Err(_) => return Some(format!("IPv4 header of a {}-byte frame", frame.len())),
    };
    if !ip.verify_checksum() {
        return Some(format!("IPv4 header of {} > {}", ip.src_addr(), ip.dst_addr()));
    }
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    match ip.next_header() {
        IpProtocol::Tcp => {
            let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
                return Some(format!("TCP header {src} > {dst} does not parse"));
            };
            (!t.verify_checksum(&src, &dst))
                .then(|| format!("TCP {src}:{} > {dst}:{}", t.src_port(), t.dst_port()))
        }
        IpProtocol::Udp => {
            let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
                return Some(format!("UDP header {src} > {dst} does not parse"));
            };
            (!u.verify_checksum(&src, &dst))
                .then(|| format!("UDP {src}:{} > {dst}:{}", u.src_port(), u.dst_port()))
        }
        IpProtocol::Icmp => {
            let Ok(i) = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()) else {
                return Some(format!("ICMP header {src} > {dst} does not parse"));
            };
            (!i.verify_checksum()).then(|| format!("ICMP {src} > {dst}"))
        }
        _ => None,
    }
}

const FLOWS: &[(&str, &str, FlowProto)] = &[
    ("pod/default/pod1", "pod/default/pod2:8080", FlowProto::Tcp),
    ("pod/default/pod1", "pod/default/pod3:8080", FlowProto::Udp),
    ("pod/default/pod2", "svc/default/web:http", FlowProto::Tcp),
    ("pod/default/pod2", "svc/default/web:udp", FlowProto::Udp),
    ("pod/default/pod1", "svc/default/web:http", FlowProto::Tcp),
    ("pod/default/pod2", "203.0.113.10:80", FlowProto::Tcp),
    ("host/internet", "203.0.113.100:80", FlowProto::Tcp),
    ("host/internet", "203.0.113.1:30080", FlowProto::Tcp),
    ("host/internet", "http://203.0.113.200/api/x", FlowProto::Http),
    ("node/node1", "svc/default/web:http", FlowProto::Tcp),
    ("pod/default/pod1", "pod3", FlowProto::Icmp),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_frame_on_every_device_has_valid_checksums(
        seed in 0u64..1_000,
        flow in 0..FLOWS.len(),
        aws in any::<bool>(),
        ipvs in any::<bool>(),
    ) {
        let mut c = if aws { Cluster::seed_aws_with(seed) } else { Cluster::seed_with(seed) };
        if ipvs {
            c.set_proxy_mode(podnet::kube_proxy::ProxyMode::Ipvs(podnet::netfilter::ipvs::Scheduler::Rr));
        }
        let (from, to, proto) = FLOWS[flow];
        // ICMP takes an address: pod3's, whichever profile gave it.
        let pod3 = c.pods().iter().find(|p| p.name == "pod3").unwrap().ip.to_string();
        let to = if proto == FlowProto::Icmp { pod3.as_str() } else { to };
        let t = c.trace(from, to, &TraceOptions { proto: Some(proto), capture: true, ..TraceOptions::default() }).unwrap();
        prop_assert!(t.completed, "{}", t.render(true));
        prop_assert!(!t.frames.is_empty());
        for f in &t.frames {
            if let Some(bad) = bad_checksum(&f.data) {
                prop_assert!(false, "bad checksum on {}/{}: {bad}\n{}", f.netns, f.device, t.render(true));
            }
        }
    }
}

#[test]
fn a_corrupted_checksum_is_caught() {
    let mut c = Cluster::seed();
    let t = c
        .trace(
            "pod/default/pod2",
            "svc/default/web:http",
            &TraceOptions { capture: true, ..TraceOptions::default() },
        )
        .unwrap();
    let mut f =
        t.frames.iter().find(|f| f.data.len() > 54 && f.data[23] == 6).unwrap().data.clone();
    assert_eq!(bad_checksum(&f), None);
    f[14 + 20 + 16] ^= 0xff; // the TCP checksum's first byte
    assert!(bad_checksum(&f).unwrap().starts_with("TCP "));
    // A frame cut inside its TCP header does not pass as valid.
    let cut = &f[..14 + 20 + 10];
    let mut cut = cut.to_vec();
    cut[14 + 3] = 30; // IPv4 total length 30: a 10-byte TCP header
    Ipv4Packet::new_unchecked(&mut cut[14..]).fill_checksum();
    assert!(bad_checksum(&cut).is_some_and(|b| b.contains("does not parse")), "{cut:?}");
    assert!(bad_checksum(&f[..20]).is_some_and(|b| b.starts_with("IPv4 header")));
}
