//! Validation of a `QdrantAccessToken` into a [`ValidToken`]. The same bounds as the CRD schema
//! and its CEL rules (checked equal by tests/access_tokens.rs), plus what only the operator can
//! know: whether the SecureQdrant exists, accepts JWTs and allows manage tokens.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::claims::{Access, Claims, CollectionClaim, MatchValue, PayloadMatchClaim, ValueExists};
use crate::crd::{
    GlobalAccess, MAX_COLLECTION_NAME_LEN, MAX_JSON_PATH_INDEX, MAX_MATCH_VALUE_LEN, MAX_NAME_LEN,
    MAX_PAYLOAD_KEY_LEN, MAX_TOKEN_COLLECTIONS, MAX_TOKEN_LIFETIME,
    MAX_TOKEN_NAME_FOR_DEFAULT_SECRET, MAX_VALUE_EXISTS_MATCHES, MIN_RENEW_BEFORE,
    MIN_TOKEN_LIFETIME, MIN_TOKEN_USE, QdrantAccessToken, SecureQdrant, ValueExistsSpec,
};
use crate::validate::Invalid;

/// What token validation needs to know about the referenced SecureQdrant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The SecureQdrant exists in the token's namespace.
    pub exists: bool,
    /// Its `spec.auth.jwtRbac`.
    pub jwt_rbac: bool,
    /// Its `spec.auth.allowManageTokens`.
    pub allow_manage_tokens: bool,
}

impl InstanceInfo {
    /// No SecureQdrant of that name.
    pub const MISSING: InstanceInfo = InstanceInfo {
        exists: false,
        jwt_rbac: false,
        allow_manage_tokens: false,
    };

    /// The facts about a SecureQdrant, or [`InstanceInfo::MISSING`].
    pub fn of(instance: Option<&SecureQdrant>) -> Self {
        match instance {
            Some(sq) => InstanceInfo {
                exists: true,
                jwt_rbac: sq.spec.auth.jwt_rbac,
                allow_manage_tokens: sq.spec.auth.allow_manage_tokens,
            },
            None => InstanceInfo::MISSING,
        }
    }
}

/// A validated `QdrantAccessToken`: everything the planner, the signer and the Secret builder
/// need, defaults resolved. Holds no secret.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidToken {
    /// `metadata.name` of the QdrantAccessToken.
    pub name: String,
    pub namespace: String,
    /// Controller owner reference to the QdrantAccessToken (for its Secret).
    pub owner: OwnerReference,
    pub generation: Option<i64>,
    /// Name of the SecureQdrant whose API key signs the token.
    pub instance: String,
    pub access: Access,
    pub value_exists: Option<ValueExists>,
    /// `<namespace>/<name>`: the `subject` claim, which Qdrant writes to its audit log.
    pub subject: String,
    /// Whole seconds, within the schema's bounds.
    pub lifetime: SignedDuration,
    /// Whole seconds, at least [`MIN_RENEW_BEFORE`] and [`MIN_TOKEN_USE`] shorter than
    /// `lifetime`.
    pub renew_before: SignedDuration,
    pub secret_name: String,
}

impl ValidToken {
    /// The claims of a token expiring at `expires_at` (truncated to a whole second).
    pub fn claims(&self, expires_at: Timestamp) -> Claims {
        Claims {
            exp: u64::try_from(expires_at.as_second()).unwrap_or(0),
            access: self.access.clone(),
            value_exists: self.value_exists.clone(),
            subject: Some(self.subject.clone()),
        }
    }

    /// Hash of everything a signed token must reflect: the claims other than `exp`, and the
    /// lifetime (a shorter lifetime must not leave a longer-lived token in place).
    pub fn claims_hash(&self) -> String {
        let mut claims = serde_json::to_value(self.claims(Timestamp::UNIX_EPOCH))
            .expect("claims always serialize");
        if let Some(map) = claims.as_object_mut() {
            map.remove("exp");
        }
        let mut h = Sha256::new();
        h.update(b"secureqdrant.dev/token-claims/v1\0");
        h.update(claims.to_string().as_bytes());
        h.update(b"\0lifetime\0");
        h.update(self.lifetime.as_secs().to_be_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// How much earlier than `exp - renewBefore` this token is renewed: a fixed amount derived
    /// from its namespace and name, below a tenth of `renewBefore` and at most a minute, so tokens
    /// signed together (after a key rotation) are not all renewed in the same second.
    pub fn jitter(&self) -> SignedDuration {
        let window = (self.renew_before.as_secs() / 10).clamp(0, 60);
        if window == 0 {
            return SignedDuration::ZERO;
        }
        let digest = Sha256::digest(format!("{}/{}", self.namespace, self.name).as_bytes());
        let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        SignedDuration::from_secs((n % window.unsigned_abs()) as i64)
    }

    /// When a token expiring at `expires_at` is renewed: `expires_at - renewBefore - jitter`.
    pub fn renewal_time(&self, expires_at: Timestamp) -> Timestamp {
        expires_at
            .saturating_sub(self.renew_before)
            .and_then(|t| t.saturating_sub(self.jitter()))
            .unwrap_or(expires_at)
    }

    /// Summary of the access for status and printer columns (`global:r`, `docs:r,users:rw`).
    pub fn access_summary(&self) -> String {
        self.access.summary()
    }
}

/// Validates a `QdrantAccessToken` against the facts about its SecureQdrant. Pure. Every
/// problem names the field it concerns (`spec.access.collections[1].collection`).
pub fn validate_token_spec(
    token: &QdrantAccessToken,
    instance: &InstanceInfo,
) -> Result<ValidToken, Vec<Invalid>> {
    let mut problems = Vec::new();
    let spec = &token.spec;
    let name = token.name_any();
    if name.is_empty() {
        problems.push(invalid("metadata.name", "is required"));
    }
    let namespace = token.namespace().unwrap_or_default();
    if namespace.is_empty() {
        problems.push(invalid("metadata.namespace", "is required"));
    }
    let owner = token.controller_owner_ref(&());
    if owner.is_none() {
        problems.push(invalid(
            "metadata.uid",
            "is required (the token Secret is owned by the QdrantAccessToken)",
        ));
    }

    let instance_name = spec.qdrant_ref.name.as_str();
    if !is_dns_label(instance_name, MAX_NAME_LEN) {
        problems.push(invalid(
            "spec.qdrantRef.name",
            format!(
                "{instance_name:?} is not a SecureQdrant name (a DNS-1035 label of at most \
                 {MAX_NAME_LEN} characters)"
            ),
        ));
    } else if !instance.exists {
        problems.push(invalid(
            "spec.qdrantRef.name",
            format!("SecureQdrant {instance_name:?} does not exist in namespace {namespace:?}"),
        ));
    } else if !instance.jwt_rbac {
        problems.push(invalid(
            "spec.qdrantRef.name",
            format!(
                "SecureQdrant {instance_name:?} has spec.auth.jwtRbac off, so Qdrant rejects \
                 every token: turn it on"
            ),
        ));
    }

    let access = access(token, instance, &mut problems);
    let value_exists = spec
        .value_exists
        .as_ref()
        .and_then(|v| value_exists(v, &mut problems));
    let (lifetime, renew_before) = durations(token, &mut problems);
    let secret_name = secret_name(token, &name, instance_name, &mut problems);

    match (problems.is_empty(), owner, access, lifetime, renew_before) {
        (true, Some(owner), Some(access), Some(lifetime), Some(renew_before)) => Ok(ValidToken {
            subject: format!("{namespace}/{name}"),
            name,
            namespace,
            owner,
            generation: token.metadata.generation,
            instance: instance_name.to_owned(),
            access,
            value_exists,
            lifetime,
            renew_before,
            secret_name,
        }),
        _ => Err(problems),
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn access(
    token: &QdrantAccessToken,
    instance: &InstanceInfo,
    problems: &mut Vec<Invalid>,
) -> Option<Access> {
    let access = &token.spec.access;
    match (&access.global, &access.collections) {
        (Some(_), Some(_)) | (None, None) => {
            problems.push(invalid(
                "spec.access",
                "set exactly one of spec.access.global or spec.access.collections",
            ));
            None
        }
        (Some(GlobalAccess::Manage), None) if !instance.allow_manage_tokens => {
            problems.push(invalid(
                "spec.access.global",
                format!(
                    "global manage access (m) is as powerful as the API key: SecureQdrant {:?} \
                     must set spec.auth.allowManageTokens to allow it",
                    token.spec.qdrant_ref.name
                ),
            ));
            None
        }
        (Some(level), None) => Some(Access::Global(*level)),
        (None, Some(list)) => {
            let before = problems.len();
            if list.is_empty() {
                problems.push(invalid(
                    "spec.access.collections",
                    "must list at least one collection",
                ));
            }
            if list.len() > MAX_TOKEN_COLLECTIONS {
                problems.push(invalid(
                    "spec.access.collections",
                    format!(
                        "may list at most {MAX_TOKEN_COLLECTIONS} collections (use global access \
                         for more)"
                    ),
                ));
            }
            let mut seen = BTreeMap::new();
            for (i, entry) in list.iter().enumerate() {
                let field = format!("spec.access.collections[{i}].collection");
                collection_name(&field, &entry.collection, problems);
                if let Some(first) = seen.insert(entry.collection.as_str(), i) {
                    problems.push(invalid(
                        field,
                        format!(
                            "{:?} is already listed at spec.access.collections[{first}]: list \
                             each collection once",
                            entry.collection
                        ),
                    ));
                }
            }
            (problems.len() == before).then(|| {
                Access::Collections(
                    list.iter()
                        .map(|c| CollectionClaim {
                            collection: c.collection.clone(),
                            access: c.access,
                        })
                        .collect(),
                )
            })
        }
    }
}

fn collection_name(field: &str, name: &str, problems: &mut Vec<Invalid>) {
    if name.is_empty() {
        problems.push(invalid(field, "may not be empty"));
    } else if name.chars().count() > MAX_COLLECTION_NAME_LEN {
        problems.push(invalid(
            field,
            format!("may be at most {MAX_COLLECTION_NAME_LEN} characters"),
        ));
    }
}

fn value_exists(spec: &ValueExistsSpec, problems: &mut Vec<Invalid>) -> Option<ValueExists> {
    let before = problems.len();
    collection_name("spec.valueExists.collection", &spec.collection, problems);
    if spec.matches.is_empty() {
        problems.push(invalid(
            "spec.valueExists.matches",
            "must have at least one entry",
        ));
    }
    if spec.matches.len() > MAX_VALUE_EXISTS_MATCHES {
        problems.push(invalid(
            "spec.valueExists.matches",
            format!("may have at most {MAX_VALUE_EXISTS_MATCHES} entries"),
        ));
    }
    let mut matches = Vec::with_capacity(spec.matches.len());
    for (i, m) in spec.matches.iter().enumerate() {
        payload_key(
            &format!("spec.valueExists.matches[{i}].key"),
            &m.key,
            problems,
        );
        let value_field = format!("spec.valueExists.matches[{i}].value");
        if let Some(value) = match_value(&value_field, &m.value, problems) {
            matches.push(PayloadMatchClaim {
                key: m.key.clone(),
                value,
            });
        }
    }
    (problems.len() == before).then(|| ValueExists {
        collection: spec.collection.clone(),
        matches,
    })
}

/// `spec.valueExists.matches[i].key`: a Qdrant payload key of bounded length.
fn payload_key(field: &str, key: &str, problems: &mut Vec<Invalid>) {
    if key.is_empty() {
        problems.push(invalid(field, "may not be empty"));
    } else if key.chars().count() > MAX_PAYLOAD_KEY_LEN {
        problems.push(invalid(
            field,
            format!("may be at most {MAX_PAYLOAD_KEY_LEN} characters"),
        ));
    } else if !is_qdrant_json_path(key) && json_path(key, None) {
        problems.push(invalid(
            field,
            format!(
                "{:?} has an array index above {MAX_JSON_PATH_INDEX}: Qdrant refuses the \
                 whole token when an index overflows its integer type",
                key
            ),
        ));
    } else if !is_qdrant_json_path(key) {
        problems.push(invalid(
            field,
            format!(
                "{:?} is not a Qdrant payload key (examples: user_id, meta.tenant, tags[], \
                 \"key with spaces\")",
                key
            ),
        ));
    }
}

/// `spec.valueExists.matches[i].value`: what Qdrant matches exactly (a string of bounded
/// length, an integer or a boolean).
fn match_value(field: &str, value: &Value, problems: &mut Vec<Invalid>) -> Option<MatchValue> {
    match value {
        Value::String(s) if s.chars().count() > MAX_MATCH_VALUE_LEN => {
            problems.push(invalid(
                field,
                format!("may be at most {MAX_MATCH_VALUE_LEN} characters"),
            ));
            None
        }
        Value::String(s) => Some(MatchValue::String(s.clone())),
        Value::Bool(b) => Some(MatchValue::Bool(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(MatchValue::Integer(i)),
            None => {
                problems.push(invalid(
                    field,
                    format!(
                        "{n} is not a 64-bit integer (Qdrant matches strings, integers and \
                         booleans exactly, never floats)"
                    ),
                ));
                None
            }
        },
        _ => {
            problems.push(invalid(field, "must be a string, an integer or a boolean"));
            None
        }
    }
}

/// Whether `key` parses as a Qdrant JSON path (Qdrant refuses a token whose `value_exists` key
/// does not): a key, then any of `.key`, `[n]`, `[]`, where a key is one or more alphanumeric,
/// `_` or `-` characters, or any text without `"` and `\` between double quotes, and an index
/// `n` is at most [`MAX_JSON_PATH_INDEX`].
pub fn is_qdrant_json_path(path: &str) -> bool {
    json_path(path, Some(MAX_JSON_PATH_INDEX))
}

/// [`is_qdrant_json_path`] with indices bounded by `max_index` (`None`: any digits).
fn json_path(path: &str, max_index: Option<u64>) -> bool {
    fn plain(s: &str) -> Option<&str> {
        let end = s
            .char_indices()
            .find(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .map_or(s.len(), |(i, _)| i);
        (end > 0).then(|| &s[end..])
    }
    fn quoted(s: &str) -> Option<&str> {
        let body = s.strip_prefix('"')?;
        let end = body.find(['"', '\\'])?;
        body[end..].strip_prefix('"')
    }
    fn key(s: &str) -> Option<&str> {
        plain(s).or_else(|| quoted(s))
    }
    let Some(mut rest) = key(path) else {
        return false;
    };
    while !rest.is_empty() {
        rest = if let Some(after) = rest.strip_prefix('.') {
            match key(after) {
                Some(r) => r,
                None => return false,
            }
        } else if let Some(after) = rest.strip_prefix("[]") {
            after
        } else if let Some(after) = rest.strip_prefix('[') {
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let fits = |n: &str| max_index.is_none_or(|max| n.parse().is_ok_and(|n: u64| n <= max));
            match after[digits..].strip_prefix(']') {
                Some(r) if digits > 0 && fits(&after[..digits]) => r,
                _ => return false,
            }
        } else {
            return false;
        };
    }
    true
}

/// A Go duration as whole seconds, or a problem naming the field.
fn duration(field: &str, value: &str, problems: &mut Vec<Invalid>) -> Option<SignedDuration> {
    match value.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() => {
            let std: StdDuration = d.into();
            match i64::try_from(std.as_secs()) {
                Ok(secs) => Some(SignedDuration::from_secs(secs)),
                Err(_) => {
                    problems.push(invalid(field, format!("{value:?} is too long")));
                    None
                }
            }
        }
        _ => {
            problems.push(invalid(
                field,
                format!("{value:?} is not a duration (examples: 24h, 90m, 1h30m)"),
            ));
            None
        }
    }
}

/// One of the bound constants (`"10m"`) as a duration.
fn bound(text: &str) -> SignedDuration {
    let d: StdDuration = text
        .parse::<kube::core::Duration>()
        .expect("the bounds are valid durations")
        .into();
    SignedDuration::from_secs(d.as_secs() as i64)
}

fn durations(
    token: &QdrantAccessToken,
    problems: &mut Vec<Invalid>,
) -> (Option<SignedDuration>, Option<SignedDuration>) {
    let spec = &token.spec;
    let lifetime = duration("spec.lifetime", &spec.lifetime, problems);
    let lifetime = lifetime.and_then(|l| {
        if l < bound(MIN_TOKEN_LIFETIME) || l > bound(MAX_TOKEN_LIFETIME) {
            problems.push(invalid(
                "spec.lifetime",
                format!(
                    "{:?} is out of bounds: a token lives between {MIN_TOKEN_LIFETIME} and \
                     {MAX_TOKEN_LIFETIME}",
                    spec.lifetime
                ),
            ));
            None
        } else {
            Some(l)
        }
    });
    let renew_before = match &spec.renew_before {
        None => lifetime.map(|l| SignedDuration::from_secs(l.as_secs() / 3)),
        Some(text) => duration("spec.renewBefore", text, problems).and_then(|r| {
            let mut ok = true;
            if r < bound(MIN_RENEW_BEFORE) {
                problems.push(invalid(
                    "spec.renewBefore",
                    format!(
                        "{text:?} is too short: at least {MIN_RENEW_BEFORE} (a kubelet needs about \
                         a minute to refresh a mounted Secret)"
                    ),
                ));
                ok = false;
            }
            if let Some(l) = lifetime
                && l - r < bound(MIN_TOKEN_USE)
            {
                problems.push(invalid(
                    "spec.renewBefore",
                    format!(
                        "{text:?} must be shorter than spec.lifetime ({:?}) by at least \
                         {MIN_TOKEN_USE}",
                        spec.lifetime
                    ),
                ));
                ok = false;
            }
            ok.then_some(r)
        }),
    };
    (lifetime, renew_before)
}

fn secret_name(
    token: &QdrantAccessToken,
    name: &str,
    instance: &str,
    problems: &mut Vec<Invalid>,
) -> String {
    let secret_name = token.secret_name();
    match &token.spec.secret_name {
        Some(explicit) if !is_dns_subdomain(explicit) => {
            problems.push(invalid(
                "spec.secretName",
                format!(
                    "{explicit:?} is not a Secret name (a DNS subdomain of at most 253 \
                     characters)"
                ),
            ));
        }
        Some(_) => {}
        None if name.chars().count() > MAX_TOKEN_NAME_FOR_DEFAULT_SECRET => {
            problems.push(invalid(
                "metadata.name",
                format!(
                    "may be at most {MAX_TOKEN_NAME_FOR_DEFAULT_SECRET} characters unless \
                     spec.secretName is set (the default Secret name is <name>-qdrant-token)"
                ),
            ));
        }
        None => {}
    }
    if let Some(owner) = crate::children::meta::instance_of_secret_name(&secret_name) {
        problems.push(invalid(
            "spec.secretName",
            reserved_secret_name_message(&secret_name, owner, instance),
        ));
    }
    secret_name
}

/// Why a token may not use `secret_name`: it is a Secret name that SecureQdrant `owner` uses or
/// will need (see [`crate::children::meta::INSTANCE_SECRET_SUFFIXES`]).
pub fn reserved_secret_name_message(secret_name: &str, owner: &str, instance: &str) -> String {
    let whose = if owner == instance {
        format!("a Secret of SecureQdrant {owner:?}")
    } else {
        format!("the name of a Secret SecureQdrant {owner:?} uses (existing or created later)")
    };
    format!(
        "{secret_name:?} is {whose}: names ending in {} are reserved for SecureQdrants; choose \
         another name",
        crate::children::meta::INSTANCE_SECRET_SUFFIXES.join(", ")
    )
}

/// A DNS-1035 label of at most `max` characters.
fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS subdomain (RFC 1123) of at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdrant_json_paths() {
        for ok in [
            "user_id",
            "a-b",
            "meta.tenant",
            "tags[]",
            "a[0].b[12]",
            "a[999999999]",
            "a[000000000999999999]",
            "\"key with spaces\"",
            "a.\"b.c\"[]",
            "ключ",
        ] {
            assert!(is_qdrant_json_path(ok), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a b",
            "a[",
            "a[x]",
            "a]",
            "\"open",
            "a..b",
            "a.[0]",
            "\"a\\\"\"",
            "$.a",
            "a[1000000000]",
            "a[18446744073709551616]",
            "a[0].b[99999999999999999999999999999]",
        ] {
            assert!(!is_qdrant_json_path(bad), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_label("vectors", 52));
        assert!(!is_dns_label("9vectors", 52));
        assert!(!is_dns_label("vectors-", 52));
        assert!(!is_dns_label(&"a".repeat(53), 52));
        assert!(is_dns_subdomain("app.token-1"));
        assert!(!is_dns_subdomain("App"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn bounds_parse() {
        assert_eq!(bound(MIN_TOKEN_LIFETIME), SignedDuration::from_mins(10));
        assert_eq!(bound(MAX_TOKEN_LIFETIME), SignedDuration::from_hours(8760));
        assert_eq!(bound(MIN_RENEW_BEFORE), SignedDuration::from_mins(2));
        assert_eq!(bound(MIN_TOKEN_USE), SignedDuration::from_mins(5));
    }
}
