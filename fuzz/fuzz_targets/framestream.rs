//! Frame Streams decoder: arbitrary bytes, fed in two chunks, must give
//! frames or an error, never a panic or an unbounded allocation.
#![no_main]

use bytes::BytesMut;
use dnsbgpd::dnstap::framestream::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::new();
    for part in [&data[..split], &data[split..]] {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
