//! Writes the seed corpus for the fuzz targets.
//!
//! ```text
//! cargo run --example make_seeds -- [CORPUS_DIR] [BROKER_ADDR]   # in fuzz/; defaults: corpus 127.0.0.1:5672
//! ```
//!
//! Two kinds of seed, under `CORPUS_DIR/<target>/`:
//! - `gen-*`: frames, method payloads, content headers and field tables built with coney's own encoder,
//!   with every field filled in (realistic RabbitMQ server properties, every field value type, nesting up
//!   to and past the cap).
//! - `real-*`: bytes captured from a live broker (guest/guest on vhost `/`): a whole session from the
//!   protocol header to `connection.close-ok`, with publishes, gets, a consumer, a returned message, a
//!   channel closed by the broker, and a connection refused for bad credentials. Skipped with a warning
//!   when no broker answers.
//!
//! File names are stable, so running it again overwrites the same files.

use std::{
    fs,
    io::{self, Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use coney::{
    codec::{Decimal, FieldArray, FieldTable, FieldValue, LongStr, ShortStr, Timestamp},
    frame::{
        encode_body, encode_content_header, encode_method, ContentHeader, Frame, FrameDecoder,
    },
    spec::{
        self, basic, channel, confirm, connection, exchange, queue, tx, BasicProperties, Method,
    },
};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "corpus".into()));
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:5672".into());
    let mut seeds = Seeds { dir, written: 0 };
    generated(&mut seeds)?;
    let generated = seeds.written;
    match captured(&mut seeds, &broker) {
        Ok(()) => {}
        Err(e) => eprintln!("warning: no capture from a broker at {broker}: {e}"),
    }
    println!(
        "wrote {generated} generated and {} captured seeds under {}",
        seeds.written - generated,
        seeds.dir.display()
    );
    Ok(())
}

/// Where seeds go, one directory per fuzz target.
struct Seeds {
    dir: PathBuf,
    written: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        self.written += 1;
        Ok(())
    }

    /// A whole frame as `frame_decode` input, and its payload as `method_decode` or `content_header` input.
    fn frame(&mut self, name: &str, raw: &[u8]) -> io::Result<()> {
        self.write("frame_decode", name, raw)?;
        let payload = &raw[7..raw.len() - 1];
        match raw[0] {
            spec::FRAME_METHOD => self.write("method_decode", name, payload),
            spec::FRAME_HEADER => self.write("content_header", name, payload),
            _ => Ok(()),
        }
    }

    fn method(&mut self, name: &str, channel: u16, method: Method) -> io::Result<()> {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &method);
        self.frame(name, &buf)
    }

    fn table(&mut self, name: &str, table: &FieldTable) -> io::Result<()> {
        let mut buf = BytesMut::new();
        coney::codec::encode::table(&mut buf, table);
        self.write("field_table", name, &buf)
    }
}

fn s(v: &'static str) -> ShortStr {
    ShortStr::from_static(v)
}

/// Server properties as RabbitMQ 3.x/4.x sends them in `connection.start`.
fn server_properties() -> FieldTable {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", true)
        .with("exchange_exchange_bindings", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("consumer_priorities", true)
        .with("authentication_failure_close", true)
        .with("per_consumer_qos", true)
        .with("direct_reply_to", true);
    FieldTable::new()
        .with("capabilities", capabilities)
        .with("cluster_name", "rabbit@broker")
        .with(
            "copyright",
            "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries",
        )
        .with(
            "information",
            "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
        )
        .with("platform", "Erlang/OTP 26.2.5")
        .with("product", "RabbitMQ")
        .with("version", "3.13.7")
}

fn client_properties() -> FieldTable {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", true)
        .with("exchange_exchange_bindings", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("authentication_failure_close", true);
    FieldTable::new()
        .with("product", "coney")
        .with("version", "0.1.0")
        .with("platform", "Rust")
        .with("connection_name", "coney fuzz seeds")
        .with("capabilities", capabilities)
}

/// One value of every type letter, nested containers included.
fn every_type() -> FieldTable {
    let array: FieldArray = vec![
        FieldValue::I32(1),
        FieldValue::LongStr("two".into()),
        FieldValue::Table(FieldTable::new().with("three", 3u8)),
        FieldValue::Array(FieldArray(vec![FieldValue::Void])),
    ]
    .into_iter()
    .collect();
    FieldTable::new()
        .with("bool", true)
        .with("false", false)
        .with("i8", -8i8)
        .with("u8", 200u8)
        .with("i16", -1600i16)
        .with("u16", 60000u16)
        .with("i32", -320_000i32)
        .with("u32", 4_000_000_000u32)
        .with("i64", i64::MIN)
        .with("f32", 1.5f32)
        .with("f64", -2.25f64)
        .with("nan", f64::NAN)
        .with(
            "decimal",
            Decimal {
                scale: 2,
                value: 12345,
            },
        )
        .with("longstr", "a long string")
        .with("timestamp", Timestamp(1_700_000_000))
        .with("void", FieldValue::Void)
        .with("array", array)
        .with("table", FieldTable::new().with("inner", "x"))
        .with(
            "bytes",
            FieldValue::Bytes(Bytes::from_static(b"\x00\x01\xfe\xff")),
        )
}

/// Tables nested `levels` deep (the outermost is level 1).
fn nested(levels: usize) -> FieldTable {
    let mut table = FieldTable::new().with("leaf", 1i32);
    for _ in 1..levels {
        table = FieldTable::new().with("n", table);
    }
    table
}

fn properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(s("application/json")),
        content_encoding: Some(s("utf-8")),
        headers: Some(
            FieldTable::new()
                .with(
                    "x-death",
                    FieldArray(vec![FieldValue::Table(
                        FieldTable::new()
                            .with("count", 1i64)
                            .with("reason", "expired")
                            .with("queue", "orders")
                            .with("time", Timestamp(1_700_000_000))
                            .with("exchange", "")
                            .with("routing-keys", FieldArray(vec!["orders".into()])),
                    )]),
                )
                .with("x-retries", 3i32),
        ),
        delivery_mode: Some(2),
        priority: Some(5),
        correlation_id: Some(s("7f6c1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b")),
        reply_to: Some(s(
            "amq.rabbitmq.reply-to.g1h2AA5yZXBseUA0MjQ5MzE1MgAAFPoAAAAAZ0o=",
        )),
        expiration: Some(s("60000")),
        message_id: Some(s("msg-1")),
        timestamp: Some(Timestamp(1_700_000_000)),
        kind: Some(s("order.created")),
        user_id: Some(s("guest")),
        app_id: Some(s("coney")),
    }
}

fn generated(seeds: &mut Seeds) -> io::Result<()> {
    seeds.table("gen-server-properties", &server_properties())?;
    seeds.table("gen-client-properties", &client_properties())?;
    seeds.table("gen-every-type", &every_type())?;
    seeds.table("gen-empty", &FieldTable::new())?;
    seeds.table("gen-nested-32", &nested(coney::codec::MAX_NESTING))?;
    seeds.table("gen-nested-33", &nested(coney::codec::MAX_NESTING + 1))?;
    seeds.table(
        "gen-queue-arguments",
        &FieldTable::new()
            .with("x-queue-type", "quorum")
            .with("x-max-length", 10_000i32)
            .with("x-dead-letter-exchange", "dlx")
            .with("x-message-ttl", 60_000i64),
    )?;
    seeds.table("gen-headers", properties().headers.as_ref().unwrap())?;

    let methods: Vec<(&str, u16, Method)> = vec![
        (
            "connection.start",
            0,
            Method::ConnectionStart(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                mechanisms: "AMQPLAIN PLAIN".into(),
                locales: "en_US".into(),
            }),
        ),
        (
            "connection.start-ok",
            0,
            Method::ConnectionStartOk(connection::StartOk {
                client_properties: client_properties(),
                mechanism: s("PLAIN"),
                response: LongStr::from(&b"\0guest\0guest"[..]),
                locale: s("en_US"),
            }),
        ),
        (
            "connection.secure",
            0,
            Method::ConnectionSecure(connection::Secure {
                challenge: "challenge".into(),
            }),
        ),
        (
            "connection.tune",
            0,
            Method::ConnectionTune(connection::Tune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            }),
        ),
        (
            "connection.tune-ok",
            0,
            Method::ConnectionTuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            }),
        ),
        (
            "connection.open",
            0,
            Method::ConnectionOpen(connection::Open {
                virtual_host: s("/"),
            }),
        ),
        (
            "connection.open-ok",
            0,
            Method::ConnectionOpenOk(connection::OpenOk),
        ),
        (
            "connection.close",
            0,
            Method::ConnectionClose(connection::Close {
                reply_code: spec::ReplyCode(320),
                reply_text: s(
                    "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
                ),
                class_id: 0,
                method_id: 0,
            }),
        ),
        (
            "connection.close-ok",
            0,
            Method::ConnectionCloseOk(connection::CloseOk),
        ),
        (
            "connection.blocked",
            0,
            Method::ConnectionBlocked(connection::Blocked {
                reason: s("low on memory"),
            }),
        ),
        (
            "connection.unblocked",
            0,
            Method::ConnectionUnblocked(connection::Unblocked),
        ),
        (
            "connection.update-secret",
            0,
            Method::ConnectionUpdateSecret(connection::UpdateSecret {
                new_secret: "token".into(),
                reason: s("refresh"),
            }),
        ),
        ("channel.open", 1, Method::ChannelOpen(channel::Open)),
        ("channel.open-ok", 1, Method::ChannelOpenOk(channel::OpenOk)),
        (
            "channel.flow",
            1,
            Method::ChannelFlow(channel::Flow { active: false }),
        ),
        (
            "channel.close",
            1,
            Method::ChannelClose(channel::Close {
                reply_code: spec::ReplyCode(404),
                reply_text: s("NOT_FOUND - no queue 'orders' in vhost '/'"),
                class_id: 50,
                method_id: 10,
            }),
        ),
        (
            "channel.close-ok",
            1,
            Method::ChannelCloseOk(channel::CloseOk),
        ),
        (
            "exchange.declare",
            1,
            Method::ExchangeDeclare(exchange::Declare {
                exchange: s("events"),
                kind: s("topic"),
                durable: true,
                arguments: FieldTable::new().with("alternate-exchange", "unrouted"),
                ..Default::default()
            }),
        ),
        (
            "exchange.bind",
            1,
            Method::ExchangeBind(exchange::Bind {
                destination: s("dst"),
                source: s("src"),
                routing_key: s("a.#"),
                no_wait: true,
                arguments: FieldTable::new(),
            }),
        ),
        (
            "queue.declare",
            1,
            Method::QueueDeclare(queue::Declare {
                queue: s("orders"),
                durable: true,
                arguments: FieldTable::new()
                    .with("x-queue-type", "quorum")
                    .with("x-max-length", 10_000i32),
                ..Default::default()
            }),
        ),
        (
            "queue.declare-ok",
            1,
            Method::QueueDeclareOk(queue::DeclareOk {
                queue: s("amq.gen-JzTY20BRgKO-HjmUJj0wLg"),
                message_count: 12,
                consumer_count: 1,
            }),
        ),
        (
            "queue.bind",
            1,
            Method::QueueBind(queue::Bind {
                queue: s("orders"),
                exchange: s("events"),
                routing_key: s("order.*"),
                ..Default::default()
            }),
        ),
        (
            "queue.delete-ok",
            1,
            Method::QueueDeleteOk(queue::DeleteOk { message_count: 7 }),
        ),
        (
            "basic.qos",
            1,
            Method::BasicQos(basic::Qos {
                prefetch_size: 0,
                prefetch_count: 100,
                global: false,
            }),
        ),
        (
            "basic.consume",
            1,
            Method::BasicConsume(basic::Consume {
                queue: s("orders"),
                consumer_tag: s("ctag-1"),
                no_local: false,
                no_ack: false,
                exclusive: true,
                no_wait: false,
                arguments: FieldTable::new().with("x-priority", 10i32),
            }),
        ),
        (
            "basic.consume-ok",
            1,
            Method::BasicConsumeOk(basic::ConsumeOk {
                consumer_tag: s("amq.ctag-Yq3VwqkqSfDz2ZyhbyLrMw"),
            }),
        ),
        (
            "basic.cancel",
            1,
            Method::BasicCancel(basic::Cancel {
                consumer_tag: s("ctag-1"),
                no_wait: true,
            }),
        ),
        (
            "basic.publish",
            1,
            Method::BasicPublish(basic::Publish {
                exchange: s("events"),
                routing_key: s("order.created"),
                mandatory: true,
                immediate: false,
            }),
        ),
        (
            "basic.return",
            1,
            Method::BasicReturn(basic::Return {
                reply_code: spec::ReplyCode(312),
                reply_text: s("NO_ROUTE"),
                exchange: s("events"),
                routing_key: s("nowhere"),
            }),
        ),
        (
            "basic.deliver",
            1,
            Method::BasicDeliver(basic::Deliver {
                consumer_tag: s("amq.ctag-Yq3VwqkqSfDz2ZyhbyLrMw"),
                delivery_tag: 1,
                redelivered: true,
                exchange: s("events"),
                routing_key: s("order.created"),
            }),
        ),
        (
            "basic.get-ok",
            1,
            Method::BasicGetOk(basic::GetOk {
                delivery_tag: u64::MAX,
                redelivered: false,
                exchange: s(""),
                routing_key: s("orders"),
                message_count: 41,
            }),
        ),
        ("basic.get-empty", 1, Method::BasicGetEmpty(basic::GetEmpty)),
        (
            "basic.ack",
            1,
            Method::BasicAck(basic::Ack {
                delivery_tag: 42,
                multiple: true,
            }),
        ),
        (
            "basic.nack",
            1,
            Method::BasicNack(basic::Nack {
                delivery_tag: 43,
                multiple: false,
                requeue: true,
            }),
        ),
        (
            "basic.reject",
            1,
            Method::BasicReject(basic::Reject {
                delivery_tag: 44,
                requeue: false,
            }),
        ),
        (
            "basic.recover",
            1,
            Method::BasicRecover(basic::Recover { requeue: true }),
        ),
        ("tx.select", 1, Method::TxSelect(tx::Select)),
        (
            "confirm.select",
            1,
            Method::ConfirmSelect(confirm::Select { nowait: false }),
        ),
        (
            "confirm.select-ok",
            1,
            Method::ConfirmSelectOk(confirm::SelectOk),
        ),
    ];
    for (name, channel, method) in methods {
        seeds.method(&format!("gen-{name}"), channel, method)?;
    }

    let full = ContentHeader::new(basic::Publish::CLASS_ID, 26, &properties());
    let mut buf = BytesMut::new();
    encode_content_header(&mut buf, 1, &full);
    seeds.frame("gen-header-all-properties", &buf)?;
    buf.clear();
    encode_content_header(
        &mut buf,
        1,
        &ContentHeader {
            class_id: basic::Publish::CLASS_ID,
            body_size: 0,
            properties: Default::default(),
        },
    );
    seeds.frame("gen-header-no-properties", &buf)?;

    // A delivery split over two body frames, as a stream: what a consumer reads most.
    let mut stream = BytesMut::new();
    encode_method(
        &mut stream,
        1,
        &Method::BasicDeliver(basic::Deliver {
            consumer_tag: s("ctag-1"),
            delivery_tag: 7,
            redelivered: false,
            exchange: s("events"),
            routing_key: s("order.created"),
        }),
    );
    encode_content_header(&mut stream, 1, &full);
    encode_body(&mut stream, 1, b"{\"order\":");
    encode_body(&mut stream, 1, b"1234, \"qty\": 5}");
    Frame::Heartbeat.encode(&mut stream);
    seeds.write("frame_decode", "gen-stream-deliver", &stream)?;

    // `connection_reads`: (read size byte, offer mask byte) then a stream whose body frames are large
    // enough to be read straight into the message, with a heartbeat between them and a delivery after.
    let large = |bad_end: bool| {
        let mut stream = BytesMut::new();
        let deliver = |tag| {
            Method::BasicDeliver(basic::Deliver {
                consumer_tag: s("ctag-1"),
                delivery_tag: tag,
                redelivered: false,
                exchange: s(""),
                routing_key: s("q"),
            })
        };
        let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        encode_method(&mut stream, 1, &deliver(1));
        let header = ContentHeader::new(
            basic::Publish::CLASS_ID,
            40_000,
            &BasicProperties::default(),
        );
        encode_content_header(&mut stream, 1, &header);
        encode_body(&mut stream, 1, &body[..20_000]);
        if bad_end {
            let end = stream.len() - 1;
            stream[end] = 0;
        }
        Frame::Heartbeat.encode(&mut stream);
        encode_body(&mut stream, 1, &body[20_000..]);
        encode_method(&mut stream, 1, &deliver(2));
        let header = ContentHeader::new(basic::Publish::CLASS_ID, 4, &BasicProperties::default());
        encode_content_header(&mut stream, 1, &header);
        encode_body(&mut stream, 1, b"next");
        stream
    };
    for (name, size, mask, bad_end) in [
        ("gen-reads-large-frames-4k-all", 3u8, 0xffu8, false),
        ("gen-reads-large-frames-1k-some", 0, 0x5a, false),
        ("gen-reads-bad-end-16k-all", 15, 0xff, true),
    ] {
        let mut input = vec![size, mask];
        input.extend_from_slice(&large(bad_end));
        seeds.write("connection_reads", name, &input)?;
    }

    driver_seeds(seeds)?;

    buf.clear();
    Frame::Heartbeat.encode(&mut buf);
    seeds.write("frame_decode", "gen-heartbeat", &buf)?;
    buf.clear();
    // The largest body frame the pre-tune limit allows.
    encode_body(&mut buf, 1, &[0x5a; spec::FRAME_MIN_SIZE as usize - 8]);
    seeds.write("frame_decode", "gen-body-4096", &buf)?;
    seeds.write(
        "frame_decode",
        "gen-protocol-header",
        &spec::PROTOCOL_HEADER,
    )?;
    Ok(())
}

/// `driver`: what the scripted broker sends after its preamble (channel 1 in confirm mode, consumer
/// `ctag`, publishes 1 to 3 awaiting their confirms; see `coney::fuzzing::check_driver`).
fn driver_seeds(seeds: &mut Seeds) -> io::Result<()> {
    let deliver = |stream: &mut BytesMut, tag: u64, consumer: &'static str, body: &[u8]| {
        let method = Method::BasicDeliver(basic::Deliver {
            consumer_tag: s(consumer),
            delivery_tag: tag,
            redelivered: tag % 3 == 0,
            exchange: s(""),
            routing_key: s("q"),
        });
        encode_method(stream, 1, &method);
        let header = ContentHeader::new(
            basic::Publish::CLASS_ID,
            body.len() as u64,
            &BasicProperties::default(),
        );
        encode_content_header(stream, 1, &header);
        if !body.is_empty() {
            encode_body(stream, 1, body);
        }
    };
    let ack = |stream: &mut BytesMut, tag: u64, multiple: bool| {
        let m = Method::BasicAck(basic::Ack {
            delivery_tag: tag,
            multiple,
        });
        encode_method(stream, 1, &m);
    };
    let mut stream = BytesMut::new();
    for tag in 1..=10 {
        deliver(&mut stream, tag, "ctag", b"payload");
    }
    ack(&mut stream, 3, true);
    seeds.write("driver", "gen-deliveries-then-confirms", &stream)?;

    stream.clear();
    ack(&mut stream, 1, false);
    let nack = Method::BasicNack(basic::Nack {
        delivery_tag: 2,
        multiple: false,
        requeue: false,
    });
    encode_method(&mut stream, 1, &nack);
    ack(&mut stream, 3, false);
    ack(&mut stream, 3, false);
    ack(&mut stream, 9, true);
    seeds.write("driver", "gen-confirms-mixed-and-unknown", &stream)?;

    stream.clear();
    let ret = Method::BasicReturn(basic::Return {
        reply_code: coney::ReplyCode(312),
        reply_text: s("NO_ROUTE"),
        exchange: s(""),
        routing_key: s("q"),
    });
    encode_method(&mut stream, 1, &ret);
    let header = ContentHeader::new(basic::Publish::CLASS_ID, 3, &properties());
    encode_content_header(&mut stream, 1, &header);
    encode_body(&mut stream, 1, &[0, 0, 0]);
    ack(&mut stream, 1, false);
    ack(&mut stream, 3, true);
    seeds.write("driver", "gen-return-then-acks", &stream)?;

    stream.clear();
    deliver(&mut stream, 1, "ctag", b"one");
    deliver(&mut stream, 2, "other", b"unknown consumer");
    let cancel = Method::BasicCancel(basic::Cancel {
        consumer_tag: s("ctag"),
        no_wait: true,
    });
    encode_method(&mut stream, 1, &cancel);
    deliver(&mut stream, 3, "ctag", b"after the cancel");
    seeds.write("driver", "gen-broker-cancel", &stream)?;

    stream.clear();
    deliver(&mut stream, u64::MAX - 1, "ctag", b"big tag");
    deliver(&mut stream, u64::MAX, "ctag", b"biggest tag");
    deliver(&mut stream, 1, "ctag", b"");
    ack(&mut stream, 0, true);
    seeds.write("driver", "gen-extreme-tags", &stream)?;
    stream.clear();
    deliver(&mut stream, 1, "ctag", b"small tag");
    deliver(&mut stream, u64::MAX / 2, "ctag", b"a jump, last in its read");
    seeds.write("driver", "gen-tag-jump-last", &stream)?;

    stream.clear();
    for (channel, method) in [
        (
            0,
            Method::ConnectionBlocked(connection::Blocked {
                reason: s("low on memory"),
            }),
        ),
        (1, Method::ChannelFlow(channel::Flow { active: false })),
        (0, Method::ConnectionUnblocked(connection::Unblocked)),
    ] {
        encode_method(&mut stream, channel, &method);
    }
    for tag in 1..=12 {
        deliver(&mut stream, tag, "ctag", b"while blocked");
    }
    seeds.write("driver", "gen-blocked-flow-and-a-full-queue", &stream)?;

    stream.clear();
    deliver(&mut stream, 1, "ctag", b"before the close");
    let close = Method::ChannelClose(channel::Close {
        reply_code: coney::ReplyCode(406),
        reply_text: s("PRECONDITION_FAILED - unknown delivery tag 9"),
        class_id: 60,
        method_id: 80,
    });
    encode_method(&mut stream, 1, &close);
    deliver(&mut stream, 2, "ctag", b"after the close");
    seeds.write("driver", "gen-channel-closed-by-broker", &stream)?;

    stream.clear();
    let close = Method::ConnectionClose(connection::Close {
        reply_code: coney::ReplyCode(320),
        reply_text: s("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"),
        class_id: 0,
        method_id: 0,
    });
    encode_method(&mut stream, 0, &close);
    seeds.write("driver", "gen-connection-closed-by-broker", &stream)?;

    stream.clear();
    deliver(&mut stream, 1, "ctag", b"ok");
    let method = Method::BasicDeliver(basic::Deliver {
        consumer_tag: s("ctag"),
        delivery_tag: 2,
        redelivered: false,
        exchange: s(""),
        routing_key: s("q"),
    });
    encode_method(&mut stream, 1, &method);
    // Over the scenario's 64 KiB message limit.
    let header = ContentHeader::new(basic::Publish::CLASS_ID, 1 << 20, &BasicProperties::default());
    encode_content_header(&mut stream, 1, &header);
    encode_body(&mut stream, 1, &[1; 100]);
    seeds.write("driver", "gen-message-over-the-limit", &stream)?;

    stream.clear();
    deliver(&mut stream, 1, "ctag", b"ok");
    encode_method(&mut stream, 5, &Method::ChannelOpenOk(channel::OpenOk));
    stream.extend_from_slice(&[1, 0, 1, 0, 0, 0, 4, 0, 60, 0]);
    seeds.write("driver", "gen-unopened-channel-and-a-torn-frame", &stream)?;
    Ok(())
}

/// A blocking, single-channel AMQP client just capable enough to make the broker send each frame we want.
struct Capture {
    socket: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
    /// Everything the broker sent, to save as one stream.
    received: Vec<u8>,
}

impl Capture {
    fn connect(broker: &str) -> io::Result<Capture> {
        let mut socket = TcpStream::connect(broker)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        socket.write_all(&spec::PROTOCOL_HEADER)?;
        Ok(Capture {
            socket,
            decoder: FrameDecoder::new(131_072),
            buf: BytesMut::new(),
            received: Vec::new(),
        })
    }

    fn send(&mut self, channel: u16, method: Method) -> io::Result<()> {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &method);
        self.socket.write_all(&buf)
    }

    fn publish(&mut self, publish: basic::Publish, body: &[u8]) -> io::Result<()> {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, 1, &Method::BasicPublish(publish));
        encode_content_header(
            &mut buf,
            1,
            &ContentHeader::new(basic::Publish::CLASS_ID, body.len() as u64, &properties()),
        );
        encode_body(&mut buf, 1, body);
        self.socket.write_all(&buf)
    }

    /// The next frame and its raw bytes.
    fn recv(&mut self) -> io::Result<(Frame, Vec<u8>)> {
        loop {
            let before = self.buf.clone();
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    let raw = before[..before.len() - self.buf.len()].to_vec();
                    return Ok((frame, raw));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 8192];
            let n = self.socket.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    /// Receives one frame, checks it is the method called `name`, and saves it as `real-<name>`.
    fn expect(&mut self, seeds: &mut Seeds, name: &str) -> io::Result<Method> {
        let (frame, raw) = self.recv()?;
        let Frame::Method { method, .. } = frame else {
            return Err(unexpected(name, &frame));
        };
        if method.name() != name {
            return Err(unexpected(name, &method));
        }
        seeds.frame(&format!("real-{name}"), &raw)?;
        Ok(method)
    }

    /// Receives a content header and body frame and saves them under `prefix`.
    fn expect_content(&mut self, seeds: &mut Seeds, prefix: &str) -> io::Result<()> {
        for part in ["header", "body"] {
            let (frame, raw) = self.recv()?;
            if matches!(frame, Frame::Method { .. } | Frame::Heartbeat) {
                return Err(unexpected(part, &frame));
            }
            seeds.frame(&format!("real-{prefix}-{part}"), &raw)?;
        }
        Ok(())
    }

    fn handshake(&mut self, seeds: &mut Seeds, password: &str) -> io::Result<()> {
        let start = self.expect(seeds, "connection.start")?;
        if let Method::ConnectionStart(start) = start {
            seeds.table("real-server-properties", &start.server_properties)?;
        }
        self.send(
            0,
            Method::ConnectionStartOk(connection::StartOk {
                client_properties: client_properties(),
                mechanism: s("PLAIN"),
                response: LongStr::from(format!("\0guest\0{password}")),
                locale: s("en_US"),
            }),
        )
    }
}

fn unexpected(wanted: &str, got: &impl std::fmt::Debug) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("wanted {wanted}, got {got:?}"),
    )
}

fn captured(seeds: &mut Seeds, broker: &str) -> io::Result<()> {
    let queue = s("coney-fuzz-seeds");
    let mut c = Capture::connect(broker)?;
    c.handshake(seeds, "guest")?;
    let Method::ConnectionTune(tune) = c.expect(seeds, "connection.tune")? else {
        unreachable!("expect checked the name");
    };
    c.send(
        0,
        Method::ConnectionTuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: 131_072,
            heartbeat: 0,
        }),
    )?;
    c.send(
        0,
        Method::ConnectionOpen(connection::Open {
            virtual_host: s("/"),
        }),
    )?;
    c.expect(seeds, "connection.open-ok")?;

    c.send(1, Method::ChannelOpen(channel::Open))?;
    c.expect(seeds, "channel.open-ok")?;
    c.send(1, Method::ConfirmSelect(confirm::Select { nowait: false }))?;
    c.expect(seeds, "confirm.select-ok")?;
    c.send(
        1,
        Method::QueueDeclare(queue::Declare {
            queue: queue.clone(),
            exclusive: true,
            auto_delete: true,
            arguments: FieldTable::new().with("x-message-ttl", 60_000i32),
            ..Default::default()
        }),
    )?;
    c.expect(seeds, "queue.declare-ok")?;

    c.publish(
        basic::Publish {
            exchange: s(""),
            routing_key: queue.clone(),
            ..Default::default()
        },
        b"{\"order\": 1234, \"qty\": 5}",
    )?;
    c.expect(seeds, "basic.ack")?;
    c.send(
        1,
        Method::BasicGet(basic::Get {
            queue: queue.clone(),
            no_ack: true,
        }),
    )?;
    c.expect(seeds, "basic.get-ok")?;
    c.expect_content(seeds, "basic.get-ok")?;
    c.send(
        1,
        Method::BasicGet(basic::Get {
            queue: queue.clone(),
            no_ack: true,
        }),
    )?;
    c.expect(seeds, "basic.get-empty")?;

    c.publish(
        basic::Publish {
            exchange: s(""),
            routing_key: s("coney-fuzz-no-such-queue"),
            mandatory: true,
            immediate: false,
        },
        b"unroutable",
    )?;
    c.expect(seeds, "basic.return")?;
    c.expect_content(seeds, "basic.return")?;
    c.expect(seeds, "basic.ack")?;

    c.send(
        1,
        Method::BasicQos(basic::Qos {
            prefetch_size: 0,
            prefetch_count: 10,
            global: false,
        }),
    )?;
    c.expect(seeds, "basic.qos-ok")?;
    c.send(
        1,
        Method::BasicConsume(basic::Consume {
            queue: queue.clone(),
            ..Default::default()
        }),
    )?;
    let Method::BasicConsumeOk(ok) = c.expect(seeds, "basic.consume-ok")? else {
        unreachable!("expect checked the name");
    };
    c.publish(
        basic::Publish {
            exchange: s(""),
            routing_key: queue.clone(),
            ..Default::default()
        },
        b"delivered",
    )?;
    // The ack for the publish and the delivery race; take them in either order.
    for _ in 0..2 {
        let (frame, raw) = c.recv()?;
        match &frame {
            Frame::Method { method, .. } if method.name() == "basic.deliver" => {
                seeds.frame("real-basic.deliver", &raw)?;
                c.expect_content(seeds, "basic.deliver")?;
            }
            Frame::Method { method, .. } if method.name() == "basic.ack" => {}
            other => return Err(unexpected("basic.deliver or basic.ack", other)),
        }
    }
    c.send(
        1,
        Method::BasicCancel(basic::Cancel {
            consumer_tag: ok.consumer_tag,
            no_wait: false,
        }),
    )?;
    c.expect(seeds, "basic.cancel-ok")?;

    c.send(
        1,
        Method::QueueDeclare(queue::Declare {
            queue: s("coney-fuzz-no-such-queue"),
            passive: true,
            ..Default::default()
        }),
    )?;
    c.expect(seeds, "channel.close")?;
    c.send(1, Method::ChannelCloseOk(channel::CloseOk))?;

    c.send(
        0,
        Method::ConnectionClose(connection::Close {
            reply_code: spec::ReplyCode::REPLY_SUCCESS,
            reply_text: s("bye"),
            class_id: 0,
            method_id: 0,
        }),
    )?;
    c.expect(seeds, "connection.close-ok")?;
    let session = std::mem::take(&mut c.received);
    seeds.write("frame_decode", "real-session", &session)?;

    // With authentication_failure_close advertised, bad credentials get a connection.close (403).
    let mut refused = Capture::connect(broker)?;
    let discard = std::env::temp_dir().join("coney-make-seeds-discard");
    refused.handshake(
        &mut Seeds {
            dir: discard,
            written: 0,
        },
        "wrong",
    )?;
    let (frame, raw) = refused.recv()?;
    match &frame {
        Frame::Method { method, .. } if method.name() == "connection.close" => {
            seeds.frame("real-connection.close-refused", &raw)?;
        }
        other => return Err(unexpected("connection.close", other)),
    }
    Ok(())
}
