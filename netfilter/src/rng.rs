//! The random source: a small deterministic PRNG, seeded, and scriptable so that every
//! outcome of a flow can be enumerated. No OS randomness reaches the model.

/// A small deterministic PRNG (SplitMix64): all randomness in podnet flows from a seed.
///
/// A generator can also be *scripted* ([`Rng::scripted`]): load-balancing decisions
/// (`-m statistic`, IPVS scheduling) then follow a list of forced choices and record the
/// decision points they meet, which is how every possible outcome of a flow is enumerated.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    script: Option<std::sync::Arc<std::sync::Mutex<Choices>>>,
}

impl PartialEq for Rng {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state && self.script.is_none() == other.script.is_none()
    }
}

impl Eq for Rng {}

/// Forced choices and the decision points met, shared by every generator of a cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choices {
    /// Choices to make, in order (option index at each decision point).
    pub forced: Vec<usize>,
    /// Decision points met so far: (number of options, chosen option, probability of each).
    pub met: Vec<(usize, Vec<f64>)>,
}

impl Choices {
    fn choose(&mut self, probs: Vec<f64>) -> usize {
        let i = self.met.len();
        let pick = self.forced.get(i).copied().unwrap_or(0).min(probs.len() - 1);
        self.met.push((pick, probs));
        pick
    }
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed, script: None }
    }

    /// A generator whose decisions follow `script` (see the type docs).
    pub fn scripted(seed: u64, script: std::sync::Arc<std::sync::Mutex<Choices>>) -> Rng {
        Rng { state: seed, script: Some(script) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform value in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi - lo) + 1;
        lo + (self.next_u64() % span) as u32
    }

    /// `-m statistic --mode random`: true with probability `threshold / 2^31`, as
    /// xt_statistic decides it; a scripted generator records a decision point instead.
    pub fn statistic(&mut self, threshold: u32) -> bool {
        if let Some(s) = &self.script {
            let p = f64::from(threshold) / f64::from(0x8000_0000u32);
            // Option 0: the rule does not match (the walk goes on); option 1: it matches.
            return s.lock().expect("choices lock").choose(vec![1.0 - p, p]) == 1;
        }
        (self.next_u32() & 0x7fff_ffff) < threshold
    }

    /// A scripted choice among `n` equally likely options, if this generator is scripted.
    pub fn scripted_pick(&mut self, n: usize) -> Option<usize> {
        let s = self.script.as_ref()?;
        Some(s.lock().expect("choices lock").choose(vec![1.0 / n as f64; n]))
    }
}
