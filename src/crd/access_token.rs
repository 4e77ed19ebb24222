//! `QdrantAccessToken`: an application's scoped credential for one SecureQdrant.
//!
//! The operator signs a Qdrant JWT (HS256, with the instance's API key) that grants what `access`
//! says, keeps it fresh in a Secret the application mounts, and renews it before it expires.
//! Field names, defaults and descriptions here are the user-facing contract (`kubectl explain`).
//!
//! Like [`super::SecureQdrant`], every field the schema accepts deserializes (durations are
//! strings, `valueExists` values are any JSON): one object the operator cannot read would break
//! its whole watch. [`crate::tokens::validate_token_spec`] then checks everything again.

// `printcolumn(type_ = ...)` repeats per column by design; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Shortest token lifetime the schema accepts. Below this the operator would re-sign tokens
/// faster than a kubelet reliably refreshes a mounted Secret.
pub const MIN_TOKEN_LIFETIME: &str = "10m";
/// Longest token lifetime the schema accepts. A token cannot be revoked before it expires except
/// by rotating the instance's API key (or through `valueExists`), so a year is the ceiling.
pub const MAX_TOKEN_LIFETIME: &str = "8760h";
/// Default token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: &str = "24h";
/// Shortest `renewBefore`: a kubelet refreshes a mounted Secret within about a minute (its sync
/// period plus cache TTL), so a renewed token must be written at least that long before the old
/// one expires.
pub const MIN_RENEW_BEFORE: &str = "2m";
/// Shortest time a token is used before it is renewed (`lifetime - renewBefore`): keeps a
/// misconfigured token from being re-signed in a tight loop.
pub const MIN_TOKEN_USE: &str = "5m";
/// Most collections one token may list. A token for more should be a global one.
pub const MAX_TOKEN_COLLECTIONS: usize = 100;
/// Longest Qdrant collection name.
pub const MAX_COLLECTION_NAME_LEN: usize = 255;
/// Most `valueExists.matches` entries.
pub const MAX_VALUE_EXISTS_MATCHES: usize = 16;
/// Longest payload key (a Qdrant JSON path) in `valueExists.matches`.
pub const MAX_PAYLOAD_KEY_LEN: usize = 256;
/// Largest array index (`tags[3]`) in a `valueExists.matches` key. Qdrant reads an index as a
/// `usize` and refuses the whole token ("not a JWT", 401) when one overflows; nine digits fit any
/// `usize`, also a 32-bit one, and no payload array has a billion elements (a request body that
/// could write one is far beyond Qdrant's size limit).
pub const MAX_JSON_PATH_INDEX: u64 = 999_999_999;
/// Longest string value in `valueExists.matches`.
pub const MAX_MATCH_VALUE_LEN: usize = 1024;
/// Longest `metadata.name` whose default Secret name (`<name>-qdrant-token`) is still a valid
/// Secret name (253 characters).
pub const MAX_TOKEN_NAME_FOR_DEFAULT_SECRET: usize = 253 - SECRET_NAME_SUFFIX.len();
/// Suffix of the default Secret name.
pub const SECRET_NAME_SUFFIX: &str = "-qdrant-token";

/// A Go duration (`24h`, `90m`, `1h30m`); parsed by CEL `duration()` and by the operator.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// A DNS subdomain (RFC 1123), the syntax of a Secret name.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A scoped Qdrant credential for applications: the operator signs a JWT with the instance's
/// API key and keeps it fresh in a Secret.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "secureqdrant.dev",
    version = "v1alpha1",
    kind = "QdrantAccessToken",
    namespaced,
    shortname = "qat",
    category = "secure-qdrant",
    status = "QdrantAccessTokenStatus",
    derive = "PartialEq",
    doc = "A scoped, short-lived Qdrant credential (a JWT) that the operator signs with a SecureQdrant's API key and keeps fresh in a Secret.",
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".spec.qdrantRef.name"
    ),
    printcolumn(name = "Access", type_ = "string", json_path = ".status.access"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Secret",
        type_ = "string",
        priority = 1,
        json_path = ".status.secretName"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// Each duration rule checks the syntax first (`matches`), so a malformed value is refused with
// the rule's message rather than a CEL evaluation error; the pattern is DURATION_PATTERN with
// `[.]` for `\.` (no escape to get wrong between Rust, JSON and CEL string literals).
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.lifetime.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self.lifetime) >= duration('10m') && duration(self.lifetime) <= duration('8760h')",
     "message": "spec.lifetime must be a Go duration between 10m and 8760h"},
    {"rule": "!has(self.renewBefore) || (self.renewBefore.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self.renewBefore) >= duration('2m'))",
     "message": "spec.renewBefore must be a Go duration of at least 2m (a kubelet needs about a minute to refresh a mounted Secret)"},
    {"rule": "!has(self.renewBefore) || !self.renewBefore.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || !self.lifetime.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.lifetime) - duration(self.renewBefore) >= duration('5m')",
     "message": "spec.renewBefore must be shorter than spec.lifetime by at least 5m"},
    {"rule": "has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)",
     "message": "spec.secretName cannot be changed (delete and recreate the QdrantAccessToken)"}
]))]
pub struct QdrantAccessTokenSpec {
    /// The SecureQdrant, in the same namespace, whose API key signs the token. Its
    /// `spec.auth.jwtRbac` must be on.
    pub qdrant_ref: QdrantRef,

    /// What the token may do: exactly one of `global` or `collections`.
    pub access: TokenAccess,

    /// Revocation switch: the token is valid only while a point matching every entry of
    /// `matches` exists in `collection`. Delete that point to revoke the token at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_exists: Option<ValueExistsSpec>,

    /// How long each signed token is valid (Go duration, 10m to 8760h). The token's `exp` is
    /// its signing time plus this; a token without expiry is never issued. Fractions of a
    /// second are dropped.
    #[serde(default = "default_lifetime")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub lifetime: String,

    /// How long before expiry the token is replaced (Go duration, at least 2m and at least 5m
    /// shorter than `lifetime`). Default: a third of the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub renew_before: Option<String>,

    /// Name of the Secret holding the token (keys `token`, `url`, `grpc-url`, `ca.crt`).
    /// Default: `<metadata.name>-qdrant-token`. Cannot be changed later. The operator never
    /// writes to a Secret it does not own. May not end in `-api-key`, `-ca`, `-tls` or
    /// `-metrics-client` (the Secrets of SecureQdrants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

fn default_lifetime() -> String {
    DEFAULT_TOKEN_LIFETIME.to_owned()
}

/// A SecureQdrant in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct QdrantRef {
    /// Name of the SecureQdrant.
    #[schemars(
        length(min = 1, max = 52),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// What a token may do. Set exactly one of `global` or `collections`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.global) != has(self.collections)",
     "message": "spec.access must set exactly one of global or collections"}
]))]
pub struct TokenAccess {
    /// Access to every collection: `r` reads everything; `m` manages everything (create and
    /// delete collections, snapshots, cluster operations) and is as powerful as the API key, so
    /// the SecureQdrant must set `spec.auth.allowManageTokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalAccess>,

    /// Access to the listed collections only (never to global operations such as `/metrics`
    /// or creating collections). Each collection appears once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["collection"],
        "x-kubernetes-validations" = [
            {"rule": "self.all(c, self.exists_one(d, d.collection == c.collection))",
             "message": "spec.access.collections may list each collection only once"}
        ]
    ))]
    pub collections: Option<Vec<CollectionAccess>>,
}

/// Global access level of a token.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GlobalAccess {
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "m")]
    Manage,
}

impl GlobalAccess {
    /// The value in the JWT's `access` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalAccess::Read => "r",
            GlobalAccess::Manage => "m",
        }
    }
}

/// Access to one collection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct CollectionAccess {
    /// Name of the Qdrant collection.
    #[schemars(length(min = 1, max = 255))]
    pub collection: String,

    /// `r`: read; `rw`: read and write, including snapshots and payload indexes of the
    /// collection; `prw`: read and write points only.
    pub access: CollectionAccessLevel,
}

/// Access level to one collection.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CollectionAccessLevel {
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "rw")]
    ReadWrite,
    #[serde(rename = "prw")]
    PointsReadWrite,
}

impl CollectionAccessLevel {
    /// The value in the JWT's per-collection `access` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionAccessLevel::Read => "r",
            CollectionAccessLevel::ReadWrite => "rw",
            CollectionAccessLevel::PointsReadWrite => "prw",
        }
    }
}

/// The token is valid only while a point matching every entry exists in the collection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ValueExistsSpec {
    /// Collection Qdrant searches for the matching point.
    #[schemars(length(min = 1, max = 255))]
    pub collection: String,

    /// Payload conditions the point must all satisfy.
    #[schemars(length(min = 1, max = 16))]
    pub matches: Vec<PayloadMatch>,
}

/// One payload condition: the point's payload at `key` equals `value`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PayloadMatch {
    /// Payload key, as a Qdrant JSON path (`user_id`, `meta.tenant`, `tags[]`,
    /// `"key with spaces"`).
    #[schemars(length(min = 1, max = 256))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.matches('\\\\[0*[1-9][0-9]{9,}\\\\]')",
         "message": "spec.valueExists.matches[].key: an array index may be at most 999999999 (Qdrant refuses the whole token when an index overflows)"}
    ]))]
    pub key: String,

    /// Value the payload must equal: a string (at most 1024 characters), a 64-bit integer or a
    /// boolean. The type matters: `42` and `"42"` match different payloads.
    #[schemars(schema_with = "match_value_schema")]
    pub value: serde_json::Value,
}

/// `value` accepts any JSON value at the schema level: a structural schema cannot say "string,
/// integer or boolean", and the CEL `type()` function cannot be checked offline (kube-cel lacks
/// it), so a rule using it would be untested. The operator refuses anything else with a
/// condition naming the field ([`crate::tokens::validate_token_spec`]).
fn match_value_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(serde_json::json!({
        "description": "Value the payload must equal: a string (at most 1024 characters), a 64-bit integer or a boolean. The type matters: `42` and `\"42\"` match different payloads. Other values are refused by the operator.",
        "x-kubernetes-preserve-unknown-fields": true,
    }))
    .expect("a JSON object is a schema")
}

/// Observed state, written by the operator. Never holds the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QdrantAccessTokenStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The Secret holding the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// What the current token grants, e.g. `global:r` or `docs:r,users:rw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,

    /// When the current token expires (its `exp` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// When the operator replaces the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,

    /// When the client certificate in the Secret expires (only when the SecureQdrant requires
    /// client certificates, `spec.tls.clientCertificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_not_after: Option<Time>,

    /// When the operator replaces the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_renewal_time: Option<Time>,

    /// Conditions: Ready, and ClientCertificateReady when the SecureQdrant requires client
    /// certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl QdrantAccessToken {
    /// The Secret name: `spec.secretName`, or `<metadata.name>-qdrant-token`.
    pub fn secret_name(&self) -> String {
        match &self.spec.secret_name {
            Some(name) => name.clone(),
            None => format!(
                "{}{SECRET_NAME_SUFFIX}",
                self.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// The `QdrantAccessToken` CRD, with the rule that needs the object's metadata added at the root
/// and the reserved Secret names on `spec`.
pub fn access_token_crd() -> CustomResourceDefinition {
    let mut crd = QdrantAccessToken::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        schema
            .x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            // On create only (spec.secretName and the name are immutable): at the root, a rule
            // an existing token breaks would refuse every status write (see `on_create_only`).
            .push(super::rules::on_create_only(ValidationRule {
                rule: format!(
                    "has(self.spec.secretName) || self.metadata.name.size() <= {MAX_TOKEN_NAME_FOR_DEFAULT_SECRET}"
                ),
                message: Some(format!(
                    "metadata.name may be at most {MAX_TOKEN_NAME_FOR_DEFAULT_SECRET} characters \
                     unless spec.secretName is set (the default Secret name is \
                     <metadata.name>{SECRET_NAME_SUFFIX})"
                )),
                ..ValidationRule::default()
            }));
        let suffixes = super::instance_secrets::INSTANCE_SECRET_SUFFIXES
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        // On `spec`, not the root: the API server validates the whole object on every write,
        // status included, and ratchets a rule only on a node that did not change. At the root,
        // a token created before this rule could never get the status that names the fix.
        let spec = schema
            .properties
            .as_mut()
            .and_then(|p| p.get_mut("spec"))
            .expect("the token CRD has spec");
        spec.x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .push(ValidationRule {
                rule: format!(
                    "!has(self.secretName) || ![{suffixes}].exists(s, self.secretName.endsWith(s))"
                ),
                message: Some(format!(
                    "spec.secretName may not end in {}: those are the Secrets of SecureQdrants \
                     (a token there would block the instance)",
                    super::instance_secrets::INSTANCE_SECRET_SUFFIXES.join(", ")
                )),
                ..ValidationRule::default()
            });
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The literals in the schema attributes (which cannot name constants) equal the constants
    /// the operator validates with.
    #[test]
    fn schema_literals_match_the_constants() {
        let json = serde_json::to_string(&access_token_crd()).unwrap();
        let quoted = |s: &str| serde_json::to_string(s).unwrap();
        for needle in [
            format!("duration('{MIN_TOKEN_LIFETIME}')"),
            format!("duration('{MAX_TOKEN_LIFETIME}')"),
            format!("duration('{MIN_RENEW_BEFORE}')"),
            format!("duration('{MIN_TOKEN_USE}')"),
            format!("\"maxItems\":{MAX_TOKEN_COLLECTIONS}"),
            format!("\"maxLength\":{MAX_COLLECTION_NAME_LEN}"),
            format!("\"maxItems\":{MAX_VALUE_EXISTS_MATCHES}"),
            format!("\"maxLength\":{MAX_PAYLOAD_KEY_LEN}"),
            format!("at most {MAX_MATCH_VALUE_LEN} characters"),
            format!("\"default\":{}", quoted(DEFAULT_TOKEN_LIFETIME)),
            format!("\"pattern\":{}", quoted(DURATION_PATTERN)),
            format!(
                "matches({})",
                quoted(&DURATION_PATTERN.replace(r"\.", "[.]")).replace('"', "'")
            ),
            format!("\"pattern\":{}", quoted(DNS_SUBDOMAIN_PATTERN)),
            format!("size() <= {MAX_TOKEN_NAME_FOR_DEFAULT_SECRET}"),
        ] {
            assert!(json.contains(&needle), "the CRD lacks {needle:?}");
        }
    }

    #[test]
    fn default_secret_name_follows_the_token_name() {
        let mut t = QdrantAccessToken::new(
            "frontend",
            QdrantAccessTokenSpec {
                qdrant_ref: QdrantRef {
                    name: "vectors".into(),
                },
                access: TokenAccess {
                    global: Some(GlobalAccess::Read),
                    collections: None,
                },
                value_exists: None,
                lifetime: default_lifetime(),
                renew_before: None,
                secret_name: None,
            },
        );
        assert_eq!(t.secret_name(), "frontend-qdrant-token");
        t.spec.secret_name = Some("mine".into());
        assert_eq!(t.secret_name(), "mine");
    }
}
