//! Tenant slugs, build tag names, their timestamps and retention durations.

use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Branches of a tenant are `tenant/<slug>`.
pub(crate) const TENANT_BRANCH_PREFIX: &str = "tenant/";
/// A tenant's files live under `app/flows/<slug>/`.
pub(crate) const FLOWS_DIR: &str = "app/flows/";
/// Build tags are `bld/<slug>/<ts>-<target>`.
pub(crate) const BUILD_TAG_PREFIX: &str = "bld/";

/// A tenant slug is a DNS label: 1-63 of `a-z`, `0-9` and `-`, no `-` at either end.
pub(crate) fn is_slug(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Parses a slug argument (for clap).
pub(crate) fn parse_slug(s: &str) -> Result<String, String> {
    if is_slug(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a tenant slug (1-63 of a-z, 0-9 and -, no - at either end)"
        ))
    }
}

/// The tenant whose branch `branch` is, if it is one.
pub(crate) fn tenant_of_branch(branch: &str) -> Option<&str> {
    branch
        .strip_prefix(TENANT_BRANCH_PREFIX)
        .filter(|slug| is_slug(slug))
}

/// A build target is `[a-z0-9][a-z0-9._-]*`.
fn is_target(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A well-formed build tag.
#[derive(Debug, Clone)]
pub(crate) struct BuildTag {
    /// The tag name, `bld/...`.
    pub(crate) name: String,
    /// The tenant slug.
    pub(crate) tenant: String,
    /// When the build was made (UTC).
    pub(crate) time: OffsetDateTime,
}

/// Parses a tag name `bld/<slug>/<ts>-<target>`; the error says what is wrong.
pub(crate) fn parse_build_tag(name: &str) -> Result<BuildTag, String> {
    const SHAPE: &str = "expected bld/<slug>/<YYYYMMDDTHHMMSSZ>-<target>";
    let rest = name
        .strip_prefix(BUILD_TAG_PREFIX)
        .ok_or_else(|| SHAPE.to_string())?;
    let (slug, rest) = rest.split_once('/').ok_or_else(|| SHAPE.to_string())?;
    if !is_slug(slug) {
        return Err(format!("`{slug}` is not a tenant slug"));
    }
    if rest.contains('/') {
        return Err(format!("too many `/`: {SHAPE}"));
    }
    let (ts, target) = rest.split_once('-').ok_or_else(|| SHAPE.to_string())?;
    let time = parse_ts(ts)?;
    if !is_target(target) {
        return Err(format!(
            "`{target}` is not a build target ([a-z0-9][a-z0-9._-]*)"
        ));
    }
    Ok(BuildTag {
        name: name.to_string(),
        tenant: slug.to_string(),
        time,
    })
}

/// Parses a build timestamp, UTC `YYYYMMDDTHHMMSSZ`.
pub(crate) fn parse_ts(s: &str) -> Result<OffsetDateTime, String> {
    let bad = || format!("`{s}` is not a UTC timestamp YYYYMMDDTHHMMSSZ");
    let b = s.as_bytes();
    let digits_at = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits_at(0..8) || !digits_at(9..15) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u16>().map_err(|_| bad());
    let month = Month::try_from(num(4..6)? as u8).map_err(|_| bad())?;
    let date = Date::from_calendar_date(i32::from(num(0..4)?), month, num(6..8)? as u8)
        .map_err(|_| bad())?;
    let time = Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8)
        .map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Formats a time as a build timestamp, UTC `YYYYMMDDTHHMMSSZ`.
pub(crate) fn format_ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an RFC 3339 time (for `--now`).
pub(crate) fn parse_now(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})"))
}

/// Parses a retention: `Nd` (days) or `Nh` (hours).
pub(crate) fn parse_retention(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (Nd or Nh, e.g. 30d)");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = n.parse().map_err(|_| bad())?;
    let hours = match unit {
        "d" => n.checked_mul(24).ok_or_else(bad)?,
        "h" => n,
        _ => return Err(bad()),
    };
    if hours > 24 * 365 * 1000 {
        return Err(bad());
    }
    Ok(Duration::hours(hours))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "acme", "a-b", "0", &"x".repeat(63)] {
            assert!(is_slug(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Acme", "a_b", "a.b", "a/b", &"x".repeat(64)] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    #[test]
    fn build_tags() {
        let t = parse_build_tag("bld/acme/20261101T120000Z-web.prod_1").unwrap();
        assert_eq!(t.tenant, "acme");
        assert_eq!(format_ts(t.time), "20261101T120000Z");
        for bad in [
            "bld/acme",
            "bld/Acme/20261101T120000Z-web",
            "bld/acme/x/20261101T120000Z-web",
            "bld/acme/20261101T120000Z",
            "bld/acme/20261101T120000Z-",
            "bld/acme/20261101T120000Z-Web",
            "bld/acme/20261101-120000Z-web",
            "bld/acme/20261301T120000Z-web",
            "bld/acme/20261131T120000Z-web",
            "bld/acme/20261101T240000Z-web",
            "bld/acme/2026110T1120000Z-web",
        ] {
            assert!(parse_build_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retentions() {
        assert_eq!(parse_retention("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_retention("12h").unwrap(), Duration::hours(12));
        for bad in [
            "",
            "d",
            "30",
            "30m",
            "-1d",
            "+1d",
            "1.5d",
            "99999999999999999999d",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
    }
}
