//! Packets through nf_tables rules: kube-proxy's `TestOverallNFTablesRules` ruleset (the
//! golden input of `src/nft/tests.rs`) on one node, and nf_tables chains between the
//! iptables tables.
//!
//! What each packet should meet follows from the rules' documented meaning in kube-proxy
//! (`pkg/proxy/nftables/proxier.go`: the comments on each chain and map; `NewFakeProxier`'s
//! node 192.168.0.2, pod CIDR 10.0.0.0/8, service CIDR 172.30.0.0/16) and from how the
//! kernel runs base chains (priority order; the NAT core consulting nat chains once per
//! connection).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use smoltcp::time::Instant;

use podnet_netfilter::packet::{self, build};
use podnet_netfilter::rule::{RejectWith, addrtype};
use podnet_netfilter::{Choices, DropCause, Hook, HookEnv, HookVerdict, Netfilter, Rng, Skb};

const INPUT: &str = include_str!("data/kube-proxy-overall.nft");

fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    build::tcp(src, sport, dst, dport, 0x02)
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, data: &[u8]) -> Vec<u8> {
    build::udp_with(src, sport, dst, dport, data)
}

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

fn node() -> Netfilter {
    let mut nf = Netfilter::new(5);
    nf.nft_apply(INPUT).unwrap();
    nf
}

fn at(a: Ipv4Addr, _: Option<&str>) -> u16 {
    if a == NODE || a.octets()[0] == 127 { addrtype::LOCAL } else { addrtype::UNICAST }
}

fn env(now: i64) -> HookEnv<'static> {
    HookEnv {
        in_iface: Some("eth0"),
        out_iface: Some("cbr0"),
        physdev_in: None,
        physdev_out: None,
        bridged: false,
        masq_addr: Some(NODE),
        addr_type: &at,
        now: Instant::from_secs(now),
        trace: true,
    }
}

/// A routed packet's way through PREROUTING, then FORWARD (or INPUT when it is for the
/// node) and POSTROUTING: the first verdict that is not accept, the packet as it left,
/// and the chains whose rules fired.
fn forward(nf: &mut Netfilter, pkt: Vec<u8>, now: i64) -> (HookVerdict, Skb, Vec<String>) {
    let mut skb = Skb::new(pkt);
    let mut chains = Vec::new();
    let e = env(now);
    for hook in [Hook::PreRouting, Hook::Forward, Hook::PostRouting] {
        let hook = match hook {
            Hook::Forward
                if at(packet::parse(&skb.data).unwrap().tuple.dst, None) == addrtype::LOCAL =>
            {
                Hook::Input
            }
            h => h,
        };
        let r = nf.hook(hook, &mut skb, &e);
        for h in r.hits() {
            let el = h.nft.as_ref().and_then(|n| n.element.clone());
            chains.push(match el {
                Some(el) => format!("{} [{el}]", h.chain),
                None => h.chain.clone(),
            });
        }
        if r.verdict != HookVerdict::Accept {
            return (r.verdict, skb, chains);
        }
        if hook == Hook::Input {
            break;
        }
    }
    (HookVerdict::Accept, skb, chains)
}

fn dst(skb: &Skb) -> (Ipv4Addr, u16) {
    let t = packet::parse(&skb.data).unwrap().tuple;
    (t.dst, t.dport)
}

fn src(skb: &Skb) -> (Ipv4Addr, u16) {
    let t = packet::parse(&skb.data).unwrap().tuple;
    (t.src, t.sport)
}

#[test]
fn a_pod_to_a_cluster_ip_is_dnatted_by_the_service_ips_map_and_not_masqueraded() {
    let mut nf = node();
    let (v, skb, chains) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [172, 30, 0, 41], 80), 1);
    assert_eq!(v, HookVerdict::Accept);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 1), 80));
    assert_eq!(src(&skb), (Ipv4Addr::new(10, 0, 1, 5), 40000), "pod traffic keeps its source");
    assert!(
        chains.contains(
            &"services [172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80]"
                .to_string()
        ),
        "{chains:?}"
    );
    assert!(chains.iter().any(|c| c == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"));
    assert!(!chains.iter().any(|c| c == "mark-for-masquerade"));
}

#[test]
fn a_client_outside_the_pod_cidr_is_marked_and_masqueraded_fully_random() {
    let mut nf = node();
    let (v, skb, chains) =
        forward(&mut nf, tcp_syn([192, 168, 7, 7], 40000, [172, 30, 0, 41], 80), 1);
    assert_eq!(v, HookVerdict::Accept);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 1), 80));
    assert_eq!(src(&skb).0, NODE);
    assert_ne!(src(&skb).1, 40000, "fully-random never keeps the port");
    assert_eq!(skb.mark & 0x4000, 0, "masquerading clears the mark");
    assert!(chains.iter().any(|c| c == "mark-for-masquerade"));
    assert!(chains.iter().any(|c| c == "masquerading"));
}

#[test]
fn an_endpoint_reaching_itself_through_its_service_is_masqueraded_hairpin() {
    let mut nf = node();
    let (_, skb, _) = forward(&mut nf, tcp_syn([10, 180, 0, 1], 40000, [172, 30, 0, 41], 80), 1);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 1), 80));
    assert_eq!(src(&skb).0, NODE);
}

#[test]
fn a_cluster_ip_port_the_service_lacks_is_rejected_and_an_unallocated_one_dropped() {
    let mut nf = node();
    let (v, _, chains) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [172, 30, 0, 41], 81), 1);
    assert_eq!(v, HookVerdict::Reject(RejectWith::PortUnreachable));
    assert_eq!(chains.last().unwrap(), "cluster-ips-check [172.30.0.41]");
    let (v, _, chains) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [172, 30, 0, 99], 80), 1);
    assert_eq!(v, HookVerdict::Drop(DropCause::Rule));
    assert_eq!(chains.last().unwrap(), "cluster-ips-check");
    // Outside the service CIDR, nothing of kube-proxy's applies.
    let (v, skb, _) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [8, 8, 8, 8], 443), 1);
    assert_eq!(v, HookVerdict::Accept);
    assert_eq!(dst(&skb), (Ipv4Addr::new(8, 8, 8, 8), 443));
}

#[test]
fn a_service_without_endpoints_rejects_through_the_reject_chain() {
    let mut nf = node();
    let (v, _, chains) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [172, 30, 0, 46], 80), 1);
    assert_eq!(v, HookVerdict::Reject(RejectWith::PortUnreachable));
    assert!(chains.contains(
        &"service-endpoints-check [172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain]"
            .to_string()
    ), "{chains:?}");
    assert_eq!(chains.last().unwrap(), "reject-chain");
}

#[test]
fn load_balancer_source_ranges_drop_before_dnat_and_admit_the_listed_range() {
    let mut nf = node();
    let (v, _, chains) = forward(&mut nf, tcp_syn([1, 1, 1, 1], 40000, [5, 6, 7, 8], 80), 1);
    assert_eq!(v, HookVerdict::Drop(DropCause::Rule));
    assert_eq!(chains.last().unwrap(), "firewall-HVFWP5L3-ns5/svc5/tcp/p80");
    let (v, skb, _) = forward(&mut nf, tcp_syn([203, 0, 113, 9], 40000, [5, 6, 7, 8], 80), 1);
    assert_eq!(v, HookVerdict::Accept);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 3), 80));
    assert_eq!(src(&skb).0, NODE, "external traffic is masqueraded (eTP Cluster)");
}

#[test]
fn a_node_port_without_local_endpoints_is_dropped_at_input() {
    // svc2 has externalTrafficPolicy Local and no endpoint on this node.
    let mut nf = node();
    let (v, _, chains) = forward(&mut nf, tcp_syn([8, 8, 8, 8], 40000, [192, 168, 0, 2], 3001), 1);
    assert_eq!(v, HookVerdict::Drop(DropCause::Rule));
    assert_eq!(
        chains.last().unwrap(),
        "nodeport-endpoints-check [tcp . 3001 comment \"ns2/svc2:p80\" : drop]"
    );
    // svc3's NodePort (eTP Cluster) is DNATted and masqueraded.
    let (v, skb, _) = forward(&mut nf, tcp_syn([8, 8, 8, 8], 40000, [192, 168, 0, 2], 3003), 1);
    assert_eq!(v, HookVerdict::Accept);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 3), 80));
    assert_eq!(src(&skb).0, NODE);
}

#[test]
fn client_ip_affinity_is_remembered_per_namespace_until_the_timeout() {
    let mut nf = node();
    let (_, skb, chains) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [172, 30, 0, 45], 80), 1);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 3), 80));
    assert!(!chains.iter().any(|c| c.contains("[10.0.1.5]")));
    let set = "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80";
    assert_eq!(
        nf.nft_state.dynamic_elements("kube-proxy", set, Instant::from_secs(2)),
        [Ipv4Addr::new(10, 0, 1, 5)]
    );
    // The next connection goes by the affinity rule.
    let (_, _, chains) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40001, [172, 30, 0, 45], 80), 2);
    assert!(
        chains.contains(&"service-HVFWP5L3-ns5/svc5/tcp/p80 [10.0.1.5]".to_string()),
        "{chains:?}"
    );
    // 10800 s later the element has expired.
    assert!(
        nf.nft_state.dynamic_elements("kube-proxy", set, Instant::from_secs(2 + 10_800)).is_empty()
    );
}

#[test]
fn numgen_is_a_decision_point_with_one_option_per_endpoint() {
    let choices = Arc::new(Mutex::new(Choices { forced: vec![1], met: Vec::new() }));
    let mut nf = node();
    nf.rng = Rng::scripted(1, choices.clone());
    let (_, skb, _) = forward(&mut nf, udp([10, 0, 1, 5], 5353, [172, 30, 0, 44], 80, b"x"), 1);
    // svc4 serves TCP only: a UDP packet to it meets no element, and the service CIDR
    // rule drops it.
    assert_eq!(dst(&skb), (Ipv4Addr::new(172, 30, 0, 44), 80));
    assert!(choices.lock().unwrap().met.is_empty());
    let (_, skb, _) = forward(&mut nf, tcp_syn([10, 0, 1, 5], 40000, [172, 30, 0, 44], 80), 1);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 180, 0, 5), 80), "option 1: the second endpoint");
    let met = &choices.lock().unwrap().met;
    assert_eq!(met.len(), 1);
    assert_eq!(met[0], (1, vec![0.5, 0.5]));
}

#[test]
fn nft_chains_run_between_the_iptables_tables_by_priority() {
    // A chain at -250 runs before conntrack (-200), where `ct state` reads invalid; one at
    // mangle priority runs after it, and sets a mark the iptables nat table (-100) reads.
    let mut nf = Netfilter::new(1);
    nf.tables_mut()
        .restore(
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m mark --mark 0x1/0x1 -p udp -j DNAT --to-destination 10.9.9.9:53\nCOMMIT\n",
            false,
        )
        .unwrap();
    nf.nft_apply(
        "add table ip t\n\
         add chain ip t early { type filter hook prerouting priority -250 ; }\n\
         add chain ip t m { type filter hook prerouting priority -150 ; }\n\
         add rule ip t early ct state invalid meta mark set 0x00000002\n\
         add rule ip t m ct state new meta mark set meta mark | 0x00000001\n",
    )
    .unwrap();
    let mut skb = Skb::new(udp([10, 0, 0, 1], 5353, [10, 0, 0, 2], 53, b"q"));
    let r = nf.hook(Hook::PreRouting, &mut skb, &env(1));
    assert_eq!(r.verdict, HookVerdict::Accept);
    assert_eq!(skb.mark, 3);
    assert_eq!(dst(&skb), (Ipv4Addr::new(10, 9, 9, 9), 53));
}

/// A transaction the fuzzer found: a map element that jumped to a chain that did not exist was
/// accepted and left a jump nowhere. Such an element is refused now, as nft refuses it.
#[test]
fn a_fuzzed_transaction_with_a_jump_to_nowhere_is_refused() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/nft_apply/seed-jump-to-nowhere"
    ))
    .unwrap();
    let mut nf = Netfilter::new(1);
    if nf.nft_apply(&text).is_ok() {
        for pkt in [
            tcp_syn([10, 0, 0, 1], 40000, [172, 30, 0, 41], 80),
            udp([10, 0, 0, 1], 5353, [10, 96, 0, 10], 53, b"x"),
        ] {
            let mut skb = Skb::new(pkt);
            for hook in [Hook::PreRouting, Hook::Forward, Hook::PostRouting] {
                if nf.hook(hook, &mut skb, &env(1)).verdict != HookVerdict::Accept {
                    break;
                }
            }
        }
    }
}
