//! Reads outside transactions ([`RedisReader`], on a pooled connection), and the [`Query`]
//! abstraction plus the newest-first index scan shared with transactions.

use redis::Value as RValue;

use super::Inner;
use super::keys::Keys;
use super::pool::{Conn, blocking, io_error};
use super::scripts::{list_script, page_script};
use crate::error::{Error, Result};
use crate::ports::{Collection, Reader};

/// One entry of an index page: id, score, value (`None` when the entity is gone).
pub(super) type PageEntry = (String, u64, Option<Vec<u8>>);

/// A connection to run a read on: a transaction's (which `WATCH`es the keys it names) or a
/// plain one.
pub(super) trait Query {
    fn query<T: redis::FromRedisValue>(&mut self, keys: &[String], cmd: &redis::Cmd) -> Result<T>;

    /// Up to `size` ids of `index` scored `below` or lower (`+inf`, or `(<score>`), newest
    /// first, with their values. Two round trips: the ids, then the values, whose keys a
    /// transaction watches before it reads them.
    fn newest_page(
        &mut self,
        keys: &Keys,
        coll: Collection,
        index: &str,
        below: &str,
        size: usize,
    ) -> Result<Vec<PageEntry>> {
        // The index itself is not watched: every write that creates an entity changes it, and
        // what it creates lies above the scan (see `Reader::scan_newest_raw`).
        let page: Vec<(String, u64)> = self.query(
            &[],
            redis::cmd("ZREVRANGEBYSCORE")
                .arg(index)
                .arg(below)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(size),
        )?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let entity_keys: Vec<String> = page.iter().map(|(id, _)| keys.entity(coll, id)).collect();
        let values: Vec<Option<Vec<u8>>> =
            self.query(&entity_keys, redis::cmd("MGET").arg(&entity_keys))?;
        Ok(page
            .into_iter()
            .zip(values)
            .map(|((id, score), v)| (id, score, v))
            .collect())
    }
}

impl Query for Conn {
    fn query<T: redis::FromRedisValue>(&mut self, _: &[String], cmd: &redis::Cmd) -> Result<T> {
        cmd.query(self).map_err(io_error)
    }

    /// Outside a transaction nothing is watched: the ids and their values come in one round
    /// trip, from the `PAGE` script.
    fn newest_page(
        &mut self,
        keys: &Keys,
        coll: Collection,
        index: &str,
        below: &str,
        size: usize,
    ) -> Result<Vec<PageEntry>> {
        let flat: Vec<RValue> = page_script()
            .key(index)
            .arg(keys.entity_prefix(coll))
            .arg(below)
            .arg(size)
            .invoke(self)
            .map_err(io_error)?;
        let text = |v: &RValue| match v {
            RValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        flat.chunks(3)
            .map(|entry| match entry {
                [id, score, value] => {
                    let id = text(id);
                    let score = text(score).and_then(|s| s.parse::<u64>().ok());
                    let value = match value {
                        RValue::BulkString(b) => Some(b.clone()),
                        _ => None,
                    };
                    match (id, score) {
                        (Some(id), Some(score)) => Ok((id, score, value)),
                        _ => Err(Error::Storage("redis: malformed index page".into())),
                    }
                }
                _ => Err(Error::Storage("redis: malformed index page".into())),
            })
            .collect()
    }
}

/// Walks `owner`'s index of `coll` newest first, a page at a time (4 ids, doubling up to
/// 512), visiting each entity until `visit` says stop. Each page starts below the lowest
/// score seen so far, so an id added or removed between pages is neither visited twice nor
/// makes the scan skip one: new ids are above the scan, removed ones simply absent.
pub(super) fn scan_index_newest(
    q: &mut impl Query,
    keys: &Keys,
    coll: Collection,
    owner: &str,
    visit: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let index = keys.index(coll, Some(owner));
    let mut below = "+inf".to_owned();
    let mut size = 4;
    loop {
        let page = q.newest_page(keys, coll, &index, &below, size)?;
        let Some((_, lowest, _)) = page.last() else {
            return Ok(());
        };
        below = format!("({lowest}");
        let full = page.len() == size;
        for (id, _, value) in page {
            if let Some(v) = value
                && !visit(&id, &v)?
            {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
        size = (size * 2).min(512);
    }
}

/// Reads outside transactions, on a pooled connection.
pub(super) struct RedisReader<'a> {
    pub(super) store: &'a Inner,
    pub(super) conn: Option<Conn>,
}

impl RedisReader<'_> {
    pub(super) fn with<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => blocking(|| self.store.pool.get())?,
        };
        let r = blocking(|| f(&mut conn));
        if !matches!(r, Err(Error::Unavailable(_)) | Err(Error::Storage(_))) {
            self.conn = Some(conn);
        }
        r
    }
}

impl Drop for RedisReader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.store.pool.put(c);
        }
    }
}

impl Reader for RedisReader<'_> {
    fn get_raw(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        let key = self.store.keys.entity(coll, id);
        self.with(|c| redis::cmd("GET").arg(&key).query(c).map_err(io_error))
    }

    fn list_entries_raw(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let index = self.store.keys.index(coll, owner);
        let prefix = self.store.keys.entity_prefix(coll);
        let flat: Vec<RValue> = self.with(|c| {
            list_script()
                .key(&index)
                .arg(&prefix)
                .invoke(c)
                .map_err(io_error)
        })?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [RValue::BulkString(id), RValue::BulkString(v)] => {
                    Some((String::from_utf8_lossy(id).into_owned(), v.clone()))
                }
                _ => None,
            })
            .collect())
    }

    fn head_seq(&mut self, scope: &str) -> Result<u64> {
        let key = self.store.keys.seq(scope);
        let v: Option<u64> =
            self.with(|c| redis::cmd("GET").arg(&key).query(c).map_err(io_error))?;
        Ok(v.unwrap_or(0))
    }

    fn scan_newest_raw(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let store = self.store;
        self.with(|c| scan_index_newest(c, &store.keys, coll, owner, &mut |_, b| visit(b)))
    }
}
