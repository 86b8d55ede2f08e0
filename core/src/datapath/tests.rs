//! The datapath on small worlds built by hand, each test naming the Linux behaviour it
//! expects: the bridge's learning, ageing and hairpin (`net/bridge/br_fdb.c`,
//! `br_forward.c`), br_netfilter's FORWARD for bridged frames, IPv4 forwarding with
//! `ip_forward` off and a TTL running out (`ip_forward.c`), and the neighbour layer's queue
//! and its failure (`net/core/neighbour.c`).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

use podnet_netfilter::Netfilter;

use super::NoGuard;
use crate::ids::{IfIndex, NetnsId};
use crate::net::fdb::Fdb;
use crate::trace::{Dir, Hop, HopKind, Recorder};
use crate::world::{DeviceKind, Owner, World};

use super::{Datapath, Fabric, HostStacks};

/// Host stacks that only keep what they are handed.
#[derive(Default)]
struct Sink {
    got: Vec<(NetnsId, Vec<u8>)>,
}

impl HostStacks for Sink {
    fn ingest(&mut self, _: &World, ns: NetnsId, frame: Vec<u8>) {
        self.got.push((ns, frame));
    }
    fn refuse_client(&mut self, _: &World, _: NetnsId, _: usize) {}
    fn poll(&mut self, _: NetnsId, _: Instant, _: &mut Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
        None
    }
}

/// A node namespace `node` with a bridge `br0` (10.0.0.1/24) and three hosts `h0`..`h2`,
/// each on a veth pair whose node end is a bridge port (`vethN`), their `eth0` at 10.0.0.1x.
struct Bridged {
    w: World,
    node: NetnsId,
    br: IfIndex,
    /// (host namespace, host `eth0`, node-side port) per host.
    hosts: Vec<(NetnsId, IfIndex, IfIndex)>,
}

fn bridged() -> Bridged {
    let mut w = World::new(1);
    let node = w.add_netns("node", Owner::Router, true);
    w.netns[node.idx()].sysctl.ip_forward = true;
    let br = w.add_device(node, "br0", DeviceKind::Bridge(Fdb::default()));
    w.add_addr(br, "10.0.0.1/24".parse().unwrap());
    let br_mac = w.devs[br.idx()].mac;
    let mut hosts = Vec::new();
    for i in 0..3 {
        let h = w.add_netns(&format!("h{i}"), Owner::Host, false);
        let (eth0, port) = w.add_veth_pair(h, "eth0", node, &format!("veth{i}"));
        w.devs[port.idx()].master = Some(br);
        w.add_addr(eth0, Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 10 + i), 24).unwrap());
        let port_mac = w.devs[port.idx()].mac;
        if let DeviceKind::Bridge(f) = &mut w.devs[br.idx()].kind {
            f.add_local(port_mac, port);
        }
        hosts.push((h, eth0, port));
    }
    if let DeviceKind::Bridge(f) = &mut w.devs[br.idx()].kind {
        f.add_local(br_mac, br);
    }
    Bridged { w, node, br, hosts }
}

/// A UDP datagram in an Ethernet frame.
fn udp_frame(
    (src_mac, dst_mac): (EthernetAddress, EthernetAddress),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    ttl: u8,
) -> Vec<u8> {
    let payload = b"hi";
    let udp = UdpRepr { src_port: 40000, dst_port: 8080 };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: ttl,
    };
    let eth =
        EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EthernetProtocol::Ipv4 };
    let mut f = vec![0; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    eth.emit(&mut e);
    let mut p = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p, &ChecksumCapabilities::default());
    udp.emit(
        &mut UdpPacket::new_unchecked(p.payload_mut()),
        &src.into(),
        &dst.into(),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    f
}

/// Sends `frame` out of `dev` and runs the queue; returns the hops recorded.
fn send(w: &mut World, hosts: &mut Sink, dev: IfIndex, frame: Vec<u8>) -> Vec<Hop> {
    w.sim.rec = Some(Recorder::for_injection());
    let fabric = Fabric::default();
    let mut dp = Datapath { w, hosts, fabric: &fabric, guard: &NoGuard };
    let tag = dp.new_tag(Dir::Request);
    dp.dev_xmit(dev, frame, tag);
    assert!(dp.run_queue(), "the queue settles");
    w.sim.rec.take().expect("set above").hops
}

/// The devices a frame was received on, by name (`h1 eth0`).
fn received(w: &World, hops: &[Hop]) -> Vec<String> {
    let _ = w;
    hops.iter()
        .filter(|h| h.kind == HopKind::Rx)
        .map(|h| format!("{} {}", h.netns, h.device.as_deref().unwrap_or("")))
        .collect()
}

fn mac(w: &World, d: IfIndex) -> EthernetAddress {
    w.devs[d.idx()].mac
}

const UNKNOWN: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0xaa, 0xbb]);

/// `br_handle_frame_finish`: the source MAC is learned on the ingress port; a frame to an
/// unknown unicast MAC floods every port but the one it came in on (`br_flood` skips the
/// ingress port unless it hairpins); a frame to a learned MAC goes to that port only.
#[test]
fn a_bridge_learns_sources_floods_unknown_unicast_and_forwards_to_learned_ports() {
    let Bridged { mut w, br, hosts, .. } = bridged();
    let mut sink = Sink::default();
    // Hairpin off everywhere: flooding never goes back out of the ingress port.
    let (h0, h1) = (hosts[0], hosts[1]);
    let a = mac(&w, h0.1);
    let hops = send(
        &mut w,
        &mut sink,
        h0.1,
        udp_frame((a, UNKNOWN), (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 99)), 64),
    );
    assert!(
        hops.iter().any(|h| h.kind == HopKind::Fdb && h.detail.contains("dev veth0")),
        "{hops:#?}"
    );
    let got = received(&w, &hops);
    assert!(
        got.contains(&"h1 eth0".to_string()) && got.contains(&"h2 eth0".to_string()),
        "{got:?}"
    );
    assert!(!got.contains(&"h0 eth0".to_string()), "not back out of the ingress port: {got:?}");
    // Both hosts drop it as PACKET_OTHERHOST: the MAC is not theirs.
    assert_eq!(hops.iter().filter(|h| h.kind == HopKind::Ignore).count(), 2);
    let now = w.now;
    let learned = match &w.devs[br.idx()].kind {
        DeviceKind::Bridge(f) => f.lookup(a, now).expect("learned"),
        _ => unreachable!(),
    };
    assert_eq!(learned.port, h0.2);
    // h1 answers A: one port only, and h0 takes the frame.
    let b = mac(&w, h1.1);
    let hops = send(
        &mut w,
        &mut sink,
        h1.1,
        udp_frame((b, a), (Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 10)), 64),
    );
    assert_eq!(received(&w, &hops), ["node veth1", "h0 eth0"]);
    assert_eq!(sink.got.len(), 1);
    assert_eq!(sink.got[0].0, h0.0);
}

/// `br_fdb_cleanup`: a learned entry not refreshed for `ageing_time` (300 s by default,
/// `BR_DEFAULT_AGEING_TIME`) is gone, and frames to it flood again.
#[test]
fn a_learned_mac_ages_out_after_300_seconds_of_silence() {
    let Bridged { mut w, br, hosts, .. } = bridged();
    let mut sink = Sink::default();
    let (h0, h1) = (hosts[0], hosts[1]);
    let (a, b) = (mac(&w, h0.1), mac(&w, h1.1));
    let ips = (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 11));
    send(&mut w, &mut sink, h0.1, udp_frame((a, UNKNOWN), ips, 64));
    w.now += Duration::from_secs(299);
    let hops = send(&mut w, &mut sink, h1.1, udp_frame((b, a), (ips.1, ips.0), 64));
    assert_eq!(received(&w, &hops), ["node veth1", "h0 eth0"], "still learned at 299 s");
    // 300 s after h0 last spoke: gone (lookups honour the age before any cleanup runs).
    w.now += Duration::from_secs(1);
    let now = w.now;
    if let DeviceKind::Bridge(f) = &w.devs[br.idx()].kind {
        assert!(f.lookup(a, now).is_none(), "aged out at 300 s");
    }
    let hops = send(&mut w, &mut sink, h1.1, udp_frame((b, a), (ips.1, ips.0), 64));
    let got = received(&w, &hops);
    assert!(
        got.contains(&"h0 eth0".to_string()) && got.contains(&"h2 eth0".to_string()),
        "flooded: {got:?}"
    );
}

/// `should_deliver`: a frame whose destination is learned behind its own ingress port is
/// dropped unless that port has `hairpin_mode`, which sends it back out.
#[test]
fn a_frame_for_its_own_ingress_port_needs_hairpin_mode() {
    let Bridged { mut w, hosts, .. } = bridged();
    let mut sink = Sink::default();
    let h0 = hosts[0];
    let a = mac(&w, h0.1);
    let ip = Ipv4Addr::new(10, 0, 0, 10);
    // A second MAC behind veth0 (as a pod's own address reached through a DNAT would be).
    let c = EthernetAddress([0x02, 0, 0, 0, 0, 0x0c]);
    send(&mut w, &mut sink, h0.1, udp_frame((c, UNKNOWN), (ip, ip), 64));
    let hops = send(&mut w, &mut sink, h0.1, udp_frame((a, c), (ip, ip), 64));
    let drop = hops.iter().find(|h| h.kind.action() == "drop").expect("dropped");
    assert_eq!(drop.kind.reason(), Some("hairpin-off"));
    w.devs[h0.2.idx()].hairpin = true;
    let hops = send(&mut w, &mut sink, h0.1, udp_frame((a, c), (ip, ip), 64));
    assert_eq!(received(&w, &hops), ["node veth0", "h0 eth0"], "back out of veth0");
}

/// br_netfilter: with `net.bridge.bridge-nf-call-iptables=1` a bridged IPv4 frame runs the
/// FORWARD chain (`-i br0 -o br0`, physdev matches); with 0 it skips iptables entirely.
#[test]
fn bridged_frames_meet_forward_only_with_bridge_nf_call_iptables() {
    let Bridged { mut w, node, hosts, .. } = bridged();
    let mut sink = Sink::default();
    let mut nf = Netfilter::new(1);
    nf.tables_mut()
        .restore(
            "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i br0 -m physdev --physdev-in veth0 --physdev-out veth1 -j DROP\nCOMMIT\n",
            false,
        )
        .unwrap();
    w.netns[node.idx()].nf = Some(Box::new(nf));
    let (h0, h1) = (hosts[0], hosts[1]);
    let (a, b) = (mac(&w, h0.1), mac(&w, h1.1));
    let ips = (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 11));
    // Teach the bridge where b lives.
    send(&mut w, &mut sink, h1.1, udp_frame((b, UNKNOWN), (ips.1, ips.0), 64));
    w.netns[node.idx()].sysctl.bridge_nf_call_iptables = true;
    let hops = send(&mut w, &mut sink, h0.1, udp_frame((a, b), ips, 64));
    let drop = hops.iter().find(|h| h.kind.action() == "drop").expect("the DROP rule");
    assert_eq!(drop.kind.reason(), Some("rule"));
    assert!(hops.iter().any(|h| h.kind.chain() == Some("FORWARD")), "{hops:#?}");
    w.netns[node.idx()].sysctl.bridge_nf_call_iptables = false;
    let hops = send(&mut w, &mut sink, h0.1, udp_frame((a, b), ips, 64));
    assert!(!hops.iter().any(|h| matches!(h.kind, HopKind::Rule { .. } | HopKind::Drop { .. })));
    assert_eq!(received(&w, &hops), ["node veth0", "h1 eth0"]);
}

/// A router between two segments: `r` with `a0` (10.1.0.1/24) and `b0` (10.2.0.1/24),
/// host `ha` (10.1.0.2, default via 10.1.0.1) on the first, nothing yet on the second.
struct Routed {
    w: World,
    r: NetnsId,
    ha_eth0: IfIndex,
    r_a0: IfIndex,
    r_b0: IfIndex,
}

fn routed() -> Routed {
    let mut w = World::new(1);
    let (sa, sb) = (w.add_segment("a"), w.add_segment("b"));
    let r = w.add_netns("r", Owner::Router, true);
    w.netns[r.idx()].sysctl.ip_forward = true;
    let r_a0 = w.add_device(r, "a0", DeviceKind::Ether { segment: sa });
    w.add_addr(r_a0, "10.1.0.1/24".parse().unwrap());
    let r_b0 = w.add_device(r, "b0", DeviceKind::Ether { segment: sb });
    w.add_addr(r_b0, "10.2.0.1/24".parse().unwrap());
    let ha = w.add_netns("ha", Owner::Host, false);
    let ha_eth0 = w.add_device(ha, "eth0", DeviceKind::Ether { segment: sa });
    w.add_addr(ha_eth0, "10.1.0.2/24".parse().unwrap());
    w.add_default_route(ha, Ipv4Addr::new(10, 1, 0, 1), ha_eth0);
    Routed { w, r, ha_eth0, r_a0, r_b0 }
}

/// `ip_forward`: with `net.ipv4.ip_forward=0` a packet for another host is not forwarded.
#[test]
fn a_router_with_ip_forward_off_drops_what_is_not_for_it() {
    let Routed { mut w, r, ha_eth0, r_a0, .. } = routed();
    w.netns[r.idx()].sysctl.ip_forward = false;
    let f = udp_frame(
        (mac(&w, ha_eth0), mac(&w, r_a0)),
        (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 2, 0, 9)),
        64,
    );
    let hops = send(&mut w, &mut Sink::default(), ha_eth0, f);
    let drop = hops.iter().find(|h| h.kind.action() == "drop").expect("dropped");
    assert_eq!((drop.netns.as_str(), drop.kind.reason()), ("r", Some("forwarding-off")));
}

/// `ip_forward`: a packet whose TTL would reach 0 is dropped (the kernel then sends ICMP
/// time exceeded, which the model does not: the drop says so); with TTL 2 it goes on with
/// TTL 1.
#[test]
fn a_packet_whose_ttl_runs_out_is_dropped_and_the_next_hop_sees_ttl_less_one() {
    let Routed { mut w, ha_eth0, r_a0, r_b0, r, .. } = routed();
    let hb = w.add_netns("hb", Owner::Host, false);
    let seg_b = match w.devs[r_b0.idx()].kind {
        DeviceKind::Ether { segment } => segment,
        _ => unreachable!(),
    };
    let hb_eth0 = w.add_device(hb, "eth0", DeviceKind::Ether { segment: seg_b });
    w.add_addr(hb_eth0, "10.2.0.9/24".parse().unwrap());
    let hb_mac = mac(&w, hb_eth0);
    w.netns[r.idx()].neigh.add_permanent(Ipv4Addr::new(10, 2, 0, 9), hb_mac, r_b0);
    let ips = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 2, 0, 9));
    let to_r = (mac(&w, ha_eth0), mac(&w, r_a0));
    let hops = send(&mut w, &mut Sink::default(), ha_eth0, udp_frame(to_r, ips, 1));
    let drop = hops.iter().find(|h| h.kind.action() == "drop").expect("dropped");
    assert_eq!(drop.kind.reason(), Some("ttl-exceeded"));
    assert!(drop.detail.contains("ICMP time exceeded not modelled"), "{}", drop.detail);
    let mut sink = Sink::default();
    send(&mut w, &mut sink, ha_eth0, udp_frame(to_r, ips, 2));
    let (ns, frame) = sink.got.first().expect("delivered to hb");
    assert_eq!(*ns, hb);
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.hop_limit(), 1);
    assert!(ip.verify_checksum(), "the header checksum follows the TTL");
}

/// `neigh_resolve_output`: a packet for a next hop without a neighbour entry waits while
/// ARP asks (`who-has 10.2.0.9 tell 10.2.0.1` out of `b0`), goes out when the reply comes;
/// with no reply it is dropped after 3 s (`mcast_solicit` 3 probes, `retrans_time` 1 s),
/// the neighbour FAILED.
#[test]
fn a_packet_waits_for_arp_and_is_dropped_when_no_reply_comes() {
    let Routed { mut w, ha_eth0, r_a0, r, .. } = routed();
    let ips = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 2, 0, 9));
    let to_r = (mac(&w, ha_eth0), mac(&w, r_a0));
    let hops = send(&mut w, &mut Sink::default(), ha_eth0, udp_frame(to_r, ips, 64));
    let arp = hops.iter().find(|h| h.kind == HopKind::Arp).expect("an ARP request");
    assert_eq!(arp.device.as_deref(), Some("b0"));
    assert!(arp.detail.contains("who-has 10.2.0.9 tell 10.2.0.1"), "{}", arp.detail);
    assert_eq!(w.sim.pending.len(), 1, "the packet waits");
    assert!(w.netns[r.idx()].neigh.lookup(Ipv4Addr::new(10, 2, 0, 9)).is_none());
    // 2.999 s: still waiting.
    let fabric = Fabric::default();
    let mut sink = Sink::default();
    w.sim.rec = Some(Recorder::for_injection());
    w.now += Duration::from_millis(2_999);
    Datapath { w: &mut w, hosts: &mut sink, fabric: &fabric, guard: &NoGuard }.expire_pending();
    assert_eq!(w.sim.pending.len(), 1);
    w.now += Duration::from_millis(1);
    Datapath { w: &mut w, hosts: &mut sink, fabric: &fabric, guard: &NoGuard }.expire_pending();
    assert!(w.sim.pending.is_empty());
    let hops = w.sim.rec.take().unwrap().hops;
    let drop = hops.iter().find(|h| h.kind.action() == "drop").expect("dropped");
    assert_eq!(drop.kind.reason(), Some("arp-failed"));
}
