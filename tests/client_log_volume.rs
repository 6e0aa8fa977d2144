//! A broker that repeats a mistake for every frame it sends cannot make the client log a line per frame.
//!
//! The test binary installs its own `tracing` subscriber, which counts the client's warnings.

mod fake_broker;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use coney::{
    codec::FieldTable,
    spec::{basic, queue},
    Connection,
};
use fake_broker::{scenario, FakeBroker};
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Metadata, Subscriber,
};

/// Counts warnings whose message contains [`WATCHED`].
struct WarningCounter;

const WATCHED: &str = "not in confirm mode";
static WATCHED_WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for WarningCounter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = MessageText(String::new());
        event.record(&mut text);
        if *event.metadata().level() == Level::WARN && text.0.contains(WATCHED) {
            WATCHED_WARNINGS.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// 2,000 `basic.ack`s on a channel that is not in confirm mode: each is ignored, and the warning is
/// logged for the first 10 and then for the 16th, 32nd, ... 1,024th only (17 lines).
#[tokio::test]
async fn a_repeated_broker_mistake_is_logged_ever_more_rarely() {
    tracing::subscriber::set_global_default(WarningCounter).expect("the only subscriber");
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    scenario(
        Duration::from_secs(15),
        async move {
            let (mut peer, ch) = broker.accept_with_channel().await;
            let queue = peer.expect_queue_declare(ch).await;
            let mut acks = Vec::new();
            for tag in 1..=2000 {
                let ack = basic::Ack {
                    delivery_tag: tag,
                    multiple: false,
                };
                acks.extend_from_slice(&fake_broker::method_frame(ch, &ack.into()));
            }
            peer.send_raw(&acks).await;
            let declare_ok = queue::DeclareOk {
                queue,
                message_count: 0,
                consumer_count: 0,
            };
            peer.send_method(ch, declare_ok).await;
            peer.expect_clean_close().await;
        },
        async move {
            let conn = Connection::connect_with(config).await.expect("connect");
            let ch = conn.open_channel().await.expect("open channel");
            ch.queue_declare("q", Default::default(), FieldTable::new())
                .await
                .expect("queue.declare after the acks");
            conn.close().await.expect("clean close");
        },
    )
    .await;
    assert_eq!(WATCHED_WARNINGS.load(Ordering::SeqCst), 17);
}
