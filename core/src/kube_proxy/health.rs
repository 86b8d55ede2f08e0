//! kube-proxy's health-check servers (`pkg/proxy/healthcheck/service_health.go`): one per
//! Service with `externalTrafficPolicy: Local` on its `healthCheckNodePort`, answering 200
//! with the count of local endpoints when the node has some, 503 otherwise.

use std::net::Ipv4Addr;

use super::{EndpointSlice, Service};

/// One of kube-proxy's health-check servers: for a LoadBalancer Service with
/// `externalTrafficPolicy: Local`, every node listens on the Service's `healthCheckNodePort`
/// and tells the cloud load balancer how many ready endpoints of the Service it holds
/// (`pkg/proxy/healthcheck/service_health.go`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheck {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// `healthCheckNodePort` (TCP).
    pub port: u16,
    /// Ready endpoints on this node (distinct addresses over all of the Service's ports).
    pub local_endpoints: usize,
}

impl HealthCheck {
    /// Whether the node passes: kube-proxy answers 200 with local endpoints, 503 without.
    pub fn healthy(&self) -> bool {
        self.local_endpoints > 0
    }

    /// The HTTP response kube-proxy writes (Go's `net/http`, without its `Date` header so
    /// traces stay deterministic).
    pub fn response(&self) -> Vec<u8> {
        let body = format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": true\n}}",
            self.namespace, self.name, self.local_endpoints
        );
        let status = if self.healthy() { "200 OK" } else { "503 Service Unavailable" };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.local_endpoints,
            body.len()
        )
        .into_bytes()
    }
}

/// The health checks a node serves, from the Services and their EndpointSlices.
pub fn health_checks(
    node: &str,
    services: &[Service],
    slices: &[EndpointSlice],
) -> Vec<HealthCheck> {
    services
        .iter()
        .filter(|s| s.needs_health_check() && s.health_check_node_port != 0)
        .map(|s| {
            let local: std::collections::BTreeSet<Ipv4Addr> = slices
                .iter()
                .filter(|sl| sl.namespace == s.namespace && sl.service == s.name)
                .flat_map(|sl| &sl.endpoints)
                .filter(|e| e.node_name.as_deref() == Some(node) && e.ready.unwrap_or(true))
                .map(|e| e.ip)
                .collect();
            HealthCheck {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                port: s.health_check_node_port,
                local_endpoints: local.len(),
            }
        })
        .collect()
}
