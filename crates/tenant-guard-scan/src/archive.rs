//! Descending into archives (zip family, tar, gzip) in memory, with limits on
//! nesting depth, total expanded bytes and per-entry expansion ratio.
//! Nothing is ever extracted to disk.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek};
use std::path::Path;
use std::rc::Rc;

use crate::Severity;
use crate::finding::{Finding, FindingKind};
use crate::walk::Visitor;

/// Limits on archive expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveLimits {
    /// How many archives deep to descend (a file inside one zip is depth 1),
    /// at most 64 (deeper nesting is reported, never followed).
    pub max_depth: usize,
    /// Total bytes that may be decompressed out of one file on disk.
    pub max_expanded_bytes: u64,
    /// Largest expansion ratio (decompressed ÷ compressed) of one entry or
    /// gzip stream; applies once an entry exceeds [`RATIO_FLOOR`] bytes.
    pub max_ratio: u64,
}

/// Entries smaller than this are never held to the expansion ratio: small
/// text compresses well without being a bomb.
pub const RATIO_FLOOR: u64 = 1 << 20;

/// The deepest nesting ever followed, whatever [`ArchiveLimits::max_depth`]
/// asks: each level is a stack frame of the walk (several KiB in a debug
/// build), and a walker thread's stack is 2 MiB. Deeper archives get the
/// usual `archive-limit` finding instead of overflowing the stack.
pub(crate) const MAX_NESTING: usize = 64;

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_depth: 8,
            max_expanded_bytes: 1 << 30,
            max_ratio: 100,
        }
    }
}

impl ArchiveLimits {
    /// Sets [`ArchiveLimits::max_depth`].
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }
    /// Sets [`ArchiveLimits::max_expanded_bytes`].
    pub fn max_expanded_bytes(mut self, bytes: u64) -> Self {
        self.max_expanded_bytes = bytes;
        self
    }
    /// Sets [`ArchiveLimits::max_ratio`].
    pub fn max_ratio(mut self, ratio: u64) -> Self {
        self.max_ratio = ratio;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Zip,
    Gzip,
    Tar,
    Plain,
}

/// Recognises an archive by its leading bytes (magic numbers).
fn sniff(head: &[u8]) -> Format {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Format::Tar
    } else {
        Format::Plain
    }
}

/// An expansion limit was hit; carried inside an `io::Error`.
#[derive(Debug)]
struct LimitExceeded {
    path: String,
    message: String,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LimitExceeded {}

/// Counts decompressed bytes against a per-entry and a per-file budget.
struct Limited<R> {
    inner: R,
    entry_left: u64,
    budget: Rc<Cell<u64>>,
    /// Set once the per-file budget ran out: nothing more of the file is read.
    spent: Rc<Cell<bool>>,
    path: String,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let n64 = n as u64;
        let message = if n64 > self.entry_left {
            "expands beyond the allowed expansion ratio; not followed (possible archive bomb)"
        } else if n64 > self.budget.get() {
            self.spent.set(true);
            "total expanded bytes limit reached; rest not scanned"
        } else {
            self.entry_left -= n64;
            self.budget.set(self.budget.get() - n64);
            return Ok(n);
        };
        Err(io::Error::other(LimitExceeded {
            path: self.path.clone(),
            message: message.into(),
        }))
    }
}

struct Walker<'v> {
    limits: ArchiveLimits,
    budget: Rc<Cell<u64>>,
    spent: Rc<Cell<bool>>,
    visitor: &'v mut dyn Visitor,
}

/// Visits the file at `path` (shown as `display`): its content, or the
/// content of every entry if it is an archive.
pub(crate) fn visit_file(
    path: &Path,
    display: &str,
    limits: ArchiveLimits,
    visitor: &mut dyn Visitor,
) {
    let mut w = Walker {
        limits,
        budget: Rc::new(Cell::new(limits.max_expanded_bytes)),
        spent: Rc::new(Cell::new(false)),
        visitor,
    };
    if let Err(e) = w.file(path, display) {
        w.report(e, display);
    }
}

/// Visits in-memory content shown as `display` (captured output, for
/// instance): its bytes, or the content of every entry if it is an archive or
/// a gzip stream, within `limits`.
pub fn visit_bytes(display: &str, bytes: &[u8], limits: ArchiveLimits, visitor: &mut dyn Visitor) {
    let mut w = Walker {
        limits,
        budget: Rc::new(Cell::new(limits.max_expanded_bytes)),
        spent: Rc::new(Cell::new(false)),
        visitor,
    };
    let mut reader = bytes;
    if let Err(e) = w.stream(display, &mut reader, Some(bytes.len() as u64), 0) {
        w.report(e, display);
    }
}

impl Walker<'_> {
    fn file(&mut self, path: &Path, display: &str) -> io::Result<()> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        let head = read_head(&mut file)?;
        if sniff(&head) == Format::Zip && self.limits.max_depth > 0 {
            file.rewind()?;
            if let Ok(zip) = zip::ZipArchive::new(file) {
                self.zip(zip, display, 1);
                return Ok(());
            }
            let mut file = File::open(path)?;
            return self.visitor.content(display, &mut file);
        }
        self.stream(display, &mut Cursor::new(head).chain(file), Some(size), 0)
    }

    /// Visits a stream that may itself be an archive. `depth` is the number
    /// of archives already entered; `packed_len` is its compressed size when known.
    fn stream(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        packed_len: Option<u64>,
        depth: usize,
    ) -> io::Result<()> {
        let head = read_head(reader)?;
        let format = sniff(&head);
        let mut reader = Cursor::new(head).chain(reader);
        if format == Format::Plain {
            return self.visitor.content(path, &mut reader);
        }
        let max_depth = self.limits.max_depth.min(MAX_NESTING);
        if depth >= max_depth {
            self.visitor.notice(Finding::notice(
                FindingKind::ArchiveLimit,
                path,
                Severity::Medium,
                format!("archive nested deeper than {max_depth} levels; not followed"),
            ));
            return Ok(());
        }
        match format {
            Format::Gzip => {
                let entry_left = packed_len.map_or(u64::MAX, |n| self.ratio_limit(n));
                let mut limited = Limited {
                    inner: flate2::read::MultiGzDecoder::new(reader),
                    entry_left,
                    budget: self.budget.clone(),
                    spent: self.spent.clone(),
                    path: path.to_string(),
                };
                // A gzip layer adds no path component: `x.tar.gz!/entry`.
                self.stream(path, &mut limited, None, depth + 1)
            }
            Format::Tar => self.tar(path, &mut reader, depth + 1),
            Format::Zip => {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes)?;
                match zip::ZipArchive::new(Cursor::new(&bytes[..])) {
                    Ok(zip) => self.zip(zip, path, depth + 1),
                    // Not a readable zip after all: scan its bytes as they are.
                    Err(_) => self.visitor.content(path, &mut &bytes[..])?,
                }
                Ok(())
            }
            Format::Plain => unreachable!("handled above"),
        }
    }

    fn ratio_limit(&self, packed: u64) -> u64 {
        packed
            .saturating_mul(self.limits.max_ratio)
            .max(RATIO_FLOOR)
    }

    fn zip<R: Read + Seek>(&mut self, mut zip: zip::ZipArchive<R>, path: &str, depth: usize) {
        for i in 0..zip.len() {
            // The per-file budget ran out (reported once, where it did): the
            // rest of the file is not read.
            if self.spent.get() {
                break;
            }
            let entry = match zip.by_index(i) {
                Ok(entry) => entry,
                Err(e) => {
                    self.unreadable(&format!("{path}!/#{i}"), &e.to_string());
                    continue;
                }
            };
            let name = entry.name().to_string();
            let entry_path = format!("{path}!/{name}");
            self.check_name(&name, &entry_path);
            if entry.is_dir() {
                continue;
            }
            let (size, packed) = (entry.size(), entry.compressed_size());
            if size > RATIO_FLOOR && size / packed.max(1) > self.limits.max_ratio {
                self.visitor.notice(Finding::notice(
                    FindingKind::ArchiveLimit,
                    &entry_path,
                    Severity::Medium,
                    format!(
                        "entry expands {size} bytes from {packed} ({}:1, limit {}:1); not followed (possible zip bomb)",
                        size / packed.max(1),
                        self.limits.max_ratio
                    ),
                ));
                continue;
            }
            let mut limited = Limited {
                inner: entry,
                entry_left: self.ratio_limit(packed),
                budget: self.budget.clone(),
                spent: self.spent.clone(),
                path: entry_path.clone(),
            };
            let result = self.stream(&entry_path, &mut limited, Some(packed), depth);
            if let Err(e) = result {
                self.report(e, &entry_path);
            }
        }
    }

    fn tar(&mut self, path: &str, reader: &mut dyn Read, depth: usize) -> io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let entry_path = format!("{path}!/{name}");
            self.check_name(&name, &entry_path);
            let kind = entry.header().entry_type();
            if kind.is_gnu_sparse() {
                // Its data is not read: say so rather than skip it silently.
                self.unreadable(&entry_path, "GNU sparse tar entry, not scanned");
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.size();
            self.stream(&entry_path, &mut entry, Some(size), depth)?;
        }
        Ok(())
    }

    /// Reports entry names that would escape the archive if extracted.
    fn check_name(&mut self, name: &str, entry_path: &str) {
        if is_traversal(name) {
            self.visitor.notice(Finding::notice(
                FindingKind::PathTraversal,
                entry_path,
                Severity::High,
                format!("archive entry name `{name}` escapes the archive (path traversal)"),
            ));
        }
    }

    fn unreadable(&mut self, path: &str, why: &str) {
        self.visitor.notice(Finding::notice(
            FindingKind::Unreadable,
            path,
            Severity::Info,
            format!("could not be read: {why}"),
        ));
    }

    /// Turns an error into a notice: an archive limit, or an unreadable file.
    fn report(&mut self, e: io::Error, path: &str) {
        if let Some(limit) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<LimitExceeded>())
        {
            let finding = Finding::notice(
                FindingKind::ArchiveLimit,
                &limit.path,
                Severity::Medium,
                limit.message.clone(),
            );
            self.visitor.notice(finding);
        } else {
            self.unreadable(path, &e.to_string());
        }
    }
}

/// True for names with a `..` component, an absolute path or a drive letter.
pub(crate) fn is_traversal(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.starts_with('/')
        || name.starts_with('\\')
        || (bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic())
        || name.split(['/', '\\']).any(|c| c == "..")
}

/// Reads up to 512 bytes (enough for every magic number we look for).
fn read_head(reader: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    reader.take(512).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_names() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "\\x",
            "C:\\x",
            "a\\..\\x",
        ] {
            assert!(is_traversal(bad), "{bad}");
        }
        for ok in ["a/b", "..a/b", "a..b", "./a"] {
            assert!(!is_traversal(ok), "{ok}");
        }
    }

    #[test]
    fn magic_numbers() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Format::Zip);
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Format::Gzip);
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Format::Tar);
        assert_eq!(sniff(b"hello"), Format::Plain);
    }

    struct Notices(Vec<Finding>, Vec<String>);

    impl Visitor for Notices {
        fn content(&mut self, path: &str, content: &mut dyn Read) -> io::Result<()> {
            self.1.push(path.to_string());
            io::copy(content, &mut io::sink()).map(|_| ())
        }
        fn notice(&mut self, finding: Finding) {
            self.0.push(finding);
        }
    }

    #[test]
    fn a_gnu_sparse_entry_is_reported_not_skipped() {
        let mut b = tar::Builder::new(Vec::new());
        // An empty sparse map: the smallest sparse entry the tar reader takes.
        for (name, kind, data) in [
            ("sparse.bin", tar::EntryType::GNUSparse, &b""[..]),
            ("plain.txt", tar::EntryType::Regular, &b"data"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(gnu) = h.as_gnu_mut() {
                gnu.set_real_size(0);
                gnu.set_is_extended(false);
            }
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut v = Notices(Vec::new(), Vec::new());
        visit_bytes("a.tar", &bytes, ArchiveLimits::default(), &mut v);
        assert_eq!(v.1, ["a.tar!/plain.txt"], "{:?}", v.0);
        assert_eq!(v.0.len(), 1, "{:?}", v.0);
        assert_eq!(v.0[0].kind, FindingKind::Unreadable);
        assert_eq!(v.0[0].path, "a.tar!/sparse.bin");
        assert!(v.0[0].message.contains("sparse"), "{}", v.0[0].message);
    }
}
