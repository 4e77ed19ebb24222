//! Kubernetes Events, behind a small seam so tests can read what would be published.
//!
//! [`Publisher`] writes `events.k8s.io/v1` Events the way kube-runtime's `Recorder` does (the
//! same fields, names and series patches) without its cache: kube 5 keeps every Event it
//! published for 6 minutes in a map without a size bound (swept only when the next Event is
//! published), and its series key leaves out the note, so a repeated reason with a new message
//! re-publishes the old message. Here a repeat is remembered in a [`SeriesMemo`]: at most
//! [`SERIES_CAP`] small entries, each for at most [`SERIES_TTL`], keyed by a hash that includes
//! the note.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

use crate::reconcile::recent::Clock;

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
    Kube(Publisher),
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
            Events::Kube(publisher) => {
                if let Err(e) = publisher.publish(&event, reference).await {
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

/// How long a published Event takes repeats as its series (kube-runtime's `CACHE_TTL`): a
/// repeat after that is a new Event.
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The most Events whose repeats are remembered: beyond it the oldest is forgotten (its next
/// repeat is a new Event).
pub const SERIES_CAP: usize = 256;

/// Publishes Events to the API server: a new Event, or a merge patch of the `series` of the
/// one published for the same type, reason, action, object and note less than [`SERIES_TTL`]
/// ago (a deleted one is published anew). Time is read from the reconciles' clock.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Arc<Reporter>,
    clock: Clock,
    memo: Arc<Mutex<SeriesMemo>>,
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter, clock: Clock) -> Self {
        Publisher {
            client,
            reporter: Arc::new(reporter),
            clock,
            memo: Arc::new(Mutex::new(SeriesMemo::new(SERIES_CAP, SERIES_TTL))),
        }
    }

    /// Publishes `event` about `reference`, in its namespace ("default" for a cluster-scoped
    /// object).
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = (self.clock)();
        let api: Api<K8sEvent> = Api::namespaced(
            self.client.clone(),
            reference.namespace.as_deref().unwrap_or("default"),
        );
        let key = self.memo().key(event, reference);
        let repeat = self.memo().repeat(key, now);
        if let Some((name, count)) = repeat {
            let patch = K8sEvent {
                series: Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                }),
                ..K8sEvent::default()
            };
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.memo().observed(key, count, now);
                    return Ok(());
                }
                // Deleted (or expired) on the server: published anew below.
                Err(kube::Error::Api(e)) if e.code == 404 => self.memo().forget(key),
                Err(e) => return Err(e),
            }
        }
        let new = self.build(event, reference, now);
        let created = api.create(&PostParams::default(), &new).await?;
        let name = created
            .metadata
            .name
            .or(new.metadata.name)
            .unwrap_or_default();
        self.memo().created(key, name, now);
        Ok(())
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, SeriesMemo> {
        self.memo.lock().expect("event series lock")
    }

    /// The Event kube-runtime's `Recorder` would create (`generate_event`).
    fn build(&self, event: &Event, reference: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        let base = name_base(reference.name.as_deref().unwrap_or(controller));
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: reference.namespace.clone(),
                name: Some(format!("{base}.{:x}", unique_suffix())),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..K8sEvent::default()
        }
    }
}

/// The longest object name a new Event's name starts with: an Event's name is at most 253
/// characters, and ".<16 hex digits>" follows (kube-runtime used the whole name, so the API server
/// refused every Event about an object whose name has more than 236 characters, e.g. the InvalidSpec
/// Event that says the name is too long).
const NAME_BASE_LIMIT: usize = 253 - 17;

/// `name` cut to [`NAME_BASE_LIMIT`], without a trailing '-' or '.' (each part of a DNS subdomain
/// ends with a letter or digit).
fn name_base(name: &str) -> &str {
    if name.len() <= NAME_BASE_LIMIT {
        return name;
    }
    let mut end = NAME_BASE_LIMIT;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.'])
}

/// The suffix of a new Event's name: the wall clock's nanoseconds, as kube-runtime names them,
/// made strictly increasing within the process (never the reconciles' clock, which tests may
/// hold still: two Events of the same object must not get the same name).
fn unique_suffix() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(Timestamp::now().as_nanosecond()).unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The Events published recently, by a hash of what makes a repeat (type, reason, action, the
/// object regarded and the note): at most `cap` entries (the least recently observed goes
/// first), each forgotten `ttl` after it was last observed.
pub struct SeriesMemo {
    cap: usize,
    ttl: SignedDuration,
    /// Keyed per process, so nobody can choose notes whose hashes collide.
    hasher: std::collections::hash_map::RandomState,
    entries: HashMap<u64, Series>,
}

/// A published Event: its name, how often it was observed and when last.
struct Series {
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

impl SeriesMemo {
    pub fn new(cap: usize, ttl: SignedDuration) -> Self {
        SeriesMemo {
            cap,
            ttl,
            hasher: std::collections::hash_map::RandomState::new(),
            entries: HashMap::new(),
        }
    }

    /// How many Events are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key of `event` about `reference`.
    pub fn key(&self, event: &Event, reference: &ObjectReference) -> u64 {
        let mut h = self.hasher.build_hasher();
        let type_ = match event.type_ {
            EventType::Normal => 0u8,
            EventType::Warning => 1,
        };
        type_.hash(&mut h);
        event.reason.hash(&mut h);
        event.action.hash(&mut h);
        for part in [
            &reference.api_version,
            &reference.kind,
            &reference.namespace,
            &reference.name,
            &reference.uid,
        ] {
            part.hash(&mut h);
        }
        event.note.hash(&mut h);
        h.finish()
    }

    /// For a repeat of a remembered Event observed less than the TTL ago: its name and the
    /// count its series gets now. An expired entry is forgotten.
    pub fn repeat(&mut self, key: u64, now: Timestamp) -> Option<(String, i32)> {
        let series = self.entries.get(&key)?;
        if !self.fresh(series, now) {
            self.entries.remove(&key);
            return None;
        }
        Some((series.name.to_string(), series.count.saturating_add(1)))
    }

    /// The series of `key` was patched to `count` at `now`.
    pub fn observed(&mut self, key: u64, count: i32, now: Timestamp) {
        if let Some(series) = self.entries.get_mut(&key) {
            series.count = count;
            series.last = now;
        }
    }

    /// Forgets `key` (its Event is gone).
    pub fn forget(&mut self, key: u64) {
        self.entries.remove(&key);
    }

    /// Remembers the Event `name` just created for `key`; drops the expired entries, and the
    /// least recently observed one when the memo is full.
    pub fn created(&mut self, key: u64, name: String, now: Timestamp) {
        let (ttl, cap) = (self.ttl, self.cap);
        self.entries.retain(|_, s| now.duration_since(s.last) < ttl);
        if self.entries.len() >= cap && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        if cap > 0 {
            self.entries.insert(
                key,
                Series {
                    name: name.into_boxed_str(),
                    count: 1,
                    last: now,
                },
            );
        }
    }

    fn fresh(&self, series: &Series, now: Timestamp) -> bool {
        now.duration_since(series.last) < self.ttl
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

    // -----------------------------------------------------------------------------------------
    // The publisher, against a fake API server.

    use http::{Method, Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};

    /// What the fake server saw: (method, path, JSON body).
    type Seen = Arc<Mutex<Vec<(Method, String, Value)>>>;

    /// A clock a test moves.
    fn clock(at: &str) -> (Clock, Arc<Mutex<Timestamp>>) {
        let now = Arc::new(Mutex::new(at.parse::<Timestamp>().unwrap()));
        let reading = now.clone();
        (Arc::new(move || *reading.lock().unwrap()), now)
    }

    fn advance(now: &Mutex<Timestamp>, by: SignedDuration) {
        let mut t = now.lock().unwrap();
        *t = t.checked_add(by).unwrap();
    }

    /// A publisher over a fake API server that stores the Events created (by name), answers a
    /// merge patch of a stored one with it patched and a patch of any other with a 404; and the
    /// requests it saw, and the names of the stored Events (a test deletes one by removing it).
    fn fake(clock: Clock) -> (Publisher, Seen, Arc<Mutex<HashMap<String, Value>>>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen: Seen = Arc::default();
        let stored: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let (log, events) = (seen.clone(), stored.clone());
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                log.lock()
                    .unwrap()
                    .push((parts.method.clone(), path.clone(), body.clone()));
                let mut events = events.lock().unwrap();
                let (code, answer) = if parts.method == Method::POST {
                    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                    events.insert(name, body.clone());
                    (StatusCode::CREATED, body)
                } else {
                    let name = path.rsplit('/').next().unwrap();
                    match events.get_mut(name) {
                        Some(event) => {
                            json_patch::merge(event, &body);
                            (StatusCode::OK, event.clone())
                        }
                        None => (
                            StatusCode::NOT_FOUND,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404, "message": "not found"}),
                        ),
                    }
                };
                let response = Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
        });
        let reporter = Reporter {
            controller: "secure-qdrant-operator".to_owned(),
            instance: Some("operator-0".to_owned()),
        };
        (
            Publisher::new(kube::Client::new(service, "default"), reporter, clock),
            seen,
            stored,
        )
    }

    fn instance(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("secureqdrant.dev/v1alpha1".to_owned()),
            kind: Some("SecureQdrant".to_owned()),
            namespace: Some("team".to_owned()),
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    async fn warn(events: &Events, about: &ObjectReference, note: &str) {
        events
            .publish(
                about,
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                note.to_owned(),
            )
            .await;
    }

    fn methods(seen: &Seen) -> Vec<Method> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(m, _, _)| m.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_new_event_is_shaped_like_kubes() {
        let (clock, _) = clock("2030-01-02T03:04:05.123456789Z");
        let (publisher, seen, _) = fake(clock);
        let events = Events::Kube(publisher);
        events
            .publish(
                &instance("vectors"),
                EventType::Normal,
                "CAIssued",
                "Reconcile",
                "z".repeat(5000),
            )
            .await;
        let seen = seen.lock().unwrap();
        let (method, path, body) = &seen[0];
        assert_eq!(
            (method, path.as_str()),
            (
                &Method::POST,
                "/apis/events.k8s.io/v1/namespaces/team/events"
            )
        );
        assert_eq!(body["apiVersion"], "events.k8s.io/v1");
        assert_eq!(body["kind"], "Event");
        assert_eq!(body["metadata"]["namespace"], "team");
        let name = body["metadata"]["name"].as_str().unwrap();
        let suffix = name.strip_prefix("vectors.").expect(name);
        assert!(u64::from_str_radix(suffix, 16).is_ok(), "{name}");
        assert_eq!(body["eventTime"], "2030-01-02T03:04:05.123456Z");
        assert_eq!(body["reportingController"], "secure-qdrant-operator");
        assert_eq!(body["reportingInstance"], "operator-0");
        assert_eq!(body["type"], "Normal");
        assert_eq!(body["reason"], "CAIssued");
        assert_eq!(body["action"], "Reconcile");
        assert!(body["note"].as_str().unwrap().len() <= NOTE_LIMIT);
        assert_eq!(
            body["regarding"],
            json!({"apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
                   "namespace": "team", "name": "vectors", "uid": "uid-vectors"})
        );
        assert!(body.get("series").is_none(), "{body}");
    }

    #[tokio::test]
    async fn an_event_about_an_object_with_the_longest_name_gets_a_valid_name() {
        let (clock, _) = clock("2030-01-01T00:00:00Z");
        let (publisher, seen, _) = fake(clock);
        let events = Events::Kube(publisher);
        // 253 characters, a '-' where the name is cut.
        let long = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        assert_eq!(long.len(), 253);
        warn(&events, &instance(&long), "metadata.name is too long").await;
        let seen = seen.lock().unwrap();
        let name = seen[0].2["metadata"]["name"].as_str().unwrap();
        assert!(name.len() <= 253, "{} characters", name.len());
        let (base, suffix) = name.split_once('.').unwrap();
        assert_eq!(base, "a".repeat(235));
        assert_eq!(suffix.len(), 16, "{name}");
        assert_eq!(name_base("vectors"), "vectors");
    }

    #[tokio::test]
    async fn the_same_note_again_is_a_patch_of_the_series_and_a_new_note_a_new_event() {
        let (clock, now) = clock("2030-01-01T00:00:00Z");
        let (publisher, seen, stored) = fake(clock);
        let events = Events::Kube(publisher);
        let about = instance("vectors");
        warn(&events, &about, "the API server refused the StatefulSet").await;
        advance(&now, SignedDuration::from_secs(30));
        warn(&events, &about, "the API server refused the StatefulSet").await;
        advance(&now, SignedDuration::from_secs(30));
        warn(&events, &about, "the API server refused the StatefulSet").await;
        assert_eq!(methods(&seen), [Method::POST, Method::PATCH, Method::PATCH]);
        {
            let seen = seen.lock().unwrap();
            let created = seen[0].2["metadata"]["name"].as_str().unwrap();
            assert_eq!(
                seen[1].1,
                format!("/apis/events.k8s.io/v1/namespaces/team/events/{created}")
            );
            // Only the series is patched: the note and the first time stay.
            assert_eq!(
                seen[1].2["series"],
                json!({"count": 2, "lastObservedTime": "2030-01-01T00:00:30.000000Z"})
            );
            assert!(seen[1].2.get("note").is_none(), "{}", seen[1].2);
            assert_eq!(seen[2].2["series"]["count"], 3);
        }
        assert_eq!(stored.lock().unwrap().len(), 1);

        // A new message under the same reason is an Event of its own, with that message
        // (kube-runtime's recorder patched the old Event, so the old message was shown).
        warn(&events, &about, "the API server refused the ConfigMap").await;
        assert_eq!(methods(&seen).last(), Some(&Method::POST));
        let stored = stored.lock().unwrap();
        assert_eq!(stored.len(), 2);
        let mut notes: Vec<(String, Value)> = stored
            .values()
            .map(|e| {
                (
                    e["note"].as_str().unwrap().to_owned(),
                    e["series"]["count"].clone(),
                )
            })
            .collect();
        notes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            notes,
            [
                (
                    "the API server refused the ConfigMap".to_owned(),
                    Value::Null
                ),
                (
                    "the API server refused the StatefulSet".to_owned(),
                    json!(3)
                ),
            ]
        );
    }

    #[tokio::test]
    async fn another_object_type_or_action_is_another_event() {
        let (clock, _) = clock("2030-01-01T00:00:00Z");
        let (publisher, seen, _) = fake(clock);
        let events = Events::Kube(publisher);
        warn(&events, &instance("a"), "same").await;
        warn(&events, &instance("b"), "same").await;
        events
            .publish(
                &instance("a"),
                EventType::Normal,
                "ApplyFailed",
                "Apply",
                "same".into(),
            )
            .await;
        events
            .publish(
                &instance("a"),
                EventType::Warning,
                "ApplyFailed",
                "Plan",
                "same".into(),
            )
            .await;
        let mut other_uid = instance("a");
        other_uid.uid = Some("uid-recreated".to_owned());
        warn(&events, &other_uid, "same").await;
        assert_eq!(methods(&seen), [Method::POST; 5]);
    }

    #[tokio::test]
    async fn a_repeat_after_the_ttl_or_of_a_deleted_event_is_a_new_event() {
        let (clock, now) = clock("2030-01-01T00:00:00Z");
        let (publisher, seen, stored) = fake(clock);
        let events = Events::Kube(publisher);
        let about = instance("vectors");
        warn(&events, &about, "boom").await;
        advance(&now, SERIES_TTL - SignedDuration::from_secs(1));
        warn(&events, &about, "boom").await;
        // Six minutes after the last observation: forgotten.
        advance(&now, SERIES_TTL);
        warn(&events, &about, "boom").await;
        assert_eq!(methods(&seen), [Method::POST, Method::PATCH, Method::POST]);

        // Deleted on the server (an administrator, or the API server's Event TTL): the patch
        // is a 404 and the Event is published anew, then its repeats patch the new one.
        stored.lock().unwrap().clear();
        warn(&events, &about, "boom").await;
        warn(&events, &about, "boom").await;
        assert_eq!(
            methods(&seen)[3..],
            [Method::PATCH, Method::POST, Method::PATCH]
        );
        let stored = stored.lock().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored.values().next().unwrap()["series"]["count"], 2);
    }

    #[tokio::test]
    async fn the_memo_never_holds_more_than_its_cap_and_forgets_the_oldest_first() {
        let (clock, now) = clock("2030-01-01T00:00:00Z");
        let (publisher, seen, _) = fake(clock);
        let events = Events::Kube(publisher.clone());
        for i in 0..SERIES_CAP + 1 {
            advance(&now, SignedDuration::from_millis(1));
            warn(&events, &instance(&format!("i{i}")), "boom").await;
        }
        assert_eq!(publisher.memo().len(), SERIES_CAP);
        // The first was forgotten (a new Event), the second still patches its series.
        warn(&events, &instance("i1"), "boom").await;
        warn(&events, &instance("i0"), "boom").await;
        assert_eq!(
            methods(&seen)[SERIES_CAP + 1..],
            [Method::PATCH, Method::POST]
        );
        assert_eq!(publisher.memo().len(), SERIES_CAP);
    }

    #[test]
    fn ten_thousand_distinct_events_keep_at_most_the_cap() {
        let start: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let mut memo = SeriesMemo::new(SERIES_CAP, SERIES_TTL);
        let event = |note: String| Event {
            type_: EventType::Warning,
            reason: "ApplyFailed".to_owned(),
            note: Some(note),
            action: "Apply".to_owned(),
            secondary: None,
        };
        let mut keys = Vec::new();
        for i in 0..10_000_i64 {
            // All within one TTL: only the cap bounds them.
            let now = start + SignedDuration::from_millis(i);
            let key = memo.key(
                &event(format!("note {i}")),
                &instance(&format!("i{}", i % 1000)),
            );
            assert_eq!(memo.repeat(key, now), None, "{i}");
            memo.created(key, format!("e{i}"), now);
            assert!(memo.len() <= SERIES_CAP, "{} entries after {i}", memo.len());
            keys.push(key);
        }
        assert_eq!(memo.len(), SERIES_CAP);
        // The newest are the ones kept.
        let now = start + SignedDuration::from_secs(10);
        for (i, key) in keys.iter().enumerate().rev().take(SERIES_CAP) {
            assert_eq!(memo.repeat(*key, now), Some((format!("e{i}"), 2)));
        }
        assert_eq!(memo.repeat(keys[0], now), None);
        // And after the TTL, the next Event sweeps them all.
        let later = now + SERIES_TTL;
        memo.created(1, "last".to_owned(), later);
        assert_eq!(memo.len(), 1);
    }
}
