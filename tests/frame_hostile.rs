//! Hostile and broken input to the frame decoder, through the public API only.
//!
//! P6/P7: whatever the peer sends, decoding returns `Ok(None)` (need more), a frame, or a typed error with
//! the right close code; it never panics, overflows the stack, or allocates from a size the peer claims.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use coney::{
    codec::{decode, CodecError, FieldTable, FieldValue, ShortStr, MAX_NESTING},
    frame::{
        encode_body, encode_content_header, encode_heartbeat, encode_method, ContentHeader, Frame,
        FrameDecoder, FrameError,
    },
    spec::{self, basic, queue, BasicProperties, Method, ReplyCode},
};

const FRAME_ERROR: ReplyCode = ReplyCode::FRAME_ERROR; // 501
const SYNTAX_ERROR: ReplyCode = ReplyCode::SYNTAX_ERROR; // 502
const COMMAND_INVALID: ReplyCode = ReplyCode::COMMAND_INVALID; // 503

#[test]
fn every_prefix_of_a_valid_frame_needs_more() {
    for (name, wire) in valid_frames() {
        let decoder = FrameDecoder::default();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(
                decoder.decode(&mut buf),
                Ok(None),
                "{name}: prefix of {cut}/{} bytes",
                wire.len()
            );
            assert_eq!(&buf[..], &wire[..cut], "{name}: a prefix was consumed");
        }
        let mut buf = BytesMut::from(&wire[..]);
        let frame = decoder
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(frame.is_some(), "{name}: whole frame not decoded");
        assert!(buf.is_empty(), "{name}: {} bytes left", buf.len());
    }
}

#[test]
fn bad_frame_end_is_a_frame_error() {
    for (name, wire) in valid_frames() {
        for end in [0x00, 0xcd, 0xff] {
            let mut bad = wire.clone();
            *bad.last_mut().unwrap() = end;
            let err = rejects(&FrameDecoder::default(), &bad);
            assert_eq!(err, FrameError::BadFrameEnd(end), "{name}");
            assert_eq!(err.reply_code(), FRAME_ERROR);
        }
    }
}

#[test]
fn frame_size_limit_is_exact() {
    let decoder = FrameDecoder::default();
    assert_eq!(decoder.max_frame_size(), 4096);
    // 7 header bytes + payload + end octet: a 4088-byte payload is exactly 4096.
    let mut buf = BytesMut::from(&header(spec::FRAME_BODY, 1, 4088)[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    let err = rejects(&decoder, &header(spec::FRAME_BODY, 1, 4089));
    assert_eq!(
        err,
        FrameError::TooLarge {
            size: 4097,
            max: 4096
        }
    );
    assert_eq!(err.reply_code(), FRAME_ERROR);

    let mut whole = BytesMut::new();
    encode_body(&mut whole, 1, &[0u8; 4088]);
    assert!(matches!(
        decoder.decode(&mut whole),
        Ok(Some(Frame::Body { .. }))
    ));

    let tuned = FrameDecoder::new(131_072);
    let err = rejects(&tuned, &header(spec::FRAME_METHOD, 1, 131_065));
    assert_eq!(
        err,
        FrameError::TooLarge {
            size: 131_073,
            max: 131_072
        }
    );
}

/// A header claiming ~4 GiB is refused from its 7 bytes alone, and nothing is allocated for it.
#[test]
fn huge_size_claim_is_refused_before_allocating() {
    for decoder in [FrameDecoder::default(), FrameDecoder::new(131_072)] {
        for frame_type in [
            spec::FRAME_METHOD,
            spec::FRAME_HEADER,
            spec::FRAME_BODY,
            spec::FRAME_HEARTBEAT,
        ] {
            let wire = header(frame_type, 1, 0xFFFF_FFF0);
            let mut buf = BytesMut::with_capacity(wire.len());
            buf.put_slice(&wire);
            let err = decoder.decode(&mut buf).unwrap_err();
            assert_eq!(
                err,
                FrameError::TooLarge {
                    size: 7 + 0xFFFF_FFF0 + 1,
                    max: decoder.max_frame_size()
                }
            );
            assert_eq!(err.reply_code(), FRAME_ERROR);
            assert!(
                buf.capacity() <= 64,
                "buffer grew to {} bytes for a claimed size",
                buf.capacity()
            );
            assert_eq!(&buf[..], &wire[..]);
        }
    }
}

#[test]
fn unknown_frame_type_fails_from_the_header() {
    let err = rejects(&FrameDecoder::default(), &header(7, 0, 100));
    assert_eq!(err, FrameError::UnknownFrameType(7));
    assert_eq!(err.reply_code(), FRAME_ERROR);
}

#[test]
fn unknown_class_or_method_is_command_invalid() {
    for (class_id, method_id) in [(999u16, 1u16), (60, 99), (0, 0), (85, 12)] {
        let mut payload = Vec::new();
        payload.extend_from_slice(&class_id.to_be_bytes());
        payload.extend_from_slice(&method_id.to_be_bytes());
        let err = rejects(
            &FrameDecoder::default(),
            &frame(spec::FRAME_METHOD, 1, &payload),
        );
        assert_eq!(
            err,
            FrameError::Method(CodecError::UnknownMethod {
                class_id,
                method_id
            })
        );
        assert_eq!(err.reply_code(), COMMAND_INVALID);
    }
}

#[test]
fn method_frame_without_ids_is_too_short() {
    let err = rejects(
        &FrameDecoder::default(),
        &frame(spec::FRAME_METHOD, 1, &[0, 60]),
    );
    assert_eq!(err, FrameError::TooShort("method"));
    assert_eq!(err.reply_code(), FRAME_ERROR);
}

/// The table's entries end before the table does: the last value runs past the table's declared length.
#[test]
fn truncated_table_is_a_syntax_error() {
    let mut table = Vec::new();
    table.extend_from_slice(&7u32.to_be_bytes()); // key (4) + letter (1) + 2 of the I32's 4 bytes
    table.extend_from_slice(b"\x03keyI\x00\x00\x00\x01");
    // The rest of queue.declare-ok-sized padding after the table, so the frame itself is long enough.
    let err = rejects(&FrameDecoder::default(), &queue_declare_with_table(&table));
    assert_eq!(err, FrameError::Method(CodecError::Truncated));
    assert_eq!(err.reply_code(), SYNTAX_ERROR);
}

/// The table's length runs past the end of the payload, and past the frame into the next one.
#[test]
fn overlong_table_is_a_syntax_error() {
    let mut table = Vec::new();
    table.extend_from_slice(&100u32.to_be_bytes());
    table.extend_from_slice(b"\x01kV");
    let mut wire = queue_declare_with_table(&table);
    // A following frame must not be read as the rest of the table.
    let mut next = BytesMut::new();
    encode_body(&mut next, 1, &[b'V'; 200]);
    wire.extend_from_slice(&next);
    let err = rejects(&FrameDecoder::default(), &wire);
    assert_eq!(err, FrameError::Method(CodecError::Truncated));
    assert_eq!(err.reply_code(), SYNTAX_ERROR);

    // The same in a content header's `headers` property.
    let mut payload = Vec::new();
    payload.extend_from_slice(&60u16.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.extend_from_slice(&5u64.to_be_bytes());
    payload.extend_from_slice(&0x2000u16.to_be_bytes());
    payload.extend_from_slice(&1000u32.to_be_bytes());
    let err = rejects(
        &FrameDecoder::default(),
        &frame(spec::FRAME_HEADER, 1, &payload),
    );
    assert_eq!(err, FrameError::Header(CodecError::Truncated));
    assert_eq!(err.reply_code(), SYNTAX_ERROR);
}

#[test]
fn unknown_field_type_letter_is_a_syntax_error() {
    for letter in [b'Z', b'U', b'L', 0u8, 0xff] {
        let err = rejects(
            &FrameDecoder::default(),
            &queue_declare_with_table(&table_bytes(&[b"\x01k", &[letter], b"\x00\x00"])),
        );
        assert_eq!(
            err,
            FrameError::Method(CodecError::UnknownFieldType(letter))
        );
        assert_eq!(err.reply_code(), SYNTAX_ERROR);
    }
}

#[test]
fn short_string_past_the_end_is_a_syntax_error() {
    // queue.declare: ids, reserved short, then a queue name claiming 200 bytes of which 3 exist.
    let payload = b"\x00\x32\x00\x0a\x00\x00\xc8abc";
    let err = rejects(
        &FrameDecoder::default(),
        &frame(spec::FRAME_METHOD, 1, payload),
    );
    assert_eq!(err, FrameError::Method(CodecError::Truncated));
    assert_eq!(err.reply_code(), SYNTAX_ERROR);

    // A table key whose length runs past its table.
    let err = rejects(
        &FrameDecoder::default(),
        &queue_declare_with_table(&table_bytes(&[b"\x09key"])),
    );
    assert_eq!(err, FrameError::Method(CodecError::Truncated));

    // Not UTF-8: decoded lossily, not refused (see `ShortStr`): RabbitMQ relays such routing keys and
    // header keys from other clients.
    let mut buf = BytesMut::from(
        &frame(
            spec::FRAME_METHOD,
            1,
            b"\x00\x32\x00\x0a\x00\x00\x02\xc3\x28\x00\x00\x00\x00\x00",
        )[..],
    );
    match FrameDecoder::default().decode(&mut buf) {
        Ok(Some(Frame::Method {
            method: Method::QueueDeclare(declare),
            ..
        })) => assert_eq!(declare.queue.as_str(), "\u{FFFD}("),
        other => panic!("expected a queue.declare with a lossy name, got {other:?}"),
    }
}

#[test]
fn nesting_to_the_limit_decodes_and_one_more_is_refused() {
    let decoder = FrameDecoder::new(1 << 20);
    for arrays in [false, true] {
        let mut buf = BytesMut::from(&queue_declare_with_table(&nested(MAX_NESTING, arrays))[..]);
        let frame = decoder
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{MAX_NESTING} levels (arrays: {arrays}) refused: {e}"));
        let Some(Frame::Method {
            method: Method::QueueDeclare(declare),
            ..
        }) = frame
        else {
            panic!("not a queue.declare: {frame:?}");
        };
        assert_eq!(depth_of(&declare.arguments), MAX_NESTING);

        let err = rejects(
            &decoder,
            &queue_declare_with_table(&nested(MAX_NESTING + 1, arrays)),
        );
        assert_eq!(
            err,
            FrameError::Method(CodecError::NestingTooDeep { max: MAX_NESTING })
        );
        assert_eq!(err.reply_code(), SYNTAX_ERROR);
    }
}

/// 10,000 levels: refused at level 33 without recursing further, so even a 256 KiB stack is plenty.
#[test]
fn ten_thousand_levels_are_refused_without_overflowing_the_stack() {
    let check = || {
        for arrays in [false, true] {
            let table = nested(10_000, arrays);
            assert_eq!(
                decode::table(&table).map_err(CodecError::from).unwrap_err(),
                CodecError::NestingTooDeep { max: MAX_NESTING }
            );
            let err = rejects(
                &FrameDecoder::new(1 << 20),
                &queue_declare_with_table(&table),
            );
            assert_eq!(
                err,
                FrameError::Method(CodecError::NestingTooDeep { max: MAX_NESTING })
            );
            assert_eq!(err.reply_code(), SYNTAX_ERROR);

            let value = if arrays {
                nested_array_value(10_000)
            } else {
                [&b"F"[..], &table].concat()
            };
            assert_eq!(
                decode::field_value(&value)
                    .map_err(CodecError::from)
                    .unwrap_err(),
                CodecError::NestingTooDeep { max: MAX_NESTING }
            );
        }
    };
    check();
    let small_stack = std::thread::Builder::new()
        .name("256k-stack".into())
        .stack_size(256 * 1024)
        .spawn(check)
        .unwrap();
    within(Duration::from_secs(30), move || small_stack.join()).expect("decoding panicked");
}

#[test]
fn heartbeat_on_a_channel_is_a_frame_error() {
    let err = rejects(
        &FrameDecoder::default(),
        &frame(spec::FRAME_HEARTBEAT, 5, &[]),
    );
    assert_eq!(err, FrameError::HeartbeatOnChannel(5));
    assert_eq!(err.reply_code(), FRAME_ERROR);
}

#[test]
fn protocol_header_from_the_server_is_a_mismatch() {
    for offered in [
        *b"AMQP\x00\x00\x09\x01",
        *b"AMQP\x01\x01\x00\x0a",
        *b"AMQP\x00\x01\x00\x00",
    ] {
        let decoder = FrameDecoder::default();
        for cut in 0..offered.len() {
            let mut buf = BytesMut::from(&offered[..cut]);
            assert_eq!(decoder.decode(&mut buf), Ok(None), "{cut} bytes");
        }
        let err = rejects(&decoder, &offered);
        assert_eq!(err, FrameError::ProtocolMismatch(offered));
        assert_eq!(err.reply_code(), FRAME_ERROR);
    }
}

#[test]
fn bad_content_headers_are_syntax_errors() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&60u16.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.extend_from_slice(&5u64.to_be_bytes());
    // The continuation bit is no error: RabbitMQ relays it from publishers and never reads a second
    // flag word, so it is ignored, as the flags of properties the class lacks are.
    let mut continuation = payload.clone();
    continuation.extend_from_slice(&0x0001u16.to_be_bytes());
    let mut wire = BytesMut::from(&frame(spec::FRAME_HEADER, 1, &continuation)[..]);
    match FrameDecoder::default().decode(&mut wire) {
        Ok(Some(Frame::Header { channel: 1, header })) => assert_eq!(header.body_size, 5),
        other => panic!("a flag word with bit 0 set: {other:?}"),
    }

    // content-type announced, not present.
    let mut missing = payload.clone();
    missing.extend_from_slice(&0x8000u16.to_be_bytes());
    let err = rejects(
        &FrameDecoder::default(),
        &frame(spec::FRAME_HEADER, 1, &missing),
    );
    assert_eq!(err, FrameError::Header(CodecError::Truncated));

    let err = rejects(
        &FrameDecoder::default(),
        &frame(spec::FRAME_HEADER, 1, &payload[..6]),
    );
    assert_eq!(err, FrameError::Header(CodecError::Truncated));
}

/// Mutated valid frames (bit flips, cut and stretched lengths, spliced garbage) never panic; an error
/// leaves the buffer as it was, and a decoded frame consumes exactly its bytes. Replay with `SEED=`.
#[test]
fn mutated_frames_never_panic() {
    let seed = std::env::var("SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("mutated_frames_never_panic: seed {seed} (replay with SEED={seed})");
    let mut rng = XorShift(seed.max(1));
    let originals: Vec<Vec<u8>> = valid_frames().into_iter().map(|(_, w)| w).collect();
    let decoder = FrameDecoder::new(1 << 16);
    for round in 0..20_000 {
        let mut wire = originals[rng.below(originals.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(wire.len());
            match rng.below(4) {
                0 => wire[at] ^= 1 << rng.below(8),
                1 => wire[at] = rng.next() as u8,
                2 => wire.truncate(at.max(1)),
                _ => {
                    let extra = rng.below(16);
                    wire.splice(at..at, (0..extra).map(|_| rng.next() as u8));
                }
            }
        }
        let mut buf = BytesMut::from(&wire[..]);
        match decoder.decode(&mut buf) {
            Ok(None) => assert_eq!(&buf[..], &wire[..], "round {round}, SEED={seed}"),
            Ok(Some(frame)) => {
                let size = u32::from_be_bytes([wire[3], wire[4], wire[5], wire[6]]) as usize;
                assert_eq!(
                    wire.len() - buf.len(),
                    size + 8,
                    "round {round}, SEED={seed}: {frame:?}"
                );
                assert_eq!(&buf[..], &wire[size + 8..], "round {round}, SEED={seed}");
            }
            Err(err) => {
                assert_eq!(&buf[..], &wire[..], "round {round}, SEED={seed}: {err}");
                let code = err.reply_code();
                assert!(
                    [FRAME_ERROR, SYNTAX_ERROR, COMMAND_INVALID].contains(&code),
                    "round {round}, SEED={seed}: {err} → {code}"
                );
            }
        }
    }
}

// ---- helpers ----

/// One of each frame kind, with nested tables where a frame can carry them.
fn valid_frames() -> Vec<(&'static str, Vec<u8>)> {
    let arguments = FieldTable::new()
        .with("x-max-length", 10_000i32)
        .with("x-queue-type", "quorum")
        .with(
            "nested",
            FieldTable::new().with("flag", true).with("pi", 3.25f64),
        );
    let declare = Method::from(queue::Declare {
        queue: ShortStr::from_static("orders"),
        durable: true,
        arguments,
        ..Default::default()
    });
    let mut method = BytesMut::new();
    encode_method(&mut method, 1, &declare);

    let properties = BasicProperties::default()
        .with_content_type("application/json")
        .with_delivery_mode(2u8)
        .with_headers(FieldTable::new().with("trace", "abc").with("n", 7u8))
        .with_timestamp(1_700_000_000u64);
    let mut header = BytesMut::new();
    encode_content_header(
        &mut header,
        1,
        &ContentHeader::new(basic::CLASS_ID, 100, &properties),
    );

    let mut body = BytesMut::new();
    encode_body(&mut body, 1, &[0x5a; 100]);
    let mut heartbeat = BytesMut::new();
    encode_heartbeat(&mut heartbeat);
    vec![
        ("method with table", method.to_vec()),
        ("content header", header.to_vec()),
        ("body", body.to_vec()),
        ("heartbeat", heartbeat.to_vec()),
    ]
}

/// Decodes `wire`, expecting an error, and checks the buffer was left alone.
fn rejects(decoder: &FrameDecoder, wire: &[u8]) -> FrameError {
    let mut buf = BytesMut::from(wire);
    let err = match decoder.decode(&mut buf) {
        Err(err) => err,
        Ok(frame) => panic!("accepted: {frame:?}"),
    };
    assert_eq!(&buf[..], wire, "an error consumed bytes");
    err
}

fn header(frame_type: u8, channel: u16, size: u32) -> Vec<u8> {
    let mut out = vec![frame_type];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out
}

fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = header(frame_type, channel, payload.len() as u32);
    out.extend_from_slice(payload);
    out.push(spec::FRAME_END);
    out
}

/// A queue.declare method frame whose arguments are the raw `table` bytes (length prefix included).
fn queue_declare_with_table(table: &[u8]) -> Vec<u8> {
    let mut payload = b"\x00\x32\x00\x0a\x00\x00\x01q\x00".to_vec();
    payload.extend_from_slice(table);
    frame(spec::FRAME_METHOD, 1, &payload)
}

/// A table (length prefix included) whose body is the concatenated `parts`.
fn table_bytes(parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// `levels` containers nested inside each other, written directly (no recursion, linear time): tables
/// each holding the next under key `a`, or one table holding arrays each holding the next.
fn nested(levels: usize, arrays: bool) -> Vec<u8> {
    assert!(levels >= 1);
    let mut out = Vec::with_capacity(levels * 7);
    if !arrays {
        for level in 1..=levels {
            out.extend_from_slice(&((7 * (levels - level)) as u32).to_be_bytes());
            if level < levels {
                out.extend_from_slice(b"\x01aF");
            }
        }
        return out;
    }
    if levels == 1 {
        return 0u32.to_be_bytes().to_vec();
    }
    // The table: key, letter, then the first array (4 + 5 * (levels - 2) bytes).
    out.extend_from_slice(&((3 + 4 + 5 * (levels - 2)) as u32).to_be_bytes());
    out.extend_from_slice(b"\x01aA");
    for level in 2..=levels {
        out.extend_from_slice(&((5 * (levels - level)) as u32).to_be_bytes());
        if level < levels {
            out.push(b'A');
        }
    }
    out
}

/// A lone array value (type letter included) holding `levels - 1` arrays nested inside each other.
fn nested_array_value(levels: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(levels * 5 + 1);
    out.push(b'A');
    for level in 1..=levels {
        out.extend_from_slice(&((5 * (levels - level)) as u32).to_be_bytes());
        if level < levels {
            out.push(b'A');
        }
    }
    out
}

/// How many containers deep a decoded table goes (the table itself is level 1).
fn depth_of(table: &FieldTable) -> usize {
    fn value_depth(v: &FieldValue) -> usize {
        match v {
            FieldValue::Table(t) => depth_of(t),
            FieldValue::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + table.iter().map(|(_, v)| value_depth(v)).max().unwrap_or(0)
}

/// Runs `f` on its own thread and fails the test if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("timed out after {limit:?}"))
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
