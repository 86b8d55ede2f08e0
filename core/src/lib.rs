//! `podnet`: a deterministic, explainable model of the Kubernetes pod network.
//!
//! Real Ethernet/ARP/IPv4/TCP/UDP/ICMP bytes (smoltcp's wire types) move through modelled
//! network namespaces, veth pairs, Linux bridges, routing tables and netfilter, programmed
//! the way the CNI bridge plugin and kube-proxy program a real node. Pods run smoltcp host
//! stacks, so handshakes, data and closes are real; nodes forward with podnet's own code,
//! the way Linux does.
//!
//! The layers, bottom up. Each uses only the layers above it in this table; nothing above
//! [`cluster`] names `Cluster`, and a test (`core/tests/it/layering.rs`) fails when a module
//! reaches up.
//!
//! | layer | holds |
//! |---|---|
//! | [`ids`], [`error`], [`endpoint`], [`labels`] | typed arena ids; every error type; where a flow starts or ends, as users name it; label selectors |
//! | [`net`], [`ipam`] | routing tables and `ip rule`, neighbour tables, the bridge FDB; address and port allocators |
//! | [`trace`] | trace records: hops, packet views, text and JSON, pcapng |
//! | [`world`] | the arenas (nodes, pods, namespaces, devices, L2 segments), the virtual clock, the random source, the frame queue |
//! | `datapath` (internal) | veth and segments, the bridge and br_netfilter, IPv4 receive/forward/output, ARP, the netfilter glue, REJECT, the cloud fabric, the guard where a policy engine judges connections at pods' host-side interfaces |
//! | [`host`] | smoltcp host stacks, their echo/HTTP servers and clients, the L7 proxy |
//! | `run` (internal) | the simulator: a flow's run, every outcome of a flow, frames injected at a device |
//! | [`kube_proxy`] | Services and EndpointSlices to kube-proxy's iptables and IPVS state, its health-check servers, a sync written into the nodes |
//! | [`policy`] | NetworkPolicy semantics, compiled per pod into the engine the datapath's guard asks |
//! | [`cni`] | the bridge plugin and the AWS VPC CNI (with ipamd) as ADD and DEL |
//! | [`cloud`] | internet and NAT gateways, cloud load balancers (three models), ALBs, in-cluster Ingress controllers |
//! | [`k8s`] | Kubernetes YAML/JSON read and converted, object by object |
//! | [`cluster`] | the façade: [`Cluster`] holds every part and offers every operation |
//! | [`show`], [`demo`] | every table by name ([`Table`], [`Cluster::show`]); the seed article's scenarios on the reference cluster |
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

/// The README's Rust example, run as a doctest so it keeps compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub mod cloud;
pub mod cluster;
pub mod cni;
pub(crate) mod datapath;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod get;
pub mod host;
pub mod ids;
pub mod ipam;
pub mod k8s;
pub mod kube_proxy;
pub mod labels;
pub mod net;
pub mod policy;
pub(crate) mod run;
pub mod show;
pub mod trace;
pub mod world;

pub use cluster::{Cluster, ClusterConfig, ClusterError, Container};
pub use cni::Cni;
pub use endpoint::Endpoint;
pub use kube_proxy::ProxyMode;
pub use podnet_netfilter as netfilter;
pub use show::Table;
/// Virtual time types (`Instant`, `Duration`), re-exported from smoltcp.
pub use smoltcp::time;
pub use trace::{
    Disposition, FlowProto, Hop, HopKind, PacketView, Trace, TraceError, TraceOptions,
};
