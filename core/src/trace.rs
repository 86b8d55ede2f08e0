//! Flow traces: run one flow end to end through the cluster and record every hop.
//!
//! A flow is a real exchange between smoltcp stacks: TCP (handshake, one request and its
//! response, close), HTTP (one GET over TCP), UDP (one datagram and its reply) or ICMP (echo
//! request and reply). Every frame it causes, ARP included, is numbered as a packet of the
//! trace and followed across devices, bridges, routing decisions and netfilter hooks.
//!
//! The JSON form is versioned ([`SCHEMA_VERSION`]); golden files under `core/tests/golden/`
//! pin it and are shared with the Python and browser tests.

use std::fmt::{self, Write};
use std::net::Ipv4Addr;

use serde::Serialize;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, IpAddress, IpEndpoint,
};

use podnet_netfilter::packet;
use podnet_netfilter::rule::RejectWith;
use podnet_netfilter::{Hook, Proto};

use crate::cluster::{Cluster, ClusterError, Owner};
use crate::ids::NetnsId;
use crate::sim::Tag;
use crate::stack::{Payload, Side};

/// Version of the trace JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Which way a packet travels in the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// From the client towards the server.
    Request,
    /// From the server (or a device answering for it) towards the client.
    Reply,
}

/// The protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProto {
    /// TCP: handshake, request, response, close.
    Tcp,
    /// UDP: one datagram and its reply.
    Udp,
    /// ICMP echo.
    Icmp,
    /// HTTP GET over TCP.
    Http,
}

impl FlowProto {
    /// Parses `tcp`, `udp`, `icmp`, `http`.
    pub fn parse(s: &str) -> Option<FlowProto> {
        Some(match s {
            "tcp" => FlowProto::Tcp,
            "udp" => FlowProto::Udp,
            "icmp" => FlowProto::Icmp,
            "http" => FlowProto::Http,
            _ => return None,
        })
    }

    fn l4(self) -> Proto {
        match self {
            FlowProto::Tcp | FlowProto::Http => Proto::TCP,
            FlowProto::Udp => Proto::UDP,
            FlowProto::Icmp => Proto::ICMP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FlowProto::Tcp => "tcp",
            FlowProto::Udp => "udp",
            FlowProto::Icmp => "icmp",
            FlowProto::Http => "http",
        }
    }
}

/// How to run a trace.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Protocol.
    pub proto: FlowProto,
    /// Client source port (ICMP: the echo identifier); `None` picks a seeded ephemeral
    /// port in 32768–60999, as Linux's `ip_local_port_range`.
    pub sport: Option<u16>,
    /// HTTP: request path.
    pub path: String,
    /// HTTP: extra headers.
    pub headers: Vec<(String, String)>,
    /// Do not commit effects (conntrack, FDB, ARP caches, randomness) to the cluster.
    pub dry_run: bool,
    /// Record hops (off: only the outcome is computed; the fast path for batches).
    pub record_hops: bool,
    /// Keep every frame as each device received it ([`Trace::frames`], for pcapng).
    pub capture: bool,
    /// Request/answer exchanges the client makes over its one socket (UDP and ICMP
    /// datagrams, TCP echo writes; HTTP always makes one), each after the previous was
    /// answered, as `ping -c N` does. Every exchange after the first travels the conntrack
    /// entries the first created: the established path.
    pub rounds: u32,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            proto: FlowProto::Tcp,
            sport: None,
            path: "/".into(),
            headers: Vec::new(),
            dry_run: false,
            record_hops: true,
            capture: false,
            rounds: 1,
        }
    }
}

/// The fate of a flow's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Reached a listening server.
    Delivered,
    /// Lost on the way.
    Dropped,
    /// Refused: ICMP unreachable or TCP RST came back.
    Rejected,
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::Delivered => "delivered",
            Disposition::Dropped => "dropped",
            Disposition::Rejected => "rejected",
        })
    }
}

/// A packet's headers at one point, for display and JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketView {
    /// Source MAC (frames only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<String>,
    /// Destination MAC (frames only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<String>,
    /// `tcp`, `udp`, `icmp`, `arp` or a number.
    pub proto: String,
    /// Source address.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// Source port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// TCP flags (`S`, `S.`, `.`, `P.`, `F.`, `R`), ICMP type, or ARP operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

impl PacketView {
    /// Reads an Ethernet frame.
    pub fn of_frame(f: &[u8]) -> Option<PacketView> {
        let eth = EthernetFrame::new_checked(f).ok()?;
        let mut v = match eth.ethertype() {
            EthernetProtocol::Ipv4 => PacketView::of_ip(eth.payload())?,
            EthernetProtocol::Arp => {
                let arp = ArpPacket::new_checked(eth.payload()).ok()?;
                let ArpRepr::EthernetIpv4 {
                    operation,
                    source_hardware_addr,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                } = ArpRepr::parse(&arp).ok()?
                else {
                    return None;
                };
                let info = match operation {
                    ArpOperation::Request => {
                        format!("who-has {target_protocol_addr} tell {source_protocol_addr}")
                    }
                    _ => format!(
                        "{source_protocol_addr} is-at {}",
                        crate::net::Mac(source_hardware_addr)
                    ),
                };
                PacketView {
                    src_mac: None,
                    dst_mac: None,
                    proto: "arp".into(),
                    src: source_protocol_addr.to_string(),
                    dst: target_protocol_addr.to_string(),
                    sport: None,
                    dport: None,
                    info: Some(info),
                }
            }
            _ => return None,
        };
        v.src_mac = Some(crate::net::Mac(eth.src_addr()).to_string());
        v.dst_mac = Some(crate::net::Mac(eth.dst_addr()).to_string());
        Some(v)
    }

    /// Reads an IPv4 packet.
    pub fn of_ip(b: &[u8]) -> Option<PacketView> {
        let i = packet::parse(b).ok()?;
        let t = i.tuple;
        let ports = t.proto.has_ports();
        let info = match (t.proto, i.icmp) {
            (Proto::TCP, _) => Some(tcp_flags_text(i.tcp_flags)),
            (_, Some((ty @ (0 | 8), _))) => {
                // The echo's sequence number, after the identifier (`parse` checked the length).
                let l4 = usize::from(b[0] & 0x0f) * 4;
                let seq = b.get(l4 + 6..l4 + 8).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]));
                let what = if ty == 8 { "request" } else { "reply" };
                Some(format!("echo {what} id {} seq {seq}", t.sport))
            }
            (_, Some((3, c))) => Some(format!("destination unreachable code {c}")),
            (_, Some((ty, c))) => Some(format!("type {ty} code {c}")),
            _ => None,
        };
        Some(PacketView {
            src_mac: None,
            dst_mac: None,
            proto: t.proto.to_string(),
            src: t.src.to_string(),
            dst: t.dst.to_string(),
            sport: ports.then_some(t.sport),
            dport: ports.then_some(t.dport),
            info,
        })
    }
}

fn tcp_flags_text(f: u8) -> String {
    use podnet_netfilter::packet::tcp_flags::*;
    let mut s = String::new();
    for (bit, c) in [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P')] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if f & ACK != 0 {
        s.push('.');
    }
    s
}

impl fmt::Display for PacketView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |a: &str, p: Option<u16>| match p {
            Some(p) => format!("{a}:{p}"),
            None => a.to_string(),
        };
        write!(f, "{} > {} {}", ep(&self.src, self.sport), ep(&self.dst, self.dport), self.proto)?;
        if let Some(i) = &self.info {
            if self.proto == "tcp" { write!(f, " [{i}]")? } else { write!(f, " {i}")? }
        }
        Ok(())
    }
}

/// What happened at a hop (internal; flattened into [`Hop`]).
#[derive(Clone, Debug)]
pub(crate) enum HopKind {
    Tx,
    Rx,
    Ignore,
    Bridge,
    Fdb,
    Arp,
    Neigh,
    Route,
    Deliver,
    Rule {
        hook: Hook,
        table: &'static str,
        chain: String,
        rule_num: usize,
        rule: String,
        comment: Option<String>,
    },
    Nat {
        hook: Hook,
    },
    Conntrack {
        hook: Hook,
    },
    Log {
        hook: Hook,
    },
    Drop {
        reason: &'static str,
    },
}

/// One step of a packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// Position in the trace (0-based).
    pub index: usize,
    /// Packet number within the flow (1-based; ARP frames are packets too).
    pub packet: u32,
    /// Request or reply.
    pub direction: Dir,
    /// The node it happened on (pods report their node).
    pub node: Option<String>,
    /// Network namespace.
    pub netns: String,
    /// Device.
    pub device: Option<String>,
    /// What happened: `tx`, `rx`, `ignore`, `bridge`, `fdb`, `arp`, `neigh`, `route`,
    /// `deliver`, `rule`, `nat`, `conntrack`, `drop`.
    pub action: &'static str,
    /// Netfilter hook.
    pub hook: Option<String>,
    /// Netfilter table.
    pub table: Option<String>,
    /// Netfilter chain.
    pub chain: Option<String>,
    /// The rule as written, `:CHAIN POLICY` for a policy.
    pub rule: Option<String>,
    /// The Kubernetes object a rule came from, read from its comment (`svc/default/web:http`).
    pub origin: Option<String>,
    /// For drops: the stable reason code.
    pub reason: Option<String>,
    /// Human explanation.
    pub detail: String,
    /// Headers before.
    pub before: Option<PacketView>,
    /// Headers after (rewrites).
    pub after: Option<PacketView>,
}

/// The result of a trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trace {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The source as asked.
    pub from: String,
    /// The destination as asked.
    pub to: String,
    /// Protocol.
    pub proto: FlowProto,
    /// The cluster's seed.
    pub seed: u64,
    /// Client address:port used.
    pub client: String,
    /// Fate of the request.
    pub disposition: Disposition,
    /// The client got the expected reply (TCP: the exchange and close completed).
    pub completed: bool,
    /// Who answered: `pod/NS/NAME`, `node/NAME`, `host/NAME`.
    pub delivered_to: Option<String>,
    /// Source of the request as the server received it.
    pub server_saw: Option<String>,
    /// Source of the first reply as the client received it (an ICMP error's source when
    /// that is what came back).
    pub reply_from: Option<String>,
    /// Stable code for a drop or rejection.
    pub reason: Option<String>,
    /// Human explanation of `reason`.
    pub reason_text: Option<String>,
    /// HTTP flows: the status code of the response the client received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// With [`TraceOptions::rounds`] above one: how many exchanges were answered (each
    /// with exactly the bytes sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
    /// Probability of this outcome (set by enumerations of all outcomes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Virtual time at the start and end, in milliseconds.
    pub started_ms: i64,
    /// See `started_ms`.
    pub ended_ms: i64,
    /// Every hop.
    pub hops: Vec<Hop>,
    /// Frames as devices received them, when [`TraceOptions::capture`] was set (not part of
    /// the JSON form; see [`crate::pcap`]).
    #[serde(skip)]
    pub frames: Vec<crate::pcap::CapturedFrame>,
}

/// Errors from starting a trace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The source or destination names nothing known.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An endpoint string could not be read.
    #[error("cannot read {what} '{text}': {hint}")]
    BadEndpoint {
        /// `source` or `destination`.
        what: &'static str,
        /// The text.
        text: String,
        /// How to write it.
        hint: String,
    },
    /// The simulation did not settle (a forwarding loop).
    #[error("the flow did not settle after {0} frames: a forwarding loop? (trace aborted)")]
    Livelock(u64),
    /// Every port of `ip_local_port_range` is held (connect's EADDRNOTAVAIL).
    #[error(
        "{client}: no free ephemeral port in 32768-60999 (Cannot assign requested address): {held} are held by open connections or TIME_WAIT (10 s); advance time (Cluster::advance) or pass a source port"
    )]
    NoEphemeralPort {
        /// The client.
        client: String,
        /// Ports held.
        held: usize,
    },
}

/// What the recorder watches for while a flow runs. It reads packets a host's stack made
/// or `ip_rcv` has already checked, so it parses them without checking the IPv4 header
/// checksum again.
pub(crate) struct Recorder {
    hops: Vec<Hop>,
    pub(crate) keep_hops: bool,
    client_ns: NetnsId,
    client_ip: Ipv4Addr,
    client_port: u16,
    proto: Proto,
    client_idx: usize,
    pub(crate) server_hit: Option<(NetnsId, String, Proto, u16)>,
    /// L7 hops (ALBs) with their listener port: intermediaries, not servers.
    proxies: Vec<(NetnsId, u16)>,
    /// The first L7 hop the request reached, and the source it saw.
    proxy_hit: Option<(NetnsId, String)>,
    reply_from: Option<String>,
    drops: Vec<(Tag, &'static str, String)>,
    reject: Option<RejectWith>,
}

impl Recorder {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        tag: Tag,
        node: Option<String>,
        netns: String,
        device: Option<String>,
        kind: HopKind,
        detail: String,
        before: Option<PacketView>,
        after: Option<PacketView>,
    ) {
        let mut hop = Hop {
            index: self.hops.len(),
            packet: tag.pkt,
            direction: tag.dir,
            node,
            netns,
            device,
            action: "",
            hook: None,
            table: None,
            chain: None,
            rule: None,
            origin: None,
            reason: None,
            detail,
            before,
            after,
        };
        hop.action = match kind {
            HopKind::Tx => "tx",
            HopKind::Rx => "rx",
            HopKind::Ignore => "ignore",
            HopKind::Bridge => "bridge",
            HopKind::Fdb => "fdb",
            HopKind::Arp => "arp",
            HopKind::Neigh => "neigh",
            HopKind::Route => "route",
            HopKind::Deliver => "deliver",
            HopKind::Rule { hook, table, chain, rule_num, rule, comment } => {
                hop.hook = Some(hook.to_string());
                hop.table = Some(table.to_string());
                if hop.detail.is_empty() {
                    hop.detail = if rule_num == 0 {
                        format!("{chain} policy {}", rule.rsplit(' ').next().unwrap_or("ACCEPT"))
                    } else {
                        format!("{table} {chain} rule {rule_num}")
                    };
                }
                hop.chain = Some(chain);
                hop.origin = comment.as_deref().and_then(origin_of);
                hop.rule = Some(rule);
                "rule"
            }
            HopKind::Nat { hook } => {
                hop.hook = Some(hook.to_string());
                hop.table = Some("nat".into());
                "nat"
            }
            HopKind::Conntrack { hook } => {
                hop.hook = Some(hook.to_string());
                "conntrack"
            }
            HopKind::Log { hook } => {
                hop.hook = Some(hook.to_string());
                "log"
            }
            HopKind::Drop { reason } => {
                hop.reason = Some(reason.to_string());
                "drop"
            }
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

    pub(crate) fn note_drop(&mut self, tag: Tag, code: &'static str, text: String) {
        self.drops.push((tag, code, text));
    }

    pub(crate) fn note_reject(&mut self, _tag: Tag, with: RejectWith) {
        self.reject.get_or_insert(with);
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
fn origin_of(comment: &str) -> Option<String> {
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

/// Where a flow starts.
struct Source {
    ns: NetnsId,
    side: Side,
    ip: Ipv4Addr,
}

impl Cluster {
    /// Traces one flow from `from` (`pod/NS/NAME`, `node/NAME`, or an IP) to `to`
    /// (`IP:PORT`, `pod/NS/NAME:PORT`, `svc/NS/NAME:PORT` with a number or port name; a bare
    /// IP for ICMP).
    pub fn trace(
        &mut self,
        from: &str,
        to: &str,
        opts: &TraceOptions,
    ) -> Result<Trace, TraceError> {
        if opts.dry_run {
            let mut c = self.fork();
            let mut o = opts.clone();
            o.dry_run = false;
            return c.trace(from, to, &o);
        }
        let (dst_ip, dst_port) = self.resolve_destination(to, opts.proto)?;
        let src = self.resolve_source(from, dst_ip)?;
        let proto = opts.proto.l4();
        self.ensure_stack(src.ns);
        let busy = {
            let st = self.netns[src.ns.idx()].stack.as_mut().expect("ensured");
            st.gc_clients(self.now);
            st.client_ports()
        };
        // Linux's ip_local_port_range: a random start, then the next port no live socket (or
        // TIME_WAIT) holds, as `__inet_hash_connect` scans; all held is EADDRNOTAVAIL.
        let sport = match opts.sport {
            Some(p) => p,
            None => {
                let busy: std::collections::HashSet<u16> = busy.into_iter().collect();
                let bound = &self.netns[src.ns.idx()].ports;
                let start = self.rng.range(32768, 60999) as u16;
                let free = |p: u16| !busy.contains(&p) && !bound.contains_key(&(proto, p));
                let range = 60999 - 32768 + 1;
                (0..range)
                    .map(|i| 32768 + ((u32::from(start) - 32768 + i) % range) as u16)
                    .find(|p| free(*p))
                    .ok_or_else(|| TraceError::NoEphemeralPort {
                        client: from.to_string(),
                        held: busy.len(),
                    })?
            }
        };
        let payload = match opts.proto {
            FlowProto::Http => {
                let path = url_path(to).unwrap_or(&opts.path);
                let host = opts
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| to_host(to));
                let mut req =
                    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: podnet\r\n");
                for (k, v) in opts.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
                    let _ = write!(req, "{k}: {v}\r\n");
                }
                req.push_str("\r\n");
                Payload::Http(req.into_bytes())
            }
            FlowProto::Icmp => Payload::Echo(b"podnet-echo".to_vec()),
            _ => Payload::Echo(b"hello from podnet\n".to_vec()),
        };
        self.ensure_stack(src.ns);
        let remote = IpEndpoint::new(
            IpAddress::Ipv4(dst_ip),
            if proto == Proto::ICMP { sport } else { dst_port },
        );
        let client_idx = {
            let st = self.netns[src.ns.idx()].stack.as_mut().expect("ensured");
            st.start_client(src.side, proto, remote, sport, payload, opts.rounds).map_err(|e| {
                TraceError::BadEndpoint {
                    what: "source",
                    text: from.into(),
                    hint: format!("the client could not start: {e}"),
                }
            })?
        };
        let started = self.now;
        self.sim.events = 0;
        self.sim.extra_rounds = u64::from(opts.rounds.saturating_sub(1));
        self.sim.next_pkt = 0;
        self.sim.active.clear();
        self.sim.active.insert(src.ns);
        self.sim.rec = Some(Recorder {
            hops: Vec::new(),
            keep_hops: opts.record_hops,
            client_ns: src.ns,
            client_ip: src.ip,
            client_port: sport,
            proto,
            client_idx,
            server_hit: None,
            proxies: self
                .edge
                .albs
                .iter()
                .map(|a| (a.netns, 80))
                .chain(self.edge.controllers.iter().filter_map(|c| {
                    let id = self.pod_id(&format!("pod/{}", c.pod)).ok()?;
                    Some((self.pods[id.idx()].netns, c.port))
                }))
                .collect(),
            proxy_hit: None,
            reply_from: None,
            drops: Vec::new(),
            reject: None,
        });
        let budget = match opts.proto {
            FlowProto::Tcp | FlowProto::Http => Duration::from_secs(130),
            _ => Duration::from_secs(5),
        };
        let deadline = started + budget;
        self.sim.capture = opts.capture.then(Vec::new);
        let result = self.run_flow(src.ns, client_idx, deadline);
        let captured = self.sim.capture.take().unwrap_or_default();
        let rec = self.sim.rec.take().expect("recorder set above");
        self.sim.active.clear();
        result?;
        let (client, http_status, answered) = {
            let st = self.netns[src.ns.idx()].stack.as_mut().expect("ensured");
            let c = &st.clients[client_idx];
            let status = (opts.proto == FlowProto::Http)
                .then(|| {
                    c.response
                        .get(9..12)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse().ok())
                })
                .flatten();
            ((c.done, c.ok, c.refused), status, c.answered)
        };
        // Forget the finished client's socket state in the result; its socket lingers in
        // TIME_WAIT inside the stack as it would in the kernel.
        let mut t = self.conclude(from, to, opts.proto, src.ip, sport, started, rec, client);
        t.http_status = http_status;
        t.answered = (opts.rounds > 1 && opts.proto != FlowProto::Http).then_some(answered);
        t.frames = captured
            .into_iter()
            .map(|(at, dev, data)| crate::pcap::CapturedFrame {
                netns: self.netns[self.devs[dev.idx()].netns.idx()].name.clone(),
                device: self.devs[dev.idx()].name.clone(),
                time_us: at.total_micros() as u64,
                data,
            })
            .collect();
        Ok(t)
    }

    fn run_flow(
        &mut self,
        client_ns: NetnsId,
        client_idx: usize,
        deadline: Instant,
    ) -> Result<(), TraceError> {
        let mut settle = 0;
        for _ in 0..100_000 {
            let active: Vec<NetnsId> = self.sim.active.iter().copied().collect();
            for ns in active {
                self.poll_stack(ns);
            }
            if !self.run_queue() {
                return Err(TraceError::Livelock(self.sim.events));
            }
            let done = self.netns[client_ns.idx()]
                .stack
                .as_ref()
                .is_some_and(|s| s.clients[client_idx].done);
            if done {
                settle += 1;
                if settle > 2 {
                    return Ok(());
                }
                continue;
            }
            // Advance to the next timer.
            let now = self.now;
            let mut next: Option<Instant> =
                self.sim.pending.iter().map(crate::sim::Pending::deadline).min();
            let active: Vec<NetnsId> = self.sim.active.iter().copied().collect();
            for ns in active {
                if let Some(st) = self.netns[ns.idx()].stack.as_mut()
                    && let Some(t) = st.poll_at(now)
                {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
            let Some(next) = next else { return Ok(()) };
            let next = next.max(now + Duration::from_millis(1));
            if next > deadline {
                self.now = deadline;
                self.expire_pending();
                return Ok(());
            }
            self.now = next;
            self.expire_pending();
        }
        Err(TraceError::Livelock(self.sim.events))
    }

    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &mut self,
        from: &str,
        to: &str,
        proto: FlowProto,
        client_ip: Ipv4Addr,
        sport: u16,
        started: Instant,
        rec: Recorder,
        client: (bool, bool, bool),
    ) -> Trace {
        let (_done, ok, refused) = client;
        let delivered = rec.server_hit.as_ref().filter(|(ns, _, p, port)| {
            *p == Proto::ICMP || self.netns[ns.idx()].ports.contains_key(&(*p, *port))
        });
        // A port a host-network pod holds in a node's namespace delivers to that pod.
        let mut delivered_to =
            delivered.map(|(ns, _, p, port)| match self.netns[ns.idx()].ports.get(&(*p, *port)) {
                Some(owner) if owner.starts_with("pod/") => {
                    owner.rsplit_once('/').map(|x| x.0.to_string()).unwrap_or_default()
                }
                _ => self.owner_name(*ns),
            });
        let mut server_saw = delivered.map(|(_, saw, ..)| saw.clone());
        // An L7 hop that answered by itself (404, 400, 502) is where the request ended.
        let answered_by_proxy = delivered.is_none() && ok && rec.proxy_hit.is_some();
        if answered_by_proxy {
            let (ns, saw) = rec.proxy_hit.clone().expect("checked");
            delivered_to = Some(self.owner_name(ns));
            server_saw = Some(saw);
        }
        let first_request_drop =
            rec.drops.iter().find(|(t, ..)| t.dir == Dir::Request).or(rec.drops.first());
        let (disposition, reason, reason_text) = if delivered.is_some() || answered_by_proxy {
            (Disposition::Delivered, None, None)
        } else if let Some(w) = rec.reject {
            (
                Disposition::Rejected,
                Some("rule".to_string()),
                Some(format!("rejected by an iptables REJECT rule (--reject-with {})", w.name())),
            )
        } else if refused || rec.server_hit.is_some() {
            let text = match (&rec.server_hit, &rec.reply_from) {
                (Some((ns, _, p, port)), _) => {
                    format!("{} has nothing listening on {p}/{port}", self.owner_name(*ns))
                }
                (None, Some(r)) => format!("refused by {r}"),
                _ => "connection refused".into(),
            };
            (Disposition::Rejected, Some(crate::sim::reason::NO_LISTENER.to_string()), Some(text))
        } else if let Some((_, code, text)) = first_request_drop {
            (Disposition::Dropped, Some(code.to_string()), Some(text.clone()))
        } else {
            (
                Disposition::Dropped,
                Some("timeout".into()),
                Some("no answer before the flow's time budget ran out".into()),
            )
        };
        Trace {
            schema: SCHEMA_VERSION,
            from: from.into(),
            to: to.into(),
            proto,
            seed: self.cfg.seed,
            client: if proto == FlowProto::Icmp {
                client_ip.to_string()
            } else {
                format!("{client_ip}:{sport}")
            },
            disposition,
            completed: ok,
            delivered_to,
            server_saw,
            reply_from: rec.reply_from,
            reason,
            reason_text,
            http_status: None,
            answered: None,
            probability: None,
            started_ms: started.total_millis(),
            ended_ms: self.now.total_millis(),
            hops: rec.hops,
            frames: Vec::new(),
        }
    }

    pub(crate) fn owner_name(&self, ns: NetnsId) -> String {
        match &self.netns[ns.idx()].owner {
            Owner::Pod(p) => self.pods[p.idx()].key(),
            Owner::Node(n) => format!("node/{}", self.nodes[n.idx()].name),
            _ => self.netns[ns.idx()].name.clone(),
        }
    }

    fn resolve_source(&self, from: &str, dst: Ipv4Addr) -> Result<Source, TraceError> {
        if from.starts_with("pod/") {
            let p = &self.pods[self.pod_id(from)?.idx()];
            let lo = dst.is_loopback();
            return Ok(Source {
                ns: p.netns,
                side: if lo { Side::Lo } else { Side::Main },
                ip: if lo { Ipv4Addr::LOCALHOST } else { p.ip },
            });
        }
        if from.starts_with("node/") {
            let n = &self.nodes[self.node_id(from)?.idx()];
            // The node's stack picks its source like smoltcp: an address in the destination's
            // subnet, else its first (eth0) address.
            let ip = self
                .nodes
                .iter()
                .find(|x| x.netns == n.netns)
                .map(|x| {
                    if x.bridge.is_some() && x.pod_cidr.contains(dst) {
                        Ipv4Addr::from(u32::from(x.pod_cidr.network()) + 1)
                    } else {
                        x.ip
                    }
                })
                .unwrap_or(n.ip);
            return Ok(Source { ns: n.netns, side: Side::Main, ip });
        }
        if from.starts_with("host/") {
            let ns = self
                .netns
                .iter()
                .position(|n| n.name == from)
                .map(|i| NetnsId(i as u32))
                .ok_or_else(|| TraceError::BadEndpoint {
                    what: "source",
                    text: from.into(),
                    hint: format!(
                        "hosts: {}",
                        self.netns
                            .iter()
                            .filter(|n| n.name.starts_with("host/"))
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            let eth0 = self.dev_named(ns, "eth0");
            let ip = eth0
                .and_then(|d| self.devs[d.idx()].addrs.first())
                .map(|a| a.ip())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            return Ok(Source { ns, side: Side::Main, ip });
        }
        if let Ok(ip) = from.parse::<Ipv4Addr>() {
            if let Some(p) = self.pods.iter().find(|p| p.ip == ip && !p.deleted) {
                return Ok(Source { ns: p.netns, side: Side::Main, ip });
            }
            if let Some(n) = self.nodes.iter().find(|n| n.ip == ip) {
                return Ok(Source { ns: n.netns, side: Side::Main, ip });
            }
        }
        Err(TraceError::BadEndpoint {
            what: "source",
            text: from.into(),
            hint: "write pod/NAMESPACE/NAME, node/NAME, or the IP of a pod or node".into(),
        })
    }

    fn resolve_destination(
        &self,
        to: &str,
        proto: FlowProto,
    ) -> Result<(Ipv4Addr, u16), TraceError> {
        let bad = |hint: &str| TraceError::BadEndpoint {
            what: "destination",
            text: to.into(),
            hint: hint.into(),
        };
        if proto == FlowProto::Icmp {
            let host = to.split(':').next().unwrap_or(to);
            if let Ok(ip) = host.parse::<Ipv4Addr>() {
                return Ok((ip, 0));
            }
            if host.starts_with("pod/") {
                return Ok((
                    self.pods[self.pod_id(to.rsplit_once(':').map_or(to, |x| x.0))?.idx()].ip,
                    0,
                ));
            }
            return Err(bad("ICMP takes a bare IP or pod/NAMESPACE/NAME"));
        }
        if let Some(rest) = to.strip_prefix("http://") {
            let host = rest.split('/').next().unwrap_or(rest);
            let (h, p) = host.split_once(':').unwrap_or((host, "80"));
            let ip = h
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("URLs take an IP host: http://10.96.0.10/path"))?;
            return Ok((ip, p.parse().map_err(|_| bad("bad port in URL"))?));
        }
        let (host, port) = to
            .rsplit_once(':')
            .ok_or_else(|| bad("write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT"))?;
        if host.starts_with("svc/") {
            return self.resolve_service(host, port).map_err(TraceError::from);
        }
        let port: u16 =
            port.parse().map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        if host.starts_with("pod/") {
            return Ok((self.pods[self.pod_id(host)?.idx()].ip, port));
        }
        let ip = host
            .parse::<Ipv4Addr>()
            .map_err(|_| bad("write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT"))?;
        Ok((ip, port))
    }

    /// A copy of the cluster's state for dry runs. Host stacks are not copied: the copy
    /// starts them afresh (empty socket tables and ARP caches), so a dry run may show ARP
    /// exchanges a committed run would not.
    pub fn fork(&self) -> Cluster {
        Cluster {
            cfg: self.cfg.clone(),
            nodes: self.nodes.clone(),
            pods: self.pods.clone(),
            netns: self
                .netns
                .iter()
                .map(|n| crate::cluster::Netns {
                    name: n.name.clone(),
                    owner: n.owner.clone(),
                    devs: n.devs.clone(),
                    local: n.local.clone(),
                    routes: n.routes.clone(),
                    policy: n.policy.clone(),
                    neigh: n.neigh.clone(),
                    sysctl: n.sysctl.clone(),
                    nf: n.nf.clone(),
                    ports: n.ports.clone(),
                    router: n.router,
                    health: n.health.clone(),
                    klog: n.klog.clone(),
                    stack: None,
                })
                .collect(),
            devs: self.devs.clone(),
            segments: self.segments.clone(),
            node_names: self.node_names.clone(),
            pod_names: self.pod_names.clone(),
            vpc: self.vpc,
            vpc_subnet: self.vpc_subnet,
            now: self.now,
            rng: self.rng.clone(),
            sim: crate::sim::SimState::default(),
            services: self.services.clone(),
            edge: self.edge.clone(),
            inet_segment: self.inet_segment,
            aws: self.aws.clone(),
        }
    }
}

fn url_path(to: &str) -> Option<&str> {
    let rest = to.strip_prefix("http://")?;
    rest.find('/').map(|i| &rest[i..])
}

fn to_host(to: &str) -> String {
    let t = to.strip_prefix("http://").unwrap_or(to);
    t.split('/').next().unwrap_or(t).to_string()
}

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
        if let (Some(r), Some(t)) = (&self.reason, &self.reason_text) {
            let _ = writeln!(s, "  reason: {r}: {t}");
        }
        let cutoff = if full {
            u32::MAX
        } else {
            self.hops
                .iter()
                .find(|h| {
                    h.direction == Dir::Reply
                        && h.before.as_ref().is_some_and(|b| b.proto != "arp")
                        && h.action == "tx"
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
            let mut line = format!("    [{:>3}] {:<26} {:<9} ", h.index, place, h.action);
            match h.action {
                "rule" if h.rule.as_deref().is_some_and(|r| r.starts_with(':')) => {
                    let _ = write!(
                        line,
                        "{} {}: {}",
                        h.hook.as_deref().unwrap_or(""),
                        h.table.as_deref().unwrap_or(""),
                        h.detail
                    );
                }
                "rule" => {
                    let _ = write!(
                        line,
                        "{} {}: -A {} {}",
                        h.hook.as_deref().unwrap_or(""),
                        h.table.as_deref().unwrap_or(""),
                        h.chain.as_deref().unwrap_or(""),
                        h.rule.as_deref().unwrap_or("")
                    );
                    if let Some(o) = &h.origin {
                        let _ = write!(line, "  <- {o}");
                    }
                }
                "tx" | "rx" => {
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

    /// The trace as JSON (schema [`SCHEMA_VERSION`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a trace always serialises")
    }
}

impl Cluster {
    /// Delivers raw bytes to a device, as if its link peer had sent them, and runs the
    /// datapath until it settles; returns the hops (drops carry their reason). For testing
    /// what the model does with any frame, malformed ones included.
    pub fn inject_frame(
        &mut self,
        netns: &str,
        device: &str,
        frame: &[u8],
    ) -> Result<Vec<Hop>, TraceError> {
        let ns =
            self.netns.iter().position(|n| n.name == netns).map(|i| NetnsId(i as u32)).ok_or_else(
                || TraceError::BadEndpoint {
                    what: "namespace",
                    text: netns.into(),
                    hint: format!(
                        "namespaces: {}",
                        self.netns.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                },
            )?;
        let dev = self.dev_named(ns, device).ok_or_else(|| TraceError::BadEndpoint {
            what: "device",
            text: format!("{netns} {device}"),
            hint: format!(
                "devices: {}",
                self.netns[ns.idx()]
                    .devs
                    .iter()
                    .map(|d| self.devs[d.idx()].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        self.sim.events = 0;
        self.sim.extra_rounds = 0;
        self.sim.next_pkt = 0;
        self.sim.active.clear();
        self.sim.rec = Some(Recorder {
            hops: Vec::new(),
            keep_hops: true,
            client_ns: NetnsId(u32::MAX),
            client_ip: Ipv4Addr::UNSPECIFIED,
            client_port: 0,
            proto: Proto(0),
            client_idx: 0,
            server_hit: None,
            proxies: Vec::new(),
            proxy_hit: None,
            reply_from: None,
            drops: Vec::new(),
            reject: None,
        });
        let tag = self.new_tag(Dir::Request);
        self.deliver(dev, frame.to_vec(), tag);
        let ok = self.run_queue();
        let rec = self.sim.rec.take().expect("set above");
        self.sim.active.clear();
        if !ok {
            return Err(TraceError::Livelock(self.sim.events));
        }
        Ok(rec.hops)
    }

    /// Every (namespace, device) pair a frame can be injected at.
    pub fn injection_points(&self) -> Vec<(String, String)> {
        self.netns
            .iter()
            .flat_map(|n| n.devs.iter().map(|d| (n.name.clone(), self.devs[d.idx()].name.clone())))
            .collect()
    }
}

impl Cluster {
    /// Every place a flow can land, each with its probability, as dry runs: each endpoint a
    /// Service can pick (`-m statistic` rules, IPVS scheduling) and each node a cloud load
    /// balancer can pick. Decision points are enumerated exhaustively (up to 256 paths); the
    /// probabilities of the outcomes returned add up to 1 when nothing was cut off.
    ///
    /// The ALB's choice of target is round robin state inside its L7 hop and is not
    /// enumerated: each ALB rule contributes its current target only.
    pub fn trace_all(
        &self,
        from: &str,
        to: &str,
        opts: &TraceOptions,
    ) -> Result<Vec<Trace>, TraceError> {
        use podnet_netfilter::eval::{Choices, Rng};
        use std::sync::{Arc, Mutex};
        let mut out = Vec::new();
        let mut todo: Vec<Vec<usize>> = vec![Vec::new()];
        let mut runs = 0;
        while let Some(forced) = todo.pop() {
            runs += 1;
            if runs > 256 {
                break;
            }
            let script = Arc::new(Mutex::new(Choices { forced: forced.clone(), met: Vec::new() }));
            let mut c = self.fork();
            for (i, ns) in c.netns.iter_mut().enumerate() {
                if let Some(nf) = ns.nf.as_mut() {
                    nf.rng = Rng::scripted(self.cfg.seed.wrapping_add(i as u64), script.clone());
                }
            }
            let mut t = c.trace(from, to, &TraceOptions { dry_run: false, ..opts.clone() })?;
            let met = script.lock().expect("choices lock").met.clone();
            let p: f64 = met.iter().map(|(pick, probs)| probs[*pick]).product();
            // Alternatives at every decision point this run met beyond the forced prefix.
            for i in (forced.len()..met.len()).rev() {
                for alt in (1..met[i].1.len()).rev() {
                    if met[i].1[alt] > 0.0 {
                        let mut f: Vec<usize> = met[..i].iter().map(|m| m.0).collect();
                        f.push(alt);
                        todo.push(f);
                    }
                }
            }
            if p > 0.0 {
                t.probability = Some(p);
                out.push(t);
            }
        }
        Ok(out)
    }

    /// A reachability matrix: one dry-run trace per (source, destination), rows in the order
    /// of `sources`.
    pub fn reachability(
        &self,
        sources: &[&str],
        destinations: &[&str],
        opts: &TraceOptions,
    ) -> Result<Vec<Vec<Trace>>, TraceError> {
        sources
            .iter()
            .map(|s| {
                destinations
                    .iter()
                    .map(|d| {
                        self.fork().trace(s, d, &TraceOptions { dry_run: false, ..opts.clone() })
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_ports_run_out_like_connect_and_time_frees_them() {
        let mut c = Cluster::seed();
        let ns = c.pods[c.pod_id("pod/default/pod2").unwrap().idx()].netns;
        c.ensure_stack(ns);
        let until = c.now + smoltcp::time::Duration::from_secs(10);
        let st = c.netns[ns.idx()].stack.as_mut().unwrap();
        // Every port but 40000 in TIME_WAIT: the one left is found whatever the start.
        st.hold_ports((32768..=60999).filter(|p| *p != 40000), until);
        let t = c.trace("pod/default/pod2", "pod/default/pod1:8080", &TraceOptions::default());
        assert!(t.unwrap().server_saw.unwrap().ends_with(":40000"));
        let st = c.netns[ns.idx()].stack.as_mut().unwrap();
        st.hold_ports([40000], until);
        let e = c
            .trace("pod/default/pod2", "pod/default/pod1:8080", &TraceOptions::default())
            .unwrap_err();
        assert!(matches!(e, TraceError::NoEphemeralPort { held, .. } if held >= 28_232), "{e}");
        assert!(e.to_string().contains("Cannot assign requested address"), "{e}");
        // An explicit source port still works, and TIME_WAIT ends after 10 s.
        let o = TraceOptions { sport: Some(50000), ..TraceOptions::default() };
        assert!(c.trace("pod/default/pod2", "pod/default/pod1:8080", &o).unwrap().completed);
        c.advance(smoltcp::time::Duration::from_secs(11));
        assert!(
            c.trace("pod/default/pod2", "pod/default/pod1:8080", &TraceOptions::default())
                .unwrap()
                .completed
        );
    }
}
