//! One behaviour every Thoth command-line program shares (it sits here, in the crate they all
//! link, until the endpoint crate of issue 14 exists): `… | head` ends the program quietly.

/// `… | head`: a closed stdout ends the program quietly, as it ends a Unix filter (killed by
/// SIGPIPE, status 141 in a shell), instead of a panic in `println!`. SIGPIPE itself stays
/// ignored (Rust's default), so that a write to a closed socket — the controller closing a TLS
/// connection, the agent closing one over a user's cap; hyper writes with `writev`, which raises
/// SIGPIPE — is an error the command reports: only the panic `println!` raises on a closed stdout
/// is turned into that quiet end. Call it first thing in `main`.
pub fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    {
        let default = std::panic::take_hook();
        let epipe = format!("(os error {})", rustix::io::Errno::PIPE.raw_os_error());
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if msg.starts_with("failed printing to stdout") && msg.contains(&epipe) {
                // The default action of SIGPIPE (restored, then the signal raised on this
                // process); the exit is the fallback should it not end the process.
                let _ =
                    signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
                std::process::exit(141);
            }
            default(info);
        }));
    }
}
