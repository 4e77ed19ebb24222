//! The token Secret an application mounts: `token`, `url`, `grpc-url`, (with TLS) `ca.crt`, and
//! (when the instance requires client certificates) `tls.crt` and `tls.key`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::spec::ValidToken;
use crate::children::meta::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER,
};
use crate::material::SecretValue;
use crate::tls::LeafMaterial;

/// Secret key: the JWT.
pub const TOKEN_KEY: &str = "token";
/// Secret key: the REST URL (`https://<instance>.<namespace>.svc:6333`).
pub const URL_KEY: &str = "url";
/// Secret key: the gRPC URL (`https://<instance>.<namespace>.svc:6334`).
pub const GRPC_URL_KEY: &str = "grpc-url";
/// Secret key: the CA bundle that verifies the server certificate (absent without TLS).
pub const CA_CRT_KEY: &str = "ca.crt";
/// Secret key: the application's client certificate (PEM), when the instance requires one.
pub const CLIENT_CRT_KEY: &str = "tls.crt";
/// Secret key: the client certificate's private key (PKCS#8 PEM).
pub const CLIENT_KEY_KEY: &str = "tls.key";
/// Component label of token Secrets.
pub const COMPONENT_ACCESS_TOKEN: &str = "access-token";

/// Where the application reaches the instance, and what it trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEndpoints {
    /// REST URL.
    pub url: String,
    /// gRPC URL.
    pub grpc_url: String,
    /// PEM trust bundle of the instance's serving certificate; `None` when TLS is off.
    pub ca_crt: Option<String>,
    /// The application's client certificate and key (`spec.tls.clientCertificates`); `None`
    /// when the instance does not require one or the operator cannot sign one.
    pub client_certificate: Option<LeafMaterial>,
}

/// The token Secret of `token`, holding `value`. Labelled like every child of the SecureQdrant
/// `token.instance` (component `access-token`) and controlled by the QdrantAccessToken, so it is
/// deleted with it. `annotations` are [`super::token_annotations`].
pub fn token_secret(
    token: &ValidToken,
    value: &SecretValue,
    endpoints: &TokenEndpoints,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut data = BTreeMap::from([
        (
            TOKEN_KEY.to_owned(),
            ByteString(value.expose().as_bytes().to_vec()),
        ),
        (
            URL_KEY.to_owned(),
            ByteString(endpoints.url.as_bytes().to_vec()),
        ),
        (
            GRPC_URL_KEY.to_owned(),
            ByteString(endpoints.grpc_url.as_bytes().to_vec()),
        ),
    ]);
    if let Some(ca) = &endpoints.ca_crt {
        data.insert(CA_CRT_KEY.to_owned(), ByteString(ca.as_bytes().to_vec()));
    }
    if let Some(client) = &endpoints.client_certificate {
        data.insert(
            CLIENT_CRT_KEY.to_owned(),
            ByteString(client.cert().pem().into_bytes()),
        );
        data.insert(
            CLIENT_KEY_KEY.to_owned(),
            ByteString(client.key().expose_pem().as_bytes().to_vec()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(token.secret_name.clone()),
            namespace: Some(token.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_NAME.to_owned(), "qdrant".to_owned()),
                (LABEL_INSTANCE.to_owned(), token.instance.clone()),
                (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
                (
                    LABEL_COMPONENT.to_owned(),
                    COMPONENT_ACCESS_TOKEN.to_owned(),
                ),
            ])),
            annotations: Some(annotations),
            owner_references: Some(vec![token.owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The token a Secret holds, if it has a non-empty UTF-8 `token`.
pub fn read_token(secret: &Secret) -> Option<SecretValue> {
    let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    (!text.trim().is_empty()).then(|| SecretValue::new(text))
}

/// The client certificate a token Secret holds: Missing without `tls.crt`, Unusable when it
/// cannot be read or the key does not match.
pub fn read_client_certificate(
    secret: Option<&Secret>,
) -> Result<LeafMaterial, crate::tls::TlsError> {
    let data = secret
        .and_then(|s| s.data.as_ref())
        .ok_or(crate::tls::TlsError::MissingKey(CLIENT_CRT_KEY))?;
    LeafMaterial::from_secret_data(data)
}

/// Whether `secret` is controlled by the QdrantAccessToken `token` (its controller owner
/// reference has the token's uid). The caller must never write to an existing Secret of that
/// name that is not: it may be another application's, or another token's.
pub fn controlled_by(secret: &Secret, token: &ValidToken) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == token.owner.uid)
}
