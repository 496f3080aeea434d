// Release link options of the `buildlogs` binary. `link/hot-symbols.txt` is made by
// scripts/order-symbols.sh, which says why and how.
use std::path::Path;

fn main() {
    let hot = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", hot.display());
    println!("cargo:rerun-if-env-changed=BUILDLOGS_PLAIN_LINK");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    // rust-lld, the default linker of this target, is the one that takes these flags.
    let lld_target = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    if !(release && lld_target) || std::env::var_os("BUILDLOGS_PLAIN_LINK").is_some() {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc >= 2.36): ld.so reads 11 KiB of relocations
    // at start instead of 574 KiB.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The functions a running worker executes, laid out together: the kernel maps text in
    // 64 KiB windows around each first touch, so scattered hot code costs RSS.
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        hot.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
