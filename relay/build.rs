//! Two jobs before the relay compiles:
//! 1. Refuse to build openh264 without nasm (it would silently encode 1.5-3x slower), or to link
//!    an openh264 that an earlier build compiled before nasm was installed.
//! 2. Build the player (`client/`, wasm32) and generate its JS bindings into `OUT_DIR/player`,
//!    which the relay embeds: the README's single `cargo run` serves a working player on a
//!    fresh machine, with no wasm-bindgen-cli or trunk to install. The wasm and its JS are
//!    gzipped here too, with zopfli, once.

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    check_nasm();
    build_player();
}

fn check_nasm() {
    println!("cargo:rerun-if-env-changed=SCOPECAST_ALLOW_NO_NASM");
    let x86 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64" || a == "x86");
    if !x86 || std::env::var_os("SCOPECAST_ALLOW_NO_NASM").is_some() {
        return;
    }
    let has_nasm = Command::new("nasm").arg("-v").output().is_ok_and(|o| o.status.success());
    if !has_nasm {
        panic!("nasm is not installed: openh264 would build without its assembly and encode 1.5-3x slower. Run scripts/setup-debian.sh (or apt-get install nasm cmake), or set SCOPECAST_ALLOW_NO_NASM=1.");
    }
    check_openh264_was_assembled();
}

/// The trap nasm's presence today does not catch: openh264 compiled by an earlier build, before
/// nasm was installed (a first `cargo build` on a fresh machine), is reused by cargo for good,
/// without its assembly. Its build script said so in its saved output; refuse to link it.
fn check_openh264_was_assembled() {
    // OUT_DIR is <target>/<profile>/build/scopecast-<hash>/out: openh264's runs are siblings.
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let Some(build_dir) = out.parent().and_then(Path::parent) else { return };
    let profile = match build_dir.parent().and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let Ok(entries) = std::fs::read_dir(build_dir) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("openh264-sys2-") {
            continue;
        }
        let output = entry.path().join("output");
        // Only a file that exists: cargo reruns a build script for good (and so rebuilds the
        // relay on every invocation) when it watches a missing one, such as the `output` of
        // openh264's build-script *compile* directory, which has none.
        if !output.is_file() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", output.display());
        if std::fs::read_to_string(&output).is_ok_and(|o| o.contains("not using any assembly")) {
            panic!("openh264 was compiled before nasm was installed and would encode without its assembly: run `cargo clean -p openh264-sys2 --profile {profile}` and build again (scripts/setup-debian.sh does it for you).");
        }
    }
}

/// Environment cargo sets for this build script that must not leak into the nested build
/// (flags for the host target, our package's identity, clippy's wrapper).
fn is_build_script_env(key: &str) -> bool {
    const PREFIXES: [&str; 6] = ["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "CARGO_MANIFEST_", "DEP_", "CARGO_BIN_"];
    const EXACT: [&str; 17] = [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "RUSTC_LINKER",
        "RUSTC_WORKSPACE_WRAPPER",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || EXACT.contains(&key)
}

fn build_player() {
    let relay_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = relay_dir.parent().expect("workspace root").to_path_buf();
    for watched in ["client/src", "client/Cargo.toml", "shared/src", "shared/Cargo.toml", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("player");
    // One wasm build directory for every profile of the relay: the player is built once.
    let target_dir = root.join("target").join("player");

    check_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--package", "scopecast-client", "--lib", "--target", WASM_TARGET, "--profile", "player", "--target-dir"])
        .arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_build_script_env) {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the player: {e}"));
    if !status.success() {
        panic!("building the player (client/, {WASM_TARGET}) failed; its errors are above");
    }

    let wasm = target_dir.join(WASM_TARGET).join("player").join("scopecast_client.wasm");
    bindgen(&wasm, &out_dir);
}

/// The wasm32 standard library must be installed (`rustup target add wasm32-unknown-unknown`).
fn check_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(rustc).args(["--print", "target-libdir", "--target", WASM_TARGET]).output().ok().filter(|o| o.status.success());
    let installed = libdir
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|d| d.is_dir() && std::fs::read_dir(&d).is_ok_and(|mut e| e.next().is_some()));
    if !installed {
        panic!("the player is built for {WASM_TARGET}, which is not installed: run `rustup target add {WASM_TARGET}` (scripts/setup-rust.sh does)");
    }
}

fn bindgen(wasm: &Path, out_dir: &Path) {
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir_all(out_dir).expect("create OUT_DIR/player");
    let mut b = wasm_bindgen_cli_support::Bindgen::new();
    b.input_path(wasm).typescript(true).omit_default_module_path(false).remove_name_section(true).remove_producers_section(true);
    b.web(true).expect("web target");
    b.generate(out_dir).unwrap_or_else(|e| panic!("wasm-bindgen on {}: {e:#}", wasm.display()));
    // Served as is to every browser that accepts gzip (relay/src/http/assets.rs).
    for name in ["scopecast_client_bg.wasm", "scopecast_client.js"] {
        let path = out_dir.join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut gz = Vec::with_capacity(data.len() / 2);
        zopfli::compress(zopfli::Options::default(), zopfli::Format::Gzip, &data[..], &mut gz).expect("zopfli into memory");
        std::fs::write(out_dir.join(format!("{name}.gz")), gz).expect("write the gzipped player");
    }
}
