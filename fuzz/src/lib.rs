//! The fuzz targets' checks live in `checks.rs` so that `crates/sip/tests/fuzz_regressions.rs`
//! can run the exact same calls on a minimized input (it includes the file with `#[path]`).

pub mod checks;
pub mod trunking_checks;
