//! Frame Streams (the transport dnstap uses) as a pure codec.
//!
//! Wire format: a data frame is a 32-bit big-endian length followed by that
//! many bytes. A length of zero escapes a control frame: another 32-bit
//! length (at most 512), a 32-bit control type, then fields of
//! `{u32 type, u32 length, bytes}` (only CONTENT_TYPE, 1, is defined).
//!
//! The crates on crates.io do not fit (see NOTES.md: `frame-stream` does
//! not build, `framestream`/`dnstap` are sender-side only, `dnstap-utils`
//! encodes READY wrongly), so this is our own ~200 lines. "Need more bytes"
//! is `Ok(None)`, never an error; every length from the wire is bounded
//! before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The content type of dnstap payloads.
pub const DNSTAP_CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// Control frames are small by specification.
pub const MAX_CONTROL_FRAME: usize = 512;

const FIELD_CONTENT_TYPE: u32 = 1;

/// The control frame types of the Frame Streams protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Accept = 1,
    Start = 2,
    Stop = 3,
    Ready = 4,
    Finish = 5,
}

impl ControlType {
    fn from_u32(v: u32) -> Option<ControlType> {
        Some(match v {
            1 => ControlType::Accept,
            2 => ControlType::Start,
            3 => ControlType::Stop,
            4 => ControlType::Ready,
            5 => ControlType::Finish,
            _ => return None,
        })
    }
}

/// A control frame with its content types (READY may carry several, ACCEPT
/// and START at most one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFrame {
    pub kind: ControlType,
    pub content_types: Vec<Bytes>,
}

impl ControlFrame {
    pub fn new(kind: ControlType) -> ControlFrame {
        ControlFrame { kind, content_types: Vec::new() }
    }

    pub fn with_content_type(kind: ControlType, content_type: &[u8]) -> ControlFrame {
        ControlFrame { kind, content_types: vec![Bytes::copy_from_slice(content_type)] }
    }

    pub fn offers(&self, content_type: &[u8]) -> bool {
        self.content_types.iter().any(|c| c.as_ref() == content_type)
    }
}

/// One frame of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data(Bytes),
    Control(ControlFrame),
}

/// Why a stream cannot go on. Each closes only its own connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("data frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("control frame of {0} bytes exceeds 512 bytes")]
    ControlTooLarge(usize),
    #[error("malformed control frame: {0}")]
    BadControl(&'static str),
    #[error("unknown control frame type {0}")]
    UnknownControl(u32),
    #[error("stream ended inside a frame ({0} bytes pending)")]
    Truncated(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } | FrameError::ControlTooLarge(_) => "too_large",
            FrameError::BadControl(_) | FrameError::UnknownControl(_) => "garbage",
            FrameError::Truncated(_) => "truncated",
            FrameError::Io(_) => "io",
        }
    }
}

/// Decoder and encoder of Frame Streams frames.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> FrameCodec {
        FrameCodec { max_frame }
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses the body of a control frame (after the escape and length).
pub fn parse_control(mut body: &[u8]) -> Result<ControlFrame, FrameError> {
    if body.len() < 4 {
        return Err(FrameError::BadControl("shorter than its type"));
    }
    let kind_raw = body.get_u32();
    let kind = ControlType::from_u32(kind_raw).ok_or(FrameError::UnknownControl(kind_raw))?;
    let mut content_types = Vec::new();
    while !body.is_empty() {
        if body.len() < 8 {
            return Err(FrameError::BadControl("truncated field header"));
        }
        let field = body.get_u32();
        let len = body.get_u32() as usize;
        if len > body.len() {
            return Err(FrameError::BadControl("field longer than the frame"));
        }
        if field != FIELD_CONTENT_TYPE {
            return Err(FrameError::BadControl("unknown field type"));
        }
        content_types.push(Bytes::copy_from_slice(&body[..len]));
        body.advance(len);
    }
    let allowed = match kind {
        ControlType::Ready => usize::MAX,
        ControlType::Accept | ControlType::Start => 1,
        ControlType::Stop | ControlType::Finish => 0,
    };
    if content_types.len() > allowed {
        return Err(FrameError::BadControl("too many content types"));
    }
    Ok(ControlFrame { kind, content_types })
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(len) = read_u32(src, 0) else {
            return Ok(None);
        };
        let len = len as usize;
        if len != 0 {
            if len > self.max_frame {
                return Err(FrameError::TooLarge { len, max: self.max_frame });
            }
            if src.len() < 4 + len {
                src.reserve(4 + len - src.len());
                return Ok(None);
            }
            src.advance(4);
            return Ok(Some(Frame::Data(src.split_to(len).freeze())));
        }
        let Some(clen) = read_u32(src, 4) else {
            return Ok(None);
        };
        let clen = clen as usize;
        if clen > MAX_CONTROL_FRAME {
            return Err(FrameError::ControlTooLarge(clen));
        }
        if src.len() < 8 + clen {
            return Ok(None);
        }
        let control = parse_control(&src[8..8 + clen])?;
        src.advance(8 + clen);
        Ok(Some(Frame::Control(control)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated(src.len())),
        }
    }
}

impl Encoder<&ControlFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &ControlFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let body_len: usize = 4 + frame.content_types.iter().map(|c| 8 + c.len()).sum::<usize>();
        if body_len > MAX_CONTROL_FRAME {
            return Err(FrameError::ControlTooLarge(body_len));
        }
        dst.reserve(8 + body_len);
        dst.put_u32(0);
        dst.put_u32(body_len as u32);
        dst.put_u32(frame.kind as u32);
        for c in &frame.content_types {
            dst.put_u32(FIELD_CONTENT_TYPE);
            dst.put_u32(c.len() as u32);
            dst.put_slice(c);
        }
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        if data.is_empty() || data.len() > self.max_frame {
            return Err(FrameError::TooLarge { len: data.len(), max: self.max_frame });
        }
        dst.reserve(4 + data.len());
        dst.put_u32(data.len() as u32);
        dst.put_slice(&data);
        Ok(())
    }
}

/// Encodes a control frame into a new buffer (for tools and tests).
pub fn control_bytes(frame: &ControlFrame) -> BytesMut {
    let mut out = BytesMut::new();
    // Encoding our own control frames cannot exceed the limit: at most one
    // 22-byte content type.
    let _ = FrameCodec::new(MAX_CONTROL_FRAME).encode(frame, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut codec = FrameCodec::new(64 * 1024);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    // Golden bytes, derived by hand from the Frame Streams specification.
    // READY offering "protobuf:dnstap.Dnstap" (22 bytes):
    //   escape 00000000, length 00000022 (34 = 4 type + 4 field type + 4 field length + 22),
    //   type READY 00000004, field CONTENT_TYPE 00000001, len 00000016, text.
    const READY: &[u8] =
        b"\x00\x00\x00\x00\x00\x00\x00\x22\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\x16protobuf:dnstap.Dnstap";
    // ACCEPT with the same content type: as READY with type 00000001.
    const ACCEPT: &[u8] =
        b"\x00\x00\x00\x00\x00\x00\x00\x22\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x16protobuf:dnstap.Dnstap";
    // START with the same content type: type 00000002.
    const START: &[u8] =
        b"\x00\x00\x00\x00\x00\x00\x00\x22\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x16protobuf:dnstap.Dnstap";
    // STOP: escape, length 4, type 00000003, no fields.
    const STOP: &[u8] = b"\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x03";
    // FINISH: escape, length 4, type 00000005.
    const FINISH: &[u8] = b"\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x05";
    // A data frame of 3 bytes "abc".
    const DATA: &[u8] = b"\x00\x00\x00\x03abc";

    #[test]
    fn golden_control_frames_encode() {
        let ct = DNSTAP_CONTENT_TYPE;
        assert_eq!(&control_bytes(&ControlFrame::with_content_type(ControlType::Ready, ct))[..], READY);
        assert_eq!(&control_bytes(&ControlFrame::with_content_type(ControlType::Accept, ct))[..], ACCEPT);
        assert_eq!(&control_bytes(&ControlFrame::with_content_type(ControlType::Start, ct))[..], START);
        assert_eq!(&control_bytes(&ControlFrame::new(ControlType::Stop))[..], STOP);
        assert_eq!(&control_bytes(&ControlFrame::new(ControlType::Finish))[..], FINISH);
    }

    #[test]
    fn golden_stream_decodes() {
        let stream = [READY, START, DATA, STOP].concat();
        let frames = decode_all(&stream).unwrap();
        assert_eq!(frames.len(), 4);
        match &frames[0] {
            Frame::Control(c) => {
                assert_eq!(c.kind, ControlType::Ready);
                assert!(c.offers(DNSTAP_CONTENT_TYPE));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(frames[2], Frame::Data(Bytes::from_static(b"abc")));
        assert_eq!(frames[3], Frame::Control(ControlFrame::new(ControlType::Stop)));
        assert_eq!(decode_all(ACCEPT).unwrap().len(), 1);
        assert_eq!(decode_all(FINISH).unwrap().len(), 1);
    }

    #[test]
    fn ready_with_two_content_types() {
        let mut f = ControlFrame::with_content_type(ControlType::Ready, b"x:y");
        f.content_types.push(Bytes::from_static(DNSTAP_CONTENT_TYPE));
        let frames = decode_all(&control_bytes(&f)).unwrap();
        assert_eq!(frames, vec![Frame::Control(f)]);
    }

    #[test]
    fn partial_input_is_not_an_error() {
        let stream = [READY, DATA].concat();
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut frames = 0;
        for b in &stream {
            buf.put_u8(*b);
            while let Some(_f) = codec.decode(&mut buf).unwrap() {
                frames += 1;
            }
        }
        assert_eq!(frames, 2);
    }

    #[test]
    fn oversized_frames_are_rejected_before_reading_them() {
        let mut codec = FrameCodec::new(65536);
        let mut buf = BytesMut::from(&10_000_000u32.to_be_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.reason(), "too_large");
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x00\x01\x00\x00"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap_err().reason(), "too_large");
    }

    #[test]
    fn truncated_and_garbage() {
        assert_eq!(decode_all(&DATA[..5]).unwrap_err().reason(), "truncated");
        assert_eq!(decode_all(&READY[..20]).unwrap_err().reason(), "truncated");
        // Unknown control type 9.
        let bad = b"\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x09";
        assert_eq!(decode_all(bad).unwrap_err().reason(), "garbage");
        // Field length beyond the frame.
        let bad = b"\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\xff";
        assert_eq!(decode_all(bad).unwrap_err().reason(), "garbage");
        // STOP carrying a content type.
        let mut stop = ControlFrame::new(ControlType::Stop);
        stop.content_types.push(Bytes::from_static(b"x"));
        assert_eq!(decode_all(&control_bytes(&stop)).unwrap_err().reason(), "garbage");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn data_frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20)) {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::new();
            for p in &payloads {
                codec.encode(Bytes::from(p.clone()), &mut buf).unwrap();
            }
            let frames = decode_all(&buf).unwrap();
            let expected: Vec<Frame> = payloads.into_iter().map(|p| Frame::Data(Bytes::from(p))).collect();
            prop_assert_eq!(frames, expected);
        }
    }
}
