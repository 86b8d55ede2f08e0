//! The simulator: runs a flow through the world and says what came of it.
//!
//! A flow is a real exchange between smoltcp stacks: TCP (handshake, one request and its
//! response, close), HTTP (one GET over TCP), UDP (one datagram and its reply) or ICMP (echo
//! request and reply). The client's stack starts it; the [`datapath`](crate::datapath) moves
//! every frame it causes, ARP included, and the [`Recorder`] numbers each as a packet of the
//! trace. Time is virtual: frames move with zero latency, and the clock jumps to the next
//! timer (a retransmission, an ARP timeout) only when nothing is queued. Every loop is
//! bounded: a forwarding loop ends in [`TraceError::Livelock`], never in a hang.
//!
//! [`Sim`] works on borrowed parts (the world, the host stacks, the fabric); a dry run works
//! on copies (the world's and the hosts' `Clone`). This layer knows addresses and namespaces, not Kubernetes names:
//! the façade resolves `svc/…` and `pod/…` into a [`Flow`] first.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};

use podnet_netfilter::Proto;
use podnet_netfilter::{Choices, Rng};

use crate::datapath::{Datapath, Fabric, Guard, reason};
use crate::error::TraceError;
use crate::host::Hosts;
use crate::host::stack::{Payload, Side};
use crate::ids::NetnsId;
use crate::trace::pcap::CapturedFrame;
use crate::trace::{
    Dir, Disposition, FlowProto, Hop, Recorder, SCHEMA_VERSION, Trace, TraceOptions,
};
use crate::world::World;

/// Where a flow starts: the client's namespace, which of its interfaces (`eth0` or `lo`),
/// and its address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source {
    /// The client's namespace.
    pub(crate) ns: NetnsId,
    /// Its interface.
    pub(crate) side: Side,
    /// Its address.
    pub(crate) ip: Ipv4Addr,
}

/// A flow, resolved: who sends, to which address and port, and the names as the user wrote
/// them (for the trace and an HTTP request's `Host:` and path).
#[derive(Clone, Debug)]
pub(crate) struct Flow {
    /// The source as asked.
    pub(crate) from: String,
    /// The destination as asked.
    pub(crate) to: String,
    /// The client.
    pub(crate) src: Source,
    /// The destination address and port (ICMP: port 0).
    pub(crate) dst: (Ipv4Addr, u16),
    /// The protocol: asked for, or implied by the destination.
    pub(crate) proto: FlowProto,
    /// L7 proxies (namespace, listener port): intermediaries, not servers.
    pub(crate) proxies: Vec<(NetnsId, u16)>,
}

/// The simulator at work on borrowed parts.
pub(crate) struct Sim<'a> {
    /// The world.
    pub(crate) w: &'a mut World,
    /// The host stacks.
    pub(crate) hosts: &'a mut Hosts,
    /// The cloud fabric.
    pub(crate) fabric: &'a Fabric,
    /// The policy engine.
    pub(crate) guard: &'a dyn Guard,
}

impl Sim<'_> {
    /// The datapath over these parts.
    pub(crate) fn dp(&mut self) -> Datapath<'_, Hosts> {
        Datapath { w: self.w, hosts: self.hosts, fabric: self.fabric, guard: self.guard }
    }

    /// Runs one flow and records it.
    pub(crate) fn trace(&mut self, flow: &Flow, opts: &TraceOptions) -> Result<Trace, TraceError> {
        let Flow { from, to, src, dst: (dst_ip, dst_port), .. } = flow;
        let fproto = flow.proto;
        let proto = fproto.l4();
        let sport = self.client_port(*src, from, proto, opts.sport)?;
        let payload = payload(opts, fproto, to);
        let remote = IpEndpoint::new(
            IpAddress::Ipv4(*dst_ip),
            if proto == Proto::ICMP { sport } else { *dst_port },
        );
        let client_idx = self
            .hosts
            .stack(self.w, src.ns)
            .start_client(src.side, proto, remote, sport, payload, opts.rounds)
            .map_err(|e| TraceError::BadEndpoint {
                what: "source",
                text: from.clone(),
                hint: format!("the client could not start: {e}"),
            })?;
        let started = self.w.now;
        let rec = Recorder::for_flow(
            opts.record_hops,
            src.ns,
            src.ip,
            sport,
            proto,
            client_idx,
            flow.proxies.clone(),
        );
        let sim = &mut self.w.sim;
        sim.start(rec, Some(src.ns), opts.rounds);
        let budget = match fproto {
            FlowProto::Tcp | FlowProto::Http => Duration::from_secs(130),
            _ => Duration::from_secs(5),
        };
        sim.capture = opts.capture.then(Vec::new);
        let result = self.run_flow(src.ns, client_idx, started + budget);
        let captured = self.w.sim.capture.take().unwrap_or_default();
        // What HTTP intermediaries answered by themselves in this run (every stack that
        // answered was polled, so is in the run's active set).
        let mut own = Vec::new();
        for &ns in self.w.sim.active.iter() {
            if let Some(st) = self.hosts.get_mut(ns) {
                own.extend(st.take_own_answers().into_iter().map(|a| (ns, a)));
            }
        }
        let rec = self.w.sim.finish();
        result?;
        let (client, http_status, answered) = {
            let st = self.hosts.stack(self.w, src.ns);
            let c = &st.clients[client_idx];
            let status = (fproto == FlowProto::Http)
                .then(|| {
                    c.response
                        .get(9..12)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse().ok())
                })
                .flatten();
            ((c.ok, c.refused), status, c.answered)
        };
        // The finished client's socket lingers in TIME_WAIT inside the stack, as it would in
        // the kernel; the trace keeps only the outcome.
        let mut t = self.conclude(flow, fproto, sport, started, rec, client);
        t.http_status = http_status;
        // An intermediary's own answer (the status the client got came from it): the request
        // reached no backend.
        let by_itself =
            own.iter().find(|(_, a)| Some(a.status) == http_status || http_status.is_none());
        match by_itself {
            Some((ns, a)) if client.0 => {
                let who = self.w.owner_name(*ns);
                t.disposition = Disposition::Rejected;
                t.reason = Some(a.reason.to_string());
                t.reason_text = Some(format!("{who}: {}", a.text));
                t.delivered_to = None;
                t.server_saw = None;
                t.http_from = http_status.map(|_| who);
            }
            _ => t.http_from = http_status.and(t.delivered_to.clone()),
        }
        t.answered = (opts.rounds > 1 && fproto != FlowProto::Http).then_some(answered);
        t.frames = captured
            .into_iter()
            .map(|(at, dev, data)| CapturedFrame {
                netns: self.w.netns[self.w.devs[dev.idx()].netns.idx()].name.clone(),
                device: self.w.devs[dev.idx()].name.clone(),
                time_us: at.total_micros() as u64,
                data,
            })
            .collect();
        Ok(t)
    }

    /// The client's source port: `wanted`, or as Linux's `ip_local_port_range` picks one (a
    /// random start, then the next port no live socket or TIME_WAIT holds, as
    /// `__inet_hash_connect` scans); all held is EADDRNOTAVAIL.
    fn client_port(
        &mut self,
        src: Source,
        from: &str,
        proto: Proto,
        wanted: Option<u16>,
    ) -> Result<u16, TraceError> {
        let now = self.w.now;
        let st = self.hosts.stack(self.w, src.ns);
        st.gc_clients(now);
        let busy = st.client_ports();
        if let Some(p) = wanted {
            return Ok(p);
        }
        let busy: std::collections::HashSet<u16> = busy.into_iter().collect();
        let bound = &self.w.netns[src.ns.idx()].ports;
        let start = self.w.rng.range(32768, 60999) as u16;
        let free = |p: u16| !busy.contains(&p) && !bound.contains_key(&(proto, p));
        let range = 60999 - 32768 + 1;
        (0..range)
            .map(|i| 32768 + ((u32::from(start) - 32768 + i) % range) as u16)
            .find(|p| free(*p))
            .ok_or_else(|| TraceError::NoEphemeralPort {
                client: from.to_string(),
                held: busy.len(),
            })
    }

    /// Polls the stacks the run touched and works through the frame queue until the client
    /// is done (and two more turns have let the last frames settle), the deadline passes, or
    /// nothing is left to happen.
    fn run_flow(
        &mut self,
        client_ns: NetnsId,
        client_idx: usize,
        deadline: Instant,
    ) -> Result<(), TraceError> {
        let mut settle = 0;
        for _ in 0..100_000 {
            let active: Vec<NetnsId> = self.w.sim.active.iter().copied().collect();
            for ns in active {
                self.dp().poll_stack(ns);
            }
            if !self.dp().run_queue() {
                return Err(TraceError::Livelock(self.w.sim.events));
            }
            let done = self.hosts.get_mut(client_ns).is_some_and(|s| s.clients[client_idx].done);
            if done {
                settle += 1;
                if settle > 2 {
                    return Ok(());
                }
                continue;
            }
            // Advance to the next timer.
            let now = self.w.now;
            let mut next: Option<Instant> =
                self.w.sim.pending.iter().map(crate::world::Pending::deadline).min();
            let active: Vec<NetnsId> = self.w.sim.active.iter().copied().collect();
            for ns in active {
                if let Some(st) = self.hosts.get_mut(ns)
                    && let Some(t) = st.poll_at(now)
                {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
            let Some(next) = next else { return Ok(()) };
            let next = next.max(now + Duration::from_millis(1));
            if next > deadline {
                self.w.now = deadline;
                self.dp().expire_pending();
                return Ok(());
            }
            self.w.now = next;
            self.dp().expire_pending();
        }
        Err(TraceError::Livelock(self.w.sim.events))
    }

    /// The trace of a finished run: who got the request (and whether anyone listened
    /// there), what each side saw, and the disposition with its reason.
    fn conclude(
        &mut self,
        flow: &Flow,
        proto: FlowProto,
        sport: u16,
        started: Instant,
        rec: Recorder,
        client: (bool, bool),
    ) -> Trace {
        let w = &*self.w;
        let (ok, refused) = client;
        let delivered = rec.server_hit.as_ref().filter(|(ns, _, p, port)| {
            *p == Proto::ICMP || w.netns[ns.idx()].ports.contains_key(&(*p, *port))
        });
        // A port a host-network pod holds in a node's namespace delivers to that pod.
        let mut delivered_to =
            delivered.map(|(ns, _, p, port)| match w.netns[ns.idx()].ports.get(&(*p, *port)) {
                Some(owner) if owner.starts_with("pod/") => {
                    owner.rsplit_once('/').map(|x| x.0.to_string()).unwrap_or_default()
                }
                _ => w.owner_name(*ns),
            });
        let mut server_saw = delivered.map(|(_, saw, ..)| saw.clone());
        // An L7 hop that answered by itself (404, 400, 502) is where the request ended.
        let answered_by_proxy = delivered.is_none() && ok && rec.proxy_hit.is_some();
        if answered_by_proxy {
            let (ns, saw) = rec.proxy_hit.clone().expect("checked");
            delivered_to = Some(w.owner_name(ns));
            server_saw = Some(saw);
        }
        let first_request_drop =
            rec.drops.iter().find(|(t, ..)| t.dir == Dir::Request).or(rec.drops.first());
        let (disposition, reason, reason_text) = if delivered.is_some() || answered_by_proxy {
            (Disposition::Delivered, None, None)
        } else if let Some((with, by_nft)) = rec.reject {
            let text = if by_nft {
                format!("rejected by an nftables reject rule ({})", with.name())
            } else {
                format!("rejected by an iptables REJECT rule (--reject-with {})", with.name())
            };
            (Disposition::Rejected, Some("rule".to_string()), Some(text))
        } else if refused || rec.server_hit.is_some() {
            let text = match (&rec.server_hit, &rec.reply_from) {
                (Some((ns, _, p, port)), _) => {
                    format!("{} has nothing listening on {p}/{port}", w.owner_name(*ns))
                }
                (None, Some(r)) => format!("refused by {r}"),
                _ => "connection refused".into(),
            };
            (Disposition::Rejected, Some(reason::NO_LISTENER.to_string()), Some(text))
        } else if let Some((_, code, text)) = first_request_drop {
            (Disposition::Dropped, Some(code.to_string()), Some(text.clone()))
        } else {
            (
                Disposition::Dropped,
                Some("timeout".into()),
                Some("no answer before the flow's time budget ran out".into()),
            )
        };
        let client_ip = flow.src.ip;
        Trace {
            schema: SCHEMA_VERSION,
            from: flow.from.clone(),
            to: flow.to.clone(),
            proto,
            seed: w.seed,
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
            http_from: None,
            warnings: rec.warnings,
            answered: None,
            probability: None,
            started_ms: started.total_millis(),
            ended_ms: w.now.total_millis(),
            hops: rec.hops,
            frames: Vec::new(),
        }
    }

    /// Delivers raw bytes to device `dev` of `ns`, as if its link peer had sent them, and
    /// runs the datapath until it settles; returns the hops.
    pub(crate) fn inject_frame(
        &mut self,
        dev: crate::ids::IfIndex,
        frame: &[u8],
    ) -> Result<Vec<Hop>, TraceError> {
        self.w.sim.start(Recorder::for_injection(), None, 1);
        let mut dp = self.dp();
        let tag = dp.new_tag(Dir::Request);
        dp.deliver(dev, frame.to_vec(), tag);
        let ok = dp.run_queue();
        let rec = self.w.sim.finish();
        if !ok {
            return Err(TraceError::Livelock(self.w.sim.events));
        }
        Ok(rec.hops)
    }
}

/// Every place a flow can land, each with its probability, as dry runs on copies of `w`:
/// every decision point a run meets (a `-m statistic` rule, an IPVS scheduler, a load
/// balancer's pick) is enumerated exhaustively, up to 256 runs.
pub(crate) fn trace_all(
    w: &World,
    hosts: &Hosts,
    fabric: &Fabric,
    guard: &dyn Guard,
    flow: &Flow,
    opts: &TraceOptions,
) -> Result<Vec<Trace>, TraceError> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<usize>> = vec![Vec::new()];
    let mut runs = 0;
    while let Some(forced) = todo.pop() {
        runs += 1;
        if runs > 256 {
            break;
        }
        let script = Arc::new(Mutex::new(Choices { forced: forced.clone(), met: Vec::new() }));
        // Copies, for a dry run: host stacks start afresh (empty socket tables and ARP
        // caches), so a dry run may show ARP exchanges a committed run would not.
        let (mut w2, mut h2) = (w.clone(), hosts.clone());
        for (i, ns) in w2.netns.iter_mut().enumerate() {
            if let Some(nf) = ns.nf.as_mut() {
                nf.rng = Rng::scripted(w.seed.wrapping_add(i as u64), script.clone());
            }
        }
        let opts = TraceOptions { dry_run: false, ..opts.clone() };
        let mut t = Sim { w: &mut w2, hosts: &mut h2, fabric, guard }.trace(flow, &opts)?;
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

/// What the client sends: an HTTP GET for `to`'s path (or the options' path) with its host
/// (or the options' `Host:` header), an ICMP echo's data, or an echo payload.
fn payload(opts: &TraceOptions, proto: FlowProto, to: &str) -> Payload {
    match proto {
        FlowProto::Http => {
            let path = url_path(to).unwrap_or(&opts.path);
            let host = opts
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| to_host(to));
            let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: podnet\r\n");
            for (k, v) in opts.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
                let _ = write!(req, "{k}: {v}\r\n");
            }
            req.push_str("\r\n");
            Payload::Http(req.into_bytes())
        }
        FlowProto::Icmp => Payload::Echo(b"podnet-echo".to_vec()),
        _ => Payload::Echo(b"hello from podnet\n".to_vec()),
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
