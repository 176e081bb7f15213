//! Generates the fleet's gRPC code from `proto/fleet.proto` when the `grpc` feature is on, with the
//! vendored `protoc` (no system protoc needed).

fn main() {
    println!("cargo:rerun-if-changed=proto/fleet.proto");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return;
    }
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .bytes(".thoth.fleet.v1.PolicyUpdate.bundle")
        .bytes(".thoth.fleet.v1.PolicyDocument.bundle")
        .bytes(".thoth.fleet.v1.LocalPolicy.bundle")
        .compile_with_config(config, &["proto/fleet.proto"], &["proto"])
        .expect("compile proto/fleet.proto");
}
