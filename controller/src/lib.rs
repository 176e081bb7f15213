//! The Thoth fleet controller: signed policy bundles over gRPC with mTLS, enrollment, the admin
//! API, and the storage behind them. The binaries are `thoth-controller`, `thothctl` and
//! `thoth-loadgen`.

pub mod admins;
pub mod client;
pub mod config;
pub mod controller;
pub mod datadir;
pub mod evidence;
pub mod grpc;
pub mod hub;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod pki;
pub mod quickstart;
pub mod server;
pub mod service;
pub mod sinks;
pub mod store;

pub use controller::Controller;
pub use datadir::DataDir;
pub use server::{Running, start};
