//! Codec and frame throughput on the hot paths: deliveries in, publishes out, and field tables.
//!
//! `cargo bench --bench codec`; quick run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use bytes::BytesMut;
use coney::{
    codec::{decode, encode, FieldTable, ShortStr},
    frame::{
        encode_body, encode_content_header, encode_method, ContentHeader, Frame, FrameDecoder,
    },
    spec::{basic, BasicProperties, Method},
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
/// RabbitMQ's default frame_max, so a 64 KiB body fits one body frame.
const FRAME_MAX: u32 = 131_072;

fn deliver() -> Method {
    Method::from(basic::Deliver {
        consumer_tag: ShortStr::from_static("amq.ctag-7bX1Fqz0nT3sE5yQ9c2wRg"),
        delivery_tag: 1_234_567,
        redelivered: false,
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("orders.created.eu-west"),
    })
}

fn publish() -> Method {
    Method::from(basic::Publish {
        exchange: ShortStr::from_static("orders"),
        routing_key: ShortStr::from_static("orders.created.eu-west"),
        mandatory: true,
        immediate: false,
    })
}

fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json")
        .with_delivery_mode(2u8)
        .with_correlation_id("3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")
        .with_message_id("msg-0000000042")
        .with_timestamp(1_700_000_000u64)
        .with_app_id("billing")
        .with_headers(
            FieldTable::new()
                .with("x-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
                .with("x-retries", 0i32)
                .with("tenant", "acme"),
        )
}

/// basic.deliver, its content header and one body frame, as the broker would send them.
fn delivery_wire(body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_delivery(&mut buf, body);
    buf
}

fn encode_delivery(buf: &mut BytesMut, body: &[u8]) {
    encode_method(buf, 1, &deliver());
    encode_content_header(
        buf,
        1,
        &ContentHeader::new(basic::CLASS_ID, body.len() as u64, &properties()),
    );
    encode_body(buf, 1, body);
}

fn delivery(c: &mut Criterion) {
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut group = c.benchmark_group("deliver+header+body");
    for (size, label) in SIZES {
        let body = vec![0x61u8; size];
        let wire = delivery_wire(&body);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("decode", label), &wire, |b, wire| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| {
                    let mut frames = 0;
                    while let Some(frame) = decoder.decode(buf).unwrap() {
                        // The properties are built where the delivery is used: count that here too.
                        if let Frame::Header { header, .. } = &frame {
                            black_box(header.properties.decode().unwrap());
                        }
                        black_box(&frame);
                        frames += 1;
                    }
                    assert_eq!(frames, 3);
                },
                BatchSize::SmallInput,
            )
        });
        let method = deliver();
        let header = ContentHeader::new(basic::CLASS_ID, size as u64, &properties());
        let mut out = BytesMut::with_capacity(wire.len());
        group.bench_with_input(BenchmarkId::new("encode", label), &body, |b, body| {
            b.iter(|| {
                out.clear();
                encode_method(&mut out, 1, black_box(&method));
                encode_content_header(&mut out, 1, black_box(&header));
                encode_body(&mut out, 1, black_box(body));
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn publish_encode(c: &mut Criterion) {
    let method = publish();
    let header = ContentHeader::new(basic::CLASS_ID, 1024, &properties());
    let props = properties();
    let mut out = BytesMut::with_capacity(1024);
    let mut group = c.benchmark_group("publish");
    group.bench_function("encode method+header", |b| {
        b.iter(|| {
            out.clear();
            encode_method(&mut out, 1, black_box(&method));
            encode_content_header(&mut out, 1, black_box(&header));
            black_box(&out);
        })
    });
    group.bench_function("encode properties", |b| {
        b.iter(|| {
            out.clear();
            black_box(&props).encode(&mut out);
            black_box(&out);
        })
    });
    group.finish();
}

fn field_table(c: &mut Criterion) {
    let mut table = FieldTable::new();
    for i in 0..20i32 {
        let key = format!("x-key-{i:02}");
        let key = ShortStr::new(&key).unwrap();
        match i % 5 {
            0 => table.insert(key, format!("value number {i}")),
            1 => table.insert(key, i),
            2 => table.insert(key, i % 2 == 0),
            3 => table.insert(key, i64::from(i) * 1_000_000_007),
            _ => table.insert(key, FieldTable::new().with("inner", 1.5f64)),
        }
    }
    let mut wire = BytesMut::new();
    encode::table(&mut wire, &table);
    let mut group = c.benchmark_group("field table (20 entries)");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            let (_, decoded) = decode::table(black_box(&wire)).unwrap();
            black_box(decoded);
        })
    });
    let mut out = BytesMut::with_capacity(wire.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode::table(&mut out, black_box(&table));
            black_box(&out);
        })
    });
    group.finish();
    // The bench measures a real round trip, not an error path.
    assert_eq!(decode::table(&wire).unwrap().1, table);
}

criterion_group!(benches, delivery, publish_encode, field_table);
criterion_main!(benches);
