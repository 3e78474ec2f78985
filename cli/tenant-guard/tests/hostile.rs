//! Hostile trees for the real `tenant-guard scan` binary (issue 9): symlink
//! loops, a 1 GiB single-line file, deeply nested archives, archive bombs
//! the existing tests do not cover (the per-file expansion budget, sizes
//! that lie), and unreadable files and directories.

#[allow(dead_code)]
mod util;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use util::{Dir, fixture_findings, gzip_bytes, stderr, tar_bytes, token, zip_bytes};

/// Runs `tenant-guard ARGS` in `dir`; fails the test (and kills the child)
/// if it has not exited within `limit`.
fn run_within(dir: &Path, args: &[&str], limit: Duration) -> Output {
    run_cmd(
        Command::new(env!("CARGO_BIN_EXE_tenant-guard")),
        dir,
        args,
        limit,
    )
}

fn run_cmd(mut cmd: Command, dir: &Path, args: &[&str], limit: Duration) -> Output {
    let child = cmd
        .args(args)
        .current_dir(dir)
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("tenant-guard {args:?} did not finish within {limit:?}");
        }
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad json ({e}): {}", stderr(out)))
}

/// `(path, kind)` of the fixture findings and walk notices.
fn kinds(json: &serde_json::Value) -> Vec<(String, String)> {
    fixture_findings(json)
        .into_iter()
        .map(|f| (f.0, f.4))
        .collect()
}

#[cfg(unix)]
#[test]
fn symlink_loops_end_and_the_rest_of_the_tree_is_scanned_once() {
    use std::os::unix::fs::symlink;
    let d = Dir::new();
    d.write("src/app.py", format!("KEY = \"{}\"\n", token(1)));
    let p = d.path();
    symlink(".", p.join("src/here")).unwrap(); // a directory loop
    symlink("..", p.join("src/up")).unwrap(); // up to the root
    symlink(p, p.join("src/abs")).unwrap(); // absolute loop to the root
    symlink("a", p.join("b")).unwrap(); // two links to each other
    symlink("b", p.join("a")).unwrap();
    symlink("self", p.join("self")).unwrap(); // a link to itself
    for args in [
        &["scan", "--format", "json"][..],
        &["scan", "--format", "json", "--artifacts"][..],
        &["scan", "--format", "json", ".", "self", "a"][..],
    ] {
        let started = Instant::now();
        let out = run_within(p, args, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let json = json_of(&out);
        // The real file once, under its real path; no path through a link.
        // A loop given as a root cannot be resolved: reported, not followed.
        let mut want = vec![("src/app.py".to_string(), "secret".to_string())];
        if args.contains(&"self") {
            want.insert(0, ("a".into(), "unreadable".into()));
            want.insert(1, ("self".into(), "unreadable".into()));
        }
        assert_eq!(kinds(&json), want, "{args:?}");
        for f in json["findings"].as_array().unwrap() {
            if f["kind"] == "unreadable" {
                assert!(
                    f["message"].as_str().unwrap().contains("symbolic links"),
                    "{f}"
                );
            }
        }
        eprintln!("{args:?}: {:?}", started.elapsed());
    }
}

/// Writes a file of `len` bytes that is one line: printable text at the
/// start and end, a hole (NUL bytes, not stored on disk) in between, and a
/// fixture token as the last bytes. The first 8 KiB hold no NUL, so the
/// scanner treats the file as text: a single line of `len` bytes.
fn one_line_file(path: &Path, len: u64) {
    let head = format!("{}{}", token(40), " 0123456789abcdef".repeat(1024));
    let tail = format!(" {}", token(41));
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    f.seek(SeekFrom::Start(len - tail.len() as u64)).unwrap();
    f.write_all(tail.as_bytes()).unwrap();
    assert_eq!(f.metadata().unwrap().len(), len);
}

/// Runs a scan of the one-line file under `/usr/bin/time` and returns
/// `(report, peak RSS in KiB, elapsed)`.
fn scan_one_line(len: u64) -> (serde_json::Value, u64, Duration) {
    let d = Dir::new();
    one_line_file(&d.path().join("bundle.min.js"), len);
    let time = Path::new("/usr/bin/time");
    assert!(time.exists(), "/usr/bin/time measures the peak RSS");
    let rss_file = d.path().join("rss.txt");
    let mut cmd = Command::new(time);
    cmd.arg("-o")
        .arg(&rss_file)
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_tenant-guard"));
    let started = Instant::now();
    let out = run_cmd(
        cmd,
        d.path(),
        &["scan", "--format", "json", "bundle.min.js"],
        Duration::from_secs(600),
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rss_kib: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (json_of(&out), rss_kib, took)
}

fn check_one_line(len: u64, json: &serde_json::Value, rss_kib: u64) {
    let f = fixture_findings(json);
    let tail_col = len - token(41).len() as u64 + 1;
    assert_eq!(
        f.iter()
            .map(|f| (f.0.as_str(), f.1, f.2, f.3.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("bundle.min.js", 1, 1, "fixture-token"),
            ("bundle.min.js", 1, tail_col, "fixture-token"),
        ],
        "both tokens found, on line 1, at their byte columns"
    );
    assert_eq!(json["summary"]["bytes"].as_u64(), Some(len));
    assert!(
        rss_kib < 300 * 1024,
        "peak RSS {} MiB for a {} MiB line",
        rss_kib / 1024,
        len >> 20
    );
}

/// About 20 s in a debug build (the file is sparse: no 1 GiB written to
/// disk), peak RSS about 60 MiB.
#[test]
fn a_1_gib_single_line_file_is_scanned_in_bounded_memory() {
    let len = 1 << 30;
    let (json, rss, took) = scan_one_line(len);
    eprintln!("1 GiB line: peak RSS {} MiB in {took:?}", rss / 1024);
    check_one_line(len, &json, rss);
}

/// `depth` archives nested in each other, built by `wrap`, with a fixture
/// token in a text file at the bottom.
fn nested(depth: usize, wrap: impl Fn(&str, &[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut inner = format!("v = \"{}\"\n", token(50)).into_bytes();
    for level in (1..=depth).rev() {
        inner = wrap(&format!("l{level}"), &inner);
    }
    inner
}

fn zip_wrap(name: &str, inner: &[u8]) -> Vec<u8> {
    zip_bytes(&[(name, inner)])
}

fn tar_wrap(name: &str, inner: &[u8]) -> Vec<u8> {
    tar_bytes(&[(name, inner)])
}

fn gz_wrap(_: &str, inner: &[u8]) -> Vec<u8> {
    gzip_bytes(inner)
}

#[test]
fn deeply_nested_archives_stop_at_the_depth_limit_without_overflowing() {
    const DEPTH: usize = 300;
    let d = Dir::new();
    d.write("deep.zip", nested(DEPTH, zip_wrap));
    d.write("deep.tar", nested(DEPTH, tar_wrap));
    d.write("deep.gz", nested(DEPTH, gz_wrap));
    d.write("ok.txt", format!("{}\n", token(51)));

    // Default limit (8): one archive-limit finding per file at depth 8,
    // nothing deeper read, the rest of the tree scanned.
    let out = run_within(
        d.path(),
        &["scan", "--format", "json"],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = kinds(&json_of(&out));
    // The eighth archive inside the file is not opened (a gzip layer adds
    // no path component).
    let eight: String = (1..=8).map(|l| format!("!/l{l}")).collect();
    let limit = || "archive-limit".to_string();
    let mut want = vec![
        ("deep.gz".to_string(), limit()),
        (format!("deep.tar{eight}"), limit()),
        (format!("deep.zip{eight}"), limit()),
        ("ok.txt".to_string(), "secret".to_string()),
    ];
    want.sort();
    assert_eq!(got, want);

    // Asked to follow all 300 levels, the walk still stops at its ceiling
    // of 64 levels, reported like any depth limit: never a crash (300
    // nested tar files overflowed a walker thread's stack before the
    // ceiling existed).
    let high = DEPTH.to_string();
    let ceiling: String = (1..=64).map(|l| format!("!/l{l}")).collect();
    for (file, shown) in [
        ("deep.zip", format!("deep.zip{ceiling}")),
        ("deep.tar", format!("deep.tar{ceiling}")),
        ("deep.gz", "deep.gz".to_string()),
    ] {
        let args = [
            "scan",
            "--format",
            "json",
            "--max-archive-depth",
            &high,
            file,
        ];
        let out = run_within(d.path(), &args, Duration::from_secs(300));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: exit {:?} (a crash?): {}",
            out.status,
            stderr(&out)
        );
        let json = json_of(&out);
        assert_eq!(kinds(&json), vec![(shown, limit())], "{file}");
        let message = json["findings"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("deeper than 64 levels"),
            "{file}: {message}"
        );
    }
}

#[test]
fn an_archive_over_the_expansion_budget_is_reported_and_the_scan_goes_on() {
    // Sixteen entries of 1 MiB of varied text: each compresses modestly (far
    // under the ratio limit), together they exceed a 4 MiB budget.
    let entry = |n: usize| -> Vec<u8> {
        let mut x = n as u32 + 1;
        let mut v: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[(x >> 16) as usize % 38]
            })
            .collect();
        v.extend_from_slice(format!("\n{}\n", token(60 + n)).as_bytes());
        v
    };
    let entries: Vec<(String, Vec<u8>)> = (0..16)
        .map(|n| (format!("e{n:02}.txt"), entry(n)))
        .collect();
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_slice()))
        .collect();
    let d = Dir::new();
    d.write("many.zip", zip_bytes(&refs));
    d.write("after.txt", format!("{}\n", token(59)));
    let out = run_within(
        d.path(),
        &[
            "scan",
            "--format",
            "json",
            "--max-expanded-bytes",
            "4194304",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = kinds(&json_of(&out));
    let limits: Vec<&(String, String)> = got.iter().filter(|k| k.1 == "archive-limit").collect();
    assert_eq!(limits.len(), 1, "one budget finding: {got:?}");
    assert!(limits[0].0.starts_with("many.zip!/e0"), "{got:?}");
    let secrets: Vec<&str> = got
        .iter()
        .filter(|k| k.1 == "secret")
        .map(|k| k.0.as_str())
        .collect();
    // The entries before the budget ran out (at most 4 of 1 MiB), and the
    // file after the archive.
    assert!(secrets.contains(&"after.txt"), "{got:?}");
    assert!(
        (2..=5).contains(&secrets.len()),
        "entries scanned within the budget only: {got:?}"
    );
}

/// A zip whose directory (and local header) declare a small entry that
/// really inflates to 8 MiB: the declared-size check passes, the count of
/// bytes actually produced stops it.
#[test]
fn a_zip_entry_lying_about_its_size_is_stopped_while_inflating() {
    let mut big = vec![b'0'; 8 << 20];
    big.extend_from_slice(format!("\n{}\n", token(70)).as_bytes());
    let mut zip = zip_bytes(&[("liar.txt", &big)]);
    let real = (big.len() as u32).to_le_bytes();
    let fake = 1000u32.to_le_bytes();
    // Uncompressed size: local header offset 22, central directory offset
    // 24 (after its signature `PK\1\2`).
    assert_eq!(&zip[22..26], &real);
    zip[22..26].copy_from_slice(&fake);
    let cd = zip
        .windows(4)
        .position(|w| w == b"PK\x01\x02")
        .expect("a central directory");
    assert_eq!(&zip[cd + 24..cd + 28], &real);
    zip[cd + 24..cd + 28].copy_from_slice(&fake);
    let d = Dir::new();
    d.write("liar.zip", &zip);
    d.write("z.txt", format!("{}\n", token(71)));
    let out = run_within(
        d.path(),
        &["scan", "--format", "json"],
        Duration::from_secs(60),
    );
    let got = kinds(&json_of(&out));
    assert_eq!(
        got,
        vec![
            (
                "liar.zip!/liar.txt".to_string(),
                "archive-limit".to_string()
            ),
            ("z.txt".to_string(), "secret".to_string()),
        ],
        "{}",
        stderr(&out)
    );
}

/// An unprivileged user to run the scan as, so that permissions apply (the
/// tests run as root, which reads any file whatever its mode).
fn unprivileged() -> Option<Command> {
    let setpriv = Path::new("/usr/bin/setpriv");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return Some(Command::new(env!("CARGO_BIN_EXE_tenant-guard")));
    }
    if !setpriv.exists() {
        return None;
    }
    let mut c = Command::new(setpriv);
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_tenant-guard"));
    Some(c)
}

#[cfg(unix)]
#[test]
fn unreadable_files_and_directories_are_reported_and_the_scan_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let Some(cmd) = unprivileged() else {
        eprintln!("skipped: running as root without /usr/bin/setpriv");
        return;
    };
    let d = Dir::new();
    d.write("a/readable.py", format!("K = \"{}\"\n", token(80)));
    d.write("b/locked.py", format!("K = \"{}\"\n", token(81)));
    d.write("c/inside.py", format!("K = \"{}\"\n", token(82)));
    d.write("d/zz.py", format!("K = \"{}\"\n", token(83)));
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(d.path().join(p), std::fs::Permissions::from_mode(m)).unwrap();
    };
    // The unprivileged user may enter and read everything but these two.
    for dir in ["", "a", "b", "d"] {
        mode(dir, 0o755);
    }
    for file in ["tenant-guard.toml", "a/readable.py", "d/zz.py"] {
        mode(file, 0o644);
    }
    mode("b/locked.py", 0o000);
    mode("c", 0o000);
    let out = run_cmd(
        cmd,
        d.path(),
        &["scan", "--format", "json"],
        Duration::from_secs(60),
    );
    mode("c", 0o755); // let the temp dir be removed
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = json_of(&out);
    let got = kinds(&json);
    assert_eq!(
        got,
        vec![
            ("a/readable.py".to_string(), "secret".to_string()),
            ("b/locked.py".to_string(), "unreadable".to_string()),
            ("c".to_string(), "unreadable".to_string()),
            ("d/zz.py".to_string(), "secret".to_string()),
        ]
    );
    for f in json["findings"].as_array().unwrap() {
        if f["kind"] == "unreadable" {
            assert_eq!(f["severity"], "info", "{f}");
            assert!(
                f["message"].as_str().unwrap().contains("ermission denied"),
                "{f}"
            );
        }
    }
}
