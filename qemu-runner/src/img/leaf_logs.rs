//! Recording the host files of the images `img` opens on this thread, for crash tests of whole
//! commands (`tests/tests/crash_commit.rs`): while a [`LeafRecording`] is alive, every host file
//! an image opens is handed to the block layer wrapped in a
//! [`Recording`](strata_block::dev::record::Recording) that writes a crash log of its own
//! ([`super::crashlog`]), one log per file across all of the command's opens of it, every
//! recording taking its seqs from one shared counter. One cut point then means the same instant
//! in every file's log, and [`super::replay`] rebuilds each file at it.
//!
//! Off unless a test starts it: [`active`] is one thread-local read per image open.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use strata_block::dev::record::Seq;

use super::crashlog::LogWriter;

/// The logs of one recorded run.
pub struct LeafLogs {
    dir: PathBuf,
    counter: Cell<Seq>,
    /// (canonical path of the file, its log, the log's path), in the order files were met.
    logs: RefCell<Vec<(PathBuf, Rc<LogWriter>, PathBuf)>>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Rc<LeafLogs>>> = const { RefCell::new(None) };
}

/// The recording in force on this thread, if any.
pub fn active() -> Option<Rc<LeafLogs>> {
    ACTIVE.with(|a| a.borrow().clone())
}

impl LeafLogs {
    /// The counter every recording of the run takes its seqs from.
    pub fn counter(&self) -> &Cell<Seq> {
        &self.counter
    }

    /// The log of the file at `canonical`: the one already written, or a new one.
    pub fn sink(&self, canonical: &Path) -> std::io::Result<Rc<LogWriter>> {
        let mut logs = self.logs.borrow_mut();
        if let Some((_, w, _)) = logs.iter().find(|(p, _, _)| p == canonical) {
            return Ok(w.clone());
        }
        let name = canonical
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let path = self.dir.join(format!("leaf{}-{name}.log", logs.len()));
        let w = Rc::new(LogWriter::create(&path)?);
        logs.push((canonical.to_path_buf(), w.clone(), path));
        Ok(w)
    }
}

/// A recording in force on this thread until [`LeafRecording::finish`] or drop.
pub struct LeafRecording {
    logs: Rc<LeafLogs>,
}

/// Starts recording the files of every image opened on this thread from now on, with logs in
/// `dir`. A recording already in force is replaced.
pub fn record_leaves(dir: &Path) -> LeafRecording {
    let logs = Rc::new(LeafLogs {
        dir: dir.to_path_buf(),
        counter: Cell::new(0),
        logs: RefCell::new(Vec::new()),
    });
    ACTIVE.with(|a| *a.borrow_mut() = Some(logs.clone()));
    LeafRecording { logs }
}

impl LeafRecording {
    /// The seq the next recorded event will take.
    pub fn seq(&self) -> Seq {
        self.logs.counter.get()
    }

    /// Stops recording and writes the logs out: (canonical path of each file met, its log).
    pub fn finish(self) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
        ACTIVE.with(|a| *a.borrow_mut() = None);
        let logs = self.logs.logs.borrow();
        for (_, w, _) in logs.iter() {
            w.finish()?;
        }
        Ok(logs
            .iter()
            .map(|(file, _, log)| (file.clone(), log.clone()))
            .collect())
    }
}

impl Drop for LeafRecording {
    fn drop(&mut self) {
        ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            if a.as_ref().is_some_and(|l| Rc::ptr_eq(l, &self.logs)) {
                *a = None;
            }
        });
    }
}
