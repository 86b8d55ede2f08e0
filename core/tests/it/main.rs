//! The integration tests of `podnet`, one binary with a module per area (so the suite links
//! once). Expected values come from Linux, kube-proxy, the Kubernetes API or a real tool's
//! output; the golden traces under `../golden/` guard against regressions.

mod aws_vpc_cni;
mod bad_frames;
mod checksums;
mod cli;
mod common;
mod compare_modes;
mod conntrack_limits;
mod explore;
mod fig01_03_container_to_container;
mod fig04_06_pod_to_pod_same_node;
mod fig07_pod_to_pod_cross_node;
mod fig08_09_pod_to_service;
mod fig10_13_cloud_edge;
mod golden_facts;
mod golden_traces;
mod host_network;
mod ingress_controller;
mod ipam_cluster;
mod iptables_import;
mod ipvs_mode;
mod k8s_add;
mod k8s_import;
mod kube_proxy_built_rules;
mod kube_proxy_config;
mod kube_proxy_golden;
mod layering;
mod lb_models;
mod linux_behaviours;
mod log_target;
mod nat_gateway;
mod netpol_nat;
mod netpol_truth_table;
mod nftables_mode;
mod own_cluster;
mod pcap;
mod rounds;
mod service_edge_cases;
mod vpc_cni;
