//! Malformed and contradictory SecureQdrants, each refused with a message that names the field.
//!
//! Every case states which layer refuses it:
//! - **schema**: the structural checks of the CRD's openAPIV3Schema (type, enum, minimum/maximum,
//!   minLength/maxLength, pattern, required), checked with the `jsonschema` crate after turning the
//!   OpenAPI 3.0 dialect into JSON Schema (`nullable`, `x-kubernetes-int-or-string`; the other
//!   `x-kubernetes-*` keywords dropped). Unknown fields are allowed (the apiserver prunes them).
//! - **CEL**: the `x-kubernetes-validations` rules, evaluated by kube-cel, which stands in for the
//!   apiserver (see [`apiserver_view`] for where it differs and how that is undone). As in the
//!   apiserver, CEL is not evaluated when the schema already found a type error.
//! - **operator**: deserialization into [`SecureQdrant`] (a type error is a clear rejection) or
//!   [`validate`]. Whatever the apiserver refuses the operator refuses too (an old CRD, a tool that
//!   skips admission and `render` must not get past), except what only transition rules can see.
//!
//! For every case the operator refuses, `render` must fail and print nothing. A few valid edge
//! specs pass every layer, so each check is shown able to pass as well as to fail.

use std::collections::BTreeSet;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};

use jsonschema::error::ValidationErrorKind;
use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
use secure_qdrant_operator::crd::FORBIDDEN_USER_CONFIG;
use secure_qdrant_operator::crd::SecureQdrant;
use secure_qdrant_operator::render::render;
use secure_qdrant_operator::settings::Settings;
use secure_qdrant_operator::validate::validate;
use serde_json::{Map, Value, json};

#[path = "support/kube_cel_optional.rs"]
mod kube_cel_optional;

#[path = "support/bad_input_cases.rs"]
mod cases;

use cases::*;

// ---------------------------------------------------------------------------------------------
// The layers
// ---------------------------------------------------------------------------------------------

fn yaml_to_json(doc: &str) -> Value {
    serde_yaml_ng::from_str(doc).expect("every case is well-formed YAML")
}

/// The CRD's OpenAPI 3.0 schema as JSON Schema (draft 4, which OpenAPI 3.0 extends).
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
            "properties" | "patternProperties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), to_json_schema(v)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => to_json_schema(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(to_json_schema)
                    .collect(),
            ),
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.insert("type".to_owned(), json!(["integer", "string"]));
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = t.clone();
                out.insert("type".to_owned(), json!([t, "null"]));
            }
            Some(Value::Array(types)) => types.push(json!("null")),
            _ => {}
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// kube-cel stands in for the apiserver, with three differences that matter for this CRD. All are
/// undone here so the rules are evaluated as the apiserver evaluates them (see
/// `kube_cel_differs_from_the_apiserver_as_documented`):
/// 1. kube-cel escapes `_` in property names to `__` (the apiserver escapes only `__`, `.`, `-`,
///    `/` and keywords), so `has(self.api_key)` never finds `api_key`: the rules' member names are
///    escaped the same way here;
/// 2. kube-cel binds a property set to null as present (`has()` true, then `isQuantity(null)`
///    fails); the apiserver treats null-valued nullable fields as absent: nulls are dropped;
/// 3. kube-cel binds `oldSelf` of an `optionalOldSelf` rule (the create-only name rule) as null or
///    the old value, not as an optional: see tests/support/kube_cel_optional.rs.
fn apiserver_view(schema: &Value) -> Value {
    kube_cel_optional::kube_cel_optional_old_self(&member_names_view(schema))
}

/// Difference 1 of [`apiserver_view`] undone.
fn member_names_view(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "x-kubernetes-validations" {
                        let mut rules = v.clone();
                        for rule in rules.as_array_mut().into_iter().flatten() {
                            if let Some(Value::String(text)) = rule.get_mut("rule") {
                                *text = kube_cel_member_names(text);
                            }
                        }
                        rules
                    } else {
                        member_names_view(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(member_names_view).collect()),
        other => other.clone(),
    }
}

/// Doubles `_` in member names (`self.api_key` → `self.api__key`), outside string literals.
fn kube_cel_member_names(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len());
    let mut quote: Option<char> = None;
    let mut in_member = false;
    for c in rule.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    in_member = false;
                } else if c == '.' {
                    in_member = true;
                } else if !(c.is_ascii_alphanumeric() || c == '_') {
                    in_member = false;
                }
                if in_member && c == '_' {
                    out.push('_');
                }
                out.push(c);
            }
        }
    }
    out
}

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

struct Layers {
    schema: jsonschema::Validator,
    /// The CRD schema as kube-cel must see it to agree with the apiserver.
    cel_schema: Value,
}

/// What the structural schema says: (`path: message` for each error, whether one of them is a
/// type or enum error, which keeps the apiserver from evaluating CEL).
type SchemaResult = (Vec<String>, bool);

impl Layers {
    fn new() -> Self {
        let openapi = openapi_schema();
        let schema = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&to_json_schema(&openapi))
            .expect("the CRD schema is a valid JSON Schema");
        Layers {
            schema,
            cel_schema: apiserver_view(&openapi),
        }
    }

    fn schema_errors(&self, object: &Value) -> SchemaResult {
        let mut blocking = false;
        let errors = self
            .schema
            .iter_errors(object)
            .map(|e| {
                // The errors that keep the apiserver from evaluating CEL at all.
                blocking |= matches!(
                    e.kind(),
                    ValidationErrorKind::Type { .. } | ValidationErrorKind::Enum { .. }
                );
                let path = e
                    .instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .collect::<Vec<_>>()
                    .join(".");
                format!("{path}: {e}")
            })
            .collect();
        (errors, blocking)
    }

    fn cel_errors(&self, object: &Value, old: Option<&Value>) -> Vec<ValidationError> {
        let old = old.map(drop_nulls);
        match Validator::new().validate(&self.cel_schema, &drop_nulls(object), old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec(),
        }
    }
}

/// Whether a message names `field`, either in full or relative to `spec`.
fn names(text: &str, field: &str) -> bool {
    text.contains(field)
        || field
            .strip_prefix("spec.")
            .is_some_and(|f| text.contains(f))
}

/// A CEL error names the field when its rule sits on the field or a parent, and the message names
/// the rest of the path (`spec.config.service` + "may not set `service.api_key`").
fn cel_names(e: &ValidationError, field: &str) -> bool {
    let rest = if e.field_path.is_empty() {
        Some(field)
    } else {
        field
            .strip_prefix(e.field_path.as_str())
            .map(|r| r.trim_start_matches('.'))
    };
    match rest {
        Some("") => names(&e.message, field),
        Some(rest) => e.message.contains(rest),
        None => false,
    }
}

fn show_cel(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("{e} [{:?}]", e.kind))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `f`, turning a panic into a failure of the case.
fn guarded<T>(
    what: &str,
    case: &str,
    failures: &mut Vec<String>,
    f: impl FnOnce() -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{case}: {what} panicked: {msg}"));
            None
        }
    }
}

/// Checks one case against every layer; returns its failures and the CEL rules that refused it.
fn check(layers: &Layers, case: &Case) -> (Vec<String>, BTreeSet<String>) {
    let mut failures = Vec::new();
    let mut fired = BTreeSet::new();
    let name = case.name.as_str();
    let field = case.field.as_str();
    let object = yaml_to_json(&case.doc);
    let old = case.old.as_deref().map(yaml_to_json);

    // Structural schema.
    let (schema_errors, blocking) = guarded("schema", name, &mut failures, || {
        layers.schema_errors(&object)
    })
    .unwrap_or_default();
    match (case.schema, schema_errors.is_empty()) {
        (true, true) => failures.push(format!("{name}: the schema accepts it")),
        (true, false) if !schema_errors.iter().any(|e| names(e, field)) => failures.push(format!(
            "{name}: no schema error names {field}: {schema_errors:?}"
        )),
        (false, false) => {
            failures.push(format!("{name}: the schema refuses it: {schema_errors:?}"))
        }
        _ => {}
    }

    // CEL: like the apiserver, not evaluated once the schema found a type or enum error.
    if blocking {
        if case.cel {
            failures.push(format!(
                "{name}: expects a CEL refusal, but the type error keeps CEL from running"
            ));
        }
    } else if let Some(errors) = guarded("CEL", name, &mut failures, || {
        layers.cel_errors(&object, old.as_ref())
    }) {
        // A rule that cannot evaluate a value the schema already refuses (`duration('90d')`
        // after a pattern error) still rejects the object, next to the schema's message.
        let errors: Vec<_> = if case.schema {
            errors
                .into_iter()
                .filter(|e| e.kind != ErrorKind::EvaluationError)
                .collect()
        } else {
            errors
        };
        if let Some(broken) = errors
            .iter()
            .find(|e| e.kind != ErrorKind::ValidationFailure)
        {
            failures.push(format!(
                "{name}: a CEL rule did not evaluate cleanly: {broken} [{:?}]",
                broken.kind
            ));
        }
        fired.extend(errors.iter().map(|e| e.rule.clone()));
        match (case.cel, errors.is_empty()) {
            (true, true) => failures.push(format!("{name}: CEL accepts it")),
            (true, false) if !errors.iter().any(|e| cel_names(e, field)) => failures.push(format!(
                "{name}: no CEL error names {field}: {}",
                show_cel(&errors)
            )),
            (false, false) => {
                failures.push(format!("{name}: CEL refuses it: {}", show_cel(&errors)))
            }
            _ => {}
        }
        // A transition case must pass on its own: only the comparison with oldSelf refuses it.
        if old.is_some() {
            let alone = layers.cel_errors(&object, None);
            if !alone.is_empty() {
                failures.push(format!(
                    "{name}: the new object alone fails CEL: {}",
                    show_cel(&alone)
                ));
            }
        }
    }

    // The operator: deserialization (from JSON, as the controller's client decodes objects; the
    // YAML reader's error, which carries the path, must name the field), then validate.
    let parsed = guarded("deserialization", name, &mut failures, || {
        (
            serde_json::from_value::<SecureQdrant>(object.clone()),
            serde_yaml_ng::from_str::<SecureQdrant>(&case.doc),
        )
    });
    match (case.operator, parsed) {
        (_, None) => {}
        (Operator::Serde, Some((json, yaml))) => {
            if json.is_ok() {
                failures.push(format!("{name}: deserialization from JSON accepts it"));
            }
            match yaml {
                Ok(_) => failures.push(format!("{name}: deserialization from YAML accepts it")),
                Err(e) if !names(&e.to_string(), field) => failures.push(format!(
                    "{name}: the deserialization error does not name {field}: {e}"
                )),
                Err(_) => {}
            }
        }
        (_, Some((Err(e), _))) => {
            failures.push(format!("{name}: deserialization from JSON refuses it: {e}"))
        }
        (_, Some((_, Err(e)))) => {
            failures.push(format!("{name}: deserialization from YAML refuses it: {e}"))
        }
        (expected, Some((Ok(sq), Ok(_)))) => {
            let result = guarded("validate", name, &mut failures, || {
                validate(&sq, &settings())
            });
            match (expected, result) {
                (_, None) => {}
                (Operator::Validate, Some(Ok(_))) => {
                    failures.push(format!("{name}: validate accepts it"))
                }
                (Operator::Validate, Some(Err(problems)))
                    if !problems.iter().any(|p| names(&p.to_string(), field)) =>
                {
                    failures.push(format!("{name}: no problem names {field}: {problems:?}"));
                }
                (Operator::Validate, Some(Err(_))) => {}
                (_, Some(Err(problems))) => {
                    failures.push(format!("{name}: validate refuses it: {problems:?}"))
                }
                _ => {}
            }
        }
    }

    // render: refuses (with nothing to print) whatever the operator refuses.
    if let Some(rendered) = guarded("render", name, &mut failures, || {
        render(&case.doc, &settings())
    }) {
        match (case.operator, rendered) {
            (Operator::Accepts, Err(e)) => failures.push(format!("{name}: render fails: {e}")),
            (Operator::Accepts, Ok(out)) => {
                if out.is_empty() {
                    failures.push(format!("{name}: render printed nothing for a valid spec"));
                }
            }
            (_, Ok(_)) => failures.push(format!("{name}: render succeeds")),
            // A type error's message from render lacks the field: see
            // `render_type_errors_name_the_field`.
            (Operator::Serde, Err(_)) => {}
            (Operator::Validate, Err(e)) => {
                if !names(&e.to_string(), field) {
                    failures.push(format!("{name}: render's error does not name {field}: {e}"));
                }
            }
        }
    }
    (failures, fired)
}

/// Every `x-kubernetes-validations` rule of a schema.
fn all_rules(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "x-kubernetes-validations" {
                    for rule in v.as_array().into_iter().flatten() {
                        if let Some(text) = rule.get("rule").and_then(Value::as_str) {
                            out.insert(text.to_owned());
                        }
                    }
                } else {
                    all_rules(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| all_rules(v, out)),
        _ => {}
    }
}

fn render_cli(input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secure-qdrant-operator"))
        .args(["render", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the operator binary runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("the input is written");
    child.wait_with_output().expect("the operator binary exits")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_by_the_expected_layers_naming_the_field() {
    let layers = Layers::new();
    let cases = bad_cases();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    let failures: Vec<String> = cases.iter().flat_map(|c| check(&layers, c).0).collect();
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every CEL rule of the CRD refuses at least one case here: none is dead, and a new rule comes
/// with a bad input that shows it firing with its message.
#[test]
fn every_cel_rule_refuses_some_bad_input() {
    let layers = Layers::new();
    let fired: BTreeSet<String> = bad_cases()
        .iter()
        .flat_map(|c| check(&layers, c).1)
        .collect();
    let mut rules = BTreeSet::new();
    all_rules(&layers.cel_schema, &mut rules);
    let never: Vec<_> = rules.difference(&fired).collect();
    assert!(
        never.is_empty(),
        "CEL rules no case in bad_cases() (tests/bad_input.rs) makes fire; add a case for each \
         (and the matching check to src/validate.rs): {never:#?}"
    );
}

#[test]
fn valid_edge_specs_pass_every_layer() {
    let layers = Layers::new();
    let mut failures = Vec::new();
    for (name, doc, old) in valid_cases() {
        let case = Case {
            name,
            field: String::new(),
            doc,
            old,
            schema: false,
            cel: false,
            operator: Operator::Accepts,
        };
        failures.extend(check(&layers, &case).0);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_crd_rule_compiles_in_kube_cel() {
    fn errors(node: &CompiledSchema, path: &str, out: &mut Vec<String>) {
        for e in node.compilation_errors() {
            out.push(format!("{path}: {e}"));
        }
        for (name, child) in &node.properties {
            errors(child, &format!("{path}.{name}"), out);
        }
        if let Some(items) = &node.items {
            errors(items, &format!("{path}[]"), out);
        }
        if let Some(values) = &node.additional_properties {
            errors(values, &format!("{path}{{}}"), out);
        }
    }
    let mut out = Vec::new();
    errors(&compile_schema(&openapi_schema()), "", &mut out);
    assert!(out.is_empty(), "rules kube-cel cannot compile: {out:#?}");
}

/// The CLI prints nothing on standard output and exits 1 for each document the operator refuses.
#[test]
fn cli_render_prints_nothing_for_bad_input() {
    for case in bad_cases()
        .iter()
        .filter(|c| c.operator != Operator::Accepts)
    {
        let out = render_cli(&case.doc);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", case.name);
        assert!(
            out.stdout.is_empty(),
            "{}: printed {:?}",
            case.name,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.starts_with("error: "), "{}: {stderr}", case.name);
        if case.operator == Operator::Validate {
            assert!(names(&stderr, &case.field), "{}: {stderr}", case.name);
        }
    }
}

/// One bad document spoils the whole stream: nothing is rendered, not even the good ones.
#[test]
fn render_is_all_or_nothing() {
    let good = doc("{replicas: 3}");
    assert!(render(&good, &Settings::default()).is_ok());
    let stream = format!(
        "{good}---\n{}",
        doc_named("other", "{config: {service: {api_key: hunter2}}}")
    );
    let err = render(&stream, &Settings::default()).expect_err("the stream has a bad document");
    assert!(
        names(&err.to_string(), "spec.config.service.api_key"),
        "{err}"
    );
    let out = render_cli(&stream);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Where kube-cel, as it is today, differs from the apiserver for this CRD. `apiserver_view`
/// undoes exactly these; when kube-cel changes, this test says so.
#[test]
fn kube_cel_differs_from_the_apiserver_as_documented() {
    // 3. The create-only name rule (optionalOldSelf) cannot evaluate `oldSelf.hasValue()` in
    // raw kube-cel: a bad name is an evaluation error, not the rule's message (a good one passes
    // only because `||` forgives an error when the other side is true).
    let raw = openapi_schema();
    let errors = Validator::new()
        .validate(
            &raw,
            &yaml_to_json(&doc_named("9lives", "{replicas: 1}")),
            None,
        )
        .err()
        .map(|e| e.into_vec())
        .unwrap_or_default();
    assert!(
        errors.len() == 1
            && errors[0].kind == ErrorKind::EvaluationError
            && errors[0].rule.contains(kube_cel_optional::APISERVER),
        "kube-cel's binding of an optional oldSelf changed: revisit apiserver_view: {}",
        show_cel(&errors)
    );
    // 1. and 2. below, with 3. undone.
    let raw = kube_cel_optional::kube_cel_optional_old_self(&raw);
    let raw_cel = |spec: &str| {
        Validator::new()
            .validate(&raw, &yaml_to_json(&doc(spec)), None)
            .err()
            .map(|e| e.into_vec())
            .unwrap_or_default()
    };
    // 1. Forbidden config keys with `_` in their name are invisible to raw kube-cel.
    let mut missed = Vec::new();
    for (path, json_type) in FORBIDDEN_USER_CONFIG {
        let leaf = match *json_type {
            "string" => json!("x"),
            "integer" => json!(1),
            "boolean" => json!(false),
            _ => json!({}),
        };
        let config = path
            .split('.')
            .rev()
            .fold(leaf, |inner, part| json!({ part: inner }));
        if raw_cel(&json!({ "config": config }).to_string()).is_empty() {
            missed.push(*path);
        }
    }
    let with_underscore: Vec<&str> = FORBIDDEN_USER_CONFIG
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| p.rsplit('.').next().is_some_and(|leaf| leaf.contains('_')))
        .collect();
    assert_eq!(
        missed, with_underscore,
        "kube-cel's escaping of `_` changed: revisit apiserver_view"
    );
    // 2. A nullable field set to null counts as present, and the quantity rule then errors.
    let errors = raw_cel("{snapshots: {size: null}}");
    assert!(
        errors.len() == 1 && errors[0].kind == ErrorKind::EvaluationError,
        "kube-cel's handling of null changed: revisit apiserver_view: {}",
        show_cel(&errors)
    );
}

/// A type error in `render` names the field (the path of the value that failed to parse).
#[test]
fn render_type_errors_name_the_field() {
    let mut failures = Vec::new();
    for case in bad_cases().iter().filter(|c| c.operator == Operator::Serde) {
        let err = render(&case.doc, &Settings::default()).expect_err("a type error");
        if !names(&err.to_string(), &case.field) {
            failures.push(format!("{}: {err}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
