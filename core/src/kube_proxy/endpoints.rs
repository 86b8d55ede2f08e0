//! The EndpointSlice controller (`pkg/controller/endpointslice`): a slice for every Service
//! with a selector, from the pods it selects. Ready follows the pod's Ready condition; a
//! terminating pod's endpoint is serving and terminating. A named `targetPort` is resolved
//! per pod from its containers' named ports, so pods whose numbers differ get slices of
//! their own.

use std::collections::{BTreeMap, HashMap};

use podnet_netfilter::Proto;

use crate::world::World;

use super::{EndpointSlice, Services, SliceEndpoint, TargetPort};

impl Services {
    /// Every EndpointSlice: the ones given explicitly, then the controller's, Service by
    /// Service.
    pub fn endpoint_slices(&self, w: &World) -> Vec<EndpointSlice> {
        let mut out = self.slices.clone();
        // Pods by (namespace, label, value): a Service looks at the pods its selector's first
        // pair names, not at every pod.
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, p) in w.pods.iter().enumerate().filter(|(_, p)| !p.deleted) {
            for (k, v) in &p.labels {
                by_label.entry((&p.namespace, k, v)).or_default().push(i);
            }
        }
        for svc in &self.list {
            let Some(sel) = &svc.selector else { continue };
            let Some((k0, v0)) = sel.iter().next() else { continue };
            let mut by_ports: BTreeMap<Vec<(String, Proto, u16)>, Vec<SliceEndpoint>> =
                BTreeMap::new();
            let candidates = by_label
                .get(&(svc.namespace.as_str(), k0.as_str(), v0.as_str()))
                .map(Vec::as_slice);
            for p in candidates
                .unwrap_or(&[])
                .iter()
                .map(|&i| &w.pods[i])
                .filter(|p| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            {
                let ports: Vec<(String, Proto, u16)> = svc
                    .ports
                    .iter()
                    .filter_map(|sp| match &sp.target_port {
                        TargetPort::Number(n) => Some((sp.name.clone(), sp.protocol, *n)),
                        TargetPort::Name(name) => p
                            .containers
                            .iter()
                            .flat_map(|c| &c.named_ports)
                            .find(|(n, pr, _)| n == name && *pr == sp.protocol)
                            .map(|(_, _, port)| (sp.name.clone(), sp.protocol, *port)),
                    })
                    .collect();
                by_ports.entry(ports).or_default().push(SliceEndpoint {
                    ip: p.ip,
                    node_name: Some(w.nodes[p.node.idx()].name.clone()),
                    ready: Some(p.ready && !p.terminating),
                    serving: Some(p.ready || p.terminating),
                    terminating: Some(p.terminating),
                });
            }
            if by_ports.is_empty() {
                by_ports.insert(Vec::new(), Vec::new());
            }
            for (ports, endpoints) in by_ports {
                out.push(EndpointSlice {
                    namespace: svc.namespace.clone(),
                    service: svc.name.clone(),
                    ports,
                    endpoints,
                });
            }
        }
        out
    }
}
