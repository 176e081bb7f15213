//! The Thoth fleet controller: signed policy bundles over gRPC with mTLS, enrollment, the admin
//! API, and the storage behind them. The binary is `thoth-controller`; the admin CLI `thothctl`
//! (crate thothctl, on thoth-client) and the dev tools `thoth-quickstart` and `thoth-loadgen`
//! (crate thoth-devtools) are apart from it.

#![forbid(unsafe_code)]

pub mod admins;
pub mod approval_hub;
pub mod config;
pub mod controller;
pub mod datadir;
pub mod grpc;
pub mod hub;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod service;
pub mod sinks;
pub mod store;

pub use controller::Controller;
pub use datadir::DataDir;
pub use server::{Running, start};
