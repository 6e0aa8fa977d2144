//! Whole frames round-trip, however the bytes arrive.

use bytes::{Bytes, BytesMut};
use proptest::{collection::vec, prelude::*};

use crate::{
    codec::strategies::check,
    frame::{
        encode_body, encode_content_header, encode_method, ContentHeader, Frame, FrameDecoder,
        HeaderTooLarge, PublishHead, Returnable, FRAME_OVERHEAD,
    },
    spec::{
        basic,
        strategies::{any_basic_properties, any_basic_publish, any_method},
        BasicProperties,
    },
};

/// Large enough for any generated method; the limit itself is tested in `tests/frame_hostile.rs`.
const BIG: u32 = 1 << 24;

#[test]
fn methods_round_trip_through_frames() {
    check(
        "methods_round_trip_through_frames",
        512,
        (any_method(), any::<u16>()),
        |(method, channel)| {
            let mut buf = BytesMut::new();
            encode_method(&mut buf, channel, &method);
            let frame = FrameDecoder::new(BIG)
                .decode(&mut buf)
                .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
            prop_assert_eq!(frame, Some(Frame::Method { channel, method }));
            prop_assert!(buf.is_empty());
            Ok(())
        },
    );
}

#[test]
fn content_headers_round_trip_through_frames() {
    check(
        "content_headers_round_trip_through_frames",
        512,
        (any_basic_properties(), any::<u64>(), any::<u16>()),
        |(properties, body_size, channel)| {
            let header = ContentHeader::new(basic::CLASS_ID, body_size, &properties);
            let mut buf = BytesMut::new();
            encode_content_header(&mut buf, channel, &header);
            let frame = FrameDecoder::new(BIG)
                .decode(&mut buf)
                .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
            let Some(Frame::Header { header: got, .. }) = &frame else {
                return Err(TestCaseError::fail(format!("not a header: {frame:?}")));
            };
            let built = got.properties.decode().map_err(|e| {
                TestCaseError::fail(format!("checked properties do not build: {e}"))
            })?;
            prop_assert_eq!(&*built, &properties);
            prop_assert_eq!(frame, Some(Frame::Header { channel, header }));
            prop_assert!(buf.is_empty());
            Ok(())
        },
    );
}

/// A publish head is byte for byte the generic encoding of its method frame and content header frame, kept
/// inline when it fits and shared when it does not.
#[test]
fn publish_heads_are_the_method_and_header_frames() {
    check(
        "publish_heads_are_the_method_and_header_frames",
        512,
        (
            any_basic_publish(),
            any_basic_properties(),
            any::<u64>(),
            any::<u16>(),
        ),
        |(publish, properties, body_size, channel)| {
            let mut expected = BytesMut::new();
            encode_method(&mut expected, channel, &publish.clone().into());
            let header = ContentHeader::new(basic::CLASS_ID, body_size, &properties);
            encode_content_header(&mut expected, channel, &header);
            // The scratch buffer holds a previous encoding: it must not leak into this one.
            let mut scratch = BytesMut::from(&b"left over"[..]);
            let head =
                PublishHead::encode(&mut scratch, channel, &publish, &properties, body_size, 0)
                    .map_err(|e| TestCaseError::fail(format!("no frame-max, yet {e}")))?;
            prop_assert_eq!(head.as_bytes(), &expected[..]);
            prop_assert_eq!(head.is_inline(), expected.len() <= PublishHead::INLINE);
            // What a basic.return is matched on reads back from the frames: the properties as
            // encoded, flag word included (a `PropertyList` of no properties holds no bytes).
            let mut list = BytesMut::new();
            properties.encode(&mut list);
            let returnable = (publish.mandatory || publish.immediate).then(|| Returnable {
                exchange: publish.exchange.as_bytes(),
                routing_key: publish.routing_key.as_bytes(),
                body_size,
                properties: &list[..],
            });
            prop_assert_eq!(head.returnable(), returnable);
            Ok(())
        },
    );
}

/// The header frame must fit in frame-max, its 7 header octets and end octet included (the method frame of a
/// publish always does, frame-max being at least 4096); frame-max 0 sets no limit.
#[test]
fn publish_head_header_frame_is_checked_against_frame_max() {
    let publish = basic::Publish {
        exchange: "".into(),
        routing_key: "q".into(),
        mandatory: false,
        immediate: false,
    };
    let frame_max = 4096u32;
    let mut scratch = BytesMut::new();
    let mut seen = (false, false);
    for len in 4055..4070 {
        let properties = BasicProperties::default().with_headers(
            crate::codec::FieldTable::from_iter([("k", "v".repeat(len))]),
        );
        let mut generic = BytesMut::new();
        let header = ContentHeader::new(basic::CLASS_ID, 7, &properties);
        encode_content_header(&mut generic, 1, &header);
        let got = PublishHead::encode(&mut scratch, 1, &publish, &properties, 7, frame_max);
        if generic.len() <= frame_max as usize {
            assert!(got.is_ok(), "a {}-byte header frame fits", generic.len());
            seen.0 = true;
        } else {
            let err = got.expect_err("too large for frame-max");
            assert_eq!(
                err,
                HeaderTooLarge {
                    payload: generic.len() - FRAME_OVERHEAD,
                    frame_max
                }
            );
            seen.1 = true;
        }
        assert!(
            PublishHead::encode(&mut scratch, 1, &publish, &properties, 7, 0).is_ok(),
            "frame-max 0: no limit"
        );
    }
    assert_eq!(seen, (true, true), "the lengths straddle the limit");
}

/// Frames encoded back to back and handed to the decoder in arbitrary pieces come out whole and in order.
#[test]
fn frame_sequences_survive_any_split() {
    check(
        "frame_sequences_survive_any_split",
        256,
        (vec(any_frame(), 1..12), vec(1usize..200, 1..64)),
        |(frames, chunks)| {
            let mut wire = BytesMut::new();
            for frame in &frames {
                frame.encode(&mut wire);
            }
            let decoder = FrameDecoder::new(BIG);
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut at = 0;
            let mut sizes = chunks.iter().cycle();
            while at < wire.len() {
                let end = (at + sizes.next().unwrap()).min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                while let Some(frame) = decoder
                    .decode(&mut buf)
                    .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?
                {
                    decoded.push(frame);
                }
            }
            prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
            prop_assert_eq!(decoded, frames);
            Ok(())
        },
    );
}

#[test]
fn body_payloads_share_the_read_buffer() {
    let mut buf = BytesMut::new();
    encode_body(&mut buf, 3, &[7u8; 1000]);
    let start = buf.as_ptr() as usize;
    let range = start..start + buf.len();
    let frame = FrameDecoder::new(BIG).decode(&mut buf).unwrap().unwrap();
    let Frame::Body { channel, payload } = frame else {
        panic!("not a body frame: {frame:?}");
    };
    assert_eq!(channel, 3);
    assert_eq!(payload.len(), 1000);
    assert!(payload.iter().all(|&b| b == 7));
    assert!(
        range.contains(&(payload.as_ptr() as usize)),
        "the payload was copied out of the read buffer"
    );
}

/// A deliver's strings share the read buffer (no allocation per message); properties and methods
/// without content are copied, so the values applications keep never pin a read buffer.
#[test]
fn content_strings_share_the_read_buffer_and_others_are_copied() {
    let mut buf = BytesMut::new();
    let deliver = basic::Deliver {
        consumer_tag: "amq.ctag-0123456789".into(),
        delivery_tag: 7,
        redelivered: false,
        exchange: "amq.direct".into(),
        routing_key: "orders".into(),
    };
    encode_method(&mut buf, 1, &deliver.clone().into());
    let header = ContentHeader::new(
        basic::CLASS_ID,
        0,
        &crate::spec::BasicProperties::default()
            .with_correlation_id(crate::codec::ShortStr::from_static("req-1")),
    );
    encode_content_header(&mut buf, 1, &header);
    let ok = basic::ConsumeOk {
        consumer_tag: "amq.ctag-0123456789".into(),
    };
    encode_method(&mut buf, 1, &ok.clone().into());
    let start = buf.as_ptr() as usize;
    let range = start..start + buf.len();
    let shared = |s: &crate::codec::ShortStr| range.contains(&(s.as_bytes().as_ptr() as usize));
    let decoder = FrameDecoder::new(BIG);

    let frame = decoder.decode(&mut buf).unwrap().unwrap();
    let Frame::Method {
        method: crate::spec::Method::BasicDeliver(got),
        ..
    } = frame
    else {
        panic!("not a deliver: {frame:?}");
    };
    assert_eq!(got, deliver);
    assert!(shared(&got.consumer_tag) && shared(&got.exchange) && shared(&got.routing_key));

    let frame = decoder.decode(&mut buf).unwrap().unwrap();
    let Frame::Header { header: got, .. } = frame else {
        panic!("not a header: {frame:?}");
    };
    assert_eq!(got, header);
    let built = got.properties.decode().unwrap();
    assert!(
        !shared(built.correlation_id.as_ref().unwrap()),
        "a built property pins the read buffer"
    );

    let frame = decoder.decode(&mut buf).unwrap().unwrap();
    let Frame::Method {
        method: crate::spec::Method::BasicConsumeOk(got),
        ..
    } = frame
    else {
        panic!("not a consume-ok: {frame:?}");
    };
    assert_eq!(got, ok);
    assert!(
        !shared(&got.consumer_tag),
        "a consume-ok tag pins the read buffer"
    );
    assert!(buf.is_empty());
}

#[test]
fn frame_overhead_is_header_and_end_octet() {
    let mut buf = BytesMut::new();
    encode_body(&mut buf, 1, b"abc");
    assert_eq!(buf.len(), 3 + FRAME_OVERHEAD);
    assert_eq!(&buf[..], b"\x03\x00\x01\x00\x00\x00\x03abc\xce");
    let mut buf = BytesMut::new();
    Frame::Heartbeat.encode(&mut buf);
    assert_eq!(&buf[..], b"\x08\x00\x00\x00\x00\x00\x00\xce");
}

fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any_method(), any::<u16>())
            .prop_map(|(method, channel)| Frame::Method { channel, method }),
        (any_basic_properties(), any::<u64>(), any::<u16>()).prop_map(
            |(properties, body_size, channel)| Frame::Header {
                channel,
                header: ContentHeader::new(basic::CLASS_ID, body_size, &properties),
            }
        ),
        (vec(any::<u8>(), 0..600), any::<u16>()).prop_map(|(body, channel)| Frame::Body {
            channel,
            payload: Bytes::from(body),
        }),
        Just(Frame::Heartbeat),
    ]
}
