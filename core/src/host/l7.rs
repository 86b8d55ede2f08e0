//! The L7 proxy an ALB or an in-cluster Ingress controller runs: it parses real HTTP/1.1
//! requests (with `httparse`), picks a rule and a target, and rewrites the request for the
//! backend. The Ingress objects that configure it are [`crate::cloud::ingress`]'s.
//!
//! - **ALB** ([`Matching::Alb`]): listener rules ordered as the AWS Load Balancer Controller
//!   orders them: Exact paths before Prefix paths, longer prefixes first, then
//!   ImplementationSpecific paths (ALB wildcards) in manifest order; the first match wins.
//!   A rule with a host only matches that `Host:` (port stripped, case-insensitive).
//! - **In-cluster controller** ([`Matching::Kubernetes`], ingress-nginx style): the
//!   Kubernetes Ingress rules. The most specific host wins (exact, then a `*.` wildcard
//!   covering exactly one label, then rules without host), then the longest matching path,
//!   Exact before Prefix on a tie; no match goes to the default backend, or 404.
//!
//! Prefix matching is element-wise in both: `/foo` matches `/foo` and `/foo/bar`, not
//! `/foobar`, and a trailing `/` is ignored.

use std::net::Ipv4Addr;

/// `pathType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PathType {
    /// Exact match.
    Exact,
    /// Element-wise prefix.
    Prefix,
    /// Implementation specific (ALB: `*` and `?` wildcards).
    ImplementationSpecific,
}

/// How an L7 hop picks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Matching {
    /// The ALB's ordered listener rules: the first match wins.
    Alb,
    /// The Kubernetes Ingress rules, as an in-cluster controller applies them.
    Kubernetes,
}

/// A listener rule with its target group's targets (nodeIP:nodePort in instance mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlbRule {
    /// Host condition.
    pub host: Option<String>,
    /// Path condition.
    pub path: String,
    /// Its type.
    pub path_type: PathType,
    /// `NS/NAME:PORT` of the target group's Service.
    pub target_group: String,
    /// Targets.
    pub targets: Vec<(Ipv4Addr, u16)>,
}

/// An answer an HTTP intermediary gave by itself instead of relaying a backend's: an ALB's
/// or ingress controller's error page, or kube-proxy's health server saying the node has
/// no local endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnAnswer {
    /// The HTTP status it answered.
    pub status: u16,
    /// A stable reason code: `http_no_route`, `http_no_healthy_backend`, `http_bad_gateway`,
    /// `http_bad_request` or `http_no_local_endpoints`.
    pub reason: &'static str,
    /// What failed, naming the rule or the request.
    pub text: String,
}

impl Matching {
    /// What runs this matching, as a trace names it.
    pub fn what(self) -> &'static str {
        match self {
            Matching::Alb => "the ALB",
            Matching::Kubernetes => "the ingress controller",
        }
    }
}

/// A rule as a reason names it: `Host shop.example.com path / (Prefix) -> NS/NAME:PORT`.
pub fn describe_rule(r: &AlbRule) -> String {
    let host = r.host.as_deref().map(|h| format!("Host {h} ")).unwrap_or_default();
    format!("{host}path {} ({:?}) -> {}", r.path, r.path_type, r.target_group)
}

/// Why no rule matched a request for `host` and `path`: the rules there are.
pub fn no_rule_text(
    matching: Matching,
    rules: &[AlbRule],
    host: Option<&str>,
    path: &str,
) -> String {
    let listed: Vec<String> = rules.iter().map(describe_rule).collect();
    format!(
        "{} has no rule for Host {} path {path} and no default backend (rules: {})",
        matching.what(),
        host.unwrap_or("(none)"),
        if listed.is_empty() { "none".to_string() } else { listed.join(", ") }
    )
}

/// Orders rules as the AWS Load Balancer Controller does (stable within a class).
pub fn order_rules(rules: &mut [AlbRule]) {
    rules.sort_by_key(|r| match r.path_type {
        PathType::Exact => (0, 0),
        PathType::Prefix => (1, usize::MAX - r.path.trim_end_matches('/').len()),
        PathType::ImplementationSpecific => (2, 0),
    });
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    let q: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    q.len() >= p.len() && p.iter().zip(&q).all(|(a, b)| a == b)
}

fn wildcard(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    // Iterative glob match with '*' and '?'.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The first rule that matches `host` and `path`.
pub fn route<'a>(rules: &'a [AlbRule], host: Option<&str>, path: &str) -> Option<&'a AlbRule> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let host = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    rules.iter().find(|r| {
        let host_ok = r.host.as_ref().is_none_or(|want| {
            host.as_deref().is_some_and(|h| wildcard(&want.to_ascii_lowercase(), h))
        });
        let path_ok = match r.path_type {
            PathType::Exact => r.path == path,
            PathType::Prefix => prefix_matches(&r.path, path),
            PathType::ImplementationSpecific => wildcard(&r.path, path),
        };
        host_ok && path_ok
    })
}

/// The rule an in-cluster controller picks ([`Matching::Kubernetes`]), `None` for the
/// default backend.
pub fn route_kubernetes<'a>(
    rules: &'a [AlbRule],
    host: Option<&str>,
    path: &str,
) -> Option<&'a AlbRule> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let host = host.map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    // Which host group serves the request: exact, then wildcard, then host-less rules.
    let class = |r: &AlbRule| -> Option<u8> {
        match (&r.host, &host) {
            (None, _) => Some(2),
            (Some(want), Some(h)) => {
                let want = want.to_ascii_lowercase();
                if let Some(suffix) = want.strip_prefix("*.") {
                    h.strip_suffix(suffix)
                        .and_then(|l| l.strip_suffix('.'))
                        .filter(|label| !label.is_empty() && !label.contains('.'))
                        .map(|_| 1)
                } else {
                    (want == *h).then_some(0)
                }
            }
            (Some(_), None) => None,
        }
    };
    let group = rules.iter().filter_map(class).min()?;
    let mut best: Option<(&AlbRule, usize, bool)> = None;
    for r in rules.iter().filter(|r| class(r) == Some(group)) {
        let (ok, len) = match r.path_type {
            PathType::Exact => (r.path == path, r.path.len()),
            // ingress-nginx serves ImplementationSpecific as a Prefix location.
            PathType::Prefix | PathType::ImplementationSpecific => {
                (prefix_matches(&r.path, path), r.path.trim_end_matches('/').len())
            }
        };
        let exact = r.path_type == PathType::Exact;
        let better = match best {
            None => true,
            Some((_, l, e)) => len > l || (len == l && exact && !e),
        };
        if ok && better {
            best = Some((r, len, exact));
        }
    }
    best.map(|(r, _, _)| r)
}

#[doc(hidden)]
/// An ingress-nginx generated response (`400`, `404`, `502`, `503`): nginx's own page.
pub fn nginx_status_response(code: u16, reason: &str) -> Vec<u8> {
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    format!("HTTP/1.1 {code} {reason}\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

#[doc(hidden)]
/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Request target (path).
    pub path: String,
    /// `Host:`.
    pub host: Option<String>,
    /// Header block length in bytes.
    pub head_len: usize,
    /// Headers, in order (values as sent: HTTP allows bytes that are not UTF-8).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Most request headers the ALB accepts (its documented limit); more get a 400.
pub const MAX_HEADERS: usize = 100;

#[doc(hidden)]
/// The result of reading a request from a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A complete request head.
    Complete(Request),
    /// Not HTTP/1.x: answer 400.
    Malformed(String),
}

#[doc(hidden)]
/// Parses an HTTP/1.x request head.
pub fn parse_request(buf: &[u8]) -> Parsed {
    // Room for the headers the ALB adds when forwarding, so its own output parses too.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > 64 * 1024 {
                Parsed::Malformed("request head larger than 64 KiB".into())
            } else {
                Parsed::Partial
            }
        }
        Ok(httparse::Status::Complete(_)) if req.headers.len() > MAX_HEADERS => Parsed::Malformed(
            format!("{} request headers, more than the {MAX_HEADERS} allowed", req.headers.len()),
        ),
        Ok(httparse::Status::Complete(n)) => {
            let hs: Vec<(String, Vec<u8>)> =
                req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
            let host = hs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            Parsed::Complete(Request {
                method: req.method.unwrap_or("GET").to_string(),
                path: req.path.unwrap_or("/").to_string(),
                host,
                head_len: n,
                headers: hs,
            })
        }
        Err(e) => Parsed::Malformed(e.to_string()),
    }
}

#[doc(hidden)]
/// The request as the ALB sends it to a target: `X-Forwarded-For/-Proto/-Port` added,
/// `Connection: close`.
pub fn forwarded(req: &Request, client: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut s = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
    let mut xff: Option<Vec<u8>> = None;
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(v.clone());
            continue;
        }
        if k.eq_ignore_ascii_case("connection")
            || k.eq_ignore_ascii_case("x-forwarded-proto")
            || k.eq_ignore_ascii_case("x-forwarded-port")
        {
            continue;
        }
        s.extend_from_slice(k.as_bytes());
        s.extend_from_slice(b": ");
        s.extend_from_slice(v);
        s.extend_from_slice(b"\r\n");
    }
    s.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prev) = xff {
        s.extend_from_slice(&prev);
        s.extend_from_slice(b", ");
    }
    s.extend_from_slice(format!("{client}\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: {port}\r\nConnection: close\r\n\r\n").as_bytes());
    s
}

#[doc(hidden)]
/// An ALB-generated response (`400`, `404`, `502`).
pub fn status_response(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    format!("HTTP/1.1 {code} {reason}\r\nServer: awselb/2.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: Option<&str>, path: &str, t: PathType, tg: &str) -> AlbRule {
        AlbRule {
            host: host.map(str::to_string),
            path: path.into(),
            path_type: t,
            target_group: tg.into(),
            targets: vec![],
        }
    }

    #[test]
    fn lbc_order_and_element_wise_prefix() {
        let mut rules = vec![
            rule(None, "/api", PathType::Prefix, "api"),
            rule(Some("shop.example.com"), "/", PathType::Prefix, "web"),
            rule(None, "/api/v1", PathType::Prefix, "v1"),
            rule(None, "/health", PathType::Exact, "health"),
            rule(None, "/img/*.png", PathType::ImplementationSpecific, "img"),
        ];
        order_rules(&mut rules);
        let order: Vec<&str> = rules.iter().map(|r| r.target_group.as_str()).collect();
        assert_eq!(order, vec!["health", "v1", "api", "web", "img"]);
        let tg = |h: Option<&str>, p: &str| route(&rules, h, p).map(|r| r.target_group.as_str());
        assert_eq!(tg(None, "/api/v1/users"), Some("v1"));
        assert_eq!(tg(None, "/api"), Some("api"));
        assert_eq!(tg(None, "/apix"), None, "element-wise: /api does not match /apix");
        assert_eq!(tg(Some("SHOP.example.com:80"), "/apix"), Some("web"));
        assert_eq!(tg(None, "/health"), Some("health"));
        assert_eq!(tg(None, "/health/x"), None);
        assert_eq!(tg(None, "/img/a/b.png"), Some("img"));
    }

    #[test]
    fn kubernetes_matching_prefers_host_then_longest_path_then_exact() {
        let rules = vec![
            rule(None, "/", PathType::Prefix, "catch-all"),
            rule(None, "/api", PathType::Prefix, "api"),
            rule(None, "/api/v1", PathType::Prefix, "v1"),
            rule(None, "/api/v1", PathType::Exact, "v1-exact"),
            rule(Some("shop.example.com"), "/cart", PathType::Prefix, "cart"),
            rule(Some("*.example.com"), "/", PathType::Prefix, "wild"),
        ];
        let tg = |h: Option<&str>, p: &str| {
            route_kubernetes(&rules, h, p).map(|r| r.target_group.as_str())
        };
        // Manifest order does not matter: the longest match wins, Exact on a tie.
        assert_eq!(tg(None, "/api/v1"), Some("v1-exact"));
        assert_eq!(tg(None, "/api/v1/users"), Some("v1"));
        assert_eq!(tg(None, "/api/x?q=1"), Some("api"));
        assert_eq!(tg(None, "/apix"), Some("catch-all"), "element-wise prefix");
        // An exact host shadows the host-less rules; a miss there is the default backend.
        assert_eq!(tg(Some("SHOP.example.com:8080"), "/cart/1"), Some("cart"));
        assert_eq!(tg(Some("shop.example.com"), "/api"), None);
        // The wildcard covers exactly one label.
        assert_eq!(tg(Some("a.example.com"), "/x"), Some("wild"));
        assert_eq!(tg(Some("a.b.example.com"), "/api"), Some("api"));
        assert_eq!(tg(Some("example.com"), "/"), Some("catch-all"));
        let page = String::from_utf8(nginx_status_response(404, "Not Found")).unwrap();
        assert!(page.starts_with("HTTP/1.1 404 Not Found\r\nServer: nginx\r\n"));
        assert!(page.ends_with("<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"));
    }

    #[test]
    fn malformed_requests_are_reported() {
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
        assert!(matches!(parse_request(b"\x00\x01 garbage\r\n\r\n"), Parsed::Malformed(_)));
        assert!(
            matches!(parse_request(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), Parsed::Complete(r) if r.path == "/a" && r.host.as_deref() == Some("x"))
        );
    }

    #[test]
    fn fuzz_regression_many_headers_still_forward_as_valid_http() {
        let data = include_bytes!("../../tests/regressions/http-many-headers.bin");
        let Parsed::Complete(r) = parse_request(data) else {
            panic!("the fuzz input is a complete request")
        };
        assert!(matches!(
            parse_request(&forwarded(&r, Ipv4Addr::new(1, 2, 3, 4), 80)),
            Parsed::Complete(_)
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(
            matches!(parse_request(req.as_bytes()), Parsed::Malformed(m) if m.contains("more than the 100 allowed"))
        );
    }

    #[test]
    fn forwarded_request_carries_x_forwarded_for() {
        let Parsed::Complete(r) =
            parse_request(b"GET /web HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive\r\n\r\n")
        else {
            panic!()
        };
        let f = String::from_utf8(forwarded(&r, Ipv4Addr::new(203, 0, 113, 10), 80)).unwrap();
        assert!(f.starts_with("GET /web HTTP/1.1\r\nHost: shop\r\n"));
        assert!(f.contains("X-Forwarded-For: 203.0.113.10\r\n"));
        assert!(f.contains("Connection: close\r\n") && !f.contains("keep-alive"));
    }
}
