//! The hot-path DNS scan and the full hickory-proto parse it hands over to
//! must agree not to panic on any message.
#![no_main]

use dnsbgpd::dnstap::dnswire;
use dnsbgpd::names::NameBuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut name = NameBuf::new();
    let mut names = 0usize;
    let _ = dnswire::scan(data, &mut name, |n| {
        names += n.label_count();
        false
    });
});
