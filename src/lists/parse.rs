//! Parsing of list files: one domain a line.
//!
//! `example.com` stands for the name and everything below it; `*.example.com`
//! is accepted as a synonym; `!sub.example.com` excludes a subtree; `#`
//! starts a comment; a trailing dot is accepted; letters are folded to
//! lowercase and internationalised names are converted to punycode (UTS 46).
//! A bad line is reported with its line number and skipped, never fatal.

use std::borrow::Cow;

/// One accepted line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListLine {
    pub line: usize,
    /// Lowercase ASCII presentation form without trailing dot.
    pub domain: String,
    pub exclude: bool,
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Parses one line; `Ok(None)` for blank and comment lines.
pub fn parse_line(raw: &str) -> Result<Option<(String, bool)>, String> {
    let text = match raw.find('#') {
        Some(i) => &raw[..i],
        None => raw,
    }
    .trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (exclude, text) = match text.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text),
    };
    if text.split_whitespace().nth(1).is_some() {
        return Err(format!("expected one domain, found {:?}", text));
    }
    let text = text.strip_prefix("*.").unwrap_or(text);
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Err("empty domain".into());
    }
    if text.contains('*') {
        return Err(format!("{text:?}: a wildcard is only allowed as a leading \"*.\""));
    }
    let ascii: Cow<str> = if text.is_ascii() {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Owned(
            idna::domain_to_ascii(text)
                .map_err(|_| format!("{text:?} is not a valid internationalised domain name"))?,
        )
    };
    validate_domain(&ascii)?;
    Ok(Some((ascii.into_owned(), exclude)))
}

/// Checks a lowercase ASCII domain: labels of 1–63 letters, digits, `-`
/// or `_`, not starting or ending with `-`, at most 253 characters.
pub fn validate_domain(domain: &str) -> Result<(), String> {
    if domain.len() > 253 {
        return Err(format!("domain is {} characters long, the limit is 253", domain.len()));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(format!("{domain:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{domain:?} has a label longer than 63 characters"));
        }
        if let Some(c) =
            label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(format!("{domain:?} contains the character {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{domain:?} has a label starting or ending with '-'"));
        }
    }
    Ok(())
}

/// Parses a whole list file's text.
pub fn parse_list(text: &str) -> (Vec<ListLine>, Vec<LineError>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        match parse_line(raw) {
            Ok(Some((domain, exclude))) => lines.push(ListLine { line: i + 1, domain, exclude }),
            Ok(None) => {}
            Err(message) => errors.push(LineError { line: i + 1, message }),
        }
    }
    (lines, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> (String, bool) {
        parse_line(line).unwrap().unwrap()
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(ok("example.com"), ("example.com".into(), false));
        assert_eq!(ok("  Example.COM.  # comment"), ("example.com".into(), false));
        assert_eq!(ok("*.example.com"), ("example.com".into(), false));
        assert_eq!(ok("!sub.example.com"), ("sub.example.com".into(), true));
        assert_eq!(ok("! *.sub.example.com"), ("sub.example.com".into(), true));
        assert_eq!(ok("_dmarc.example.com"), ("_dmarc.example.com".into(), false));
        assert_eq!(ok("bücher.example"), ("xn--bcher-kva.example".into(), false));
        assert_eq!(ok("ÖBB.at"), ("xn--bb-eka.at".into(), false));
        assert_eq!(ok("test"), ("test".into(), false));
        assert_eq!(parse_line("   # only a comment").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "exa mple.com",
            "0.0.0.0 example.com",
            "a..b",
            "*example.com",
            "foo.*.com",
            "-bad.com",
            "bad-.com",
            "semi;colon.com",
            "!",
            "*.",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_reports_line_numbers() {
        let (lines, errors) = parse_list("# header\nexample.com\n\nbad domain\n!x.example.com\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].line, 5);
        assert!(lines[1].exclude);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4);
    }
}
