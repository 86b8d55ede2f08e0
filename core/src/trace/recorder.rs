//! The recorder: what a run watches for while a flow goes on (who got the request, who
//! answered, what was dropped or rejected) and the hops it keeps.

use std::net::Ipv4Addr;

use podnet_netfilter::Proto;
use podnet_netfilter::packet;
use podnet_netfilter::rule::RejectWith;

use crate::ids::NetnsId;

use super::{Dir, Hop, HopKind, PacketView, Tag};

/// What the recorder watches for while a flow runs. It reads packets a host's stack made
/// or `ip_rcv` has already checked, so it parses them without checking the IPv4 header
/// checksum again.
pub(crate) struct Recorder {
    /// The hops kept so far.
    pub(crate) hops: Vec<Hop>,
    /// Whether hops are kept (off: only the outcome is watched for).
    pub(crate) keep_hops: bool,
    client_ns: NetnsId,
    client_ip: Ipv4Addr,
    client_port: u16,
    proto: Proto,
    client_idx: usize,
    /// The host that got the request: its namespace, the source it saw, protocol and port.
    pub(crate) server_hit: Option<(NetnsId, String, Proto, u16)>,
    /// L7 hops (ALBs) with their listener port: intermediaries, not servers.
    proxies: Vec<(NetnsId, u16)>,
    /// The first L7 hop the request reached, and the source it saw.
    pub(crate) proxy_hit: Option<(NetnsId, String)>,
    /// The source of the first reply the client got.
    pub(crate) reply_from: Option<String>,
    /// Drops, with their reason code and text.
    pub(crate) drops: Vec<(Tag, &'static str, String)>,
    /// What the datapath could not model on this run (the trace's warnings).
    pub(crate) warnings: Vec<String>,
    /// The first REJECT met, and whether an nf_tables `reject` made it.
    pub(crate) reject: Option<(RejectWith, bool)>,
}

impl Recorder {
    /// A recorder for a flow from `client_ip:client_port` in `client_ns` (the stack's client
    /// `client_idx`), with the L7 proxies on the way.
    pub(crate) fn for_flow(
        keep_hops: bool,
        client_ns: NetnsId,
        client_ip: Ipv4Addr,
        client_port: u16,
        proto: Proto,
        client_idx: usize,
        proxies: Vec<(NetnsId, u16)>,
    ) -> Recorder {
        Recorder {
            hops: Vec::new(),
            keep_hops,
            client_ns,
            client_ip,
            client_port,
            proto,
            client_idx,
            server_hit: None,
            proxies,
            proxy_hit: None,
            reply_from: None,
            drops: Vec::new(),
            warnings: Vec::new(),
            reject: None,
        }
    }

    /// A recorder for a frame injected at a device: every hop kept, no client.
    pub(crate) fn for_injection() -> Recorder {
        Recorder::for_flow(
            true,
            NetnsId(u32::MAX),
            Ipv4Addr::UNSPECIFIED,
            0,
            Proto(0),
            0,
            Vec::new(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        tag: Tag,
        node: Option<String>,
        netns: String,
        device: Option<String>,
        kind: HopKind,
        mut detail: String,
        before: Option<PacketView>,
        after: Option<PacketView>,
    ) {
        if let HopKind::Rule { table, chain, rule_num, rule, .. } = &kind
            && detail.is_empty()
        {
            detail = if *rule_num == 0 {
                format!("{chain} policy {}", rule.rsplit(' ').next().unwrap_or("ACCEPT"))
            } else {
                format!("{table} {chain} rule {rule_num}")
            };
        }
        let hop = Hop {
            index: self.hops.len(),
            packet: tag.pkt,
            direction: tag.dir,
            node,
            netns,
            device,
            kind,
            detail,
            before,
            after,
        };
        self.hops.push(hop);
    }

    pub(crate) fn is_client_port(&self, port: u16) -> bool {
        port == self.client_port
    }

    /// The direction of a packet a host in `ns` sends: the client's own socket sends
    /// requests; everything else (servers, ICMP errors) answers.
    pub(crate) fn dir_of_sent(&self, ns: NetnsId, frame_ip: Option<&[u8]>) -> Dir {
        if let Some((_, port)) = self.proxies.iter().find(|(p, _)| *p == ns) {
            // Answers to the client leave from the listener port; the rest is the proxy's own
            // request to a target.
            return match frame_ip.and_then(|ip| packet::parse_trusted(ip).ok()) {
                Some(i) if i.tuple.sport == *port => Dir::Reply,
                _ => Dir::Request,
            };
        }
        if ns != self.client_ns {
            return Dir::Reply;
        }
        match frame_ip.and_then(|ip| packet::parse_trusted(ip).ok()) {
            Some(i) if i.tuple.sport != self.client_port && i.tuple.proto.has_ports() => Dir::Reply,
            Some(i) if i.icmp.is_some_and(|(ty, _)| ty != 8) => Dir::Reply,
            _ => Dir::Request,
        }
    }

    /// A packet crossed `lo` inside `ns`: the client and the server are the same namespace.
    pub(crate) fn observe_loopback(&mut self, ns: NetnsId, ip: &[u8], tag: Tag) {
        let Ok(i) = packet::parse_trusted(ip) else { return };
        let t = i.tuple;
        if t.proto != self.proto {
            return;
        }
        if t.sport == self.client_port && self.server_hit.is_none() && tag.dir == Dir::Request {
            self.server_hit = Some((ns, format!("{}:{}", t.src, t.sport), t.proto, t.dport));
        } else if t.dport == self.client_port && self.reply_from.is_none() {
            self.reply_from = Some(format!("{}:{}", t.src, t.sport));
        }
    }

    /// Something the run could not model that may change its outcome (said once).
    pub(crate) fn note_warning(&mut self, text: String) {
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }

    pub(crate) fn note_drop(&mut self, tag: Tag, code: &'static str, text: String) {
        self.drops.push((tag, code, text));
    }

    pub(crate) fn note_reject(&mut self, _tag: Tag, with: RejectWith, by_nft: bool) {
        self.reject.get_or_insert((with, by_nft));
    }

    /// A host received an IP packet: is it the server seeing the request, or the client
    /// seeing the reply?
    pub(crate) fn observe_host_rx(&mut self, ns: NetnsId, i: &packet::PacketInfo, tag: Tag) {
        let t = i.tuple;
        let to_client_socket = t.dst == self.client_ip
            && (t.dport == self.client_port || i.icmp_inner.is_some() || t.proto == Proto::ICMP);
        if ns == self.client_ns && to_client_socket {
            if self.reply_from.is_some() {
                return;
            }
            let is_reply = match (t.proto, i.icmp, i.icmp_inner) {
                (_, _, Some(inner)) => {
                    inner.src == self.client_ip && inner.sport == self.client_port
                }
                (Proto::ICMP, Some((0, _)), _) => {
                    self.proto == Proto::ICMP && t.sport == self.client_port
                }
                (p, _, _) => p == self.proto && t.dport == self.client_port,
            };
            if is_reply {
                self.reply_from = Some(if i.icmp.is_some() {
                    t.src.to_string()
                } else {
                    format!("{}:{}", t.src, t.sport)
                });
            }
            return;
        }
        if self.proxies.iter().any(|(p, _)| *p == ns) {
            if tag.dir == Dir::Request && self.proxy_hit.is_none() {
                self.proxy_hit = Some((ns, format!("{}:{}", t.src, t.sport)));
            }
            return;
        }
        // The server is the host that got the request; a retransmitted SYN that a load
        // balancer sent elsewhere (a fresh decision once the old one was forgotten) moves it.
        let fresh_syn = t.proto == Proto::TCP && i.tcp_flags & 0x12 == 0x02;
        if tag.dir == Dir::Request
            && (self.server_hit.is_none() || fresh_syn)
            && t.proto == self.proto
            && i.icmp_inner.is_none()
        {
            let saw = if t.proto.has_ports() {
                format!("{}:{}", t.src, t.sport)
            } else {
                t.src.to_string()
            };
            self.server_hit = Some((ns, saw, t.proto, t.dport));
        }
    }

    /// If `ip`, arriving at `ns`, is an ICMP error about the client's flow: the client index.
    pub(crate) fn refusal(&self, ns: NetnsId, i: &packet::PacketInfo) -> Option<(usize, Ipv4Addr)> {
        if ns != self.client_ns {
            return None;
        }
        let inner = i.icmp_inner?;
        (inner.src == self.client_ip && inner.sport == self.client_port)
            .then_some((self.client_idx, i.tuple.src))
    }
}

/// Reads the Kubernetes object out of a kube-proxy rule comment.
/// The Service port behind an nf_tables rule of kube-proxy's: its comment or its matched
/// element's comment (`ns2/svc2:p80`), else its chain's or the element's target chain's name
/// (`service-ULMVA6XW-ns1/svc1/tcp/p80`, `endpoint-…-ns1/svc1/tcp/p80__10.180.0.1/80`): as
/// `svc/ns1/svc1:p80`.
pub(crate) fn nft_origin(
    chain: &str,
    comment: Option<&str>,
    element: Option<&str>,
) -> Option<String> {
    let from_chain = |c: &str| -> Option<String> {
        // PREFIX-HASH-ns/svc/proto/port[__ip/port]
        let (_, rest) = c.split_once('-')?;
        let (hash, name) = rest.split_once('-')?;
        if hash.len() != 8 {
            return None;
        }
        let name = name.split("__").next()?;
        let mut parts = name.splitn(4, '/');
        let (ns, svc, _proto, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        Some(if port.is_empty() {
            format!("svc/{ns}/{svc}")
        } else {
            format!("svc/{ns}/{svc}:{port}")
        })
    };
    let element_comment = element.and_then(|e| {
        let (_, rest) = e.split_once(" comment \"")?;
        rest.split_once('"').map(|(c, _)| c)
    });
    comment
        .and_then(origin_of)
        .or_else(|| element_comment.and_then(origin_of))
        .or_else(|| from_chain(chain))
        .or_else(|| {
            let target = element?.rsplit_once(": ")?.1;
            let c = target.strip_prefix("goto ").or_else(|| target.strip_prefix("jump "))?;
            from_chain(c)
        })
}

pub(crate) fn origin_of(comment: &str) -> Option<String> {
    let first = comment.split_whitespace().find(|w| w.contains('/'))?;
    let first = first.trim_end_matches(['"', ',']);
    let (ns, rest) = first.split_once('/')?;
    if ns.is_empty()
        || rest.is_empty()
        || !ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    Some(format!("svc/{ns}/{rest}"))
}
