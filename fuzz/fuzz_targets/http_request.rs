//! The L7 hop's request handling: parse, route, rewrite.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podnet::host::l7::{
    AlbRule, Parsed, PathType, forwarded, parse_request, route, route_kubernetes,
};

fuzz_target!(|data: &[u8]| {
    let rules = vec![
        AlbRule {
            host: None,
            path: "/web".into(),
            path_type: PathType::Prefix,
            target_group: "web".into(),
            targets: vec![],
        },
        AlbRule {
            host: Some("*.example.com".into()),
            path: "/a*b?".into(),
            path_type: PathType::ImplementationSpecific,
            target_group: "x".into(),
            targets: vec![],
        },
        AlbRule {
            host: None,
            path: "/".into(),
            path_type: PathType::Exact,
            target_group: "root".into(),
            targets: vec![],
        },
    ];
    if let Parsed::Complete(req) = parse_request(data) {
        assert!(req.head_len <= data.len());
        let _ = route(&rules, req.host.as_deref(), &req.path);
        let _ = route_kubernetes(&rules, req.host.as_deref(), &req.path);
        let out = forwarded(&req, std::net::Ipv4Addr::new(203, 0, 113, 10), 80);
        // Valid HTTP/1.1 (the ALB's own inbound header limit does not apply to its output).
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(
            matches!(parsed.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
            "the forwarded request is valid HTTP"
        );
    }
});
