//! `nft -f` input: one command per line, tokens separated by blanks, braces, semicolons and
//! commas, quoted strings kept whole. Rules are read statement by statement into the form
//! `nft list` prints; an expression outside what kube-proxy and common CNIs write is an
//! error naming it.

use super::expr::{self, BitOp, Lits, Rhs, Sel, Stmt, Ty, Verd};
use super::{BaseChain, Chain, Element, Family, Rule, Ruleset, Set, Table};
use crate::rule::RejectWith;

/// Why `nft -f` input was refused: where, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {msg}")]
pub struct NftError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub msg: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tok<'a> {
    text: &'a str,
    quoted: bool,
    /// 1-based column, in characters.
    col: usize,
}

/// `line`'s tokens into `out` (emptied first).
fn tokens<'a>(line: &'a str, n: usize, out: &mut Vec<Tok<'a>>) -> Result<(), NftError> {
    out.clear();
    let special = |c: char| matches!(c, '{' | '}' | ';' | ',');
    // (byte offset, character column) of each character.
    let mut it = line.char_indices().enumerate().peekable();
    while let Some((col, (at, c))) = it.next() {
        if c == '#' {
            break;
        }
        if c.is_whitespace() {
            continue;
        }
        if special(c) {
            out.push(Tok { text: &line[at..at + 1], quoted: false, col: col + 1 });
            continue;
        }
        if c == '"' {
            let start = at + 1;
            let end = loop {
                match it.next() {
                    Some((_, (i, '"'))) => break i,
                    Some(_) => {}
                    None => {
                        return Err(NftError {
                            line: n,
                            column: col + 1,
                            msg: "unterminated string: close it with \"".into(),
                        });
                    }
                }
            };
            out.push(Tok { text: &line[start..end], quoted: true, col: col + 1 });
            continue;
        }
        let mut end = at + c.len_utf8();
        while let Some(&(_, (i, d))) = it.peek() {
            if d.is_whitespace() || special(d) || d == '"' {
                break;
            }
            end = i + d.len_utf8();
            it.next();
        }
        out.push(Tok { text: &line[at..end], quoted: false, col: col + 1 });
    }
    Ok(())
}

struct Cur<'a> {
    t: &'a [Tok<'a>],
    i: usize,
    line: usize,
    end_col: usize,
}

impl<'a> Cur<'a> {
    fn err(&self, msg: impl Into<String>) -> NftError {
        let column = self.t.get(self.i).map_or(self.end_col, |t| t.col);
        NftError { line: self.line, column, msg: msg.into() }
    }
    fn peek(&self) -> Option<&'a str> {
        self.t.get(self.i).filter(|t| !t.quoted).map(|t| t.text)
    }
    fn peek_tok(&self) -> Option<&'a Tok<'a>> {
        self.t.get(self.i)
    }
    fn next(&mut self, what: &str) -> Result<&'a str, NftError> {
        match self.t.get(self.i) {
            Some(t) if !t.quoted => {
                self.i += 1;
                Ok(t.text)
            }
            _ => Err(self.err(format!("expected {what}"))),
        }
    }
    fn string(&mut self, what: &str) -> Result<String, NftError> {
        match self.t.get(self.i) {
            Some(t) if t.quoted => {
                self.i += 1;
                Ok(t.text.to_string())
            }
            _ => Err(self.err(format!("expected {what} (a quoted string)"))),
        }
    }
    fn eat(&mut self, s: &str) -> bool {
        if self.peek() == Some(s) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, s: &str) -> Result<(), NftError> {
        if self.eat(s) { Ok(()) } else { Err(self.err(format!("expected `{s}`"))) }
    }
    fn done(&self) -> bool {
        self.i >= self.t.len()
    }
}

/// Applies every command of `text` to `rs`.
pub(super) fn apply(rs: &mut Ruleset, text: &str) -> Result<(), NftError> {
    let mut toks = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let n = k + 1;
        tokens(line, n, &mut toks)?;
        if toks.is_empty() {
            continue;
        }
        let mut c = Cur { t: &toks, i: 0, line: n, end_col: line.chars().count() + 1 };
        command(rs, &mut c)?;
        if !c.done() {
            return Err(c.err("unexpected text after the command"));
        }
    }
    Ok(())
}

fn family(c: &mut Cur<'_>) -> Result<Family, NftError> {
    let f = c.next("a family (ip, ip6, inet)")?;
    Family::parse(f).ok_or_else(|| {
        c.i -= 1;
        c.err(format!("family `{f}` is not modelled: use ip, ip6 or inet"))
    })
}

fn table_mut<'r>(
    rs: &'r mut Ruleset,
    c: &Cur<'_>,
    f: Family,
    name: &str,
) -> Result<&'r mut Table, NftError> {
    let e = c.err(format!("no table {} {name}: add it first", f.as_str()));
    rs.tables.iter_mut().find(|t| t.family == f && t.name == name).ok_or(e)
}

fn command(rs: &mut Ruleset, c: &mut Cur<'_>) -> Result<(), NftError> {
    let verb = c.next("a command (add, create, flush, delete)")?;
    let create = verb == "create";
    match verb {
        "add" | "create" => {}
        "flush" | "delete" => return remove(rs, c, verb),
        other => {
            c.i -= 1;
            return Err(c.err(format!(
                "command `{other}` is not modelled: podnet reads add, create, flush and delete"
            )));
        }
    }
    let what = c.next("table, chain, set, map, rule or element")?;
    let f = family(c)?;
    let tname = c.next("a table name")?.to_string();
    if what == "table" {
        let mut comment = None;
        if c.eat("{") {
            while !c.eat("}") {
                if c.eat(";") {
                    continue;
                }
                c.expect("comment")?;
                comment = Some(c.string("the table's comment")?);
            }
        }
        match rs.tables.iter_mut().find(|t| t.family == f && t.name == tname) {
            Some(_) if create => return Err(c.err(format!("table {} {tname} exists", f.as_str()))),
            Some(t) => {
                if comment.is_some() {
                    t.comment = comment;
                }
            }
            None => rs.tables.push(Table::new(f, tname, comment)),
        }
        return Ok(());
    }
    let t = table_mut(rs, c, f, &tname)?;
    match what {
        "chain" => add_chain(t, c, create),
        "set" | "map" => add_set(t, c, what == "map", create),
        "rule" => add_rule(t, c),
        "element" => {
            let name = c.next("a set or map name")?;
            let elems = placed_elements(c)?;
            check_targets(t, c, &elems)?;
            let Some(si) = t.set_at(name) else {
                return Err(c.err(format!("no set or map {name} in table {tname}: add it first")));
            };
            let s = &mut t.sets[si];
            for (col, mut e) in elems {
                let at = |msg: String| NftError { line: c.line, column: col, msg };
                if e.key.len() != s.key.len() {
                    return Err(at(format!(
                        "element {} has {} parts; {name}'s type has {}",
                        e.key.join(" . "),
                        e.key.len(),
                        s.key.len()
                    )));
                }
                if s.map != e.value.is_some() {
                    return Err(at(if s.map {
                        format!("{name} is a map: give each element a value (`: goto CHAIN`)")
                    } else {
                        format!("{name} is a set: its elements take no value")
                    }));
                }
                e.lits = typed(c, col, &set_tys(s), &e.key)?;
                s.insert(e);
            }
            Ok(())
        }
        other => Err(c.err(format!(
            "cannot add `{other}`: podnet reads tables, chains, sets, maps, rules and elements"
        ))),
    }
}

fn remove(rs: &mut Ruleset, c: &mut Cur<'_>, verb: &str) -> Result<(), NftError> {
    let what = c.next("table, chain, set, map or element")?;
    let f = family(c)?;
    let tname = c.next("a table name")?.to_string();
    if what == "table" {
        let Some(i) = rs.tables.iter().position(|t| t.family == f && t.name == tname) else {
            return Err(c.err(format!("no table {} {tname}", f.as_str())));
        };
        if verb == "delete" {
            rs.tables.remove(i);
        } else {
            let t = &mut rs.tables[i];
            t.chains.iter_mut().for_each(|ch| ch.rules.clear());
            t.sets.iter_mut().for_each(Set::clear);
        }
        return Ok(());
    }
    let t = table_mut(rs, c, f, &tname)?;
    let name = c.next("a name")?.to_string();
    match (verb, what) {
        ("flush", "chain") | ("delete", "chain") => {
            let Some(i) = t.chain_at(&name) else {
                return Err(c.err(format!("no chain {name} in table {tname}")));
            };
            if verb == "flush" {
                t.chains[i].rules.clear();
            } else {
                // The kernel refuses to delete a chain something still jumps to (EBUSY).
                let target = |v: &str| matches!(Verd::parse(v), Some(Verd::Jump(c, _) | Verd::Goto(c, _)) if c == name);
                let used = t.chains.iter().any(|ch| {
                    ch.rules.iter().any(|r| {
                        r.ops.iter().any(|op| {
                            match op {
                            Stmt::Verdict(Verd::Jump(c, _) | Verd::Goto(c, _)) => *c == name,
                            Stmt::Vmap { map: Rhs::Anon(a), .. } => a.iter().any(|(_, v)| {
                                matches!(v, Some(Verd::Jump(c, _) | Verd::Goto(c, _)) if *c == name)
                            }),
                            _ => false,
                        }
                        })
                    })
                }) || t
                    .sets
                    .iter()
                    .any(|s| s.elements.iter().any(|e| e.value.as_deref().is_some_and(target)));
                if used {
                    c.i -= 1;
                    return Err(c.err(format!(
                        "chain {name} is still a jump or goto target: delete the rules and elements that name it first"
                    )));
                }
                t.chains.remove(i);
                t.renumber();
            }
            Ok(())
        }
        ("flush", "set" | "map") | ("delete", "set" | "map") => {
            let Some(i) = t.set_at(&name) else {
                return Err(c.err(format!("no {what} {name} in table {tname}")));
            };
            if verb == "flush" {
                t.sets[i].clear();
            } else {
                t.sets.remove(i);
                t.renumber();
            }
            Ok(())
        }
        ("delete", "element") => {
            let elems = elements(c)?;
            let Some(si) = t.set_at(&name) else {
                return Err(c.err(format!("no set or map {name} in table {tname}")));
            };
            let s = &mut t.sets[si];
            for e in elems {
                if !s.remove(&e.key) {
                    return Err(c.err(format!("{name} has no element {}", e.key.join(" . "))));
                }
            }
            Ok(())
        }
        _ => Err(c.err(format!("cannot {verb} `{what}`"))),
    }
}

fn add_chain(t: &mut Table, c: &mut Cur<'_>, create: bool) -> Result<(), NftError> {
    let name = c.next("a chain name")?.to_string();
    let (mut base, mut comment) = (None, None);
    if c.eat("{") {
        while !c.eat("}") {
            if c.eat(";") {
                continue;
            }
            match c.next("type, policy or comment")? {
                "type" => {
                    let kind = c.next("a chain type (filter, nat, route)")?.to_string();
                    c.expect("hook")?;
                    let hook = c.next("a hook")?.to_string();
                    c.expect("priority")?;
                    let p = c.next("a priority")?;
                    let Ok(priority) = p.parse::<i32>() else {
                        c.i -= 1;
                        return Err(c.err(format!(
                            "priority `{p}`: podnet reads numeric priorities (-110, 0, 100)"
                        )));
                    };
                    base = Some(BaseChain { kind, hook, priority, policy: "accept".into() });
                }
                "policy" => {
                    let p = c.next("accept or drop")?.to_string();
                    match base.as_mut() {
                        Some(b) => b.policy = p,
                        None => return Err(c.err("a policy needs a base chain (type … hook …)")),
                    }
                }
                "comment" => comment = Some(c.string("the chain's comment")?),
                other => {
                    c.i -= 1;
                    return Err(
                        c.err(format!("`{other}` in a chain's declaration is not modelled"))
                    );
                }
            }
        }
    }
    match t.chain_at(&name).map(|i| &mut t.chains[i]) {
        Some(_) if create => Err(c.err(format!("chain {name} exists"))),
        Some(ch) => {
            if base.is_some() {
                ch.base = base;
            }
            if comment.is_some() {
                ch.comment = comment;
            }
            Ok(())
        }
        None => {
            t.push_chain(Chain { name, base, comment, rules: Vec::new() });
            Ok(())
        }
    }
}

fn add_set(t: &mut Table, c: &mut Cur<'_>, map: bool, create: bool) -> Result<(), NftError> {
    let name = c.next("a set name")?.to_string();
    let mut s = Set {
        name: name.clone(),
        map,
        key: Vec::new(),
        data: None,
        flags: Vec::new(),
        timeout: None,
        size: None,
        comment: None,
        elements: Vec::new(),
        keys: Default::default(),
    };
    let mut elems = Vec::new();
    c.expect("{")?;
    while !c.eat("}") {
        if c.eat(";") {
            continue;
        }
        match c.next("type, flags, timeout, size, comment or elements")? {
            "type" => {
                loop {
                    let ty = c.next("a type")?;
                    if Ty::of_set_type(ty).is_none() {
                        c.i -= 1;
                        return Err(c.err(format!(
                            "set type `{ty}` is not modelled (ipv4_addr, inet_proto, inet_service, mark, integer, ifname, ct_state, ct_status, fib_addrtype, nf_proto)"
                        )));
                    }
                    s.key.push(ty.to_string());
                    if !c.eat(".") {
                        break;
                    }
                }
                if map {
                    c.expect(":")?;
                    s.data = Some(c.next("the map's value type")?.to_string());
                }
            }
            "flags" => loop {
                s.flags.push(c.next("a flag")?.to_string());
                if !c.eat(",") {
                    break;
                }
            },
            "timeout" => {
                let v = c.next("a timeout (10800s)")?;
                s.timeout = Some(duration(v).ok_or_else(|| {
                    c.err(format!(
                        "timeout `{v}`: write seconds, minutes, hours or days (10800s, 3h)"
                    ))
                })?);
            }
            "size" => {
                let v = c.next("a size")?;
                s.size = Some(v.parse().map_err(|_| c.err(format!("size `{v}` is not a number")))?);
            }
            "comment" => s.comment = Some(c.string("the set's comment")?),
            "elements" => {
                c.expect("=")?;
                elems = placed_elements(c)?;
            }
            other => {
                c.i -= 1;
                return Err(c.err(format!("`{other}` in a set's declaration is not modelled")));
            }
        }
    }
    if s.key.is_empty() {
        return Err(c.err(format!("set {name} has no type: add `type ipv4_addr ;`")));
    }
    if map && s.data.as_deref() != Some("verdict") {
        return Err(c.err(format!(
            "map {name}: podnet models verdict maps (`type … : verdict`), not data maps"
        )));
    }
    check_targets(t, c, &elems)?;
    let tys = set_tys(&s);
    for (col, mut e) in elems {
        if s.map != e.value.is_some() {
            return Err(NftError {
                line: c.line,
                column: col,
                msg: if map {
                    format!("{name} is a map: give each element a value (`: goto CHAIN`)")
                } else {
                    format!("{name} is a set: its elements take no value")
                },
            });
        }
        e.lits = typed(c, col, &tys, &e.key)?;
        s.insert(e);
    }
    match t.set_at(&name) {
        Some(_) if create => Err(c.err(format!("set {name} exists"))),
        Some(_) => Ok(()),
        None => {
            t.push_set(s);
            Ok(())
        }
    }
}

/// A set's key types (checked when it was declared).
fn set_tys(s: &Set) -> Vec<Ty> {
    s.key.iter().map(|k| Ty::of_set_type(k).expect("checked at declaration")).collect()
}

/// `10800s`, `3h`, `1d2h`.
fn duration(v: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    for ch in v.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match ch {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total += num.parse::<u64>().ok()?;
    }
    Some(total)
}

/// `{ KEY [. KEY] [comment "…"] [: VALUE] [, …] }`
fn elements(c: &mut Cur<'_>) -> Result<Vec<Element>, NftError> {
    Ok(placed_elements(c)?.into_iter().map(|(_, e)| e).collect())
}

/// [`elements`], each with the column it starts at.
fn placed_elements(c: &mut Cur<'_>) -> Result<Vec<(usize, Element)>, NftError> {
    c.expect("{")?;
    let mut out = Vec::new();
    loop {
        if c.eat("}") {
            return Ok(out);
        }
        let col = c.peek_tok().map_or(c.end_col, |t| t.col);
        let mut key = vec![c.next("an element")?.to_string()];
        while c.eat(".") {
            key.push(c.next("an element's next part")?.to_string());
        }
        let mut comment = None;
        if c.eat("comment") {
            comment = Some(c.string("the element's comment")?);
        }
        let mut value = None;
        if c.eat(":") {
            value = Some(verdict(c)?);
        }
        out.push((col, Element { key, comment, value, lits: Default::default() }));
        if !c.eat(",") {
            c.expect("}")?;
            return Ok(out);
        }
    }
}

/// `accept`, `drop`, `return`, `jump CHAIN`, `goto CHAIN`.
fn verdict(c: &mut Cur<'_>) -> Result<String, NftError> {
    match c.next("a verdict")? {
        v @ ("accept" | "drop" | "return" | "continue") => Ok(v.to_string()),
        v @ ("jump" | "goto") => Ok(format!("{v} {}", c.next("a chain")?)),
        other => {
            c.i -= 1;
            Err(c.err(format!(
                "`{other}` is not a verdict (accept, drop, return, jump CHAIN, goto CHAIN)"
            )))
        }
    }
}

/// Every jump or goto among `elems`' values names a chain of `t`, as the kernel requires.
fn check_targets(t: &Table, c: &Cur<'_>, elems: &[(usize, Element)]) -> Result<(), NftError> {
    for (col, e) in elems {
        if let Some(Verd::Jump(ch, _) | Verd::Goto(ch, _)) =
            e.value.as_deref().and_then(Verd::parse)
            && t.chain(&ch).is_none()
        {
            return Err(NftError {
                line: c.line,
                column: *col,
                msg: format!("no chain {ch} in table {}: add it first", t.name),
            });
        }
    }
    Ok(())
}

fn add_rule(t: &mut Table, c: &mut Cur<'_>) -> Result<(), NftError> {
    let chain = c.next("a chain name")?.to_string();
    let Some(ci) = t.chain_at(&chain) else {
        c.i -= 1;
        return Err(c.err(format!("no chain {chain} in table {}: add it first", t.name)));
    };
    let mut stmts = Vec::new();
    let mut ops = Vec::new();
    let mut comment = None;
    while !c.done() {
        if c.eat("comment") {
            comment = Some(c.string("the rule's comment")?);
            continue;
        }
        let (text, op) = statement(t, c)?;
        stmts.push(text);
        ops.push(op);
    }
    if stmts.is_empty() {
        return Err(c.err("a rule needs a statement"));
    }
    t.handles += 1;
    let handle = t.handles;
    let ch = &mut t.chains[ci];
    ch.rules.push(Rule { handle, stmts, comment, ops });
    Ok(())
}

/// What a selector reads: `ip daddr`, `meta l4proto`, `th dport`, `ct state`, … as `nft list`
/// prints it, and what it means.
fn selector(c: &mut Cur<'_>) -> Result<Option<(String, Sel)>, NftError> {
    let Some(w) = c.peek() else { return Ok(None) };
    let two = |c: &mut Cur<'_>, first: &str, ok: &[&str]| -> Result<String, NftError> {
        c.i += 1;
        let f = c.next(&format!("a field of {first}"))?;
        if ok.contains(&f) {
            Ok(f.to_string())
        } else {
            c.i -= 1;
            Err(c.err(format!("`{first} {f}` is not modelled ({first} fields: {})", ok.join(", "))))
        }
    };
    let port = |f: &str, proto: Option<u8>| Sel::Port { dst: f == "dport", proto };
    Ok(Some(match w {
        "ip" => {
            let f = two(c, "ip", &["saddr", "daddr", "protocol"])?;
            let sel = match f.as_str() {
                "saddr" => Sel::IpSaddr,
                "daddr" => Sel::IpDaddr,
                _ => Sel::L4proto,
            };
            (format!("ip {f}"), sel)
        }
        "th" => {
            let f = two(c, "th", &["sport", "dport"])?;
            let sel = port(&f, None);
            (format!("th {f}"), sel)
        }
        "tcp" => {
            let f = two(c, "tcp", &["sport", "dport", "flags"])?;
            let sel = if f == "flags" { Sel::TcpFlags } else { port(&f, Some(6)) };
            (format!("tcp {f}"), sel)
        }
        "udp" => {
            let f = two(c, "udp", &["sport", "dport"])?;
            let sel = port(&f, Some(17));
            (format!("udp {f}"), sel)
        }
        "meta" => {
            let f = two(
                c,
                "meta",
                &["l4proto", "mark", "iifname", "oifname", "iif", "oif", "nfproto"],
            )?;
            let sel = match f.as_str() {
                "l4proto" => Sel::L4proto,
                "mark" => Sel::Mark,
                "iifname" => Sel::Iifname,
                "oifname" => Sel::Oifname,
                "iif" => Sel::Iif,
                "oif" => Sel::Oif,
                _ => Sel::Nfproto,
            };
            // nft prints the interface selectors without `meta`.
            if matches!(sel, Sel::Iifname | Sel::Oifname | Sel::Iif | Sel::Oif) {
                (f, sel)
            } else {
                (format!("meta {f}"), sel)
            }
        }
        "ct" => {
            let f = two(c, "ct", &["state", "status", "mark"])?;
            let sel = match f.as_str() {
                "state" => Sel::CtState,
                "status" => Sel::CtStatus,
                _ => Sel::CtMark,
            };
            (format!("ct {f}"), sel)
        }
        "mark" => {
            c.i += 1;
            ("meta mark".into(), Sel::Mark)
        }
        "iifname" | "oifname" | "iif" | "oif" => {
            c.i += 1;
            let sel = match w {
                "iifname" => Sel::Iifname,
                "oifname" => Sel::Oifname,
                "iif" => Sel::Iif,
                _ => Sel::Oif,
            };
            (w.to_string(), sel)
        }
        "fib" => {
            c.i += 1;
            let f = c.next("saddr or daddr")?;
            if !matches!(f, "saddr" | "daddr") {
                c.i -= 1;
                return Err(c.err(format!("`fib {f}` is not modelled (fib saddr, fib daddr)")));
            }
            c.expect("type")?;
            (format!("fib {f} type"), Sel::FibType { dst: f == "daddr" })
        }
        "numgen" => {
            c.i += 1;
            c.expect("random")?;
            c.expect("mod")?;
            let n = c.next("a modulus")?;
            let m = n
                .parse::<u32>()
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| c.err(format!("`{n}` is not a modulus (a number above 0)")))?;
            (format!("numgen random mod {n}"), Sel::Numgen(m))
        }
        _ => return Ok(None),
    }))
}

/// Reads `parts` (one per concatenated type) as typed values; `col` places an error.
fn typed(c: &Cur<'_>, col: usize, tys: &[Ty], parts: &[String]) -> Result<Lits, NftError> {
    if parts.len() != tys.len() {
        return Err(NftError {
            line: c.line,
            column: col,
            msg: format!(
                "{} has {} parts; the selector reads {}",
                parts.join(" . "),
                parts.len(),
                tys.len()
            ),
        });
    }
    tys.iter()
        .zip(parts)
        .map(|(ty, p)| expr::lit(*ty, p).map_err(|msg| NftError { line: c.line, column: col, msg }))
        .collect()
}

/// A value (one per concatenated selector, `.`-joined), a `@set`, or an anonymous set
/// `{ a, b }` (one element unwrapped, as nft prints it) or map `{ k : verdict, … }`, read as
/// values of `tys`.
fn value(t: &Table, c: &mut Cur<'_>, tys: &[Ty]) -> Result<(String, Rhs), NftError> {
    if c.peek() == Some("{") {
        let elems = placed_elements(c)?;
        check_targets(t, c, &elems)?;
        let mut parts = Vec::new();
        let mut anon = Vec::new();
        for (col, e) in &elems {
            let mut s = String::new();
            e.write(&mut s);
            parts.push(s);
            let v = e.value.as_deref().and_then(Verd::parse);
            anon.push((typed(c, *col, tys, &e.key)?, v));
        }
        if parts.len() == 1 && elems[0].1.value.is_none() {
            let (lits, _) = anon.pop().expect("one element");
            return Ok((parts.swap_remove(0), Rhs::Value(lits)));
        }
        return Ok((format!("{{ {} }}", parts.join(", ")), Rhs::Anon(anon)));
    }
    let col = c.peek_tok().map_or(c.end_col, |t| t.col);
    if let [ty @ (Ty::Iface | Ty::IfIndex)] = tys {
        // An interface name, quoted or not; nft prints it quoted.
        let Some(tok) = c.peek_tok() else { return Err(c.err("expected an interface name")) };
        if !tok.text.starts_with('@') {
            c.i += 1;
            let lit = expr::lit(*ty, tok.text).map_err(|msg| NftError {
                line: c.line,
                column: col,
                msg,
            })?;
            return Ok((format!("\"{}\"", tok.text), Rhs::Value(smallvec::smallvec![lit])));
        }
    }
    let v = c.next("a value")?;
    if let [ty] = tys
        && ty.is_flags()
        && c.peek() == Some(",")
    {
        // `ct state established,related`: one value of several flags.
        let mut parts = vec![v.to_string()];
        while c.eat(",") {
            parts.push(c.next("a flag")?.to_string());
        }
        let text = parts.join(",");
        let lit =
            expr::lit(*ty, &text).map_err(|msg| NftError { line: c.line, column: col, msg })?;
        return Ok((text, Rhs::Value(smallvec::smallvec![lit])));
    }
    if let Some(set) = v.strip_prefix('@') {
        let Some(s) = t.set(set) else {
            c.i -= 1;
            return Err(c.err(format!("no set or map {set}: add it before the rule that uses it")));
        };
        if s.key.len() != tys.len() {
            c.i -= 1;
            return Err(c.err(format!(
                "{set}'s type has {} parts; the selector reads {}",
                s.key.len(),
                tys.len()
            )));
        }
        return Ok((v.to_string(), Rhs::Named(set.to_string(), expr::UNLINKED)));
    }
    let mut parts = vec![v.to_string()];
    while parts.len() < tys.len() && c.eat(".") {
        parts.push(c.next("a value's next part")?.to_string());
    }
    let lits = typed(c, col, tys, &parts)?;
    Ok((parts.join(" . "), Rhs::Value(lits)))
}

/// A number as `nft` prints a mark: `0x00004000`.
fn mark(c: &mut Cur<'_>) -> Result<(String, u32), NftError> {
    let v = c.next("a mark")?;
    let n = match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => v.parse::<u32>().ok(),
    };
    let n = n.ok_or_else(|| {
        c.i -= 1;
        c.err(format!("`{v}` is not a mark (a number)"))
    })?;
    Ok((format!("0x{n:08x}"), n))
}

fn bit_op(w: &str) -> Option<(&'static str, BitOp)> {
    match w {
        "or" | "|" => Some(("|", BitOp::Or)),
        "and" | "&" => Some(("&", BitOp::And)),
        "xor" | "^" => Some(("^", BitOp::Xor)),
        _ => None,
    }
}

fn statement(t: &Table, c: &mut Cur<'_>) -> Result<(String, Stmt), NftError> {
    let Some(w) = c.peek() else { return Err(c.err("expected a statement")) };
    match w {
        "accept" | "drop" | "return" | "jump" | "goto" => {
            let col = c.peek_tok().map_or(c.end_col, |t| t.col);
            let v = verdict(c)?;
            let verd = Verd::parse(&v).expect("verdict() reads verdicts");
            if let Verd::Jump(ch, _) | Verd::Goto(ch, _) = &verd
                && t.chain(ch).is_none()
            {
                return Err(NftError {
                    line: c.line,
                    column: col,
                    msg: format!("no chain {ch} in table {}: add it first", t.name),
                });
            }
            return Ok((v, Stmt::Verdict(verd)));
        }
        "counter" => {
            c.i += 1;
            return Ok(("counter packets 0 bytes 0".into(), Stmt::Counter));
        }
        "reject" => {
            c.i += 1;
            if c.eat("with") {
                let a = c.next("icmp or tcp")?;
                let with = match a {
                    "tcp" => {
                        c.expect("reset")?;
                        return Ok((
                            "reject with tcp reset".into(),
                            Stmt::Reject(RejectWith::TcpReset),
                        ));
                    }
                    "icmp" => {
                        c.eat("type");
                        let d = c.next("the ICMP type (port-unreachable, host-unreachable, net-unreachable, prot-unreachable, admin-prohibited)")?;
                        match d {
                            "port-unreachable" => RejectWith::PortUnreachable,
                            "host-unreachable" => RejectWith::HostUnreachable,
                            "net-unreachable" => RejectWith::NetUnreachable,
                            "prot-unreachable" => RejectWith::ProtoUnreachable,
                            "admin-prohibited" => RejectWith::AdminProhibited,
                            other => {
                                c.i -= 1;
                                return Err(
                                    c.err(format!("`reject with icmp {other}` is not modelled"))
                                );
                            }
                        }
                    }
                    other => {
                        c.i -= 1;
                        return Err(c.err(format!(
                            "`reject with {other}` is not modelled (icmp, tcp reset)"
                        )));
                    }
                };
                let text = if with == RejectWith::PortUnreachable {
                    "reject".to_string()
                } else {
                    format!("reject with icmp {}", reject_icmp_name(with))
                };
                return Ok((text, Stmt::Reject(with)));
            }
            return Ok(("reject".into(), Stmt::Reject(RejectWith::PortUnreachable)));
        }
        "masquerade" => {
            c.i += 1;
            let mut s = "masquerade".to_string();
            let (mut random, mut fully_random, mut persistent) = (false, false, false);
            while let Some(f @ ("fully-random" | "random" | "persistent")) = c.peek() {
                c.i += 1;
                s.push(' ');
                s.push_str(f);
                match f {
                    "random" => random = true,
                    "fully-random" => fully_random = true,
                    _ => persistent = true,
                }
            }
            return Ok((s, Stmt::Masquerade { random, fully_random, persistent }));
        }
        "dnat" | "snat" => {
            c.i += 1;
            c.expect("to")?;
            let a = c.next("an address (IP or IP:PORT)")?;
            let (addr, port) = match a.split_once(':') {
                Some((ip, p)) => (ip, Some(p)),
                None => (a, None),
            };
            let bad = |c: &mut Cur<'_>| {
                c.i -= 1;
                c.err(format!("`{a}` is not an address to translate to (IP or IP:PORT)"))
            };
            let Ok(addr) = addr.parse() else { return Err(bad(c)) };
            let port = match port {
                Some(p) => match p.parse::<u16>() {
                    Ok(p) => Some(p),
                    Err(_) => return Err(bad(c)),
                },
                None => None,
            };
            return Ok((format!("{w} to {a}"), Stmt::Nat { dst: w == "dnat", addr, port }));
        }
        "update" | "add" => {
            c.i += 1;
            let set = c.next("@SET")?;
            let Some(name) = set.strip_prefix('@') else {
                c.i -= 1;
                return Err(c.err("expected @SET"));
            };
            let Some(decl) = t.set(name) else {
                c.i -= 1;
                return Err(c.err(format!("no set {name}: add it before the rule that uses it")));
            };
            if !decl.flags.iter().any(|f| f == "dynamic") {
                c.i -= 1;
                return Err(c.err(format!(
                    "set {name} is not dynamic: declare it with `flags dynamic` to update it from the packet path"
                )));
            }
            c.expect("{")?;
            let mut texts = Vec::new();
            let mut sels = Vec::new();
            loop {
                match selector(c)? {
                    Some((s, sel)) => {
                        texts.push(s);
                        sels.push(sel);
                    }
                    None => return Err(c.err("expected a selector (ip saddr)")),
                }
                if !c.eat(".") {
                    break;
                }
            }
            c.expect("}")?;
            if sels.len() != decl.key.len() {
                c.i -= 1;
                return Err(c.err(format!(
                    "{name}'s type has {} parts; the update gives {}",
                    decl.key.len(),
                    sels.len()
                )));
            }
            return Ok((
                format!("{w} {set} {{ {} }}", texts.join(" . ")),
                Stmt::Update { set: name.to_string(), at: expr::UNLINKED, sel: sels.into() },
            ));
        }
        _ => {}
    }
    // A match: a selector (or concatenation), then an operator and a value, a map lookup,
    // or a mark operation.
    let Some(first) = selector(c)? else {
        return Err(c.err(format!(
            "`{w}` is not an expression podnet models (ip, th, tcp, udp, meta, mark, ct, fib, numgen, iifname, oifname, iif, oif, and the statements accept, drop, return, jump, goto, reject, masquerade, dnat, snat, counter, update)"
        )));
    };
    let mut texts = vec![first.0];
    let mut sel = vec![first.1];
    while c.eat(".") {
        match selector(c)? {
            Some((s, x)) => {
                texts.push(s);
                sel.push(x);
            }
            None => return Err(c.err("expected a selector after `.`")),
        }
    }
    let lhs = texts.join(" . ");
    let tys: Vec<Ty> = sel.iter().map(|s| s.ty()).collect();
    let op = match c.peek_tok() {
        None => return Err(c.err(format!("`{lhs}` needs a value to match"))),
        Some(t) if t.quoted => "",
        Some(t) => t.text,
    };
    if op == "vmap" {
        c.i += 1;
        let (text, map) = value(t, c, &tys)?;
        match &map {
            Rhs::Named(m, _) if t.set(m).is_some_and(|s| s.data.as_deref() != Some("verdict")) => {
                c.i -= 1;
                return Err(c.err(format!("{m} is not a verdict map")));
            }
            Rhs::Value(_) => {
                return Err(c.err("a vmap needs a map: `{ KEY : VERDICT, … }` or `@MAP`"));
            }
            _ => {}
        }
        return Ok((format!("{lhs} vmap {text}"), Stmt::Vmap { sel: sel.into(), map }));
    }
    if op == "map" {
        return Err(c.err(format!(
            "`{lhs} map` (a data map) is not modelled: podnet evaluates verdict maps (vmap)"
        )));
    }
    if sel.len() == 1 && matches!(sel[0], Sel::Mark | Sel::CtMark) {
        if c.eat("set") {
            if sel[0] == Sel::CtMark {
                c.i -= 1;
                return Err(c.err("`ct mark set` is not modelled: podnet sets the packet's mark (`meta mark set`)"));
            }
            // `mark set mark or 0x4000` → `meta mark set meta mark | 0x00004000`
            let (rhs, stmt) = match selector(c)? {
                Some((s, from)) => {
                    if from != sel[0] {
                        c.i -= 1;
                        return Err(c.err(format!(
                            "`{lhs} set {s} …` is not modelled: set a mark from itself"
                        )));
                    }
                    let op = c.next("or, and or xor")?;
                    let Some((o, bop)) = bit_op(op) else {
                        c.i -= 1;
                        return Err(c.err(format!("`{op}` is not or, and, xor")));
                    };
                    let (m, v) = mark(c)?;
                    (format!("{s} {o} {m}"), Stmt::MarkSet { sel: sel[0], op: Some(bop), val: v })
                }
                None => {
                    let (m, v) = mark(c)?;
                    (m, Stmt::MarkSet { sel: sel[0], op: None, val: v })
                }
            };
            return Ok((format!("{lhs} set {rhs}"), stmt));
        }
        if let Some((o, bop)) = bit_op(op) {
            c.i += 1;
            let (m, mask) = mark(c)?;
            let cmp = match c.peek() {
                Some(x @ ("==" | "!=")) => {
                    c.i += 1;
                    x
                }
                _ => "==",
            };
            let (v, val) = mark(c)?;
            return Ok((
                format!("{lhs} {o} {m} {cmp} {v}"),
                Stmt::MarkMatch { sel: sel[0], op: bop, mask, neg: cmp == "!=", val },
            ));
        }
    }
    let neg = c.eat("!=");
    if !neg {
        c.eat("==");
    }
    if c.peek_tok().is_none() {
        return Err(c.err(format!("`{lhs}` needs a value to match")));
    }
    let (text, rhs) = value(t, c, &tys)?;
    if let Rhs::Anon(a) = &rhs
        && a.iter().any(|(_, v)| v.is_some())
    {
        return Err(c.err("a map needs `vmap`: `SELECTOR vmap { KEY : VERDICT }`"));
    }
    if let Rhs::Named(n, _) = &rhs
        && t.set(n).is_some_and(|s| s.map)
    {
        return Err(c.err(format!("{n} is a map: look it up with `vmap @{n}`")));
    }
    Ok((
        format!("{lhs} {}{text}", if neg { "!= " } else { "" }),
        Stmt::Match { sel: sel.into(), neg, rhs },
    ))
}

/// The ICMP type `nft` prints after `reject with icmp`.
fn reject_icmp_name(w: RejectWith) -> &'static str {
    match w {
        RejectWith::PortUnreachable => "port-unreachable",
        RejectWith::HostUnreachable => "host-unreachable",
        RejectWith::NetUnreachable => "net-unreachable",
        RejectWith::ProtoUnreachable => "prot-unreachable",
        RejectWith::AdminProhibited => "admin-prohibited",
        RejectWith::TcpReset => "tcp reset",
    }
}
