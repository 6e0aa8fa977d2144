use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use futures_lite::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
    BasicProperties, Connection, ConnectionProperties,
};

use crate::{
    clients::CHECK_EVERY,
    meter::{Endpoint, Meter},
};

type Result<T> = std::result::Result<T, String>;

async fn connect(ep: &Endpoint) -> Result<Connection> {
    Connection::connect(&ep.uri(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("lapin connect: {e}"))
}

fn err(e: lapin::Error) -> String {
    format!("lapin: {e}")
}

async fn close(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "bye".into())).await;
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
    let ch = conn.create_channel().await.map_err(err)?;
    if window > 0 {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err)?;
    }
    let body = vec![0u8; size];
    let queue_name = ShortString::from(queue);
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
                "".into(),
                queue_name.clone(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
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
        ch.queue_declare(queue_name, passive, FieldTable::default())
            .await
            .map_err(err)?;
    }
    meter.stop();
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
    let ch = conn.create_channel().await.map_err(err)?;
    if !no_ack {
        ch.basic_qos(prefetch, BasicQosOptions::default())
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
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
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
        std::hint::black_box(&delivery.data);
        n += 1;
        if !no_ack {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(err)?;
        }
    }
    meter.stop();
    drop(consumer);
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
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let server = connect(ep).await?;
    let server_ch = server.create_channel().await.map_err(err)?;
    let mut incoming = server_ch
        .basic_consume(requests.into(), "".into(), no_ack, FieldTable::default())
        .await
        .map_err(err)?;
    let responder = tokio::spawn(async move {
        while let Some(Ok(request)) = incoming.next().await {
            let props = &request.properties;
            let (Some(reply_to), Some(id)) = (props.reply_to(), props.correlation_id()) else {
                continue;
            };
            let reply = BasicProperties::default().with_correlation_id(id.clone());
            let sent = server_ch
                .basic_publish(
                    "".into(),
                    reply_to.clone(),
                    BasicPublishOptions::default(),
                    &request.data,
                    reply,
                )
                .await;
            if sent.is_err() {
                break;
            }
        }
    });

    let client = connect(ep).await?;
    let ch = client.create_channel().await.map_err(err)?;
    let mut answers = ch
        .basic_consume(replies.into(), "".into(), no_ack, FieldTable::default())
        .await
        .map_err(err)?;
    let body = vec![0u8; size];
    let reply_to = ShortString::from(replies);
    let request_queue = ShortString::from(requests);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rtts = Vec::with_capacity(max);
    meter.start();
    while rtts.len() < max && Instant::now() < deadline {
        let id = ShortString::from(rtts.len().to_string());
        let t0 = Instant::now();
        let props = BasicProperties::default()
            .with_reply_to(reply_to.clone())
            .with_correlation_id(id.clone());
        let no_confirm = ch
            .basic_publish(
                "".into(),
                request_queue.clone(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .map_err(err)?;
        drop(no_confirm);
        let reply = answers
            .next()
            .await
            .ok_or("lapin: reply consumer ended")?
            .map_err(err)?;
        if reply.properties.correlation_id().as_ref() != Some(&id) {
            return Err("lapin: reply with the wrong correlation id".into());
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
