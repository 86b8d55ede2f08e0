//! NetworkPolicies on the façade: add, delete, list, how the CNI enforces them, and what
//! they do to one pod.

use crate::error::ClusterError;
use crate::policy::{NetworkPolicy, PolicyConfig, PolicySummary};

use super::Cluster;

impl Cluster {
    /// The NetworkPolicies, in the order they were added.
    pub fn network_policies(&self) -> &[NetworkPolicy] {
        &self.policy.policies
    }

    /// Adds a NetworkPolicy, or replaces the one of the same namespace and name (as
    /// `kubectl apply` does). It applies to connections opened from now on; established
    /// connections keep flowing, as conntrack lets them in a real node.
    pub fn add_network_policy(&mut self, p: NetworkPolicy) {
        match self.policy.policies.iter_mut().find(|x| x.key() == p.key()) {
            Some(old) => *old = p,
            None => self.policy.policies.push(p),
        }
        self.policies_changed();
    }

    /// Deletes the NetworkPolicy `NS/NAME` (or `netpol/NS/NAME`).
    pub fn delete_network_policy(&mut self, key: &str) -> Result<(), ClusterError> {
        let k = key.strip_prefix("netpol/").unwrap_or(key);
        let Some(i) = self.policy.policies.iter().position(|p| p.key() == k) else {
            return Err(ClusterError::NotFound {
                kind: "networkpolicy",
                name: key.into(),
                known: self.policy.policies.iter().map(|p| format!("netpol/{}", p.key())).collect(),
                fix: Some("write it as netpol/NAMESPACE/NAME"),
            });
        };
        self.policy.policies.remove(i);
        self.policies_changed();
        Ok(())
    }

    /// How the CNI enforces NetworkPolicy.
    pub fn policy_config(&self) -> PolicyConfig {
        self.policy.cfg
    }

    /// Sets how the CNI enforces NetworkPolicy.
    pub fn set_policy_config(&mut self, cfg: PolicyConfig) {
        self.policy.cfg = cfg;
    }

    /// The policies selecting a pod (`pod/NS/NAME` or `NS/NAME`) and what they allow it.
    pub fn policies_for(&self, pod: &str) -> Result<PolicySummary, ClusterError> {
        let id = self.pod_id(pod)?;
        Ok(self.policy.summary(&self.world, id))
    }

    /// Compiles the policies again (after policies or namespaces changed).
    pub(crate) fn policies_changed(&mut self) {
        self.policy.rebuild(&self.world, &self.namespaces);
    }
}
