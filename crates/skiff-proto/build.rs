//! Compiles `proto/*.proto` with the protoc binary shipped by `protoc-bin-vendored`, so no system
//! protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let dir = "../../proto";
    println!("cargo:rerun-if-changed={dir}");
    tonic_prost_build::configure().compile_protos(
        &[format!("{dir}/skiff.proto"), format!("{dir}/raft.proto"), format!("{dir}/member.proto")],
        &[dir.to_string()],
    )?;
    Ok(())
}
