//! Certificate material for an instance: the CA, the serving certificate, their renewal and the
//! replacement of a CA key without breaking trust between peers.
//!
//! Everything here is pure apart from the OS random source used for keys and serial numbers: no
//! Kubernetes I/O, and the clock is always passed in. The reconcile pipeline reads the Secrets,
//! calls [`converge`], and writes back what it returns.
//!
//! - [`cert`]: reading certificates and keys (x509-parser), the trust bundle.
//! - [`ca`]: issuing and renewing the instance's CA (ECDSA P-256).
//! - [`leaf`]: the serving certificate and the DNS names it carries.
//! - [`renewal`]: when to renew what, with deterministic jitter, and when to requeue.
//! - [`rollover`]: the phase machine that replaces a CA key (old and new CA trusted side by side).
//! - [`converge`]: the one call the pipeline makes, composing the above.
//! - [`policy`]: the certificate lifetimes of an instance's validated TLS settings.
//!
//! What the caller persists, and where:
//! - Secret `<n>-ca` (managed CA only): `tls.crt`, `tls.key` ([`CaMaterial::to_secret_data`]);
//!   annotation [`CA_ROTATION_HANDLED_ANNOTATION`] with the last handled replacement request.
//! - Secret `<n>-tls` (`kubernetes.io/tls`): `tls.crt`, `tls.key`, `ca.crt`
//!   ([`PublishedTls::to_secret_data`]) and annotation [`ROLLOVER_PHASE_ANNOTATION`]
//!   ([`PublishedTls::annotations`]), written in ONE update so phase and material never disagree.
//! - The StatefulSet pod template: annotation [`TLS_FINGERPRINT_ANNOTATION`] =
//!   [`PublishedTls::fingerprint`], so a change rolls the pods; once every pod runs and is ready
//!   with that template, the caller reports the fingerprint back ([`TlsInputs::rolled_out`]).

pub mod ca;
pub mod cert;
pub mod client;
pub mod converge;
pub mod leaf;
mod names;
pub mod policy;
pub mod renewal;
pub mod rollover;
mod time;

pub use ca::{
    CaMaterial, CaSubject, issue_ca, issue_ca_for, permits, permitted_subtrees, renew_ca,
    renew_ca_for,
};
pub use cert::{Certificate, PrivateKey, bundle_pem, parse_bundle};
pub use client::{
    ClientDecision, ClientReason, client_common_name, issue_client, metrics_client_common_name,
    plan_client,
};
pub use converge::{
    CaChange, CaInput, PublishedTls, ROLLOVER_POLL, ReadTls, TlsInputs, TlsOutcome, converge,
    read_published,
};
pub use leaf::{LeafMaterial, issue_leaf, serving_dns_names};
pub use names::{
    CA_CRT, CA_ROTATION_HANDLED_ANNOTATION, ROLLOVER_PHASE_ANNOTATION, ROTATE_CA_ANNOTATION,
    TLS_CRT, TLS_FINGERPRINT_ANNOTATION, TLS_KEY, TlsError,
};
pub use renewal::{
    CaAction, CaCreateReason, CaDecision, CaRenewReason, CaState, DEFAULT_CA_LIFETIME,
    DEFAULT_CERTIFICATE_LIFETIME, Jitter, LeafAction, LeafDecision, LeafReason, LeafState,
    TlsPolicy, default_renew_before,
};
pub use rollover::{Phase, RolloverDecision, RolloverInput, Signer, Transition};
pub use time::{BACKDATE, signed};
