//! IPVS, after `net/netfilter/ipvs/`: virtual services on VIP:port, real servers with
//! weights, the schedulers kube-proxy offers, persistence, and `ipvsadm -Ln` output.
//!
//! Scheduling happens for the first packet of a connection in LOCAL_IN (remote clients) or
//! LOCAL_OUT (local clients), as `ip_vs_in_hook` does; the choice is then kept by conntrack
//! (`net.ipv4.vs.conntrack=1`): the entry's reply tuple is altered to the real server, so
//! later packets and replies follow it.
//!
//! Differences from Linux, each on purpose, with what a user can observe:
//!
//! - **Later packets of a connection** are translated by the conntrack entry in PREROUTING
//!   (as a DNAT would be) and then routed: they traverse FORWARD. Linux sets no NAT on the
//!   entry (`ip_vs_update_conntrack` only alters its reply tuple), so every packet reaches the
//!   virtual address in LOCAL_IN and `ip_vs_in` translates it: Linux counts later packets in
//!   the INPUT chains (and, after `ip_vs_nat_xmit`, in the OUTPUT chains of LOCAL_OUT), where
//!   podnet counts them in FORWARD. The bytes on the wire are the same, TTL included (both
//!   paths take one off: routing, or `decrement_ttl` in `__ip_vs_get_out_rt`).
//! - **The scheduled first packet** goes from LOCAL_IN straight to POSTROUTING; Linux passes
//!   it through the LOCAL_OUT hook first (`ip_vs_send_or_cont`), so its mangle and filter
//!   OUTPUT chains see it. kube-proxy's OUTPUT rules do not match it (they are for locally
//!   generated traffic and NEW connections), so verdicts do not change; counters do.
//! - **Replies** are un-translated by conntrack's reverse NAT; Linux's `ip_vs_out` does it at
//!   FORWARD. Same bytes, same hooks traversed.
//! - **Connection counts**: active/inactive counts follow conntrack entries handed out, not
//!   TCP state inside IPVS (connections are never retired to inactive), which only the
//!   `lc`/`wlc`/`sed`/`nq` schedulers read.
//! - **Persistence templates** expire their timeout after their last use; Linux also keeps a
//!   template while a connection it placed is open.

use std::fmt::Write;
use std::net::Ipv4Addr;

use indexmap::IndexMap;

use crate::packet::Proto;
use crate::rng::Rng;
use smoltcp::time::{Duration, Instant};

/// A scheduler (`--ipvs-scheduler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scheduler {
    /// Round robin (kube-proxy's default).
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection.
    Wlc,
    /// Source hashing.
    Sh,
    /// Destination hashing.
    Dh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
}

impl Scheduler {
    /// Parses `rr`, `wrr`, `lc`, `wlc`, `sh`, `dh`, `sed`, `nq`.
    pub fn parse(s: &str) -> Option<Scheduler> {
        Some(match s {
            "rr" => Scheduler::Rr,
            "wrr" => Scheduler::Wrr,
            "lc" => Scheduler::Lc,
            "wlc" => Scheduler::Wlc,
            "sh" => Scheduler::Sh,
            "dh" => Scheduler::Dh,
            "sed" => Scheduler::Sed,
            "nq" => Scheduler::Nq,
            _ => return None,
        })
    }

    /// The name `ipvsadm` prints.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sh => "sh",
            Scheduler::Dh => "dh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
        }
    }
}

/// A real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    /// Address.
    pub addr: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Weight (0: quiescent, gets no new connections).
    pub weight: u32,
    /// Connections handed to it that are still counted active.
    pub active: u32,
    /// Inactive connections.
    pub inactive: u32,
}

/// A virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualService {
    /// Scheduler.
    pub scheduler: Scheduler,
    /// Persistence timeout in seconds (`-p`), for ClientIP affinity.
    pub persistent: Option<u32>,
    /// Real servers.
    pub reals: Vec<RealServer>,
    rr_next: usize,
    wrr_cw: i64,
    /// Persistence templates: client address -> (real server index, expiry).
    templates: IndexMap<Ipv4Addr, (usize, Instant)>,
}

impl VirtualService {
    /// A service with no real servers.
    pub fn new(scheduler: Scheduler, persistent: Option<u32>) -> VirtualService {
        VirtualService {
            scheduler,
            persistent,
            reals: Vec::new(),
            rr_next: 0,
            wrr_cw: 0,
            templates: IndexMap::new(),
        }
    }
}

/// The IPVS table of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipvs {
    services: IndexMap<(Proto, Ipv4Addr, u16), VirtualService>,
}

impl Ipvs {
    /// Whether any virtual service exists.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Replaces the whole table (a kube-proxy sync), keeping scheduler state of services
    /// that stay.
    pub fn replace(&mut self, services: IndexMap<(Proto, Ipv4Addr, u16), VirtualService>) {
        let mut next = services;
        for (k, vs) in next.iter_mut() {
            if let Some(old) = self.services.get(k)
                && old
                    .reals
                    .iter()
                    .map(|r| (r.addr, r.port))
                    .eq(vs.reals.iter().map(|r| (r.addr, r.port)))
            {
                vs.rr_next = old.rr_next;
                vs.templates = old.templates.clone();
                for (n, o) in vs.reals.iter_mut().zip(&old.reals) {
                    n.active = o.active;
                    n.inactive = o.inactive;
                }
            }
        }
        self.services = next;
    }

    /// The virtual service for a destination, if any.
    pub fn get(&self, proto: Proto, addr: Ipv4Addr, port: u16) -> Option<&VirtualService> {
        self.services.get(&(proto, addr, port))
    }

    /// Chooses a real server for a new connection from `client` (`ip_vs_schedule`).
    ///
    /// A persistent service (`-p SECONDS`) first looks for the client's template
    /// (`ip_vs_sched_persist`): a live one decides, and each use restarts its timer
    /// (`ip_vs_conn_put`), so it expires `SECONDS` after its last use. The kernel also keeps
    /// a template past that while a connection it placed is still open; podnet does not
    /// hold templates for open connections.
    pub fn schedule(
        &mut self,
        proto: Proto,
        addr: Ipv4Addr,
        port: u16,
        client: Ipv4Addr,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<(Ipv4Addr, u16)> {
        let vs = self.services.get_mut(&(proto, addr, port))?;
        let keep = vs.persistent.map(|s| Duration::from_secs(u64::from(s)));
        if let Some(keep) = keep
            && let Some(&(i, expires)) = vs.templates.get(&client)
            && now < expires
            && vs.reals.get(i).is_some_and(|r| r.weight > 0)
        {
            vs.reals[i].active += 1;
            vs.templates.insert(client, (i, now + keep));
            return Some((vs.reals[i].addr, vs.reals[i].port));
        }
        let live: Vec<usize> = (0..vs.reals.len()).filter(|&i| vs.reals[i].weight > 0).collect();
        if live.is_empty() {
            return None;
        }
        if let Some(i) = rng.scripted_pick(live.len()) {
            // Enumerating outcomes: every live real server is a possible pick.
            let pick = live[i];
            vs.reals[pick].active += 1;
            return Some((vs.reals[pick].addr, vs.reals[pick].port));
        }
        let hash = |a: Ipv4Addr| (u32::from(a).wrapping_mul(2_654_435_761) >> 16) as usize;
        let load = |r: &RealServer| u64::from(r.active) * 256 + u64::from(r.inactive);
        let pick = match vs.scheduler {
            Scheduler::Rr => {
                let i = live[vs.rr_next % live.len()];
                vs.rr_next = vs.rr_next.wrapping_add(1);
                i
            }
            Scheduler::Wrr => {
                // Interleaved weighted round robin (ip_vs_wrr): step the current weight down by
                // the gcd, pick the next server whose weight reaches it.
                let max = live.iter().map(|&i| vs.reals[i].weight).max().unwrap_or(1) as i64;
                let gcd = live.iter().map(|&i| vs.reals[i].weight as i64).fold(0, gcd);
                loop {
                    vs.rr_next = (vs.rr_next + 1) % live.len();
                    if vs.rr_next == 0 {
                        vs.wrr_cw -= gcd.max(1);
                        if vs.wrr_cw <= 0 {
                            vs.wrr_cw = max;
                        }
                    }
                    let i = live[vs.rr_next];
                    if i64::from(vs.reals[i].weight) >= vs.wrr_cw {
                        break i;
                    }
                }
            }
            Scheduler::Lc => *live.iter().min_by_key(|&&i| load(&vs.reals[i])).expect("non-empty"),
            Scheduler::Wlc | Scheduler::Sed => *live
                .iter()
                .min_by_key(|&&i| {
                    (load(&vs.reals[i]) + u64::from(vs.scheduler == Scheduler::Sed) * 256) * 1000
                        / u64::from(vs.reals[i].weight)
                })
                .expect("non-empty"),
            Scheduler::Nq => {
                *live.iter().find(|&&i| vs.reals[i].active == 0).unwrap_or_else(|| {
                    live.iter()
                        .min_by_key(|&&i| {
                            (u64::from(vs.reals[i].active) + 1) * 1000
                                / u64::from(vs.reals[i].weight)
                        })
                        .expect("non-empty")
                })
            }
            Scheduler::Sh => live[hash(client) % live.len()],
            Scheduler::Dh => live[hash(addr) % live.len()],
        };
        vs.reals[pick].active += 1;
        if let Some(keep) = keep {
            vs.templates.insert(client, (pick, now + keep));
        }
        Some((vs.reals[pick].addr, vs.reals[pick].port))
    }

    /// `ipvsadm -Ln` output.
    pub fn list(&self) -> String {
        let mut s = String::from(
            "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        );
        for ((proto, addr, port), vs) in &self.services {
            let p = if *proto == Proto::UDP {
                "UDP"
            } else if *proto == Proto::SCTP {
                "SCTP"
            } else {
                "TCP"
            };
            let _ = write!(s, "{p}  {addr}:{port} {}", vs.scheduler.name());
            if let Some(t) = vs.persistent {
                let _ = write!(s, " persistent {t}");
            }
            s.push('\n');
            for r in &vs.reals {
                let _ = writeln!(
                    s,
                    "  -> {:<28} Masq    {:<6} {:<10} {}",
                    format!("{}:{}", r.addr, r.port),
                    r.weight,
                    r.active,
                    r.inactive
                );
            }
        }
        s
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: Scheduler, weights: &[u32]) -> Ipvs {
        let mut vs = VirtualService::new(s, None);
        for (i, w) in weights.iter().enumerate() {
            vs.reals.push(RealServer {
                addr: Ipv4Addr::new(10, 244, 1, 2 + i as u8),
                port: 8080,
                weight: *w,
                active: 0,
                inactive: 0,
            });
        }
        let mut t = Ipvs::default();
        t.replace(IndexMap::from([((Proto::TCP, Ipv4Addr::new(10, 96, 0, 10), 80), vs)]));
        t
    }

    fn picks(t: &mut Ipvs, n: usize) -> Vec<u8> {
        let mut rng = Rng::new(0);
        (0..n)
            .map(|k| {
                t.schedule(
                    Proto::TCP,
                    Ipv4Addr::new(10, 96, 0, 10),
                    80,
                    Ipv4Addr::new(10, 0, 0, k as u8),
                    Instant::ZERO,
                    &mut rng,
                )
                .unwrap()
                .0
                .octets()[3]
            })
            .collect()
    }

    #[test]
    fn rr_cycles_and_wrr_follows_weights() {
        assert_eq!(picks(&mut table(Scheduler::Rr, &[1, 1, 1]), 6), vec![2, 3, 4, 2, 3, 4]);
        let w = picks(&mut table(Scheduler::Wrr, &[3, 1]), 8);
        assert_eq!(w.iter().filter(|&&x| x == 2).count(), 6, "{w:?}");
        assert!(
            picks(&mut table(Scheduler::Rr, &[1, 0]), 4).iter().all(|&x| x == 2),
            "weight 0 gets nothing"
        );
    }

    #[test]
    fn persistence_keeps_a_client_on_its_server() {
        let mut t = table(Scheduler::Rr, &[1, 1]);
        t.services[0].persistent = Some(10800);
        let mut rng = Rng::new(0);
        let c = Ipv4Addr::new(10, 0, 0, 9);
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let at = Instant::from_secs;
        let first = t.schedule(Proto::TCP, vip, 80, c, at(0), &mut rng);
        for k in 1..6 {
            // Each use restarts the template's 10800 s timer.
            assert_eq!(t.schedule(Proto::TCP, vip, 80, c, at(k * 10_000), &mut rng), first);
        }
        // 10800 s after the last use the template is gone: rr goes on to the other server.
        let after = t.schedule(Proto::TCP, vip, 80, c, at(50_000 + 10_800), &mut rng);
        assert_ne!(after, first);
        assert!(t.list().contains("TCP  10.96.0.10:80 rr persistent 10800\n"), "{}", t.list());
    }

    #[test]
    fn ipvsadm_listing() {
        let t = table(Scheduler::Rr, &[1]);
        assert_eq!(
            t.list(),
            "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nTCP  10.96.0.10:80 rr\n  -> 10.244.1.2:8080              Masq    1      0          0\n"
        );
    }
}
