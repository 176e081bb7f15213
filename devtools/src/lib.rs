//! Thoth dev tools, kept apart from the production controller: the narrated whole-fleet
//! [`quickstart`] (the `thoth-quickstart` binary) and the `thoth-loadgen` load generator. Both
//! run the workspace's real binaries (`thoth-controller`, `thothctl`, `thoth-agent`, ...) from
//! the directory they are in.

#![forbid(unsafe_code)]

pub mod quickstart;
