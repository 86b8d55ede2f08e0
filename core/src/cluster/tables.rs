//! The façade's tables: each namespace's state as the real tools print it (`ip route`,
//! `ip rule`, `ip neigh`, `bridge fdb`, `conntrack -L`, `iptables-save`, `dmesg`, ipamd's
//! ENIs).

use crate::error::ClusterError;
use crate::net::route::MAIN_TABLE;
use crate::world::DeviceKind;

use super::Cluster;

/// One connection tracking entry, as `conntrack -L` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConntrackEntry {
    /// `tcp`, `udp`, `icmp`, or the protocol number.
    pub proto: String,
    /// Seconds until it expires.
    pub timeout: u64,
    /// The TCP state (`SYN_SENT`, `ESTABLISHED`, `TIME_WAIT`, …); `None` for other protocols.
    pub state: Option<String>,
    /// The tuple of the original direction.
    pub original: ConntrackTuple,
    /// The tuple a reply carries (after NAT).
    pub reply: ConntrackTuple,
    /// No reply seen yet (`[UNREPLIED]`).
    pub unreplied: bool,
    /// `[ASSURED]`: not early-dropped when the table is full.
    pub assured: bool,
    /// The connection mark.
    pub mark: u32,
}

/// A connection tracking tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConntrackTuple {
    /// Source address.
    pub src: std::net::Ipv4Addr,
    /// Destination address.
    pub dst: std::net::Ipv4Addr,
    /// Source port (ICMP echo: the identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: the identifier).
    pub dport: u16,
}

impl Cluster {
    /// `ip route` of a node (or `pod/NS/NAME`).
    pub fn routes(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()].routes.render(&|i| self.world.devs[i.idx()].name.clone()))
    }

    /// `ip route show table local` of a node (or `pod/NS/NAME`).
    pub fn routes_local(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()].local.render(&|i| self.world.devs[i.idx()].name.clone()))
    }

    /// `ip neigh` of a node (or `pod/NS/NAME`).
    pub fn neigh(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()]
            .neigh
            .render(self.world.now, &|i| self.world.devs[i.idx()].name.clone()))
    }

    /// `bridge fdb show br cbr0` of a node.
    pub fn fdb(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let Some(br) = self.world.nodes[id.idx()].bridge else {
            return Ok(String::new());
        };
        let br = &self.world.devs[br.idx()];
        match &br.kind {
            DeviceKind::Bridge(f) => {
                Ok(f.render(&br.name, self.world.now, &|i| self.world.devs[i.idx()].name.clone()))
            }
            _ => Ok(String::new()),
        }
    }

    /// `conntrack -L` of a node.
    pub fn conntrack(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        Ok(self.world.netns[self.world.nodes[id.idx()].netns.idx()]
            .nf
            .as_ref()
            .map(|nf| nf.conntrack.list(self.world.now))
            .unwrap_or_default())
    }

    /// The entries of a node's connection tracking table, oldest first, as
    /// [`Cluster::conntrack`] lists them but as values.
    pub fn conntrack_entries(&self, node: &str) -> Result<Vec<ConntrackEntry>, ClusterError> {
        use podnet_netfilter::conntrack::status;
        let id = self.node_id(node)?;
        let now = self.world.now;
        let Some(nf) = self.world.netns[self.world.nodes[id.idx()].netns.idx()].nf.as_ref() else {
            return Ok(Vec::new());
        };
        let tuple = |t: &podnet_netfilter::Tuple| ConntrackTuple {
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
        };
        Ok(nf
            .conntrack
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(_, e)| ConntrackEntry {
                proto: e.orig.proto.to_string(),
                timeout: (e.expires - now.min(e.expires)).total_millis() / 1000,
                state: (e.orig.proto == podnet_netfilter::Proto::TCP).then(|| e.tcp.to_string()),
                original: tuple(&e.orig),
                reply: tuple(&e.reply),
                unreplied: e.status & status::SEEN_REPLY == 0,
                assured: e.status & status::ASSURED != 0,
                mark: e.mark,
            })
            .collect())
    }

    /// The kernel log lines `LOG` rules wrote in a node's (or `pod/NS/NAME`'s, or the
    /// `vpc`'s) namespace, oldest first, as `dmesg` shows them without timestamps.
    pub fn kernel_log(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()].klog.iter().map(|l| format!("{}\n", l.trim_end())).collect())
    }

    /// `iptables-save` of a node (kernel form).
    pub fn iptables_save(&self, node: &str) -> Result<String, ClusterError> {
        self.iptables_save_with(node, false)
    }

    /// [`Cluster::iptables_save`] with per-rule packet and byte counters when `counters` is
    /// set (`iptables-save -c`).
    pub fn iptables_save_with(&self, node: &str, counters: bool) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let nf = self.world.netns[self.world.nodes[id.idx()].netns.idx()].nf.as_ref();
        Ok(nf
            .map(|nf| nf.save_kernel_form_with(&nf.tables().tables_in_use(), counters))
            .unwrap_or_default())
    }

    /// `ip rule show` of a node (or `pod/NS/NAME`).
    pub fn ip_rules(&self, who: &str) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        Ok(self.world.netns[ns.idx()].policy.render())
    }

    /// `ip route show table N` of a node.
    pub fn route_table(&self, who: &str, table: u32) -> Result<String, ClusterError> {
        let ns = self.netns_of(who)?;
        let n = &self.world.netns[ns.idx()];
        let t = if table == MAIN_TABLE { Some(&n.routes) } else { n.policy.tables.get(&table) };
        Ok(t.map(|t| t.render(&|i| self.world.devs[i.idx()].name.clone())).unwrap_or_default())
    }

    /// ipamd's view of a node: ENIs with their addresses and which pod holds each.
    pub fn enis(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let Some(aws) = self.cni.aws() else {
            return Err(ClusterError::Profile {
                what: format!("enis({node})"),
                profile: self.cni.profile(),
                fix: "ENIs exist in the AWS VPC CNI profile only",
            });
        };
        Ok(aws.enis(&self.world, id))
    }
}
