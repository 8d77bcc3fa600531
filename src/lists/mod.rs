//! Domain lists: files of domains → one [`Lists`] value the hot path reads.
//!
//! The daemon keeps the current `Lists` behind an `ArcSwap`; a reload (SIGHUP
//! or a change of a list file, see [`watch`]) builds a complete new value off
//! the hot path and swaps it in atomically, so frames keep flowing and never
//! see half a reload.

pub mod file;
pub mod matcher;
pub mod parse;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{ListSettings, Problem};
use crate::names::NameBuf;
pub use matcher::{DomainMatcher, ListMask};

/// Per-list facts for metrics and the API.
#[derive(Debug, Clone)]
pub struct ListInfo {
    pub settings: ListSettings,
    pub entries: usize,
    pub exclusions: usize,
    pub invalid_lines: usize,
}

/// All configured lists, compiled.
#[derive(Debug, Default)]
pub struct Lists {
    matcher: DomainMatcher,
    info: Vec<ListInfo>,
}

/// A list file could not be read at all (a bad line is not this: it is a
/// [`Problem`] and the line is skipped).
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read list {name:?}: {source}", file.display())]
pub struct ListReadError {
    pub name: Arc<str>,
    pub file: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Lists {
    /// Reads and compiles every list. Bad lines come back as problems.
    pub fn load(settings: &[ListSettings]) -> Result<(Lists, Vec<Problem>), ListReadError> {
        Lists::load_bounded(settings, crate::config::DEFAULT_MAX_LIST_SIZE)
    }

    /// [`Lists::load`] reading each file safely ([`file::read_list`]): a
    /// file that is not a regular file, is bigger than `max_size` or keeps
    /// changing fails the load (the caller keeps its previous lists); a
    /// line that is not UTF-8 is an invalid line.
    pub fn load_bounded(settings: &[ListSettings], max_size: u64) -> Result<(Lists, Vec<Problem>), ListReadError> {
        let mut texts = Vec::with_capacity(settings.len());
        let mut bad = Vec::new();
        for s in settings {
            let (text, lines) = file::read_list(&s.file, max_size).map_err(|source| ListReadError {
                name: s.name.clone(),
                file: s.file.clone(),
                source,
            })?;
            bad.extend(lines.into_iter().map(|(line, message)| (texts.len(), line, message)));
            texts.push(text);
        }
        let (mut lists, mut problems) = Lists::compile(settings, &texts);
        drop(texts);
        // Parsing a large list frees as much as the matcher keeps; glibc
        // would hold it in the RSS.
        crate::routes::store::release_free_memory();
        for (i, line, message) in bad {
            lists.info[i].invalid_lines += 1;
            problems.push(Problem { file: settings[i].file.clone(), line, message });
        }
        Ok((lists, problems))
    }

    /// Compiles list texts (one per setting, same order).
    pub fn compile(settings: &[ListSettings], texts: &[String]) -> (Lists, Vec<Problem>) {
        let mut problems = Vec::new();
        // A line is ~20 bytes; sizing the map up front avoids rehashing a
        // million-entry table several times while loading.
        let estimate = texts.iter().map(|t| t.len() / 20).sum();
        let mut matcher = DomainMatcher::with_capacity(estimate);
        let mut info = Vec::with_capacity(settings.len());
        let mut name = NameBuf::new();
        for (index, (s, text)) in settings.iter().zip(texts).enumerate() {
            let (lines, errors) = parse::parse_list(text);
            let mut li = ListInfo { settings: s.clone(), entries: 0, exclusions: 0, invalid_lines: errors.len() };
            for e in errors {
                problems.push(Problem { file: s.file.clone(), line: e.line, message: e.message });
            }
            for line in lines {
                if name.set_text(&line.domain).is_err() {
                    li.invalid_lines += 1;
                    problems.push(Problem {
                        file: s.file.clone(),
                        line: line.line,
                        message: format!("{:?} is not a valid domain name", line.domain),
                    });
                    continue;
                }
                match matcher.insert(&name, index as u8, line.exclude) {
                    matcher::Inserted::New if line.exclude => li.exclusions += 1,
                    matcher::Inserted::New => li.entries += 1,
                    matcher::Inserted::Duplicate => {}
                    matcher::Inserted::Conflict => {
                        li.invalid_lines += 1;
                        problems.push(Problem {
                            file: s.file.clone(),
                            line: line.line,
                            message: format!("{:?} is both listed and excluded; the earlier line wins", line.domain),
                        });
                    }
                }
            }
            info.push(li);
        }
        // The estimate is rough: give back what the lists did not use.
        matcher.shrink_to_fit();
        (Lists { matcher, info }, problems)
    }

    /// The lists that claim `name`.
    #[inline]
    pub fn lookup(&self, name: &NameBuf) -> ListMask {
        self.matcher.lookup(name)
    }

    /// The lists that claim a name given as text (stored routes, peers).
    pub fn lookup_text(&self, name: &str) -> ListMask {
        NameBuf::from_text(name).map(|n| self.lookup(&n)).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    pub fn info(&self) -> &[ListInfo] {
        &self.info
    }

    /// The name of list number `index`.
    pub fn name(&self, index: usize) -> &Arc<str> {
        &self.info[index].settings.name
    }

    /// The index of the list called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.info.iter().position(|i| &*i.settings.name == name)
    }

    /// Names of the lists in `mask`.
    pub fn names_in(&self, mask: ListMask) -> impl Iterator<Item = &Arc<str>> + '_ {
        (0..self.info.len()).filter(move |i| mask & (1 << i) != 0).map(|i| self.name(i))
    }

    pub fn heap_bytes(&self) -> usize {
        self.matcher.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(names: &[&str]) -> Vec<ListSettings> {
        names
            .iter()
            .map(|n| ListSettings {
                name: Arc::from(*n),
                file: PathBuf::from(format!("{n}.txt")),
                communities: vec![],
                large_communities: vec![],
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn compile_reports_bad_lines_and_keeps_good_ones() {
        let (lists, problems) = Lists::compile(
            &settings(&["vpn", "cdn"]),
            &["listed.test\nbad line\n!www.listed.test\nlisted.test\n!listed.test\n".into(), "cdn.test\n".into()],
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].to_string(), "vpn.txt:2: expected one domain, found \"bad line\"");
        assert_eq!(problems[1].line, 5);
        assert_eq!(lists.info()[0].entries, 1);
        assert_eq!(lists.info()[0].exclusions, 1);
        assert_eq!(lists.info()[0].invalid_lines, 2);
        assert_eq!(lists.lookup_text("a.listed.test"), 0b01);
        assert_eq!(lists.lookup_text("www.listed.test"), 0);
        assert_eq!(lists.lookup_text("x.cdn.test"), 0b10);
        assert_eq!(lists.names_in(0b11).map(|n| n.to_string()).collect::<Vec<_>>(), ["vpn", "cdn"]);
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let mut s = settings(&["vpn"]);
        s[0].file = PathBuf::from("/nonexistent/vpn.txt");
        let err = Lists::load(&s).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/vpn.txt: cannot read list \"vpn\""), "{err}");
    }
}
