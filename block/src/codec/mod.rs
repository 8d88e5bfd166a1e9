//! Codecs: pure decoders of compressed data, with no I/O, no heap and no knowledge of images.
//! The format drivers feed them bytes they read and map their errors to [`crate`]'s own
//! (this module sits below `error`, so it has its own error types).

pub mod zstd;
