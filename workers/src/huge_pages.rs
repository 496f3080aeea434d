//! Transparent huge pages off for the processes that run jobs.
//!
//! On a kernel whose THP mode is `always` (this machine's), the 2 MiB-aligned regions
//! mimalloc reserves are backed by 2 MiB pages as soon as they are touched, so a process that
//! needs a few MB of heap holds several times that. `bench queue` (c=10 and c=50, 50,000 jobs,
//! one thread), the worker's peak RSS: 18.5–18.7 MB with THP, 11.6–11.9 MB without, at the
//! same throughput (alternated runs; the spread between runs was larger than any difference).
//! THP goes off before `main`, from an ELF constructor ([`OFF_BEFORE_MAIN`]): the Rust
//! runtime allocates before `main` runs, and a huge page faulted in then stays (turning THP off
//! at the top of `main` still left 4 MiB of them, a third of the worker's RSS). `main` turns it
//! back on for the roles that serve HTTP (`web`, `all`), whose figures in the README are
//! measured with the kernel's default.

/// THP off (`true`) or back to the kernel's default (`false`) for this process's later page
/// faults. A kernel that refuses (not Linux, or older than 3.15) changes nothing: RSS is only
/// higher.
pub fn set_disabled(disabled: bool) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and writes no memory of ours.
        let result = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                libc::c_ulong::from(disabled),
                0,
                0,
                0,
            )
        };
        if result != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "transparent huge pages unchanged");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = disabled;
}

/// Runs before `main` and before the Rust runtime's first allocation (the loader calls
/// `.init_array` entries after libc is ready). A plain function pointer in the section is all
/// a constructor is; no crate needed for one.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static OFF_BEFORE_MAIN: extern "C" fn() = off_before_main;

#[cfg(target_os = "linux")]
extern "C" fn off_before_main() {
    set_disabled(true);
}
