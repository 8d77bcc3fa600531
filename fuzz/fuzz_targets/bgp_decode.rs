//! Fuzz target for the BGP message decoder.
//!
//! Feeds arbitrary bytes to `decode` under both size limits, walks the
//! buffer message by message like a session's receive loop, and checks that
//! every decoded message re-encodes and decodes back to itself. Any panic is
//! a bug. Run with `cargo fuzz run bgp_decode` (needs a nightly toolchain for
//! the sanitizers).

#![no_main]

use dnsbgpd::bgp::message as codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max_len in [codec::MAX_MESSAGE_LEN, codec::MAX_EXTENDED_MESSAGE_LEN] {
        let mut rest = data;
        loop {
            match codec::decode(rest, max_len) {
                Ok(Some((message, consumed))) => {
                    assert!(consumed >= codec::HEADER_LEN && consumed <= rest.len());
                    let again = message.to_bytes(max_len).expect("a decoded message re-encodes");
                    assert_eq!(codec::decode(&again, max_len), Ok(Some((message, again.len()))));
                    rest = &rest[consumed..];
                }
                Ok(None) => break,
                Err(error) => {
                    // The NOTIFICATION for the fault must be well-formed.
                    let notification = error.to_notification();
                    assert!((1..=7).contains(&notification.code));
                    match error.message_len() {
                        Some(n) if n <= rest.len() && n >= codec::HEADER_LEN => rest = &rest[n..],
                        _ => break,
                    }
                }
            }
        }
    }
});
