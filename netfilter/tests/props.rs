//! Property tests: the dispatch index never changes a verdict, NAT is undone exactly by the
//! reply path, the conntrack table agrees with a plain list and the kernel's TCP rules, an
//! answer's tuple is the inverse of its request's.

use std::net::Ipv4Addr;

use podnet_netfilter::Rng;
use podnet_netfilter::conntrack::status;
use podnet_netfilter::eval::{EvalState, PacketCtx, RecentLists, eval_chain};
use podnet_netfilter::ipset::IpSets;
use podnet_netfilter::packet::{self, Manip};
use podnet_netfilter::rule::addrtype;
use podnet_netfilter::testing::{
    FORWARD_IN_IFACES, forward_addr_type, forward_sets, forward_table,
};
use podnet_netfilter::{
    CtInfo, Hook, HookEnv, Netfilter, Ruleset, Skb, TableCounters, TableName, Tuple,
};
use proptest::prelude::*;

fn build(rules: &[(u8, u8, u16, bool, u8)]) -> Ruleset {
    let mut rs = Ruleset::default();
    rs.restore(&forward_table(rules.iter().copied()), false).expect("generated rules parse");
    rs
}

fn pkt(src3: u8, dst: u8, port: u16, udp: bool) -> Vec<u8> {
    let l4: Vec<u8> = if udp {
        let mut u = vec![0u8; 8];
        u[0..2].copy_from_slice(&1234u16.to_be_bytes());
        u[2..4].copy_from_slice(&port.to_be_bytes());
        u[4..6].copy_from_slice(&8u16.to_be_bytes());
        u
    } else {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&1234u16.to_be_bytes());
        t[2..4].copy_from_slice(&port.to_be_bytes());
        t[12] = 0x50;
        t[13] = 0x02;
        t
    };
    let mut b = vec![0u8; 20];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    b[8] = 64;
    b[9] = if udp { 17 } else { 6 };
    b[12..16].copy_from_slice(&[10, 244, src3, 5]);
    b[16..20].copy_from_slice(&[10, 96, 0, dst]);
    b.extend_from_slice(&l4);
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut b[..]);
    ip.fill_checksum();
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn indexed_evaluation_equals_linear_walk(
        rules in prop::collection::vec((0u8..23, 0u8..8, 79u16..83, any::<bool>(), 0u8..7), 16..80),
        packets in prop::collection::vec((0u8..8, 0u8..8, 79u16..83, any::<bool>(), any::<bool>(), 0usize..6, 0usize..4), 1..20),
    ) {
        let a = build(&rules);
        let b = a.clone();
        let (mut c1, mut c2) = (TableCounters::default(), TableCounters::default());
        // One random stream and one `recent` list each, carried across packets: a walk that
        // drew or recorded where the other did not shows in a later packet's verdict.
        let (mut r1, mut r2) = (Rng::new(1), Rng::new(1));
        let (mut l1, mut l2) = (RecentLists::default(), RecentLists::default());
        let sets = forward_sets();
        for (s, d, port, udp, established, mark, iface) in packets {
            let bytes = pkt(s, d, port, udp);
            let info = packet::parse(&bytes).unwrap();
            let ctinfo = if established { CtInfo::Established } else { CtInfo::New };
            let ctx = PacketCtx { info: &info, in_iface: FORWARD_IN_IFACES[iface], out_iface: None, physdev_in: None, physdev_out: None,
                bridged: false, ctinfo, ct_status: 0, ct_origdst: None, addr_type: &forward_addr_type,
                now: smoltcp::time::Instant::ZERO };
            // The mark the packet comes with (the rules' `MARK` targets change it on the way).
            let mark = [0u32, 1, 2, 3, 0x4000, 0x4003][mark];
            let (mut m1, mut m2) = (mark, mark);
            let (mut h1, mut h2) = (Vec::new(), Vec::new());
            let v1 = eval_chain(a.table(TableName::Filter), "FORWARD", &ctx,
                &mut EvalState { mark: &mut m1, rng: &mut r1, recent: &mut l1, sets: &sets, hits: Some(&mut h1), logs: Vec::new(), counters: &mut c1 }, true);
            let v2 = eval_chain(b.table(TableName::Filter), "FORWARD", &ctx,
                &mut EvalState { mark: &mut m2, rng: &mut r2, recent: &mut l2, sets: &sets, hits: Some(&mut h2), logs: Vec::new(), counters: &mut c2 }, false);
            prop_assert_eq!(v1, v2);
            prop_assert_eq!(h1, h2);
            prop_assert_eq!(m1, m2);
        }
        prop_assert_eq!(r1, r2);
        prop_assert_eq!(l1, l2);
        // Every rule and policy counted the same packets both ways.
        let table = a.table(TableName::Filter);
        let rules_in_table: usize = table.chains.values().map(|c| c.rules.len()).sum();
        for pos in 0..rules_in_table {
            prop_assert_eq!(c1.rule(table, pos), c2.rule(b.table(TableName::Filter), pos));
        }
        for ci in 0..table.chains.len() {
            prop_assert_eq!(c1.policy(table, ci), c2.policy(b.table(TableName::Filter), ci));
        }
    }

    /// Rules for other connection states are skipped without being looked at (a mask built
    /// at link time); the verdict, the rules hit and the mark must be exactly those of
    /// trying every rule in order with `rule_matches`.
    #[test]
    fn skipping_rules_for_other_connection_states_changes_nothing(
        rules in prop::collection::vec((0u8..11, 0u8..3), 1..24),
        packets in prop::collection::vec((0u8..5, any::<bool>(), any::<bool>()), 1..12),
        indexed in any::<bool>(),
    ) {
        let states = [
            "-m conntrack --ctstate NEW",
            "-m conntrack ! --ctstate ESTABLISHED",
            "-m conntrack --ctstate DNAT",
            "-m conntrack --ctstate ESTABLISHED,SNAT",
            "-m state --state RELATED,ESTABLISHED",
            "-m conntrack --ctstate INVALID,UNTRACKED",
            "-m conntrack --ctstate NEW -m conntrack --ctstate NEW,ESTABLISHED",
            "-m comment --comment any",
            "-m conntrack ! --ctstate SNAT",
            // A draw before the state: every packet draws, whatever its state.
            "-m statistic --mode random --probability 0.5 -m conntrack --ctstate NEW",
            "-m conntrack --ctstate NEW -m statistic --mode random --probability 0.5",
        ];
        let mut text = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
        for (m, v) in &rules {
            let j = ["ACCEPT", "DROP", "MARK --or-mark 0x1"][usize::from(*v)];
            text.push_str(&format!("-A FORWARD {} -j {j}\n", states[usize::from(*m)]));
        }
        text.push_str("COMMIT\n");
        let mut rs = Ruleset::default();
        rs.restore(&text, false).unwrap();
        let at = |_: Ipv4Addr, _: Option<&str>| addrtype::UNICAST;
        let bytes = pkt(1, 2, 80, false);
        let info = packet::parse(&bytes).unwrap();
        for (ci, snat, dnat) in packets {
            let ctinfo = [CtInfo::New, CtInfo::Established, CtInfo::Related, CtInfo::Invalid, CtInfo::Untracked][usize::from(ci)];
            let ct_status = if snat { status::SRC_NAT } else { 0 } | if dnat { status::DST_NAT } else { 0 };
            let ctx = PacketCtx { info: &info, in_iface: None, out_iface: None, physdev_in: None, physdev_out: None,
                bridged: false, ctinfo, ct_status, ct_origdst: None, addr_type: &at,
                now: smoltcp::time::Instant::ZERO };
            let sets = IpSets::default();
            // The oracle and the walk draw from equal streams of their own.
            let (mut rng, mut walk_rng, mut recent) = (Rng::new(1), Rng::new(1), RecentLists::default());
            // The oracle, written from xt_conntrack and xt_state (not from podnet's matcher):
            // the packet's states are its ctinfo plus the SNAT/DNAT virtual states of the
            // entry's status; `-m state` reads the same bits; a rule's matches run in order and
            // stop at the first miss, so a draw happens only when the matches before it held;
            // the draw is xt_statistic's `(get_random_u32() & 0x7FFFFFFF) < 0x40000000`
            // (libxt_statistic rounds 0.5 * 2^31).
            let (new, est, rel, inv, untr) = (ci == 0, ci == 1, ci == 2, ci == 3, ci == 4);
            // An invalid or untracked packet has no entry (`nf_ct_get` returns NULL), so
            // conntrack_mt adds no SNAT/DNAT bit whatever status the caller passed.
            let (snat, dnat) = if inv || untr { (false, false) } else { (snat, dnat) };
            let draw = |rng: &mut Rng| (rng.next_u32() & 0x7fff_ffff) < 0x4000_0000;
            let mut mark = 0u32;
            let mut want = podnet_netfilter::Verdict::Accept;
            let mut want_hits = Vec::new();
            for (i, (m, v)) in rules.iter().enumerate() {
                let hit = match m {
                    0 => new,
                    1 => !est,
                    2 => dnat,
                    3 => est || snat,
                    4 => rel || est,
                    5 => inv || untr,
                    6 => new,
                    7 => true,
                    8 => !snat,
                    9 => draw(&mut rng) && new,
                    _ => new && draw(&mut rng),
                };
                if hit {
                    want_hits.push(i + 1);
                    match v {
                        0 => { want = podnet_netfilter::Verdict::Accept; break; }
                        1 => { want = podnet_netfilter::Verdict::Drop; break; }
                        _ => mark |= 0x1,
                    }
                }
            }
            let (mut got_mark, mut hits) = (0u32, Vec::new());
            let got = eval_chain(rs.table(TableName::Filter), "FORWARD", &ctx,
                &mut EvalState { mark: &mut got_mark, rng: &mut walk_rng, recent: &mut recent, sets: &sets, hits: Some(&mut hits), logs: Vec::new(), counters: &mut TableCounters::default() }, indexed);
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_mark, mark);
            let got_hits: Vec<usize> = hits.iter().filter(|h| h.rule_num > 0).map(|h| h.rule_num).collect();
            prop_assert_eq!(got_hits, want_hits);
            prop_assert_eq!(&walk_rng, &rng);
        }
    }

    /// The conntrack table (hash chains over a slab) against a plain list and a small model
    /// of `nf_conntrack_tcp_packet` written from the kernel's state table: SYNs, SYN/ACKs,
    /// ACKs and RSTs in both directions, UDP both ways, removals and expiry. After every
    /// step both hold the same connections in the same order with the same expiry, every
    /// tuple of each direction is found exactly when the list has it, and each packet gets
    /// the kernel's verdict: invalid (an ACK in SYN_SENT, a SYN/ACK or RST with no entry),
    /// ignored (a SYN in ESTABLISHED), or tracked with the kernel's timeout (a SYN
    /// retransmit renews nothing, a RST before a reply kills the entry, a pickup gets 300 s,
    /// ASSURED and five days once a reply was seen).
    #[test]
    fn conntrack_table_agrees_with_a_list_and_the_kernels_tcp_rules(
        buckets in prop_oneof![1usize..9, Just(podnet_netfilter::conntrack::DEFAULT_BUCKETS)],
        ops in proptest::collection::vec((0u8..12, any::<u8>(), any::<u8>()), 1..80),
    ) {
        use podnet_netfilter::conntrack::Conntrack;
        use podnet_netfilter::packet::tcp_flags::{ACK, RST, SYN};
        use podnet_netfilter::CtRef;
        use smoltcp::time::{Duration, Instant};
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum St { SynSent, SynRecv, Est, Close, S2, Udp }
        #[derive(Clone, Debug)]
        struct M { orig: Tuple, st: St, expires: Instant, first: Instant, replied: bool, assured: bool, simultaneous: bool, last: Option<(bool, u8)> }
        let secs = Duration::from_secs;
        // A connection (a % 8, b % 4, port), and which packet of it: SYN, SYN/ACK (reply),
        // ACK, ACK (reply), RST, RST (reply), UDP, UDP (reply).
        let packet_of = |kind: u8, a: u8, b: u8| {
            let (src, dst, sp, dp) = ([10, 244, a % 8, 5], [10, 96, 0, b % 4], 1234u16, 80 + u16::from(a / 8 % 4));
            let reply = matches!(kind, 1 | 3 | 5 | 7);
            let (s, d, s2, d2) = if reply { (dst, src, dp, sp) } else { (src, dst, sp, dp) };
            let bytes = match kind {
                0 => podnet_netfilter::testing::tcp(s, s2, d, d2, SYN),
                1 => podnet_netfilter::testing::tcp(s, s2, d, d2, SYN | ACK),
                2 | 3 => podnet_netfilter::testing::tcp(s, s2, d, d2, ACK),
                4 | 5 => podnet_netfilter::testing::tcp(s, s2, d, d2, RST),
                _ => podnet_netfilter::testing::udp(s, s2, d, d2),
            };
            packet::parse(&bytes).unwrap()
        };
        let mut ct = Conntrack::with_buckets(usize::MAX, buckets);
        let mut model: Vec<M> = Vec::new();
        let mut now = Instant::ZERO;
        for (op, a, b) in ops {
            match op {
                0..=7 => {
                    let info = packet_of(op, a, b);
                    let udp = op >= 6;
                    // The model's live entry for this packet, and the direction it travels.
                    model.retain(|m| m.expires > now || (m.orig != info.tuple && m.orig != info.tuple.invert()));
                    let found = model.iter().position(|m| m.orig == info.tuple || m.orig.invert() == info.tuple);
                    let got = ct.lookup(&info, now);
                    let Some(k) = found else {
                        // tcp_new: a SYN, or an ACK picked up mid-stream; nothing else.
                        let st = match op { 0 => St::SynSent, 2 | 3 => St::Est, 6 | 7 => St::Udp, _ => {
                            prop_assert!(matches!(got, CtRef::Invalid), "op {} with no entry: {:?}", op, got);
                            continue;
                        }};
                        let CtRef::Unconfirmed(e) = got else { prop_assert!(false, "new expected, got {:?}", got); continue };
                        ct.confirm(*e, now).unwrap();
                        let life = match st { St::SynSent => 120, St::Udp => 30, _ => 300 };
                        model.push(M { orig: info.tuple, st, expires: now + secs(life), first: now, replied: false, assured: false, simultaneous: false, last: Some((false, if op == 0 { 0 } else { 2 })) });
                        continue;
                    };
                    let reply = model[k].orig != info.tuple;
                    let m = model[k].clone();
                    // tcp_conntracks for these packets: columns SYN_SENT, SYN_RECV,
                    // ESTABLISHED, CLOSE, SYN_SENT2; RST is CLOSE from each.
                    enum N { To(St), Ignore, Invalid, Reopen }
                    use St::*;
                    let kind = match op { 0 => 0, 1 => 1, 2 | 3 => 2, 4 | 5 => 3, _ => 4 };
                    let cell = |st: St| -> N {
                        let (ss, sr, es, cl, s2) = match (kind, reply) {
                            (0, false) => (N::To(SynSent), N::Ignore, N::Ignore, N::To(SynSent), N::To(S2)),
                            (1, false) => (N::Invalid, N::To(SynRecv), N::Invalid, N::Invalid, N::To(SynRecv)),
                            (2, false) => (N::Invalid, N::To(Est), N::To(Est), N::To(Close), N::Invalid),
                            (0, true) => (N::To(S2), N::Invalid, N::Invalid, N::Invalid, N::To(S2)),
                            (1, true) => (N::To(SynRecv), N::Ignore, N::Ignore, N::Ignore, N::To(SynRecv)),
                            (2, true) => (N::Ignore, N::To(SynRecv), N::To(Est), N::To(Close), N::Ignore),
                            _ => { let c = || N::To(Close); (c(), c(), c(), c(), c()) }
                        };
                        match st { SynSent => ss, SynRecv => sr, Est => es, Close => cl, S2 => s2, Udp => N::To(Udp) }
                    };
                    let mut old = m.st;
                    let next = match cell(m.st) {
                        // A SYN from CLOSE reopens when this side's last packet was a RST.
                        N::To(SynSent) if m.st == Close => {
                            if m.last == Some((reply, 3)) { N::Reopen } else { N::Ignore }
                        }
                        // A SYN/ACK answering a SYN ignored in the other direction resyncs.
                        N::Ignore if kind == 1 && m.last == Some((!reply, 0)) => { old = SynSent; N::To(SynRecv) }
                        n => n,
                    };
                    // The simultaneous open: an ACK from the reply side in SYN_RECV.
                    let next = match next {
                        N::To(SynRecv) if kind == 2 && reply && m.simultaneous => N::To(Est),
                        n => n,
                    };
                    match next {
                        N::Invalid => prop_assert!(matches!(got, CtRef::Invalid), "{:?}", got),
                        N::Ignore => {
                            prop_assert!(matches!(got, CtRef::Confirmed(..)), "{:?}", got);
                            // An ignored packet is still accepted: nf_conntrack_in marks a
                            // reply seen all the same.
                            model[k].last = Some((reply, kind));
                            model[k].replied |= reply;
                        }
                        N::Reopen => {
                            let CtRef::Unconfirmed(e) = got else { prop_assert!(false, "reopen expected, got {:?}", got); continue };
                            model.remove(k);
                            ct.confirm(*e, now).unwrap();
                            model.push(M { orig: info.tuple, st: St::SynSent, expires: now + secs(120), first: now, replied: false, assured: false, simultaneous: false, last: Some((false, if op == 0 { 0 } else { 2 })) });
                        }
                        N::To(new) => {
                            prop_assert!(matches!(got, CtRef::Confirmed(..)), "{:?}", got);
                            let m = &mut model[k];
                            if udp {
                                // nf_conntrack_udp_packet: replied (before this packet) and
                                // past two seconds after the first: a stream.
                                let stream = m.replied && now > m.first + secs(2);
                                if stream { m.assured = true; }
                                m.expires = now + secs(if stream { 120 } else { 30 });
                            } else {
                                let rst = op == 4 || op == 5;
                                let mut life = if rst { 10 } else {
                                    match new { St::SynSent | St::S2 => 120, St::SynRecv => 60, St::Est => 432_000, _ => 10 }
                                };
                                let mut refresh = true;
                                if !m.replied {
                                    if rst { m.expires = now; refresh = false; }
                                    else if kind == 0 && old == St::SynSent { refresh = false; }
                                    else if new == St::Est { life = life.min(300); }
                                } else if !m.assured && matches!(old, St::SynRecv | St::Est) && new == St::Est {
                                    m.assured = true;
                                }
                                if new == St::S2 { m.simultaneous = true; }
                                m.st = new;
                                m.last = Some((reply, kind));
                                if refresh { m.expires = now + secs(life); }
                            }
                            if reply { m.replied = true; }
                        }
                    }
                }
                8 if !model.is_empty() => {
                    let k = usize::from(a) % model.len();
                    let id = ct.iter().nth(k).map(|(id, _)| id).unwrap();
                    prop_assert_eq!(ct.remove(id).map(|e| e.orig), Some(model.remove(k).orig));
                }
                _ => {
                    now += Duration::from_secs(u64::from(a % 64));
                    ct.expire(now);
                    model.retain(|m| m.expires > now);
                }
            }
            let live: Vec<&M> = model.iter().filter(|m| m.expires > now).collect();
            let got: Vec<(Tuple, Instant)> = ct.iter().filter(|(_, e)| e.expires > now).map(|(_, e)| (e.orig, e.expires)).collect();
            let want: Vec<(Tuple, Instant)> = live.iter().map(|m| (m.orig, m.expires)).collect();
            prop_assert_eq!(&got, &want);
            for m in &live {
                let e = ct.iter().find(|(_, e)| e.orig == m.orig).unwrap().1;
                prop_assert_eq!(e.status & status::ASSURED != 0, m.assured, "{:?}", m);
            }
            for a in 0..32u8 {
                for b in 0..8u8 {
                    let t = packet_of(0, a, b).tuple;
                    let has = model.iter().any(|m| m.orig == t || m.orig.invert() == t);
                    prop_assert_eq!(ct.tuple_taken(&t), has);
                }
            }
        }
    }

    /// The tuple conntrack computes for an answer (the peer's packet with addresses and ports
    /// exchanged; an echo reply to an echo request, same identifier) is the inverse of the
    /// request's, as `nf_ct_invert_tuple` makes it (ICMP: the echo identifier stays, the type
    /// becomes its reply type); an ICMP error quotes the offending packet, whose tuple
    /// (`nf_conntrack_inet_error` looks up its inverse) is the original one.
    #[test]
    fn the_answer_to_a_packet_has_the_inverted_tuple(
        a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), s in any::<u16>(), d in any::<u16>(), kind in 0u8..3,
    ) {
        let (req, ans) = match kind {
            0 => (packet::build::tcp(a, s, b, d, 0x02), packet::build::tcp(b, d, a, s, 0x12)),
            1 => (packet::build::udp(a, s, b, d), packet::build::udp(b, d, a, s)),
            _ => (echo(a, b, 8, s), echo(b, a, 0, s)),
        };
        let (q, r) = (packet::parse(&req).unwrap().tuple, packet::parse(&ans).unwrap().tuple);
        prop_assert_eq!(r, q.invert());
        prop_assert_eq!((r.src, r.dst, r.proto), (q.dst, q.src, q.proto));
        if kind < 2 {
            prop_assert_eq!((r.sport, r.dport), (q.dport, q.sport));
        } else {
            prop_assert_eq!((q.sport, r.sport), (s, s), "the echo identifier is kept");
        }
        // A router's "port unreachable" about the request quotes it: the tuple inside is the
        // request's own.
        let mut quoted = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        quoted.extend_from_slice(&req[..28]);
        let mut icmp = quoted.clone();
        smoltcp::wire::Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
        let err = packet::build::ipv4([192, 0, 2, 1], a, 1, &icmp);
        prop_assert_eq!(packet::parse(&err).unwrap().icmp_inner, Some(q));
    }

    #[test]
    fn nat_then_reply_un_nat_restores_addresses_and_checksums(
        client in 1u8..250, sport in 1024u16..65000, ep in 1u8..250, random_fully in any::<bool>(), udp in any::<bool>(),
    ) {
        let rf = if random_fully { " --random-fully" } else { "" };
        let rules = format!("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
            -A PREROUTING -d 10.96.0.10 -j DNAT --to-destination 10.244.2.{ep}:8080\n\
            -A POSTROUTING -j MASQUERADE{rf}\nCOMMIT\n");
        let mut nf = Netfilter::new(u64::from(client));
        nf.tables_mut().restore(&rules, false).unwrap();
        let at = |_: Ipv4Addr, _: Option<&str>| addrtype::UNICAST;
        let env = |masq| HookEnv { in_iface: None, out_iface: None, physdev_in: None, physdev_out: None, bridged: false,
            masq_addr: masq, addr_type: &at, now: smoltcp::time::Instant::ZERO, trace: false };
        let mut fwd = pkt(0, 10, 80, udp);
        fwd[12..16].copy_from_slice(&[10, 244, 1, client]);
        fwd[20..22].copy_from_slice(&sport.to_be_bytes());
        { let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut fwd[..]); ip.fill_checksum(); }
        let l4 = fwd[20..].to_vec();
        let orig = build_valid(&fwd[..20], &l4);
        let mut skb = Skb::new(orig.clone());
        let _ = nf.hook(Hook::PreRouting, &mut skb, &env(None));
        let _ = nf.hook(Hook::PostRouting, &mut skb, &env(Some(Ipv4Addr::new(192, 168, 0, 1))));
        prop_assert!(packet::checksums_valid(&skb.data));
        let out = packet::parse(&skb.data).unwrap().tuple;
        prop_assert_eq!(out.dst, Ipv4Addr::new(10, 244, 2, ep));
        prop_assert_eq!(out.src, Ipv4Addr::new(192, 168, 0, 1));
        // The endpoint answers the packet it received.
        let mut reply = skb.data.clone();
        packet::rewrite(&mut reply, Manip::Src, out.dst, out.dport).unwrap();
        packet::rewrite(&mut reply, Manip::Dst, out.src, out.sport).unwrap();
        let mut rskb = Skb::new(reply);
        let _ = nf.hook(Hook::PreRouting, &mut rskb, &env(None));
        let _ = nf.hook(Hook::PostRouting, &mut rskb, &env(None));
        let back = packet::parse(&rskb.data).unwrap().tuple;
        let first = packet::parse(&orig).unwrap().tuple;
        prop_assert_eq!(back, first.invert());
        prop_assert!(packet::checksums_valid(&rskb.data));
    }
}

/// An ICMP echo request (`ty` 8) or reply (0) from `src` to `dst` with identifier `id`.
fn echo(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16) -> Vec<u8> {
    let mut icmp = vec![ty, 0, 0, 0, 0, 0, 0, 1];
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    smoltcp::wire::Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
    packet::build::ipv4(src, dst, 1, &icmp)
}

/// Recomputes transport checksums for a test packet from scratch.
fn build_valid(ip: &[u8], l4: &[u8]) -> Vec<u8> {
    use smoltcp::wire::{IpAddress, TcpPacket, UdpPacket};
    let mut b = ip.to_vec();
    b.extend_from_slice(l4);
    let s = IpAddress::Ipv4(Ipv4Addr::new(b[12], b[13], b[14], b[15]));
    let d = IpAddress::Ipv4(Ipv4Addr::new(b[16], b[17], b[18], b[19]));
    if b[9] == 6 {
        TcpPacket::new_unchecked(&mut b[20..]).fill_checksum(&s, &d);
    } else {
        UdpPacket::new_unchecked(&mut b[20..]).fill_checksum(&s, &d);
    }
    b
}

/// The generator is worth its name only if each shape can both match and miss the packets
/// the property test sends: every shape, alone before a `DROP`, drops some packet and lets
/// another through (marks 0, 0x1 and 0x4000; every input interface; new and established).
#[test]
fn every_generated_rule_shape_matches_some_packet_and_misses_another() {
    for kind in 0u8..23 {
        let rs = build(&[(kind, 3, 80, false, 1)]);
        let (mut dropped, mut passed) = (false, false);
        let (mut rng, mut recent) = (Rng::new(7), RecentLists::default());
        let mut counters = TableCounters::default(); // `--mode nth` counts across packets
        let sets = forward_sets();
        for (s, d, port, udp, est, mark, iface) in every_packet() {
            let bytes = pkt(s, d, port, udp);
            let info = packet::parse(&bytes).unwrap();
            let ctx = PacketCtx {
                info: &info,
                in_iface: FORWARD_IN_IFACES[iface],
                out_iface: None,
                physdev_in: None,
                physdev_out: None,
                bridged: false,
                ctinfo: if est { CtInfo::Established } else { CtInfo::New },
                ct_status: 0,
                ct_origdst: None,
                addr_type: &forward_addr_type,
                now: smoltcp::time::Instant::ZERO,
            };
            let mut m = mark;
            let v = eval_chain(
                rs.table(TableName::Filter),
                "FORWARD",
                &ctx,
                &mut EvalState {
                    mark: &mut m,
                    rng: &mut rng,
                    recent: &mut recent,
                    sets: &sets,
                    hits: None,
                    logs: Vec::new(),
                    counters: &mut counters,
                },
                false,
            );
            match v {
                podnet_netfilter::Verdict::Drop => dropped = true,
                _ => passed = true,
            }
        }
        assert!(dropped && passed, "shape {kind} dropped: {dropped}, passed: {passed}");
    }
}

/// Every packet the property test can send: sources, destinations, ports, TCP or UDP,
/// new or established, marks and input interfaces.
fn every_packet() -> Vec<(u8, u8, u16, bool, bool, u32, usize)> {
    let mut v = Vec::new();
    for s in 0..8 {
        for d in 0..8 {
            for port in 79..83 {
                for udp in [false, true] {
                    for est in [false, true] {
                        for mark in [0, 1, 0x4000] {
                            for iface in 0..4 {
                                v.push((s, d, port, udp, est, mark, iface));
                            }
                        }
                    }
                }
            }
        }
    }
    v
}
