//! coney vs lapin vs amqprs: the same scenarios, one process, one table.
//!
//! ```text
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- [--quick] [--secs 2] [--runs 3]
//!     [--only fake-deliver] [--libs coney,amqprs,floor] [--broker 127.0.0.1:5672] [--no-real] [--no-fake]
//! ```
//!
//! Against the real broker (guest/guest): publish without confirms, publish with confirms (window 1000),
//! consume a pre-filled queue (prefetch 1000, one ack per message), request/reply round trips. Against the
//! fake broker in `fake_broker.rs`: deliveries parsed, publishes sunk (with and without confirms). And two
//! yardsticks: the `floor` client (`clients/floor.rs`, blocking sockets, real-broker scenarios only) for
//! what the broker itself allows, and the raw loopback socket as the ceiling of the fake-broker streams.
//! Each scenario runs `--runs` times per library, libraries interleaved; the table shows medians. Progress
//! goes to stderr, the table (markdown) to stdout.

mod clients;
mod cpu;
mod fake_broker;
mod meter;

use std::{fmt::Write as _, time::Duration};

use coney::{
    options::{QueueDeclareOptions, QueueDeleteOptions},
    Channel, Connection, FieldTable,
};

use crate::{
    fake_broker::{DeliveryStream, FakeBroker, Mode},
    meter::{Endpoint, Meter},
};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lib {
    Coney,
    Lapin,
    Amqprs,
    /// The broker's floor on real-broker scenarios: blocking sockets, no runtime (`clients/floor.rs`).
    Floor,
    /// The raw socket baseline (no library).
    Raw,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::Coney => "coney",
            Lib::Lapin => "lapin",
            Lib::Amqprs => "amqprs",
            Lib::Floor => "floor",
            Lib::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Publish,
    PublishConfirm,
    Consume,
    RoundTrip,
    FakeDeliver,
    FakeDeliverNoAck,
    FakePublish,
    FakePublishConfirm,
    RawRead,
    RawWrite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Publish => "publish",
            Kind::PublishConfirm => "publish-confirm",
            Kind::Consume => "consume",
            Kind::RoundTrip => "round-trip",
            Kind::FakeDeliver => "fake-deliver",
            Kind::FakeDeliverNoAck => "fake-deliver-noack",
            Kind::FakePublish => "fake-publish",
            Kind::FakePublishConfirm => "fake-publish-confirm",
            Kind::RawRead => "raw-read",
            Kind::RawWrite => "raw-write",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Publish => "publish, no confirms",
            Kind::PublishConfirm => "publish, confirms (window 1000)",
            Kind::Consume => "consume, prefetch 1000, ack each",
            Kind::RoundTrip => "request/reply round trip",
            Kind::FakeDeliver => "deliveries parsed, prefetch 1000, ack each",
            Kind::FakeDeliverNoAck => "deliveries parsed, no-ack (broker not paced)",
            Kind::FakePublish => "publishes sunk, no confirms",
            Kind::FakePublishConfirm => "publishes sunk, confirms (window 1000)",
            Kind::RawRead => "raw loopback read of the delivery stream",
            Kind::RawWrite => "raw loopback write of the publish stream",
        }
    }

    fn is_raw(self) -> bool {
        matches!(self, Kind::RawRead | Kind::RawWrite)
    }

    fn is_fake(self) -> bool {
        matches!(
            self,
            Kind::FakeDeliver
                | Kind::FakeDeliverNoAck
                | Kind::FakePublish
                | Kind::FakePublishConfirm
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    kind: Kind,
    size: usize,
}

/// One run's outcome.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    msgs: u64,
    secs: f64,
    cpu_secs: f64,
    /// Round trips only.
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.msgs as f64 / self.secs
    }

    fn cpu_us_per_msg(&self) -> f64 {
        self.cpu_secs * 1e6 / self.msgs.max(1) as f64
    }
}

struct Opts {
    quick: bool,
    secs: f64,
    runs: usize,
    only: Vec<String>,
    libs: Vec<Lib>,
    broker: Endpoint,
    real: bool,
    fake: bool,
    sizes: Option<Vec<usize>>,
    /// Run the clients on a current-thread runtime instead of two worker threads.
    current_thread: bool,
    /// Run the clients in a task spawned on the runtime (on a worker thread, as a server's consumers
    /// and publishers usually run) instead of in `block_on` on the main thread.
    in_task: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        secs: 2.0,
        runs: 3,
        only: Vec::new(),
        libs: vec![Lib::Coney, Lib::Lapin, Lib::Amqprs, Lib::Floor],
        broker: Endpoint {
            host: "127.0.0.1".into(),
            port: 5672,
        },
        real: true,
        fake: true,
        sizes: None,
        current_thread: false,
        in_task: false,
    };
    let mut secs_given = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--secs" => {
                o.secs = value()?.parse().map_err(|_| "--secs: a number")?;
                secs_given = true;
            }
            "--runs" => o.runs = value()?.parse().map_err(|_| "--runs: a number")?,
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "--libs" => {
                o.libs = value()?
                    .split(',')
                    .map(|l| match l {
                        "coney" => Ok(Lib::Coney),
                        "lapin" => Ok(Lib::Lapin),
                        "amqprs" => Ok(Lib::Amqprs),
                        "floor" => Ok(Lib::Floor),
                        other => Err(format!("unknown library {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--sizes" => {
                o.sizes = Some(
                    value()?
                        .split(',')
                        .map(parse_size)
                        .collect::<Result<_, _>>()?,
                )
            }
            "--broker" => {
                let v = value()?;
                let (host, port) = v.rsplit_once(':').ok_or("--broker HOST:PORT")?;
                o.broker = Endpoint {
                    host: host.into(),
                    port: port.parse().map_err(|_| "--broker: bad port")?,
                };
            }
            "--no-real" => o.real = false,
            "--no-fake" => o.fake = false,
            "--current-thread" => o.current_thread = true,
            "--in-task" => o.in_task = true,
            "-h" | "--help" => {
                println!(
                    "usage: coney-compare [--quick] [--secs S] [--runs N] [--only KIND,..] \
                     [--libs coney,lapin,amqprs,floor] [--sizes 16,1k,64k,1m] [--broker HOST:PORT] [--no-real] [--no-fake] \
                     [--current-thread] [--in-task]\n\
                     kinds: publish publish-confirm consume round-trip fake-deliver fake-publish \
                     fake-publish-confirm raw-read raw-write"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.quick && !secs_given {
        o.secs = 1.0;
    }
    Ok(o)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.to_ascii_lowercase();
    let (digits, unit) = match s.strip_suffix('m') {
        Some(d) => (d, MIB),
        None => match s.strip_suffix('k') {
            Some(d) => (d, KIB),
            None => (s.as_str(), 1),
        },
    };
    digits
        .parse::<usize>()
        .map(|n| n * unit)
        .map_err(|_| format!("bad size {s}"))
}

fn cases(o: &Opts) -> Vec<Case> {
    let (real_sizes, deliver_sizes, publish_sizes): (Vec<usize>, Vec<usize>, Vec<usize>) =
        if o.quick {
            (vec![16], vec![16, MIB], vec![16])
        } else {
            (
                vec![16, KIB, 64 * KIB, MIB],
                vec![16, KIB, MIB],
                vec![16, KIB],
            )
        };
    let pick = |default: &Vec<usize>| o.sizes.clone().unwrap_or_else(|| default.clone());
    let mut out = Vec::new();
    if o.real {
        for kind in [
            Kind::Publish,
            Kind::PublishConfirm,
            Kind::Consume,
            Kind::RoundTrip,
        ] {
            for size in pick(&real_sizes) {
                out.push(Case { kind, size });
            }
        }
    }
    if o.fake {
        for (kind, sizes) in [
            (Kind::FakeDeliver, &deliver_sizes),
            (Kind::FakeDeliverNoAck, &vec![16]),
            (Kind::RawRead, &deliver_sizes),
            (Kind::FakePublish, &publish_sizes),
            (Kind::FakePublishConfirm, &vec![16]),
            (Kind::RawWrite, &publish_sizes),
        ] {
            for size in pick(sizes) {
                out.push(Case { kind, size });
            }
        }
    }
    out.retain(|c| o.only.is_empty() || o.only.iter().any(|k| k == c.kind.name()));
    out
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("coney-compare: {e}");
            std::process::exit(2);
        }
    };
    let runtime = if opts.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("runtime");
    if opts.in_task {
        runtime
            .block_on(async { tokio::spawn(run(opts)).await })
            .expect("harness task");
    } else {
        runtime.block_on(run(opts));
    }
}

async fn run(opts: Opts) {
    let load_before = loadavg();
    let ticks_before = cpu_ticks();
    let started = std::time::Instant::now();
    let admin = if opts.real {
        match Connection::connect(&opts.broker.uri()).await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "no broker at {}:{} ({e}); real-broker scenarios skipped",
                    opts.broker.host, opts.broker.port
                );
                None
            }
        }
    } else {
        None
    };
    let broker_version = admin.as_ref().map(|c| {
        c.server_properties()
            .get("version")
            .and_then(|v| match v {
                coney::FieldValue::LongStr(s) => s.as_str().map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|| "?".into())
    });
    let admin_channel = match &admin {
        Some(c) => Some(c.open_channel().await.expect("admin channel")),
        None => None,
    };
    let mut results: Vec<(Case, LibSamples)> = Vec::new();
    for case in cases(&opts) {
        if !case.kind.is_fake() && !case.kind.is_raw() && admin_channel.is_none() {
            continue;
        }
        let libs: Vec<Lib> = if case.kind.is_raw() {
            vec![Lib::Raw]
        } else {
            section_libs(&opts.libs, case.kind)
        };
        let mut per_lib: LibSamples = libs.iter().map(|&l| (l, Vec::new())).collect();
        for run in 0..opts.runs {
            for (lib, samples) in per_lib.iter_mut() {
                let limit = Duration::from_secs_f64(opts.secs * 4.0 + 60.0);
                let one = run_case(case, *lib, &opts, admin_channel.as_ref());
                let sample = match tokio::time::timeout(limit, one).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {limit:?}")),
                };
                match &sample {
                    Ok(s) => eprintln!(
                        "{:>22} {:>6} {:>6} run {}: {:>12.0} msg/s {:>9.2} MB/s {:>8.2} µs CPU/msg{}",
                        case.kind.name(),
                        size_name(case.size),
                        lib.name(),
                        run + 1,
                        s.rate(),
                        s.rate() * case.size as f64 / 1e6,
                        s.cpu_us_per_msg(),
                        s.p50_us.map(|p| format!(" p50 {p:.0} µs")).unwrap_or_default()
                    ),
                    Err(e) => eprintln!(
                        "{:>22} {:>6} {:>6} run {}: FAILED {e}",
                        case.kind.name(),
                        size_name(case.size),
                        lib.name(),
                        run + 1
                    ),
                }
                samples.push(sample);
            }
        }
        results.push((case, per_lib));
    }
    if let Some(c) = admin {
        let _ = c.close().await;
    }
    print!(
        "{}",
        report(
            &opts,
            &results,
            broker_version,
            load_before,
            steal_share(ticks_before),
            started.elapsed()
        )
    );
}

async fn run_case(
    case: Case,
    lib: Lib,
    opts: &Opts,
    admin: Option<&Channel>,
) -> Result<Sample, String> {
    let secs = opts.secs;
    match case.kind {
        Kind::Publish | Kind::PublishConfirm => {
            let admin = admin.expect("real broker");
            let queue = unique("publish");
            // Bounded so a fast publisher cannot fill the broker's memory: the oldest messages are dropped.
            let args = FieldTable::new()
                .with("x-max-length", 100_000i64)
                .with("x-max-length-bytes", 64 * MIB as i64);
            declare(admin, &queue, args).await?;
            let window = if case.kind == Kind::PublishConfirm {
                1000
            } else {
                0
            };
            let mut meter = Meter::new(None);
            let ep = &opts.broker;
            let n = match lib {
                Lib::Coney => {
                    clients::coney::publish(ep, &queue, case.size, window, secs, &mut meter).await
                }
                Lib::Lapin => {
                    clients::lapin::publish(ep, &queue, case.size, window, secs, &mut meter).await
                }
                Lib::Amqprs => {
                    clients::amqprs::publish(ep, &queue, case.size, window, secs, &mut meter).await
                }
                Lib::Floor => {
                    clients::floor::publish(ep, &queue, case.size, window, secs, &mut meter).await
                }
                Lib::Raw => unreachable!(),
            };
            delete(admin, &queue).await;
            sample(n?, &meter)
        }
        Kind::Consume => {
            let admin = admin.expect("real broker");
            let queue = unique("consume");
            declare(admin, &queue, FieldTable::new()).await?;
            // Enough for the run at the rates seen here, bounded to 200 MiB of bodies.
            let count = (200 * MIB / case.size)
                .min((60_000.0 * secs) as usize)
                .max(50) as u64;
            prefill(admin, &queue, case.size, count).await?;
            let mut meter = Meter::new(None);
            let ep = &opts.broker;
            let limit = secs * 3.0;
            let n = match lib {
                Lib::Coney => {
                    clients::coney::consume(ep, &queue, count, limit, false, 1000, &mut meter).await
                }
                Lib::Lapin => {
                    clients::lapin::consume(ep, &queue, count, limit, false, 1000, &mut meter).await
                }
                Lib::Amqprs => {
                    clients::amqprs::consume(ep, &queue, count, limit, false, 1000, &mut meter)
                        .await
                }
                Lib::Floor => clients::floor::consume(ep, &queue, count, limit, &mut meter).await,
                Lib::Raw => unreachable!(),
            };
            delete(admin, &queue).await;
            sample(n?, &meter)
        }
        Kind::RoundTrip => {
            let admin = admin.expect("real broker");
            let requests = unique("rpc-requests");
            let replies = unique("rpc-replies");
            declare(admin, &requests, FieldTable::new()).await?;
            declare(admin, &replies, FieldTable::new()).await?;
            let mut meter = Meter::new(None);
            let ep = &opts.broker;
            let (size, max) = (case.size, 5000);
            let rtts = match lib {
                Lib::Coney => {
                    clients::coney::round_trip(ep, &requests, &replies, size, secs, max, &mut meter)
                        .await
                }
                Lib::Lapin => {
                    clients::lapin::round_trip(ep, &requests, &replies, size, secs, max, &mut meter)
                        .await
                }
                Lib::Amqprs => {
                    clients::amqprs::round_trip(
                        ep, &requests, &replies, size, secs, max, &mut meter,
                    )
                    .await
                }
                Lib::Floor => {
                    clients::floor::round_trip(ep, &requests, &replies, size, secs, max, &mut meter)
                        .await
                }
                Lib::Raw => unreachable!(),
            };
            delete(admin, &requests).await;
            delete(admin, &replies).await;
            let mut rtts = rtts?;
            rtts.sort();
            let mut s = sample(rtts.len() as u64, &meter)?;
            let pct = |q: f64| {
                let i = ((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1;
                rtts[i].as_secs_f64() * 1e6
            };
            if !rtts.is_empty() {
                s.p50_us = Some(pct(0.5));
                s.p99_us = Some(pct(0.99));
            }
            Ok(s)
        }
        Kind::FakeDeliver | Kind::FakeDeliverNoAck => {
            let fake = FakeBroker::start(Mode::Deliver { size: case.size });
            let ep = endpoint(&fake);
            let mut meter = Meter::new(Some(fake.clock));
            let no_ack = case.kind == Kind::FakeDeliverNoAck;
            let (q, all) = ("bench", u64::MAX);
            let n = match lib {
                Lib::Coney => {
                    clients::coney::consume(&ep, q, all, secs, no_ack, 1000, &mut meter).await
                }
                Lib::Lapin => {
                    clients::lapin::consume(&ep, q, all, secs, no_ack, 1000, &mut meter).await
                }
                Lib::Amqprs => {
                    clients::amqprs::consume(&ep, q, all, secs, no_ack, 1000, &mut meter).await
                }
                Lib::Floor | Lib::Raw => unreachable!(),
            };
            sample(n?, &meter)
        }
        Kind::FakePublish | Kind::FakePublishConfirm => {
            let fake = FakeBroker::start(Mode::Sink);
            let ep = endpoint(&fake);
            let mut meter = Meter::new(Some(fake.clock));
            let window = if case.kind == Kind::FakePublishConfirm {
                1000
            } else {
                0
            };
            let n = match lib {
                Lib::Coney => {
                    clients::coney::publish(&ep, "bench", case.size, window, secs, &mut meter).await
                }
                Lib::Lapin => {
                    clients::lapin::publish(&ep, "bench", case.size, window, secs, &mut meter).await
                }
                Lib::Amqprs => {
                    clients::amqprs::publish(&ep, "bench", case.size, window, secs, &mut meter)
                        .await
                }
                Lib::Floor | Lib::Raw => unreachable!(),
            };
            sample(n?, &meter)
        }
        Kind::RawRead => {
            let fake = FakeBroker::start(Mode::RawDeliverStream { size: case.size });
            let per = DeliveryStream::new(1, &"raw".into(), case.size).bytes_per_message();
            let mut meter = Meter::new(Some(fake.clock));
            meter.start();
            let bytes = fake_broker::raw_read(fake.addr, secs)
                .await
                .map_err(|e| e.to_string())?;
            meter.stop();
            sample(bytes / per as u64, &meter)
        }
        Kind::RawWrite => {
            let fake = FakeBroker::start(Mode::RawSink);
            let count = (256 * KIB / (case.size + 64)).clamp(1, 4096);
            let (chunk, per) = fake_broker::encoded_publishes(case.size, count);
            let mut meter = Meter::new(Some(fake.clock));
            meter.start();
            let bytes = fake_broker::raw_write(fake.addr, &chunk, secs)
                .await
                .map_err(|e| e.to_string())?;
            meter.stop();
            sample(bytes / per as u64, &meter)
        }
    }
}

fn endpoint(fake: &FakeBroker) -> Endpoint {
    Endpoint {
        host: fake.addr.ip().to_string(),
        port: fake.addr.port(),
    }
}

fn sample(msgs: u64, meter: &Meter) -> Result<Sample, String> {
    let (wall, cpu) = meter.result().ok_or("the run never started its meter")?;
    if msgs == 0 {
        return Err("no messages".into());
    }
    Ok(Sample {
        msgs,
        secs: wall.as_secs_f64(),
        cpu_secs: cpu.as_secs_f64(),
        p50_us: None,
        p99_us: None,
    })
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "coney-compare-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn declare(admin: &Channel, queue: &str, args: FieldTable) -> Result<(), String> {
    admin
        .queue_declare(queue, QueueDeclareOptions::default(), args)
        .await
        .map(drop)
        .map_err(|e| format!("declare {queue}: {e}"))
}

async fn delete(admin: &Channel, queue: &str) {
    if let Err(e) = admin
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
    {
        eprintln!("could not delete {queue}: {e}");
    }
}

/// Fills `queue` with `count` bodies of `size` bytes (untimed) and waits until the broker holds them all.
async fn prefill(admin: &Channel, queue: &str, size: usize, count: u64) -> Result<(), String> {
    let body = bytes::Bytes::from(vec![0u8; size]);
    for _ in 0..count {
        let no_confirm = admin
            .basic_publish(
                "",
                queue,
                Default::default(),
                Default::default(),
                body.clone(),
            )
            .await
            .map_err(|e| format!("prefill: {e}"))?;
        drop(no_confirm);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let ok = admin
            .queue_declare(queue, passive, FieldTable::new())
            .await
            .map_err(|e| format!("prefill check: {e}"))?;
        if u64::from(ok.message_count) >= count {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "prefill: {} of {count} messages after 60 s",
                ok.message_count
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= MIB && s % MIB == 0 => format!("{} MiB", s / MIB),
        s if s >= KIB && s % KIB == 0 => format!("{} KiB", s / KIB),
        s => format!("{s} B"),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of one library's runs of one case.
#[derive(Debug, Clone, Copy)]
struct Summary {
    rate: f64,
    cpu_us: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    ok_runs: usize,
}

fn summarize(samples: &[Result<Sample, String>]) -> Result<Summary, String> {
    let ok: Vec<Sample> = samples.iter().filter_map(|s| s.clone().ok()).collect();
    if ok.is_empty() {
        let why = samples
            .iter()
            .find_map(|s| s.clone().err())
            .unwrap_or_default();
        return Err(why);
    }
    Ok(Summary {
        rate: median(ok.iter().map(Sample::rate).collect()).expect("non-empty"),
        cpu_us: median(ok.iter().map(Sample::cpu_us_per_msg).collect()).expect("non-empty"),
        p50_us: median(ok.iter().filter_map(|s| s.p50_us).collect()),
        p99_us: median(ok.iter().filter_map(|s| s.p99_us).collect()),
        ok_runs: ok.len(),
    })
}

fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn cell(kind: Kind, size: usize, s: &Result<Summary, String>, runs: usize) -> String {
    let s = match s {
        Ok(s) => s,
        Err(e) => return format!("failed: {}", e.chars().take(60).collect::<String>()),
    };
    let partial = if s.ok_runs < runs {
        format!(" ({}/{runs} runs)", s.ok_runs)
    } else {
        String::new()
    };
    if kind == Kind::RoundTrip {
        return format!(
            "p50 {:.0} µs · p99 {:.0} µs · {:.1} µs CPU/rt{partial}",
            s.p50_us.unwrap_or(f64::NAN),
            s.p99_us.unwrap_or(f64::NAN),
            s.cpu_us
        );
    }
    format!(
        "{} msg/s · {:.1} MB/s · {:.2} µs CPU/msg{partial}",
        human_rate(s.rate),
        s.rate * size as f64 / 1e6,
        s.cpu_us
    )
}

fn ratio(kind: Kind, coney: &Result<Summary, String>, other: &Result<Summary, String>) -> String {
    let (Ok(c), Ok(o)) = (coney, other) else {
        return "-".into();
    };
    if kind == Kind::RoundTrip {
        return match (c.p50_us, o.p50_us) {
            (Some(a), Some(b)) => format!("{:.2}× p50", a / b),
            _ => "-".into(),
        };
    }
    format!(
        "{:.2}× rate, {:.2}× CPU",
        c.rate / o.rate,
        c.cpu_us / o.cpu_us
    )
}

/// Each library's samples of one case.
type LibSamples = Vec<(Lib, Vec<Result<Sample, String>>)>;
type Results = [(Case, LibSamples)];

fn report(
    opts: &Opts,
    results: &Results,
    broker_version: Option<String>,
    load_before: String,
    steal: String,
    took: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## coney vs lapin vs amqprs: {}", today());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- command: `cargo run --release --manifest-path benches/compare/Cargo.toml --{}{}`",
        if opts.quick { " --quick" } else { "" },
        if (opts.secs - if opts.quick { 1.0 } else { 2.0 }).abs() > 1e-9 {
            format!(" --secs {}", opts.secs)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "- {} run(s) of about {} s per library and scenario, libraries interleaved; medians; took {:.0} s; \
         clients on a tokio {}",
        opts.runs,
        opts.secs,
        took.as_secs_f64(),
        match (opts.current_thread, opts.in_task) {
            (true, false) => "current-thread runtime, in `block_on`",
            (true, true) => "current-thread runtime, in a spawned task",
            (false, false) => "2-worker multi-thread runtime, in `block_on` on the main thread",
            (false, true) => "2-worker multi-thread runtime, in a task spawned on a worker",
        }
    );
    let _ = writeln!(
        out,
        "- machine: {} CPU(s), {}; load average before {load_before}, after {}; {steal}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        loadavg()
    );
    if let Some(v) = broker_version {
        let _ = writeln!(
            out,
            "- real broker: RabbitMQ {v} at {}:{}",
            opts.broker.host, opts.broker.port
        );
    }
    let _ = writeln!(
        out,
        "- client CPU: process CPU time minus the fake broker thread's; µs per message (per round trip for \
         request/reply); ratios are coney ÷ other (rate: higher is better for coney; CPU and p50: lower is)"
    );
    let _ = writeln!(out);

    let header = |out: &mut String, libs: &[Lib]| {
        let _ = write!(out, "| scenario | size |");
        for l in libs {
            let _ = write!(out, " {} |", l.name());
        }
        for l in libs.iter().filter(|l| **l != Lib::Coney) {
            let _ = write!(out, " coney/{} |", l.name());
        }
        let _ = writeln!(out);
        let _ = write!(out, "|---|---|");
        for _ in 0..libs.len() + libs.iter().filter(|l| **l != Lib::Coney).count() {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
    };
    let mut raw_rates: Vec<(Kind, usize, Summary)> = Vec::new();
    for (section, pick) in [
        (
            "Real broker",
            (|k: Kind| !k.is_fake() && !k.is_raw()) as fn(Kind) -> bool,
        ),
        ("Fake broker (in-process, loopback)", |k: Kind| k.is_fake()),
    ] {
        let rows: Vec<_> = results.iter().filter(|(c, _)| pick(c.kind)).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {section}\n");
        let libs = section_libs(&opts.libs, rows[0].0.kind);
        header(&mut out, &libs);
        for (case, per_lib) in rows {
            let summaries: Vec<(Lib, Result<Summary, String>)> =
                per_lib.iter().map(|(l, s)| (*l, summarize(s))).collect();
            let get = |lib: Lib| {
                summaries
                    .iter()
                    .find(|(l, _)| *l == lib)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| Err("not run".into()))
            };
            let _ = write!(
                out,
                "| {} | {} |",
                case.kind.describe(),
                size_name(case.size)
            );
            for l in &libs {
                let _ = write!(
                    out,
                    " {} |",
                    cell(case.kind, case.size, &get(*l), opts.runs)
                );
            }
            for l in libs.iter().filter(|l| **l != Lib::Coney) {
                let _ = write!(out, " {} |", ratio(case.kind, &get(Lib::Coney), &get(*l)));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }
    let raws: Vec<_> = results.iter().filter(|(c, _)| c.kind.is_raw()).collect();
    if !raws.is_empty() {
        let _ = writeln!(out, "### Raw loopback baseline (no AMQP library)\n");
        let _ = writeln!(
            out,
            "| stream | size | msg-equivalents/s | MB/s (bodies) | CPU µs per msg-equivalent | coney as % of raw |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (case, per_lib) in raws {
            let Some((_, samples)) = per_lib.first() else {
                continue;
            };
            let s = match summarize(samples) {
                Ok(s) => s,
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | failed: {e} | | | |",
                        case.kind.describe(),
                        size_name(case.size)
                    );
                    continue;
                }
            };
            raw_rates.push((case.kind, case.size, s));
            let matching = match case.kind {
                Kind::RawRead if case.size == 16 => Kind::FakeDeliverNoAck,
                Kind::RawRead => Kind::FakeDeliver,
                _ => Kind::FakePublish,
            };
            let coney = results
                .iter()
                .find(|(c, _)| c.kind == matching && c.size == case.size)
                .and_then(|(_, per)| per.iter().find(|(l, _)| *l == Lib::Coney))
                .and_then(|(_, s)| summarize(s).ok());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.3} | {} |",
                case.kind.describe(),
                size_name(case.size),
                human_rate(s.rate),
                s.rate * case.size as f64 / 1e6,
                s.cpu_us,
                coney.map_or("-".into(), |c| format!("{:.1}%", c.rate / s.rate * 100.0))
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// The libraries a case runs with: the floor client speaks only to the real broker.
fn section_libs(libs: &[Lib], kind: Kind) -> Vec<Lib> {
    libs.iter()
        .copied()
        .filter(|l| *l != Lib::Floor || !kind.is_fake())
        .collect()
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The machine's CPU time so far, in clock ticks: (all of it, the part stolen by the hypervisor), from
/// the first line of `/proc/stat` (user nice system idle iowait irq softirq steal ...).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (fields.len() == 8).then(|| (fields.iter().sum(), fields[7]))
}

/// How much of the machine's CPU time since `before` the hypervisor gave to someone else (steal time): a
/// virtual machine's figures are only comparable between runs with similar steal.
fn steal_share(before: Option<(u64, u64)>) -> String {
    match (before, cpu_ticks()) {
        (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => format!(
            "steal time {:.1}% of CPU time during the run",
            100.0 * (s1 - s0) as f64 / (t1 - t0) as f64
        ),
        _ => "steal time unknown".into(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
