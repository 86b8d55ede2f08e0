//! The LOG target: kernel log lines in the trace and in the node's `dmesg`, formatted as
//! Linux writes them.

use podnet::Cluster;
use podnet::trace::HopKind;

#[test]
fn a_log_rule_writes_the_kernel_line_for_each_packet_it_sees() {
    let mut c = Cluster::seed();
    c.iptables_restore(
        "node2",
        "*mangle\n-A PREROUTING -p tcp --dport 8080 -j LOG --log-prefix \"to-8080: \"\nCOMMIT\n",
        true,
    )
    .unwrap();
    let t = c.trace("pod/default/pod2", "pod/default/pod3:8080", &Default::default()).unwrap();
    assert!(t.completed, "{}", t.render(true));
    let logs: Vec<&podnet::trace::Hop> =
        t.hops.iter().filter(|h| matches!(h.kind, HopKind::Log { .. })).collect();
    assert!(!logs.is_empty(), "{}", t.render(true));
    let first = &logs[0];
    assert_eq!(first.netns, "node2");
    assert_eq!(first.kind.hook().map(|k| k.to_string()).as_deref(), Some("PREROUTING"));
    // The SYN from pod2 (10.244.1.3) arrives on node2's eth0 from the VPC router (two
    // routed hops: TTL 62), its MAC header being node2's eth0, the router's, IPv4.
    let line = first.detail.strip_prefix("kernel: to-8080: IN=eth0 OUT= MAC=").unwrap();
    assert!(line.starts_with("02:50:00:00:00:06:02:50:00:00:00:01:08:00 "), "{line}");
    assert!(
        line.contains(" SRC=10.244.1.3 DST=10.244.2.2 LEN=52 TOS=0x00 PREC=0x00 TTL=62 ID="),
        "{line}"
    );
    assert!(line.contains(" PROTO=TCP SPT=") && line.contains(" DPT=8080 WINDOW="), "{line}");
    assert!(line.ends_with(" SYN URGP=0 "), "{line}");
    // Every request packet to 8080 was logged; the node keeps them for `dmesg`.
    let dmesg = c.kernel_log("node2").unwrap();
    assert_eq!(dmesg.lines().count(), logs.len());
    assert!(dmesg.lines().all(|l| l.starts_with("to-8080: IN=eth0 OUT= MAC=")), "{dmesg}");
    assert!(c.kernel_log("node1").unwrap().is_empty());
    // A bad line names its place.
    let e = c.iptables_restore("node2", "*mangle\n-A PREROUTING -j LOG --bogus\nCOMMIT\n", true);
    assert!(e.unwrap_err().to_string().contains("line 2"));
}
