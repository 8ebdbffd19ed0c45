//! The embedded store's file: an append-only log of checksummed frames.
//!
//! ```text
//! file  := MAGIC frame*
//! frame := len: u32 LE | crc32(payload): u32 LE | payload (len bytes)
//! payload := PUT record-json | DELETE job-id
//! ```
//!
//! A job's latest `PUT` is its state; a `DELETE` forgets it. Appends go to the end in one write
//! per batch, so a `kill -9` can at worst leave a torn last frame, which the next open cuts off
//! (appending the cut bytes to `<path>.damaged`). Once most of the file is superseded frames, it is
//! rewritten with only the live ones and swapped in by a rename, so a crash mid-way leaves the old
//! file whole.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// What went wrong with the store's file; the store shows it after the file's path.
#[derive(Debug, thiserror::Error)]
pub(super) enum LogError {
    /// A file operation failed; `step` says which (`cannot open`, `cannot write`, …).
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// Writing or renaming the file that replaces the log failed.
    #[error("{step} {}: {source}", path.display())]
    Replace {
        /// `cannot write` or `cannot replace`.
        step: &'static str,
        /// The file written or replaced.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// Another process holds the file's lock.
    #[error("cannot lock: {0} (is another node using this file? set store.path)")]
    Locked(String),
    /// The file does not start with this store's magic bytes.
    #[error("not an Infernet job store (a file of another program? set store.path)")]
    NotAStore,
    /// A record is over the frame limit.
    #[error("a job record of {0} bytes is too large to store")]
    TooLarge(usize),
    /// A frame's checksum does not match its payload.
    #[error("checksum mismatch")]
    Checksum,
    /// A frame's length is zero or over the limit.
    #[error("impossible frame length {0}")]
    FrameLength(u32),
    /// A frame ends before its head does, or its length runs past the end of the file.
    #[error("a torn frame")]
    Torn,
    /// A frame read back is shorter than its head.
    #[error("short frame")]
    ShortFrame,
    /// A frame read back is not as long as the index says.
    #[error("frame length mismatch")]
    LengthMismatch,
    /// A `DELETE` frame's id is not UTF-8.
    #[error("a deletion names a job id that is not UTF-8")]
    DeletionNotUtf8,
    /// A frame of an unknown kind.
    #[error("unknown frame kind {0:?}")]
    UnknownKind(Option<u8>),
    /// The frame read at a job's place is a deletion.
    #[error("not a job record")]
    NotARecord,
    /// A running job's record does not parse at recovery.
    #[error("a running job's record is unreadable: {0}")]
    Unreadable(#[source] serde_json::Error),
    /// A record could not be encoded.
    #[error("{0}")]
    Encode(#[source] io::Error),
    /// Compaction found the live records out of file order.
    #[error("compaction: records out of order")]
    OutOfOrder,
    /// A file of the earlier (redb) format could not be converted.
    #[error(transparent)]
    Legacy(#[from] super::legacy::LegacyError),
}

impl LogError {
    /// A failed file operation: `step` is what was being done.
    fn io(step: &'static str) -> impl Fn(io::Error) -> Self + Copy {
        move |source| Self::Io { step, source }
    }
}

/// First bytes of a job store file (format version 1).
const MAGIC: &[u8; 8] = b"INFJOBS1";
const FRAME_HEAD: usize = 8;
/// Largest payload a frame may claim; a larger length is damage, not data.
const MAX_PAYLOAD: u32 = 1 << 30;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Below this size the file is never compacted.
const COMPACT_MIN: u64 = 4 << 20;
/// I/O buffer of replays and compactions.
const IO_BUFFER: usize = 256 << 10;

/// Where a frame sits in the current file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    /// Offset of the frame's first byte.
    pub at: u64,
    /// Length of the whole frame.
    pub len: u32,
}

/// A frame's content, as replayed.
pub(super) enum Entry<'a> {
    /// A job record (JSON).
    Put(&'a [u8]),
    /// The job with this id is gone.
    Delete(&'a str),
}

/// The writer's end of the log: the only one that appends, compacts and swaps the file.
pub(super) struct Log {
    path: PathBuf,
    file: Arc<File>,
    /// Length of the valid part of the file; the next frame goes here.
    end: u64,
    /// Frames of the batch being written.
    batch: Vec<u8>,
    /// A failed write may have left frames past `end` that could not be cut off yet; they must
    /// go before anything else is written, or a replay would take them for records.
    dirty: bool,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens `path` for reading and writing and takes its lock, so two nodes never share a file.
fn open_locked(path: &Path, create: bool) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(LogError::io("cannot open"))?;
    file.try_lock().map_err(|e| LogError::Locked(e.to_string()))?;
    Ok(file)
}

fn sync_dir(path: &Path) {
    // Makes a rename durable; a failure only weakens durability against power loss.
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
}

/// Appends one frame to `out`; `body` writes the payload after the kind byte.
fn frame(
    out: &mut Vec<u8>,
    kind: u8,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), LogError>,
) -> Result<u32, LogError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    out.push(kind);
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let payload = &out[start + FRAME_HEAD..];
    let Some(len) = u32::try_from(payload.len()).ok().filter(|&l| l <= MAX_PAYLOAD) else {
        let size = payload.len();
        out.truncate(start);
        return Err(LogError::TooLarge(size));
    };
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(FRAME_HEAD as u32 + len)
}

/// Checks a frame's payload against the checksum in its head.
fn check(head: [u8; FRAME_HEAD], payload: &[u8]) -> Result<(), LogError> {
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if crc32fast::hash(payload) != crc {
        return Err(LogError::Checksum);
    }
    Ok(())
}

fn payload_len(head: [u8; FRAME_HEAD]) -> Result<u32, LogError> {
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 || len > MAX_PAYLOAD {
        return Err(LogError::FrameLength(len));
    }
    Ok(len)
}

fn entry(payload: &[u8]) -> Result<Entry<'_>, LogError> {
    match payload.split_first() {
        Some((&PUT, json)) => Ok(Entry::Put(json)),
        Some((&DELETE, id)) => std::str::from_utf8(id)
            .map(Entry::Delete)
            .map_err(|_| LogError::DeletionNotUtf8),
        _ => Err(LogError::UnknownKind(payload.first().copied())),
    }
}

/// Reads the record a `PUT` frame holds, checksum verified.
pub(super) fn read(file: &File, loc: Loc) -> Result<Vec<u8>, LogError> {
    let mut bytes = vec![0; loc.len as usize];
    file.read_exact_at(&mut bytes, loc.at)
        .map_err(LogError::io("cannot read"))?;
    if bytes.len() < FRAME_HEAD {
        return Err(LogError::ShortFrame);
    }
    let (head, payload) = bytes.split_at(FRAME_HEAD);
    let head: [u8; FRAME_HEAD] = head.try_into().map_err(|_| LogError::ShortFrame)?;
    if payload_len(head)? as usize != payload.len() {
        return Err(LogError::LengthMismatch);
    }
    check(head, payload)?;
    match payload.first() {
        Some(&PUT) => {
            bytes.drain(..FRAME_HEAD + 1);
            Ok(bytes)
        }
        _ => Err(LogError::NotARecord),
    }
}

impl Log {
    /// Opens (or creates) the log at `path` and replays it through `apply`, in write order. A torn
    /// or damaged tail is cut off and kept in `<path>.damaged`; a file in the store's earlier
    /// (redb) format is converted first.
    pub(super) fn open(path: &Path, mut apply: impl FnMut(Loc, Entry<'_>)) -> Result<Self, LogError> {
        let file = open_locked(path, true)?;
        // A compaction that did not finish left its half-written copy; the log itself is whole.
        // (Only once the lock is ours: the copy could be another node's, in progress.)
        let _ = std::fs::remove_file(sibling(path, ".compact"));
        let mut magic = [0u8; 8];
        let size = file.metadata().map_err(LogError::io("cannot stat"))?.len();
        if size == 0 {
            file.write_all_at(MAGIC, 0).map_err(LogError::io("cannot write"))?;
            file.sync_all().map_err(LogError::io("cannot sync"))?;
        } else {
            let read = file.read_at(&mut magic, 0).map_err(LogError::io("cannot read"))?;
            if read >= 4 && &magic[..4] == b"redb" {
                drop(file);
                super::legacy::convert(path)?;
                return Self::open(path, apply);
            }
            if read < MAGIC.len() || &magic != MAGIC {
                return Err(LogError::NotAStore);
            }
        }
        let end = Self::replay(path, &file, &mut apply)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(file),
            end,
            batch: Vec::new(),
            dirty: false,
        })
    }

    /// Replays every whole frame; returns where the valid part ends, cutting off what follows.
    fn replay(path: &Path, file: &File, apply: &mut impl FnMut(Loc, Entry<'_>)) -> Result<u64, LogError> {
        let size = file.metadata().map_err(LogError::io("cannot stat"))?.len();
        let mut reader = BufReader::with_capacity(IO_BUFFER, file);
        reader
            .seek(SeekFrom::Start(MAGIC.len() as u64))
            .map_err(LogError::io("cannot read"))?;
        let mut at = MAGIC.len() as u64;
        let mut payload = Vec::new();
        let damage = loop {
            if at == size {
                break None;
            }
            let mut head = [0u8; FRAME_HEAD];
            if size - at < FRAME_HEAD as u64 {
                break Some(LogError::Torn);
            }
            reader.read_exact(&mut head).map_err(LogError::io("cannot read"))?;
            let len = match payload_len(head) {
                Ok(len) if u64::from(len) <= size - at - FRAME_HEAD as u64 => len,
                Ok(_) => break Some(LogError::Torn),
                Err(e) => break Some(e),
            };
            payload.resize(len as usize, 0);
            reader.read_exact(&mut payload).map_err(LogError::io("cannot read"))?;
            if let Err(e) = check(head, &payload) {
                break Some(e);
            }
            let loc = Loc {
                at,
                len: FRAME_HEAD as u32 + len,
            };
            match entry(&payload) {
                Ok(e) => apply(loc, e),
                Err(e) => break Some(e),
            }
            at += u64::from(loc.len);
        };
        if let Some(reason) = damage {
            let kept = sibling(path, ".damaged");
            let mut tail = Vec::new();
            let mut cut = file;
            cut.seek(SeekFrom::Start(at))
                .and_then(|_| cut.read_to_end(&mut tail))
                .map_err(LogError::io("cannot read"))?;
            // Appended: an earlier cut's bytes stay too.
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&kept)
                .and_then(|mut f| f.write_all(&tail).and_then(|()| f.sync_all()))
                .map_err(LogError::io("cannot save the damaged tail"))?;
            file.set_len(at).map_err(LogError::io("cannot cut the damaged tail"))?;
            file.sync_all().map_err(LogError::io("cannot sync"))?;
            tracing::warn!(
                bytes = tail.len(),
                offset = at,
                kept = %kept.display(),
                "job store ended in {reason} (an interrupted write, or damage); the records before it are kept, the rest was cut off and saved"
            );
        }
        Ok(at)
    }

    /// The current file, for readers (it stays readable after a compaction replaces it).
    pub(super) fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Queues a record for the next [`Self::commit`]; `encode` writes its JSON.
    pub(super) fn put(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<(), LogError>) -> Result<Loc, LogError> {
        let at = self.end + self.batch.len() as u64;
        let len = frame(&mut self.batch, PUT, encode)?;
        Ok(Loc { at, len })
    }

    /// Queues the deletion of a job for the next [`Self::commit`].
    pub(super) fn delete(&mut self, id: impl std::fmt::Display) {
        use std::io::Write as _;
        // Written in place (no string per deletion); an id is far below the frame limit.
        let _ = frame(&mut self.batch, DELETE, |out| {
            write!(out, "{id}").map_err(LogError::Encode)
        });
    }

    /// Writes the queued frames in one write; with `sync`, waits until they are on disk. On a
    /// failure the file is cut back, so the queued frames are all lost together.
    pub(super) fn commit(&mut self, sync: bool) -> Result<(), LogError> {
        if self.dirty {
            if let Err(e) = self.file.set_len(self.end) {
                self.batch.clear();
                return Err(LogError::io("cannot cut off a failed write")(e));
            }
            self.dirty = false;
        }
        let written = self
            .file
            .write_all_at(&self.batch, self.end)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        let len = self.batch.len() as u64;
        self.batch.clear();
        match written {
            Ok(()) => {
                self.end += len;
                Ok(())
            }
            Err(e) => {
                self.dirty = self.file.set_len(self.end).is_err();
                Err(LogError::io("cannot write")(e))
            }
        }
    }

    /// Whether superseded frames make up most of a file worth compacting; `live` is the length of
    /// the frames a replay still needs.
    pub(super) fn wants_compaction(&self, live: u64) -> bool {
        self.end >= COMPACT_MIN && self.end - MAGIC.len() as u64 > 2 * live
    }

    /// Rewrites the file with only the frames at `live` (in file order) and swaps it in. Returns
    /// their new offsets, in the same order.
    pub(super) fn compact(&mut self, live: &[Loc]) -> Result<Vec<u64>, LogError> {
        let mut moved = Vec::with_capacity(live.len());
        // In file order, the old file is read once, front to back.
        let mut reader = BufReader::with_capacity(IO_BUFFER, &*self.file);
        let mut end = MAGIC.len() as u64;
        let file = swap_in(&self.path, ".compact", |writer| {
            let io = LogError::io("compaction");
            // The file's position is wherever a replay or an earlier compaction left it.
            let mut pos = reader.seek(SeekFrom::Start(0)).map_err(io)?;
            let mut bytes = Vec::new();
            for loc in live {
                let skip = loc
                    .at
                    .checked_sub(pos)
                    .and_then(|s| i64::try_from(s).ok())
                    .ok_or(LogError::OutOfOrder)?;
                reader.seek_relative(skip).map_err(io)?;
                bytes.resize(loc.len as usize, 0);
                reader.read_exact(&mut bytes).map_err(io)?;
                pos = loc.at + u64::from(loc.len);
                writer.write_all(&bytes).map_err(io)?;
                moved.push(end);
                end += u64::from(loc.len);
            }
            Ok(())
        })?;
        self.end = end;
        self.file = Arc::new(file);
        Ok(moved)
    }
}

/// Writes a new log at `<path><suffix>` (locked, so a second node doing the same fails), with
/// the magic and what `fill` writes, syncs it and renames it over `path`: what was there is
/// replaced only once the new file is whole. Answers the new file.
fn swap_in(
    path: &Path,
    suffix: &str,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), LogError>,
) -> Result<File, LogError> {
    let tmp = sibling(path, suffix);
    let written = (|| {
        let file = open_locked(&tmp, true)?;
        let io = |source| LogError::Replace {
            step: "cannot write",
            path: tmp.clone(),
            source,
        };
        file.set_len(0).map_err(io)?;
        {
            let mut writer = BufWriter::with_capacity(IO_BUFFER, &file);
            writer.write_all(MAGIC).map_err(io)?;
            fill(&mut writer)?;
            writer.flush().map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|source| LogError::Replace {
            step: "cannot replace",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    sync_dir(path);
    written
}

/// Writes a new log holding `records` (JSON) at `path`, replacing what is there only once the
/// new file is whole.
pub(super) fn create_with(path: &Path, records: &[Vec<u8>]) -> Result<(), LogError> {
    swap_in(path, ".converting", |writer| {
        let mut out = Vec::new();
        for record in records {
            out.clear();
            frame(&mut out, PUT, |o| {
                o.extend_from_slice(record);
                Ok(())
            })?;
            writer.write_all(&out).map_err(LogError::io("cannot write"))?;
        }
        Ok(())
    })
    .map(drop)
}
