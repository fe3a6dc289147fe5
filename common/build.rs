//! Compiles `proto/` once for every crate, with a vendored `protoc` so a
//! fresh machine needs nothing but cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let proto = "../proto/ridgeline/v1/ridgeline.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ridgeline_descriptor.bin"))
        .compile_protos(&[proto], &["../proto"])?;
    Ok(())
}
