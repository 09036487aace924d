//! The event channel subscriber and the journal: reconnecting with back-off, catching up from
//! the journal after each (re)connect, filling gaps the channel leaves, and parsing channel
//! messages and journal entries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use maestro_protocol::EventRecord;
use tokio_util::sync::CancellationToken;

use super::keys::Keys;
use super::pool::{Conn, Pool, io_error};
use super::sequencer::{Offer, Sequencer};
use crate::error::{Error, Result};

/// `(after, upto]` of a scope's journal.
pub(super) fn read_journal(
    conn: &mut Conn,
    keys: &Keys,
    scope: &str,
    after: u64,
    upto: u64,
) -> Result<Vec<EventRecord>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.journal(scope))
        .arg(format!("0-{}", after + 1))
        .arg(format!("0-{upto}"))
        .query(conn)
        .map_err(io_error)?;
    entries
        .into_iter()
        .map(|(id, fields)| parse_entry(&id, &fields))
        .collect()
}

pub(super) fn parse_entry(id: &str, fields: &[(String, String)]) -> Result<EventRecord> {
    let seq: u64 = id
        .strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Storage(format!("unexpected journal id {id}")))?;
    let body = fields
        .iter()
        .find(|(k, _)| k == "e")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Error::Storage("journal entry without body".into()))?;
    let mut rec: EventRecord = serde_json::from_str(body)
        .map_err(|e| Error::Storage(format!("corrupt journal entry: {e}")))?;
    rec.seq = seq;
    Ok(rec)
}

/// The channel subscriber: reconnects forever, catches up from the journal after each (re)connect.
pub(super) async fn subscriber(
    client: redis::Client,
    keys: Keys,
    pool: Arc<Pool>,
    seq: Arc<Sequencer>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.get_async_pubsub() => r,
        };
        let mut pubsub = match connected {
            Ok(p) => p,
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::debug!(error = %e, "redis subscriber cannot connect; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = pubsub.subscribe(keys.channel()).await {
            tracing::debug!(error = %e, "redis subscribe failed; retrying");
            continue;
        }
        backoff = Duration::from_millis(50);
        healthy.store(true, Ordering::Relaxed);
        // Subscribed: now anything missed while we were away is in the journal.
        let catch_up = {
            let (pool, keys, seq) = (pool.clone(), keys.clone(), seq.clone());
            tokio::task::spawn_blocking(move || catch_up(&pool, &keys, &seq)).await
        };
        if let Ok(Err(e)) | Err(e) = catch_up.map_err(|e| Error::Internal(e.to_string())) {
            // Going on would deliver new events past the ones not caught up: try again.
            healthy.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "catching up from the journal failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        tracing::info!("subscribed to the Redis event channel");
        let mut messages = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(msg) = msg else { break };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Some(rec) = parse_message(&payload) else {
                tracing::warn!("malformed event message on the Redis channel");
                continue;
            };
            if let Offer::Gap { after } = seq.offer(&rec) {
                let (pool, keys, seq) = (pool.clone(), keys.clone(), seq.clone());
                let filled = tokio::task::spawn_blocking(move || {
                    let scope = rec.scope.clone();
                    let upto = rec.seq - 1;
                    fill_gap(&seq, rec, GAP_READ_ATTEMPTS, || {
                        let mut c = pool.get()?;
                        let r = read_journal(&mut c, &keys, &scope, after, upto);
                        if r.is_ok() {
                            pool.put(c);
                        }
                        r
                    })
                })
                .await;
                if !matches!(filled, Ok(true)) {
                    // Nothing past the hole was delivered: resubscribing catches up from the
                    // journal, in order, before anything new.
                    tracing::warn!("cannot read the journal to fill a gap; resubscribing");
                    break;
                }
            }
        }
        healthy.store(false, Ordering::Relaxed);
        tracing::warn!("lost the Redis event channel; reconnecting");
    }
}

/// Journal reads tried before a gap is left to the resubscription's catch-up.
const GAP_READ_ATTEMPTS: u32 = 3;

/// Delivers the events before `rec` that the channel skipped (read with `read`, retried), then
/// `rec`. If the journal cannot be read, `rec` is held, not delivered — nothing goes out past a
/// hole — and `false` tells the caller to resubscribe and catch up.
fn fill_gap(
    seq: &Sequencer,
    rec: EventRecord,
    attempts: u32,
    mut read: impl FnMut() -> Result<Vec<EventRecord>>,
) -> bool {
    for attempt in 0..attempts {
        match read() {
            Ok(mut gap) => {
                gap.push(rec);
                seq.fill(gap);
                return true;
            }
            Err(e) => {
                tracing::debug!(error = %e, attempt, "journal read for a gap failed");
                if attempt + 1 < attempts {
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
            }
        }
    }
    seq.hold(rec);
    false
}

fn parse_message(payload: &str) -> Option<EventRecord> {
    let (seq, body) = payload.split_once('|')?;
    let mut rec: EventRecord = serde_json::from_str(body).ok()?;
    rec.seq = seq.parse().ok()?;
    Some(rec)
}

/// Delivers every event after what each scope last delivered; scopes never seen start at the
/// head they have now (their history predates this server).
fn catch_up(pool: &Pool, keys: &Keys, seq: &Sequencer) -> Result<()> {
    let mut conn = pool.get()?;
    let mut heads = HashMap::new();
    let pattern = format!("{}seq:*", keys.prefix);
    // SCAN, not KEYS: never block Redis on a big keyspace.
    let mut scopes: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .map_err(io_error)?;
        scopes.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    scopes.sort();
    scopes.dedup();
    for key in scopes {
        let head: u64 = redis::cmd("GET")
            .arg(&key)
            .query(&mut conn)
            .map_err(io_error)?;
        let scope = key
            .trim_start_matches(&format!("{}seq:", keys.prefix))
            .to_owned();
        heads.insert(scope, head);
    }
    let first_time = seq.is_new();
    if first_time {
        seq.baseline(heads.clone());
    }
    for (scope, head) in heads {
        let after = seq.last(&scope);
        if head > after {
            let recs = read_journal(&mut conn, keys, &scope, after, head)?;
            seq.fill(recs);
        }
    }
    pool.put(conn);
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast;

    use super::super::sequencer::tests::{drain, rec};
    use super::*;

    #[test]
    fn a_gap_whose_journal_read_fails_delivers_nothing_past_the_hole() {
        let (bus, mut rx) = broadcast::channel(64);
        let seq = Sequencer::new(bus);
        assert!(matches!(seq.offer(&rec("p", 1)), Offer::Delivered));
        drain(&mut rx);
        // The channel skipped 2; reading it fails every time: 3 is not delivered.
        let mut tries = 0;
        let filled = fill_gap(&seq, rec("p", 3), 3, || {
            tries += 1;
            Err(Error::Unavailable("journal down".into()))
        });
        assert!(!filled);
        assert_eq!(tries, 3);
        assert!(drain(&mut rx).is_empty(), "nothing past the hole");
        // The catch-up after resubscribing brings 2; 3 (held) follows, once.
        seq.fill(vec![rec("p", 2), rec("p", 3)]);
        assert_eq!(drain(&mut rx), ["p:2", "p:3"]);
        // A read that fails once, then works, fills the gap.
        let mut tries = 0;
        let filled = fill_gap(&seq, rec("p", 5), 3, || {
            tries += 1;
            if tries == 1 {
                Err(Error::Unavailable("blip".into()))
            } else {
                Ok(vec![rec("p", 4)])
            }
        });
        assert!(filled);
        assert_eq!(drain(&mut rx), ["p:4", "p:5"]);
    }
}
