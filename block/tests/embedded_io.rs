//! The `embedded-io` surface (feature `embedded-io`) on in-memory devices: the async and the
//! blocking stream over a qcow2 image (partial sectors read-modify-written, seeks, the end of
//! the node), a leaf device over a `Read + Write + Seek` stream, and the blocking bridge: it
//! pumps a device that holds requests until its doorbell inside a plugged batch (polled
//! without the pump the request never moves: the deadlock it prevents), and gives up with a
//! timeout after its poll budget; a request dropped behind the doorbell does not hang. (`tests/tests/fat_guest.rs` runs them on images made by qemu-img.)

#![cfg(feature = "embedded-io")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests
#![allow(unsafe_code)] // reason: the doorbell device forwards BlockDevice::submit

use std::cell::Cell;
use std::future::Future;
use std::task::{Context, Poll};

use embedded_io::{ErrorKind, SeekFrom};
use futures::executor::block_on;
use strata_block::backend::blocking::{self, Blocking};
use strata_block::backend::stream::{BlockingStream, Stream};
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::stream::StreamDevice;
use strata_block::dev::{BlockDevice, DeviceError, DeviceInfo, DeviceRequest, SubmitError, Ticket};
use strata_block::driver::qcow2::create::{create, CreateOptions};
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Error, Graph};

const MIB: u64 = 1 << 20;

/// A qcow2 image of `size` bytes made in `mem` by the block layer itself.
fn qcow2_in(mem: &mut [u8], size: u64) {
    let dev = RamDisk::<'_, 16>::new(mem, 512, RamConfig::default());
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("f", &dev).unwrap();
    block_on(create(&graph.io(), leaf, &CreateOptions::new(size))).unwrap();
}

#[test]
fn async_stream_reads_writes_and_seeks_at_any_offset() {
    use embedded_io_async::{Read, Seek, Write};
    let mut mem = vec![0u8; 8 * MIB as usize];
    qcow2_in(&mut mem, 2 * MIB);
    let dev = RamDisk::<'_, 16>::new(&mut mem, 512, RamConfig { delay_polls: 2, shuffle_seed: 7 });
    let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 8, 16> = Graph::new(&mut bounce, 4096);
    graph.set_metadata_cache(&slots);
    let root = block_on(graph.open("driver=qcow2,file=f", &mut |n| (n == "f").then_some(&dev as _))).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    block_on(async {
        let mut s = Stream::new(&be);
        // A sector of 0xaa, then 3 bytes in its middle: the rest of the sector stays.
        s.seek(SeekFrom::Start(4096)).await.unwrap();
        s.write_all(&[0xaa; 512]).await.unwrap();
        assert_eq!(s.seek(SeekFrom::Current(-300)).await.unwrap(), 4096 + 212);
        s.write_all(b"xyz").await.unwrap();
        s.flush().await.unwrap();
        s.seek(SeekFrom::Start(4096 - 2)).await.unwrap();
        let mut got = [0u8; 520];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..2], &[0, 0]);
        assert_eq!(&got[2..214], &[0xaa; 212][..]);
        assert_eq!(&got[214..217], b"xyz");
        assert_eq!(&got[217..514], &[0xaa; 297][..]);
        assert_eq!(&got[514..], &[0; 6]);
        // The end: a short read, then 0; a short write, then WriteZero.
        assert_eq!(s.seek(SeekFrom::End(-4)).await.unwrap(), 2 * MIB - 4);
        assert_eq!(s.read(&mut got).await.unwrap(), 4);
        assert_eq!(s.read(&mut got).await.unwrap(), 0);
        s.seek(SeekFrom::End(-2)).await.unwrap();
        assert_eq!(s.write(b"abcd").await.unwrap(), 2);
        let e = s.write(b"cd").await.unwrap_err();
        assert_eq!(embedded_io::Error::kind(&e), ErrorKind::WriteZero);
        assert!(s.seek(SeekFrom::Current(-(3 * MIB as i64))).await.is_err());
    });
    let mut tail = [0u8; 2];
    block_on(be.read(2 * MIB - 2, &mut tail)).unwrap();
    assert_eq!(&tail, b"ab");
}

/// A device that, like a virtio queue, holds submitted requests until its doorbell
/// ([`BlockDevice::unplug`]) rings.
struct Doorbell<'a> {
    inner: &'a dyn BlockDevice,
    rung: Cell<bool>,
}

impl BlockDevice for Doorbell<'_> {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        self.rung.set(false);
        // SAFETY: forwarded under the caller's contract.
        unsafe { self.inner.submit(req) }
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        if !self.rung.get() {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.inner.poll(ticket, cx)
    }

    fn unplug(&self) {
        self.rung.set(true);
    }
}

#[test]
fn blocking_calls_pump_the_device() {
    use embedded_io::{Read, Seek, Write};
    let mut mem = vec![0u8; 4 * MIB as usize];
    let ram = RamDisk::<'_, 16>::new(&mut mem, 512, RamConfig { delay_polls: 3, shuffle_seed: 0 });
    let dev = Doorbell { inner: &ram, rung: Cell::new(false) };
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
    let root = block_on(graph.open("driver=raw,file=d", &mut |n| (n == "d").then_some(&dev as _))).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    // Inside an executor's round the graph is plugged: submissions do not ring the doorbell.
    let handle = graph.handle();
    handle.plug();
    let pump = || dev.unplug();
    let mut s = BlockingStream::new(&be, Blocking::new(&pump));
    s.seek(SeekFrom::Start(1000)).unwrap();
    s.write_all(b"through the doorbell").unwrap();
    s.flush().unwrap();
    s.seek(SeekFrom::Start(1000)).unwrap();
    let mut got = [0u8; 20];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"through the doorbell");
    // What the pump prevents: polled without it, a request stays behind the unrung doorbell
    // however often it is polled (a synchronous caller inside the round would spin for ever).
    {
        let mut read = std::pin::pin!(be.read(0, &mut got));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..10_000 {
            assert!(read.as_mut().poll(&mut cx).is_pending());
        }
        pump();
        while read.as_mut().poll(&mut cx).is_pending() {}
    }
    // A request dropped while it waits behind the unrung doorbell: its destructor ends the
    // batch before it waits for the device, or it would spin for ever.
    {
        let mut read = std::pin::pin!(be.read(0, &mut got));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(read.as_mut().poll(&mut cx).is_pending());
    }
    handle.unplug();
    assert_eq!(be.in_flight(), 0);
}

#[test]
fn a_blocking_call_gives_up_after_its_budget() {
    // A device slower than the budget: the call ends with a timeout (its request is dropped,
    // which waits for the device, as every request future does) instead of spinning on.
    let mut mem = vec![0u8; MIB as usize];
    let slow = RamDisk::<'_, 16>::new(&mut mem, 512, RamConfig { delay_polls: 100_000, shuffle_seed: 0 });
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
    let root = block_on(graph.open("driver=raw,file=d", &mut |n| (n == "d").then_some(&slow as _))).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut got = [0u8; 512];
    let nothing = || {};
    assert_eq!(blocking::block_on(be.read(0, &mut got), &nothing, 1000), Err(Error::Device(DeviceError::Timeout)));
    assert_eq!(be.in_flight(), 0);
    assert_eq!(blocking::block_on(be.read(0, &mut got), &nothing, 1_000_000), Ok(()));
}

/// An in-memory `Read + Write + Seek` (a cursor).
struct Cursor {
    data: Vec<u8>,
    pos: usize,
}

impl embedded_io::ErrorType for Cursor {
    type Error = ErrorKind;
}

impl embedded_io::Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let n = buf.len().min(self.data.len().saturating_sub(self.pos));
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl embedded_io::Write for Cursor {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let n = buf.len().min(self.data.len().saturating_sub(self.pos));
        self.data[self.pos..self.pos + n].copy_from_slice(&buf[..n]);
        self.pos += n;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl embedded_io::Seek for Cursor {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, ErrorKind> {
        let SeekFrom::Start(p) = pos else { return Err(ErrorKind::Unsupported) };
        self.pos = p as usize;
        Ok(p)
    }
}

#[test]
fn a_stream_is_a_leaf_device() {
    let mut data = vec![0u8; 4 * MIB as usize];
    qcow2_in(&mut data, 3 * MIB);
    let dev = StreamDevice::new(Cursor { data, pos: 0 }, 4 * MIB, 512);
    let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 4 * 4096];
    {
        let mut graph: Graph<'_, 8, 16> = Graph::new(&mut bounce, 4096);
        graph.set_metadata_cache(&slots);
        let root = block_on(graph.open("driver=qcow2,file=s", &mut |n| (n == "s").then_some(&dev as _))).unwrap();
        let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
        assert_eq!(be.size(), 3 * MIB);
        block_on(be.write(MIB + 3, b"in a stream")).unwrap();
        let mut got = [0u8; 11];
        block_on(be.read(MIB + 3, &mut got)).unwrap();
        assert_eq!(&got, b"in a stream");
        block_on(be.close()).unwrap();
    }
    // A read-only one refuses writes at the device.
    let ro = StreamDevice::read_only(dev.into_inner(), 4 * MIB, 512);
    assert!(ro.info().read_only);
}
