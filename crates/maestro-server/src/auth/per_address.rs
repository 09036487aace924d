//! How much of a resource each client address holds right now, with a cap per address.
//!
//! The server's shared pools (open connections, Engine.IO sessions, pairing attempts in
//! progress) are bounded as a whole; without a cap per address, one client could take a whole
//! pool and leave nothing for the phone of the person who owns the server. Each pool that
//! strangers can reach keeps a [`PerAddress`]: taking a share returns a [`Hold`], and dropping
//! the hold gives it back, so a share cannot leak on an early return or a panic.
//!
//! The address is the one the rate limiter uses (`trust::client_address`): the peer, or the
//! `CF-Connecting-IP` of a request that came through the tunnel. Where only the TCP peer is
//! known (accepting a connection), the peer is the key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Shares of one pool, counted per client address.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// At most `limit` shares per address.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Arc::default(),
        }
    }

    /// Takes a share for `addr`, unless it already holds `limit`.
    pub fn try_hold(&self, addr: IpAddr) -> Option<Hold> {
        let mut held = self.held.lock().expect("per-address lock");
        let count = held.entry(addr).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Hold {
            held: self.held.clone(),
            addr,
        })
    }

    /// Shares `addr` holds now.
    pub fn held(&self, addr: IpAddr) -> usize {
        self.held
            .lock()
            .expect("per-address lock")
            .get(&addr)
            .copied()
            .unwrap_or(0)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// One share of a [`PerAddress`] pool; given back when dropped.
#[derive(Debug)]
pub struct Hold {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    addr: IpAddr,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("per-address lock");
        if let Some(count) = held.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                // Addresses that hold nothing take no memory.
                held.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_limit_and_dropping_gives_back() {
        let pool = PerAddress::new(2);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "198.51.100.1".parse().unwrap();
        let first = pool.try_hold(a).unwrap();
        let _second = pool.try_hold(a).unwrap();
        assert!(pool.try_hold(a).is_none(), "a third share is refused");
        assert!(
            pool.try_hold(b).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert_eq!(pool.held(a), 1);
        assert!(pool.try_hold(a).is_some());
        assert_eq!(pool.held(b), 0, "b's dropped share was given back");
        assert!(pool.held.lock().unwrap().get(&b).is_none());
    }
}
