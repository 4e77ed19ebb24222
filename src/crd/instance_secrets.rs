//! The Secret names a SecureQdrant uses or may come to use: reserved for it, so neither a
//! referenced Secret nor a QdrantAccessToken's Secret can take one.

/// The suffixes of every Secret name a SecureQdrant `<x>` uses or may come to use: `<x>-api-key`
/// (generated keys), `<x>-ca` (its CA), `<x>-tls` (its serving certificate), `<x>-metrics-client`
/// (the client certificate of metrics scrapes). The one place to extend: QdrantAccessToken
/// validation and its CRD rule refuse `spec.secretName`s ending in any of them, so no token can
/// take (and so block) a Secret an instance, existing or future, needs.
pub const INSTANCE_SECRET_SUFFIXES: [&str; 4] = ["-api-key", "-ca", "-tls", "-metrics-client"];

/// Every Secret name instance `instance` uses or may come to use (see
/// [`INSTANCE_SECRET_SUFFIXES`]).
pub fn instance_secret_names(instance: &str) -> Vec<String> {
    INSTANCE_SECRET_SUFFIXES
        .iter()
        .map(|suffix| format!("{instance}{suffix}"))
        .collect()
}

/// The SecureQdrant name whose Secret `secret` would be, if its name is one an instance uses.
pub fn instance_of_secret_name(secret: &str) -> Option<&str> {
    INSTANCE_SECRET_SUFFIXES
        .iter()
        .find_map(|suffix| secret.strip_suffix(suffix))
        .filter(|instance| !instance.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_secret_names_cover_the_instance_and_not_the_token_default() {
        assert_eq!(
            instance_secret_names("x"),
            ["x-api-key", "x-ca", "x-tls", "x-metrics-client"]
        );
        assert_eq!(instance_of_secret_name("a-b-tls"), Some("a-b"));
        assert_eq!(instance_of_secret_name("x-ca"), Some("x"));
        assert_eq!(instance_of_secret_name("-ca"), None);
        assert_eq!(instance_of_secret_name("x-cab"), None);
        // A token's default Secret name can never be one an instance uses.
        let default = format!("x{}", crate::crd::SECRET_NAME_SUFFIX);
        assert_eq!(instance_of_secret_name(&default), None);
    }
}
