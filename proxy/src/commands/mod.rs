//! One file per `thoth` subcommand.

pub mod clients;
pub mod config;
pub mod events;
pub mod policy;
pub mod run;
pub mod status;
pub mod unavailable;
