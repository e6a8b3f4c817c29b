//! Link shim for non-Apple targets.
//!
//! `mlx-rs` 0.33 seeds `RandomState::new()` from `mach_approximate_time`, a
//! macOS-only function; on Linux every binary that reaches that code fails to
//! link with `undefined symbol: mach_approximate_time`. This definition provides
//! it. Only the value's role as a seed matters, so any monotonic-ish clock will
//! do; we return nanoseconds since the Unix epoch.
//!
//! Every Forge crate that uses MLX depends on this crate, so the symbol is
//! always present where `mlx-rs` is.

/// Stand-in for macOS's `mach_approximate_time`: nanoseconds since the Unix epoch.
#[cfg(not(target_vendor = "apple"))]
#[unsafe(no_mangle)]
pub(crate) extern "C" fn mach_approximate_time() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
