//! The command line every benchmark takes: `cargo bench` passes `--bench` (the full run); `cargo test` does not
//! (the smoke size, also asked for by `--smoke`); `--dir PATH` says where local stores go.

use std::path::PathBuf;

/// A benchmark's arguments.
pub struct BenchArgs {
    /// Everything after the program's name.
    pub all: Vec<String>,
    /// The smoke size, not the full run.
    pub smoke: bool,
    /// Where local stores go (default: the system's temporary folder).
    pub dir: PathBuf,
}

impl BenchArgs {
    /// The process's arguments; `None` when a test runner only lists tests (this is no test harness, and has
    /// none to list).
    pub fn parse() -> Result<Option<Self>, String> {
        let all: Vec<String> = std::env::args().skip(1).collect();
        if all.iter().any(|arg| arg == "--list") {
            return Ok(None);
        }
        let smoke = all.iter().any(|arg| arg == "--smoke") || !all.iter().any(|arg| arg == "--bench");
        let mut args = Self { all, smoke, dir: std::env::temp_dir() };
        if let Some(dir) = args.after("--dir", 1) {
            args.dir = PathBuf::from(dir.ok_or("--dir needs a PATH")?);
        }
        Ok(Some(args))
    }

    /// With `flag` present, the argument `offset` places after it (`None` if there is none, or if it is
    /// another flag: `cargo bench` appends `--bench`); without it, `None`.
    pub fn after(&self, flag: &str, offset: usize) -> Option<Option<&str>> {
        let at = self.all.iter().position(|arg| arg == flag)?;
        Some(self.all.get(at + offset).map(String::as_str).filter(|value| !value.starts_with("--")))
    }
}
