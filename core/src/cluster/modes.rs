//! The three kube-proxy modes compared flow by flow: the same flows traced (as dry runs,
//! every outcome with its probability) under iptables, IPVS and nftables mode, and every flow
//! whose outcome differs listed with the first hop where the modes part.

use std::fmt;

use serde::Serialize;

use super::Cluster;
use crate::kube_proxy::ProxyMode;
use crate::trace::{Disposition, FlowProto, Hop, HopKind, Trace, TraceError, TraceOptions};

/// One outcome of a flow in one mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Landing {
    /// Who answered (`pod/NS/NAME`, `node/NAME`, `host/NAME`), if anyone.
    pub delivered_to: Option<String>,
    /// The source address the server saw (without the port: a masquerading node picks it).
    pub server_saw: Option<String>,
    /// Where the reply came from (`IP:PORT`).
    pub reply_from: Option<String>,
    /// Delivered, dropped or rejected.
    pub disposition: Disposition,
    /// Why it was not delivered (the trace's reason code), if it was not.
    pub reason: Option<String>,
    /// How likely this outcome is.
    pub probability: f64,
}

/// Where two modes' traces of a flow part: the first hop (other than rules, which always
/// differ between modes, and conntrack bookkeeping) that is not the same in both.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// The two modes compared.
    pub modes: (String, String),
    /// The hop in each (rendered as `podnet trace` prints it), `None` when one trace ended.
    pub hops: (Option<String>, Option<String>),
}

/// A flow whose outcome is not the same in every mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeDifference {
    /// The source, as given.
    pub from: String,
    /// The destination, as given.
    pub to: String,
    /// The protocol it ran with.
    pub proto: FlowProto,
    /// Per mode (`iptables`, `ipvs`, `nftables`), its outcomes, most likely first.
    pub outcomes: Vec<(String, Vec<Landing>)>,
    /// Where the modes whose outcomes differ from iptables mode's first part from it.
    pub divergences: Vec<Divergence>,
}

/// The modes compared, in order.
pub const MODES: [ProxyMode; 3] = [
    ProxyMode::Iptables,
    ProxyMode::Ipvs(podnet_netfilter::ipvs::Scheduler::Rr),
    ProxyMode::Nftables,
];

/// The outcomes of a flow, most likely first (outcomes that agree on everything compared
/// added up).
fn landings(all: &[Trace]) -> Vec<Landing> {
    let mut out: Vec<Landing> = Vec::new();
    for t in all {
        let saw = t.server_saw.as_deref().map(|s| s.rsplit_once(':').map_or(s, |(a, _)| a));
        let l = Landing {
            delivered_to: t.delivered_to.clone(),
            server_saw: saw.map(str::to_string),
            reply_from: t.reply_from.clone(),
            disposition: t.disposition,
            reason: t.reason.clone(),
            probability: t.probability.unwrap_or(1.0),
        };
        match out.iter_mut().find(|o| {
            (&o.delivered_to, &o.server_saw, &o.reply_from, o.disposition)
                == (&l.delivered_to, &l.server_saw, &l.reply_from, l.disposition)
        }) {
            Some(o) => o.probability += l.probability,
            None => out.push(l),
        }
    }
    out.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then_with(|| a.delivered_to.cmp(&b.delivered_to))
            .then_with(|| a.server_saw.cmp(&b.server_saw))
    });
    out
}

fn same_landings(a: &[Landing], b: &[Landing]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.delivered_to, &x.server_saw, &x.reply_from, x.disposition)
                == (&y.delivered_to, &y.server_saw, &y.reply_from, y.disposition)
                && (x.probability - y.probability).abs() < 1e-9
        })
}

/// The hops two modes can be compared on: where the packet was and what happened to it,
/// without the rules (each mode has its own) and conntrack's bookkeeping.
fn comparable(t: &Trace) -> Vec<&Hop> {
    t.hops
        .iter()
        .filter(|h| {
            !matches!(
                h.kind,
                HopKind::Rule { .. } | HopKind::NftRule { .. } | HopKind::Conntrack { .. }
            )
        })
        .collect()
}

fn hop_key(h: &Hop) -> (u32, &str, Option<&str>, &'static str) {
    (h.packet, h.netns.as_str(), h.device.as_deref(), h.kind.action())
}

/// A hop as the comparison shows it; a drop with the rule that decided it (the rule hop just
/// before it), since rule hops are not compared.
fn render_hop(t: &Trace, h: &Hop) -> String {
    let mut s = format!("[{}] {} ", h.index, h.netns);
    if let Some(d) = &h.device {
        s.push_str(d);
        s.push(' ');
    }
    s.push_str(h.kind.action());
    s.push(' ');
    s.push_str(&h.detail);
    if matches!(h.kind, HopKind::Drop { .. })
        && let Some(prev) = h.index.checked_sub(1).and_then(|i| t.hops.get(i))
        && matches!(prev.kind, HopKind::Rule { .. } | HopKind::NftRule { .. })
    {
        let _ = std::fmt::Write::write_fmt(
            &mut s,
            format_args!(
                " (by {} {}: {})",
                prev.kind.table().unwrap_or_default(),
                prev.kind.chain().unwrap_or_default(),
                prev.kind.rule().unwrap_or_default()
            ),
        );
    }
    s
}

impl Cluster {
    /// Runs `flows` (source, destination, protocol or `None` for the one the destination
    /// implies) under iptables, IPVS (round robin) and nftables mode, each on a copy of this
    /// cluster as it stands, and lists every flow whose outcome differs between the modes:
    /// the landing set with probabilities, the address the server saw, where the reply came
    /// from and the disposition, with the first hop where each differing mode parts from
    /// iptables mode.
    pub fn compare_modes(
        &self,
        flows: &[(String, String, Option<FlowProto>)],
    ) -> Result<Vec<ModeDifference>, TraceError> {
        let copies: Vec<Cluster> = MODES
            .iter()
            .map(|m| {
                let mut c = self.fork();
                c.set_proxy_mode(*m);
                c
            })
            .collect();
        let mut out = Vec::new();
        for (from, to, proto) in flows {
            let opts = TraceOptions { proto: *proto, ..TraceOptions::default() };
            let mut runs: Vec<(Vec<Trace>, Vec<Landing>)> = Vec::new();
            for c in &copies {
                let all = c.trace_all(from.as_str(), to.as_str(), &opts)?;
                let l = landings(&all);
                runs.push((all, l));
            }
            if runs.iter().all(|(_, l)| same_landings(l, &runs[0].1)) {
                continue;
            }
            let mut divergences = Vec::new();
            for (i, (traces, l)) in runs.iter().enumerate().skip(1) {
                if same_landings(l, &runs[0].1) {
                    continue;
                }
                let (Some(a), Some(b)) = (runs[0].0.first(), traces.first()) else { continue };
                let (ha, hb) = (comparable(a), comparable(b));
                let at = ha
                    .iter()
                    .zip(&hb)
                    .position(|(x, y)| hop_key(x) != hop_key(y))
                    .unwrap_or(ha.len().min(hb.len()));
                divergences.push(Divergence {
                    modes: (MODES[0].to_string(), MODES[i].to_string()),
                    hops: (
                        ha.get(at).map(|h| render_hop(a, h)),
                        hb.get(at).map(|h| render_hop(b, h)),
                    ),
                });
            }
            let proto = runs[0].0.first().map_or(FlowProto::Tcp, |t| t.proto);
            out.push(ModeDifference {
                from: from.clone(),
                to: to.clone(),
                proto,
                outcomes: MODES.iter().zip(runs).map(|(m, (_, l))| (m.to_string(), l)).collect(),
                divergences,
            });
        }
        Ok(out)
    }

    /// Every pod against every Service port (ClusterIP and port, with the port's protocol):
    /// the flows `podnet compare-modes --all` compares.
    pub fn every_pod_to_every_service_port(&self) -> Vec<(String, String, Option<FlowProto>)> {
        let mut flows = Vec::new();
        let pods: Vec<String> =
            self.world.pods.iter().map(|p| format!("pod/{}/{}", p.namespace, p.name)).collect();
        for svc in &self.services.list {
            let Some(ip) = svc.cluster_ip else { continue };
            for port in &svc.ports {
                let proto = match port.protocol {
                    podnet_netfilter::Proto::UDP => FlowProto::Udp,
                    podnet_netfilter::Proto::TCP => FlowProto::Tcp,
                    _ => continue,
                };
                for p in &pods {
                    flows.push((p.clone(), format!("{ip}:{}", port.port), Some(proto)));
                }
            }
        }
        flows
    }
}

impl fmt::Display for ModeDifference {
    /// The flow, each mode's outcomes, and where the modes part.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} -> {} ({})", self.from, self.to, self.proto)?;
        for (mode, ls) in &self.outcomes {
            for (i, l) in ls.iter().enumerate() {
                let head = if i == 0 { format!("{mode}:") } else { String::new() };
                write!(f, "  {head:<10} {:>5.1}% {}", l.probability * 100.0, l.disposition)?;
                if let Some(r) = &l.reason {
                    write!(f, " ({r})")?;
                }
                if let Some(d) = &l.delivered_to {
                    write!(f, " to {d}")?;
                }
                if let Some(s) = &l.server_saw {
                    write!(f, ", server saw {s}")?;
                }
                if let Some(r) = &l.reply_from {
                    write!(f, ", reply from {r}")?;
                }
                writeln!(f)?;
            }
        }
        for d in &self.divergences {
            writeln!(f, "  {} and {} part at:", d.modes.0, d.modes.1)?;
            writeln!(f, "    {:<9} {}", d.modes.0, d.hops.0.as_deref().unwrap_or("(trace ended)"))?;
            writeln!(f, "    {:<9} {}", d.modes.1, d.hops.1.as_deref().unwrap_or("(trace ended)"))?;
        }
        Ok(())
    }
}
