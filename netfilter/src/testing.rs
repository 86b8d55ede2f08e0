//! Rule shapes for differential tests: the property tests and the `indexed_vs_linear` fuzz
//! target build their tables from the same shapes, so what one checks the other explores.

/// A FORWARD rule (restore form, without `-A FORWARD`) of shape `kind` (modulo 23), for the
/// Service address `10.96.0.{a}` and port `port`, TCP or UDP, with target `verdict` (modulo
/// 7). The shapes are the ones the dispatch index and the quick checks ([`crate::eval`]) must
/// read exactly: kube-proxy's indexable Service rules, inverted addresses and protocols, draws
/// and counts before and after the port, state matches, interfaces, source ports, `recent`
/// lists, marks, address types, ipsets, and jumps and gotos into the user chain `SUB`.
/// Evaluate them with [`forward_sets`], [`forward_addr_type`] and an input interface from
/// [`FORWARD_IN_IFACES`], so that every shape can match and can miss.
pub fn forward_rule(kind: u8, a: u8, port: u16, udp: bool, verdict: u8) -> String {
    let p = if udp { "udp" } else { "tcp" };
    let j = [
        "-j ACCEPT",
        "-j DROP",
        "-j RETURN",
        "-j MARK --or-mark 0x1",
        "-j REJECT",
        "-j SUB",
        "-g SUB",
    ][usize::from(verdict % 7)];
    match kind % 23 {
        // The shape kube-proxy writes per Service port: indexable.
        0..=2 => format!(
            "-m comment --comment \"svc {a}\" -m {p} -p {p} -d 10.96.0.{a} --dport {port} {j}"
        ),
        3 => format!("-s 10.244.{a}.0/24 {j}"),
        4 => format!("-p {p} -m {p} ! --dport {port} {j}"),
        5 => format!("! -d 10.96.0.{a} {j}"),
        // A random draw before the port: a packet to another port still draws.
        6 => {
            format!("-m statistic --mode random --probability 0.5 -p {p} -m {p} --dport {port} {j}")
        }
        // A random draw after it (kube-proxy's endpoint rules draw last).
        7 => {
            format!("-p {p} -m {p} --dport {port} -m statistic --mode random --probability 0.5 {j}")
        }
        8 => format!("-m statistic --mode nth --every 3 -m conntrack --ctstate NEW {j}"),
        9 => format!("! -s 10.244.{a}.0/24 -d 10.96.0.{a} -p {p} -m {p} --dport {port} {j}"),
        10 => format!("! -p {p} {j}"),
        11 => format!("-i eth+ -p {p} {j}"),
        12 => format!("-p {p} -m {p} --sport 1234 --dport {port} {j}"),
        13 => format!("-m conntrack --ctstate ESTABLISHED -m comment --comment est {j}"),
        14 => format!("-m recent --name seen --set -p {p} -m {p} --dport {port} {j}"),
        15 => format!(
            "-d 10.96.0.{a}/31 -m mark --mark 0x1/0x1 -m statistic --mode random ! --probability 0.25 {j}"
        ),
        // Marks as kube-proxy checks them (`KUBE-FORWARD`, `KUBE-POSTROUTING`), and one that
        // the `MARK --or-mark 0x1` of other rules and `SUB`'s `0x2` may turn either way.
        16 => format!("-m comment --comment masq -m mark --mark 0x4000/0x4000 {j}"),
        17 => format!("-p {p} -m mark ! --mark 0x{:x}/0x3 -m {p} --dport {port} {j}", a % 4),
        // kube-proxy's `KUBE-SERVICES` tail and `KUBE-NODEPORTS` guards.
        18 => format!("-m addrtype --dst-type LOCAL {j}"),
        19 => format!("-m addrtype ! --src-type LOCAL,BROADCAST -p {p} {j}"),
        // IPVS mode's set matches (`KUBE-CLUSTER-IP dst,dst`, a source network set).
        20 => format!("-m set --match-set SVC dst,dst {j}"),
        21 => format!("-m set ! --match-set NETS src -d 10.96.0.{a} {j}"),
        // kube-proxy's NodePort jump with nodePortAddresses: a bare destination.
        _ => format!("-m comment --comment \"nodeports\" -d 10.96.0.{a} {j}"),
    }
}

/// The input interfaces to evaluate [`forward_rule`]'s shapes with: none (locally generated),
/// two that `-i eth+` matches, and one it does not.
pub const FORWARD_IN_IFACES: [Option<&str>; 4] = [None, Some("eth0"), Some("eth"), Some("cbr0")];

/// The address types of [`forward_rule`]'s packets: `10.96.0.{0,3,6}` are local, `10.96.0.7`
/// is a broadcast address, `10.244.0.5` (source) is local; every other address is unicast.
pub fn forward_addr_type(a: std::net::Ipv4Addr, _limit: Option<&str>) -> u16 {
    use crate::rule::addrtype;
    match a.octets() {
        [10, 96, 0, 7] => addrtype::BROADCAST,
        [10, 96, 0, d] if d % 3 == 0 => addrtype::LOCAL,
        [10, 244, 0, 5] => addrtype::LOCAL,
        _ => addrtype::UNICAST,
    }
}

/// The ipsets [`forward_rule`]'s set matches read: `SVC` (`hash:ip,port`) holds
/// `10.96.0.{1,2,5}` on TCP port 80 and UDP port 81; `NETS` (`hash:net`) holds
/// `10.244.0.0/23` and `10.244.6.0/24`.
pub fn forward_sets() -> crate::ipset::IpSets {
    use crate::ipset::{IpSets, SetType};
    let mut sets = IpSets::default();
    sets.create("SVC", SetType::HashIpPort, "services");
    for d in [1, 2, 5] {
        for m in [format!("10.96.0.{d},tcp:80"), format!("10.96.0.{d},udp:81")] {
            sets.add("SVC", &m).expect("a valid member");
        }
    }
    sets.create("NETS", SetType::HashNet, "networks");
    for n in ["10.244.0.0/23", "10.244.6.0/24"] {
        sets.add("NETS", n).expect("a valid member");
    }
    sets
}

/// A filter table, as restore input, whose FORWARD chain holds `rules` (the arguments of
/// [`forward_rule`], in order) and whose user chain `SUB` is what their jumps and gotos reach:
/// a return, a random draw, an accept.
pub fn forward_table(rules: impl IntoIterator<Item = (u8, u8, u16, bool, u8)>) -> String {
    let mut text = String::from("*filter\n:FORWARD ACCEPT [0:0]\n:SUB - [0:0]\n");
    for (kind, a, port, udp, verdict) in rules {
        text.push_str(&format!("-A FORWARD {}\n", forward_rule(kind, a, port, udp, verdict)));
    }
    text.push_str(
        "-A SUB -p udp -j RETURN\n\
         -A SUB -m statistic --mode random --probability 0.5 -j MARK --or-mark 0x2\n\
         -A SUB -d 10.96.0.3/32 -j ACCEPT\n\
         COMMIT\n",
    );
    text
}

/// A nat table, as restore input, in kube-proxy's shape: PREROUTING and OUTPUT jump to
/// `KUBE-SERVICES`, which holds one rule per Service (`10.96.{i / 256}.{i % 256}`, port 80,
/// TCP or UDP as `services[i].1`), then a rule no index can hold; each Service's chain picks
/// one of its `services[i].0` endpoints (at least one) with kube-proxy's random draws, and
/// each endpoint's chain marks hairpin traffic for masquerade and DNATs to
/// `10.244.{i % 256}.{e}:8080`. `POSTROUTING` masquerades what was marked.
pub fn services_nat_table(services: &[(u8, bool)]) -> String {
    let mut text = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::from(
        "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n\
         -A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    for (i, &(endpoints, udp)) in services.iter().enumerate() {
        let p = if udp { "udp" } else { "tcp" };
        let vip = format!("10.96.{}.{}", i / 256, i % 256);
        text.push_str(&format!(":KUBE-SVC-{i} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {vip}/32 -p {p} -m comment --comment \"svc {i}\" -m {p} \
             --dport 80 -j KUBE-SVC-{i}\n"
        ));
        let n = endpoints.max(1);
        for e in 0..n {
            text.push_str(&format!(":KUBE-SEP-{i}-{e} - [0:0]\n"));
            let draw = match n - e {
                1 => String::new(),
                left => format!(
                    "-m statistic --mode random --probability {:.11} ",
                    1.0 / f64::from(left)
                ),
            };
            let ep = format!("10.244.{}.{e}", i % 256);
            rules.push_str(&format!(
                "-A KUBE-SVC-{i} {draw}-j KUBE-SEP-{i}-{e}\n\
                 -A KUBE-SEP-{i}-{e} -s {ep}/32 -j KUBE-MARK-MASQ\n\
                 -A KUBE-SEP-{i}-{e} -p {p} -m {p} -j DNAT --to-destination {ep}:8080\n"
            ));
        }
    }
    rules.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-MARK-MASQ\n");
    text.push_str(&rules);
    text.push_str("COMMIT\n");
    text
}

pub use crate::packet::build::{ipv4, tcp, udp, udp_with};
