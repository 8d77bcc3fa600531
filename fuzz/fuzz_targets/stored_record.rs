//! Records read back from the store: a damaged or foreign sled database
//! must give a skipped record, never a panic.
//!
//! * route records (`routes::store::decode_stored`, key = the address
//!   bytes, value = the JSON record): a decoded route has a 4- or 16-byte
//!   key's address and survives being loaded into a route table;
//! * sync change-log records (`sync::log::stored_codec`): whatever decodes
//!   re-encodes to the same bytes.
//!
//! The first input byte splits the rest into key and value.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use dnsbgpd::routes::store::decode_stored;
use dnsbgpd::routes::{Clock, RouteTable};
use dnsbgpd::sync::log::stored_codec;
use libfuzzer_sys::fuzz_target;

fn clock() -> Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    *CLOCK.get_or_init(|| Clock::starting_at(1_700_000_000_000))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let split = usize::from(split % 17).min(rest.len());
    let (key, value) = rest.split_at(split);
    if let Some(route) = decode_stored(key, value) {
        assert!(matches!(key.len(), 4 | 16));
        let table = RouteTable::new(clock(), Duration::from_secs(60), Duration::from_secs(86_400));
        table.load(vec![route]);
        for r in table.snapshot() {
            assert!(!r.attributions.is_empty(), "{r:?}");
        }
    }

    if let Some((addr, names, at)) = stored_codec::decode(rest) {
        let states: Vec<_> = names.iter().map(|(d, l, e)| (d.as_str().into(), l.as_str().into(), *e)).collect();
        let again = stored_codec::encode(addr, &states, at);
        assert_eq!(stored_codec::decode(&again), Some((addr, names, at)));
        // The encoding is canonical (up to trailing bytes the decoder
        // ignores) for records of the version the encoder writes; records of
        // older versions still decode, to the same values.
        if rest.first() == again.first() {
            assert!(rest.starts_with(&again), "{rest:02x?} vs {again:02x?}");
        }
    }
});
