//! What the client says during the handshake: client properties, SASL responses, tune negotiation.

use bytes::BytesMut;

use crate::codec::{encode, FieldTable, FieldValue, LongStr};

/// The SASL mechanisms coney speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616): `\0user\0password`.
    #[default]
    Plain,
    /// `AMQPLAIN`: a field table with `LOGIN` and `PASSWORD`, without the table's length prefix.
    AmqPlain,
    /// `EXTERNAL`: identity from outside AMQP (a TLS client certificate); empty response.
    External,
}

impl Mechanism {
    /// The name in `connection.start`'s mechanism list.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::AmqPlain => "AMQPLAIN",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// The initial response carrying the credentials. The result is a secret: never log it.
    pub fn response(self, username: &str, password: &str) -> LongStr {
        match self {
            Mechanism::Plain => {
                let mut v = Vec::with_capacity(2 + username.len() + password.len());
                v.push(0);
                v.extend_from_slice(username.as_bytes());
                v.push(0);
                v.extend_from_slice(password.as_bytes());
                LongStr::from(v)
            }
            Mechanism::AmqPlain => {
                let mut buf = BytesMut::new();
                let table = FieldTable::new()
                    .with(
                        "LOGIN",
                        FieldValue::LongStr(LongStr::from(username.to_string())),
                    )
                    .with(
                        "PASSWORD",
                        FieldValue::LongStr(LongStr::from(password.to_string())),
                    );
                encode::table(&mut buf, &table);
                // AMQPLAIN's response is the table's entries without its 4-byte length.
                LongStr::from(buf.split_off(4).freeze())
            }
            Mechanism::External => LongStr::default(),
        }
    }
}

/// The `client-properties` table: who we are and which RabbitMQ extensions we understand.
///
/// RabbitMQ only sends `connection.blocked`, `basic.cancel` notifications and authentication-failure
/// closes to clients that list the capability, so the list must match what the client handles.
pub fn client_properties(connection_name: Option<&str>) -> FieldTable {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", true)
        .with("exchange_exchange_bindings", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("authentication_failure_close", true)
        .with("per_consumer_qos", true);
    let mut props = FieldTable::new()
        .with("product", "coney")
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("platform", "Rust")
        .with("information", "https://crates.io/crates/coney")
        .with("capabilities", capabilities);
    if let Some(name) = connection_name {
        props.insert("connection_name", name.to_string());
    }
    props
}

/// The outcome of `connection.tune` negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuned {
    /// Highest channel number that may be used (at least 1).
    pub channel_max: u16,
    /// Largest frame either side may send, header and end octet included; 0 means no limit was set.
    pub frame_max: u32,
    /// Heartbeat interval in seconds; 0 disables heartbeats.
    pub heartbeat: u16,
}

/// What the client asks for in `tune-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunePreferences {
    /// 0 = no preference.
    pub channel_max: u16,
    /// 0 = no preference.
    pub frame_max: u32,
    /// `None` = accept the server's; `Some(0)` = disable.
    pub heartbeat: Option<u16>,
}

/// Picks the tune-ok values from the server's proposal and the client's preferences.
///
/// spec: the client's values must not exceed the server's, where the server set a limit (non-zero). For
/// channel-max and frame-max, 0 means "no limit": the lower non-zero value wins. Heartbeat: a client that
/// asks for 0 disables heartbeats; otherwise the lower non-zero value.
pub fn negotiate(server: Tuned, client: TunePreferences) -> Tuned {
    fn lower_nonzero<T: Ord + Default + Copy>(a: T, b: T) -> T {
        let zero = T::default();
        match (a == zero, b == zero) {
            (true, _) => b,
            (_, true) => a,
            _ => a.min(b),
        }
    }
    let channel_max = match lower_nonzero(server.channel_max, client.channel_max) {
        0 => u16::MAX,
        n => n,
    };
    let frame_max = lower_nonzero(server.frame_max, client.frame_max);
    // spec: frame-max "MUST NOT be lower than frame-min-size"; a server proposing less is not trusted.
    let frame_max = if frame_max != 0 && frame_max < crate::spec::FRAME_MIN_SIZE {
        crate::spec::FRAME_MIN_SIZE
    } else {
        frame_max
    };
    let heartbeat = match client.heartbeat {
        Some(0) => 0,
        Some(h) => lower_nonzero(server.heartbeat, h),
        None => server.heartbeat,
    };
    Tuned {
        channel_max,
        frame_max,
        heartbeat,
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    #[test]
    fn plain_response_is_nul_separated() {
        assert_eq!(
            Mechanism::Plain.response("guest", "pw").as_bytes(),
            b"\0guest\0pw"
        );
    }

    #[test]
    fn amqplain_response_is_a_table_without_length() {
        let r = Mechanism::AmqPlain.response("u", "p");
        let mut framed = BytesMut::new();
        framed.put_u32(r.len() as u32);
        framed.put_slice(&r);
        let (_, t) = crate::codec::decode::table(&framed).unwrap();
        assert_eq!(t.get("LOGIN").and_then(|v| v.as_str()), Some("u"));
        assert_eq!(t.get("PASSWORD").and_then(|v| v.as_str()), Some("p"));
    }

    #[test]
    fn negotiation_takes_lower_nonzero_and_handles_zero() {
        let server = Tuned {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 60,
        };
        let prefs = TunePreferences {
            channel_max: 0,
            frame_max: 0,
            heartbeat: None,
        };
        assert_eq!(negotiate(server, prefs), server);
        let prefs = TunePreferences {
            channel_max: 10,
            frame_max: 8192,
            heartbeat: Some(5),
        };
        assert_eq!(
            negotiate(server, prefs),
            Tuned {
                channel_max: 10,
                frame_max: 8192,
                heartbeat: 5
            }
        );
        let unlimited = Tuned {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        };
        let t = negotiate(
            unlimited,
            TunePreferences {
                channel_max: 0,
                frame_max: 0,
                heartbeat: Some(0),
            },
        );
        assert_eq!(
            t,
            Tuned {
                channel_max: u16::MAX,
                frame_max: 0,
                heartbeat: 0
            }
        );
        let tiny = Tuned {
            channel_max: 1,
            frame_max: 100,
            heartbeat: 0,
        };
        let t = negotiate(
            tiny,
            TunePreferences {
                channel_max: 0,
                frame_max: 0,
                heartbeat: Some(10),
            },
        );
        assert_eq!(
            t,
            Tuned {
                channel_max: 1,
                frame_max: 4096,
                heartbeat: 10
            }
        );
    }
}
