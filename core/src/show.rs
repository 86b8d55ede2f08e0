//! Every table podnet prints, by name, as the real tool prints it: the one list the CLI, the
//! Python package and the browser page offer ([`Table`], [`Cluster::show`]).

use std::fmt;
use std::str::FromStr;

use crate::cluster::Cluster;
use crate::error::{ClusterError, UnknownValue};

/// A table of a node (or of a pod, for the routing tables), named as the tool that prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// `iptables-save`, kernel form.
    IptablesSave,
    /// `iptables-save -c`: with each rule's packet and byte counters.
    IptablesSaveCounters,
    /// What kube-proxy writes for the node: its `iptables-restore` payload, or in nftables
    /// mode its `nft -f` transaction.
    KubeProxyRules,
    /// `ipvsadm -Ln`.
    Ipvsadm,
    /// `ipset list`.
    Ipset,
    /// `nft list ruleset`.
    Nft,
    /// `conntrack -L`.
    Conntrack,
    /// `ip route` (a node, or `pod/NS/NAME`).
    Routes,
    /// `ip route show table local` (a node, or `pod/NS/NAME`): the host's own addresses.
    RoutesLocal,
    /// `ip neigh` (a node, or `pod/NS/NAME`).
    Neigh,
    /// `bridge fdb show br cbr0`.
    Fdb,
    /// `ip rule show` (a node, or `pod/NS/NAME`).
    IpRule,
    /// ipamd's ENIs (the AWS VPC CNI profile).
    Enis,
    /// The kernel log lines `LOG` rules wrote (`dmesg`, without timestamps).
    Dmesg,
    /// How a node's imported `iptables-save` differs from what kube-proxy would write.
    Drift,
}

impl Table {
    /// Every table, in the order help texts list them.
    pub const ALL: [Table; 15] = [
        Table::IptablesSave,
        Table::IptablesSaveCounters,
        Table::KubeProxyRules,
        Table::Ipvsadm,
        Table::Ipset,
        Table::Nft,
        Table::Conntrack,
        Table::Routes,
        Table::RoutesLocal,
        Table::Neigh,
        Table::Fdb,
        Table::IpRule,
        Table::Enis,
        Table::Dmesg,
        Table::Drift,
    ];

    /// The table's name, as [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Table::IptablesSave => "iptables-save",
            Table::IptablesSaveCounters => "iptables-save -c",
            Table::KubeProxyRules => "kube-proxy-rules",
            Table::Ipvsadm => "ipvsadm",
            Table::Ipset => "ipset",
            Table::Nft => "nft",
            Table::Conntrack => "conntrack",
            Table::Routes => "routes",
            Table::RoutesLocal => "routes-local",
            Table::Neigh => "neigh",
            Table::Fdb => "fdb",
            Table::IpRule => "ip-rule",
            Table::Enis => "enis",
            Table::Dmesg => "dmesg",
            Table::Drift => "drift",
        }
    }
}

/// A table's name (`iptables-save`, `iptables-save -c`, `conntrack`, `routes`, …);
/// `iptables` is read as `iptables-save`.
impl FromStr for Table {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Table, UnknownValue> {
        if s == "iptables" {
            return Ok(Table::IptablesSave);
        }
        Table::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| UnknownValue {
            what: "table",
            value: s.into(),
            expected: "iptables-save, iptables-save -c, kube-proxy-rules, ipvsadm, ipset, nft, \
                       conntrack, routes, routes-local, neigh, fdb, ip-rule, enis, dmesg or drift",
        })
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Cluster {
    /// Table `table` of `who` (a node's name, or `pod/NS/NAME` for the routing tables), as
    /// the real tool prints it.
    pub fn show(&self, table: Table, who: &str) -> Result<String, ClusterError> {
        match table {
            Table::IptablesSave => self.iptables_save(who),
            Table::IptablesSaveCounters => self.iptables_save_with(who, true),
            Table::KubeProxyRules => self.kube_proxy_payload(who),
            Table::Ipvsadm => self.ipvsadm(who),
            Table::Ipset => self.ipset_list(who),
            Table::Nft => self.nft_list_ruleset(who),
            Table::Conntrack => self.conntrack(who),
            Table::Routes => self.routes(who),
            Table::RoutesLocal => self.routes_local(who),
            Table::Neigh => self.neigh(who),
            Table::Fdb => self.fdb(who),
            Table::IpRule => self.ip_rules(who),
            Table::Enis => self.enis(who),
            Table::Dmesg => self.kernel_log(who),
            Table::Drift => self.iptables_drift(who),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_reads_back_its_name() {
        for t in Table::ALL {
            assert_eq!(t.name().parse::<Table>(), Ok(t));
        }
        assert_eq!("iptables".parse::<Table>(), Ok(Table::IptablesSave));
        assert!("iptable".parse::<Table>().unwrap_err().to_string().contains("unknown table"));
    }
}
