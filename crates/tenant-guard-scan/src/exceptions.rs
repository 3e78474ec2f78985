//! The exceptions register, `docs/adr_exceptions.md`: every exception to the
//! rules, each with the reason it exists and the date it must be withdrawn by.
//! Suppressions name these ids; a scan accepts a suppression only while its
//! exception is in the register and not past its withdrawal date.
//!
//! The format (the reference is the exceptions register section of
//! `docs/SCANNER.md`):
//!
//! ```text
//! # Exceptions register            (any text before the first `## ` line)
//!
//! ## ADR-001: Example rule files hold intended example secrets
//! - Date: 2026-11-23
//! - Context: what the rule would otherwise report
//! - Cause: why it cannot be fixed now
//! - Decision: what is suppressed, and how
//! - Withdrawal: the plan to remove the exception by 2027-05-31
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::{Error, ExceptionId, Validity};

/// Where the register is looked for, relative to the scan root.
pub const DEFAULT_REGISTER_PATH: &str = "docs/adr_exceptions.md";

/// The header written at the top of a new register.
pub const REGISTER_HEADER: &str = "\
# Exceptions register

Every exception to the tenant-guard rules. Suppressions (inline
`tenant-guard:allow ADR-NNN`, baselines, path allowlists) name an id from
this file; an exception past its withdrawal date no longer suppresses.
Format: see the exceptions register section of docs/SCANNER.md. Add entries
with `tenant-guard adr new`, check the file with `tenant-guard adr check`.
";

/// The fields every entry has, each exactly once, in any order.
const FIELDS: [&str; 5] = ["Date", "Context", "Cause", "Decision", "Withdrawal"];

/// A calendar date written `YYYY-MM-DD` (ISO 8601, four-digit year).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsoDate {
    year: u16,
    month: u8,
    day: u8,
}

impl IsoDate {
    /// The date `year-month-day`, if it exists (years 1 to 9999).
    pub fn new(year: u16, month: u8, day: u8) -> Option<IsoDate> {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        ((1..=9999).contains(&year) && (1..=days).contains(&day)).then_some(IsoDate {
            year,
            month,
            day,
        })
    }

    /// Parses exactly `YYYY-MM-DD`: four, two and two ASCII digits.
    pub fn parse(s: &str) -> Option<IsoDate> {
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return None;
        }
        IsoDate::new(
            s[0..4].parse().ok()?,
            s[5..7].parse().ok()?,
            s[8..10].parse().ok()?,
        )
    }

    /// Today's date in UTC, from the system clock.
    pub fn today_utc() -> IsoDate {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        IsoDate::from_unix_days(i64::try_from(secs / 86_400).unwrap_or(0))
    }

    /// The date `days` days after 1970-01-01 (a proleptic Gregorian calendar).
    fn from_unix_days(days: i64) -> IsoDate {
        // Howard Hinnant's `civil_from_days`.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        IsoDate {
            year: u16::try_from(year.clamp(1, 9999)).unwrap_or(1),
            month: month as u8,
            day: day as u8,
        }
    }
}

impl FromStr for IsoDate {
    type Err = String;
    fn from_str(s: &str) -> Result<IsoDate, String> {
        IsoDate::parse(s).ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD)"))
    }
}

impl fmt::Display for IsoDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One entry of the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// Its id, from the heading `## ADR-NNN: title`.
    pub id: ExceptionId,
    /// The heading's title.
    pub title: String,
    /// The 1-based line of its heading.
    pub line: usize,
    /// `Date`: when the exception was recorded.
    pub date: IsoDate,
    /// `Context`: what the rules would otherwise report.
    pub context: String,
    /// `Cause`: why the finding cannot simply be fixed.
    pub cause: String,
    /// `Decision`: what is suppressed, and how.
    pub decision: String,
    /// `Withdrawal`: the plan to remove the exception (without its date).
    pub withdrawal_plan: String,
    /// `Withdrawal`: the last day the exception is in force.
    pub withdraw_by: IsoDate,
}

impl fmt::Display for Exception {
    /// Writes the entry in register format, heading first, ending with a
    /// line break.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "## {}: {}", self.id, self.title)?;
        writeln!(f, "- Date: {}", self.date)?;
        writeln!(f, "- Context: {}", self.context)?;
        writeln!(f, "- Cause: {}", self.cause)?;
        writeln!(f, "- Decision: {}", self.decision)?;
        writeln!(
            f,
            "- Withdrawal: {} by {}",
            self.withdrawal_plan, self.withdraw_by
        )
    }
}

/// What is wrong with a register entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A `## ` heading that is not `## ADR-NNN: title`.
    MalformedHeading,
    /// The heading's id is not `ADR-` followed by three or more digits.
    MalformedId,
    /// The id was already used by the entry whose heading is on `first_line`.
    DuplicateId {
        /// The line of the first entry with this id.
        first_line: usize,
    },
    /// A required field is absent.
    MissingField(&'static str),
    /// A field is given twice.
    DuplicateField(&'static str),
    /// A field is given with no value.
    EmptyField(&'static str),
    /// A `- Name: value` line whose name is not a field of the format.
    UnknownField(String),
    /// A date that is not `YYYY-MM-DD`, or not a real day.
    MalformedDate {
        /// The field holding it.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// A `Withdrawal` that is not `<plan> by YYYY-MM-DD`.
    MalformedWithdrawal,
    /// A line inside an entry that is neither a field, a field's
    /// continuation (indented) nor blank.
    UnexpectedLine,
    /// The withdrawal date is before today.
    Expired {
        /// The entry's withdrawal date.
        withdraw_by: IsoDate,
        /// The day the register was checked against.
        today: IsoDate,
    },
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::MalformedHeading => f.write_str("heading is not `## ADR-NNN: title`"),
            ProblemKind::MalformedId => {
                f.write_str("malformed id: expected ADR- followed by 3 or more digits")
            }
            ProblemKind::DuplicateId { first_line } => {
                write!(f, "duplicate id: already used on line {first_line}")
            }
            ProblemKind::MissingField(name) => write!(f, "missing field `{name}`"),
            ProblemKind::DuplicateField(name) => write!(f, "field `{name}` given twice"),
            ProblemKind::EmptyField(name) => write!(f, "field `{name}` is empty"),
            ProblemKind::UnknownField(name) => write!(
                f,
                "unknown field `{name}` (fields: Date, Context, Cause, Decision, Withdrawal)"
            ),
            ProblemKind::MalformedDate { field, value } => {
                write!(f, "malformed date `{value}` in `{field}`: expected YYYY-MM-DD")
            }
            ProblemKind::MalformedWithdrawal => {
                f.write_str("`Withdrawal` must be `<plan> by YYYY-MM-DD`")
            }
            ProblemKind::UnexpectedLine => f.write_str(
                "unexpected line: expected `- Field: value`, an indented continuation or a blank line",
            ),
            ProblemKind::Expired { withdraw_by, today } => write!(
                f,
                "withdrawal date {withdraw_by} is in the past (today is {today}): withdraw the exception or record a new one"
            ),
        }
    }
}

/// One problem of the register: where, in which entry, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterProblem {
    /// The 1-based line it was found on (an entry's heading for a missing
    /// field, duplicate id or expiry).
    pub line: usize,
    /// The entry's id as written in its heading (possibly malformed).
    pub id: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for RegisterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.id, self.kind)
    }
}

/// A parsed, well-formed register.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Register {
    exceptions: Vec<Exception>,
}

/// An entry while it is being read: its heading and the fields seen so far.
struct RawEntry {
    line: usize,
    heading: String,
    fields: [Option<(usize, String)>; FIELDS.len()],
}

impl Register {
    /// Parses register text. Every structural problem of every entry is
    /// returned at once, in line order; expiry is not checked here (see
    /// [`Register::expired`] and [`check_register`]).
    pub fn parse(text: &str) -> Result<Register, Vec<RegisterProblem>> {
        let (exceptions, problems) = parse_entries(text);
        if problems.is_empty() {
            Ok(Register { exceptions })
        } else {
            Err(problems)
        }
    }

    /// Reads and parses a register file: [`Error::Io`] when it cannot be
    /// read, [`Error::Register`] when it is malformed.
    pub fn load(path: &Path) -> Result<Register, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Register::parse(&text).map_err(|problems| Error::Register {
            origin: path.display().to_string(),
            problems,
        })
    }

    /// The entries, in file order.
    pub fn exceptions(&self) -> &[Exception] {
        &self.exceptions
    }

    /// The entry with this id.
    pub fn get(&self, id: &ExceptionId) -> Option<&Exception> {
        self.exceptions.iter().find(|e| &e.id == id)
    }

    /// A [`RegisterProblem`] of kind [`ProblemKind::Expired`] for every
    /// entry whose withdrawal date is before `today`.
    pub fn expired(&self, today: IsoDate) -> Vec<RegisterProblem> {
        self.exceptions
            .iter()
            .filter(|e| e.withdraw_by < today)
            .map(|e| RegisterProblem {
                line: e.line,
                id: e.id.to_string(),
                kind: ProblemKind::Expired {
                    withdraw_by: e.withdraw_by,
                    today,
                },
            })
            .collect()
    }

    /// Whether a suppression naming `id` applies on `today`: the exception
    /// must be in the register and `today` must not be after its withdrawal
    /// date. The reason of a [`Validity::Invalid`] becomes the finding's note.
    pub fn validity(&self, id: &ExceptionId, today: IsoDate) -> Validity {
        match self.get(id) {
            None => Validity::Invalid(format!(
                "exception {id} is not in the exceptions register: the finding is not suppressed"
            )),
            Some(e) if e.withdraw_by < today => Validity::Invalid(format!(
                "exception {id} expired after its withdrawal date {}: the finding is no longer suppressed",
                e.withdraw_by
            )),
            Some(_) => Validity::Valid,
        }
    }

    /// The id after the highest one in use, with at least three digits
    /// (`ADR-001` for an empty register).
    pub fn next_id(&self) -> ExceptionId {
        // An id may have any number of digits: compare them as numbers of
        // any size (without leading zeros: by length, then digit by digit),
        // so that a huge id neither overflows nor is overlooked.
        let highest = self
            .exceptions
            .iter()
            .map(|e| e.id.as_str()["ADR-".len()..].trim_start_matches('0'))
            .max_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
            .unwrap_or("");
        let id = format!("ADR-{:0>3}", increment_decimal(highest));
        ExceptionId::parse(&id).unwrap_or_else(|| unreachable!("{id} is well-formed"))
    }
}

/// `digits` (ASCII decimal digits, `""` for zero) plus one, in decimal.
fn increment_decimal(digits: &str) -> String {
    let mut out = digits.as_bytes().to_vec();
    let mut i = out.len();
    loop {
        if i == 0 {
            out.insert(0, b'1');
            break;
        }
        i -= 1;
        if out[i] == b'9' {
            out[i] = b'0';
        } else {
            out[i] += 1;
            break;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| unreachable!("ASCII digits"))
}

/// What `tenant-guard adr new` records: an entry without its id and date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionDraft {
    /// The heading's title.
    pub title: String,
    /// `Context`.
    pub context: String,
    /// `Cause`.
    pub cause: String,
    /// `Decision`.
    pub decision: String,
    /// `Withdrawal`: the plan.
    pub withdrawal_plan: String,
    /// `Withdrawal`: the date.
    pub withdraw_by: IsoDate,
}

/// Appends `draft` to the register `text` (empty for a new file, which then
/// starts with [`REGISTER_HEADER`]) under the next free id, dated `today`.
/// Returns the id and the new text, which is checked to parse.
///
/// Fails with [`Error::Register`] (origin `origin`) if `text` is malformed,
/// and with [`Error::Exception`] if the withdrawal date is before `today` or
/// a field is empty or spans lines.
pub fn append_exception(
    origin: &str,
    text: &str,
    draft: &ExceptionDraft,
    today: IsoDate,
) -> Result<(ExceptionId, String), Error> {
    let register = Register::parse(text).map_err(|problems| Error::Register {
        origin: origin.to_string(),
        problems,
    })?;
    if draft.withdraw_by < today {
        return Err(Error::Exception(format!(
            "the withdrawal date {} is in the past (today is {today})",
            draft.withdraw_by
        )));
    }
    for (name, value) in [
        ("title", &draft.title),
        ("context", &draft.context),
        ("cause", &draft.cause),
        ("decision", &draft.decision),
        ("withdrawal", &draft.withdrawal_plan),
    ] {
        if value.trim().is_empty() {
            return Err(Error::Exception(format!("the {name} is empty")));
        }
        if value.contains(['\n', '\r']) {
            return Err(Error::Exception(format!("the {name} must be one line")));
        }
    }
    let exception = Exception {
        id: register.next_id(),
        title: draft.title.trim().to_string(),
        line: 0,
        date: today,
        context: draft.context.trim().to_string(),
        cause: draft.cause.trim().to_string(),
        decision: draft.decision.trim().to_string(),
        withdrawal_plan: draft.withdrawal_plan.trim().to_string(),
        withdraw_by: draft.withdraw_by,
    };
    let mut out = if text.trim().is_empty() {
        REGISTER_HEADER.to_string()
    } else {
        text.to_string()
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&exception.to_string());
    match Register::parse(&out) {
        Ok(r) if r.get(&exception.id).is_some() => Ok((exception.id, out)),
        Ok(_) => Err(Error::Exception(
            "the new entry could not be read back".to_string(),
        )),
        Err(problems) => Err(Error::Register {
            origin: format!("{origin} (with the new entry)"),
            problems,
        }),
    }
}

/// Every problem of register `text` on `today`: the structural ones of
/// [`Register::parse`] and the expiry of every well-formed entry, in line
/// order. Empty when the register is clean.
pub fn check_register(text: &str, today: IsoDate) -> Vec<RegisterProblem> {
    let (exceptions, mut problems) = parse_entries(text);
    problems.extend(Register { exceptions }.expired(today));
    problems.sort_by_key(|p| p.line);
    problems
}

/// Reads every entry; returns the well-formed ones and every problem.
fn parse_entries(text: &str) -> (Vec<Exception>, Vec<RegisterProblem>) {
    let mut exceptions = Vec::new();
    let mut problems = Vec::new();
    let mut first_lines: HashMap<String, usize> = HashMap::new();
    let mut current: Option<RawEntry> = None;
    // The field a continuation line would extend.
    let mut open_field: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end();
        if let Some(heading) = line.strip_prefix("## ").or((line == "##").then_some("")) {
            if let Some(entry) = current.take() {
                finish(entry, &mut first_lines, &mut exceptions, &mut problems);
            }
            current = Some(RawEntry {
                line: line_no,
                heading: heading.trim().to_string(),
                fields: Default::default(),
            });
            open_field = None;
            continue;
        }
        let Some(entry) = current.as_mut() else {
            continue; // the preamble is free text
        };
        let problem = |kind| RegisterProblem {
            line: line_no,
            id: entry_id(&entry.heading).to_string(),
            kind,
        };
        if line.is_empty() {
            open_field = None;
        } else if let Some(item) = line.strip_prefix("- ") {
            open_field = None;
            let Some((name, value)) = item.split_once(':') else {
                problems.push(problem(ProblemKind::UnexpectedLine));
                continue;
            };
            let name = name.trim();
            let Some(k) = FIELDS.iter().position(|f| *f == name) else {
                problems.push(problem(ProblemKind::UnknownField(name.to_string())));
                continue;
            };
            if entry.fields[k].is_some() {
                problems.push(problem(ProblemKind::DuplicateField(FIELDS[k])));
                continue;
            }
            entry.fields[k] = Some((line_no, value.trim().to_string()));
            open_field = Some(k);
        } else if let (Some(k), true) = (open_field, line.starts_with("  ")) {
            if let Some((_, value)) = entry.fields[k].as_mut() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(line.trim());
            }
        } else {
            problems.push(problem(ProblemKind::UnexpectedLine));
        }
    }
    if let Some(entry) = current.take() {
        finish(entry, &mut first_lines, &mut exceptions, &mut problems);
    }
    problems.sort_by_key(|p| p.line);
    (exceptions, problems)
}

/// The id part of a heading: up to the first `:`, or the first word.
fn entry_id(heading: &str) -> &str {
    match heading.split_once(':') {
        Some((id, _)) => id.trim(),
        None => heading.split_whitespace().next().unwrap_or(""),
    }
}

/// Validates a complete entry and adds it or its problems.
fn finish(
    entry: RawEntry,
    first_lines: &mut HashMap<String, usize>,
    exceptions: &mut Vec<Exception>,
    problems: &mut Vec<RegisterProblem>,
) {
    let raw_id = entry_id(&entry.heading).to_string();
    let before = problems.len();
    let mut problem = |line, kind| {
        problems.push(RegisterProblem {
            line,
            id: raw_id.clone(),
            kind,
        })
    };
    let title = entry
        .heading
        .split_once(':')
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if title.is_none() {
        problem(entry.line, ProblemKind::MalformedHeading);
    }
    let id = ExceptionId::parse(&raw_id);
    if id.is_none() {
        problem(entry.line, ProblemKind::MalformedId);
    }
    if let Some(first_line) = first_lines.get(&raw_id) {
        problem(
            entry.line,
            ProblemKind::DuplicateId {
                first_line: *first_line,
            },
        );
    } else if !raw_id.is_empty() {
        first_lines.insert(raw_id.clone(), entry.line);
    }
    let mut values: [String; FIELDS.len()] = Default::default();
    for (k, field) in entry.fields.iter().enumerate() {
        match field {
            None => problem(entry.line, ProblemKind::MissingField(FIELDS[k])),
            Some((line, v)) if v.is_empty() => problem(*line, ProblemKind::EmptyField(FIELDS[k])),
            Some((_, v)) => values[k].clone_from(v),
        }
    }
    let line_of = |k: usize| entry.fields[k].as_ref().map_or(entry.line, |f| f.0);
    let [date, context, cause, decision, withdrawal] = values;
    let date = if date.is_empty() {
        None
    } else {
        let parsed = IsoDate::parse(&date);
        if parsed.is_none() {
            problem(
                line_of(0),
                ProblemKind::MalformedDate {
                    field: "Date",
                    value: date,
                },
            );
        }
        parsed
    };
    let withdrawal = if withdrawal.is_empty() {
        None
    } else {
        match withdrawal.rsplit_once(" by ") {
            Some((plan, by)) if !plan.trim().is_empty() => match IsoDate::parse(by.trim()) {
                Some(d) => Some((plan.trim().to_string(), d)),
                None => {
                    problem(
                        line_of(4),
                        ProblemKind::MalformedDate {
                            field: "Withdrawal",
                            value: by.trim().to_string(),
                        },
                    );
                    None
                }
            },
            _ => {
                problem(line_of(4), ProblemKind::MalformedWithdrawal);
                None
            }
        }
    };
    if problems.len() != before {
        return;
    }
    if let (Some(id), Some(title), Some(date), Some((withdrawal_plan, withdraw_by))) =
        (id, title, date, withdrawal)
    {
        exceptions.push(Exception {
            id,
            title,
            line: entry.line,
            date,
            context,
            cause,
            decision,
            withdrawal_plan,
            withdraw_by,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> IsoDate {
        IsoDate::parse(s).unwrap()
    }

    const GOOD: &str = "\
# Exceptions register

Free text before the first entry is ignored.
- even a list item

## ADR-001: Example rule files hold example secrets
- Date: 2026-11-23
- Context: the rule files
  continue here
- Cause: examples must match
- Decision: allowlist policies/rules/**
- Withdrawal: per-rule example hashes by 2027-05-31

## ADR-012: Another one
- Withdrawal: remove it by 2030-01-01
- Decision: d
- Cause: c
- Context: c
- Date: 2026-01-02
";

    /// The `(line, id, kind)` of each problem of `text` on 2026-11-23.
    fn problems(text: &str) -> Vec<(usize, String, ProblemKind)> {
        check_register(text, date("2026-11-23"))
            .into_iter()
            .map(|p| (p.line, p.id, p.kind))
            .collect()
    }

    fn entry(id: &str, withdraw_by: &str) -> String {
        format!(
            "## {id}: t\n- Date: 2026-01-01\n- Context: x\n- Cause: x\n- Decision: x\n- Withdrawal: plan by {withdraw_by}\n"
        )
    }

    #[test]
    fn dates() {
        assert_eq!(date("2024-02-29").to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "26-01-01",
            "2026-1-01",
            "2026/01/01",
            "+2026-01-01",
            "0000-01-01",
            "",
        ] {
            assert_eq!(IsoDate::parse(bad), None, "{bad}");
        }
        assert!(date("2026-01-31") < date("2026-02-01"));
        for (days, d) in [
            (0, "1970-01-01"),
            (10_956, "1999-12-31"),
            (11_017, "2000-03-01"),
            (19_782, "2024-02-29"),
            (20_780, "2026-11-23"),
        ] {
            assert_eq!(IsoDate::from_unix_days(days), date(d), "{days}");
        }
        assert!(IsoDate::today_utc() > date("2026-01-01"));
    }

    #[test]
    fn parses_a_good_register() {
        let r = Register::parse(GOOD).unwrap();
        assert_eq!(r.exceptions().len(), 2);
        let e = &r.exceptions()[0];
        assert_eq!(e.id.as_str(), "ADR-001");
        assert_eq!(e.title, "Example rule files hold example secrets");
        assert_eq!(e.line, 6);
        assert_eq!(e.date, date("2026-11-23"));
        assert_eq!(e.context, "the rule files continue here");
        assert_eq!(e.withdrawal_plan, "per-rule example hashes");
        assert_eq!(e.withdraw_by, date("2027-05-31"));
        assert_eq!(r.exceptions()[1].line, 14);
        assert_eq!(r.next_id().as_str(), "ADR-013");
        assert_eq!(Register::default().next_id().as_str(), "ADR-001");
        assert!(problems(GOOD).is_empty());
        // Written back, an entry reads the same.
        let again = Register::parse(&e.to_string()).unwrap();
        assert_eq!(
            again.exceptions()[0],
            Exception {
                line: 1,
                ..e.clone()
            }
        );
    }

    #[test]
    fn missing_field() {
        let text = "## ADR-001: t\n- Date: 2026-01-01\n- Context: x\n- Decision: x\n- Withdrawal: p by 2027-01-01\n";
        assert_eq!(
            problems(text),
            vec![(1, "ADR-001".into(), ProblemKind::MissingField("Cause"))]
        );
        assert!(Register::parse(text).is_err());
        let text = entry("ADR-001", "2027-01-01").replace("- Cause: x", "- Cause:");
        assert_eq!(
            problems(&text),
            vec![(4, "ADR-001".into(), ProblemKind::EmptyField("Cause"))]
        );
    }

    #[test]
    fn malformed_id_and_heading() {
        let text = format!("intro\n{}", entry("ADR-01", "2027-01-01"));
        assert_eq!(
            problems(&text),
            vec![(2, "ADR-01".into(), ProblemKind::MalformedId)]
        );
        let text = entry("adr-001", "2027-01-01");
        assert_eq!(problems(&text)[0].2, ProblemKind::MalformedId);
        let text = entry("ADR-001", "2027-01-01").replace("ADR-001: t", "ADR-001");
        assert_eq!(
            problems(&text),
            vec![(1, "ADR-001".into(), ProblemKind::MalformedHeading)]
        );
    }

    #[test]
    fn duplicate_id() {
        let text = format!(
            "{}\n{}\n{}",
            entry("ADR-001", "2027-01-01"),
            entry("ADR-002", "2027-01-01"),
            entry("ADR-001", "2027-01-01")
        );
        assert_eq!(
            problems(&text),
            vec![(
                15,
                "ADR-001".into(),
                ProblemKind::DuplicateId { first_line: 1 }
            )]
        );
    }

    #[test]
    fn malformed_dates() {
        let text = entry("ADR-003", "2027-01-01").replace("2026-01-01", "2026-02-30");
        assert_eq!(
            problems(&text),
            vec![(
                2,
                "ADR-003".into(),
                ProblemKind::MalformedDate {
                    field: "Date",
                    value: "2026-02-30".into()
                }
            )]
        );
        let text = entry("ADR-003", "31/05/2027");
        assert_eq!(
            problems(&text),
            vec![(
                6,
                "ADR-003".into(),
                ProblemKind::MalformedDate {
                    field: "Withdrawal",
                    value: "31/05/2027".into()
                }
            )]
        );
        let text = entry("ADR-003", "2027-01-01").replace("plan by 2027-01-01", "someday");
        assert_eq!(
            problems(&text),
            vec![(6, "ADR-003".into(), ProblemKind::MalformedWithdrawal)]
        );
    }

    #[test]
    fn withdrawal_in_the_past() {
        let text = format!(
            "{}\n{}\n{}",
            entry("ADR-001", "2026-11-22"),
            entry("ADR-002", "2026-11-23"),
            entry("ADR-003", "2020-01-01")
        );
        // Structurally fine; expired relative to today.
        let register = Register::parse(&text).unwrap();
        assert_eq!(
            problems(&text),
            vec![
                (
                    1,
                    "ADR-001".into(),
                    ProblemKind::Expired {
                        withdraw_by: date("2026-11-22"),
                        today: date("2026-11-23")
                    }
                ),
                (
                    15,
                    "ADR-003".into(),
                    ProblemKind::Expired {
                        withdraw_by: date("2020-01-01"),
                        today: date("2026-11-23")
                    }
                ),
            ]
        );
        // The withdrawal date is the last day in force.
        let today = date("2026-11-23");
        let id = |s| ExceptionId::parse(s).unwrap();
        assert_eq!(register.validity(&id("ADR-002"), today), Validity::Valid);
        let Validity::Invalid(why) = register.validity(&id("ADR-001"), today) else {
            panic!("expired exception accepted");
        };
        assert!(why.contains("ADR-001 expired after its withdrawal date 2026-11-22"));
        let Validity::Invalid(why) = register.validity(&id("ADR-999"), today) else {
            panic!("unknown exception accepted");
        };
        assert!(why.contains("ADR-999 is not in the exceptions register"));
    }

    #[test]
    fn unknown_duplicate_fields_and_stray_lines() {
        let text = entry("ADR-004", "2027-01-01").replace(
            "- Cause: x\n",
            "- Cause: x\n- cause: y\n- Cause: z\nstray\n### sub\n",
        );
        assert_eq!(
            problems(&text),
            vec![
                (
                    5,
                    "ADR-004".into(),
                    ProblemKind::UnknownField("cause".into())
                ),
                (6, "ADR-004".into(), ProblemKind::DuplicateField("Cause")),
                (7, "ADR-004".into(), ProblemKind::UnexpectedLine),
                (8, "ADR-004".into(), ProblemKind::UnexpectedLine),
            ]
        );
    }

    #[test]
    fn append_makes_a_valid_register() {
        let today = date("2026-11-23");
        let draft = ExceptionDraft {
            title: "T".into(),
            context: "c".into(),
            cause: "c".into(),
            decision: "d".into(),
            withdrawal_plan: "remove it".into(),
            withdraw_by: date("2027-01-01"),
        };
        let (id, text) = append_exception("r", "", &draft, today).unwrap();
        assert_eq!(id.as_str(), "ADR-001");
        assert!(text.starts_with(REGISTER_HEADER));
        let (id, text) = append_exception("r", &text, &draft, today).unwrap();
        assert_eq!(id.as_str(), "ADR-002");
        assert!(check_register(&text, today).is_empty());
        assert!(text.contains("## ADR-002: T\n- Date: 2026-11-23\n"));
        let past = ExceptionDraft {
            withdraw_by: date("2026-11-22"),
            ..draft.clone()
        };
        assert!(matches!(
            append_exception("r", &text, &past, today),
            Err(Error::Exception(_))
        ));
        let two_lines = ExceptionDraft {
            cause: "a\n- Date: x".into(),
            ..draft.clone()
        };
        assert!(append_exception("r", &text, &two_lines, today).is_err());
        assert!(matches!(
            append_exception("r", "## ADR-1: x\n", &draft, today),
            Err(Error::Register { .. })
        ));
    }

    /// Found by the `exceptions_register` fuzz target: an id past `u64::MAX`
    /// overflowed (debug) or was skipped, and the next id could collide.
    #[test]
    fn next_id_after_ids_of_any_size() {
        let entry = |id: &str| {
            format!(
                "## ADR-{id}: t\n- Date: 2026-01-01\n- Context: c\n- Cause: c\n- Decision: d\n- Withdrawal: p by 2027-01-01\n\n"
            )
        };
        let next = |ids: &[&str]| {
            let text: String = ids.iter().map(|id| entry(id)).collect();
            Register::parse(&text)
                .unwrap()
                .next_id()
                .as_str()
                .to_string()
        };
        assert_eq!(next(&["18446744073709551615"]), "ADR-18446744073709551616");
        assert_eq!(
            next(&["99999999999999999999999", "005"]),
            "ADR-100000000000000000000000"
        );
        assert_eq!(next(&["0099", "012"]), "ADR-100");
        assert_eq!(next(&["000"]), "ADR-001");
        assert_eq!(next(&["009"]), "ADR-010");
    }
}
