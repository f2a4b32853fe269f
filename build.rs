//! Generates the gRPC code and the descriptor set served by reflection.
//! protox compiles the .proto files in pure Rust, so no `protoc` is needed.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/wavalidation/v1/wavalidation.proto";
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set, so reflection gets it from here.
    std::fs::write(
        out_dir.join("wavalidation_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // A malformed request is INVALID_ARGUMENT, not prost's INTERNAL (src/grpc/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
