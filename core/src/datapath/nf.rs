//! The netfilter glue: one hook of a namespace's [`Netfilter`](podnet_netfilter::Netfilter)
//! run on a packet, with the namespace's devices and addresses as the hook sees them, and
//! its report turned into trace hops (rules, NAT, conntrack, `LOG` lines), the kernel log,
//! and a verdict: go on, drop, or REJECT.

use std::net::Ipv4Addr;

use podnet_netfilter::hook::{DropCause, HookEnv, HookReport, HookVerdict};
use podnet_netfilter::packet::Manip;
use podnet_netfilter::rule::addrtype;
use podnet_netfilter::{Hook, Skb};

use crate::ids::{IfIndex, NetnsId};
use crate::trace::{HopKind, PacketView, Tag};

use super::{Datapath, HostStacks, KLOG_LINES, hop, reason};

impl<H: HostStacks> Datapath<'_, H> {
    /// Runs one netfilter hook in `ns` with trace hops; returns whether the packet goes on.
    /// A namespace without netfilter (a pod's) lets every packet on, checked inline.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn nf_hook(
        &mut self,
        ns: NetnsId,
        hook: Hook,
        skb: &mut Skb,
        tag: Tag,
        in_dev: Option<IfIndex>,
        out_dev: Option<IfIndex>,
        phys: (Option<IfIndex>, Option<IfIndex>),
        masq_addr: Option<Ipv4Addr>,
    ) -> bool {
        self.w.netns[ns.idx()].nf.is_none()
            || self.nf_hook_run(ns, hook, skb, tag, in_dev, out_dev, phys, masq_addr)
    }

    /// [`Cluster::nf_hook`] in a namespace that has netfilter.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn nf_hook_run(
        &mut self,
        ns: NetnsId,
        hook: Hook,
        skb: &mut Skb,
        tag: Tag,
        in_dev: Option<IfIndex>,
        out_dev: Option<IfIndex>,
        phys: (Option<IfIndex>, Option<IfIndex>),
        masq_addr: Option<Ipv4Addr>,
    ) -> bool {
        let Some(mut nf) = self.w.netns[ns.idx()].nf.take() else { return true };
        // Asked only when a rule has `-m addrtype`: the namespace's addresses, looked up in
        // place (nothing is collected per packet).
        let addr_type = |a: Ipv4Addr, dev: Option<&str>| -> u16 {
            let local = a.is_loopback()
                || self.w.netns[ns.idx()].devs.iter().any(|d| {
                    let d = &self.w.devs[d.idx()];
                    d.addrs.iter().any(|x| x.ip() == a) && dev.is_none_or(|want| want == d.name)
                });
            if local { addrtype::LOCAL } else { addrtype::UNICAST }
        };
        let name = |d: Option<IfIndex>| d.map(|d| self.w.devs[d.idx()].name.as_str());
        let tracing = self.tracing();
        // Boxed, so that with hops off the empty view is dropped without a call.
        let before = if tracing { PacketView::of_ip(&skb.data).map(Box::new) } else { None };
        let env = HookEnv {
            in_iface: name(in_dev),
            out_iface: name(out_dev),
            physdev_in: name(phys.0),
            physdev_out: name(phys.1),
            bridged: phys.0.is_some() || phys.1.is_some(),
            masq_addr,
            addr_type: &addr_type,
            now: self.w.now,
            trace: tracing,
        };
        let mut report = HookReport::accept();
        nf.hook_into(hook, skb, &env, &mut report);
        let ct_line = match &skb.ct {
            podnet_netfilter::CtRef::Confirmed(id, _, _)
                if tracing && (report.confirmed || !report.nat.is_empty()) =>
            {
                nf.conntrack
                    .get(*id)
                    .map(|e| podnet_netfilter::conntrack::format_entry(e, self.w.now))
            }
            _ => None,
        };
        self.w.netns[ns.idx()].nf = Some(nf);
        // A packet's usual hook, tracing off: accepted, no rule to show, no line to log.
        if !tracing && report.is_quiet_accept() {
            // Such a report holds nothing to free (no notes, no drop text): forgetting it
            // spares the drop glue's call on every hook.
            std::mem::forget(report);
            return true;
        }
        self.nf_hook_outcome(ns, hook, skb, tag, in_dev.or(out_dev), &report, before, ct_line)
    }

    /// What [`Cluster::nf_hook_run`] makes of a hook's report beyond a quiet accept: the
    /// kernel log, the trace's hops, and a drop or reject. Kept out of line, so that the
    /// usual hook's code stays small.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn nf_hook_outcome(
        &mut self,
        ns: NetnsId,
        hook: Hook,
        skb: &Skb,
        tag: Tag,
        dev: Option<IfIndex>,
        report: &HookReport,
        before: Option<Box<PacketView>>,
        ct_line: Option<String>,
    ) -> bool {
        let tracing = self.tracing();
        if !report.logs().is_empty() {
            let klog = &mut self.w.netns[ns.idx()].klog;
            klog.extend(report.logs().iter().cloned());
            if klog.len() > KLOG_LINES {
                let extra = klog.len() - KLOG_LINES;
                klog.drain(..extra);
            }
        }
        if tracing {
            for line in report.logs() {
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Log { hook },
                    format!("kernel: {line}"),
                    None,
                    None,
                );
            }
            for h in report.hits() {
                if let Some(n) = &h.nft {
                    let origin = crate::trace::nft_origin(
                        &h.chain,
                        h.comment.as_deref(),
                        n.element.as_deref(),
                    );
                    let table = format!("{} {}", n.family.as_str(), n.table);
                    let detail = match &n.element {
                        Some(e) => format!("{table} {} handle {}: element {e}", h.chain, n.handle),
                        None if n.handle == 0 => format!("{table} {} {}", h.chain, h.rule),
                        None => format!("{table} {} handle {}", h.chain, n.handle),
                    };
                    let rule = match &h.comment {
                        Some(c) => format!("{} comment \"{c}\"", h.rule),
                        None => h.rule.clone(),
                    };
                    hop!(
                        self,
                        tag,
                        ns,
                        dev,
                        HopKind::NftRule {
                            hook,
                            table,
                            chain: h.chain.clone(),
                            handle: n.handle,
                            rule,
                            element: n.element.clone(),
                            origin,
                        },
                        detail,
                        None,
                        None,
                    );
                    continue;
                }
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Rule {
                        hook,
                        table: h.table,
                        chain: h.chain.clone(),
                        rule_num: h.rule_num,
                        rule: h.rule.clone(),
                        origin: h.comment.as_deref().and_then(crate::trace::origin_of),
                    },
                    String::new(),
                    None,
                    None,
                );
            }
            for n in &report.nat {
                use podnet_netfilter::Direction;
                let what = match (n.manip, n.decided_here, n.dir) {
                    (Manip::Dst, true, _) if report.ipvs.is_some() => "IPVS: scheduled, DNAT",
                    (Manip::Dst, true, _) => "DNAT",
                    (Manip::Src, true, _) => "SNAT",
                    (Manip::Dst, false, Direction::Original) => {
                        "conntrack: DNAT of the established connection"
                    }
                    (Manip::Src, false, Direction::Original) => {
                        "conntrack: SNAT of the established connection"
                    }
                    (Manip::Dst, false, Direction::Reply) => {
                        "conntrack: reverse SNAT (destination restored)"
                    }
                    (Manip::Src, false, Direction::Reply) => {
                        "conntrack: reverse DNAT (source restored)"
                    }
                };
                let detail = format!("{what} {}:{} -> {}:{}", n.from.0, n.from.1, n.to.0, n.to.1);
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Nat { hook },
                    detail,
                    before.as_deref().cloned(),
                    PacketView::of_ip(&skb.data),
                );
            }
            if let Some(line) = ct_line {
                let verb =
                    if report.confirmed { "conntrack: new entry" } else { "conntrack: entry used" };
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Conntrack { hook },
                    format!("{verb}: {line}"),
                    None,
                    None,
                );
            }
        }
        match &report.verdict {
            HookVerdict::Accept => true,
            HookVerdict::Drop(cause) => {
                let (code, text) = match cause {
                    DropCause::Rule => {
                        (reason::RULE, format!("dropped by a DROP rule or policy in {hook}"))
                    }
                    DropCause::Malformed(m) => (reason::MALFORMED, m.clone()),
                    DropCause::ConntrackFull => {
                        (reason::CONNTRACK_FULL, "nf_conntrack: table full, dropping packet".into())
                    }
                    DropCause::ConntrackClash => {
                        (reason::CONNTRACK_FULL, "nf_conntrack: insert clash".into())
                    }
                    DropCause::NatExhausted => {
                        (reason::NAT_EXHAUSTED, "no free source port for SNAT/MASQUERADE".into())
                    }
                    DropCause::NoMasqAddress => (
                        reason::NAT_EXHAUSTED,
                        "MASQUERADE: no address on the output device".into(),
                    ),
                };
                self.drop_hop(tag, ns, dev, code, text, PacketView::of_ip(&skb.data));
                false
            }
            &HookVerdict::Reject(with) => {
                hop!(
                    self,
                    tag,
                    ns,
                    dev,
                    HopKind::Drop { reason: reason::RULE },
                    if report.by_nft {
                        // An nf_tables `reject`, in nft's words.
                        let how = match with.name().strip_prefix("icmp-") {
                            Some(t) => format!("icmp {t}"),
                            None => "tcp reset".to_string(),
                        };
                        format!("reject with {how} in {hook}")
                    } else {
                        format!("REJECT --reject-with {} in {hook}", with.name())
                    },
                    PacketView::of_ip(&skb.data),
                    None,
                );
                if let Some(rec) = self.w.sim.rec.as_mut() {
                    rec.note_reject(tag, with, report.by_nft);
                }
                self.send_reject(ns, &skb.data, with, tag);
                false
            }
        }
    }
}
