//! `spec.image`: image references and the repositories the policy allows.

use super::problems::{Invalid, invalid};

/// An image reference, normalised as container runtimes read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry/path`, with `docker.io` and `library/` filled in (`docker.io/library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

/// Parses an image reference (the distribution reference grammar): None when malformed.
pub fn parse_image(image: &str) -> Option<ImageRef> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':')?;
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !alg_ok || !hex_ok || (alg == "sha256" && hex.len() != 64) {
            return None;
        }
    }
    let name_start = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[name_start..].rfind(':') {
        Some(i) => (&rest[..name_start + i], Some(&rest[name_start + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return None;
        }
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_ascii_lowercase(), path.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => registry,
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if registry.is_empty() || !path.split('/').all(component_ok) {
        return None;
    }
    let path = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Some(ImageRef {
        repository: format!("{registry}/{path}"),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    })
}

/// Whether the policy's list allows a normalised repository.
pub fn image_allowed(repository: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| match entry.strip_suffix("/*") {
        // Normalised through a child (`tree/x`), so a bare registry (`registry.example.com/*`)
        // stays a registry and `qdrant/*` means `docker.io/qdrant/*`.
        Some(tree) => parse_image(&format!("{tree}/x")).is_some_and(|t| {
            let prefix = t.repository.strip_suffix('x').unwrap_or(&t.repository);
            repository.starts_with(prefix)
        }),
        None => parse_image(entry).is_some_and(|e| e.repository == repository),
    })
}

pub(super) fn check_image(
    image: &str,
    policy: &crate::settings::Policy,
    problems: &mut Vec<Invalid>,
) {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return; // reported above
    }
    let Some(reference) = parse_image(image) else {
        problems.push(invalid(
            "spec.image",
            format!("{image:?} is not an image reference (registry/path:tag or @sha256:...)"),
        ));
        return;
    };
    if !image_allowed(&reference.repository, &policy.image_repositories) {
        problems.push(invalid(
            "spec.image",
            format!(
                "repository {} is not allowed by the operator's policy (allowed: {}; chart value \
                 policy.allowedImages)",
                reference.repository,
                policy.image_repositories.join(", ")
            ),
        ));
    }
    if policy.require_image_digest && reference.digest.is_none() {
        problems.push(invalid(
            "spec.image",
            "the operator's policy requires a digest (image@sha256:...)",
        ));
    }
}
