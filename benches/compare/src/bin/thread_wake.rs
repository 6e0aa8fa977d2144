//! What it costs this machine to wake a parked thread: the baseline under every hand-off between a
//! client's driver and a thread outside its runtime.
//!
//!     cargo run --release --manifest-path benches/compare/Cargo.toml --bin thread-wake [-- ROUND_TRIPS]
//!
//! Two threads ping-pong with `std::thread::park`/`unpark`. When the other thread is asleep, each hand-off
//! is a futex wake on one side and a futex wait on the other, the same kernel operations as tokio's
//! `block_on` parker (a mutex and a condition variable) and its wakers. When the other thread has not yet
//! parked, `unpark` only leaves a token, so on one CPU some hand-offs are plain context switches. It runs
//! the threads wherever the scheduler puts them, then both pinned to one CPU, then pinned to two
//! different CPUs (skipped where the process may not use CPUs 0 and 1), and prints for each placement the
//! medians over three runs of the wall time and of the process CPU time per one-way wake (each column's
//! median on its own).

// Only `cpu::process` is used here; the thread clocks serve the main harness.
#[allow(dead_code)]
#[path = "../cpu.rs"]
mod cpu;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

#[derive(Clone, Copy)]
enum Placement {
    Free,
    OneCpu,
    TwoCpus,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Free => "unpinned",
            Placement::OneCpu => "both on CPU 0",
            Placement::TwoCpus => "on CPUs 0 and 1",
        }
    }

    fn cpus(self) -> (Option<usize>, Option<usize>) {
        match self {
            Placement::Free => (None, None),
            Placement::OneCpu => (Some(0), Some(0)),
            Placement::TwoCpus => (Some(0), Some(1)),
        }
    }
}

/// Whether this process may run on `cpu` (its affinity mask, as `taskset` or a cpuset left it).
fn allowed(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bit set owned by this frame; pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_ISSET(cpu, &set)
    }
}

/// Pins the calling thread to `cpu`, which [`allowed`] accepted; panics if the kernel refuses.
fn pin(cpu: usize) {
    // SAFETY: `set` is a plain bit set owned by this frame; pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
    }
}

/// One run of `round_trips` ping-pongs: (wall µs, CPU µs) per one-way wake.
fn run(placement: Placement, round_trips: u64) -> (f64, f64) {
    let (here, there) = placement.cpus();
    let turn = Arc::new(AtomicU64::new(0));
    let pinger = thread::current();
    let ponger = {
        let turn = turn.clone();
        thread::spawn(move || {
            if let Some(cpu) = there {
                pin(cpu);
            }
            for i in 0..round_trips {
                while turn.load(Ordering::Acquire) != 2 * i + 1 {
                    thread::park();
                }
                turn.store(2 * i + 2, Ordering::Release);
                pinger.unpark();
            }
        })
    };
    if let Some(cpu) = here {
        pin(cpu);
    }
    let other = ponger.thread().clone();
    let (cpu0, wall0) = (cpu::process(), Instant::now());
    'round_trips: for i in 0..round_trips {
        turn.store(2 * i + 1, Ordering::Release);
        other.unpark();
        while turn.load(Ordering::Acquire) != 2 * i + 2 {
            // A timeout only to notice a ponger that died (its panic is reported by `join` below);
            // it never fires while the ponger runs, so it does not change what is measured.
            thread::park_timeout(Duration::from_secs(1));
            if ponger.is_finished() && turn.load(Ordering::Acquire) != 2 * i + 2 {
                break 'round_trips;
            }
        }
    }
    let (wall, used) = (wall0.elapsed(), cpu::process() - cpu0);
    ponger.join().expect("ponger");
    assert_eq!(
        turn.load(Ordering::Acquire),
        2 * round_trips,
        "the ponger stopped early"
    );
    let wakes = 2.0 * round_trips as f64;
    (
        wall.as_secs_f64() * 1e6 / wakes,
        used.as_secs_f64() * 1e6 / wakes,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let round_trips: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUND_TRIPS is a number"))
        .unwrap_or(100_000);
    assert!(round_trips > 0, "ROUND_TRIPS must be at least 1");
    println!("| threads | wall µs per wake | CPU µs per wake |");
    println!("|---|---|---|");
    for placement in [Placement::Free, Placement::OneCpu, Placement::TwoCpus] {
        let (a, b) = placement.cpus();
        if ![a, b].into_iter().flatten().all(allowed) {
            println!(
                "| {} | skipped: CPU 0 or 1 not available | |",
                placement.name()
            );
            continue;
        }
        // Each run pins its own threads; the unpinned runs come first, from a fresh thread each, so
        // an earlier pin never leaks into them.
        let runs: Vec<(f64, f64)> = (0..3)
            .map(|_| {
                thread::spawn(move || run(placement, round_trips))
                    .join()
                    .expect("run")
            })
            .collect();
        let wall = median(runs.iter().map(|r| r.0).collect());
        let used = median(runs.iter().map(|r| r.1).collect());
        println!("| {} | {wall:.2} | {used:.2} |", placement.name());
    }
}
