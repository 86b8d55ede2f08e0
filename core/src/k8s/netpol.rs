//! A NetworkPolicy document (`networking.k8s.io/v1`) into [`crate::policy::NetworkPolicy`],
//! with errors that name the field.

use serde_json::Value;

use crate::policy::{Direction, NetworkPolicy, Peer, PolicyPort, PolicyRule, PortRef};

use super::unmodelled::selector;

fn proto(v: Option<&Value>, field: &str) -> Result<podnet_netfilter::Proto, String> {
    match v.and_then(Value::as_str) {
        None | Some("TCP") => Ok(podnet_netfilter::Proto::TCP),
        Some("UDP") => Ok(podnet_netfilter::Proto::UDP),
        Some("SCTP") => Ok(podnet_netfilter::Proto::SCTP),
        Some(other) => Err(format!("{field}: protocol {other:?} is not TCP, UDP or SCTP")),
    }
}

fn port(v: &Value, field: &str) -> Result<PolicyPort, String> {
    let protocol = proto(v.get("protocol"), field)?;
    let end = match v.get("endPort") {
        None | Some(Value::Null) => None,
        Some(e) => Some(
            e.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{field}.endPort: {e} is not a port number"))?,
        ),
    };
    let port = match v.get("port") {
        None | Some(Value::Null) => {
            if end.is_some() {
                return Err(format!("{field}: endPort needs a numeric port"));
            }
            None
        }
        Some(Value::String(name)) => {
            if end.is_some() {
                return Err(format!("{field}: endPort needs a numeric port, not {name:?}"));
            }
            Some(PortRef::Name(name.clone()))
        }
        Some(n) => {
            let p = n
                .as_u64()
                .and_then(|x| u16::try_from(x).ok())
                .filter(|x| *x > 0)
                .ok_or_else(|| format!("{field}.port: {n} is not a port number or name"))?;
            if end.is_some_and(|e| e < p) {
                return Err(format!("{field}: endPort {} is below port {p}", end.unwrap_or(0)));
            }
            Some(PortRef::Number(p, end))
        }
    };
    Ok(PolicyPort { protocol, port })
}

fn peer(v: &Value, field: &str) -> Result<Peer, String> {
    if let Some(b) = v.get("ipBlock").filter(|b| !b.is_null()) {
        let cidr = b
            .get("cidr")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{field}.ipBlock.cidr is required"))?;
        let cidr = cidr
            .parse()
            .map_err(|_| format!("{field}.ipBlock.cidr {cidr:?} is not an IPv4 CIDR"))?;
        let mut except = Vec::new();
        for (i, e) in b.get("except").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let s = e.as_str().unwrap_or("");
            except.push(
                s.parse().map_err(|_| {
                    format!("{field}.ipBlock.except[{i}] {s:?} is not an IPv4 CIDR")
                })?,
            );
        }
        return Ok(Peer::IpBlock { cidr, except });
    }
    let sel = |k: &str| -> Result<Option<crate::labels::LabelSelector>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(s) => selector(s).map(Some).map_err(|e| format!("{field}.{k}: {e}")),
        }
    };
    let (namespaces, pods) = (sel("namespaceSelector")?, sel("podSelector")?);
    if namespaces.is_none() && pods.is_none() {
        return Err(format!("{field}: a peer needs podSelector, namespaceSelector or ipBlock"));
    }
    Ok(Peer::Pods { namespaces, pods })
}

fn rules(v: Option<&Value>, peers_key: &str, field: &str) -> Result<Vec<PolicyRule>, String> {
    let mut out = Vec::new();
    for (i, r) in v.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = format!("{field}[{i}]");
        let mut rule = PolicyRule::default();
        for (j, p) in r.get(peers_key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            rule.peers.push(peer(p, &format!("{f}.{peers_key}[{j}]"))?);
        }
        for (j, p) in r.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            rule.ports.push(port(p, &format!("{f}.ports[{j}]"))?);
        }
        out.push(rule);
    }
    Ok(out)
}

/// The policy of a NetworkPolicy document; an error names the field.
pub(crate) fn network_policy(v: &Value) -> Result<NetworkPolicy, String> {
    let namespace =
        v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
    let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let spec = v.get("spec").ok_or("spec is required")?;
    let pod_selector = match spec.get("podSelector") {
        None | Some(Value::Null) => crate::labels::LabelSelector::everything(),
        Some(s) => selector(s).map_err(|e| format!("spec.podSelector: {e}"))?,
    };
    let ingress = rules(spec.get("ingress"), "from", "spec.ingress")?;
    let egress = rules(spec.get("egress"), "to", "spec.egress")?;
    let types = match spec.get("policyTypes").and_then(Value::as_array) {
        None => NetworkPolicy::default_types(spec.get("egress").is_some_and(|e| !e.is_null())),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("Ingress") => Ok(Direction::Ingress),
                Some("Egress") => Ok(Direction::Egress),
                _ => Err(format!("spec.policyTypes[{i}]: {t} is not Ingress or Egress")),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(NetworkPolicy { namespace, name, pod_selector, types, ingress, egress })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::policy::{Decision, PeerRef, PodRef, decide};
    use podnet_netfilter::Proto;
    use std::net::Ipv4Addr;

    fn doc(yaml: &str) -> NetworkPolicy {
        let v: Value = serde_norway::from_str(yaml).unwrap();
        network_policy(&v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The example of the Kubernetes documentation's NetworkPolicy page
    /// ("test-network-policy"), with the outcomes the page states.
    #[test]
    fn the_documentations_example() {
        let p = doc(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: test-network-policy, namespace: default}\nspec:\n  podSelector: {matchLabels: {role: db}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}\n    - namespaceSelector: {matchLabels: {project: myproject}}\n    - podSelector: {matchLabels: {role: frontend}}\n    ports: [{protocol: TCP, port: 6379}]\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]\n    ports: [{protocol: TCP, port: 5978}]\n",
        );
        let default_ns = labels(&[("kubernetes.io/metadata.name", "default")]);
        let db_labels = labels(&[("role", "db")]);
        let db = PodRef {
            namespace: "default",
            namespace_labels: &default_ns,
            labels: &db_labels,
            named_ports: &[],
        };
        let fe_labels = labels(&[("role", "frontend")]);
        let fe = PodRef {
            namespace: "default",
            namespace_labels: &default_ns,
            labels: &fe_labels,
            named_ports: &[],
        };
        let other_ns = labels(&[("project", "myproject")]);
        let any_labels = labels(&[("app", "x")]);
        let in_project = PodRef {
            namespace: "myproject",
            namespace_labels: &other_ns,
            labels: &any_labels,
            named_ports: &[],
        };
        let stranger_labels = labels(&[("role", "cache")]);
        let stranger = PodRef {
            namespace: "default",
            namespace_labels: &default_ns,
            labels: &stranger_labels,
            named_ports: &[],
        };
        let ps = [p];
        let ingress =
            |peer: PeerRef<'_>, port| decide(&ps, Direction::Ingress, &db, &peer, Proto::TCP, port);
        let allowed = Decision::Allowed(vec!["default/test-network-policy".into()]);
        let denied = Decision::Denied(vec!["default/test-network-policy".into()]);
        // "role=frontend pods in the default namespace", "pods in a namespace labelled
        // project=myproject", "172.17.0.0–172.17.0.255 and 172.17.2.0–172.17.255.255".
        assert_eq!(
            ingress(PeerRef { ip: Ipv4Addr::new(10, 1, 0, 5), pod: Some(fe) }, 6379),
            allowed
        );
        assert_eq!(
            ingress(PeerRef { ip: Ipv4Addr::new(10, 1, 0, 6), pod: Some(in_project) }, 6379),
            allowed
        );
        assert_eq!(ingress(PeerRef { ip: Ipv4Addr::new(172, 17, 0, 9), pod: None }, 6379), allowed);
        assert_eq!(ingress(PeerRef { ip: Ipv4Addr::new(172, 17, 2, 9), pod: None }, 6379), allowed);
        assert_eq!(
            ingress(PeerRef { ip: Ipv4Addr::new(172, 17, 1, 9), pod: None }, 6379),
            denied,
            "except"
        );
        assert_eq!(
            ingress(PeerRef { ip: Ipv4Addr::new(10, 1, 0, 7), pod: Some(stranger) }, 6379),
            denied
        );
        assert_eq!(
            ingress(PeerRef { ip: Ipv4Addr::new(10, 1, 0, 5), pod: Some(fe) }, 6380),
            denied,
            "only TCP 6379"
        );
        // Egress: "connections from any pod in the default namespace with the label role=db
        // to CIDR 10.0.0.0/24 on TCP port 5978".
        let egress = |ip, port| {
            decide(&ps, Direction::Egress, &db, &PeerRef { ip, pod: None }, Proto::TCP, port)
        };
        assert_eq!(egress(Ipv4Addr::new(10, 0, 0, 9), 5978), allowed);
        assert_eq!(egress(Ipv4Addr::new(10, 0, 1, 9), 5978), denied);
        // A pod the policy does not select is not isolated.
        assert_eq!(
            decide(
                &ps,
                Direction::Ingress,
                &fe,
                &PeerRef { ip: Ipv4Addr::new(1, 1, 1, 1), pod: None },
                Proto::TCP,
                1
            ),
            Decision::NotIsolated
        );
    }

    /// The documentation's "namespaceSelector and podSelector" (one peer: AND) against two
    /// peers (OR), and the default policies.
    #[test]
    fn and_or_defaults_and_ports() {
        let ns_a = labels(&[("user", "alice")]);
        let ns_b = labels(&[("user", "bob")]);
        let client = labels(&[("role", "client")]);
        let other = labels(&[("role", "other")]);
        let target_labels = labels(&[("app", "t")]);
        let target = PodRef {
            namespace: "t",
            namespace_labels: &ns_b,
            labels: &target_labels,
            named_ports: &[],
        };
        let peer = |nsl: &'static Labels, l: &'static Labels| PeerRef {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            pod: Some(PodRef {
                namespace: "x",
                namespace_labels: nsl,
                labels: l,
                named_ports: &[],
            }),
        };
        let and = doc(
            "metadata: {name: and, namespace: t}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {user: alice}}\n      podSelector: {matchLabels: {role: client}}\n",
        );
        let or = doc(
            "metadata: {name: or, namespace: t}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {user: alice}}\n    - podSelector: {matchLabels: {role: client}}\n",
        );
        let leak = |x: Labels| -> &'static Labels { Box::leak(Box::new(x)) };
        let (ns_a, client, other, ns_b2) =
            (leak(ns_a), leak(client), leak(other), leak(ns_b.clone()));
        let allowed = |p: &NetworkPolicy, peer: PeerRef<'_>| {
            p.allows(Direction::Ingress, &peer, Some(&target), Proto::TCP, 80)
        };
        assert!(allowed(&and, peer(ns_a, client)));
        assert!(!allowed(&and, peer(ns_a, other)), "AND: the pod must match too");
        assert!(allowed(&or, peer(ns_a, other)), "OR: the namespace alone");
        // A podSelector alone means pods of the policy's own namespace: a client in another
        // namespace does not match.
        assert!(!allowed(&or, peer(ns_b2, client)));
        // Default deny (no rules) and allow all (one empty rule).
        let deny = doc(
            "metadata: {name: deny, namespace: t}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
        );
        let all =
            doc("metadata: {name: all, namespace: t}\nspec:\n  podSelector: {}\n  ingress: [{}]\n");
        assert!(!allowed(&deny, peer(ns_a, client)));
        assert!(allowed(&all, peer(ns_a, other)));
        // policyTypes defaults: Ingress; Egress only with egress rules.
        assert_eq!(deny.types, [Direction::Ingress]);
        let eg = doc(
            "metadata: {name: e, namespace: t}\nspec:\n  podSelector: {}\n  egress: [{ports: [{port: 53, protocol: UDP}]}]\n",
        );
        assert_eq!(eg.types, [Direction::Ingress, Direction::Egress]);
        // endPort ranges and named ports (resolved against the destination pod).
        let range = doc(
            "metadata: {name: r, namespace: t}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: TCP, port: 32000, endPort: 32768}]}]\n",
        );
        let p = peer(ns_a, client);
        assert!(range.allows(Direction::Ingress, &p, Some(&target), Proto::TCP, 32768));
        assert!(!range.allows(Direction::Ingress, &p, Some(&target), Proto::TCP, 32769));
        assert!(!range.allows(Direction::Ingress, &p, Some(&target), Proto::UDP, 32000));
        let named = doc(
            "metadata: {name: n, namespace: t}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: http}]}]\n",
        );
        let ports = [("http".to_string(), Proto::TCP, 8080)];
        let web = PodRef { named_ports: &ports, ..target };
        assert!(named.allows(Direction::Ingress, &p, Some(&web), Proto::TCP, 8080));
        assert!(!named.allows(Direction::Ingress, &p, Some(&web), Proto::TCP, 80));
        assert!(
            !named.allows(Direction::Ingress, &p, Some(&target), Proto::TCP, 8080),
            "no such port on the pod"
        );
    }

    #[test]
    fn bad_policies_name_the_field() {
        let err = |spec: &str| {
            let v: Value =
                serde_norway::from_str(&format!("metadata: {{name: x}}\nspec:\n{spec}")).unwrap();
            network_policy(&v).unwrap_err()
        };
        assert_eq!(
            err("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n"),
            "spec.ingress[0].from[0].ipBlock.cidr \"10.0.0.0/33\" is not an IPv4 CIDR"
        );
        assert_eq!(
            err("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 90}]}]\n"),
            "spec.ingress[0].ports[0]: endPort needs a numeric port, not \"http\""
        );
        assert_eq!(
            err("  podSelector: {}\n  egress: [{ports: [{port: 80, protocol: ICMP}]}]\n"),
            "spec.egress[0].ports[0]: protocol \"ICMP\" is not TCP, UDP or SCTP"
        );
        assert_eq!(
            err("  podSelector: {}\n  policyTypes: [Both]\n"),
            "spec.policyTypes[0]: \"Both\" is not Ingress or Egress"
        );
        assert_eq!(
            err("  podSelector: {}\n  ingress: [{from: [{}]}]\n"),
            "spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock"
        );
    }
}
