//! Configuration text: any TOML (or not) must give settings or a list of
//! problems naming the file and a line inside it, never a panic. Paths
//! resolve against a directory that does not exist, so nothing is read.
#![no_main]

use std::path::Path;

use dnsbgpd::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = Path::new("fuzz.toml");
    match Settings::parse(text, file, Path::new("/nonexistent/dnsbgpd-fuzz"), None) {
        Ok(_) => {}
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(!e.0.is_empty());
            for p in e.0.iter().filter(|p| p.file == file) {
                assert!(p.line <= lines + 1, "line {} of {lines}: {}", p.line, p.message);
                assert!(!p.message.is_empty());
            }
        }
    }
});
