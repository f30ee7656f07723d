//! Live events for `/api/events`: while anyone listens, the daemon looks at its queue,
//! its uploads and its share at a short interval (the same `transfers` and `uploads`
//! records the API answers with) and sends what changed: `transfer` (a row's progress),
//! `state` (a row changed state or appeared), `removed`, `upload_started`, `upload`,
//! `upload_ended`, `share` (files shared) and `reach` (connected to the index, reachable).
//! A listener too slow to keep up is dropped rather than buffered without end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use smol::channel::{Receiver, Sender, TrySendError, bounded};

use super::commands::Commands;
use crate::shell::services::Services;
use crate::web::sse::Event;

/// How often the daemon looks for changes while someone listens.
pub const TICK: Duration = Duration::from_millis(500);

/// Events a listener may fall behind by before it is dropped.
const BACKLOG: usize = 256;

/// The listeners, and what they were last told.
pub struct Hub {
    listeners: Mutex<Vec<Sender<Event>>>,
    services: Arc<Services>,
}

/// What was seen at the last look.
#[derive(Default)]
struct Seen {
    transfers: BTreeMap<u64, Value>,
    uploads: BTreeMap<String, Value>,
    share: Value,
}

impl Hub {
    /// A hub with no listeners, reading the share's state from `services`.
    pub fn new(services: Arc<Services>) -> Hub {
        Hub {
            listeners: Mutex::default(),
            services,
        }
    }

    /// A new listener's events.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (sender, receiver) = bounded(BACKLOG);
        let _ = sender.try_send(Event {
            name: "hello",
            data: json!({ "tick_ms": TICK.as_millis() as u64 }).to_string(),
        });
        self.listeners.lock().push(sender);
        receiver
    }

    /// How many listen now.
    pub fn listeners(&self) -> usize {
        self.listeners.lock().len()
    }

    fn send(&self, name: &'static str, data: &Value) {
        let event = Event {
            name,
            data: data.to_string(),
        };
        self.listeners
            .lock()
            .retain(|l| match l.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => false,
            });
    }

    /// The share as `/api/status` and the `share` event show it (`null`: not sharing).
    pub fn sharing(&self) -> Value {
        let Some(sharing) = self.services.sharing() else {
            return Value::Null;
        };
        let state = sharing.state();
        let folder = sharing.folder().read();
        let folders: Vec<String> = folder
            .roots()
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        json!({
            "peer_id": state.peer_id,
            "nickname": state.nickname,
            "index": state.index.to_string(),
            "connected": state.connected,
            "reachable": state.reach.map(|r| r.reachable),
            "observed": state.reach.map(|r| r.addr.to_string()),
            "addr": sharing.addr.to_string(),
            "port_mapping": sharing.mapping().to_string(),
            "folders": folders,
            "files": folder.len(),
            "bytes": folder.bytes(),
        })
    }

    /// Look and tell, every [`TICK`], until `commands` stops answering.
    pub async fn run(self: Arc<Self>, commands: Commands) {
        let mut seen = Seen::default();
        loop {
            smol::Timer::after(TICK).await;
            if self.listeners() == 0 {
                // Nobody to tell: start afresh when someone listens again.
                seen = Seen::default();
                continue;
            }
            let Ok(transfers) = commands.records(&["transfers"]).await else {
                continue;
            };
            self.transfers(&mut seen, transfers.iter().filter_map(as_value));
            if let Ok(uploads) = commands.records(&["uploads"]).await {
                self.uploads(&mut seen, uploads.iter().filter_map(as_value));
            }
            let share = self.sharing();
            if share != seen.share {
                let reach = |s: &Value| (s["connected"].clone(), s["reachable"].clone());
                if reach(&share) != reach(&seen.share) {
                    self.send("reach", &json!({ "connected": share["connected"], "reachable": share["reachable"] }));
                }
                self.send("share", &share);
                seen.share = share;
            }
        }
    }

    fn transfers(&self, seen: &mut Seen, rows: impl Iterator<Item = Value>) {
        let mut now = BTreeMap::new();
        for row in rows.filter(|r| r["type"] == "transfer") {
            let number = row["transfer"].as_u64().unwrap_or_default();
            match seen.transfers.get(&number) {
                Some(before) if before == &row => {}
                Some(before) if before["state"] == row["state"] => self.send("transfer", &row),
                _ => self.send("state", &row),
            }
            now.insert(number, row);
        }
        for gone in seen.transfers.keys().filter(|n| !now.contains_key(n)) {
            self.send("removed", &json!({ "transfer": gone }));
        }
        seen.transfers = now;
    }

    fn uploads(&self, seen: &mut Seen, rows: impl Iterator<Item = Value>) {
        let mut now = BTreeMap::new();
        for row in rows.filter(|r| r["type"] == "upload") {
            let key = format!("{} {}", row["peer_id"], row["name"]);
            match seen.uploads.get(&key) {
                None => self.send("upload_started", &row),
                Some(before) if before != &row => self.send("upload", &row),
                Some(_) => {}
            }
            now.insert(key, row);
        }
        for (key, row) in &seen.uploads {
            if !now.contains_key(key) {
                self.send("upload_ended", row);
            }
        }
        seen.uploads = now;
    }
}

fn as_value(record: &crate::shell::present::records::Record) -> Option<Value> {
    serde_json::to_value(record).ok()
}
