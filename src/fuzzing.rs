//! The properties the fuzz targets check, shared by `fuzz/` and the corpus replay test.
//!
//! Not part of the API: hidden from the docs and free to change. Each `check_*` function takes arbitrary
//! bytes, runs them through one decoder, and panics if the decoder panics or breaks a property it
//! promises (a round trip through the encoder gives the same value back, a frame never exceeds the
//! limit, an error consumes nothing). `fuzz/fuzz_targets/<name>.rs` calls the function of the same name;
//! `tests/fuzz_corpus.rs` replays every saved input through [`check`], so `cargo test` catches a
//! regression without the fuzzer.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{
    codec::{decode, encode, FieldTable, FieldValue, LongStr},
    frame::{ContentHeader, Frame, FrameDecoder, FrameError, PropertyList, FRAME_OVERHEAD},
    proto::{
        self, ConnectionError, Event, HandshakeParams, Mechanism, ReadTarget, TunePreferences,
    },
    spec::{self, Method},
};

mod driver;

pub use driver::check_driver;

/// A fuzz target's check: panics if `data` breaks a property.
pub type Check = fn(data: &[u8]);

/// The fuzz targets, by name, with the check each runs.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", check_frame_decode),
    ("method_decode", check_method_decode),
    ("field_table", check_field_table),
    ("content_header", check_content_header),
    ("connection", check_connection),
    ("connection_reads", check_connection_reads),
    ("driver", check_driver),
];

/// The frame size limits `frame_decode` runs with: the pre-tune minimum and RabbitMQ's default frame_max.
pub const FRAME_LIMITS: [u32; 2] = [spec::FRAME_MIN_SIZE, 131_072];

/// Runs the check of the target called `target` on `data`; `false` if there is no such target.
pub fn check(target: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(name, _)| *name == target) {
        Some((_, check)) => {
            check(data);
            true
        }
        None => false,
    }
}

/// `data` is a byte stream from the peer.
///
/// For each limit in [`FRAME_LIMITS`], frames are split off until the decoder wants more bytes or fails.
/// Every frame must fit the limit and consume exactly its wire size; a body's payload must be exactly
/// what its header declared; a frame re-encoded must decode to itself; an error or `Ok(None)` must
/// leave the buffer untouched. The same stream fed one byte at a time must give the same frames and
/// the same final error: how bytes arrive from the socket must not change what they mean.
pub fn check_frame_decode(data: &[u8]) {
    for max in FRAME_LIMITS {
        let decoder = FrameDecoder::new(max);
        let whole = decode_stream(&decoder, data);
        let trickled = decode_trickled(&decoder, data);
        assert_eq!(
            whole, trickled,
            "max {max}: frames differ when the stream arrives a byte at a time"
        );
    }
}

/// `data` is a method frame's payload: class id and method id (two big-endian shorts), then arguments.
///
/// A method that decodes must re-encode to the same ids and decode to an equal value, and encoding that
/// value again must give the same bytes (reserved fields and unused bits are normalised on the first
/// encode, so the first encoding may differ from `data`). [`Method::decode_shared`], which the frame
/// decoder uses (its short strings share the frame's buffer), must give the same result, error or method.
pub fn check_method_decode(data: &[u8]) {
    let [c0, c1, m0, m1, args @ ..] = data else {
        return;
    };
    let class_id = u16::from_be_bytes([*c0, *c1]);
    let method_id = u16::from_be_bytes([*m0, *m1]);
    let decoded = Method::decode(class_id, method_id, args);
    // `args` inside a buffer of its own, as the frame decoder hands it over.
    let frame = Bytes::copy_from_slice(data);
    let shared = Method::decode_shared(class_id, method_id, &frame[4..], Some(&frame));
    assert_eq!(decoded, shared, "decode and decode_shared disagree");
    let Ok(method) = decoded else {
        return;
    };
    assert_eq!(
        (method.class_id(), method.method_id()),
        (class_id, method_id)
    );
    let mut encoded = BytesMut::new();
    method.encode(&mut encoded);
    assert_eq!(&encoded[..4], &data[..4], "ids changed by encoding");
    let again = Method::decode(class_id, method_id, &encoded[4..])
        .unwrap_or_else(|e| panic!("re-encoded {method:?} does not decode: {e}"));
    assert_eq!(method, again, "method changed by a round trip");
    let mut reencoded = BytesMut::new();
    again.encode(&mut reencoded);
    assert_eq!(encoded, reencoded, "encoding is not stable");
}

/// Whether a key of `table`, or of a table nested in it, holds U+FFFD: what a key that is not UTF-8
/// decodes to.
fn has_replaced_key(table: &FieldTable) -> bool {
    fn in_value(value: &FieldValue) -> bool {
        match value {
            FieldValue::Table(t) => has_replaced_key(t),
            FieldValue::Array(a) => a.iter().any(in_value),
            _ => false,
        }
    }
    table
        .iter()
        .any(|(key, value)| key.as_str().contains('\u{FFFD}') || in_value(value))
}

/// `data` starts with a field table (32-bit length, then entries).
///
/// [`decode::skip_table`] must agree with [`decode::table`] on every input (the same end, or the same
/// error), and a table that decodes must re-encode to exactly the bytes it was decoded from (every field
/// value type has one encoding, and decoding keeps key order and duplicate keys), unless a key was not
/// UTF-8 and decoded lossily or a boolean octet above 1 was read as true; either way it must decode
/// again to an equal table.
pub fn check_field_table(data: &[u8]) {
    // A delivery's property list is checked where it arrives and built later on the consumer's thread, so
    // the walker that checks a table without building it must give the parser's verdict: the same end on
    // success, the same error on failure.
    let decoded = decode::table(data);
    let checked = decode::skip_table(data).map(|(rest, ())| rest.len());
    assert_eq!(
        checked,
        decoded
            .as_ref()
            .map(|(rest, _)| rest.len())
            .map_err(Clone::clone),
        "skip_table and table disagree"
    );
    let Ok((rest, table)) = decoded else {
        return;
    };
    let consumed = &data[..data.len() - rest.len()];
    let mut encoded = BytesMut::new();
    encode::table(&mut encoded, &table);
    // A key that is not UTF-8 decodes lossily (U+FFFD), and a boolean octet above 1 as true; only
    // those may make the bytes differ (a boolean in place: an octet above 1 re-encoded as 1).
    assert!(
        &encoded[..] == consumed
            || has_replaced_key(&table)
            || only_booleans_differ(consumed, &encoded),
        "table re-encodes to other bytes"
    );
    let (rest, again) = decode::table(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded {table:?} does not decode: {e:?}"));
    assert!(rest.is_empty(), "re-encoded table leaves bytes over");
    assert_eq!(table, again, "table changed by a round trip");
}

/// Whether `encoded` is `original` with some boolean octets above 1 written as 1: the same length, and
/// every differing byte an octet above 1 that became 1 after a `t`.
fn only_booleans_differ(original: &[u8], encoded: &[u8]) -> bool {
    original.len() == encoded.len()
        && original
            .iter()
            .zip(encoded)
            .enumerate()
            .all(|(i, (&was, &now))| {
                was == now || (was > 1 && now == 1 && i > 0 && encoded[i - 1] == b't')
            })
}

/// `data` is a content header frame's payload.
///
/// A header that decodes must re-encode, decode to an equal value, and encode again to the same bytes
/// (the weight field and bytes after the property list are not kept, so the first encoding may differ).
pub fn check_content_header(data: &[u8]) {
    let Ok(header) = ContentHeader::decode(data) else {
        return;
    };
    // Checked on decode, so the properties build; built ones re-encode to a list that builds them again
    // (not always to the same bytes: a reserved property is read and dropped).
    let built = header
        .properties
        .decode()
        .unwrap_or_else(|e| panic!("checked properties {header:?} do not build: {e}"));
    let rebuilt = PropertyList::encode(&built)
        .decode()
        .unwrap_or_else(|e| panic!("re-encoded {built:?} does not build: {e}"));
    assert_eq!(built, rebuilt, "properties changed by a round trip");
    let mut encoded = BytesMut::new();
    header.encode(&mut encoded);
    let again = ContentHeader::decode(&encoded)
        .unwrap_or_else(|e| panic!("re-encoded {header:?} does not decode: {e}"));
    assert_eq!(header, again, "header changed by a round trip");
    let mut reencoded = BytesMut::new();
    again.encode(&mut reencoded);
    assert_eq!(encoded, reencoded, "encoding is not stable");
}

/// What decoding a stream gave: the frames, then the error if it stopped on one.
type Decoded = (Vec<Frame>, Option<FrameError>);

fn decode_stream(decoder: &FrameDecoder, data: &[u8]) -> Decoded {
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        match decode_one(decoder, &mut buf, &data[at..]) {
            Ok(Some((frame, len))) => {
                frames.push(frame);
                at += len;
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Decodes as a reader would that receives one byte per `read`: every split point is tried.
fn decode_trickled(decoder: &FrameDecoder, data: &[u8]) -> Decoded {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut at = 0;
    for end in 1..=data.len() {
        buf.extend_from_slice(&data[end - 1..end]);
        loop {
            match decode_one(decoder, &mut buf, &data[at..end]) {
                Ok(Some((frame, len))) => {
                    frames.push(frame);
                    at += len;
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// One `decode` call on `buf`, which holds `held`, with the properties every call must keep. On success,
/// the frame and the number of bytes it took.
fn decode_one(
    decoder: &FrameDecoder,
    buf: &mut BytesMut,
    held: &[u8],
) -> Result<Option<(Frame, usize)>, FrameError> {
    let frame = match decoder.decode(buf) {
        Ok(Some(frame)) => frame,
        Ok(None) => {
            // Only the length: comparing the contents on every call would make the trickle quadratic.
            assert_eq!(buf.len(), held.len(), "Ok(None) consumed bytes");
            return Ok(None);
        }
        Err(e) => {
            assert_eq!(&buf[..], held, "{e:?} consumed or changed bytes");
            return Err(e);
        }
    };
    let consumed = held.len() - buf.len();
    assert!(consumed >= FRAME_OVERHEAD, "{consumed}-byte frame");
    assert!(
        consumed as u64 <= u64::from(decoder.max_frame_size()),
        "{consumed}-byte frame accepted with frame_max {}",
        decoder.max_frame_size()
    );
    let declared = u32::from_be_bytes([held[3], held[4], held[5], held[6]]);
    assert_eq!(consumed as u64, u64::from(declared) + FRAME_OVERHEAD as u64);
    assert_eq!(&held[consumed..], &buf[..], "bytes after the frame changed");
    if let Frame::Body { payload, .. } = &frame {
        assert_eq!(payload.len() as u64, u64::from(declared));
        assert_eq!(payload[..], held[7..consumed - 1]);
    }
    let mut encoded = BytesMut::new();
    frame.encode(&mut encoded);
    let again = decoder
        .decode(&mut encoded)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"));
    assert_eq!(
        again.as_ref(),
        Some(&frame),
        "frame changed by a round trip"
    );
    assert!(encoded.is_empty(), "re-encoded frame leaves bytes over");
    Ok(Some((frame, consumed)))
}

/// The largest message the `connection` target's client accepts.
const FUZZ_MAX_MESSAGE: u64 = 64 * 1024;

/// `data` is what a server sends after a valid handshake (channels 1 and 2 open, 3 opening).
///
/// The connection state machine must not panic; once it reports an error it stays failed; every
/// completed message is within the client's size limit and on a channel the client opened; what it queues
/// to send stays proportional to what it was sent; timeouts later on never panic.
pub fn check_connection(data: &[u8]) {
    let t0 = Instant::now();
    let mut conn = handshaken_connection(t0, 8192, FUZZ_MAX_MESSAGE);
    let mut buf = BytesMut::from(data);
    let result = conn.handle_input(&mut buf, t0);
    let mut events = 0usize;
    while let Some(event) = conn.poll_event() {
        events += 1;
        match event {
            Event::Content { channel, content } => {
                assert!(
                    matches!(channel, 1..=3),
                    "content on channel {channel} that was never opened"
                );
                assert!(
                    content.body.len() as u64 <= FUZZ_MAX_MESSAGE,
                    "message over the client's limit"
                );
                assert_eq!(
                    content.body.len() as u64,
                    content.header.body_size,
                    "body differs from its header"
                );
            }
            Event::Method { channel: 0, method } => {
                assert_eq!(
                    method.class_id(),
                    spec::connection::CLASS_ID,
                    "{} on channel 0",
                    method.name()
                );
            }
            Event::Method { channel, .. } | Event::ChannelClosed { channel, .. } => {
                assert!(
                    matches!(channel, 1..=3),
                    "event on channel {channel} that was never opened"
                );
            }
            Event::Opened { .. } => panic!("opened twice"),
            _ => {}
        }
    }
    assert!(events <= data.len(), "more events than bytes");
    let queued = conn.transmit().len();
    // Each frame the server sends is at least 8 bytes and earns at most one small answer (close-ok,
    // flow-ok, connection.close with a 255-byte text).
    assert!(
        queued <= 4096 + data.len() * 40,
        "{queued} bytes queued for {} received",
        data.len()
    );
    if let Err(e) = &result {
        if let ConnectionError::Violation { code, .. } = e {
            assert!(
                (500..600).contains(&code.code()) || code.code() == 311,
                "violation closed with {code}"
            );
        }
        // A failed connection ignores whatever else arrives.
        let mut more = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 206][..]);
        let _ = conn.handle_input(&mut more, t0);
    }
    for secs in [1, 5, 20, 40] {
        let _ = conn.handle_timeout(t0 + Duration::from_secs(secs), false);
    }
}

/// The largest message the `connection_reads` target's client accepts: several frames of RabbitMQ's
/// default frame size.
const READS_MAX_MESSAGE: u64 = 512 * 1024;

/// `data` is two bytes that shape the reads (a read size and which offers of the message's body to
/// take), then what a server sends after a valid handshake with RabbitMQ's frame-max (131,072).
///
/// The same bytes are fed twice: all at once to [`proto::Connection::handle_input`], and the way the
/// driver reads them, in reads of at most the chosen size, each put where
/// [`proto::Connection::read_target`] says (straight into a message's body when the mask takes the
/// offer, so large body frames are read past the read buffer) or into the read buffer. How the bytes
/// arrive and where they land must not change what they mean: the two runs give the same events, the
/// same outcome (the same violation code), and queue the same bytes to send. The room a body target
/// offers stays within four times what was fed plus one read step.
pub fn check_connection_reads(data: &[u8]) {
    let [size, mask, server @ ..] = data else {
        return;
    };
    let read = 1 + usize::from(*size) * 1024;
    let t0 = Instant::now();

    let mut whole = handshaken_connection(t0, 131_072, READS_MAX_MESSAGE);
    let mut buf = BytesMut::from(server);
    let whole_result = whole.handle_input(&mut buf, t0);

    let mut reads = handshaken_connection(t0, 131_072, READS_MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let (mut at, mut offers) = (0, 0u32);
    let mut reads_result = Ok(());
    while at < server.len() && reads_result.is_ok() {
        let left = server.len() - at;
        match reads.read_target() {
            ReadTarget::Body(mut room) if mask & (1 << (offers % 8)) != 0 => {
                use bytes::BufMut;
                offers += 1;
                assert!(
                    room.get_ref().capacity() <= 4 * at + 256 * 1024,
                    "{} bytes of room after {at} bytes fed",
                    room.get_ref().capacity()
                );
                let n = read.min(left).min(room.remaining_mut());
                assert!(n > 0, "a body target without room");
                room.put_slice(&server[at..at + n]);
                reads.handle_body_read(n, t0);
                at += n;
            }
            target => {
                if matches!(target, ReadTarget::Body(_)) {
                    offers += 1;
                }
                let limit = match target {
                    ReadTarget::Buffer(Some(limit)) => limit,
                    _ => read,
                };
                let n = read.min(limit).min(left);
                buf.extend_from_slice(&server[at..at + n]);
                at += n;
                reads_result = reads.handle_input(&mut buf, t0);
            }
        }
    }
    let events =
        |conn: &mut proto::Connection| std::iter::from_fn(|| conn.poll_event()).collect::<Vec<_>>();
    assert_eq!(
        events(&mut whole),
        events(&mut reads),
        "the reads changed the events"
    );
    let code = |r: &Result<(), ConnectionError>| match r {
        Ok(()) => None,
        Err(ConnectionError::Violation { code, .. }) => Some(Some(*code)),
        Err(_) => Some(None),
    };
    assert_eq!(
        code(&whole_result),
        code(&reads_result),
        "the reads changed the outcome"
    );
    assert_eq!(
        whole.transmit().split(),
        reads.transmit().split(),
        "the reads changed what the client sends"
    );
}

/// A client connection after start/tune/open-ok (the server proposing `frame_max`), with channels 1 and
/// 2 open and 3 awaiting open-ok.
fn handshaken_connection(t0: Instant, frame_max: u32, max_message_size: u64) -> proto::Connection {
    let params = HandshakeParams {
        mechanism: Mechanism::Plain,
        username: "guest".into(),
        password: "guest".into(),
        vhost: "/".into(),
        locale: "en_US".into(),
        connection_name: None,
        tune: TunePreferences {
            channel_max: 0,
            frame_max: 0,
            heartbeat: Some(10),
        },
        max_message_size,
    };
    let mut conn = proto::Connection::new(params, t0);
    let mut server = BytesMut::new();
    let start = spec::connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new().with("product", "fuzz"),
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    };
    let tune = spec::connection::Tune {
        channel_max: 16,
        frame_max,
        heartbeat: 10,
    };
    for method in [
        Method::from(start),
        tune.into(),
        spec::connection::OpenOk.into(),
    ] {
        crate::frame::encode_method(&mut server, 0, &method);
    }
    conn.handle_input(&mut server, t0)
        .expect("scripted handshake");
    for id in 1..=3 {
        conn.open_channel(id);
    }
    for id in 1..=2 {
        crate::frame::encode_method(&mut server, id, &spec::channel::OpenOk.into());
    }
    conn.handle_input(&mut server, t0)
        .expect("scripted channel opens");
    while conn.poll_event().is_some() {}
    conn.transmit().clear();
    conn
}
