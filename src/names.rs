//! Domain names on the hot path: a fixed-size, allocation-free buffer.
//!
//! [`NameBuf`] holds a name in lowercase presentation form without the
//! trailing dot (`www.example.com`) plus the offset of every label, so the
//! list matcher can walk suffixes label by label. It is filled either from
//! DNS wire format (the scanner in `dnstap::dnswire`) or from text (list
//! files, stored routes), and both give the same bytes for the same name.

use std::fmt;

/// A presentation-form name is at most 253 bytes; wire form 255.
pub const MAX_NAME_TEXT: usize = 255;
/// Wire format allows at most 127 labels (each at least 2 bytes).
pub const MAX_LABELS: usize = 128;

#[derive(Clone)]
pub struct NameBuf {
    text: [u8; MAX_NAME_TEXT],
    len: usize,
    /// Start offset of each label in `text`, left to right.
    starts: [u8; MAX_LABELS],
    labels: usize,
}

/// Why a name was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name longer than 253 characters")]
    TooLong,
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 characters")]
    LabelTooLong,
}

impl Default for NameBuf {
    fn default() -> Self {
        NameBuf::new()
    }
}

impl NameBuf {
    pub const fn new() -> NameBuf {
        NameBuf { text: [0; MAX_NAME_TEXT], len: 0, starts: [0; MAX_LABELS], labels: 0 }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.labels = 0;
    }

    /// Appends one label, lowercasing ASCII letters.
    pub fn push_label(&mut self, label: &[u8]) -> Result<(), NameError> {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong);
        }
        let sep = usize::from(self.labels > 0);
        if self.len + sep + label.len() > MAX_NAME_TEXT - 2 || self.labels == MAX_LABELS {
            return Err(NameError::TooLong);
        }
        if sep == 1 {
            self.text[self.len] = b'.';
            self.len += 1;
        }
        self.starts[self.labels] = self.len as u8;
        self.labels += 1;
        for (dst, src) in self.text[self.len..self.len + label.len()].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        self.len += label.len();
        Ok(())
    }

    /// Fills the buffer from presentation text (`Example.COM.` allowed; the
    /// root `.` gives an empty name). No escapes are interpreted.
    pub fn set_text(&mut self, text: &str) -> Result<(), NameError> {
        self.clear();
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Ok(());
        }
        for label in text.split('.') {
            self.push_label(label.as_bytes())?;
        }
        Ok(())
    }

    pub fn from_text(text: &str) -> Result<NameBuf, NameError> {
        let mut n = NameBuf::new();
        n.set_text(text)?;
        Ok(n)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }

    /// The name as text; labels with bytes outside ASCII are shown lossily.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    pub fn is_root(&self) -> bool {
        self.labels == 0
    }

    pub fn label_count(&self) -> usize {
        self.labels
    }

    /// The label at `index` (0 is the leftmost).
    pub fn label(&self, index: usize) -> &[u8] {
        let start = self.starts[index] as usize;
        let end = if index + 1 < self.labels { self.starts[index + 1] as usize - 1 } else { self.len };
        &self.text[start..end]
    }

    /// The suffix starting at label `index` (`index` 0 is the whole name).
    pub fn suffix(&self, index: usize) -> &[u8] {
        &self.text[self.starts[index] as usize..self.len]
    }
}

impl PartialEq for NameBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes() && self.labels == other.labels
    }
}

impl fmt::Debug for NameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameBuf({:?})", self.to_string_lossy())
    }
}

impl fmt::Display for NameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_lowercases_and_drops_the_trailing_dot() {
        let n = NameBuf::from_text("WwW.Example.COM.").unwrap();
        assert_eq!(n.as_bytes(), b"www.example.com");
        assert_eq!(n.label_count(), 3);
        assert_eq!(n.label(0), b"www");
        assert_eq!(n.label(2), b"com");
        assert_eq!(n.suffix(1), b"example.com");
        assert_eq!(n.suffix(2), b"com");
        assert!(NameBuf::from_text(".").unwrap().is_root());
    }

    #[test]
    fn limits() {
        assert_eq!(NameBuf::from_text("a..b").unwrap_err(), NameError::EmptyLabel);
        let long_label = "a".repeat(64);
        assert_eq!(NameBuf::from_text(&long_label).unwrap_err(), NameError::LabelTooLong);
        let long_name = vec!["a".repeat(63); 4].join(".");
        assert_eq!(NameBuf::from_text(&long_name).unwrap_err(), NameError::TooLong);
        let max_name = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "b".repeat(61));
        assert_eq!(max_name.len(), 253);
        assert!(NameBuf::from_text(&max_name).is_ok());
    }
}
