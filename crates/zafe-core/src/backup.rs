//! The backup file format (R-OPS-8): what `zafe operator backup` writes and
//! `zafe operator restore` reads. Pure: bytes in, frames out; no I/O.
//!
//! A backup is exactly what storage holds (ciphertext, wrapped keys, the seal
//! configuration with share digests, the audit chain and its checkpoints),
//! never a key or a plaintext: it is useless without the unseal keys.
//!
//! ```text
//! file    = MAGIC frame* trailer
//! frame   = tag:u8 length:u32be payload[length]
//! 'H'     header: JSON (format, created_us, server_id, backend, counts, audit head)
//! 'E'     entry: key_len:u32be key generation:i64be value
//! 'A'     audit row: seq:i64be time_us:i64be (len:u32be bytes){prev_hash, hash, mac} body
//! 'C'     checkpoint: id:i64be seq:i64be time_us:i64be (len:u32be bytes){hash, kind, public_key} signature
//! trailer = 'Z' 32:u32be SHA-256(every byte before the trailer)
//! ```
//!
//! The header comes first, then every entry (by key), every audit row (by
//! sequence number), every checkpoint (by sequence number and id), then the
//! trailer; nothing may follow it. [`Reader`] checks all of that, the counts
//! against the header, and the hash, and yields [`Frame::End`] only once the
//! trailer's hash matched: a consumer writes nothing durable before it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::AuditCheckpoint;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 12] = b"ZAFE-BACKUP\n";
/// The version of the format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest frame a reader accepts (a stored value is far smaller).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

const TAG_HEADER: u8 = b'H';
const TAG_ENTRY: u8 = b'E';
const TAG_AUDIT: u8 = b'A';
const TAG_CHECKPOINT: u8 = b'C';
const TAG_TRAILER: u8 = b'Z';

/// The self-describing start of a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// When the snapshot was taken, in microseconds since the Unix epoch.
    pub created_us: i64,
    /// The server id (identity key hash) of the server that took it.
    #[serde(default)]
    pub server_id: String,
    /// The storage backend it was read from (`sqlite`, `postgres`).
    pub backend: String,
    /// How many entries follow.
    pub entries: u64,
    /// How many audit rows follow.
    pub audit_rows: u64,
    /// How many audit checkpoints follow.
    pub checkpoints: u64,
    /// The audit chain head (newest sequence number ever appended).
    pub audit_head_seq: i64,
    /// Its hash, in hex.
    pub audit_head_hash: String,
}

/// One stored audit row, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRowRecord {
    /// Sequence number.
    pub seq: i64,
    /// Time, microseconds since the Unix epoch.
    pub time_us: i64,
    /// The predecessor's hash.
    pub prev_hash: Vec<u8>,
    /// This row's hash.
    pub hash: Vec<u8>,
    /// Its MAC.
    pub mac: Vec<u8>,
    /// Its content.
    pub body: Vec<u8>,
}

/// One unit of a backup.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// The header (always first).
    Header(Header),
    /// A stored entry: key, ciphertext, generation.
    Entry {
        /// The storage key.
        key: String,
        /// The stored bytes (ciphertext).
        value: Vec<u8>,
        /// The stored generation.
        generation: i64,
    },
    /// An audit row.
    Audit(AuditRowRecord),
    /// A signed audit checkpoint.
    Checkpoint(AuditCheckpoint),
    /// The trailer, read and its hash verified: the backup is complete.
    End,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Frame::Entry {
                key, generation, ..
            } => f
                .debug_struct("Entry")
                .field("key", key)
                .field("generation", generation)
                .finish(),
            Frame::Audit(r) => f.debug_struct("Audit").field("seq", &r.seq).finish(),
            Frame::Checkpoint(c) => f.debug_struct("Checkpoint").field("id", &c.id).finish(),
            Frame::End => f.write_str("End"),
        }
    }
}

/// Why a backup cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// Not a Zafe backup at all.
    #[error("not a Zafe backup file (bad magic)")]
    NotABackup,
    /// A format version this code does not know.
    #[error(
        "backup format version {0} is not supported (this zafe reads version {FORMAT_VERSION})"
    )]
    Version(u32),
    /// The file ends before its trailer.
    #[error("the backup is truncated: it ends before its trailer")]
    Truncated,
    /// The SHA-256 in the trailer does not match the content.
    #[error("the backup's integrity hash does not match: the file was altered or damaged")]
    HashMismatch,
    /// Something is out of place.
    #[error("the backup is malformed: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> BackupError {
    BackupError::Malformed(what.into())
}

/// Encodes frames and keeps the running hash. Every method returns the bytes
/// to write, in order.
#[derive(Default)]
pub struct Writer {
    hash: Sha256,
    started: bool,
}

impl Writer {
    /// A writer; the first call must be [`Writer::header`].
    pub fn new() -> Self {
        Self::default()
    }

    fn out(&mut self, tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(payload.len() + 5 + MAGIC.len());
        if !self.started {
            self.started = true;
            bytes.extend_from_slice(MAGIC);
        }
        bytes.push(tag);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(payload);
        self.hash.update(&bytes);
        bytes
    }

    /// The magic and the header.
    pub fn header(&mut self, header: &Header) -> Vec<u8> {
        let json = serde_json::to_vec(header).unwrap_or_default();
        self.out(TAG_HEADER, &json)
    }

    /// One frame other than the header or the end.
    pub fn frame(&mut self, frame: &Frame) -> Vec<u8> {
        let mut p = Vec::new();
        let tag = match frame {
            Frame::Header(h) => return self.header(h),
            Frame::End => return self.trailer(),
            Frame::Entry {
                key,
                value,
                generation,
            } => {
                put_bytes(&mut p, key.as_bytes());
                p.extend_from_slice(&generation.to_be_bytes());
                p.extend_from_slice(value);
                TAG_ENTRY
            }
            Frame::Audit(r) => {
                p.extend_from_slice(&r.seq.to_be_bytes());
                p.extend_from_slice(&r.time_us.to_be_bytes());
                put_bytes(&mut p, &r.prev_hash);
                put_bytes(&mut p, &r.hash);
                put_bytes(&mut p, &r.mac);
                p.extend_from_slice(&r.body);
                TAG_AUDIT
            }
            Frame::Checkpoint(c) => {
                p.extend_from_slice(&c.id.to_be_bytes());
                p.extend_from_slice(&c.seq.to_be_bytes());
                p.extend_from_slice(&c.time_us.to_be_bytes());
                put_bytes(&mut p, &c.hash);
                put_bytes(&mut p, c.kind.as_bytes());
                put_bytes(&mut p, &c.public_key);
                p.extend_from_slice(&c.signature);
                TAG_CHECKPOINT
            }
        };
        self.out(tag, &p)
    }

    /// The trailer: the SHA-256 of everything written before it.
    pub fn trailer(&mut self) -> Vec<u8> {
        let digest = std::mem::take(&mut self.hash).finalize();
        let mut bytes = vec![TAG_TRAILER];
        bytes.extend_from_slice(&32u32.to_be_bytes());
        bytes.extend_from_slice(&digest);
        bytes
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over one frame's payload.
struct Payload<'a>(&'a [u8]);

impl<'a> Payload<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        if self.0.len() < n {
            return Err(malformed("a record is cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i64(&mut self) -> Result<i64, BackupError> {
        let b = self.take(8)?;
        Ok(i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn bytes(&mut self) -> Result<&'a [u8], BackupError> {
        let b = self.take(4)?;
        let n = u32::from_be_bytes(b.try_into().unwrap_or([0; 4])) as usize;
        self.take(n)
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Where the reader is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Magic,
    Header,
    Entries,
    Audit,
    Checkpoints,
    Done,
}

/// An incremental reader: feed it bytes as they come with [`Reader::push`],
/// then call [`Reader::finish`]. It yields [`Frame::End`] only after the
/// trailer's hash matched everything before it.
pub struct Reader {
    buf: Vec<u8>,
    hash: Sha256,
    stage: Stage,
    header: Option<Header>,
    counts: (u64, u64, u64),
    last_key: Option<String>,
    last_seq: Option<i64>,
    last_checkpoint: Option<(i64, i64)>,
    consumed: u64,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader at the start of a file.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            hash: Sha256::new(),
            stage: Stage::Magic,
            header: None,
            counts: (0, 0, 0),
            last_key: None,
            last_seq: None,
            last_checkpoint: None,
            consumed: 0,
        }
    }

    /// The header, once read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// How many bytes have been decoded so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Decodes what `bytes` completes; keeps the rest for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, BackupError> {
        // Taken out of `self` while frames borrow it; an error is final.
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut at = 0;
        loop {
            let avail = &buf[at..];
            if self.stage == Stage::Done {
                if !avail.is_empty() {
                    return Err(malformed("bytes follow the trailer"));
                }
                break;
            }
            if self.stage == Stage::Magic {
                if avail.len() < MAGIC.len() {
                    if !MAGIC.starts_with(avail) {
                        return Err(BackupError::NotABackup);
                    }
                    break;
                }
                if &avail[..MAGIC.len()] != MAGIC {
                    return Err(BackupError::NotABackup);
                }
                self.hash.update(MAGIC);
                at += MAGIC.len();
                self.stage = Stage::Header;
                continue;
            }
            if avail.len() < 5 {
                break;
            }
            let tag = avail[0];
            let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
            if len > MAX_FRAME {
                return Err(malformed(format!("a frame of {len} bytes is too large")));
            }
            if avail.len() < 5 + len {
                break;
            }
            let whole = &avail[..5 + len];
            let payload = &avail[5..5 + len];
            if tag == TAG_TRAILER {
                if self.stage == Stage::Header {
                    return Err(malformed("the trailer comes before the header"));
                }
                let digest = std::mem::take(&mut self.hash).finalize();
                if payload != digest.as_slice() {
                    return Err(BackupError::HashMismatch);
                }
                self.check_counts()?;
                self.stage = Stage::Done;
                frames.push(Frame::End);
            } else {
                self.hash.update(whole);
                frames.push(self.decode(tag, payload)?);
            }
            at += 5 + len;
        }
        self.consumed += at as u64;
        buf.drain(..at);
        self.buf = buf;
        Ok(frames)
    }

    /// Checks that the whole file was read, trailer included.
    pub fn finish(&self) -> Result<(), BackupError> {
        match self.stage {
            Stage::Done => Ok(()),
            Stage::Magic if self.buf.is_empty() => Err(malformed("the file is empty")),
            Stage::Magic => Err(BackupError::NotABackup),
            _ => Err(BackupError::Truncated),
        }
    }

    fn check_counts(&self) -> Result<(), BackupError> {
        let Some(h) = &self.header else {
            return Err(malformed("no header"));
        };
        if (h.entries, h.audit_rows, h.checkpoints) != self.counts {
            return Err(malformed(format!(
                "the header announces {} entries, {} audit rows and {} checkpoints; \
                 the file holds {}, {} and {}",
                h.entries, h.audit_rows, h.checkpoints, self.counts.0, self.counts.1, self.counts.2
            )));
        }
        Ok(())
    }

    fn advance(&mut self, to: Stage) -> Result<(), BackupError> {
        if self.stage == Stage::Header || to < self.stage {
            return Err(malformed("records are out of order"));
        }
        self.stage = to;
        Ok(())
    }

    fn decode(&mut self, tag: u8, payload: &[u8]) -> Result<Frame, BackupError> {
        match tag {
            TAG_HEADER => {
                if self.stage != Stage::Header {
                    return Err(malformed("a second header"));
                }
                let header: Header = serde_json::from_slice(payload)
                    .map_err(|e| malformed(format!("unreadable header: {e}")))?;
                if header.format != FORMAT_VERSION {
                    return Err(BackupError::Version(header.format));
                }
                self.header = Some(header.clone());
                self.stage = Stage::Entries;
                Ok(Frame::Header(header))
            }
            TAG_ENTRY => {
                self.advance(Stage::Entries)?;
                let mut p = Payload(payload);
                let key = String::from_utf8(p.bytes()?.to_vec())
                    .map_err(|_| malformed("a key is not UTF-8"))?;
                let generation = p.i64()?;
                let value = p.rest().to_vec();
                if self.last_key.as_ref().is_some_and(|last| *last >= key) {
                    return Err(malformed("entries are not in ascending key order"));
                }
                self.last_key = Some(key.clone());
                self.counts.0 += 1;
                Ok(Frame::Entry {
                    key,
                    value,
                    generation,
                })
            }
            TAG_AUDIT => {
                self.advance(Stage::Audit)?;
                let mut p = Payload(payload);
                let seq = p.i64()?;
                let time_us = p.i64()?;
                let prev_hash = p.bytes()?.to_vec();
                let hash = p.bytes()?.to_vec();
                let mac = p.bytes()?.to_vec();
                let body = p.rest().to_vec();
                if self.last_seq.is_some_and(|last| last >= seq) {
                    return Err(malformed("audit rows are not in ascending order"));
                }
                self.last_seq = Some(seq);
                self.counts.1 += 1;
                Ok(Frame::Audit(AuditRowRecord {
                    seq,
                    time_us,
                    prev_hash,
                    hash,
                    mac,
                    body,
                }))
            }
            TAG_CHECKPOINT => {
                self.advance(Stage::Checkpoints)?;
                let mut p = Payload(payload);
                let id = p.i64()?;
                let seq = p.i64()?;
                let time_us = p.i64()?;
                let hash = p.bytes()?.to_vec();
                let kind = String::from_utf8(p.bytes()?.to_vec())
                    .map_err(|_| malformed("a checkpoint kind is not UTF-8"))?;
                let public_key = p.bytes()?.to_vec();
                let signature = p.rest().to_vec();
                if self.last_checkpoint.is_some_and(|last| last >= (seq, id)) {
                    return Err(malformed("checkpoints are not in ascending order"));
                }
                self.last_checkpoint = Some((seq, id));
                self.counts.2 += 1;
                Ok(Frame::Checkpoint(AuditCheckpoint {
                    id,
                    seq,
                    hash,
                    time_us,
                    kind,
                    public_key,
                    signature,
                }))
            }
            other => Err(malformed(format!("unknown record type 0x{other:02x}"))),
        }
    }
}

/// Reads a whole backup held in memory; for tests and small files.
pub fn read_all(bytes: &[u8]) -> Result<Vec<Frame>, BackupError> {
    let mut reader = Reader::new();
    let frames = reader.push(bytes)?;
    reader.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<Frame>) {
        let frames = vec![
            Frame::Header(Header {
                format: FORMAT_VERSION,
                backend: "sqlite".into(),
                entries: 2,
                audit_rows: 1,
                checkpoints: 1,
                audit_head_seq: 1,
                audit_head_hash: "00".into(),
                ..Header::default()
            }),
            Frame::Entry {
                key: "a".into(),
                value: b"ct1".to_vec(),
                generation: 7,
            },
            Frame::Entry {
                key: "b/c".into(),
                value: Vec::new(),
                generation: -3,
            },
            Frame::Audit(AuditRowRecord {
                seq: 1,
                time_us: 5,
                prev_hash: vec![0; 32],
                hash: vec![1; 32],
                mac: vec![2; 32],
                body: b"{}".to_vec(),
            }),
            Frame::Checkpoint(AuditCheckpoint {
                id: 4,
                seq: 1,
                hash: vec![1; 32],
                time_us: 6,
                kind: "periodic".into(),
                public_key: vec![3; 32],
                signature: vec![4; 64],
            }),
            Frame::End,
        ];
        let mut w = Writer::new();
        let bytes: Vec<u8> = frames.iter().flat_map(|f| w.frame(f)).collect();
        (bytes, frames)
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let (bytes, frames) = sample();
        assert_eq!(read_all(&bytes).unwrap(), frames);
        let mut r = Reader::new();
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(r.push(std::slice::from_ref(b)).unwrap());
        }
        r.finish().unwrap();
        assert_eq!(got, frames);
    }

    #[test]
    fn every_truncation_is_refused_and_end_never_seen() {
        let (bytes, _) = sample();
        for cut in 0..bytes.len() {
            let mut r = Reader::new();
            let frames = r.push(&bytes[..cut]).unwrap_or_default();
            assert!(!frames.contains(&Frame::End), "cut at {cut}");
            assert!(r.finish().is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (bytes, _) = sample();
        for i in 0..bytes.len() {
            let mut edited = bytes.clone();
            edited[i] ^= 0x01;
            assert!(read_all(&edited).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let (mut bytes, _) = sample();
        bytes.push(0);
        assert!(read_all(&bytes).is_err());
    }
}
