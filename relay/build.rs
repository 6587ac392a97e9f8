// openh264 builds without its assembly when nasm is missing, and nothing warns: the encoder is
// then about 3x slower. Fail the build instead, loudly (set SCOPECAST_ALLOW_NO_NASM=1 to accept).
fn main() {
    println!("cargo:rerun-if-env-changed=SCOPECAST_ALLOW_NO_NASM");
    let x86 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64" || a == "x86");
    if !x86 || std::env::var_os("SCOPECAST_ALLOW_NO_NASM").is_some() {
        return;
    }
    let has_nasm = std::process::Command::new("nasm").arg("-v").output().is_ok_and(|o| o.status.success());
    if !has_nasm {
        panic!("nasm is not installed: openh264 would build without its assembly and encode ~3x slower. Run scripts/setup-debian.sh (or apt-get install nasm cmake), or set SCOPECAST_ALLOW_NO_NASM=1.");
    }
}
