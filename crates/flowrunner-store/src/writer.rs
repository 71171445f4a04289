//! The single group-commit journal writer.

/// Default most writes committed in one transaction.
pub const DEFAULT_MAX_BATCH: usize = 512;
