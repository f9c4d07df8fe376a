//! Connection slots. A full server must not turn away a real request because of sockets that
//! do nothing: when every slot is taken, the newcomer takes the slot of the connection that has
//! been idle longest (still in its TLS handshake, or waiting for a request head); only when all
//! of them are inside a request is it refused. So idle or slow clients cost the others at most
//! their keep-alive connection, never an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

pub struct Slots {
    max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    held: HashMap<u64, Held>,
}

struct Held {
    /// Requests being read or answered on the connection (several with HTTP/2).
    in_flight: usize,
    /// When the connection was accepted or its last request ended.
    idle_since: Instant,
    evict: Arc<Notify>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The map stays consistent whatever panicked while it was held.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection, evicting the longest-idle one when all are taken; None
    /// when every connection is inside a request.
    pub fn admit(self: &Arc<Slots>) -> Option<Slot> {
        let mut state = self.lock();
        if state.held.len() >= self.max {
            let victim = state
                .held
                .iter()
                .filter(|(_, h)| h.in_flight == 0)
                .min_by_key(|(_, h)| h.idle_since)
                .map(|(id, _)| *id)?;
            let held = state.held.remove(&victim).expect("victim is held");
            // A stored permit: it fires even if the connection is not waiting yet.
            held.evict.notify_one();
        }
        let id = state.next_id;
        state.next_id += 1;
        let evict = Arc::new(Notify::new());
        state.held.insert(
            id,
            Held {
                in_flight: 0,
                idle_since: Instant::now(),
                evict: Arc::clone(&evict),
            },
        );
        Some(Slot {
            handle: SlotHandle {
                slots: Arc::clone(self),
                id,
            },
            evict,
        })
    }
}

/// A connection's slot, given back when dropped.
pub struct Slot {
    handle: SlotHandle,
    evict: Arc<Notify>,
}

impl Slot {
    /// Resolves when a newcomer took this slot: the connection is to be closed.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// What the connection's requests mark busy.
    pub fn handle(&self) -> SlotHandle {
        self.handle.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handle.slots.lock().held.remove(&self.handle.id);
    }
}

#[derive(Clone)]
pub struct SlotHandle {
    slots: Arc<Slots>,
    id: u64,
}

impl SlotHandle {
    /// Marks a request in progress until the guard is dropped: the slot is not evictable then.
    pub fn busy(&self) -> Busy {
        if let Some(held) = self.slots.lock().held.get_mut(&self.id) {
            held.in_flight += 1;
        }
        Busy(self.clone())
    }
}

pub struct Busy(SlotHandle);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(held) = self.0.slots.lock().held.get_mut(&self.0.id) {
            held.in_flight -= 1;
            held.idle_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn evicted_now(slot: &Slot) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime
            .block_on(async { tokio::time::timeout(Duration::ZERO, slot.evicted()).await })
            .is_ok()
    }

    #[test]
    fn the_longest_idle_slot_goes_first_and_busy_ones_never() {
        let slots = Slots::new(2);
        let first = slots.admit().unwrap();
        let second = slots.admit().unwrap();
        let _busy = second.handle().busy();
        let third = slots.admit().expect("first was idle: evicted");
        assert!(evicted_now(&first), "first was told to close");
        assert!(!evicted_now(&second));
        let busy3 = third.handle().busy();
        assert!(slots.admit().is_none(), "both remaining slots are busy");
        drop(busy3);
        assert!(slots.admit().is_some(), "third is idle again");
    }
}
