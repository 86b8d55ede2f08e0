//! ipset, after `net/netfilter/ipset/`: the set types kube-proxy's IPVS mode uses, tested by
//! `-m set --match-set NAME flags`, and listed the way `ipset list` prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::packet::Proto;
use crate::rule::SetFlag;

/// A set type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SetType {
    /// `hash:ip`.
    HashIp,
    /// `hash:ip,port`.
    HashIpPort,
    /// `hash:ip,port,ip`.
    HashIpPortIp,
    /// `hash:ip,port,net`.
    HashIpPortNet,
    /// `hash:net`.
    HashNet,
    /// `bitmap:port`.
    BitmapPort,
}

impl SetType {
    /// The name `ipset` uses.
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::HashNet => "hash:net",
            SetType::BitmapPort => "bitmap:port",
        }
    }
}

/// One member, in the components its type has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetEntry {
    /// First address or network.
    pub net: Option<Ipv4Network>,
    /// Protocol and port.
    pub port: Option<(Proto, u16)>,
    /// Second address or network.
    pub net2: Option<Ipv4Network>,
}

/// A named set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSet {
    /// Its type.
    pub kind: SetType,
    /// The `comment` header (kube-proxy sets one per set).
    pub comment: String,
    /// Members, sorted.
    pub entries: BTreeSet<SetEntry>,
}

/// Why a set operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpSetError {
    /// No set has this name.
    #[error("ipset '{0}' does not exist: create it first")]
    NoSuchSet(String),
    /// The member does not have the type's components.
    #[error("member '{member}' does not fit set '{set}' of type {kind}")]
    BadMember {
        /// The member text.
        member: String,
        /// The set.
        set: String,
        /// Its type.
        kind: &'static str,
    },
}

/// All sets of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSets {
    sets: BTreeMap<String, IpSet>,
}

impl IpSets {
    /// Creates (or empties) a set.
    pub fn create(&mut self, name: &str, kind: SetType, comment: &str) {
        self.sets.insert(
            name.to_string(),
            IpSet { kind, comment: comment.to_string(), entries: BTreeSet::new() },
        );
    }

    /// The set named `name`.
    pub fn get(&self, name: &str) -> Option<&IpSet> {
        self.sets.get(name)
    }

    /// Adds a member given as `ipset add` text (`10.96.0.10,tcp:80`, `30081`, ...).
    pub fn add(&mut self, name: &str, member: &str) -> Result<(), IpSetError> {
        let set = self.sets.get_mut(name).ok_or_else(|| IpSetError::NoSuchSet(name.to_string()))?;
        let e = parse_member(set.kind, member).ok_or_else(|| IpSetError::BadMember {
            member: member.to_string(),
            set: name.to_string(),
            kind: set.kind.name(),
        })?;
        set.entries.insert(e);
        Ok(())
    }

    /// Whether the packet's components, picked per flag, are in the set.
    pub fn test(
        &self,
        name: &str,
        flags: &[SetFlag],
        addr: &dyn Fn(SetFlag) -> Ipv4Addr,
        port: &dyn Fn(SetFlag) -> u16,
        proto: Proto,
    ) -> bool {
        let Some(set) = self.sets.get(name) else { return false };
        let f = |i: usize| flags.get(i).copied().unwrap_or(SetFlag::Dst);
        let has = |pred: &dyn Fn(&SetEntry) -> bool| set.entries.iter().any(pred);
        match set.kind {
            SetType::HashIp => {
                let a = addr(f(0));
                has(&|e| e.net.is_some_and(|n| n.contains(a)))
            }
            SetType::HashNet => {
                let a = addr(f(0));
                has(&|e| e.net.is_some_and(|n| n.contains(a)))
            }
            SetType::BitmapPort => {
                let p = port(f(0));
                has(&|e| e.port.is_some_and(|(_, x)| x == p))
            }
            SetType::HashIpPort => {
                let (a, p) = (addr(f(0)), port(f(1)));
                set.entries.contains(&SetEntry {
                    net: Some(host(a)),
                    port: Some((proto, p)),
                    net2: None,
                })
            }
            SetType::HashIpPortIp => {
                let (a, p, a2) = (addr(f(0)), port(f(1)), addr(f(2)));
                set.entries.contains(&SetEntry {
                    net: Some(host(a)),
                    port: Some((proto, p)),
                    net2: Some(host(a2)),
                })
            }
            SetType::HashIpPortNet => {
                let (a, p, a2) = (addr(f(0)), port(f(1)), addr(f(2)));
                has(&|e| {
                    e.net == Some(host(a))
                        && e.port == Some((proto, p))
                        && e.net2.is_some_and(|n| n.contains(a2))
                })
            }
        }
    }

    /// `ipset list` output for every set, sorted by name.
    pub fn list(&self) -> String {
        let mut out = String::new();
        for (name, set) in &self.sets {
            let _ = writeln!(out, "Name: {name}");
            let _ = writeln!(out, "Type: {}", set.kind.name());
            let _ = writeln!(
                out,
                "Header: family inet hashsize 1024 maxelem 65536 comment \"{}\"",
                set.comment
            );
            let _ = writeln!(out, "Number of entries: {}", set.entries.len());
            out.push_str("Members:\n");
            for e in &set.entries {
                let _ = writeln!(out, "{}", member_text(e));
            }
            out.push('\n');
        }
        out
    }
}

fn host(a: Ipv4Addr) -> Ipv4Network {
    Ipv4Network::new(a, 32).expect("/32 is valid")
}

fn net_text(n: &Ipv4Network) -> String {
    if n.prefix() == 32 { n.ip().to_string() } else { n.to_string() }
}

fn member_text(e: &SetEntry) -> String {
    let mut parts = Vec::new();
    if let Some(n) = e.net {
        parts.push(net_text(&n));
    }
    if let Some((p, port)) = e.port {
        if e.net.is_some() {
            parts.push(format!("{p}:{port}"))
        } else {
            parts.push(port.to_string())
        }
    }
    if let Some(n) = e.net2 {
        parts.push(net_text(&n));
    }
    parts.join(",")
}

fn parse_net(s: &str) -> Option<Ipv4Network> {
    match s.split_once('/') {
        Some((a, p)) => Ipv4Network::new(a.parse().ok()?, p.parse().ok()?).ok(),
        None => Some(host(s.parse().ok()?)),
    }
}

fn parse_port(s: &str) -> Option<(Proto, u16)> {
    match s.split_once(':') {
        Some((p, n)) => Some((Proto::parse(p)?, n.parse().ok()?)),
        None => Some((Proto::TCP, s.parse().ok()?)),
    }
}

fn parse_member(kind: SetType, s: &str) -> Option<SetEntry> {
    let parts: Vec<&str> = s.split(',').collect();
    let e = |net, port, net2| Some(SetEntry { net, port, net2 });
    match (kind, parts.as_slice()) {
        (SetType::HashIp, [a]) => e(Some(host(a.parse().ok()?)), None, None),
        (SetType::HashNet, [n]) => e(Some(parse_net(n)?), None, None),
        (SetType::BitmapPort, [p]) => e(None, Some((Proto::TCP, p.parse().ok()?)), None),
        (SetType::HashIpPort, [a, p]) => e(Some(host(a.parse().ok()?)), Some(parse_port(p)?), None),
        (SetType::HashIpPortIp, [a, p, b]) => {
            e(Some(host(a.parse().ok()?)), Some(parse_port(p)?), Some(host(b.parse().ok()?)))
        }
        (SetType::HashIpPortNet, [a, p, n]) => {
            e(Some(host(a.parse().ok()?)), Some(parse_port(p)?), Some(parse_net(n)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_port_set_matches_dst_dst() {
        let mut s = IpSets::default();
        s.create(
            "KUBE-CLUSTER-IP",
            SetType::HashIpPort,
            "Kubernetes service cluster ip + port for masquerade purpose",
        );
        s.add("KUBE-CLUSTER-IP", "10.96.0.10,tcp:80").unwrap();
        let dst = Ipv4Addr::new(10, 96, 0, 10);
        let a = |_| dst;
        assert!(s.test("KUBE-CLUSTER-IP", &[SetFlag::Dst, SetFlag::Dst], &a, &|_| 80, Proto::TCP));
        assert!(!s.test("KUBE-CLUSTER-IP", &[SetFlag::Dst, SetFlag::Dst], &a, &|_| 80, Proto::UDP));
        assert!(s.add("KUBE-CLUSTER-IP", "10.96.0.10").is_err());
        assert!(s.list().contains("10.96.0.10,tcp:80"));
    }
}
