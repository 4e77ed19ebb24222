//! Kubernetes Events, behind a small seam so tests can read what would be published.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Something the user should hear about, as an Event: what a step decided to tell (the step
/// publishes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

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
            note: Some(bounded_note(note)),
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

/// The most the API server stores in an Event's note (`message`), in bytes: a longer one makes
/// it refuse the whole Event ("can have at most 1024 characters").
pub const NOTE_LIMIT: usize = 1024;

/// `note` cut to [`NOTE_LIMIT`] bytes on a character boundary, ending in "…" when cut (an
/// error that quotes the API server's whole answer is longer than that).
pub fn bounded_note(note: String) -> String {
    if note.len() <= NOTE_LIMIT {
        return note;
    }
    let ellipsis = "…";
    let mut end = NOTE_LIMIT - ellipsis.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_what_the_api_server_stores() {
        assert_eq!(bounded_note("short".to_owned()), "short");
        let exact = "x".repeat(NOTE_LIMIT);
        assert_eq!(bounded_note(exact.clone()), exact);
        for long in [
            "y".repeat(3000),
            "é".repeat(900),
            format!("a{}", "€".repeat(700)),
        ] {
            let cut = bounded_note(long.clone());
            assert!(cut.len() <= NOTE_LIMIT, "{} bytes", cut.len());
            assert!(cut.ends_with('…'));
            assert!(long.starts_with(cut.trim_end_matches('…')));
        }
    }

    #[tokio::test]
    async fn a_long_note_is_published_bounded() {
        let (events, log) = Events::memory();
        let reference = ObjectReference::default();
        events
            .publish(
                &reference,
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                "z".repeat(5000),
            )
            .await;
        let note = log.lock().unwrap()[0].1.note.clone().unwrap();
        assert!(note.len() <= NOTE_LIMIT, "{} bytes", note.len());
    }
}
