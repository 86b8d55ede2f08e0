//! Kubernetes label selectors (`metav1.LabelSelector`): `matchLabels` and
//! `matchExpressions` with `In`, `NotIn`, `Exists` and `DoesNotExist`, ANDed, as
//! `apimachinery/pkg/labels` evaluates them. An empty selector selects everything; a
//! selector that is absent is the caller's business (NetworkPolicy peers treat it
//! differently from an empty one).

use std::collections::BTreeMap;
use std::fmt;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is absent, or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (`In`, `NotIn`).
    pub values: Vec<String>,
}

/// A label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct LabelSelector {
    /// `matchLabels`: each key must have exactly that value.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`: each must hold.
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// A `matchLabels`-only selector.
    pub fn with_labels(labels: Labels) -> LabelSelector {
        LabelSelector { match_labels: labels, match_expressions: Vec::new() }
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator {
                    Operator::In => got.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => got.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => got.is_some(),
                    Operator::DoesNotExist => got.is_none(),
                }
            })
    }
}

/// As `kubectl` prints a selector (`app=web,tier in (a,b),!legacy`); `<all>` when empty.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("<all>");
        }
        let mut parts: Vec<String> =
            self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// The semantics of `labels.Selector` (apimachinery `selector.go`): `notin` matches an
    /// object without the key; `in` does not; requirements are ANDed with `matchLabels`.
    #[test]
    fn operators_follow_apimachinery() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let bare = labels(&[("app", "web")]);
        let s = |r: Requirement| LabelSelector { match_expressions: vec![r], ..Default::default() };
        assert!(s(req("tier", Operator::In, &["front", "back"])).matches(&web));
        assert!(!s(req("tier", Operator::In, &["front"])).matches(&bare));
        assert!(!s(req("tier", Operator::NotIn, &["front"])).matches(&web));
        assert!(s(req("tier", Operator::NotIn, &["front"])).matches(&bare));
        assert!(s(req("tier", Operator::Exists, &[])).matches(&web));
        assert!(!s(req("tier", Operator::Exists, &[])).matches(&bare));
        assert!(s(req("tier", Operator::DoesNotExist, &[])).matches(&bare));
        assert!(LabelSelector::everything().matches(&Labels::new()));
        let both = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![req("tier", Operator::Exists, &[])],
        };
        assert!(both.matches(&web) && !both.matches(&bare));
        assert_eq!(both.to_string(), "app=web,tier");
        assert_eq!(LabelSelector::everything().to_string(), "<all>");
    }
}
