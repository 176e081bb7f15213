//! `thoth`: see `thoth --help`.

fn main() {
    std::process::exit(thoth_agent::cli::main());
}
