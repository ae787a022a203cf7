//! Compiles the gRPC API (`proto/spreadagg/gateway/v1/gateway.proto`) with a pure-Rust
//! protobuf compiler (protox, no system `protoc`), generating the tonic service over the
//! market messages `spreadagg-model` already defines, and keeps the encoded descriptor set for
//! server reflection.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("spreadagg/gateway/v1/gateway.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("spreadagg/v1/market.proto").display()
    );
    let descriptors = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("gateway_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".spreadagg.v1", "::spreadagg_model::wire")
        .compile_fds(descriptors)?;
    Ok(())
}
