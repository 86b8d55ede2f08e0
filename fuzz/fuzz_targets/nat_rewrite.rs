//! Packet parsing, the LOG line and NAT rewriting: never a panic; a rewrite of a packet with
//! valid checksums leaves valid checksums.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use podnet_netfilter::packet::{self, Manip};

fuzz_target!(|data: &[u8]| {
    let Some((&k, bytes)) = data.split_first() else { return };
    let _ = packet::parse(bytes);
    let cx = podnet_netfilter::log::LogContext { in_iface: Some("eth0"), ..Default::default() };
    assert!(podnet_netfilter::log::log_line("fuzz: ", &cx, bytes).starts_with("fuzz: IN=eth0"));
    let valid = packet::checksums_valid(bytes);
    let mut b = bytes.to_vec();
    let manip = if k & 1 == 0 { Manip::Src } else { Manip::Dst };
    if packet::rewrite(&mut b, manip, Ipv4Addr::new(10, 0, k, 1), u16::from(k) * 257).is_ok()
        && valid
    {
        let p = packet::parse(&b);
        // ICMP errors may quote a truncated packet whose checksum cannot be fixed; the outer
        // packet must still verify.
        if p.is_ok_and(|i| !i.is_icmp_error()) {
            assert!(packet::checksums_valid(&b), "rewrite broke a checksum");
        }
    }
});
