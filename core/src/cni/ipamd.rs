//! The AWS VPC CNI's address management (amazon-vpc-cni-k8s `ipamd`), as the real plugin does
//! it: pods get native VPC addresses that are secondary IPs (or /28 prefixes, with prefix
//! delegation) of the node's elastic network interfaces (ENIs).
//!
//! - [`VpcSubnet`] is EC2's side: the addresses of a subnet, with the five AWS reserves (the
//!   network address, `.1` the VPC router, `.2` DNS, `.3` reserved, and the last address).
//!   EC2 does not document which free address it hands out; podnet takes the highest free
//!   one (the highest free aligned /28 for a prefix), so runs are deterministic and instances
//!   given low addresses do not meet their neighbours' pod addresses.
//! - [`InstanceType`] carries the EC2 limits (ENIs per instance, IPv4 addresses per ENI) for
//!   common types, and the max-pods figure EKS gives kubelet:
//!   `ENIs × (IPs per ENI − 1) + 2` (the first IP of an ENI is its own; the +2 are the
//!   host-network pods `aws-node` and `kube-proxy`, which need no pod IP). With prefix
//!   delegation each slot is a /28 (16 addresses) and EKS caps max pods at 110 below 30 vCPUs
//!   (250 from 30).
//! - [`Ipamd`] is one node's daemon: the ENIs attached (`eth0` is the primary ENI; `eth1`… are
//!   attached as the pool drains), the warm pool kept by `WARM_ENI_TARGET` (default 1: a full
//!   ENI's worth of free addresses), or `WARM_IP_TARGET` with `MINIMUM_IP_TARGET` (which take
//!   precedence), or `WARM_PREFIX_TARGET` with prefix delegation; assignment of the first
//!   free address in ENI order; a 30 s cooldown before a released address is reused.
//!
//! ipamd refills its pool on a timer, independently of pod adds; a CNI ADD that finds no free
//! address fails ("failed to assign an IP address to container") and kubelet retries. podnet
//! refills before it reports that failure, so the failure means the pool cannot grow (every
//! ENI attached and full, or the subnet exhausted) — the state a user can act on.
//!
//! Not modelled: custom networking (ENIConfig), security groups per pod, trunk ENIs, IPv6,
//! multiple network cards, and the extra ENIs the plugin attaches without prefixes on some
//! large instance types in prefix mode.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use smoltcp::time::{Duration, Instant};

use crate::ipam::IpamError;

/// EC2 limits of an instance type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceType {
    /// `m5.large`.
    pub name: &'static str,
    /// vCPUs (for the prefix-delegation max-pods cap).
    pub vcpus: u32,
    /// Maximum network interfaces.
    pub max_enis: u32,
    /// IPv4 addresses per interface (its primary address included).
    pub ips_per_eni: u32,
}

/// EC2 limits of common instance types (from EC2's "IP addresses per network interface per
/// instance type" table).
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType { name: "t3.small", vcpus: 2, max_enis: 3, ips_per_eni: 4 },
    InstanceType { name: "t3.medium", vcpus: 2, max_enis: 3, ips_per_eni: 6 },
    InstanceType { name: "t3.large", vcpus: 2, max_enis: 3, ips_per_eni: 12 },
    InstanceType { name: "t3.xlarge", vcpus: 4, max_enis: 4, ips_per_eni: 15 },
    InstanceType { name: "m5.large", vcpus: 2, max_enis: 3, ips_per_eni: 10 },
    InstanceType { name: "m5.xlarge", vcpus: 4, max_enis: 4, ips_per_eni: 15 },
    InstanceType { name: "m5.2xlarge", vcpus: 8, max_enis: 4, ips_per_eni: 15 },
    InstanceType { name: "m5.4xlarge", vcpus: 16, max_enis: 8, ips_per_eni: 30 },
    InstanceType { name: "c5.large", vcpus: 2, max_enis: 3, ips_per_eni: 10 },
    InstanceType { name: "c5.xlarge", vcpus: 4, max_enis: 4, ips_per_eni: 15 },
    InstanceType { name: "c5.4xlarge", vcpus: 16, max_enis: 8, ips_per_eni: 30 },
    InstanceType { name: "c5.9xlarge", vcpus: 36, max_enis: 8, ips_per_eni: 30 },
    InstanceType { name: "r5.large", vcpus: 2, max_enis: 3, ips_per_eni: 10 },
    InstanceType { name: "p3dn.24xlarge", vcpus: 96, max_enis: 15, ips_per_eni: 50 },
];

impl InstanceType {
    /// The limits of `name`, or an error listing the known types.
    pub fn lookup(name: &str) -> Result<&'static InstanceType, IpamError> {
        INSTANCE_TYPES.iter().find(|t| t.name == name).ok_or_else(|| {
            IpamError::Config(format!(
                "instance type '{name}' is not in podnet's ENI limits table; use one of {}",
                INSTANCE_TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Secondary addresses (or prefixes) one ENI takes.
    pub fn slots_per_eni(&self) -> u32 {
        self.ips_per_eni - 1
    }

    /// kubelet's `--max-pods` as EKS computes it.
    pub fn max_pods(&self, prefix_delegation: bool) -> u32 {
        let slots = self.max_enis * self.slots_per_eni();
        if prefix_delegation {
            (slots * 16 + 2).min(if self.vcpus < 30 { 110 } else { 250 })
        } else {
            slots + 2
        }
    }
}

/// ipamd's settings (the `aws-node` DaemonSet's environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmTargets {
    /// `WARM_ENI_TARGET` (default 1).
    pub warm_eni_target: u32,
    /// `WARM_IP_TARGET` (overrides the ENI and prefix targets when set).
    pub warm_ip_target: Option<u32>,
    /// `MINIMUM_IP_TARGET`.
    pub minimum_ip_target: Option<u32>,
    /// `ENABLE_PREFIX_DELEGATION`.
    pub prefix_delegation: bool,
    /// `WARM_PREFIX_TARGET` (default 1).
    pub warm_prefix_target: u32,
}

impl Default for WarmTargets {
    fn default() -> Self {
        WarmTargets {
            warm_eni_target: 1,
            warm_ip_target: None,
            minimum_ip_target: None,
            prefix_delegation: false,
            warm_prefix_target: 1,
        }
    }
}

/// EC2's view of one subnet: which addresses are taken.
#[derive(Clone, Debug)]
pub struct VpcSubnet {
    cidr: Ipv4Network,
    used: BTreeSet<u32>,
    /// Where the downward search for a free address resumes (addresses above it were taken
    /// when it was set), so handing out a subnet's worth stays linear.
    hint: u32,
    /// Addresses pods of an imported cluster hold on some ENI not rebuilt yet: taken for
    /// everyone else, claimed by the node whose pod has it ([`Ipamd::assign_exact`]).
    held: BTreeSet<u32>,
}

impl VpcSubnet {
    /// A subnet with AWS's five reserved addresses taken.
    pub fn new(cidr: Ipv4Network) -> Result<VpcSubnet, IpamError> {
        if !(16..=28).contains(&cidr.prefix()) {
            return Err(IpamError::Config(format!("subnet {cidr}: AWS subnets are /16 to /28")));
        }
        let net = u32::from(cidr.network());
        let mut used: BTreeSet<u32> = (net..net + 4).collect();
        used.insert(u32::from(cidr.broadcast()));
        Ok(VpcSubnet { cidr, used, hint: u32::from(cidr.broadcast()), held: BTreeSet::new() })
    }

    /// The subnet.
    pub fn cidr(&self) -> Ipv4Network {
        self.cidr
    }

    /// The VPC router's address (`.1`).
    pub fn router(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// Takes a specific address (an instance's primary IP).
    pub fn take(&mut self, a: Ipv4Addr) -> Result<(), IpamError> {
        if !self.cidr.contains(a) {
            return Err(IpamError::OutOfRange {
                what: "VPC subnet",
                value: a.to_string(),
                range: self.cidr.to_string(),
                why: String::new(),
            });
        }
        if !self.used.insert(u32::from(a)) {
            return Err(IpamError::Conflict {
                what: "VPC subnet",
                value: a.to_string(),
                range: self.cidr.to_string(),
            });
        }
        Ok(())
    }

    /// Holds an address an imported pod has (taken, and claimable by its node's ipamd).
    pub fn hold(&mut self, a: Ipv4Addr) -> Result<(), IpamError> {
        self.take(a)?;
        self.held.insert(u32::from(a));
        Ok(())
    }

    /// Claims an address for a pod that has it: a held one, or a free one (EC2 assigns a
    /// specific free secondary address on request); false when something else has it.
    fn claim(&mut self, a: Ipv4Addr) -> bool {
        self.held.remove(&u32::from(a)) || (self.cidr.contains(a) && self.used.insert(u32::from(a)))
    }

    fn exhausted(&self, what: &'static str) -> IpamError {
        IpamError::Exhausted {
            what,
            range: self.cidr.to_string(),
            used: self.used.len(),
            fix: "the subnet has no free address left for ENIs and pods; use a larger subnet or fewer warm addresses (WARM_IP_TARGET)",
        }
    }

    /// The highest free address.
    pub fn allocate_ip(&mut self) -> Result<Ipv4Addr, IpamError> {
        let net = u32::from(self.cidr.network());
        let last = u32::from(self.cidr.broadcast());
        let hint = self.hint.clamp(net, last);
        let free = (net..=hint)
            .rev()
            .chain((hint + 1..=last).rev())
            .find(|a| !self.used.contains(a))
            .ok_or(self.exhausted("VPC subnet"))?;
        self.used.insert(free);
        self.hint = free;
        Ok(Ipv4Addr::from(free))
    }

    /// The highest free, aligned /28 (prefix delegation).
    pub fn allocate_prefix(&mut self) -> Result<Ipv4Network, IpamError> {
        let net = u32::from(self.cidr.network());
        let mut base = u32::from(self.cidr.broadcast()) + 1 - 16;
        loop {
            if self.used.range(base..base + 16).next().is_none() {
                self.used.extend(base..base + 16);
                return Ok(Ipv4Network::new(Ipv4Addr::from(base), 28).expect("/28"));
            }
            if base < net + 16 {
                return Err(self.exhausted("VPC subnet (for a /28 prefix)"));
            }
            base -= 16;
        }
    }

    /// Addresses taken, reserves included.
    pub fn used(&self) -> usize {
        self.used.len()
    }
}

/// One elastic network interface of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eni {
    /// `eni-…` (derived from the node and device index, stable for a seed).
    pub id: String,
    /// The device on the node (`eth0` for the primary ENI).
    pub device: String,
    /// The ENI's own (primary) address.
    pub primary_ip: Ipv4Addr,
    /// Secondary addresses, in allocation order (secondary-IP mode).
    pub secondary: Vec<Ipv4Addr>,
    /// /28 prefixes, in allocation order (prefix delegation).
    pub prefixes: Vec<Ipv4Network>,
}

impl Eni {
    /// Pod addresses this ENI holds, in the order ipamd hands them out.
    pub fn pod_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.secondary.iter().copied().chain(self.prefixes.iter().flat_map(|p| p.iter()))
    }

    fn slots_used(&self) -> u32 {
        (self.secondary.len() + self.prefixes.len()) as u32
    }
}

/// Why a pod got no address, as the CNI reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "failed to assign an IP address to container: ipamd on {node} has no free address ({assigned} assigned, {cooling} cooling down, {enis} of {max_enis} ENIs attached{why})"
)]
pub struct AssignError {
    /// The node.
    pub node: String,
    /// Addresses assigned to pods.
    pub assigned: usize,
    /// Released addresses still in their cooldown.
    pub cooling: usize,
    /// ENIs attached.
    pub enis: usize,
    /// The instance type's limit.
    pub max_enis: u32,
    /// Why the pool cannot grow.
    pub why: String,
}

/// The cooldown of a released address before ipamd hands it out again.
pub const COOLDOWN: Duration = Duration::from_secs(30);

/// One node's ipamd.
#[derive(Clone, Debug)]
pub struct Ipamd {
    /// The node.
    pub node: String,
    /// Its instance type.
    pub itype: InstanceType,
    /// Warm-pool settings.
    pub targets: WarmTargets,
    /// ENIs, primary first, in attach order.
    pub enis: Vec<Eni>,
    assigned: BTreeMap<Ipv4Addr, String>,
    cooldown: BTreeMap<Ipv4Addr, Instant>,
    /// What ipamd did, in order (`attached eni-… as eth1`, …), for explanations.
    pub events: Vec<String>,
}

impl Ipamd {
    /// ipamd starting on a node whose primary ENI has `primary_ip`: it fills the warm pool.
    pub fn new(
        node: &str,
        itype: &InstanceType,
        targets: WarmTargets,
        primary_ip: Ipv4Addr,
        subnet: &mut VpcSubnet,
        now: Instant,
    ) -> Result<Ipamd, IpamError> {
        if targets.prefix_delegation
            && (targets.warm_prefix_target == 0
                && targets.warm_ip_target.unwrap_or(0) == 0
                && targets.minimum_ip_target.unwrap_or(0) == 0)
        {
            return Err(IpamError::Config(
                "prefix delegation needs WARM_PREFIX_TARGET, or WARM_IP_TARGET and MINIMUM_IP_TARGET, above zero".into(),
            ));
        }
        subnet.take(primary_ip)?;
        let mut d = Ipamd {
            node: node.into(),
            itype: *itype,
            targets,
            enis: Vec::new(),
            assigned: BTreeMap::new(),
            cooldown: BTreeMap::new(),
            events: Vec::new(),
        };
        d.push_eni(primary_ip);
        d.reconcile(subnet, now);
        Ok(d)
    }

    fn push_eni(&mut self, primary_ip: Ipv4Addr) {
        let i = self.enis.len();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.node.bytes().chain([i as u8]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let eni = Eni {
            id: format!("eni-0{h:016x}"),
            device: format!("eth{i}"),
            primary_ip,
            secondary: Vec::new(),
            prefixes: Vec::new(),
        };
        if i > 0 {
            self.events.push(format!("attached {} as {} ({primary_ip})", eni.id, eni.device));
        }
        self.enis.push(eni);
    }

    /// Pod addresses attached to the node.
    pub fn total(&self) -> usize {
        self.enis.iter().map(|e| e.secondary.len() + e.prefixes.len() * 16).sum()
    }

    /// Addresses assigned to pods.
    pub fn assigned(&self) -> usize {
        self.assigned.len()
    }

    /// Attached addresses neither assigned nor cooling down.
    pub fn available(&self, now: Instant) -> usize {
        self.total() - self.assigned.len() - self.cooling(now)
    }

    fn cooling(&self, now: Instant) -> usize {
        self.cooldown.values().filter(|t| now < **t + COOLDOWN).count()
    }

    /// The pod an address is assigned to.
    pub fn owner(&self, ip: Ipv4Addr) -> Option<&str> {
        self.assigned.get(&ip).map(String::as_str)
    }

    /// The ENI (index into [`Ipamd::enis`]) holding a pod address.
    pub fn eni_of(&self, ip: Ipv4Addr) -> Option<usize> {
        self.enis
            .iter()
            .position(|e| e.secondary.contains(&ip) || e.prefixes.iter().any(|p| p.contains(ip)))
    }

    /// How many more addresses the warm-pool settings want now (0: the pool is fine).
    fn shortfall(&self, now: Instant) -> usize {
        let t = &self.targets;
        let avail = self.available(now);
        if t.warm_ip_target.is_some() || t.minimum_ip_target.is_some() {
            let warm = t.warm_ip_target.unwrap_or(0) as usize;
            let min = t.minimum_ip_target.unwrap_or(0) as usize;
            warm.saturating_sub(avail).max(min.saturating_sub(self.total()))
        } else if t.prefix_delegation {
            // Keep WARM_PREFIX_TARGET prefixes with nothing assigned or cooling.
            let free = self
                .enis
                .iter()
                .flat_map(|e| &e.prefixes)
                .filter(|p| {
                    !p.iter().any(|a| {
                        self.assigned.contains_key(&a)
                            || self.cooldown.get(&a).is_some_and(|t| now < *t + COOLDOWN)
                    })
                })
                .count();
            (t.warm_prefix_target as usize).saturating_sub(free) * 16
        } else {
            ((self.itype.slots_per_eni() * t.warm_eni_target) as usize).saturating_sub(avail)
        }
    }

    /// ipamd's pool loop: add addresses (or prefixes) to ENIs with free slots, attaching
    /// ENIs while the instance allows, until the warm targets hold. Returns whether the
    /// targets hold.
    pub fn reconcile(&mut self, subnet: &mut VpcSubnet, now: Instant) -> bool {
        loop {
            let short = self.shortfall(now);
            if short == 0 {
                return true;
            }
            let slots = self.itype.slots_per_eni();
            let Some(i) = self.enis.iter().position(|e| e.slots_used() < slots) else {
                if self.enis.len() as u32 >= self.itype.max_enis {
                    return false;
                }
                match subnet.allocate_ip() {
                    Ok(ip) => self.push_eni(ip),
                    Err(e) => {
                        self.events.push(format!("cannot attach an ENI: {e}"));
                        return false;
                    }
                }
                continue;
            };
            let free = (slots - self.enis[i].slots_used()) as usize;
            let eni_mode =
                self.targets.warm_ip_target.is_none() && self.targets.minimum_ip_target.is_none();
            if self.targets.prefix_delegation {
                let want = short.div_ceil(16).min(free);
                for _ in 0..want {
                    match subnet.allocate_prefix() {
                        Ok(p) => {
                            self.events
                                .push(format!("assigned prefix {p} to {}", self.enis[i].device));
                            self.enis[i].prefixes.push(p);
                        }
                        Err(e) => {
                            self.events.push(format!("cannot assign a prefix: {e}"));
                            return false;
                        }
                    }
                }
            } else {
                // WARM_ENI_TARGET mode fills an ENI at once; WARM_IP_TARGET takes what it needs.
                let want = if eni_mode { free } else { short.min(free) };
                let mut got = Vec::new();
                for _ in 0..want {
                    match subnet.allocate_ip() {
                        Ok(a) => got.push(a),
                        Err(e) => {
                            self.events.push(format!("cannot assign a secondary IP: {e}"));
                            break;
                        }
                    }
                }
                if got.is_empty() {
                    return false;
                }
                self.events.push(format!(
                    "assigned {} secondary IP{} to {}",
                    got.len(),
                    if got.len() == 1 { "" } else { "s" },
                    self.enis[i].device
                ));
                self.enis[i].secondary.extend(got);
            }
        }
    }

    /// A CNI ADD: the first free address in ENI order (not assigned, not cooling down);
    /// the pool is refilled after the assignment, as ipamd's loop would.
    pub fn assign(
        &mut self,
        pod: &str,
        subnet: &mut VpcSubnet,
        now: Instant,
    ) -> Result<(Ipv4Addr, usize), AssignError> {
        for attempt in 0..2 {
            let free = self.enis.iter().enumerate().find_map(|(i, e)| {
                e.pod_ips()
                    .find(|a| {
                        !self.assigned.contains_key(a)
                            && self.cooldown.get(a).is_none_or(|t| now >= *t + COOLDOWN)
                    })
                    .map(|a| (a, i))
            });
            if let Some((a, i)) = free {
                self.assigned.insert(a, pod.into());
                self.cooldown.remove(&a);
                self.reconcile(subnet, now);
                return Ok((a, i));
            }
            if attempt == 0 {
                self.reconcile(subnet, now);
            }
        }
        let why = if (self.enis.len() as u32) < self.itype.max_enis {
            "; the subnet has no room for another ENI or address".to_string()
        } else {
            format!(
                "; {} allows {} ENIs of {} addresses",
                self.itype.name, self.itype.max_enis, self.itype.ips_per_eni
            )
        };
        Err(AssignError {
            node: self.node.clone(),
            assigned: self.assigned.len(),
            cooling: self.cooling(now),
            enis: self.enis.len(),
            max_enis: self.itype.max_enis,
            why,
        })
    }

    /// A pod that already has `ip` (an imported cluster's `status.podIP`): the ENI holding it
    /// is rebuilt. An address this node's ENIs hold is assigned; one the subnet holds for an
    /// imported pod goes to the first ENI with a free slot (attaching one if needed), as EC2
    /// assigns a specific secondary address (`AssignPrivateIpAddresses`); with prefix
    /// delegation the /28 holding it is assigned. Then the warm pool is refilled.
    pub fn assign_exact(
        &mut self,
        pod: &str,
        ip: Ipv4Addr,
        subnet: &mut VpcSubnet,
        now: Instant,
    ) -> Result<(Ipv4Addr, usize), String> {
        let i = match self.eni_of(ip) {
            Some(i) => i,
            None => {
                if !subnet.claim(ip) {
                    return Err(format!(
                        "{ip} is not free in the VPC subnet {} (a node, an ENI or another pod has it)",
                        subnet.cidr()
                    ));
                }
                let slots = self.itype.slots_per_eni();
                let i = match self.enis.iter().position(|e| e.slots_used() < slots) {
                    Some(i) => i,
                    None if (self.enis.len() as u32) < self.itype.max_enis => {
                        let primary = subnet.allocate_ip().map_err(|e| e.to_string())?;
                        self.push_eni(primary);
                        self.enis.len() - 1
                    }
                    None => {
                        return Err(format!(
                            "{} allows {} ENIs of {} addresses, all in use on {}",
                            self.itype.name, self.itype.max_enis, self.itype.ips_per_eni, self.node
                        ));
                    }
                };
                if self.targets.prefix_delegation {
                    let p = Ipv4Network::new(ip, 28).expect("/28");
                    let p = Ipv4Network::new(p.network(), 28).expect("/28");
                    for a in p.iter() {
                        let _ = subnet.take(a);
                    }
                    self.events.push(format!(
                        "assigned prefix {p} to {} (pod {pod} has {ip})",
                        self.enis[i].device
                    ));
                    self.enis[i].prefixes.push(p);
                } else {
                    self.events.push(format!(
                        "assigned secondary IP {ip} to {} (pod {pod} has it)",
                        self.enis[i].device
                    ));
                    self.enis[i].secondary.push(ip);
                }
                i
            }
        };
        if let Some(other) = self.assigned.get(&ip) {
            return Err(format!("{ip} is already the address of pod {other}"));
        }
        self.assigned.insert(ip, pod.into());
        self.cooldown.remove(&ip);
        self.reconcile(subnet, now);
        Ok((ip, i))
    }

    /// A CNI DEL: the address cools down for [`COOLDOWN`] before it is handed out again.
    pub fn release(&mut self, ip: Ipv4Addr, now: Instant) {
        if self.assigned.remove(&ip).is_some() {
            self.cooldown.insert(ip, now);
        }
    }
}
