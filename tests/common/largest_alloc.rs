//! The largest single block allocated on this thread, by a counting global allocator (per thread,
//! so tests running in parallel do not see each other's allocations). Included with
//! `#[path = "common/largest_alloc.rs"] mod largest_alloc;` by the tests that bound allocations:
//! it installs the process's global allocator, so only those test binaries carry it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

// SAFETY: forwards every call to the system allocator, only recording sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts counting afresh on this thread.
pub fn reset() {
    LARGEST.with(|c| c.set(0));
}

/// The largest block allocated on this thread since [`reset`], bytes.
pub fn largest() -> usize {
    LARGEST.with(Cell::get)
}
