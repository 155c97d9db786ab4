//! Generates the tonic/prost code for the coherence wire contract.
//!
//! protoc comes from the `protoc-bin-vendored` crate so that `cargo build` works on a bare
//! machine with no protobuf compiler installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; set_var is only unsafe in edition 2024.
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Every .proto file of the package: a file added to the directory is compiled (and fed to
    // reflection through the descriptor set) without touching this script.
    println!("cargo:rerun-if-changed=coherence/v1");
    let mut protos = Vec::new();
    for entry in std::fs::read_dir("coherence/v1")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    protos.sort();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("coherence_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from(".")])?;
    Ok(())
}
