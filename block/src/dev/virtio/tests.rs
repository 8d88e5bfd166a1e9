//! The leaf against a fake virtio-blk device on the host: a `Transport` whose "device" walks the
//! real split virtqueue in memory (descriptors, available and used rings) the way QEMU does,
//! completing requests when and in the order a test says, with the status and used length it
//! says. A `Hal` over the host's heap with identity addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::*;
use crate::dev::{BlockDevice, DeviceError, DeviceFeatures, DeviceOp, DeviceRequest, Segment, SubmitError, Ticket};

struct HeapHal;

// SAFETY: memory from the global allocator, page-aligned and zeroed, never handed out twice;
// host addresses are what the fake device dereferences, so "physical" = virtual.
unsafe impl Hal for HeapHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = std::alloc::Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: allocated by dma_alloc with this layout.
        unsafe { std::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap()
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

const QSIZE: usize = 256;
type Dev = VirtioBlk<HeapHal, FakeTransport, QSIZE, 64>;

/// A request the device has taken from the available ring.
#[derive(Debug)]
struct Taken {
    head: u16,
    type_: u32,
    sector: u64,
    /// (address, length, device-writable) in chain order, header included.
    bufs: Vec<(u64, u32, bool)>,
}

#[derive(Default)]
struct DeviceState {
    features: u64,
    config: Vec<u8>,
    status: u32,
    queue: Option<(u64, u64, u64)>,
    max_queue: u32,
    /// Complete requests as soon as the driver notifies.
    auto: bool,
    notifies: u32,
    last_avail: u16,
    used_idx: u16,
    taken: Vec<Taken>,
    disk: Vec<u8>,
    serial: &'static [u8],
    resets: u32,
}

impl DeviceState {
    fn ring_u16(&self, addr: u64) -> u16 {
        // SAFETY: addresses inside the rings virtio-drivers allocated and gave us in queue_set.
        unsafe { std::ptr::read_volatile(addr as *const u16) }
    }

    /// Takes every new request from the available ring.
    fn take_available(&mut self) {
        let Some((desc, avail, _)) = self.queue else { return };
        let idx = self.ring_u16(avail + 2);
        while self.last_avail != idx {
            let slot = u64::from(self.last_avail) % QSIZE as u64;
            let head = self.ring_u16(avail + 4 + 2 * slot);
            let mut bufs = Vec::new();
            let mut i = head;
            loop {
                let d = desc + 16 * u64::from(i);
                // SAFETY: descriptor table entries written by the driver.
                let (addr, len, flags, next) = unsafe {
                    (std::ptr::read_volatile(d as *const u64), std::ptr::read_volatile((d + 8) as *const u32), self.ring_u16(d + 12), self.ring_u16(d + 14))
                };
                bufs.push((addr, len, flags & 2 != 0));
                if flags & 1 == 0 {
                    break;
                }
                i = next;
            }
            let (haddr, _, _) = bufs[0];
            // SAFETY: the header buffer is 16 device-readable bytes.
            let header = unsafe { std::slice::from_raw_parts(haddr as *const u8, 16) };
            let type_ = u32::from_le_bytes(header[..4].try_into().unwrap());
            let sector = u64::from_le_bytes(header[8..].try_into().unwrap());
            self.taken.push(Taken { head, type_, sector, bufs });
            self.last_avail = self.last_avail.wrapping_add(1);
        }
    }

    /// Executes the taken request at `index` and puts it in the used ring with `status`; `len`
    /// overrides the used length the device reports.
    fn complete(&mut self, index: usize, status: u8, len: Option<u32>) {
        let t = self.taken.remove(index);
        let data: Vec<_> = t.bufs[1..t.bufs.len() - 1].to_vec();
        let mut pos = (t.sector * 512) as usize;
        for &(addr, blen, writable) in &data {
            let n = blen as usize;
            match (t.type_, writable) {
                // SAFETY: a device-writable data buffer of `n` bytes.
                (0, true) => unsafe { std::ptr::copy_nonoverlapping(self.disk[pos..pos + n].as_ptr(), addr as *mut u8, n) },
                // SAFETY: a device-readable data buffer of `n` bytes.
                (1, false) => unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, self.disk[pos..pos + n].as_mut_ptr(), n) },
                (8, true) => {
                    let id = self.serial;
                    // SAFETY: the 20-byte GetId buffer.
                    unsafe { std::ptr::copy_nonoverlapping(id.as_ptr(), addr as *mut u8, id.len().min(n)) };
                }
                _ => {}
            }
            pos += n;
        }
        if matches!(t.type_, 11 | 13) {
            // SAFETY: the 16-byte range segment.
            let range = unsafe { std::slice::from_raw_parts(data[0].0 as *const u8, 16) };
            let sector = u64::from_le_bytes(range[..8].try_into().unwrap()) as usize;
            let n = u32::from_le_bytes(range[8..12].try_into().unwrap()) as usize;
            self.disk[sector * 512..(sector + n) * 512].fill(0);
        }
        let (status_addr, _, _) = *t.bufs.last().unwrap();
        if status != wire::S_UNWRITTEN {
            // SAFETY: the device-writable status byte.
            unsafe { std::ptr::write_volatile(status_addr as *mut u8, status) };
        }
        let written: u32 = t.bufs.iter().filter(|b| b.2).map(|b| b.1).sum();
        self.push_used(u32::from(t.head), len.unwrap_or(written));
    }

    fn push_used(&mut self, id: u32, len: u32) {
        let (_, _, used) = self.queue.unwrap();
        let slot = u64::from(self.used_idx) % QSIZE as u64;
        let elem = used + 4 + 8 * slot;
        self.used_idx = self.used_idx.wrapping_add(1);
        // SAFETY: the used ring virtio-drivers allocated; only the device writes it.
        unsafe {
            std::ptr::write_volatile(elem as *mut u32, id);
            std::ptr::write_volatile((elem + 4) as *mut u32, len);
            std::ptr::write_volatile((used + 2) as *mut u16, self.used_idx);
        }
    }
}

struct FakeTransport(Rc<RefCell<DeviceState>>);

impl Transport for FakeTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType::Block
    }
    fn read_device_features(&mut self) -> u64 {
        self.0.borrow().features
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.borrow_mut().features = driver_features;
    }
    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        self.0.borrow().max_queue
    }
    fn notify(&mut self, _queue: u16) {
        let mut s = self.0.borrow_mut();
        s.notifies += 1;
        s.take_available();
        if s.auto {
            while !s.taken.is_empty() {
                s.complete(0, wire::S_OK, None);
            }
        }
    }
    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.0.borrow().status)
    }
    fn set_status(&mut self, status: DeviceStatus) {
        let mut s = self.0.borrow_mut();
        if status.is_empty() {
            s.resets += 1;
        }
        s.status = status.bits();
    }
    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}
    fn requires_legacy_layout(&self) -> bool {
        false
    }
    fn queue_set(&mut self, _queue: u16, _size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        self.0.borrow_mut().queue = Some((descriptors, driver_area, device_area));
    }
    fn queue_unset(&mut self, _queue: u16) {}
    fn queue_used(&mut self, _queue: u16) -> bool {
        false
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
    fn read_config_generation(&self) -> u32 {
        0
    }
    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<T> {
        let s = self.0.borrow();
        let bytes = s.config.get(offset..offset + core::mem::size_of::<T>()).ok_or(virtio_drivers::Error::ConfigSpaceTooSmall)?;
        Ok(T::read_from_bytes(bytes).unwrap())
    }
    fn write_config_space<T: IntoBytes + Immutable>(&mut self, _offset: usize, _value: T) -> virtio_drivers::Result<()> {
        Ok(())
    }
}

const MIB: usize = 1 << 20;

/// A 1 MiB device with QEMU's defaults (seg_max 254, flush, discard, write-zeroes) plus `extra`
/// feature bits, and its state.
fn device_with(features: Features, disk: Vec<u8>) -> (Dev, Rc<RefCell<DeviceState>>) {
    let mut config = vec![0u8; 64];
    config[0..8].copy_from_slice(&((disk.len() / 512) as u64).to_le_bytes());
    config[12..16].copy_from_slice(&254u32.to_le_bytes());
    config[20..24].copy_from_slice(&512u32.to_le_bytes());
    config[36..40].copy_from_slice(&(u32::MAX >> 9).to_le_bytes());
    config[40..44].copy_from_slice(&1u32.to_le_bytes());
    config[44..48].copy_from_slice(&8u32.to_le_bytes());
    config[48..52].copy_from_slice(&(u32::MAX >> 9).to_le_bytes());
    config[52..56].copy_from_slice(&1u32.to_le_bytes());
    config[56] = 1;
    let state = Rc::new(RefCell::new(DeviceState {
        features: features.bits(),
        config,
        max_queue: 1024,
        auto: true,
        disk,
        serial: b"fake-serial",
        ..DeviceState::default()
    }));
    let dev = Dev::new(FakeTransport(state.clone()), Some(counter)).unwrap();
    state.borrow_mut().auto = false;
    (dev, state)
}

fn device() -> (Dev, Rc<RefCell<DeviceState>>) {
    let disk: Vec<u8> = (0..MIB).map(|i| (i / 512) as u8).collect();
    device_with(Features::SEG_MAX | Features::BLK_SIZE | Features::FLUSH | Features::DISCARD | Features::WRITE_ZEROES | Features::VERSION_1, disk)
}

/// A clock that ticks on every call, so every stage takes time.
fn counter() -> u64 {
    thread_local!(static T: std::cell::Cell<u64> = const { std::cell::Cell::new(1) });
    T.with(|t| {
        t.set(t.get() + 1);
        t.get()
    })
}

fn poll(dev: &Dev, t: Ticket) -> Poll<Result<(), DeviceError>> {
    dev.poll(t, &mut Context::from_waker(Waker::noop()))
}

fn read(dev: &Dev, offset: u64, buf: &mut [u8]) -> Result<Ticket, SubmitError> {
    let seg = [Segment::from_mut(buf)];
    // SAFETY: every test polls its tickets to completion before the buffer goes away.
    unsafe { dev.submit(&DeviceRequest { op: DeviceOp::Read, offset, len: seg[0].len as u64, segments: &seg }) }
}

fn simple(dev: &Dev, op: DeviceOp, offset: u64, len: u64) -> Result<Ticket, SubmitError> {
    // SAFETY: no memory is handed over.
    unsafe { dev.submit(&DeviceRequest { op, offset, len, segments: &[] }) }
}

#[test]
fn bring_up_reads_the_configuration_and_serial() {
    let (dev, state) = device();
    let info = dev.info();
    assert_eq!(info.serial(), "fake-serial");
    assert_eq!(info.capacity, MIB as u64);
    assert_eq!(info.max_segments, 6);
    assert_eq!(info.queue_depth, 64);
    assert_eq!(info.features, DeviceFeatures::all());
    assert_eq!(state.borrow().notifies, 1, "GetId");
    let negotiated = Features::from_bits_truncate(state.borrow().features);
    assert!(negotiated.contains(Features::VERSION_1 | Features::FLUSH) && !negotiated.contains(Features::RO));
}

#[test]
fn a_batch_rings_once_and_completes_in_any_order() {
    let (dev, state) = device();
    let mut bufs = vec![[0u8; 512]; 32];
    let tickets: Vec<_> = bufs.iter_mut().enumerate().map(|(i, b)| read(&dev, 512 * i as u64, b).unwrap()).collect();
    assert_eq!(dev.in_flight(), 32);
    assert_eq!(state.borrow().notifies, 1, "submit alone rings no doorbell");
    dev.unplug();
    dev.unplug();
    assert_eq!(state.borrow().notifies, 2, "one doorbell per batch");
    assert_eq!(state.borrow().taken.len(), 32);
    // The device finishes them last to first.
    for i in (0..32).rev() {
        state.borrow_mut().complete(i, wire::S_OK, None);
    }
    for t in &tickets {
        assert_eq!(poll(&dev, *t), Poll::Ready(Ok(())));
    }
    for (i, b) in bufs.iter().enumerate() {
        assert!(b.iter().all(|&x| x == i as u8), "sector {i}");
    }
    let s = dev.stats();
    assert_eq!((s.submitted, s.completed, s.returned, s.max_in_flight, s.notifies), (32, 32, 32, 32, 1));
    assert!(s.submit_ticks > 0 && s.device_ticks > 0 && s.completion_ticks > 0);
    assert_eq!(poll(&dev, tickets[0]), Poll::Ready(Err(DeviceError::Invalid)), "a ticket is forgotten after Ready");
}

#[test]
fn a_pending_poll_wakes_at_once_or_on_completion() {
    let (dev, state) = device();
    let mut buf = [0u8; 512];
    let t = read(&dev, 0, &mut buf).unwrap();
    dev.unplug();
    let flag = std::sync::Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    assert!(dev.poll(t, &mut Context::from_waker(&waker)).is_pending());
    assert!(flag.take(), "by default a pending poll wakes its task");
    dev.set_wake_on_pending(false);
    assert!(dev.poll(t, &mut Context::from_waker(&waker)).is_pending());
    assert!(!flag.take());
    state.borrow_mut().complete(0, wire::S_OK, None);
    assert_eq!(dev.process_completions(), 1);
    assert!(flag.take(), "the completion woke the task");
    assert_eq!(dev.poll(t, &mut Context::from_waker(&waker)), Poll::Ready(Ok(())));
}

#[derive(Default)]
struct Flag(std::sync::atomic::AtomicBool);

impl Flag {
    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn device_statuses_and_bad_lengths_become_errors() {
    let (dev, state) = device();
    let mut bufs = vec![[0u8; 512]; 5];
    let t: Vec<_> = bufs.iter_mut().map(|b| read(&dev, 0, b).unwrap()).collect();
    dev.unplug();
    let mut s = state.borrow_mut();
    s.complete(0, 1, None); // IOERR
    s.complete(0, wire::S_UNSUPP, None);
    s.complete(0, wire::S_UNWRITTEN, None); // no status written
    s.complete(0, wire::S_OK, Some(10_000)); // more than the request offered
    s.complete(0, wire::S_OK, Some(1)); // a read that filled nothing
    drop(s);
    let results: Vec<_> = t.iter().map(|t| poll(&dev, *t)).collect();
    assert_eq!(
        results,
        [DeviceError::Io, DeviceError::Unsupported, DeviceError::Io, DeviceError::Io, DeviceError::Io].map(|e| Poll::Ready(Err(e)))
    );
    assert_eq!(dev.stats().errors, 5);
    assert!(!dev.is_broken(), "errors of single requests do not break the device");
}

#[test]
fn an_unknown_used_id_resets_the_device_and_fails_everything() {
    let (dev, state) = device();
    let mut bufs = vec![[0u8; 512]; 3];
    let t: Vec<_> = bufs.iter_mut().map(|b| read(&dev, 0, b).unwrap()).collect();
    dev.unplug();
    state.borrow_mut().push_used(200, 1);
    for t in &t {
        assert_eq!(poll(&dev, *t), Poll::Ready(Err(DeviceError::Io)));
    }
    assert!(dev.is_broken());
    assert_eq!(state.borrow().resets, 2, "bring-up and the reset");
    let mut buf = [0u8; 512];
    assert_eq!(read(&dev, 0, &mut buf), Err(SubmitError::Invalid(DeviceError::Io)));
}

#[test]
fn busy_when_every_slot_is_taken() {
    let (dev, state) = device();
    let mut bufs = vec![[0u8; 512]; 65];
    let (last, rest) = bufs.split_last_mut().unwrap();
    let t: Vec<_> = rest.iter_mut().map(|b| read(&dev, 0, b).unwrap()).collect();
    assert_eq!(read(&dev, 0, last), Err(SubmitError::Busy));
    dev.unplug();
    state.borrow_mut().complete(0, wire::S_OK, None);
    assert_eq!(poll(&dev, t[0]), Poll::Ready(Ok(())));
    let extra = read(&dev, 0, last).unwrap();
    dev.unplug();
    while !state.borrow().taken.is_empty() {
        state.borrow_mut().complete(0, wire::S_OK, None);
    }
    for t in t.iter().skip(1).chain([&extra]) {
        assert_eq!(poll(&dev, *t), Poll::Ready(Ok(())));
    }
    assert_eq!(dev.stats().max_in_flight, 64);
}

#[test]
fn scatter_gather_writes_flush_discard_and_write_zeroes() {
    let (dev, state) = device();
    let (a, b) = ([0xaau8; 512], [0xbbu8; 1024]);
    let segs = [Segment::from_ref(&a), Segment::from_ref(&b)];
    // SAFETY: polled to completion below while `a` and `b` live.
    let w = unsafe { dev.submit(&DeviceRequest { op: DeviceOp::Write, offset: 4096, len: 1536, segments: &segs }) }.unwrap();
    let f = simple(&dev, DeviceOp::Flush, 0, 0).unwrap();
    let d = simple(&dev, DeviceOp::Discard, 8192, 4096).unwrap();
    let z = simple(&dev, DeviceOp::WriteZeroes { unmap: true }, 0, 1024).unwrap();
    dev.unplug();
    let types: Vec<_> = state.borrow().taken.iter().map(|t| (t.type_, t.sector, t.bufs.len())).collect();
    assert_eq!(types, [(1, 8, 4), (4, 0, 2), (11, 16, 3), (13, 0, 3)]);
    // SAFETY: the write-zeroes range segment (16 bytes).
    let flags = unsafe { std::ptr::read((state.borrow().taken[3].bufs[1].0 + 12) as *const u32) };
    assert_eq!(flags, wire::WZ_FLAG_UNMAP);
    while !state.borrow().taken.is_empty() {
        state.borrow_mut().complete(0, wire::S_OK, None);
    }
    for t in [w, f, d, z] {
        assert_eq!(poll(&dev, t), Poll::Ready(Ok(())));
    }
    let disk = &state.borrow().disk;
    assert!(disk[4096..4608].iter().all(|&x| x == 0xaa) && disk[4608..5632].iter().all(|&x| x == 0xbb));
    assert!(disk[..1024].iter().all(|&x| x == 0) && disk[8192..12288].iter().all(|&x| x == 0));
}

#[test]
fn without_a_cache_flush_completes_at_once() {
    let disk = vec![0u8; MIB];
    let (dev, state) = device_with(Features::VERSION_1, disk);
    let f = simple(&dev, DeviceOp::Flush, 0, 0).unwrap();
    assert_eq!(poll(&dev, f), Poll::Ready(Ok(())));
    dev.unplug();
    assert_eq!(state.borrow().notifies, 1, "only GetId reached the device");
    assert_eq!(dev.info().max_segments, 1, "no SEG_MAX: one segment");
}

#[test]
fn requests_outside_the_limits_are_refused() {
    let disk = vec![0u8; MIB];
    let (dev, _) = device_with(Features::RO | Features::SEG_MAX | Features::VERSION_1, disk);
    let mut buf = [0u8; 512];
    let mut empty = [0u8; 0];
    let segs = [Segment::from_mut(&mut buf), Segment::from_mut(&mut empty)];
    // SAFETY: refused before the device sees it.
    let r = unsafe { dev.submit(&DeviceRequest { op: DeviceOp::Read, offset: 0, len: 512, segments: &segs }) };
    assert_eq!(r, Err(SubmitError::Invalid(DeviceError::Invalid)), "an empty segment");
    assert_eq!(read(&dev, MIB as u64, &mut buf), Err(SubmitError::Invalid(DeviceError::Invalid)), "past the end");
    let w = [Segment::from_ref(&buf)];
    // SAFETY: refused before the device sees it.
    let r = unsafe { dev.submit(&DeviceRequest { op: DeviceOp::Write, offset: 0, len: 512, segments: &w }) };
    assert_eq!(r, Err(SubmitError::Invalid(DeviceError::ReadOnly)));
    assert_eq!(simple(&dev, DeviceOp::Discard, 0, 512), Err(SubmitError::Invalid(DeviceError::ReadOnly)));
}

#[test]
fn a_queue_smaller_than_size_is_refused() {
    let state = Rc::new(RefCell::new(DeviceState { config: vec![0; 64], max_queue: 128, ..DeviceState::default() }));
    let r = Dev::new(FakeTransport(state), None);
    assert!(matches!(r, Err(InitError::QueueTooSmall { offered: 128, wanted: 256 })));
}

#[test]
fn the_block_layer_runs_on_it() {
    let (dev, state) = device();
    state.borrow_mut().auto = true;
    let mut bounce = vec![0u8; 64 * 1024];
    let mut graph: crate::Graph<'_, 4, 16> = crate::Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("v", &dev).unwrap();
    let backend = crate::Backend::new(&graph, leaf, crate::BackendOptions::default()).unwrap();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let mut back = vec![0u8; 3000];
    futures::executor::block_on(async {
        backend.write(1000, &data).await.unwrap();
        backend.flush().await.unwrap();
        backend.read(1000, &mut back).await.unwrap();
    });
    assert_eq!(back, data);
    assert_eq!(&state.borrow().disk[1000..4000], &data[..]);
}
