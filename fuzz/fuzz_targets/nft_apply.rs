//! `nft -f` input: any text either applies or fails with an error whose line and column are
//! inside the input, leaving the ruleset as it was; an applied ruleset lists, and runs
//! packets through every hook without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut rs = podnet_netfilter::nft::Ruleset::default();
    let _ = rs.apply("add table ip kube-proxy\nadd chain ip kube-proxy services\n");
    let before = rs.clone();
    match rs.apply(text) {
        Ok(()) => {
            let _ = rs.list();
            let mut nf = podnet_netfilter::Netfilter::new(1);
            nf.set_nft(std::sync::Arc::new(rs));
            let at = |_: std::net::Ipv4Addr, _: Option<&str>| 2u16;
            let env = podnet_netfilter::HookEnv {
                in_iface: Some("cbr0"),
                out_iface: Some("eth0"),
                physdev_in: None,
                physdev_out: None,
                bridged: false,
                masq_addr: Some(std::net::Ipv4Addr::new(192, 168, 0, 1)),
                addr_type: &at,
                now: smoltcp::time::Instant::from_secs(1),
                trace: true,
            };
            use podnet_netfilter::packet::build;
            for pkt in [
                build::tcp([10, 0, 0, 1], 40000, [172, 30, 0, 41], 80, 0x02),
                build::udp([10, 0, 0, 1], 5353, [10, 96, 0, 10], 53),
            ] {
                let mut skb = podnet_netfilter::Skb::new(pkt);
                for hook in [podnet_netfilter::Hook::PreRouting, podnet_netfilter::Hook::Forward, podnet_netfilter::Hook::PostRouting] {
                    let r = nf.hook(hook, &mut skb, &env);
                    if r.verdict != podnet_netfilter::HookVerdict::Accept {
                        break;
                    }
                }
            }
        }
        Err(e) => {
            assert_eq!(rs, before, "a failed transaction changed the ruleset");
            let lines = text.lines().count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "line {} outside the input: {e}", e.line);
            let width = text.lines().nth(e.line - 1).map_or(0, |l| l.chars().count());
            assert!(e.column >= 1 && e.column <= width + 1, "column past the line: {e}");
        }
    }
});
