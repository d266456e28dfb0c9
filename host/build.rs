//! Builds the plugins workspace (`plugins/`) as wasm32-wasip2 components and
//! hands the default policy's path to the host as `DEFAULT_POLICY_WASM`, so a
//! plain `cargo build` yields a binary that runs the real default plugin with
//! no further step. `PLUGINS_WASM_DIR` names the directory of all of them
//! (the example plugins the tests upload).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let plugins = root.join("plugins");
    for p in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(p).display());
    }
    for entry in std::fs::read_dir(&plugins).expect("read plugins/").flatten() {
        let crate_dir = entry.path();
        if crate_dir.join("Cargo.toml").exists() {
            // The whole crate: its sources, manifest and any WIT of its own.
            println!("cargo:rerun-if-changed={}", crate_dir.display());
        }
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("plugins-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--workspace"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("run cargo to build plugins/");
    if !status.success() {
        panic!(
            "building plugins/ for wasm32-wasip2 failed; \
             is the target installed? (rustup target add wasm32-wasip2)"
        );
    }
    let dir = target_dir.join("wasm32-wasip2/release");
    println!("cargo:rustc-env=DEFAULT_POLICY_WASM={}", dir.join("default_policy.wasm").display());
    println!("cargo:rustc-env=PLUGINS_WASM_DIR={}", dir.display());
}
