//! Host stacks: the smoltcp `Interface`s and sockets that pods, nodes and internet hosts run,
//! and the small applications on them (echo and HTTP servers, one-shot clients).
//!
//! A pod netns gets an Ethernet interface on `eth0` and an IP-medium interface on `lo`
//! (`127.0.0.1/8`) with their own socket sets, so containers reach each other over localhost
//! while pod traffic leaves by `eth0`. A node's root netns gets one IP-medium interface that
//! sees only what netfilter's INPUT hook lets through and whose output goes through OUTPUT
//! and POSTROUTING: forwarding stays in podnet's own router code, since smoltcp is a host
//! stack and never forwards.
//!
//! Servers: every bound TCP port is served by a pool of listening sockets (smoltcp has no
//! backlog), re-armed when a connection ends; data is echoed back, an HTTP request gets
//! `200 OK` with the owner's name as body and the connection is closed. Every bound UDP port
//! echoes datagrams to their sender.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    Ipv4Address,
};

use podnet_netfilter::Proto;

/// A frame queue standing in for a NIC: podnet pushes received frames in and takes
/// transmitted frames out after each poll.
#[derive(Debug)]
pub(crate) struct QueueDevice {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: Vec<Vec<u8>>,
    /// Buffers of frames the stack has read, emptied, for the frames it sends next: the two
    /// ends of a conversation hand their buffers back and forth, and a frame allocates none.
    spare: RefCell<Vec<Vec<u8>>>,
    medium: Medium,
}

/// How many emptied frame buffers a device keeps.
const SPARE_FRAMES: usize = 8;

impl QueueDevice {
    fn new(medium: Medium) -> QueueDevice {
        QueueDevice { rx: VecDeque::new(), tx: Vec::new(), spare: RefCell::default(), medium }
    }
}

pub(crate) struct QRx<'a>(Vec<u8>, &'a RefCell<Vec<Vec<u8>>>);
pub(crate) struct QTx<'a>(&'a mut Vec<Vec<u8>>, &'a RefCell<Vec<Vec<u8>>>);

impl phy::RxToken for QRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let QRx(mut frame, spare) = self;
        // smoltcp may send its answer from inside `f`, through the other token.
        let r = f(&frame);
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_FRAMES {
            frame.clear();
            spare.push(frame);
        }
        r
    }
}

impl phy::TxToken for QTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.1.borrow_mut().pop().unwrap_or_default();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = QRx<'a>;
    type TxToken<'a> = QTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(QRx<'_>, QTx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((QRx(frame, &self.spare), QTx(&mut self.tx, &self.spare)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<QTx<'_>> {
        Some(QTx(&mut self.tx, &self.spare))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = self.medium;
        // 1500-byte MTU; on Ethernet smoltcp counts the 14-byte header in it.
        caps.max_transmission_unit = if self.medium == Medium::Ethernet { 1514 } else { 1500 };
        // Verify every checksum on receipt, so a NAT checksum mistake is caught here.
        let mut cs = ChecksumCapabilities::default();
        cs.ipv4 = Checksum::Both;
        cs.tcp = Checksum::Both;
        cs.udp = Checksum::Both;
        cs.icmpv4 = Checksum::Both;
        caps.checksum = cs;
        caps
    }
}

/// Which interface of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// eth0 (pods, hosts) or the IP-medium interface of a node.
    Main,
    /// The pod's loopback.
    Lo,
}

pub(crate) struct Iface {
    pub(crate) iface: Interface,
    pub(crate) dev: QueueDevice,
    pub(crate) sockets: SocketSet<'static>,
    /// What `Interface::poll_at` last answered, kept while nothing has changed the
    /// interface's sockets since (a poll, or an application handed them by [`pick`]); `None`
    /// when it must be asked again.
    due: Option<Option<Instant>>,
}

impl Iface {
    fn new(iface: Interface, dev: QueueDevice) -> Iface {
        Iface { iface, dev, sockets: SocketSet::new(vec![]), due: None }
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.due = None;
    }

    /// The first poll of a turn, before the applications run: takes in what the device
    /// received and sends what the sockets then have to send (a TCP segment's answer: an ACK,
    /// a SYN-ACK). When every frame waiting is a UDP datagram, only takes them in: a datagram
    /// gives a socket nothing to send (smoltcp's port-unreachable answer goes out as it is
    /// taken in), so the walk over every socket for egress is left to the poll after the
    /// applications, which makes it in any case.
    fn poll_received(&mut self, now: Instant) {
        let medium = self.dev.medium;
        if self.dev.rx.is_empty() || !self.dev.rx.iter().all(|f| carries_udp(f, medium)) {
            return self.poll(now);
        }
        self.iface.poll_maintenance(now);
        while self.iface.poll_ingress_single(now, &mut self.dev, &mut self.sockets)
            != PollIngressSingleResult::None
        {}
        self.due = None;
    }

    /// [`Iface::poll`], unless it has nothing to do: no frame waits and no socket is due
    /// (`Interface::poll_at`, smoltcp's own answer to when to poll next). A socket's answer
    /// is a time its state gives, so it holds until a poll or an application changes that
    /// state: it is asked once, not at every turn of an idle interface (a pod's `lo`).
    fn poll_if_due(&mut self, now: Instant) {
        let due = match self.due {
            Some(due) => due,
            None => *self.due.insert(self.iface.poll_at(now, &self.sockets)),
        };
        if !self.dev.rx.is_empty() || due.is_some_and(|t| t <= now) {
            self.poll(now);
        }
    }
}

#[derive(Debug)]
struct TcpServer {
    handle: SocketHandle,
    side: Side,
    port: u16,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct UdpServer {
    handle: SocketHandle,
    side: Side,
}

/// What a client sends and expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// Raw bytes echoed back.
    Echo(Vec<u8>),
    /// An HTTP request; the response ends when the server closes.
    Http(Vec<u8>),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Echo(b) | Payload::Http(b) => b,
        }
    }
}

/// Progress of a client.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) side: Side,
    pub(crate) proto: Proto,
    pub(crate) handle: SocketHandle,
    pub(crate) remote: IpEndpoint,
    pub(crate) local_port: u16,
    pub(crate) payload: Payload,
    pub(crate) sent: bool,
    pub(crate) response: Vec<u8>,
    /// Request/answer exchanges to make over this one socket (echo payloads only).
    pub(crate) rounds: u32,
    /// Exchanges answered so far, each with exactly the bytes sent.
    pub(crate) answered: u32,
    pub(crate) established: bool,
    pub(crate) done: bool,
    pub(crate) ok: bool,
    /// An ICMP error or RST ended the attempt (connection refused / unreachable).
    pub(crate) refused: bool,
}

/// A host stack and its applications.
pub(crate) struct Stack {
    pub(crate) main: Iface,
    pub(crate) lo: Option<Iface>,
    name: String,
    tcp_servers: Vec<TcpServer>,
    /// Every TCP server's socket was listening with nothing buffered when the applications
    /// last looked, and no frame but a UDP datagram has been taken in since. A listening
    /// socket changes only when a segment arrives (it has no timer), so the servers' walk
    /// would find nothing to do, and is not made.
    listeners_idle: bool,
    udp_servers: Vec<UdpServer>,
    pub(crate) clients: Vec<Client>,
    /// IP packets that crossed `lo` since the last drain (for the trace).
    pub(crate) lo_log: Vec<Vec<u8>>,
    /// An L7 proxy (the ALB), if this stack runs one.
    pub(crate) l7: Option<L7App>,
    /// HTTP servers with a fixed answer (kube-proxy's health checks): port → response.
    pub(crate) health: BTreeMap<u16, super::HealthServer>,
    /// Answers this stack's HTTP intermediaries gave by themselves, oldest first; the run
    /// that caused them takes them ([`Stack::take_own_answers`]).
    pub(crate) own_answers: Vec<super::l7::OwnAnswer>,
    /// Client ports of finished TCP connections still in TIME_WAIT, and until when.
    timewait: Vec<(u16, Instant)>,
    /// Where the UDP echo servers read a datagram before sending it back.
    udp_scratch: Vec<u8>,
}

/// How long smoltcp keeps a socket in TIME_WAIT (its `CLOSE_DELAY`).
const TIME_WAIT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(10);

/// An L7 HTTP proxy: terminates client connections on `port`, routes each request by its
/// listener rules, opens its own connection to a target and relays the response.
pub(crate) struct L7App {
    port: u16,
    matching: super::l7::Matching,
    rules: Vec<super::l7::AlbRule>,
    /// The default backend ([`super::l7::Matching::Kubernetes`]; the ALB keeps its
    /// default as a last listener rule).
    default: Option<super::l7::AlbRule>,
    conns: Vec<L7Conn>,
    next_port: u16,
    rr: usize,
}

#[derive(Debug)]
enum Stage {
    Reading,
    Connecting(Vec<u8>),
    Relaying,
    Closing,
}

#[derive(Debug)]
struct L7Conn {
    front: SocketHandle,
    back: Option<SocketHandle>,
    /// The target the back connection goes to, and the rule that chose it.
    target: Option<((Ipv4Address, u16), String)>,
    buf: Vec<u8>,
    stage: Stage,
}

const LISTEN_POOL: usize = 4;

impl Stack {
    /// An Ethernet stack (pod or host) with `addr/prefix` and a default gateway.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ethernet(
        name: &str,
        mac: EthernetAddress,
        addr: Ipv4Address,
        prefix: u8,
        gateway: Option<Ipv4Address>,
        with_lo: bool,
        seed: u64,
        now: Instant,
    ) -> Stack {
        let mut dev = QueueDevice::new(Medium::Ethernet);
        let mut cfg = Config::new(HardwareAddress::Ethernet(mac));
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), prefix));
        });
        if let Some(gw) = gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        let main = Iface::new(iface, dev);
        let lo = with_lo.then(|| Stack::loopback(seed ^ 0x5555, now, &[addr]));
        Stack {
            main,
            lo,
            name: name.to_string(),
            tcp_servers: Vec::new(),
            listeners_idle: false,
            udp_servers: Vec::new(),
            clients: Vec::new(),
            lo_log: Vec::new(),
            l7: None,
            health: BTreeMap::new(),
            own_answers: Vec::new(),
            timewait: Vec::new(),
            udp_scratch: Vec::new(),
        }
    }

    /// An IP-medium stack for a node's root namespace, holding all of the node's addresses.
    pub(crate) fn ip(
        name: &str,
        addrs: &[(Ipv4Address, u8)],
        with_lo: bool,
        seed: u64,
        now: Instant,
    ) -> Stack {
        let mut dev = QueueDevice::new(Medium::Ip);
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| {
            for (addr, p) in addrs {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(*addr), *p));
            }
            // A host without a separate loopback stack (a node) owns 127.0.0.1/8 too, last:
            // a connection to 127.0.0.1 leaves from 127.0.0.1 (the local table's `src`), and
            // every other destination keeps its source.
            if !with_lo {
                let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            }
        });
        // podnet's `ip_rcv` decided the packet is for this host before the stack sees it,
        // so the stack takes every packet it is given, whatever the number of addresses.
        iface.set_any_ip(true);
        // Medium IP has no neighbours: any gateway in a local subnet makes smoltcp emit the
        // packet, and podnet's routing decides where it really goes.
        if let Some((a, _)) = addrs.first() {
            let _ = iface.routes_mut().add_default_ipv4_route(*a);
        }
        let main = Iface::new(iface, dev);
        let own: Vec<Ipv4Address> = addrs.iter().map(|a| a.0).collect();
        let lo = with_lo.then(|| Stack::loopback(seed ^ 0x5555, now, &own));
        Stack {
            main,
            lo,
            name: name.to_string(),
            tcp_servers: Vec::new(),
            listeners_idle: false,
            udp_servers: Vec::new(),
            clients: Vec::new(),
            lo_log: Vec::new(),
            l7: None,
            health: BTreeMap::new(),
            own_answers: Vec::new(),
            timewait: Vec::new(),
            udp_scratch: Vec::new(),
        }
    }

    /// The stack's `lo`: `127.0.0.1/8`, and the host's own addresses as /32s, since a
    /// packet a host sends to one of its own addresses goes over `lo` (the `local` table).
    fn loopback(seed: u64, now: Instant, own: &[Ipv4Address]) -> Iface {
        let mut dev = QueueDevice::new(Medium::Ip);
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            for o in own {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(*o), 32));
            }
        });
        Iface::new(iface, dev)
    }

    fn side(&mut self, side: Side) -> &mut Iface {
        pick(&mut self.main, &mut self.lo, side)
    }

    /// Serves `proto`/`port` on every interface.
    pub(crate) fn serve(&mut self, proto: Proto, port: u16) {
        let sides: Vec<Side> =
            if self.lo.is_some() { vec![Side::Main, Side::Lo] } else { vec![Side::Main] };
        for side in sides {
            let iface = pick(&mut self.main, &mut self.lo, side);
            if proto == Proto::TCP {
                for _ in 0..LISTEN_POOL {
                    let mut s = tcp::Socket::new(
                        tcp::SocketBuffer::new(vec![0; 8192]),
                        tcp::SocketBuffer::new(vec![0; 8192]),
                    );
                    let _ = s.listen(port);
                    let handle = iface.sockets.add(s);
                    self.tcp_servers.push(TcpServer { handle, side, port, buf: Vec::new() });
                    self.listeners_idle = false;
                }
            } else if proto == Proto::UDP {
                let mut s = udp::Socket::new(
                    udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
                    udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
                );
                let _ = s.bind(port);
                let handle = iface.sockets.add(s);
                self.udp_servers.push(UdpServer { handle, side });
            }
        }
    }

    /// Runs an L7 proxy on `port` with these rules (ALB: already ordered).
    pub(crate) fn serve_l7(
        &mut self,
        port: u16,
        matching: super::l7::Matching,
        rules: Vec<super::l7::AlbRule>,
        default: Option<super::l7::AlbRule>,
    ) {
        let mut conns = Vec::new();
        for _ in 0..LISTEN_POOL {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 16384]),
                tcp::SocketBuffer::new(vec![0; 16384]),
            );
            let _ = s.listen(port);
            let front = self.main.sockets.add(s);
            conns.push(L7Conn {
                front,
                back: None,
                target: None,
                buf: Vec::new(),
                stage: Stage::Reading,
            });
        }
        self.l7 = Some(L7App { port, matching, rules, default, conns, next_port: 40000, rr: 0 });
    }

    /// Replaces the L7 proxy's rules (an in-cluster controller after an endpoint change).
    pub(crate) fn set_l7_rules(
        &mut self,
        rules: Vec<super::l7::AlbRule>,
        default: Option<super::l7::AlbRule>,
    ) {
        if let Some(app) = self.l7.as_mut() {
            app.rules = rules;
            app.default = default;
        }
    }

    /// The answers HTTP intermediaries here gave by themselves since the last call.
    pub(crate) fn take_own_answers(&mut self) -> Vec<super::l7::OwnAnswer> {
        std::mem::take(&mut self.own_answers)
    }

    fn run_l7(&mut self) {
        let Some(app) = self.l7.as_mut() else { return };
        let said = &mut self.own_answers;
        let sockets = &mut self.main.sockets;
        let cx = self.main.iface.context();
        for c in &mut app.conns {
            match std::mem::replace(&mut c.stage, Stage::Closing) {
                Stage::Reading => {
                    let f = sockets.get_mut::<tcp::Socket>(c.front);
                    drain_tcp(f, &mut c.buf);
                    let client = match f.remote_endpoint().map(|e| e.addr) {
                        Some(IpAddress::Ipv4(a)) => a,
                        _ => Ipv4Address::UNSPECIFIED,
                    };
                    c.stage = if c.buf.is_empty() {
                        Stage::Reading
                    } else {
                        match super::l7::parse_request(&c.buf) {
                            super::l7::Parsed::Partial => Stage::Reading,
                            super::l7::Parsed::Malformed(why) => {
                                said.push(super::l7::OwnAnswer {
                                    status: 400,
                                    reason: "http_bad_request",
                                    text: format!(
                                        "{} could not read the request: {why}",
                                        app.matching.what()
                                    ),
                                });
                                let _ = f.send_slice(&status(app.matching, 400, "Bad Request"));
                                f.close();
                                Stage::Closing
                            }
                            super::l7::Parsed::Complete(req) => {
                                let picked = match app.matching {
                                    super::l7::Matching::Alb => {
                                        super::l7::route(&app.rules, req.host.as_deref(), &req.path)
                                    }
                                    super::l7::Matching::Kubernetes => super::l7::route_kubernetes(
                                        &app.rules,
                                        req.host.as_deref(),
                                        &req.path,
                                    )
                                    .or(app.default.as_ref()),
                                };
                                match picked {
                                    None => {
                                        said.push(super::l7::OwnAnswer {
                                            status: 404,
                                            reason: "http_no_route",
                                            text: super::l7::no_rule_text(
                                                app.matching,
                                                &app.rules,
                                                req.host.as_deref(),
                                                &req.path,
                                            ),
                                        });
                                        let _ =
                                            f.send_slice(&status(app.matching, 404, "Not Found"));
                                        f.close();
                                        Stage::Closing
                                    }
                                    Some(r) if r.targets.is_empty() => {
                                        said.push(super::l7::OwnAnswer {
                                            status: 503,
                                            reason: "http_no_healthy_backend",
                                            text: format!(
                                                "{} matched rule {}, which has no healthy target",
                                                app.matching.what(),
                                                super::l7::describe_rule(r)
                                            ),
                                        });
                                        let _ = f.send_slice(&status(
                                            app.matching,
                                            503,
                                            "Service Temporarily Unavailable",
                                        ));
                                        f.close();
                                        Stage::Closing
                                    }
                                    Some(r) => {
                                        let (ip, port) = r.targets[app.rr % r.targets.len()];
                                        app.rr += 1;
                                        let mut b = tcp::Socket::new(
                                            tcp::SocketBuffer::new(vec![0; 16384]),
                                            tcp::SocketBuffer::new(vec![0; 16384]),
                                        );
                                        b.set_timeout(Some(smoltcp::time::Duration::from_secs(10)));
                                        let local = app.next_port;
                                        app.next_port = if app.next_port >= 60999 {
                                            32768
                                        } else {
                                            app.next_port + 1
                                        };
                                        match b.connect(cx, (IpAddress::Ipv4(ip), port), local) {
                                            Ok(()) => {
                                                c.back = Some(sockets.add(b));
                                                c.target =
                                                    Some(((ip, port), super::l7::describe_rule(r)));
                                                Stage::Connecting(super::l7::forwarded(
                                                    &req, client, app.port,
                                                ))
                                            }
                                            Err(e) => {
                                                said.push(super::l7::OwnAnswer {
                                                    status: 502,
                                                    reason: "http_bad_gateway",
                                                    text: format!(
                                                        "{} could not connect to target {ip}:{port} of rule {}: {e}",
                                                        app.matching.what(),
                                                        super::l7::describe_rule(r)
                                                    ),
                                                });
                                                let f = sockets.get_mut::<tcp::Socket>(c.front);
                                                let _ = f.send_slice(&status(
                                                    app.matching,
                                                    502,
                                                    "Bad Gateway",
                                                ));
                                                f.close();
                                                Stage::Closing
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    };
                }
                Stage::Connecting(req) => {
                    let back = c.back.expect("connecting has a back socket");
                    let b = sockets.get_mut::<tcp::Socket>(back);
                    c.stage = match b.state() {
                        tcp::State::Established => {
                            let _ = b.send_slice(&req);
                            Stage::Relaying
                        }
                        tcp::State::Closed | tcp::State::TimeWait => {
                            let text = match &c.target {
                                Some(((ip, port), rule)) => format!(
                                    "{} could not connect to target {ip}:{port} of rule {rule} (refused or timed out)",
                                    app.matching.what()
                                ),
                                None => format!(
                                    "{} could not connect to its target",
                                    app.matching.what()
                                ),
                            };
                            said.push(super::l7::OwnAnswer {
                                status: 502,
                                reason: "http_bad_gateway",
                                text,
                            });
                            let f = sockets.get_mut::<tcp::Socket>(c.front);
                            let _ = f.send_slice(&status(app.matching, 502, "Bad Gateway"));
                            f.close();
                            Stage::Closing
                        }
                        _ => Stage::Connecting(req),
                    };
                }
                Stage::Relaying => {
                    let back = c.back.expect("relaying has a back socket");
                    let mut data = Vec::new();
                    let b = sockets.get_mut::<tcp::Socket>(back);
                    drain_tcp(b, &mut data);
                    let finished = !b.may_recv();
                    if finished {
                        b.close();
                    }
                    let f = sockets.get_mut::<tcp::Socket>(c.front);
                    if !data.is_empty() {
                        let _ = f.send_slice(&data);
                    }
                    c.stage = if finished {
                        f.close();
                        Stage::Closing
                    } else {
                        Stage::Relaying
                    };
                }
                Stage::Closing => {
                    let f = sockets.get_mut::<tcp::Socket>(c.front);
                    if f.state() == tcp::State::CloseWait {
                        f.close();
                    }
                    // A front connection in TIME_WAIT no longer holds the listener: the
                    // kernel's listening socket keeps accepting while it waits.
                    let front_done = matches!(f.state(), tcp::State::Closed | tcp::State::TimeWait);
                    let back_done = c.back.is_none_or(|b| {
                        matches!(
                            sockets.get::<tcp::Socket>(b).state(),
                            tcp::State::Closed | tcp::State::TimeWait
                        )
                    });
                    if front_done && back_done {
                        if let Some(b) = c.back.take() {
                            sockets.remove(b);
                        }
                        c.buf.clear();
                        let _ = sockets.get_mut::<tcp::Socket>(c.front).listen(app.port);
                        c.stage = Stage::Reading;
                    } else {
                        c.stage = Stage::Closing;
                    }
                }
            }
        }
    }

    /// Starts a client that makes `rounds` request/answer exchanges over one socket (one
    /// for HTTP); returns its index.
    pub(crate) fn start_client(
        &mut self,
        side: Side,
        proto: Proto,
        remote: IpEndpoint,
        local_port: u16,
        payload: Payload,
        rounds: u32,
    ) -> Result<usize, String> {
        let iface = self.side(side);
        let handle = match proto {
            Proto::TCP => {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 16384]),
                    tcp::SocketBuffer::new(vec![0; 16384]),
                );
                s.connect(iface.iface.context(), remote, local_port)
                    .map_err(|e| format!("connect: {e}"))?;
                iface.sockets.add(s)
            }
            Proto::UDP => {
                // One datagram out, its echo (or an MTU's worth) back: buffers sized to that,
                // so a flow does not zero kilobytes it never uses.
                let n = payload.bytes().len().max(1);
                let mut s = udp::Socket::new(
                    udp::PacketBuffer::new(
                        vec![udp::PacketMetadata::EMPTY; 2],
                        vec![0; n.max(1500)],
                    ),
                    udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 2], vec![0; n]),
                );
                s.bind(local_port).map_err(|e| format!("bind: {e}"))?;
                iface.sockets.add(s)
            }
            _ => {
                let n = payload.bytes().len() + 8;
                let mut s = icmp::Socket::new(
                    icmp::PacketBuffer::new(
                        vec![icmp::PacketMetadata::EMPTY; 4],
                        vec![0; n.max(1500)],
                    ),
                    icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 2], vec![0; n]),
                );
                s.bind(icmp::Endpoint::Ident(local_port)).map_err(|e| format!("bind: {e}"))?;
                iface.sockets.add(s)
            }
        };
        let http = matches!(payload, Payload::Http(_));
        self.clients.push(Client {
            side,
            proto,
            handle,
            remote,
            local_port,
            payload,
            sent: false,
            response: Vec::new(),
            rounds: if http { 1 } else { rounds.max(1) },
            answered: 0,
            established: false,
            done: false,
            ok: false,
            refused: false,
        });
        Ok(self.clients.len() - 1)
    }

    /// Forgets finished clients: UDP and ICMP sockets at once, TCP sockets once closed. A
    /// finished TCP client in TIME_WAIT becomes a timewait record that keeps its port for
    /// TIME_WAIT's length, as the kernel keeps a small `inet_timewait_sock` rather than the
    /// socket: a full smoltcp socket would be polled on every packet for its 10 s.
    pub(crate) fn gc_clients(&mut self, now: Instant) {
        self.timewait.retain(|(_, until)| *until > now);
        let mut keep = Vec::new();
        for c in std::mem::take(&mut self.clients) {
            let iface = pick(&mut self.main, &mut self.lo, c.side);
            let state = match c.proto {
                Proto::TCP => Some(iface.sockets.get::<tcp::Socket>(c.handle).state()),
                _ => None,
            };
            if state == Some(tcp::State::TimeWait) && c.done {
                iface.sockets.remove(c.handle);
                self.timewait.push((c.local_port, now + TIME_WAIT));
            } else if state == Some(tcp::State::Closed) || (c.done && c.proto != Proto::TCP) {
                iface.sockets.remove(c.handle);
            } else {
                keep.push(c);
            }
        }
        self.clients = keep;
    }

    /// Marks ports as held by TIME_WAIT until `until` (tests of port exhaustion).
    #[cfg(test)]
    pub(crate) fn hold_ports(&mut self, ports: impl IntoIterator<Item = u16>, until: Instant) {
        self.timewait.extend(ports.into_iter().map(|p| (p, until)));
    }

    /// Local ports held by live client sockets and by connections in TIME_WAIT.
    pub(crate) fn client_ports(&self) -> Vec<u16> {
        self.clients.iter().map(|c| c.local_port).chain(self.timewait.iter().map(|t| t.0)).collect()
    }

    /// Ends a client attempt because an ICMP error or similar came back.
    pub(crate) fn refuse_client(&mut self, idx: usize) {
        let Some(c) = self.clients.get_mut(idx) else { return };
        let (side, proto, handle) = (c.side, c.proto, c.handle);
        c.refused = true;
        c.done = true;
        if proto == Proto::TCP {
            self.side(side).sockets.get_mut::<tcp::Socket>(handle).abort();
        }
    }

    /// Feeds a received frame (or IP packet, for IP-medium stacks) to an interface.
    pub(crate) fn ingest(&mut self, side: Side, frame: Vec<u8>) {
        let iface = self.side(side);
        let udp = carries_udp(&frame, iface.dev.medium);
        iface.dev.rx.push_back(frame);
        if !udp {
            self.listeners_idle = false;
        }
    }

    /// Runs the stack and its applications at `now`; adds what the main interface
    /// transmitted to `out`. Loopback traffic stays inside.
    pub(crate) fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        for _ in 0..8 {
            self.main.poll_received(now);
            if let Some(lo) = self.lo.as_mut() {
                lo.poll_if_due(now);
            }
            self.run_apps(now);
            self.main.poll(now);
            let mut looped = false;
            if let Some(lo) = self.lo.as_mut() {
                lo.poll_if_due(now);
                let frames: Vec<Vec<u8>> = lo.dev.tx.drain(..).collect();
                looped = !frames.is_empty();
                if looped {
                    self.listeners_idle = false;
                }
                self.lo_log.extend(frames.iter().cloned());
                lo.dev.rx.extend(frames);
            }
            if !looped && self.main.dev.rx.is_empty() {
                break;
            }
        }
        out.append(&mut self.main.dev.tx);
    }

    /// When the stack next needs polling.
    pub(crate) fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let a = self.main.iface.poll_at(now, &self.main.sockets);
        let b = self.lo.as_mut().and_then(|l| l.iface.poll_at(now, &l.sockets));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn run_apps(&mut self, now: Instant) {
        self.run_l7();
        if !self.listeners_idle {
            self.listeners_idle = self.run_tcp_servers();
        }
        for srv in &self.udp_servers {
            if !peek(&self.main, &self.lo, srv.side)
                .sockets
                .get::<udp::Socket>(srv.handle)
                .can_recv()
            {
                continue;
            }
            let iface = pick(&mut self.main, &mut self.lo, srv.side);
            let s = iface.sockets.get_mut::<udp::Socket>(srv.handle);
            // Echoed through a buffer the stack keeps, as large as the socket's receive
            // buffer (so no datagram is cut short).
            if self.udp_scratch.len() < s.payload_recv_capacity() {
                self.udp_scratch.resize(s.payload_recv_capacity(), 0);
            }
            while let Ok((n, meta)) = s.recv_slice(&mut self.udp_scratch) {
                let mut out = udp::UdpMetadata::from(meta.endpoint);
                out.local_address = meta.local_address;
                let _ = s.send_slice(&self.udp_scratch[..n], out);
            }
        }
        let _ = now;
        for c in &mut self.clients {
            if c.done {
                continue;
            }
            let iface = pick(&mut self.main, &mut self.lo, c.side);
            match c.proto {
                Proto::TCP => {
                    let s = iface.sockets.get_mut::<tcp::Socket>(c.handle);
                    if s.state() == tcp::State::Established {
                        c.established = true;
                    }
                    if c.established && !c.sent && s.can_send() {
                        let _ = s.send_slice(c.payload.bytes());
                        c.sent = true;
                    }
                    drain_tcp(s, &mut c.response);
                    let mut got_all = match &c.payload {
                        Payload::Echo(b) => c.response.len() >= b.len(),
                        Payload::Http(_) => !s.may_recv() && !c.response.is_empty(),
                    };
                    if let Payload::Echo(b) = &c.payload
                        && got_all
                        && c.sent
                    {
                        // One exchange answered: the next goes out on the same connection.
                        if c.response.get(..b.len()) == Some(&b[..]) {
                            c.answered += 1;
                        }
                        c.response.drain(..b.len());
                        if c.answered < c.rounds && c.response.is_empty() {
                            let _ = s.send_slice(b);
                            got_all = false;
                        }
                    }
                    if c.sent && got_all && s.is_open() && s.state() != tcp::State::FinWait1 {
                        s.close();
                    }
                    match s.state() {
                        tcp::State::Closed | tcp::State::TimeWait => {
                            c.done = true;
                            c.ok = c.sent
                                && match c.payload {
                                    Payload::Echo(_) => c.answered == c.rounds,
                                    Payload::Http(_) => got_all,
                                };
                            if !c.established {
                                c.refused = true;
                            }
                        }
                        _ => {}
                    }
                }
                Proto::UDP => {
                    let s = iface.sockets.get_mut::<udp::Socket>(c.handle);
                    if !c.sent && s.can_send() {
                        let _ = s.send_slice(c.payload.bytes(), c.remote);
                        c.sent = true;
                    }
                    while let Ok((data, _meta)) = s.recv() {
                        let echoed = data == c.payload.bytes();
                        c.answered += u32::from(echoed);
                        if !echoed || c.answered == c.rounds {
                            c.response = data.to_vec();
                            c.done = true;
                            c.ok = echoed;
                            break;
                        }
                        // The next datagram of the flow.
                        let _ = s.send_slice(c.payload.bytes(), c.remote);
                    }
                }
                _ => {
                    let s = iface.sockets.get_mut::<icmp::Socket>(c.handle);
                    if let Ok((data, _from)) = s.recv()
                        && let Ok(p) = Icmpv4Packet::new_checked(data)
                        && let Ok(Icmpv4Repr::EchoReply { .. }) =
                            Icmpv4Repr::parse(&p, &ChecksumCapabilities::default())
                    {
                        c.answered += 1;
                        if c.answered == c.rounds {
                            c.done = true;
                            c.ok = true;
                            continue;
                        }
                        // `ping -c`: the next echo request, its sequence number one up.
                        c.sent = false;
                    }
                    if !c.sent && s.can_send() {
                        let repr = Icmpv4Repr::EchoRequest {
                            ident: local_ident(c),
                            seq_no: (c.answered + 1) as u16,
                            data: c.payload.bytes(),
                        };
                        if let Ok(buf) = s.send(repr.buffer_len(), c.remote.addr) {
                            let mut pkt = Icmpv4Packet::new_unchecked(buf);
                            repr.emit(&mut pkt, &ChecksumCapabilities::default());
                            c.sent = true;
                        }
                    }
                }
            }
        }
    }

    /// The TCP servers' turn: takes in what their connections received, answers it, closes
    /// what their peers closed and listens again on a closed socket. Returns whether every
    /// server's socket is now listening with nothing buffered ([`Stack`]'s `listeners_idle`).
    fn run_tcp_servers(&mut self) -> bool {
        let mut idle = true;
        for i in 0..self.tcp_servers.len() {
            let (side, handle, port) =
                (self.tcp_servers[i].side, self.tcp_servers[i].handle, self.tcp_servers[i].port);
            // A listener with nothing received, nothing to answer and no close to make is
            // left alone (and its interface keeps its answer to when to poll).
            let s = peek(&self.main, &self.lo, side).sockets.get::<tcp::Socket>(handle);
            let closing = matches!(s.state(), tcp::State::CloseWait | tcp::State::Closed);
            if !s.can_recv() && self.tcp_servers[i].buf.is_empty() && !closing {
                idle &= s.state() == tcp::State::Listen;
                continue;
            }
            let iface = pick(&mut self.main, &mut self.lo, side);
            let s = iface.sockets.get_mut::<tcp::Socket>(handle);
            let srv = &mut self.tcp_servers[i];
            drain_tcp(s, &mut srv.buf);
            if !srv.buf.is_empty() && s.can_send() {
                if let Some(server) = self.health.get(&port) {
                    // Go's net/http: a complete request gets the handler's answer, bytes
                    // that are not HTTP get its plain 400.
                    let complete = srv.buf.windows(4).any(|w| w == b"\r\n\r\n");
                    if !looks_like_http(&srv.buf) || complete {
                        let http = looks_like_http(&srv.buf);
                        let out: &[u8] = if http { &server.response } else { GO_BAD_REQUEST };
                        match (&server.unhealthy, http) {
                            (Some(why), true) => self.own_answers.push(super::l7::OwnAnswer {
                                status: 503,
                                reason: "http_no_local_endpoints",
                                text: why.clone(),
                            }),
                            (_, false) => self.own_answers.push(super::l7::OwnAnswer {
                                status: 400,
                                reason: "http_bad_request",
                                text:
                                    "kube-proxy's health check server got bytes that are not HTTP"
                                        .into(),
                            }),
                            _ => {}
                        }
                        let _ = s.send_slice(out);
                        srv.buf.clear();
                        s.close();
                    }
                } else if looks_like_http(&srv.buf) {
                    if srv.buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let resp = http_response(&srv.buf, &self.name);
                        let _ = s.send_slice(&resp);
                        srv.buf.clear();
                        s.close();
                    }
                } else {
                    let n = s.send_slice(&srv.buf).unwrap_or(0);
                    srv.buf.drain(..n);
                }
            }
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
            if s.state() == tcp::State::Closed {
                srv.buf.clear();
                let _ = s.listen(port);
            }
            idle &= s.state() == tcp::State::Listen && srv.buf.is_empty();
        }
        idle
    }
}

/// Appends everything a TCP socket has received to `out`, straight from its receive
/// buffer (no zeroed scratch buffer per poll).
fn drain_tcp(s: &mut tcp::Socket<'_>, out: &mut Vec<u8>) {
    while s.can_recv() {
        match s.recv(|b| {
            out.extend_from_slice(b);
            (b.len(), b.len())
        }) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn local_ident(c: &Client) -> u16 {
    c.local_port
}

/// Whether a frame of a device of `medium` holds an IPv4 UDP datagram.
fn carries_udp(frame: &[u8], medium: Medium) -> bool {
    let ip = match medium {
        Medium::Ethernet if frame.get(12..14) == Some(&[0x08, 0x00]) => &frame[14..],
        Medium::Ethernet => return false,
        _ => frame,
    };
    ip.first().is_some_and(|b| b >> 4 == 4) && ip.get(9) == Some(&17)
}

/// The interface of `side`, to look at its sockets without changing them.
fn peek<'a>(main: &'a Iface, lo: &'a Option<Iface>, side: Side) -> &'a Iface {
    match (side, lo) {
        (Side::Lo, Some(l)) => l,
        _ => main,
    }
}

/// The interface of `side`, for its sockets: what it last said about when to poll it is
/// forgotten, since its sockets may change.
fn pick<'a>(main: &'a mut Iface, lo: &'a mut Option<Iface>, side: Side) -> &'a mut Iface {
    let iface = match (side, lo) {
        (Side::Lo, Some(l)) => l,
        _ => main,
    };
    iface.due = None;
    iface
}

fn looks_like_http(b: &[u8]) -> bool {
    const METHODS: [&[u8]; 6] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS "];
    METHODS.iter().any(|m| b.starts_with(m))
}

/// A response the L7 hop writes itself, in its controller's style.
fn status(matching: super::l7::Matching, code: u16, reason: &str) -> Vec<u8> {
    match matching {
        super::l7::Matching::Alb => super::l7::status_response(code, reason),
        super::l7::Matching::Kubernetes => super::l7::nginx_status_response(code, reason),
    }
}

/// What Go's `net/http` server answers to bytes that are not an HTTP request.
const GO_BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request";

fn http_response(req: &[u8], name: &str) -> Vec<u8> {
    let body = format!("{name}\n");
    let head = if req.starts_with(b"HEAD ") { String::new() } else { body.clone() };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken, TxToken};

    #[test]
    fn a_read_frame_buffer_carries_the_next_frame_sent() {
        let mut dev = QueueDevice::new(Medium::Ip);
        dev.rx.push_back(vec![7u8; 60]);
        let now = Instant::ZERO;
        let (rx, _tx) = dev.receive(now).expect("a frame waits");
        assert_eq!(rx.consume(|f| f.len()), 60);
        assert_eq!(dev.spare.borrow().len(), 1, "the read buffer is kept");
        let tx = dev.transmit(now).expect("a device can always send");
        // A frame shorter than the last: it starts zeroed, as a fresh buffer would.
        tx.consume(20, |f| {
            assert!(f.iter().all(|&b| b == 0));
            f[0] = 0x45;
        });
        assert_eq!(dev.spare.borrow().len(), 0, "the kept buffer carried the frame");
        assert_eq!(dev.tx.len(), 1);
        assert_eq!((dev.tx[0].len(), dev.tx[0][0]), (20, 0x45));
        // No more than SPARE_FRAMES are kept.
        for _ in 0..SPARE_FRAMES + 3 {
            dev.rx.push_back(vec![1u8; 10]);
            let (rx, _tx) = dev.receive(now).expect("a frame waits");
            rx.consume(|_| ());
        }
        assert_eq!(dev.spare.borrow().len(), SPARE_FRAMES);
    }
}
