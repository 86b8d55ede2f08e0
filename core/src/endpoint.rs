//! Where a flow starts or ends, as a user names it: a pod, a Service port, a node, a host
//! outside the cluster, an address, or an HTTP URL.
//!
//! | form | meaning |
//! |---|---|
//! | `pod/NS/NAME[:PORT]` | a pod; the port a number or a container port's name |
//! | `svc/NS/NAME:PORT` | a Service's ClusterIP; the port a number or the Service port's name |
//! | `node/NAME` | a node's root namespace |
//! | `host/NAME` | a host outside the cluster (`host/internet`) |
//! | `IP[:PORT]` | an address |
//! | `http://IP[:PORT]/path` | an HTTP request to an address |
//!
//! [`Endpoint`] parses ([`FromStr`]) and prints ([`Display`](fmt::Display))
//! these forms; a printed endpoint parses back to itself. The trace functions take anything
//! that converts into one ([`IntoEndpoint`]), so `"pod/default/pod1"` works as well as a
//! built `Endpoint`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::TraceError;

/// A port as a user names it: a number, or a name (a Service port's, a container port's).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A port name.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

impl From<u16> for PortRef {
    fn from(n: u16) -> PortRef {
        PortRef::Number(n)
    }
}

impl From<&str> for PortRef {
    fn from(s: &str) -> PortRef {
        s.parse().map_or_else(|_| PortRef::Name(s.to_string()), PortRef::Number)
    }
}

/// Where a flow starts or ends (see the module docs for the forms).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A pod, optionally with a port.
    Pod {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The port.
        port: Option<PortRef>,
    },
    /// A Service port.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The port.
        port: PortRef,
    },
    /// A node's root namespace.
    Node {
        /// Its name.
        name: String,
    },
    /// A host outside the cluster.
    Host {
        /// Its name.
        name: String,
    },
    /// An address, optionally with a port.
    Addr {
        /// The address.
        ip: IpAddr,
        /// The port.
        port: Option<u16>,
    },
    /// An HTTP request.
    Url {
        /// The host address.
        ip: IpAddr,
        /// The port, if written (80 otherwise).
        port: Option<u16>,
        /// The path as written (empty when none was).
        path: String,
    },
}

/// Which end of a flow an endpoint names (for what an error says to write instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Where a flow starts.
    Source,
    /// Where a flow goes.
    Destination,
}

impl Role {
    fn what(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }

    fn forms(self) -> &'static str {
        match self {
            Role::Source => "write pod/NAMESPACE/NAME, node/NAME, or the IP of a pod or node",
            Role::Destination => "write IP:PORT, pod/NS/NAME:PORT or svc/NS/NAME:PORT",
        }
    }
}

/// Why a text is not an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read '{text}': {hint}")]
pub struct EndpointError {
    /// The text.
    pub text: String,
    /// How to write it.
    pub hint: String,
}

impl Endpoint {
    /// Reads `text` as the `role` end of a flow; an error says what to write instead.
    pub fn parse_as(text: &str, role: Role) -> Result<Endpoint, TraceError> {
        Endpoint::read(text, role).map_err(|hint| TraceError::BadEndpoint {
            what: role.what(),
            text: text.into(),
            hint,
        })
    }

    fn read(text: &str, role: Role) -> Result<Endpoint, String> {
        if text.starts_with("https://") {
            return Err("TLS is not modelled: podnet sends plain HTTP; write http://…".into());
        }
        if let Some(rest) = text.strip_prefix("http://") {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let (h, p) = match host.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host, None),
            };
            let ip = h.parse().map_err(|_| "URLs take an IP host: http://10.96.0.10/path")?;
            let port = p.map(str::parse).transpose().map_err(|_| "bad port in URL")?;
            return Ok(Endpoint::Url { ip, port, path: path.into() });
        }
        let named = |kind: &str, rest: &str| -> Result<(String, String), String> {
            match rest.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok((ns.into(), name.into()))
                }
                _ => Err(format!("write it as {kind}/NAMESPACE/NAME")),
            }
        };
        if let Some(rest) = text.strip_prefix("pod/") {
            let (key, port) = match rest.rsplit_once(':') {
                Some((k, p)) => (k, Some(PortRef::from(p))),
                None => (rest, None),
            };
            let (namespace, name) = named("pod", key)?;
            return Ok(Endpoint::Pod { namespace, name, port });
        }
        if let Some(rest) = text.strip_prefix("svc/") {
            let (key, port) = rest.rsplit_once(':').ok_or_else(|| role.forms().to_string())?;
            let (namespace, name) = named("svc", key)?;
            return Ok(Endpoint::Service { namespace, name, port: PortRef::from(port) });
        }
        if let Some(name) = text.strip_prefix("node/") {
            return Ok(Endpoint::Node { name: name.into() });
        }
        if let Some(name) = text.strip_prefix("host/") {
            return Ok(Endpoint::Host { name: name.into() });
        }
        if let Ok(ip) = text.parse() {
            return Ok(Endpoint::Addr { ip, port: None });
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| role.forms().to_string())?;
        let ip = host.parse().map_err(|_| role.forms().to_string())?;
        let port = port.parse().map_err(|_| "the port must be a number from 1 to 65535")?;
        Ok(Endpoint::Addr { ip, port: Some(port) })
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        Endpoint::read(s, Role::Destination).map_err(|hint| EndpointError { text: s.into(), hint })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod { namespace, name, port } => {
                write!(f, "pod/{namespace}/{name}")?;
                match port {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
            Endpoint::Service { namespace, name, port } => {
                write!(f, "svc/{namespace}/{name}:{port}")
            }
            Endpoint::Node { name } => write!(f, "node/{name}"),
            Endpoint::Host { name } => write!(f, "host/{name}"),
            Endpoint::Addr { ip, port: None } => write!(f, "{ip}"),
            Endpoint::Addr { ip, port: Some(p) } => write!(f, "{ip}:{p}"),
            Endpoint::Url { ip, port, path } => {
                write!(f, "http://{ip}")?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                f.write_str(path)
            }
        }
    }
}

/// Anything the trace functions take as an endpoint: text in one of the forms, or an
/// [`Endpoint`].
pub trait IntoEndpoint {
    /// The endpoint, read as the `role` end of a flow, with its text (as given, or as the
    /// endpoint prints).
    fn into_endpoint(self, role: Role) -> Result<(Endpoint, String), TraceError>;
}

impl IntoEndpoint for Endpoint {
    fn into_endpoint(self, _: Role) -> Result<(Endpoint, String), TraceError> {
        let text = self.to_string();
        Ok((self, text))
    }
}

impl IntoEndpoint for &Endpoint {
    fn into_endpoint(self, _: Role) -> Result<(Endpoint, String), TraceError> {
        Ok((self.clone(), self.to_string()))
    }
}

impl IntoEndpoint for &str {
    fn into_endpoint(self, role: Role) -> Result<(Endpoint, String), TraceError> {
        Ok((Endpoint::parse_as(self, role)?, self.to_string()))
    }
}

impl IntoEndpoint for &String {
    fn into_endpoint(self, role: Role) -> Result<(Endpoint, String), TraceError> {
        self.as_str().into_endpoint(role)
    }
}

impl IntoEndpoint for String {
    fn into_endpoint(self, role: Role) -> Result<(Endpoint, String), TraceError> {
        Ok((Endpoint::parse_as(&self, role)?, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_prints_as_it_was_written() {
        for text in [
            "pod/default/pod1",
            "pod/default/pod2:8080",
            "pod/shop/frontend-7d9f8c6b5-abcde:http",
            "svc/default/web:http",
            "svc/kube-system/kube-dns:53",
            "node/node1",
            "host/internet",
            "10.244.1.2",
            "10.96.0.10:80",
            "http://203.0.113.200/api/orders",
            "http://203.0.113.200:8080/",
            "http://10.96.0.10",
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn bad_text_says_what_to_write() {
        let hint = |t: &str, r: Role| match Endpoint::parse_as(t, r) {
            Err(TraceError::BadEndpoint { hint, .. }) => hint,
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(hint("svc/default/web", Role::Destination), Role::Destination.forms());
        assert_eq!(hint("web", Role::Source), Role::Source.forms());
        assert_eq!(
            hint("10.0.0.1:http", Role::Destination),
            "the port must be a number from 1 to 65535"
        );
        assert_eq!(
            hint("http://web/x", Role::Destination),
            "URLs take an IP host: http://10.96.0.10/path"
        );
        assert_eq!(hint("pod/pod1", Role::Source), "write it as pod/NAMESPACE/NAME");
    }
}
