//! List file lines: any text is either a domain or an error.
#![no_main]

use dnsbgpd::lists::parse::parse_line;
use dnsbgpd::names::NameBuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(Some((domain, _))) = parse_line(text)
    {
        // Whatever the parser accepts must fit the matcher's name form.
        assert!(NameBuf::from_text(&domain).is_ok(), "{domain:?}");
    }
});
