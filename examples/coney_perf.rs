//! `coney_perf`: a load generator in the spirit of RabbitMQ's PerfTest.
//!
//! Producers and consumers each get their own connection. Every body starts with the send time (nanoseconds
//! since the Unix epoch, 8 bytes, big-endian), so consumers report end-to-end latency, also when producers
//! and consumers run in separate processes on one machine. A line per interval shows sent/s, confirmed/s,
//! received/s and latency percentiles; a summary follows at the end (`--json` for machine-readable lines).
//!
//! The run ends at the first limit reached: `-z` seconds; every producer done (`-C`) and everything
//! received, or 5 s without a delivery; without `-C`, every consumer done (`-D`); every producer and
//! consumer failed. Summary rates divide by the time each side was active (up to the last producer's
//! end, the last delivery), not by idle waiting.
//!
//! Without `--queue` the tool declares a fresh `coney-perf-<pid>-<ms>` queue with `x-expires` (60 s after
//! last use, renewed during the run) and deletes it at the end, also after an error (unless `--keep`:
//! then no `x-expires` and no delete). A queue named with `--queue` and an `--exchange` are declared
//! (unless `--predeclared`) but never deleted. Ctrl-C/SIGTERM kill the process without cleanup (this
//! example has no signal handling: tokio's `signal` feature is not enabled); `x-expires` removes the
//! fresh queue a minute later. Exit status: 0 done, 1 an error (connection, declaration, a producer or
//! consumer failed; listed on stderr after the summary), 2 bad options.
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
use tokio::sync::{watch, Notify};

const USAGE: &str = "\
coney_perf: AMQP 0-9-1 load generator (producers, consumers, confirms, latency)

USAGE: cargo run --release --example coney_perf -- [OPTIONS]

  --uri URI              broker (default: $AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2f)
  -x, --producers N      producer connections (default 1)
  -y, --consumers N      consumer connections (default 1)
  -s, --size BYTES       message body size (default 16; latency needs at least 8)
  -c, --confirm N        publisher-confirm window per producer; 0 = no confirms (default 0)
  -q, --prefetch N       basic.qos prefetch count per consumer; 0 = unlimited (default 1000)
  -A, --multi-ack N      ack every N-th delivery with multiple=true; 1 = ack each (default 1);
                         at most the prefetch count unless that is 0 (or with --auto-ack)
  -a, --auto-ack         consume with no-ack (the broker does not wait for acks)
  -r, --rate N           messages/s per producer; 0 = as fast as possible (default 0)
  -z, --duration SECS    stop after SECS seconds, > 0 (default 10 unless a message count is given)
  -C, --pmessages N      each producer stops after N messages
  -D, --cmessages N      each consumer stops after N messages
                         The run ends at the first limit reached: the duration; all producers done
                         and everything received (or 5 s without a delivery); without -C, all
                         consumers done; every producer and consumer failed.
  -u, --queue NAME       queue, declared unless --predeclared, never deleted (default: a fresh
                         coney-perf-<pid>-<ms>, declared with x-expires 60 s, deleted at the end)
  -e, --exchange NAME    exchange to publish to, declared and bound unless --predeclared, never
                         deleted (default: the default exchange \"\")
  -t, --type KIND        exchange type to declare (default direct)
  -k, --routing-key KEY  routing key (default: the queue name)
      --mandatory        publish with mandatory=true; unroutable messages come back and are
                         counted as returned (PerfTest's -f mandatory)
      --persistent       delivery-mode 2
      --durable          declare a durable queue (and exchange)
      --predeclared      declare nothing (queue and exchange exist)
      --keep             do not delete the fresh queue at the end (and declare it without x-expires)
  -i, --interval SECS    seconds between report lines, > 0, at least 0.1 (default 1)
      --json             one JSON object per report line and for the summary
  -h, --help             this text

Ctrl-C ends the process at once, without cleanup: x-expires removes the fresh queue a minute later.
EXIT STATUS: 0 done; 1 a connection, declaration, producer or consumer failed (errors on stderr,
after the summary); 2 bad options.
";

/// `x-expires` of the fresh queue: the broker deletes it this long after its last use (a backstop
/// for a run that dies without cleanup). The main loop redeclares it every `RENEW` while it runs.
const QUEUE_EXPIRES_MS: i32 = 60_000;
const RENEW: Duration = Duration::from_secs(20);
/// Producers done but not everything received: the consumers get this long without a delivery.
const IDLE_LIMIT: Duration = Duration::from_secs(5);

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
        for line in e.lines() {
            eprintln!("coney_perf: {line}");
        }
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
    mandatory: bool,
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
            mandatory: false,
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
                "-c" | "--confirm" => {
                    o.confirm = num(&flag, &value()?)?;
                    // The library's own limit (ConnectionConfig::validate): refuse it here, before
                    // anything is declared.
                    if o.confirm > ConnectionConfig::MAX_CAPACITY {
                        return Err(format!(
                            "{flag}: {} is more than the largest confirm window, {}",
                            o.confirm,
                            ConnectionConfig::MAX_CAPACITY
                        ));
                    }
                }
                "-q" | "--prefetch" => o.prefetch = num(&flag, &value()?)?,
                "-A" | "--multi-ack" => o.multi_ack = num::<u64>(&flag, &value()?)?.max(1),
                "-a" | "--auto-ack" => o.auto_ack = true,
                "-r" | "--rate" => o.rate = num(&flag, &value()?)?,
                "-z" | "--duration" => o.duration = Some(secs(&flag, &value()?)?),
                "-C" | "--pmessages" => o.pmessages = Some(num(&flag, &value()?)?),
                "-D" | "--cmessages" => o.cmessages = Some(num(&flag, &value()?)?),
                "-u" | "--queue" => o.queue = Some(value()?),
                "-e" | "--exchange" => o.exchange = value()?,
                "-t" | "--type" => o.exchange_type = value()?,
                "-k" | "--routing-key" => o.routing_key = Some(value()?),
                "--mandatory" => o.mandatory = true,
                "--persistent" => o.persistent = true,
                "--durable" => o.durable = true,
                "--predeclared" => o.predeclared = true,
                "--keep" => o.keep = true,
                "-i" | "--interval" => {
                    o.interval = secs(&flag, &value()?)?.max(Duration::from_millis(100))
                }
                "--json" => o.json = true,
                other => return Err(format!("unknown option {other}")),
            }
        }
        if o.producers == 0 && o.consumers == 0 {
            return Err("nothing to do: no producers and no consumers".into());
        }
        // The broker stops at `prefetch` unacknowledged deliveries: a consumer waiting for a later
        // one to ack them all would wait for ever.
        if !o.auto_ack && o.prefetch > 0 && o.multi_ack > u64::from(o.prefetch) {
            return Err(format!(
                "--multi-ack {} is more than --prefetch {}: the broker stops at {} unacknowledged \
                 deliveries, so the consumer would never reach the {}th to ack",
                o.multi_ack, o.prefetch, o.prefetch, o.multi_ack
            ));
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

/// A positive, finite number of seconds (at most 10^9, so deadlines made from it cannot overflow).
fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = num(flag, v)?;
    if !(s > 0.0 && s <= 1e9) {
        return Err(format!(
            "{flag}: {v:?} is not a number of seconds above 0 (and at most 1e9)"
        ));
    }
    Duration::try_from_secs_f64(s).map_err(|e| format!("{flag}: {v:?}: {e}"))
}

/// Counters shared by every task; the reporter reads them.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    returned: AtomicU64,
    received: AtomicU64,
    /// The received total that ends a `-C` run without `-D` (`u64::MAX`: none).
    expected: u64,
    producers_done: AtomicUsize,
    producers_failed: AtomicUsize,
    consumers_done: AtomicUsize,
    consumers_failed: AtomicUsize,
    /// When the last producer finished.
    producers_end: Mutex<Option<Instant>>,
    errors: Mutex<Vec<String>>,
    /// Wakes the main loop: a task finished, or the consumers received `expected` messages.
    wake: Notify,
    /// One histogram pair per consumer (uncontended: the reporter takes the lock once per interval).
    latencies: Mutex<Vec<Arc<Mutex<Latencies>>>>,
}

impl Stats {
    /// Records the end of a producer (`producer`) or consumer task and wakes the main loop.
    fn finished(&self, producer: bool, i: usize, result: Result<(), String>) {
        let role = if producer { "producer" } else { "consumer" };
        if let Err(e) = result {
            self.errors.lock().unwrap().push(format!("{role} {i}: {e}"));
            let failed = if producer {
                &self.producers_failed
            } else {
                &self.consumers_failed
            };
            failed.fetch_add(1, Ordering::AcqRel);
        }
        if producer {
            self.producers_done.fetch_add(1, Ordering::AcqRel);
        } else {
            self.consumers_done.fetch_add(1, Ordering::AcqRel);
        }
        self.wake.notify_one();
    }

    /// A producer is done: its last publish (and confirm) completed and its channel closed (which
    /// waits until the broker took every publish), or it failed.
    fn producer_ended(&self) {
        let now = Instant::now();
        let mut end = self.producers_end.lock().unwrap();
        *end = Some(end.map_or(now, |e| e.max(now)));
    }
}

#[derive(Default)]
struct Latencies {
    interval: Histogram,
    total: Histogram,
    /// Wall-clock time (ns since the Unix epoch) of this consumer's latest delivery; 0 = none yet.
    last_ns: u64,
}

async fn run(opts: Opts) -> Result<(), String> {
    let opts = Arc::new(opts);
    let fresh = opts.queue.is_none();
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
    let setup_channel = match setup.open_channel().await {
        Ok(channel) => channel,
        Err(e) => {
            let _ = setup.close().await;
            return Err(e.to_string());
        }
    };
    // Set once the fresh queue exists: from then on every path below deletes it (unless --keep).
    let mut created = false;
    let mut result = async {
        if !opts.predeclared {
            declare(
                &setup_channel,
                &opts,
                &queue,
                &routing_key,
                fresh,
                &mut created,
            )
            .await?;
        }
        let renew = created && !opts.keep;
        // A task of its own, so that even a panic (say, printing to a closed stdout) reaches the
        // cleanup below.
        let load = load(
            opts.clone(),
            config.clone(),
            setup_channel.clone(),
            queue.clone(),
            routing_key.clone(),
            renew,
        );
        tokio::spawn(load)
            .await
            .unwrap_or_else(|e| Err(format!("the run failed: {e}")))
    }
    .await;
    if created && !opts.keep {
        if let Err(e) = delete_queue(&setup, &setup_channel, &config, &queue).await {
            let e = format!("deleting queue {queue}: {e} (x-expires removes it in a minute)");
            result = Err(match result {
                Ok(()) => e,
                Err(r) => format!("{r}\n{e}"),
            });
        }
    }
    let _ = setup.close().await;
    result
}

/// Starts the producers and consumers, reports until the run ends, stops them and prints the summary.
/// `Err` lists what failed (startup, or any producer or consumer).
async fn load(
    opts: Arc<Opts>,
    config: ConnectionConfig,
    setup_channel: Channel,
    queue: String,
    routing_key: String,
    renew: bool,
) -> Result<(), String> {
    let expected = opts
        .pmessages
        .filter(|_| opts.cmessages.is_none() && opts.producers > 0)
        .map_or(u64::MAX, |n| n.saturating_mul(opts.producers as u64));
    let stats = Arc::new(Stats {
        expected,
        ..Default::default()
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    let spawned: Result<(), String> = async {
        for i in 0..opts.consumers {
            let conn = Connection::connect_with(
                config
                    .clone()
                    .with_connection_name(format!("coney_perf consumer {i}")),
            )
            .await
            .map_err(|e| format!("consumer {i}: connecting: {e}"))?;
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
            let stats = stats.clone();
            consumers.push(tokio::spawn(async move {
                stats.finished(false, i, task.await);
            }));
        }
        for i in 0..opts.producers {
            let window = opts.confirm.max(1);
            let conn = Connection::connect_with(
                config
                    .clone()
                    .with_confirm_window(window)
                    .with_connection_name(format!("coney_perf producer {i}")),
            )
            .await
            .map_err(|e| format!("producer {i}: connecting: {e}"))?;
            let task = produce(
                conn,
                opts.clone(),
                routing_key.clone(),
                stats.clone(),
                stop_rx.clone(),
            );
            let stats = stats.clone();
            producers.push(tokio::spawn(async move {
                stats.finished(true, i, task.await);
            }));
        }
        Ok(())
    }
    .await;
    if let Err(e) = spawned {
        // Stop what already runs before the caller cleans up.
        let _ = stop_tx.send(true);
        for task in consumers.into_iter().chain(producers) {
            let _ = task.await;
        }
        return Err(e);
    }

    let started = Instant::now();
    let started_ns = now_nanos();
    let cpu_start = process_cpu();
    let mut reporter = Reporter::new(opts.clone(), stats.clone(), started);
    let tokio_started = tokio::time::Instant::from_std(started);
    let mut ticker = tokio::time::interval_at(tokio_started + opts.interval, opts.interval);
    let mut renew_timer = tokio::time::interval_at(tokio_started + RENEW, RENEW);
    let deadline = opts.duration.map(|d| tokio_started + d);
    // The 5 s wait for the rest applies to our own producers, or (as before) to a count-limited run.
    let drain = opts.producers > 0 || opts.duration.is_none();
    loop {
        let producers_done = stats.producers_done.load(Ordering::Acquire) == opts.producers;
        let consumers_done = stats.consumers_done.load(Ordering::Acquire) == opts.consumers;
        let failed = stats.producers_failed.load(Ordering::Acquire)
            + stats.consumers_failed.load(Ordering::Acquire);
        let all_failed = failed == opts.producers + opts.consumers;
        let now = tokio::time::Instant::now();
        let time_up = deadline.is_some_and(|d| now >= d);
        let all_received = stats.received.load(Ordering::Relaxed) >= stats.expected;
        // Producers finished, consumers not: they get until 5 s after the last delivery (or the
        // last producer's end, whichever is later).
        let idle_deadline = (drain && producers_done && !consumers_done).then(|| {
            let last_arrival = reporter
                .last_arrival_ns()
                .map(|ns| started + Duration::from_nanos(ns.saturating_sub(started_ns)));
            let producers_end = *stats.producers_end.lock().unwrap();
            let since = [Some(started), last_arrival, producers_end]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(started);
            tokio::time::Instant::from_std(since + IDLE_LIMIT)
        });
        let idle = idle_deadline.is_some_and(|d| now >= d);
        let done = all_failed
            || time_up
            || (producers_done && consumers_done)
            || (drain && producers_done && (all_received || idle))
            // Without -C the producers never stop on their own: the consumers decide.
            || (opts.consumers > 0 && consumers_done && opts.pmessages.is_none());
        if done {
            break;
        }
        tokio::select! {
            biased;
            _ = ticker.tick() => reporter.line(),
            () = stats.wake.notified() => {}
            () = sleep_until_opt(deadline) => {}
            () = sleep_until_opt(idle_deadline) => {}
            _ = renew_timer.tick(), if renew => {
                // Redeclaring renews the x-expires lease (a queue without consumers would expire).
                let _ = declare_queue(&setup_channel, &opts, &queue, true).await;
            }
        }
    }
    // The measured window ends here: counters and elapsed at the same instant.
    let counters = reporter.counters();
    let end = Instant::now();
    // Which side finished on its own, before the stop.
    let producers_end = *stats.producers_end.lock().unwrap();
    let producers_finished = stats.producers_done.load(Ordering::Acquire) == opts.producers;
    let consumers_finished = stats.consumers_done.load(Ordering::Acquire) == opts.consumers;
    let _ = stop_tx.send(true);
    let cpu = process_cpu()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    if end.duration_since(reporter.last.0) >= opts.interval / 2 {
        reporter.line();
    }
    let elapsed = end.duration_since(started);
    // Active time of each side: producers that all finished before the end stopped sending then;
    // consumers count up to their last delivery when nothing more was coming (idle time excluded).
    let sent_active = match producers_end {
        Some(t) if producers_finished && opts.producers > 0 => t.duration_since(started),
        _ => elapsed,
    }
    .min(elapsed);
    let last_arrival = reporter
        .last_arrival_ns()
        .map(|ns| Duration::from_nanos(ns.saturating_sub(started_ns)));
    let received_active = match last_arrival {
        Some(t) if consumers_finished || (opts.producers > 0 && producers_finished) => t,
        _ => elapsed,
    }
    .min(elapsed);
    for task in producers.into_iter().chain(consumers) {
        if let Err(e) = task.await {
            stats.errors.lock().unwrap().push(format!("task: {e}"));
        }
    }
    let errors = std::mem::take(&mut *stats.errors.lock().unwrap());
    reporter.summary(
        &Window {
            elapsed,
            sent_active,
            received_active,
            counters,
            errors: errors.len(),
        },
        cpu,
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Declares the queue; the fresh one (`fresh`) with `x-expires` unless `--keep`.
async fn declare_queue(
    channel: &Channel,
    opts: &Opts,
    queue: &str,
    fresh: bool,
) -> Result<(), String> {
    let options = QueueDeclareOptions {
        durable: opts.durable,
        ..Default::default()
    };
    let mut arguments = FieldTable::new();
    if fresh && !opts.keep {
        arguments = arguments.with("x-expires", QUEUE_EXPIRES_MS);
    }
    channel
        .queue_declare(queue, options, arguments)
        .await
        .map(|_| ())
        .map_err(|e| format!("queue.declare {queue}: {e}"))
}

async fn declare(
    channel: &Channel,
    opts: &Opts,
    queue: &str,
    routing_key: &str,
    fresh: bool,
    created: &mut bool,
) -> Result<(), String> {
    declare_queue(channel, opts, queue, fresh).await?;
    *created = fresh;
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

/// Deletes the fresh queue: on the setup channel, or, if an error closed that (or its connection),
/// on a new channel or a new connection.
async fn delete_queue(
    setup: &Connection,
    channel: &Channel,
    config: &ConnectionConfig,
    queue: &str,
) -> Result<(), String> {
    if channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
        .is_ok()
    {
        return Ok(());
    }
    if let Ok(channel) = setup.open_channel().await {
        if channel
            .queue_delete(queue, QueueDeleteOptions::default())
            .await
            .is_ok()
        {
            let _ = channel.close().await;
            return Ok(());
        }
    }
    let conn = Connection::connect_with(config.clone().with_connection_name("coney_perf cleanup"))
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        conn.open_channel()
            .await?
            .queue_delete(queue, QueueDeleteOptions::default())
            .await
    }
    .await;
    let _ = conn.close().await;
    result.map(|_| ()).map_err(|e| e.to_string())
}

async fn produce(
    conn: Connection,
    opts: Arc<Opts>,
    routing_key: String,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let result = produce_on(&conn, &opts, &routing_key, &stats, stop).await;
    stats.producer_ended();
    let _ = conn.close().await;
    result.map_err(|e| e.to_string())
}

/// Whether the stop was sent (or can no longer be: the sender is gone). An atomic load.
fn stop_sent(stop: &watch::Receiver<bool>) -> bool {
    !matches!(stop.has_changed(), Ok(false))
}

async fn produce_on(
    conn: &Connection,
    opts: &Opts,
    routing_key: &str,
    stats: &Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), coney::Error> {
    let channel = conn.open_channel().await?;
    if opts.confirm > 0 {
        channel.confirm_select().await?;
    }
    // In confirm mode a return resolves the publish's confirm; without, returns come to a listener.
    let mut returns = (opts.mandatory && opts.confirm == 0).then(|| {
        let mut returns = channel.returned_messages(4096);
        let stats = stats.clone();
        AbortOnDrop(tokio::spawn(async move {
            while returns.next().await.is_some() {
                stats.returned.fetch_add(1, Ordering::Relaxed);
            }
        }))
    });
    let mut properties = BasicProperties::default();
    if opts.persistent {
        properties = properties.with_delivery_mode(2u8);
    }
    let options = BasicPublishOptions {
        mandatory: opts.mandatory,
        ..Default::default()
    };
    // The window itself can be huge (up to the library's limit): do not allocate it up front.
    let mut pending: VecDeque<PublishConfirm> = VecDeque::with_capacity(opts.confirm.min(4096));
    let limit = opts.pmessages.unwrap_or(u64::MAX);
    let pace = (opts.rate > 0).then(|| Duration::from_secs_f64(1.0 / opts.rate as f64));
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    while sent < limit {
        if stop_sent(&stop) {
            break;
        }
        if let Some(pace) = pace {
            let due = started + pace.mul_f64(sent as f64);
            // Sleeping costs a timer wheel tick (1 ms): only sleep when that far ahead.
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
        let confirm = channel
            .basic_publish(
                &opts.exchange,
                routing_key,
                options,
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
    if returns.is_some() {
        // Returns for the publishes above come before the reply to a later method on the channel
        // (the closing channel drops them): a harmless round trip lets them all reach the listener.
        channel.basic_qos(0, Default::default()).await?;
    }
    let result = channel.close().await;
    if let Some(AbortOnDrop(listener)) = &mut returns {
        // The listener ends once the closed channel's returns are all counted.
        let _ = tokio::time::timeout(Duration::from_secs(1), listener).await;
    }
    result
}

/// A task aborted when this is dropped (also on an early `?` return).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    // With a backlog `consumer.next()` is always ready and the biased select below never polls the
    // stop: check the flag (an atomic load) every delivery too.
    let stop_flag = stop.clone();
    let mut stopped = pin!(stop.wait_for(|s| *s));
    let mut received = 0u64;
    let mut unacked = None;
    while received < limit {
        if stop_sent(&stop_flag) {
            break;
        }
        let delivery = tokio::select! {
            biased;
            d = consumer.next() => match d {
                Some(d) => d?,
                None => break,
            },
            _ = &mut stopped => break,
        };
        received += 1;
        if stats.received.fetch_add(1, Ordering::Relaxed) + 1 == stats.expected {
            stats.wake.notify_one();
        }
        let now = now_nanos();
        {
            let mut l = latencies.lock().unwrap();
            if delivery.body.len() >= 8 {
                let sent = u64::from_be_bytes(delivery.body[..8].try_into().expect("8 bytes"));
                let latency = now.saturating_sub(sent);
                l.interval.record(latency);
                l.total.record(latency);
            }
            l.last_ns = now;
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

/// The measured run for the summary: counters read at its end, and how long each side was active.
struct Window {
    elapsed: Duration,
    sent_active: Duration,
    received_active: Duration,
    counters: [u64; 5],
    errors: usize,
}

/// Prints a line per interval and the summary.
struct Reporter {
    opts: Arc<Opts>,
    stats: Arc<Stats>,
    started: Instant,
    last: (Instant, [u64; 5]),
}

impl Reporter {
    fn new(opts: Arc<Opts>, stats: Arc<Stats>, started: Instant) -> Reporter {
        Reporter {
            opts,
            stats,
            started,
            last: (started, [0; 5]),
        }
    }

    /// Sent, confirmed, nacked, returned, received.
    fn counters(&self) -> [u64; 5] {
        let s = &self.stats;
        [
            s.sent.load(Ordering::Relaxed),
            s.confirmed.load(Ordering::Relaxed),
            s.nacked.load(Ordering::Relaxed),
            s.returned.load(Ordering::Relaxed),
            s.received.load(Ordering::Relaxed),
        ]
    }

    /// Wall-clock time (ns since the Unix epoch) of the latest delivery to any consumer.
    fn last_arrival_ns(&self) -> Option<u64> {
        let latest = self
            .stats
            .latencies
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.lock().unwrap().last_ns)
            .max()
            .unwrap_or(0);
        (latest > 0).then_some(latest)
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
        let secs = now.duration_since(self.last.0).as_secs_f64().max(1e-9);
        let rate = |i: usize| counters[i].saturating_sub(self.last.1[i]) as f64 / secs;
        let lat = self.take_interval_latencies();
        let t = now.duration_since(self.started).as_secs_f64();
        let (p50, p99) = (lat.percentile(0.5), lat.percentile(0.99));
        if self.opts.json {
            println!(
                "{{\"type\":\"interval\",\"time_s\":{t:.3},\"sent_per_s\":{:.0},\"confirmed_per_s\":{:.0},\
                 \"nacked_per_s\":{:.0},\"returned_per_s\":{:.0},\"received_per_s\":{:.0},\
                 \"latency_p50_us\":{},\"latency_p99_us\":{}}}",
                rate(0),
                rate(1),
                rate(2),
                rate(3),
                rate(4),
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
            let returns = if rate(3) > 0.0 {
                format!(", returned {:.0}/s", rate(3))
            } else {
                String::new()
            };
            println!(
                "time {t:6.1}s, sent {:.0}/s{confirms}{nacks}{returns}, received {:.0}/s, latency p50/p99 {}/{}",
                rate(0),
                rate(4),
                human_us(p50),
                human_us(p99),
            );
        }
        self.last = (now, counters);
    }

    fn summary(&self, w: &Window, cpu: Option<Duration>) {
        let [sent, confirmed, nacked, returned, received] = w.counters;
        let mut lat = Histogram::default();
        for l in self.stats.latencies.lock().unwrap().iter() {
            lat.merge(&l.lock().unwrap().total);
        }
        let secs = w.elapsed.as_secs_f64();
        let sent_secs = w.sent_active.as_secs_f64().max(1e-9);
        let received_secs = w.received_active.as_secs_f64().max(1e-9);
        let per_s = |n: u64, secs: f64| n as f64 / secs;
        let mb = |n: u64, secs: f64| n as f64 * self.opts.size as f64 / secs / 1e6;
        let cpu_us_per_msg = cpu.map(|c| c.as_secs_f64() * 1e6 / (sent + received).max(1) as f64);
        let p = |q| lat.percentile(q);
        if self.opts.json {
            println!(
                "{{\"type\":\"summary\",\"duration_s\":{secs:.3},\"producers\":{},\"consumers\":{},\"size\":{},\
                 \"confirm_window\":{},\"prefetch\":{},\"sent\":{sent},\"confirmed\":{confirmed},\"nacked\":{nacked},\
                 \"returned\":{returned},\"received\":{received},\"sent_per_s\":{:.0},\"received_per_s\":{:.0},\
                 \"sent_mb_per_s\":{:.2},\"received_mb_per_s\":{:.2},\"latency_p50_us\":{},\"latency_p95_us\":{},\
                 \"latency_p99_us\":{},\"latency_max_us\":{},\"cpu_s\":{},\"cpu_us_per_msg\":{},\
                 \"sent_active_s\":{:.3},\"received_active_s\":{:.3},\"errors\":{}}}",
                self.opts.producers,
                self.opts.consumers,
                self.opts.size,
                self.opts.confirm,
                self.opts.prefetch,
                per_s(sent, sent_secs),
                per_s(received, received_secs),
                mb(sent, sent_secs),
                mb(received, received_secs),
                json_us(p(0.5)),
                json_us(p(0.95)),
                json_us(p(0.99)),
                json_us(lat.max()),
                cpu.map_or("null".into(), |c| format!("{:.3}", c.as_secs_f64())),
                cpu_us_per_msg.map_or("null".into(), |c| format!("{c:.3}")),
                w.sent_active.as_secs_f64(),
                w.received_active.as_secs_f64(),
                w.errors,
            );
            return;
        }
        // Name the active time when it is noticeably shorter than the run.
        let over = |active: f64| {
            if secs - active > 0.01 * secs {
                format!(", over {active:.3} s")
            } else {
                String::new()
            }
        };
        println!("summary: {secs:.1} s");
        println!(
            "  sent     {sent} ({:.0} msg/s, {:.2} MB/s{})",
            per_s(sent, sent_secs),
            mb(sent, sent_secs),
            over(sent_secs)
        );
        if self.opts.confirm > 0 {
            println!(
                "  confirmed {confirmed} ({:.0} msg/s), nacked {nacked}, returned {returned}",
                per_s(confirmed, sent_secs)
            );
        } else if self.opts.mandatory {
            println!("  returned {returned}");
        }
        println!(
            "  received {received} ({:.0} msg/s, {:.2} MB/s{})",
            per_s(received, received_secs),
            mb(received, received_secs),
            over(received_secs)
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
        if w.errors > 0 {
            println!("  errors   {} (on stderr)", w.errors);
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
