//! Kernel tables of a network namespace that are not netfilter's.

pub mod fdb;
pub mod neigh;
pub mod route;

use std::fmt;

use smoltcp::wire::EthernetAddress;

/// A MAC address printed the way `ip` and `bridge` print it (`02:50:00:00:00:0c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub EthernetAddress);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}
