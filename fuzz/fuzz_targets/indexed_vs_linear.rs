//! Differential: the chain dispatch index and the quick checks return exactly what a linear
//! walk of every rule returns.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use podnet_netfilter::Rng;
use podnet_netfilter::eval::{EvalState, PacketCtx, RecentLists, eval_chain};
use podnet_netfilter::ipset::IpSets;
use podnet_netfilter::rule::addrtype;
use podnet_netfilter::testing::forward_table;
use podnet_netfilter::{CtInfo, Ruleset, TableCounters, TableName, packet};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, body) = data.split_at(8);
    // Four bytes a rule: shape (and TCP or UDP), Service address, port, target.
    let rules = body.chunks(4).take(120).map(|c| {
        let byte = |i: usize| c.get(i).copied().unwrap_or(0);
        (c[0], byte(1) % 8, 78 + u16::from(byte(2) % 6), c[0] & 0x80 != 0, byte(3))
    });
    let text = forward_table(rules);
    let mut a = Ruleset::default();
    a.restore(&text, false).expect("generated rules parse");
    let b = a.clone();
    let udp = head[0] & 1 == 1;
    let mut pkt = vec![
        0x45,
        0,
        0,
        28,
        0,
        0,
        0x40,
        0,
        64,
        if udp { 17 } else { 6 },
        0,
        0,
        10,
        244,
        head[1] % 8,
        5,
        10,
        96,
        0,
        head[2] % 8,
    ];
    let l4 = if udp { 8 } else { 20 };
    pkt[3] = (20 + l4) as u8;
    pkt.extend(std::iter::repeat_n(0u8, l4));
    pkt[22..24].copy_from_slice(&(78 + u16::from(head[3] % 6)).to_be_bytes());
    if !udp {
        pkt[32] = 0x50;
    } else {
        pkt[24..26].copy_from_slice(&8u16.to_be_bytes());
    }
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut pkt[..]);
    ip.fill_checksum();
    let Ok(info) = packet::parse(&pkt) else { return };
    let at = |_: Ipv4Addr, _: Option<&str>| addrtype::UNICAST;
    let ctx = PacketCtx {
        info: &info,
        in_iface: None,
        out_iface: None,
        physdev_in: None,
        physdev_out: None,
        bridged: false,
        ctinfo: if head[0] & 2 == 0 { CtInfo::New } else { CtInfo::Established },
        ct_status: 0,
        ct_origdst: None,
        addr_type: &at,
        now: smoltcp::time::Instant::ZERO,
    };
    let sets = IpSets::default();
    let (mut m1, mut m2, mut r1, mut r2, mut l1, mut l2) =
        (0, 0, Rng::new(1), Rng::new(1), RecentLists::default(), RecentLists::default());
    let (mut h1, mut h2) = (Vec::new(), Vec::new());
    let (mut c1, mut c2) = (TableCounters::default(), TableCounters::default());
    let v1 = eval_chain(
        a.table(TableName::Filter),
        "FORWARD",
        &ctx,
        &mut EvalState {
            mark: &mut m1,
            rng: &mut r1,
            recent: &mut l1,
            sets: &sets,
            hits: Some(&mut h1),
            logs: Vec::new(),
            counters: &mut c1,
        },
        true,
    );
    let v2 = eval_chain(
        b.table(TableName::Filter),
        "FORWARD",
        &ctx,
        &mut EvalState {
            mark: &mut m2,
            rng: &mut r2,
            recent: &mut l2,
            sets: &sets,
            hits: Some(&mut h2),
            logs: Vec::new(),
            counters: &mut c2,
        },
        false,
    );
    assert_eq!(v1, v2);
    assert_eq!(h1, h2);
    assert_eq!(m1, m2);
    assert_eq!(c1, c2);
    assert_eq!(r1, r2);
    assert_eq!(l1, l2);
});
