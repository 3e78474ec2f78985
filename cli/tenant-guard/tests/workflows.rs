//! The CI files of the repository (the GitHub action and workflows, the GitLab
//! template, the pre-commit hooks) parse as YAML, and every `tenant-guard`
//! command they run exists in the real CLI with the flags they pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// The top of the repository.
fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every CI file, relative to the top: action.yml, .github/workflows/*.yml,
/// ci/gitlab/*.yml, .pre-commit-hooks.yaml.
fn ci_files() -> Vec<PathBuf> {
    let top = top();
    let mut files = vec![
        PathBuf::from("action.yml"),
        PathBuf::from(".pre-commit-hooks.yaml"),
    ];
    for dir in [".github/workflows", "ci/gitlab"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(top.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .map(|p| p.strip_prefix(&top).unwrap().to_path_buf())
            .collect();
        assert!(!found.is_empty(), "no YAML file in {dir}");
        found.sort();
        files.extend(found);
    }
    files
}

fn load(rel: &Path) -> Yaml {
    let text = std::fs::read_to_string(top().join(rel)).unwrap();
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", rel.display()));
    assert_eq!(docs.len(), 1, "{}: one document", rel.display());
    docs.remove(0)
}

/// Every shell text run by a CI file: the values (strings or lists of
/// strings) of `run`, `script`, `before_script`, `after_script` and `entry`.
fn shell_texts(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let key = k.as_str().unwrap_or_default();
                if matches!(
                    key,
                    "run" | "script" | "before_script" | "after_script" | "entry"
                ) {
                    match v {
                        Yaml::String(s) => out.push(s.clone()),
                        Yaml::Array(a) => {
                            out.extend(a.iter().filter_map(|s| s.as_str().map(str::to_string)))
                        }
                        other => panic!("{key}: not a string or a list: {other:?}"),
                    }
                } else {
                    shell_texts(v, out);
                }
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| shell_texts(v, out)),
        _ => {}
    }
}

/// A `tenant-guard` command found in shell text: the words after
/// `tenant-guard` up to the end of the command, and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invocation {
    words: Vec<String>,
    line: String,
}

/// Finds every command that runs `tenant-guard`: the word at a command's
/// position (start of a line, after `;`, `&&`, `||`, `|`, `then`, `do`,
/// `else`), not as part of a path (`cli/tenant-guard`) or an argument.
fn invocations(text: &str) -> Vec<Invocation> {
    let joined = text.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for (i, t) in tokens.iter().enumerate() {
            let at_command = i == 0
                || matches!(
                    tokens[i - 1],
                    ";" | "&&" | "||" | "|" | "then" | "do" | "else" | "(" | "{" | "!"
                )
                || tokens[i - 1].ends_with(';');
            if *t != "tenant-guard" || !at_command {
                continue;
            }
            let mut words = Vec::new();
            for w in &tokens[i + 1..] {
                if matches!(*w, ";" | "&&" | "||" | "|" | ")" | "#") {
                    break;
                }
                words.push(w.trim_end_matches(';').to_string());
                if w.ends_with(';') {
                    break;
                }
            }
            found.push(Invocation {
                words,
                line: line.trim().to_string(),
            });
        }
    }
    found
}

/// The help of `tenant-guard PATH... --help`, or why there is none.
fn help(
    path: &[String],
    cache: &mut BTreeMap<Vec<String>, Result<String, String>>,
) -> Result<String, String> {
    cache
        .entry(path.to_vec())
        .or_insert_with(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_tenant-guard"))
                .args(path)
                .arg("--help")
                .output()
                .unwrap();
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
        .clone()
}

/// The subcommands listed in a help text's `Commands:` section.
fn subcommands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Checks an invocation against the real CLI: the subcommand path leads to a
/// command (not a group of commands) whose help lists every `--flag` used.
fn validate(
    inv: &Invocation,
    cache: &mut BTreeMap<Vec<String>, Result<String, String>>,
) -> Result<(), String> {
    let mut path: Vec<String> = Vec::new();
    let mut text = help(&path, cache)?;
    let mut rest = inv.words.iter().peekable();
    while let Some(word) = rest.peek() {
        let commands = subcommands(&text);
        if commands.is_empty() {
            break;
        }
        if !commands.contains(word.as_str()) {
            return Err(format!(
                "`tenant-guard {}` has no subcommand `{word}` (it has: {commands:?})",
                path.join(" ")
            ));
        }
        path.push(rest.next().unwrap().clone());
        text = help(&path, cache).map_err(|e| format!("tenant-guard {path:?} --help: {e}"))?;
    }
    if path.is_empty() || !subcommands(&text).is_empty() {
        return Err(format!(
            "`tenant-guard {}` does not name a command",
            path.join(" ")
        ));
    }
    for word in rest {
        let Some(flag) = word.strip_prefix("--") else {
            continue;
        };
        let flag = format!("--{}", flag.split('=').next().unwrap());
        let listed = text.match_indices(&flag).any(|(i, _)| {
            !text[i + flag.len()..]
                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !listed {
            return Err(format!(
                "`tenant-guard {}` has no option {flag}",
                path.join(" ")
            ));
        }
    }
    Ok(())
}

#[test]
fn every_ci_file_parses_as_yaml_with_its_expected_shape() {
    for rel in ci_files() {
        let y = load(&rel);
        let name = rel.to_string_lossy().into_owned();
        if name == "action.yml" {
            assert_eq!(y["runs"]["using"].as_str(), Some("composite"));
            assert!(y["runs"]["steps"].as_vec().is_some_and(|s| !s.is_empty()));
            for input in [
                "sources",
                "artifacts",
                "config",
                "fail-on",
                "sarif-file",
                "upload-sarif",
            ] {
                assert!(!y["inputs"][input].is_badvalue(), "action input {input}");
            }
        } else if name.starts_with(".github/workflows/") {
            assert!(!y["on"].is_badvalue(), "{name}: no `on`");
            assert!(
                y["jobs"].as_hash().is_some_and(|j| !j.is_empty()),
                "{name}: no jobs"
            );
        } else if name.starts_with("ci/gitlab/") {
            let job = &y[".tenant-guard"];
            assert_eq!(
                job["artifacts"]["reports"]["junit"].as_str(),
                Some("tenant-guard-junit.xml"),
                "{name}"
            );
            assert_eq!(job["artifacts"]["when"].as_str(), Some("always"), "{name}");
        } else {
            let hooks = y.as_vec().unwrap_or_else(|| panic!("{name}: not a list"));
            assert!(!hooks.is_empty());
            for h in hooks {
                for key in ["id", "name", "entry", "language"] {
                    assert!(h[key].as_str().is_some(), "{name}: a hook without {key}");
                }
            }
        }
    }
}

#[test]
fn every_tenant_guard_command_exists_in_the_cli() {
    let mut cache = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for rel in ci_files() {
        let mut texts = Vec::new();
        shell_texts(&load(&rel), &mut texts);
        let name = rel.to_string_lossy().into_owned();
        for inv in texts.iter().flat_map(|t| invocations(t)) {
            if let Err(e) = validate(&inv, &mut cache) {
                panic!("{name}: {}: {e}", inv.line);
            }
            *seen.entry(name.clone()).or_default() += 1;
        }
    }
    // Each file runs tenant-guard somewhere (the workflows through the action).
    for want in [
        "action.yml",
        ".pre-commit-hooks.yaml",
        "ci/gitlab/tenant-guard.gitlab-ci.yml",
    ] {
        assert!(seen.get(want).is_some_and(|n| *n > 0), "{want}: {seen:?}");
    }
}

/// `inputs.NAME` used in an expression of the action names a declared input,
/// and the workflows pass it only declared inputs.
#[test]
fn action_inputs_are_declared_and_used_by_name() {
    let action = load(Path::new("action.yml"));
    let declared: BTreeSet<String> = action["inputs"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let text = std::fs::read_to_string(top().join("action.yml")).unwrap();
    let used = regex::Regex::new(r"inputs\.([A-Za-z0-9_-]+)").unwrap();
    for c in used.captures_iter(&text) {
        assert!(
            declared.contains(&c[1]),
            "action.yml uses undeclared inputs.{}",
            &c[1]
        );
    }
    let mut callers = 0;
    for rel in ci_files()
        .into_iter()
        .filter(|r| r.starts_with(".github/workflows"))
    {
        let y = load(&rel);
        let mut steps = Vec::new();
        for job in y["jobs"].as_hash().unwrap().values() {
            steps.extend(job["steps"].as_vec().cloned().unwrap_or_default());
        }
        for step in steps {
            let uses = step["uses"].as_str().unwrap_or_default();
            if uses == "./" || uses == "./.tenant-guard-action" {
                callers += 1;
                for key in step["with"].as_hash().into_iter().flat_map(|h| h.keys()) {
                    let key = key.as_str().unwrap();
                    assert!(
                        declared.contains(key),
                        "{}: unknown input {key}",
                        rel.display()
                    );
                }
            }
        }
    }
    assert!(
        callers >= 2,
        "ci.yml and the reusable workflow use the action"
    );
}

#[test]
fn the_extractor_finds_commands_and_the_validator_rejects_mistakes() {
    let text = "cargo install --path cli/tenant-guard --locked\n\
                echo tenant-guard ci is next\n\
                code=0\n\
                tenant-guard ci --format sarif --output \"$F\" || code=$?\n\
                if true; then tenant-guard git check --format json; fi\n\
                tenant-guard scan \\\n  --artifacts dist\n";
    let found: Vec<Vec<String>> = invocations(text).into_iter().map(|i| i.words).collect();
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        found,
        vec![
            words("ci --format sarif --output \"$F\""),
            words("git check --format json"),
            words("scan --artifacts dist"),
        ]
    );
    let mut cache = BTreeMap::new();
    let check = |line: &str, cache: &mut BTreeMap<_, _>| {
        let inv = invocations(line).pop().expect(line);
        validate(&inv, cache)
    };
    for good in [
        "tenant-guard scan",
        "tenant-guard scan --artifacts --format=json dist",
        "tenant-guard ci --format junit --output x.xml --skip git",
        "tenant-guard git check --format json",
        "tenant-guard adr check",
        "tenant-guard rules list",
    ] {
        assert_eq!(check(good, &mut cache), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("tenant-guard scna .", "no subcommand `scna`"),
        ("tenant-guard ci --formatt sarif", "no option --formatt"),
        ("tenant-guard ci --format sarif --out f", "no option --out"),
        ("tenant-guard git chek", "no subcommand `chek`"),
        ("tenant-guard git", "does not name a command"),
        ("tenant-guard", "does not name a command"),
        (
            "tenant-guard rules check --artifacts",
            "no option --artifacts",
        ),
    ] {
        let err = check(bad, &mut cache).expect_err(bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
}
