//! The frame queue: frames waiting to be received, packets waiting for ARP, and what the
//! current run records (its trace recorder, the stacks it touched, captured frames).

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;

use podnet_netfilter::Skb;

use crate::ids::{IfIndex, NetnsId};
use crate::trace::{Recorder, Tag};

pub(crate) struct Event {
    pub(crate) dev: IfIndex,
    pub(crate) frame: Vec<u8>,
    pub(crate) tag: Tag,
}

/// A packet waiting for ARP.
pub(crate) struct Pending {
    pub(crate) ns: NetnsId,
    pub(crate) dev: IfIndex,
    pub(crate) nexthop: Ipv4Addr,
    pub(crate) skb: Skb,
    pub(crate) tag: Tag,
    pub(crate) deadline: Instant,
    /// For bridged DNAT: (bridge, ingress port, original source MAC).
    pub(crate) bridged: Option<(IfIndex, IfIndex, EthernetAddress)>,
}

impl Pending {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// The namespaces whose stacks a run touched, in namespace order: a sorted list, since a
/// run touches a few (the client's, the server's, a node's) and every delivered packet
/// asks to be in it.
#[derive(Default)]
pub(crate) struct ActiveSet(Vec<NetnsId>);

impl ActiveSet {
    /// Adds `ns` if it is not in the set yet.
    #[inline]
    pub(crate) fn insert(&mut self, ns: NetnsId) {
        if let Err(at) = self.0.binary_search(&ns) {
            self.0.insert(at, ns);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// The namespaces, in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, NetnsId> {
        self.0.iter()
    }
}

/// Queues and the trace recorder.
#[derive(Default)]
pub(crate) struct SimState {
    pub(crate) queue: VecDeque<Event>,
    pub(crate) pending: Vec<Pending>,
    pub(crate) rec: Option<Recorder>,
    pub(crate) next_pkt: u32,
    /// Stacks touched by the current run (polled when time advances).
    pub(crate) active: ActiveSet,
    pub(crate) events: u64,
    /// Extra exchanges the current run makes (a flow's rounds after its first); each may
    /// process [`MAX_EVENTS`] more frames before the livelock guard trips.
    pub(crate) extra_rounds: u64,
    /// Frames as devices received them, while a trace captures.
    pub(crate) capture: Option<Vec<(Instant, IfIndex, Vec<u8>)>>,
    /// What a host stack's poll transmitted, on its way out (kept, so a poll allocates no
    /// list).
    pub(crate) host_out: Vec<Vec<u8>>,
}

/// A copy of a world is taken between runs: what a run keeps is not copied, the copy's
/// queue starts empty.
impl Clone for SimState {
    fn clone(&self) -> SimState {
        SimState::default()
    }
}

impl SimState {
    /// Starts a run that `rec` records, from `ns` (a client's namespace, whose stack is
    /// touched first), making `rounds` exchanges: counters and the set of touched stacks
    /// start afresh.
    pub(crate) fn start(&mut self, rec: Recorder, ns: Option<NetnsId>, rounds: u32) {
        self.events = 0;
        self.extra_rounds = u64::from(rounds.saturating_sub(1));
        self.next_pkt = 0;
        self.active.clear();
        if let Some(ns) = ns {
            self.active.insert(ns);
        }
        self.rec = Some(rec);
    }

    /// Ends a run: its recorder, and the stacks it touched forgotten.
    pub(crate) fn finish(&mut self) -> Recorder {
        self.active.clear();
        self.rec.take().expect("a run in progress")
    }
}
