//! Logging: human-readable on a terminal and JSON otherwise, on stderr; plus a JSON log file
//! (`log.path`) rotated by size (`log.max_file_size`), keeping `log.backup_count` old files
//! (`infernet_node.log.1` is the newest), like Ritual's node. The last lines at `info` and above
//! are also kept in memory ([`recent`], bounded in lines and bytes) for `GET /admin/logs`, so an
//! operator can see why something failed without a shell. No log line carries a secret: URLs are
//! logged redacted and keys never.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, IsTerminal, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
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

/// Lines kept for `GET /admin/logs`.
const RECENT_LINES: usize = 2000;
/// Longest line kept (longer ones are cut).
const RECENT_LINE_BYTES: usize = 4096;

/// The last log lines, newest last.
#[derive(Debug, Default)]
pub struct RecentLogs {
    lines: Mutex<VecDeque<RecentLine>>,
}

/// One kept line.
#[derive(Debug, Clone)]
pub struct RecentLine {
    /// When it was written.
    pub at: jiff::Timestamp,
    /// 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub level: u8,
    /// The line as JSON (as the log file has it).
    pub line: String,
}

/// A log level's rank (`error` 1 … `trace` 5), from its name in any case.
pub fn level_rank(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "error" => 1,
        "warn" | "warning" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => return None,
    })
}

impl RecentLogs {
    fn push(&self, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let text = text.trim_end();
        let mut cut = text.len().min(RECENT_LINE_BYTES);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let level = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
            .iter()
            .position(|l| text.contains(&format!("\"level\":\"{l}\"")))
            .map_or(3, |i| i as u8 + 1);
        let mut lines = self.lines.lock().expect("recent logs poisoned");
        if lines.len() == RECENT_LINES {
            lines.pop_front();
        }
        lines.push_back(RecentLine {
            at: jiff::Timestamp::now(),
            level,
            line: text[..cut].to_string(),
        });
    }

    /// Lines written after `since` at `level` or more severe, at most `limit`, the newest ones.
    pub fn read(&self, since: Option<jiff::Timestamp>, level: u8, limit: usize) -> Vec<RecentLine> {
        let lines = self.lines.lock().expect("recent logs poisoned");
        let mut out: Vec<RecentLine> = lines
            .iter()
            .rev()
            .filter(|l| l.level <= level && since.is_none_or(|s| l.at > s))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// One event's text, handed to the ring when the formatter is done with it.
struct RecentWriter {
    logs: Arc<RecentLogs>,
    buf: Vec<u8>,
}

impl Write for RecentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buf.len() < RECENT_LINE_BYTES * 2 {
            self.buf.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RecentWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.logs.push(&self.buf);
        }
    }
}

static RECENT: OnceLock<Arc<RecentLogs>> = OnceLock::new();

/// The lines kept for `GET /admin/logs` (empty until [`init`] ran, as in tests).
pub fn recent() -> Arc<RecentLogs> {
    RECENT.get_or_init(Arc::default).clone()
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
    let logs = recent();
    let kept = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_ansi(false)
        .with_writer(move || RecentWriter {
            logs: logs.clone(),
            buf: Vec::new(),
        })
        .with_filter(EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file)
        .with(kept)
        .try_init();
    warning
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lines_are_bounded_and_read_by_time_and_level() {
        let logs = RecentLogs::default();
        logs.push(br#"{"level":"INFO","message":"first"}"#);
        let between = jiff::Timestamp::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        logs.push(br#"{"level":"WARN","message":"second"}"#);
        logs.push(br#"{"level":"DEBUG","message":"third"}"#);
        let all = logs.read(None, 5, 10);
        assert_eq!(all.iter().map(|l| l.level).collect::<Vec<_>>(), [3, 2, 4]);
        let warn = logs.read(None, level_rank("warn").unwrap(), 10);
        assert_eq!(warn.len(), 1);
        assert!(warn[0].line.contains("second"));
        assert_eq!(logs.read(Some(between), 3, 10).len(), 1, "only the line after `since`");
        assert_eq!(
            logs.read(None, 5, 1)[0].line,
            r#"{"level":"DEBUG","message":"third"}"#,
            "the newest"
        );
        for _ in 0..RECENT_LINES + 10 {
            logs.push(&vec![b'x'; RECENT_LINE_BYTES * 3]);
        }
        let kept = logs.read(None, 5, usize::MAX);
        assert_eq!(kept.len(), RECENT_LINES);
        assert!(kept.iter().all(|l| l.line.len() <= RECENT_LINE_BYTES));
        assert_eq!(level_rank("Warning"), Some(2));
        assert_eq!(level_rank("loud"), None);
    }

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
