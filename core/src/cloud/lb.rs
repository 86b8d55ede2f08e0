//! Cloud L4 load balancers for LoadBalancer Services, in three models ([`LbMode`]), with
//! the health checks that pick their targets and the security group that
//! loadBalancerSourceRanges make.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::Netfilter;

use crate::cni::CniState;
use crate::datapath::{Fabric, Steer};
use crate::error::ClusterError;
use crate::kube_proxy::{EndpointSlice, ServiceType, Services, health_checks};
use crate::net::route::{Route, RouteProto};
use crate::world::{Owner, World};

use super::gateway::attach_to_vpc;
use super::{CloudLb, Edge, LbMode, Vpc};

impl Edge {
    /// Adds a cloud L4 load balancer for LoadBalancer Service `service` (`svc/NS/NAME`): a
    /// namespace on the VPC subnet with `private_ip`, published as `public_ip` by the
    /// internet gateway. With [`LbMode::PassThrough`] the VPC routes the public IP to it and
    /// the IP becomes the Service's `status.loadBalancer.ingress` IP. The caller syncs what
    /// follows (the gateway, the load balancers, kube-proxy).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_lb(
        &mut self,
        w: &mut World,
        cni: &mut CniState,
        services: &mut Services,
        net: &Vpc,
        service: &str,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
        mode: LbMode,
    ) -> Result<(), ClusterError> {
        let key = service.strip_prefix("svc/").unwrap_or(service).to_string();
        let Some(svc) =
            services.list.iter().position(|s| format!("{}/{}", s.namespace, s.name) == key)
        else {
            return Err(ClusterError::NotFound {
                kind: "service",
                name: service.into(),
                known: Vec::new(),
                fix: None,
            });
        };
        if services.list[svc].kind != ServiceType::LoadBalancer {
            return Err(ClusterError::Refused {
                what: format!("service {key} is not of type LoadBalancer"),
                fix: "a cloud load balancer serves only LoadBalancer Services; set spec.type: LoadBalancer",
            });
        }
        if self.public_ip_taken(public_ip) {
            return Err(ClusterError::AddressTaken {
                addr: public_ip,
                why: "it is already a public IP of a node or load balancer; pick a free one".into(),
            });
        }
        cni.take_vpc_address(private_ip)?;
        let ns = w.add_netns(&format!("lb/{key}"), Owner::Router, true);
        w.netns[ns.idx()].sysctl.ip_forward = true;
        w.netns[ns.idx()].nf = Some(Box::new(Netfilter::new(net.seed ^ 0x4c42 ^ u64::from(ns.0))));
        attach_to_vpc(w, net, ns, "lb0", private_ip);
        self.lbs.push(CloudLb {
            service: key,
            public_ip,
            private_ip,
            netns: ns,
            mode,
            targets: Vec::new(),
        });
        if mode == LbMode::PassThrough {
            // The VPC routes the public address to the LB, which keeps it as destination.
            let vpc = w.vpc;
            if let Some((dev, _, _)) = w.route(vpc, None, private_ip) {
                w.netns[vpc.idx()].routes.add(Route {
                    dst: Ipv4Network::new(public_ip, 32).expect("valid"),
                    via: Some(private_ip),
                    dev,
                    src: None,
                    proto: RouteProto::Static,
                });
            }
            let s = &mut services.list[svc];
            if !s.lb_ips.contains(&public_ip) {
                s.lb_ips.push(public_ip);
            }
        }
        Ok(())
    }

    /// Re-programs every cloud load balancer: its targets (the nodes passing the health
    /// check), its listener rules (DNAT to `nodeIP:nodePort`, plus SNAT to itself in
    /// [`LbMode::Proxy`]) and its security group (loadBalancerSourceRanges). A
    /// [`LbMode::PassThrough`] LB has no rules: kube-proxy on the node does the work.
    pub(crate) fn sync_lbs(
        &mut self,
        w: &mut World,
        fabric: &mut Fabric,
        services: &Services,
        slices: &[EndpointSlice],
    ) {
        if self.lbs.is_empty() {
            return;
        }
        self.sync_lbs_rules(w, services, slices);
        self.sync_fabric(w, fabric);
    }

    fn sync_lbs_rules(&mut self, w: &mut World, services: &Services, slices: &[EndpointSlice]) {
        for i in 0..self.lbs.len() {
            let lb = self.lbs[i].clone();
            let Some(svc) =
                services.list.iter().find(|s| format!("{}/{}", s.namespace, s.name) == lb.service)
            else {
                continue;
            };
            // Health checks: with externalTrafficPolicy Local the LB probes each node's
            // healthCheckNodePort, where kube-proxy answers 200 only with local endpoints
            // (the answer is the one the node's server gives; see `HealthCheck`); nodes
            // that fail get no traffic.
            let passes = |node: &str| {
                health_checks(node, std::slice::from_ref(svc), slices)
                    .first()
                    .is_none_or(|h| h.healthy())
            };
            let mut nodes: Vec<Ipv4Addr> =
                w.nodes.iter().filter(|n| passes(&n.name)).map(|n| n.ip).collect();
            if nodes.is_empty() {
                // Every target failing its health check: the LB fails open to all of them.
                nodes = w.nodes.iter().map(|n| n.ip).collect();
            }
            self.lbs[i].targets = nodes.clone();
            if lb.mode == LbMode::PassThrough {
                if let Some(nf) = w.netns[lb.netns.idx()].nf.as_mut() {
                    nf.tables_mut()
                        .restore("*nat\nCOMMIT\n*filter\nCOMMIT\n", false)
                        .expect("empty tables parse");
                }
                continue;
            }
            let mut text = String::from(
                "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:LB-TARGETS - [0:0]\n",
            );
            // loadBalancerSourceRanges: the LB's security group admits only those sources.
            let mut filter = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:LB-SOURCE-RANGES - [0:0]\n",
            );
            if !svc.lb_source_ranges.is_empty() {
                let _ = writeln!(
                    filter,
                    "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"{}: loadBalancerSourceRanges\" -j LB-SOURCE-RANGES",
                    lb.service
                );
                for r in &svc.lb_source_ranges {
                    let _ = writeln!(filter, "-A LB-SOURCE-RANGES -s {r} -j RETURN");
                }
                let _ = writeln!(
                    filter,
                    "-A LB-SOURCE-RANGES -m comment --comment \"source not in loadBalancerSourceRanges\" -j DROP"
                );
            }
            filter.push_str("COMMIT\n");
            for p in svc.ports.iter().filter(|p| p.node_port != 0) {
                let proto = p.protocol;
                let chain = format!("LB-{}-{}", proto.to_string().to_uppercase(), p.port);
                let _ = writeln!(text, ":{chain} - [0:0]");
                let _ = writeln!(
                    text,
                    "-A PREROUTING -d {} -p {proto} -m {proto} --dport {} -m comment --comment \"{} listener {proto}/{}\" -j {chain}",
                    lb.private_ip, p.port, lb.service, p.port
                );
                let n = nodes.len();
                for (i, ip) in nodes.iter().enumerate() {
                    let stat = if i + 1 < n {
                        format!(
                            " -m statistic --mode random --probability {:.10}",
                            1.0 / (n - i) as f64
                        )
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        text,
                        "-A {chain} -m comment --comment \"target {ip}:{}\"{stat} -j DNAT --to-destination {ip}:{}",
                        p.node_port, p.node_port
                    );
                }
            }
            if lb.mode == LbMode::Proxy {
                // A full proxy: the node sees the load balancer as the source.
                let _ = writeln!(
                    text,
                    "-A POSTROUTING -m conntrack --ctstate DNAT -m comment --comment \"{}: source is the load balancer\" -j SNAT --to-source {}",
                    lb.service, lb.private_ip
                );
            }
            text.push_str("COMMIT\n");
            if let Some(nf) = w.netns[lb.netns.idx()].nf.as_mut() {
                nf.tables_mut()
                    .restore(&format!("{filter}{text}"), false)
                    .expect("generated load balancer rules parse");
            }
        }
    }

    /// Tells the fabric what the load balancers need of it: a pass-through LB spreads flows
    /// over its targets by a flow hash (and the internet gateway answers ARP for its
    /// address, which it routes inward); the VPC sends the replies of flows a
    /// client-IP-preserving LB sent back to that LB.
    fn sync_fabric(&self, w: &World, fabric: &mut Fabric) {
        let vpc = w.vpc;
        fabric.steer = self
            .lbs
            .iter()
            .filter_map(|l| match l.mode {
                LbMode::Proxy => None,
                LbMode::PreserveClientIp => Some(Steer::ReplyTo {
                    at: vpc,
                    tracked_in: l.netns,
                    addr: l.private_ip,
                    why: format!(
                        "VPC: a reply of a flow the load balancer of {} sent with the client's address (client-IP preservation): back to the LB {}",
                        l.service, l.private_ip
                    ),
                }),
                LbMode::PassThrough => Some(Steer::Spread {
                    at: l.netns,
                    targets: l.targets.clone(),
                    who: format!("load balancer of {} (pass-through)", l.service),
                }),
            })
            .collect();
        if let Some(igw) = self.igw {
            let inward: std::collections::BTreeSet<Ipv4Addr> = self
                .lbs
                .iter()
                .filter(|l| l.mode == LbMode::PassThrough)
                .map(|l| l.public_ip)
                .collect();
            fabric.proxy_arp_mut(igw, None).addrs = inward;
        }
    }
}
