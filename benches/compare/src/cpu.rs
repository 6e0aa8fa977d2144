//! CPU time: the whole process's and one thread's (the fake broker's), so the client's share is their
//! difference. Both read the kernel's per-task runtime (`clock_gettime`), the same accounting as
//! `getrusage(RUSAGE_SELF)` at nanosecond resolution.

use std::time::Duration;

/// The CPU time of this process, all threads.
pub fn process() -> Duration {
    read(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The CPU clock of one thread, readable from any thread while it lives.
#[derive(Debug, Clone, Copy)]
pub struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The calling thread's clock.
    pub fn current() -> ThreadClock {
        let mut id: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid for the calling thread; `id` is a valid out pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        assert_eq!(rc, 0, "pthread_getcpuclockid");
        ThreadClock(id)
    }

    /// CPU time used by the thread so far (zero once it has exited).
    pub fn read(&self) -> Duration {
        read(self.0)
    }
}

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; an invalid clock id only makes the call fail.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
