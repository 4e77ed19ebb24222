//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events, resumable from a
//! resourceVersion while it is in the history (else one ERROR event with a 410 Status), with
//! label/field selector enter/leave semantics, bookmarks, streaming lists, timeouts and
//! fault-injected drops.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Shared;
use crate::error::ApiError;
use crate::resources::GroupResource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeKind};

/// What one watch asked for.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub gr: GroupResource,
    pub kind: String,
    /// apiVersion objects are served at.
    pub api_version: String,
    /// Empty for all namespaces (or cluster-scoped kinds).
    pub namespace: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub partial_metadata: bool,
    pub bookmark_interval: Duration,
}

impl WatchSpec {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// Rewrites an object for the client: requested apiVersion, or PartialObjectMetadata.
    pub fn present(&self, obj: &Value) -> Value {
        present(obj, &self.api_version, self.partial_metadata)
    }

    /// The event this watch sends for a change, if any.
    fn event_for(&self, c: &Change) -> Option<(&'static str, Value)> {
        if c.gr != self.gr || (!self.namespace.is_empty() && c.namespace != self.namespace) {
            return None;
        }
        let now = self.selects(&c.object);
        let t = match c.kind {
            ChangeKind::Added => now.then_some("ADDED")?,
            ChangeKind::Deleted => now.then_some("DELETED")?,
            ChangeKind::Modified => {
                let before = c.old.as_ref().is_none_or(|o| self.selects(o));
                match (before, now) {
                    (true, true) => "MODIFIED",
                    (true, false) => "DELETED",
                    (false, true) => "ADDED",
                    (false, false) => return None,
                }
            }
        };
        Some((t, self.present(&c.object)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {
            "kind": self.kind, "apiVersion": self.api_version, "metadata": meta}})
    }
}

pub fn present(obj: &Value, api_version: &str, partial_metadata: bool) -> Value {
    if partial_metadata {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        });
    }
    let mut o = obj.clone();
    o["apiVersion"] = json!(api_version);
    o
}

/// Where a watch starts.
pub enum Start {
    /// Synthetic ADDED events for what exists now (resourceVersion unset or "0"), optionally
    /// closed by the initial-events-end bookmark (sendInitialEvents).
    Snapshot {
        objects: Vec<Value>,
        end_bookmark: bool,
    },
    /// Replays these changes from the history first.
    Replay(Vec<Arc<Change>>),
    /// The resourceVersion is older than the history: one 410 ERROR event.
    Gone(String),
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).expect("JSON values serialize");
    s.push(b'\n');
    Bytes::from(s)
}

fn error_event(e: &ApiError) -> Value {
    json!({"type": "ERROR", "object": e.to_status()})
}

/// Runs a watch until the client leaves, the timeout passes, a fault drops it, or it lags too far
/// behind (410). Sends lines into `out`.
pub async fn run(
    shared: Arc<Shared>,
    spec: WatchSpec,
    start: Start,
    start_rv: u64,
    mut rx: broadcast::Receiver<Arc<Change>>,
    out: mpsc::Sender<Bytes>,
) {
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut last_rv = start_rv;
    let mut sent: u64 = 0;

    // Returns false when the stream must end (client gone or fault).
    async fn send_event(
        shared: &Shared,
        out: &mpsc::Sender<Bytes>,
        ev: &Value,
        sent: &mut u64,
    ) -> bool {
        if out.send(line(ev)).await.is_err() {
            return false;
        }
        *sent += 1;
        !shared.should_drop_watch(*sent)
    }

    match start {
        Start::Gone(msg) => {
            let _ = out.send(line(&error_event(&ApiError::gone(msg)))).await;
            return;
        }
        Start::Snapshot {
            objects,
            end_bookmark,
        } => {
            for o in &objects {
                let ev = json!({"type": "ADDED", "object": spec.present(o)});
                if !send_event(&shared, &out, &ev, &mut sent).await {
                    return;
                }
            }
            if end_bookmark && out.send(line(&spec.bookmark(last_rv, true))).await.is_err() {
                return;
            }
        }
        Start::Replay(changes) => {
            for c in changes {
                if let Some((t, obj)) = spec.event_for(&c) {
                    let ev = json!({"type": t, "object": obj});
                    if !send_event(&shared, &out, &ev, &mut sent).await {
                        return;
                    }
                }
            }
        }
    }

    let mut bookmark_tick = tokio::time::interval(spec.bookmark_interval);
    bookmark_tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = out.closed() => return,
            _ = bookmark_tick.tick(), if spec.bookmarks => {
                if out.send(line(&spec.bookmark(last_rv, false))).await.is_err() {
                    return;
                }
            }
            msg = rx.recv() => match msg {
                Ok(c) => {
                    if c.rv <= last_rv {
                        continue;
                    }
                    last_rv = c.rv;
                    if let Some((t, obj)) = spec.event_for(&c) {
                        let ev = json!({"type": t, "object": obj});
                        if !send_event(&shared, &out, &ev, &mut sent).await {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let e = ApiError::gone(format!(
                        "too old resource version: {last_rv}: the watch fell behind"
                    ));
                    let _ = out.send(line(&error_event(&e))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
