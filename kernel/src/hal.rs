//! The virtio-drivers `Hal`: DMA memory from a static arena, identity-mapped addresses.
//!
//! The kernel runs identity-mapped (the board's `is_mapped` range) with no IOMMU, so a buffer's
//! physical address is its virtual address and sharing a buffer with a device needs no bounce
//! copy. DMA pages (virtqueue rings) come from a bump arena that is never returned: devices live as long as
//! the kernel. Running out gives virtio-drivers a null address, which it reports as `DmaError`.

use core::ptr::NonNull;
use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Pages in the DMA arena: enough for the rings of every device the catalog can hold.
const DMA_PAGES: usize = 128;

#[repr(C, align(4096))]
struct Arena([u8; DMA_PAGES * PAGE_SIZE]);

static ARENA: Mutex<(usize, Option<&'static mut Arena>)> = Mutex::new((0, None));
static mut ARENA_MEMORY: Arena = Arena([0; DMA_PAGES * PAGE_SIZE]);

/// The kernel's virtio HAL.
pub struct KernelHal;

// SAFETY: `dma_alloc` hands out disjoint, zeroed, page-aligned ranges of a static arena that
// nothing else uses; all addresses are identity-mapped, so the physical addresses we return are
// exactly where the device will read and write.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let mut arena = ARENA.lock();
        let (used, memory) = &mut *arena;
        // SAFETY: ARENA_MEMORY is only ever referenced here, once, under the ARENA lock.
        let memory = memory.get_or_insert_with(|| unsafe { &mut *core::ptr::addr_of_mut!(ARENA_MEMORY) });
        if pages == 0 || pages > DMA_PAGES - *used {
            return (0, NonNull::dangling());
        }
        let start = *used * PAGE_SIZE;
        *used += pages;
        let region = &mut memory.0[start..start + pages * PAGE_SIZE];
        region.fill(0);
        let ptr = region.as_mut_ptr();
        // `ptr` comes from a live slice, so it is never null.
        (ptr as PhysAddr, NonNull::new(ptr).unwrap_or(NonNull::dangling()))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // Devices are never torn down; the arena is a bump allocator.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Identity mapping; `devices` refuses windows the board has not mapped before we get here.
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
