//! Every generated method round-trips; metadata and wire layout match the spec.

use std::collections::HashSet;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use crate::{
    codec::{strategies::check, FieldTable, ShortStr},
    spec::{
        basic, channel, connection, method_info, queue,
        strategies::{any_basic_properties, any_method, method_strategies},
        BasicProperties, ErrorClass, Method, ReplyCode, METHODS,
    },
};

/// Each method gets its own run, so every one of them is exercised, not just those a union happens to pick.
#[test]
fn every_method_round_trips() {
    let strategies = method_strategies();
    assert_eq!(strategies.len(), METHODS.len());
    for (name, strategy) in strategies {
        check(name, 48, strategy, |method| {
            prop_assert_eq!(method.name(), name);
            let mut buf = BytesMut::new();
            method.encode(&mut buf);
            let class_id = u16::from_be_bytes([buf[0], buf[1]]);
            let method_id = u16::from_be_bytes([buf[2], buf[3]]);
            prop_assert_eq!(
                (class_id, method_id),
                (method.class_id(), method.method_id())
            );
            let decoded = Method::decode(class_id, method_id, &buf[4..])
                .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
            prop_assert_eq!(decoded, method);
            Ok(())
        });
    }
}

#[test]
fn any_method_round_trips() {
    check("any_method_round_trips", 512, any_method(), |method| {
        let mut buf = BytesMut::new();
        method.encode(&mut buf);
        let decoded = Method::decode(method.class_id(), method.method_id(), &buf[4..])
            .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
        prop_assert_eq!(decoded, method);
        Ok(())
    });
}

/// Decoding stops at the last argument; a payload cut anywhere before it is `Truncated`, never a panic.
#[test]
fn every_truncated_method_is_an_error() {
    check(
        "every_truncated_method_is_an_error",
        256,
        any_method(),
        |method| {
            let mut buf = BytesMut::new();
            method.encode(&mut buf);
            let args = &buf[4..];
            for cut in 0..args.len() {
                let result = Method::decode(method.class_id(), method.method_id(), &args[..cut]);
                prop_assert!(result.is_err(), "{} bytes of {} decoded", cut, args.len());
            }
            Ok(())
        },
    );
}

#[test]
fn basic_properties_round_trip() {
    check(
        "basic_properties_round_trip",
        512,
        any_basic_properties(),
        |props| {
            let mut buf = BytesMut::new();
            props.encode(&mut buf);
            prop_assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), props.flags());
            let (rest, decoded) = BasicProperties::decode(&buf).map_err(|e| {
                TestCaseError::fail(format!(
                    "decode failed: {:?}",
                    crate::codec::CodecError::from(e)
                ))
            })?;
            prop_assert!(rest.is_empty());
            prop_assert_eq!(decoded, props);
            Ok(())
        },
    );
}

/// `validate` is what the frame decoder runs on receipt, `decode_into` what a consumer runs later: they
/// must accept the same bytes, stop at the same place and fail with the same error, or a checked
/// delivery could fail to build. Inputs: encoded properties, then damaged (bytes overwritten, cut short,
/// garbage after), and plain random bytes.
#[test]
fn checking_properties_agrees_with_decoding() {
    let damaged = (
        any_basic_properties(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(props, writes, cut, tail)| {
            let mut buf = BytesMut::new();
            props.encode(&mut buf);
            let mut bytes = buf.to_vec();
            for (at, byte) in writes {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            bytes.truncate(cut % (bytes.len() + 1) + if cut % 3 == 0 { 0 } else { bytes.len() });
            bytes.extend(tail);
            bytes
        });
    let random = proptest::collection::vec(any::<u8>(), 0..64);
    check(
        "checking_properties_agrees_with_decoding",
        1024,
        prop_oneof![3 => damaged, 1 => random],
        |bytes| {
            let checked = BasicProperties::validate(&bytes)
                .map(|(rest, ())| rest.len())
                .map_err(crate::codec::CodecError::from);
            let mut props = BasicProperties::default();
            let decoded = BasicProperties::decode_into(&bytes, None, &mut props)
                .map(|(rest, ())| rest.len())
                .map_err(crate::codec::CodecError::from);
            prop_assert_eq!(checked, decoded);
            Ok(())
        },
    );
}

#[test]
fn metadata_matches_the_spec() {
    assert_eq!(METHODS.len(), 64);
    let ids: HashSet<_> = METHODS.iter().map(|m| (m.class_id, m.method_id)).collect();
    assert_eq!(ids.len(), METHODS.len(), "duplicate (class, method) ids");
    for info in &METHODS {
        assert_eq!(method_info(info.class_id, info.method_id), Some(info));
        for &(class_id, method_id) in info.responses {
            assert!(
                method_info(class_id, method_id).is_some(),
                "{} answered by unknown ({class_id}, {method_id})",
                info.name
            );
        }
    }
    assert_eq!(method_info(60, 99), None);

    let declare = method_info(50, 10).unwrap();
    assert_eq!(declare.name, "queue.declare");
    assert!(declare.synchronous && declare.client_sends && !declare.server_sends);
    assert_eq!(declare.responses, &[(50, 11)]);

    let publish = method_info(60, 40).unwrap();
    assert!(publish.content && !publish.synchronous);
    let deliver = method_info(60, 60).unwrap();
    assert!(deliver.content && deliver.server_sends && !deliver.client_sends);
    // RabbitMQ's extensions: publisher confirms ack and nack in both directions.
    for id in [80, 120] {
        let info = method_info(60, id).unwrap();
        assert!(info.client_sends && info.server_sends, "{}", info.name);
    }
    assert_eq!(method_info(10, 60).unwrap().name, "connection.blocked");
    assert_eq!(method_info(10, 70).unwrap().responses, &[(10, 71)]);
    assert_eq!(method_info(85, 10).unwrap().name, "confirm.select");
    assert!(!method_info(60, 50).unwrap().deprecated, "basic.return");
    assert_eq!(
        Method::from(basic::RecoverAsync::default()).name(),
        "basic.recover-async"
    );
    assert!(
        method_info(60, 100).unwrap().deprecated,
        "basic.recover-async"
    );
}

#[test]
fn reply_codes_are_open_and_classified() {
    assert_eq!(ReplyCode::NOT_FOUND, ReplyCode(404));
    assert_eq!(ReplyCode::NOT_FOUND.error_class(), Some(ErrorClass::Soft));
    assert_eq!(ReplyCode::FRAME_ERROR.error_class(), Some(ErrorClass::Hard));
    assert_eq!(ReplyCode::REPLY_SUCCESS.error_class(), None);
    assert_eq!(ReplyCode(404).name(), Some("not-found"));
    assert_eq!(format!("{:?}", ReplyCode(404)), "404(not-found)");
    assert_eq!(format!("{}", ReplyCode(999)), "999");

    // A code the spec does not name survives decoding.
    let close = connection::Close {
        reply_code: ReplyCode(999),
        reply_text: ShortStr::from_static("odd"),
        class_id: 0,
        method_id: 0,
    };
    let mut buf = BytesMut::new();
    close.encode(&mut buf);
    assert_eq!(
        connection::Close::decode(&buf).unwrap().reply_code,
        ReplyCode(999)
    );
}

/// Round trips cannot see an encoder and decoder that agree on a wrong layout; these bytes are from the
/// spec's field order and bit-packing rule.
#[test]
fn wire_layout_matches_the_spec() {
    let declare = Method::from(queue::Declare {
        queue: ShortStr::from_static("q"),
        durable: true,
        no_wait: true,
        ..Default::default()
    });
    let mut buf = BytesMut::new();
    declare.encode(&mut buf);
    // class, method, reserved-1 (ticket), queue, bits (durable = bit 1, no-wait = bit 4), empty table
    assert_eq!(
        &buf[..],
        b"\x00\x32\x00\x0a\x00\x00\x01q\x12\x00\x00\x00\x00"
    );

    let open = Method::from(connection::Open {
        virtual_host: ShortStr::from_static("/"),
    });
    let mut buf = BytesMut::new();
    open.encode(&mut buf);
    // virtual-host, reserved-1 (capabilities, empty shortstr), reserved-2 (insist bit)
    assert_eq!(&buf[..], b"\x00\x0a\x00\x28\x01/\x00\x00");

    let mut buf = BytesMut::new();
    channel::OpenOk.encode(&mut buf);
    // reserved-1 is a longstr: an empty one is four zero bytes
    assert_eq!(&buf[..], b"\x00\x00\x00\x00");

    let ack = Method::from(basic::Nack {
        delivery_tag: 7,
        multiple: false,
        requeue: true,
    });
    let mut buf = BytesMut::new();
    ack.encode(&mut buf);
    assert_eq!(
        &buf[..],
        b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x07\x02"
    );

    let props = BasicProperties::default()
        .with_content_type("t")
        .with_delivery_mode(2u8)
        .with_app_id("a");
    let mut buf = BytesMut::new();
    props.encode(&mut buf);
    assert_eq!(&buf[..], b"\x90\x08\x01t\x02\x01a");
}

#[test]
fn reserved_property_is_read_and_dropped() {
    let mut buf = BytesMut::new();
    buf.put_u16(0x8004); // content-type and the reserved cluster-id
    buf.put_slice(b"\x01t\x02id");
    let (rest, props) = BasicProperties::decode(&buf).unwrap();
    assert!(rest.is_empty());
    assert_eq!(props, BasicProperties::default().with_content_type("t"));
    // The continuation bit (0) and bit 1, which no basic property uses, are ignored: RabbitMQ relays
    // both from a publisher untouched, and never reads a second flag word.
    for flags in [0x0001u16, 0x0002, 0x0003, 0x8005, 0x8006, 0x8007] {
        let mut buf = BytesMut::new();
        buf.put_u16(flags);
        if flags & 0x8000 != 0 {
            buf.put_slice(b"\x01t\x02id");
        }
        let (rest, props) = BasicProperties::decode(&buf).unwrap();
        assert!(rest.is_empty());
        let (rest, ()) = BasicProperties::validate(&buf).unwrap();
        assert!(rest.is_empty());
        let expected = if flags & 0x8000 != 0 {
            BasicProperties::default().with_content_type("t")
        } else {
            BasicProperties::default()
        };
        assert_eq!(props, expected, "flags {flags:#06x}");
    }
}

#[test]
fn secrets_are_redacted_in_debug() {
    let start_ok = connection::StartOk {
        client_properties: FieldTable::new(),
        mechanism: ShortStr::from_static("PLAIN"),
        response: "\0guest\0hunter2".into(),
        locale: ShortStr::from_static("en_US"),
    };
    let secure_ok = connection::SecureOk {
        response: "hunter2".into(),
    };
    let update = connection::UpdateSecret {
        new_secret: "hunter2".into(),
        reason: ShortStr::from_static("refresh"),
    };
    for text in [
        format!("{start_ok:?}"),
        format!("{secure_ok:?}"),
        format!("{update:?}"),
        format!("{:?}", Method::from(start_ok.clone())),
        format!("{start_ok:#?}"),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    assert!(format!("{start_ok:?}").contains("PLAIN"));
}
