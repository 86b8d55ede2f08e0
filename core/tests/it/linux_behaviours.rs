//! Behaviours the kernel, kube-proxy and Kubernetes define, each pinned down end to end on
//! the reference cluster with the expectation written from where it is defined: forwarding
//! off, TTL expiry, the input route's source checks (martians, `rp_filter`), the no-route
//! drop, conntrack expiry with time, RST handling, IPVS's schedulers, `sessionAffinity:
//! ClientIP`, kube-proxy's UDP conntrack cleanup, and an Ingress controller's 502.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use podnet::Cluster;
use podnet::cloud::{Ingress, IngressPath, IngressRule, PathType};
use podnet::kube_proxy::ProxyMode;
use podnet::netfilter::ipvs::Scheduler;
use podnet::netfilter::packet::build;
use podnet::trace::{Disposition, FlowProto, Hop, TraceOptions};
use smoltcp::time::Duration;

/// A frame from `src` to `dst` (TCP SYN to port 8080, source port 40000) with `ttl`, sent by
/// `from_mac` to `to_mac`.
fn frame(to_mac: [u8; 6], from_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let mut ip = build::tcp(src, 40000, dst, 8080, 0x02);
    ip[8] = ttl;
    smoltcp::wire::Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
    let mut f = to_mac.to_vec();
    f.extend_from_slice(&from_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

fn drop_of(hops: &[Hop]) -> Option<(&str, Option<&str>, &'static str, &str)> {
    hops.iter().find_map(|h| {
        h.kind.reason().map(|r| (h.netns.as_str(), h.device.as_deref(), r, h.detail.as_str()))
    })
}

fn node_macs(c: &Cluster, node: usize) -> ([u8; 6], [u8; 6]) {
    let n = &c.nodes()[node];
    (c.device(n.eth0).mac.0, c.device(n.bridge.unwrap()).mac.0)
}

const POD2: [u8; 4] = [10, 244, 1, 3];
const POD3: [u8; 4] = [10, 244, 2, 2];
const OUTSIDE_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];

/// `net.ipv4.ip_forward=0`: `ip_route_input_slow` gives a non-local destination no route
/// (`-EHOSTUNREACH`) and `ip_error` only counts it (no ICMP while forwarding is off); bridged
/// traffic between pods of the node does not route and still flows.
#[test]
fn forwarding_off_drops_routed_packets_and_leaves_bridged_ones() {
    let mut c = Cluster::seed();
    c.set_sysctl("node1", "net.ipv4.ip_forward", 0).unwrap();
    let t = c.trace("pod/default/pod2", "pod/default/pod3:8080", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    let (ns, dev, why, _) = drop_of(&t.hops).unwrap();
    assert_eq!((ns, dev, why), ("node1", Some("cbr0"), "forwarding-off"));
    let t = c.trace("pod/default/pod2", "pod/default/pod1:8080", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
}

/// `ip_forward()`: a packet with TTL 1 is dropped before the FORWARD hook (`too_many_hops`);
/// Linux then sends ICMP time exceeded, which podnet does not model, and says so.
#[test]
fn ttl_expiry_drops_before_forward_and_says_icmp_is_not_modelled() {
    let mut c = Cluster::seed();
    let (_, cbr0) = node_macs(&c, 0);
    let pod2_mac = c.device(c.pods()[c.pod_id("pod/default/pod2").unwrap().idx()].eth0).mac.0;
    let before = c.iptables_save_with("node1", true).unwrap();
    let hops = c.inject_frame("node1", "veth1", &frame(cbr0, pod2_mac, POD2, POD3, 1)).unwrap();
    let (ns, dev, why, detail) = drop_of(&hops).unwrap();
    assert_eq!((ns, dev, why), ("node1", Some("cbr0"), "ttl-exceeded"));
    assert!(detail.contains("ICMP time exceeded not modelled"), "{detail}");
    assert!(!hops.iter().any(|h| h.detail.contains("FORWARD")), "{hops:#?}");
    // The FORWARD chain counted nothing (the drop comes first); PREROUTING did count it.
    let after = c.iptables_save_with("node1", true).unwrap();
    let fwd = |s: &str| s.lines().find(|l| l.starts_with(":FORWARD")).unwrap().to_string();
    assert_eq!(fwd(&before), fwd(&after));
    assert_ne!(before, after);
    // TTL 2 passes node1 (decremented to 1) and node2 forwards it no further than the bridge.
    let hops = c.inject_frame("node1", "veth1", &frame(cbr0, pod2_mac, POD2, POD3, 2)).unwrap();
    assert!(hops.iter().any(|h| h.netns == "vpc"), "{hops:#?}");
    let (ns, _, why, _) = drop_of(&hops).unwrap();
    assert_eq!((ns, why), ("vpc", "ttl-exceeded"));
}

/// `fib_validate_source`: with `rp_filter` 0 (the kernel's default) a packet from an
/// address routed out of another device is accepted; 1 (strict) drops it; 2 (loose) accepts
/// it because a route back exists. A source that is one of the host's own addresses is a
/// martian whatever `rp_filter` says.
#[test]
fn reverse_path_filter_and_martian_sources() {
    // 10.244.1.99 belongs to node1's pod CIDR (routed out of cbr0) but arrives on eth0.
    let spoofed = |rpf: Option<(&str, u32)>| {
        let mut c = Cluster::seed();
        if let Some((key, v)) = rpf {
            c.set_sysctl("node1", key, v).unwrap();
        }
        let (eth0, _) = node_macs(&c, 0);
        c.inject_frame("node1", "eth0", &frame(eth0, OUTSIDE_MAC, [10, 244, 1, 99], POD2, 64))
            .unwrap()
    };
    let reaches_pod2 = |hops: &[Hop]| hops.iter().any(|h| h.netns == "pod/default/pod2");
    let hops = spoofed(None);
    assert!(drop_of(&hops).is_none_or(|d| d.0 != "node1") && reaches_pod2(&hops), "{hops:#?}");
    let hops = spoofed(Some(("net.ipv4.conf.all.rp_filter", 1)));
    let (ns, dev, why, detail) = drop_of(&hops).unwrap();
    assert_eq!((ns, dev, why), ("node1", Some("eth0"), "rp-filter"));
    assert!(detail.contains("the route back to 10.244.1.99 leaves by cbr0"), "{detail}");
    assert!(!reaches_pod2(&hops));
    // The device's own setting counts too (the larger of all and the device's).
    let hops = spoofed(Some(("net.ipv4.conf.eth0.rp_filter", 1)));
    assert_eq!(drop_of(&hops).map(|d| d.2), Some("rp-filter"));
    let hops = spoofed(Some(("net.ipv4.conf.all.rp_filter", 2)));
    assert!(reaches_pod2(&hops), "{hops:#?}");
    // Strict filtering leaves legitimate cross-node traffic alone: replies come back by the
    // device their source is routed through.
    let mut c = Cluster::seed();
    for n in ["node1", "node2", "node3"] {
        c.set_sysctl(n, "net.ipv4.conf.all.rp_filter", 1).unwrap();
    }
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &common::tcp()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    // A packet claiming node1's own address as its source.
    let mut c = Cluster::seed();
    let (eth0, _) = node_macs(&c, 0);
    let own = c.nodes()[0].ip.octets();
    let hops = c.inject_frame("node1", "eth0", &frame(eth0, OUTSIDE_MAC, own, POD2, 64)).unwrap();
    let (ns, dev, why, _) = drop_of(&hops).unwrap_or_else(|| panic!("{hops:#?}"));
    assert_eq!((ns, dev, why), ("node1", Some("eth0"), "martian-source"));
    assert!(c.set_sysctl("node1", "net.ipv4.conf.all.rp_filter", 3).is_err());
    assert!(c.set_sysctl("node1", "net.ipv4.conf.eth9.rp_filter", 1).is_err());
}

/// A destination no route covers is dropped where the lookup fails: the VPC router knows the
/// node subnet and each node's pod CIDR and sends the rest to the internet gateway, which
/// has no route for a private address.
#[test]
fn no_route_drops_where_the_lookup_fails() {
    let mut c = Cluster::seed();
    let t = c.trace("pod/default/pod2", "10.244.9.9:8080", &common::tcp()).unwrap();
    assert_eq!(t.disposition, Disposition::Dropped, "{}", t.render(true));
    let (ns, _, why, detail) = drop_of(&t.hops).unwrap();
    let path = t.path().unwrap();
    assert!(path.contains("vpc vpc0 → vpc1 → igw"), "{path}");
    assert_eq!((ns, why), ("igw", "no-route"));
    assert!(detail.contains("no route to 10.244.9.9"), "{detail}");
}

/// Conntrack entries die with time (`nf_ct_is_expired`): a UDP exchange leaves
/// `nf_conntrack_udp_timeout` (30 s), a closed TCP connection `TIME_WAIT` (120 s); the
/// same flow afterwards is a new connection.
#[test]
fn conntrack_entries_expire_as_time_advances() {
    let mut c = Cluster::seed();
    let opts = TraceOptions { sport: Some(40000), ..common::udp() };
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &opts).unwrap();
    assert!(t.completed, "{}", t.render(true));
    let udp = |c: &Cluster| {
        c.conntrack_entries("node1")
            .unwrap()
            .into_iter()
            .filter(|e| e.proto == "udp" && e.original.sport == 40000)
            .collect::<Vec<_>>()
    };
    let e = udp(&c);
    assert_eq!(e.len(), 1);
    assert!((29..=30).contains(&e[0].timeout) && !e[0].assured, "{:?}", e[0]);
    let tcp = TraceOptions { sport: Some(40001), ..common::tcp() };
    c.trace("pod/default/pod2", "svc/default/web:http", &tcp).unwrap();
    let tw = |c: &Cluster| {
        c.conntrack_entries("node1")
            .unwrap()
            .into_iter()
            .any(|e| e.original.sport == 40001 && e.state.as_deref() == Some("TIME_WAIT"))
    };
    assert!(tw(&c));
    c.advance(Duration::from_secs(29));
    assert_eq!(udp(&c).len(), 1, "29 s later the UDP entry lives");
    c.advance(Duration::from_secs(2));
    assert!(udp(&c).is_empty(), "31 s later it is gone");
    assert!(tw(&c), "TIME_WAIT lasts 120 s");
    c.advance(Duration::from_secs(90));
    assert!(!tw(&c));
    // The flow again: a new entry with a fresh timeout.
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &opts).unwrap();
    assert!(t.completed);
    assert_eq!(udp(&c).len(), 1);
}

/// A SYN to a port nobody listens on is answered by a RST, and conntrack kills the entry
/// at once (`nf_conntrack_tcp_packet`: a RST before any reply; Linux 6.18 shows an empty
/// `conntrack -L` right after, see `netfilter/tests/kernel/conntrack_tcp.py`).
#[test]
fn a_refused_connection_leaves_no_conntrack_entry() {
    let mut c = Cluster::seed();
    let opts = TraceOptions { sport: Some(40002), ..common::tcp() };
    let t = c.trace("pod/default/pod2", "10.244.2.2:9999", &opts).unwrap();
    assert_eq!(t.disposition, Disposition::Rejected, "{}", t.render(true));
    for node in ["node1", "node2"] {
        let left: Vec<_> = c
            .conntrack_entries(node)
            .unwrap()
            .into_iter()
            .filter(|e| e.original.sport == 40002)
            .collect();
        assert!(left.is_empty(), "{node}: {left:?}");
    }
}

fn ipvs(s: Scheduler) -> Cluster {
    let mut c = Cluster::seed();
    c.set_proxy_mode(ProxyMode::Ipvs(s));
    c
}

/// Where each of `n` connections from `from` to web:http lands.
fn landings(c: &mut Cluster, from: &str, n: u16) -> Vec<String> {
    (0..n)
        .map(|i| {
            let opts = TraceOptions { sport: Some(41000 + i), ..common::tcp() };
            let t = c.trace(from, "svc/default/web:http", &opts).unwrap();
            assert!(t.completed, "{}", t.render(true));
            t.delivered_to.unwrap()
        })
        .collect()
}

/// IPVS's schedulers (`net/netfilter/ipvs/ip_vs_{lc,wlc,sed,nq,sh,dh}.c`) on web's two
/// equally weighted endpoints. The connection-counting ones never give a new connection to a
/// server with more connections than another (each trace's connection stays in the table, in
/// TIME_WAIT as an inactive one), so they alternate; `nq` first gives each idle server one;
/// `sh` sends every connection of one client address to one server; `dh` sends every
/// connection to one virtual address to one server, whoever the client.
#[test]
fn ipvs_schedulers_follow_the_kernels_rules() {
    for s in [Scheduler::Lc, Scheduler::Wlc, Scheduler::Sed, Scheduler::Nq] {
        let mut c = ipvs(s);
        let got = landings(&mut c, "pod/default/pod2", 6);
        for pair in got.chunks(2) {
            assert_ne!(pair[0], pair[1], "{s:?}: {got:?}");
        }
        let distinct: BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 2, "{s:?}: {got:?}");
    }
    let mut c = ipvs(Scheduler::Sh);
    let from_pod2: BTreeSet<_> = landings(&mut c, "pod/default/pod2", 8).into_iter().collect();
    assert_eq!(from_pod2.len(), 1, "sh: one client address, one server: {from_pod2:?}");
    let mut c = ipvs(Scheduler::Dh);
    let mut all = landings(&mut c, "pod/default/pod2", 4);
    all.extend(landings(&mut c, "pod/default/pod4", 4));
    all.extend(landings(&mut c, "node/node3", 4));
    let all: BTreeSet<_> = all.into_iter().collect();
    assert_eq!(all.len(), 1, "dh: one virtual address, one server: {all:?}");
    // And rr, for contrast, cycles.
    let mut c = ipvs(Scheduler::Rr);
    let got = landings(&mut c, "pod/default/pod2", 4);
    assert_eq!((got[0] == got[2], got[1] == got[3], got[0] != got[1]), (true, true, true));
}

const STICKY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  clusterIP: 10.96.0.40
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
";

/// `sessionAffinity: ClientIP` (Kubernetes: a client's connections go to the same pod for
/// `sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800): kube-proxy's `-m recent
/// --rcheck --seconds 10800 --reap` in iptables mode, a persistent virtual service
/// (`-p 10800`) in IPVS mode. Within the timeout one client lands on one pod; after it the
/// pick is fresh.
#[test]
fn session_affinity_client_ip_sticks_for_its_timeout() {
    for ipvs_mode in [false, true] {
        let mut changed_after_expiry = false;
        for seed in 0..12 {
            let mut c = Cluster::seed_with(seed);
            if ipvs_mode {
                c.set_proxy_mode(ProxyMode::Ipvs(Scheduler::Rr));
            }
            c.add_yaml(STICKY).unwrap();
            let land = |c: &mut Cluster, sport: u16| {
                let opts = TraceOptions { sport: Some(sport), ..common::tcp() };
                let t = c.trace("pod/default/pod2", "10.96.0.40:80", &opts).unwrap();
                assert!(t.completed, "{}", t.render(true));
                t.delivered_to.unwrap()
            };
            let first = land(&mut c, 42000);
            for i in 1..6 {
                assert_eq!(land(&mut c, 42000 + i), first, "ipvs={ipvs_mode} seed {seed}");
            }
            c.advance(Duration::from_secs(10_000));
            assert_eq!(land(&mut c, 42010), first, "still within 10800 s");
            c.advance(Duration::from_secs(10_900));
            changed_after_expiry |= land(&mut c, 42020) != first;
        }
        assert!(changed_after_expiry, "ipvs={ipvs_mode}: after the timeout the pick is fresh");
    }
}

/// kube-proxy deletes the UDP conntrack entries of an endpoint that went away
/// (`pkg/proxy/conntrack/cleanup.go`: `--orig-dst` the Service IP, `--reply-src` the
/// endpoint): the client's next datagram on the same socket is load-balanced afresh instead
/// of following the stale entry to a pod that no longer exists.
#[test]
fn udp_entries_of_a_removed_endpoint_are_cleared() {
    let mut c = Cluster::seed();
    let opts = TraceOptions { sport: Some(43000), ..common::udp() };
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &opts).unwrap();
    let gone = t.delivered_to.clone().unwrap();
    let other = if gone == "pod/default/pod1" { "pod/default/pod3" } else { "pod/default/pod1" };
    let gone_ip = c.pods()[c.pod_id(&gone).unwrap().idx()].ip;
    c.delete_pod(&gone).unwrap();
    let stale = c
        .conntrack_entries("node1")
        .unwrap()
        .into_iter()
        .filter(|e| e.proto == "udp" && e.reply.src == gone_ip)
        .count();
    assert_eq!(stale, 0, "the deleted endpoint's UDP entries are gone");
    let t = c.trace("pod/default/pod2", "svc/default/web:udp", &opts).unwrap();
    assert_eq!(t.delivered_to.as_deref(), Some(other), "{}", t.render(true));
}

const LONELY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: default}
spec:
  clusterIP: 10.96.0.41
  selector: {app: lonely}
  ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP}]
";

const LONELY_POD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: lonely, namespace: default, labels: {app: lonely}}
spec:
  nodeName: node2
  containers: [{name: c, ports: [{containerPort: 5353, protocol: UDP}]}]
";

/// A UDP Service without endpoints REJECTs (kube-proxy's "has no endpoints" rule: ICMP port
/// unreachable) and leaves no entry behind (the rejected datagram's entry is never
/// confirmed); when the Service gets its first endpoint, kube-proxy clears the Service IP's
/// UDP entries, and the client's next datagram on the same socket reaches the new pod.
#[test]
fn a_udp_service_going_from_zero_to_one_endpoint_serves_the_same_socket() {
    let mut c = Cluster::seed();
    c.add_yaml(LONELY).unwrap();
    let opts =
        TraceOptions { sport: Some(44000), proto: Some(FlowProto::Udp), ..TraceOptions::default() };
    let t = c.trace("pod/default/pod2", "10.96.0.41:53", &opts).unwrap();
    assert_eq!(t.disposition, Disposition::Rejected, "{}", t.render(true));
    let held = |c: &Cluster| {
        c.conntrack_entries("node1")
            .unwrap()
            .into_iter()
            .filter(|e| e.original.dst.to_string() == "10.96.0.41")
            .count()
    };
    assert_eq!(held(&c), 0);
    c.add_yaml(LONELY_POD).unwrap();
    let t = c.trace("pod/default/pod2", "10.96.0.41:53", &opts).unwrap();
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/lonely"), "{}", t.render(true));
    assert_eq!(held(&c), 1);
}

const DEAF: &str = "\
apiVersion: v1
kind: Service
metadata: {name: deaf, namespace: default}
spec:
  clusterIP: 10.96.0.42
  ports: [{name: http, port: 80, targetPort: 9999, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: deaf-1, namespace: default, labels: {kubernetes.io/service-name: deaf}}
addressType: IPv4
ports: [{name: http, port: 9999, protocol: TCP}]
endpoints: [{addresses: [10.244.2.2], conditions: {ready: true}}]
";

/// An endpoint that refuses (a ready endpoint of a selector-less Service, at a port pod3
/// does not listen on): the controller's upstream connect is refused and ingress-nginx
/// answers 502 Bad Gateway (nginx: "connect() failed (111: Connection refused) while
/// connecting to upstream").
#[test]
fn the_ingress_controller_answers_502_when_the_backend_refuses() {
    let mut c = Cluster::seed();
    c.add_yaml(DEAF).unwrap();
    let node3 = c.node_id("node3").unwrap();
    let ctl = podnet::cluster::Container {
        name: "c".into(),
        ports: vec![(podnet::netfilter::Proto::TCP, 80)],
        named_ports: vec![],
    };
    c.add_pod("default", "ingress", node3, None, BTreeMap::new(), vec![ctl]).unwrap();
    c.add_ingress_controller("pod/default/ingress", "nginx", 80).unwrap();
    c.add_ingress(Ingress {
        namespace: "default".into(),
        name: "deaf".into(),
        class: Some("nginx".into()),
        rules: vec![IngressRule {
            host: None,
            paths: vec![IngressPath {
                path: "/deaf".into(),
                path_type: PathType::Prefix,
                service: "deaf".into(),
                port: "80".into(),
            }],
        }],
        ..Ingress::default()
    })
    .unwrap();
    let ip = c.pods()[c.pod_id("pod/default/ingress").unwrap().idx()].ip;
    let opts = TraceOptions {
        proto: Some(FlowProto::Http),
        path: "/deaf/x".into(),
        ..TraceOptions::default()
    };
    let t = c.trace("pod/default/pod2", format!("{ip}:80"), &opts).unwrap();
    assert_eq!(t.http_status, Some(502), "{}", t.render(true));
    assert_eq!(t.http_from.as_deref(), Some("pod/default/ingress"));
    assert_eq!(
        (t.disposition, t.reason.as_deref()),
        (Disposition::Rejected, Some("http_bad_gateway"))
    );
}

/// A node reaching a NodePort on 127.0.0.1 (localhost NodePorts, kube-proxy's default): the
/// connection leaves from 127.0.0.1 (the local table's `src` for 127.0.0.0/8), kube-proxy
/// DNATs it to an endpoint and masquerades it (kube-proxy's TestNodePorts: "localhost to
/// nodePort gets masqueraded"), and conntrack's original tuple keeps 127.0.0.1 on both ends.
#[test]
fn localhost_node_ports_leave_from_loopback_and_are_masqueraded() {
    let mut c = Cluster::seed();
    let opts = TraceOptions { sport: Some(45000), ..common::tcp() };
    let t = c.trace("node/node1", "127.0.0.1:30081", &opts).unwrap();
    assert!(t.completed, "{}", t.render(true));
    assert_eq!(t.reply_from.as_deref(), Some("127.0.0.1:30081"));
    assert!(t.server_saw.as_deref().unwrap().starts_with("192.168.0.1:"), "{}", t.render(true));
    let e = c
        .conntrack_entries("node1")
        .unwrap()
        .into_iter()
        .find(|e| e.original.sport == 45000)
        .unwrap();
    assert_eq!(
        (e.original.src.to_string(), e.original.dst.to_string()),
        ("127.0.0.1".into(), "127.0.0.1".into())
    );
    assert_eq!(e.reply.dst.to_string(), "192.168.0.1");
}
