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
    let protos = [
        "coherence/v1/coherence.proto",
        "coherence/v1/servers.proto",
        "coherence/v1/jobs.proto",
        "coherence/v1/notifications.proto",
    ];
    // The directory too: a proto file added to it must regenerate the code.
    println!("cargo:rerun-if-changed=coherence/v1");
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("coherence_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
