//! The façade's cloud edge: the internet gateway and hosts on the internet, the NAT
//! gateway, cloud load balancers, ALBs and in-cluster Ingress controllers.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::cloud::{CloudLb, Ingress, IngressController, LbMode, Vpc};
use crate::error::ClusterError;
use crate::ids::NetnsId;
use crate::kube_proxy::EndpointSlice;

use super::Cluster;

impl Cluster {
    /// Adds an internet gateway: a router between the VPC and `internet` (e.g.
    /// 203.0.113.0/24, its own address the subnet's `.254`).
    pub fn add_internet_gateway(&mut self, internet: Ipv4Network) -> NetnsId {
        let net = self.vpc();
        self.edge.add_internet_gateway(&mut self.world, &net, internet)
    }

    /// Gives a node a public address through the internet gateway (1:1 NAT).
    pub fn set_public_ip(&mut self, node: &str, ip: Ipv4Addr) -> Result<(), ClusterError> {
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
    ) -> Result<NetnsId, ClusterError> {
        self.edge.add_internet_host(&mut self.world, name, ip, port)
    }

    /// Adds a NAT gateway (see [`NatGateway`](crate::cloud::NatGateway)); nodes without a
    /// public IP reach the internet through it.
    pub fn add_nat_gateway(
        &mut self,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), ClusterError> {
        let net = self.vpc();
        self.edge.add_nat_gateway(&mut self.world, &mut self.cni, &net, public_ip, private_ip)
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
    ) -> Result<(), ClusterError> {
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
    ) -> Result<(), ClusterError> {
        let net = self.vpc();
        self.edge.add_lb(
            &mut self.world,
            &mut self.cni,
            &mut self.services,
            &net,
            service,
            public_ip,
            private_ip,
            mode,
        )?;
        if mode == LbMode::PassThrough {
            self.sync_igw();
            self.services_changed();
        } else {
            let slices = self.endpoint_slices();
            self.sync_lbs(&slices);
            self.sync_igw();
        }
        Ok(())
    }

    /// Adds an ALB for an Ingress, as the AWS Load Balancer Controller builds it (figure 12):
    /// one listener (port 80), one target group per Service named by the Ingress (instance
    /// mode: every node's nodePort), one rule per path, ordered as the controller orders them.
    pub fn add_alb(
        &mut self,
        ingress: Ingress,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), ClusterError> {
        let net = self.vpc();
        self.edge.add_alb(
            &mut self.world,
            &mut self.hosts,
            &mut self.cni,
            &self.services,
            &net,
            ingress,
            public_ip,
            private_ip,
        )
    }

    /// Makes pod `NS/NAME` an Ingress controller for `class`, listening on `port` (the pod
    /// must expose it as a containerPort).
    pub fn add_ingress_controller(
        &mut self,
        pod: &str,
        class: &str,
        port: u16,
    ) -> Result<(), ClusterError> {
        let id = self.pod_id(pod)?;
        self.edge.add_ingress_controller(&self.world, &mut self.hosts, id, class, port)?;
        let slices = self.endpoint_slices();
        self.sync_ingress_controllers(&slices);
        Ok(())
    }

    /// Adds an Ingress for the in-cluster controllers (see [`Cluster::add_alb`] for the
    /// ALB). Backends that do not exist (yet) answer 503, as ingress-nginx does.
    pub fn add_ingress(&mut self, ingress: Ingress) -> Result<(), ClusterError> {
        self.edge.add_ingress(ingress)?;
        let slices = self.endpoint_slices();
        self.sync_ingress_controllers(&slices);
        Ok(())
    }

    /// The in-cluster Ingress controllers.
    pub fn ingress_controllers(&self) -> &[IngressController] {
        &self.edge.controllers
    }

    /// Re-programs the internet gateway's 1:1 NAT from the public addresses.
    pub(crate) fn sync_igw(&mut self) {
        let net = self.vpc();
        self.edge.sync_igw(&mut self.world, &net);
    }

    /// Re-programs every cloud load balancer from the endpoints in `slices`.
    pub(crate) fn sync_lbs(&mut self, slices: &[EndpointSlice]) {
        self.edge.sync_lbs(&mut self.world, &mut self.fabric, &self.services, slices);
    }

    /// Recomputes the Ingress controllers' rules and endpoints from `slices`.
    pub(crate) fn sync_ingress_controllers(&mut self, slices: &[EndpointSlice]) {
        self.edge.sync_ingress_controllers(&self.world, &mut self.hosts, &self.services, slices);
    }

    /// What the cloud edge knows of the VPC.
    fn vpc(&self) -> Vpc {
        Vpc {
            subnet: self.cfg.node_subnet,
            router: self.cfg.vpc_router,
            cluster_cidr: self.cfg.cluster_cidr,
            seed: self.cfg.seed,
        }
    }
}
