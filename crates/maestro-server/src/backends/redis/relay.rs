//! The [`Relay`] over Redis pub/sub: best-effort messages between the servers on one Redis,
//! outside the journal (live terminal bytes; see `terminal`).
//!
//! Two tasks, owned by the server's task tracker and stopped by its shutdown token:
//! - the *publisher* takes messages from a bytes-bounded queue and `PUBLISH`es them in order
//!   on one multiplexed connection. `publish` only queues, so it never waits on Redis; when
//!   the queue is full or Redis is down messages are dropped (subscribers notice gaps in the
//!   terminal's byte positions and ask for a fresh screen);
//! - the *subscriber* holds a dedicated pub/sub connection, subscribes to the channels this
//!   server's subscribers want (on the first subscriber of a channel, and again, all of them,
//!   after every reconnect, with the back-off of the event subscriber), and hands each message
//!   to the channel's subscribers. After a reconnect every subscription sees `Lagged`, since
//!   messages published meanwhile are gone.
//!
//! Channels are named `<prefix>relay:<channel>`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::relay::Channels;
use crate::error::{Error, Result};
use crate::ports::{Relay, RelaySubscription};
use crate::queue::{ByteQueue, Popped};

/// Bytes waiting to be published before new messages are dropped.
const OUTBOX_BYTES: usize = 4 * 1024 * 1024;
/// Subscription changes waiting for the subscriber task.
const COMMANDS: usize = 1024;
/// How long `subscribe` waits for Redis to confirm (a subscriber that gives up still gets
/// messages once the subscription is made; it may miss the first ones).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// See the module documentation.
#[derive(Clone)]
pub struct RedisRelay {
    channels: Arc<Channels>,
    outbox: Arc<ByteQueue<(String, Bytes)>>,
    commands: mpsc::Sender<Command>,
}

impl RedisRelay {
    /// Starts the publisher and the subscriber on `tasks`; they stop with `stop`.
    pub fn start(
        url: &str,
        prefix: &str,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Storage(format!("invalid REDIS_URL: {e}")))?;
        let channels = Arc::new(Channels::default());
        let outbox = Arc::new(ByteQueue::new(OUTBOX_BYTES));
        let (commands, receiver) = mpsc::channel(COMMANDS);
        let prefix = format!("{prefix}relay:");
        tasks.spawn(publisher(
            client.clone(),
            prefix.clone(),
            outbox.clone(),
            stop.clone(),
        ));
        tasks.spawn(subscriber(
            client,
            prefix,
            channels.clone(),
            receiver,
            stop.clone(),
        ));
        let closing = outbox.clone();
        let channels_closing = channels.clone();
        tasks.spawn(async move {
            stop.cancelled().await;
            closing.close();
            channels_closing.close_all();
        });
        Ok(Self {
            channels,
            outbox,
            commands,
        })
    }
}

#[async_trait]
impl Relay for RedisRelay {
    fn publish(&self, channel: &str, payload: Bytes) {
        let size = payload.len() + channel.len();
        if !self.outbox.push((channel.to_owned(), payload), size) {
            tracing::debug!(channel, "relay outbox full; message dropped");
        }
    }

    async fn subscribe(&self, channel: &str) -> RelaySubscription {
        let (id, queue, first) = self.channels.add(channel);
        if first {
            let (ack, confirmed) = oneshot::channel();
            if self
                .commands
                .send(Command::Subscribe(channel.to_owned(), ack))
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(SUBSCRIBE_WAIT, confirmed).await;
            }
        }
        let channels = self.channels.clone();
        let commands = self.commands.clone();
        let channel = channel.to_owned();
        RelaySubscription::new(queue, move || {
            if channels.remove(&channel, id) {
                // A full command queue leaves the channel subscribed: its messages find no
                // subscriber here and are dropped, which costs only bandwidth.
                let _ = commands.try_send(Command::Unsubscribe(channel));
            }
        })
    }
}

async fn publisher(
    client: redis::Client,
    prefix: String,
    outbox: Arc<ByteQueue<(String, Bytes)>>,
    stop: CancellationToken,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(50);
    let mut retry_at = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = outbox.pop() => next,
        };
        let (channel, payload) = match next {
            None => return,
            Some(Popped::Lagged) => {
                tracing::debug!("relay messages were dropped before publishing");
                continue;
            }
            Some(Popped::Item(item)) => item,
        };
        if conn.is_none() {
            if tokio::time::Instant::now() < retry_at {
                continue;
            }
            match tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(50);
                }
                _ => {
                    tracing::debug!("relay publisher cannot connect to Redis; dropping");
                    retry_at = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(format!("{prefix}{channel}"))
            .arg(&payload[..])
            .query_async(c)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "relay publish failed; reconnecting");
            conn = None;
            retry_at = tokio::time::Instant::now() + backoff;
        }
    }
}

async fn subscriber(
    client: redis::Client,
    prefix: String,
    channels: Arc<Channels>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    'connect: loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.get_async_pubsub() => r,
        };
        let (mut sink, mut stream) = match connected {
            Ok(p) => p.split(),
            Err(e) => {
                tracing::debug!(error = %e, "relay subscriber cannot connect; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        for name in channels.names() {
            if sink.subscribe(format!("{prefix}{name}")).await.is_err() {
                continue 'connect;
            }
        }
        backoff = Duration::from_millis(50);
        if !first {
            // Whatever was published while we were away is lost.
            channels.lag_all();
            tracing::info!("relay resubscribed after losing Redis");
        }
        first = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(name, ack)) => {
                        if sink.subscribe(format!("{prefix}{name}")).await.is_err() {
                            // The reconnect subscribes every channel that has subscribers.
                            continue 'connect;
                        }
                        let _ = ack.send(());
                    }
                    Some(Command::Unsubscribe(name)) => {
                        if !channels.has(&name)
                            && sink.unsubscribe(format!("{prefix}{name}")).await.is_err()
                        {
                            continue 'connect;
                        }
                    }
                },
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    if let Some(name) = msg.get_channel_name().strip_prefix(&prefix) {
                        channels.deliver(name, &Bytes::copy_from_slice(msg.get_payload_bytes()));
                    }
                }
            }
        }
        tracing::warn!("lost the Redis relay connection; reconnecting");
    }
}
