//! IPv4 routing tables, after `net/ipv4/fib_trie.c` as `ip route` shows it: connected,
//! static and default routes with longest-prefix match.
//!
//! Lookups probe one hash map per prefix length present in the table (at most 33 probes),
//! never scanning routes. Policy routing (`ip rule`, several tables) is carried by
//! [`RoutingPolicy`]: rules select a table by source and destination prefix, in priority
//! order; the main table is the last resort, as with the kernel's default rules.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::ids::IfIndex;

/// Who installed a route (`proto` in `ip route`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RouteProto {
    /// Added by the kernel for an address (`proto kernel`).
    Kernel,
    /// Added by a CNI plugin or an administrator (`proto static`).
    Static,
    /// Added at boot, e.g. the default route (`proto boot`, printed without a proto).
    Boot,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub dst: Ipv4Network,
    /// Gateway, if not directly connected.
    pub via: Option<Ipv4Addr>,
    /// Output device.
    pub dev: IfIndex,
    /// Preferred source address.
    pub src: Option<Ipv4Addr>,
    /// Origin.
    pub proto: RouteProto,
}

/// A routing table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// The routes of each prefix length present, longest first, by network address.
    by_len: Vec<Prefixes>,
}

/// A table's routes of one prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prefixes {
    len: u8,
    /// The netmask of `len`, so a lookup masks with it at once.
    mask: u32,
    routes: HashMap<u32, Route, rustc_hash::FxBuildHasher>,
}

impl RouteTable {
    /// Adds or replaces the route for `route.dst`.
    pub fn add(&mut self, route: Route) {
        let len = route.dst.prefix();
        let at = match self.by_len.binary_search_by(|p| len.cmp(&p.len)) {
            Ok(at) => at,
            Err(at) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                self.by_len.insert(at, Prefixes { len, mask, routes: HashMap::default() });
                at
            }
        };
        self.by_len[at].routes.insert(u32::from(route.dst.network()), route);
    }

    /// Removes the route for `dst`; returns it.
    pub fn remove(&mut self, dst: Ipv4Network) -> Option<Route> {
        let at = self.by_len.binary_search_by(|p| dst.prefix().cmp(&p.len)).ok()?;
        let r = self.by_len[at].routes.remove(&u32::from(dst.network()));
        if self.by_len[at].routes.is_empty() {
            self.by_len.remove(at);
        }
        r
    }

    /// Longest-prefix match.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let a = u32::from(dst);
        self.by_len.iter().find_map(|p| p.routes.get(&(a & p.mask)))
    }

    /// All routes, most specific first, then by address (the order `ip route` prints:
    /// default first is special-cased by the printer).
    pub fn routes(&self) -> Vec<&Route> {
        let mut v: Vec<&Route> = self.by_len.iter().flat_map(|p| p.routes.values()).collect();
        v.sort_by_key(|r| (r.dst.prefix() != 0, u32::from(r.dst.network()), r.dst.prefix()));
        v
    }

    /// Renders like `ip route`, naming devices with `dev_name`.
    pub fn render(&self, dev_name: &dyn Fn(IfIndex) -> String) -> String {
        let mut out = String::new();
        for r in self.routes() {
            out.push_str(&RouteLine(r, dev_name).to_string());
            out.push('\n');
        }
        out
    }
}

struct RouteLine<'a>(&'a Route, &'a dyn Fn(IfIndex) -> String);

impl fmt::Display for RouteLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        if r.dst.prefix() == 0 {
            f.write_str("default")?;
        } else if r.dst.prefix() == 32 {
            write!(f, "{}", r.dst.ip())?;
        } else {
            write!(f, "{}", r.dst)?;
        }
        if let Some(via) = r.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", (self.1)(r.dev))?;
        match r.proto {
            RouteProto::Kernel => f.write_str(" proto kernel scope link")?,
            RouteProto::Static => f.write_str(" proto static")?,
            RouteProto::Boot => {}
        }
        if r.via.is_none() && r.proto != RouteProto::Kernel {
            f.write_str(" scope link")?;
        }
        if let Some(src) = r.src {
            write!(f, " src {src}")?;
        }
        Ok(())
    }
}

/// A route type of the `local` table (`rtm_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LocalKind {
    /// `local`: an address of this host; packets to it are delivered here, over `lo`
    /// when the host sends them itself (`RTN_LOCAL`).
    Local,
    /// `broadcast`: a subnet's broadcast address (`RTN_BROADCAST`).
    Broadcast,
}

/// One route of the `local` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRoute {
    /// Local or broadcast.
    pub kind: LocalKind,
    /// The address (a /32), or `127.0.0.0/8` for loopback.
    pub dst: Ipv4Network,
    /// The device the address is on.
    pub dev: IfIndex,
    /// The address the route's packets come from (`src`).
    pub src: Ipv4Addr,
}

/// The `local` table (id 255), as the kernel keeps it for a namespace's addresses
/// (`fib_add_ifaddr`): `local ADDR` for each address, `broadcast` for the last address of
/// each subnet wider than /31, and `local 127.0.0.0/8` for loopback's /8. Rule 0 consults
/// it before any other table, so a packet to one of the host's own addresses is delivered
/// here (`ip route get` says `local … dev lo`) instead of leaving by the device it is on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalTable {
    /// The routes, in the order `ip route show table local` prints them.
    routes: Vec<LocalRoute>,
}

impl LocalTable {
    /// The table for these (device, address) pairs.
    pub fn from_addrs(addrs: impl IntoIterator<Item = (IfIndex, Ipv4Network)>) -> LocalTable {
        let mut routes = Vec::new();
        for (dev, a) in addrs {
            let host = Ipv4Network::new(a.ip(), 32).expect("a /32");
            routes.push(LocalRoute { kind: LocalKind::Local, dst: host, dev, src: a.ip() });
            if a.prefix() < 32 && a.ip().is_loopback() {
                let net = Ipv4Network::new(a.network(), a.prefix()).expect("valid prefix");
                routes.push(LocalRoute { kind: LocalKind::Local, dst: net, dev, src: a.ip() });
            }
            if a.prefix() < 31 {
                let brd = Ipv4Network::new(a.broadcast(), 32).expect("a /32");
                routes.push(LocalRoute { kind: LocalKind::Broadcast, dst: brd, dev, src: a.ip() });
            }
        }
        routes.sort_by_key(|r| (u32::from(r.dst.network()), r.dst.prefix()));
        routes.dedup_by_key(|r| (r.dst, r.kind));
        LocalTable { routes }
    }

    /// The route for `dst`, longest prefix first.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&LocalRoute> {
        self.routes.iter().filter(|r| r.dst.contains(dst)).max_by_key(|r| r.dst.prefix())
    }

    /// Whether `dst` is one of the host's addresses (a `local` route covers it).
    pub fn is_local(&self, dst: Ipv4Addr) -> bool {
        self.lookup(dst).is_some_and(|r| r.kind == LocalKind::Local)
    }

    /// The routes, as `ip route show table local` lists them.
    pub fn routes(&self) -> &[LocalRoute] {
        &self.routes
    }

    /// Renders like `ip route show table local`, naming devices with `dev_name`.
    pub fn render(&self, dev_name: &dyn Fn(IfIndex) -> String) -> String {
        let mut out = String::new();
        for r in &self.routes {
            let (kind, scope) = match r.kind {
                LocalKind::Local => ("local", "host"),
                LocalKind::Broadcast => ("broadcast", "link"),
            };
            let dst = if r.dst.prefix() == 32 { r.dst.ip().to_string() } else { r.dst.to_string() };
            out.push_str(&format!(
                "{kind} {dst} dev {} proto kernel scope {scope} src {}\n",
                dev_name(r.dev),
                r.src
            ));
        }
        out
    }
}

/// One `ip rule`: packets matching `from` and `to` look up `table` (254 is main).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    /// Priority (lower first).
    pub priority: u32,
    /// Source prefix (`from all` when `None`).
    pub from: Option<Ipv4Network>,
    /// Destination prefix.
    pub to: Option<Ipv4Network>,
    /// Table id (254 = main).
    pub table: u32,
}

/// The main table's id.
pub const MAIN_TABLE: u32 = 254;

/// `ip rule` and the tables other than main, as the kernel's FIB rules apply them: rules in
/// priority order; the first whose selectors match and whose table has a route decides;
/// the default rule `32766: from all lookup main` comes last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingPolicy {
    /// Rules other than the kernel's defaults, kept in priority order.
    pub rules: Vec<PolicyRule>,
    /// Tables other than main, by id.
    pub tables: BTreeMap<u32, RouteTable>,
}

impl RoutingPolicy {
    /// Adds a rule (after rules of the same priority, as `ip rule add` does).
    pub fn add_rule(&mut self, rule: PolicyRule) {
        let at = self.rules.partition_point(|r| r.priority <= rule.priority);
        self.rules.insert(at, rule);
    }

    /// Removes every rule naming `addr` as its /32 `from` or `to`.
    pub fn remove_rules_for(&mut self, addr: Ipv4Addr) {
        let host = |n: &Option<Ipv4Network>| n.is_some_and(|n| n.prefix() == 32 && n.ip() == addr);
        self.rules.retain(|r| !host(&r.from) && !host(&r.to));
    }

    /// The route for a packet from `src` to `dst`, and the table it came from.
    pub fn lookup<'a>(
        &'a self,
        main: &'a RouteTable,
        src: Option<Ipv4Addr>,
        dst: Ipv4Addr,
    ) -> Option<&'a Route> {
        for r in &self.rules {
            let from_ok = match (r.from, src) {
                (None, _) => true,
                (Some(f), Some(s)) => f.contains(s),
                (Some(_), None) => false,
            };
            if !from_ok || !r.to.is_none_or(|t| t.contains(dst)) {
                continue;
            }
            let table = if r.table == MAIN_TABLE { Some(main) } else { self.tables.get(&r.table) };
            if let Some(route) = table.and_then(|t| t.lookup(dst)) {
                return Some(route);
            }
        }
        main.lookup(dst)
    }

    /// `ip rule show`.
    pub fn render(&self) -> String {
        let mut out = String::from("0:\tfrom all lookup local\n");
        let net = |n: &Ipv4Network| {
            if n.prefix() == 32 { n.ip().to_string() } else { n.to_string() }
        };
        for r in &self.rules {
            let from = r.from.as_ref().map(net).unwrap_or_else(|| "all".into());
            let to = r.to.as_ref().map(|t| format!(" to {}", net(t))).unwrap_or_default();
            let table =
                if r.table == MAIN_TABLE { "main".to_string() } else { r.table.to_string() };
            out.push_str(&format!("{}:\tfrom {from}{to} lookup {table}\n", r.priority));
        }
        out.push_str("32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(dst: &str, dev: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            via: None,
            dev: IfIndex(dev),
            src: None,
            proto: RouteProto::Static,
        }
    }

    #[test]
    fn longest_prefix_wins_and_renders_like_ip_route() {
        let mut t = RouteTable::default();
        t.add(Route {
            via: Some(Ipv4Addr::new(192, 168, 0, 254)),
            proto: RouteProto::Boot,
            ..r("0.0.0.0/0", 2)
        });
        t.add(Route {
            proto: RouteProto::Kernel,
            src: Some(Ipv4Addr::new(10, 244, 1, 1)),
            ..r("10.244.1.0/24", 3)
        });
        t.add(Route {
            proto: RouteProto::Kernel,
            src: Some(Ipv4Addr::new(192, 168, 0, 1)),
            ..r("192.168.0.0/24", 2)
        });
        assert_eq!(t.lookup(Ipv4Addr::new(10, 244, 1, 9)).unwrap().dev, IfIndex(3));
        assert_eq!(t.lookup(Ipv4Addr::new(10, 244, 2, 9)).unwrap().dev, IfIndex(2));
        let names = |i: IfIndex| ["lo", "lo", "eth0", "cbr0"][i.0 as usize].to_string();
        assert_eq!(
            t.render(&names),
            "default via 192.168.0.254 dev eth0\n\
             10.244.1.0/24 dev cbr0 proto kernel scope link src 10.244.1.1\n\
             192.168.0.0/24 dev eth0 proto kernel scope link src 192.168.0.1\n"
        );
    }

    proptest! {
        #[test]
        fn lpm_equals_brute_force(routes in prop::collection::vec((any::<u32>(), 0u8..=32), 0..40), probes in prop::collection::vec(any::<u32>(), 1..40), removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let mut t = RouteTable::default();
            let mut all = Vec::new();
            for (i, (a, len)) in routes.iter().enumerate() {
                let net = Ipv4Network::new(Ipv4Addr::from(*a), *len).unwrap();
                let net = Ipv4Network::new(net.network(), *len).unwrap();
                t.add(Route { dst: net, via: None, dev: IfIndex(i as u32), src: None, proto: RouteProto::Static });
                all.retain(|(n, _): &(Ipv4Network, u32)| *n != net);
                all.push((net, i as u32));
            }
            for k in removed {
                if all.is_empty() {
                    break;
                }
                let (net, dev) = all.remove(k.index(all.len()));
                prop_assert_eq!(t.remove(net).map(|r| r.dev.0), Some(dev));
                prop_assert_eq!(t.remove(net), None);
            }
            for p in probes {
                let a = Ipv4Addr::from(p);
                let brute = all.iter().filter(|(n, _)| n.contains(a)).max_by_key(|(n, _)| n.prefix()).map(|(_, d)| *d);
                prop_assert_eq!(t.lookup(a).map(|r| r.dev.0), brute);
            }
        }
    }
}
