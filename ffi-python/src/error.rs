//! Core errors to Python exceptions: one class per family, all under `podnet.Error`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use podnet::{ClusterError, TraceError};

create_exception!(_podnet, Error, PyException, "Base class of every podnet error.");
create_exception!(
    _podnet,
    NotFound,
    Error,
    "A pod, node, Service, port or sysctl that does not exist."
);
create_exception!(
    _podnet,
    InvalidInput,
    Error,
    "An endpoint, address or argument podnet cannot read."
);
create_exception!(_podnet, AddressInUse, Error, "A port or address is already taken.");
create_exception!(_podnet, AddressExhausted, Error, "A pool or range has no free address left.");
create_exception!(_podnet, Livelock, Error, "A flow never settled (a forwarding loop).");
create_exception!(
    _podnet,
    ParseError,
    Error,
    "Input that could not be read; `.line` and `.column` say where (None when unknown)."
);

/// Maps a load error to `ParseError`, or to the cluster's class for a refused object
/// (`AddressInUse`, `AddressExhausted`, ...), each with `.line`, `.column`, `.file` and
/// `.document`; or to `OSError`.
pub fn load(py: Python<'_>, e: podnet::k8s::LoadError) -> PyErr {
    use podnet::k8s::LoadError;
    match &e {
        LoadError::Io { .. } => pyo3::exceptions::PyOSError::new_err(e.to_string()),
        LoadError::Parse { place, .. }
        | LoadError::Object { place, .. }
        | LoadError::Refused { place, .. } => {
            let err = match &e {
                LoadError::Refused { error, .. } => {
                    let class = cluster((**error).clone());
                    PyErr::from_type(class.get_type(py), e.to_string())
                }
                _ => ParseError::new_err(e.to_string()),
            };
            let v = err.value(py);
            let _ = v.setattr("line", place.line);
            let _ = v.setattr("column", place.column);
            let _ = v.setattr("field", place.field.clone());
            let _ = v.setattr("file", place.file.clone());
            let _ = v.setattr("document", place.doc);
            err
        }
    }
}

/// Maps a cluster error to its exception class.
pub fn cluster(e: ClusterError) -> PyErr {
    let msg = e.to_string();
    match e {
        ClusterError::NotFound { .. } => NotFound::new_err(msg),
        ClusterError::AddrInUse { .. }
        | ClusterError::Duplicate { .. }
        | ClusterError::AddressTaken { .. } => AddressInUse::new_err(msg),
        ClusterError::Ipam(podnet::ipam::IpamError::Exhausted { .. }) => {
            AddressExhausted::new_err(msg)
        }
        ClusterError::Ipam(podnet::ipam::IpamError::Conflict { .. }) => AddressInUse::new_err(msg),
        ClusterError::FailedToAssign { .. } | ClusterError::TooManyPods { .. } => {
            AddressExhausted::new_err(msg)
        }
        _ => InvalidInput::new_err(msg),
    }
}

/// Maps a trace error to its exception class.
pub fn trace(e: TraceError) -> PyErr {
    match e {
        TraceError::Cluster(c) => cluster(c),
        TraceError::BadEndpoint { .. } | TraceError::ProtocolMismatch { .. } => {
            InvalidInput::new_err(e.to_string())
        }
        TraceError::Livelock(_) => Livelock::new_err(e.to_string()),
        TraceError::NoEphemeralPort { .. } => AddressExhausted::new_err(e.to_string()),
    }
}

/// Maps a name outside a closed set (a proxy mode, a CNI, a table) to `InvalidInput`.
pub fn unknown(e: podnet::error::UnknownValue) -> PyErr {
    InvalidInput::new_err(e.to_string())
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("AddressInUse", py.get_type::<AddressInUse>())?;
    m.add("AddressExhausted", py.get_type::<AddressExhausted>())?;
    m.add("Livelock", py.get_type::<Livelock>())?;
    m.add("ParseError", py.get_type::<ParseError>())?;
    Ok(())
}
