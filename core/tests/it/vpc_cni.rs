//! The AWS VPC CNI's ipamd against the example tables of the plugin's own documentation
//! (`docs/eni-and-ip-target.md`, `docs/prefix-and-ip-target.md` in amazon-vpc-cni-k8s), the
//! EKS max-pods figures, and properties of allocation.

use std::net::Ipv4Addr;

use podnet::cni::ipamd::{InstanceType, Ipamd, VpcSubnet, WarmTargets};
use podnet::time::{Duration, Instant};
use proptest::prelude::*;

fn subnet() -> VpcSubnet {
    VpcSubnet::new("10.0.0.0/20".parse().unwrap()).unwrap()
}

/// ipamd on a fresh node after `pods` pods were added: (ENIs, attached pod IPs, unused).
fn after(itype: &str, targets: WarmTargets, pods: usize) -> (usize, usize, usize, Vec<usize>) {
    let mut s = subnet();
    let t = InstanceType::lookup(itype).unwrap();
    let mut d = Ipamd::new("node1", t, targets, Ipv4Addr::new(10, 0, 0, 10), &mut s, Instant::ZERO)
        .unwrap();
    for k in 0..pods {
        d.assign(&format!("pod{k}"), &mut s, Instant::ZERO).unwrap();
    }
    let per_eni = d.enis.iter().map(|e| e.pod_ips().count()).collect();
    (d.enis.len(), d.total(), d.available(Instant::ZERO), per_eni)
}

fn ip_targets(warm: u32, min: u32) -> WarmTargets {
    WarmTargets {
        warm_ip_target: Some(warm),
        minimum_ip_target: Some(min),
        ..WarmTargets::default()
    }
}

#[test]
fn warm_eni_target_keeps_a_full_eni_of_free_addresses() {
    // | t3.small | WARM_ENI_TARGET=1 | pods 0 / 5 / 9 | ENIs 1 / 3 / 3 | IPs 3 / 9 / 9 | unused 3 / 4 / 0 |
    assert_eq!(after("t3.small", WarmTargets::default(), 0), (1, 3, 3, vec![3]));
    assert_eq!(after("t3.small", WarmTargets::default(), 5), (3, 9, 4, vec![3, 3, 3]));
    assert_eq!(after("t3.small", WarmTargets::default(), 9), (3, 9, 0, vec![3, 3, 3]));
    // | p3dn.24xlarge | WARM_ENI_TARGET=1 | pods 0 / 3 / 95 | ENIs 1 / 2 / 3 | IPs 49 / 98 / 147 |
    assert_eq!(after("p3dn.24xlarge", WarmTargets::default(), 0).1, 49);
    assert_eq!(after("p3dn.24xlarge", WarmTargets::default(), 3), (2, 98, 95, vec![49, 49]));
    assert_eq!(after("p3dn.24xlarge", WarmTargets::default(), 95), (3, 147, 52, vec![49, 49, 49]));
}

#[test]
fn warm_ip_and_minimum_ip_targets_take_only_what_they_need() {
    // | t3.small | WARM_IP_TARGET=1 MINIMUM_IP_TARGET=1 | pods 0 / 5 / 9 | ENIs 1 / 2 / 3 | IPs 1 / 6 / 9 |
    assert_eq!(after("t3.small", ip_targets(1, 1), 0), (1, 1, 1, vec![1]));
    assert_eq!(after("t3.small", ip_targets(1, 1), 5), (2, 6, 1, vec![3, 3]));
    assert_eq!(after("t3.small", ip_targets(1, 1), 9), (3, 9, 0, vec![3, 3, 3]));
    // | t3.small | 2 / 5 | pods 0 / 5 / 9 | ENIs 2 / 3 / 3 | IPs 5 / 7 / 9 | per ENI 2,3 / 3,3,1 |
    let (enis, total, unused, mut per) = after("t3.small", ip_targets(2, 5), 0);
    per.sort();
    assert_eq!((enis, total, unused, per), (2, 5, 5, vec![2, 3]));
    assert_eq!(after("t3.small", ip_targets(2, 5), 5), (3, 7, 2, vec![3, 3, 1]));
    assert_eq!(after("t3.small", ip_targets(2, 5), 9), (3, 9, 0, vec![3, 3, 3]));
    // | p3dn.24xlarge | 5 / 10 | pods 0 / 7 / 15 / 45 | IPs 10 / 12 / 20 / 50 (49,1) |
    assert_eq!(after("p3dn.24xlarge", ip_targets(5, 10), 0).1, 10);
    assert_eq!(after("p3dn.24xlarge", ip_targets(5, 10), 7).1, 12);
    assert_eq!(after("p3dn.24xlarge", ip_targets(5, 10), 15).1, 20);
    assert_eq!(after("p3dn.24xlarge", ip_targets(5, 10), 45), (2, 50, 5, vec![49, 1]));
}

#[test]
fn prefix_delegation_hands_out_28s() {
    let pd = WarmTargets { prefix_delegation: true, ..WarmTargets::default() };
    // | t3.small | WARM_PREFIX_TARGET=1 | pods 0 / 5 / 16 / 17 / 58 | prefixes 1 / 2 / 2 / 3 / 5 (3,2) |
    assert_eq!(after("t3.small", pd.clone(), 0), (1, 16, 16, vec![16]));
    assert_eq!(after("t3.small", pd.clone(), 5), (1, 32, 27, vec![32]));
    assert_eq!(after("t3.small", pd.clone(), 16), (1, 32, 16, vec![32]));
    assert_eq!(after("t3.small", pd.clone(), 17), (1, 48, 31, vec![48]));
    assert_eq!(after("t3.small", pd.clone(), 58), (2, 80, 22, vec![48, 32]));
    // | t3.small | WARM_IP_TARGET=1 MINIMUM_IP_TARGET=1 | pods 5 / 17 / 58 | prefixes 1 / 2 / 4 (3,1) |
    let pd_ip = WarmTargets { prefix_delegation: true, ..ip_targets(1, 1) };
    assert_eq!(after("t3.small", pd_ip.clone(), 5), (1, 16, 11, vec![16]));
    assert_eq!(after("t3.small", pd_ip.clone(), 17), (1, 32, 15, vec![32]));
    assert_eq!(after("t3.small", pd_ip, 58), (2, 64, 6, vec![48, 16]));
    // | t3.small | WARM_IP_TARGET=7 MINIMUM_IP_TARGET=20 | pods 5 / 17 / 58 | unused IPs 27 / 15 / 22 |
    let pd_7_20 = WarmTargets { prefix_delegation: true, ..ip_targets(7, 20) };
    assert_eq!(after("t3.small", pd_7_20.clone(), 5).2, 27);
    assert_eq!(after("t3.small", pd_7_20.clone(), 17).2, 15);
    assert_eq!(after("t3.small", pd_7_20, 58).2, 22);
    // Prefixes are aligned /28s of the subnet, clear of AWS's reserved addresses.
    let mut s = subnet();
    let d = Ipamd::new(
        "n",
        InstanceType::lookup("t3.small").unwrap(),
        WarmTargets { prefix_delegation: true, ..WarmTargets::default() },
        Ipv4Addr::new(10, 0, 0, 10),
        &mut s,
        Instant::ZERO,
    )
    .unwrap();
    assert_eq!(d.enis[0].prefixes, vec!["10.0.15.224/28".parse().unwrap()]);
}

#[test]
fn eks_max_pods() {
    let m = |t: &str, pd| InstanceType::lookup(t).unwrap().max_pods(pd);
    // The figures of EKS's eni-max-pods.txt.
    assert_eq!(m("t3.small", false), 11);
    assert_eq!(m("t3.medium", false), 17);
    assert_eq!(m("m5.large", false), 29);
    assert_eq!(m("m5.xlarge", false), 58);
    assert_eq!(m("c5.4xlarge", false), 234);
    assert_eq!(m("p3dn.24xlarge", false), 737);
    // With prefix delegation: capped at 110 below 30 vCPUs, 250 from 30.
    assert_eq!(m("m5.large", true), 110);
    assert_eq!(m("t3.small", true), 110);
    assert_eq!(m("c5.9xlarge", true), 250);
    let e = InstanceType::lookup("m9.huge").unwrap_err().to_string();
    assert!(
        e.starts_with(
            "instance type 'm9.huge' is not in podnet's ENI limits table; use one of t3.small, "
        ),
        "{e}"
    );
}

#[test]
fn an_m5_large_runs_out_after_27_pod_ips() {
    let mut s = subnet();
    let t = InstanceType::lookup("m5.large").unwrap();
    let mut d = Ipamd::new(
        "node1",
        t,
        WarmTargets::default(),
        Ipv4Addr::new(10, 0, 0, 10),
        &mut s,
        Instant::ZERO,
    )
    .unwrap();
    for k in 0..27 {
        d.assign(&format!("pod{k}"), &mut s, Instant::ZERO).unwrap();
    }
    assert_eq!(d.enis.len(), 3);
    let e = d.assign("pod27", &mut s, Instant::ZERO).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to assign an IP address to container: ipamd on node1 has no free address (27 assigned, 0 cooling down, 3 of 3 ENIs attached; m5.large allows 3 ENIs of 10 addresses)"
    );
    // A released address cools down for 30 s before it is handed out again.
    let (ip, _) = (d.enis[1].secondary[0], 1);
    d.release(ip, Instant::ZERO);
    let e = d.assign("pod27", &mut s, Instant::ZERO + Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("26 assigned, 1 cooling down"), "{e}");
    let (again, eni) = d.assign("pod27", &mut s, Instant::ZERO + Duration::from_secs(31)).unwrap();
    assert_eq!((again, eni), (ip, 1));
}

#[test]
fn a_small_subnet_runs_dry() {
    // A /28 has 11 usable addresses: the node's own, then secondary IPs until none is left.
    let mut s = VpcSubnet::new("10.0.0.0/28".parse().unwrap()).unwrap();
    let t = InstanceType::lookup("m5.large").unwrap();
    let mut d = Ipamd::new(
        "node1",
        t,
        WarmTargets::default(),
        Ipv4Addr::new(10, 0, 0, 4),
        &mut s,
        Instant::ZERO,
    )
    .unwrap();
    let mut got = 0;
    let err = loop {
        match d.assign(&format!("p{got}"), &mut s, Instant::ZERO) {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    // 10 addresses besides the node's: 9 on eth0 (from the top), then eth1 takes the last
    // one as its own address and has none for pods.
    assert_eq!(got, 9);
    assert!(err.to_string().contains("the subnet has no room for another ENI or address"), "{err}");
    assert!(
        d.events.iter().any(|e| e.contains("VPC subnet 10.0.0.0/28 is exhausted")),
        "{:?}",
        d.events
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Across any sequence of adds and deletes: no address is held by two pods, every
    /// address is inside the subnet and clear of AWS's reserves, and a released address
    /// is not handed out again within its cooldown.
    #[test]
    fn no_address_twice_and_cooldown_respected(
        ops in proptest::collection::vec((any::<bool>(), 0usize..40, 0u64..20), 1..120),
        warm_ip in proptest::option::of(0u32..6),
        pd in any::<bool>(),
    ) {
        let mut s = subnet();
        let targets = WarmTargets {
            warm_ip_target: warm_ip.filter(|w| !pd || *w > 0),
            minimum_ip_target: warm_ip.filter(|w| !pd || *w > 0),
            prefix_delegation: pd,
            ..WarmTargets::default()
        };
        let t = InstanceType::lookup("t3.medium").unwrap();
        let mut d = Ipamd::new("n", t, targets, Ipv4Addr::new(10, 0, 0, 10), &mut s, Instant::ZERO).unwrap();
        let mut now = Instant::ZERO;
        let mut held: std::collections::BTreeMap<String, Ipv4Addr> = Default::default();
        let mut released: std::collections::BTreeMap<Ipv4Addr, Instant> = Default::default();
        for (add, k, dt) in ops {
            now += Duration::from_secs(dt);
            let pod = format!("p{k}");
            if add && !held.contains_key(&pod) {
                if let Ok((a, _)) = d.assign(&pod, &mut s, now) {
                    prop_assert!(!held.values().any(|x| *x == a), "{a} handed out twice");
                    if let Some(t) = released.get(&a) {
                        prop_assert!(now >= *t + Duration::from_secs(30), "{a} reused within its cooldown");
                    }
                    let v = u32::from(a);
                    prop_assert!((u32::from(Ipv4Addr::new(10, 0, 0, 4))..u32::from(Ipv4Addr::new(10, 0, 15, 255))).contains(&v));
                    prop_assert_eq!(d.owner(a), Some(pod.as_str()));
                    held.insert(pod, a);
                }
            } else if let Some(a) = held.remove(&pod) {
                d.release(a, now);
                released.insert(a, now);
            }
            prop_assert_eq!(d.assigned(), held.len());
            prop_assert!(d.enis.len() as u32 <= t.max_enis);
        }
    }
}
