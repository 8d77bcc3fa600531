//! Frame Streams decoder on arbitrary bytes: frames or an error, never a
//! panic or an unbounded allocation. The first byte says where the stream
//! is cut in two (a read boundary): the frames must be the same as when
//! it arrives whole. Every decoded frame re-encodes to bytes that decode
//! to itself.
#![no_main]

use bytes::BytesMut;
use dnsbgpd::dnstap::framestream::{Frame, FrameCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

const MAX: usize = 64 * 1024;

/// Every frame until the first error or the end; whether it ended cleanly.
fn frames(parts: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (split_frames, split_ok) = frames(&[&data[..split], &data[split..]]);
    let (whole_frames, whole_ok) = frames(&[data]);
    assert_eq!(split_frames, whole_frames);
    assert_eq!(split_ok, whole_ok);
    let mut codec = FrameCodec::new(MAX);
    for frame in whole_frames {
        let mut bytes = BytesMut::new();
        match &frame {
            Frame::Data(d) => codec.encode(d.clone(), &mut bytes),
            Frame::Control(c) => codec.encode(c, &mut bytes),
        }
        .expect("a decoded frame re-encodes");
        assert_eq!(codec.decode_eof(&mut bytes).expect("re-decodes"), Some(frame));
        assert!(bytes.is_empty());
    }
});
