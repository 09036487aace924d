//! The in-process [`Relay`] (the local backend: one server, nobody else to talk to), and the
//! channel registry both relays use to hand a message to this server's subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::ports::{Relay, RelaySubscription};
use crate::queue::ByteQueue;

/// Bytes a subscription holds before it drops what is queued and reports `Lagged`: a burst of
/// terminal output, several screens' worth. Memory per subscription stays below this (plus one
/// message).
pub const SUBSCRIPTION_BYTES: usize = 1024 * 1024;

/// One subscriber: its id and its queue.
type Subscriber = (u64, Arc<ByteQueue<Bytes>>);

/// This server's subscribers, by channel.
#[derive(Default)]
pub struct Channels {
    map: Mutex<HashMap<String, Vec<Subscriber>>>,
    next: AtomicU64,
}

impl Channels {
    /// Adds a subscriber of `channel`: its id, its queue, and whether it is the channel's first.
    pub fn add(&self, channel: &str) -> (u64, Arc<ByteQueue<Bytes>>, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ByteQueue::new(SUBSCRIPTION_BYTES));
        let mut map = self.map.lock().expect("channels lock");
        let subs = map.entry(channel.to_owned()).or_default();
        subs.push((id, queue.clone()));
        (id, queue, subs.len() == 1)
    }

    /// Removes a subscriber; whether the channel has none left.
    pub fn remove(&self, channel: &str, id: u64) -> bool {
        let mut map = self.map.lock().expect("channels lock");
        let Some(subs) = map.get_mut(channel) else {
            return true;
        };
        subs.retain(|(i, q)| {
            if *i == id {
                q.close();
            }
            *i != id
        });
        if subs.is_empty() {
            map.remove(channel);
            true
        } else {
            false
        }
    }

    /// Whether `channel` has a subscriber here.
    pub fn has(&self, channel: &str) -> bool {
        self.map
            .lock()
            .expect("channels lock")
            .contains_key(channel)
    }

    /// Every channel with a subscriber here.
    pub fn names(&self) -> Vec<String> {
        self.map
            .lock()
            .expect("channels lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Hands `payload` to every subscriber of `channel` (never waits: a full one lags).
    pub fn deliver(&self, channel: &str, payload: &Bytes) {
        let map = self.map.lock().expect("channels lock");
        for (_, queue) in map.get(channel).into_iter().flatten() {
            queue.push(payload.clone(), payload.len());
        }
    }

    /// Tells every subscriber that messages may have been lost (the connection dropped).
    pub fn lag_all(&self) {
        let map = self.map.lock().expect("channels lock");
        for (_, queue) in map.values().flatten() {
            queue.mark_lagged();
        }
    }

    /// Ends every subscription (the relay stops).
    pub fn close_all(&self) {
        let map = self.map.lock().expect("channels lock");
        for (_, queue) in map.values().flatten() {
            queue.close();
        }
    }
}

/// The in-process relay: `publish` hands the message to this process's subscribers directly.
#[derive(Default, Clone)]
pub struct LocalRelay {
    channels: Arc<Channels>,
}

#[async_trait]
impl Relay for LocalRelay {
    fn publish(&self, channel: &str, payload: Bytes) {
        self.channels.deliver(channel, &payload);
    }

    async fn subscribe(&self, channel: &str) -> RelaySubscription {
        let (id, queue, _) = self.channels.add(channel);
        let channels = self.channels.clone();
        let channel = channel.to_owned();
        RelaySubscription::new(queue, move || {
            channels.remove(&channel, id);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Popped;

    #[tokio::test]
    async fn delivers_in_order_to_subscribers_until_dropped() {
        let relay = LocalRelay::default();
        relay.publish("c", Bytes::from_static(b"before anyone listened"));
        let mut a = relay.subscribe("c").await;
        let mut b = relay.subscribe("c").await;
        let mut other = relay.subscribe("d").await;
        for m in [&b"1"[..], b"2"] {
            relay.publish("c", Bytes::copy_from_slice(m));
        }
        for sub in [&mut a, &mut b] {
            assert_eq!(
                sub.next().await,
                Some(Popped::Item(Bytes::from_static(b"1")))
            );
            assert_eq!(
                sub.next().await,
                Some(Popped::Item(Bytes::from_static(b"2")))
            );
        }
        relay.publish("d", Bytes::from_static(b"x"));
        assert_eq!(
            other.next().await,
            Some(Popped::Item(Bytes::from_static(b"x")))
        );
        drop(a);
        drop(b);
        assert!(!relay.channels.has("c"), "the last drop unsubscribes");
        assert!(relay.channels.has("d"));
    }
}
