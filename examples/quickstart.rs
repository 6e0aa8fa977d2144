//! Connect, declare a queue, publish with confirms, consume and ack, close.
//!
//! Run: `cargo run --example quickstart` (honours `AMQP_URL` and `RABBITMQ_URL`, default amqp://guest:guest@localhost:5672/%2f).

use coney::{
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    BasicProperties, Confirmation, Connection, ConnectionConfig, FieldTable,
};

const MESSAGES: usize = 10;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("quickstart failed: {e}");
        if matches!(
            e,
            coney::Error::Connect { .. } | coney::Error::Timeout { .. }
        ) {
            eprintln!("is a broker running? set AMQP_URL=amqp://user:pass@host:5672/vhost");
        }
        std::process::exit(1);
    }
}

async fn run() -> Result<(), coney::Error> {
    let config = ConnectionConfig::from_env()?;
    println!("connecting to {}", config.redacted_uri());
    let connection = Connection::connect_with(config).await?;
    let channel = connection.open_channel().await?;

    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::new(),
        )
        .await?;
    println!("declared queue {}", queue.queue);

    channel.confirm_select().await?;
    let mut confirms = Vec::new();
    for i in 0..MESSAGES {
        let properties = BasicProperties::default().with_content_type("text/plain");
        let body = format!("message {i}");
        confirms.push(
            channel
                .basic_publish(
                    "",
                    &queue.queue,
                    BasicPublishOptions::default(),
                    properties,
                    body,
                )
                .await?,
        );
    }
    for confirm in confirms {
        assert_eq!(confirm.await?, Confirmation::Ack);
    }
    println!("published {MESSAGES} messages, all confirmed");

    channel.basic_qos(100, Default::default()).await?;
    let mut consumer = channel
        .basic_consume(
            &queue.queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::new(),
        )
        .await?;
    for _ in 0..MESSAGES {
        let delivery = consumer.next().await.expect("consumer open")?;
        println!("received {:?}", String::from_utf8_lossy(&delivery.body));
        delivery.ack().await?;
    }
    channel.close().await?;
    connection.close().await?;
    println!("done");
    Ok(())
}
