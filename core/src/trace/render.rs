//! A trace as people read it: the outcome, then packet by packet, hop by hop.

use std::fmt::Write;

use super::{Dir, HopKind, Trace};

impl Trace {
    /// Readable text. `full` lists every packet; otherwise packets up to the first reply
    /// that carries IP are listed and the rest summarised.
    pub fn render(&self, full: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "trace {} -> {} ({}, client {})",
            self.from,
            self.to,
            self.proto.name(),
            self.client
        );
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
        let mut shown = 0u32;
        let mut last_pkt = 0;
        for h in self.hops.iter().filter(|h| h.packet <= cutoff) {
            if h.packet != last_pkt {
                last_pkt = h.packet;
                shown += 1;
                let what = h.before.as_ref().map(|b| b.to_string()).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  packet {} ({}) {what}",
                    h.packet,
                    match h.direction {
                        Dir::Request => "request",
                        Dir::Reply => "reply",
                    }
                );
            }
            let place = match &h.device {
                Some(d) => format!("{} {d}", h.netns),
                None => h.netns.clone(),
            };
            let mut line = format!("    [{:>3}] {:<26} {:<9} ", h.index, place, h.kind.action());
            match &h.kind {
                HopKind::Rule { hook, table, rule, .. } if rule.starts_with(':') => {
                    let _ = write!(line, "{hook} {table}: {}", h.detail);
                }
                HopKind::Rule { hook, table, chain, rule, origin, .. } => {
                    let _ = write!(line, "{hook} {table}: -A {chain} {rule}");
                    if let Some(o) = origin {
                        let _ = write!(line, "  <- {o}");
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
        }
        let total = self.hops.last().map_or(0, |h| h.packet);
        if !full && total > shown {
            let _ = writeln!(
                s,
                "  ... {} more packets (the rest of the exchange); --full shows them",
                self.hops.iter().map(|h| h.packet).collect::<std::collections::BTreeSet<_>>().len()
                    as u32
                    - shown
            );
        }
        s
    }

    /// The trace as JSON (schema [`SCHEMA_VERSION`](super::SCHEMA_VERSION)).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a trace always serialises")
    }
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
