//! The VPC's way out: the internet gateway (1:1 NAT between private and public addresses,
//! as netfilter rules so every rewrite is traced), hosts on the internet, and a NAT gateway
//! for nodes without a public address.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use podnet_netfilter::{Netfilter, Proto};

use crate::cni::CniState;
use crate::error::ClusterError;
use crate::ids::NetnsId;
use crate::net::route::{MAIN_TABLE, PolicyRule, Route, RouteProto};
use crate::world::{DeviceKind, Owner, World};

use super::{Edge, LINK_IGW, LINK_VPC, LbMode, NATGW_RULES, NATGW_TABLE, NatGateway, Vpc};

impl Edge {
    /// Adds an internet gateway: a router between the VPC and `internet` (e.g.
    /// 203.0.113.0/24, its own address the subnet's `.254`).
    pub(crate) fn add_internet_gateway(
        &mut self,
        w: &mut World,
        net: &Vpc,
        internet: Ipv4Network,
    ) -> NetnsId {
        let link = w.add_segment("igw-link");
        let inet = w.add_segment("internet");
        let vpc = w.vpc;
        let vpc1 = w.add_device(vpc, "vpc1", DeviceKind::Ether { segment: link });
        w.add_addr(vpc1, Ipv4Network::new(LINK_VPC, 30).expect("valid"));
        w.add_default_route(vpc, LINK_IGW, vpc1);
        let igw = w.add_netns("igw", Owner::Router, true);
        w.netns[igw.idx()].sysctl.ip_forward = true;
        w.netns[igw.idx()].nf = Some(Box::new(Netfilter::new(net.seed ^ 0x1697)));
        let igw0 = w.add_device(igw, "igw0", DeviceKind::Ether { segment: link });
        w.add_addr(igw0, Ipv4Network::new(LINK_IGW, 30).expect("valid"));
        let inet0 = w.add_device(igw, "inet0", DeviceKind::Ether { segment: inet });
        let gw = Ipv4Addr::from(u32::from(internet.broadcast()) - 1);
        w.add_addr(inet0, Ipv4Network::new(gw, internet.prefix()).expect("valid"));
        let subnet = net.subnet;
        w.netns[igw.idx()].routes.add(Route {
            dst: subnet,
            via: Some(LINK_VPC),
            dev: igw0,
            src: None,
            proto: RouteProto::Static,
        });
        self.igw = Some(igw);
        self.internet = Some(internet);
        w.inet_segment = Some(inet);
        igw
    }

    /// Adds a host on the internet serving TCP and UDP `port` (echo; HTTP gets `200 OK`
    /// with its name).
    pub(crate) fn add_internet_host(
        &self,
        w: &mut World,
        name: &str,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<NetnsId, ClusterError> {
        let (Some(inet), Some(net)) = (w.inet_segment, self.internet) else {
            return Err(ClusterError::NotFound {
                kind: "internet gateway",
                name: name.into(),
                known: Vec::new(),
                fix: Some("add one first (add_internet_gateway)"),
            });
        };
        if !net.contains(ip) {
            return Err(ClusterError::OutsideCidr {
                addr: ip,
                what: "the internet segment",
                cidr: net,
            });
        }
        let ns = w.add_netns(&format!("host/{name}"), Owner::Host, false);
        let eth0 = w.add_device(ns, "eth0", DeviceKind::Ether { segment: inet });
        w.add_addr(eth0, Ipv4Network::new(ip, net.prefix()).expect("valid"));
        let gw = Ipv4Addr::from(u32::from(net.broadcast()) - 1);
        w.add_default_route(ns, gw, eth0);
        w.netns[ns.idx()].ports.insert((Proto::TCP, port), "server".into());
        w.netns[ns.idx()].ports.insert((Proto::UDP, port), "server".into());
        Ok(ns)
    }

    /// Adds a NAT gateway (see [`NatGateway`]); nodes without a public IP reach the
    /// internet through it.
    pub(crate) fn add_nat_gateway(
        &mut self,
        w: &mut World,
        cni: &mut CniState,
        net: &Vpc,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), ClusterError> {
        if self.igw.is_none() {
            return Err(ClusterError::NotFound {
                kind: "internet gateway",
                name: "natgw".into(),
                known: Vec::new(),
                fix: Some("a NAT gateway sits behind one; add it first (add_internet_gateway)"),
            });
        }
        if self.nat_gateway.is_some() {
            return Err(ClusterError::Duplicate { kind: "NAT gateway", name: "natgw".into() });
        }
        if self.public_ip_taken(public_ip) {
            return Err(ClusterError::AddressTaken {
                addr: public_ip,
                why: "it is already a public IP of a node or load balancer; pick a free one".into(),
            });
        }
        cni.take_vpc_address(private_ip)?;
        let ns = w.add_netns("natgw", Owner::Router, true);
        w.netns[ns.idx()].sysctl.ip_forward = true;
        let mut nf = Netfilter::new(net.seed ^ 0x6e61_7467);
        let text = format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING ! -d {} -m comment --comment \"NAT gateway: many-to-one\" -j SNAT --to-source {private_ip}:1024-65535\nCOMMIT\n",
            net.subnet
        );
        nf.tables_mut().restore(&text, false).expect("generated NAT gateway rules parse");
        w.netns[ns.idx()].nf = Some(Box::new(nf));
        attach_to_vpc(w, net, ns, "eth0", private_ip);
        self.nat_gateway = Some(NatGateway { public_ip, private_ip, netns: ns });
        self.sync_igw(w, net);
        Ok(())
    }

    /// Re-programs the internet gateway's 1:1 NAT from the public addresses.
    pub(crate) fn sync_igw(&self, w: &mut World, net: &Vpc) {
        let Some(igw) = self.igw else { return };
        let mut pairs: Vec<(String, Ipv4Addr, Ipv4Addr)> = Vec::new();
        for n in &w.nodes {
            if let Some(p) = self.public_ips.get(&n.name) {
                pairs.push((format!("node {}", n.name), n.ip, *p));
            }
        }
        for lb in self.lbs.iter().filter(|l| l.mode != LbMode::PassThrough) {
            pairs.push((format!("load balancer of {}", lb.service), lb.private_ip, lb.public_ip));
        }
        // Pass-through LB addresses are routed into the VPC unchanged (the gateway answers
        // ARP for them on the internet side).
        for lb in self.lbs.iter().filter(|l| l.mode == LbMode::PassThrough) {
            let dst = Ipv4Network::new(lb.public_ip, 32).expect("valid");
            if w.netns[igw.idx()].routes.lookup(lb.public_ip).is_none_or(|r| r.dst != dst) {
                let igw0 = w.dev_named(igw, "igw0").expect("igw has igw0");
                w.netns[igw.idx()].routes.add(Route {
                    dst,
                    via: Some(LINK_VPC),
                    dev: igw0,
                    src: None,
                    proto: RouteProto::Static,
                });
            }
        }
        for alb in &self.albs {
            pairs.push((
                format!("ALB of ingress {}/{}", alb.ingress.namespace, alb.ingress.name),
                alb.private_ip,
                alb.public_ip,
            ));
        }
        if let Some(gw) = &self.nat_gateway {
            pairs.push(("NAT gateway".into(), gw.private_ip, gw.public_ip));
        }
        let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
        for (who, private, public) in &pairs {
            let _ = writeln!(
                text,
                "-A PREROUTING -d {public} -m comment --comment \"igw: public IP of {who}\" -j DNAT --to-destination {private}"
            );
        }
        for (who, private, public) in &pairs {
            let _ = writeln!(
                text,
                "-A POSTROUTING -s {private} -o inet0 -m comment --comment \"igw: public IP of {who}\" -j SNAT --to-source {public}"
            );
        }
        text.push_str("COMMIT\n");
        // The public addresses live on inet0, so the gateway answers ARP for them.
        let inet0 = w.dev_named(igw, "inet0").expect("igw has inet0");
        for (_, _, public) in &pairs {
            if !w.devs[inet0.idx()].addrs.iter().any(|a| a.ip() == *public) {
                w.add_addr(inet0, Ipv4Network::new(*public, 32).expect("valid"));
            }
        }
        if let Some(nf) = w.netns[igw.idx()].nf.as_mut() {
            nf.tables_mut().restore(&text, false).expect("generated gateway rules parse");
        }
        self.sync_vpc_egress(w, net);
    }

    /// The VPC router's routing for a NAT gateway: internet-bound traffic from the VPC
    /// subnet goes to it, except from addresses the internet gateway maps themselves
    /// (nodes with public IPs, load balancers, the NAT gateway).
    fn sync_vpc_egress(&self, w: &mut World, net: &Vpc) {
        let Some(gw) = self.nat_gateway.clone() else { return };
        let vpc = w.vpc;
        let Some((dev, _, _)) = w.route(vpc, None, gw.private_ip) else { return };
        let mut public_sources: Vec<Ipv4Addr> = w
            .nodes
            .iter()
            .filter(|n| self.public_ips.contains_key(&n.name))
            .map(|n| n.ip)
            .collect();
        public_sources.extend(self.lbs.iter().map(|l| l.private_ip));
        public_sources.extend(self.albs.iter().map(|a| a.private_ip));
        public_sources.push(gw.private_ip);
        let (subnet, cluster) = (net.subnet, net.cluster_cidr);
        let policy = &mut w.netns[vpc.idx()].policy;
        policy.rules.retain(|r| !NATGW_RULES.contains(&r.priority));
        let rule = |priority, from, to, table| PolicyRule { priority, from, to, table };
        policy.add_rule(rule(1000, None, Some(subnet), MAIN_TABLE));
        policy.add_rule(rule(1000, None, Some(cluster), MAIN_TABLE));
        for ip in public_sources {
            let host = Some(Ipv4Network::new(ip, 32).expect("valid"));
            policy.add_rule(rule(1100, host, None, MAIN_TABLE));
        }
        policy.add_rule(rule(1200, Some(subnet), None, NATGW_TABLE));
        let mut table = crate::net::route::RouteTable::default();
        table.add(Route {
            dst: "0.0.0.0/0".parse().expect("literal"),
            via: Some(gw.private_ip),
            dev,
            src: None,
            proto: RouteProto::Static,
        });
        policy.tables.insert(NATGW_TABLE, table);
    }
}

/// Puts an edge namespace (load balancer, ALB, NAT gateway) on the VPC subnet: a device
/// with `private_ip` and a default route via the VPC router.
pub(super) fn attach_to_vpc(
    w: &mut World,
    net: &Vpc,
    ns: NetnsId,
    dev_name: &str,
    private_ip: Ipv4Addr,
) {
    let dev = w.add_device(ns, dev_name, DeviceKind::Ether { segment: w.vpc_subnet });
    w.add_addr(dev, Ipv4Network::new(private_ip, net.subnet.prefix()).expect("valid"));
    let vpc_router = net.router;
    w.add_default_route(ns, vpc_router, dev);
}
