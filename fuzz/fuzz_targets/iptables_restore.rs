//! `iptables-restore` input: parsing never panics; whatever parses prints in both forms, and
//! the kernel form parses back to the same kernel form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podnet_netfilter::Ruleset;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut rs = Ruleset::default();
    if rs.restore(text, false).is_ok() {
        let _ = rs.save_restore_form();
        let tables = rs.tables_in_use();
        let kernel = rs.save_kernel_form(&tables);
        let mut again = Ruleset::default();
        again.restore(&kernel, false).expect("the kernel form parses back");
        assert_eq!(again.save_kernel_form(&tables), kernel);
    }
});
