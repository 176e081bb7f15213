//! Thoth on the endpoint. Today: the `thoth` command — the governance proxy (`thoth run`) and
//! the admin helpers (`thoth policy …`, `thoth events verify`).

pub mod cli;
pub mod commands;
pub mod daemon;
pub mod proxy;
pub mod watch;
