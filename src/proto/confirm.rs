//! Publisher-confirm bookkeeping: which publish sequence numbers await an ack or nack, and which of them
//! the broker returned.

use std::{
    collections::VecDeque,
    hash::{DefaultHasher, Hasher},
};

/// Tracks the unconfirmed publishes of one channel in confirm mode.
///
/// spec (RabbitMQ confirms extension): "once a channel is in confirm mode, both the broker and the client
/// count messages (counting starts at 1 on the first basic.publish)". The broker acks or nacks by that
/// number, singly or `multiple` (every outstanding number up to and including it).
///
/// Generic over the waiter `W` so this stays sans-IO: the driver stores its reply senders here.
/// Memory is bounded by the number of publishes the caller lets be outstanding (the confirm window),
/// plus returnable publishes nobody awaits (made while confirm.select was on its way).
///
/// # Returns
///
/// A basic.return names no publish number. RabbitMQ sends it while it routes the message, so returns
/// arrive in publish order, each before the ack that settles its publish; but its confirms are
/// coalesced (one `multiple` ack, or several acks, for everything confirmed since its last flush), so
/// several returns can arrive before the acks that cover them, and a `multiple` ack can cover returned
/// and routed publishes alike. [`ConfirmTracker::match_return`] therefore matches each return to the
/// earliest outstanding publish after the last matched one with the same [`ReturnKey`]: the exchange,
/// routing key and body size, and then the encoded properties, which the return repeats too (a headers
/// exchange, or `CC`/`BCC` headers, route the same exchange and key differently by the headers). That is
/// exact unless two publishes with the same key and properties are routed differently while both are
/// unconfirmed (a binding added or removed between them). The return's properties are keyed as coney
/// encodes them (the driver encodes the built properties again), not as they were received: those
/// bytes can differ for the same properties (a received list without properties is kept as no bytes;
/// unused flag bits; booleans).
#[derive(Debug)]
pub struct ConfirmTracker<W> {
    next_seq: u64,
    pending: VecDeque<Outstanding<W>>,
    /// The number of the publish the last return was matched to; the next return is for a later one.
    last_returned: u64,
}

#[derive(Debug)]
struct Outstanding<W> {
    seq: u64,
    key: ReturnKey,
    /// `None` for a publish nobody awaits, tracked only so that its return is matched to it.
    waiter: Option<W>,
}

/// What a basic.return is matched on: hashes of what the return repeats of its publish, the route
/// (exchange, routing key, body size) and the encoded properties. [`ReturnKey::NONE`] for a publish the
/// broker never returns (neither `mandatory` nor `immediate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReturnKey {
    route: u64,
    properties: u64,
}

impl ReturnKey {
    /// The key of a publish that cannot be returned; no return matches it.
    pub const NONE: ReturnKey = ReturnKey {
        route: 0,
        properties: 0,
    };

    /// The key of a returnable publish, or of a return, with these fields (`properties`: the encoded
    /// property flags and list).
    pub fn of(exchange: &[u8], routing_key: &[u8], body_size: u64, properties: &[u8]) -> ReturnKey {
        let mut route = DefaultHasher::new();
        route.write_usize(exchange.len());
        route.write(exchange);
        route.write_usize(routing_key.len());
        route.write(routing_key);
        route.write_u64(body_size);
        let mut props = DefaultHasher::new();
        props.write(properties);
        // Never NONE.
        ReturnKey {
            route: route.finish() | 1,
            properties: props.finish(),
        }
    }
}

/// How the broker settled one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// basic.ack: the broker took responsibility for the message.
    Ack,
    /// basic.nack: the broker could not take it.
    Nack,
}

impl<W> Default for ConfirmTracker<W> {
    fn default() -> Self {
        ConfirmTracker {
            next_seq: 1,
            pending: VecDeque::new(),
            last_returned: 0,
        }
    }
}

impl<W> ConfirmTracker<W> {
    /// A tracker whose first publish is number 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a publish whose outcome `waiter` awaits, and returns its sequence number.
    pub fn publish(&mut self, waiter: W, key: ReturnKey) -> u64 {
        let seq = self.take_seq();
        self.pending.push_back(Outstanding {
            seq,
            key,
            waiter: Some(waiter),
        });
        seq
    }

    /// Counts a publish nobody waits for, so that later publishes keep the broker's numbers: in confirm
    /// mode the broker numbers every basic.publish, including one whose publisher decided, before the
    /// channel entered confirm mode, not to ask for a confirm. A returnable one is tracked until it is
    /// settled, so that its return is not matched to a later publish. Returns the number it took.
    pub fn publish_unawaited(&mut self, key: ReturnKey) -> u64 {
        let seq = self.take_seq();
        if key != ReturnKey::NONE {
            self.pending.push_back(Outstanding {
                seq,
                key,
                waiter: None,
            });
        }
        seq
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        seq
    }

    /// The number the next publish will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Number of publishes not yet settled (those nobody awaits included).
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Matches a basic.return with `key` to its publish (see "Returns" above) and returns that
    /// publish's number; `None` if no outstanding publish after the last matched one has that key.
    pub fn match_return(&mut self, key: ReturnKey) -> Option<u64> {
        if key == ReturnKey::NONE {
            return None;
        }
        let from = self
            .pending
            .partition_point(|o| o.seq <= self.last_returned);
        let mut same_route = None;
        let mut same_key = None;
        for o in self
            .pending
            .range(from..)
            .filter(|o| o.key.route == key.route)
        {
            if o.key == key {
                same_key = Some(o.seq);
                break;
            }
            same_route.get_or_insert(o.seq);
        }
        let seq = same_key.or(same_route)?;
        self.last_returned = seq;
        Some(seq)
    }

    /// Settles `tag` (and with `multiple`, every smaller outstanding tag), returning the settled numbers
    /// in order, each with its waiter (`None` for a publish nobody awaits).
    ///
    /// A tag that is not outstanding settles nothing; `Err` says the broker acknowledged a number it was
    /// never given (above the last published), which is a protocol violation by the peer.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> Result<Vec<(u64, Option<W>)>, u64> {
        if tag >= self.next_seq {
            return Err(tag);
        }
        let mut settled = Vec::new();
        if multiple {
            while self.pending.front().is_some_and(|o| o.seq <= tag) {
                settled.extend(self.pending.pop_front().map(|o| (o.seq, o.waiter)));
            }
        } else if let Ok(pos) = self.pending.binary_search_by_key(&tag, |o| o.seq) {
            settled.extend(self.pending.remove(pos).map(|o| (o.seq, o.waiter)));
        }
        Ok(settled)
    }

    /// Removes every outstanding waiter (the channel or connection is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, W)> + '_ {
        self.pending
            .drain(..)
            .filter_map(|o| o.waiter.map(|w| (o.seq, w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rk: &str) -> ReturnKey {
        ReturnKey::of(b"amq.direct", rk.as_bytes(), 5, b"")
    }

    fn headers(kind: &str) -> ReturnKey {
        ReturnKey::of(b"amq.headers", b"", 5, kind.as_bytes())
    }

    #[test]
    fn single_and_multiple_acks_settle_in_order() {
        let mut t = ConfirmTracker::new();
        for w in 0..5 {
            t.publish(w, ReturnKey::NONE);
        }
        assert_eq!(t.settle(3, false).unwrap(), vec![(3, Some(2))]);
        assert_eq!(
            t.settle(4, true).unwrap(),
            vec![(1, Some(0)), (2, Some(1)), (4, Some(3))]
        );
        assert_eq!(t.outstanding(), 1);
        assert_eq!(
            t.settle(2, false).unwrap(),
            vec![],
            "already settled: nothing"
        );
        assert_eq!(t.settle(9, true), Err(9), "never published");
        assert_eq!(t.drain().collect::<Vec<_>>(), vec![(5, 4)]);
    }

    #[test]
    fn a_publish_nobody_awaits_keeps_its_number() {
        let mut t = ConfirmTracker::new();
        assert_eq!(t.publish_unawaited(ReturnKey::NONE), 1);
        assert_eq!(t.publish("second", ReturnKey::NONE), 2);
        assert_eq!(t.settle(1, false).unwrap(), vec![], "nobody to tell");
        assert_eq!(t.settle(2, false).unwrap(), vec![(2, Some("second"))]);
        assert_eq!(t.publish_unawaited(ReturnKey::NONE), 3);
        assert_eq!(t.publish("fourth", ReturnKey::NONE), 4);
        assert_eq!(
            t.settle(4, true).unwrap(),
            vec![(4, Some("fourth"))],
            "a multiple ack over an unawaited number settles the awaited ones"
        );
    }

    #[test]
    fn returns_match_their_publishes_in_order() {
        let mut t = ConfirmTracker::new();
        // 1 and 2 unroutable (key "nowhere"), 3 routed and not returnable, 4 returnable and routed
        // (key "q"), 5 unroutable.
        t.publish(1, key("nowhere"));
        t.publish(2, key("nowhere"));
        t.publish(3, ReturnKey::NONE);
        t.publish(4, key("q"));
        t.publish(5, key("nowhere"));
        assert_eq!(t.match_return(key("nowhere")), Some(1));
        assert_eq!(t.match_return(key("nowhere")), Some(2));
        assert_eq!(t.match_return(key("nowhere")), Some(5), "past 3 and 4");
        assert_eq!(
            t.match_return(key("nowhere")),
            None,
            "no later publish has the key"
        );
        assert_eq!(t.match_return(key("q")), None, "4 is before the last match");
        assert_eq!(t.match_return(ReturnKey::NONE), None);
    }

    #[test]
    fn a_return_for_an_unawaited_publish_is_matched_to_it() {
        let mut t = ConfirmTracker::new();
        assert_eq!(t.publish_unawaited(key("nowhere")), 1);
        t.publish("awaited", key("nowhere"));
        assert_eq!(
            t.match_return(key("nowhere")),
            Some(1),
            "not the awaited one"
        );
        assert_eq!(
            t.settle(2, true).unwrap(),
            vec![(1, None), (2, Some("awaited"))]
        );
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn returns_on_one_route_match_by_their_properties_first() {
        let mut t = ConfirmTracker::new();
        // A headers exchange: the same exchange, key and size; the headers decide.
        t.publish(1, headers("routed"));
        t.publish(2, headers("nowhere"));
        t.publish(3, headers("routed"));
        t.publish(4, headers("nowhere"));
        assert_eq!(t.match_return(headers("nowhere")), Some(2), "not 1");
        assert_eq!(t.match_return(headers("nowhere")), Some(4), "not 3");
        // Properties matching nothing (a broker that re-encoded them): the first on the route.
        let mut t = ConfirmTracker::new();
        t.publish(1, headers("routed"));
        t.publish(2, headers("nowhere"));
        assert_eq!(t.match_return(headers("re-encoded")), Some(1));
        assert_eq!(t.match_return(headers("nowhere")), Some(2));
    }

    #[test]
    fn keys_differ_by_each_field() {
        let base = ReturnKey::of(b"x", b"rk", 5, b"p");
        assert_eq!(base, ReturnKey::of(b"x", b"rk", 5, b"p"));
        assert_ne!(base, ReturnKey::of(b"y", b"rk", 5, b"p"));
        assert_ne!(base, ReturnKey::of(b"x", b"rj", 5, b"p"));
        assert_ne!(base, ReturnKey::of(b"x", b"rk", 6, b"p"));
        assert_ne!(base, ReturnKey::of(b"x", b"rk", 5, b"q"));
        assert_ne!(
            ReturnKey::of(b"ab", b"c", 0, b""),
            ReturnKey::of(b"a", b"bc", 0, b""),
            "the boundary between the names counts"
        );
        assert_ne!(ReturnKey::of(b"", b"", 0, b""), ReturnKey::NONE);
    }
}
