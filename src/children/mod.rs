//! Builders of every object a SecureQdrant owns: pure functions of the validated [`Instance`]
//! and the secret [`Material`]. One file per kind; `meta` holds the shared names and labels.

pub mod config_map;
pub mod meta;
pub mod network_policies;
pub mod pdb;
pub mod secrets;
pub mod service_account;
pub mod services;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use crate::api_keys::{ApiKeys, KeyFacts};
use crate::qdrant;
use crate::validate::Instance;

/// The kinds of the objects a SecureQdrant owns, as (apiVersion, kind).
pub const CHILD_KINDS: [(&str, &str); 7] = [
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "StatefulSet"),
];

/// Secret material the children depend on (read from the cluster or freshly generated).
#[derive(Clone, Debug, PartialEq)]
pub struct Material {
    pub api_keys: ApiKeys,
    /// None when TLS is off.
    pub tls: Option<PodTls>,
}

/// What the pods need from the TLS material.
#[derive(Clone, Debug, PartialEq)]
pub struct PodTls {
    /// Data and annotations of `<n>-tls`; None when the user brings the certificate.
    pub secret: Option<(BTreeMap<String, ByteString>, BTreeMap<String, String>)>,
    /// Changes whenever the pods must restart to load new material (gRPC and p2p read the
    /// certificate only at start).
    pub fingerprint: String,
    /// Data of `<n>-metrics-client` (the scrapers' client certificate), when the operator
    /// issues it ([`Instance::metrics_client_secret`]) and has one. The pods do not mount it.
    pub metrics_client: Option<BTreeMap<String, ByteString>>,
}

impl PodTls {
    /// Visible placeholders, for `render`.
    pub fn placeholder(issued_by_operator: bool) -> Self {
        let text = |what: &str| ByteString(format!("<{what}>").into_bytes());
        PodTls {
            secret: issued_by_operator.then(|| {
                (
                    BTreeMap::from([
                        (
                            "tls.crt".to_owned(),
                            text("issued by the operator: serving certificate"),
                        ),
                        (
                            "tls.key".to_owned(),
                            text("issued by the operator: private key"),
                        ),
                        (
                            "ca.crt".to_owned(),
                            text("issued by the operator: trust bundle"),
                        ),
                    ]),
                    // What a new instance's `<n>-tls` carries: no CA rollover in progress.
                    BTreeMap::from([(
                        crate::tls::ROLLOVER_PHASE_ANNOTATION.to_owned(),
                        crate::tls::Phase::Stable.as_str().to_owned(),
                    )]),
                )
            }),
            fingerprint: "<fingerprint of the certificate>".to_owned(),
            metrics_client: None,
        }
    }
}

/// Every object of one instance. Applying destructures this without `..`, so a child that is
/// built but not applied fails to compile.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub service_account: ServiceAccount,
    /// `<n>-api-key`: the keys the operator generates ([`Instance::generated_api_keys`]) and the
    /// fingerprint salt, so always present. Created once by the credentials step and never
    /// overwritten; never applied.
    pub api_key_secret: Option<Secret>,
    /// `<n>-tls`, when the operator issues the serving certificate.
    pub tls_secret: Option<Secret>,
    /// `<n>-metrics-client`, when the operator issues the scrapers' client certificate.
    pub metrics_client_secret: Option<Secret>,
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub network_policies: Vec<NetworkPolicy>,
    /// Only in cluster mode.
    pub pdb: Option<PodDisruptionBudget>,
    pub statefulset: StatefulSet,
}

/// Builds every child of an instance.
pub fn build(inst: &Instance, material: &Material) -> Children {
    Children {
        api_key_secret: secrets::api_key(inst, &material.api_keys),
        ..build_from_facts(inst, &material.api_keys.facts(), material.tls.as_ref())
    }
}

/// Builds every child of an instance from what the reconcile knows of its keys
/// ([`KeyFacts`]: no key values, so `api_key_secret` is None; the credentials step writes that
/// Secret) and its TLS material (`tls.secret` / `tls.metrics_client` None: those Secrets are
/// not written in this reconcile).
pub fn build_from_facts(inst: &Instance, keys: &KeyFacts, tls: Option<&PodTls>) -> Children {
    let config_yaml = qdrant::config_yaml(inst);
    let restart = restart_hash_of(&config_yaml, keys, tls);
    Children {
        service_account: service_account::build(inst),
        api_key_secret: None,
        tls_secret: tls
            .and_then(|t| t.secret.as_ref())
            .map(|(data, annotations)| secrets::tls(inst, data.clone(), annotations.clone())),
        metrics_client_secret: tls
            .and_then(|t| t.metrics_client.as_ref())
            .filter(|_| inst.metrics_client_secret().is_some())
            .map(|data| secrets::metrics_client(inst, data.clone())),
        config_map: config_map::build(inst, &config_yaml),
        headless_service: services::headless(inst),
        client_service: services::client(inst),
        network_policies: network_policies::build(inst),
        pdb: pdb::build(inst),
        statefulset: statefulset::build_from_facts(
            inst,
            keys,
            &restart,
            tls.map(|t| t.fingerprint.as_str()),
        ),
    }
}

/// Hash of everything Qdrant reads only at start: the config file, the keys (as HMACs keyed
/// with the instance's fingerprint salt, never the values nor a plain hash of them) and the TLS
/// material (gRPC and p2p load it only at start). A change rolls the StatefulSet one pod at a time.
pub fn restart_hash(config_yaml: &str, material: &Material) -> String {
    restart_hash_of(
        config_yaml,
        &material.api_keys.facts(),
        material.tls.as_ref(),
    )
}

/// [`restart_hash`] from the keys' [`KeyFacts`].
pub fn restart_hash_of(config_yaml: &str, keys: &KeyFacts, tls: Option<&PodTls>) -> String {
    let mut h = Sha256::new();
    h.update(b"config\0");
    h.update(config_yaml.as_bytes());
    h.update(b"\0api-key\0");
    h.update(keys.api_key_mac);
    if let Some(ro) = &keys.read_only_mac {
        h.update(b"\0read-only-api-key\0");
        h.update(ro);
    }
    if let Some((_, alt)) = &keys.alt {
        h.update(b"\0alt-api-key\0");
        h.update(alt);
    }
    if let Some(tls) = tls {
        h.update(b"\0tls\0");
        h.update(tls.fingerprint.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl Children {
    /// Every object the operator writes for the instance, in the order it writes them, as JSON
    /// (for `render` and tests): `<n>-api-key` (the credentials step creates it first), then
    /// `ca_secret` (`<n>-ca`, which the TLS step creates from the CA it issues, so the caller
    /// passes it: see [`secrets::ca`]), then the applied children in apply order. Secrets and
    /// ConfigMaps come before the StatefulSet that mounts them; NetworkPolicies before any pod
    /// exists.
    pub fn to_values(&self, ca_secret: Option<&Secret>) -> Vec<serde_json::Value> {
        let Children {
            service_account,
            api_key_secret,
            tls_secret,
            metrics_client_secret,
            config_map,
            headless_service,
            client_service,
            network_policies,
            pdb,
            statefulset,
        } = self;
        let mut out: Vec<serde_json::Value> = api_key_secret.iter().map(typed).collect();
        out.extend(ca_secret.map(typed));
        out.push(typed(service_account));
        out.extend(tls_secret.iter().map(typed));
        out.extend(metrics_client_secret.iter().map(typed));
        out.extend([
            typed(config_map),
            typed(headless_service),
            typed(client_service),
        ]);
        out.extend(network_policies.iter().map(typed));
        out.extend(pdb.iter().map(typed));
        out.push(typed(statefulset));
        out
    }
}

/// Serializes a k8s-openapi object (its apiVersion and kind included).
fn typed<K: serde::Serialize>(obj: &K) -> serde_json::Value {
    serde_json::to_value(obj).expect("k8s objects serialize")
}
