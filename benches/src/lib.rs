//! Workloads shared by the criterion benches and the `figures` binary, so both measure the
//! same thing.

use std::net::Ipv4Addr;

use podnet::kube_proxy::{
    EndpointSlice, ProxyConfig, Service, ServicePort, SliceEndpoint, TargetPort, sync_iptables,
};
use podnet_netfilter::rule::addrtype;
use podnet_netfilter::{Hook, HookEnv, Netfilter, Proto, Skb};
use smoltcp::time::Instant;

/// `n` kube-proxy-style ClusterIP Services (10.96.0.0/16 upward), each with `eps` endpoints
/// spread over `nodes` nodes.
pub fn services(n: usize, eps: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("svc{i}");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
        let mut s = Service::cluster_ip("bench", &name, ip);
        s.ports.push(ServicePort {
            name: "http".into(),
            protocol: Proto::TCP,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: 0,
        });
        svcs.push(s);
        slices.push(EndpointSlice {
            namespace: "bench".into(),
            service: name,
            ports: vec![("http".into(), Proto::TCP, 8080)],
            endpoints: (0..eps)
                .map(|e| {
                    let k = (i * eps + e) as u32;
                    SliceEndpoint {
                        ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 2)) + k),
                        node_name: Some(format!("node{}", k % 100)),
                        ready: None,
                        serving: None,
                        terminating: None,
                    }
                })
                .collect(),
        });
    }
    (svcs, slices)
}

/// kube-proxy's configuration on the benchmark node.
pub fn proxy_config() -> ProxyConfig {
    ProxyConfig {
        node_name: "node0".into(),
        node_ips: vec![Ipv4Addr::new(192, 168, 0, 1)],
        local_cidr: Some("10.128.0.0/9".parse().expect("literal")),
        local_iface: None,
        masquerade_bit: 14,
        node_port_addresses: None,
        masquerade_all: false,
        random_fully: true,
        nfacct: false,
        localhost_nodeports: true,
    }
}

/// A node's netfilter programmed for `n` Services with 2 endpoints each.
pub fn node_netfilter(n: usize) -> Netfilter {
    let (svcs, slices) = services(n, 2);
    let mut nf = Netfilter::new(1);
    nf.tables_mut()
        .restore(&sync_iptables(&proxy_config(), &svcs, &slices), false)
        .expect("payload parses");
    nf.tables_mut().restore(podnet::kube_proxy::base_jumps(), true).expect("jumps parse");
    nf.conntrack.max = usize::MAX;
    nf
}

/// kube-proxy's nftables-mode sync of `svcs` on the benchmark node (NodePorts on its
/// address, the service CIDR 10.96.0.0/12): the `nft -f` text.
pub fn nftables_payload(svcs: &[Service], slices: &[EndpointSlice]) -> String {
    let cfg = ProxyConfig {
        node_port_addresses: Some(vec![Ipv4Addr::new(192, 168, 0, 1)]),
        ..proxy_config()
    };
    podnet::kube_proxy::sync_nftables(
        &cfg,
        svcs,
        slices,
        &["10.96.0.0/12".parse().expect("literal")],
    )
}

/// A node's netfilter in nftables mode for `n` Services with 2 endpoints each: kube-proxy's
/// `ip kube-proxy` table and no iptables rules.
pub fn node_netfilter_nft(n: usize) -> Netfilter {
    let (svcs, slices) = services(n, 2);
    let mut nf = Netfilter::new(1);
    nf.nft_apply(&nftables_payload(&svcs, &slices)).expect("kube-proxy's transaction applies");
    nf.conntrack.max = usize::MAX;
    nf
}

/// A node's netfilter in IPVS mode (round robin) for `n` Services with 2 endpoints each:
/// kube-proxy's ipsets, virtual services and the iptables rules IPVS mode still writes.
pub fn node_netfilter_ipvs(n: usize) -> Netfilter {
    let (svcs, slices) = services(n, 2);
    let sync = podnet::kube_proxy::sync_ipvs(
        &proxy_config(),
        &svcs,
        &slices,
        podnet_netfilter::ipvs::Scheduler::Rr,
    );
    let mut nf = Netfilter::new(1);
    nf.tables_mut().restore(&sync.iptables, false).expect("payload parses");
    nf.tables_mut().restore(podnet::kube_proxy::base_jumps_ipvs(), true).expect("jumps parse");
    for (name, kind, comment, members) in &sync.sets {
        nf.sets.create(name, *kind, comment);
        for m in members {
            nf.sets.add(name, m).expect("members fit");
        }
    }
    nf.ipvs.replace(sync.services);
    nf.conntrack.max = usize::MAX;
    nf
}

/// What a pod-to-ClusterIP packet goes through on the client's node in IPVS mode: the VIP
/// is local (kube-ipvs0), so PREROUTING, INPUT (where IPVS schedules and DNATs), then
/// POSTROUTING toward the real server. Tracing off. `true` when IPVS took it.
pub fn forward_ipvs(nf: &mut Netfilter, skb: &mut Skb, now: Instant) -> bool {
    let local = |a: Ipv4Addr, _: Option<&str>| -> u16 {
        if u32::from(a) >> 16 == u32::from(Ipv4Addr::new(10, 96, 0, 0)) >> 16 {
            addrtype::LOCAL
        } else {
            addrtype::UNICAST
        }
    };
    let env = |inp: Option<&'static str>, out: Option<&'static str>, masq| HookEnv {
        in_iface: inp,
        out_iface: out,
        physdev_in: None,
        physdev_out: None,
        bridged: false,
        masq_addr: masq,
        addr_type: &local,
        now,
        trace: false,
    };
    let ok = |r: &podnet_netfilter::HookReport| r.verdict == podnet_netfilter::HookVerdict::Accept;
    if !ok(&nf.hook(Hook::PreRouting, skb, &env(Some("cbr0"), None, None))) {
        return false;
    }
    let input = nf.hook(Hook::Input, skb, &env(Some("cbr0"), None, None));
    ok(&input)
        && input.ipvs.is_some()
        && ok(&nf.hook(
            Hook::PostRouting,
            skb,
            &env(None, Some("eth0"), Some(Ipv4Addr::new(192, 168, 0, 1))),
        ))
}

/// A 64-byte-frame-sized TCP SYN (40-byte IPv4 packet) with valid checksums.
pub fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp(src, sport, dst, dport, 0x02)
}

/// A 40-byte TCP segment (no payload) with TCP flags `flags` and valid checksums.
pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    let mut b = vec![0u8; 40];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&40u16.to_be_bytes());
    b[6] = 0x40;
    b[8] = 64;
    b[9] = 6;
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    b[20..22].copy_from_slice(&sport.to_be_bytes());
    b[22..24].copy_from_slice(&dport.to_be_bytes());
    b[32] = 0x50;
    b[33] = flags;
    b[34..36].copy_from_slice(&64240u16.to_be_bytes());
    let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
    ip.fill_checksum();
    TcpPacket::new_unchecked(ip.payload_mut())
        .fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    b
}

fn not_local(_: Ipv4Addr, _: Option<&str>) -> u16 {
    addrtype::UNICAST
}

/// What the hooks see of a packet forwarded from the pod bridge `cbr0`, leaving by `out`
/// (where MASQUERADE takes `masq`). Tracing off.
fn forward_env(
    out: Option<&'static str>,
    masq: Option<Ipv4Addr>,
    now: Instant,
) -> HookEnv<'static> {
    HookEnv {
        in_iface: Some("cbr0"),
        out_iface: out,
        physdev_in: None,
        physdev_out: None,
        bridged: false,
        masq_addr: masq,
        addr_type: &not_local,
        now,
        trace: false,
    }
}

fn accepted(r: &podnet_netfilter::HookReport) -> bool {
    r.verdict == podnet_netfilter::HookVerdict::Accept
}

/// What a forwarded pod-to-ClusterIP packet goes through on the client's node:
/// PREROUTING (conntrack, DNAT), FORWARD, POSTROUTING (confirm). Tracing off.
pub fn forward(nf: &mut Netfilter, skb: &mut Skb, now: Instant) -> bool {
    accepted(&nf.hook(Hook::PreRouting, skb, &forward_env(None, None, now)))
        && forward_on(nf, skb, now)
}

/// [`forward`] after PREROUTING: FORWARD, then POSTROUTING out of `eth0`.
#[inline(always)]
fn forward_on(nf: &mut Netfilter, skb: &mut Skb, now: Instant) -> bool {
    let masq = Some(Ipv4Addr::new(192, 168, 0, 1));
    accepted(&nf.hook(Hook::Forward, skb, &forward_env(Some("eth0"), None, now)))
        && accepted(&nf.hook(Hook::PostRouting, skb, &forward_env(Some("eth0"), masq, now)))
}

/// SYNs of `conns` new connections from distinct clients ([`client`]), spread over the
/// first `services` Services ([`vip`]), port 80.
pub fn syn_pool(services: usize, conns: u32) -> Vec<Vec<u8>> {
    (0..conns)
        .map(|k| {
            let (src, sport) = client(k);
            syn(src, sport, vip(k as usize % services), 80)
        })
        .collect()
}

/// Opens a TCP connection from a client pod to Service 3 through [`forward`]: the SYN
/// (DNAT to an endpoint), the endpoint's SYN-ACK (reverse DNAT) and the client's ACK, so
/// conntrack holds the connection ESTABLISHED and assured. Returns the client's next
/// segment (an ACK toward the ClusterIP): a packet of an established flow, which no nat
/// chain sees again and which passes every `--ctstate NEW` jump by.
pub fn established_tcp(nf: &mut Netfilter) -> Vec<u8> {
    use podnet_netfilter::conntrack::{CtInfo, CtRef, Direction};
    let now = Instant::ZERO;
    let (src, sport) = client(1);
    let (svc, svc_port) = (vip(3), 80);
    let mut first = Skb::new(syn(src, sport, svc, svc_port));
    assert!(forward(nf, &mut first, now), "the SYN passes");
    let info = podnet_netfilter::packet::parse(&first.data).expect("the node keeps it valid");
    let (ep, ep_port) = (info.tuple.dst, info.tuple.dport);
    assert_ne!(ep, svc, "the SYN was DNATed to an endpoint");
    let mut answer = Skb::new(tcp(ep, ep_port, src, sport, 0x12));
    assert!(forward(nf, &mut answer, now), "the SYN-ACK passes");
    let back = podnet_netfilter::packet::parse(&answer.data).expect("the node keeps it valid");
    assert_eq!((back.tuple.src, back.tuple.sport), (svc, svc_port), "reverse DNAT");
    let ack = tcp(src, sport, svc, svc_port, 0x10);
    let mut third = Skb::new(ack.clone());
    assert!(forward(nf, &mut third, now), "the ACK passes");
    assert!(
        matches!(third.ct, CtRef::Confirmed(_, Direction::Original, CtInfo::Established)),
        "the connection is established: {:?}",
        third.ct
    );
    ack
}

/// The ClusterIP of benchmark Service `i`.
pub fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32)
}

/// Client address `k` (a pod IP inside the cluster CIDR).
pub fn client(k: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + (k >> 14)),
        32768 + (k & 0x3fff) as u16,
    )
}

/// The seed paths for established-packet figures: (name, source, destination, protocol,
/// where the flow must land). Each runs as one flow of many exchanges
/// ([`TraceOptions::rounds`](podnet::trace::TraceOptions)), so every packet after the first
/// exchange follows conntrack entries on every node it crosses.
pub const ESTABLISHED_PATHS: &[(&str, &str, &str, &str, &str)] = &[
    ("udp_same_node", "pod/default/pod1", "10.244.1.3:8080", "udp", "pod/default/pod2"),
    ("udp_cross_node", "pod/default/pod1", "10.244.2.2:8080", "udp", "pod/default/pod3"),
    // DNAT on node1 to the endpoint on node2, reverse DNAT of the replies.
    ("udp_pod_to_clusterip_remote", "pod/default/pod2", "10.96.0.10:80", "udp", "pod/default/pod3"),
    // Masquerade on node1, 1:1 NAT at the internet gateway.
    ("udp_egress_via_gateway", "pod/default/pod2", "203.0.113.10:80", "udp", "host/internet"),
    // Gateway, cloud LB (DNAT + SNAT), NodePort DNAT and masquerade on the node, to a pod:
    // the Service is TCP only, so these are echo writes on one TCP connection.
    ("tcp_lb_nodeport_pod", "host/internet", "203.0.113.100:80", "tcp", "pod/default/"),
];

/// Options for an established flow of `rounds` exchanges on `path` of [`ESTABLISHED_PATHS`]:
/// picks a source port whose flow lands where the path says (the Service's random choice is
/// made once per flow, by its first packet), and runs that flow once so the conntrack
/// entries, ARP caches and FDBs it needs exist.
pub fn established_flow(
    c: &mut podnet::Cluster,
    path: &(&str, &str, &str, &str, &str),
    rounds: u32,
) -> podnet::trace::TraceOptions {
    let &(name, from, to, proto, lands) = path;
    let proto =
        Some(podnet::trace::FlowProto::parse(proto).expect("the bench protocols are valid"));
    for sport in 50_000..50_064 {
        let o = podnet::trace::TraceOptions {
            proto,
            sport: Some(sport),
            record_hops: false,
            rounds,
            ..podnet::trace::TraceOptions::default()
        };
        let t = c.trace(from, to, &o).expect("the bench flows are valid");
        assert!(t.completed && t.answered == (rounds > 1).then_some(rounds), "{name} completes");
        if t.delivered_to.as_deref().is_some_and(|d| d.starts_with(lands)) {
            return o;
        }
    }
    panic!("{name}: no source port in 50000-50063 lands on {lands}")
}

/// The flow mix of the `trace_many` bench, shared with `ffi-python/bench/trace_many.py`:
/// same node, across nodes, and through the ClusterIP, TCP and UDP.
pub const TRACE_MANY_FLOWS: &[(&str, &str, &str)] = &[
    ("pod/default/pod2", "10.96.0.10:80", "udp"),
    ("pod/default/pod2", "10.96.0.10:80", "tcp"),
    ("pod/default/pod1", "10.244.1.3:8080", "udp"),
    ("pod/default/pod1", "10.244.2.2:8080", "tcp"),
];

/// What the Python binding's `trace_many` does for one flow, natively: trace with hops off
/// and build the summary strings.
pub fn summary(c: &mut podnet::Cluster, from: &str, to: &str, proto: &str) -> [Option<String>; 5] {
    let proto =
        Some(podnet::trace::FlowProto::parse(proto).expect("the bench protocols are valid"));
    let o = podnet::trace::TraceOptions {
        proto,
        record_hops: false,
        ..podnet::trace::TraceOptions::default()
    };
    let t = c.trace(from, to, &o).expect("the bench flows are valid");
    [Some(t.disposition.to_string()), t.delivered_to, t.server_saw, t.reply_from, t.reason]
}

/// Kubernetes YAML for a cluster of `nodes` nodes with `pods_per_node` pods each, spread over
/// `services` ClusterIP Services (pod `k` backs Service `k % services`); no status anywhere,
/// so the API server and host-local assign addresses as they would.
pub fn cluster_yaml(nodes: usize, pods_per_node: usize, services: usize) -> String {
    use std::fmt::Write;
    assert!((1..=250).contains(&nodes), "the default node subnet (a /24) holds 250 nodes here");
    let mut y = String::new();
    for n in 1..=nodes {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Node\nmetadata: {{name: node{n}}}\nspec: {{podCIDR: 10.244.{n}.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.168.0.{n}}}]}}\n---\n"
        );
    }
    for s in 0..services {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: app{s}, namespace: default}}\nspec:\n  selector: {{app: app{s}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\n"
        );
    }
    for n in 1..=nodes {
        for k in 0..pods_per_node {
            let app = ((n - 1) * pods_per_node + k) % services.max(1);
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{n}-{k}, namespace: default, labels: {{app: app{app}}}}}\nspec:\n  nodeName: node{n}\n  containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]\n---\n"
            );
        }
    }
    y
}

/// Minimal Kubernetes objects for a large cluster: `nodes` nodes (a /24 each from
/// 10.0.0.0/8, addresses in 172.16.0.0/16), `pods_per_node` pods each without status, and
/// `services` ClusterIP Services (from 100.64.0.0/16) spreading the pods evenly.
pub fn large_cluster_yaml(nodes: usize, pods_per_node: usize, services: usize) -> String {
    use std::fmt::Write;
    assert!(nodes < 65_000, "one /24 per node from 10.0.0.0/8 and a /16 of node addresses");
    let mut y = String::from(
        "apiVersion: podnet.dev/v1alpha1\nkind: PodnetConfig\nclusterCidr: 10.0.0.0/8\nnodeSubnet: 172.16.0.0/16\nvpcRouter: 172.16.255.254\nserviceCidr: 100.64.0.0/16\n",
    );
    for n in 0..nodes {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: n{n}}}\nspec: {{podCIDR: 10.{}.{}.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: 172.16.{}.{}}}]}}\n",
            n / 256,
            n % 256,
            (n + 1) / 256,
            (n + 1) % 256
        );
    }
    for s in 0..services {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{s}, namespace: default}}\nspec: {{selector: {{app: s{s}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
        );
    }
    for n in 0..nodes {
        for k in 0..pods_per_node {
            let app = (n * pods_per_node + k) % services.max(1);
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{n}-{k}, namespace: default, labels: {{app: s{app}}}}}\nspec: {{nodeName: n{n}, containers: [{{name: c, image: x}}]}}\n"
            );
        }
    }
    y
}

/// `n` NetworkPolicies in namespace `default`, one per app of [`cluster_yaml`] (`app{i}` for
/// `i < apps`, cycling): each isolates its app's pods for ingress and egress, takes
/// connections from the next app on 8080 and from an ipBlock, and opens connections to the
/// previous app and to DNS.
pub fn policies_yaml(n: usize, apps: usize) -> String {
    use std::fmt::Write;
    let mut y = String::new();
    for i in 0..n {
        let app = i % apps.max(1);
        let (next, prev) = ((app + 1) % apps.max(1), (app + apps.max(1) - 1) % apps.max(1));
        let _ = write!(
            y,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: app{app}}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: app{next}}}}}}}, {{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]\n    ports: [{{port: 8080}}]\n  egress:\n  - to: [{{podSelector: {{matchLabels: {{app: app{prev}}}}}}}]\n  - ports: [{{port: 53, protocol: UDP}}]\n---\n"
        );
    }
    y
}

/// The reference cluster (`Cluster::seed`) with `n` NetworkPolicies in namespace `default`:
/// one isolating pod4 (`app=api`) for ingress and pod2 (`app=client`) for egress and
/// allowing pod2 → pod4 on 8080, and `n - 1` more selecting apps that have no pod here (as a
/// namespace full of per-application policies would). `n == 0`: no policy.
pub fn seed_with_policies(n: usize) -> podnet::Cluster {
    use std::fmt::Write;
    let mut c = podnet::Cluster::seed();
    if n == 0 {
        return c;
    }
    let mut y = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: api}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: 8080}, {port: 8080, protocol: UDP}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: client, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: api}}}]\n---\n",
    );
    for i in 2..n {
        let _ = write!(
            y,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: other{i}, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: other{i}}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]\n---\n"
        );
    }
    c.add_yaml(&y).expect("the policies load");
    c
}
