//! The parallel walk over files and archives, and the scan built on it.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ignore::{WalkBuilder, WalkState};

use crate::archive::{ArchiveLimits, visit_file};
use crate::finding::{Finding, FindingKind};
use crate::{Error, RuleSet, ScanOptions, Scanner, Severity};

/// Receives what the walk finds. One visitor runs on each walker thread.
pub trait Visitor {
    /// The decoded content of one file or archive entry. `path` is relative to
    /// the scan root, with `!/` between an archive and an entry inside it.
    fn content(&mut self, path: &str, content: &mut dyn Read) -> io::Result<()>;
    /// A finding made by the walk itself: archive limits, path traversal,
    /// unreadable files.
    fn notice(&mut self, finding: Finding);
}

/// How to walk.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WalkOptions {
    /// Scan everything, ignoring `.gitignore` and `.ignore` files (build
    /// outputs). `.git` directories are always skipped.
    pub artifacts: bool,
    /// Worker threads; 0 picks one per core.
    pub threads: usize,
    /// Archive expansion limits.
    pub limits: ArchiveLimits,
    /// Files not to scan (the configuration file in use, whose rule
    /// examples would match themselves).
    pub skip_files: Vec<PathBuf>,
}

impl WalkOptions {
    /// Sets [`WalkOptions::artifacts`].
    pub fn artifacts(mut self, yes: bool) -> Self {
        self.artifacts = yes;
        self
    }
    /// Sets [`WalkOptions::threads`].
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }
    /// Adds a file to [`WalkOptions::skip_files`].
    pub fn skip_file(mut self, path: PathBuf) -> Self {
        self.skip_files.push(path);
        self
    }
    /// Sets [`WalkOptions::limits`].
    pub fn limits(mut self, limits: ArchiveLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// How a walked path is shown: relative to the root when there is one
/// directory root, else as given; always with `/` separators.
fn display_path(base: Option<&Path>, path: &Path) -> String {
    let shown = base
        .and_then(|b| path.strip_prefix(b).ok())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path);
    let s = shown.to_string_lossy().replace('\\', "/");
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

/// Walks `roots` in parallel, calling a visitor made by `make` on each worker
/// thread, and returns the visitors once every thread is done.
pub fn walk<V, F>(roots: &[PathBuf], options: &WalkOptions, make: F) -> Result<Vec<V>, Error>
where
    V: Visitor + Send,
    F: Fn() -> V + Sync,
{
    let Some((first, rest)) = roots.split_first() else {
        return Ok(Vec::new());
    };
    for root in roots {
        if std::fs::symlink_metadata(root).is_err() {
            return Err(Error::NoSuchPath(root.clone()));
        }
    }
    let base = (roots.len() == 1 && first.is_dir()).then_some(first.as_path());
    let mut builder = WalkBuilder::new(first);
    for root in rest {
        builder.add(root);
    }
    let respect = !options.artifacts;
    builder
        .hidden(false)
        .parents(respect)
        .ignore(respect)
        .git_ignore(respect)
        .git_exclude(respect)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .threads(options.threads)
        .filter_entry(|e| e.file_name() != ".git");
    let done: Mutex<Vec<V>> = Mutex::new(Vec::new());
    let limits = options.limits;
    let skip: Vec<PathBuf> = options
        .skip_files
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let skipped = |path: &Path| {
        skip.iter().any(|s| s.file_name() == path.file_name())
            && std::fs::canonicalize(path).is_ok_and(|c| skip.contains(&c))
    };
    builder.build_parallel().run(|| {
        let mut slot = Slot {
            visitor: Some(make()),
            done: &done,
        };
        Box::new(move |entry| {
            let visitor = slot.visitor.as_mut().expect("visitor present until drop");
            match entry {
                Ok(entry)
                    if entry.file_type().is_some_and(|t| t.is_file()) && !skipped(entry.path()) =>
                {
                    let shown = display_path(base, entry.path());
                    visit_file(entry.path(), &shown, limits, visitor);
                }
                Ok(_) => {}
                Err(err) => {
                    let shown = err_path(&err).map_or_else(String::new, |p| display_path(base, p));
                    visitor.notice(Finding::notice(
                        FindingKind::Unreadable,
                        &shown,
                        Severity::Info,
                        format!("could not be read: {err}"),
                    ));
                }
            }
            WalkState::Continue
        })
    });
    Ok(done.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn err_path(err: &ignore::Error) -> Option<&Path> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            err_path(err)
        }
        _ => None,
    }
}

/// Hands a thread's visitor back when the thread's closure is dropped.
struct Slot<'a, V> {
    visitor: Option<V>,
    done: &'a Mutex<Vec<V>>,
}

impl<V> Drop for Slot<'_, V> {
    fn drop(&mut self) {
        if let Some(v) = self.visitor.take() {
            self.done.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        }
    }
}

/// Live counters of a running scan, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files and archive entries scanned so far.
    pub files: AtomicU64,
    /// Content bytes scanned so far.
    pub bytes: AtomicU64,
}

/// The result of [`scan_paths`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ScanReport {
    /// Every finding, suppressed ones included, sorted by path, line,
    /// column and rule id.
    pub findings: Vec<Finding>,
    /// Files and archive entries scanned.
    pub files: u64,
    /// Content bytes scanned.
    pub bytes: u64,
}

impl ScanReport {
    /// Sorts findings into report order.
    pub fn sort(&mut self) {
        self.findings
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }

    /// Findings not suppressed.
    pub fn active(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.suppression.is_none())
    }
}

/// The visitor behind [`scan_paths`]: runs a [`Scanner`] on every content.
struct ScanVisitor {
    scanner: Scanner,
    report: ScanReport,
    progress: Option<Arc<Progress>>,
}

struct Counting<'a> {
    inner: &'a mut dyn Read,
    bytes: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl Visitor for ScanVisitor {
    fn content(&mut self, path: &str, content: &mut dyn Read) -> io::Result<()> {
        let mut counting = Counting {
            inner: content,
            bytes: 0,
        };
        let result = self
            .scanner
            .scan_reader(path, &mut counting, &mut self.report.findings);
        self.report.files += 1;
        self.report.bytes += counting.bytes;
        if let Some(p) = &self.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
            p.bytes.fetch_add(counting.bytes, Ordering::Relaxed);
        }
        result
    }

    fn notice(&mut self, finding: Finding) {
        self.report.findings.push(finding);
    }
}

/// Scans `roots` (files and directories, archives included) with `rules`,
/// in parallel, and returns the sorted findings.
pub fn scan_paths(
    roots: &[PathBuf],
    walk_options: &WalkOptions,
    rules: Arc<RuleSet>,
    scan_options: &ScanOptions,
    progress: Option<Arc<Progress>>,
) -> Result<ScanReport, Error> {
    let prototype = Scanner::new(rules, scan_options.clone());
    let visitors = walk(roots, walk_options, || ScanVisitor {
        scanner: prototype.clone(),
        report: ScanReport::default(),
        progress: progress.clone(),
    })?;
    let mut report = ScanReport::default();
    for v in visitors {
        report.findings.extend(v.report.findings);
        report.files += v.report.files;
        report.bytes += v.report.bytes;
    }
    report.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_paths() {
        let base = Path::new("/r");
        assert_eq!(display_path(Some(base), Path::new("/r/a/b.txt")), "a/b.txt");
        assert_eq!(display_path(None, Path::new("./a/b.txt")), "a/b.txt");
        assert_eq!(display_path(Some(base), Path::new("/r")), "/r");
    }
}
