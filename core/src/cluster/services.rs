//! The façade's Services: what the API server, the EndpointSlice controller and
//! kube-proxy do when Services, slices or pods change, and the tables kube-proxy leaves on a
//! node.

use std::net::Ipv4Addr;

use crate::error::ClusterError;
use crate::kube_proxy::{EndpointSlice, HealthCheck, NodeSetup, ProxyMode, Service, health_checks};
use crate::world::Node;

use super::Cluster;

impl Cluster {
    /// Adds a Service and re-syncs every node. As the API server does, its ClusterIP and
    /// nodePorts are reserved (a conflict is an error) and a NodePort or LoadBalancer
    /// Service's unset nodePorts are allocated; see [`Cluster::allocate_cluster_ip`] for a
    /// Service without a requested ClusterIP.
    pub fn add_service(&mut self, svc: Service) -> Result<(), ClusterError> {
        self.services.add(svc)?;
        self.services_changed();
        Ok(())
    }

    /// A free ClusterIP from the Service CIDR, as the API server picks one for a Service
    /// that requests none: random (seeded) in the upper band, the lower band kept for
    /// static requests. It is reserved when a Service carrying it is added with
    /// [`Cluster::add_service`].
    pub fn allocate_cluster_ip(&mut self) -> Result<Ipv4Addr, ClusterError> {
        self.services.free_cluster_ip()
    }

    /// Adds an EndpointSlice for a Service without selector, and re-syncs every node.
    pub fn add_endpoint_slice(&mut self, slice: EndpointSlice) {
        self.services.slices.push(slice);
        self.services_changed();
    }

    /// Removes a Service (`svc/NS/NAME`) and re-syncs every node.
    pub fn delete_service(&mut self, key: &str) -> Result<(), ClusterError> {
        self.services.delete(key)?;
        self.services_changed();
        Ok(())
    }

    /// Sets a pod's Ready condition; its endpoints follow and every node re-syncs.
    pub fn set_ready(&mut self, pod: &str, ready: bool) -> Result<(), ClusterError> {
        let id = self.pod_id(pod)?;
        self.world.pods[id.idx()].ready = ready;
        self.services_changed();
        Ok(())
    }

    /// The EndpointSlices: those given explicitly, then those the EndpointSlice controller
    /// derives from every Service's selector. Ready follows the pod's Ready condition; a
    /// terminating pod's endpoint is serving and terminating. A named `targetPort` is
    /// resolved per pod from its containers' named ports, so pods whose numbers differ get
    /// their own slices.
    pub fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        self.services.endpoint_slices(&self.world)
    }

    /// kube-proxy's health-check servers on `node`, with what each answers now.
    pub fn health_checks(&self, node: &str) -> Result<Vec<HealthCheck>, ClusterError> {
        let id = self.node_id(node)?;
        let slices = self.endpoint_slices();
        Ok(health_checks(&self.world.nodes[id.idx()].name, &self.services.list, &slices))
    }

    /// Replaces a node's iptables with an `iptables-save` dump of a real node (kernel or
    /// restore form): traces then follow the rules the node really has, and kube-proxy's
    /// syncs leave the node alone. See [`Cluster::iptables_drift`].
    pub fn import_iptables(&mut self, node: &str, text: &str) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        self.services.import(&mut self.world, id, text).map_err(|e| ClusterError::IptablesParse {
            node: node.into(),
            line: e.line,
            column: e.col,
            msg: e.msg,
        })
    }

    /// Runs `iptables-restore [--noflush]` on a node, as an administrator (or another
    /// agent) would, on top of what kube-proxy wrote. kube-proxy's syncs rewrite the filter
    /// and nat tables and keep raw and mangle, so rules meant to stay belong there (or use
    /// [`Cluster::import_iptables`] to pin the whole node).
    pub fn iptables_restore(
        &mut self,
        node: &str,
        text: &str,
        noflush: bool,
    ) -> Result<(), ClusterError> {
        let id = self.node_id(node)?;
        let ns = self.world.nodes[id.idx()].netns;
        if let Some(nf) = self.world.netns[ns.idx()].nf.as_mut() {
            nf.tables_mut().restore(text, noflush).map_err(|e| ClusterError::IptablesParse {
                node: node.into(),
                line: e.line,
                column: e.col,
                msg: e.msg,
            })?;
        }
        Ok(())
    }

    /// How a node's imported rules differ from what podnet's kube-proxy and the egress
    /// agent would write there now, chain by chain in kernel form: `-` lines are expected
    /// but missing, `+` lines are on the node but not expected; a chain whose rules match but
    /// in another order is reported as reordered. Empty when nothing drifted (or nothing
    /// was imported).
    pub fn iptables_drift(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let n = &self.world.nodes[id.idx()];
        let Some(nf) = self.world.netns[n.netns.idx()].nf.as_ref() else {
            return Ok(String::new());
        };
        if !self.services.is_imported(id) {
            return Ok(String::new());
        }
        let expected = self.services.expected_rules(&self.world, n, &self.node_setup(n));
        Ok(podnet_netfilter::table::drift(&expected, nf.tables()))
    }

    /// kube-proxy's restore payload for a node (what it wrote, restore form).
    pub fn kube_proxy_payload(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let n = &self.world.nodes[id.idx()];
        Ok(self.services.payload(&self.world, n, &self.node_setup(n)))
    }

    /// kube-proxy's mode on every node.
    pub fn proxy_mode(&self) -> ProxyMode {
        self.services.mode
    }

    /// Switches kube-proxy's mode and re-syncs every node.
    pub fn set_proxy_mode(&mut self, mode: ProxyMode) {
        self.services.mode = mode;
        self.services_changed();
    }

    /// Sets MASQUERADE `--random-fully` (on by default) and re-syncs.
    pub fn set_random_fully(&mut self, on: bool) {
        self.services.random_fully = on;
        self.services_changed();
    }

    /// `ipvsadm -Ln` of a node.
    pub fn ipvsadm(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let ns = &self.world.netns[self.world.nodes[id.idx()].netns.idx()];
        Ok(ns.nf.as_ref().map(|nf| nf.ipvs.list()).unwrap_or_default())
    }

    /// `nft list ruleset` of a node: its nf_tables tables (kube-proxy's `ip kube-proxy` in
    /// nftables mode), as nftables 1.0 prints them.
    pub fn nft_list_ruleset(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let ns = &self.world.netns[self.world.nodes[id.idx()].netns.idx()];
        Ok(ns.nf.as_ref().map(|nf| nf.nft().list()).unwrap_or_default())
    }

    /// `ipset list` of a node.
    pub fn ipset_list(&self, node: &str) -> Result<String, ClusterError> {
        let id = self.node_id(node)?;
        let ns = &self.world.netns[self.world.nodes[id.idx()].netns.idx()];
        Ok(ns.nf.as_ref().map(|nf| nf.sets.list()).unwrap_or_default())
    }

    /// Everything that follows a change of Services, endpoints or pods: kube-proxy syncs
    /// every node, and the load balancers and Ingress controllers follow the new endpoints.
    /// Deferred while a batch of objects is applied.
    pub(crate) fn services_changed(&mut self) {
        if self.services.sync_deferred {
            return;
        }
        let setups: Vec<NodeSetup> = self.world.nodes.iter().map(|n| self.node_setup(n)).collect();
        let slices = self.services.program(&mut self.world, &mut self.hosts, &setups);
        self.sync_lbs(&slices);
        self.sync_ingress_controllers(&slices);
    }

    /// What kube-proxy's sync needs to know of `node` beyond the world: the range pods'
    /// addresses come from (its local-traffic detector) and the egress SNAT another agent
    /// writes (ip-masq-agent, or the AWS VPC CNI's SNAT chain).
    pub(crate) fn node_setup(&self, node: &Node) -> NodeSetup {
        NodeSetup {
            node_ips: std::iter::once(node.ip)
                .chain(
                    self.world.devs[node.eth0.idx()]
                        .addrs
                        .iter()
                        .map(|a| a.ip())
                        .filter(|a| *a != node.ip),
                )
                .collect(),
            // The pods' range: the cluster CIDR, or the VPC subnet in the AWS profile.
            local_cidr: Some(if self.cni.aws().is_some() {
                self.cfg.node_subnet
            } else {
                self.cfg.cluster_cidr
            }),
            egress: self.cni.snat_rules(node.ip).unwrap_or_else(|| {
                let subnets: Vec<_> = self.world.subnets.iter().map(|s| s.cidr).collect();
                crate::cloud::masq_agent_rules(self.cfg.cluster_cidr, &subnets)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use podnet_netfilter::Proto;

    use super::*;
    use crate::kube_proxy::{ServicePort, ServiceType, TargetPort};

    fn tables(c: &Cluster, node: &str) -> std::sync::Arc<podnet_netfilter::Ruleset> {
        let n = c.node_id(node).unwrap();
        c.world.netns[c.world.nodes[n.idx()].netns.idx()].nf.as_ref().unwrap().tables().clone()
    }

    #[test]
    fn nodes_with_the_same_rules_share_one_copy_until_one_diverges() {
        use std::sync::Arc;
        let mut c = Cluster::seed();
        let (t1, t2, t3) = (tables(&c, "node1"), tables(&c, "node2"), tables(&c, "node3"));
        assert!(Arc::ptr_eq(&t1, &t2) && Arc::ptr_eq(&t2, &t3));
        let before = c.iptables_save_with("node2", true).unwrap();
        drop((t1, t2, t3));
        // Packets through node1 count on node1's own counters, not in the rules: all three
        // nodes still share one copy of them, and only node1's iptables-save -c counted.
        let t = c.trace("pod/default/pod2", "pod/default/pod1:8080", &Default::default()).unwrap();
        assert!(t.completed);
        assert!(Arc::ptr_eq(&tables(&c, "node1"), &tables(&c, "node2")));
        assert!(Arc::ptr_eq(&tables(&c, "node2"), &tables(&c, "node3")));
        assert_eq!(c.iptables_save_with("node2", true).unwrap(), before);
        let counted = c.iptables_save_with("node1", true).unwrap();
        assert_ne!(counted, before);
        assert!(
            counted.contains(":FORWARD ACCEPT [") && !counted.contains(":FORWARD ACCEPT [0:0]")
        );
        assert!(
            counted.lines().any(|l| l.contains("-j KUBE-FORWARD") && !l.starts_with("[0:0]")),
            "{counted}"
        );
        // A Service with a Local policy and an endpoint on node2 only: node2's rules differ,
        // node1 and node3 (no local endpoint) share theirs again after the sync.
        let mut s = Service::cluster_ip("default", "api-local", Ipv4Addr::new(10, 96, 0, 21));
        s.kind = ServiceType::NodePort;
        s.external_local = true;
        s.selector = Some(BTreeMap::from([("app".to_string(), "api".to_string())]));
        s.ports = vec![ServicePort {
            name: "http".into(),
            protocol: Proto::TCP,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: 30090,
        }];
        c.add_service(s).unwrap();
        assert!(Arc::ptr_eq(&tables(&c, "node1"), &tables(&c, "node3")));
        assert!(!Arc::ptr_eq(&tables(&c, "node1"), &tables(&c, "node2")));
        let (n1, n2) =
            (c.kube_proxy_payload("node1").unwrap(), c.kube_proxy_payload("node2").unwrap());
        assert!(n1.contains("default/api-local:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30090 -j DROP"), "{n1}");
        assert!(!n2.contains("api-local:http has no local endpoints"), "{n2}");
        assert_eq!(
            c.iptables_save("node1").unwrap().contains("KUBE-SVL-"),
            c.iptables_save("node3").unwrap().contains("KUBE-SVL-")
        );
    }
}
