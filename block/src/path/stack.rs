//! [`Stack`]: what the upper io half sees of a graph — the [`Io`] view drivers get, plus every
//! driver node's state, so the walk can ask drivers to map and plan.

use core::ops::Deref;

use core::cell::Cell;

use crate::driver::FormatState;
use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::path::skip::Skip;

/// A graph as the walk and the executors use it.
#[derive(Clone, Copy)]
pub struct Stack<'g, 'd> {
    /// The view drivers get.
    pub io: Io<'g, 'd>,
    /// Driver states, by node slot.
    pub(crate) states: &'g [Option<FormatState>],
    /// The walk's memory of empty layers, by node slot (see [`crate::path::skip`]).
    pub(crate) skips: &'g [Cell<Option<Skip>>],
}

impl<'g> Stack<'g, '_> {
    /// The driver state of `id`, or `None` for a leaf.
    pub fn state(&self, id: NodeId) -> Result<Option<&'g FormatState>> {
        self.io.node(id)?;
        self.states.get(usize::from(id.index)).map(Option::as_ref).ok_or(Error::BadNode)
    }

    /// The driver state of `id`, which must be a driver node.
    pub(crate) fn driver(&self, id: NodeId) -> Result<&'g FormatState> {
        self.io.node(id)?;
        self.driver_of_checked(id)
    }

    /// [`Stack::driver`] of an id the caller has just checked (it looked the node up): the
    /// generation is not compared again.
    pub(crate) fn driver_of_checked(&self, id: NodeId) -> Result<&'g FormatState> {
        self.states.get(usize::from(id.index)).and_then(Option::as_ref).ok_or(Error::BadGraph("driver call on a leaf"))
    }
}

impl<'g, 'd> Deref for Stack<'g, 'd> {
    type Target = Io<'g, 'd>;

    fn deref(&self) -> &Io<'g, 'd> {
        &self.io
    }
}
