//! A transaction's private view: its own writes layered over what the backend holds.
//!
//! Both backends run a transaction body against an [`Overlay`]. Reads fall through to the
//! backend's [`Base`] (a redb write transaction, or a Redis connection that `WATCH`es what it
//! reads); writes, events and counter bumps stay in the overlay until the backend commits the
//! resulting [`Changes`] — or drops them, if the body failed.

use std::collections::HashMap;

use crate::error::Result;
use crate::ports::{Collection, Deadline, PendingEvent, Reader, Txn};

/// What a backend must answer for the overlay.
pub(crate) trait Base {
    fn get(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>>;
    /// `(id, json)` of the collection (or of `owner`'s part), in creation order.
    fn list(&mut self, coll: Collection, owner: Option<&str>) -> Result<Vec<(String, Vec<u8>)>>;
    /// Whether the entity exists in the backend (ignoring the overlay).
    fn exists(&mut self, coll: Collection, id: &str) -> Result<bool>;
    /// Current value of a user counter.
    fn counter(&mut self, name: &str) -> Result<u64>;
    fn head_seq(&mut self, scope: &str) -> Result<u64>;
    /// `(id, json)` of `owner`'s part of the collection, newest first, until `visit` returns
    /// `false` ([`Reader::scan_newest_raw`]).
    fn scan_newest(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
    ) -> Result<()>;
}

/// One buffered write.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Put {
        owner: Option<String>,
        value: Vec<u8>,
        /// The entity must not exist in the store: the commit checks it atomically and fails
        /// with `CONFLICT` if it does ([`Txn::insert_raw`]).
        fresh: bool,
    },
    Delete,
}

/// Everything a successful body asked for, in the order it asked.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub writes: Vec<(Collection, String, Write)>,
    pub events: Vec<PendingEvent>,
    /// New values of user counters.
    pub counters: HashMap<String, u64>,
    /// Entities that must exist in the store for the commit to happen ([`Txn::require`]),
    /// with the resource name of the `NOT_FOUND` answer otherwise.
    pub requires: Vec<(Collection, String, &'static str)>,
    /// Deadline changes ([`Txn::schedule`]), in call order (apply in order: the last wins).
    pub deadlines: Vec<(Deadline, String, Option<i64>)>,
}

impl Changes {
    /// Whether committing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.events.is_empty()
            && self.counters.is_empty()
            && self.requires.is_empty()
            && self.deadlines.is_empty()
    }
}

pub(crate) struct Overlay<B> {
    pub base: B,
    writes: HashMap<(Collection, String), Write>,
    /// Keys in first-write order, so new entities get creation order as written.
    order: Vec<(Collection, String)>,
    events: Vec<PendingEvent>,
    counters: HashMap<String, u64>,
    requires: Vec<(Collection, String, &'static str)>,
    deadlines: Vec<(Deadline, String, Option<i64>)>,
}

impl<B: Base> Overlay<B> {
    pub fn new(base: B) -> Self {
        Self {
            base,
            writes: HashMap::new(),
            order: Vec::new(),
            events: Vec::new(),
            counters: HashMap::new(),
            requires: Vec::new(),
            deadlines: Vec::new(),
        }
    }

    /// The buffered changes, in write order.
    pub fn into_changes(mut self) -> (B, Changes) {
        let writes = self
            .order
            .into_iter()
            .filter_map(|key| {
                let w = self.writes.remove(&key)?;
                Some((key.0, key.1, w))
            })
            .collect();
        (
            self.base,
            Changes {
                writes,
                events: self.events,
                counters: self.counters,
                requires: self.requires,
                deadlines: self.deadlines,
            },
        )
    }

    fn mark(&mut self, key: (Collection, String), write: Write) {
        if !self.writes.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.writes.insert(key, write);
    }
}

impl<B: Base> Reader for Overlay<B> {
    fn get_raw(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        match self.writes.get(&(coll, id.to_owned())) {
            Some(Write::Put { value, .. }) => Ok(Some(value.clone())),
            Some(Write::Delete) => Ok(None),
            None => self.base.get(coll, id),
        }
    }

    fn list_entries_raw(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let base = self.base.list(coll, owner)?;
        let mut out = Vec::with_capacity(base.len());
        for (id, bytes) in base {
            match self.writes.get(&(coll, id.clone())) {
                Some(Write::Put { value, .. }) => out.push((id, value.clone())),
                Some(Write::Delete) => {}
                None => out.push((id, bytes)),
            }
        }
        // Entities this transaction created, in the order it created them.
        let created: Vec<(Collection, String)> =
            self.order.iter().filter(|k| k.0 == coll).cloned().collect();
        for key in created {
            let Some(Write::Put {
                owner: o, value, ..
            }) = self.writes.get(&key)
            else {
                continue;
            };
            let owned = owner.is_none() || o.as_deref() == owner;
            let value = value.clone();
            if owned && !self.base.exists(coll, &key.1)? {
                out.push((key.1.clone(), value));
            }
        }
        Ok(out)
    }

    fn head_seq(&mut self, scope: &str) -> Result<u64> {
        self.base.head_seq(scope)
    }

    fn scan_newest_raw(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        // Entities this transaction created are the newest: latest first.
        for key in self.order.iter().rev().filter(|k| k.0 == coll) {
            let Some(Write::Put {
                owner: Some(o),
                value,
                ..
            }) = self.writes.get(key)
            else {
                continue;
            };
            if o == owner && !self.base.exists(coll, &key.1)? && !visit(value)? {
                return Ok(());
            }
        }
        let writes = &self.writes;
        self.base.scan_newest(
            coll,
            owner,
            &mut |id, bytes| match writes.get(&(coll, id.to_owned())) {
                Some(Write::Put { value, .. }) => visit(value),
                Some(Write::Delete) => Ok(true),
                None => visit(bytes),
            },
        )
    }
}

impl<B: Base> Txn for Overlay<B> {
    fn put_raw(&mut self, coll: Collection, id: &str, owner: Option<&str>, value: Vec<u8>) {
        self.mark(
            (coll, id.to_owned()),
            Write::Put {
                owner: owner.map(str::to_owned),
                value,
                fresh: false,
            },
        );
    }

    fn insert_raw(&mut self, coll: Collection, id: &str, owner: Option<&str>, value: Vec<u8>) {
        self.mark(
            (coll, id.to_owned()),
            Write::Put {
                owner: owner.map(str::to_owned),
                value,
                fresh: true,
            },
        );
    }

    fn delete(&mut self, coll: Collection, id: &str) {
        self.mark((coll, id.to_owned()), Write::Delete);
    }

    fn require(&mut self, coll: Collection, id: &str, resource: &'static str) {
        self.requires.push((coll, id.to_owned(), resource));
    }

    fn emit_raw(&mut self, event: PendingEvent) {
        self.events.push(event);
    }

    fn next_counter(&mut self, name: &str) -> Result<u64> {
        let current = match self.counters.get(name) {
            Some(v) => *v,
            None => self.base.counter(name)?,
        };
        self.counters.insert(name.to_owned(), current + 1);
        Ok(current + 1)
    }

    fn schedule(&mut self, index: Deadline, id: &str, due: Option<i64>) {
        self.deadlines.push((index, id.to_owned(), due));
    }
}
