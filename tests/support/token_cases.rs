//! The QdrantAccessToken bad-input table, shared by tests/access_tokens.rs (the schema, kube-cel
//! and the operator's validation, in process) and tests/real_api_rules.rs (the real API server).
//!
//! Each case says which layer refuses it: `schema` (the CRD's structural schema), `cel` (its
//! `x-kubernetes-validations` rules; both are the API server's), and `operator`
//! (`validate_token_spec`). A case with neither `schema` nor `cel` is stored by the API server.
#![allow(dead_code)]

use secure_qdrant_operator::tokens::InstanceInfo;

pub const UID: &str = "0b8e5a3c-3f0e-4b7e-9a64-1c2d3e4f5a6b";

pub fn doc_named(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: secureqdrant.dev/v1alpha1\nkind: QdrantAccessToken\nmetadata:\n  name: {name}\n  \
         namespace: search\n  uid: {UID}\n  generation: 2\nspec: {spec}\n"
    )
}

pub fn doc(spec: &str) -> String {
    doc_named("frontend", spec)
}

pub const READY: InstanceInfo = InstanceInfo {
    exists: true,
    jwt_rbac: true,
    allow_manage_tokens: false,
};
pub const MANAGE_OK: InstanceInfo = InstanceInfo {
    exists: true,
    jwt_rbac: true,
    allow_manage_tokens: true,
};

pub struct Case {
    pub name: &'static str,
    /// Every refusal must name this field (a prefix is enough: `spec.access.collections`
    /// matches `spec.access.collections[1].collection`).
    pub field: &'static str,
    pub doc: String,
    pub old: Option<String>,
    pub info: InstanceInfo,
    pub schema: bool,
    pub cel: bool,
    pub operator: Operator,
}

/// What the operator does with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Accepts,
    /// [`validate_token_spec`] returns problems.
    Refuses,
    /// It does not deserialize: only for documents the schema refuses by type or enum, which
    /// the apiserver never stores.
    Unreadable,
}

pub fn case(name: &'static str, field: &'static str, spec: &str) -> Case {
    Case {
        name,
        field,
        doc: doc(spec),
        old: None,
        info: READY,
        schema: false,
        cel: false,
        operator: Operator::Accepts,
    }
}

impl Case {
    pub fn schema(mut self) -> Self {
        self.schema = true;
        self
    }
    pub fn cel(mut self) -> Self {
        self.cel = true;
        self
    }
    pub fn operator(mut self) -> Self {
        self.operator = Operator::Refuses;
        self
    }
    pub fn unreadable(mut self) -> Self {
        self.operator = Operator::Unreadable;
        self
    }
    pub fn info(mut self, info: InstanceInfo) -> Self {
        self.info = info;
        self
    }
}

pub const R: &str = "qdrantRef: {name: vectors}, access: {global: r}";

pub fn bad_cases() -> Vec<Case> {
    let long_name = "t".repeat(241);
    let long_value = "v".repeat(1025);
    vec![
        case("SecureQdrant missing", "spec.qdrantRef.name", &format!("{{{R}}}"))
            .info(InstanceInfo::MISSING)
            .operator(),
        case("jwtRbac off", "spec.qdrantRef.name", &format!("{{{R}}}"))
            .info(InstanceInfo {
                exists: true,
                jwt_rbac: false,
                allow_manage_tokens: true,
            })
            .operator(),
        case(
            "qdrantRef not a SecureQdrant name",
            "spec.qdrantRef.name",
            "{qdrantRef: {name: Vectors}, access: {global: r}}",
        )
        .schema()
        .operator(),
        case(
            "manage token without allowManageTokens",
            "spec.access.global",
            "{qdrantRef: {name: vectors}, access: {global: m}}",
        )
        .operator(),
        case(
            "both access forms",
            "spec.access",
            "{qdrantRef: {name: vectors}, access: {global: r, collections: [{collection: docs, access: r}]}}",
        )
        .cel()
        .operator(),
        case(
            "neither access form",
            "spec.access",
            "{qdrantRef: {name: vectors}, access: {}}",
        )
        .cel()
        .operator(),
        case(
            "empty collection list",
            "spec.access.collections",
            "{qdrantRef: {name: vectors}, access: {collections: []}}",
        )
        .schema()
        .operator(),
        case(
            "empty collection name",
            "spec.access.collections",
            "{qdrantRef: {name: vectors}, access: {collections: [{collection: '', access: r}]}}",
        )
        .schema()
        .operator(),
        case(
            "duplicate collection",
            "spec.access.collections",
            "{qdrantRef: {name: vectors}, access: {collections: [{collection: docs, access: r}, {collection: docs, access: rw}]}}",
        )
        .cel()
        .operator(),
        case(
            "unknown global level",
            "spec.access.global",
            "{qdrantRef: {name: vectors}, access: {global: rw}}",
        )
        .schema()
        .unreadable(),
        case("lifetime too short", "spec.lifetime", &format!("{{{R}, lifetime: 9m59s}}"))
            .cel()
            .operator(),
        case("lifetime too long", "spec.lifetime", &format!("{{{R}, lifetime: 8761h}}"))
            .cel()
            .operator(),
        case("lifetime in days", "spec.lifetime", &format!("{{{R}, lifetime: 1d}}"))
            .schema()
            .cel()
            .operator(),
        case("lifetime negative", "spec.lifetime", &format!("{{{R}, lifetime: -24h}}"))
            .schema()
            .cel()
            .operator(),
        case(
            "lifetime malformed, renewBefore set",
            "spec.lifetime",
            &format!("{{{R}, lifetime: '24', renewBefore: 1h}}"),
        )
        .schema()
        .cel()
        .operator(),
        case(
            "renewBefore equal to lifetime",
            "spec.renewBefore",
            &format!("{{{R}, lifetime: 24h, renewBefore: 24h}}"),
        )
        .cel()
        .operator(),
        case(
            "renewBefore longer than lifetime",
            "spec.renewBefore",
            &format!("{{{R}, lifetime: 1h, renewBefore: 2h}}"),
        )
        .cel()
        .operator(),
        case(
            "renewBefore leaves under 5m of use",
            "spec.renewBefore",
            &format!("{{{R}, lifetime: 1h, renewBefore: 55m1s}}"),
        )
        .cel()
        .operator(),
        case(
            "renewBefore too short",
            "spec.renewBefore",
            &format!("{{{R}, renewBefore: 119s}}"),
        )
        .cel()
        .operator(),
        case(
            "renewBefore not a duration",
            "spec.renewBefore",
            &format!("{{{R}, renewBefore: soon}}"),
        )
        .schema()
        .cel()
        .operator(),
        case(
            "valueExists without matches",
            "spec.valueExists.matches",
            &format!("{{{R}, valueExists: {{collection: tokens, matches: []}}}}"),
        )
        .schema()
        .operator(),
        case(
            "valueExists without collection name",
            "spec.valueExists.collection",
            &format!("{{{R}, valueExists: {{collection: '', matches: [{{key: id, value: x}}]}}}}"),
        )
        .schema()
        .operator(),
        case(
            "valueExists float value",
            "spec.valueExists.matches",
            &format!("{{{R}, valueExists: {{collection: tokens, matches: [{{key: id, value: 1.5}}]}}}}"),
        )
        .operator(),
        case(
            "valueExists integer beyond 64 bits",
            "spec.valueExists.matches",
            &format!(
                "{{{R}, valueExists: {{collection: tokens, matches: [{{key: id, value: 18446744073709551615}}]}}}}"
            ),
        )
        .operator(),
        case(
            "valueExists object value",
            "spec.valueExists.matches",
            &format!("{{{R}, valueExists: {{collection: tokens, matches: [{{key: id, value: {{a: 1}}}}]}}}}"),
        )
        .operator(),
        case(
            "valueExists list value",
            "spec.valueExists.matches",
            &format!("{{{R}, valueExists: {{collection: tokens, matches: [{{key: id, value: [a]}}]}}}}"),
        )
        .operator(),
        case(
            "valueExists string value too long",
            "spec.valueExists.matches",
            &format!(
                "{{{R}, valueExists: {{collection: tokens, matches: [{{key: id, value: {long_value}}}]}}}}"
            ),
        )
        .operator(),
        case(
            "valueExists key not a Qdrant JSON path",
            "spec.valueExists.matches[0].key",
            &format!("{{{R}, valueExists: {{collection: tokens, matches: [{{key: 'a b', value: x}}]}}}}"),
        )
        .operator(),
        // Qdrant reads an index as a usize: one that overflows makes it refuse the whole token.
        case(
            "valueExists key index beyond a 64-bit usize",
            "spec.valueExists.matches",
            &format!(
                "{{{R}, valueExists: {{collection: tokens, matches: [{{key: 'a[18446744073709551616]', value: x}}]}}}}"
            ),
        )
        .cel()
        .operator(),
        case(
            "valueExists key index of ten digits",
            "spec.valueExists.matches",
            &format!(
                "{{{R}, valueExists: {{collection: tokens, matches: [{{key: id, value: x}}, {{key: 'b[0].c[1000000000]', value: 1}}]}}}}"
            ),
        )
        .cel()
        .operator(),
        case(
            "secretName not a DNS subdomain",
            "spec.secretName",
            &format!("{{{R}, secretName: Token_Secret}}"),
        )
        .schema()
        .operator(),
        case(
            "secretName is the instance's API-key Secret",
            "spec.secretName",
            &format!("{{{R}, secretName: vectors-api-key}}"),
        )
        .cel()
        .operator(),
        case(
            "secretName is the instance's TLS Secret",
            "spec.secretName",
            &format!("{{{R}, secretName: vectors-tls}}"),
        )
        .cel()
        .operator(),
        case(
            "secretName is another (or a future) instance's CA Secret",
            "spec.secretName",
            &format!("{{{R}, secretName: later-ca}}"),
        )
        .cel()
        .operator(),
        case(
            "secretName is an instance's metrics client Secret",
            "spec.secretName",
            &format!("{{{R}, secretName: vectors-metrics-client}}"),
        )
        .cel()
        .operator(),
        Case {
            doc: doc_named(&long_name, &format!("{{{R}}}")),
            ..case("name too long for the default Secret name", "metadata.name", "")
                .cel()
                .operator()
        },
        Case {
            old: Some(doc(&format!("{{{R}, secretName: first}}"))),
            ..case(
                "secretName changed",
                "spec.secretName",
                &format!("{{{R}, secretName: second}}"),
            )
            .cel()
        },
        Case {
            old: Some(doc(&format!("{{{R}}}"))),
            ..case(
                "secretName set after creation",
                "spec.secretName",
                &format!("{{{R}, secretName: second}}"),
            )
            .cel()
        },
    ]
}

pub fn valid_cases() -> Vec<(&'static str, String, Option<String>, InstanceInfo)> {
    let long_ok = "t".repeat(240);
    vec![
        ("defaults", doc(&format!("{{{R}}}")), None, READY),
        (
            "manage allowed",
            doc("{qdrantRef: {name: vectors}, access: {global: m}}"),
            None,
            MANAGE_OK,
        ),
        (
            "shortest lifetime, longest renewBefore",
            doc(&format!("{{{R}, lifetime: 10m, renewBefore: 5m}}")),
            None,
            READY,
        ),
        (
            "longest lifetime, shortest renewBefore",
            doc(&format!("{{{R}, lifetime: 8760h, renewBefore: 2m}}")),
            None,
            READY,
        ),
        (
            "compound durations",
            doc(&format!("{{{R}, lifetime: 1h30m, renewBefore: 0.5h}}")),
            None,
            READY,
        ),
        (
            "100 collections",
            doc(&format!(
                "{{qdrantRef: {{name: vectors}}, access: {{collections: [{}]}}}}",
                (0..100)
                    .map(|i| format!("{{collection: c{i}, access: prw}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None,
            READY,
        ),
        (
            "valueExists of every value type",
            doc(&format!(
                "{{{R}, valueExists: {{collection: tokens, matches: [{{key: a, value: x}}, \
                 {{key: 'b[].c', value: -9223372036854775808}}, {{key: d, value: false}}]}}}}"
            )),
            None,
            READY,
        ),
        (
            "valueExists key with the largest index",
            doc(&format!(
                "{{{R}, valueExists: {{collection: tokens, matches: [{{key: 'a[999999999].b[0]', value: x}}, \
                 {{key: 'c[000000000999999999]', value: x}}]}}}}"
            )),
            None,
            READY,
        ),
        (
            "longest name with the default Secret name",
            doc_named(&long_ok, &format!("{{{R}}}")),
            None,
            READY,
        ),
        (
            "long name with an explicit Secret name",
            doc_named(&"t".repeat(250), &format!("{{{R}, secretName: short}}")),
            None,
            READY,
        ),
        (
            "unchanged secretName on update",
            doc(&format!("{{{R}, secretName: same, lifetime: 1h}}")),
            Some(doc(&format!("{{{R}, secretName: same}}"))),
            READY,
        ),
    ]
}
