//! `nft -f` input: any text either applies or fails with an error whose line and column are
//! inside the input, leaving the ruleset as it was; an applied ruleset lists.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut rs = podnet_netfilter::nft::Ruleset::default();
    let _ = rs.apply("add table ip kube-proxy\nadd chain ip kube-proxy services\n");
    let before = rs.clone();
    match rs.apply(text) {
        Ok(()) => {
            let _ = rs.list();
        }
        Err(e) => {
            assert_eq!(rs, before, "a failed transaction changed the ruleset");
            let lines = text.lines().count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "line {} outside the input: {e}", e.line);
            let width = text.lines().nth(e.line - 1).map_or(0, |l| l.chars().count());
            assert!(e.column >= 1 && e.column <= width + 1, "column past the line: {e}");
        }
    }
});
