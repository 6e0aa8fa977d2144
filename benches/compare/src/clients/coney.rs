use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bytes::Bytes;
use coney::{
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    BasicProperties, Connection, ConnectionConfig, FieldTable, ShortStr,
};

use crate::{
    clients::CHECK_EVERY,
    meter::{Endpoint, Meter},
};

type Result<T> = std::result::Result<T, String>;

async fn connect(ep: &Endpoint, window: usize) -> Result<Connection> {
    let config = ConnectionConfig::from_uri(&ep.uri())
        .map_err(|e| e.to_string())?
        .with_confirm_window(window.max(1));
    Connection::connect_with(config)
        .await
        .map_err(|e| format!("coney connect: {e}"))
}

fn err(e: coney::Error) -> String {
    format!("coney: {e}")
}

pub async fn publish(
    ep: &Endpoint,
    queue: &str,
    size: usize,
    window: usize,
    secs: f64,
    meter: &mut Meter,
) -> Result<u64> {
    let conn = connect(ep, window).await?;
    let ch = conn.open_channel().await.map_err(err)?;
    if window > 0 {
        ch.confirm_select().await.map_err(err)?;
    }
    let body = Bytes::from(vec![0u8; size]);
    let mut pending = VecDeque::with_capacity(window);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    meter.start();
    loop {
        if n.is_multiple_of(CHECK_EVERY) && Instant::now() >= deadline {
            break;
        }
        let confirm = ch
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                BasicProperties::default(),
                body.clone(),
            )
            .await
            .map_err(err)?;
        n += 1;
        if window > 0 {
            pending.push_back(confirm);
            if pending.len() >= window {
                let c = pending.pop_front().expect("non-empty");
                c.await.map_err(err)?;
            }
        }
    }
    if window > 0 {
        for c in pending {
            c.await.map_err(err)?;
        }
    } else {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(queue, passive, FieldTable::new())
            .await
            .map_err(err)?;
    }
    meter.stop();
    let _ = conn.close().await;
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
    let conn = connect(ep, 1).await?;
    let ch = conn.open_channel().await.map_err(err)?;
    if !no_ack {
        ch.basic_qos(prefetch, Default::default())
            .await
            .map_err(err)?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    meter.start();
    let options = BasicConsumeOptions {
        no_ack,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(queue, "", options, FieldTable::new())
        .await
        .map_err(err)?;
    let mut n = 0u64;
    while n < expected {
        if n.is_multiple_of(CHECK_EVERY) && Instant::now() >= deadline {
            break;
        }
        let Some(delivery) = consumer.next().await else {
            break;
        };
        let delivery = delivery.map_err(err)?;
        std::hint::black_box(&delivery.body);
        n += 1;
        if !no_ack {
            delivery.ack().await.map_err(err)?;
        }
    }
    meter.stop();
    drop(consumer);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
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
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let server = connect(ep, 1).await?;
    let server_ch = server.open_channel().await.map_err(err)?;
    let mut incoming = server_ch
        .basic_consume(requests, "", no_ack, FieldTable::new())
        .await
        .map_err(err)?;
    let responder = tokio::spawn(async move {
        while let Some(Ok(request)) = incoming.next().await {
            let props = &request.properties;
            let (Some(reply_to), Some(id)) = (&props.reply_to, &props.correlation_id) else {
                continue;
            };
            let reply = BasicProperties::default().with_correlation_id(id.clone());
            let sent = server_ch
                .basic_publish(
                    "",
                    reply_to,
                    BasicPublishOptions::default(),
                    reply,
                    request.body.clone(),
                )
                .await;
            if sent.is_err() {
                break;
            }
        }
    });

    let client = connect(ep, 1).await?;
    let ch = client.open_channel().await.map_err(err)?;
    let mut answers = ch
        .basic_consume(replies, "", no_ack, FieldTable::new())
        .await
        .map_err(err)?;
    let body = Bytes::from(vec![0u8; size]);
    let reply_to = ShortStr::new(replies).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rtts = Vec::with_capacity(max);
    meter.start();
    while rtts.len() < max && Instant::now() < deadline {
        let id = ShortStr::new(&rtts.len().to_string()).expect("short");
        let t0 = Instant::now();
        let props = BasicProperties::default()
            .with_reply_to(reply_to.clone())
            .with_correlation_id(id.clone());
        let no_confirm = ch
            .basic_publish(
                "",
                requests,
                BasicPublishOptions::default(),
                props,
                body.clone(),
            )
            .await
            .map_err(err)?;
        drop(no_confirm);
        let reply = answers
            .next()
            .await
            .ok_or("coney: reply consumer ended")?
            .map_err(err)?;
        if reply.properties.correlation_id.as_ref() != Some(&id) {
            return Err("coney: reply with the wrong correlation id".into());
        }
        rtts.push(t0.elapsed());
    }
    meter.stop();
    responder.abort();
    drop(answers);
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server.close()).await;
    Ok(rtts)
}
