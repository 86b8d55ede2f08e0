//! The `LOG` target's line, as the kernel's `nf_log_syslog` writes it to the kernel log
//! (`dump_ipv4_packet` with the default log flags: no TCP sequence numbers or options, no IP
//! options, no UID). Verified against Linux 6.x in a private namespace:
//!
//! ```text
//! pn: IN=v1 OUT= MAC=fe:ab:3e:25:5c:e5:66:3b:77:68:ee:d3:08:00 SRC=10.9.0.1 DST=10.9.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=61240 DF PROTO=TCP SPT=57026 DPT=80 WINDOW=64240 RES=0x00 SYN URGP=0
//! ```
//!
//! Every field ends with a space, so the line ends with one too.

use std::fmt::Write;

/// Where the packet is: the devices the hook sees and the received frame's MAC header.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogContext<'a> {
    /// Input device (`IN=`).
    pub in_iface: Option<&'a str>,
    /// Output device (`OUT=`).
    pub out_iface: Option<&'a str>,
    /// Bridge port in (`PHYSIN=`, br_netfilter).
    pub physdev_in: Option<&'a str>,
    /// Bridge port out (`PHYSOUT=`).
    pub physdev_out: Option<&'a str>,
    /// The Ethernet header the packet arrived with (printed as `MAC=` when there is an
    /// input device).
    pub mac_header: Option<&'a [u8; 14]>,
}

/// The kernel log line for `ip` (an IPv4 packet), with `prefix` (`--log-prefix`) in front.
pub fn log_line(prefix: &str, cx: &LogContext<'_>, ip: &[u8]) -> String {
    let mut m = String::from(prefix);
    let _ = write!(m, "IN={} OUT={} ", cx.in_iface.unwrap_or(""), cx.out_iface.unwrap_or(""));
    if let Some(p) = cx.physdev_in {
        let _ = write!(m, "PHYSIN={p} ");
    }
    if let Some(p) = cx.physdev_out {
        let _ = write!(m, "PHYSOUT={p} ");
    }
    if cx.in_iface.is_some() {
        m.push_str("MAC=");
        if let Some(h) = cx.mac_header {
            let hex: Vec<String> = h.iter().map(|b| format!("{b:02x}")).collect();
            m.push_str(&hex.join(":"));
        }
        m.push(' ');
    }
    dump_ipv4(&mut m, ip, true);
    m
}

fn dump_ipv4(m: &mut String, ip: &[u8], outer: bool) {
    if ip.len() < 20 {
        let _ = write!(m, "TRUNCATED ");
        return;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let len = u16::from_be_bytes([ip[2], ip[3]]);
    let id = u16::from_be_bytes([ip[4], ip[5]]);
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let _ = write!(
        m,
        "SRC={}.{}.{}.{} DST={}.{}.{}.{} LEN={len} TOS=0x{:02X} PREC=0x{:02X} TTL={} ID={id} ",
        ip[12],
        ip[13],
        ip[14],
        ip[15],
        ip[16],
        ip[17],
        ip[18],
        ip[19],
        ip[1] & 0x1e,
        ip[1] & 0xe0,
        ip[8]
    );
    if ip[1] & 0x03 == 0x03 {
        m.push_str("CE ");
    }
    if frag & 0x4000 != 0 {
        m.push_str("DF ");
    }
    if frag & 0x2000 != 0 {
        m.push_str("MF ");
    }
    if frag & 0x1fff != 0 {
        let _ = write!(m, "FRAG:{} ", frag & 0x1fff);
    }
    let l4 = ip.get(ihl..).unwrap_or(&[]);
    let avail = l4.len();
    match ip[9] {
        6 => {
            m.push_str("PROTO=TCP ");
            if frag & 0x1fff != 0 {
                return;
            }
            if avail < 20 {
                let _ = write!(m, "INCOMPLETE [{avail} bytes] ");
                return;
            }
            let _ = write!(
                m,
                "SPT={} DPT={} ",
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]])
            );
            let _ = write!(
                m,
                "WINDOW={} RES=0x{:02x} ",
                u16::from_be_bytes([l4[14], l4[15]]),
                // The reserved bits, as the kernel prints them (tcp_flag_word & TCP_RESERVED_BITS).
                l4[12] & 0x0f
            );
            let flags = l4[13];
            for (bit, name) in [
                (0x80, "CWR"),
                (0x40, "ECE"),
                (0x20, "URG"),
                (0x10, "ACK"),
                (0x08, "PSH"),
                (0x04, "RST"),
                (0x02, "SYN"),
                (0x01, "FIN"),
            ] {
                if flags & bit != 0 {
                    let _ = write!(m, "{name} ");
                }
            }
            let _ = write!(m, "URGP={} ", u16::from_be_bytes([l4[18], l4[19]]));
        }
        17 | 136 => {
            m.push_str(if ip[9] == 17 { "PROTO=UDP " } else { "PROTO=UDPLITE " });
            if frag & 0x1fff != 0 {
                return;
            }
            if avail < 8 {
                let _ = write!(m, "INCOMPLETE [{avail} bytes] ");
                return;
            }
            let _ = write!(
                m,
                "SPT={} DPT={} LEN={} ",
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
                u16::from_be_bytes([l4[4], l4[5]])
            );
        }
        1 => {
            m.push_str("PROTO=ICMP ");
            if frag & 0x1fff != 0 {
                return;
            }
            if avail < 4 {
                let _ = write!(m, "INCOMPLETE [{avail} bytes] ");
                return;
            }
            let (ty, code) = (l4[0], l4[1]);
            let _ = write!(m, "TYPE={ty} CODE={code} ");
            match ty {
                0 | 8 if avail >= 8 => {
                    let _ = write!(
                        m,
                        "ID={} SEQ={} ",
                        u16::from_be_bytes([l4[4], l4[5]]),
                        u16::from_be_bytes([l4[6], l4[7]])
                    );
                }
                12 if avail >= 8 => {
                    let _ = write!(m, "PARAMETER={} ", l4[4]);
                }
                3 | 4 | 5 | 11 => {
                    if ty == 5 && avail >= 8 {
                        let _ = write!(m, "GATEWAY={}.{}.{}.{} ", l4[4], l4[5], l4[6], l4[7]);
                    }
                    // The quoted packet, in brackets (only one level deep).
                    if outer && avail > 8 {
                        m.push('[');
                        dump_ipv4(m, &l4[8..], false);
                        m.push_str("] ");
                    }
                    if ty == 3 && code == 4 && avail >= 8 {
                        let _ = write!(m, "MTU={} ", u16::from_be_bytes([l4[6], l4[7]]));
                    }
                }
                _ => {}
            }
        }
        p => {
            let _ = write!(m, "PROTO={p} ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, l4: &[u8], id: u16, df: bool) -> Vec<u8> {
        let len = (20 + l4.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2];
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        if df {
            p[6] = 0x40;
        }
        p.extend_from_slice(l4);
        p
    }

    /// The two lines Linux 6.18 wrote for a UDP datagram and a TCP SYN over a veth pair.
    #[test]
    fn matches_the_kernel_lines() {
        let mac: [u8; 14] =
            [0xfe, 0xab, 0x3e, 0x25, 0x5c, 0xe5, 0x66, 0x3b, 0x77, 0x68, 0xee, 0xd3, 0x08, 0x00];
        let cx = LogContext { in_iface: Some("v1"), mac_header: Some(&mac), ..Default::default() };
        let mut udp = vec![0x93, 0xa2, 0x1f, 0x90, 0, 13, 0, 0];
        udp.extend_from_slice(b"hello");
        assert_eq!(
            log_line("pn: ", &cx, &ipv4(17, &udp, 57655, true)),
            "pn: IN=v1 OUT= MAC=fe:ab:3e:25:5c:e5:66:3b:77:68:ee:d3:08:00 SRC=10.9.0.1 DST=10.9.0.2 LEN=33 TOS=0x00 PREC=0x00 TTL=64 ID=57655 DF PROTO=UDP SPT=37794 DPT=8080 LEN=13 "
        );
        let mut tcp = vec![0xde, 0xc2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0];
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&[0; 20]); // options (not logged by default)
        assert_eq!(
            log_line("pn: ", &cx, &ipv4(6, &tcp, 61240, true)),
            "pn: IN=v1 OUT= MAC=fe:ab:3e:25:5c:e5:66:3b:77:68:ee:d3:08:00 SRC=10.9.0.1 DST=10.9.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=61240 DF PROTO=TCP SPT=57026 DPT=80 WINDOW=64240 RES=0x00 SYN URGP=0 "
        );
    }

    #[test]
    fn output_path_has_no_mac_and_icmp_errors_quote_the_packet() {
        let cx = LogContext { out_iface: Some("eth0"), ..Default::default() };
        let inner = ipv4(17, &[0x93, 0xa2, 0x1f, 0x90, 0, 8, 0, 0], 7, false);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&inner);
        let line = log_line("", &cx, &ipv4(1, &icmp, 1, false));
        assert_eq!(
            line,
            "IN= OUT=eth0 SRC=10.9.0.1 DST=10.9.0.2 LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=10.9.0.1 DST=10.9.0.2 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=7 PROTO=UDP SPT=37794 DPT=8080 LEN=8 ] "
        );
        assert!(log_line("", &cx, &[0x45, 0]).ends_with("TRUNCATED "));
    }
}
