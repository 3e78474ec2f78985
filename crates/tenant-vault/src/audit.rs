//! The audit trail: a hash chain of one record per request, allowed or
//! denied, in the store (and optionally a JSON-lines file).
//!
//! Records hold who (token id), what (operation, tenant, path, version) and
//! how it ended, never a value or a token. Each record's hash covers the
//! previous record's hash, its position and its fields, so that altering,
//! deleting or reordering a stored record breaks the chain at that record.
//!
//! Writing is fail-closed. A mutation first flushes every pending record
//! (if that fails, nothing is changed); its own record is then appended by
//! the store inside the mutation's transaction, so a change is never stored
//! without its record (see [`Pending`]). A refused mutation's record is
//! written before the refusal is returned. A read's record is appended to a
//! buffer that is written in groups by a writer thread (woken every 128
//! records, and at the latest 50 ms later), and once writing fails every
//! request is refused until the trail can be written again.
//!
//! The JSON-lines file is a copy of the stored chain from the point the file
//! was started: after every write the records past the file's last one are
//! read back from the store and appended, in order, so the file stays a
//! contiguous, verifiable slice of the chain even when records were
//! committed by a mutation's own transaction, by another process sharing the
//! store, or just before a crash (the copy catches up when the vault opens).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{AuditEntry, AuditRecord, Store, Timestamp};

/// Records that wake the writer thread.
const GROUP: usize = 128;
/// Records pending before a request writes them itself (backpressure when
/// the writer thread cannot keep up).
const BACKLOG: usize = 65_536;
/// Longest time a read's record waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Records read back from the store per query when copying to the file.
const COPY_PAGE: usize = 1024;

/// A mutation's audit record on its way into the store, which appends it in
/// the mutation's own transaction when the change applies. The vault marks
/// it written when the store reports the change applied; anything else
/// (a refusal, an error) the session records itself.
#[derive(Debug)]
pub(crate) struct Pending {
    entry: AuditEntry,
    written: Cell<bool>,
}

impl Pending {
    pub(crate) fn new(entry: AuditEntry) -> Self {
        Pending {
            entry,
            written: Cell::new(false),
        }
    }

    /// The entry to hand to the store, if there is one.
    pub(crate) fn entry(p: Option<&Pending>) -> Option<&AuditEntry> {
        p.map(|p| &p.entry)
    }

    /// Marks the record as committed with the change.
    pub(crate) fn written(p: Option<&Pending>) {
        if let Some(p) = p {
            p.written.set(true);
        }
    }

    pub(crate) fn is_written(&self) -> bool {
        self.written.get()
    }

    /// The record of an outcome the store did not append.
    pub(crate) fn into_entry(self, version: Option<u64>, outcome: String) -> AuditEntry {
        AuditEntry {
            version,
            outcome,
            ..self.entry
        }
    }
}

/// The hash of record `seq` following `prev`.
pub(crate) fn chain_hash(prev: &[u8], seq: u64, e: &AuditEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    let version = e
        .version
        .map(|v| v.to_be_bytes().to_vec())
        .unwrap_or_default();
    let fields: [&[u8]; 11] = [
        b"tenant-vault/audit/v1",
        prev,
        &seq.to_be_bytes(),
        &e.time.0.to_be_bytes(),
        e.request_id.as_bytes(),
        e.principal.as_bytes(),
        e.tenant.as_bytes(),
        e.operation.as_bytes(),
        e.path.as_bytes(),
        &version,
        e.outcome.as_bytes(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    h.finalize().into()
}

/// What is wrong with a chain, at which record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditProblem {
    /// The record's fields no longer match its hash.
    Altered {
        /// The record.
        seq: u64,
    },
    /// Records are missing before this one.
    Missing {
        /// First missing position.
        from: u64,
        /// Last missing position.
        to: u64,
    },
    /// The record does not follow the one before it (reordered, or the one
    /// before was replaced).
    OutOfOrder {
        /// The record.
        seq: u64,
    },
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditProblem::Altered { seq } => write!(f, "record {seq} was altered"),
            AuditProblem::Missing { from, to } if from == to => {
                write!(f, "record {from} is missing (deleted)")
            }
            AuditProblem::Missing { from, to } => {
                write!(f, "records {from} to {to} are missing (deleted)")
            }
            AuditProblem::OutOfOrder { seq } => write!(
                f,
                "record {seq} does not follow the record before it (reordered or replaced)"
            ),
        }
    }
}

/// Checks a chain from its first record. Returns the number of records, or
/// the first problem found.
pub fn verify_chain(records: impl IntoIterator<Item = AuditRecord>) -> Result<u64, AuditProblem> {
    let mut expected = 1u64;
    let mut prev = vec![0u8; 32];
    for r in records {
        if r.seq > expected {
            return Err(AuditProblem::Missing {
                from: expected,
                to: r.seq - 1,
            });
        }
        if r.seq < expected || r.prev_hash != prev {
            return Err(AuditProblem::OutOfOrder { seq: r.seq });
        }
        if chain_hash(&r.prev_hash, r.seq, &r.entry)[..] != r.hash[..] {
            return Err(AuditProblem::Altered { seq: r.seq });
        }
        prev = r.hash;
        expected += 1;
    }
    Ok(expected - 1)
}

/// One line of the JSON-lines sink.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    time: String,
    time_ms: i64,
    request_id: String,
    principal: String,
    tenant: String,
    operation: String,
    path: String,
    version: Option<u64>,
    outcome: String,
    prev_hash: String,
    hash: String,
}

impl Line {
    fn from_record(r: &AuditRecord) -> Line {
        Line {
            seq: r.seq,
            time: r.entry.time.to_rfc3339(),
            time_ms: r.entry.time.0,
            request_id: r.entry.request_id.clone(),
            principal: r.entry.principal.clone(),
            tenant: r.entry.tenant.clone(),
            operation: r.entry.operation.clone(),
            path: r.entry.path.clone(),
            version: r.entry.version,
            outcome: r.entry.outcome.clone(),
            prev_hash: hex::encode(&r.prev_hash),
            hash: hex::encode(&r.hash),
        }
    }

    fn into_record(self) -> Option<AuditRecord> {
        Some(AuditRecord {
            seq: self.seq,
            entry: AuditEntry {
                time: Timestamp(self.time_ms),
                request_id: self.request_id,
                principal: self.principal,
                tenant: self.tenant,
                operation: self.operation,
                path: self.path,
                version: self.version,
                outcome: self.outcome,
            },
            prev_hash: hex::decode(self.prev_hash).ok()?,
            hash: hex::decode(self.hash).ok()?,
        })
    }
}

/// Renders a record as one JSON line (no trailing newline).
pub fn audit_record_json(r: &AuditRecord) -> String {
    serde_json::to_string(&Line::from_record(r)).unwrap_or_default()
}

/// Verifies a JSON-lines audit file written by the sink. The file may start
/// later than record 1 (when the sink was added to a running vault): the
/// check starts at its first record.
pub fn verify_audit_file(path: &Path) -> Result<Result<u64, AuditProblem>> {
    let f = File::open(path).map_err(|e| Error::storage("reading the audit file", e))?;
    let mut records = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::storage("reading the audit file", e))?;
        let rec = serde_json::from_str::<Line>(&line)
            .ok()
            .and_then(Line::into_record)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("audit file line {} is not an audit record", i + 1))
            })?;
        records.push(rec);
    }
    let Some(first) = records.first() else {
        return Ok(Ok(0));
    };
    // Rebase so the first record of the file is checked against its own
    // stated predecessor.
    let (start, start_prev) = (first.seq, first.prev_hash.clone());
    let mut expected = start;
    let mut prev = start_prev;
    for r in records {
        if r.seq > expected {
            return Ok(Err(AuditProblem::Missing {
                from: expected,
                to: r.seq - 1,
            }));
        }
        if r.seq < expected || r.prev_hash != prev {
            return Ok(Err(AuditProblem::OutOfOrder { seq: r.seq }));
        }
        if chain_hash(&r.prev_hash, r.seq, &r.entry)[..] != r.hash[..] {
            return Ok(Err(AuditProblem::Altered { seq: r.seq }));
        }
        prev = r.hash;
        expected += 1;
    }
    Ok(Ok(expected - start))
}

/// The JSON-lines copy of the chain and the last record it holds.
struct Sink {
    file: File,
    seq: u64,
}

impl Sink {
    /// Appends the stored records past the file's last one.
    fn catch_up(&mut self, store: &dyn Store) -> Result<()> {
        loop {
            let records = store.audit_records(self.seq, COPY_PAGE)?;
            let Some(last) = records.last().map(|r| r.seq) else {
                return Ok(());
            };
            let mut text = String::new();
            for r in &records {
                text.push_str(&audit_record_json(r));
                text.push('\n');
            }
            self.file
                .write_all(text.as_bytes())
                .and_then(|()| self.file.flush())
                .map_err(|e| Error::storage("writing the audit file", e))?;
            self.seq = last;
            if records.len() < COPY_PAGE {
                return Ok(());
            }
        }
    }
}

/// The sequence number of the last record in an audit file, if it has one.
fn last_seq_in(file: &mut File) -> Result<Option<u64>> {
    let err = |e| Error::storage("reading the audit file", e);
    let len = file.seek(SeekFrom::End(0)).map_err(err)?;
    let from = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(from)).map_err(err)?;
    let mut tail = String::new();
    file.read_to_string(&mut tail).map_err(err)?;
    let Some(line) = tail.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Ok(None);
    };
    serde_json::from_str::<Line>(line)
        .ok()
        .and_then(Line::into_record)
        .map(|r| Some(r.seq))
        .ok_or_else(|| {
            Error::InvalidArgument("the audit file's last line is not an audit record".into())
        })
}

struct Inner {
    store: Arc<dyn Store>,
    pending: Mutex<Vec<AuditEntry>>,
    /// Wakes the writer thread when a group is pending.
    wake: Condvar,
    /// Serializes writing so records keep their order.
    writing: Mutex<Option<Sink>>,
    /// Set while the trail cannot be written.
    failed: AtomicBool,
}

impl Inner {
    fn flush(&self) -> Result<()> {
        let mut sink = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let appended = if batch.is_empty() {
            Ok(())
        } else {
            self.store.append_audit(&batch).map(drop)
        };
        let written = appended.and_then(|()| match sink.as_mut() {
            Some(sink) => sink.catch_up(&*self.store),
            None => Ok(()),
        });
        match written {
            Ok(()) => {
                self.failed.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(e) if batch.is_empty() => {
                self.failed.store(true, Ordering::SeqCst);
                Err(Error::AuditUnavailable(e.to_string()))
            }
            Err(e) => {
                // Keep the records, in order, ahead of anything newer.
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let newer = std::mem::replace(&mut *pending, batch);
                pending.extend(newer);
                self.failed.store(true, Ordering::SeqCst);
                Err(Error::AuditUnavailable(e.to_string()))
            }
        }
    }
}

/// Writes the audit trail for a vault.
pub(crate) struct Auditor {
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    /// The writer thread, joined on drop: once a vault is dropped nothing
    /// of it writes to the store or the audit file any more.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Auditor {
    pub(crate) fn new(store: Arc<dyn Store>, file: Option<&PathBuf>) -> Result<Auditor> {
        let sink = match file {
            Some(p) => {
                let mut file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::storage("opening the audit file", e))?;
                // Continue the file where it stops (copying what was
                // committed after it, say before a crash); a new file starts
                // at the current end of the chain. A file that runs ahead of
                // the store belongs to another vault: it is not continued.
                let stored = store.last_audit_seq()?;
                let seq = match last_seq_in(&mut file)? {
                    Some(seq) if seq <= stored => seq,
                    Some(seq) => {
                        return Err(Error::InvalidArgument(format!(
                            "the audit file {} ends at record {seq}, past this vault's last record ({stored}): it is another vault's",
                            p.display()
                        )));
                    }
                    None => stored,
                };
                let mut sink = Sink { file, seq };
                sink.catch_up(&*store)?;
                Some(sink)
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            store,
            pending: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            writing: Mutex::new(sink),
            failed: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let stop_flag = Arc::clone(&stop);
        let writer = std::thread::Builder::new()
            .name("tenant-vault-audit".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    let Some(inner) = weak.upgrade() else { break };
                    {
                        let pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
                        if pending.len() < GROUP {
                            drop(
                                inner
                                    .wake
                                    .wait_timeout(pending, FLUSH_EVERY)
                                    .unwrap_or_else(|p| p.into_inner()),
                            );
                        }
                    }
                    if stop_flag.load(Ordering::Relaxed) {
                        break;
                    }
                    // A failure is remembered in `failed`; requests see it.
                    let _ = inner.flush();
                }
            })
            .map_err(|e| Error::storage("starting the audit writer", e))?;
        Ok(Auditor {
            inner,
            stop,
            writer: Some(writer),
        })
    }

    /// Refuses when the trail is known to be unwritable (after trying again).
    fn check(&self) -> Result<()> {
        if self.inner.failed.load(Ordering::SeqCst) {
            self.inner.flush()?;
        }
        Ok(())
    }

    /// Records a request whose effect is already decided (a read or a denial).
    pub(crate) fn record(&self, entry: AuditEntry) -> Result<()> {
        self.check()?;
        let len = {
            let mut p = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.push(entry);
            p.len()
        };
        if len >= BACKLOG {
            self.inner.flush()?;
        } else if len == GROUP {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Writes everything pending now.
    pub(crate) fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// After a mutation committed its own record: copies it to the audit
    /// file, if there is one (without a file there is nothing to do; pending
    /// read records keep to the writer thread's schedule). A failure is
    /// remembered and refuses the next request.
    pub(crate) fn committed(&self) {
        let has_file = self
            .inner
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if has_file {
            let _ = self.inner.flush();
        }
    }

    /// Records a mutation's outcome (one its store did not append) and waits
    /// until it is written.
    pub(crate) fn record_now(&self, entry: AuditEntry) -> Result<()> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
        self.inner.flush()
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        {
            // Taken so the writer is either waiting (and gets the wake-up)
            // or has not yet checked the flag (and will see it).
            let _pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            self.inner.wake.notify_one();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time: Timestamp(i as i64),
            request_id: format!("r{i}"),
            principal: "tok_1".into(),
            tenant: "acme".into(),
            operation: "get".into(),
            path: "tenant/acme/x".into(),
            version: Some(i),
            outcome: "ok".into(),
        }
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut prev = vec![0u8; 32];
        (1..=n)
            .map(|seq| {
                let e = entry(seq);
                let hash = chain_hash(&prev, seq, &e).to_vec();
                let r = AuditRecord {
                    seq,
                    entry: e,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify_chain(chain(5)), Ok(5));
        assert_eq!(verify_chain(Vec::new()), Ok(0));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let mut c = chain(5);
        c[2].entry.outcome = "denied".into();
        assert_eq!(verify_chain(c), Err(AuditProblem::Altered { seq: 3 }));

        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify_chain(c),
            Err(AuditProblem::Missing { from: 2, to: 2 })
        );

        let mut c = chain(5);
        c.swap(1, 2);
        let (a, b) = (c[1].seq, c[2].seq);
        c[1].seq = b;
        c[2].seq = a;
        assert_eq!(verify_chain(c), Err(AuditProblem::OutOfOrder { seq: 2 }));

        // Re-hashing an altered record does not help: the next link breaks.
        let mut c = chain(5);
        c[2].entry.path = "tenant/acme/other".into();
        c[2].hash = chain_hash(&c[2].prev_hash, 3, &c[2].entry).to_vec();
        assert_eq!(verify_chain(c), Err(AuditProblem::OutOfOrder { seq: 4 }));
    }
}
