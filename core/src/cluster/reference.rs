//! The reference cluster of the seed article (`podnet demo`, the golden traces), and its AWS
//! VPC CNI variant. The README describes both.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use podnet_netfilter::Proto;

use crate::cloud::{Ingress, IngressPath, IngressRule, PathType};
use crate::cni::{AwsVpcConfig, Cni};
use crate::ids::NodeId;
use crate::kube_proxy::{Service, ServicePort, ServiceType, TargetPort};
use crate::world::Container;

use super::{Cluster, ClusterConfig};

impl Cluster {
    /// The reference cluster of the seed article and `podnet demo` (see the README).
    pub fn seed() -> Cluster {
        Cluster::seed_with(0)
    }

    /// The reference cluster with another random seed.
    pub fn seed_with(seed: u64) -> Cluster {
        let mut c = Cluster::new(ClusterConfig { seed, ..ClusterConfig::default() });
        c.add_node("node1", Ipv4Addr::new(192, 168, 0, 1), "10.244.1.0/24".parse().expect("lit"))
            .expect("seed");
        c.add_node("node2", Ipv4Addr::new(192, 168, 0, 2), "10.244.2.0/24".parse().expect("lit"))
            .expect("seed");
        c.add_node("node3", Ipv4Addr::new(192, 168, 0, 3), "10.244.3.0/24".parse().expect("lit"))
            .expect("seed");
        c.seed_pods(Some([
            Ipv4Addr::new(10, 244, 1, 2),
            Ipv4Addr::new(10, 244, 1, 3),
            Ipv4Addr::new(10, 244, 2, 2),
            Ipv4Addr::new(10, 244, 2, 3),
        ]));
        c.seed_services();
        c.seed_edge();
        c
    }

    /// The reference cluster's pods: pod1 (web, with a sidecar) and pod2 (client) on node1,
    /// pod3 (web) and pod4 (api) on node2; at `ips` (bridge profile) or wherever the CNI
    /// puts them.
    pub(crate) fn seed_pods(&mut self, ips: Option<[Ipv4Addr; 4]>) {
        let web = |app: &str| Container {
            name: app.into(),
            ports: vec![(Proto::TCP, 8080), (Proto::UDP, 8080)],
            named_ports: vec![("http".into(), Proto::TCP, 8080)],
        };
        let (n1, n2) = (NodeId(0), NodeId(1));
        let pods =
            [("pod1", n1, "web"), ("pod2", n1, "client"), ("pod3", n2, "web"), ("pod4", n2, "api")];
        for (i, (name, node, app)) in pods.into_iter().enumerate() {
            let mut containers = vec![web(app)];
            if name == "pod1" {
                // A second container sharing pod1's netns: it reaches "web" over localhost.
                containers.push(Container {
                    name: "sidecar".into(),
                    ports: vec![(Proto::TCP, 9090)],
                    ..Container::default()
                });
            }
            let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
            self.add_pod("default", name, node, ips.map(|a| a[i]), labels, containers)
                .expect("seed pod");
        }
    }

    /// The AWS variant of the reference cluster (see the README): the same nodes, pods,
    /// Services and edge, with the AWS VPC CNI on m5.large nodes in 192.168.0.0/24. The VPC
    /// router is 192.168.0.1, the nodes 192.168.0.11-13; podnet's EC2 hands ENI addresses out
    /// from the top of the subnet (a deterministic choice: EC2 documents no order), so pods get
    /// 192.168.0.254 downward.
    pub fn seed_aws() -> Cluster {
        Cluster::seed_aws_with(0)
    }

    /// The AWS variant of the reference cluster with another random seed.
    pub fn seed_aws_with(seed: u64) -> Cluster {
        let cfg = ClusterConfig {
            seed,
            node_subnet: "192.168.0.0/24".parse().expect("lit"),
            cni: Cni::AwsVpc(AwsVpcConfig::default()),
            ..ClusterConfig::default()
        };
        let mut c = Cluster::try_new(cfg).expect("the reference AWS settings are valid");
        for (i, n) in ["node1", "node2", "node3"].iter().enumerate() {
            c.add_aws_node(n, Ipv4Addr::new(192, 168, 0, 11 + i as u8)).expect("seed node");
        }
        // The edge before the pods: its private addresses (.100, .200) are taken before
        // ipamd's pools grow toward them.
        c.seed_services();
        c.seed_edge();
        c.seed_pods(None);
        c
    }

    pub(crate) fn seed_services(&mut self) {
        let mut web = Service::cluster_ip("default", "web", Ipv4Addr::new(10, 96, 0, 10));
        web.kind = ServiceType::NodePort;
        web.selector = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        web.ports = vec![
            ServicePort {
                name: "http".into(),
                protocol: Proto::TCP,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: 30081,
            },
            ServicePort {
                name: "udp".into(),
                protocol: Proto::UDP,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: 30082,
            },
        ];
        self.add_service(web).expect("the seed's Service fits the default ranges");
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
