//! Objects that change what traffic a cluster allows and that podnet does not model (yet):
//! network policies of every flavour and service-mesh authorization. They are not applied;
//! each is kept with the pods it selects, so that every trace through one of those pods
//! says that the real cluster may decide otherwise.
//!
//! What each kind selects, from its API reference:
//! - `networking.k8s.io/v1` NetworkPolicy: `spec.podSelector` in its namespace.
//! - `policy.networking.k8s.io/v1alpha1` AdminNetworkPolicy and BaselineAdminNetworkPolicy
//!   (cluster-scoped): `spec.subject.namespaces` (every pod of the matching namespaces) or
//!   `spec.subject.pods` (`namespaceSelector` and `podSelector`).
//! - `cilium.io/v2` CiliumNetworkPolicy: `spec.endpointSelector` (or each of `specs[]`) in
//!   its namespace; CiliumClusterwideNetworkPolicy: the same in every namespace.
//! - `crd.projectcalico.org/v1` and `projectcalico.org/v3` NetworkPolicy and
//!   GlobalNetworkPolicy: `spec.selector` is a Calico selector expression, which podnet does
//!   not evaluate: every pod in scope may be selected.
//! - `security.istio.io/v1` (and `v1beta1`) AuthorizationPolicy and PeerAuthentication:
//!   `spec.selector.matchLabels` in its namespace, every pod of it when absent (the mesh's
//!   root namespace, `istio-system`, makes it mesh-wide).

use std::fmt;

use serde_json::Value;

use crate::labels::{LabelSelector, Labels, Operator, Requirement};

/// Which namespaces an object reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceScope {
    /// One namespace.
    One(String),
    /// Every namespace.
    All,
    /// Namespaces whose labels match.
    Selected(LabelSelector),
}

/// An object podnet does not model, and the pods it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmodelled {
    /// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object.
    pub object: String,
    /// What it does that podnet does not, for a warning.
    pub effect: &'static str,
    /// The namespaces it reaches.
    pub namespaces: NamespaceScope,
    /// The pods it selects there; `None` when podnet cannot read the selector (any pod may
    /// be selected).
    pub pods: Option<LabelSelector>,
}

impl Unmodelled {
    /// Whether a pod of namespace `ns` (whose labels are `ns_labels`) with `labels` may be
    /// selected.
    pub fn may_select(&self, ns: &str, ns_labels: &Labels, labels: &Labels) -> bool {
        let ns_ok = match &self.namespaces {
            NamespaceScope::One(n) => n == ns,
            NamespaceScope::All => true,
            NamespaceScope::Selected(s) => s.matches(ns_labels),
        };
        ns_ok && self.pods.as_ref().is_none_or(|s| s.matches(labels))
    }
}

impl fmt::Display for Unmodelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.object)
    }
}

const POLICY: &str =
    "a policy podnet does not enforce yet, so the real cluster may drop what this trace delivers";
const MESH: &str = "a service mesh's authorization, which podnet does not model, so the real cluster may refuse what this trace delivers";

/// The kinds read here, by API group.
fn known(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("networking.k8s.io", "NetworkPolicy")
            | ("policy.networking.k8s.io", "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy")
            | ("cilium.io", "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy")
            | (
                "crd.projectcalico.org" | "projectcalico.org",
                "NetworkPolicy" | "GlobalNetworkPolicy"
            )
            | ("security.istio.io", "AuthorizationPolicy" | "PeerAuthentication")
    )
}

/// The object `kind` of `api_version` as an [`Unmodelled`], when it is one of the kinds
/// above; `Err` names a field that is not what its API says.
pub(crate) fn read(api_version: &str, kind: &str, v: &Value) -> Option<Result<Unmodelled, String>> {
    let group = api_version.split('/').next().unwrap_or("");
    known(group, kind).then(|| read_known(group, kind, v))
}

fn read_known(group: &str, kind: &str, v: &Value) -> Result<Unmodelled, String> {
    let ns = v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    let namespaced = |effect| Unmodelled {
        object: format!("{kind}/{ns}/{name}"),
        effect,
        namespaces: NamespaceScope::One(ns.to_string()),
        pods: None,
    };
    let cluster_wide = |effect| Unmodelled {
        object: format!("{kind}/{name}"),
        effect,
        namespaces: NamespaceScope::All,
        pods: None,
    };
    let sel = |p: &str| -> Result<LabelSelector, String> {
        match v.pointer(p) {
            None | Some(Value::Null) => Ok(LabelSelector::everything()),
            Some(s) => selector(s)
                .map_err(|e| format!("{}: {e}", p.trim_start_matches('/').replace('/', "."))),
        }
    };
    match (group, kind) {
        ("networking.k8s.io", _) => {
            Ok(Unmodelled { pods: Some(sel("/spec/podSelector")?), ..namespaced(POLICY) })
        }
        ("policy.networking.k8s.io", _) => {
            let mut u = cluster_wide(POLICY);
            if v.pointer("/spec/subject/namespaces").is_some() {
                u.namespaces = NamespaceScope::Selected(sel("/spec/subject/namespaces")?);
                u.pods = Some(LabelSelector::everything());
            } else if v.pointer("/spec/subject/pods").is_some() {
                u.namespaces =
                    NamespaceScope::Selected(sel("/spec/subject/pods/namespaceSelector")?);
                u.pods = Some(sel("/spec/subject/pods/podSelector")?);
            }
            Ok(u)
        }
        ("cilium.io", _) => {
            let mut u = if kind == "CiliumNetworkPolicy" {
                namespaced(POLICY)
            } else {
                cluster_wide(POLICY)
            };
            // One selector (`spec`), or several (`specs[]`): several stay "any pod".
            if v.pointer("/spec/endpointSelector").is_some() && v.pointer("/specs").is_none() {
                u.pods = Some(sel("/spec/endpointSelector")?);
            }
            Ok(u)
        }
        (_, "GlobalNetworkPolicy") => Ok(cluster_wide(POLICY)),
        (_, "NetworkPolicy") => Ok(namespaced(POLICY)),
        _ => {
            let mut u = namespaced(MESH);
            if ns == "istio-system" {
                u.namespaces = NamespaceScope::All;
            }
            u.pods = Some(match v.pointer("/spec/selector/matchLabels") {
                Some(m) => LabelSelector::with_labels(
                    string_map(m).map_err(|e| format!("spec.selector.matchLabels: {e}"))?,
                ),
                None => LabelSelector::everything(),
            });
            Ok(u)
        }
    }
}

/// A `metav1.LabelSelector` from its JSON form.
pub(crate) fn selector(v: &Value) -> Result<LabelSelector, String> {
    let Value::Object(m) = v else { return Err("a label selector is an object".into()) };
    let match_labels = match m.get("matchLabels") {
        None | Some(Value::Null) => Labels::new(),
        Some(l) => string_map(l).map_err(|e| format!("matchLabels: {e}"))?,
    };
    let mut match_expressions = Vec::new();
    if let Some(exprs) = m.get("matchExpressions").filter(|e| !e.is_null()) {
        let Value::Array(list) = exprs else { return Err("matchExpressions is a list".into()) };
        for (i, e) in list.iter().enumerate() {
            let key = e.get("key").and_then(Value::as_str);
            let op = e.get("operator").and_then(Value::as_str);
            let (Some(key), Some(op)) = (key, op) else {
                return Err(format!("matchExpressions[{i}] needs key and operator"));
            };
            let operator = match op {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                    ));
                }
            };
            let values: Vec<String> = match e.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(vs)) => vs
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("matchExpressions[{i}].values are strings"))?,
                Some(_) => return Err(format!("matchExpressions[{i}].values is a list")),
            };
            // apimachinery's validation: In and NotIn need values, Exists and DoesNotExist
            // take none.
            let needs = matches!(operator, Operator::In | Operator::NotIn);
            if needs == values.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}]: {op} {} values",
                    if needs { "needs" } else { "takes no" }
                ));
            }
            match_expressions.push(Requirement { key: key.into(), operator, values });
        }
    }
    Ok(LabelSelector { match_labels, match_expressions })
}

fn string_map(v: &Value) -> Result<Labels, String> {
    let Value::Object(m) = v else { return Err("a map of strings".into()) };
    m.iter()
        .map(|(k, x)| match x {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!("{k}: {other} is not a string")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn a_network_policy_selects_by_pod_selector_in_its_namespace() {
        let v = yaml(
            "metadata: {name: deny, namespace: shop}\nspec:\n  podSelector:\n    matchExpressions: [{key: app, operator: In, values: [web, api]}]",
        );
        let u = read("networking.k8s.io/v1", "NetworkPolicy", &v).unwrap().unwrap();
        assert_eq!(u.object, "NetworkPolicy/shop/deny");
        let l = |app: &str| Labels::from([("app".to_string(), app.to_string())]);
        assert!(u.may_select("shop", &Labels::new(), &l("web")));
        assert!(!u.may_select("shop", &Labels::new(), &l("db")));
        assert!(!u.may_select("other", &Labels::new(), &l("web")));
        let bad = yaml(
            "metadata: {name: x}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Has}]}}",
        );
        let e = read("networking.k8s.io/v1", "NetworkPolicy", &bad).unwrap().unwrap_err();
        assert!(e.contains("operator \"Has\""), "{e}");
        assert!(read("v1", "ConfigMap", &v).is_none());
    }

    #[test]
    fn an_admin_network_policy_selects_namespaces_by_their_labels() {
        let v = yaml(
            "metadata: {name: a}\nspec:\n  subject:\n    pods:\n      namespaceSelector: {matchLabels: {env: prod}}\n      podSelector: {matchLabels: {app: db}}",
        );
        let u =
            read("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy", &v).unwrap().unwrap();
        assert_eq!(u.object, "AdminNetworkPolicy/a");
        let prod = Labels::from([("env".to_string(), "prod".to_string())]);
        let db = Labels::from([("app".to_string(), "db".to_string())]);
        assert!(u.may_select("shop", &prod, &db));
        assert!(!u.may_select("shop", &Labels::new(), &db));
        assert!(!u.may_select("shop", &prod, &Labels::new()));
    }

    #[test]
    fn a_calico_selector_expression_may_select_any_pod_in_scope() {
        let v = yaml("metadata: {name: g}\nspec: {selector: \"role == 'db'\"}");
        let u = read("crd.projectcalico.org/v1", "GlobalNetworkPolicy", &v).unwrap().unwrap();
        assert_eq!(u.pods, None);
        assert!(u.may_select("any", &Labels::new(), &Labels::new()));
    }
}
