//! Neighbour (ARP) tables, after `net/core/neighbour.c` and `net/ipv4/arp.c`, printed as
//! `ip neigh` prints them. Entries are `REACHABLE` once an ARP reply (or a request aimed at
//! us) taught the mapping, `PERMANENT` when configured (the AWS VPC CNI's static gateway
//! entry), and go `STALE` after `base_reachable_time` (30 s); a stale entry is still used,
//! as Linux uses it while re-confirming.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;

use crate::ids::IfIndex;

/// Neighbour states shown by `ip neigh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum NeighState {
    /// Confirmed recently.
    Reachable,
    /// Not confirmed recently, still usable.
    Stale,
    /// Configured, never expires.
    Permanent,
}

/// One neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neigh {
    /// The link-layer address.
    pub mac: EthernetAddress,
    /// The device it was learned on.
    pub dev: IfIndex,
    /// State as of the last update.
    pub state: NeighState,
    /// When it was last confirmed.
    pub confirmed: Instant,
}

/// `base_reachable_time` default.
pub const REACHABLE_TIME: Duration = Duration::from_secs(30);

/// A namespace's neighbour table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighTable {
    /// By address as a number: the order of the addresses, and one compare a step of a
    /// lookup.
    entries: BTreeMap<u32, Neigh>,
}

impl NeighTable {
    /// Learns or refreshes `ip` → `mac` on `dev`. Returns true if the mapping is new or changed.
    pub fn update(
        &mut self,
        ip: Ipv4Addr,
        mac: EthernetAddress,
        dev: IfIndex,
        now: Instant,
    ) -> bool {
        match self.entries.get_mut(&u32::from(ip)) {
            Some(e) if e.state == NeighState::Permanent => false,
            Some(e) => {
                let changed = e.mac != mac || e.dev != dev;
                *e = Neigh { mac, dev, state: NeighState::Reachable, confirmed: now };
                changed
            }
            None => {
                let e = Neigh { mac, dev, state: NeighState::Reachable, confirmed: now };
                self.entries.insert(u32::from(ip), e);
                true
            }
        }
    }

    /// Adds a permanent entry (`ip neigh add ... nud permanent`).
    pub fn add_permanent(&mut self, ip: Ipv4Addr, mac: EthernetAddress, dev: IfIndex) {
        let e = Neigh { mac, dev, state: NeighState::Permanent, confirmed: Instant::ZERO };
        self.entries.insert(u32::from(ip), e);
    }

    /// The MAC for `ip`, if known.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<&Neigh> {
        self.entries.get(&u32::from(ip))
    }

    /// Renders like `ip neigh` at time `now`.
    pub fn render(&self, now: Instant, dev_name: &dyn Fn(IfIndex) -> String) -> String {
        let mut out = String::new();
        for (&ip, n) in &self.entries {
            let ip = Ipv4Addr::from(ip);
            let state = match n.state {
                NeighState::Permanent => "PERMANENT",
                _ if now >= n.confirmed + REACHABLE_TIME => "STALE",
                _ => "REACHABLE",
            };
            out.push_str(&format!(
                "{ip} dev {} lladdr {} {state}\n",
                dev_name(n.dev),
                super::Mac(n.mac)
            ));
        }
        out
    }
}
