//! Differential: packets taken as a list through a hook (`Netfilter::hook_list`, which reads
//! ahead from their bytes before it has checked them) meet the rules exactly as the same
//! packets one by one (`Netfilter::hook`), whatever the bytes.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use podnet_netfilter::rule::addrtype;
use podnet_netfilter::testing::services_nat_table;
use podnet_netfilter::{Hook, HookEnv, HookVerdict, Netfilter, Skb, TableName};

/// A TCP or UDP packet from `10.244.{src}.5:1234` to Service `svc`'s address, port 80.
fn to_service(src: u8, svc: u8, udp: bool) -> Vec<u8> {
    let l4 = if udp { 8 } else { 20 };
    let mut b = vec![0u8; 20 + l4];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&((20 + l4) as u16).to_be_bytes());
    b[8] = 64;
    b[9] = if udp { 17 } else { 6 };
    b[12..16].copy_from_slice(&[10, 244, src, 5]);
    b[16..20].copy_from_slice(&[10, 96, 0, svc]);
    b[20..22].copy_from_slice(&1234u16.to_be_bytes());
    b[22..24].copy_from_slice(&80u16.to_be_bytes());
    if udp {
        b[24..26].copy_from_slice(&8u16.to_be_bytes());
    } else {
        b[32] = 0x50;
        b[33] = 0x02;
    }
    smoltcp::wire::Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, mut rest)) = data.split_first() else { return };
    // Enough Services for an index: endpoints and protocol from one byte each.
    let services: Vec<(u8, bool)> = (0..16 + usize::from(n % 32))
        .map(|i| rest.get(i).map_or((1, false), |&b| (1 + b % 4, b & 0x80 != 0)))
        .collect();
    rest = rest.get(services.len()..).unwrap_or_default();
    let mut one = Netfilter::new(u64::from(n));
    one.tables_mut().restore(&services_nat_table(&services), false).expect("generated rules parse");
    let mut list = one.clone();
    // Lists of packets: a packet is a length byte, then (length 0) the end of the list,
    // (high bit set) a packet to a Service from the next byte, or that many raw bytes.
    let mut lists: Vec<Vec<Skb>> = vec![Vec::new()];
    while let Some((&len, tail)) = rest.split_first() {
        rest = tail;
        let bytes = if len == 0 {
            lists.push(Vec::new());
            continue;
        } else if len & 0x80 != 0 {
            let Some((&b, tail)) = rest.split_first() else { break };
            rest = tail;
            to_service(b & 7, b >> 3, len & 1 == 1)
        } else {
            let (raw, tail) = rest.split_at(usize::from(len).min(rest.len()));
            rest = tail;
            raw.to_vec()
        };
        lists.last_mut().expect("one list at least").push(Skb::new(bytes));
    }
    let at = |_: Ipv4Addr, _: Option<&str>| addrtype::UNICAST;
    let env = |masq| HookEnv {
        in_iface: Some("cbr0"),
        out_iface: None,
        physdev_in: None,
        physdev_out: None,
        bridged: false,
        masq_addr: masq,
        addr_type: &at,
        now: smoltcp::time::Instant::ZERO,
        trace: n & 1 == 1,
    };
    let masq = Some(Ipv4Addr::new(192, 168, 0, 1));
    let mut reports = Vec::new();
    for skbs in lists {
        let (mut a, mut b) = (skbs.clone(), skbs);
        let ra: Vec<_> = a.iter_mut().map(|s| one.hook(Hook::PreRouting, s, &env(None))).collect();
        reports.clear();
        list.hook_list(Hook::PreRouting, &mut b, &env(None), &mut reports);
        assert_eq!(ra, reports, "a list's reports differ from one by one");
        assert_eq!(a, b, "a list's packets differ from one by one");
        for ((x, y), r) in a.iter_mut().zip(&mut b).zip(&ra) {
            if r.verdict == HookVerdict::Accept {
                let rx = one.hook(Hook::PostRouting, x, &env(masq));
                assert_eq!(rx, list.hook(Hook::PostRouting, y, &env(masq)));
            }
        }
    }
    let all = TableName::ALL;
    assert_eq!(one.save_kernel_form_with(&all, true), list.save_kernel_form_with(&all, true));
    let now = smoltcp::time::Instant::ZERO;
    assert_eq!(one.conntrack.list(now), list.conntrack.list(now));
    assert_eq!(one.rng, list.rng);
});
