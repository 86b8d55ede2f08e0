//! Reading ahead: telling the CPU which cache line a walk is about to read (the conntrack
//! bucket of a new connection's reply tuple, fetched when its NAT is decided, before the
//! entry is confirmed into it). A hint only: it changes nothing and reads nothing the
//! program can see, and a wrong address costs a wasted fetch, never a fault.
#![allow(unsafe_code)]

/// Asks for the cache line holding `at`.
#[inline(always)]
pub(crate) fn line<T>(at: *const T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    // SAFETY: PREFETCHT0 is a hint: it does not access memory in any way the program can
    // observe and does not fault, whatever the address. SSE is enabled (the cfg above), so
    // the instruction exists.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = at;
}
