//! The bridge forwarding database, after `net/bridge/br_fdb.c`: source MACs are learned per
//! port, entries age out after `ageing_time` (300 s by default) of silence, and lookups of a
//! unicast destination return its port or nothing (flood). Local entries (the bridge's own
//! MAC and its ports' MACs) are permanent, as `bridge fdb show` prints them.

use std::collections::HashMap;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;

use crate::ids::IfIndex;

/// Default `ageing_time`.
pub const AGEING_TIME: Duration = Duration::from_secs(300);

/// One FDB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port the MAC lives behind.
    pub port: IfIndex,
    /// Last time a frame from this MAC was seen.
    pub updated: Instant,
    /// Local entries never age.
    pub local: bool,
}

/// What [`Fdb::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// A new MAC.
    New,
    /// The MAC moved to another port.
    Moved,
    /// Refreshed in place.
    Refreshed,
    /// Local entry, untouched.
    Local,
}

/// A bridge's FDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fdb {
    entries: HashMap<EthernetAddress, FdbEntry, rustc_hash::FxBuildHasher>,
    /// `ageing_time`.
    pub ageing_time: Duration,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb { entries: HashMap::default(), ageing_time: AGEING_TIME }
    }
}

impl Fdb {
    /// Learns the source MAC of a frame that entered on `port` (`br_fdb_update`).
    pub fn update(&mut self, mac: EthernetAddress, port: IfIndex, now: Instant) -> Learn {
        match self.entries.get_mut(&mac) {
            Some(e) if e.local => Learn::Local,
            Some(e) => {
                let moved = e.port != port;
                e.port = port;
                e.updated = now;
                if moved { Learn::Moved } else { Learn::Refreshed }
            }
            None => {
                self.entries.insert(mac, FdbEntry { port, updated: now, local: false });
                Learn::New
            }
        }
    }

    /// Adds a permanent local entry.
    pub fn add_local(&mut self, mac: EthernetAddress, port: IfIndex) {
        self.entries.insert(mac, FdbEntry { port, updated: Instant::ZERO, local: true });
    }

    /// The port for a destination MAC, ignoring entries older than `ageing_time`
    /// (`br_fdb_find_rcu` + `has_expired`).
    pub fn lookup(&self, mac: EthernetAddress, now: Instant) -> Option<FdbEntry> {
        let e = *self.entries.get(&mac)?;
        (e.local || e.updated + self.ageing_time > now).then_some(e)
    }

    /// Drops expired entries (the bridge's garbage collector); returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let t = self.ageing_time;
        self.entries.retain(|_, e| e.local || e.updated + t > now);
        before - self.entries.len()
    }

    /// Renders like `bridge fdb show br NAME` (dynamic entries first, then permanent ones,
    /// each sorted by MAC).
    pub fn render(
        &self,
        bridge: &str,
        now: Instant,
        dev_name: &dyn Fn(IfIndex) -> String,
    ) -> String {
        let mut v: Vec<(&EthernetAddress, &FdbEntry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.local || e.updated + self.ageing_time > now)
            .collect();
        v.sort_by_key(|(m, e)| (e.local, m.0));
        let mut out = String::new();
        for (mac, e) in v {
            let dev = dev_name(e.port);
            if e.local {
                if dev == bridge {
                    out.push_str(&format!(
                        "{} dev {dev} vlan 1 master {bridge} permanent\n",
                        super::Mac(*mac)
                    ));
                } else {
                    out.push_str(&format!(
                        "{} dev {dev} master {bridge} permanent\n",
                        super::Mac(*mac)
                    ));
                }
            } else {
                out.push_str(&format!("{} dev {dev} master {bridge}\n", super::Mac(*mac)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_moves_and_ages_like_br_fdb() {
        let mut f = Fdb::default();
        let m = EthernetAddress([0x02, 0, 0, 0, 0, 5]);
        let t0 = Instant::from_secs(0);
        assert_eq!(f.update(m, IfIndex(3), t0), Learn::New);
        assert_eq!(f.update(m, IfIndex(3), t0), Learn::Refreshed);
        assert_eq!(f.update(m, IfIndex(4), t0), Learn::Moved);
        assert_eq!(f.lookup(m, Instant::from_secs(299)).unwrap().port, IfIndex(4));
        assert!(f.lookup(m, Instant::from_secs(300)).is_none(), "ageing_time is 300 s");
        assert_eq!(f.age(Instant::from_secs(300)), 1);
    }
}
