//! Compiles `proto/dnstap.proto` with protox (pure Rust), so a fresh machine
//! builds without protoc. DNS payloads become zero-copy `Bytes`.
use anyhow::Context;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto/dnstap.proto");
    let fds = protox::compile(["proto/dnstap.proto"], ["proto"]).context("compiling proto/dnstap.proto")?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds).context("generating Rust from dnstap.proto")?;
    Ok(())
}
