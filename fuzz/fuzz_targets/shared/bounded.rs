//! A global allocator that aborts on any allocation over `MAX_ALLOC` (1 MiB). Targets whose
//! inputs are at most a few KiB include it (`#[path = "shared/bounded.rs"] mod bounded;`): a
//! bigger allocation can only come from a length or count read off the input and not checked
//! against it.

use std::alloc::{GlobalAlloc, Layout, System};

pub const MAX_ALLOC: usize = 1 << 20;

pub struct Bounded;

// SAFETY: forwards to `System` unchanged; only refuses (aborts on) oversized requests.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        assert!(layout.size() <= MAX_ALLOC, "allocation of {} bytes", layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        assert!(new_size <= MAX_ALLOC, "reallocation to {new_size} bytes");
        unsafe { System.realloc(p, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Bounded = Bounded;
