//! Compiles the subset of etcd's v3 API the benchmarks use, with the vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    tonic_prost_build::configure().build_server(false).compile_protos(&["proto/etcd.proto"], &["proto"])?;
    Ok(())
}
