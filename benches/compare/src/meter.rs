//! What one run measures: wall time and client CPU time between `start` and `stop`.

use std::time::{Duration, Instant};

use crate::cpu::{self, ThreadClock};

/// Where a client connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `amqp://guest:guest@host:port/%2f`, every other setting the library's default.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}:{}/%2f", self.host, self.port)
    }
}

/// Times the measured part of a run. The client's CPU time is the process's minus the fake broker
/// thread's (when there is one in this process).
pub struct Meter {
    server: Option<ThreadClock>,
    started: Option<(Instant, Duration, Duration)>,
    result: Option<(Duration, Duration)>,
}

impl Meter {
    pub fn new(server: Option<ThreadClock>) -> Meter {
        Meter {
            server,
            started: None,
            result: None,
        }
    }

    fn server_cpu(&self) -> Duration {
        self.server.map(|c| c.read()).unwrap_or_default()
    }

    pub fn start(&mut self) {
        mark("start");
        self.started = Some((Instant::now(), cpu::process(), self.server_cpu()));
    }

    pub fn stop(&mut self) {
        let (t0, p0, s0) = self.started.expect("meter started");
        let wall = t0.elapsed();
        let process = cpu::process().saturating_sub(p0);
        let server = self.server_cpu().saturating_sub(s0);
        self.result = Some((wall, process.saturating_sub(server)));
        mark("stop");
    }

    /// Wall time and client CPU time, once stopped.
    pub fn result(&self) -> Option<(Duration, Duration)> {
        self.result
    }
}

/// With `CONEY_COMPARE_MARKS` set, prints the monotonic clock at the meter's start and stop to stderr,
/// so a profile recorded with `perf record -k CLOCK_MONOTONIC` can be cut to the measured part
/// (`perf report --time START,STOP`).
fn mark(what: &str) {
    if std::env::var_os("CONEY_COMPARE_MARKS").is_none() {
        return;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    eprintln!("mark {what} {}.{:09}", ts.tv_sec, ts.tv_nsec);
}
