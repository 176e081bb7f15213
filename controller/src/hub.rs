//! Fan-out of signed bundles to subscribed agents, one `watch` channel per tenant: a push wakes
//! every subscriber of the tenant at once, and a slow subscriber simply skips to the newest
//! bundle (the channel holds one value: bounded by construction, invariant 6).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::bytes::Bytes;
use tokio::sync::watch;

/// A bundle ready to send.
#[derive(Debug)]
pub struct Published {
    /// Its version.
    pub version: u64,
    /// The signed envelope.
    pub bundle: Bytes,
}

type Slot = watch::Sender<Option<Arc<Published>>>;

/// Tenants' current bundles, revocations, and who is connected.
#[derive(Default)]
pub struct Hub {
    tenants: Mutex<HashMap<String, Slot>>,
    revocations: watch::Sender<u64>,
    connected: Mutex<HashMap<String, u32>>,
    pin_decisions: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Hub {
    fn slot<R>(&self, tenant: &str, f: impl FnOnce(&Slot) -> R) -> R {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let slot = tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| watch::channel(None).0);
        f(slot)
    }

    /// Makes `bundle` the tenant's current one and wakes its subscribers.
    pub fn publish(&self, tenant: &str, version: u64, bundle: Bytes) {
        let p = Arc::new(Published { version, bundle });
        self.slot(tenant, |s| {
            s.send_replace(Some(p));
        });
    }

    /// Follows a tenant's current bundle.
    pub fn subscribe(&self, tenant: &str) -> watch::Receiver<Option<Arc<Published>>> {
        self.slot(tenant, watch::Sender::subscribe)
    }

    /// Says an agent was revoked: open subscriptions re-check theirs.
    pub fn revoked(&self) {
        self.revocations.send_modify(|n| *n += 1);
    }

    /// Follows revocations.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Wakes when an admin decides a tool definition of `tenant` (tool integrity): open
    /// subscriptions of the tenant then send the new decisions.
    pub fn pin_decisions(&self, tenant: &str) -> watch::Receiver<u64> {
        let mut map = self.pin_decisions.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.retain(|_, s| s.receiver_count() > 0);
        }
        map.entry(tenant.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Says a tool definition of `tenant` was decided.
    pub fn pin_decided(&self, tenant: &str) {
        let map = self.pin_decisions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(tenant) {
            s.send_modify(|n| *n += 1);
        }
    }

    /// Counts an open subscription of `agent_id` until the guard drops.
    pub fn connect(self: &Arc<Self>, agent_id: &str) -> ConnectedGuard {
        *self
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent_id.to_owned())
            .or_default() += 1;
        ConnectedGuard {
            hub: Arc::clone(self),
            agent_id: agent_id.to_owned(),
        }
    }

    /// Whether `agent_id` has a subscription open.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(agent_id)
    }

    /// Agents with a subscription open.
    pub fn connected_count(&self) -> usize {
        self.connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// See [`Hub::connect`].
pub struct ConnectedGuard {
    hub: Arc<Hub>,
    agent_id: String,
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        let mut connected = self.hub.connected.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = connected.get_mut(&self.agent_id) {
            *n -= 1;
            if *n == 0 {
                connected.remove(&self.agent_id);
            }
        }
    }
}
