//! pcapng of a traced flow: read back block by block (and by tshark when it is installed),
//! with the Service's DNAT visible between devices.

use podnet::Cluster;
use podnet::trace::TraceOptions;

/// (interface names, packets as (interface index, frame bytes)).
fn read_pcapng(b: &[u8]) -> (Vec<String>, Vec<(usize, Vec<u8>)>) {
    let u32le = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u16le = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    assert_eq!(u32le(0), 0x0A0D_0D0A, "section header first");
    assert_eq!(u32le(8), 0x1A2B_3C4D, "little-endian byte-order magic");
    let (mut ifaces, mut pkts) = (Vec::new(), Vec::new());
    let mut o = 0;
    while o < b.len() {
        let (kind, len) = (u32le(o), u32le(o + 4) as usize);
        assert!(len % 4 == 0 && o + len <= b.len(), "block at {o}: length {len}");
        assert_eq!(u32le(o + len - 4) as usize, len, "trailing length of the block at {o}");
        match kind {
            1 => {
                assert_eq!(u16le(o + 8), 1, "Ethernet link type");
                let mut p = o + 16;
                let mut name = None;
                while u16le(p) != 0 {
                    let (code, l) = (u16le(p), u16le(p + 2) as usize);
                    if code == 2 {
                        name = Some(String::from_utf8(b[p + 4..p + 4 + l].to_vec()).unwrap());
                    }
                    p += 4 + l.next_multiple_of(4);
                }
                ifaces.push(name.expect("if_name"));
            }
            6 => {
                let iface = u32le(o + 8) as usize;
                let cap = u32le(o + 20) as usize;
                assert_eq!(cap, u32le(o + 24) as usize);
                pkts.push((iface, b[o + 28..o + 28 + cap].to_vec()));
            }
            _ => {}
        }
        o += len;
    }
    (ifaces, pkts)
}

/// IPv4 TCP (src, dst, sport, dport, flags) of an Ethernet frame.
type Tcp = (String, String, u16, u16, u8);

fn tcp(f: &[u8]) -> Option<Tcp> {
    if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
        return None;
    }
    let ip = |o: usize| format!("{}.{}.{}.{}", f[o], f[o + 1], f[o + 2], f[o + 3]);
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let t = 14 + ihl;
    Some((
        ip(26),
        ip(30),
        u16::from_be_bytes([f[t], f[t + 1]]),
        u16::from_be_bytes([f[t + 2], f[t + 3]]),
        f[t + 13],
    ))
}

#[test]
fn the_pod_to_service_flow_shows_the_dnat_between_devices() {
    let mut c = Cluster::seed();
    let opts = TraceOptions { capture: true, ..TraceOptions::default() };
    let t = c.trace("pod/default/pod2", "svc/default/web:http", &opts).unwrap();
    assert!(t.completed);
    let endpoint = t.server_saw.clone().unwrap();
    let file = podnet::trace::pcap::to_pcapng(&t.frames);
    let (ifaces, pkts) = read_pcapng(&file);
    assert_eq!(pkts.len(), t.frames.len());
    assert!(pkts.iter().all(|(i, _)| *i < ifaces.len()));
    // The SYN as pod2's veth received it, and as the endpoint's eth0 received it.
    let syns: Vec<(String, Tcp)> = pkts
        .iter()
        .filter_map(|(i, f)| tcp(f).map(|x| (ifaces[*i].clone(), x)))
        .filter(|(_, x)| x.4 == 0x02)
        .collect();
    let (first_dev, first) = &syns[0];
    assert_eq!(first_dev, "node1/veth1");
    assert_eq!((first.1.as_str(), first.3), ("10.96.0.10", 80));
    let delivered = t.delivered_to.clone().unwrap();
    let (last_dev, last) = syns.last().unwrap();
    assert_eq!(last_dev, &format!("{delivered}/eth0"));
    assert_eq!(last.3, 8080, "DNAT to the targetPort");
    assert!(["10.244.1.2", "10.244.2.2"].contains(&last.1.as_str()), "{last:?}");
    assert_eq!((last.0.as_str(), last.2), ("10.244.1.3", first.2), "the client's address is kept");
    assert!(endpoint.starts_with("10.244.1.3:"));
    // Capturing changes nothing in the trace itself.
    let plain = Cluster::seed()
        .trace("pod/default/pod2", "svc/default/web:http", &TraceOptions::default())
        .unwrap();
    assert_eq!(plain.to_json(), t.to_json());
    assert!(plain.frames.is_empty());
    // tshark, when installed, reads the same addresses. `./scripts/test` installs it and sets
    // PODNET_REQUIRE_TSHARK=1 when it runs as root (as CI does): then its absence fails.
    let path = std::env::temp_dir().join(format!("podnet-test-{}.pcapng", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let tshark = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ])
        .output();
    let _ = std::fs::remove_file(&path);
    match tshark {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "tshark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.lines().any(|l| l == "node1/veth1\t10.96.0.10\t80"), "{text}");
            assert!(
                text.lines().any(|l| l == format!("{delivered}/eth0\t{}\t8080", last.1)),
                "{text}"
            );
        }
        Err(e) => {
            let required = std::env::var_os("PODNET_REQUIRE_TSHARK").is_some_and(|v| v == "1");
            assert!(!required, "PODNET_REQUIRE_TSHARK=1 but tshark does not run: {e}");
            println!("SKIPPED the tshark cross-check: tshark does not run ({e})");
            eprintln!("SKIPPED the tshark cross-check: tshark does not run ({e})");
        }
    }
}
