//! `nft -f` in, `nft list ruleset` out. The golden pair: kube-proxy's
//! `TestOverallNFTablesRules` expectation (`../shared/reference`'s dump, its declarations
//! first as kube-proxy's transactions send them), and what nftables v1.0.6 printed for it on
//! Linux 6.18 after `nft -f` in a private network namespace.

use super::*;

const INPUT: &str = include_str!("../../tests/data/kube-proxy-overall.nft");
const LISTED: &str = include_str!("../../tests/data/kube-proxy-overall.nft-list-ruleset");

#[test]
fn kube_proxys_overall_rules_list_as_nft_lists_them() {
    let mut rs = Ruleset::default();
    rs.apply(INPUT).unwrap();
    let ours = rs.list();
    for (i, (a, b)) in ours.lines().zip(LISTED.lines()).enumerate() {
        assert_eq!(a, b, "first difference at line {}", i + 1);
    }
    assert_eq!(ours, LISTED);
    let t = rs.table(Family::Ip, "kube-proxy").unwrap();
    let svc4 = t.chain("service-LAUZTJTB-ns4/svc4/tcp/p80").unwrap();
    assert_eq!(svc4.rules.len(), 2);
    assert_eq!(t.set("service-ips").unwrap().elements.len(), 9);
}

#[test]
fn incremental_syncs_add_and_delete_elements_and_flush_chains() {
    let mut rs = Ruleset::default();
    rs.apply(INPUT).unwrap();
    rs.apply(
        "delete element ip kube-proxy cluster-ips { 172.30.0.46 }\n\
         add element ip kube-proxy cluster-ips { 172.30.0.47 }\n\
         flush chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80\n",
    )
    .unwrap();
    let t = rs.table(Family::Ip, "kube-proxy").unwrap();
    let ips: Vec<&str> =
        t.set("cluster-ips").unwrap().elements.iter().map(|e| e.key[0].as_str()).collect();
    assert_eq!(
        ips,
        ["172.30.0.41", "172.30.0.42", "172.30.0.43", "172.30.0.44", "172.30.0.45", "172.30.0.47"]
    );
    assert!(t.chain("service-LAUZTJTB-ns4/svc4/tcp/p80").unwrap().rules.is_empty());
    // nft runs a file as one transaction: a failing line leaves everything as it was.
    let before = rs.clone();
    let e = rs
        .apply("add element ip kube-proxy cluster-ips { 172.30.0.48 }\nadd rule ip kube-proxy nope drop\n")
        .unwrap_err();
    assert_eq!((e.line, e.column), (2, 24));
    assert_eq!(e.msg, "no chain nope in table kube-proxy: add it first");
    assert_eq!(rs, before);
}

#[test]
fn what_is_not_modelled_is_an_error_at_its_place() {
    let base = "add table ip t\nadd chain ip t c\n";
    let err = |line: &str| {
        let mut rs = Ruleset::default();
        rs.apply(&format!("{base}{line}\n")).unwrap_err().to_string()
    };
    assert_eq!(
        err("add rule ip t c osf name Linux drop"),
        "line 3, column 17: `osf` is not an expression podnet models (ip, th, tcp, udp, meta, mark, ct, fib, numgen, iifname, oifname, iif, oif, and the statements accept, drop, return, jump, goto, reject, masquerade, dnat, snat, counter, update)"
    );
    assert_eq!(
        err("add rule ip t c ip ttl 1 drop"),
        "line 3, column 20: `ip ttl` is not modelled (ip fields: saddr, daddr, protocol)"
    );
    assert_eq!(
        err("add rule ip t c ip daddr @nope drop"),
        "line 3, column 26: no set or map nope: add it before the rule that uses it"
    );
    assert_eq!(
        err("add rule ip t c comment \"x"),
        "line 3, column 25: unterminated string: close it with \""
    );
    assert_eq!(
        err("add table arp t"),
        "line 3, column 11: family `arp` is not modelled: use ip, ip6 or inet"
    );
    assert_eq!(
        err("replace rule ip t c handle 1 drop"),
        "line 3, column 1: command `replace` is not modelled: podnet reads add, create, flush and delete"
    );
    assert_eq!(
        err("add set ip t s { type ipv4_addr ; }\nadd element ip t s { 1.2.3.4 : drop }"),
        "line 4, column 22: s is a set: its elements take no value"
    );
    assert_eq!(
        err("add chain ip t c2 { type filter hook input priority filter ; }"),
        "line 3, column 53: priority `filter`: podnet reads numeric priorities (-110, 0, 100)"
    );
}

#[test]
fn priorities_and_times_as_nft_prints_them() {
    assert_eq!(priority_name("prerouting", -110), "dstnat - 10");
    assert_eq!(priority_name("prerouting", -100), "dstnat");
    assert_eq!(priority_name("output", -100), "-100");
    assert_eq!(priority_name("postrouting", 100), "srcnat");
    assert_eq!(priority_name("forward", 0), "filter");
    assert_eq!(priority_name("input", 10), "filter + 10");
    assert_eq!(time(10_800), "3h");
    assert_eq!(time(90), "1m30s");
    assert_eq!(time(90_061), "1d1h1m1s");
}

#[test]
fn a_chain_still_jumped_to_cannot_be_deleted() {
    let mut rs = Ruleset::default();
    rs.apply(INPUT).unwrap();
    let e = rs.apply("delete chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80\n").unwrap_err();
    assert_eq!(
        e.msg,
        "chain service-ULMVA6XW-ns1/svc1/tcp/p80 is still a jump or goto target: delete the rules and elements that name it first"
    );
    rs.apply(
        "delete element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 }\n\
         delete chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80\n",
    )
    .unwrap();
}

/// Interface matches, reject types and flag lists, as nftables v1.0.6 listed them on this
/// machine after `nft add rule` of each line below in a private network namespace (with a
/// bridge `cbr0`); `iif != "veth*"` was refused there with "Interface does not exist".
#[test]
fn interfaces_rejects_and_flag_lists_list_as_nft_lists_them() {
    let mut rs = Ruleset::default();
    rs.apply(
        "add table ip t\n\
         add chain ip t c\n\
         add rule ip t c iif != lo drop\n\
         add rule ip t c iif cbr0 drop\n\
         add rule ip t c iifname \"veth*\" drop\n\
         add rule ip t c ip saddr != { 1.2.3.0/24, 5.6.7.8 } drop\n\
         add rule ip t c reject with icmp type host-unreachable\n\
         add rule ip t c reject with tcp reset\n\
         add rule ip t c reject with icmp host-unreachable\n\
         add rule ip t c ct state established,related accept\n",
    )
    .unwrap();
    assert_eq!(
        rs.list(),
        "table ip t {\n\tchain c {\n\t\tiif != \"lo\" drop\n\t\tiif \"cbr0\" drop\n\t\tiifname \"veth*\" drop\n\t\tip saddr != { 1.2.3.0/24, 5.6.7.8 } drop\n\t\treject with icmp host-unreachable\n\t\treject with tcp reset\n\t\treject with icmp host-unreachable\n\t\tct state established,related accept\n\t}\n}\n"
    );
    let e = rs.apply("add rule ip t c iif != \"veth*\" drop\n").unwrap_err();
    assert_eq!((e.line, e.column), (1, 24));
    assert!(e.msg.starts_with("interface `veth*` does not exist"), "{e}");
}

#[test]
fn a_map_element_must_jump_to_a_chain_that_exists() {
    let mut rs = Ruleset::default();
    rs.apply(INPUT).unwrap();
    let e = rs
        .apply("add element ip kube-proxy service-ips { 10.0.0.1 . tcp . 80 : goto nope }\n")
        .unwrap_err();
    assert_eq!(
        (e.line, e.column, e.msg.as_str()),
        (1, 41, "no chain nope in table kube-proxy: add it first")
    );
    let e = rs
        .apply("add rule ip kube-proxy services numgen random mod 1 vmap { 0 : jump nope }\n")
        .unwrap_err();
    assert_eq!(e.msg, "no chain nope in table kube-proxy: add it first");
}
