//! The architecture as a test, in the spirit of rust-analyzer's tidy tests: every module of
//! `podnet` and `podnet-netfilter` refers only to its own layer and the layers below it. The
//! order is written once, here (DESIGN.md's map); a `crate::` path that reaches up fails the
//! test with the file, the line and the two layers.

use std::path::{Path, PathBuf};

/// `podnet`'s layers, bottom up. A module may use its own layer and those before it.
const CORE: &[&[&str]] = &[
    &["ids", "error", "endpoint", "labels"],
    &["net", "ipam"],
    &["trace"],
    &["world"],
    &["datapath"],
    &["host"],
    &["run"],
    &["kube_proxy"],
    &["policy"],
    &["cni"],
    &["cloud"],
    &["k8s"],
    &["cluster"],
    &["show", "demo", "get"],
    &["lib"],
];

/// What `podnet`'s crate root re-exports, by the layer each item comes from (`None`: another
/// crate's item, below every layer).
const CORE_ROOT: &[(&str, Option<&str>)] = &[
    ("Cluster", Some("cluster")),
    ("ClusterConfig", Some("cluster")),
    ("ClusterError", Some("error")),
    ("TraceError", Some("error")),
    ("Container", Some("world")),
    ("Disposition", Some("trace")),
    ("FlowProto", Some("trace")),
    ("Hop", Some("trace")),
    ("HopKind", Some("trace")),
    ("PacketView", Some("trace")),
    ("Trace", Some("trace")),
    ("TraceOptions", Some("trace")),
    ("Endpoint", Some("endpoint")),
    ("Table", Some("show")),
    ("ProxyMode", Some("kube_proxy")),
    ("Cni", Some("cni")),
    ("netfilter", None),
    ("time", None),
];

/// `podnet-netfilter`'s modules, bottom up: rules → compile → table → counters → eval → hook.
const NETFILTER: &[&[&str]] = &[
    &["packet", "rng", "prefetch", "log"],
    &["conntrack", "rule"],
    &["ipset", "ipvs", "compile"],
    &["table"],
    &["counters"],
    &["eval", "nft"],
    &["hook"],
    &["testing", "lib"],
];

/// `podnet-netfilter`'s root re-exports: the layer of each.
const NETFILTER_ROOT: &[(&str, Option<&str>)] = &[
    ("Conntrack", Some("conntrack")),
    ("CtInfo", Some("conntrack")),
    ("CtRef", Some("conntrack")),
    ("Direction", Some("conntrack")),
    ("Counters", Some("counters")),
    ("TableCounters", Some("counters")),
    ("RuleHit", Some("eval")),
    ("Verdict", Some("eval")),
    ("Rng", Some("rng")),
    ("Choices", Some("rng")),
    ("Netfilter", Some("hook")),
    ("Skb", Some("hook")),
    ("HookEnv", Some("hook")),
    ("HookReport", Some("hook")),
    ("HookVerdict", Some("hook")),
    ("DropCause", Some("hook")),
    ("NatApplied", Some("hook")),
    ("NatList", Some("hook")),
    ("Manip", Some("packet")),
    ("PacketInfo", Some("packet")),
    ("Proto", Some("packet")),
    ("Tuple", Some("packet")),
    ("ChainName", Some("rule")),
    ("Match", Some("rule")),
    ("Rule", Some("rule")),
    ("RuleBuilder", Some("rule")),
    ("Spelling", Some("rule")),
    ("Target", Some("rule")),
    ("Hook", Some("table")),
    ("ParseError", Some("table")),
    ("Ruleset", Some("table")),
    ("TableName", Some("table")),
];

#[test]
fn podnet_modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = check_tree(&src, CORE, CORE_ROOT, &["main"]);
    assert!(bad.is_empty(), "modules reaching up:\n{}", bad.join("\n"));
}

#[test]
fn netfilter_modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netfilter/src");
    let bad = check_tree(&src, NETFILTER, NETFILTER_ROOT, &[]);
    assert!(bad.is_empty(), "modules reaching up:\n{}", bad.join("\n"));
}

/// The check can fail: a datapath module that names the façade is caught, in any of the
/// ways a path can be written, and a comment or a string that merely mentions it is not.
#[test]
fn a_datapath_module_that_names_cluster_is_caught() {
    for text in [
        "use crate::cluster::Cluster;",
        "use crate::{world::World, cluster::Cluster};",
        "fn f(c: &crate::Cluster) {}",
        "use crate::{\n    cluster::{Cluster, ClusterConfig},\n};",
    ] {
        let bad = check_file("datapath/arp.rs", text, CORE, CORE_ROOT);
        assert_eq!(bad.len(), 1, "{text}: {bad:?}");
        assert!(bad[0].contains("datapath/arp.rs:") && bad[0].contains("cluster"), "{bad:?}");
    }
    for text in [
        "// use crate::cluster::Cluster;",
        "/* crate::cluster */ use crate::world::World;",
        r#"const S: &str = "crate::cluster::Cluster";"#,
        "use super::Datapath; use crate::trace::Tag;",
    ] {
        assert_eq!(check_file("datapath/arp.rs", text, CORE, CORE_ROOT), Vec::<String>::new());
    }
    // An item of the crate root nobody classified is reported, not let through.
    let bad = check_file("world/mod.rs", "use crate::Unknown;", CORE, CORE_ROOT);
    assert!(bad[0].contains("not in the root's table"), "{bad:?}");
}

/// Every violation under `src`: `file:line: LAYER uses LAYER (crate::path)`. Files whose
/// module is in `skip` (a binary's root) are not checked.
fn check_tree(
    src: &Path,
    layers: &[&[&str]],
    root: &[(&str, Option<&str>)],
    skip: &[&str],
) -> Vec<String> {
    let mut files = Vec::new();
    collect(src, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no sources under {}", src.display());
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
        if skip.contains(&module_of(&rel)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        bad.extend(check_file(&rel, &text, layers, root));
    }
    bad
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("a source directory") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`datapath/arp.rs` → `datapath`).
fn module_of(rel: &str) -> &str {
    let first = rel.split('/').next().unwrap_or(rel);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The violations of one file (`rel`, its path under `src`).
fn check_file(
    rel: &str,
    text: &str,
    layers: &[&[&str]],
    root: &[(&str, Option<&str>)],
) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| l.contains(&m));
    let own = module_of(rel);
    let own_rank = rank(own).unwrap_or_else(|| panic!("module `{own}` ({rel}) has no layer"));
    let mut bad = Vec::new();
    for (line, first) in crate_paths(&strip(text)) {
        let target = if root.iter().any(|(n, _)| *n == first) {
            match root.iter().find(|(n, _)| *n == first).and_then(|(_, l)| *l) {
                Some(l) => l.to_string(),
                None => continue,
            }
        } else if rank(&first).is_some() {
            first.clone()
        } else {
            bad.push(format!(
                "{rel}:{line}: crate::{first} is not in the root's table of this test"
            ));
            continue;
        };
        let t = rank(&target).expect("a layer");
        if t > own_rank {
            bad.push(format!("{rel}:{line}: {own} uses {target} (crate::{first}), a layer above"));
        }
    }
    bad
}

/// `text` with comments, string literals and char literals blanked out (line breaks kept,
/// so line numbers stay right).
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident(b.get(i.wrapping_sub(1)))
        {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(b[j]));
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if let Some(&x) = b.get(i) {
                    out.push(blank(x));
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && (b.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A char literal ('x', '\n', '\''), not a lifetime.
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Every `crate::` path in (stripped) `text`, as (line, first segment); a group
/// (`crate::{a, b::c}`) gives each of its items' first segments.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let line_at = |i: usize| b[..i].iter().filter(|&&c| c == '\n').count() + 1;
    while i + 7 <= b.len() {
        let is_crate = b[i..i + 5].iter().collect::<String>() == "crate"
            && !ident(b.get(i.wrapping_sub(1)))
            && b.get(i.wrapping_sub(1)) != Some(&'$');
        if !is_crate {
            i += 1;
            continue;
        }
        let mut j = i + 5;
        while b.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if b.get(j) != Some(&':') || b.get(j + 1) != Some(&':') {
            i += 5;
            continue;
        }
        j += 2;
        while b.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if b.get(j) == Some(&'{') {
            // The group's top-level items.
            let (mut depth, mut k, mut start) = (0, j + 1, j + 1);
            while k < b.len() {
                match b[k] {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first(&b[start..k], line_at(start), &mut out);
                        start = k + 1;
                    }
                    _ => {}
                }
                k += 1;
            }
            push_first(&b[start..k.min(b.len())], line_at(start), &mut out);
            i = k;
        } else {
            push_first(&b[j..], line_at(j), &mut out);
            i = j;
        }
    }
    out
}

/// The first identifier of `item` (a path inside a group, or after `crate::`), if any.
fn push_first(item: &[char], line: usize, out: &mut Vec<(usize, String)>) {
    let s: String =
        item.iter().skip_while(|c| c.is_whitespace()).take_while(|c| ident(Some(c))).collect();
    let skipped = item.iter().take_while(|c| c.is_whitespace()).filter(|&&c| c == '\n').count();
    if !s.is_empty() && s != "self" {
        out.push((line + skipped, s));
    }
}
