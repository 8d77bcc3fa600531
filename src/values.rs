//! Value types of the configuration, shared by every section's parser
//! (`crate::config`, `crate::bgp::config`, `crate::sync::config` and the
//! blocking section): durations, sizes, file modes, and the problems a
//! parse reports. A leaf: it depends on nothing else in the crate, so the
//! section parsers and the top-level parser that calls them form no circle.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

/// Default of `[routes] max_names_per_route` (the route table uses it too).
pub const DEFAULT_MAX_NAMES_PER_ROUTE: usize = 16;
/// Default of `[routes] max_routes` (the route table uses it too).
pub const DEFAULT_MAX_ROUTES: usize = 2_000_000;

/// One problem found in a configuration or list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// All problems of a configuration that could not be accepted.
#[derive(Debug, thiserror::Error)]
#[error("{}", display_problems(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn display_problems(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n")
}

/// A duration written as `"90s"`, `"1h30m"`, `"250ms"` or `"2d"`.
///
/// Stricter than humantime: a number needs a unit, and nothing but digits
/// and units is accepted, so a typo is an error and never becomes zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected e.g. \"250ms\", \"90s\", \"1h30m\", \"2d\"");
    if text.is_empty() {
        return Err(bad());
    }
    let bytes = text.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i || i - start > 12 {
            return Err(bad());
        }
        let number: u128 = text[start..i].parse().map_err(|_| bad())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let millis_per_unit: u128 = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total += number * millis_per_unit;
    }
    let millis = u64::try_from(total).map_err(|_| format!("duration {text:?} is too long"))?;
    Ok(Duration::from_millis(millis))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(ConfigDuration).map_err(de::Error::custom)
    }
}

/// A Unix file mode written as an octal string, `"0660"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(FileMode(mode)),
            _ => {
                Err(de::Error::custom(format!("invalid file mode {text:?}: expected an octal string such as \"0660\"")))
            }
        }
    }
}

/// A byte size: an integer, or a string with a unit (`"64KiB"`, `"1MiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        let parse = |text: &str| -> Option<usize> {
            let split = text.find(|c: char| !c.is_ascii_digit())?;
            let (num, unit) = text.split_at(split);
            let n: usize = num.parse().ok()?;
            let mul = match unit {
                "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mul)
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => usize::try_from(n).map(ByteSize).map_err(|_| de::Error::custom("size too large")),
            Raw::Text(t) => parse(&t).map(ByteSize).ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid size {t:?}: expected bytes as an integer or e.g. \"64KiB\", \"1MiB\""
                ))
            }),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// `path` resolved against `base` (the config file's directory) unless absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base.as_os_str().is_empty() { path.to_path_buf() } else { base.join(path) }
}

/// Tokens shorter than this are refused (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_LEN: usize = 16;

/// A shared secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(Arc::from(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, compared in constant time (`subtle`):
    /// the time taken depends on the lengths only, never on where the
    /// bytes differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(given))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads a bearer token given inline (`token`) or in a file (`token_file`,
/// resolved against `base`): exactly one of the two, at least
/// [`MIN_TOKEN_LEN`] visible ASCII characters. `whole` is the span of the
/// section, for the problem of a missing token; `what` names the section.
pub fn read_token(
    inline: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
    whole: Range<usize>,
    what: &str,
    base: &Path,
    problem: &mut dyn FnMut(Range<usize>, String),
) -> Option<Secret> {
    let (text, span) = match (inline, file) {
        (Some(t), Some(f)) => {
            problem(f.span(), format!("{what}: give `token` or `token_file`, not both"));
            let _ = t;
            return None;
        }
        (None, None) => {
            problem(whole, format!("{what} needs `token` or `token_file`"));
            return None;
        }
        (Some(t), None) => {
            let span = t.span();
            (t.into_inner(), span)
        }
        (None, Some(f)) => {
            let path = resolve(base, f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(t) => (t.trim().to_string(), f.span()),
                Err(e) => {
                    problem(f.span(), format!("cannot read token file {}: {e}", path.display()));
                    return None;
                }
            }
        }
    };
    if text.len() < MIN_TOKEN_LEN {
        problem(
            span,
            format!("{what}: the token must be at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"),
        );
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        problem(span, format!("{what}: the token may only contain visible ASCII characters (no spaces)"));
        return None;
    }
    Some(Secret::new(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let s = Secret::new("0123456789abcdef");
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeF"));
        assert!(!s.matches(b"0123456789abcde"));
        assert!(!s.matches(b"0123456789abcdef0"));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    /// The code (not comments, not the tests) of a source file, line by line.
    fn code(src: &'static str) -> impl Iterator<Item = &'static str> {
        src.split("#[cfg(test)]").next().unwrap_or(src).lines().filter(|l| !l.trim_start().starts_with("//"))
    }

    /// The config modules form no circle: this file imports nothing of the
    /// crate, the section parsers never import the top-level parser, and
    /// the top-level parser imports only the sections and leaves (no route
    /// table, lists or dnstap, which import the config types themselves).
    #[test]
    fn the_config_modules_form_no_circle() {
        assert_eq!(code(include_str!("values.rs")).filter(|l| l.contains("crate::")).count(), 0);
        for (file, src) in [
            ("bgp/config.rs", include_str!("bgp/config.rs")),
            ("sync/config.rs", include_str!("sync/config.rs")),
            ("blocking/config.rs", include_str!("blocking/config.rs")),
            ("blocking/attach_config.rs", include_str!("blocking/attach_config.rs")),
        ] {
            let back: Vec<_> = code(src).filter(|l| l.contains("crate::config")).collect();
            assert!(back.is_empty(), "{file} imports the top-level config: {back:?}");
        }
        for l in code(include_str!("config.rs")) {
            for m in ["crate::routes", "crate::lists", "crate::dnstap", "crate::daemon", "crate::api"] {
                assert!(!l.contains(m), "config.rs depends on {m}: {l}");
            }
        }
    }
}
