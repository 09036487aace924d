//! A queue bounded by the bytes it holds, for one consumer that may fall behind.
//!
//! Why its own type: the live terminal must never make the agent wait for a slow reader (a
//! host that does not read its input, a Redis that stalls; viewers read output from the
//! terminal's ring instead, see `terminal::term`). Counting messages does not bound memory when
//! one message may be a few bytes or a megabyte, so the bound is on bytes. What happens at the
//! bound is the caller's choice:
//! - [`ByteQueue::push`] is *lossy*: at the bound it drops everything queued and every later
//!   push until the consumer has seen [`Popped::Lagged`]; the consumer then starts again from a
//!   fresh state (a relay mirror asks the terminal's owner for its screen);
//! - [`ByteQueue::try_push`] refuses the item and leaves the queue as it was (keystrokes for a
//!   host that does not read: the typist is told);
//! - [`ByteQueue::force_push`] ignores the bound, for the few small messages (and the one
//!   snapshot) a consumer must get whatever its state; callers bound those themselves.
//!
//! One consumer: wake-ups use [`Notify::notify_one`], whose stored permit means a push between
//! the consumer's check and its wait is never missed.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// What [`ByteQueue::pop`] yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    Item(T),
    /// Items were dropped since the last pop (overflow, or [`ByteQueue::mark_lagged`]); what
    /// follows is complete again.
    Lagged,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ByteQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Notify,
    cap: usize,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    lagged: bool,
    closed: bool,
}

impl<T> ByteQueue<T> {
    /// A queue that holds at most `cap` bytes (one item larger than `cap` is accepted when the
    /// queue is empty, so nothing is too big to ever pass).
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                lagged: false,
                closed: false,
            }),
            ready: Notify::new(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().expect("queue lock")
    }

    /// Queues `item` (of `size` bytes), or — at the bound — drops it and everything queued and
    /// marks the queue lagged. Returns whether the item was queued; the first overflow since
    /// the consumer last saw [`Popped::Lagged`] returns `false` and so does every push until it
    /// does.
    pub fn push(&self, item: T, size: usize) -> bool {
        let mut inner = self.lock();
        if inner.closed || inner.lagged {
            return false;
        }
        if !inner.items.is_empty() && inner.bytes.saturating_add(size) > self.cap {
            inner.items.clear();
            inner.bytes = 0;
            inner.lagged = true;
            drop(inner);
            self.ready.notify_one();
            return false;
        }
        inner.bytes += size;
        inner.items.push_back((item, size));
        drop(inner);
        self.ready.notify_one();
        true
    }

    /// Queues `item` if it fits (or the queue is empty); gives it back otherwise.
    pub fn try_push(&self, item: T, size: usize) -> Result<(), T> {
        let mut inner = self.lock();
        if inner.closed || (!inner.items.is_empty() && inner.bytes.saturating_add(size) > self.cap)
        {
            return Err(item);
        }
        inner.bytes += size;
        inner.items.push_back((item, size));
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues `item` whatever the bound (not after [`close`](Self::close)).
    pub fn force_push(&self, item: T, size: usize) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.bytes += size;
        inner.items.push_back((item, size));
        drop(inner);
        self.ready.notify_one();
    }

    /// Drops everything queued and clears the lagged mark: the caller is about to queue a
    /// fresh start.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.items.clear();
        inner.bytes = 0;
        inner.lagged = false;
    }

    /// Drops everything queued and marks the queue lagged, as an overflow does (the producer
    /// knows messages were lost elsewhere, e.g. while a connection was down).
    pub fn mark_lagged(&self) {
        let mut inner = self.lock();
        inner.items.clear();
        inner.bytes = 0;
        inner.lagged = true;
        drop(inner);
        self.ready.notify_one();
    }

    /// No more items are accepted; the consumer gets what is queued, then `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The next item, [`Popped::Lagged`] once after items were dropped, or `None` once the
    /// queue is closed and drained. One consumer only.
    pub async fn pop(&self) -> Option<Popped<T>> {
        loop {
            {
                let mut inner = self.lock();
                if let Some((item, size)) = inner.items.pop_front() {
                    inner.bytes -= size;
                    return Some(Popped::Item(item));
                }
                if inner.lagged {
                    inner.lagged = false;
                    return Some(Popped::Lagged);
                }
                if inner.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<T>(q: &ByteQueue<T>) -> Option<Popped<T>> {
        use std::future::Future;
        let mut fut = std::pin::pin!(q.pop());
        let waker = std::task::Waker::noop();
        match fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(p) => p,
            std::task::Poll::Pending => panic!("nothing to pop"),
        }
    }

    #[test]
    fn bounded_by_bytes_and_lossy_at_the_bound() {
        let q = ByteQueue::new(10);
        assert!(q.push("a", 4));
        assert!(q.push("b", 6));
        assert_eq!(q.bytes(), 10);
        // One more byte overflows: everything goes, and so does every push until the consumer
        // has seen the gap.
        assert!(!q.push("c", 1));
        assert_eq!(q.bytes(), 0);
        assert!(!q.push("d", 1));
        assert_eq!(now(&q), Some(Popped::Lagged));
        assert!(q.push("e", 1));
        assert_eq!(now(&q), Some(Popped::Item("e")));
    }

    #[test]
    fn one_big_item_passes_an_empty_queue() {
        let q = ByteQueue::new(10);
        assert!(q.push("big", 100));
        assert!(!q.push("next", 1), "over the bound while the big one waits");
        let q = ByteQueue::new(10);
        assert_eq!(q.try_push("big", 100), Ok(()));
        assert_eq!(q.try_push("more", 1), Err("more"));
        assert_eq!(q.bytes(), 100, "a refused item changes nothing");
        assert_eq!(now(&q), Some(Popped::Item("big")));
    }

    #[test]
    fn forced_items_reset_and_close() {
        let q = ByteQueue::new(1);
        q.force_push("hello", 50);
        q.force_push("screen", 50);
        assert_eq!(q.bytes(), 100);
        assert!(!q.push("live", 1));
        assert_eq!(now(&q), Some(Popped::Lagged));
        q.force_push("x", 1);
        q.reset();
        assert_eq!(q.bytes(), 0);
        q.mark_lagged();
        assert_eq!(now(&q), Some(Popped::Lagged));
        q.force_push("last", 1);
        q.close();
        q.force_push("after close", 1);
        assert!(!q.push("after close", 1));
        assert_eq!(now(&q), Some(Popped::Item("last")));
        assert_eq!(now(&q), None);
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let q = std::sync::Arc::new(ByteQueue::new(100));
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(7u8, 1);
        assert_eq!(consumer.await.unwrap(), Some(Popped::Item(7)));
    }
}
