//! Reading ahead: telling the CPU which cache lines a walk is about to read, so that in a
//! list of packets ([`crate::Netfilter::hook_list`]) the lines of later packets are on their
//! way while earlier ones are walked. A hint only: it changes nothing and reads nothing the
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

/// Asks for the cache lines of `items`, at most `max_lines` of them.
#[inline]
pub(crate) fn lines<T>(items: &[T], max_lines: usize) {
    let start = items.as_ptr().cast::<u8>();
    let end = std::mem::size_of_val(items).min(max_lines * 64);
    let mut at = 0;
    while at < end {
        line(start.wrapping_add(at));
        at += 64;
    }
}
