//! A do-nothing AMQP broker on 127.0.0.1: it does the handshake, answers the few synchronous methods the
//! scenarios use, and then either streams pre-encoded `basic.deliver`s as fast as the socket takes them or
//! sinks publishes (acking them at once in confirm mode). It runs on its own OS thread with its own
//! current-thread runtime, so the client's CPU time is the process's minus this thread's.
//!
//! The raw modes skip AMQP altogether and measure the loopback socket: the same delivery byte stream written
//! to a plain reader, or a plain writer's publish byte stream read and dropped.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::{Buf, BytesMut};
use coney::{
    codec::LongStr,
    frame::{self, ContentHeader, Frame, FrameDecoder},
    spec::{basic, channel, confirm, connection, exchange, queue, Method},
    FieldTable, ShortStr,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedWriteHalf, TcpListener, TcpStream},
    sync::{mpsc, Notify},
};

use crate::cpu::ThreadClock;

/// The frame size the fake broker offers (RabbitMQ's default).
pub const FRAME_MAX: u32 = 131_072;

/// What the fake broker does once a client is connected.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// After basic.consume, stream deliveries of `size`-byte bodies until the client closes.
    Deliver { size: usize },
    /// Read and count publishes; in confirm mode, ack everything read so far after each read.
    Sink,
    /// No AMQP: write the delivery byte stream for `size`-byte bodies until the peer goes away.
    RawDeliverStream { size: usize },
    /// No AMQP: read and drop whatever arrives.
    RawSink,
}

/// A fake broker serving one connection.
///
/// Dropping it stops the thread (and with it the socket) at once, so nothing from one run (a client still
/// reading a stream, a blaster still writing) burns CPU during the next.
pub struct FakeBroker {
    pub addr: SocketAddr,
    pub clock: ThreadClock,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBroker {
    /// Binds 127.0.0.1:0 and serves the first connection in `mode` on a new thread.
    pub fn start(mode: Mode) -> FakeBroker {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake broker");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-broker".into())
            .spawn(move || {
                tx.send(ThreadClock::current()).expect("report clock");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake broker runtime");
                let served = async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(30), listener.accept()).await;
                    let Ok(Ok((stream, _))) = accepted else {
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    // A run never needs more than this; a stuck client must not keep the thread alive.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(300), serve(stream, mode)).await;
                };
                rt.block_on(async move {
                    tokio::select! {
                        _ = served => {}
                        _ = stop => {}
                    }
                });
                // Dropping the runtime cancels the writer task and closes the socket.
                drop(rt);
            })
            .expect("spawn fake broker");
        let clock = rx.recv().expect("fake broker clock");
        FakeBroker {
            addr,
            clock,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(stream: TcpStream, mode: Mode) {
    match mode {
        Mode::RawSink => {
            let mut stream = stream;
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        Mode::RawDeliverStream { size } => {
            let (_read, mut write) = stream.into_split();
            let mut stream = DeliveryStream::new(1, &ShortStr::from_static("raw"), size);
            loop {
                if write.write_all(stream.next_chunk()).await.is_err() {
                    break;
                }
            }
        }
        Mode::Deliver { size } => amqp(stream, Some(size)).await,
        Mode::Sink => amqp(stream, None).await,
    }
}

/// What the reader half tells the writer half.
enum Out {
    Frames(BytesMut),
    StartDelivering {
        channel: u16,
        tag: ShortStr,
        /// At most this many unacked deliveries (`None`: no-ack consumer, or no prefetch limit).
        prefetch: Option<u64>,
    },
    StopDelivering,
    /// Write what is queued, then shut the socket.
    Finish,
}

async fn amqp(stream: TcpStream, deliver_size: Option<usize>) {
    let (mut read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let credit = Arc::new(Credit::default());
    let writer = tokio::spawn(writer(write, rx, deliver_size.unwrap_or(0), credit.clone()));
    let mut buf = BytesMut::with_capacity(256 * 1024);
    // Protocol header: "AMQP" 0 0 9 1.
    while buf.len() < 8 {
        if !matches!(read.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return;
        }
    }
    buf.advance(8);
    let _ = tx.send(Out::Frames(method_frame(0, start().into())));
    let decoder = FrameDecoder::new(FRAME_MAX);
    let mut publishes = 0u64;
    let mut confirm_base: Option<u64> = None;
    let mut acked = 0u64;
    let mut prefetch = 0u16;
    let mut deliveries_acked = 0u64;
    'read: loop {
        while let Some(frame) = next_frame(&mut buf, &decoder, &mut publishes) {
            let Frame::Method { channel, method } = frame else {
                continue;
            };
            let reply: Option<Method> = match method {
                Method::ConnectionStartOk(_) => Some(
                    connection::Tune {
                        channel_max: 2047,
                        frame_max: FRAME_MAX,
                        // RabbitMQ's default. The fake sends no heartbeats; runs are far shorter than
                        // two intervals.
                        heartbeat: 60,
                    }
                    .into(),
                ),
                Method::ConnectionOpen(_) => Some(connection::OpenOk.into()),
                Method::ChannelOpen(_) => Some(channel::OpenOk.into()),
                Method::BasicQos(q) => {
                    prefetch = q.prefetch_count;
                    Some(basic::QosOk.into())
                }
                Method::BasicAck(a) => {
                    // Clients here ack in order, so the count of acked deliveries is the tag.
                    deliveries_acked = if a.multiple {
                        deliveries_acked.max(a.delivery_tag)
                    } else {
                        deliveries_acked + 1
                    };
                    credit.acked.store(deliveries_acked, Ordering::Release);
                    credit.notify.notify_one();
                    None
                }
                Method::ConfirmSelect(s) => {
                    confirm_base = Some(publishes);
                    (!s.nowait).then(|| confirm::SelectOk.into())
                }
                Method::QueueDeclare(d) => Some(
                    queue::DeclareOk {
                        queue: if d.queue.is_empty() {
                            ShortStr::from_static("fake-queue")
                        } else {
                            d.queue
                        },
                        message_count: 0,
                        consumer_count: 0,
                    }
                    .into(),
                ),
                Method::QueuePurge(_) => Some(queue::PurgeOk { message_count: 0 }.into()),
                Method::QueueDelete(_) => Some(queue::DeleteOk { message_count: 0 }.into()),
                Method::QueueBind(_) => Some(queue::BindOk.into()),
                Method::ExchangeDeclare(_) => Some(exchange::DeclareOk.into()),
                Method::BasicConsume(c) => {
                    let tag = if c.consumer_tag.is_empty() {
                        ShortStr::from_static("amq.ctag-fake-broker-0000000001")
                    } else {
                        c.consumer_tag
                    };
                    let _ = tx.send(Out::Frames(method_frame(
                        channel,
                        basic::ConsumeOk {
                            consumer_tag: tag.clone(),
                        }
                        .into(),
                    )));
                    if deliver_size.is_some() {
                        let limited = !c.no_ack && prefetch > 0;
                        let prefetch = limited.then_some(u64::from(prefetch));
                        let _ = tx.send(Out::StartDelivering {
                            channel,
                            tag,
                            prefetch,
                        });
                    }
                    None
                }
                Method::BasicCancel(c) => {
                    let _ = tx.send(Out::StopDelivering);
                    (!c.no_wait).then(|| {
                        basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        }
                        .into()
                    })
                }
                Method::ChannelClose(_) => {
                    let _ = tx.send(Out::StopDelivering);
                    Some(channel::CloseOk.into())
                }
                Method::ConnectionClose(_) => {
                    let _ = tx.send(Out::StopDelivering);
                    let _ = tx.send(Out::Frames(method_frame(0, connection::CloseOk.into())));
                    let _ = tx.send(Out::Finish);
                    break 'read;
                }
                _ => None,
            };
            if let Some(reply) = reply {
                let _ = tx.send(Out::Frames(method_frame(channel, reply)));
            }
        }
        if let Some(base) = confirm_base {
            let confirmed = publishes - base;
            if confirmed > acked {
                acked = confirmed;
                let ack = basic::Ack {
                    delivery_tag: confirmed,
                    multiple: true,
                };
                // Confirms are for channel 1: every scenario publishes on the first channel it opens.
                let _ = tx.send(Out::Frames(method_frame(1, ack.into())));
            }
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        match read.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The next frame worth decoding. Publishes (method, header and body frames) are counted and skipped
/// by looking at the frame header only, so the sink costs next to nothing per message.
fn next_frame(buf: &mut BytesMut, decoder: &FrameDecoder, publishes: &mut u64) -> Option<Frame> {
    loop {
        if buf.len() < 7 {
            return None;
        }
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        if buf.len() < size + 8 {
            return None;
        }
        let kind = buf[0];
        let is_publish = kind == 1 && size >= 4 && buf[7..11] == [0, 60, 0, 40];
        if is_publish || kind == 2 || kind == 3 || kind == 8 {
            *publishes += u64::from(is_publish);
            buf.advance(size + 8);
            continue;
        }
        let mut one = buf.split_to(size + 8);
        match decoder.decode(&mut one) {
            Ok(Some(frame)) => return Some(frame),
            _ => continue,
        }
    }
}

/// Acks the client has sent, for a consumer with a prefetch limit.
#[derive(Default)]
struct Credit {
    acked: AtomicU64,
    notify: Notify,
}

async fn writer(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    size: usize,
    credit: Arc<Credit>,
) {
    let mut delivering: Option<(DeliveryStream, Option<u64>)> = None;
    loop {
        let ready = delivering.as_ref().map(|(stream, prefetch)| {
            prefetch.is_none_or(|p| {
                stream.delivered_after_next_chunk() <= credit.acked.load(Ordering::Acquire) + p
            })
        });
        let next = match ready {
            Some(true) => match rx.try_recv() {
                Ok(out) => Some(out),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => Some(Out::Finish),
            },
            Some(false) => tokio::select! {
                out = rx.recv() => Some(out.unwrap_or(Out::Finish)),
                _ = credit.notify.notified() => continue,
            },
            None => Some(rx.recv().await.unwrap_or(Out::Finish)),
        };
        let result = match next {
            Some(Out::Frames(bytes)) => write.write_all(&bytes).await,
            Some(Out::StartDelivering {
                channel,
                tag,
                prefetch,
            }) => {
                // Chunks small enough that a prefetch window holds several of them.
                let per_chunk = prefetch.map_or(usize::MAX, |p| (p as usize / 4).max(1));
                let stream = DeliveryStream::new(channel, &tag, size).limit_chunk(per_chunk);
                delivering = Some((stream, prefetch));
                Ok(())
            }
            Some(Out::StopDelivering) => {
                delivering = None;
                Ok(())
            }
            Some(Out::Finish) => {
                let _ = write.shutdown().await;
                return;
            }
            None => {
                let (stream, _) = delivering.as_mut().expect("delivering");
                write.write_all(stream.next_chunk()).await
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// Pre-encoded deliveries whose delivery tags are patched in place before each write.
pub struct DeliveryStream {
    chunk: Vec<u8>,
    tag_offsets: Vec<usize>,
    next_tag: u64,
}

impl DeliveryStream {
    pub fn new(channel: u16, consumer_tag: &ShortStr, size: usize) -> DeliveryStream {
        let one = encoded_delivery(channel, consumer_tag, 1, size);
        // About 256 KiB per write, at least one message.
        let count = (256 * 1024 / one.len()).clamp(1, 4096);
        let mut chunk = Vec::with_capacity(one.len() * count);
        let mut tag_offsets = Vec::with_capacity(count);
        // Frame header (7), class and method ids (4), consumer tag (1 + len): then the delivery tag.
        let tag_at = 7 + 4 + 1 + consumer_tag.len();
        for _ in 0..count {
            tag_offsets.push(chunk.len() + tag_at);
            chunk.extend_from_slice(&one);
        }
        DeliveryStream {
            chunk,
            tag_offsets,
            next_tag: 1,
        }
    }

    /// Keeps at most `n` messages per chunk.
    pub fn limit_chunk(mut self, n: usize) -> DeliveryStream {
        if n < self.tag_offsets.len() {
            let per = self.bytes_per_message();
            self.tag_offsets.truncate(n);
            self.chunk.truncate(per * n);
        }
        self
    }

    /// How many deliveries will have been sent once the next chunk is written.
    pub fn delivered_after_next_chunk(&self) -> u64 {
        self.next_tag - 1 + self.tag_offsets.len() as u64
    }

    /// Bytes of one message, frames included.
    pub fn bytes_per_message(&self) -> usize {
        self.chunk.len() / self.tag_offsets.len()
    }

    pub fn next_chunk(&mut self) -> &[u8] {
        for &at in &self.tag_offsets {
            self.chunk[at..at + 8].copy_from_slice(&self.next_tag.to_be_bytes());
            self.next_tag += 1;
        }
        &self.chunk
    }
}

fn encoded_delivery(channel: u16, consumer_tag: &ShortStr, tag: u64, size: usize) -> BytesMut {
    let mut out = BytesMut::new();
    let deliver = basic::Deliver {
        consumer_tag: consumer_tag.clone(),
        delivery_tag: tag,
        redelivered: false,
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("bench"),
    };
    frame::encode_method(&mut out, channel, &deliver.into());
    let header = ContentHeader {
        class_id: basic::CLASS_ID,
        body_size: size as u64,
        properties: Default::default(),
    };
    frame::encode_content_header(&mut out, channel, &header);
    let body = vec![0u8; size];
    for piece in body.chunks(FRAME_MAX as usize - frame::FRAME_OVERHEAD) {
        frame::encode_body(&mut out, channel, piece);
    }
    out
}

/// The byte stream of `basic.publish`es with `size`-byte bodies, as a client would write it.
pub fn encoded_publishes(size: usize, count: usize) -> (Vec<u8>, usize) {
    let mut out = BytesMut::new();
    let publish = basic::Publish {
        exchange: ShortStr::from_static(""),
        routing_key: ShortStr::from_static("bench"),
        mandatory: false,
        immediate: false,
    };
    let body = vec![0u8; size];
    for _ in 0..count {
        frame::encode_method(&mut out, 1, &publish.clone().into());
        let header = ContentHeader {
            class_id: basic::CLASS_ID,
            body_size: size as u64,
            properties: Default::default(),
        };
        frame::encode_content_header(&mut out, 1, &header);
        for piece in body.chunks(FRAME_MAX as usize - frame::FRAME_OVERHEAD) {
            frame::encode_body(&mut out, 1, piece);
        }
    }
    let per = out.len() / count;
    (out.to_vec(), per)
}

fn method_frame(channel: u16, m: Method) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    frame::encode_method(&mut out, channel, &m);
    out
}

fn start() -> connection::Start {
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
    connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new()
            .with("capabilities", capabilities)
            .with("product", "RabbitMQ")
            .with("version", "3.13.7")
            .with("platform", "coney-compare fake broker"),
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    }
}

/// Reads the raw delivery stream for `secs`; returns bytes read.
pub async fn raw_read(addr: SocketAddr, secs: f64) -> std::io::Result<u64> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut total = 0u64;
    while Instant::now() < deadline {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total)
}

/// Writes `chunk` over and over for `secs`; returns bytes written.
pub async fn raw_write(addr: SocketAddr, chunk: &[u8], secs: f64) -> std::io::Result<u64> {
    let mut stream = TcpStream::connect(addr).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut total = 0u64;
    while Instant::now() < deadline {
        stream.write_all(chunk).await?;
        total += chunk.len() as u64;
    }
    let _ = stream.shutdown().await;
    Ok(total)
}
