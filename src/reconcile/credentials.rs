//! The API-key Secret: read it if it exists, create it if it does not. Never overwritten: an
//! existing key is never regenerated, whatever the cache says (a miss is confirmed with a GET,
//! and creation is a create, which fails rather than replaces).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client};

use super::stores::{Stores, cached};
use crate::children::meta::MANAGER;
use crate::children::secrets;
use crate::error::{Error, Result};
use crate::material::{self, ApiKeys, KeyProblem, SecretValue, generate_key, read_key};
use crate::validate::Instance;

/// Something the user should hear about, as an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// Returns the instance's API keys, creating or completing the Secret when needed.
/// `created_before` says whether the operator has created this Secret before (from status): a
/// Secret missing now was deleted, and recreating it changes credentials.
pub async fn ensure(
    client: &Client,
    stores: &Stores,
    inst: &Instance,
    created_before: bool,
) -> Result<(ApiKeys, Option<Notice>)> {
    let name = inst.api_key_secret_name();
    let api: Api<Secret> = Api::namespaced(client.clone(), &inst.namespace);
    for _ in 0..2 {
        let existing = match cached(&stores.secrets, &inst.namespace, &name) {
            Some(s) => Some(s.as_ref().clone()),
            None => api.get_opt(&name).await.map_err(|source| Error::Read {
                kind: "Secret",
                name: name.clone(),
                source,
            })?,
        };
        if let Some(secret) = existing {
            return complete(&api, inst, &secret).await;
        }
        let keys = ApiKeys::generate(inst.auth.read_only_api_key)?;
        let secret = secrets::api_key(inst, &keys);
        let params = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &secret).await {
            Ok(_) => {
                let notice = if created_before {
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
                return Ok((keys, Some(notice)));
            }
            // Someone (another replica, a user) created it in the meantime: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(source) => return Err(Error::CreateSecret { name, source }),
        }
    }
    Err(Error::SecretRace(name))
}

/// Reads the keys of an existing Secret. A key that is missing or empty (edited by hand) is
/// generated and added, leaving every other key as it is.
async fn complete(
    api: &Api<Secret>,
    inst: &Instance,
    secret: &Secret,
) -> Result<(ApiKeys, Option<Notice>)> {
    let mut wanted = vec![material::API_KEY];
    if inst.auth.read_only_api_key {
        wanted.push(material::READ_ONLY_API_KEY);
    }
    let mut values = Vec::new();
    let mut replaced: Vec<(&'static str, KeyProblem)> = Vec::new();
    for key in &wanted {
        match read_key(secret, key) {
            Ok(v) => values.push(v),
            Err(problem) => {
                replaced.push((key, problem));
                values.push(generate_key()?);
            }
        }
    }
    let keys = ApiKeys {
        api_key: values[0].clone(),
        read_only: values.get(1).cloned(),
    };
    if replaced.is_empty() {
        return Ok((keys, None));
    }
    let name = inst.api_key_secret_name();
    let mut data = serde_json::Map::new();
    for (key, _) in &replaced {
        let value: &SecretValue = if *key == material::API_KEY {
            &keys.api_key
        } else {
            keys.read_only
                .as_ref()
                .expect("read-only key generated above")
        };
        data.insert(
            (*key).to_owned(),
            serde_json::to_value(ByteString(value.expose().as_bytes().to_vec()))
                .expect("bytes serialize"),
        );
    }
    // The resourceVersion makes this a compare-and-swap: a concurrent edit fails it with 409.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version},
        "data": data,
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Secret",
            name: name.clone(),
            source,
        })?;
    let what = replaced
        .iter()
        .map(|(_, p)| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok((
        keys,
        Some(Notice {
            type_: EventType::Warning,
            reason: "CredentialsChanged",
            note: format!("Secret {name}: {what}; generated a replacement, pods restart"),
        }),
    ))
}
