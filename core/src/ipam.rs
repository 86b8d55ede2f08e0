//! IP address management, after the real allocators:
//!
//! - [`ClusterCidrAllocator`]: kube-controller-manager's range allocator
//!   (`pkg/controller/nodeipam/ipam/cidrset`): the cluster CIDR split into node pod CIDRs of
//!   one mask size, handed out from a rotating cursor (the next free one after the last
//!   handed out), released on node removal.
//! - [`HostLocal`]: the CNI `host-local` plugin on one node: addresses of the node's pod CIDR
//!   except the network, the gateway (`.1`) and the broadcast address, handed out round
//!   robin starting after the last reserved address (not lowest-free), released on pod
//!   deletion.
//! - [`BandAllocator`]: the API server's ClusterIP and NodePort allocators (KEP-3070 and
//!   KEP-3668): the range's lower band is kept for static requests, its size given by each
//!   allocator's `calculateRangeOffset` (`min(max(16, size/16), 256)` addresses of the Service
//!   CIDR, `min(max(16, size/32), 128)` ports of the NodePort range, none when the range holds
//!   16 or fewer); dynamic allocation picks at random (seeded) from the upper band first.
//!
//! No allocator ever hands out a value twice while it is allocated; errors name the range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

pub use crate::error::IpamError;
use ipnetwork::Ipv4Network;
use podnet_netfilter::Rng;

/// kube-controller-manager's node CIDR allocator.
#[derive(Clone, Debug)]
pub struct ClusterCidrAllocator {
    cluster: Ipv4Network,
    mask: u8,
    used: BTreeSet<u32>,
    next: u32,
}

impl ClusterCidrAllocator {
    /// Splits `cluster` into `/mask` node CIDRs (`--node-cidr-mask-size`, default 24).
    pub fn new(cluster: Ipv4Network, mask: u8) -> Result<ClusterCidrAllocator, IpamError> {
        if mask < cluster.prefix() || mask > 30 {
            return Err(IpamError::Config(format!(
                "node CIDR mask /{mask} must be between /{} (the cluster CIDR's) and /30",
                cluster.prefix()
            )));
        }
        if mask - cluster.prefix() > 24 {
            return Err(IpamError::Config(format!(
                "cluster CIDR {cluster} split into /{mask} gives more than 2^24 node CIDRs"
            )));
        }
        Ok(ClusterCidrAllocator { cluster, mask, used: BTreeSet::new(), next: 0 })
    }

    fn count(&self) -> u32 {
        1 << (self.mask - self.cluster.prefix())
    }

    fn cidr(&self, i: u32) -> Ipv4Network {
        let base = u32::from(self.cluster.network()) + (i << (32 - self.mask));
        Ipv4Network::new(Ipv4Addr::from(base), self.mask).expect("valid mask")
    }

    /// The next free node CIDR after the last one handed out.
    pub fn allocate(&mut self) -> Result<Ipv4Network, IpamError> {
        let n = self.count();
        for k in 0..n {
            let i = (self.next + k) % n;
            if !self.used.contains(&i) {
                self.used.insert(i);
                self.next = (i + 1) % n;
                return Ok(self.cidr(i));
            }
        }
        Err(IpamError::Exhausted {
            what: "cluster CIDR",
            range: format!("{} (/{} per node)", self.cluster, self.mask),
            used: self.used.len(),
            fix: "use a larger cluster CIDR or a longer --node-cidr-mask-size",
        })
    }

    /// Marks a node CIDR that a node already has as used.
    pub fn occupy(&mut self, cidr: Ipv4Network) -> Result<(), IpamError> {
        let i = self.index(cidr)?;
        if !self.used.insert(i) {
            return Err(IpamError::Conflict {
                what: "node CIDR",
                value: cidr.to_string(),
                range: self.cluster.to_string(),
            });
        }
        Ok(())
    }

    /// Releases a node CIDR (node removed).
    pub fn release(&mut self, cidr: Ipv4Network) -> Result<(), IpamError> {
        let i = self.index(cidr)?;
        self.used.remove(&i);
        Ok(())
    }

    fn index(&self, cidr: Ipv4Network) -> Result<u32, IpamError> {
        if cidr.prefix() != self.mask
            || !self.cluster.contains(cidr.network())
            || cidr.network() != cidr.ip()
        {
            return Err(IpamError::OutOfRange {
                what: "node CIDR",
                value: cidr.to_string(),
                range: self.cluster.to_string(),
                why: format!(" as a /{} block", self.mask),
            });
        }
        Ok((u32::from(cidr.network()) - u32::from(self.cluster.network())) >> (32 - self.mask))
    }
}

/// The CNI `host-local` IPAM plugin for one node's pod CIDR.
#[derive(Clone, Debug)]
pub struct HostLocal {
    range: Ipv4Network,
    used: BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
}

impl HostLocal {
    /// The pool of `range` (a node's pod CIDR).
    pub fn new(range: Ipv4Network) -> HostLocal {
        HostLocal { range, used: BTreeSet::new(), last: None }
    }

    /// The gateway the plugin reserves (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.range.network()) + 1)
    }

    fn first(&self) -> u32 {
        u32::from(self.range.network()) + 2
    }

    fn last_usable(&self) -> u32 {
        u32::from(self.range.broadcast()) - 1
    }

    /// The next free address after the last reserved one, wrapping around.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let (lo, hi) = (self.first(), self.last_usable());
        if hi < lo {
            return Err(IpamError::Config(format!(
                "pod CIDR {} has no usable addresses",
                self.range
            )));
        }
        let span = hi - lo + 1;
        let start = match self.last {
            Some(l) if (lo..=hi).contains(&u32::from(l)) => u32::from(l) - lo + 1,
            _ => 0,
        };
        for k in 0..span {
            let a = Ipv4Addr::from(lo + (start + k) % span);
            if !self.used.contains(&a) {
                self.used.insert(a);
                self.last = Some(a);
                return Ok(a);
            }
        }
        Err(IpamError::Exhausted {
            what: "pod CIDR",
            range: self.range.to_string(),
            used: self.used.len(),
            fix: "the node has no free pod address; delete pods or give nodes larger pod CIDRs",
        })
    }

    /// Reserves a specific address (a pod that already has one).
    pub fn reserve(&mut self, a: Ipv4Addr) -> Result<(), IpamError> {
        let v = u32::from(a);
        if !(self.first()..=self.last_usable()).contains(&v) {
            return Err(IpamError::OutOfRange {
                what: "pod IP",
                value: a.to_string(),
                range: self.range.to_string(),
                why: " (network, gateway and broadcast are reserved)".into(),
            });
        }
        if !self.used.insert(a) {
            return Err(IpamError::Conflict {
                what: "pod IP",
                value: a.to_string(),
                range: self.range.to_string(),
            });
        }
        self.last = Some(a);
        Ok(())
    }

    /// Releases an address (pod deleted).
    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&a);
    }

    /// Addresses in use.
    pub fn used(&self) -> usize {
        self.used.len()
    }
}

/// Kubernetes' `calculateRangeOffset`: `min(max(16, size/step), max)`, and 0 (no static band)
/// when the range holds 16 or fewer values.
fn range_offset(size: u32, step: u32, max: u32) -> u32 {
    if size <= 16 {
        return 0;
    }
    (size / step).clamp(16, max)
}

/// The API server's bitmap allocators with a static band (ClusterIPs, NodePorts).
#[derive(Clone, Debug)]
pub struct BandAllocator {
    what: &'static str,
    base: u32,
    size: u32,
    band: u32,
    used: BTreeSet<u32>,
    display: String,
}

impl BandAllocator {
    /// The ClusterIP allocator of a Service CIDR (the network and broadcast addresses are
    /// never handed out; the static band is `min(max(16, size/16), 256)` of the CIDR's whole
    /// size, as `calculateRangeOffset` in `pkg/registry/core/service/ipallocator` computes it).
    pub fn service_cidr(cidr: Ipv4Network) -> BandAllocator {
        let band = range_offset(cidr.size(), 16, 256);
        BandAllocator::new(
            "Service CIDR",
            u32::from(cidr.network()) + 1,
            cidr.size().saturating_sub(2),
            band,
            cidr.to_string(),
        )
    }

    /// The NodePort allocator of `--service-node-port-range` (default 30000-32767; static
    /// band `min(max(16, size/32), 128)`, as `calculateRangeOffset` in
    /// `pkg/registry/core/service/portallocator` computes it: 86 ports of the default range).
    pub fn node_ports(lo: u16, hi: u16) -> BandAllocator {
        let size = u32::from(hi) - u32::from(lo) + 1;
        BandAllocator::new(
            "NodePort range",
            u32::from(lo),
            size,
            range_offset(size, 32, 128),
            format!("{lo}-{hi}"),
        )
    }

    fn new(what: &'static str, base: u32, size: u32, band: u32, display: String) -> BandAllocator {
        BandAllocator { what, base, size, band: band.min(size), used: BTreeSet::new(), display }
    }

    /// A dynamic allocation: random in the upper band, else random in the lower band.
    pub fn allocate(&mut self, rng: &mut Rng) -> Result<u32, IpamError> {
        for (lo, hi) in [(self.band, self.size), (0, self.band)] {
            if hi <= lo {
                continue;
            }
            let span = hi - lo;
            let start = rng.range(0, span - 1);
            for k in 0..span {
                let off = lo + (start + k) % span;
                if !self.used.contains(&off) {
                    self.used.insert(off);
                    return Ok(self.base + off);
                }
            }
        }
        Err(IpamError::Exhausted {
            what: self.what,
            range: self.display.clone(),
            used: self.used.len(),
            fix: "free some, or widen the range",
        })
    }

    /// A static request for `value`.
    pub fn allocate_exact(&mut self, value: u32) -> Result<(), IpamError> {
        let shown = |v: u32| {
            if self.what == "Service CIDR" { Ipv4Addr::from(v).to_string() } else { v.to_string() }
        };
        if value < self.base || value >= self.base + self.size {
            return Err(IpamError::OutOfRange {
                what: self.what,
                value: shown(value),
                range: self.display.clone(),
                why: String::new(),
            });
        }
        if !self.used.insert(value - self.base) {
            return Err(IpamError::Conflict {
                what: self.what,
                value: shown(value),
                range: self.display.clone(),
            });
        }
        Ok(())
    }

    /// Releases a value.
    pub fn release(&mut self, value: u32) {
        if value >= self.base {
            self.used.remove(&(value - self.base));
        }
    }

    /// The first value of the upper (dynamic) band.
    pub fn dynamic_start(&self) -> u32 {
        self.base + self.band
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_netfilter::Rng;
    use proptest::prelude::*;

    #[test]
    fn node_cidrs_rotate_and_exhaust_with_a_clear_error() {
        let mut a = ClusterCidrAllocator::new("10.244.0.0/22".parse().unwrap(), 24).unwrap();
        let got: Vec<String> = (0..4).map(|_| a.allocate().unwrap().to_string()).collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        let e = a.allocate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster CIDR 10.244.0.0/22 (/24 per node) is exhausted (4 in use): use a larger cluster CIDR or a longer --node-cidr-mask-size"
        );
        a.release("10.244.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(a.allocate().unwrap().to_string(), "10.244.1.0/24");
        assert!(a.occupy("10.244.1.0/24".parse().unwrap()).is_err());
    }

    #[test]
    fn host_local_is_round_robin_from_the_last_reserved() {
        let mut h = HostLocal::new("10.244.1.0/29".parse().unwrap());
        // .2 .. .6 usable (.0 network, .1 gateway, .7 broadcast).
        let a: Vec<Ipv4Addr> = (0..3).map(|_| h.allocate().unwrap()).collect();
        assert_eq!(
            a,
            [
                "10.244.1.2".parse::<Ipv4Addr>().unwrap(),
                "10.244.1.3".parse().unwrap(),
                "10.244.1.4".parse().unwrap()
            ]
        );
        h.release(a[0]);
        // Not lowest-free: .5 comes next, then .6, then wraps to the released .2.
        assert_eq!(h.allocate().unwrap(), "10.244.1.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(h.allocate().unwrap(), "10.244.1.6".parse::<Ipv4Addr>().unwrap());
        assert_eq!(h.allocate().unwrap(), "10.244.1.2".parse::<Ipv4Addr>().unwrap());
        let e = h.allocate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "pod CIDR 10.244.1.0/29 is exhausted (5 in use): the node has no free pod address; delete pods or give nodes larger pod CIDRs"
        );
        assert!(
            h.reserve("10.244.1.1".parse().unwrap()).unwrap_err().to_string().contains("gateway")
        );
    }

    #[test]
    fn service_ips_prefer_the_upper_band_and_static_requests_conflict() {
        let mut s = BandAllocator::service_cidr("10.96.0.0/12".parse().unwrap());
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let v = s.allocate(&mut rng).unwrap();
            assert!(v >= s.dynamic_start(), "dynamic picks avoid the static band");
        }
        s.allocate_exact(u32::from(Ipv4Addr::new(10, 96, 0, 10))).unwrap();
        let e = s.allocate_exact(u32::from(Ipv4Addr::new(10, 96, 0, 10))).unwrap_err();
        assert_eq!(e.to_string(), "Service CIDR 10.96.0.10 is already allocated in 10.96.0.0/12");
        let e = s.allocate_exact(u32::from(Ipv4Addr::new(10, 200, 0, 1))).unwrap_err();
        assert!(e.to_string().contains("not in the range 10.96.0.0/12"));
        let mut p = BandAllocator::node_ports(30000, 32767);
        // portallocator's calculateRangeOffset: min(max(16, 2768/32), 128) = 86.
        assert_eq!(p.dynamic_start(), 30000 + 86);
        p.allocate_exact(30081).unwrap();
        assert_eq!(
            p.allocate_exact(30081).unwrap_err().to_string(),
            "NodePort range 30081 is already allocated in 30000-32767"
        );
        let mut small = BandAllocator::node_ports(30000, 30003);
        for _ in 0..4 {
            small.allocate(&mut rng).unwrap();
        }
        assert!(
            small
                .allocate(&mut rng)
                .unwrap_err()
                .to_string()
                .starts_with("NodePort range 30000-30003 is exhausted (4 in use)")
        );
    }

    #[test]
    fn static_bands_are_kubernetes_calculate_range_offset() {
        // pkg/registry/core/service/ipallocator: min(max(16, cidrSize/16), 256) over the whole
        // CIDR, 0 when the CIDR holds 16 addresses or fewer.
        let base = |cidr: &str| {
            let n: Ipv4Network = cidr.parse().unwrap();
            BandAllocator::service_cidr(n).dynamic_start() - u32::from(n.network()) - 1
        };
        assert_eq!(base("10.96.0.0/12"), 256);
        assert_eq!(base("10.96.0.0/20"), 256); // 4096/16, not 4094/16
        assert_eq!(base("10.96.0.0/21"), 128);
        assert_eq!(base("10.96.0.0/24"), 16);
        assert_eq!(base("10.96.0.0/27"), 16); // 32/16 = 2, raised to the minimum
        assert_eq!(base("10.96.0.0/28"), 0); // 16 addresses: no static band
        // pkg/registry/core/service/portallocator: min(max(16, size/32), 128).
        let ports = |lo, hi| BandAllocator::node_ports(lo, hi).dynamic_start() - u32::from(lo);
        assert_eq!(ports(30000, 32767), 86);
        assert_eq!(ports(30000, 34095), 128); // 4096/32
        assert_eq!(ports(20000, 39999), 128); // capped
        assert_eq!(ports(30000, 30099), 16);
        assert_eq!(ports(30000, 30015), 0);
    }

    proptest! {
        #[test]
        fn host_local_never_hands_out_an_address_twice(ops in prop::collection::vec(any::<(bool, u8)>(), 1..200)) {
            let mut h = HostLocal::new("10.244.7.0/27".parse().unwrap());
            let mut live: Vec<Ipv4Addr> = Vec::new();
            for (alloc, k) in ops {
                if alloc || live.is_empty() {
                    match h.allocate() {
                        Ok(a) => {
                            prop_assert!(!live.contains(&a), "{a} handed out twice");
                            prop_assert!(a > Ipv4Addr::new(10, 244, 7, 1) && a < Ipv4Addr::new(10, 244, 7, 31));
                            live.push(a);
                        }
                        Err(_) => prop_assert_eq!(live.len(), 29),
                    }
                } else {
                    let a = live.remove(usize::from(k) % live.len());
                    h.release(a);
                }
            }
        }

        #[test]
        fn band_allocator_never_hands_out_a_value_twice(ops in prop::collection::vec(any::<(bool, u16)>(), 1..300), seed in any::<u64>()) {
            let mut p = BandAllocator::node_ports(30000, 30099);
            let mut rng = Rng::new(seed);
            let mut live: Vec<u32> = Vec::new();
            for (alloc, k) in ops {
                if alloc || live.is_empty() {
                    if let Ok(v) = p.allocate(&mut rng) {
                        prop_assert!((30000..=30099).contains(&v));
                        prop_assert!(!live.contains(&v));
                        live.push(v);
                    } else {
                        prop_assert_eq!(live.len(), 100);
                    }
                } else {
                    let v = live.remove(usize::from(k) % live.len());
                    p.release(v);
                }
            }
        }

        #[test]
        fn node_cidrs_stay_inside_and_never_repeat(n in 1usize..70) {
            let mut a = ClusterCidrAllocator::new("10.244.0.0/18".parse().unwrap(), 24).unwrap();
            let mut seen = BTreeSet::new();
            for _ in 0..n {
                match a.allocate() {
                    Ok(c) => {
                        prop_assert!("10.244.0.0/18".parse::<Ipv4Network>().unwrap().contains(c.network()));
                        prop_assert!(seen.insert(c.network()));
                    }
                    Err(_) => prop_assert_eq!(seen.len(), 64),
                }
            }
        }
    }
}
