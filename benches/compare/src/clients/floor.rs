//! The broker's floor: the real-broker scenarios done with as little client work as we know how, so the
//! table shows roughly what RabbitMQ itself allows on this machine for these scenario shapes.
//!
//! Blocking `std::net` sockets on plain OS threads, no async runtime, no handles, no queues between
//! threads: each connection is one thread (two for confirms: a writer and a reader of acks). Publishes go
//! out pre-encoded, many per write; requests, replies and acks are encoded as they go; what comes back is
//! decoded with coney's sans-IO frame layer. It speaks just enough AMQP for the scenarios (no heartbeats,
//! no error recovery), so it is a yardstick, not a client, and not a proven bound: a library that matches
//! it is about as fast as the broker lets a client be here, and a target well above it is out of any
//! client's reach on this machine. Consuming, it acks once per socket read where the scenario acks each
//! delivery, which is less work for the broker.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use coney::{
    codec::LongStr,
    frame::{self, ContentHeader, Frame, FrameDecoder},
    spec::{basic, channel, confirm, connection, queue, Method},
    BasicProperties, FieldTable, ShortStr,
};

use crate::meter::{Endpoint, Meter};

type Result<T> = std::result::Result<T, String>;

/// Publishes written per `write` call, at most.
const BATCH: usize = 64;
/// Bytes written per `write` call, at most (but one publish at least): a batch of 64 pre-encoded 1 MiB
/// publishes would stream 64 MiB from memory per write, where a client resends one cache-warm body.
const BATCH_BYTES: usize = 1024 * 1024;
/// Every blocking read or write gives up after this long, so a broken run ends instead of hanging (a
/// blocked `spawn_blocking` thread cannot be cancelled by the harness's timeout).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn io(e: std::io::Error) -> String {
    format!("floor: {e}")
}

/// One connection with channel 1 open.
struct Wire {
    sock: TcpStream,
    decoder: FrameDecoder,
    read_buf: BytesMut,
    scratch: Vec<u8>,
    frame_max: u32,
    /// Consuming with acks: the latest delivery tag handled, and the latest acked. Before blocking in a
    /// socket read, everything handled is settled with one `basic.ack(multiple)`.
    handled: u64,
    acked: u64,
}

impl Wire {
    fn connect(ep: &Endpoint) -> Result<Wire> {
        let sock = TcpStream::connect((ep.host.as_str(), ep.port)).map_err(io)?;
        sock.set_nodelay(true).map_err(io)?;
        sock.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        sock.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut wire = Wire {
            sock,
            decoder: FrameDecoder::new(4096),
            read_buf: BytesMut::with_capacity(256 * 1024),
            scratch: vec![0; 256 * 1024],
            frame_max: 4096,
            handled: 0,
            acked: 0,
        };
        wire.sock.write_all(b"AMQP\x00\x00\x09\x01").map_err(io)?;
        match wire.method()? {
            (0, Method::ConnectionStart(_)) => {}
            other => return Err(format!("floor: expected connection.start, got {other:?}")),
        }
        let start_ok = connection::StartOk {
            client_properties: FieldTable::new().with("product", "coney-compare floor"),
            mechanism: ShortStr::from_static("PLAIN"),
            response: LongStr::from("\0guest\0guest"),
            locale: ShortStr::from_static("en_US"),
        };
        wire.send(0, start_ok.into())?;
        let tune = match wire.method()? {
            (0, Method::ConnectionTune(t)) => t,
            other => return Err(format!("floor: expected connection.tune, got {other:?}")),
        };
        let frame_max = match tune.frame_max {
            0 => 131_072,
            n => n.min(131_072),
        };
        wire.frame_max = frame_max;
        wire.decoder.set_max_frame_size(frame_max);
        let tune_ok = connection::TuneOk {
            channel_max: 1,
            frame_max,
            heartbeat: 0,
        };
        wire.send(0, tune_ok.into())?;
        let open = connection::Open {
            virtual_host: ShortStr::from_static("/"),
        };
        wire.send(0, open.into())?;
        wire.expect(0, |m| matches!(m, Method::ConnectionOpenOk(_)))?;
        wire.send(1, channel::Open.into())?;
        wire.expect(1, |m| matches!(m, Method::ChannelOpenOk(_)))?;
        Ok(wire)
    }

    fn send(&mut self, channel: u16, method: Method) -> Result<()> {
        let mut out = BytesMut::with_capacity(256);
        frame::encode_method(&mut out, channel, &method);
        self.sock.write_all(&out).map_err(io)
    }

    /// The next frame, reading as needed (and acking what was handled before each read).
    fn frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.read_buf)
                .map_err(|e| format!("floor: {e}"))?
            {
                return Ok(frame);
            }
            self.ack_handled()?;
            self.read_more()?;
        }
    }

    /// One `basic.ack(multiple)` for every delivery handled and not yet acked, if any.
    fn ack_handled(&mut self) -> Result<()> {
        if self.handled > self.acked {
            let ack = basic::Ack {
                delivery_tag: self.handled,
                multiple: true,
            };
            self.send(1, ack.into())?;
            self.acked = self.handled;
        }
        Ok(())
    }

    /// One socket read into the read buffer.
    fn read_more(&mut self) -> Result<()> {
        let n = self.sock.read(&mut self.scratch).map_err(io)?;
        if n == 0 {
            return Err("floor: the broker closed the socket".into());
        }
        self.read_buf.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }

    /// The next method frame; heartbeats are skipped, a close is an error.
    fn method(&mut self) -> Result<(u16, Method)> {
        loop {
            match self.frame()? {
                Frame::Method {
                    method: Method::ConnectionClose(c),
                    ..
                } => return Err(format!("floor: connection closed: {}", c.reply_text)),
                Frame::Method {
                    method: Method::ChannelClose(c),
                    ..
                } => return Err(format!("floor: channel closed: {}", c.reply_text)),
                Frame::Method { channel, method } => return Ok((channel, method)),
                Frame::Heartbeat => continue,
                other => return Err(format!("floor: expected a method, got {other:?}")),
            }
        }
    }

    /// Reads methods until one on `channel` satisfies `want` (others, such as acks, are dropped).
    fn expect(&mut self, channel: u16, want: impl Fn(&Method) -> bool) -> Result<Method> {
        loop {
            let (ch, m) = self.method()?;
            if ch == channel && want(&m) {
                return Ok(m);
            }
        }
    }

    /// A whole delivery: its method, properties and body (one or more frames).
    fn delivery(&mut self) -> Result<(basic::Deliver, ContentHeader, Bytes)> {
        let deliver = match self.method()? {
            (_, Method::BasicDeliver(d)) => d,
            (_, other) => return Err(format!("floor: expected basic.deliver, got {other:?}")),
        };
        let header = match self.frame()? {
            Frame::Header { header, .. } => header,
            other => return Err(format!("floor: expected a content header, got {other:?}")),
        };
        let mut body = Bytes::new();
        let mut pieces = BytesMut::new();
        while (body.len() + pieces.len()) < header.body_size as usize {
            let payload = match self.frame()? {
                Frame::Body { payload, .. } => payload,
                other => return Err(format!("floor: expected a body frame, got {other:?}")),
            };
            if body.is_empty() && pieces.is_empty() {
                body = payload;
            } else {
                if pieces.is_empty() {
                    pieces.reserve(header.body_size as usize);
                    pieces.extend_from_slice(&std::mem::take(&mut body));
                }
                pieces.extend_from_slice(&payload);
            }
        }
        if !pieces.is_empty() {
            body = pieces.freeze();
        }
        Ok((deliver, header, body))
    }

    fn encode_publish(
        &self,
        out: &mut BytesMut,
        routing_key: &ShortStr,
        properties: BasicProperties,
        body: &[u8],
    ) {
        let publish = basic::Publish {
            exchange: ShortStr::from_static(""),
            routing_key: routing_key.clone(),
            mandatory: false,
            immediate: false,
        };
        frame::encode_method(out, 1, &publish.into());
        let header = ContentHeader::new(basic::CLASS_ID, body.len() as u64, &properties);
        frame::encode_content_header(out, 1, &header);
        for piece in body.chunks(self.frame_max as usize - frame::FRAME_OVERHEAD) {
            frame::encode_body(out, 1, piece);
        }
    }

    fn close(mut self) {
        if self.send(0, close_method()).is_ok() {
            self.sock
                .set_read_timeout(Some(Duration::from_secs(2)))
                .ok();
            let _ = self.expect(0, |m| matches!(m, Method::ConnectionCloseOk(_)));
        }
    }
}

/// Runs `f` on a blocking thread with the meter moved in and back.
async fn blocking<T: Send + 'static>(
    meter: &mut Meter,
    f: impl FnOnce(&mut Meter) -> Result<T> + Send + 'static,
) -> Result<T> {
    let mut moved = std::mem::replace(meter, Meter::new(None));
    let (result, moved) = tokio::task::spawn_blocking(move || {
        let result = f(&mut moved);
        (result, moved)
    })
    .await
    .map_err(|e| format!("floor: {e}"))?;
    *meter = moved;
    result
}

/// A normal `connection.close`.
fn close_method() -> Method {
    connection::Close {
        reply_code: coney::ReplyCode::REPLY_SUCCESS,
        reply_text: ShortStr::from_static("bye"),
        class_id: 0,
        method_id: 0,
    }
    .into()
}

fn short(s: &str) -> Result<ShortStr> {
    ShortStr::new(s).map_err(|e| format!("floor: {e}"))
}

/// Publishes for `secs` in writes of [`BATCH`] messages; with a `window`, at most that many unconfirmed
/// (a second thread reads the acks). Ends like the library scenarios: the last confirm, or a synchronous
/// `queue.declare(passive)`.
pub async fn publish(
    ep: &Endpoint,
    queue: &str,
    size: usize,
    window: usize,
    secs: f64,
    meter: &mut Meter,
) -> Result<u64> {
    let (ep, queue) = (ep.clone(), queue.to_string());
    blocking(meter, move |m| {
        publish_blocking(&ep, &queue, size, window, secs, m)
    })
    .await
}

fn publish_blocking(
    ep: &Endpoint,
    queue: &str,
    size: usize,
    window: usize,
    secs: f64,
    meter: &mut Meter,
) -> Result<u64> {
    let mut wire = Wire::connect(ep)?;
    if window > 0 {
        wire.send(1, confirm::Select { nowait: false }.into())?;
        wire.expect(1, |m| matches!(m, Method::ConfirmSelectOk(_)))?;
    }
    let key = short(queue)?;
    let body = vec![0u8; size];
    let mut batch = BytesMut::new();
    wire.encode_publish(&mut batch, &key, BasicProperties::default(), &body);
    let per = batch.len();
    let batch_n = (BATCH_BYTES / per).clamp(1, BATCH);
    for _ in 1..batch_n {
        wire.encode_publish(&mut batch, &key, BasicProperties::default(), &body);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    meter.start();
    if window == 0 {
        while Instant::now() < deadline {
            wire.sock.write_all(&batch).map_err(io)?;
            sent += batch_n as u64;
        }
        let passive = queue::Declare {
            queue: key,
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        };
        wire.send(1, passive.into())?;
        wire.expect(1, |m| matches!(m, Method::QueueDeclareOk(_)))?;
    } else {
        // The reader thread owns the decoding side; this thread only writes.
        let confirmed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let mut writer = wire.sock.try_clone().map_err(io)?;
        let reader = {
            let (confirmed, failed) = (confirmed.clone(), failed.clone());
            let publisher = thread::current();
            thread::spawn(move || {
                loop {
                    match wire.method() {
                        Ok((_, Method::BasicAck(a))) => {
                            // Acks come in order; a single one settles its own tag only, but with
                            // one publisher and no nacks every earlier tag is settled by then too.
                            confirmed.fetch_max(a.delivery_tag, Ordering::AcqRel);
                            publisher.unpark();
                        }
                        Ok((_, Method::BasicNack(_))) | Err(_) => {
                            failed.store(true, Ordering::Release);
                            publisher.unpark();
                            return;
                        }
                        Ok((0, Method::ConnectionCloseOk(_))) => return,
                        Ok(_) => {}
                    }
                }
            })
        };
        let window = window as u64;
        let written = (|| -> Result<()> {
            while Instant::now() < deadline && !failed.load(Ordering::Acquire) {
                let room = (confirmed.load(Ordering::Acquire) + window).saturating_sub(sent);
                let n = room.min(batch_n as u64);
                if n == 0 {
                    thread::park_timeout(Duration::from_millis(1));
                    continue;
                }
                // The batch is `batch_n` identical publishes: `n` of them are its first `n * per`
                // bytes.
                writer.write_all(&batch[..n as usize * per]).map_err(io)?;
                sent += n;
            }
            Ok(())
        })();
        if written.is_ok() {
            while confirmed.load(Ordering::Acquire) < sent && !failed.load(Ordering::Acquire) {
                thread::park_timeout(Duration::from_millis(1));
            }
            meter.stop();
            let mut out = BytesMut::new();
            frame::encode_method(&mut out, 0, &close_method());
            let _ = writer.write_all(&out);
        } else {
            // A failed write leaves the reader blocked on a socket nobody closes: end it now.
            let _ = writer.shutdown(std::net::Shutdown::Both);
        }
        let _ = reader.join();
        written?;
        if confirmed.load(Ordering::Acquire) < sent {
            return Err("floor: the confirm reader failed".into());
        }
        return Ok(sent);
    }
    meter.stop();
    wire.close();
    Ok(sent)
}

/// Drains `expected` messages (or for `secs`) with prefetch 1000, settling everything handled with one
/// `basic.ack` (`multiple`) before each blocking socket read and once at the end.
pub async fn consume(
    ep: &Endpoint,
    queue: &str,
    expected: u64,
    secs: f64,
    meter: &mut Meter,
) -> Result<u64> {
    let (ep, queue) = (ep.clone(), queue.to_string());
    blocking(meter, move |m| {
        consume_blocking(&ep, &queue, expected, secs, m)
    })
    .await
}

fn consume_blocking(
    ep: &Endpoint,
    queue: &str,
    expected: u64,
    secs: f64,
    meter: &mut Meter,
) -> Result<u64> {
    let mut wire = Wire::connect(ep)?;
    let qos = basic::Qos {
        prefetch_size: 0,
        prefetch_count: 1000,
        global: false,
    };
    wire.send(1, qos.into())?;
    wire.expect(1, |m| matches!(m, Method::BasicQosOk(_)))?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    meter.start();
    consume_on(&mut wire, queue, false)?;
    let mut n = 0u64;
    while n < expected && Instant::now() < deadline {
        let (deliver, _header, body) = wire.delivery()?;
        std::hint::black_box(&body);
        n += 1;
        // Settled by `Wire::frame` before its next socket read, or just below after the last one.
        wire.handled = deliver.delivery_tag;
    }
    wire.ack_handled()?;
    meter.stop();
    wire.close();
    Ok(n)
}

/// Request/reply like the library scenarios: a responder connection on its own thread answers each
/// request to its `reply_to` with its correlation id; the requester sends one request at a time.
pub async fn round_trip(
    ep: &Endpoint,
    requests: &str,
    replies: &str,
    size: usize,
    secs: f64,
    max: usize,
    meter: &mut Meter,
) -> Result<Vec<Duration>> {
    let (ep, requests, replies) = (ep.clone(), requests.to_string(), replies.to_string());
    blocking(meter, move |m| {
        round_trip_blocking(&ep, &requests, &replies, size, secs, max, m)
    })
    .await
}

/// Starts a consumer on channel 1 and waits for `consume-ok`.
fn consume_on(wire: &mut Wire, queue: &str, no_ack: bool) -> Result<()> {
    let consume = basic::Consume {
        queue: short(queue)?,
        consumer_tag: ShortStr::from_static(""),
        no_local: false,
        no_ack,
        exclusive: false,
        no_wait: false,
        arguments: FieldTable::new(),
    };
    wire.send(1, consume.into())?;
    wire.expect(1, |m| matches!(m, Method::BasicConsumeOk(_)))?;
    Ok(())
}

fn round_trip_blocking(
    ep: &Endpoint,
    requests: &str,
    replies: &str,
    size: usize,
    secs: f64,
    max: usize,
    meter: &mut Meter,
) -> Result<Vec<Duration>> {
    let mut server = Wire::connect(ep)?;
    consume_on(&mut server, requests, true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let stop = stop.clone();
        thread::spawn(move || -> Result<()> {
            let mut out = BytesMut::new();
            while !stop.load(Ordering::Acquire) {
                let (_, header, body) = match server.delivery() {
                    Ok(d) => d,
                    Err(_) if stop.load(Ordering::Acquire) => break,
                    Err(e) => return Err(e),
                };
                let props = header.properties.decode().map_err(|e| e.to_string())?;
                let (Some(reply_to), Some(id)) = (&props.reply_to, &props.correlation_id) else {
                    continue;
                };
                let reply = BasicProperties::default().with_correlation_id(id.clone());
                out.clear();
                server.encode_publish(&mut out, reply_to, reply, &body);
                server.sock.write_all(&out).map_err(io)?;
            }
            server.close();
            Ok(())
        })
    };
    let mut client = Wire::connect(ep)?;
    consume_on(&mut client, replies, true)?;
    let body = vec![0u8; size];
    let reply_to = short(replies)?;
    let request_key = short(requests)?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rtts = Vec::with_capacity(max);
    let mut out = BytesMut::new();
    meter.start();
    while rtts.len() < max && Instant::now() < deadline {
        let id = short(&rtts.len().to_string())?;
        let t0 = Instant::now();
        let props = BasicProperties::default()
            .with_reply_to(reply_to.clone())
            .with_correlation_id(id.clone());
        out.clear();
        client.encode_publish(&mut out, &request_key, props, &body);
        client.sock.write_all(&out).map_err(io)?;
        let (_, header, _) = client.delivery()?;
        let props = header.properties.decode().map_err(|e| e.to_string())?;
        if props.correlation_id.as_ref() != Some(&id) {
            return Err("floor: reply with the wrong correlation id".into());
        }
        rtts.push(t0.elapsed());
    }
    meter.stop();
    stop.store(true, Ordering::Release);
    // One last request wakes the responder so it sees `stop`.
    out.clear();
    client.encode_publish(&mut out, &request_key, BasicProperties::default(), &body);
    let _ = client.sock.write_all(&out);
    client.close();
    let _ = responder.join();
    Ok(rtts)
}
