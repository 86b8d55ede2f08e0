//! The netfilter pipeline of one namespace: what runs at each hook, in the kernel's priority
//! order, and how NAT decided once per connection is replayed on every packet.
//!
//! | hook | order (priority) |
//! |---|---|
//! | PREROUTING | raw (-300), conntrack in (-200), mangle (-150), nat dst (-100) |
//! | OUTPUT | raw, conntrack in, mangle, nat dst, filter (0) |
//! | INPUT | mangle, filter, nat src (100), conntrack confirm (last) |
//! | FORWARD | mangle, filter |
//! | POSTROUTING | mangle, nat src (100), conntrack confirm (last) |
//!
//! nf_tables base chains run between these steps by their priority (after an iptables table
//! of equal priority, which registered first); nat chains are consulted with the nat table,
//! by priority, from the NAT core's step.
//!
//! The nat table is consulted only for a connection's first packet, once per manip type
//! (`nf_nat_initialized`); its decision (or a null binding) is stored in the conntrack entry.
//! Every packet, first or later, then gets the stored rewrite (`nf_nat_packet`).
//!
//! A hook takes one packet ([`Netfilter::hook`], or [`Netfilter::hook_into`] to fill in a
//! report the caller keeps).

use std::net::Ipv4Addr;
use std::sync::Arc;

use smoltcp::time::Instant;

use crate::conntrack::{ConfirmError, Conntrack, CtInfo, CtRef, Direction, Entry, status};
use crate::counters::Counters;
use crate::eval::{self, EvalState, PacketCtx, RecentLists, RuleHit, Verdict};
use crate::ipset::IpSets;
use crate::packet::{self, Manip, PacketError, PacketInfo, Proto, Tuple};
use crate::rng::Rng;
use crate::rule::{NatFlags, NatRange, RejectWith};
use crate::table::{Hook, Ruleset, TableName};

/// A packet on its way through a namespace: IPv4 bytes plus what the kernel keeps beside
/// them in the skb (mark, conntrack attachment).
///
/// A hook's reading of the headers stays with the packet for the next hook, as the
/// kernel's hooks share the skb's parsed headers: a packet is read once where it enters a
/// namespace (PREROUTING or OUTPUT, with the header checksum checked as `ip_rcv` checks
/// it), not once per hook. Code that changes [`Skb::data`] between hooks calls
/// [`Skb::changed`] (or changes it through [`Skb::decrease_ttl`]), so the next hook reads it
/// again; debug builds check at every hook that the kept reading is what the bytes say.
#[derive(Clone, Debug, Default)]
pub struct Skb {
    /// The IPv4 packet, header first.
    pub data: Vec<u8>,
    /// `skb->mark`.
    pub mark: u32,
    /// `skb->_nfct`.
    pub ct: CtRef,
    /// The Ethernet header the packet was received with (what `LOG` prints as `MAC=`).
    pub mac_header: Option<[u8; 14]>,
    /// What the last hook read of `data` (see the type's docs).
    read: Option<PacketInfo>,
}

/// Packets are equal when their bytes and what the kernel keeps beside them are (whether a
/// hook's reading is kept with them does not matter).
impl PartialEq for Skb {
    fn eq(&self, other: &Skb) -> bool {
        self.data == other.data
            && self.mark == other.mark
            && self.ct == other.ct
            && self.mac_header == other.mac_header
    }
}

impl Eq for Skb {}

impl Skb {
    /// A fresh packet with no mark and no conntrack attachment.
    pub fn new(data: Vec<u8>) -> Skb {
        Skb { data, mark: 0, ct: CtRef::None, mac_header: None, read: None }
    }

    /// Says that [`Skb::data`] was changed outside a hook: the next hook reads it afresh.
    pub fn changed(&mut self) {
        self.read = None;
    }

    /// What the last hook read of [`Skb::data`] (tuple, lengths, TTL), if a hook has read it
    /// since it last changed: a caller that needs the same reading after the hooks takes it
    /// here rather than parsing the packet again.
    pub fn reading(&self) -> Option<&PacketInfo> {
        self.read.as_ref()
    }

    /// Whether a MASQUERADE may still be decided for this packet: its connection is new (or
    /// not looked up yet). Once a connection is confirmed its later packets replay the NAT its
    /// first packet decided, and [`HookEnv::masq_addr`] is not read for them: a caller may
    /// leave it `None` rather than work the address out.
    pub fn may_masquerade(&self) -> bool {
        matches!(self.ct, CtRef::None | CtRef::Unconfirmed(_))
    }

    /// `ip_decrease_ttl`: one off the TTL, the header checksum updated to match (RFC 1624).
    /// A packet whose TTL is already 0, or that is too short to have one, is left as it is.
    pub fn decrease_ttl(&mut self) {
        let Some(h) = self.data.get_mut(..12) else { return };
        let (ttl, proto) = (h[8], h[9]);
        if ttl == 0 {
            return;
        }
        h[8] = ttl - 1;
        let c = packet::csum_replace2(
            u16::from_be_bytes([h[10], h[11]]),
            u16::from_be_bytes([ttl, proto]),
            u16::from_be_bytes([ttl - 1, proto]),
        );
        h[10..12].copy_from_slice(&c.to_be_bytes());
        if let Some(info) = self.read.as_mut() {
            info.ttl = ttl - 1;
        }
    }
}

/// What the caller knows about the packet's surroundings at a hook.
pub struct HookEnv<'a> {
    /// Input device.
    pub in_iface: Option<&'a str>,
    /// Output device.
    pub out_iface: Option<&'a str>,
    /// Bridge port in (br_netfilter).
    pub physdev_in: Option<&'a str>,
    /// Bridge port out (br_netfilter).
    pub physdev_out: Option<&'a str>,
    /// Bridged rather than routed.
    pub bridged: bool,
    /// The address MASQUERADE uses: the primary address of the output device toward the
    /// next hop (`inet_select_addr`).
    pub masq_addr: Option<Ipv4Addr>,
    /// Address type of an address (`RTN_*` bits), optionally limited to one device.
    pub addr_type: &'a dyn Fn(Ipv4Addr, Option<&str>) -> u16,
    /// Virtual time.
    pub now: Instant,
    /// Record rule hits.
    pub trace: bool,
}

/// A NAT rewrite applied to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NatApplied {
    /// Which side.
    pub manip: Manip,
    /// Address and port before.
    pub from: (Ipv4Addr, u16),
    /// Address and port after.
    pub to: (Ipv4Addr, u16),
    /// Whether this packet's rule walk decided it (first packet), or conntrack replayed it.
    pub decided_here: bool,
    /// The packet's direction in its connection.
    pub dir: Direction,
}

/// The NAT rewrites of one hook, held inline (a hook applies at most two: one from the nat
/// table, decided or replayed, and IPVS's at LOCAL_IN), so reporting them allocates nothing.
/// Reads as a slice of [`NatApplied`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatList {
    items: [NatApplied; NatList::CAPACITY],
    len: usize,
}

impl NatList {
    const CAPACITY: usize = 2;
    const FILLER: NatApplied = NatApplied {
        manip: Manip::Src,
        from: (Ipv4Addr::UNSPECIFIED, 0),
        to: (Ipv4Addr::UNSPECIFIED, 0),
        decided_here: false,
        dir: Direction::Original,
    };

    /// Records a rewrite (beyond the capacity, which no hook reaches, the oldest is kept
    /// and the newest replaces the last slot).
    pub fn push(&mut self, n: NatApplied) {
        debug_assert!(self.len < Self::CAPACITY, "a hook applies at most two NAT rewrites");
        let at = self.len.min(Self::CAPACITY - 1);
        self.items[at] = n;
        self.len = (self.len + 1).min(Self::CAPACITY);
    }
}

impl Default for NatList {
    fn default() -> NatList {
        NatList { items: [Self::FILLER; Self::CAPACITY], len: 0 }
    }
}

impl std::ops::Deref for NatList {
    type Target = [NatApplied];
    fn deref(&self) -> &[NatApplied] {
        &self.items[..self.len]
    }
}

impl<'a> IntoIterator for &'a NatList {
    type Item = &'a NatApplied;
    type IntoIter = std::slice::Iter<'a, NatApplied>;
    fn into_iter(self) -> Self::IntoIter {
        self.items[..self.len].iter()
    }
}

/// Why netfilter dropped a packet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DropCause {
    /// A rule or policy said DROP.
    Rule,
    /// The packet could not be parsed.
    Malformed(String),
    /// The conntrack table was full.
    ConntrackFull,
    /// Conntrack insert clash.
    ConntrackClash,
    /// No free source port for SNAT/MASQUERADE.
    NatExhausted,
    /// MASQUERADE with no address on the output device.
    NoMasqAddress,
}

/// The outcome of one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookVerdict {
    /// The packet continues.
    Accept,
    /// The packet is gone.
    Drop(DropCause),
    /// REJECT: the caller sends the error back to the sender and drops the packet.
    Reject(RejectWith),
}

impl From<DropCause> for HookVerdict {
    fn from(cause: DropCause) -> HookVerdict {
        HookVerdict::Drop(cause)
    }
}

/// What happened at a hook, for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct HookReport {
    /// The verdict.
    pub verdict: HookVerdict,
    /// The rules that fired and the log lines, when there are any ([`HookReport::hits`],
    /// [`HookReport::logs`]): boxed, so that a hook with neither (a packet's usual hook,
    /// tracing off) makes and drops a small report.
    notes: Option<Box<HookNotes>>,
    /// NAT rewrites applied.
    pub nat: NatList,
    /// The conntrack state the packet had at this hook.
    pub ctinfo: Option<CtInfo>,
    /// Whether this hook confirmed a new conntrack entry.
    pub confirmed: bool,
    /// IPVS scheduled this new connection: (virtual service, real server).
    pub ipvs: Option<((Ipv4Addr, u16), (Ipv4Addr, u16))>,
    /// The verdict (a drop or reject) came from an nf_tables chain, not an iptables table.
    pub by_nft: bool,
}

/// What a hook has to tell beyond its verdict and rewrites (see [`HookReport`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HookNotes {
    hits: Vec<RuleHit>,
    logs: Vec<String>,
}

impl HookReport {
    /// A report of a packet accepted with nothing done to it, that the hook fills in.
    pub fn accept() -> HookReport {
        HookReport {
            verdict: HookVerdict::Accept,
            notes: None,
            nat: NatList::default(),
            ctinfo: None,
            confirmed: false,
            ipvs: None,
            by_nft: false,
        }
    }

    /// Whether the hook accepted the packet with nothing to tell beyond its rewrites: no
    /// rule hit recorded, no line logged. What a packet usually meets with tracing off.
    #[inline]
    pub fn is_quiet_accept(&self) -> bool {
        self.verdict == HookVerdict::Accept && self.notes.is_none()
    }

    /// Rules that fired (when tracing), in the order they fired.
    pub fn hits(&self) -> &[RuleHit] {
        self.notes.as_deref().map_or(&[], |n| &n.hits)
    }

    /// Kernel log lines of `LOG` rules that fired (always, as the kernel logs them).
    pub fn logs(&self) -> &[String] {
        self.notes.as_deref().map_or(&[], |n| &n.logs)
    }

    fn notes(&mut self) -> &mut HookNotes {
        self.notes.get_or_insert_with(Box::default)
    }
}

/// Netfilter state of one network namespace.
#[derive(Clone, Debug)]
pub struct Netfilter {
    /// iptables tables, shared copy-on-write: nodes given the same rules share one copy until
    /// a change makes one node's differ (packets only read them: they count into
    /// [`Netfilter::counters`]). Read them with [`Netfilter::tables`], change them through
    /// [`Netfilter::tables_mut`], replace them with [`Netfilter::set_tables`].
    tables: Arc<Ruleset>,
    /// This namespace's packet and byte counters of those tables' rules and policies.
    pub counters: Counters,
    /// The conntrack table.
    pub conntrack: Conntrack,
    /// `-m recent` lists.
    pub recent: RecentLists,
    /// ipsets.
    pub sets: IpSets,
    /// IPVS virtual services.
    pub ipvs: crate::ipvs::Ipvs,
    /// Randomness (statistic match, NAT port choice).
    pub rng: Rng,
    /// Use chain dispatch indices (off only to compare with a linear walk).
    pub(crate) indexed: bool,
    /// nf_tables tables, shared copy-on-write as the iptables tables are: read them with
    /// [`Netfilter::nft`], change them with [`Netfilter::nft_apply`].
    nft: Arc<crate::nft::Ruleset>,
    /// What this namespace's packets wrote into the nf_tables sets (`update @set`).
    pub nft_state: crate::nft::NftState,
}

impl Netfilter {
    /// The tables.
    pub fn tables(&self) -> &Arc<Ruleset> {
        &self.tables
    }

    /// Replaces the tables, counters and all, as a full `iptables-restore` without `-c`
    /// does: this namespace's counts start again from zero.
    pub fn set_tables(&mut self, tables: Arc<Ruleset>) {
        self.tables = tables;
        self.counters = Counters::default();
    }

    /// The tables, for a change: a copy is made first if other holders share them.
    /// This namespace's counts are folded into its own copy first, so none is lost when
    /// the rules move.
    pub fn tables_mut(&mut self) -> &mut Ruleset {
        let rules = Arc::make_mut(&mut self.tables);
        if self.counters.is_dirty() {
            self.counters.fold_into(rules);
        }
        rules
    }

    /// `iptables-save` (kernel form) of `tables`, counting this namespace's packets:
    /// [`Ruleset::save_kernel_form_with`] with [`Netfilter::counters`] added in.
    pub fn save_kernel_form_with(&self, tables: &[TableName], counters: bool) -> String {
        self.tables.save_kernel_form_counted(tables, counters, Some(&self.counters))
    }

    /// Empty tables, an empty conntrack table, randomness from `seed`.
    pub fn new(seed: u64) -> Netfilter {
        Netfilter {
            tables: Arc::new(Ruleset::default()),
            counters: Counters::default(),
            conntrack: Conntrack::default(),
            recent: RecentLists::default(),
            sets: IpSets::default(),
            ipvs: crate::ipvs::Ipvs::default(),
            rng: Rng::new(seed),
            indexed: true,
            nft: Arc::new(crate::nft::Ruleset::default()),
            nft_state: crate::nft::NftState::default(),
        }
    }

    /// The nf_tables tables.
    pub fn nft(&self) -> &Arc<crate::nft::Ruleset> {
        &self.nft
    }

    /// Applies `nft -f` input to this namespace's nf_tables tables, as one transaction (see
    /// [`crate::nft::Ruleset::apply`]).
    pub fn nft_apply(&mut self, text: &str) -> Result<(), crate::nft::NftError> {
        Arc::make_mut(&mut self.nft).apply(text)
    }

    /// Replaces the nf_tables tables (shared with other namespaces given the same).
    pub fn set_nft(&mut self, rules: Arc<crate::nft::Ruleset>) {
        self.nft = rules;
    }

    /// Runs one hook over a packet.
    #[inline]
    pub fn hook(&mut self, hook: Hook, skb: &mut Skb, env: &HookEnv<'_>) -> HookReport {
        let mut report = HookReport::accept();
        self.run_hook(hook, skb, env, &mut report);
        report
    }

    /// [`Netfilter::hook`], its report written into `report` (whatever it held before is
    /// replaced): a caller that runs many hooks keeps one report where it lives, rather than
    /// having each one made here and copied out.
    #[inline]
    pub fn hook_into(
        &mut self,
        hook: Hook,
        skb: &mut Skb,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) {
        *report = HookReport::accept();
        self.run_hook(hook, skb, env, report);
    }

    /// [`Netfilter::hook`], filling in `report` (which the caller's frame holds, so a
    /// report is not made here and copied out).
    fn run_hook(&mut self, hook: Hook, skb: &mut Skb, env: &HookEnv<'_>, report: &mut HookReport) {
        // The IPv4 header checksum is checked where packets enter (PREROUTING for received
        // ones, OUTPUT for locally generated ones), as `ip_rcv` does; later hooks trust it,
        // and take the reading the hook before them left with the packet.
        let parsed = match (hook, skb.read.take()) {
            (Hook::PreRouting | Hook::Output, _) => packet::parse(&skb.data),
            (_, Some(info)) => {
                debug_assert_eq!(
                    packet::parse_trusted(&skb.data).as_ref(),
                    Ok(&info),
                    "the packet changed since the last hook without Skb::changed"
                );
                Ok(info)
            }
            (_, None) => packet::parse_trusted(&skb.data),
        };
        let mut info = match parsed {
            Ok(i) => i,
            Err(e) => {
                report.verdict = HookVerdict::Drop(DropCause::Malformed(e.to_string()));
                return;
            }
        };
        match self.steps(hook, skb, &mut info, env, report) {
            Err(verdict) => report.verdict = verdict,
            Ok(then) => {
                report.ctinfo = Some(ctinfo(&skb.ct));
                skb.read = Some(info);
                if then == Then::Confirm {
                    match self.confirm(skb, env.now) {
                        Ok(c) => report.confirmed = c,
                        Err(e) => {
                            report.verdict = HookVerdict::Drop(match e {
                                ConfirmError::TableFull => DropCause::ConntrackFull,
                                ConfirmError::Clash => DropCause::ConntrackClash,
                            });
                        }
                    }
                }
            }
        }
    }

    /// What a hook runs, in the kernel's priority order (the module docs' table): each step
    /// either lets the packet go on or ends its way with a verdict.
    fn steps(
        &mut self,
        hook: Hook,
        skb: &mut Skb,
        info: &mut PacketInfo,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) -> Result<Then, HookVerdict> {
        use TableName::{Filter, Mangle, Raw};
        // The nf_tables base chains (other than nat ones, which the NAT core consults) run
        // between the iptables steps by priority: `nft` runs those below `to` not run yet.
        // At equal priority the iptables table, registered first, runs first.
        let mut at = i32::MIN;
        let no_nft = self.nft.is_empty();
        macro_rules! nft {
            ($to:expr) => {
                if !no_nft {
                    self.nft_until(hook, &mut at, $to, skb, info, env, report)?;
                }
            };
        }
        match hook {
            Hook::PreRouting => {
                nft!(-300);
                self.table(Raw, hook, skb, info, env, report)?;
                nft!(-200);
                self.conntrack_in(skb, info, env.now);
                nft!(-150);
                self.table(Mangle, hook, skb, info, env, report)?;
                nft!(-100);
                self.nat(hook, skb, info, env, report)?;
                nft!(i32::MAX);
                Ok(Then::Done)
            }
            Hook::Output => {
                nft!(-300);
                self.table(Raw, hook, skb, info, env, report)?;
                nft!(-200);
                self.conntrack_in(skb, info, env.now);
                nft!(-150);
                self.table(Mangle, hook, skb, info, env, report)?;
                nft!(-100);
                self.nat(hook, skb, info, env, report)?;
                // IPVS at LOCAL_OUT priority -98: after nat OUTPUT (-100), before filter (0).
                nft!(-98);
                if !self.ipvs.is_empty() {
                    self.ipvs_in(skb, info, env.now, report)?;
                }
                nft!(0);
                self.table(Filter, hook, skb, info, env, report)?;
                nft!(i32::MAX);
                Ok(Then::Done)
            }
            Hook::Input => {
                nft!(-150);
                self.table(Mangle, hook, skb, info, env, report)?;
                nft!(0);
                self.table(Filter, hook, skb, info, env, report)?;
                // IPVS at LOCAL_IN priority 98, before nat INPUT (100).
                nft!(98);
                if !self.ipvs.is_empty() {
                    self.ipvs_in(skb, info, env.now, report)?;
                    if report.ipvs.is_some() {
                        // IPVS takes the packet out of LOCAL_IN (NF_STOLEN) and sends it on
                        // through POSTROUTING, where its connection is confirmed.
                        return Ok(Then::Done);
                    }
                }
                nft!(100);
                self.nat(hook, skb, info, env, report)?;
                nft!(i32::MAX);
                Ok(Then::Confirm)
            }
            Hook::Forward => {
                nft!(-150);
                self.table(Mangle, hook, skb, info, env, report)?;
                nft!(0);
                self.table(Filter, hook, skb, info, env, report)?;
                nft!(i32::MAX);
                Ok(Then::Done)
            }
            Hook::PostRouting => {
                nft!(-150);
                self.table(Mangle, hook, skb, info, env, report)?;
                nft!(100);
                self.nat(hook, skb, info, env, report)?;
                nft!(i32::MAX);
                Ok(Then::Confirm)
            }
        }
    }

    /// Runs the nf_tables base chains on `hook` that are not nat chains, with priorities from
    /// `*at` up to (not including) `to`, then moves `*at` to `to`.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn nft_until(
        &mut self,
        hook: Hook,
        at: &mut i32,
        to: i32,
        skb: &mut Skb,
        info: &PacketInfo,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) -> Result<(), HookVerdict> {
        let from = std::mem::replace(at, to);
        let Netfilter { nft, conntrack, rng, nft_state, .. } = self;
        for b in nft.on_hook(hook) {
            if b.nat || b.priority < from || b.priority >= to {
                continue;
            }
            let cx = NftCx { rules: nft, conntrack, rng, state: nft_state };
            let v = run_nft(cx, b.table, b.chain, skb, info, env, report);
            report.by_nft = matches!(v, Verdict::Drop | Verdict::Reject(_));
            match v {
                Verdict::Drop => return Err(HookVerdict::Drop(DropCause::Rule)),
                Verdict::Reject(w) => return Err(HookVerdict::Reject(w)),
                _ => {}
            }
        }
        Ok(())
    }

    /// One table's walk as a step of a hook (the nat table's is [`Netfilter::nat`]).
    #[inline]
    fn table(
        &mut self,
        t: TableName,
        hook: Hook,
        skb: &mut Skb,
        info: &PacketInfo,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) -> Result<(), HookVerdict> {
        if self.nothing_to_walk(t, hook, info) {
            return Ok(());
        }
        match self.run_table(t, hook, skb, info, env, report) {
            Verdict::Drop => Err(HookVerdict::Drop(DropCause::Rule)),
            Verdict::Reject(w) => Err(HookVerdict::Reject(w)),
            Verdict::Notrack if t == TableName::Raw => {
                skb.ct = CtRef::Untracked;
                Ok(())
            }
            // NAT targets outside the nat table are refused by iptables itself; treat as
            // accept if ever seen.
            _ => Ok(()),
        }
    }

    /// IPVS for the first packet of a connection to a virtual service: schedule a real
    /// server, rewrite the destination, and record it in the conntrack entry.
    fn ipvs_in(
        &mut self,
        skb: &mut Skb,
        info: &mut PacketInfo,
        now: smoltcp::time::Instant,
        report: &mut HookReport,
    ) -> Result<(), DropCause> {
        let CtRef::Unconfirmed(entry) = &mut skb.ct else { return Ok(()) };
        let t = info.tuple;
        if self.ipvs.get(t.proto, t.dst, t.dport).is_none() || entry.status & status::DST_NAT != 0 {
            return Ok(());
        }
        let Some((addr, port)) =
            self.ipvs.schedule(t.proto, t.dst, t.dport, t.src, now, &mut self.rng)
        else {
            // No real server: IPVS lets the packet through to the local stack.
            return Ok(());
        };
        entry.set_nat(Manip::Dst, addr, port);
        packet::rewrite(&mut skb.data, Manip::Dst, addr, port)
            .map_err(|e| DropCause::Malformed(e.to_string()))?;
        *info =
            packet::parse_trusted(&skb.data).map_err(|e| DropCause::Malformed(e.to_string()))?;
        report.nat.push(NatApplied {
            manip: Manip::Dst,
            from: (t.dst, t.dport),
            to: (addr, port),
            decided_here: true,
            dir: Direction::Original,
        });
        report.ipvs = Some(((t.dst, t.dport), (addr, port)));
        Ok(())
    }

    /// Attaches the packet to conntrack (`nf_conntrack_in`) unless it already is.
    pub fn conntrack_in(&mut self, skb: &mut Skb, info: &PacketInfo, now: Instant) {
        if matches!(skb.ct, CtRef::None) {
            skb.ct = self.conntrack.lookup(info, now);
        }
    }

    /// Confirms the packet's unconfirmed entry; returns whether one was inserted.
    pub fn confirm(&mut self, skb: &mut Skb, now: Instant) -> Result<bool, ConfirmError> {
        if let CtRef::Unconfirmed(_) = skb.ct {
            let CtRef::Unconfirmed(e) = std::mem::take(&mut skb.ct) else {
                unreachable!("checked")
            };
            let id = self.conntrack.confirm_boxed(e, now)?;
            skb.ct = CtRef::Confirmed(id, Direction::Original, CtInfo::New);
            return Ok(true);
        }
        Ok(false)
    }

    /// Walks table `t` at `hook`, which has rules there ([`Netfilter::nothing_to_walk`] said
    /// so).
    fn run_table(
        &mut self,
        t: TableName,
        hook: Hook,
        skb: &mut Skb,
        info: &PacketInfo,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) -> Verdict {
        // The rules are only read (they may be shared with other namespaces); packets count
        // into this namespace's own counters.
        let (status_bits, origdst) = self.ct_view(&skb.ct);
        let pkt = packet_ctx(info, env, &skb.ct, status_bits, origdst);
        let mut st = EvalState {
            mark: &mut skb.mark,
            rng: &mut self.rng,
            recent: &mut self.recent,
            sets: &self.sets,
            hits: if env.trace { Some(&mut report.notes().hits) } else { None },
            logs: Vec::new(),
            counters: self.counters.table_mut(t),
        };
        let v = eval::walk_hook(self.tables.table(t), hook, &pkt, &mut st, self.indexed);
        if !st.logs.is_empty() {
            // The packet is unchanged within a table (NAT applies after its verdict), so
            // every LOG rule of this walk saw these bytes.
            let cx = crate::log::LogContext {
                in_iface: env.in_iface,
                out_iface: env.out_iface,
                physdev_in: env.physdev_in,
                physdev_out: env.physdev_out,
                mac_header: skb.mac_header.as_ref(),
            };
            for prefix in std::mem::take(&mut st.logs) {
                report.notes().logs.push(crate::log::log_line(&prefix, &cx, &skb.data));
            }
        }
        v
    }

    /// Whether table `t` has nothing to walk at `hook` (most raw and mangle chains: an
    /// empty built-in chain with policy ACCEPT, whose policy then counts the packet). Checked
    /// before a walk is set up, and inline: a packet meets several such tables per hook.
    #[inline]
    fn nothing_to_walk(&mut self, t: TableName, hook: Hook, info: &PacketInfo) -> bool {
        eval::empty_hook(self.tables.table(t), self.counters.table_mut(t), hook, info.len)
    }

    fn ct_view(&self, ct: &CtRef) -> (u32, Option<Ipv4Addr>) {
        match ct {
            CtRef::Unconfirmed(e) => (e.status, Some(e.orig.dst)),
            CtRef::Confirmed(id, _, _) => {
                self.conntrack.get(*id).map_or((0, None), |e| (e.status, Some(e.orig.dst)))
            }
            _ => (0, None),
        }
    }

    /// The nat step of a hook: decide (first packet only), then apply.
    fn nat(
        &mut self,
        hook: Hook,
        skb: &mut Skb,
        info: &mut PacketInfo,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) -> Result<(), HookVerdict> {
        let manip = match hook {
            Hook::PreRouting | Hook::Output => Manip::Dst,
            _ => Manip::Src,
        };
        let done_bit =
            if manip == Manip::Src { status::SRC_NAT_DONE } else { status::DST_NAT_DONE };
        let mut decided_here = false;
        let needs_decision = matches!(&skb.ct, CtRef::Unconfirmed(e) if e.status & done_bit == 0);
        if needs_decision {
            let v = self.nat_lookup(hook, manip, skb, info, env, report);
            let CtRef::Unconfirmed(entry) = &mut skb.ct else { unreachable!("checked above") };
            match v {
                Verdict::Dnat(range, flags) if manip == Manip::Dst => {
                    let (a, p) = pick_dnat(&range, &flags, entry, &mut self.rng);
                    entry.set_nat(Manip::Dst, a, p);
                    decided_here = true;
                }
                Verdict::Snat(range, flags) if manip == Manip::Src => {
                    let (a, p) = pick_snat(&range, &flags, entry, &self.conntrack, &mut self.rng)
                        .ok_or(DropCause::NatExhausted)?;
                    entry.set_nat(Manip::Src, a, p);
                    decided_here = true;
                }
                Verdict::Masquerade(ports, flags) if manip == Manip::Src => {
                    let addr = env.masq_addr.ok_or(DropCause::NoMasqAddress)?;
                    let range = NatRange { addr_lo: addr, addr_hi: addr, ports };
                    let (a, p) = pick_snat(&range, &flags, entry, &self.conntrack, &mut self.rng)
                        .ok_or(DropCause::NatExhausted)?;
                    entry.set_nat(Manip::Src, a, p);
                    decided_here = true;
                }
                Verdict::Drop => return Err(HookVerdict::Drop(DropCause::Rule)),
                Verdict::Reject(w) => return Err(HookVerdict::Reject(w)),
                _ => entry.status |= done_bit,
            }
            // The reply tuple is now what confirming the connection will look up (at
            // POSTROUTING or INPUT): its bucket is fetched while the packet goes on.
            if manip == Manip::Dst {
                self.conntrack.read_ahead(&entry.reply, false);
            }
        }
        // Apply the stored translation for this packet's direction.
        let (target, dir) = match &skb.ct {
            CtRef::Unconfirmed(e) => {
                (e.nat_target(Direction::Original, manip), Direction::Original)
            }
            CtRef::Confirmed(id, dir, _) => {
                (self.conntrack.get(*id).and_then(|e| e.nat_target(*dir, manip)), *dir)
            }
            _ => (None, Direction::Original),
        };
        if let Some((addr, port)) = target {
            let t = &info.tuple;
            let from = if manip == Manip::Src { (t.src, t.sport) } else { (t.dst, t.dport) };
            let port =
                if eval::nat_has_ports(t.proto) || info.is_icmp_error() { port } else { from.1 };
            if from != (addr, port) || info.is_icmp_error() {
                packet::rewrite(&mut skb.data, manip, addr, port)
                    .map_err(|e: PacketError| DropCause::Malformed(e.to_string()))?;
                if t.proto.has_ports() {
                    // Only the rewritten side of the tuple changed: no need to read it again.
                    let t = &mut info.tuple;
                    match manip {
                        Manip::Src => (t.src, t.sport) = (addr, port),
                        Manip::Dst => (t.dst, t.dport) = (addr, port),
                    }
                    debug_assert_eq!(packet::parse_trusted(&skb.data).as_ref(), Ok(&*info));
                } else {
                    // ICMP: an echo identifier or a quoted packet may have changed too.
                    *info = packet::parse_trusted(&skb.data)
                        .map_err(|e| DropCause::Malformed(e.to_string()))?;
                }
                let t = &info.tuple;
                let to = if manip == Manip::Src { (t.src, t.sport) } else { (t.dst, t.dport) };
                report.nat.push(NatApplied { manip, from, to, decided_here, dir });
            }
        }
        Ok(())
    }
}

impl Netfilter {
    /// The NAT core's lookup for a connection's first packet (`nf_nat_inet_fn`): the nat
    /// table and the nf_tables nat chains on `hook`, by priority (the table first at equal
    /// priority), until one decides a translation for `manip`, drops or rejects.
    fn nat_lookup(
        &mut self,
        hook: Hook,
        manip: Manip,
        skb: &mut Skb,
        info: &PacketInfo,
        env: &HookEnv<'_>,
        report: &mut HookReport,
    ) -> Verdict {
        let decides = |v: &Verdict| match v {
            Verdict::Dnat(..) => manip == Manip::Dst,
            Verdict::Snat(..) | Verdict::Masquerade(..) => manip == Manip::Src,
            Verdict::Drop | Verdict::Reject(_) => true,
            _ => false,
        };
        let table_prio = if manip == Manip::Dst { -100 } else { 100 };
        let nat_chains: smallvec::SmallVec<[crate::nft::BaseRef; 4]> =
            self.nft.on_hook(hook).iter().filter(|b| b.nat).copied().collect();
        let mut chains = nat_chains.into_iter().peekable();
        let mut table_done = false;
        loop {
            let next = chains.peek().copied();
            let v = match next {
                Some(b) if table_done || b.priority < table_prio => {
                    chains.next();
                    let Netfilter { nft, conntrack, rng, nft_state, .. } = self;
                    let cx = NftCx { rules: nft, conntrack, rng, state: nft_state };
                    let v = run_nft(cx, b.table, b.chain, skb, info, env, report);
                    report.by_nft = matches!(v, Verdict::Drop | Verdict::Reject(_));
                    v
                }
                _ if !table_done => {
                    table_done = true;
                    if self.nothing_to_walk(TableName::Nat, hook, info) {
                        continue;
                    }
                    self.run_table(TableName::Nat, hook, skb, info, env, report)
                }
                _ => return Verdict::Accept,
            };
            if decides(&v) {
                return v;
            }
        }
    }
}

/// What rules read of a packet and its surroundings at a hook.
#[inline]
fn packet_ctx<'a>(
    info: &'a PacketInfo,
    env: &HookEnv<'a>,
    ct: &CtRef,
    ct_status: u32,
    ct_origdst: Option<Ipv4Addr>,
) -> PacketCtx<'a> {
    PacketCtx {
        info,
        in_iface: env.in_iface,
        out_iface: env.out_iface,
        physdev_in: env.physdev_in,
        physdev_out: env.physdev_out,
        bridged: env.bridged,
        ctinfo: ctinfo(ct),
        ct_status,
        ct_origdst,
        addr_type: env.addr_type,
        now: env.now,
    }
}

/// What an nf_tables chain's walk borrows of its namespace's netfilter.
struct NftCx<'a> {
    rules: &'a crate::nft::Ruleset,
    conntrack: &'a Conntrack,
    rng: &'a mut Rng,
    state: &'a mut crate::nft::NftState,
}

/// Runs one nf_tables base chain over the packet.
fn run_nft(
    cx: NftCx<'_>,
    table: usize,
    chain: usize,
    skb: &mut Skb,
    info: &PacketInfo,
    env: &HookEnv<'_>,
    report: &mut HookReport,
) -> Verdict {
    let (status_bits, origdst, ct_mark) = match &skb.ct {
        CtRef::Unconfirmed(e) => (e.status, Some(e.orig.dst), e.mark),
        CtRef::Confirmed(id, _, _) => {
            cx.conntrack.get(*id).map_or((0, None, 0), |e| (e.status, Some(e.orig.dst), e.mark))
        }
        _ => (0, None, 0),
    };
    let pkt = packet_ctx(info, env, &skb.ct, status_bits, origdst);
    let mut run = crate::nft::Run {
        mark: &mut skb.mark,
        rng: cx.rng,
        state: cx.state,
        hits: if env.trace { Some(&mut report.notes().hits) } else { None },
        data: &skb.data,
        ct_mark,
    };
    crate::nft::run_chain(&cx.rules.tables[table], chain, &pkt, &mut run)
}

/// How a hook ends when no step stopped the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing more.
    Done,
    /// The connection's entry is confirmed (INPUT and POSTROUTING, last of all).
    Confirm,
}

fn ctinfo(ct: &CtRef) -> CtInfo {
    match ct {
        CtRef::None | CtRef::Invalid => CtInfo::Invalid,
        CtRef::Untracked => CtInfo::Untracked,
        CtRef::Unconfirmed(_) => CtInfo::New,
        CtRef::Confirmed(_, _, i) => *i,
    }
}

fn pick_addr(range: &NatRange, rng: &mut Rng) -> Ipv4Addr {
    let (lo, hi) = (u32::from(range.addr_lo), u32::from(range.addr_hi));
    if hi <= lo { range.addr_lo } else { Ipv4Addr::from(rng.range(lo, hi)) }
}

fn pick_dnat(range: &NatRange, _flags: &NatFlags, e: &Entry, rng: &mut Rng) -> (Ipv4Addr, u16) {
    let addr = pick_addr(range, rng);
    let port = match range.ports {
        Some((lo, hi)) if hi > lo => rng.range(u32::from(lo), u32::from(hi)) as u16,
        Some((lo, _)) => lo,
        None => e.orig.dport,
    };
    (addr, port)
}

/// Picks the source address and port for SNAT/MASQUERADE so that the resulting reply tuple
/// is unique (`nf_nat_l4proto_unique_tuple`): keep the source port when it is free and in
/// range (never under `--random-fully`), else search the range from a random offset.
fn pick_snat(
    range: &NatRange,
    flags: &NatFlags,
    e: &Entry,
    ct: &Conntrack,
    rng: &mut Rng,
) -> Option<(Ipv4Addr, u16)> {
    let addr = pick_addr(range, rng);
    // The packet as it will leave, after any DNAT: the reply must come back to addr:port.
    let fwd = Tuple {
        src: e.orig.src,
        dst: e.reply.src,
        proto: e.orig.proto,
        sport: e.orig.sport,
        dport: e.reply.sport,
    };
    let taken = |p: u16| {
        ct.tuple_taken(&Tuple {
            src: fwd.dst,
            dst: addr,
            proto: fwd.proto,
            sport: fwd.dport,
            dport: p,
        })
    };
    if !(fwd.proto.has_ports() || fwd.proto == Proto::ICMP) {
        return (!taken(0)).then_some((addr, 0));
    }
    let orig = fwd.sport;
    let (lo, hi) = match range.ports {
        Some(r) => r,
        None if fwd.proto == Proto::ICMP => (0, 65535),
        None if orig < 512 => (1, 511),
        None if orig < 1024 => (600, 1023),
        None => (1024, 65535),
    };
    if !flags.random_fully && (lo..=hi).contains(&orig) && !taken(orig) {
        return Some((addr, orig));
    }
    let span = u32::from(hi - lo) + 1;
    let start = rng.range(0, span - 1);
    (0..span).map(|i| lo + ((start + i) % span) as u16).find(|&p| !taken(p)).map(|p| (addr, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{tcp_syn, udp};
    use crate::rule::addrtype;

    fn env<'a>(
        f: &'a dyn Fn(Ipv4Addr, Option<&str>) -> u16,
        masq: Option<Ipv4Addr>,
    ) -> HookEnv<'a> {
        HookEnv {
            in_iface: Some("cbr0"),
            out_iface: Some("eth0"),
            physdev_in: None,
            physdev_out: None,
            bridged: false,
            masq_addr: masq,
            addr_type: f,
            now: Instant::from_secs(1),
            trace: true,
        }
    }

    const RULES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -m comment --comment \"default/web:http -> 10.244.2.2:8080\" -j KUBE-SEP-A
-A KUBE-SEP-A -s 10.244.2.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-A -m tcp -p tcp -j DNAT --to-destination 10.244.2.2:8080
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
COMMIT
";

    #[test]
    fn dnat_then_reply_un_dnat_restores_the_vip() {
        let mut nf = Netfilter::new(7);
        nf.tables_mut().restore(RULES, false).unwrap();
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let mut skb = Skb::new(tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80));
        let r = nf.hook(Hook::PreRouting, &mut skb, &env(&at, None));
        assert_eq!(r.verdict, HookVerdict::Accept);
        assert_eq!(r.nat.len(), 1);
        assert!(
            r.hits().iter().any(|h| h.comment.as_deref() == Some("default/web:http cluster IP"))
        );
        let info = packet::parse(&skb.data).unwrap();
        assert_eq!((info.tuple.dst, info.tuple.dport), (Ipv4Addr::new(10, 244, 2, 2), 8080));
        assert!(packet::checksums_valid(&skb.data));
        let r =
            nf.hook(Hook::PostRouting, &mut skb, &env(&at, Some(Ipv4Addr::new(192, 168, 0, 1))));
        assert!(r.confirmed);
        assert!(r.nat.is_empty(), "no masquerade without the mark");
        // The reply from the endpoint.
        let synack = crate::packet::tcp_flags::SYN | crate::packet::tcp_flags::ACK;
        let mut rep = Skb::new(crate::packet::tests::tcp(
            [10, 244, 2, 2],
            8080,
            [10, 244, 1, 3],
            40000,
            synack,
        ));
        let r = nf.hook(Hook::PreRouting, &mut rep, &env(&at, None));
        assert_eq!(r.ctinfo, Some(CtInfo::Established));
        let r2 = nf.hook(Hook::PostRouting, &mut rep, &env(&at, None));
        assert!(
            r.nat.is_empty() && r2.nat.len() == 1,
            "un-DNAT is a source rewrite at POSTROUTING"
        );
        let back = packet::parse(&rep.data).unwrap();
        assert_eq!((back.tuple.src, back.tuple.sport), (Ipv4Addr::new(10, 96, 0, 10), 80));
        assert!(packet::checksums_valid(&rep.data));
    }

    #[test]
    fn hairpin_is_masqueraded_with_a_fresh_port_under_random_fully() {
        let mut nf = Netfilter::new(1);
        nf.tables_mut().restore(RULES, false).unwrap();
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let mut skb = Skb::new(tcp_syn([10, 244, 2, 2], 40000, [10, 96, 0, 10], 80));
        let _ = nf.hook(Hook::PreRouting, &mut skb, &env(&at, None));
        assert_eq!(skb.mark & 0x4000, 0x4000);
        let r = nf.hook(Hook::PostRouting, &mut skb, &env(&at, Some(Ipv4Addr::new(10, 244, 2, 1))));
        assert_eq!(r.nat.len(), 1);
        let info = packet::parse(&skb.data).unwrap();
        assert_eq!(info.tuple.src, Ipv4Addr::new(10, 244, 2, 1));
        assert_ne!(info.tuple.sport, 40000, "--random-fully never keeps the port");
        assert_eq!(skb.mark & 0x4000, 0, "KUBE-POSTROUTING clears the mark");
        assert!(packet::checksums_valid(&skb.data));
        // The connection's next packet replays the masquerade without being given an
        // address: once the connection is confirmed, MASQUERADE's address is not asked for.
        assert!(!skb.may_masquerade(), "confirmed at POSTROUTING");
        let first = packet::parse(&skb.data).unwrap().tuple;
        // (a retransmitted SYN: an ACK before the SYN/ACK would be INVALID in SYN_SENT)
        let mut next = Skb::new(tcp_syn([10, 244, 2, 2], 40000, [10, 96, 0, 10], 80));
        assert!(next.may_masquerade(), "not looked up yet");
        let _ = nf.hook(Hook::PreRouting, &mut next, &env(&at, None));
        assert!(!next.may_masquerade(), "PREROUTING found the confirmed connection");
        let r = nf.hook(Hook::PostRouting, &mut next, &env(&at, None));
        assert_eq!(r.verdict, HookVerdict::Accept);
        assert_eq!(packet::parse(&next.data).unwrap().tuple, first);
    }

    #[test]
    fn a_report_filled_in_again_says_what_a_fresh_one_would() {
        // The same connection's packets through two namespaces with the same rules and
        // seed: one gets a fresh report each hook, the other has hook_into fill in one
        // report that last held another packet's DNAT, hits and confirmation.
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let (mut a, mut b) = (Netfilter::new(3), Netfilter::new(3));
        a.tables_mut().restore(RULES, false).unwrap();
        b.tables_mut().restore(RULES, false).unwrap();
        let warm = || Skb::new(tcp_syn([10, 244, 1, 9], 41000, [10, 96, 0, 10], 80));
        let mut kept = HookReport::accept();
        let (mut wa, mut wb) = (warm(), warm());
        for hook in [Hook::PreRouting, Hook::PostRouting] {
            let _ = a.hook(hook, &mut wa, &env(&at, None));
            b.hook_into(hook, &mut wb, &env(&at, None), &mut kept);
        }
        assert!(kept.confirmed && !kept.hits().is_empty());
        for (hook, masq) in [(Hook::PreRouting, None), (Hook::PostRouting, Some([192, 168, 0, 1]))]
        {
            let e = env(&at, masq.map(Ipv4Addr::from));
            let (mut x, mut y) = (
                Skb::new(tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80)),
                Skb::new(tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80)),
            );
            if hook == Hook::PostRouting {
                let _ = a.hook(Hook::PreRouting, &mut x, &env(&at, None));
                b.hook_into(Hook::PreRouting, &mut y, &env(&at, None), &mut kept);
            }
            let fresh = a.hook(hook, &mut x, &e);
            b.hook_into(hook, &mut y, &e, &mut kept);
            assert_eq!(kept, fresh, "{hook}");
            assert_eq!(x.data, y.data, "{hook}");
        }
    }

    #[test]
    fn dropped_packet_leaves_no_conntrack_entry() {
        let mut nf = Netfilter::new(1);
        nf.tables_mut().restore("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n", false).unwrap();
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let mut skb = Skb::new(udp([10, 0, 0, 1], 5, [10, 0, 0, 2], 53, b"q"));
        let _ = nf.hook(Hook::PreRouting, &mut skb, &env(&at, None));
        let r = nf.hook(Hook::Forward, &mut skb, &env(&at, None));
        assert_eq!(r.verdict, HookVerdict::Drop(DropCause::Rule));
        assert!(nf.conntrack.is_empty());
    }

    // ----- one match at a time, through filter FORWARD -----

    /// Whether `-A FORWARD <rule> -j DROP` takes the packet, with the given bridge ports.
    fn hits(
        nf: &mut Netfilter,
        pkt: Vec<u8>,
        physdev: (Option<&str>, Option<&str>),
        now: u64,
    ) -> bool {
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let mut e = env(&at, None);
        e.physdev_in = physdev.0;
        e.physdev_out = physdev.1;
        e.bridged = physdev.0.is_some();
        e.now = Instant::from_secs(now as i64);
        let mut skb = Skb::new(pkt);
        matches!(nf.hook(Hook::Forward, &mut skb, &e).verdict, HookVerdict::Drop(_))
    }

    fn forward(rules: &[&str]) -> Netfilter {
        let mut nf = Netfilter::new(3);
        let mut text = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
        for r in rules {
            text.push_str(&format!("-A FORWARD {r}\n"));
        }
        text.push_str("COMMIT\n");
        nf.tables_mut().restore(&text, false).unwrap();
        nf
    }

    fn icmp(kind: u8) -> Vec<u8> {
        // IPv4 10.244.1.2 -> 10.244.2.2, ICMP type `kind` code 0, echo id 7 seq 1.
        let mut p = vec![
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2, kind, 0, 0, 0,
            0, 7, 0, 1,
        ];
        let sum = |b: &[u8]| {
            let mut s: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        };
        let h = sum(&p[..20]).to_be_bytes();
        p[10..12].copy_from_slice(&h);
        let c = sum(&p[20..]).to_be_bytes();
        p[22..24].copy_from_slice(&c);
        assert!(packet::checksums_valid(&p));
        p
    }

    /// A jump to an empty chain counts and goes on with the next rule, as a return from it
    /// would.
    #[test]
    fn a_jump_to_an_empty_chain_counts_and_goes_on() {
        let mut nf = Netfilter::new(3);
        let text = "*filter\n:FORWARD ACCEPT [0:0]\n:EMPTY - [0:0]\n:SUB - [0:0]\n\
                    -A FORWARD -j EMPTY\n-A FORWARD -j SUB\n-A FORWARD -j EMPTY\n\
                    -A SUB -j EMPTY\n-A SUB -p tcp -j DROP\nCOMMIT\n";
        nf.tables_mut().restore(text, false).unwrap();
        let syn = tcp_syn([10, 244, 1, 2], 40000, [10, 244, 2, 2], 80);
        assert!(hits(&mut nf, syn, (None, None), 1));
        assert!(!hits(
            &mut nf,
            udp([10, 244, 1, 2], 53, [10, 244, 2, 2], 53, b"x"),
            (None, None),
            1
        ));
        let save = nf.save_kernel_form_with(&[TableName::Filter], true);
        // The SYN (40 bytes) is dropped in SUB; the datagram (29 bytes) passes every rule.
        let rules = "[2:69] -A FORWARD -j EMPTY\n[2:69] -A FORWARD -j SUB\n\
                     [1:29] -A FORWARD -j EMPTY\n[2:69] -A SUB -j EMPTY\n\
                     [1:40] -A SUB -p tcp -j DROP\n";
        assert!(save.contains(":FORWARD ACCEPT [1:29]\n") && save.contains(rules), "{save}");
    }

    #[test]
    fn packets_count_per_namespace_while_the_rules_stay_shared() {
        let mut a = forward(&["-p tcp --dport 80 -j DROP", "-p udp -j ACCEPT"]);
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.tables, &b.tables));
        let syn = || tcp_syn([10, 244, 1, 2], 40000, [10, 244, 2, 2], 80);
        assert!(hits(&mut a, syn(), (None, None), 1));
        assert!(hits(&mut a, syn(), (None, None), 1));
        assert!(!hits(
            &mut a,
            tcp_syn([10, 244, 1, 2], 40001, [10, 244, 2, 2], 81),
            (None, None),
            1
        ));
        assert!(!hits(
            &mut b,
            udp([10, 244, 1, 2], 53, [10, 244, 2, 2], 53, b"x"),
            (None, None),
            1
        ));
        // Still one copy of the rules; each namespace prints its own counts.
        assert!(Arc::ptr_eq(&a.tables, &b.tables));
        let save = |nf: &Netfilter| nf.save_kernel_form_with(&[TableName::Filter], true);
        let sa = save(&a);
        assert!(sa.contains(":FORWARD ACCEPT [1:40]"), "{sa}");
        assert!(sa.contains("[2:80] -A FORWARD -p tcp -m tcp --dport 80 -j DROP"), "{sa}");
        assert!(sa.contains("[0:0] -A FORWARD -p udp -j ACCEPT"), "{sa}");
        let sb = save(&b);
        assert!(sb.contains(":FORWARD ACCEPT [0:0]"), "{sb}");
        assert!(sb.contains("[0:0] -A FORWARD -p tcp -m tcp --dport 80 -j DROP"), "{sb}");
        assert!(sb.contains("[1:29] -A FORWARD -p udp -j ACCEPT"), "{sb}");
        // The shared rules themselves counted nothing.
        assert_eq!(a.tables.save_kernel_form_with(&[TableName::Filter], true), {
            let mut fresh = forward(&["-p tcp --dport 80 -j DROP", "-p udp -j ACCEPT"]);
            fresh.tables_mut();
            fresh.tables.save_kernel_form_with(&[TableName::Filter], true)
        });
        // A change folds the counts into a's own copy first: same totals, counted once.
        a.tables_mut();
        assert!(!Arc::ptr_eq(&a.tables, &b.tables));
        assert_eq!(save(&a), sa);
        assert_eq!(a.tables.save_kernel_form_with(&[TableName::Filter], true), sa);
        assert!(hits(&mut a, syn(), (None, None), 1));
        assert!(save(&a).contains("[3:120] -A FORWARD -p tcp -m tcp --dport 80 -j DROP"));
        // Rules renumbered by a restore start again, as the kernel's replaced rules do.
        a.tables_mut()
            .restore("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p udp -j ACCEPT\nCOMMIT\n", false)
            .unwrap();
        assert!(!hits(
            &mut a,
            udp([10, 244, 1, 2], 53, [10, 244, 2, 2], 53, b"x"),
            (None, None),
            1
        ));
        let sa = save(&a);
        assert!(
            sa.contains(":FORWARD ACCEPT [0:0]") && sa.contains("[1:29] -A FORWARD -p udp"),
            "{sa}"
        );
    }

    #[test]
    fn nth_counts_per_namespace_when_the_rules_are_shared() {
        let mut a = forward(&["-m statistic --mode nth --every 2 --packet 0 -j DROP"]);
        let mut b = a.clone();
        let p = |port| udp([10, 244, 1, 2], port, [10, 244, 2, 2], 53, b"x");
        // Every second packet of each namespace matches (xt_statistic: the count runs from
        // --packet and the packet that wraps it to 0 matches), whatever the other one saw.
        let seen_a: Vec<bool> =
            (0..4).map(|k| hits(&mut a, p(1000 + k), (None, None), 1)).collect();
        let seen_b: Vec<bool> =
            (0..4).map(|k| hits(&mut b, p(2000 + k), (None, None), 1)).collect();
        assert_eq!(seen_a, [false, true, false, true]);
        assert_eq!(seen_b, seen_a);
        assert!(Arc::ptr_eq(&a.tables, &b.tables));
        // A change keeps a's place in its count (folded into a's own copy of the rules);
        // b counts on from its own.
        assert!(!hits(&mut a, p(1100), (None, None), 1));
        a.tables_mut();
        assert!(!Arc::ptr_eq(&a.tables, &b.tables));
        assert!(hits(&mut a, p(1101), (None, None), 1));
        assert!(!hits(&mut b, p(2100), (None, None), 1));
        assert!(hits(&mut b, p(2101), (None, None), 1));
    }

    #[test]
    fn a_stateful_match_before_the_port_keeps_a_rule_out_of_the_index() {
        // Sixteen rules make FORWARD indexed; the nth match counts every packet to
        // 10.244.2.2/tcp that reaches it, also those for another port, as a linear walk does.
        let mut rules = vec![
            "-d 10.244.2.2/32 -p tcp -m statistic --mode nth --every 2 --packet 0 -m tcp --dport 80 -j DROP",
        ];
        rules.extend(std::iter::repeat_n("-d 10.9.9.9/32 -p tcp -m tcp --dport 9 -j ACCEPT", 16));
        let run = |indexed: bool| {
            let mut nf = forward(&rules);
            nf.indexed = indexed;
            [81, 80, 81, 80, 80]
                .iter()
                .enumerate()
                .map(|(k, port)| {
                    hits(
                        &mut nf,
                        tcp_syn([10, 244, 1, 2], 40000 + k as u16, [10, 244, 2, 2], *port),
                        (None, None),
                        1,
                    )
                })
                .collect::<Vec<bool>>()
        };
        assert_eq!(run(true), run(false));
        // Indexed by its port, the rule would not see the packets to 81: [F, F, F, T, F].
        assert_eq!(run(false), [false, true, false, true, false]);
    }

    #[test]
    fn multiport_matches_lists_and_ranges() {
        let mut nf = forward(&["-p tcp -m multiport --dports 80,8000:8100 -j DROP"]);
        assert!(hits(
            &mut nf,
            tcp_syn([10, 244, 1, 2], 40000, [10, 244, 2, 2], 80),
            (None, None),
            1
        ));
        assert!(hits(
            &mut nf,
            tcp_syn([10, 244, 1, 2], 40001, [10, 244, 2, 2], 8050),
            (None, None),
            1
        ));
        assert!(!hits(
            &mut nf,
            tcp_syn([10, 244, 1, 2], 40002, [10, 244, 2, 2], 81),
            (None, None),
            1
        ));
        let mut nf = forward(&["-p tcp -m multiport ! --sports 40000 -j DROP"]);
        assert!(!hits(
            &mut nf,
            tcp_syn([10, 244, 1, 2], 40000, [10, 244, 2, 2], 80),
            (None, None),
            1
        ));
        assert!(hits(
            &mut nf,
            tcp_syn([10, 244, 1, 2], 40003, [10, 244, 2, 2], 80),
            (None, None),
            1
        ));
        let mut nf = forward(&["-p udp -m multiport --ports 53 -j DROP"]);
        assert!(hits(
            &mut nf,
            udp([10, 244, 1, 2], 53, [10, 244, 2, 2], 9999, b"x"),
            (None, None),
            1
        ));
        assert!(hits(
            &mut nf,
            udp([10, 244, 1, 2], 9999, [10, 244, 2, 2], 53, b"x"),
            (None, None),
            1
        ));
        assert!(!hits(
            &mut nf,
            udp([10, 244, 1, 2], 9998, [10, 244, 2, 2], 54, b"x"),
            (None, None),
            1
        ));
    }

    #[test]
    fn icmp_type_matches_the_type() {
        let mut nf = forward(&["-p icmp -m icmp --icmp-type 8 -j DROP"]);
        assert!(hits(&mut nf, icmp(8), (None, None), 1), "echo request");
        assert!(!hits(&mut nf, icmp(0), (None, None), 1), "echo reply");
        let mut nf = forward(&["-p icmp -m icmp ! --icmp-type 8 -j DROP"]);
        assert!(hits(&mut nf, icmp(0), (None, None), 1));
        assert!(
            !hits(&mut nf, tcp_syn([10, 244, 1, 2], 1, [10, 244, 2, 2], 2), (None, None), 1),
            "not ICMP"
        );
    }

    #[test]
    fn physdev_matches_bridge_ports_only_when_bridged() {
        let mut nf = forward(&["-m physdev --physdev-in veth1 -j DROP"]);
        let syn = || tcp_syn([10, 244, 1, 3], 40000, [10, 244, 1, 2], 8080);
        assert!(hits(&mut nf, syn(), (Some("veth1"), Some("veth0")), 1));
        assert!(!hits(&mut nf, syn(), (Some("veth2"), Some("veth0")), 1));
        assert!(!hits(&mut nf, syn(), (None, None), 1), "routed: no bridge ports");
        let mut nf = forward(&["-m physdev --physdev-is-bridged --physdev-out veth+ -j DROP"]);
        assert!(hits(&mut nf, syn(), (Some("veth1"), Some("veth0")), 1), "`+` is a prefix");
        assert!(!hits(&mut nf, syn(), (None, None), 1));
        let mut nf = forward(&["-m physdev ! --physdev-is-bridged -j DROP"]);
        assert!(hits(&mut nf, syn(), (None, None), 1));
        assert!(!hits(&mut nf, syn(), (Some("veth1"), Some("veth0")), 1));
    }

    #[test]
    fn recent_sets_then_checks_within_its_window() {
        let mut nf = forward(&[
            "-m recent --name seen --rcheck --seconds 10 --reap -j DROP",
            "-m recent --name seen --set",
        ]);
        let syn = |p| tcp_syn([10, 244, 1, 3], p, [10, 244, 2, 2], 8080);
        assert!(!hits(&mut nf, syn(40000), (None, None), 100), "first sight: not in the list yet");
        assert!(hits(&mut nf, syn(40001), (None, None), 105), "seen 5 s ago");
        assert!(!hits(&mut nf, syn(40002), (None, None), 120), "last seen 20 s ago");
        let other = tcp_syn([10, 244, 1, 4], 40000, [10, 244, 2, 2], 8080);
        assert!(!hits(&mut nf, other, (None, None), 121), "the list is per source address");
    }

    #[test]
    fn set_matches_ipset_members_by_direction() {
        let mut nf = forward(&["-m set --match-set KUBE-CLUSTER-IP dst,dst -j DROP"]);
        nf.sets.create("KUBE-CLUSTER-IP", crate::ipset::SetType::HashIpPort, "cluster IPs");
        nf.sets.add("KUBE-CLUSTER-IP", "10.96.0.10,tcp:80").unwrap();
        assert!(hits(
            &mut nf,
            tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80),
            (None, None),
            1
        ));
        assert!(!hits(
            &mut nf,
            tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 81),
            (None, None),
            1
        ));
        assert!(
            !hits(&mut nf, udp([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80, b"x"), (None, None), 1),
            "tcp:80 only"
        );
        let mut nf = forward(&["-m set ! --match-set KUBE-CLUSTER-IP dst,dst -j DROP"]);
        nf.sets.create("KUBE-CLUSTER-IP", crate::ipset::SetType::HashIpPort, "cluster IPs");
        assert!(hits(
            &mut nf,
            tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, 10], 80),
            (None, None),
            1
        ));
    }

    #[test]
    fn nth_matches_every_nth_packet_from_its_start() {
        let run = |rule: &str, n: u16| -> Vec<bool> {
            let mut nf = forward(&[rule]);
            (0..n)
                .map(|i| {
                    let syn = tcp_syn([10, 244, 1, 3], 40000 + i, [10, 244, 2, 2], 80);
                    hits(&mut nf, syn, (None, None), 1)
                })
                .collect()
        };
        let seq = run("-m statistic --mode nth --every 3 --packet 0 -j DROP", 7);
        assert_eq!(seq, [false, false, true, false, false, true, false]);
        let seq = run("-m statistic --mode nth --every 2 --packet 1 -j DROP", 4);
        assert_eq!(seq, [true, false, true, false]);
    }

    #[test]
    fn the_next_hook_takes_the_reading_the_last_one_left() {
        let mut nf = forward(&["-d 10.244.9.9/32 -j DROP"]);
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let mut skb = Skb::new(udp([10, 244, 1, 2], 5000, [10, 244, 2, 2], 53, b"q"));
        let r = nf.hook(Hook::PreRouting, &mut skb, &env(&at, None));
        assert_eq!(r.verdict, HookVerdict::Accept);
        assert_eq!(skb.read, Some(packet::parse(&skb.data).unwrap()));
        // Routing's TTL decrement keeps the bytes, their checksum and the reading in step.
        skb.decrease_ttl();
        assert_eq!(skb.data[8], 63);
        let now = packet::parse(&skb.data).expect("header checksum still valid");
        assert_eq!((now.ttl, skb.read), (63, Some(now)));
        let r = nf.hook(Hook::Forward, &mut skb, &env(&at, None));
        assert_eq!(r.verdict, HookVerdict::Accept);
        // Bytes changed outside a hook: the next hook reads them again, new destination and all.
        packet::rewrite(&mut skb.data, Manip::Dst, Ipv4Addr::new(10, 244, 9, 9), 53).unwrap();
        skb.changed();
        assert_eq!(skb.read, None);
        let r = nf.hook(Hook::Forward, &mut skb, &env(&at, None));
        assert_eq!(r.verdict, HookVerdict::Drop(DropCause::Rule));
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "without Skb::changed")]
    fn bytes_changed_without_saying_so_are_caught_in_debug_builds() {
        let mut nf = forward(&["-d 10.244.9.9/32 -j DROP"]);
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        let mut skb = Skb::new(udp([10, 244, 1, 2], 5000, [10, 244, 2, 2], 53, b"q"));
        let _accepted = nf.hook(Hook::PreRouting, &mut skb, &env(&at, None));
        packet::rewrite(&mut skb.data, Manip::Dst, Ipv4Addr::new(10, 244, 9, 9), 53).unwrap();
        let _never = nf.hook(Hook::Forward, &mut skb, &env(&at, None));
    }

    #[test]
    fn an_indexed_chain_of_dnat_rules_sends_each_service_to_its_own_endpoint() {
        // Twenty Services in one chain: indexed, each bucket holding its rule's entry, whose
        // NAT data sits after the chain's rules.
        let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
        for k in 0..20u8 {
            text.push_str(&format!(
                "-A PREROUTING -d 10.96.0.{k}/32 -p tcp -m tcp --dport 80 \
                 -j DNAT --to-destination 10.244.2.{k}:{}\n",
                8000 + u16::from(k)
            ));
        }
        text.push_str("COMMIT\n");
        let at = |_a: Ipv4Addr, _i: Option<&str>| addrtype::UNICAST;
        for indexed in [true, false] {
            let mut nf = Netfilter::new(5);
            nf.indexed = indexed;
            nf.tables_mut().restore(&text, false).unwrap();
            for k in [0u8, 7, 19] {
                let mut skb = Skb::new(tcp_syn([10, 244, 1, 3], 40000, [10, 96, 0, k], 80));
                let r = nf.hook(Hook::PreRouting, &mut skb, &env(&at, None));
                assert_eq!(r.nat.len(), 1);
                let t = packet::parse(&skb.data).unwrap().tuple;
                assert_eq!(
                    (t.dst, t.dport),
                    (Ipv4Addr::new(10, 244, 2, k), 8000 + u16::from(k)),
                    "indexed: {indexed}"
                );
            }
        }
    }
}
