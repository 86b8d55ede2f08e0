//! kube-proxy's own configuration, as kube-proxy reads it: a `KubeProxyConfiguration`
//! document (`kubeproxy.config.k8s.io/v1alpha1`), on its own or inside the
//! `kube-system/kube-proxy` ConfigMap (key `config.conf`, as kubeadm writes it; EKS's
//! `kube-proxy-config` with key `config` too).
//!
//! Modelled (each changes the rules kube-proxy v1.33 writes): `mode` (`iptables`, `ipvs`,
//! `nftables`), `clusterCIDR`, `detectLocalMode`
//! (`ClusterCIDR`, `NodeCIDR`, `BridgeInterface`, `InterfaceNamePrefix`) with
//! `detectLocal.bridgeInterface` and `detectLocal.interfaceNamePrefix`, `nodePortAddresses`
//! (CIDRs and `primary`), `iptables.masqueradeAll`, `iptables.masqueradeBit` (in nftables mode
//! `nftables.masqueradeAll` and `nftables.masqueradeBit`),
//! `iptables.localhostNodePorts`, `ipvs.scheduler`, and the conntrack timeouts kube-proxy
//! sets on its node (`conntrack.tcpEstablishedTimeout` 24h and `tcpCloseWaitTimeout` 1h by
//! default, `udpTimeout`, `udpStreamTimeout`). Every other field given is listed in the load
//! report as read but not modelled.

use ipnetwork::Ipv4Network;
use serde_json::Value;

use crate::kube_proxy::{DetectLocal, KubeProxySettings, NodePortAddress, ProxyMode};

use super::{LoadError, Place, obj_err};

/// What a KubeProxyConfiguration sets.
#[derive(Clone, Debug)]
pub(crate) struct KubeProxyConfig {
    pub(crate) settings: KubeProxySettings,
    pub(crate) masquerade_all: bool,
    /// `mode` (and `ipvs.scheduler`), when given.
    pub(crate) mode: Option<ProxyMode>,
    /// `clusterCIDR` (its IPv4 range).
    pub(crate) cluster_cidr: Option<Ipv4Network>,
    /// Fields given that podnet reads but does not model.
    pub(crate) unmodelled: Vec<String>,
}

const MODELLED: &[&str] = &[
    "apiVersion",
    "kind",
    "mode",
    "clusterCIDR",
    "detectLocalMode",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
    "nodePortAddresses",
    "iptables.masqueradeAll",
    "iptables.masqueradeBit",
    "iptables.localhostNodePorts",
    "ipvs.scheduler",
    "nftables.masqueradeAll",
    "nftables.masqueradeBit",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    "conntrack.udpTimeout",
    "conntrack.udpStreamTimeout",
];

/// A Go duration (`24h0m0s`, `1h`, `86400s`, `90m`) in whole seconds.
fn go_duration(s: &str) -> Option<u32> {
    let mut total: f64 = 0.0;
    let mut rest = s.trim();
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mul = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * mul;
        rest = &rest[unit_end..];
    }
    u32::try_from(total.floor() as u64).ok()
}

/// The leaf fields of `v` (`a.b.c`) that hold a value: kube-proxy reads null, false, 0, "",
/// "0s" and empty lists as "unset, use the default", as kubeadm writes them.
fn leaves(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                leaves(x, &p, out);
            }
        }
        Value::Null | Value::Bool(false) => {}
        Value::Number(n) if n.as_f64() == Some(0.0) => {}
        Value::String(s) if s.is_empty() || s == "0s" || s == "0" => {}
        Value::Array(a) if a.is_empty() => {}
        _ => out.push(path.to_string()),
    }
}

/// Reads a KubeProxyConfiguration `v` found at `place` (`what` names it in errors).
pub(crate) fn read(place: &Place, what: &str, v: &Value) -> Result<KubeProxyConfig, LoadError> {
    let bad =
        |field: &str, why: String| obj_err(place, what.to_string(), format!("{field}: {why}"));
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).filter(|x| !x.is_empty());
    let b = |p: &str, field: &str| -> Result<Option<bool>, LoadError> {
        match v.pointer(p) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(x)) => Ok(Some(*x)),
            Some(o) => Err(bad(field, format!("expected true or false, not {o}"))),
        }
    };
    let mut settings = KubeProxySettings::default();
    let cidr = match s("/clusterCIDR") {
        None => None,
        // A dual-stack list ("10.244.0.0/16,fd00::/48"): the IPv4 one.
        Some(list) => {
            let v4 = list.split(',').map(str::trim).find(|c| !c.contains(':'));
            match v4 {
                None => None,
                Some(c) => Some(
                    c.parse::<Ipv4Network>()
                        .map_err(|_| bad("clusterCIDR", format!("'{c}' is not an IPv4 CIDR")))?,
                ),
            }
        }
    };
    settings.detect_local = match s("/detectLocalMode").unwrap_or("ClusterCIDR") {
        "ClusterCIDR" => DetectLocal::ClusterCidr(cidr),
        "NodeCIDR" => DetectLocal::NodeCidr,
        "BridgeInterface" => DetectLocal::BridgeInterface(
            s("/detectLocal/bridgeInterface")
                .ok_or_else(|| {
                    bad(
                        "detectLocal.bridgeInterface",
                        "BridgeInterface mode needs the bridge's name (cbr0)".into(),
                    )
                })?
                .to_string(),
        ),
        "InterfaceNamePrefix" => DetectLocal::InterfaceNamePrefix(
            s("/detectLocal/interfaceNamePrefix")
                .ok_or_else(|| {
                    bad(
                        "detectLocal.interfaceNamePrefix",
                        "InterfaceNamePrefix mode needs the prefix (veth)".into(),
                    )
                })?
                .to_string(),
        ),
        other => {
            return Err(bad(
                "detectLocalMode",
                format!(
                    "'{other}' is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix"
                ),
            ));
        }
    };
    if let Some(list) = v.pointer("/nodePortAddresses").and_then(Value::as_array)
        && !list.is_empty()
    {
        let mut out = Vec::new();
        for (i, e) in list.iter().enumerate() {
            let field = format!("nodePortAddresses[{i}]");
            let text =
                e.as_str().ok_or_else(|| bad(&field, format!("expected a string, not {e}")))?;
            if text == "primary" {
                out.push(NodePortAddress::Primary);
            } else if text.contains(':') {
                // IPv6 ranges select no IPv4 address.
            } else {
                let c: Ipv4Network = text
                    .parse()
                    .map_err(|_| bad(&field, format!("'{text}' is not a CIDR or \"primary\"")))?;
                out.push(NodePortAddress::Cidr(c));
            }
        }
        // A range holding every IPv4 address makes kube-proxy match all (`MatchAll`).
        let all = out.iter().any(|e| matches!(e, NodePortAddress::Cidr(c) if c.prefix() == 0));
        settings.node_port_addresses = (!all).then_some(out);
    }
    if let Some(bit) = v.pointer("/iptables/masqueradeBit").filter(|x| !x.is_null()) {
        let n = bit.as_u64().filter(|n| *n <= 31).ok_or_else(|| {
            bad("iptables.masqueradeBit", format!("expected a bit number 0-31, not {bit}"))
        })?;
        settings.masquerade_bit = n as u8;
    }
    if let Some(l) = b("/iptables/localhostNodePorts", "iptables.localhostNodePorts")? {
        settings.localhost_nodeports = l;
    }
    let masquerade_all = b("/iptables/masqueradeAll", "iptables.masqueradeAll")?.unwrap_or(false);
    // Conntrack timeouts: null keeps kube-proxy's default, 0 leaves the kernel's value.
    let duration = |p: &str, field: &str, default: Option<u32>| -> Result<Option<u32>, LoadError> {
        match v.pointer(p) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(d)) => match go_duration(d) {
                Some(0) => Ok(None),
                Some(n) => Ok(Some(n)),
                None => Err(bad(field, format!("'{d}' is not a duration (as 24h0m0s)"))),
            },
            Some(o) => Err(bad(field, format!("expected a duration such as 24h0m0s, not {o}"))),
        }
    };
    settings.conntrack_tcp_established = duration(
        "/conntrack/tcpEstablishedTimeout",
        "conntrack.tcpEstablishedTimeout",
        settings.conntrack_tcp_established,
    )?;
    settings.conntrack_tcp_close_wait = duration(
        "/conntrack/tcpCloseWaitTimeout",
        "conntrack.tcpCloseWaitTimeout",
        settings.conntrack_tcp_close_wait,
    )?;
    settings.conntrack_udp = duration("/conntrack/udpTimeout", "conntrack.udpTimeout", None)?;
    settings.conntrack_udp_stream =
        duration("/conntrack/udpStreamTimeout", "conntrack.udpStreamTimeout", None)?;
    let mode = match s("/mode") {
        None => None,
        Some("iptables") => Some(ProxyMode::Iptables),
        Some("ipvs") => {
            let sched = match s("/ipvs/scheduler") {
                None => podnet_netfilter::ipvs::Scheduler::Rr,
                Some(x) => podnet_netfilter::ipvs::Scheduler::parse(x).ok_or_else(|| {
                    bad(
                        "ipvs.scheduler",
                        format!("'{x}' is not one of rr, wrr, lc, wlc, sh, dh, sed, nq"),
                    )
                })?,
            };
            Some(ProxyMode::Ipvs(sched))
        }
        Some("nftables") => Some(ProxyMode::Nftables),
        Some(other) => {
            return Err(bad("mode", format!("'{other}' is not iptables, ipvs or nftables")));
        }
    };
    // nftables mode reads its own masquerade settings (`nftables.masqueradeBit`, default 14,
    // and `nftables.masqueradeAll`), not iptables mode's.
    let mut masquerade_all = masquerade_all;
    if mode == Some(ProxyMode::Nftables) {
        settings.masquerade_bit = 14;
        if let Some(bit) = v.pointer("/nftables/masqueradeBit").filter(|x| !x.is_null()) {
            let n = bit.as_u64().filter(|n| *n <= 31).ok_or_else(|| {
                bad("nftables.masqueradeBit", format!("expected a bit number 0-31, not {bit}"))
            })?;
            settings.masquerade_bit = n as u8;
        }
        masquerade_all = b("/nftables/masqueradeAll", "nftables.masqueradeAll")?.unwrap_or(false);
    }
    let mut given = Vec::new();
    leaves(v, "", &mut given);
    let unmodelled = given.into_iter().filter(|p| !MODELLED.contains(&p.as_str())).collect();
    Ok(KubeProxyConfig { settings, masquerade_all, mode, cluster_cidr: cidr, unmodelled })
}
