//! `thoth`: see `thoth --help`.

fn main() {
    std::process::exit(thoth_proxy::cli::main());
}
