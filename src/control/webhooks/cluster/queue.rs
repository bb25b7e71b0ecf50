//! The worker's queue in cluster mode: [`RedisQueue`] answers the worker at once
//! from local state ([`QState`]) and leaves every change as an [`Op`] for the
//! pump to write to Redis, so the worker never waits on Redis.
//!
//! Local state: the deliveries this replica holds (read from the stream or
//! taken over; at most [`HOLD_MAX`]), the changes not yet written (new
//! deliveries at most [`OUTBOX_MAX`]: beyond it new events are dropped and
//! counted — the local buffer while Redis is down), and the cluster's depth and
//! oldest pending delivery as last read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::super::queue::{Delivery, DeliveryQueue, Full};
use super::lock;

/// Deliveries one replica holds at most (in flight or about to be).
pub(crate) const HOLD_MAX: usize = super::super::MAX_IN_FLIGHT;
/// New deliveries buffered at most while they cannot be written (Redis down).
pub(crate) const OUTBOX_MAX: usize = 10_000;
/// Log entries buffered at most (older ones are dropped first).
const LOG_BUFFER: usize = 1000;

/// A change for the pump to write.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Enqueue {
        d: Delivery,
        once: bool,
    },
    /// An attempt starts (its count and next time are saved first).
    Begin {
        key: String,
        json: String,
    },
    Retry {
        entry: String,
        key: String,
        json: String,
        next_at: i64,
    },
    Done {
        entry: String,
        key: String,
    },
    Forget {
        endpoint_id: String,
    },
    Log {
        endpoint_id: String,
        json: String,
    },
}

/// A delivery this replica holds, with its stream entry.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) entry: String,
    pub(crate) d: Delivery,
}

#[derive(Debug, Default)]
pub(crate) struct QState {
    pub(crate) outbox: VecDeque<Op>,
    pub(crate) logs: VecDeque<Op>,
    /// `Enqueue` ops in `outbox`.
    pub(crate) new_in_outbox: usize,
    pub(crate) held: BTreeMap<String, Held>,
    /// The cluster's pending deliveries, and the oldest one's creation (ms), as
    /// last read.
    pub(crate) depth: usize,
    pub(crate) oldest: Option<i64>,
    pub(crate) max: usize,
}

impl QState {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Takes the buffered changes (settlements first, then logs).
    pub(crate) fn take(&mut self) -> Vec<Op> {
        self.new_in_outbox = 0;
        let mut v: Vec<Op> = self.outbox.drain(..).collect();
        v.extend(self.logs.drain(..));
        v
    }

    /// Puts back changes that could not be written, before newer ones.
    pub(crate) fn put_back(&mut self, ops: Vec<Op>) {
        for op in ops.into_iter().rev() {
            match op {
                Op::Log { .. } => {
                    if self.logs.len() < LOG_BUFFER {
                        self.logs.push_front(op);
                    }
                }
                Op::Enqueue { .. } => {
                    self.new_in_outbox += 1;
                    self.outbox.push_front(op);
                }
                _ => self.outbox.push_front(op),
            }
        }
    }

    pub(crate) fn push_log(&mut self, op: Op) {
        if self.logs.len() >= LOG_BUFFER {
            self.logs.pop_front();
        }
        self.logs.push_back(op);
    }
}

/// The worker's [`DeliveryQueue`] in cluster mode.
pub(crate) struct RedisQueue {
    state: Arc<Mutex<QState>>,
    wake: Arc<Notify>,
    node: String,
}

impl RedisQueue {
    pub(crate) fn new(state: Arc<Mutex<QState>>, wake: Arc<Notify>, node: String) -> Self {
        Self { state, wake, node }
    }

    fn add(&self, d: Delivery, once: bool) -> Result<(), Full> {
        let mut st = lock(&self.state);
        if st.new_in_outbox >= OUTBOX_MAX {
            return Err(Full);
        }
        st.new_in_outbox += 1;
        st.outbox.push_back(Op::Enqueue { d, once });
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    fn op(&self, op: Op) {
        lock(&self.state).outbox.push_back(op);
        self.wake.notify_one();
    }
}

impl DeliveryQueue for RedisQueue {
    fn push(&mut self, d: Delivery) -> Result<(), Full> {
        self.add(d, false)
    }

    fn push_once(&mut self, d: Delivery) -> Result<(), Full> {
        self.add(d, true)
    }

    fn due(&self, now: i64, limit: usize, busy: &dyn Fn(&str) -> bool) -> Vec<Delivery> {
        lock(&self.state)
            .held
            .iter()
            .filter(|(k, h)| h.d.next_at <= now && !busy(k))
            .take(limit)
            .map(|(_, h)| h.d.clone())
            .collect()
    }

    fn next_due(&self) -> Option<i64> {
        lock(&self.state).held.values().map(|h| h.d.next_at).min()
    }

    fn begin(&mut self, key: &str, attempt: u32, next_at: i64) {
        let mut st = lock(&self.state);
        let Some(h) = st.held.get_mut(key) else {
            return;
        };
        h.d.attempt = attempt;
        h.d.next_at = next_at;
        h.d.node = Some(self.node.clone());
        let json = serde_json::to_string(&h.d).unwrap_or_default();
        st.outbox.push_back(Op::Begin {
            key: key.to_string(),
            json,
        });
        drop(st);
        self.wake.notify_one();
    }

    fn retry(&mut self, key: &str, attempt: u32, next_at: i64) {
        let held = lock(&self.state).held.remove(key);
        let Some(mut h) = held else {
            return;
        };
        h.d.attempt = attempt;
        h.d.next_at = next_at;
        h.d.node = None;
        let json = serde_json::to_string(&h.d).unwrap_or_default();
        self.op(Op::Retry {
            entry: h.entry,
            key: key.to_string(),
            json,
            next_at,
        });
    }

    fn remove(&mut self, key: &str) {
        let entry = lock(&self.state)
            .held
            .remove(key)
            .map(|h| h.entry)
            .unwrap_or_default();
        self.op(Op::Done {
            entry,
            key: key.to_string(),
        });
    }

    fn len(&self) -> usize {
        let st = lock(&self.state);
        st.depth + st.new_in_outbox
    }

    fn oldest(&self) -> Option<i64> {
        let st = lock(&self.state);
        let local = st
            .outbox
            .iter()
            .filter_map(|o| match o {
                Op::Enqueue { d, .. } => Some(d.created),
                _ => None,
            })
            .min();
        match (st.oldest, local) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn keys_for(&self, endpoint_id: &str) -> Vec<String> {
        lock(&self.state)
            .held
            .values()
            .filter(|h| h.d.endpoint_id == endpoint_id)
            .map(|h| h.d.key())
            .collect()
    }

    fn get(&self, key: &str) -> Option<Delivery> {
        lock(&self.state).held.get(key).map(|h| h.d.clone())
    }

    fn set_limit(&mut self, max: usize) {
        lock(&self.state).max = max;
    }

    fn forget_endpoint(&mut self, endpoint_id: &str) {
        let mut st = lock(&self.state);
        let held: Vec<String> = st
            .held
            .iter()
            .filter(|(_, h)| h.d.endpoint_id == endpoint_id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in held {
            if let Some(h) = st.held.remove(&k) {
                st.outbox.push_back(Op::Done {
                    entry: h.entry,
                    key: k,
                });
            }
        }
        st.outbox.push_back(Op::Forget {
            endpoint_id: endpoint_id.to_string(),
        });
        drop(st);
        self.wake.notify_one();
    }
}
