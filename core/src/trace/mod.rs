//! Trace records: what a flow's run leaves behind, hop by hop, and how it prints.
//!
//! A [`Trace`] holds the outcome of one flow (who answered, what each side saw, the
//! disposition and its reason) and every [`Hop`]: a device, a namespace, what happened
//! there (its kind: transmit, receive, a bridge decision, a route, a netfilter rule,
//! a NAT rewrite, a conntrack entry, a drop...) and the headers before and after
//! ([`PacketView`]). A recorder collects them while the run goes on; [`Trace::render`] prints a
//! trace for people, [`Trace::to_json`] for programs, and [`pcap`] writes the frames a run
//! captured.
//!
//! The JSON form is versioned ([`SCHEMA_VERSION`]); golden files under `core/tests/golden/`
//! pin it and are shared with the Python and browser tests.

pub mod pcap;
mod recorder;
mod render;

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};

use podnet_netfilter::packet;
use podnet_netfilter::{Hook, Proto};

pub use crate::error::TraceError;
pub(crate) use recorder::{Recorder, nft_origin, origin_of};

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
    /// Parses `tcp`, `udp`, `icmp`, `http`, in any case (`TCP` as Kubernetes spells it).
    pub fn parse(s: &str) -> Option<FlowProto> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => FlowProto::Tcp,
            "udp" => FlowProto::Udp,
            "icmp" => FlowProto::Icmp,
            "http" => FlowProto::Http,
            _ => return None,
        })
    }

    /// Its name: `tcp`, `udp`, `icmp` or `http`.
    pub fn name(self) -> &'static str {
        match self {
            FlowProto::Tcp => "tcp",
            FlowProto::Udp => "udp",
            FlowProto::Icmp => "icmp",
            FlowProto::Http => "http",
        }
    }

    pub(crate) fn l4(self) -> Proto {
        match self {
            FlowProto::Tcp | FlowProto::Http => Proto::TCP,
            FlowProto::Udp => Proto::UDP,
            FlowProto::Icmp => Proto::ICMP,
        }
    }
}

impl std::str::FromStr for FlowProto {
    type Err = crate::error::UnknownValue;

    fn from_str(s: &str) -> Result<FlowProto, Self::Err> {
        FlowProto::parse(s).ok_or_else(|| crate::error::UnknownValue {
            what: "protocol",
            value: s.into(),
            expected: "tcp, udp, icmp or http",
        })
    }
}

impl fmt::Display for FlowProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to run a trace.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// The protocol, or `None` for the one the destination implies: a named port's protocol
    /// (`svc/NS/NAME:dns` is UDP when the Service says so), HTTP for `http://…`, the only
    /// protocol of a numbered Service port, else TCP. A protocol given here that
    /// contradicts the destination is an error ([`TraceError::ProtocolMismatch`]).
    pub proto: Option<FlowProto>,
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
            proto: None,
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
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
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
                    src: IpAddr::V4(source_protocol_addr),
                    dst: IpAddr::V4(target_protocol_addr),
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
            src: IpAddr::V4(t.src),
            dst: IpAddr::V4(t.dst),
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
        let ep = |a: &IpAddr, p: Option<u16>| match p {
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

/// What happened at a hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HopKind {
    /// A device transmitted the frame (or a stack sent the packet).
    Tx,
    /// A device received the frame.
    Rx,
    /// The frame was not for this device (PACKET_OTHERHOST) or not a protocol the model
    /// handles: ignored.
    Ignore,
    /// A bridge decided: pass up, forward to a port, flood, hairpin.
    Bridge,
    /// The bridge learned (or moved) a MAC address.
    Fdb,
    /// An ARP request or reply was sent.
    Arp,
    /// The neighbour table learned an address.
    Neigh,
    /// A routing decision (or the fabric's choice of next hop).
    Route,
    /// Local delivery to a host stack.
    Deliver,
    /// A netfilter rule matched (or a chain's policy applied).
    Rule {
        /// The hook.
        hook: Hook,
        /// The table (`filter`, `nat`, `mangle`, `raw`).
        table: &'static str,
        /// The chain.
        chain: String,
        /// The rule's number in its chain (1-based; 0 for the chain's policy).
        rule_num: usize,
        /// The rule as `iptables-save` prints it (kernel form, without `-A CHAIN`), so it can be
        /// found in `podnet iptables-save` output; `:CHAIN POLICY` for a policy.
        rule: String,
        /// The Kubernetes object the rule came from, read from its comment
        /// (`svc/default/web:http`).
        origin: Option<String>,
    },
    /// A rule of an nf_tables chain fired (or a base chain's policy applied).
    NftRule {
        /// The hook.
        hook: Hook,
        /// The table, with its family: `ip kube-proxy`.
        table: String,
        /// The chain.
        chain: String,
        /// The rule's handle (`nft -a list ruleset` prints it as `# handle N`); 0 for the
        /// policy.
        handle: u64,
        /// The rule as `nft list ruleset` prints it; `policy accept` for the policy.
        rule: String,
        /// The element of a named set or map the rule matched
        /// (`172.30.0.41 . tcp . 80 : goto service-…`).
        element: Option<String>,
        /// The Kubernetes object behind the rule, from its chain, element or comment
        /// (`svc/ns1/svc1:p80`).
        origin: Option<String>,
    },
    /// NAT rewrote the packet (decided here, or replayed from conntrack).
    Nat {
        /// The hook.
        hook: Hook,
    },
    /// conntrack made or used an entry.
    Conntrack {
        /// The hook.
        hook: Hook,
    },
    /// A `LOG` rule wrote a kernel log line.
    Log {
        /// The hook.
        hook: Hook,
    },
    /// A NetworkPolicy allowed a new connection at a pod's host-side interface (a denial is
    /// a [`HopKind::Drop`] naming the policies).
    Policy {
        /// `ingress` or `egress`.
        direction: &'static str,
        /// The policy and its rule's field path: `netpol/NS/NAME`.
        origin: String,
    },
    /// The packet was dropped, with a stable reason code (`no-route`, `rule`, …).
    Drop {
        /// The reason code.
        reason: &'static str,
    },
}

impl HopKind {
    /// The kind as the trace's JSON names it: `tx`, `rx`, `ignore`, `bridge`, `fdb`, `arp`,
    /// `neigh`, `route`, `deliver`, `rule`, `nat`, `conntrack`, `log`, `policy`, `drop`.
    pub fn action(&self) -> &'static str {
        match self {
            HopKind::Tx => "tx",
            HopKind::Rx => "rx",
            HopKind::Ignore => "ignore",
            HopKind::Bridge => "bridge",
            HopKind::Fdb => "fdb",
            HopKind::Arp => "arp",
            HopKind::Neigh => "neigh",
            HopKind::Route => "route",
            HopKind::Deliver => "deliver",
            HopKind::Rule { .. } | HopKind::NftRule { .. } => "rule",
            HopKind::Nat { .. } => "nat",
            HopKind::Conntrack { .. } => "conntrack",
            HopKind::Log { .. } => "log",
            HopKind::Policy { .. } => "policy",
            HopKind::Drop { .. } => "drop",
        }
    }

    /// The netfilter hook of a rule, NAT, conntrack or log hop.
    pub fn hook(&self) -> Option<Hook> {
        match self {
            HopKind::Rule { hook, .. }
            | HopKind::NftRule { hook, .. }
            | HopKind::Nat { hook }
            | HopKind::Conntrack { hook }
            | HopKind::Log { hook } => Some(*hook),
            _ => None,
        }
    }

    /// The netfilter table of a rule hop (`nat` for a NAT hop; `ip kube-proxy` for an
    /// nf_tables table).
    pub fn table(&self) -> Option<&str> {
        match self {
            HopKind::Rule { table, .. } => Some(table),
            HopKind::NftRule { table, .. } => Some(table),
            HopKind::Nat { .. } => Some("nat"),
            _ => None,
        }
    }

    /// The chain of a rule hop.
    pub fn chain(&self) -> Option<&str> {
        match self {
            HopKind::Rule { chain, .. } | HopKind::NftRule { chain, .. } => Some(chain),
            _ => None,
        }
    }

    /// The rule of a rule hop, as written.
    pub fn rule(&self) -> Option<&str> {
        match self {
            HopKind::Rule { rule, .. } | HopKind::NftRule { rule, .. } => Some(rule),
            _ => None,
        }
    }

    /// The Kubernetes object a rule hop's rule came from, or the policy of a policy hop.
    pub fn origin(&self) -> Option<&str> {
        match self {
            HopKind::Rule { origin, .. } | HopKind::NftRule { origin, .. } => origin.as_deref(),
            HopKind::Policy { origin, .. } => Some(origin),
            _ => None,
        }
    }

    /// The reason code of a drop.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            HopKind::Drop { reason } => Some(reason),
            _ => None,
        }
    }
}

/// One step of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// What happened.
    pub kind: HopKind,
    /// Human explanation.
    pub detail: String,
    /// Headers before.
    pub before: Option<PacketView>,
    /// Headers after (rewrites).
    pub after: Option<PacketView>,
}

/// The JSON form of a hop (schema [`SCHEMA_VERSION`]): the kind flattened into `action`,
/// `hook`, `table`, `chain`, `rule`, `origin` and `reason`.
impl Serialize for Hop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let k = &self.kind;
        let mut st = s.serialize_struct("Hop", 16)?;
        st.serialize_field("index", &self.index)?;
        st.serialize_field("packet", &self.packet)?;
        st.serialize_field("direction", &self.direction)?;
        st.serialize_field("node", &self.node)?;
        st.serialize_field("netns", &self.netns)?;
        st.serialize_field("device", &self.device)?;
        st.serialize_field("action", k.action())?;
        st.serialize_field("hook", &k.hook().map(|h| h.to_string()))?;
        st.serialize_field("table", &k.table())?;
        st.serialize_field("chain", &k.chain())?;
        st.serialize_field("rule", &k.rule())?;
        st.serialize_field("origin", &k.origin())?;
        st.serialize_field("reason", &k.reason())?;
        st.serialize_field("detail", &self.detail)?;
        st.serialize_field("before", &self.before)?;
        st.serialize_field("after", &self.after)?;
        st.end()
    }
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
    /// The protocol the flow ran with.
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
    /// HTTP flows: who produced that status: the backend (`pod/NS/NAME`), or an
    /// intermediary that answered by itself (`lb/default/shop`, an ingress controller's pod,
    /// a node's health-check server), in which case the request was not delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_from: Option<String>,
    /// With [`TraceOptions::rounds`] above one: how many exchanges were answered (each
    /// with exactly the bytes sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
    /// What podnet could not model about this flow that may change its outcome in the real
    /// cluster (a policy it does not enforce that selects a pod on the path), one sentence
    /// each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    /// the JSON form; see [`pcap`]).
    #[serde(skip)]
    pub frames: Vec<pcap::CapturedFrame>,
}

/// Which packet of a flow a frame carries, and which way it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) dir: Dir,
    pub(crate) pkt: u32,
}
