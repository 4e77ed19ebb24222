//! QdrantAccessToken end to end, without a cluster: the CRD schema and CEL rules, the operator's
//! validation, the claims Qdrant reads, signing and verification with jsonwebtoken as Qdrant
//! configures it, renewal decisions at injected times, and the token Secret.
//!
//! Bad inputs state which layer refuses them:
//! - **schema**: the structural checks of the CRD's openAPIV3Schema (pattern, minLength,
//!   maxItems, ...), with the `jsonschema` crate on the schema turned into JSON Schema;
//! - **CEL**: the `x-kubernetes-validations` rules, evaluated by kube-cel as the apiserver would;
//! - **operator**: [`validate_token_spec`], given what it knows about the SecureQdrant.
//!
//! A layer not listed for a case must accept it, so every check here is seen passing and
//! failing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::cel::{ErrorKind as CelErrorKind, ValidationError, Validator};
use secure_qdrant_operator::crd::{QdrantAccessToken, access_token_crd};
use secure_qdrant_operator::material::SecretValue;
use secure_qdrant_operator::tokens::{
    CA_CRT_KEY, CLAIMS_HASH_ANNOTATION, GRPC_URL_KEY, InstanceInfo, KEY_FINGERPRINT_ANNOTATION,
    MintReason, TOKEN_KEY, TokenEndpoints, TokenError, URL_KEY, ValidToken, controlled_by,
    key_fingerprint, mint, plan_token, read_token, token_annotations, token_secret, token_status,
    validate_token_spec, verify,
};
use secure_qdrant_operator::validate::Invalid;
use serde_json::{Map, Value, json};

/// 2100-01-01T00:00:00Z: far enough ahead that jsonwebtoken's own clock never expires it.
const FAR_EXP: i64 = 4_102_444_800;

fn parse(doc: &str) -> QdrantAccessToken {
    serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("does not deserialize: {e}\n{doc}"))
}

fn valid(spec: &str) -> ValidToken {
    valid_with(spec, &READY)
}

fn valid_with(spec: &str, info: &InstanceInfo) -> ValidToken {
    validate_token_spec(&parse(&doc(spec)), info).unwrap_or_else(|p| panic!("{spec}: {p:?}"))
}

fn key() -> SecretValue {
    SecretValue::new("a-256-bit-api-key-0123456789abcdefghijklmnopq")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// jsonwebtoken configured as Qdrant configures it: HS256 only, `exp` optional but checked
/// with 30 s of leeway, audience not checked.
fn qdrant_validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims.clear();
    v.leeway = 30;
    v.validate_exp = true;
    v.validate_aud = false;
    v
}

fn qdrant_decode(token: &SecretValue, key: &str) -> Result<Value, ErrorKind> {
    jsonwebtoken::decode::<Value>(
        token.expose(),
        &DecodingKey::from_secret(key.as_bytes()),
        &qdrant_validation(),
    )
    .map(|d| d.claims)
    .map_err(|e| e.kind().clone())
}

// ---------------------------------------------------------------------------------------------
// Claims Qdrant reads
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_claims_decode_under_the_instance_key() {
    let cases: Vec<(&str, InstanceInfo, &str, Value)> = vec![
        (
            "global read",
            READY,
            "{qdrantRef: {name: vectors}, access: {global: r}}",
            json!({"exp": FAR_EXP, "access": "r", "subject": "search/frontend"}),
        ),
        (
            "global manage, allowed by the instance",
            MANAGE_OK,
            "{qdrantRef: {name: vectors}, access: {global: m}}",
            json!({"exp": FAR_EXP, "access": "m", "subject": "search/frontend"}),
        ),
        (
            "collections of every level, in spec order",
            READY,
            "{qdrantRef: {name: vectors}, access: {collections: [{collection: docs, access: r}, \
             {collection: users, access: rw}, {collection: events, access: prw}]}}",
            json!({"exp": FAR_EXP, "access": [
                {"collection": "docs", "access": "r"},
                {"collection": "users", "access": "rw"},
                {"collection": "events", "access": "prw"}
            ], "subject": "search/frontend"}),
        ),
        (
            "value_exists with a string, an integer and a boolean",
            READY,
            "{qdrantRef: {name: vectors}, access: {collections: [{collection: docs, access: r}]}, \
             valueExists: {collection: tokens, matches: [{key: token_id, value: frontend-1}, \
             {key: meta.version, value: 3}, {key: \"\\\"active flag\\\"\", value: true}, \
             {key: id, value: \"42\"}]}}",
            json!({"exp": FAR_EXP, "access": [{"collection": "docs", "access": "r"}],
                "value_exists": {"collection": "tokens", "matches": [
                    {"key": "token_id", "value": "frontend-1"},
                    {"key": "meta.version", "value": 3},
                    {"key": "\"active flag\"", "value": true},
                    {"key": "id", "value": "42"}
                ]},
                "subject": "search/frontend"}),
        ),
    ];
    let exp = Timestamp::from_second(FAR_EXP).unwrap();
    for (name, info, spec, expected) in cases {
        let token = valid_with(spec, &info);
        let jwt = mint(&token.claims(exp), &key()).unwrap();
        let claims =
            qdrant_decode(&jwt, key().expose()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(claims, expected, "{name}");
        assert_eq!(verify(&jwt, &key()).unwrap(), token.claims(exp), "{name}");
        // Header: HS256, nothing else that Qdrant would have to understand.
        let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
        assert_eq!(header.alg, Algorithm::HS256, "{name}");
        for other in ["", "a-256-bit-api-key-0123456789abcdefghijklmnopQ", "other"] {
            assert_eq!(
                qdrant_decode(&jwt, other),
                Err(ErrorKind::InvalidSignature),
                "{name}: verified under {other:?}"
            );
        }
    }
}

#[test]
fn subject_names_namespace_and_token_for_the_audit_log() {
    let token = validate_token_spec(
        &parse(&doc_named(
            "billing-worker",
            "{qdrantRef: {name: vectors}, access: {global: r}}",
        )),
        &READY,
    )
    .unwrap();
    assert_eq!(token.subject, "search/billing-worker");
    let claims =
        serde_json::to_value(token.claims(Timestamp::from_second(FAR_EXP).unwrap())).unwrap();
    assert_eq!(claims["subject"], "search/billing-worker");
    assert!(claims.get("sub").is_none());
}

#[test]
fn tokens_fail_after_exp_plus_qdrant_leeway() {
    let token = valid("{qdrantRef: {name: vectors}, access: {global: r}}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |offset: i64| {
        let exp = Timestamp::from_second(now + offset).unwrap();
        qdrant_decode(&mint(&token.claims(exp), &key()).unwrap(), key().expose())
    };
    assert!(at(3600).is_ok());
    // Expired, but within Qdrant's 30 s leeway: still accepted (a test run takes < 10 s).
    assert!(at(-20).is_ok());
    assert_eq!(at(-41), Err(ErrorKind::ExpiredSignature));
    assert_eq!(at(-3600), Err(ErrorKind::ExpiredSignature));
}

#[test]
fn every_minted_token_carries_exp_and_access() {
    for (spec, info) in [
        ("{qdrantRef: {name: vectors}, access: {global: r}}", READY),
        (
            "{qdrantRef: {name: vectors}, access: {global: m}}",
            MANAGE_OK,
        ),
        (
            "{qdrantRef: {name: vectors}, access: {collections: [{collection: a, access: prw}]}, lifetime: 8760h}",
            READY,
        ),
    ] {
        let token = valid_with(spec, &info);
        let plan = plan_token(ts("2030-01-01T00:00:00Z"), None, &token, &key());
        let jwt = mint(&token.claims(plan.expires_at), &key()).unwrap();
        let claims = qdrant_decode(&jwt, key().expose()).unwrap();
        assert_eq!(
            claims["exp"].as_i64(),
            Some(plan.expires_at.as_second()),
            "{spec}"
        );
        assert_eq!(
            plan.expires_at,
            ts("2030-01-01T00:00:00Z")
                .checked_add(token.lifetime)
                .unwrap()
        );
        assert!(claims.get("access").is_some_and(|a| !a.is_null()), "{spec}");
        assert!(claims.get("payload").is_none(), "{spec}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input, layer by layer
// ---------------------------------------------------------------------------------------------

#[path = "support/token_cases.rs"]
mod cases;

#[path = "support/kube_cel_optional.rs"]
mod kube_cel_optional;

use cases::*;

struct Layers {
    schema: jsonschema::Validator,
    openapi: Value,
}

impl Layers {
    fn new() -> Self {
        let crd = access_token_crd();
        let openapi = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("the CRD has a schema"),
        )
        .unwrap();
        // kube-cel binds an optional oldSelf differently (see the support module).
        let openapi = kube_cel_optional::kube_cel_optional_old_self(&openapi);
        let schema = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&to_json_schema(&openapi))
            .expect("the CRD schema is a valid JSON Schema");
        Layers { schema, openapi }
    }

    /// `path: message` of every structural error.
    fn schema_errors(&self, object: &Value) -> Vec<String> {
        self.schema
            .iter_errors(object)
            .map(|e| {
                let path = e
                    .instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .replace('/', ".");
                format!("{path}: {e}")
            })
            .collect()
    }

    fn cel_errors(&self, object: &Value, old: Option<&Value>) -> Vec<ValidationError> {
        let old = old.map(drop_nulls);
        match Validator::new().validate(&self.openapi, &drop_nulls(object), old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec(),
        }
    }
}

/// The OpenAPI 3.0 schema as JSON Schema draft 4 (`nullable` becomes a `null` type; the
/// `x-kubernetes-*` extensions, which JSON Schema does not know, are dropped).
fn to_json_schema(openapi: &Value) -> Value {
    let Value::Object(map) = openapi else {
        return openapi.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        if key.starts_with("x-kubernetes-") || key == "nullable" {
            continue;
        }
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), to_json_schema(v)))
                    .collect(),
            ),
            "items" | "additionalProperties" => to_json_schema(value),
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if map.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(t)) = out.get("type").cloned()
    {
        out.insert("type".to_owned(), json!([t, "null"]));
    }
    Value::Object(out)
}

/// The apiserver treats a null-valued nullable field as absent in CEL; kube-cel binds it.
fn drop_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), drop_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

fn yaml_to_json(doc: &str) -> Value {
    serde_yaml_ng::from_str(doc).expect("well-formed YAML")
}

/// Problems with one case (empty: every layer behaved as stated), and the CEL rules it fired.
fn check(layers: &Layers, case: &Case) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut fired = Vec::new();
    let object = yaml_to_json(&case.doc);
    let old = case.old.as_deref().map(yaml_to_json);
    let name = case.name;

    let schema = layers.schema_errors(&object);
    match (case.schema, schema.is_empty()) {
        (true, true) => failures.push(format!("{name}: the schema accepts it")),
        (false, false) => failures.push(format!("{name}: the schema refuses it: {schema:?}")),
        (true, false) => {
            if !schema.iter().any(|e| e.starts_with(case.field)) {
                failures.push(format!(
                    "{name}: no schema error names {}: {schema:?}",
                    case.field
                ));
            }
        }
        (false, true) => {}
    }

    let cel = layers.cel_errors(&object, old.as_ref());
    for e in &cel {
        if e.kind != CelErrorKind::ValidationFailure {
            failures.push(format!(
                "{name}: CEL could not evaluate a rule: {e} [{:?}]",
                e.kind
            ));
        }
        fired.push(e.rule.clone());
    }
    match (case.cel, cel.is_empty()) {
        (true, true) => failures.push(format!("{name}: no CEL rule refuses it")),
        (false, false) => failures.push(format!(
            "{name}: CEL refuses it: {:?}",
            cel.iter().map(ToString::to_string).collect::<Vec<_>>()
        )),
        (true, false) => {
            if !cel.iter().all(|e| e.message.contains(case.field)) {
                failures.push(format!(
                    "{name}: a CEL message does not name {}: {:?}",
                    case.field,
                    cel.iter().map(ToString::to_string).collect::<Vec<_>>()
                ));
            }
        }
        (false, true) => {}
    }

    // The operator must read anything the schema accepts (one unreadable object breaks the
    // watch).
    let token: QdrantAccessToken = match serde_yaml_ng::from_str(&case.doc) {
        Ok(t) => t,
        Err(e) => {
            if case.operator != Operator::Unreadable {
                failures.push(format!("{name}: the operator cannot deserialize it: {e}"));
            }
            if !case.schema {
                failures.push(format!(
                    "{name}: the schema accepts what the operator cannot read: {e}"
                ));
            }
            return (failures, fired);
        }
    };
    match (case.operator, validate_token_spec(&token, &case.info)) {
        (Operator::Unreadable, _) => {
            failures.push(format!("{name}: the operator deserializes it"));
        }
        (Operator::Refuses, Ok(_)) => failures.push(format!("{name}: the operator accepts it")),
        (Operator::Accepts, Err(p)) => {
            failures.push(format!("{name}: the operator refuses it: {p:?}"));
        }
        (Operator::Refuses, Err(problems)) => {
            if !problems.iter().any(|p| p.field.starts_with(case.field)) {
                failures.push(format!(
                    "{name}: no operator problem names {}: {problems:?}",
                    case.field
                ));
            }
            if let Some(p) = problems.iter().find(|p| p.message.is_empty()) {
                failures.push(format!("{name}: empty message for {}", p.field));
            }
        }
        (Operator::Accepts, Ok(_)) => {}
    }
    (failures, fired)
}

#[test]
fn bad_input_is_refused_by_the_stated_layers_naming_the_field() {
    let layers = Layers::new();
    let cases = bad_cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let failures: Vec<String> = cases.iter().flat_map(|c| check(&layers, c).0).collect();
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_specs_pass_every_layer() {
    let layers = Layers::new();
    let mut failures = Vec::new();
    for (name, doc, old, info) in valid_cases() {
        let case = Case {
            name,
            field: "",
            doc,
            old,
            info,
            schema: false,
            cel: false,
            operator: Operator::Accepts,
        };
        failures.extend(check(&layers, &case).0);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every CEL rule of the CRD refuses at least one bad input: none is dead.
#[test]
fn every_cel_rule_refuses_some_bad_input() {
    fn rules(schema: &Value, out: &mut BTreeSet<String>) {
        match schema {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "x-kubernetes-validations" {
                        for r in v.as_array().into_iter().flatten() {
                            out.insert(r["rule"].as_str().unwrap().to_owned());
                        }
                    } else {
                        rules(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| rules(v, out)),
            _ => {}
        }
    }
    let layers = Layers::new();
    let mut all = BTreeSet::new();
    rules(&layers.openapi, &mut all);
    assert!(all.len() >= 7, "{all:#?}");
    let fired: BTreeSet<String> = bad_cases()
        .iter()
        .flat_map(|c| check(&layers, c).1)
        .collect();
    let never: Vec<_> = all.difference(&fired).collect();
    assert!(never.is_empty(), "rules no bad case fires: {never:#?}");
}

#[test]
fn collections_are_a_map_list_keyed_by_name() {
    let crd = serde_json::to_value(access_token_crd()).unwrap();
    let collections = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["access"]["properties"]["collections"];
    assert_eq!(collections["x-kubernetes-list-type"], "map");
    assert_eq!(
        collections["x-kubernetes-list-map-keys"],
        json!(["collection"])
    );
}

#[test]
fn resolved_defaults() {
    let token = valid(&format!("{{{R}}}"));
    assert_eq!(token.lifetime, SignedDuration::from_hours(24));
    assert_eq!(token.renew_before, SignedDuration::from_hours(8));
    assert_eq!(token.secret_name, "frontend-qdrant-token");
    assert_eq!(token.instance, "vectors");
    assert_eq!(token.generation, Some(2));
    assert_eq!(token.owner.uid, UID);
    assert_eq!(token.owner.controller, Some(true));
    assert_eq!(token.owner.kind, "QdrantAccessToken");
    let odd = valid(&format!("{{{R}, lifetime: 10m1s}}"));
    assert_eq!(odd.renew_before, SignedDuration::from_secs(200));
    let fractional = valid(&format!("{{{R}, lifetime: 1h0.9s, renewBefore: 2m0.5s}}"));
    assert_eq!(fractional.lifetime, SignedDuration::from_secs(3600));
    assert_eq!(fractional.renew_before, SignedDuration::from_secs(120));
}

#[test]
fn problems_are_all_reported_at_once() {
    let token = parse(&doc(
        "{qdrantRef: {name: vectors}, access: {global: m}, lifetime: 1m, renewBefore: x}",
    ));
    let problems = validate_token_spec(&token, &InstanceInfo::MISSING).unwrap_err();
    let fields: BTreeSet<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "spec.qdrantRef.name",
            "spec.access.global",
            "spec.lifetime",
            "spec.renewBefore"
        ]),
        "{problems:?}"
    );
}

#[test]
fn tokens_without_metadata_are_refused() {
    let mut token = parse(&doc(&format!("{{{R}}}")));
    token.metadata.uid = None;
    token.metadata.namespace = None;
    let problems = validate_token_spec(&token, &READY).unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"metadata.uid"), "{problems:?}");
    assert!(fields.contains(&"metadata.namespace"), "{problems:?}");
}

// ---------------------------------------------------------------------------------------------
// Renewal decisions
// ---------------------------------------------------------------------------------------------

fn stored(token: &ValidToken, key: &SecretValue, expires_at: Timestamp) -> Secret {
    let jwt = mint(&token.claims(expires_at), key).unwrap();
    token_secret(token, &jwt, &endpoints(true), token_annotations(token, key))
}

fn endpoints(tls: bool) -> TokenEndpoints {
    TokenEndpoints {
        url: "https://vectors.search.svc:6333".into(),
        grpc_url: "https://vectors.search.svc:6334".into(),
        ca_crt: tls
            .then(|| "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        client_certificate: None,
    }
}

#[test]
fn renewal_decisions_at_injected_times() {
    let token = valid(&format!("{{{R}, lifetime: 1h, renewBefore: 20m}}"));
    let issued = ts("2030-06-01T12:00:00Z");
    let first = plan_token(issued, None, &token, &key());
    assert_eq!(first.mint, Some(MintReason::Missing));
    let exp = ts("2030-06-01T13:00:00Z");
    assert_eq!(first.expires_at, exp);
    let renewal = ts("2030-06-01T12:40:00Z")
        .checked_sub(token.jitter())
        .unwrap();
    assert_eq!(first.renewal_time, renewal);
    assert!(
        token.jitter() < SignedDuration::from_mins(2),
        "{:?}",
        token.jitter()
    );
    // Requeue exactly at the renewal time: never later.
    assert_eq!(
        first.requeue_after,
        Duration::from_secs(issued.duration_until(renewal).as_secs() as u64)
    );

    let secret = stored(&token, &key(), exp);
    let sec = |s: i64| SignedDuration::from_secs(s);
    let at = |t: Timestamp| plan_token(t, Some(&secret), &token, &key());

    for t in [
        issued,
        issued.checked_add(sec(600)).unwrap(),
        renewal.checked_sub(sec(1)).unwrap(),
    ] {
        let p = at(t);
        assert_eq!(p.mint, None, "at {t}");
        assert_eq!(p.expires_at, exp);
        assert_eq!(p.renewal_time, renewal);
        assert_eq!(
            p.requeue_after,
            Duration::from_secs(t.duration_until(renewal).as_secs() as u64),
            "at {t}"
        );
    }
    for t in [
        renewal,
        renewal.checked_add(sec(1)).unwrap(),
        exp.checked_sub(sec(1)).unwrap(),
    ] {
        let p = at(t);
        assert_eq!(p.mint, Some(MintReason::RenewalDue), "at {t}");
        assert_eq!(p.expires_at, t.checked_add(token.lifetime).unwrap());
        assert_eq!(p.renewal_time, token.renewal_time(p.expires_at));
        assert!(p.requeue_after > Duration::ZERO);
    }
    for t in [exp, exp.checked_add(sec(3600 * 24 * 30)).unwrap()] {
        assert_eq!(at(t).mint, Some(MintReason::Expired), "at {t}");
    }
    // The clock went back: a token that would outlive now + lifetime is replaced.
    assert_eq!(
        at(issued.checked_sub(sec(60)).unwrap()).mint,
        Some(MintReason::ExpiryTooFar)
    );
}

#[test]
fn a_rotated_key_forces_a_new_token() {
    let token = valid(&format!("{{{R}}}"));
    let now = ts("2030-06-01T12:00:00Z");
    let exp = now.checked_add(token.lifetime).unwrap();
    let secret = stored(&token, &key(), exp);
    let rotated = SecretValue::new("a-new-256-bit-api-key-after-rotation-000000");
    assert_ne!(key_fingerprint(&key()), key_fingerprint(&rotated));
    assert_eq!(
        plan_token(now, Some(&secret), &token, &rotated).mint,
        Some(MintReason::KeyChanged)
    );
    // The annotations alone decide: a Secret whose token was signed by the new key but whose
    // annotation names the old one is still replaced.
    let mut relabelled = stored(&token, &rotated, exp);
    relabelled.metadata.annotations = Some(token_annotations(&token, &key()));
    assert_eq!(
        plan_token(now, Some(&relabelled), &token, &rotated).mint,
        Some(MintReason::KeyChanged)
    );
    // A new token under the new key is kept.
    let renewed = stored(&token, &rotated, exp);
    assert_eq!(plan_token(now, Some(&renewed), &token, &rotated).mint, None);
}

#[test]
fn changed_claims_force_a_new_token() {
    let token = valid(&format!("{{{R}}}"));
    let now = ts("2030-06-01T12:00:00Z");
    let secret = stored(&token, &key(), now.checked_add(token.lifetime).unwrap());
    for spec in [
        "{qdrantRef: {name: vectors}, access: {collections: [{collection: docs, access: r}]}}",
        "{qdrantRef: {name: vectors}, access: {global: r}, valueExists: {collection: t, matches: [{key: id, value: 1}]}}",
        "{qdrantRef: {name: vectors}, access: {global: r}, lifetime: 12h}",
    ] {
        let changed = valid(spec);
        assert_ne!(changed.claims_hash(), token.claims_hash(), "{spec}");
        assert_eq!(
            plan_token(now, Some(&secret), &changed, &key()).mint,
            Some(MintReason::SpecChanged),
            "{spec}"
        );
    }
    // renewBefore is not in the token: changing it only moves the renewal time.
    let later = valid(&format!("{{{R}, renewBefore: 1h}}"));
    assert_eq!(later.claims_hash(), token.claims_hash());
    let p = plan_token(now, Some(&secret), &later, &key());
    assert_eq!(p.mint, None);
    assert_eq!(p.renewal_time, later.renewal_time(p.expires_at));
    assert_ne!(p.renewal_time, token.renewal_time(p.expires_at));
}

#[test]
fn a_token_that_does_not_match_its_annotations_is_replaced() {
    let token = valid(&format!("{{{R}}}"));
    let now = ts("2030-06-01T12:00:00Z");
    let exp = now.checked_add(token.lifetime).unwrap();
    let good = stored(&token, &key(), exp);
    let with_token = |jwt: &str| {
        let mut s = good.clone();
        s.data
            .as_mut()
            .unwrap()
            .insert(TOKEN_KEY.into(), ByteString(jwt.as_bytes().to_vec()));
        s
    };
    // Signed by another key, annotations unchanged.
    let foreign = mint(&token.claims(exp), &SecretValue::new("someone-else")).unwrap();
    // Right key, other claims (e.g. an edited Secret granting manage access).
    let mut wider = token.claims(exp);
    wider.access = secure_qdrant_operator::tokens::Access::Global(
        secure_qdrant_operator::crd::GlobalAccess::Manage,
    );
    let escalated = mint(&wider, &key()).unwrap();
    for (what, secret) in [
        ("foreign signature", with_token(foreign.expose())),
        ("other claims", with_token(escalated.expose())),
        ("garbage", with_token("not-a-jwt")),
    ] {
        assert_eq!(
            plan_token(now, Some(&secret), &token, &key()).mint,
            Some(MintReason::Unverifiable),
            "{what}"
        );
    }
    let mut empty = good.clone();
    empty.data.as_mut().unwrap().remove(TOKEN_KEY);
    assert_eq!(
        plan_token(now, Some(&empty), &token, &key()).mint,
        Some(MintReason::Missing)
    );
    let mut bare = good.clone();
    bare.metadata.annotations = None;
    assert_eq!(
        plan_token(now, Some(&bare), &token, &key()).mint,
        Some(MintReason::KeyChanged)
    );
    let mut no_hash = good.clone();
    no_hash
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(CLAIMS_HASH_ANNOTATION);
    assert_eq!(
        plan_token(now, Some(&no_hash), &token, &key()).mint,
        Some(MintReason::SpecChanged)
    );
    assert_eq!(plan_token(now, Some(&good), &token, &key()).mint, None);
}

#[test]
fn status_reports_times_and_access_but_not_the_token() {
    let token = valid(
        "{qdrantRef: {name: vectors}, access: {collections: [{collection: docs, access: r}, {collection: users, access: rw}]}}",
    );
    let now = ts("2030-06-01T12:00:00Z");
    let plan = plan_token(now, None, &token, &key());
    let status = token_status(&token, &plan);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.secret_name.as_deref(), Some("frontend-qdrant-token"));
    assert_eq!(status.access.as_deref(), Some("docs:r,users:rw"));
    assert_eq!(
        status.expires_at.as_ref().map(|t| t.0),
        Some(plan.expires_at)
    );
    assert_eq!(
        status.renewal_time.as_ref().map(|t| t.0),
        Some(plan.renewal_time)
    );
    let jwt = mint(&token.claims(plan.expires_at), &key()).unwrap();
    let text = serde_json::to_string(&status).unwrap();
    assert!(!text.contains(jwt.expose()));
    assert!(text.contains("2030-06-02T12:00:00Z"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The token Secret
// ---------------------------------------------------------------------------------------------

#[test]
fn token_secret_layout_labels_and_owner() {
    let token = valid(&format!("{{{R}, secretName: app-credentials}}"));
    let jwt = mint(
        &token.claims(Timestamp::from_second(FAR_EXP).unwrap()),
        &key(),
    )
    .unwrap();
    let annotations = token_annotations(&token, &key());
    let secret = token_secret(&token, &jwt, &endpoints(true), annotations.clone());
    assert_eq!(secret.metadata.name.as_deref(), Some("app-credentials"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("search"));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.metadata.labels,
        Some(BTreeMap::from([
            ("app.kubernetes.io/name".into(), "qdrant".into()),
            ("app.kubernetes.io/instance".into(), "vectors".into()),
            (
                "app.kubernetes.io/managed-by".into(),
                "secure-qdrant-operator".into()
            ),
            ("app.kubernetes.io/component".into(), "access-token".into()),
        ]))
    );
    assert_eq!(secret.metadata.annotations, Some(annotations.clone()));
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        [CLAIMS_HASH_ANNOTATION, KEY_FINGERPRINT_ANNOTATION]
    );
    for value in annotations.values() {
        assert!(!value.contains(key().expose()));
        assert_eq!(value.len(), 32, "{value}");
    }
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "QdrantAccessToken");
    assert_eq!(owners[0].api_version, "secureqdrant.dev/v1alpha1");
    assert_eq!(owners[0].name, "frontend");
    assert_eq!(owners[0].uid, UID);
    assert_eq!(owners[0].controller, Some(true));
    assert!(controlled_by(&secret, &token));

    let data = secret.data.clone().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [CA_CRT_KEY, GRPC_URL_KEY, TOKEN_KEY, URL_KEY]
    );
    assert_eq!(text(TOKEN_KEY), jwt.expose());
    assert_eq!(text(URL_KEY), "https://vectors.search.svc:6333");
    assert_eq!(text(GRPC_URL_KEY), "https://vectors.search.svc:6334");
    assert!(text(CA_CRT_KEY).starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(read_token(&secret), Some(jwt.clone()));

    let plain = token_secret(&token, &jwt, &endpoints(false), BTreeMap::new());
    assert!(!plain.data.unwrap().contains_key(CA_CRT_KEY));
}

#[test]
fn secrets_of_others_are_not_ours() {
    let token = valid(&format!("{{{R}}}"));
    let mut foreign = Secret::default();
    assert!(!controlled_by(&foreign, &token));
    let mut owner = token.owner.clone();
    owner.uid = "another-uid".into();
    foreign.metadata.owner_references = Some(vec![owner]);
    assert!(!controlled_by(&foreign, &token));
    let mut not_controller = token.owner.clone();
    not_controller.controller = None;
    foreign.metadata.owner_references = Some(vec![not_controller]);
    assert!(!controlled_by(&foreign, &token));
}

// ---------------------------------------------------------------------------------------------
// Nothing secret in Debug output or errors
// ---------------------------------------------------------------------------------------------

#[test]
fn no_token_or_key_in_debug_output_or_errors() {
    let token = valid(&format!(
        "{{{R}, valueExists: {{collection: t, matches: [{{key: id, value: x}}]}}}}"
    ));
    let now = ts("2030-06-01T12:00:00Z");
    let plan = plan_token(now, None, &token, &key());
    let jwt = mint(&token.claims(plan.expires_at), &key()).unwrap();
    let secret = token_secret(
        &token,
        &jwt,
        &endpoints(true),
        token_annotations(&token, &key()),
    );
    let other_key = SecretValue::new("the-other-key-that-must-not-leak-0000000000");
    let errors: Vec<TokenError> = vec![
        verify(&jwt, &other_key).unwrap_err(),
        verify(&SecretValue::new(format!("{}x", jwt.expose())), &key()).unwrap_err(),
        verify(
            &SecretValue::new("eyJhbGciOiJIUzI1NiJ9.e30.secret-looking-signature"),
            &key(),
        )
        .unwrap_err(),
        mint(&token.claims(plan.expires_at), &SecretValue::new("")).unwrap_err(),
    ];
    let mut printed = vec![
        format!("{jwt:?}"),
        format!("{:?}", key()),
        format!("{plan:?}"),
        format!("{token:?}"),
        format!("{:?}", token.claims(plan.expires_at)),
        format!("{:?}", token_status(&token, &plan)),
        format!("{:?}", read_token(&secret)),
        format!("{:?}", plan_token(now, Some(&secret), &token, &other_key)),
    ];
    for e in &errors {
        printed.push(format!("{e:?}"));
        printed.push(e.to_string());
    }
    let problems: Vec<Invalid> = validate_token_spec(
        &parse(&doc("{qdrantRef: {name: vectors}, access: {global: m}}")),
        &READY,
    )
    .unwrap_err();
    printed.push(format!("{problems:?}"));
    let signature = jwt.expose().rsplit('.').next().unwrap().to_owned();
    for text in &printed {
        for secret in [jwt.expose(), key().expose(), other_key.expose(), &signature] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    assert!(printed[0].contains("redacted"));
}
