//! Kubernetes Events, behind a small seam so tests can read what would be published.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Events recorded in memory: (the object they are about, the Event).
pub type EventLog = Arc<Mutex<Vec<(ObjectReference, Event)>>>;

/// Where Events go.
#[derive(Clone)]
pub enum Events {
    /// Published to the API server.
    Kube(Recorder),
    /// Kept in memory (tests).
    Memory(EventLog),
}

impl Events {
    /// An in-memory sink and a handle to read it.
    pub fn memory() -> (Self, EventLog) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (Events::Memory(log.clone()), log)
    }

    /// Publishes an Event. Best effort: a failure is logged, never fails the reconcile.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        match self {
            Events::Kube(recorder) => {
                if let Err(e) = recorder.publish(&event, reference).await {
                    tracing::warn!(error = %e, reason, "could not publish an Event");
                }
            }
            Events::Memory(log) => log
                .lock()
                .expect("event log lock")
                .push((reference.clone(), event)),
        }
    }
}
