//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the thread's receive buffers, lent to
//! the kernel, which picks one for each receive completion (multishot or one-shot). A connection holds a
//! buffer only from the completion that names it until its bytes are handed to the connection
//! machine (the same loop turn), so an idle connection holds none.
//!
//! No crate wraps this for io-uring 0.7 (the runtimes that do, tokio-uring and monoio, have no
//! buffer rings or no multishot receive), hence the little unsafe code here.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The alignment the kernel wants for the ring of entries (a page).
const PAGE: usize = 4096;

/// `entries` buffers of `size` bytes each, registered as buffer group `group`.
pub(crate) struct BufRing {
    /// The ring of entries the kernel reads (page-aligned); its tail is the last entry's
    /// `resv` field, as the kernel's layout has it.
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    /// The buffers, `size` bytes each, one after the other.
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    size: usize,
    /// The tail as this side counts it (published with a release store).
    tail: u16,
}

impl BufRing {
    /// Allocates the ring and its buffers, registers them with `ring` as group `group`, and
    /// lends the kernel every buffer. `entries` must be a power of two (at most 32,768).
    pub(crate) fn new(
        ring: &IoUring,
        group: u16,
        entries: u16,
        size: usize,
    ) -> io::Result<BufRing> {
        assert!(
            entries.is_power_of_two(),
            "a buffer ring's size is a power of two"
        );
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            PAGE,
        )
        .map_err(io::Error::other)?;
        let bufs_layout =
            Layout::from_size_align(usize::from(entries) * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size >= 1 checked by the
        // callers' limits); the pointers are checked for null before use and freed in Drop
        // with the same layouts.
        let (ring_ptr, bufs) = unsafe { (alloc_zeroed(ring_layout), alloc_zeroed(bufs_layout)) };
        if ring_ptr.is_null() || bufs.is_null() {
            // SAFETY: each pointer that is not null was allocated just above with its layout.
            unsafe {
                if !ring_ptr.is_null() {
                    dealloc(ring_ptr, ring_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut this = BufRing {
            ring: ring_ptr.cast(),
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            size,
            tail: 0,
        };
        // SAFETY: the ring memory is page-aligned, zeroed, `entries` entries long, and lives
        // until Drop; the kernel only reads entries we published and writes into buffers it
        // took from them, while an operation of this group runs (the engine completes or
        // cancels every one before it drops this ring).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(this.ring as u64, entries, group, 0)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The size of each buffer.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed back.
    pub(crate) fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.entries && len <= self.size);
        // SAFETY: `bid` is in range, so the slice lies within the allocation; the kernel
        // wrote `len` bytes into this buffer and no longer touches it until it is lent again
        // (`recycle`), which takes `&mut self` and so cannot happen while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.bufs.add(usize::from(bid) * self.size), len) }
    }

    /// Lends buffer `bid` to the kernel again.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let at = usize::from(self.tail & mask);
        // SAFETY: `at` < entries, inside the ring's allocation. The kernel reads an entry only
        // once the tail that covers it is published, so writing one past the published tail
        // races with nothing.
        let entry = unsafe { &mut *self.ring.add(at) };
        entry.set_addr(self.bufs as u64 + (usize::from(bid) * self.size) as u64);
        entry.set_len(u32::try_from(self.size).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lies in the first entry of the ring, which is valid and
        // aligned for a u16; the kernel reads it concurrently, hence the atomic store.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

// SAFETY: the ring and its buffers are this value's alone (no other pointer to them escapes
// but the kernel's, which follows the ring's owner); moving them to another thread before
// serving moves nothing shared.
unsafe impl Send for BufRing {}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; no operation of this group is in
        // flight any more (see `new`).
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
