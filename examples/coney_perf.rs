//! `coney_perf`: a load generator in the spirit of RabbitMQ's PerfTest.
//!
//! Producers and consumers each get their own connection. Every body starts with the send time (nanoseconds
//! since the Unix epoch, 8 bytes, big-endian), so consumers report end-to-end latency, also when producers
//! and consumers run in separate processes on one machine. A line per interval shows sent/s, confirmed/s,
//! received/s and latency percentiles; a summary follows at the end (`--json` for machine-readable lines).
//!
//! ```text
//! cargo run --release --example coney_perf -- --producers 1 --consumers 1 --size 16 --duration 10
//! cargo run --release --example coney_perf -- -x 2 -y 2 --confirm 1000 --prefetch 500 --multi-ack 50 -z 30
//! cargo run --release --example coney_perf -- -x 1 -y 0 --rate 20000 --pmessages 100000 --queue load
//! cargo run --release --example coney_perf -- --help
//! ```

use std::{
    collections::VecDeque,
    future::Future,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, RawWaker, RawWakerVTable, Waker},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{BufMut, Bytes, BytesMut};
use coney::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, BindOptions, ExchangeDeclareOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    BasicProperties, Channel, Confirmation, Connection, ConnectionConfig, FieldTable,
    PublishConfirm,
};
use tokio::sync::watch;

const USAGE: &str = "\
coney_perf: AMQP 0-9-1 load generator (producers, consumers, confirms, latency)

USAGE: cargo run --release --example coney_perf -- [OPTIONS]

  --uri URI              broker (default: $AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2f)
  -x, --producers N      producer connections (default 1)
  -y, --consumers N      consumer connections (default 1)
  -s, --size BYTES       message body size (default 16; latency needs at least 8)
  -c, --confirm N        publisher-confirm window per producer; 0 = no confirms (default 0)
  -q, --prefetch N       basic.qos prefetch count per consumer; 0 = unlimited (default 1000)
  -A, --multi-ack N      ack every N-th delivery with multiple=true; 1 = ack each (default 1)
  -a, --auto-ack         consume with no-ack (the broker does not wait for acks)
  -r, --rate N           messages/s per producer; 0 = as fast as possible (default 0)
  -z, --duration SECS    stop after SECS seconds (default 10 unless a message count is given)
  -C, --pmessages N      each producer stops after N messages
  -D, --cmessages N      each consumer stops after N messages
  -u, --queue NAME       queue (default: a fresh coney-perf-<pid>-<time>, deleted at the end)
  -e, --exchange NAME    exchange to publish to (default: the default exchange \"\")
  -t, --type KIND        exchange type to declare (default direct)
  -k, --routing-key KEY  routing key (default: the queue name)
      --persistent       delivery-mode 2
      --durable          declare a durable queue (and exchange)
      --predeclared      declare nothing (queue and exchange exist)
      --keep             do not delete the queue at the end
  -i, --interval SECS    seconds between report lines (default 1)
      --json             one JSON object per report line and for the summary
  -h, --help             this text
";

fn main() {
    let opts = match Opts::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("coney_perf: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(opts)) {
        eprintln!("coney_perf: {e}");
        std::process::exit(1);
    }
}

/// Command-line options.
#[derive(Debug, Clone)]
struct Opts {
    uri: String,
    producers: usize,
    consumers: usize,
    size: usize,
    confirm: usize,
    prefetch: u16,
    multi_ack: u64,
    auto_ack: bool,
    rate: u64,
    duration: Option<Duration>,
    pmessages: Option<u64>,
    cmessages: Option<u64>,
    queue: Option<String>,
    exchange: String,
    exchange_type: String,
    routing_key: Option<String>,
    persistent: bool,
    durable: bool,
    predeclared: bool,
    keep: bool,
    interval: Duration,
    json: bool,
}

impl Opts {
    /// `Ok(None)` for `--help`.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Opts>, String> {
        let mut o = Opts {
            uri: std::env::var("AMQP_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            producers: 1,
            consumers: 1,
            size: 16,
            confirm: 0,
            prefetch: 1000,
            multi_ack: 1,
            auto_ack: false,
            rate: 0,
            duration: None,
            pmessages: None,
            cmessages: None,
            queue: None,
            exchange: String::new(),
            exchange_type: "direct".into(),
            routing_key: None,
            persistent: false,
            durable: false,
            predeclared: false,
            keep: false,
            interval: Duration::from_secs(1),
            json: false,
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            // Accept both `--size 16` and `--size=16`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || -> Result<String, String> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => args.next().ok_or_else(|| format!("{flag} needs a value")),
                }
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--uri" => o.uri = value()?,
                "-x" | "--producers" => o.producers = num(&flag, &value()?)?,
                "-y" | "--consumers" => o.consumers = num(&flag, &value()?)?,
                "-s" | "--size" => o.size = num(&flag, &value()?)?,
                "-c" | "--confirm" => o.confirm = num(&flag, &value()?)?,
                "-q" | "--prefetch" => o.prefetch = num(&flag, &value()?)?,
                "-A" | "--multi-ack" => o.multi_ack = num::<u64>(&flag, &value()?)?.max(1),
                "-a" | "--auto-ack" => o.auto_ack = true,
                "-r" | "--rate" => o.rate = num(&flag, &value()?)?,
                "-z" | "--duration" => {
                    o.duration = Some(Duration::from_secs_f64(num(&flag, &value()?)?))
                }
                "-C" | "--pmessages" => o.pmessages = Some(num(&flag, &value()?)?),
                "-D" | "--cmessages" => o.cmessages = Some(num(&flag, &value()?)?),
                "-u" | "--queue" => o.queue = Some(value()?),
                "-e" | "--exchange" => o.exchange = value()?,
                "-t" | "--type" => o.exchange_type = value()?,
                "-k" | "--routing-key" => o.routing_key = Some(value()?),
                "--persistent" => o.persistent = true,
                "--durable" => o.durable = true,
                "--predeclared" => o.predeclared = true,
                "--keep" => o.keep = true,
                "-i" | "--interval" => {
                    o.interval = Duration::from_secs_f64(num::<f64>(&flag, &value()?)?.max(0.1))
                }
                "--json" => o.json = true,
                other => return Err(format!("unknown option {other}")),
            }
        }
        if o.producers == 0 && o.consumers == 0 {
            return Err("nothing to do: no producers and no consumers".into());
        }
        if o.duration.is_none() && o.pmessages.is_none() && o.cmessages.is_none() {
            o.duration = Some(Duration::from_secs(10));
        }
        Ok(Some(o))
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

/// Counters shared by every task; the reporter reads them.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    returned: AtomicU64,
    received: AtomicU64,
    producers_done: AtomicUsize,
    /// One histogram pair per consumer (uncontended: the reporter takes the lock once per interval).
    latencies: Mutex<Vec<Arc<Mutex<Latencies>>>>,
}

#[derive(Default)]
struct Latencies {
    interval: Histogram,
    total: Histogram,
}

async fn run(opts: Opts) -> Result<(), String> {
    let opts = Arc::new(opts);
    let queue = opts.queue.clone().unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("coney-perf-{}-{nanos}", std::process::id())
    });
    let routing_key = opts.routing_key.clone().unwrap_or_else(|| queue.clone());
    let config = ConnectionConfig::from_uri(&opts.uri).map_err(|e| e.to_string())?;
    let setup = Connection::connect_with(config.clone())
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.redacted_uri()))?;
    let setup_channel = setup.open_channel().await.map_err(|e| e.to_string())?;
    if !opts.predeclared {
        declare(&setup_channel, &opts, &queue, &routing_key).await?;
    }

    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    for i in 0..opts.consumers {
        let conn = Connection::connect_with(
            config
                .clone()
                .with_connection_name(format!("coney_perf consumer {i}")),
        )
        .await
        .map_err(|e| e.to_string())?;
        let latencies = Arc::new(Mutex::new(Latencies::default()));
        stats.latencies.lock().unwrap().push(latencies.clone());
        let task = consume(
            conn,
            opts.clone(),
            queue.clone(),
            stats.clone(),
            latencies,
            stop_rx.clone(),
        );
        consumers.push(tokio::spawn(task));
    }
    let mut producers = Vec::new();
    for i in 0..opts.producers {
        let window = opts.confirm.max(1);
        let conn = Connection::connect_with(
            config
                .clone()
                .with_confirm_window(window)
                .with_connection_name(format!("coney_perf producer {i}")),
        )
        .await
        .map_err(|e| e.to_string())?;
        let task = produce(
            conn,
            opts.clone(),
            routing_key.clone(),
            stats.clone(),
            stop_rx.clone(),
        );
        producers.push(tokio::spawn(task));
    }

    let started = Instant::now();
    let cpu_start = process_cpu();
    let mut reporter = Reporter::new(opts.clone(), stats.clone(), started);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + opts.interval, opts.interval);
    let expected = opts
        .pmessages
        .filter(|_| opts.cmessages.is_none())
        .map(|n| n * opts.producers as u64);
    let mut last_progress = (0, Instant::now());
    loop {
        ticker.tick().await;
        reporter.line();
        let elapsed = started.elapsed();
        let producers_done = stats.producers_done.load(Ordering::Acquire) == opts.producers;
        let consumers_done = consumers.iter().all(|c| c.is_finished());
        let received = stats.received.load(Ordering::Relaxed);
        if received != last_progress.0 {
            last_progress = (received, Instant::now());
        }
        let time_up = opts.duration.is_some_and(|d| elapsed >= d);
        let all_received = expected.is_some_and(|n| received >= n);
        // Producers finished and the consumers got everything, or nothing has arrived for 5 s.
        let drained =
            producers_done && (all_received || last_progress.1.elapsed() > Duration::from_secs(5));
        let counts_done = opts.duration.is_none()
            && (opts.consumers == 0 || consumers_done || drained)
            && (opts.producers == 0 || producers_done);
        if time_up || counts_done || (producers_done && consumers_done) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    for p in producers {
        if let Ok(Err(e)) = p.await {
            eprintln!("producer: {e}");
        }
    }
    for c in consumers {
        if let Ok(Err(e)) = c.await {
            eprintln!("consumer: {e}");
        }
    }
    reporter.summary(elapsed, cpu);
    if !opts.predeclared && !opts.keep {
        let _ = setup_channel
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await;
        if !opts.exchange.is_empty() && !opts.exchange.starts_with("amq.") {
            let _ = setup_channel
                .exchange_delete(&opts.exchange, Default::default())
                .await;
        }
    }
    let _ = setup.close().await;
    Ok(())
}

async fn declare(
    channel: &Channel,
    opts: &Opts,
    queue: &str,
    routing_key: &str,
) -> Result<(), String> {
    let options = QueueDeclareOptions {
        durable: opts.durable,
        ..Default::default()
    };
    channel
        .queue_declare(queue, options, FieldTable::new())
        .await
        .map_err(|e| format!("queue.declare {queue}: {e}"))?;
    if !opts.exchange.is_empty() {
        if !opts.exchange.starts_with("amq.") {
            let options = ExchangeDeclareOptions {
                durable: opts.durable,
                ..Default::default()
            };
            channel
                .exchange_declare(
                    &opts.exchange,
                    &opts.exchange_type,
                    options,
                    FieldTable::new(),
                )
                .await
                .map_err(|e| format!("exchange.declare {}: {e}", opts.exchange))?;
        }
        channel
            .queue_bind(
                queue,
                &opts.exchange,
                routing_key,
                BindOptions::default(),
                FieldTable::new(),
            )
            .await
            .map_err(|e| format!("queue.bind: {e}"))?;
    }
    Ok(())
}

async fn produce(
    conn: Connection,
    opts: Arc<Opts>,
    routing_key: String,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let result = produce_on(&conn, &opts, &routing_key, &stats, &stop).await;
    stats.producers_done.fetch_add(1, Ordering::AcqRel);
    let _ = conn.close().await;
    result.map_err(|e| e.to_string())
}

async fn produce_on(
    conn: &Connection,
    opts: &Opts,
    routing_key: &str,
    stats: &Stats,
    stop: &watch::Receiver<bool>,
) -> Result<(), coney::Error> {
    let channel = conn.open_channel().await?;
    if opts.confirm > 0 {
        channel.confirm_select().await?;
    }
    let mut properties = BasicProperties::default();
    if opts.persistent {
        properties = properties.with_delivery_mode(2u8);
    }
    let mut pending: VecDeque<PublishConfirm> = VecDeque::with_capacity(opts.confirm);
    let limit = opts.pmessages.unwrap_or(u64::MAX);
    let pace = (opts.rate > 0).then(|| Duration::from_secs_f64(1.0 / opts.rate as f64));
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    while sent < limit {
        if sent % 64 == 0 && *stop.borrow() {
            break;
        }
        if let Some(pace) = pace {
            let due = started + pace.mul_f64(sent as f64);
            // Sleeping costs a timer wheel tick (1 ms): only sleep when that far ahead.
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due).await;
            }
        }
        let confirm = channel
            .basic_publish(
                &opts.exchange,
                routing_key,
                BasicPublishOptions::default(),
                properties.clone(),
                body(opts.size),
            )
            .await?;
        sent += 1;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if opts.confirm > 0 {
            pending.push_back(confirm);
            settle_ready(&mut pending, stats);
            if pending.len() >= opts.confirm {
                let front = pending.pop_front().expect("window is not empty");
                record(front.await?, stats);
            }
        }
        // Without confirms nothing above waits: let the driver and consumers run now and then.
        if sent % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for confirm in pending {
        record(confirm.await?, stats);
    }
    channel.close().await
}

/// Collects the confirms at the front of the window that have already arrived, without waiting.
fn settle_ready(pending: &mut VecDeque<PublishConfirm>, stats: &Stats) {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    while let Some(front) = pending.front_mut() {
        match Pin::new(front).poll(&mut cx) {
            Poll::Ready(outcome) => {
                pending.pop_front();
                match outcome {
                    Ok(c) => record(c, stats),
                    Err(_) => {
                        stats.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Poll::Pending => break,
        }
    }
}

fn record(confirmation: Confirmation, stats: &Stats) {
    let counter = match confirmation {
        Confirmation::Ack | Confirmation::NotRequested => &stats.confirmed,
        Confirmation::Nack => &stats.nacked,
        Confirmation::Returned(_) => &stats.returned,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RAW) }
}

/// A body of `size` bytes whose first 8 carry the send time.
fn body(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    if size >= 8 {
        b.put_u64(now_nanos());
    }
    b.resize(size, 0);
    b.freeze()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn consume(
    conn: Connection,
    opts: Arc<Opts>,
    queue: String,
    stats: Arc<Stats>,
    latencies: Arc<Mutex<Latencies>>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let result = consume_on(&conn, &opts, &queue, &stats, &latencies, stop).await;
    let _ = conn.close().await;
    result.map_err(|e| e.to_string())
}

async fn consume_on(
    conn: &Connection,
    opts: &Opts,
    queue: &str,
    stats: &Stats,
    latencies: &Mutex<Latencies>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), coney::Error> {
    let channel = conn.open_channel().await?;
    if !opts.auto_ack && opts.prefetch > 0 {
        channel.basic_qos(opts.prefetch, Default::default()).await?;
    }
    let options = BasicConsumeOptions {
        no_ack: opts.auto_ack,
        ..Default::default()
    };
    let mut consumer = channel
        .basic_consume(queue, "", options, FieldTable::new())
        .await?;
    let limit = opts.cmessages.unwrap_or(u64::MAX);
    let mut stopped = pin!(stop.wait_for(|s| *s));
    let mut received = 0u64;
    let mut unacked = None;
    while received < limit {
        let delivery = tokio::select! {
            biased;
            d = consumer.next() => match d {
                Some(d) => d?,
                None => break,
            },
            _ = &mut stopped => break,
        };
        received += 1;
        stats.received.fetch_add(1, Ordering::Relaxed);
        if delivery.body.len() >= 8 {
            let sent = u64::from_be_bytes(delivery.body[..8].try_into().expect("8 bytes"));
            let latency = now_nanos().saturating_sub(sent);
            let mut l = latencies.lock().unwrap();
            l.interval.record(latency);
            l.total.record(latency);
        }
        if opts.auto_ack {
            continue;
        }
        if opts.multi_ack <= 1 {
            delivery.ack().await?;
        } else if received % opts.multi_ack == 0 {
            delivery.ack_multiple().await?;
            unacked = None;
        } else {
            unacked = Some(delivery);
        }
    }
    if let Some(last) = unacked {
        last.ack_multiple().await?;
    }
    drop(consumer);
    channel.close().await
}

/// Prints a line per interval and the summary.
struct Reporter {
    opts: Arc<Opts>,
    stats: Arc<Stats>,
    started: Instant,
    last: (Instant, [u64; 4]),
}

impl Reporter {
    fn new(opts: Arc<Opts>, stats: Arc<Stats>, started: Instant) -> Reporter {
        Reporter {
            opts,
            stats,
            started,
            last: (started, [0; 4]),
        }
    }

    fn counters(&self) -> [u64; 4] {
        let s = &self.stats;
        [
            s.sent.load(Ordering::Relaxed),
            s.confirmed.load(Ordering::Relaxed),
            s.nacked.load(Ordering::Relaxed) + s.returned.load(Ordering::Relaxed),
            s.received.load(Ordering::Relaxed),
        ]
    }

    fn take_interval_latencies(&self) -> Histogram {
        let mut merged = Histogram::default();
        for l in self.stats.latencies.lock().unwrap().iter() {
            let mut l = l.lock().unwrap();
            merged.merge(&l.interval);
            l.interval = Histogram::default();
        }
        merged
    }

    fn line(&mut self) {
        let now = Instant::now();
        let counters = self.counters();
        let secs = now.duration_since(self.last.0).as_secs_f64();
        let rate = |i: usize| (counters[i] - self.last.1[i]) as f64 / secs;
        let lat = self.take_interval_latencies();
        let t = now.duration_since(self.started).as_secs_f64();
        let (p50, p99) = (lat.percentile(0.5), lat.percentile(0.99));
        if self.opts.json {
            println!(
                "{{\"type\":\"interval\",\"time_s\":{t:.3},\"sent_per_s\":{:.0},\"confirmed_per_s\":{:.0},\
                 \"nacked_per_s\":{:.0},\"received_per_s\":{:.0},\"latency_p50_us\":{},\"latency_p99_us\":{}}}",
                rate(0),
                rate(1),
                rate(2),
                rate(3),
                json_us(p50),
                json_us(p99),
            );
        } else {
            let confirms = if self.opts.confirm > 0 {
                format!(", confirmed {:.0}/s", rate(1))
            } else {
                String::new()
            };
            let nacks = if rate(2) > 0.0 {
                format!(", nacked {:.0}/s", rate(2))
            } else {
                String::new()
            };
            println!(
                "time {t:6.1}s, sent {:.0}/s{confirms}{nacks}, received {:.0}/s, latency p50/p99 {}/{}",
                rate(0),
                rate(3),
                human_us(p50),
                human_us(p99),
            );
        }
        self.last = (now, counters);
    }

    fn summary(&self, elapsed: Duration, cpu: Option<Duration>) {
        let [sent, confirmed, nacked, received] = self.counters();
        let mut lat = Histogram::default();
        for l in self.stats.latencies.lock().unwrap().iter() {
            lat.merge(&l.lock().unwrap().total);
        }
        let secs = elapsed.as_secs_f64();
        let mb = |n: u64| n as f64 * self.opts.size as f64 / secs / 1e6;
        let cpu_us_per_msg = cpu.map(|c| c.as_secs_f64() * 1e6 / (sent + received).max(1) as f64);
        let p = |q| lat.percentile(q);
        if self.opts.json {
            println!(
                "{{\"type\":\"summary\",\"duration_s\":{secs:.3},\"producers\":{},\"consumers\":{},\"size\":{},\
                 \"confirm_window\":{},\"prefetch\":{},\"sent\":{sent},\"confirmed\":{confirmed},\"nacked\":{nacked},\
                 \"received\":{received},\"sent_per_s\":{:.0},\"received_per_s\":{:.0},\"sent_mb_per_s\":{:.2},\
                 \"received_mb_per_s\":{:.2},\"latency_p50_us\":{},\"latency_p95_us\":{},\"latency_p99_us\":{},\
                 \"latency_max_us\":{},\"cpu_s\":{},\"cpu_us_per_msg\":{}}}",
                self.opts.producers,
                self.opts.consumers,
                self.opts.size,
                self.opts.confirm,
                self.opts.prefetch,
                sent as f64 / secs,
                received as f64 / secs,
                mb(sent),
                mb(received),
                json_us(p(0.5)),
                json_us(p(0.95)),
                json_us(p(0.99)),
                json_us(lat.max()),
                cpu.map_or("null".into(), |c| format!("{:.3}", c.as_secs_f64())),
                cpu_us_per_msg.map_or("null".into(), |c| format!("{c:.3}")),
            );
            return;
        }
        println!("summary: {secs:.1} s");
        println!(
            "  sent     {sent} ({:.0} msg/s, {:.2} MB/s)",
            sent as f64 / secs,
            mb(sent)
        );
        if self.opts.confirm > 0 {
            println!(
                "  confirmed {confirmed} ({:.0} msg/s), nacked or returned {nacked}",
                confirmed as f64 / secs
            );
        }
        println!(
            "  received {received} ({:.0} msg/s, {:.2} MB/s)",
            received as f64 / secs,
            mb(received)
        );
        println!(
            "  latency  p50 {}, p95 {}, p99 {}, max {}",
            human_us(p(0.5)),
            human_us(p(0.95)),
            human_us(p(0.99)),
            human_us(lat.max())
        );
        if let (Some(cpu), Some(per)) = (cpu, cpu_us_per_msg) {
            println!(
                "  client CPU {:.2} s ({per:.2} µs per message sent or received, this process)",
                cpu.as_secs_f64()
            );
        }
    }
}

fn human_us(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns >= 10_000_000 => format!("{:.0} ms", ns as f64 / 1e6),
        Some(ns) => format!("{:.0} µs", ns as f64 / 1e3),
    }
}

fn json_us(ns: Option<u64>) -> String {
    ns.map_or("null".into(), |ns| format!("{:.1}", ns as f64 / 1e3))
}

/// CPU time of this process (all threads), from `/proc/self/stat` (Linux; `None` elsewhere).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture that matters here.
    Some(Duration::from_millis(ticks * 10))
}

/// A log-linear histogram of nanosecond values: 32 sub-buckets per power of two (≤ 3% error).
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (2 * SUB + (64 - SUB_BITS as u64 - 1) * SUB) as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let mantissa = v >> (exp - SUB_BITS);
        (2 * SUB + (exp - SUB_BITS - 1) as u64 * SUB + (mantissa - SUB)) as usize
    }

    /// The middle of the values that land in bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let exp = (i - 2 * SUB) / SUB + SUB_BITS as u64 + 1;
        let mantissa = (i - 2 * SUB) % SUB + SUB;
        let low = mantissa << (exp - SUB_BITS as u64);
        low + (1 << (exp - SUB_BITS as u64)) / 2
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }
}
