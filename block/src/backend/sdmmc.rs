//! A backend as `embedded-sdmmc`'s synchronous 512-byte `BlockDevice` (feature
//! `embedded-sdmmc`): that crate's MBR and FAT16/32 code then reads and writes through the
//! whole graph (a qcow2 overlay, its backing chain, filters).
//!
//! The FAT crate blocks; each call runs its requests to completion through [`Blocking`], which
//! pumps the devices while it waits (see [`super::blocking`] for why that cannot deadlock and
//! where not to call it). Blocks are moved one request per block: `embedded-sdmmc` asks for one
//! block at a time, and each is a 512-byte `[u8]` of its own.

use embedded_sdmmc::{Block, BlockCount, BlockIdx};

use super::blocking::Blocking;
use super::stream::IoError;
use super::Backend;

/// `backend` as 512-byte blocks (a last partial block is left out).
pub struct SdmmcDevice<'b, 'g, 'd, 'p> {
    backend: &'b Backend<'g, 'd>,
    wait: Blocking<'p>,
}

impl<'b, 'g, 'd, 'p> SdmmcDevice<'b, 'g, 'd, 'p> {
    /// The device over `backend`, waiting as `wait` says.
    pub fn new(backend: &'b Backend<'g, 'd>, wait: Blocking<'p>) -> Self {
        Self { backend, wait }
    }
}

impl embedded_sdmmc::BlockDevice for SdmmcDevice<'_, '_, '_, '_> {
    type Error = IoError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), IoError> {
        let at = start.into_bytes();
        let backend = self.backend;
        self.wait
            .block_on(async {
                for (i, block) in (0u64..).zip(blocks.iter_mut()) {
                    backend.read(at + i * Block::LEN_U32 as u64, &mut block.contents).await?;
                }
                Ok(())
            })
            .map_err(IoError)
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), IoError> {
        let at = start.into_bytes();
        let backend = self.backend;
        self.wait
            .block_on(async {
                for (i, block) in (0u64..).zip(blocks.iter()) {
                    backend.write(at + i * Block::LEN_U32 as u64, &block.contents).await?;
                }
                Ok(())
            })
            .map_err(IoError)
    }

    fn num_blocks(&self) -> Result<BlockCount, IoError> {
        let blocks = self.backend.size() / u64::from(Block::LEN_U32);
        Ok(BlockCount(u32::try_from(blocks).unwrap_or(u32::MAX)))
    }
}
