//! The sans-IO connection state machine (`coney::proto::Connection`) driven by a scripted server: server
//! frames are encoded into a buffer and fed to `handle_input`, what the client queued in `transmit()` is
//! decoded back into frames, and time is fake (`Instant`s advanced by adding `Duration`s). No sockets, no
//! runtime.
//!
//! This lives in `tests/` rather than in `src/proto` because `src/proto` must not mention the clock by name
//! (the sans-IO grep), and a test still needs one real `Instant` to start its fake time from.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use coney::{
    codec::{FieldTable, FieldValue, LongStr, ShortStr},
    frame::{
        encode_body, encode_content_header, encode_heartbeat, encode_method, ContentHeader, Frame,
        FrameDecoder, PropertyList, PublishHead,
    },
    proto::{
        ByteQueue, ChannelCloseCause, Connection, ConnectionError, Event, HandshakeParams,
        Mechanism, ReadTarget, TunePreferences, Tuned,
    },
    spec::{self, basic, channel, connection, BasicProperties, Method, ReplyCode},
};

const MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

/// RabbitMQ's default proposal.
const RABBIT_TUNE: Tuned = Tuned {
    channel_max: 2047,
    frame_max: 131_072,
    heartbeat: 60,
};

const NO_PREFS: TunePreferences = TunePreferences {
    channel_max: 0,
    frame_max: 0,
    heartbeat: None,
};

// ---------------------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------------------

#[test]
fn handshake_happy_path() {
    let prefs = TunePreferences {
        channel_max: 100,
        frame_max: 65_536,
        heartbeat: Some(30),
    };
    let mut s = Script::new(params(prefs));

    // The protocol header goes first, and nothing else until the server speaks.
    assert_eq!(s.conn.transmit().chunk(), &spec::PROTOCOL_HEADER[..]);
    s.take_protocol_header();
    assert!(!s.conn.is_open());
    assert_eq!(s.conn.poll_timeout(), None, "no heartbeats before tuning");

    let server_properties = FieldTable::new()
        .with("product", "RabbitMQ")
        .with("version", "3.13.0");
    let mut start = start("AMQPLAIN PLAIN", 0, 9);
    start.server_properties = server_properties.clone();
    s.send(0, start).unwrap();

    let (ch, method) = s.received_method();
    assert_eq!(ch, 0);
    let Method::ConnectionStartOk(start_ok) = method else {
        panic!("expected start-ok, got {method:?}");
    };
    assert_eq!(start_ok.mechanism.as_str(), "PLAIN");
    assert_eq!(start_ok.response.as_bytes(), b"\0user\0pass");
    assert_eq!(start_ok.locale.as_str(), "en_US");
    let props = &start_ok.client_properties;
    assert_eq!(
        props.get("product").and_then(FieldValue::as_str),
        Some("coney")
    );
    assert_eq!(
        props.get("connection_name").and_then(FieldValue::as_str),
        Some("proto-test")
    );
    let caps = props
        .get("capabilities")
        .and_then(FieldValue::as_table)
        .unwrap_or_else(|| panic!("no capabilities table in {props:?}"));
    for cap in [
        "connection.blocked",
        "consumer_cancel_notify",
        "authentication_failure_close",
        "publisher_confirms",
        "basic.nack",
        "per_consumer_qos",
    ] {
        assert_eq!(
            caps.get(cap).and_then(FieldValue::as_bool),
            Some(true),
            "capability {cap} in {caps:?}"
        );
    }
    assert!(s.events().is_empty());

    s.send(0, tune(RABBIT_TUNE)).unwrap();
    let sent = s.received_methods();
    assert_eq!(
        sent,
        vec![
            (
                0,
                connection::TuneOk {
                    channel_max: 100,
                    frame_max: 65_536,
                    heartbeat: 30,
                }
                .into()
            ),
            (
                0,
                connection::Open {
                    virtual_host: ShortStr::from_static("/vh"),
                }
                .into()
            ),
        ]
    );
    assert!(!s.conn.is_open());
    assert!(s.events().is_empty());

    s.send(0, connection::OpenOk).unwrap();
    let tuned = Tuned {
        channel_max: 100,
        frame_max: 65_536,
        heartbeat: 30,
    };
    assert_eq!(
        s.events(),
        vec![Event::Opened {
            server_properties,
            tuned,
        }]
    );
    assert!(s.conn.is_open());
    assert_eq!(s.conn.tuned(), Some(tuned));
    assert_eq!(s.conn.max_body_frame(), 65_536 - 8);
    assert!(
        s.received().is_empty(),
        "nothing more to send after open-ok"
    );
}

#[test]
fn handshake_accepts_servers_values_without_preferences() {
    let (s, tuned) = Script::open(NO_PREFS, RABBIT_TUNE);
    assert_eq!(tuned, RABBIT_TUNE);
    assert_eq!(s.conn.max_body_frame(), 131_072 - 8);
}

#[test]
fn tune_frame_max_zero_means_no_limit_with_a_sane_split() {
    let (mut s, tuned) = Script::open(
        NO_PREFS,
        Tuned {
            frame_max: 0,
            ..RABBIT_TUNE
        },
    );
    assert_eq!(tuned.frame_max, 0);
    let split = s.conn.max_body_frame();
    assert!(
        (4096..=1024 * 1024).contains(&split),
        "split size {split} with frame-max 0"
    );

    // Inbound, "no limit" is capped by the message limit, not by 4096: a 200 KB body frame is accepted.
    open_channel(&mut s, 1);
    let body = pattern(200_000);
    s.send_frames(&deliver_frames(1, &body, &[body.len()]))
        .unwrap();
    let [Event::Content {
        channel: 1,
        content,
    }] = &s.events()[..]
    else {
        panic!("expected one content event");
    };
    assert_eq!(content.body, body);
}

#[test]
fn tune_frame_max_below_minimum_is_raised_to_4096() {
    for server_frame_max in [1, 100, 4095] {
        let (s, tuned) = Script::open(
            NO_PREFS,
            Tuned {
                frame_max: server_frame_max,
                ..RABBIT_TUNE
            },
        );
        assert_eq!(tuned.frame_max, 4096, "server proposed {server_frame_max}");
        assert_eq!(s.conn.max_body_frame(), 4096 - 8);
    }
    // A client preference below the minimum is raised too.
    let (_, tuned) = Script::open(
        TunePreferences {
            frame_max: 512,
            ..NO_PREFS
        },
        RABBIT_TUNE,
    );
    assert_eq!(tuned.frame_max, 4096);
}

#[test]
fn tune_channel_max_zero_means_no_limit() {
    let server = Tuned {
        channel_max: 0,
        ..RABBIT_TUNE
    };
    let (_, tuned) = Script::open(NO_PREFS, server);
    assert_eq!(tuned.channel_max, u16::MAX);
    let (_, tuned) = Script::open(
        TunePreferences {
            channel_max: 10,
            ..NO_PREFS
        },
        server,
    );
    assert_eq!(tuned.channel_max, 10);
}

#[test]
fn tune_heartbeat_zero_disables_heartbeats() {
    let server = Tuned {
        heartbeat: 0,
        ..RABBIT_TUNE
    };
    let (mut s, tuned) = Script::open(NO_PREFS, server);
    assert_eq!(tuned.heartbeat, 0);
    assert_eq!(s.conn.poll_timeout(), None);
    s.advance(Duration::from_secs(3600));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert!(s.received().is_empty(), "no heartbeat when disabled");

    // The client may ask for heartbeats the server did not propose, and may refuse the server's.
    let (_, tuned) = Script::open(
        TunePreferences {
            heartbeat: Some(10),
            ..NO_PREFS
        },
        server,
    );
    assert_eq!(tuned.heartbeat, 10);
    let (s, tuned) = Script::open(
        TunePreferences {
            heartbeat: Some(0),
            ..NO_PREFS
        },
        RABBIT_TUNE,
    );
    assert_eq!(tuned.heartbeat, 0);
    assert_eq!(s.conn.poll_timeout(), None);
}

#[test]
fn tune_all_zero() {
    let (s, tuned) = Script::open(
        NO_PREFS,
        Tuned {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        },
    );
    assert!(tuned.channel_max > 0);
    assert_eq!(tuned.frame_max, 0);
    assert_eq!(tuned.heartbeat, 0);
    assert!(s.conn.max_body_frame() > 0);
}

#[test]
fn handshake_fails_without_plain() {
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    let err = s.send(0, start("AMQPLAIN EXTERNAL", 0, 9)).unwrap_err();
    let ConnectionError::Handshake(text) = &err else {
        panic!("expected a handshake error, got {err:?}");
    };
    assert!(text.contains("PLAIN"), "{text}");
    assert!(
        s.received().is_empty(),
        "no start-ok for a mechanism not offered"
    );
    assert!(!s.conn.is_open());
}

#[test]
fn handshake_fails_on_mechanism_prefix_match() {
    // "PLAINX" is not "PLAIN".
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    let err = s.send(0, start("PLAINX AMQPLAIN", 0, 9)).unwrap_err();
    assert!(matches!(err, ConnectionError::Handshake(_)), "{err:?}");
}

/// spec (frame-min-size): before tuning, a peer need accept no frame over 4096 octets (RabbitMQ resets
/// the socket). A start-ok over it (a long connection name, or a long token as the password) is refused
/// with an error naming the limit, and nothing is sent.
#[test]
fn a_start_ok_over_the_pre_tune_frame_limit_is_refused() {
    let mut p = params(NO_PREFS);
    p.connection_name = Some("n".repeat(5000));
    let mut s = Script::new(p);
    s.take_protocol_header();
    let err = s.send(0, start("PLAIN AMQPLAIN", 0, 9)).unwrap_err();
    let ConnectionError::Handshake(text) = &err else {
        panic!("expected a handshake error, got {err:?}");
    };
    assert!(text.contains("4096"), "{text}");
    assert!(s.received().is_empty(), "nothing is sent");
    // One that fits goes out.
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    s.send(0, start("PLAIN AMQPLAIN", 0, 9)).unwrap();
    assert_eq!(s.received().len(), 1, "start-ok");
}

#[test]
fn handshake_fails_on_version_0_8() {
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    let err = s.send(0, start("PLAIN", 8, 0)).unwrap_err();
    assert!(matches!(err, ConnectionError::Handshake(_)), "{err:?}");
    assert!(s.received().is_empty());
}

#[test]
fn server_answering_with_its_protocol_header_is_an_error() {
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    let mut buf = BytesMut::from(&b"AMQP\x01\x01\x00\x09"[..]);
    let err = s.conn.handle_input(&mut buf, s.now).unwrap_err();
    assert!(matches!(err, ConnectionError::Violation { .. }), "{err:?}");
    assert!(
        s.received().is_empty(),
        "no connection.close to a peer that has not started"
    );
}

#[test]
fn connection_close_during_handshake_is_server_closed_with_close_ok() {
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    s.send(0, start("PLAIN", 0, 9)).unwrap();
    s.received_method();
    let close = connection::Close {
        reply_code: ReplyCode::ACCESS_REFUSED,
        reply_text: ShortStr::from_static("ACCESS_REFUSED - Login was refused"),
        class_id: 0,
        method_id: 0,
    };
    let err = s.send(0, close.clone()).unwrap_err();
    assert_eq!(err, ConnectionError::ServerClosed(close));
    assert_eq!(s.received_methods(), vec![(0, connection::CloseOk.into())]);
    assert!(s.conn.is_closed());
    assert!(s.events().is_empty());
}

#[test]
fn debug_output_never_shows_the_password_waiting_to_be_sent() {
    let mut p = params(NO_PREFS);
    p.password = "hunter2-not-for-logs".into();
    let mut s = Script::new(p);
    s.take_protocol_header();
    s.send(0, start("PLAIN", 0, 9)).unwrap();
    assert!(
        !s.conn.transmit().is_empty(),
        "start-ok is queued, not yet taken"
    );
    let shown = format!("{:?}", s.conn);
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn channel_method_before_open_ok_is_unexpected() {
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    s.send(0, start("PLAIN", 0, 9)).unwrap();
    s.send(0, tune(RABBIT_TUNE)).unwrap();
    s.received();
    let err = s.send(1, channel::OpenOk).unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
    assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
}

// ---------------------------------------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------------------------------------

fn heartbeat_10() -> Script {
    let (s, tuned) = Script::open(
        NO_PREFS,
        Tuned {
            heartbeat: 10,
            ..RABBIT_TUNE
        },
    );
    assert_eq!(tuned.heartbeat, 10);
    s
}

#[test]
fn heartbeat_sent_after_half_an_interval_of_write_silence() {
    let mut s = heartbeat_10();
    let t0 = s.now;
    assert_eq!(s.conn.poll_timeout(), Some(t0 + Duration::from_secs(5)));

    s.advance(Duration::from_millis(4_999));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert!(s.received().is_empty(), "too early for a heartbeat");

    s.advance(Duration::from_millis(1));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert_eq!(s.received(), vec![Frame::Heartbeat]);
    // Written at 5 s: the next one is due at 10 s.
    assert_eq!(s.conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));

    // Other writes count as traffic: a method written at 8 s pushes the heartbeat to 13 s.
    s.advance(Duration::from_secs(3));
    open_channel(&mut s, 1);
    assert_eq!(s.conn.poll_timeout(), Some(t0 + Duration::from_secs(13)));
    s.advance(Duration::from_secs(4));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert!(s.received().is_empty());
}

#[test]
fn heartbeat_timeout_after_two_intervals_of_read_silence() {
    let mut s = heartbeat_10();
    let t0 = s.now;
    // Keep our side talking so only the read timer matters.
    for _ in 0..3 {
        s.advance(Duration::from_secs(5));
        s.conn.handle_timeout(s.now, false).unwrap();
        assert_eq!(s.received(), vec![Frame::Heartbeat]);
    }
    assert_eq!(s.now, t0 + Duration::from_secs(15));
    s.advance(Duration::from_millis(4_999));
    s.conn.handle_timeout(s.now, false).unwrap();
    s.received();

    s.now = t0 + Duration::from_secs(20);
    assert!(s.conn.poll_timeout().unwrap() <= s.now);
    let err = s.conn.handle_timeout(s.now, false).unwrap_err();
    assert_eq!(
        err,
        ConnectionError::HeartbeatTimeout(Duration::from_secs(20))
    );
}

#[test]
fn any_received_frame_resets_the_read_timer() {
    let mut s = heartbeat_10();
    let t0 = s.now;

    s.now = t0 + Duration::from_secs(15);
    s.send_frames(&[Frame::Heartbeat]).unwrap();
    s.now = t0 + Duration::from_secs(34);
    s.conn.handle_timeout(s.now, false).unwrap();
    assert_eq!(
        s.received(),
        vec![Frame::Heartbeat],
        "our own heartbeat is due too"
    );
    assert!(s.conn.poll_timeout().unwrap() <= t0 + Duration::from_secs(35));

    // A method counts as well as a heartbeat.
    open_channel(&mut s, 1);
    s.send(1, basic::QosOk).unwrap();
    s.events();
    s.now = t0 + Duration::from_secs(53);
    s.conn.handle_timeout(s.now, false).unwrap();
    s.now = t0 + Duration::from_secs(54);
    let err = s.conn.handle_timeout(s.now, false).unwrap_err();
    assert!(
        matches!(err, ConnectionError::HeartbeatTimeout(_)),
        "{err:?}"
    );
}

#[test]
fn no_heartbeat_timeout_while_reading_is_paused() {
    let mut s = heartbeat_10();
    let t0 = s.now;
    s.now = t0 + Duration::from_secs(100);
    s.conn.handle_timeout(s.now, true).unwrap();
    s.now = t0 + Duration::from_secs(500);
    s.conn.handle_timeout(s.now, true).unwrap();
    // Resuming: the silence while paused was ours; the server gets a full two intervals from here.
    s.now = t0 + Duration::from_secs(519);
    s.conn.handle_timeout(s.now, false).unwrap();
    s.now = t0 + Duration::from_secs(520);
    let err = s.conn.handle_timeout(s.now, false).unwrap_err();
    assert!(
        matches!(err, ConnectionError::HeartbeatTimeout(_)),
        "{err:?}"
    );
}

#[test]
fn heartbeat_not_queued_when_other_bytes_are_pending() {
    let mut s = heartbeat_10();
    open_channel_no_drain(&mut s, 1);
    s.advance(Duration::from_secs(6));
    s.conn.handle_timeout(s.now, false).unwrap();
    let frames = s.received();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(matches!(
        frames[0],
        Frame::Method {
            channel: 1,
            method: Method::ChannelOpen(_)
        }
    ));
}

#[test]
fn handle_timeout_always_moves_the_deadline_forward() {
    // The driver sleeps until poll_timeout() and then calls handle_timeout(). If the deadline could stay in
    // the past, the driver would spin; that happens when the socket is not writable (the broker stopped
    // reading: a memory alarm), so earlier bytes are still pending and no heartbeat can be queued.
    let mut s = heartbeat_10();
    s.conn.open_channel(1);
    s.advance(Duration::from_secs(6));
    s.conn.handle_timeout(s.now, false).unwrap();
    let next = s.conn.poll_timeout().unwrap();
    assert!(next > s.now, "deadline {:?} not after now", next - s.now);

    // Same once a heartbeat was queued but not yet written.
    let mut s = heartbeat_10();
    s.advance(Duration::from_secs(6));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert!(s.conn.poll_timeout().unwrap() > s.now);
    s.advance(Duration::from_secs(6));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert!(s.conn.poll_timeout().unwrap() > s.now);
    // Only one heartbeat is queued however long the write is stuck.
    assert_eq!(s.received(), vec![Frame::Heartbeat]);

    // Same while reading is paused.
    let mut s = heartbeat_10();
    s.advance(Duration::from_secs(30));
    s.conn.handle_timeout(s.now, true).unwrap();
    assert!(s.conn.poll_timeout().unwrap() > s.now);
}

// ---------------------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------------------

#[test]
fn channel_open() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    s.conn.open_channel(1);
    assert_eq!(s.received_methods(), vec![(1, channel::Open.into())]);
    s.send(1, channel::OpenOk).unwrap();
    assert_eq!(
        s.events(),
        vec![Event::Method {
            channel: 1,
            method: channel::OpenOk.into()
        }]
    );
    assert!(s.conn.channel_is_usable(1));
    assert!(!s.conn.channel_is_usable(2));
}

#[test]
fn server_closes_channel() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let close = channel::Close {
        reply_code: ReplyCode::NOT_FOUND,
        reply_text: ShortStr::from_static("NOT_FOUND - no queue 'q'"),
        class_id: 50,
        method_id: 10,
    };
    s.send(1, close.clone()).unwrap();
    assert_eq!(s.received_methods(), vec![(1, channel::CloseOk.into())]);
    assert_eq!(
        s.events(),
        vec![Event::ChannelClosed {
            channel: 1,
            cause: ChannelCloseCause::Server(close)
        }]
    );
    assert!(!s.conn.channel_is_usable(1));
    assert!(s.conn.is_open(), "a soft error leaves the connection open");

    // The id is free: it can be opened again.
    open_channel(&mut s, 1);
    assert!(s.conn.channel_is_usable(1));
}

/// RabbitMQ can have a delivery on the wire behind its own channel.close (it was on its way when the
/// channel failed): it is dropped, as the Java client drops it, not a 504 for the whole connection. Once
/// the id is opened again, what comes before open-ok is still the old incarnation's and is dropped too;
/// after open-ok the channel is live again.
#[test]
fn frames_behind_a_server_channel_close_are_dropped_until_the_id_is_open_again() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let close = channel::Close {
        reply_code: ReplyCode::PRECONDITION_FAILED,
        reply_text: ShortStr::from_static("PRECONDITION_FAILED - unknown delivery tag 1"),
        class_id: 60,
        method_id: 80,
    };
    let mut frames = vec![Frame::Method {
        channel: 1,
        method: close.clone().into(),
    }];
    frames.extend(deliver_frames(1, b"behind the close", &[16]));
    s.send_frames(&frames).unwrap();
    assert_eq!(s.received_methods(), vec![(1, channel::CloseOk.into())]);
    assert_eq!(
        s.events(),
        vec![Event::ChannelClosed {
            channel: 1,
            cause: ChannelCloseCause::Server(close)
        }]
    );
    assert!(s.conn.is_open());
    assert!(!s.conn.channel_is_usable(1));

    // Reopened: the old incarnation's frames before open-ok are dropped, with no answer.
    open_channel_no_drain(&mut s, 1);
    assert_eq!(s.received_methods(), vec![(1, channel::Open.into())]);
    let mut frames = deliver_frames(1, b"still the old one", &[17]);
    frames.push(Frame::Method {
        channel: 1,
        method: channel::OpenOk.into(),
    });
    s.send_frames(&frames).unwrap();
    assert_eq!(
        s.events(),
        vec![Event::Method {
            channel: 1,
            method: channel::OpenOk.into()
        }]
    );
    assert!(s.received_methods().is_empty());
    assert!(s.conn.channel_is_usable(1));

    // Live again: a delivery is delivered.
    s.send_frames(&deliver_frames(1, b"new", &[3])).unwrap();
    assert!(matches!(
        &s.events()[..],
        [Event::Content { channel: 1, .. }]
    ));

    // An id that was never opened still gets a 504.
    let err = s.send_frames(&deliver_frames(9, b"x", &[1])).unwrap_err();
    assert_violation(&err, ReplyCode::CHANNEL_ERROR);
}

#[test]
fn client_closes_channel_and_discards_frames_until_close_ok() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.conn.close_channel(1, ReplyCode::REPLY_SUCCESS, "bye");
    assert_eq!(
        s.received_methods(),
        vec![(
            1,
            channel::Close {
                reply_code: ReplyCode::REPLY_SUCCESS,
                reply_text: ShortStr::from_static("bye"),
                class_id: 0,
                method_id: 0,
            }
            .into()
        )]
    );
    assert!(!s.conn.channel_is_usable(1));
    // Closing twice sends one close.
    s.conn.close_channel(1, ReplyCode::REPLY_SUCCESS, "bye");
    assert!(s.received().is_empty());

    // spec: "any received methods except Close and Close-OK MUST be discarded" (content included).
    s.send(
        1,
        basic::Ack {
            delivery_tag: 1,
            multiple: false,
        },
    )
    .unwrap();
    s.send_frames(&deliver_frames(1, b"in flight", &[4, 5]))
        .unwrap();
    s.send(1, channel::Flow { active: false }).unwrap();
    assert!(s.events().is_empty());
    assert!(s.received().is_empty(), "no flow-ok on a closing channel");

    s.send(1, channel::CloseOk).unwrap();
    assert_eq!(
        s.events(),
        vec![Event::ChannelClosed {
            channel: 1,
            cause: ChannelCloseCause::Client {
                code: ReplyCode::REPLY_SUCCESS,
                text: "bye".into()
            }
        }]
    );
    assert!(s.conn.is_open());
    open_channel(&mut s, 1);
}

#[test]
fn simultaneous_channel_close() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.conn.close_channel(1, ReplyCode::REPLY_SUCCESS, "bye");
    s.received();
    let close = channel::Close {
        reply_code: ReplyCode::PRECONDITION_FAILED,
        reply_text: ShortStr::from_static("PRECONDITION_FAILED - unknown delivery tag 9"),
        class_id: 60,
        method_id: 80,
    };
    s.send(1, close.clone()).unwrap();
    assert_eq!(s.received_methods(), vec![(1, channel::CloseOk.into())]);
    assert!(
        s.events().is_empty(),
        "still waiting for close-ok to our close"
    );
    s.send(1, channel::CloseOk).unwrap();
    // The server's reason is the more useful one.
    assert_eq!(
        s.events(),
        vec![Event::ChannelClosed {
            channel: 1,
            cause: ChannelCloseCause::Server(close)
        }]
    );
    assert!(s.conn.is_open());
}

#[test]
fn channel_flow_is_answered_and_reported() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.send(1, channel::Flow { active: false }).unwrap();
    assert_eq!(
        s.received_methods(),
        vec![(1, channel::FlowOk { active: false }.into())]
    );
    assert_eq!(
        s.events(),
        vec![Event::Method {
            channel: 1,
            method: channel::Flow { active: false }.into()
        }]
    );
}

#[test]
fn blocked_and_unblocked_become_events() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    s.send(
        0,
        connection::Blocked {
            reason: ShortStr::from_static("low on memory"),
        },
    )
    .unwrap();
    s.send(0, connection::Unblocked).unwrap();
    assert_eq!(
        s.events(),
        vec![
            Event::Blocked(ShortStr::from_static("low on memory")),
            Event::Unblocked
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------
// Content assembly and inbound violations
// ---------------------------------------------------------------------------------------------------------

#[test]
fn content_split_across_three_body_frames() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let body = pattern(30);
    let frames = deliver_frames(1, &body, &[10, 10, 10]);
    assert_eq!(frames.len(), 5);
    // Nothing until the last byte.
    for frame in &frames[..4] {
        s.send_frames(std::slice::from_ref(frame)).unwrap();
        assert!(s.events().is_empty());
    }
    s.send_frames(&frames[4..]).unwrap();
    let events = s.events();
    let [Event::Content {
        channel: 1,
        content,
    }] = &events[..]
    else {
        panic!("expected one content event, got {events:?}");
    };
    assert_eq!(content.method, Method::BasicDeliver(deliver(7)));
    assert_eq!(content.header.body_size, 30);
    assert_eq!(*content.header.properties.decode().unwrap(), properties());
    assert_eq!(content.body, body);
    assert!(s.received().is_empty());

    // The channel is ready for the next message.
    s.send_frames(&deliver_frames(1, b"next", &[4])).unwrap();
    assert_eq!(s.events().len(), 1);
}

#[test]
fn content_in_one_input_buffer() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let body = pattern(25);
    let mut buf = BytesMut::new();
    for frame in deliver_frames(1, &body, &[3, 7, 15]) {
        frame.encode(&mut buf);
    }
    // Fed a byte at a time: partial frames wait for more input.
    for byte in buf.iter() {
        s.send_raw(&[*byte]).unwrap();
    }
    assert!(s.pending.is_empty());
    let content = s.one_content();
    assert_eq!(content.body, body);
}

/// Payload per body frame with RabbitMQ's frame-max.
const RABBIT_BODY_FRAME: usize = 131_072 - 8;

#[test]
fn large_body_frames_go_straight_into_the_message() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let body = pattern(300_000);
    let sizes = [
        RABBIT_BODY_FRAME,
        RABBIT_BODY_FRAME,
        300_000 - 2 * RABBIT_BODY_FRAME,
    ];
    let mut frames = deliver_frames(1, &body, &sizes);
    frames.extend(deliver_frames(1, b"next", &[4]));
    let bytes = wire(&frames);
    // The method, the header and the start of the first body frame arrive in one read.
    let head = frame_bytes(&frames[..2]).len() + 7 + 1000;
    s.send_raw(&bytes[..head]).unwrap();
    assert!(s.events().is_empty());
    let direct = s
        .read_like_the_driver(&bytes[head..], || 64 * 1024, || true)
        .unwrap();
    // Everything but the 1000 bytes that came with the header, and the small frames after the body.
    assert_eq!(direct, body.len() - 1000);
    let events = s.events();
    let [Event::Content { content: big, .. }, Event::Content { content: next, .. }] = &events[..]
    else {
        panic!("expected two content events, got {events:?}");
    };
    assert_eq!(big.body, body);
    assert_eq!(*big.header.properties.decode().unwrap(), properties());
    assert_eq!(next.body, &b"next"[..]);
    assert!(s.pending.is_empty());
}

#[test]
fn a_large_frame_claim_gets_a_read_s_worth_of_room_not_its_size() {
    // frame-max 0: inbound frames are capped by the 1 MiB message limit only.
    let (mut s, _) = Script::open(
        NO_PREFS,
        Tuned {
            frame_max: 0,
            ..RABBIT_TUNE
        },
    );
    open_channel(&mut s, 1);
    let size = MAX_MESSAGE_SIZE as usize;
    let frames = deliver_frames(1, &pattern(size), &[16, size - 16]);
    let bytes = wire(&frames);
    // The method, the header, a 16-byte frame and the next frame's header claiming the rest: 8 bytes
    // of it are all that arrived.
    let head = frame_bytes(&frames[..3]).len() + 7;
    s.send_raw(&bytes[..head]).unwrap();
    let ReadTarget::Body(room) = s.conn.read_target() else {
        panic!("the claimed frame should be read straight into the body");
    };
    let capacity = room.get_ref().capacity();
    assert!(
        capacity <= 256 * 1024,
        "{capacity} bytes of room for a {size}-byte claim after 16 body bytes"
    );
    let direct = s
        .read_like_the_driver(&bytes[head..], || 64 * 1024, || true)
        .unwrap();
    assert_eq!(direct, size - 16);
    let content = s.one_content();
    assert_eq!(content.body, pattern(size));
}

/// An open connection with channel 1 open, and the frames of a 200,000-byte delivery on it in two
/// 100,000-byte body frames (both large enough to be read straight into the message), not yet sent.
fn two_frame_delivery() -> (Script, Vec<u8>, Vec<Frame>) {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let body = pattern(200_000);
    let frames = deliver_frames(1, &body, &[100_000, 100_000]);
    (s, body, frames)
}

#[test]
fn a_bad_frame_end_after_a_direct_payload_is_a_501_violation() {
    let (mut s, _, frames) = two_frame_delivery();
    let mut bytes = wire(&frames);
    let first_end = frame_bytes(&frames[..3]).len() - 1;
    bytes[first_end] = 0x00;
    s.send_raw(&bytes[..frame_bytes(&frames[..2]).len() + 7])
        .unwrap();
    let rest = &bytes[frame_bytes(&frames[..2]).len() + 7..];
    let err = s
        .read_like_the_driver(rest, || 32 * 1024, || true)
        .unwrap_err();
    assert_violation(&err, ReplyCode::FRAME_ERROR);
    assert!(s.events().is_empty());
    // The client sent connection.close; the driver drops what it had read and waits for close-ok, which
    // is a frame again, not the end octet owed.
    s.pending.clear();
    assert!(matches!(
        &s.received_methods()[..],
        [(0, Method::ConnectionClose(_))]
    ));
    s.send(0, connection::CloseOk).unwrap();
    assert!(s.conn.is_closed());
}

#[test]
fn a_direct_payload_whose_end_octet_comes_in_the_next_read() {
    let (mut s, body, frames) = two_frame_delivery();
    let bytes = wire(&frames);
    // The first body frame whole but for its end octet: nothing left to read into the body.
    let first_end = frame_bytes(&frames[..3]).len() - 1;
    s.send_raw(&bytes[..first_end]).unwrap();
    assert!(matches!(s.conn.read_target(), ReadTarget::Buffer(Some(8))));
    let direct = s
        .read_like_the_driver(&bytes[first_end..], || 64 * 1024, || true)
        .unwrap();
    assert_eq!(direct, 100_000, "the second frame's payload, all of it");
    let content = s.one_content();
    assert_eq!(content.body, body);
}

#[test]
fn a_large_body_frame_that_overruns_the_declared_size_is_still_a_505_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let mut frames = deliver_frames(1, &pattern(40_000), &[20_000, 20_000]);
    frames[3] = body_frame(1, &pattern(30_000));
    let bytes = wire(&frames);
    let head = frame_bytes(&frames[..3]).len() + 7 + 10;
    s.send_raw(&bytes[..head]).unwrap();
    let err = s
        .read_like_the_driver(&bytes[head..], || 4096, || true)
        .unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn client_close_mid_direct_body_frame_discards_the_rest() {
    let (mut s, _, frames) = two_frame_delivery();
    let bytes = wire(&frames);
    let head = frame_bytes(&frames[..2]).len() + 7 + 10;
    s.send_raw(&bytes[..head]).unwrap();
    let direct = s
        .read_like_the_driver(&bytes[head..head + 50_000], || 50_000, || true)
        .unwrap();
    assert_eq!(direct, 50_000);
    s.conn.close_channel(1, ReplyCode::REPLY_SUCCESS, "bye");
    s.received();
    let direct = s
        .read_like_the_driver(&bytes[head + 50_000..], || 8192, || true)
        .unwrap();
    assert_eq!(direct, 0, "nothing goes into a dropped message");
    s.send(1, channel::CloseOk).unwrap();
    let events = s.events();
    assert!(
        matches!(&events[..], [Event::ChannelClosed { channel: 1, .. }]),
        "{events:?}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// However the bytes are split into reads, and whether each read goes where `read_target` says or
    /// into the read buffer, a multi-frame message (with a heartbeat between two of its frames) arrives
    /// whole and the decoder goes on with the next one; and small reads that take every offer do put
    /// bytes straight into the body.
    #[test]
    fn bodies_arrive_whole_whichever_target_takes_the_bytes(
        mut frame_sizes in proptest::collection::vec(16_384usize..=RABBIT_BODY_FRAME, 2..5),
        small_tail in 0usize..2000,
        heartbeat_after in 0usize..5,
        chunks in proptest::collection::vec(1usize..200_000, 1..64),
        direct in proptest::collection::vec(proptest::bool::ANY, 1..64),
    ) {
        if small_tail > 0 {
            frame_sizes.push(small_tail);
        }
        let body = pattern(frame_sizes.iter().sum());
        let mut frames = deliver_frames(1, &body, &frame_sizes);
        if heartbeat_after < frame_sizes.len() {
            frames.insert(3 + heartbeat_after, Frame::Heartbeat);
        }
        frames.extend(deliver_frames(1, b"next", &[4]));
        let bytes = wire(&frames);
        let (mut c, mut d) = (chunks.iter().cycle(), direct.iter().cycle());
        let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
        open_channel(&mut s, 1);
        s.read_like_the_driver(&bytes, || *c.next().unwrap(), || *d.next().unwrap()).unwrap();
        big_then_next(&mut s, &body)?;
        // Every offer taken, in small reads: the large frames after the first go straight in.
        let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
        open_channel(&mut s, 1);
        let into_body = s.read_like_the_driver(&bytes, || 4096, || true).unwrap();
        proptest::prop_assert!(into_body > 0, "small reads never went into the body");
        big_then_next(&mut s, &body)?;
    }
}

/// The events after `body`'s message and a 4-byte "next" one, with nothing left over.
fn big_then_next(s: &mut Script, body: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let events = s.events();
    let [Event::Content { content: big, .. }, Event::Content { content: next, .. }] = &events[..]
    else {
        panic!("expected two content events, got {events:?}");
    };
    proptest::prop_assert_eq!(&big.body[..], body);
    proptest::prop_assert_eq!(&next.body[..], b"next");
    proptest::prop_assert!(s.pending.is_empty());
    Ok(())
}

#[test]
fn zero_size_body_completes_at_the_header() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let frames = deliver_frames(1, b"", &[]);
    assert_eq!(frames.len(), 2);
    s.send_frames(&frames).unwrap();
    let events = s.events();
    let [Event::Content {
        channel: 1,
        content,
    }] = &events[..]
    else {
        panic!("expected one content event, got {events:?}");
    };
    assert!(content.body.is_empty());
    assert_eq!(content.header.body_size, 0);
    // A body frame now is not part of any content.
    let err = s
        .send_frames(&[Frame::Body {
            channel: 1,
            payload: Bytes::from_static(b"x"),
        }])
        .unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn body_larger_than_max_message_size_closes_the_channel_with_311() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    open_channel(&mut s, 2);
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[Frame::Header {
        channel: 1,
        header: ContentHeader {
            class_id: basic::CLASS_ID,
            body_size: MAX_MESSAGE_SIZE + 1,
            properties: Default::default(),
        },
    }])
    .unwrap();
    let sent = s.received_methods();
    let [(1, Method::ChannelClose(close))] = &sent[..] else {
        panic!("expected channel.close on 1, got {sent:?}");
    };
    assert_eq!(close.reply_code, ReplyCode::CONTENT_TOO_LARGE);
    assert_eq!(close.reply_code.code(), 311);
    assert!(s.conn.is_open());
    assert!(!s.conn.channel_is_usable(1));
    // The driver hears of the close at once, to end the channel's handles and time its close-ok.
    let events = s.events();
    let [Event::ChannelClosing {
        channel: 1,
        cause: ChannelCloseCause::Client { code, .. },
    }] = &events[..]
    else {
        panic!("expected channel 1 closing, got {events:?}");
    };
    assert_eq!(*code, ReplyCode::CONTENT_TOO_LARGE);

    // The rest of the oversized body is discarded, not buffered and not an error.
    for _ in 0..4 {
        s.send_frames(&[Frame::Body {
            channel: 1,
            payload: Bytes::from(vec![0u8; 100_000]),
        }])
        .unwrap();
    }
    assert!(s.events().is_empty());

    // Other channels are unaffected.
    s.send_frames(&deliver_frames(2, b"ok", &[2])).unwrap();
    assert!(matches!(
        &s.events()[..],
        [Event::Content { channel: 2, .. }]
    ));

    s.send(1, channel::CloseOk).unwrap();
    let events = s.events();
    let [Event::ChannelClosed {
        channel: 1,
        cause: ChannelCloseCause::Client { code, .. },
    }] = &events[..]
    else {
        panic!("expected channel 1 closed, got {events:?}");
    };
    assert_eq!(*code, ReplyCode::CONTENT_TOO_LARGE);
}

#[test]
fn body_at_max_message_size_is_accepted() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let body = pattern(MAX_MESSAGE_SIZE as usize);
    let chunk = s.conn.max_body_frame();
    let mut sizes = vec![chunk; body.len() / chunk];
    sizes.push(body.len() % chunk);
    s.send_frames(&deliver_frames(1, &body, &sizes)).unwrap();
    let content = s.one_content();
    assert_eq!(content.body, body);
}

#[test]
fn body_overrun_is_a_505_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[header_frame(1, 10)]).unwrap();
    s.send_frames(&[body_frame(1, &pattern(6))]).unwrap();
    let err = s.send_frames(&[body_frame(1, &pattern(5))]).unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
    assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
    assert!(s.events().is_empty());
    // After our close, the server's close-ok completes it.
    s.send(0, connection::CloseOk).unwrap();
    assert_eq!(s.events(), vec![Event::Closed]);
    assert!(s.conn.is_closed());
}

#[test]
fn single_body_frame_overrun_is_a_505_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[header_frame(1, 10)]).unwrap();
    let err = s.send_frames(&[body_frame(1, &pattern(11))]).unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
    assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn header_without_method_is_a_505_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let err = s.send_frames(&[header_frame(1, 3)]).unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
    assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn body_before_header_is_a_505_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.send(1, deliver(1)).unwrap();
    let err = s.send_frames(&[body_frame(1, b"abc")]).unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
    assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn second_header_is_a_505_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[header_frame(1, 3)]).unwrap();
    let err = s.send_frames(&[header_frame(1, 3)]).unwrap_err();
    assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
}

#[test]
fn method_while_content_expected_is_a_505_violation() {
    for with_header in [false, true] {
        let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
        open_channel(&mut s, 1);
        s.send(1, deliver(1)).unwrap();
        if with_header {
            s.send_frames(&[header_frame(1, 10)]).unwrap();
        }
        let err = s
            .send(
                1,
                basic::Ack {
                    delivery_tag: 1,
                    multiple: false,
                },
            )
            .unwrap_err();
        assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
        assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
    }
}

#[test]
fn content_on_channel_0_is_a_505_violation() {
    for frame in [header_frame(0, 3), body_frame(0, b"abc")] {
        let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
        let err = s.send_frames(&[frame]).unwrap_err();
        assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
        assert_eq!(ReplyCode::UNEXPECTED_FRAME.code(), 505);
        assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
    }
}

#[test]
fn frame_on_unopened_channel_is_a_504_violation() {
    let frames = [
        Frame::Method {
            channel: 7,
            method: basic::Ack {
                delivery_tag: 1,
                multiple: false,
            }
            .into(),
        },
        Frame::Method {
            channel: 7,
            method: deliver(1).into(),
        },
        header_frame(7, 3),
        body_frame(7, b"abc"),
    ];
    for frame in frames {
        let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
        open_channel(&mut s, 1);
        let err = s.send_frames(&[frame]).unwrap_err();
        assert_violation(&err, ReplyCode::CHANNEL_ERROR);
        assert_connection_close_sent(&mut s, ReplyCode::CHANNEL_ERROR);
    }
}

#[test]
fn heartbeat_on_a_channel_is_a_501_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 3);
    let raw = [spec::FRAME_HEARTBEAT, 0, 3, 0, 0, 0, 0, spec::FRAME_END];
    let err = s.send_raw(&raw).unwrap_err();
    assert_violation(&err, ReplyCode::FRAME_ERROR);
    assert_eq!(ReplyCode::FRAME_ERROR.code(), 501);
    assert_connection_close_sent(&mut s, ReplyCode::FRAME_ERROR);
}

#[test]
fn unknown_method_is_a_503_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let mut raw = BytesMut::new();
    raw.put_u8(spec::FRAME_METHOD);
    raw.put_u16(1);
    raw.put_u32(4);
    raw.put_u16(basic::CLASS_ID);
    raw.put_u16(999);
    raw.put_u8(spec::FRAME_END);
    let err = s.send_raw(&raw).unwrap_err();
    assert_violation(&err, ReplyCode::COMMAND_INVALID);
    assert_eq!(ReplyCode::COMMAND_INVALID.code(), 503);
    assert_connection_close_sent(&mut s, ReplyCode::COMMAND_INVALID);
}

#[test]
fn client_only_method_from_server_is_a_503_violation() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let err = s
        .send(
            1,
            basic::Qos {
                prefetch_size: 0,
                prefetch_count: 1,
                global: false,
            },
        )
        .unwrap_err();
    assert_violation(&err, ReplyCode::COMMAND_INVALID);
}

#[test]
fn frame_larger_than_negotiated_frame_max_is_a_501_violation() {
    let (mut s, tuned) = Script::open(NO_PREFS, RABBIT_TUNE);
    let frame_max = tuned.frame_max as usize;
    open_channel(&mut s, 1);
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[header_frame(1, 2 * frame_max as u64)])
        .unwrap();
    // Exactly frame-max is fine.
    s.send_frames(&[body_frame(1, &pattern(frame_max - 8))])
        .unwrap();
    // One byte more is not; the size is checked from the 7-byte header alone.
    let mut raw = BytesMut::new();
    raw.put_u8(spec::FRAME_BODY);
    raw.put_u16(1);
    raw.put_u32((frame_max - 8 + 1) as u32);
    let err = s.send_raw(&raw).unwrap_err();
    assert_violation(&err, ReplyCode::FRAME_ERROR);
    assert_connection_close_sent(&mut s, ReplyCode::FRAME_ERROR);
}

#[test]
fn frame_larger_than_4096_before_tune_is_rejected() {
    let mut s = Script::new(params(NO_PREFS));
    s.take_protocol_header();
    let mut raw = BytesMut::new();
    raw.put_u8(spec::FRAME_METHOD);
    raw.put_u16(0);
    raw.put_u32(4096);
    let err = s.send_raw(&raw).unwrap_err();
    assert_violation(&err, ReplyCode::FRAME_ERROR);
}

#[test]
fn frame_max_zero_with_a_small_message_limit_still_accepts_minimum_size_frames() {
    // spec: a peer "MUST accept frames of up to frame-min-size octets" whatever was negotiated. With
    // frame-max 0 the inbound cap derives from max_message_size; a small limit must not push it below that.
    let mut params = params(NO_PREFS);
    params.max_message_size = 100;
    let mut s = Script::new(params);
    s.take_protocol_header();
    s.send(0, start("PLAIN", 0, 9)).unwrap();
    s.send(
        0,
        tune(Tuned {
            frame_max: 0,
            ..RABBIT_TUNE
        }),
    )
    .unwrap();
    s.send(0, connection::OpenOk).unwrap();
    s.received();
    s.events();
    open_channel(&mut s, 1);
    // A header frame of ~3 KB (a large headers table) for a 10-byte body.
    let mut props = properties();
    props.headers = Some(FieldTable::new().with("x-big", "h".repeat(3000)));
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[
        Frame::Header {
            channel: 1,
            header: ContentHeader {
                class_id: basic::CLASS_ID,
                body_size: 10,
                properties: PropertyList::encode(&props),
            },
        },
        body_frame(1, &pattern(10)),
    ])
    .unwrap();
    let content = s.one_content();
    assert_eq!(*content.header.properties.decode().unwrap(), props);
}

#[test]
fn content_frames_before_open_ok_are_unexpected() {
    // Like a method on a channel before open-ok, a content frame is a 505, not silently dropped.
    for frame in [header_frame(1, 3), body_frame(1, b"abc")] {
        let mut s = Script::new(params(NO_PREFS));
        s.take_protocol_header();
        s.send(0, start("PLAIN", 0, 9)).unwrap();
        s.send(0, tune(RABBIT_TUNE)).unwrap();
        s.received();
        let err = s.send_frames(&[frame]).unwrap_err();
        assert_violation(&err, ReplyCode::UNEXPECTED_FRAME);
        assert_connection_close_sent(&mut s, ReplyCode::UNEXPECTED_FRAME);
    }
}

#[test]
fn client_close_mid_content_discards_the_rest() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let frames = deliver_frames(1, &pattern(30), &[10, 10, 10]);
    s.send_frames(&frames[..3]).unwrap();
    s.conn.close_channel(1, ReplyCode::REPLY_SUCCESS, "bye");
    s.received();
    s.send_frames(&frames[3..]).unwrap();
    s.send(1, channel::CloseOk).unwrap();
    let events = s.events();
    assert!(
        matches!(&events[..], [Event::ChannelClosed { channel: 1, .. }]),
        "{events:?}"
    );
}

#[test]
fn connection_close_mid_body() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.send(1, deliver(1)).unwrap();
    s.send_frames(&[header_frame(1, 100), body_frame(1, &pattern(10))])
        .unwrap();
    let close = connection::Close {
        reply_code: ReplyCode::CONNECTION_FORCED,
        reply_text: ShortStr::from_static("CONNECTION_FORCED - broker forced connection closure"),
        class_id: 0,
        method_id: 0,
    };
    let err = s.send(0, close.clone()).unwrap_err();
    assert_eq!(err, ConnectionError::ServerClosed(close));
    assert_eq!(s.received_methods(), vec![(0, connection::CloseOk.into())]);
    assert!(s.conn.is_closed());
    assert!(s.events().is_empty());
}

#[test]
fn garbage_input_does_not_panic() {
    // A spread of malformed inputs at each stage: every one is either accepted or a typed error.
    let inputs: Vec<Vec<u8>> = vec![
        vec![0xff; 16],
        vec![spec::FRAME_METHOD, 0, 0, 0, 0, 0, 0, spec::FRAME_END],
        vec![spec::FRAME_METHOD, 0, 0, 0, 0, 0, 2, 0, 10, spec::FRAME_END],
        vec![spec::FRAME_HEADER, 0, 1, 0, 0, 0, 1, 0, spec::FRAME_END],
        vec![spec::FRAME_BODY, 0, 1, 0, 0, 0, 0, 0x00],
        vec![spec::FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 1, 0, spec::FRAME_END],
    ];
    for input in inputs {
        let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
        open_channel(&mut s, 1);
        if let Err(err) = s.send_raw(&input) {
            assert!(
                matches!(err, ConnectionError::Violation { .. }),
                "{input:?}: {err:?}"
            );
            assert!(!s.conn.is_open(), "{input:?}: still open after {err:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Outbound content splitting
// ---------------------------------------------------------------------------------------------------------

/// The method and header frames of `publish` with [`properties`], as a publishing handle encodes them.
fn head(channel: u16, publish: &basic::Publish, body_len: usize) -> PublishHead {
    PublishHead::encode(
        &mut BytesMut::new(),
        channel,
        publish,
        &properties(),
        body_len as u64,
        0,
    )
    .expect("no frame-max, no limit")
}

#[test]
fn send_publish_splits_the_body_at_frame_max_minus_8() {
    let (mut s, tuned) = Script::open(
        NO_PREFS,
        Tuned {
            frame_max: 4096,
            ..RABBIT_TUNE
        },
    );
    assert_eq!(tuned.frame_max, 4096);
    for len in [0, 1, 4088, 4089, 10_000, 3 * 4088] {
        let body = pattern(len);
        let publish = basic::Publish {
            exchange: ShortStr::from_static("amq.direct"),
            routing_key: ShortStr::from_static("rk"),
            mandatory: true,
            immediate: false,
        };
        s.conn.send_publish(
            1,
            &head(1, &publish, body.len()),
            &Bytes::from(body.clone()),
        );
        // Decoded with the negotiated limit: every frame fits in frame-max.
        let frames = s.received_with(FrameDecoder::new(4096));
        let expected_bodies = len.div_ceil(4088);
        assert_eq!(frames.len(), 2 + expected_bodies, "len {len}: {frames:?}");
        assert_eq!(
            frames[0],
            Frame::Method {
                channel: 1,
                method: publish.into()
            }
        );
        assert_eq!(
            frames[1],
            Frame::Header {
                channel: 1,
                header: ContentHeader {
                    class_id: basic::CLASS_ID,
                    body_size: len as u64,
                    properties: PropertyList::encode(&properties()),
                }
            }
        );
        let mut joined = Vec::new();
        for (i, frame) in frames[2..].iter().enumerate() {
            let Frame::Body {
                channel: 1,
                payload,
            } = frame
            else {
                panic!("expected a body frame on 1, got {frame:?}");
            };
            if i + 1 < expected_bodies {
                assert_eq!(payload.len(), 4088, "len {len}: body frame {i} not full");
            }
            assert!(!payload.is_empty(), "len {len}: empty body frame");
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, body, "len {len}");
    }
}

#[test]
fn send_publish_and_send_content_produce_the_same_bytes() {
    same_bytes_from_send_publish_and_send_content(4096, 9000);
}

/// Bodies whose frames are at least `ByteQueue::SHARE_MIN` long go out as shared segments, not copies; the
/// bytes on the wire must be the same.
#[test]
fn send_publish_shares_large_bodies_and_produces_the_same_bytes() {
    for len in [
        ByteQueue::SHARE_MIN - 1,
        ByteQueue::SHARE_MIN,
        131_064,
        131_065,
        1 << 20,
    ] {
        same_bytes_from_send_publish_and_send_content(131_072, len);
    }
}

fn same_bytes_from_send_publish_and_send_content(frame_max: u32, len: usize) {
    let (mut s, _) = Script::open(
        NO_PREFS,
        Tuned {
            frame_max,
            ..RABBIT_TUNE
        },
    );
    let body = pattern(len);
    let publish = basic::Publish {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("q"),
        mandatory: false,
        immediate: false,
    };
    s.conn.send_publish(
        2,
        &head(2, &publish, body.len()),
        &Bytes::from(body.clone()),
    );
    let fast = s.conn.transmit().split();
    s.conn
        .send_content(2, &publish.clone().into(), &properties(), &body);
    let general = s.conn.transmit().split();
    assert_eq!(fast, general);
}

#[test]
fn send_publish_with_frame_max_zero_uses_a_sane_split() {
    let (mut s, tuned) = Script::open(
        NO_PREFS,
        Tuned {
            frame_max: 0,
            ..RABBIT_TUNE
        },
    );
    assert_eq!(tuned.frame_max, 0);
    let split = s.conn.max_body_frame();
    let body = pattern(300_000);
    let publish = basic::Publish {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("q"),
        mandatory: false,
        immediate: false,
    };
    s.conn.send_publish(
        1,
        &head(1, &publish, body.len()),
        &Bytes::from(body.clone()),
    );
    let frames = s.received_with(FrameDecoder::new(u32::MAX));
    let bodies: Vec<&Bytes> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), body.len().div_ceil(split));
    assert!(bodies.len() > 1, "a 300 KB body is split");
    assert!(bodies.iter().all(|b| b.len() <= split && !b.is_empty()));
    assert_eq!(
        bodies
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<u8>>(),
        body
    );
}

#[test]
fn send_publish_before_tune_uses_the_minimum_frame_size() {
    let mut s = Script::new(params(NO_PREFS));
    assert_eq!(s.conn.max_body_frame(), 4096 - 8);
    s.take_protocol_header();
}

// ---------------------------------------------------------------------------------------------------------
// Connection close
// ---------------------------------------------------------------------------------------------------------

/// A frame whose content is bad but whose extent is sound is skipped, so decoding can go on from the
/// next frame (the driver looks for close-ok there); a frame that breaks the framing leaves no boundary
/// to go on from, and says so.
#[test]
fn a_rejected_frame_is_skipped_when_its_extent_is_sound() {
    let heartbeat = [spec::FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, spec::FRAME_END];
    // queue.declare-ok whose queue name claims a byte that is not there: 502.
    let mut bad_args = vec![
        spec::FRAME_METHOD,
        0,
        1,
        0,
        0,
        0,
        5,
        0,
        50,
        0,
        11,
        1,
        spec::FRAME_END,
    ];
    bad_args.extend_from_slice(&heartbeat[..4]);
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    let err = s.send_raw(&bad_args).expect_err("bad arguments");
    assert!(
        matches!(err, ConnectionError::Violation { code, .. } if code == ReplyCode::SYNTAX_ERROR),
        "{err:?}"
    );
    assert!(!s.conn.lost_frame_boundary());
    assert_eq!(
        &s.pending[..],
        &heartbeat[..4],
        "what follows the rejected frame is kept"
    );
    // Closing: the rest of the heartbeat and then close-ok decode from there.
    s.received();
    let mut rest = heartbeat[4..].to_vec();
    rest.extend_from_slice(&frame_bytes(&[Frame::Method {
        channel: 0,
        method: connection::CloseOk.into(),
    }]));
    s.send_raw(&rest).expect("the heartbeat and close-ok");
    assert!(s.conn.is_closed());

    // A misplaced end octet: no frame boundary is known any more.
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    let mut bad_end = heartbeat.to_vec();
    bad_end[7] = 0;
    bad_end.extend_from_slice(&heartbeat);
    let err = s.send_raw(&bad_end).expect_err("bad frame end");
    assert!(
        matches!(err, ConnectionError::Violation { code, .. } if code == ReplyCode::FRAME_ERROR),
        "{err:?}"
    );
    assert!(s.conn.lost_frame_boundary());
}

#[test]
fn client_close_ignores_everything_but_close_ok() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    open_channel(&mut s, 1);
    s.conn.close(ReplyCode::REPLY_SUCCESS, "bye");
    assert_eq!(
        s.received_methods(),
        vec![(
            0,
            connection::Close {
                reply_code: ReplyCode::REPLY_SUCCESS,
                reply_text: ShortStr::from_static("bye"),
                class_id: 0,
                method_id: 0,
            }
            .into()
        )]
    );
    assert!(!s.conn.is_open());
    assert!(!s.conn.is_closed());
    assert!(!s.conn.channel_is_usable(1));
    // Closing again sends nothing.
    s.conn.close(ReplyCode::REPLY_SUCCESS, "bye");
    assert!(s.received().is_empty());

    // Everything in flight is ignored: methods, content, channel closes, connection methods.
    s.send_frames(&deliver_frames(1, b"late", &[2, 2])).unwrap();
    s.send(
        1,
        channel::Close {
            reply_code: ReplyCode::NOT_FOUND,
            reply_text: ShortStr::from_static("NOT_FOUND"),
            class_id: 0,
            method_id: 0,
        },
    )
    .unwrap();
    s.send(1, channel::Flow { active: false }).unwrap();
    s.send(
        0,
        connection::Blocked {
            reason: ShortStr::from_static("memory"),
        },
    )
    .unwrap();
    s.send_frames(&[Frame::Heartbeat]).unwrap();
    assert!(s.events().is_empty());
    assert!(s.received().is_empty(), "nothing answered while closing");

    s.send(0, connection::CloseOk).unwrap();
    assert_eq!(s.events(), vec![Event::Closed]);
    assert!(s.conn.is_closed());
}

#[test]
fn server_close_while_client_closing() {
    let (mut s, _) = Script::open(NO_PREFS, RABBIT_TUNE);
    s.conn.close(ReplyCode::REPLY_SUCCESS, "bye");
    s.received();
    let close = connection::Close {
        reply_code: ReplyCode::INTERNAL_ERROR,
        reply_text: ShortStr::from_static("INTERNAL_ERROR"),
        class_id: 0,
        method_id: 0,
    };
    let err = s.send(0, close.clone()).unwrap_err();
    assert_eq!(err, ConnectionError::ServerClosed(close));
    assert_eq!(s.received_methods(), vec![(0, connection::CloseOk.into())]);
    assert!(s.conn.is_closed());
}

#[test]
fn heartbeats_continue_while_closing() {
    let mut s = heartbeat_10();
    s.conn.close(ReplyCode::REPLY_SUCCESS, "bye");
    s.received();
    s.advance(Duration::from_secs(5));
    s.conn.handle_timeout(s.now, false).unwrap();
    assert_eq!(s.received(), vec![Frame::Heartbeat]);
    s.advance(Duration::from_secs(15));
    assert!(matches!(
        s.conn.handle_timeout(s.now, false),
        Err(ConnectionError::HeartbeatTimeout(_))
    ));
}

// ---------------------------------------------------------------------------------------------------------
// The scripted server
// ---------------------------------------------------------------------------------------------------------

/// A client `Connection` and the server's side of the wire, with fake time.
struct Script {
    conn: Connection,
    now: Instant,
    /// Input not yet consumed by the client (a partial frame).
    pending: BytesMut,
}

impl Script {
    fn new(params: HandshakeParams) -> Script {
        // The only real clock reading: every later instant is this plus a Duration.
        let now = Instant::now();
        Script {
            conn: Connection::new(params, now),
            now,
            pending: BytesMut::new(),
        }
    }

    /// A connection through the handshake: `server` proposed, `prefs` applied.
    fn open(prefs: TunePreferences, server: Tuned) -> (Script, Tuned) {
        let mut s = Script::new(params(prefs));
        s.take_protocol_header();
        s.send(0, start("PLAIN", 0, 9)).unwrap();
        let (_, start_ok) = s.received_method();
        assert!(matches!(start_ok, Method::ConnectionStartOk(_)));
        s.send(0, tune(server)).unwrap();
        let sent = s.received_methods();
        let [(0, Method::ConnectionTuneOk(tune_ok)), (0, Method::ConnectionOpen(_))] = &sent[..]
        else {
            panic!("expected tune-ok and open, got {sent:?}");
        };
        let tune_ok = tune_ok.clone();
        s.send(0, connection::OpenOk).unwrap();
        let events = s.events();
        let [Event::Opened { tuned, .. }] = &events[..] else {
            panic!("expected Opened, got {events:?}");
        };
        assert_eq!(
            (tuned.channel_max, tuned.frame_max, tuned.heartbeat),
            (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat),
            "Opened reports what tune-ok sent"
        );
        assert!(s.conn.is_open());
        let tuned = *tuned;
        (s, tuned)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn take_protocol_header(&mut self) {
        let out = self.conn.transmit();
        assert!(
            out.chunk().starts_with(&spec::PROTOCOL_HEADER),
            "the protocol header goes first: {out:?}"
        );
        out.advance(spec::PROTOCOL_HEADER.len());
        self.conn.on_transmit(self.now);
    }

    /// The server sends one method.
    fn send(&mut self, channel: u16, method: impl Into<Method>) -> Result<(), ConnectionError> {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &method.into());
        self.feed(buf)
    }

    /// The server sends frames, in one write.
    fn send_frames(&mut self, frames: &[Frame]) -> Result<(), ConnectionError> {
        let mut buf = BytesMut::new();
        for frame in frames {
            match frame {
                Frame::Method { channel, method } => encode_method(&mut buf, *channel, method),
                Frame::Header { channel, header } => {
                    encode_content_header(&mut buf, *channel, header)
                }
                Frame::Body { channel, payload } => encode_body(&mut buf, *channel, payload),
                Frame::Heartbeat => encode_heartbeat(&mut buf),
            }
        }
        self.feed(buf)
    }

    /// The server sends raw bytes.
    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.feed(BytesMut::from(bytes))
    }

    fn feed(&mut self, bytes: BytesMut) -> Result<(), ConnectionError> {
        self.pending.extend_from_slice(&bytes);
        let mut pending = std::mem::take(&mut self.pending);
        let result = self.conn.handle_input(&mut pending, self.now);
        self.pending = pending;
        result
    }

    /// The server's bytes read the way the driver reads them: reads of `chunk()` bytes, each put where
    /// [`Connection::read_target`] says (straight into a message's body if `direct()` agrees, otherwise
    /// into the read buffer, never more than the limit it gives). Returns how many bytes went straight
    /// into a body.
    fn read_like_the_driver(
        &mut self,
        bytes: &[u8],
        mut chunk: impl FnMut() -> usize,
        mut direct: impl FnMut() -> bool,
    ) -> Result<usize, ConnectionError> {
        let (mut at, mut into_body) = (0, 0);
        while at < bytes.len() {
            let want = chunk().clamp(1, bytes.len() - at);
            match self.conn.read_target() {
                ReadTarget::Body(mut room) if direct() => {
                    let n = want.min(room.remaining_mut());
                    assert!(n > 0, "a body target always has room");
                    room.put_slice(&bytes[at..at + n]);
                    self.conn.handle_body_read(n, self.now);
                    (at, into_body) = (at + n, into_body + n);
                }
                ReadTarget::Buffer(Some(limit)) => {
                    let n = want.min(limit);
                    self.send_raw(&bytes[at..at + n])?;
                    at += n;
                }
                _ => {
                    self.send_raw(&bytes[at..at + want])?;
                    at += want;
                }
            }
        }
        Ok(into_body)
    }

    /// What the client queued since the last call, as frames; the queue is then "written" at `now`.
    fn received(&mut self) -> Vec<Frame> {
        self.received_with(FrameDecoder::new(u32::MAX))
    }

    fn received_with(&mut self, decoder: FrameDecoder) -> Vec<Frame> {
        let mut copy = self.conn.transmit().split();
        if copy.is_empty() {
            return Vec::new();
        }
        self.conn.on_transmit(self.now);
        let mut frames = Vec::new();
        while let Some(frame) = decoder
            .decode(&mut copy)
            .unwrap_or_else(|e| panic!("client sent an undecodable frame: {e}"))
        {
            frames.push(frame);
        }
        assert!(copy.is_empty(), "client sent a partial frame: {copy:?}");
        frames
    }

    /// What the client queued, all of it methods.
    fn received_methods(&mut self) -> Vec<(u16, Method)> {
        self.received()
            .into_iter()
            .map(|frame| match frame {
                Frame::Method { channel, method } => (channel, method),
                other => panic!("expected a method frame, got {other:?}"),
            })
            .collect()
    }

    /// The one method the client queued.
    fn received_method(&mut self) -> (u16, Method) {
        let mut sent = self.received_methods();
        assert_eq!(sent.len(), 1, "expected one method, got {sent:?}");
        sent.remove(0)
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// The one event there is, a content event.
    fn one_content(&mut self) -> coney::proto::Content {
        let events = self.events();
        match <[Event; 1]>::try_from(events) {
            Ok([Event::Content { content, .. }]) => content,
            Ok(other) => panic!("expected one content event, got {other:?}"),
            Err(events) => panic!("expected one content event, got {events:?}"),
        }
    }
}

fn params(tune: TunePreferences) -> HandshakeParams {
    HandshakeParams {
        mechanism: Mechanism::Plain,
        username: "user".into(),
        password: "pass".into(),
        vhost: "/vh".into(),
        locale: "en_US".into(),
        connection_name: Some("proto-test".into()),
        tune,
        max_message_size: MAX_MESSAGE_SIZE,
    }
}

fn start(mechanisms: &'static str, major: u8, minor: u8) -> connection::Start {
    connection::Start {
        version_major: major,
        version_minor: minor,
        server_properties: FieldTable::new().with("product", "RabbitMQ"),
        mechanisms: LongStr::from(mechanisms),
        locales: LongStr::from("en_US"),
    }
}

fn tune(t: Tuned) -> connection::Tune {
    connection::Tune {
        channel_max: t.channel_max,
        frame_max: t.frame_max,
        heartbeat: t.heartbeat,
    }
}

/// Opens channel `id` and drains the exchange.
fn open_channel(s: &mut Script, id: u16) {
    open_channel_no_drain(s, id);
    assert_eq!(s.received_methods(), vec![(id, channel::Open.into())]);
    s.send(id, channel::OpenOk).unwrap();
    assert_eq!(
        s.events(),
        vec![Event::Method {
            channel: id,
            method: channel::OpenOk.into()
        }]
    );
}

fn open_channel_no_drain(s: &mut Script, id: u16) {
    s.conn.open_channel(id);
}

fn deliver(tag: u64) -> basic::Deliver {
    basic::Deliver {
        consumer_tag: ShortStr::from_static("ctag"),
        delivery_tag: tag,
        redelivered: false,
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("rk"),
    }
}

fn properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortStr::from_static("text/plain")),
        delivery_mode: Some(2),
        headers: Some(FieldTable::new().with("x-n", 1i32)),
        ..BasicProperties::default()
    }
}

fn header_frame(channel: u16, body_size: u64) -> Frame {
    Frame::Header {
        channel,
        header: ContentHeader {
            class_id: basic::CLASS_ID,
            body_size,
            properties: Default::default(),
        },
    }
}

fn body_frame(channel: u16, payload: &[u8]) -> Frame {
    Frame::Body {
        channel,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// basic.deliver (tag 7), a header declaring `body.len()`, and `body` in frames of `sizes`.
fn deliver_frames(channel: u16, body: &[u8], sizes: &[usize]) -> Vec<Frame> {
    assert_eq!(sizes.iter().sum::<usize>(), body.len());
    let mut frames = vec![
        Frame::Method {
            channel,
            method: deliver(7).into(),
        },
        Frame::Header {
            channel,
            header: ContentHeader {
                class_id: basic::CLASS_ID,
                body_size: body.len() as u64,
                properties: PropertyList::encode(&properties()),
            },
        },
    ];
    let mut at = 0;
    for &n in sizes {
        frames.push(body_frame(channel, &body[at..at + n]));
        at += n;
    }
    frames
}

/// Frames as the server writes them.
fn wire(frames: &[Frame]) -> Vec<u8> {
    frame_bytes(frames).to_vec()
}

fn frame_bytes(frames: &[Frame]) -> BytesMut {
    let mut buf = BytesMut::new();
    for frame in frames {
        frame.encode(&mut buf);
    }
    buf
}

/// Distinguishable bytes, so a misplaced slice shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn assert_violation(err: &ConnectionError, code: ReplyCode) {
    match err {
        ConnectionError::Violation { code: got, .. } => {
            assert_eq!(*got, code, "violation {err:?}")
        }
        other => panic!("expected a {code} violation, got {other:?}"),
    }
}

/// The client answered a violation with `connection.close(code)` and stopped being open.
fn assert_connection_close_sent(s: &mut Script, code: ReplyCode) {
    let sent = s.received_methods();
    let [(0, Method::ConnectionClose(close))] = &sent[..] else {
        panic!("expected connection.close, got {sent:?}");
    };
    assert_eq!(close.reply_code, code, "{close:?}");
    assert!(!s.conn.is_open());
}
