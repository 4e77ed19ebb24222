//! The credentials step of the pipeline: the I/O of the API keys. Reads the keys, creates or
//! completes the generated ones, and writes the steps of a key rotation; what to write and when
//! is decided in [`crate::api_keys`] (pure). (Named for the pipeline step it runs: step 3,
//! `credentials`.)
//!
//! Generated keys live in `<n>-api-key` and are never overwritten: the Secret is read with a GET
//! (no cache holds its data), creation is a create (which fails rather than replaces), and later
//! changes are compare-and-swap merge patches guarded by the resourceVersion that was read. A user's key
//! (`spec.auth.apiKeySecretRef`) is read on every reconcile and never written.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Map, json};

use super::memo::{Inputs, Memo, Version, get, version_cached, version_read};
use super::stores::Stores;
use crate::api_keys::keys::{self, FINGERPRINT_SALT, NEXT_API_KEY, data_value};
use crate::api_keys::rotation::{self, KEYS_FINGERPRINT_ANNOTATION, RotationState, RotationStep};
use crate::api_keys::{
    ApiKeys, KeyFacts, KeyProblem, Phase, generate_key, read_key, secret as key_secret,
};
use crate::children::meta::MANAGER;
use crate::children::secrets;
use crate::error::{Error, Result};
use crate::events::Notice;
use crate::material::SecretValue;
use crate::rollout::rolled_out_annotation;
use crate::statefulset_view::StatefulSetView;
use crate::validate::Instance;

/// The keys Qdrant gets, what to tell the user, and when to look again.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// What the pods need of the keys (never the keys themselves).
    pub keys: KeyFacts,
    pub notices: Vec<Notice>,
    /// Set while a key rotation runs.
    pub requeue_after: Option<Duration>,
    /// The phase of a running key rotation ([`rotation::metric_phase`]), for the metrics.
    pub rotation_phase: Option<&'static str>,
}

/// Returns what the pods need of the instance's API keys, creating or completing `<n>-api-key`
/// when needed and advancing a key rotation. `created_before`: the operator created this Secret
/// before (status says so), so a missing one was deleted and recreating it changes credentials.
///
/// The keys are read from the API server, never from a cache: unless `memo` holds what was
/// derived from exactly the `<n>-api-key` (and user key Secret) the cache shows now, with no
/// rotation running, then nothing is read. A Secret is generated only after a GET found none.
#[allow(clippy::too_many_arguments)]
pub async fn ensure(
    client: &Client,
    stores: &Stores,
    memo: &Memo<KeyFacts>,
    inst: &Instance,
    created_before: bool,
    sts: Option<&StatefulSetView>,
    now: Timestamp,
) -> Result<Credentials> {
    // `render` shows the same keys (`children::secrets::api_key`). The Secret always exists: it
    // holds the fingerprint salt even when the operator generates no key.
    let mut wanted = inst.generated_api_keys();
    wanted.push(FINGERPRINT_SALT);
    // The user's key first: a Secret that does not allow this instance stops the reconcile
    // before anything is written. (A referenced Secret is read on every reconcile.)
    let (user_key, user_version) = match &inst.auth.api_key_secret_ref {
        None => (None, None),
        Some(r) => {
            let (key, version) = user_key(client, inst, &r.name, &r.key).await?;
            (Some(key), version)
        }
    };
    let rolled_out = rolled_out_annotation(sts, KEYS_FINGERPRINT_ANNOTATION);
    // What the pods run with (`rolled_out`) is no input: only a rotation step uses it, and
    // nothing is remembered while a rotation runs.
    let memo_key = |version: &Version| {
        Inputs::new("credentials")
            .instance(inst)
            .version(&user_version)
            .version(version)
            .finish()
    };
    let who = format!("{}/{}", inst.namespace, inst.name);
    let name = inst.api_key_secret_name();
    let cached = version_cached(stores, &inst.namespace, &name);
    if let Some(keys) = memo.get(&who, &memo_key(&cached)) {
        return Ok(Credentials {
            keys,
            notices: Vec::new(),
            requeue_after: None,
            rotation_phase: None,
        });
    }
    let (secret, generated, notice) = ensure_secret(client, inst, &wanted, created_before).await?;
    let mut keys = ApiKeys::stored(&wanted, &generated, user_key);
    let mut notices: Vec<Notice> = notice.into_iter().collect();
    let mut rotation = Rotation::default();
    if inst.generates_api_key() {
        let requested = inst.api_key_rotation_request.as_deref();
        rotation = rotate(
            client,
            inst,
            &secret,
            requested,
            rolled_out.as_deref(),
            now,
            &mut keys,
        )
        .await?;
        notices.extend(rotation.notice.take());
    }
    let facts = keys.facts();
    // Only a state that stays as it is until a Secret changes is remembered: no rotation step
    // due, nothing written by the rotation (the next reconcile reads what was written).
    let version = version_read(Some(&secret));
    if rotation.requeue_after.is_none() && !rotation.wrote && version.is_some() {
        memo.remember(who, memo_key(&version), facts.clone());
    }
    Ok(Credentials {
        keys: facts,
        notices,
        requeue_after: rotation.requeue_after,
        rotation_phase: rotation.phase,
    })
}

/// What the rotation step decided and did.
#[derive(Default)]
struct Rotation {
    requeue_after: Option<Duration>,
    phase: Option<&'static str>,
    notice: Option<Notice>,
    /// A rotation step was written to `<n>-api-key`.
    wrote: bool,
}

/// Reads the rotation `<n>-api-key` records, decides its next step
/// ([`rotation::step`]) and writes it. `requested`: the rotation request on the SecureQdrant;
/// `rolled_out`: the keys fingerprint of the pods once their rollout is complete.
async fn rotate(
    client: &Client,
    inst: &Instance,
    secret: &Secret,
    requested: Option<&str>,
    rolled_out: Option<&str>,
    now: Timestamp,
    keys: &mut ApiKeys,
) -> Result<Rotation> {
    keys.next = next_key(inst, secret)?;
    let phase = Phase::recorded(secret);
    keys.phase = phase.unwrap_or_default();
    if keys.next.is_none() && keys.phase == Phase::Swapped {
        // The pods send that key to their peers: rendering them without it would split the
        // cluster during the roll.
        return Err(Error::RotationKeyLost(inst.api_key_secret_name()));
    }
    let rolled_out = rolled_out == Some(keys.fingerprint().as_str());
    let grace = inst.key_rotation_grace;
    let state = RotationState::read(
        secret,
        requested,
        keys.next.is_some(),
        rolled_out,
        grace,
        now,
    );
    let step = rotation::step(&state);
    let notice = write_step(client, inst, secret, keys, &step, now).await?;
    Ok(Rotation {
        requeue_after: rotation::requeue_after(&step, now, grace),
        phase: rotation::metric_phase(&step, phase),
        wrote: notice.is_some(),
        notice,
    })
}

/// `next-api-key` of `<n>-api-key`, when it holds a usable one. One edited by hand to an
/// unsendable value stops the instance: the pods may run with it, so it is neither used nor
/// replaced.
fn next_key(inst: &Instance, secret: &Secret) -> Result<Option<SecretValue>> {
    match read_key(secret, NEXT_API_KEY) {
        Ok(next) => Ok(Some(next)),
        Err(problem @ KeyProblem::Unsendable(..)) => Err(Error::KeySecret {
            secret: inst.api_key_secret_name(),
            problem: problem.to_string(),
        }),
        Err(_) => Ok(None),
    }
}

/// Writes one rotation step ([`rotation::advance`]) to `<n>-api-key` (compare-and-swap) and
/// applies it to `keys`.
async fn write_step(
    client: &Client,
    inst: &Instance,
    secret: &Secret,
    keys: &mut ApiKeys,
    step: &RotationStep,
    now: Timestamp,
) -> Result<Option<Notice>> {
    let name = inst.api_key_secret_name();
    let Some(write) = rotation::advance(step, keys, &name, inst.key_rotation_grace, now)? else {
        return Ok(None);
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": write.annotations,
        },
        "data": write.data,
    });
    Api::<Secret>::namespaced(client.clone(), &inst.namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Secret",
            name,
            source,
        })?;
    Ok(Some(write.notice))
}

/// The user's key ([`keys::user_key`] says what makes it usable), read from the API server, and
/// the version of its Secret. Its data is never written.
async fn user_key(
    client: &Client,
    inst: &Instance,
    name: &str,
    key: &str,
) -> Result<(SecretValue, Version)> {
    let secret = get(client, &inst.namespace, name).await?;
    let problem = |p: String| Error::UserKey {
        secret: name.to_owned(),
        problem: p,
    };
    let secret = secret.ok_or_else(|| problem("the Secret does not exist".to_owned()))?;
    super::references::check(&secret, inst, "spec.auth.apiKeySecretRef")?;
    let value =
        keys::user_key(key, secret.data.as_ref().and_then(|d| d.get(key))).map_err(problem)?;
    Ok((value, version_read(Some(&secret))))
}

/// Reads `<n>-api-key`, creating it or completing missing keys. Returns the Secret (as now
/// stored), the values of `wanted` in order, and a notice when credentials were generated.
async fn ensure_secret(
    client: &Client,
    inst: &Instance,
    wanted: &[&'static str],
    created_before: bool,
) -> Result<(Secret, Vec<SecretValue>, Option<Notice>)> {
    let name = inst.api_key_secret_name();
    let api: Api<Secret> = Api::namespaced(client.clone(), &inst.namespace);
    for _ in 0..2 {
        let existing = get(client, &inst.namespace, &name).await?;
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
                let notice = key_secret::created_notice(&name, wanted, created_before);
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
                data.insert((*key).to_owned(), data_value(&v));
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
    let stored = if patched.data.is_some() {
        patched
    } else {
        secret
    };
    let notice = key_secret::completed_notice(&name, &replaced);
    Ok((stored, values, Some(notice)))
}
