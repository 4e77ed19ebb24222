//! What one reconcile of a QdrantAccessToken comes to: its token Secret written ([`Issued`]), or
//! why not ([`Blocked`]). Both become its status.

use std::time::Duration;

use crate::crd::QdrantAccessTokenStatus;

/// Why no token could be written this time (reported as Ready=False).
pub(super) struct Blocked {
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) retry: Option<Duration>,
    /// No token of this QdrantAccessToken exists any more (its Secret is removed): the status
    /// stops describing one.
    pub(super) no_token: bool,
}

pub(super) fn blocked(reason: &'static str, message: String, retry: Option<Duration>) -> Blocked {
    Blocked {
        reason,
        message,
        retry,
        no_token: false,
    }
}

/// The ClientCertificateReady condition of a token: (status, reason, message); None when the
/// instance does not require client certificates.
pub(super) type ClientCondition = Option<(bool, &'static str, String)>;

/// The token Secret was written.
pub(super) struct Issued {
    /// The status fields that describe the token and its client certificate (no conditions).
    pub(super) status: QdrantAccessTokenStatus,
    /// When to look again (the renewal of the token or of its client certificate).
    pub(super) requeue: Duration,
    pub(super) client: ClientCondition,
}

/// The end of one reconcile of a token.
pub(super) type Verdict = std::result::Result<Issued, Blocked>;
