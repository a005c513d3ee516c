//! The fuzz targets' checks live in `checks.rs` so that `crates/sip/tests/fuzz_regressions.rs`
//! can run the exact same calls on a minimized input (it includes the file with `#[path]`).

use std::sync::LazyLock;

pub mod checks;

/// `SIP_FUZZ_STRICT=1` makes the targets fail on the known bugs too (see `checks.rs`).
pub fn strict() -> bool {
    static STRICT: LazyLock<bool> = LazyLock::new(|| std::env::var_os("SIP_FUZZ_STRICT").is_some_and(|v| v != "0"));
    *STRICT
}
