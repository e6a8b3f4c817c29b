//! Progress reporting: the CLI implements [`Progress`] with a progress bar.

/// A stage of a mining run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Listing files (total unknown: 0).
    Walk,
    /// Reading, parsing and extracting files (total: files).
    Parse,
    /// Building dataset records (total: units).
    Build,
    /// Writing files (total: files to write).
    Write,
}

impl Stage {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Walk => "walk",
            Stage::Parse => "parse",
            Stage::Build => "build",
            Stage::Write => "write",
        }
    }
}

/// Receives progress of a run. Called from several threads during parsing.
pub trait Progress: Sync {
    /// A stage starts with `total` steps (0 when unknown).
    fn start(&self, stage: Stage, total: u64) {
        let _ = (stage, total);
    }
    /// `n` more steps of the current stage are done.
    fn advance(&self, n: u64) {
        let _ = n;
    }
    /// The current stage is done.
    fn finish(&self, stage: Stage) {
        let _ = stage;
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
