//! Logging: human-readable on a terminal and JSON otherwise, on stderr; plus a JSON log file
//! (`log.path`) rotated by size (`log.max_file_size`), keeping `log.backup_count` old files
//! (`infernet_node.log.1` is the newest), like Ritual's node.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, IsTerminal, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogConfig;

/// A file that rotates when the next write would make it larger than `max_size`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    backups: u64,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, max_size: u64, backups: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            backups,
            file,
            size,
        })
    }

    fn backup(&self, i: u64) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.backups == 0 {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
        } else {
            let _ = fs::remove_file(self.backup(self.backups));
            for i in (1..self.backups).rev() {
                let from = self.backup(i);
                if from.exists() {
                    fs::rename(&from, self.backup(i + 1))?;
                }
            }
            fs::rename(&self.path, self.backup(1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Installs the global subscriber: stderr (level from `RUST_LOG`, default info) and, when
/// `log` is given, the rotating JSON file (debug for the node's own modules, info otherwise).
/// Returns a warning to print when the log file cannot be opened.
pub fn init(log: Option<&LogConfig>) -> Option<String> {
    let console_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let console = if io::stderr().is_terminal() {
        tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_filter(console_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(io::stderr)
            .with_filter(console_filter)
            .boxed()
    };
    let mut warning = None;
    let file =
        log.and_then(
            |log| match RotatingFile::open(Path::new(&log.path), log.max_file_size, log.backup_count) {
                Ok(f) => Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_ansi(false)
                        .with_writer(Mutex::new(f))
                        .with_filter(EnvFilter::new("info,infernet_node=debug,infernet_router=debug"))
                        .boxed(),
                ),
                Err(e) => {
                    warning = Some(format!(
                        "cannot write the log file {}: {e}; logging to stderr only",
                        log.path
                    ));
                    None
                }
            },
        );
    let _ = tracing_subscriber::registry().with(console).with(file).try_init();
    warning
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_size_limit_and_keeps_backup_count_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        let line = [b'x'; 39];
        for i in 0..12u8 {
            let mut l = line.to_vec();
            l[0] = b'a' + i;
            l.push(b'\n');
            f.write_all(&l).unwrap();
        }
        f.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["node.log", "node.log.1", "node.log.2"]);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 100, "{name} is {len} bytes");
        }
        // Two 40-byte lines per file; the newest lines are in node.log, older ones in .1, .2.
        let current = fs::read_to_string(&path).unwrap();
        assert!(current.starts_with('k') && current.contains("\nl"), "{current}");
        assert!(
            fs::read_to_string(dir.path().join("node.log.1"))
                .unwrap()
                .starts_with('i')
        );
        assert!(
            fs::read_to_string(dir.path().join("node.log.2"))
                .unwrap()
                .starts_with('g')
        );
    }
}
