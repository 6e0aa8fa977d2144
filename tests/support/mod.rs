//! Shared helpers for the integration tests against the broker at `AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

#![allow(dead_code)]

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use coney::{
    options::{QueueDeclareOptions, QueueDeleteOptions},
    Channel, Connection, ConnectionConfig, FieldTable,
};

/// The broker used when `AMQP_URL` is not set.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The hard limit on every test's body.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker URL: `AMQP_URL`, or the local default.
pub fn url() -> String {
    std::env::var("AMQP_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// The broker URL with `query` (e.g. `heartbeat=1`) appended to its query string.
pub fn url_with_query(query: &str) -> String {
    let url = url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The parsed configuration of [`url`].
pub fn config() -> ConnectionConfig {
    ConnectionConfig::from_uri(&url()).expect("AMQP_URL parses")
}

/// A name no other test (in this or another process) uses: `coney-test-{prefix}-{pid}-{counter}-{nanos}`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("coney-test-{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Runs `body` with the hard test timeout; panics if it expires.
pub async fn with_timeout<F: Future>(body: F) -> F::Output {
    with_timeout_of(TEST_TIMEOUT, body).await
}

/// Runs `body` with a hard timeout of `limit`; panics if it expires.
pub async fn with_timeout_of<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Connects to [`url`].
pub async fn connect() -> Connection {
    let url = url();
    Connection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test broker: {e}"))
}

/// Connects and opens one channel.
pub async fn connect_channel() -> (Connection, Channel) {
    let conn = connect().await;
    let ch = conn.open_channel().await.expect("open channel");
    (conn, ch)
}

/// Declares a fresh queue named `name` with default flags; it expires (`x-expires`) five minutes after
/// its last use, so a test that panics before deleting it leaves nothing behind for long.
pub async fn declare_queue(ch: &Channel, name: &str) {
    let arguments = FieldTable::new().with("x-expires", 300_000i32);
    ch.queue_declare(name, QueueDeclareOptions::default(), arguments)
        .await
        .unwrap_or_else(|e| panic!("declaring queue {name}: {e}"));
}

/// Declares a fresh exclusive queue named `name` (gone when its connection closes, even if the test
/// panics).
pub async fn declare_exclusive(ch: &Channel, name: &str) {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(name, options, FieldTable::new())
        .await
        .unwrap_or_else(|e| panic!("declaring exclusive queue {name}: {e}"));
}

/// The queue's ready message count, by a passive declare on a throwaway channel of `conn`.
pub async fn message_count(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.open_channel().await.expect("open channel");
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let ok = ch
        .queue_declare(queue, options, FieldTable::new())
        .await
        .unwrap_or_else(|e| panic!("passive declare of {queue}: {e}"));
    ch.close().await.expect("close channel");
    ok.message_count
}

/// Waits (up to 5 s) until the queue holds `expected` ready messages; returns the last count seen.
pub async fn wait_for_count(conn: &Connection, queue: &str, expected: u32) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = message_count(conn, queue).await;
        if n == expected || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes the queue on a throwaway channel of `conn` (best effort: it may be gone already).
pub async fn delete_queue(conn: &Connection, queue: &str) {
    if let Ok(ch) = conn.open_channel().await {
        let _ = ch.queue_delete(queue, QueueDeleteOptions::default()).await;
        let _ = ch.close().await;
    }
}

/// Deletes the exchange on a throwaway channel of `conn` (best effort).
pub async fn delete_exchange(conn: &Connection, exchange: &str) {
    if let Ok(ch) = conn.open_channel().await {
        let _ = ch.exchange_delete(exchange, Default::default()).await;
        let _ = ch.close().await;
    }
}

/// A body carrying the sequence number `seq` in its first 8 bytes (big-endian), padded to `len` bytes
/// with a pattern derived from `seq`.
pub fn seq_body(seq: u64, len: usize) -> Vec<u8> {
    assert!(len >= 8);
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend((8..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    body
}

/// The sequence number of a [`seq_body`], checking the padding.
pub fn check_seq_body(body: &[u8], len: usize) -> u64 {
    assert_eq!(body.len(), len, "body length");
    let seq = u64::from_be_bytes(body[..8].try_into().unwrap());
    assert_eq!(body, seq_body(seq, len).as_slice(), "body of message {seq}");
    seq
}
