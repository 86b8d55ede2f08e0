//! Golden tests against kube-proxy's own expectations and the real `iptables-save`.
//!
//! - `kube-proxy-overall.restore` is kube-proxy's `TestOverallIPTablesRules` expectation
//!   (restore form): it must round-trip byte for byte.
//! - `kube-proxy-overall-no-nfacct.iptables-save` is what iptables v1.8.9 (nf_tables) printed
//!   on Linux 6.18 after `iptables-restore` of the same rules without the `-m nfacct` matches
//!   (this kernel has no nfacct module); podnet's kernel form must equal it.

use podnet_netfilter::{Ruleset, TableName};

const RESTORE: &str = include_str!("data/kube-proxy-overall.restore");
const RESTORE_NO_NFACCT: &str = include_str!("data/kube-proxy-overall-no-nfacct.restore");
const KERNEL: &str = include_str!("data/kube-proxy-overall-no-nfacct.iptables-save");

#[test]
fn kube_proxy_golden_round_trips_in_restore_form() {
    let mut rs = Ruleset::default();
    rs.restore(RESTORE, false).expect("golden dump parses");
    // iptables-restore ignores '#' lines; everything else must come back byte for byte.
    let rules: String =
        RESTORE.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(rs.save_restore_form(), rules);
}

#[test]
fn kernel_form_matches_real_iptables_save() {
    let mut rs = Ruleset::default();
    rs.restore(RESTORE_NO_NFACCT, false).unwrap();
    let ours = rs.save_kernel_form(&[TableName::Filter, TableName::Nat]);
    assert_eq!(ours, KERNEL);
    assert_eq!(rs.tables_in_use(), vec![TableName::Filter, TableName::Nat]);
}

#[test]
fn kernel_form_parses_back_to_the_same_rules() {
    let mut a = Ruleset::default();
    a.restore(KERNEL, false).expect("iptables-save output parses");
    let again = a.save_kernel_form(&[TableName::Filter, TableName::Nat]);
    assert_eq!(again, KERNEL);
}

/// With root and iptables on the machine, compare against the live kernel in a private
/// network namespace. `./scripts/test` installs iptables and sets `PODNET_REQUIRE_KERNEL=1`
/// when it runs as root (as CI does): then a missing tool or namespace fails the test.
/// Otherwise a visible SKIPPED line says the check did not run.
#[test]
fn live_kernel_agrees_when_available() {
    use std::process::{Command, Stdio};
    let required = std::env::var_os("PODNET_REQUIRE_KERNEL").is_some_and(|v| v == "1");
    let skip = |why: &str| {
        assert!(!required, "PODNET_REQUIRE_KERNEL=1 but {why}");
        // Printed to stdout too, so `cargo test` shows it without --nocapture.
        println!("SKIPPED live_kernel_agrees_when_available: {why}");
        eprintln!("SKIPPED live_kernel_agrees_when_available: {why}");
    };
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let have = Command::new("iptables-save").arg("--version").output().is_ok();
    if !is_root || !have {
        skip("needs root and iptables (apt-get install iptables)");
        return;
    }
    let ns = format!("podnet-nf-{}", std::process::id());
    if !Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success()) {
        skip("cannot create a network namespace");
        return;
    }
    let run = || -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables-restore", "--noflush"])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(RESTORE_NO_NFACCT.as_bytes())
            .map_err(|e| e.to_string())?;
        if !child.wait().map_err(|e| e.to_string())?.success() {
            return Err("iptables-restore failed".into());
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables-save"])
            .output()
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect())
    };
    let live = run();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let live = live.expect("live iptables round trip");
    let mut rs = Ruleset::default();
    rs.restore(RESTORE_NO_NFACCT, false).unwrap();
    assert_eq!(rs.save_kernel_form(&rs.tables_in_use()), live);
}
