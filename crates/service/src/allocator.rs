//! The allocator of the binaries (node and router): mimalloc, which they set as their global
//! allocator, and how long it keeps freed memory before giving it back to the system.
//!
//! A server allocates per request (bodies, headers, JSON) across threads; mimalloc is markedly
//! cheaper than glibc's malloc for that pattern (the router spent 15 % of its CPU in glibc's
//! malloc per streamed job).

use std::ffi::{c_int, c_long};

// The C library the functions below are in.
use mimalloc as _;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same index in v2 and v3; the test
/// below checks it against mimalloc's own reading of `MIMALLOC_PURGE_DELAY`).
const PURGE_DELAY: c_int = 15;
/// Milliseconds before freed memory goes back to the system. mimalloc v3 waits 1 s: a node
/// under hostile load frees 16 MiB bodies and 32 MiB container answers several times a
/// second, and a second of them stayed resident (`make soak`: node peak 178 MB against 116 MB
/// at 10 ms with bodies and flood, 216 MB against 144 MB with every case; docs/benchmarks.md).
/// 10 ms is mimalloc v2's default.
pub const PURGE_DELAY_MS: c_long = 10;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` sets it: an operator's choice stands.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's documented option setter, called before any other thread runs.
        unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// The purge delay mimalloc uses now.
pub fn purge_delay() -> c_long {
    // SAFETY: mimalloc's documented option getter.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    /// Set by the test to run itself again as a child with `MIMALLOC_PURGE_DELAY` set.
    const CHILD: &str = "INFERNET_TEST_PURGE_DELAY_CHILD";

    #[test]
    fn the_purge_delay_is_mimallocs_and_an_operator_setting_stands() {
        if std::env::var_os(CHILD).is_some() {
            super::tune();
            println!("purge_delay={}", super::purge_delay());
            return;
        }
        super::tune();
        assert_eq!(super::purge_delay(), super::PURGE_DELAY_MS);
        // mimalloc reads MIMALLOC_PURGE_DELAY into the option this index names, and tune() leaves
        // it alone.
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                "allocator::tests::the_purge_delay_is_mimallocs_and_an_operator_setting_stands",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("purge_delay=4321"), "{stdout}");
    }
}
