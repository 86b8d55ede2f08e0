//! The cloud edge, after an AWS VPC as the seed article describes it:
//!
//! - an **internet gateway** (its own namespace `igw`) doing 1:1 NAT between each node's
//!   (and each load balancer's) private address and its public one, with netfilter rules
//!   (`DNAT` in PREROUTING, `SNAT` in POSTROUTING) so every rewrite is traced like any other;
//! - a **NAT gateway** (namespace `natgw`) for nodes without a public address: the VPC
//!   router sends their internet-bound traffic to it (policy rules, table 200) and it
//!   translates many-to-one before the internet gateway maps its own address;
//! - **hosts on the internet** (`host/NAME`, smoltcp stacks serving TCP and UDP 80);
//! - **node egress masquerade** as ip-masq-agent programs it: traffic leaving for anything
//!   outside the non-masquerade CIDRs (the cluster CIDR and the VPC CIDR) is masqueraded to
//!   the node's address;
//! - **cloud L4 load balancers** for LoadBalancer Services, in three models ([`LbMode`]):
//!   AWS instance mode as a full proxy (the LB picks a node per flow, seeded, and sends to
//!   `nodeIP:nodePort` from its private address); an NLB with client-IP preservation (the
//!   node sees the client, and the VPC hands the node's replies back to the LB); and the LB
//!   IP passed through to the nodes (GCP, MetalLB), where kube-proxy's own LB-IP rules
//!   apply and replies go straight back from the node;
//! - **health checks**: with externalTrafficPolicy Local the LB sends only to nodes whose
//!   kube-proxy health-check server (`healthCheckNodePort`) answers 200, and
//!   loadBalancerSourceRanges are the LB's security group in the AWS models (kube-proxy's
//!   `KUBE-FW` chains and `KUBE-PROXY-FIREWALL` enforce them in the pass-through model).
//!
//! Differences from AWS, on purpose: the L4 load balancer is modelled as a NAT hop (DNAT to
//! the node, SNAT to its private address) rather than a TCP-terminating proxy; addresses,
//! ports and the path are what a full proxy shows, but the TCP handshake runs end to end.
//! The LB's health verdict is computed from the same state the node's health-check server
//! answers from; the probes themselves are not sent on the wire (any trace can send one).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use podnet_netfilter::{Netfilter, Proto};

use crate::cluster::{Cluster, DeviceKind, Owner};
use crate::datapath::Steer;
use crate::ids::NetnsId;
use crate::kube_proxy::{Service, ServicePort, ServiceType, TargetPort};
use crate::net::route::{MAIN_TABLE, PolicyRule, Route, RouteProto};

/// The link between the VPC router and the internet gateway.
const LINK_VPC: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 1);
const LINK_IGW: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 2);

/// How a cloud L4 load balancer hands a flow to a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum LbMode {
    /// AWS instance mode as a full proxy (a CLB, or an NLB with client-IP preservation
    /// off): the LB sends to `nodeIP:nodePort` from its own private address.
    #[default]
    Proxy,
    /// NLB with client-IP preservation: the LB sends to `nodeIP:nodePort` keeping the
    /// client's address; the VPC returns the node's replies to the LB, which restores its
    /// own address as their source.
    PreserveClientIp,
    /// The LB IP passed through to the nodes (a GCP network LB, MetalLB): the Service's
    /// `status.loadBalancer.ingress` holds the public IP, the LB forwards each flow
    /// unchanged to a node (flow hash), kube-proxy's own LB-IP rules (`KUBE-EXT`,
    /// `KUBE-FW`, loadBalancerSourceRanges) take it from there, and replies leave the node
    /// straight to the client from the LB IP (direct server return).
    PassThrough,
}

/// A cloud L4 load balancer in front of a Service's node ports.
#[derive(Clone, Debug)]
pub struct CloudLb {
    /// The Service (`NS/NAME`).
    pub service: String,
    /// Public address (through the internet gateway).
    pub public_ip: Ipv4Addr,
    /// Private address in the VPC subnet.
    pub private_ip: Ipv4Addr,
    /// Its namespace.
    pub netns: NetnsId,
    /// How it hands flows to nodes.
    pub mode: LbMode,
    /// The nodes it sends to: those passing the health check (`healthCheckNodePort` for
    /// externalTrafficPolicy Local), or all of them when none passes (AWS fails open).
    pub targets: Vec<Ipv4Addr>,
}

/// An Application Load Balancer for an Ingress (target type instance).
#[derive(Clone, Debug)]
pub struct Alb {
    /// The Ingress (`NS/NAME`).
    pub ingress: crate::ingress::Ingress,
    /// Public address.
    pub public_ip: Ipv4Addr,
    /// Private address in the VPC subnet.
    pub private_ip: Ipv4Addr,
    /// Its namespace.
    pub netns: NetnsId,
    /// Listener rules on port 80, ordered, with their targets.
    pub rules: Vec<crate::ingress::AlbRule>,
}

/// An in-cluster Ingress controller (ingress-nginx style): a pod that terminates HTTP on
/// `port`, picks a rule of the Ingresses of its class by the Kubernetes matching rules and
/// proxies to the backend Service's ready endpoints (pod IP and target port, round robin)
/// over its own connection. Put a LoadBalancer Service with a cloud load balancer in front
/// of the pod to reach it from outside.
#[derive(Clone, Debug)]
pub struct IngressController {
    /// The controller pod (`NS/NAME`).
    pub pod: String,
    /// The IngressClass it serves. Ingresses without a class go to the first controller.
    pub class: String,
    /// The port it listens on.
    pub port: u16,
    /// Its rules, from every Ingress of its class, with the endpoints behind each.
    pub rules: Vec<crate::ingress::AlbRule>,
    /// The first default backend among those Ingresses.
    pub default_backend: Option<crate::ingress::AlbRule>,
}

/// The edge's state.
#[derive(Clone, Debug, Default)]
pub struct Edge {
    /// ALBs for Ingresses.
    pub albs: Vec<Alb>,
    /// Ingresses for in-cluster controllers.
    pub ingresses: Vec<crate::ingress::Ingress>,
    /// In-cluster Ingress controllers.
    pub controllers: Vec<IngressController>,
    /// The internet gateway's namespace.
    pub igw: Option<NetnsId>,
    /// Public address of each node, by node name.
    pub public_ips: BTreeMap<String, Ipv4Addr>,
    /// Load balancers.
    pub lbs: Vec<CloudLb>,
    /// The internet segment's subnet.
    pub internet: Option<Ipv4Network>,
    /// A NAT gateway for nodes without a public address.
    pub nat_gateway: Option<NatGateway>,
}

impl Edge {
    /// Whether a node, a load balancer, an ALB or the NAT gateway already has `ip`.
    fn public_ip_taken(&self, ip: Ipv4Addr) -> bool {
        self.lbs.iter().any(|l| l.public_ip == ip)
            || self.albs.iter().any(|a| a.public_ip == ip)
            || self.public_ips.values().any(|p| *p == ip)
            || self.nat_gateway.as_ref().is_some_and(|g| g.public_ip == ip)
    }
}

/// An AWS NAT gateway: a namespace in the VPC subnet that translates many-to-one (SNAT to
/// its private address, ports 1024-65535), published as its public address by the internet
/// gateway. The VPC router sends internet-bound traffic from addresses without a public IP
/// of their own (nodes, and pods under external SNAT) to it, as a private subnet's route
/// table `0.0.0.0/0 → nat-gateway` does.
#[derive(Clone, Debug)]
pub struct NatGateway {
    /// Public address.
    pub public_ip: Ipv4Addr,
    /// Private address in the VPC subnet.
    pub private_ip: Ipv4Addr,
    /// Its namespace (`natgw`).
    pub netns: NetnsId,
}

/// The VPC router's policy-rule priorities for NAT gateway routing, and its table.
const NATGW_RULES: std::ops::RangeInclusive<u32> = 1000..=1200;
const NATGW_TABLE: u32 = 200;

impl Cluster {
    /// Adds an internet gateway: a router between the VPC and `internet` (e.g.
    /// 203.0.113.0/24, its own address the subnet's `.254`).
    pub fn add_internet_gateway(&mut self, internet: Ipv4Network) -> NetnsId {
        let link = self.world.add_segment("igw-link");
        let inet = self.world.add_segment("internet");
        let vpc = self.world.vpc;
        let vpc1 = self.world.add_device(vpc, "vpc1", DeviceKind::Ether { segment: link });
        self.world.add_addr(vpc1, Ipv4Network::new(LINK_VPC, 30).expect("valid"));
        self.world.add_default_route(vpc, LINK_IGW, vpc1);
        let igw = self.world.add_netns("igw", Owner::Router, true);
        self.world.netns[igw.idx()].sysctl.ip_forward = true;
        self.world.netns[igw.idx()].nf = Some(Box::new(Netfilter::new(self.cfg.seed ^ 0x1697)));
        let igw0 = self.world.add_device(igw, "igw0", DeviceKind::Ether { segment: link });
        self.world.add_addr(igw0, Ipv4Network::new(LINK_IGW, 30).expect("valid"));
        let inet0 = self.world.add_device(igw, "inet0", DeviceKind::Ether { segment: inet });
        let gw = Ipv4Addr::from(u32::from(internet.broadcast()) - 1);
        self.world.add_addr(inet0, Ipv4Network::new(gw, internet.prefix()).expect("valid"));
        let subnet = self.cfg.node_subnet;
        self.world.netns[igw.idx()].routes.add(Route {
            dst: subnet,
            via: Some(LINK_VPC),
            dev: igw0,
            src: None,
            proto: RouteProto::Static,
        });
        self.edge.igw = Some(igw);
        self.edge.internet = Some(internet);
        self.world.inet_segment = Some(inet);
        igw
    }

    /// Gives a node a public address through the internet gateway (1:1 NAT).
    pub fn set_public_ip(&mut self, node: &str, ip: Ipv4Addr) -> Result<(), crate::ClusterError> {
        let id = self.node_id(node)?;
        self.edge.public_ips.insert(self.world.nodes[id.idx()].name.clone(), ip);
        self.sync_igw();
        Ok(())
    }

    /// Adds a host on the internet serving TCP and UDP `port` (echo; HTTP gets `200 OK`
    /// with its name).
    pub fn add_internet_host(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<NetnsId, crate::ClusterError> {
        let (Some(inet), Some(net)) = (self.world.inet_segment, self.edge.internet) else {
            return Err(crate::ClusterError::NotFound {
                kind: "internet gateway",
                name: name.into(),
                hint: ": add one first (add_internet_gateway)".into(),
            });
        };
        if !net.contains(ip) {
            return Err(crate::ClusterError::OutsideCidr {
                addr: ip,
                what: "the internet segment",
                cidr: net,
            });
        }
        let ns = self.world.add_netns(&format!("host/{name}"), Owner::Host, false);
        let eth0 = self.world.add_device(ns, "eth0", DeviceKind::Ether { segment: inet });
        self.world.add_addr(eth0, Ipv4Network::new(ip, net.prefix()).expect("valid"));
        let gw = Ipv4Addr::from(u32::from(net.broadcast()) - 1);
        self.world.add_default_route(ns, gw, eth0);
        self.world.netns[ns.idx()].ports.insert((Proto::TCP, port), "server".into());
        self.world.netns[ns.idx()].ports.insert((Proto::UDP, port), "server".into());
        Ok(ns)
    }

    /// The cloud L4 load balancers, in the order they were added.
    pub fn load_balancers(&self) -> &[CloudLb] {
        &self.edge.lbs
    }

    /// Adds a cloud L4 load balancer for a LoadBalancer Service: a namespace on the VPC
    /// subnet with `private_ip`, published as `public_ip` by the internet gateway, sending
    /// each flow to a node's nodePort chosen at random (seeded).
    pub fn add_cloud_lb(
        &mut self,
        service: &str,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), crate::ClusterError> {
        self.add_cloud_lb_with(service, public_ip, private_ip, LbMode::Proxy)
    }

    /// [`Cluster::add_cloud_lb`] with a choice of how the LB hands flows to nodes. With
    /// [`LbMode::PassThrough`] the public IP becomes the Service's
    /// `status.loadBalancer.ingress` IP, so kube-proxy programs it on every node.
    pub fn add_cloud_lb_with(
        &mut self,
        service: &str,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
        mode: LbMode,
    ) -> Result<(), crate::ClusterError> {
        let key = service.strip_prefix("svc/").unwrap_or(service).to_string();
        let Some(svc) =
            self.services.list.iter().position(|s| format!("{}/{}", s.namespace, s.name) == key)
        else {
            return Err(crate::ClusterError::NotFound {
                kind: "service",
                name: service.into(),
                hint: String::new(),
            });
        };
        if self.services.list[svc].kind != ServiceType::LoadBalancer {
            return Err(crate::ClusterError::Refused {
                what: format!("service {key} is not of type LoadBalancer"),
                fix: "a cloud load balancer serves only LoadBalancer Services; set spec.type: LoadBalancer",
            });
        }
        if self.edge.public_ip_taken(public_ip) {
            return Err(crate::ClusterError::AddressTaken {
                addr: public_ip,
                why: "it is already a public IP of a node or load balancer; pick a free one".into(),
            });
        }
        self.take_vpc_address(private_ip)?;
        let ns = self.world.add_netns(&format!("lb/{key}"), Owner::Router, true);
        self.world.netns[ns.idx()].sysctl.ip_forward = true;
        self.world.netns[ns.idx()].nf =
            Some(Box::new(Netfilter::new(self.cfg.seed ^ 0x4c42 ^ u64::from(ns.0))));
        self.attach_to_vpc(ns, "lb0", private_ip);
        self.edge.lbs.push(CloudLb {
            service: key,
            public_ip,
            private_ip,
            netns: ns,
            mode,
            targets: Vec::new(),
        });
        if mode == LbMode::PassThrough {
            // The VPC routes the public address to the LB, which keeps it as destination.
            let vpc = self.world.vpc;
            if let Some((dev, _, _)) = self.world.route(vpc, None, private_ip) {
                self.world.netns[vpc.idx()].routes.add(Route {
                    dst: Ipv4Network::new(public_ip, 32).expect("valid"),
                    via: Some(private_ip),
                    dev,
                    src: None,
                    proto: RouteProto::Static,
                });
            }
            let s = &mut self.services.list[svc];
            if !s.lb_ips.contains(&public_ip) {
                s.lb_ips.push(public_ip);
            }
            self.sync_igw();
            self.services_changed();
        } else {
            self.sync_lbs();
            self.sync_igw();
        }
        Ok(())
    }

    /// Adds an ALB for an Ingress, as the AWS Load Balancer Controller builds it (figure 12):
    /// one listener (port 80), one target group per Service named by the Ingress (instance
    /// mode: every node's nodePort), one rule per path, ordered as the controller orders them.
    pub fn add_alb(
        &mut self,
        ingress: crate::ingress::Ingress,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), crate::ClusterError> {
        self.take_vpc_address(private_ip)?;
        let ns = self.world.add_netns(
            &format!("lb/{}/{}", ingress.namespace, ingress.name),
            Owner::Host,
            false,
        );
        self.attach_to_vpc(ns, "eth0", private_ip);
        self.world.netns[ns.idx()].ports.insert((Proto::TCP, 80), "listener".into());
        let rules = self.alb_rules(&ingress)?;
        let spec = crate::host::L7Spec {
            port: 80,
            matching: crate::host::l7::Matching::Alb,
            rules: rules.clone(),
            default: None,
        };
        self.hosts.set_l7(ns, spec);
        self.edge.albs.push(Alb { ingress, public_ip, private_ip, netns: ns, rules });
        self.sync_igw();
        Ok(())
    }

    fn alb_rules(
        &self,
        ing: &crate::ingress::Ingress,
    ) -> Result<Vec<crate::ingress::AlbRule>, crate::ClusterError> {
        use crate::ingress::{AlbRule, PathType};
        let mut rules = Vec::new();
        let target = |svc: &str,
                      port: &str|
         -> Result<(String, Vec<(Ipv4Addr, u16)>), crate::ClusterError> {
            let s = self
                .services
                .list
                .iter()
                .find(|s| s.namespace == ing.namespace && s.name == svc)
                .ok_or_else(|| crate::ClusterError::NotFound {
                    kind: "service",
                    name: format!(
                        "{}/{svc} (backend of ingress {}/{})",
                        ing.namespace, ing.namespace, ing.name
                    ),
                    hint: String::new(),
                })?;
            let p =
                s.ports.iter().find(|p| p.name == port || p.port.to_string() == port).ok_or_else(
                    || crate::ClusterError::NotFound {
                        kind: "service port",
                        name: format!("{}/{svc}:{port}", ing.namespace),
                        hint: String::new(),
                    },
                )?;
            if p.node_port == 0 {
                return Err(crate::ClusterError::NotFound {
                    kind: "nodePort",
                    name: format!("{}/{svc}:{port}", ing.namespace),
                    hint: ": target type instance needs a NodePort or LoadBalancer Service".into(),
                });
            }
            Ok((
                format!("{}/{svc}:{port}", ing.namespace),
                self.world.nodes.iter().map(|n| (n.ip, p.node_port)).collect(),
            ))
        };
        for r in &ing.rules {
            for p in &r.paths {
                let (tg, targets) = target(&p.service, &p.port)?;
                rules.push(AlbRule {
                    host: r.host.clone(),
                    path: p.path.clone(),
                    path_type: p.path_type,
                    target_group: tg,
                    targets,
                });
            }
        }
        crate::ingress::order_rules(&mut rules);
        if let Some((svc, port)) = &ing.default_backend {
            let (tg, targets) = target(svc, port)?;
            rules.push(AlbRule {
                host: None,
                path: "/*".into(),
                path_type: PathType::ImplementationSpecific,
                target_group: tg,
                targets,
            });
        }
        Ok(rules)
    }

    /// Makes pod `NS/NAME` an Ingress controller for `class`, listening on `port` (the pod
    /// must expose it as a containerPort).
    pub fn add_ingress_controller(
        &mut self,
        pod: &str,
        class: &str,
        port: u16,
    ) -> Result<(), crate::ClusterError> {
        let id = self.pod_id(pod)?;
        let p = &self.world.pods[id.idx()];
        let key = format!("{}/{}", p.namespace, p.name);
        if !self.world.netns[p.netns.idx()].ports.contains_key(&(Proto::TCP, port)) {
            return Err(crate::ClusterError::Refused {
                what: format!("pod {key} does not listen on TCP port {port}"),
                fix: "declare it as a containerPort of the controller container",
            });
        }
        if self.edge.controllers.iter().any(|c| c.class == class) {
            return Err(crate::ClusterError::Duplicate {
                kind: "ingress controller for class",
                name: class.into(),
            });
        }
        self.edge.controllers.push(IngressController {
            pod: key,
            class: class.into(),
            port,
            rules: Vec::new(),
            default_backend: None,
        });
        self.hosts.reset(p.netns);
        self.sync_ingress_controllers();
        Ok(())
    }

    /// Adds an Ingress for the in-cluster controllers (see [`Cluster::add_alb`] for the
    /// ALB). Backends that do not exist (yet) answer 503, as ingress-nginx does.
    pub fn add_ingress(
        &mut self,
        ingress: crate::ingress::Ingress,
    ) -> Result<(), crate::ClusterError> {
        crate::kube_proxy::dns_label("namespace", &ingress.namespace, false)?;
        if self
            .edge
            .ingresses
            .iter()
            .any(|i| i.namespace == ingress.namespace && i.name == ingress.name)
        {
            return Err(crate::ClusterError::Duplicate {
                kind: "ingress",
                name: format!("{}/{}", ingress.namespace, ingress.name),
            });
        }
        self.edge.ingresses.push(ingress);
        self.sync_ingress_controllers();
        Ok(())
    }

    /// The in-cluster Ingress controllers.
    pub fn ingress_controllers(&self) -> &[IngressController] {
        &self.edge.controllers
    }

    /// Recomputes each controller's rules and endpoints from its Ingresses and the current
    /// EndpointSlices, as the controller does on every change it watches.
    pub(crate) fn sync_ingress_controllers(&mut self) {
        use crate::ingress::{AlbRule, PathType};
        if self.edge.controllers.is_empty() {
            return;
        }
        let slices = self.endpoint_slices();
        let targets = |ns: &str, svc: &str, port: &str| -> Vec<(Ipv4Addr, u16)> {
            let Some(s) = self.services.list.iter().find(|s| s.namespace == ns && s.name == svc)
            else {
                return Vec::new();
            };
            let Some(p) = s.ports.iter().find(|p| p.name == port || p.port.to_string() == port)
            else {
                return Vec::new();
            };
            slices
                .iter()
                .filter(|sl| sl.namespace == ns && sl.service == svc)
                .flat_map(|sl| {
                    let ep_port = sl
                        .ports
                        .iter()
                        .find(|(n, proto, _)| *n == p.name && *proto == p.protocol)
                        .map(|(_, _, n)| *n);
                    sl.endpoints
                        .iter()
                        .filter(|e| e.ready.unwrap_or(true))
                        .filter_map(move |e| ep_port.map(|n| (e.ip, n)))
                })
                .collect()
        };
        let default_class = self.edge.controllers[0].class.clone();
        let mut updated = Vec::new();
        for ctl in &self.edge.controllers {
            let mut rules = Vec::new();
            let mut default_backend = None;
            for ing in self
                .edge
                .ingresses
                .iter()
                .filter(|i| i.class.as_deref().unwrap_or(default_class.as_str()) == ctl.class)
            {
                for r in &ing.rules {
                    for p in &r.paths {
                        rules.push(AlbRule {
                            host: r.host.clone(),
                            path: p.path.clone(),
                            path_type: p.path_type,
                            target_group: format!("{}/{}:{}", ing.namespace, p.service, p.port),
                            targets: targets(&ing.namespace, &p.service, &p.port),
                        });
                    }
                }
                if default_backend.is_none()
                    && let Some((svc, port)) = &ing.default_backend
                {
                    default_backend = Some(AlbRule {
                        host: None,
                        path: "/".into(),
                        path_type: PathType::Prefix,
                        target_group: format!("{}/{svc}:{port}", ing.namespace),
                        targets: targets(&ing.namespace, svc, port),
                    });
                }
            }
            updated.push((rules, default_backend));
        }
        for (i, (rules, default_backend)) in updated.into_iter().enumerate() {
            let ctl = &mut self.edge.controllers[i];
            ctl.rules = rules;
            ctl.default_backend = default_backend;
            let Ok(id) = self.pod_id(&format!("pod/{}", self.edge.controllers[i].pod)) else {
                continue;
            };
            let ns = self.world.pods[id.idx()].netns;
            let ctl = &self.edge.controllers[i];
            let spec = crate::host::L7Spec {
                port: ctl.port,
                matching: crate::host::l7::Matching::Kubernetes,
                rules: ctl.rules.clone(),
                default: ctl.default_backend.clone(),
            };
            self.hosts.set_l7(ns, spec);
        }
    }

    /// Adds a NAT gateway (see [`NatGateway`]); nodes without a public IP reach the
    /// internet through it.
    pub fn add_nat_gateway(
        &mut self,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), crate::ClusterError> {
        if self.edge.igw.is_none() {
            return Err(crate::ClusterError::NotFound {
                kind: "internet gateway",
                name: "natgw".into(),
                hint: ": a NAT gateway sits behind one; add it first (add_internet_gateway)".into(),
            });
        }
        if self.edge.nat_gateway.is_some() {
            return Err(crate::ClusterError::Duplicate {
                kind: "NAT gateway",
                name: "natgw".into(),
            });
        }
        if self.edge.public_ip_taken(public_ip) {
            return Err(crate::ClusterError::AddressTaken {
                addr: public_ip,
                why: "it is already a public IP of a node or load balancer; pick a free one".into(),
            });
        }
        self.take_vpc_address(private_ip)?;
        let ns = self.world.add_netns("natgw", Owner::Router, true);
        self.world.netns[ns.idx()].sysctl.ip_forward = true;
        let mut nf = Netfilter::new(self.cfg.seed ^ 0x6e61_7467);
        let text = format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING ! -d {} -m comment --comment \"NAT gateway: many-to-one\" -j SNAT --to-source {private_ip}:1024-65535\nCOMMIT\n",
            self.cfg.node_subnet
        );
        nf.tables_mut().restore(&text, false).expect("generated NAT gateway rules parse");
        self.world.netns[ns.idx()].nf = Some(Box::new(nf));
        self.attach_to_vpc(ns, "eth0", private_ip);
        self.edge.nat_gateway = Some(NatGateway { public_ip, private_ip, netns: ns });
        self.sync_igw();
        Ok(())
    }

    /// The VPC router's routing for a NAT gateway: internet-bound traffic from the VPC
    /// subnet goes to it, except from addresses the internet gateway maps themselves
    /// (nodes with public IPs, load balancers, the NAT gateway).
    fn sync_vpc_egress(&mut self) {
        let Some(gw) = self.edge.nat_gateway.clone() else { return };
        let vpc = self.world.vpc;
        let Some((dev, _, _)) = self.world.route(vpc, None, gw.private_ip) else { return };
        let mut public_sources: Vec<Ipv4Addr> = self
            .world
            .nodes
            .iter()
            .filter(|n| self.edge.public_ips.contains_key(&n.name))
            .map(|n| n.ip)
            .collect();
        public_sources.extend(self.edge.lbs.iter().map(|l| l.private_ip));
        public_sources.extend(self.edge.albs.iter().map(|a| a.private_ip));
        public_sources.push(gw.private_ip);
        let (subnet, cluster) = (self.cfg.node_subnet, self.cfg.cluster_cidr);
        let policy = &mut self.world.netns[vpc.idx()].policy;
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

    /// Puts an edge namespace (load balancer, ALB, NAT gateway) on the VPC subnet: a device
    /// with `private_ip` and a default route via the VPC router.
    fn attach_to_vpc(&mut self, ns: NetnsId, dev_name: &str, private_ip: Ipv4Addr) {
        let dev = self.world.add_device(
            ns,
            dev_name,
            DeviceKind::Ether { segment: self.world.vpc_subnet },
        );
        self.world.add_addr(
            dev,
            Ipv4Network::new(private_ip, self.cfg.node_subnet.prefix()).expect("valid"),
        );
        let vpc_router = self.cfg.vpc_router;
        self.world.add_default_route(ns, vpc_router, dev);
    }

    /// Re-programs the internet gateway's 1:1 NAT from the public addresses.
    pub(crate) fn sync_igw(&mut self) {
        let Some(igw) = self.edge.igw else { return };
        let mut pairs: Vec<(String, Ipv4Addr, Ipv4Addr)> = Vec::new();
        for n in &self.world.nodes {
            if let Some(p) = self.edge.public_ips.get(&n.name) {
                pairs.push((format!("node {}", n.name), n.ip, *p));
            }
        }
        for lb in self.edge.lbs.iter().filter(|l| l.mode != LbMode::PassThrough) {
            pairs.push((format!("load balancer of {}", lb.service), lb.private_ip, lb.public_ip));
        }
        // Pass-through LB addresses are routed into the VPC unchanged (the gateway answers
        // ARP for them on the internet side).
        for lb in self.edge.lbs.iter().filter(|l| l.mode == LbMode::PassThrough) {
            let dst = Ipv4Network::new(lb.public_ip, 32).expect("valid");
            if self.world.netns[igw.idx()].routes.lookup(lb.public_ip).is_none_or(|r| r.dst != dst)
            {
                let igw0 = self.world.dev_named(igw, "igw0").expect("igw has igw0");
                self.world.netns[igw.idx()].routes.add(Route {
                    dst,
                    via: Some(LINK_VPC),
                    dev: igw0,
                    src: None,
                    proto: RouteProto::Static,
                });
            }
        }
        for alb in &self.edge.albs {
            pairs.push((
                format!("ALB of ingress {}/{}", alb.ingress.namespace, alb.ingress.name),
                alb.private_ip,
                alb.public_ip,
            ));
        }
        if let Some(gw) = &self.edge.nat_gateway {
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
        let inet0 = self.world.dev_named(igw, "inet0").expect("igw has inet0");
        for (_, _, public) in &pairs {
            if !self.world.devs[inet0.idx()].addrs.iter().any(|a| a.ip() == *public) {
                self.world.add_addr(inet0, Ipv4Network::new(*public, 32).expect("valid"));
            }
        }
        if let Some(nf) = self.world.netns[igw.idx()].nf.as_mut() {
            nf.tables_mut().restore(&text, false).expect("generated gateway rules parse");
        }
        self.sync_vpc_egress();
    }

    /// Re-programs every cloud load balancer: its targets (the nodes passing the health
    /// check), its listener rules (DNAT to `nodeIP:nodePort`, plus SNAT to itself in
    /// [`LbMode::Proxy`]) and its security group (loadBalancerSourceRanges). A
    /// [`LbMode::PassThrough`] LB has no rules: kube-proxy on the node does the work.
    pub(crate) fn sync_lbs(&mut self) {
        if self.edge.lbs.is_empty() {
            return;
        }
        self.sync_lbs_rules();
        self.sync_fabric();
    }

    fn sync_lbs_rules(&mut self) {
        let slices = self.endpoint_slices();
        for i in 0..self.edge.lbs.len() {
            let lb = self.edge.lbs[i].clone();
            let Some(svc) = self
                .services
                .list
                .iter()
                .find(|s| format!("{}/{}", s.namespace, s.name) == lb.service)
            else {
                continue;
            };
            // Health checks: with externalTrafficPolicy Local the LB probes each node's
            // healthCheckNodePort, where kube-proxy answers 200 only with local endpoints
            // (the answer is the one the node's server gives; see `HealthCheck`); nodes
            // that fail get no traffic.
            let passes = |node: &str| {
                crate::kube_proxy::health_checks(node, std::slice::from_ref(svc), &slices)
                    .first()
                    .is_none_or(|h| h.healthy())
            };
            let mut nodes: Vec<Ipv4Addr> =
                self.world.nodes.iter().filter(|n| passes(&n.name)).map(|n| n.ip).collect();
            if nodes.is_empty() {
                // Every target failing its health check: the LB fails open to all of them.
                nodes = self.world.nodes.iter().map(|n| n.ip).collect();
            }
            self.edge.lbs[i].targets = nodes.clone();
            if lb.mode == LbMode::PassThrough {
                if let Some(nf) = self.world.netns[lb.netns.idx()].nf.as_mut() {
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
            if let Some(nf) = self.world.netns[lb.netns.idx()].nf.as_mut() {
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
    fn sync_fabric(&mut self) {
        let vpc = self.world.vpc;
        self.fabric.steer = self
            .edge
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
        if let Some(igw) = self.edge.igw {
            let inward: std::collections::BTreeSet<Ipv4Addr> = self
                .edge
                .lbs
                .iter()
                .filter(|l| l.mode == LbMode::PassThrough)
                .map(|l| l.public_ip)
                .collect();
            self.fabric.proxy_arp_mut(igw, None).addrs = inward;
        }
    }

    /// A node's egress SNAT: ip-masq-agent's rules in the bridge profile, the AWS VPC CNI's
    /// `AWS-SNAT-CHAIN-0` (naming the node's own address) in the AWS profile.
    pub(crate) fn egress_rules(&self, node: &crate::cluster::Node) -> String {
        if self.aws.is_some() { self.aws_snat_rules(node.ip) } else { self.masq_agent_rules() }
    }

    /// ip-masq-agent's rules for a node: masquerade everything leaving for destinations
    /// outside the non-masquerade CIDRs.
    pub(crate) fn masq_agent_rules(&self) -> String {
        format!(
            "*nat\n:IP-MASQ-AGENT - [0:0]\n\
-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n\
-A IP-MASQ-AGENT -d {} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n\
-A IP-MASQ-AGENT -d {} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n\
-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE\n\
COMMIT\n",
            self.cfg.cluster_cidr, self.cfg.node_subnet
        )
    }

    /// The seed's edge: public node IPs, the internet host, Service `default/api` with its
    /// cloud load balancer.
    pub(crate) fn seed_edge(&mut self) {
        self.add_internet_gateway("203.0.113.0/24".parse().expect("lit"));
        for (i, n) in ["node1", "node2", "node3"].iter().enumerate() {
            self.set_public_ip(n, Ipv4Addr::new(203, 0, 113, 1 + i as u8)).expect("seed node");
        }
        self.add_internet_host("internet", Ipv4Addr::new(203, 0, 113, 10), 80).expect("seed host");
        let mut api = Service::cluster_ip("default", "api", Ipv4Addr::new(10, 96, 0, 20));
        api.kind = ServiceType::LoadBalancer;
        api.selector = Some(BTreeMap::from([("app".to_string(), "api".to_string())]));
        api.ports = vec![ServicePort {
            name: "http".into(),
            protocol: Proto::TCP,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: 30080,
        }];
        self.add_service(api).expect("seed service");
        self.add_cloud_lb(
            "svc/default/api",
            Ipv4Addr::new(203, 0, 113, 100),
            Ipv4Addr::new(192, 168, 0, 100),
        )
        .expect("seed lb");
        use crate::ingress::{Ingress, IngressPath, IngressRule, PathType};
        let path = |p: &str, svc: &str| IngressPath {
            path: p.into(),
            path_type: PathType::Prefix,
            service: svc.into(),
            port: "80".into(),
        };
        let shop = Ingress {
            namespace: "default".into(),
            name: "shop".into(),
            rules: vec![
                IngressRule { host: None, paths: vec![path("/web", "web"), path("/api", "api")] },
                IngressRule {
                    host: Some("shop.example.com".into()),
                    paths: vec![path("/", "web")],
                },
            ],
            default_backend: None,
            ..Ingress::default()
        };
        self.add_alb(shop, Ipv4Addr::new(203, 0, 113, 200), Ipv4Addr::new(192, 168, 0, 200))
            .expect("seed alb");
    }
}
