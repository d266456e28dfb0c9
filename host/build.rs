//! Builds the default policy plugin (`plugins/default-policy`) as a
//! wasm32-wasip2 component and hands its path to the host as
//! `DEFAULT_POLICY_WASM`, so a plain `cargo build` yields a binary that runs
//! the real default plugin with no further step.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let plugins = root.join("plugins");
    for p in ["Cargo.toml", "Cargo.lock", "default-policy/Cargo.toml", "default-policy/src"] {
        println!("cargo:rerun-if-changed={}", plugins.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("plugins-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "-p", "default-policy"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("run cargo to build plugins/default-policy");
    if !status.success() {
        panic!(
            "building plugins/default-policy for wasm32-wasip2 failed; \
             is the target installed? (rustup target add wasm32-wasip2)"
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/release/default_policy.wasm");
    println!("cargo:rustc-env=DEFAULT_POLICY_WASM={}", wasm.display());
}
