//! Differential: the chain dispatch index and the quick checks return exactly what a linear
//! walk of every rule returns.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use podnet_netfilter::eval::{EvalState, PacketCtx, RecentLists, Rng, eval_chain};
use podnet_netfilter::ipset::IpSets;
use podnet_netfilter::rule::addrtype;
use podnet_netfilter::{CtInfo, Ruleset, TableCounters, TableName, packet};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, body) = data.split_at(8);
    let mut text = String::from("*filter\n:FORWARD ACCEPT [0:0]\n:SUB - [0:0]\n");
    for chunk in body.chunks(4).take(120) {
        let [k, a, p, v] = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
            *chunk.get(3).unwrap_or(&0),
        ];
        let proto = if k & 0x80 == 0 { "tcp" } else { "udp" };
        let j = [
            "-j ACCEPT",
            "-j DROP",
            "-j RETURN",
            "-j MARK --or-mark 0x1",
            "-j REJECT",
            "-j SUB",
            "-g SUB",
        ][usize::from(v % 7)];
        let (port, a) = (78 + u16::from(p % 6), a % 8);
        // The shapes the quick checks must read exactly: indexable Service rules, inverted
        // addresses and protocols, draws and counts before and after the port, state
        // matches, interfaces, source ports, `recent` lists, marks.
        let rule = match k % 16 {
            0..=2 => format!("-m {proto} -p {proto} -d 10.96.0.{a} --dport {port}"),
            3 => format!("-s 10.244.{a}.0/24"),
            4 => format!("-p {proto} -m {proto} ! --dport {port}"),
            5 => format!("! -d 10.96.0.{a}"),
            6 => format!(
                "-m statistic --mode random --probability 0.5 -p {proto} -m {proto} --dport {port}"
            ),
            7 => format!(
                "-p {proto} -m {proto} --dport {port} -m statistic --mode random --probability 0.5"
            ),
            8 => "-m statistic --mode nth --every 3 -m conntrack --ctstate NEW".to_string(),
            9 => {
                format!("! -s 10.244.{a}.0/24 -d 10.96.0.{a} -p {proto} -m {proto} --dport {port}")
            }
            10 => format!("! -p {proto}"),
            11 => format!("-i eth+ -p {proto}"),
            12 => format!("-p {proto} -m {proto} --sport 1234 --dport {port}"),
            13 => "-m conntrack --ctstate ESTABLISHED -m comment --comment est".to_string(),
            14 => format!("-m recent --name seen --set -p {proto} -m {proto} --dport {port}"),
            _ => format!(
                "-d 10.96.0.{a}/31 -m mark --mark 0x1/0x1 -m statistic --mode random ! --probability 0.25"
            ),
        };
        text.push_str(&format!("-A FORWARD {rule} {j}\n"));
    }
    text.push_str(
        "-A SUB -p udp -j RETURN\n\
         -A SUB -m statistic --mode random --probability 0.5 -j MARK --or-mark 0x2\n\
         -A SUB -d 10.96.0.3/32 -j ACCEPT\n",
    );
    text.push_str("COMMIT\n");
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
