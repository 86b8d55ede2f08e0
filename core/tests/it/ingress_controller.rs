//! An in-cluster Ingress controller (ingress-nginx style) behind a LoadBalancer Service:
//! the Kubernetes Ingress matching rules, proxying to endpoints over its own connections.

use crate::common;

use std::collections::BTreeMap;

use podnet::cloud::{Ingress, IngressPath, IngressRule, PathType};
use podnet::cluster::Container;
use podnet::kube_proxy::{Service, ServicePort, ServiceType, TargetPort};
use podnet::netfilter::Proto;
use podnet::trace::{FlowProto, TraceOptions};
use podnet::{Cluster, Trace};

const LB: &str = "203.0.113.150:80";

fn path(p: &str, t: PathType, svc: &str) -> IngressPath {
    IngressPath { path: p.into(), path_type: t, service: svc.into(), port: "80".into() }
}

/// The reference cluster plus `ingress-nginx/controller` on node3, its LoadBalancer
/// Service and cloud LB, and Ingress `default/shop-nginx` of class `nginx`.
fn cluster() -> Cluster {
    let mut c = Cluster::seed();
    let node3 = c.node_id("node3").unwrap();
    let labels = BTreeMap::from([("app".to_string(), "ingress-nginx".to_string())]);
    let ctl = Container {
        name: "controller".into(),
        ports: vec![(Proto::TCP, 80)],
        named_ports: vec![("http".into(), Proto::TCP, 80)],
    };
    c.add_pod("ingress-nginx", "controller", node3, None, labels.clone(), vec![ctl]).unwrap();
    let mut s = Service::cluster_ip("ingress-nginx", "controller", "10.96.0.30".parse().unwrap());
    s.kind = ServiceType::LoadBalancer;
    s.selector = Some(labels);
    s.ports = vec![ServicePort {
        name: "http".into(),
        protocol: Proto::TCP,
        port: 80,
        target_port: TargetPort::Name("http".into()),
        node_port: 0,
    }];
    c.add_service(s).unwrap();
    c.add_cloud_lb(
        "svc/ingress-nginx/controller",
        "203.0.113.150".parse().unwrap(),
        "192.168.0.150".parse().unwrap(),
    )
    .unwrap();
    c.add_ingress_controller("pod/ingress-nginx/controller", "nginx", 80).unwrap();
    c.add_ingress(Ingress {
        namespace: "default".into(),
        name: "shop-nginx".into(),
        class: Some("nginx".into()),
        rules: vec![
            IngressRule {
                host: None,
                paths: vec![
                    path("/web", PathType::Prefix, "web"),
                    path("/api", PathType::Prefix, "api"),
                    path("/api/v1/web", PathType::Exact, "web"),
                ],
            },
            IngressRule {
                host: Some("shop.example.com".into()),
                paths: vec![path("/", PathType::Prefix, "web")],
            },
        ],
        ..Ingress::default()
    })
    .unwrap();
    c
}

fn get(c: &mut Cluster, path: &str, host: Option<&str>) -> Trace {
    let opts = TraceOptions {
        proto: Some(FlowProto::Http),
        path: path.into(),
        headers: host.map(|h| vec![("Host".to_string(), h.to_string())]).unwrap_or_default(),
        ..TraceOptions::default()
    };
    c.trace("host/internet", LB, &opts).unwrap()
}

#[test]
fn the_controller_routes_by_the_kubernetes_rules_to_endpoints() {
    let mut c = cluster();
    let controller_ip = c.pods()[c.pod_id("pod/ingress-nginx/controller").unwrap().idx()].ip;
    let t = get(&mut c, "/web/index.html", None);
    assert_eq!(t.http_status, Some(200), "{}", t.render(true));
    let web = ["pod/default/pod1", "pod/default/pod3"];
    assert!(web.contains(&t.delivered_to.as_deref().unwrap()), "{:?}", t.delivered_to);
    // The controller connects to the pod itself (ingress-nginx's upstreams are endpoints).
    assert!(
        t.server_saw.as_deref().unwrap().starts_with(&format!("{controller_ip}:")),
        "{:?}",
        t.server_saw
    );
    assert!(t.hops.iter().any(|h| h.netns == "pod/ingress-nginx/controller"));
    let t = get(&mut c, "/api/orders", None);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"), "{}", t.render(true));
    // The longest match wins whatever the manifest order: Exact /api/v1/web beats /api.
    let t = get(&mut c, "/api/v1/web", None);
    assert!(web.contains(&t.delivered_to.as_deref().unwrap()), "{:?}", t.delivered_to);
    // A host rule shadows the host-less ones: /api on shop.example.com is web's.
    let t = get(&mut c, "/api/orders", Some("shop.example.com"));
    assert!(web.contains(&t.delivered_to.as_deref().unwrap()), "{}", t.render(true));
    // Element-wise prefixes: /webx matches nothing, and nginx answers 404 itself.
    let t = get(&mut c, "/webx", None);
    assert_eq!(t.http_status, Some(404), "{}", t.render(true));
    assert!(t.completed);
    assert_eq!(t.reason.as_deref(), Some("http_no_route"));
    assert_eq!(t.delivered_to, None, "nginx's own 404 reached no backend");
    assert_eq!(t.http_from.as_deref(), Some("pod/ingress-nginx/controller"));
}

#[test]
fn endpoints_follow_the_cluster_and_a_backend_without_any_answers_503() {
    let mut c = cluster();
    c.delete_pod("pod/default/pod4").unwrap();
    let t = get(&mut c, "/api/orders", None);
    assert_eq!(t.http_status, Some(503), "{}", t.render(true));
    assert_eq!(t.reason.as_deref(), Some("http_no_healthy_backend"));
    assert_eq!(t.disposition, podnet::Disposition::Rejected);
    let why = t.reason_text.as_deref().unwrap();
    assert!(
        why.contains(
            "matched rule path /api (Prefix) -> default/api:80, which has no healthy target"
        ),
        "{why}"
    );
    let ctl = &c.ingress_controllers()[0];
    let api = ctl.rules.iter().find(|r| r.path == "/api").unwrap();
    assert!(api.targets.is_empty());
    let web = ctl.rules.iter().find(|r| r.path == "/web").unwrap();
    assert_eq!(web.targets.len(), 2, "pod1 and pod3 on 8080: {:?}", web.targets);
    assert!(web.targets.iter().all(|(_, p)| *p == 8080));
}

#[test]
fn default_backend_and_classes() {
    let mut c = cluster();
    // An Ingress of another class is not this controller's.
    c.add_ingress(Ingress {
        namespace: "default".into(),
        name: "other".into(),
        class: Some("alb".into()),
        rules: vec![IngressRule { host: None, paths: vec![path("/x", PathType::Prefix, "web")] }],
        ..Ingress::default()
    })
    .unwrap();
    assert_eq!(get(&mut c, "/x", None).http_status, Some(404));
    // One without a class goes to the (first, default) controller, with its default backend.
    c.add_ingress(Ingress {
        namespace: "default".into(),
        name: "fallback".into(),
        class: None,
        default_backend: Some(("api".into(), "http".into())),
        ..Ingress::default()
    })
    .unwrap();
    let t = get(&mut c, "/anything", None);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"), "{}", t.render(true));
    // Errors name the problem.
    let e = c.add_ingress_controller("pod/default/pod1", "other", 80).unwrap_err();
    assert!(e.to_string().contains("does not listen on TCP port 80"), "{e}");
    let e = c.add_ingress_controller("pod/ingress-nginx/controller", "nginx", 80).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[test]
fn malformed_requests_get_nginx_s_400() {
    let mut c = cluster();
    let opts = TraceOptions {
        proto: Some(FlowProto::Http),
        headers: vec![("Bad Header".into(), "x".into())],
        ..TraceOptions::default()
    };
    let t = c.trace("host/internet", LB, &opts).unwrap();
    assert_eq!(t.http_status, Some(400), "{}", t.render(true));
    assert_eq!(t.http_from.as_deref(), Some("pod/ingress-nginx/controller"));
    assert_eq!(t.reason.as_deref(), Some("http_bad_request"));
    assert_eq!(t.delivered_to, None);
}

#[test]
fn a_controller_and_its_ingresses_load_from_yaml() {
    let base = common::reference_yaml();
    let lbs = "loadBalancers: [{service: default/api, publicIP: 203.0.113.100, privateIP: 192.168.0.100}]";
    assert!(base.contains(lbs), "the fixture names the api LB");
    let yaml = base.replace(
        lbs,
        "loadBalancers: [{service: default/api, publicIP: 203.0.113.100, privateIP: 192.168.0.100}, {service: ingress-nginx/controller, publicIP: 203.0.113.150, privateIP: 192.168.0.150}]\ningressControllers: [{pod: ingress-nginx/controller, class: nginx}]",
    ) + r#"---
apiVersion: v1
kind: Pod
metadata: {name: controller, namespace: ingress-nginx, labels: {app: ingress-nginx}}
spec:
  nodeName: node3
  containers:
  - name: controller
    ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: controller, namespace: ingress-nginx}
spec:
  type: LoadBalancer
  selector: {app: ingress-nginx}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop-nginx, namespace: default}
spec:
  ingressClassName: nginx
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  rules:
  - http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: elsewhere, namespace: default}
spec:
  ingressClassName: traefik
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let (mut c, report) = Cluster::from_yaml(&yaml).unwrap();
    assert!(report.loaded.contains(&"Ingress/default/shop-nginx".to_string()), "{report:?}");
    assert!(
        report.skipped.iter().any(|s| s.starts_with("Ingress/default/elsewhere: recorded")),
        "{report:?}"
    );
    let t = get(&mut c, "/api/x", None);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"), "{}", t.render(true));
}

#[test]
fn ingresses_added_to_a_running_cluster_reach_their_controller() {
    let mut c = cluster();
    let report = c
        .add_yaml(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: late, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - {path: /late, pathType: Exact, backend: {service: {name: api, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: default}
spec:
  ingressClassName: traefik
  defaultBackend: {service: {name: web, port: {number: 80}}}
"#,
        )
        .unwrap();
    assert!(report.loaded.contains(&"Ingress/default/late".to_string()), "{report:?}");
    assert!(report.skipped.iter().any(|s| s.starts_with("Ingress/default/other: recorded")));
    let t = get(&mut c, "/late", None);
    assert_eq!(t.delivered_to.as_deref(), Some("pod/default/pod4"), "{}", t.render(true));
    assert_eq!(get(&mut c, "/late/x", None).http_status, Some(404), "Exact means exact");
}
