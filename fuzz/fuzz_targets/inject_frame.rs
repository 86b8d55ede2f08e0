//! Frames injected at any device of the reference cluster: never a panic, and the cluster
//! keeps working.
#![no_main]
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use podnet::Cluster;

thread_local! {
    // Built once; every input runs on a fork, so inputs never see each other's state.
    static BASE: RefCell<Cluster> = RefCell::new(Cluster::seed());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else { return };
    let mut c = BASE.with(|b| b.borrow().fork());
    let points = c.injection_points();
    let (ns, dev) = &points[usize::from(pick) % points.len()];
    let _ = c.inject_frame(ns, dev, frame).expect("injection points are valid");
});
