//! A trace as people read it: a one-line path, the outcome, then packet by packet, hop by
//! hop.
//!
//! - The path follows the first request packet that carries IP: each namespace it crossed
//!   with the devices it went through, and every address rewrite on the way
//!   (`pod2 → node1 veth1 → cbr0 [DNAT 10.96.0.10:80 → 10.244.2.2:8080] → eth0 → …`).
//! - Each packet's heading is printed once, where its first hop is; a hop of a packet whose
//!   run of hops another packet interrupted says its packet number.
//! - The hosts on a segment that received a broadcast and did nothing with it fold into one
//!   line.
//! - Rules print as `iptables-save` prints them (kernel form) with their table and number
//!   (`PREROUTING nat rule 2: -A KUBE-SERVICES …`), so each is found in `podnet
//!   iptables-save` output; a NAT hop names the rule that decided it and the Kubernetes
//!   object behind that rule.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Dir, Hop, HopKind, Trace};

impl Trace {
    /// Readable text. `full` lists every packet; otherwise packets up to the first reply
    /// that carries IP are listed and the rest summarised.
    pub fn render(&self, full: bool) -> String {
        let mut s = self.head();
        let cutoff = if full {
            u32::MAX
        } else {
            self.hops
                .iter()
                .find(|h| {
                    h.direction == Dir::Reply
                        && h.before.as_ref().is_some_and(|b| b.proto != "arp")
                        && h.kind == HopKind::Tx
                })
                .map(|h| h.packet)
                .unwrap_or(u32::MAX)
        };
        let shown: Vec<&Hop> = self.hops.iter().filter(|h| h.packet <= cutoff).collect();
        let width = shown.iter().map(|h| place(h).chars().count()).max().unwrap_or(0).max(20);
        let mut headed: BTreeSet<u32> = BTreeSet::new();
        let mut current = 0;
        let mut i = 0;
        while i < shown.len() {
            let h = shown[i];
            let mut tag = String::new();
            if h.packet != current {
                current = h.packet;
                if headed.insert(h.packet) {
                    let what = h.before.as_ref().map(|b| b.to_string()).unwrap_or_default();
                    let dir = match h.direction {
                        Dir::Request => "request",
                        Dir::Reply => "reply",
                    };
                    let _ = writeln!(s, "  packet {} ({dir}) {what}", h.packet);
                } else {
                    tag = format!("packet {}: ", h.packet);
                }
            } else if i > 0 && !tag.is_empty() {
                tag.clear();
            }
            // Receivers of a broadcast that did nothing with it: one line for the run.
            let quiet = quiet_receivers(&shown, i);
            if quiet >= 2 {
                let places: Vec<String> = shown[i..i + quiet].iter().map(|h| place(h)).collect();
                let mac = h
                    .before
                    .as_ref()
                    .and_then(|b| b.src_mac.clone().zip(b.dst_mac.clone()))
                    .map(|(a, b)| format!(" ({a} > {b})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "    [{:>3}] {tag}{}: received the broadcast{mac} and had nothing to do with it",
                    h.index,
                    places.join(", ")
                );
                i += quiet;
                continue;
            }
            let mut line =
                format!("    [{:>3}] {:<width$} {:<9} {tag}", h.index, place(h), h.kind.action());
            match &h.kind {
                HopKind::Rule { hook, table, rule, .. } if rule.starts_with(':') => {
                    let _ = write!(line, "{hook} {table}: {}", h.detail);
                }
                HopKind::Rule { hook, table, chain, rule_num, rule, origin } => {
                    let _ = write!(line, "{hook} {table} rule {rule_num}: -A {chain} {rule}");
                    if let Some(o) = origin {
                        let _ = write!(line, "  <- {o}");
                    }
                }
                HopKind::NftRule { hook, table, chain, handle, rule, element, origin } => {
                    if *handle == 0 {
                        let _ = write!(line, "{hook} {table} {chain}: {rule}");
                    } else {
                        let _ = write!(line, "{hook} {table} {chain}: {rule} # handle {handle}");
                    }
                    if let Some(e) = element {
                        let _ = write!(line, "  [{e}]");
                    }
                    if let Some(o) = origin {
                        let _ = write!(line, "  <- {o}");
                    }
                }
                HopKind::Nat { .. } => {
                    line.push_str(&h.detail);
                    if let Some(r) = deciding_rule(&self.hops, h) {
                        line.push_str(&r);
                    }
                }
                HopKind::Tx | HopKind::Rx => {
                    line.push_str(&h.detail);
                    if let Some(b) = &h.before
                        && let (Some(sm), Some(dm)) = (&b.src_mac, &b.dst_mac)
                    {
                        let _ = write!(line, " ({sm} > {dm})");
                    }
                }
                _ => line.push_str(&h.detail),
            }
            s.push_str(line.trim_end());
            s.push('\n');
            i += 1;
        }
        let total: BTreeSet<u32> = self.hops.iter().map(|h| h.packet).collect();
        let listed = total.iter().filter(|p| **p <= cutoff).count();
        if !full && total.len() > listed {
            let _ = writeln!(
                s,
                "  ... {} more packets (the rest of the exchange); --full shows them",
                total.len() - listed
            );
        }
        s
    }

    /// The title, the path, the outcome, and what podnet could not model: what `podnet
    /// trace --brief` prints.
    pub fn render_brief(&self) -> String {
        self.head()
    }

    fn head(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "trace {} -> {} ({}, client {})",
            self.from,
            self.to,
            self.proto.name(),
            self.client
        );
        if let Some(p) = self.path() {
            let _ = writeln!(s, "  path: {p}");
        }
        let _ = write!(s, "  result: {}", self.disposition);
        if let Some(d) = &self.delivered_to {
            let _ = write!(s, " to {d}");
        }
        let _ = write!(
            s,
            "; {}",
            if self.completed { "exchange completed" } else { "exchange NOT completed" }
        );
        if let Some(n) = self.answered {
            let _ = write!(s, " ({n} exchanges answered)");
        }
        if let Some(r) = &self.server_saw {
            let _ = write!(s, "; server saw {r}");
        }
        match &self.reply_from {
            Some(r) => {
                let _ = write!(s, "; reply from {r}");
            }
            None => s.push_str("; no reply"),
        }
        s.push('\n');
        if let Some(code) = self.http_status {
            let _ = write!(s, "  http: {code}");
            if let Some(p) = reason_phrase(code) {
                let _ = write!(s, " {p}");
            }
            if let Some(f) = &self.http_from {
                let _ = write!(s, " from {f}");
            }
            s.push('\n');
        }
        if let (Some(r), Some(t)) = (&self.reason, &self.reason_text) {
            let _ = writeln!(s, "  reason: {r}: {t}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        s
    }

    /// The path of the first request packet that carries IP, on one line: the namespaces it
    /// crossed with their devices, each rewrite in brackets, and where it ended; where an
    /// L7 proxy ended it and opened its own connection onwards, that connection's path
    /// follows after `⇒`. `None` without hops.
    pub fn path(&self) -> Option<String> {
        let carries_ip = |h: &&Hop| h.before.as_ref().is_some_and(|b| b.proto != "arp");
        let first = self.hops.iter().filter(carries_ip).find(|h| h.direction == Dir::Request)?;
        let (mut out, mut last) = packet_path(&self.hops, first.packet);
        // A proxy's own request onwards: the next request packet that leaves from where this
        // one ended.
        let mut after = first.packet;
        for _ in 0..3 {
            let next = self.hops.iter().filter(carries_ip).find(|h| {
                h.direction == Dir::Request
                    && h.packet > after
                    && h.kind == HopKind::Tx
                    && h.netns == last
                    && h.before
                        .as_ref()
                        .is_some_and(|b| b.info.as_deref() == Some("S") || b.proto != "tcp")
            });
            let Some(next) = next else { break };
            let (more, end) = packet_path(&self.hops, next.packet);
            if more.is_empty() || end == last {
                break;
            }
            let _ = write!(out, " ⇒ {more}");
            last = end;
            after = next.packet;
        }
        Some(out)
    }

    /// The trace as JSON (schema [`SCHEMA_VERSION`](super::SCHEMA_VERSION)).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a trace always serialises")
    }
}

/// One packet's path, and the namespace it ended in.
fn packet_path(hops: &[Hop], packet: u32) -> (String, String) {
    // The packet's own hops: not the ARP exchanges it waited for.
    let hops = hops.iter().filter(|h| {
        h.packet == packet
            && h.before.as_ref().is_none_or(|b| b.proto != "arp")
            && !matches!(h.kind, HopKind::Arp | HopKind::Neigh | HopKind::Fdb)
    });
    let mut out = String::new();
    let mut ns = String::new();
    let mut dev = "";
    for h in hops {
        // A pod's devices are left out (its eth0 is implied), except its loopback.
        let shown_dev = h.device.as_deref().filter(|d| !h.netns.starts_with("pod/") || *d == "lo");
        if h.netns != ns {
            if !out.is_empty() {
                out.push_str(" → ");
            }
            out.push_str(&short(&h.netns));
            ns = h.netns.clone();
            dev = "";
            if let Some(d) = shown_dev {
                let _ = write!(out, " {d}");
                dev = d;
            }
        } else if let Some(d) = shown_dev
            && d != dev
        {
            let _ = write!(out, " → {d}");
            dev = d;
        }
        match &h.kind {
            HopKind::Nat { .. } => {
                let _ = write!(out, " [{}]", h.detail.replace(" -> ", " → "));
            }
            HopKind::Drop { reason } => {
                let _ = write!(out, " ✗ dropped ({reason})");
            }
            _ => {}
        }
    }
    (out, ns)
}

/// Where a hop happened: its namespace and device.
fn place(h: &Hop) -> String {
    match &h.device {
        Some(d) => format!("{} {d}", h.netns),
        None => h.netns.clone(),
    }
}

/// A namespace as the path names it: a pod of `default` by its name, another pod as
/// `NS/NAME`, a node by its name.
fn short(netns: &str) -> String {
    match netns.strip_prefix("pod/") {
        Some(p) => p.strip_prefix("default/").unwrap_or(p).to_string(),
        None => netns.strip_prefix("node/").unwrap_or(netns).to_string(),
    }
}

/// How many hops from `i` on are receivers of one broadcast frame that did nothing with it:
/// `rx` hops of the same packet, each followed by another receiver or by a hop elsewhere.
fn quiet_receivers(hops: &[&Hop], i: usize) -> usize {
    let first = hops[i];
    let broadcast = |h: &Hop| {
        h.kind == HopKind::Rx
            && h.before.as_ref().is_some_and(|b| b.dst_mac.as_deref() == Some("ff:ff:ff:ff:ff:ff"))
    };
    if !broadcast(first) {
        return 0;
    }
    let mut n = 0;
    while let Some(h) = hops.get(i + n) {
        let same = broadcast(h) && h.packet == first.packet && h.before == first.before;
        // It acted on the frame when the next hop happened at the same place.
        let acted = hops.get(i + n + 1).is_some_and(|next| next.netns == h.netns);
        if !same || acted {
            break;
        }
        n += 1;
    }
    n
}

/// For a NAT hop, the rule that decided it: the nearest earlier rule hop of the same packet
/// and namespace whose target rewrites addresses; `None` when conntrack replayed it.
fn deciding_rule(hops: &[Hop], nat: &Hop) -> Option<String> {
    hops[..nat.index.min(hops.len())].iter().rev().take_while(|h| h.packet == nat.packet).find_map(
        |h| match &h.kind {
            HopKind::Rule { table, chain, rule_num, rule, origin, .. }
                if h.netns == nat.netns
                    && ["-j DNAT", "-j SNAT", "-j MASQUERADE", "-j REDIRECT"]
                        .iter()
                        .any(|t| rule.contains(t)) =>
            {
                let by = origin.as_deref().map(|o| format!(" <- {o}")).unwrap_or_default();
                Some(format!(" (by {table} {chain} rule {rule_num}{by})"))
            }
            HopKind::NftRule { table, chain, handle, rule, origin, .. }
                if h.netns == nat.netns
                    && ["dnat to", "snat to", "masquerade"].iter().any(|t| rule.contains(t)) =>
            {
                let by = origin.as_deref().map(|o| format!(" <- {o}")).unwrap_or_default();
                Some(format!(" (by {table} {chain} handle {handle}{by})"))
            }
            _ => None,
        },
    )
}

/// The reason phrase of a status code (RFC 9110), for the codes podnet's servers and
/// proxies answer.
fn reason_phrase(code: u16) -> Option<&'static str> {
    Some(match code {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}
