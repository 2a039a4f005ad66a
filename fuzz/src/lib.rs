//! What every fuzz target links: an allocator that aborts on any single allocation above
//! [`MAX_ALLOCATION`]. Inputs are a few KiB, so only a length field taken on trust can ask
//! for that much, and the fuzzer reports the abort as a crash with the input that caused
//! it. (libFuzzer's own `-malloc_limit_mb` needs a sanitizer runtime, which stable Rust
//! does not build.)

use std::alloc::{GlobalAlloc, Layout, System};

/// Far above what a few KiB of input can justify, far below what a worker can spare.
pub const MAX_ALLOCATION: usize = 64 << 20;

struct Capped;

// SAFETY: every call is forwarded to `System` unchanged, or aborts first.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No panic: formatting a message could allocate, inside the allocator.
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;
