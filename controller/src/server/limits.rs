//! Connection caps: connections not authorised yet per address, connections per client
//! certificate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections not yet authorised (handshaking, without a client certificate, or with one that
/// has made no authorised request) per address; IPv6 addresses by /64 (one host gets a whole
/// /64), IPv4-mapped IPv6 as IPv4.
#[derive(Debug, Default)]
pub(super) struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// Most connections one client certificate (by fingerprint) may hold at once, authorised or
/// not: a stolen certificate cannot take every `max_connections` permit.
pub(super) const MAX_PER_IDENTITY: usize = 256;

/// Open connections per client certificate.
#[derive(Debug, Default)]
pub(super) struct PerIdentity(Mutex<HashMap<String, usize>>);

/// One connection of one certificate; released on drop.
#[derive(Debug)]
pub(super) struct IdentitySlot {
    counts: Arc<PerIdentity>,
    id: String,
}

impl PerIdentity {
    pub(super) fn take(self: &Arc<Self>, id: String, max: usize) -> Option<IdentitySlot> {
        let mut m = lock(&self.0);
        let n = m.entry(id.clone()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IdentitySlot {
            counts: Arc::clone(self),
            id,
        })
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut m = lock(&self.counts.0);
        if let Some(n) = m.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// The key an address is counted under.
pub(super) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// One connection of one address not authorised yet; released on drop (or once authorised).
#[derive(Debug)]
pub(super) struct AddrSlot {
    counts: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    pub(super) fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddrSlot> {
        let ip = address_key(ip);
        let mut m = lock(&self.0);
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddrSlot {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut m = lock(&self.counts.0);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
