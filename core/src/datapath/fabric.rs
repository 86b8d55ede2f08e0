//! The cloud fabric's forwarding: what a VPC delivers by other means than a routing table.
//!
//! A VPC is not a set of Linux routers: it answers ARP for addresses it delivers to ENIs
//! itself, a network load balancer spreads flows over its targets by a flow hash, and the
//! fabric can send a flow's replies back to the load balancer that preserved the client's
//! address. The layers above (the cloud edge, the AWS VPC CNI) describe those as data; the
//! datapath asks this module at two points: when a router forwards a packet
//! ([`Fabric::nexthop`]) and when it receives an ARP request ([`Fabric::proxy_arp`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use podnet_netfilter::packet;

use crate::ids::NetnsId;
use crate::world::World;

/// The fabric's forwarding state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fabric {
    /// Next hops chosen by the fabric, checked in order before the routing table.
    pub(crate) steer: Vec<Steer>,
    /// Addresses a namespace answers ARP for without holding them.
    pub(crate) proxy_arp: Vec<ProxyArp>,
}

/// A next hop the fabric chooses instead of the routing table.
#[derive(Clone, Debug)]
pub(crate) enum Steer {
    /// At `at`, a packet of a connection that `tracked_in`'s conntrack knows (by its
    /// tuple), and not addressed to `addr` itself, goes to `addr`: the replies of flows a
    /// load balancer sent with the client's address go back to it.
    ReplyTo {
        /// Where the rule applies.
        at: NetnsId,
        /// Whose conntrack table names the flows.
        tracked_in: NetnsId,
        /// Where they go.
        addr: Ipv4Addr,
        /// The trace's explanation.
        why: String,
    },
    /// At `at`, every flow goes to one of `targets`, picked by a seeded hash of its 5-tuple
    /// (the same flow always to the same target), its destination address kept.
    Spread {
        /// Where the rule applies.
        at: NetnsId,
        /// The targets.
        targets: Vec<Ipv4Addr>,
        /// Who spreads, for the trace (`load balancer of default/api (pass-through)`).
        who: String,
    },
}

/// Addresses a namespace answers ARP for on the receiving device though none of its devices
/// holds them.
#[derive(Clone, Debug)]
pub(crate) struct ProxyArp {
    /// The namespace.
    pub(crate) at: NetnsId,
    /// The addresses.
    pub(crate) addrs: BTreeSet<Ipv4Addr>,
    /// What the trace adds to the ARP reply's line, if anything.
    pub(crate) note: Option<String>,
}

impl Fabric {
    /// Where the fabric, rather than `ns`'s routing table, sends IPv4 packet `ip`, with the
    /// trace's explanation; `None`: route as usual.
    pub(crate) fn nexthop(&self, w: &World, ns: NetnsId, ip: &[u8]) -> Option<(Ipv4Addr, String)> {
        if self.steer.is_empty() {
            return None;
        }
        let mut here = self.steer.iter().filter(|s| s.at() == ns).peekable();
        here.peek()?;
        let t = packet::parse(ip).ok()?.tuple;
        here.find_map(|s| match s {
            Steer::ReplyTo { tracked_in, addr, why, .. } => {
                let tracked = w.netns[tracked_in.idx()]
                    .nf
                    .as_ref()
                    .is_some_and(|nf| nf.conntrack.tuple_taken(&t));
                (t.dst != *addr && tracked).then(|| (*addr, why.clone()))
            }
            Steer::Spread { targets, who, .. } if !targets.is_empty() => {
                // A seeded FNV-1a over the 5-tuple: the same flow always lands on the same
                // target.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ w.seed;
                for b in t
                    .src
                    .octets()
                    .into_iter()
                    .chain(t.dst.octets())
                    .chain(t.sport.to_be_bytes())
                    .chain(t.dport.to_be_bytes())
                    .chain([t.proto.0])
                {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                let target = targets[(h % targets.len() as u64) as usize];
                Some((
                    target,
                    format!(
                        "{who}: flow hash picks target {target} of {}; destination {} kept",
                        targets.len(),
                        t.dst
                    ),
                ))
            }
            Steer::Spread { .. } => None,
        })
    }

    /// The entry under which `ns` answers ARP for `a`, if it does.
    pub(crate) fn proxy_arp(&self, ns: NetnsId, a: Ipv4Addr) -> Option<&ProxyArp> {
        self.proxy_arp.iter().find(|p| p.at == ns && p.addrs.contains(&a))
    }

    /// The proxy-ARP entry of `ns` noted `note`, created empty if there is none.
    pub(crate) fn proxy_arp_mut(&mut self, ns: NetnsId, note: Option<&str>) -> &mut ProxyArp {
        let i = match self.proxy_arp.iter().position(|p| p.at == ns && p.note.as_deref() == note) {
            Some(i) => i,
            None => {
                self.proxy_arp.push(ProxyArp {
                    at: ns,
                    addrs: BTreeSet::new(),
                    note: note.map(str::to_string),
                });
                self.proxy_arp.len() - 1
            }
        };
        &mut self.proxy_arp[i]
    }
}

impl Steer {
    fn at(&self) -> NetnsId {
        match self {
            Steer::ReplyTo { at, .. } | Steer::Spread { at, .. } => *at,
        }
    }
}
