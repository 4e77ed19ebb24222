//! The API keys: read them, create or complete the generated ones, and run a key rotation.
//!
//! Generated keys live in `<n>-api-key` and are never overwritten: a cache miss is confirmed
//! with a GET, creation is a create (which fails rather than replaces), and later changes are
//! compare-and-swap merge patches guarded by the resourceVersion that was read. A user's key
//! (`spec.auth.apiKeySecretRef`) is read on every reconcile and never written.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use serde_json::{Map, Value, json};

use super::recent::{Clock, Recent};
use super::stores::{Stores, cached};
use super::tls::rolled_out_annotation;
use crate::children::meta::MANAGER;
use crate::children::secrets;
use crate::crd::SecureQdrant;
use crate::error::{Error, Result};
use crate::key_rotation::{
    self, HANDLED_ANNOTATION, KEYS_FINGERPRINT_ANNOTATION, PHASE_ANNOTATION, PHASE_INTRODUCED,
    PHASE_PROMOTED, PHASE_SWAPPED, ROLLED_OUT_AT_ANNOTATION, ROTATE_API_KEY_ANNOTATION,
    RotationState, RotationStep,
};
use crate::material::{
    self, ApiKeys, KeyPhase, KeyProblem, NEXT_API_KEY, SecretValue, generate_key, read_key,
};
use crate::validate::Instance;

/// The resourceVersions that this process's key-rotation writes replaced, per API-key Secret
/// (namespace/name). A cached copy with one of them predates a write, and a rotation step
/// computed from it would roll the pods back a phase: the Secret is read from the API server
/// instead. (Other writes need no such care: a stale copy makes their compare-and-swap fail, or
/// misses the Secret and reads it.)
pub struct RecentWrites(Recent<(String, String), ()>);

/// How long a replaced resourceVersion is remembered (a cache that does not catch up within it
/// is a broken watch).
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(600);

impl RecentWrites {
    /// Nothing remembered yet; records expire as `clock` (the reconciles' clock) tells.
    pub fn new(clock: Clock) -> Self {
        RecentWrites(Recent::new(REMEMBER, clock))
    }

    fn record(&self, ns: &str, name: &str, replaced: Option<&str>) {
        if let Some(rv) = replaced {
            self.0.remember((format!("{ns}/{name}"), rv.to_owned()), ());
        }
    }

    /// Whether `cached` (the cache's copy of the Secret) predates a write of this process.
    fn predates_write(&self, ns: &str, name: &str, cached: &Secret) -> bool {
        let Some(rv) = cached.metadata.resource_version.as_deref() else {
            return false;
        };
        self.0
            .get(&(format!("{ns}/{name}"), rv.to_owned()))
            .is_some()
    }
}

/// Something the user should hear about, as an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// The keys Qdrant gets, what to tell the user, and when to look again.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub keys: ApiKeys,
    pub notices: Vec<Notice>,
    /// Set while a key rotation runs.
    pub requeue_after: Option<Duration>,
    /// The phase of a running key rotation ([`key_rotation::metric_phase`]), for the metrics.
    pub rotation_phase: Option<&'static str>,
}

fn b64(value: &SecretValue) -> Value {
    serde_json::to_value(ByteString(value.expose().as_bytes().to_vec())).expect("bytes serialize")
}

/// Returns the instance's API keys, creating or completing `<n>-api-key` when needed and
/// advancing a key rotation. `created_before`: the operator created this Secret before (status
/// says so), so a missing one was deleted and recreating it changes credentials.
#[allow(clippy::too_many_arguments)]
pub async fn ensure(
    client: &Client,
    stores: &Stores,
    written: &RecentWrites,
    sq: &SecureQdrant,
    inst: &Instance,
    created_before: bool,
    sts: Option<&StatefulSet>,
    now: Timestamp,
) -> Result<Credentials> {
    // `render` shows the same keys (`children::secrets::api_key`). The Secret always exists: it
    // holds the fingerprint salt even when the operator generates no key.
    let mut wanted = inst.generated_api_keys();
    wanted.push(material::FINGERPRINT_SALT);
    let mut notices = Vec::new();
    // The user's key first: a Secret that does not allow this instance stops the reconcile
    // before anything is written.
    let user_key = match &inst.auth.api_key_secret_ref {
        None => None,
        Some(r) => Some(user_key(client, stores, inst, &r.name, &r.key).await?),
    };
    let (secret, generated, notice) =
        ensure_secret(client, stores, written, inst, &wanted, created_before).await?;
    notices.extend(notice);
    let secret = Some(secret);
    let generated_value = |key: &str| {
        wanted
            .iter()
            .position(|k| *k == key)
            .map(|i| generated[i].clone())
    };

    let api_key = match user_key {
        None => generated_value(material::API_KEY).expect("the full key is generated"),
        Some(key) => key,
    };
    let mut keys = ApiKeys {
        api_key,
        read_only: generated_value(material::READ_ONLY_API_KEY),
        next: None,
        phase: KeyPhase::Introduced,
        salt: generated_value(material::FINGERPRINT_SALT).expect("the salt is always stored"),
    };
    let mut requeue_after = None;
    let mut rotation_phase = None;
    if let (true, Some(secret)) = (inst.generates_api_key(), secret) {
        keys.next = match read_key(&secret, NEXT_API_KEY) {
            Ok(next) => Some(next),
            // Edited by hand: the pods may run with it, so it is neither used nor replaced.
            Err(problem @ KeyProblem::Unsendable(..)) => {
                return Err(Error::KeySecret {
                    secret: inst.api_key_secret_name(),
                    problem: problem.to_string(),
                });
            }
            Err(_) => None,
        };
        let annotations = secret.annotations();
        let phase = annotations.get(PHASE_ANNOTATION).map(String::as_str);
        keys.phase = KeyPhase::from_annotation(phase);
        if keys.next.is_none() && keys.phase == KeyPhase::Swapped {
            // The pods send that key to their peers: rendering them without it would split the
            // cluster during the roll.
            return Err(Error::RotationKeyLost(inst.api_key_secret_name()));
        }
        let state = RotationState {
            requested: sq
                .annotations()
                .get(ROTATE_API_KEY_ANNOTATION)
                .map(String::as_str),
            handled: annotations.get(HANDLED_ANNOTATION).map(String::as_str),
            has_next: keys.next.is_some(),
            phase,
            rolled_out_at: annotations
                .get(ROLLED_OUT_AT_ANNOTATION)
                .and_then(|t| t.parse().ok()),
            rolled_out: rolled_out_annotation(sts, KEYS_FINGERPRINT_ANNOTATION).as_deref()
                == Some(keys.fingerprint().as_str()),
            grace: inst.key_rotation_grace,
            now,
        };
        let step = key_rotation::step(&state);
        requeue_after = key_rotation::requeue_after(&step, now, inst.key_rotation_grace);
        rotation_phase = key_rotation::metric_phase(&step, phase);
        if let Some(notice) = rotate(client, written, inst, &secret, &mut keys, &step, now).await? {
            notices.push(notice);
        }
    }
    Ok(Credentials {
        keys,
        notices,
        requeue_after,
        rotation_phase,
    })
}

/// Applies one rotation step to `<n>-api-key` (compare-and-swap) and to `keys`.
async fn rotate(
    client: &Client,
    written: &RecentWrites,
    inst: &Instance,
    secret: &Secret,
    keys: &mut ApiKeys,
    step: &RotationStep,
    now: Timestamp,
) -> Result<Option<Notice>> {
    let name = inst.api_key_secret_name();
    let (data, annotations, notice): (Map<String, Value>, Value, Notice) = match step {
        RotationStep::Start { request } => {
            let next = generate_key()?;
            let data = Map::from_iter([(NEXT_API_KEY.to_owned(), b64(&next))]);
            keys.next = Some(next);
            (
                data,
                // A rolled-out-at left from an earlier rotation would skip the rollout.
                json!({PHASE_ANNOTATION: PHASE_INTRODUCED, HANDLED_ANNOTATION: request,
                       ROLLED_OUT_AT_ANNOTATION: null}),
                Notice {
                    type_: EventType::Normal,
                    reason: "ApiKeyRotationStarted",
                    note: format!(
                        "generated a new API key ({NEXT_API_KEY} in Secret {name}); pods restart and accept both keys"
                    ),
                },
            )
        }
        RotationStep::MarkRolledOut => (
            Map::new(),
            json!({ROLLED_OUT_AT_ANNOTATION: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}),
            Notice {
                type_: EventType::Normal,
                reason: "ApiKeyRotationBothKeysActive",
                note: format!(
                    "every pod accepts the old and the new API key; the old one is removed after {:?}; new tokens are signed with the new key",
                    inst.key_rotation_grace
                ),
            },
        ),
        RotationStep::Swap => {
            keys.phase = KeyPhase::Swapped;
            (
                Map::new(),
                json!({PHASE_ANNOTATION: PHASE_SWAPPED}),
                Notice {
                    type_: EventType::Normal,
                    reason: "ApiKeyRotationSwapped",
                    note: "the grace period is over: pods restart with the new API key as their \
                           main key and the old one as the alternative (peers authenticate with \
                           the new one)"
                        .to_owned(),
                },
            )
        }
        RotationStep::Promote => {
            let next = keys
                .next
                .clone()
                .expect("a rotation in progress has a next key");
            let data = Map::from_iter([(material::API_KEY.to_owned(), b64(&next))]);
            keys.api_key = next;
            keys.phase = KeyPhase::Promoted;
            (
                data,
                json!({PHASE_ANNOTATION: PHASE_PROMOTED}),
                Notice {
                    type_: EventType::Normal,
                    reason: "ApiKeyRotated",
                    note: format!(
                        "the new API key replaced the old one in Secret {name}; pods restart and \
                         stop accepting the old key"
                    ),
                },
            )
        }
        RotationStep::Finish => {
            let notice = match keys.next.take() {
                Some(_) => Notice {
                    type_: EventType::Normal,
                    reason: "ApiKeyRotationFinished",
                    note: format!(
                        "every pod runs with the new API key only; removed {NEXT_API_KEY} from Secret {name}"
                    ),
                },
                None => Notice {
                    type_: EventType::Warning,
                    reason: "ApiKeyRotationAbandoned",
                    note: format!(
                        "{NEXT_API_KEY} was removed from Secret {name} by hand: the key rotation is \
                         abandoned and the pods roll with the current key alone"
                    ),
                },
            };
            keys.phase = KeyPhase::Introduced;
            (
                Map::from_iter([(NEXT_API_KEY.to_owned(), Value::Null)]),
                json!({PHASE_ANNOTATION: null, ROLLED_OUT_AT_ANNOTATION: null}),
                notice,
            )
        }
        RotationStep::Idle | RotationStep::AwaitRollout | RotationStep::Grace { .. } => {
            return Ok(None);
        }
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": annotations,
        },
        "data": data,
    });
    // Recorded before the write: a reconcile racing with it must not trust the cache either.
    written.record(
        &inst.namespace,
        &name,
        secret.metadata.resource_version.as_deref(),
    );
    Api::<Secret>::namespaced(client.clone(), &inst.namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Secret",
            name,
            source,
        })?;
    Ok(Some(notice))
}

/// The shortest key accepted from `spec.auth.apiKeySecretRef` (the generated ones have 43).
pub const MIN_USER_KEY_LEN: usize = 32;

/// The user's key: must exist, be UTF-8, not empty, visible ASCII only
/// ([`material::unsendable`]) and at least [`MIN_USER_KEY_LEN`] long. Its data is never written.
async fn user_key(
    client: &Client,
    stores: &Stores,
    inst: &Instance,
    name: &str,
    key: &str,
) -> Result<SecretValue> {
    let secret = match cached(&stores.secrets, &inst.namespace, name) {
        Some(s) => Some(s.as_ref().clone()),
        None => Api::<Secret>::namespaced(client.clone(), &inst.namespace)
            .get_opt(name)
            .await
            .map_err(|source| Error::Read {
                kind: "Secret",
                name: name.to_owned(),
                source,
            })?,
    };
    let problem = |p: String| Error::UserKey {
        secret: name.to_owned(),
        problem: p,
    };
    let secret = secret.ok_or_else(|| problem("the Secret does not exist".to_owned()))?;
    super::references::check(&secret, inst, "spec.auth.apiKeySecretRef")?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| problem(format!("key {key:?} is missing")))?;
    let value =
        std::str::from_utf8(&bytes.0).map_err(|_| problem(format!("key {key:?} is not UTF-8")))?;
    if value.trim().is_empty() {
        return Err(problem(format!(
            "key {key:?} is empty (Qdrant would treat an empty key as a key, or as no authentication)"
        )));
    }
    if let Some(why) = material::unsendable(value) {
        return Err(problem(format!("key {key:?} {why}")));
    }
    if value.len() < MIN_USER_KEY_LEN {
        return Err(problem(format!(
            "key {key:?} is shorter than {MIN_USER_KEY_LEN} characters: the key also signs the \
             JWTs (HS256), so a short one can be guessed offline from any token; generate one \
             with `openssl rand -base64 32`"
        )));
    }
    Ok(SecretValue::new(value))
}

/// Reads `<n>-api-key`, creating it or completing missing keys. Returns the Secret (as now
/// stored), the values of `wanted` in order, and a notice when credentials were generated.
async fn ensure_secret(
    client: &Client,
    stores: &Stores,
    written: &RecentWrites,
    inst: &Instance,
    wanted: &[&'static str],
    created_before: bool,
) -> Result<(Secret, Vec<SecretValue>, Option<Notice>)> {
    let name = inst.api_key_secret_name();
    let api: Api<Secret> = Api::namespaced(client.clone(), &inst.namespace);
    for _ in 0..2 {
        let cache = cached(&stores.secrets, &inst.namespace, &name)
            .filter(|c| !written.predates_write(&inst.namespace, &name, c));
        let existing = match cache {
            Some(s) => Some(s.as_ref().clone()),
            None => api.get_opt(&name).await.map_err(|source| Error::Read {
                kind: "Secret",
                name: name.clone(),
                source,
            })?,
        };
        if let Some(secret) = existing {
            let secret = super::ownership::own_secret(client, inst, secret).await?;
            return complete(&api, inst, secret, wanted).await;
        }
        let values = wanted
            .iter()
            .map(|_| generate_key())
            .collect::<Result<Vec<_>, _>>()?;
        let secret = secrets::api_key_with(
            inst,
            wanted
                .iter()
                .zip(&values)
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.expose().as_bytes().to_vec())))
                .collect(),
        );
        let params = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &secret).await {
            Ok(created) => {
                let salt_only = wanted.iter().all(|k| *k == material::FINGERPRINT_SALT);
                let notice = if salt_only {
                    Notice {
                        type_: EventType::Normal,
                        reason: "FingerprintSaltGenerated",
                        note: format!(
                            "generated the fingerprint salt in Secret {name} (it keys the hashes \
                             of the API keys on the pod template)"
                        ),
                    }
                } else if created_before {
                    Notice {
                        type_: EventType::Warning,
                        reason: "CredentialsChanged",
                        note: format!(
                            "Secret {name} was deleted: generated new API keys; pods restart and \
                             clients need the new keys"
                        ),
                    }
                } else {
                    Notice {
                        type_: EventType::Normal,
                        reason: "CredentialsGenerated",
                        note: format!("generated API keys in Secret {name}"),
                    }
                };
                let stored = if created.data.is_some() {
                    created
                } else {
                    secret
                };
                return Ok((stored, values, Some(notice)));
            }
            // Someone (another replica, a user) created it in the meantime: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(source) => return Err(Error::CreateSecret { name, source }),
        }
    }
    Err(Error::SecretRace(name))
}

/// Reads the keys of an existing Secret. A key that is missing or empty (edited by hand) is
/// generated and added, leaving every other key as it is; one that is not visible ASCII is
/// refused.
async fn complete(
    api: &Api<Secret>,
    inst: &Instance,
    secret: Secret,
    wanted: &[&'static str],
) -> Result<(Secret, Vec<SecretValue>, Option<Notice>)> {
    let mut values = Vec::new();
    let mut replaced: Vec<(&'static str, KeyProblem)> = Vec::new();
    let mut data = Map::new();
    for key in wanted {
        match read_key(&secret, key) {
            Ok(v) => values.push(v),
            // A value written by hand that the pods may run with: replacing it would change
            // credentials behind the user's back, so the instance stops until it is fixed.
            Err(problem @ KeyProblem::Unsendable(..)) => {
                return Err(Error::KeySecret {
                    secret: inst.api_key_secret_name(),
                    problem: problem.to_string(),
                });
            }
            Err(problem) => {
                let v = generate_key()?;
                data.insert((*key).to_owned(), b64(&v));
                replaced.push((key, problem));
                values.push(v);
            }
        }
    }
    if replaced.is_empty() {
        return Ok((secret, values, None));
    }
    let name = inst.api_key_secret_name();
    // The resourceVersion makes this a compare-and-swap: a concurrent edit fails it with 409.
    let patch = json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version},
        "data": data,
    });
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Secret",
            name: name.clone(),
            source,
        })?;
    // A Secret written before the salt existed (an upgrade) gets one: the pods roll once.
    if replaced
        .iter()
        .all(|(k, _)| *k == material::FINGERPRINT_SALT)
    {
        return Ok((
            if patched.data.is_some() {
                patched
            } else {
                secret
            },
            values,
            Some(Notice {
                type_: EventType::Normal,
                reason: "FingerprintSaltAdded",
                note: format!(
                    "added the fingerprint salt to Secret {name}: the hashes of the API keys on \
                     the pod template are now keyed with it, so the pods restart once"
                ),
            }),
        ));
    }
    let what = replaced
        .iter()
        .map(|(_, p)| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok((
        if patched.data.is_some() {
            patched
        } else {
            secret
        },
        values,
        Some(Notice {
            type_: EventType::Warning,
            reason: "CredentialsChanged",
            note: format!("Secret {name}: {what}; generated a replacement, pods restart"),
        }),
    ))
}
