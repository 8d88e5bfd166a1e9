//! Handing one request to a leaf device and waiting for it, safely.
//!
//! The guard here is what makes dropping a request future mid-flight safe: once a request is
//! submitted, the device may read or write the caller's memory until it completes, so if the
//! future is dropped early the guard's destructor polls the device until that request is done
//! (polled devices make progress when polled; the host file's workers finish on their own).
//! Leaking the future with `mem::forget` skips the destructor and breaks this guarantee; the
//! public request functions say so.

#![allow(unsafe_code)] // reason: `BlockDevice::submit` is unsafe; this module upholds its contract

use core::future::poll_fn;
use core::task::{Context, Poll, Waker};

use crate::dev::{BlockDevice, DeviceError, DeviceRequest, SubmitError, Ticket};

/// A submitted request not yet seen complete.
struct InFlight<'a> {
    dev: &'a dyn BlockDevice,
    ticket: Option<Ticket>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            // A request still queued in a plugged batch would never complete without its
            // notification: end the batch first.
            self.dev.unplug();
            let mut cx = Context::from_waker(Waker::noop());
            while self.dev.poll(ticket, &mut cx).is_pending() {
                core::hint::spin_loop();
            }
        }
    }
}

/// Submits `req` (waiting while the device is busy), then waits for its completion.
///
/// `notify`: end the submission batch at once (false while the caller batches with plug).
///
/// The memory named by `req.segments` must be borrowed by the caller for at least as long as
/// this future exists; the future does not return, and does not finish dropping, before the
/// device is done with it.
pub(crate) async fn run(dev: &dyn BlockDevice, req: &DeviceRequest<'_>, notify: bool) -> Result<(), DeviceError> {
    if let Some(result) = run_now(dev, req) {
        return result;
    }
    let ticket = poll_fn(|cx| {
        // SAFETY: the segments outlive this future (caller's borrow, see above), and this future
        // does not complete or finish dropping before the device completes the ticket (the
        // InFlight guard below is created before any await point after submission).
        match unsafe { dev.submit(req) } {
            Ok(t) => Poll::Ready(Ok(t)),
            Err(SubmitError::Busy) => {
                dev.unplug(); // let queued requests run so the device frees a slot
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(SubmitError::Invalid(e)) => Poll::Ready(Err(e)),
        }
    })
    .await?;
    let mut guard = InFlight { dev, ticket: Some(ticket) };
    if notify {
        dev.unplug();
    }
    let result = poll_fn(|cx| dev.poll(ticket, cx)).await;
    guard.ticket = None;
    result
}

/// Performs `req` at once if the device would run it in the caller's thread anyway
/// ([`BlockDevice::rw_now`], which decides: no [`BlockDevice::runs_now`] first); `None` if it
/// would queue it (nothing was done).
pub(crate) fn run_now(dev: &dyn BlockDevice, req: &DeviceRequest<'_>) -> Option<Result<(), DeviceError>> {
    // SAFETY: `req` borrows its segments' memory for this call, and the device is done with it
    // when `rw_now` returns.
    unsafe { dev.rw_now(req) }
}
