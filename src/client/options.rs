//! Options for channel methods: the spec's flags, all `false`/0 by default.

/// Flags for [`Channel::exchange_declare`](crate::Channel::exchange_declare).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeclareOptions {
    /// Only check that the exchange exists (404 if not).
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding is removed.
    pub auto_delete: bool,
    /// Cannot be published to directly, only via exchange-to-exchange bindings.
    pub internal: bool,
    /// Do not wait for declare-ok.
    pub no_wait: bool,
}

/// Flags for [`Channel::exchange_delete`](crate::Channel::exchange_delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeleteOptions {
    /// Only delete if it has no bindings (406 otherwise).
    pub if_unused: bool,
    /// Do not wait for delete-ok.
    pub no_wait: bool,
}

/// Flags for binding and unbinding (exchange.bind/unbind, queue.bind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Do not wait for bind-ok / unbind-ok.
    pub no_wait: bool,
}

/// Flags for [`Channel::queue_declare`](crate::Channel::queue_declare).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeclareOptions {
    /// Only check that the queue exists (404 if not).
    pub passive: bool,
    /// Survives a broker restart.
    pub durable: bool,
    /// Used by this connection only, deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes away.
    pub auto_delete: bool,
}

/// Flags for [`Channel::queue_delete`](crate::Channel::queue_delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Only delete if it has no consumers (406 otherwise).
    pub if_unused: bool,
    /// Only delete if it has no messages (406 otherwise).
    pub if_empty: bool,
}

/// Flags for [`Channel::basic_qos`](crate::Channel::basic_qos).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicQosOptions {
    /// Byte limit on unacked messages. RabbitMQ supports only 0 (no limit); any other value closes the
    /// whole connection with 540 NOT_IMPLEMENTED.
    pub prefetch_size: u32,
    /// RabbitMQ: apply the count to the whole channel rather than to each new consumer.
    pub global: bool,
}

/// Flags for [`Channel::basic_consume`](crate::Channel::basic_consume).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicConsumeOptions {
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// The broker considers messages acknowledged once sent ("auto-ack").
    pub no_ack: bool,
    /// The only consumer of the queue (403 if another exists).
    pub exclusive: bool,
}

/// Flags for [`Channel::basic_cancel`](crate::Channel::basic_cancel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicCancelOptions {
    /// Do not wait for cancel-ok.
    pub no_wait: bool,
}

/// Flags for [`Channel::basic_publish`](crate::Channel::basic_publish).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicPublishOptions {
    /// Return the message (basic.return) if no queue receives it.
    pub mandatory: bool,
    /// Unsupported by RabbitMQ 3+ (it closes the connection with 540); kept because the spec has it.
    pub immediate: bool,
}

/// Flags for nack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicNackOptions {
    /// Every unacknowledged delivery up to and including this tag.
    pub multiple: bool,
    /// Put the message(s) back in the queue instead of discarding or dead-lettering them.
    pub requeue: bool,
}
