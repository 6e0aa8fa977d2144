use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use amqprs::{
    callbacks::ChannelCallback,
    channel::{
        BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
        Channel, ConfirmSelectArguments, QueueDeclareArguments,
    },
    connection::{Connection, OpenConnectionArguments},
    Ack, BasicProperties, Cancel, CloseChannel, Nack, Return,
};
use async_trait::async_trait;
use tokio::sync::Notify;

use crate::{
    clients::CHECK_EVERY,
    meter::{Endpoint, Meter},
};

type Result<T> = std::result::Result<T, String>;

async fn connect(ep: &Endpoint) -> Result<Connection> {
    // Not `.heartbeat(0)`: amqprs 2.1 then treats every instant as a missed heartbeat and closes the
    // connection within milliseconds (seen against the fake broker, which offers heartbeat 0 by RabbitMQ's
    // rules only when asked to).
    let args = OpenConnectionArguments::new(&ep.host, ep.port, "guest", "guest");
    Connection::open(&args)
        .await
        .map_err(|e| format!("amqprs connect: {e}"))
}

fn err(e: amqprs::error::Error) -> String {
    format!("amqprs: {e}")
}

async fn close(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
}

/// amqprs reports confirms through a channel callback: count the settled publishes (in order) and wake
/// the publisher when the window has room.
struct Confirms {
    settled: Arc<AtomicU64>,
    notify: Arc<Notify>,
    contiguous: u64,
    singles: BTreeSet<u64>,
}

impl Confirms {
    fn settle(&mut self, tag: u64, multiple: bool) {
        if multiple {
            self.contiguous = self.contiguous.max(tag);
        } else {
            self.singles.insert(tag);
        }
        while self
            .singles
            .first()
            .is_some_and(|&t| t <= self.contiguous + 1)
        {
            let t = self.singles.pop_first().expect("non-empty");
            self.contiguous = self.contiguous.max(t);
        }
        self.settled.store(self.contiguous, Ordering::Release);
        self.notify.notify_one();
    }
}

#[async_trait]
impl ChannelCallback for Confirms {
    async fn close(
        &mut self,
        _channel: &Channel,
        _close: CloseChannel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(
        &mut self,
        _channel: &Channel,
        _active: bool,
    ) -> std::result::Result<bool, amqprs::error::Error> {
        Ok(true)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple());
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple());
    }
    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _ret: Return,
        _properties: BasicProperties,
        _content: Vec<u8>,
    ) {
    }
}

pub async fn publish(
    ep: &Endpoint,
    queue: &str,
    size: usize,
    window: usize,
    secs: f64,
    meter: &mut Meter,
) -> Result<u64> {
    let conn = connect(ep).await?;
    let ch = conn.open_channel(None).await.map_err(err)?;
    let settled = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    if window > 0 {
        let callback = Confirms {
            settled: settled.clone(),
            notify: notify.clone(),
            contiguous: 0,
            singles: BTreeSet::new(),
        };
        ch.register_callback(callback).await.map_err(err)?;
        ch.confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(err)?;
    }
    let body = vec![0u8; size];
    let args = BasicPublishArguments::new("", queue);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    meter.start();
    loop {
        if n.is_multiple_of(CHECK_EVERY) && Instant::now() >= deadline {
            break;
        }
        // The API takes the body by value: a copy per publish is the price of reusing one payload.
        ch.basic_publish(BasicProperties::default(), body.clone(), args.clone())
            .await
            .map_err(|e| format!("amqprs publish #{n}: {e}"))?;
        n += 1;
        if window > 0 {
            while n - settled.load(Ordering::Acquire) >= window as u64 {
                notify.notified().await;
            }
        }
    }
    if window > 0 {
        while settled.load(Ordering::Acquire) < n {
            notify.notified().await;
        }
    } else {
        let passive = QueueDeclareArguments::new(queue).passive(true).finish();
        ch.queue_declare(passive)
            .await
            .map_err(|e| format!("amqprs final queue.declare: {e}"))?;
    }
    meter.stop();
    let _ = ch.close().await;
    close(conn).await;
    Ok(n)
}

pub async fn consume(
    ep: &Endpoint,
    queue: &str,
    expected: u64,
    secs: f64,
    no_ack: bool,
    prefetch: u16,
    meter: &mut Meter,
) -> Result<u64> {
    let conn = connect(ep).await?;
    let ch = conn.open_channel(None).await.map_err(err)?;
    if !no_ack {
        ch.basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(err)?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    meter.start();
    let args = BasicConsumeArguments::new(queue, "")
        .manual_ack(!no_ack)
        .finish();
    let (_tag, mut rx) = ch.basic_consume_rx(args).await.map_err(err)?;
    let mut n = 0u64;
    while n < expected {
        if n.is_multiple_of(CHECK_EVERY) && Instant::now() >= deadline {
            break;
        }
        let Some(message) = rx.recv().await else {
            break;
        };
        std::hint::black_box(&message.content);
        n += 1;
        if !no_ack {
            let tag = message
                .deliver
                .as_ref()
                .ok_or("amqprs: message without deliver")?
                .delivery_tag();
            ch.basic_ack(BasicAckArguments::new(tag, false))
                .await
                .map_err(err)?;
        }
    }
    meter.stop();
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), ch.close()).await;
    close(conn).await;
    Ok(n)
}

pub async fn round_trip(
    ep: &Endpoint,
    requests: &str,
    replies: &str,
    size: usize,
    secs: f64,
    max: usize,
    meter: &mut Meter,
) -> Result<Vec<Duration>> {
    let server = connect(ep).await?;
    let server_ch = server.open_channel(None).await.map_err(err)?;
    let args = BasicConsumeArguments::new(requests, "")
        .manual_ack(false)
        .finish();
    let (_tag, mut incoming) = server_ch.basic_consume_rx(args).await.map_err(err)?;
    let responder = tokio::spawn(async move {
        while let Some(request) = incoming.recv().await {
            let Some(props) = &request.basic_properties else {
                continue;
            };
            let (Some(reply_to), Some(id)) = (props.reply_to(), props.correlation_id()) else {
                continue;
            };
            let reply = BasicProperties::default().with_correlation_id(id).finish();
            let body = request.content.clone().unwrap_or_default();
            let sent = server_ch
                .basic_publish(reply, body, BasicPublishArguments::new("", reply_to))
                .await;
            if sent.is_err() {
                break;
            }
        }
    });

    let client = connect(ep).await?;
    let ch = client.open_channel(None).await.map_err(err)?;
    let args = BasicConsumeArguments::new(replies, "")
        .manual_ack(false)
        .finish();
    let (_tag, mut answers) = ch.basic_consume_rx(args).await.map_err(err)?;
    let body = vec![0u8; size];
    let publish_args = BasicPublishArguments::new("", requests);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rtts = Vec::with_capacity(max);
    meter.start();
    while rtts.len() < max && Instant::now() < deadline {
        let id = rtts.len().to_string();
        let t0 = Instant::now();
        let props = BasicProperties::default()
            .with_reply_to(replies)
            .with_correlation_id(&id)
            .finish();
        ch.basic_publish(props, body.clone(), publish_args.clone())
            .await
            .map_err(err)?;
        let reply = answers.recv().await.ok_or("amqprs: reply consumer ended")?;
        let got = reply
            .basic_properties
            .as_ref()
            .and_then(|p| p.correlation_id());
        if got != Some(&id) {
            return Err("amqprs: reply with the wrong correlation id".into());
        }
        rtts.push(t0.elapsed());
    }
    meter.stop();
    responder.abort();
    drop(answers);
    close(client).await;
    close(server).await;
    Ok(rtts)
}
