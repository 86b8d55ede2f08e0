//! `podnet`: a deterministic, explainable model of the Kubernetes pod network.
//!
//! Real Ethernet/ARP/IPv4/TCP/UDP/ICMP bytes (smoltcp's wire types) move through modelled
//! network namespaces, veth pairs, Linux bridges, routing tables and netfilter, programmed
//! the way the CNI bridge plugin and kube-proxy program a real node. Pods run smoltcp host
//! stacks, so handshakes, data and closes are real; nodes forward with podnet's own code,
//! the way Linux does.
//!
//! The layers, bottom up:
//!
//! | module | models |
//! |---|---|
//! | [`net`] | routing tables (LPM), neighbour tables, the bridge FDB |
//! | [`stack`](crate) (internal) | smoltcp host stacks and their echo/HTTP servers and clients |
//! | [`cluster`] | nodes, pods, containers, namespaces, devices, the VPC underlay |
//! | `sim` (internal) | the datapath: veth, bridge with br_netfilter, routing, ARP, hooks |
//! | [`kube_proxy`] | Services and EndpointSlices to kube-proxy's iptables and IPVS state, its health-check servers |
//! | [`cloud`], [`ingress`] | internet and NAT gateways, cloud load balancers (three models), the ALB and an in-cluster Ingress controller |
//! | [`k8s`] | loading a cluster from Kubernetes YAML/JSON |
//! | [`ipam`] | node CIDR, host-local pod IP, ClusterIP and NodePort allocators |
//! | [`vpc_cni`] | the AWS VPC CNI's ipamd: ENI limits, warm pools, prefix delegation |
//! | [`trace`] | one flow end to end, every hop recorded, text and JSON |
//! | [`pcap`] | a traced flow's frames as pcapng, one interface per device |
//! | [`demo`] | the seed article's scenarios on the reference cluster |
//!
//! Netfilter itself (tables, conntrack, NAT) is the `podnet-netfilter` crate.
//!
//! ```
//! let mut c = podnet::Cluster::seed();
//! let t = c.trace("pod/default/pod1", "pod/default/pod2:8080", &Default::default()).unwrap();
//! assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod2"));
//! assert!(t.completed);
//! ```
#![forbid(unsafe_code)]

pub mod cloud;
pub mod cluster;
pub(crate) mod datapath;
pub mod demo;
pub mod error;
pub mod host;
pub mod ids;
pub mod ipam;
pub mod k8s;
pub mod kube_proxy;
pub mod net;
pub(crate) mod run;
pub mod trace;
pub mod vpc_cni;
pub mod world;

pub use cluster::{Cluster, ClusterConfig, ClusterError, Container};
pub use host::l7 as ingress;
pub use podnet_netfilter as netfilter;
/// Virtual time types (`Instant`, `Duration`), re-exported from smoltcp.
pub use smoltcp::time;
pub use trace::pcap;
pub use trace::{Disposition, FlowProto, Hop, Trace, TraceError, TraceOptions};
