//! The operator's one error type. Messages name objects and steps, never secret values.

/// A failed reconcile step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret {name}: {source}")]
    CreateSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing annotation {annotation} from SecureQdrant {name}: {source}")]
    RemoveAnnotation {
        name: String,
        annotation: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("the OS random number generator failed: {0}")]
    Random(#[from] getrandom::Error),
    #[error("Secret {0} was created and removed by someone else while the operator read it")]
    SecretRace(String),
    #[error("TLS material in Secret {secret}: {source}")]
    Tls {
        secret: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("signing the token of QdrantAccessToken {name}: {reason}")]
    Token { name: String, reason: String },
    #[error("the API key in Secret {secret} (spec.auth.apiKeySecretRef) is unusable: {problem}")]
    UserKey { secret: String, problem: String },
    #[error("the operator's caches did not sync in time")]
    CacheNotReady,
    #[error(
        "{kind} {name} exists and is not controlled by this object (current owner: {owner}): the \
         operator writes nothing to it and does not delete it. Delete or rename that {kind}; or, \
         if it is this SecureQdrant's own child orphaned on purpose (no owner), annotate it \
         secureqdrant.dev/adopt=<SecureQdrant name> to hand it over"
    )]
    ChildConflict {
        kind: &'static str,
        name: String,
        owner: String,
    },
    #[error(
        "Secret {0} lost next-api-key while the pods run with it as their API key (key rotation \
         phase Swapped): put the key back, or delete the Secret to generate new keys (every \
         client needs them then)"
    )]
    RotationKeyLost(String),
    #[error(
        "the API keys in Secret {secret} are unusable: {problem}; write a valid key back, or \
         remove that entry to have a new one generated (every client needs it then)"
    )]
    KeySecret { secret: String, problem: String },
    #[error(
        "Secret {name} ({field}) may not be used by SecureQdrant {instance}: {why}. The operator \
         uses a Secret it does not own only when whoever manages it allows it on the Secret \
         itself: `kubectl label secret {name} secureqdrant.dev/allowed-instance={instance}` \
         (several instances: their names joined by _); nothing was changed"
    )]
    SecretNotAllowed {
        field: &'static str,
        name: String,
        instance: String,
        why: String,
    },
}

impl Error {
    /// Which step failed, as a low-cardinality label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::CreateSecret { .. } => "create_secret",
            Error::Delete { .. } => "delete",
            Error::RemoveAnnotation { .. } => "annotation",
            Error::Status(_) => "status",
            Error::Random(_) => "random",
            Error::SecretRace(_) => "create_secret",
            Error::Tls { .. } => "tls",
            Error::Token { .. } => "token",
            Error::UserKey { .. } => "api_key_secret",
            Error::CacheNotReady => "cache",
            Error::ChildConflict { .. } => "child_conflict",
            Error::RotationKeyLost(_) => "key_rotation",
            Error::KeySecret { .. } => "api_key_secret",
            Error::SecretNotAllowed { .. } => "secret_not_allowed",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The step of a reconcile that failed: the `step` label of the failure metric, and the action
/// of the failure's Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Waiting for the caches to hold a complete list (after a start or a re-list).
    Cache,
    /// Checking that every Secret the spec references allows the instance.
    References,
    /// The API-key Secret: created, completed, its key rotation advanced.
    Credentials,
    /// The CA, the serving certificate and the metrics client certificate.
    Tls,
    /// Server-side apply of the children.
    Apply,
    /// Deleting the children no longer built.
    Prune,
    /// Removing the used-up scale-down acknowledgment from the SecureQdrant.
    Acknowledgment,
    /// Writing the status.
    Status,
    /// A QdrantAccessToken reconcile (one step).
    Token,
}

impl Step {
    /// The metric label, e.g. `credentials`.
    pub fn label(self) -> &'static str {
        match self {
            Step::Cache => "cache",
            Step::References => "references",
            Step::Credentials => "credentials",
            Step::Tls => "tls",
            Step::Apply => "apply",
            Step::Prune => "prune",
            Step::Acknowledgment => "acknowledgment",
            Step::Status => "status",
            Step::Token => "token",
        }
    }

    /// The action of an Event about this step, e.g. `Credentials`.
    pub fn action(self) -> &'static str {
        match self {
            Step::Cache => "Cache",
            Step::References => "References",
            Step::Credentials => "Credentials",
            Step::Tls => "TLS",
            Step::Apply => "Apply",
            Step::Prune => "Prune",
            Step::Acknowledgment => "Acknowledgment",
            Step::Status => "Status",
            Step::Token => "Token",
        }
    }
}

/// A failed reconcile: the error, and the step it failed in.
#[derive(Debug, thiserror::Error)]
#[error("{} step: {error}", .step.label())]
pub struct Failure {
    pub step: Step,
    #[source]
    pub error: Error,
}

/// Labels the error of a step's result with the step.
pub trait AtStep<T> {
    fn at(self, step: Step) -> Result<T, Failure>;
}

impl<T> AtStep<T> for Result<T, Error> {
    fn at(self, step: Step) -> Result<T, Failure> {
        self.map_err(|error| Failure { step, error })
    }
}
