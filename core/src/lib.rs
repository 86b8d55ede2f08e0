//! podnet
