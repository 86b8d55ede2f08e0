//! Golden trace files: the JSON of every seed scenario on a fresh reference cluster (seed 0).
//! The Python and browser tests compare against the same files. After an intended change,
//! regenerate them with `PODNET_BLESS=1 cargo test -p podnet --test golden_traces` and
//! review the diff.

use std::path::PathBuf;

use podnet::demo::{golden_trace, scenarios};

fn path(id: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{id}.json"))
}

#[test]
fn every_scenario_matches_its_golden_trace() {
    let bless = std::env::var_os("PODNET_BLESS").is_some();
    for s in scenarios() {
        let json = golden_trace(s.id, 0).unwrap().to_json() + "\n";
        let p = path(s.id);
        if bless {
            std::fs::write(&p, &json).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&p)
            .unwrap_or_else(|_| panic!("{} missing: run with PODNET_BLESS=1", p.display()));
        assert!(
            json == want,
            "{} differs from the golden file; if intended, regenerate with PODNET_BLESS=1",
            s.id
        );
    }
}

#[test]
fn golden_traces_follow_the_schema_contract() {
    for s in scenarios() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path(s.id)).unwrap()).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["disposition"], "delivered", "{}", s.id);
        assert_eq!(v["completed"], true, "{}", s.id);
        for k in
            ["from", "to", "proto", "client", "delivered_to", "server_saw", "reply_from", "hops"]
        {
            assert!(v.get(k).is_some(), "{}: missing {k}", s.id);
        }
        for h in v["hops"].as_array().unwrap() {
            for k in ["index", "packet", "direction", "netns", "action", "detail"] {
                assert!(h.get(k).is_some(), "{}: hop without {k}: {h}", s.id);
            }
        }
    }
}

#[test]
fn untraced_fast_path_gives_the_same_outcome() {
    use podnet::trace::TraceOptions;
    for s in scenarios() {
        let run = |record_hops: bool| {
            let mut c = podnet::Cluster::seed();
            c.trace(
                s.from,
                s.to,
                &TraceOptions { proto: Some(s.proto), record_hops, ..TraceOptions::default() },
            )
            .unwrap()
        };
        let (a, b) = (run(true), run(false));
        assert!(b.hops.is_empty());
        assert!(!a.hops.is_empty());
        let key = |t: &podnet::Trace| {
            (
                t.disposition,
                t.completed,
                t.delivered_to.clone(),
                t.server_saw.clone(),
                t.reply_from.clone(),
                t.reason.clone(),
                t.client.clone(),
            )
        };
        assert_eq!(key(&a), key(&b), "{}", s.id);
    }
}
