//! `img rebase`: changes the backing file a qcow2 image names, like `qemu-img rebase`.
//!
//! `-u` (unsafe) only rewrites the name and format in the header (QEMU's
//! `bdrv_change_backing_file`; the block layer lays the header cluster out anew:
//! [`strata_block::driver::qcow2::relink`]). `-b ""` (or `-u` without `-b`) removes the backing
//! file. A new backing file needs its format (`-F`), as qemu-img 10 requires. Safe mode, which
//! copies into the image what differs between the old and the new backing file before the
//! header changes, is not built yet: it is refused with a message naming `-u`.

use super::args::Args;
use super::image::{self, block_on, OpenOptions};
use super::ImgError;

/// Runs `img rebase [-f FMT] [--image-opts] [-t CACHE] [-T CACHE] [-p] [-q] [-U] [-u] [-b
/// BACKING] [-F FMT] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "-F", "-b", "-t", "-T"], &["--image-opts", "-u", "-p", "-q", "-U", "-c"])?;
    let [file] = args.exactly(1, "FILE")? else { return Err(ImgError::usage("expected one FILE".into())) };
    let unsafe_mode = args.has("-u");
    let given = args.value("-b");
    if !unsafe_mode && given.is_none() {
        return Err(ImgError::usage("Must specify backing file (-b) or use unsafe mode (-u)".into()));
    }
    let backing = given.filter(|b| !b.is_empty());
    let format = args.value("-F").filter(|_| backing.is_some());
    let shown = backing.unwrap_or("");
    if backing.is_some() && format.is_none() {
        return Err(ImgError::failed(format!("Could not change the backing file to '{shown}': backing format must be specified")));
    }
    if !unsafe_mode {
        return Err(ImgError::failed("img rebase: safe mode (copying what differs) is not supported yet; -u rewrites the header only".into()));
    }
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        // The header only: the old backing file need not exist (QEMU's BDRV_O_NO_BACKING).
        no_backing: true,
        ..args.image_options()?
    };
    image::with_image(file, &opts, |img| {
        let graph = img.backend.graph();
        let root = img.root();
        let Some(q) = graph.state(root).ok().flatten().and_then(|s| s.qcow2()) else {
            return Err(ImgError::failed(format!("Could not change the backing file to '{shown}': Operation not supported")));
        };
        let _drained = block_on(img.backend.drain());
        block_on(q.change_backing_file(&graph.io(), root, backing, format))
            .map_err(|e| ImgError::failed(format!("Could not change the backing file to '{shown}': {e}")))
    })
}
