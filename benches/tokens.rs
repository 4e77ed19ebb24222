//! Tokens minted per second (HS256 over a 256-bit API key), and plans decided per second for a
//! Secret that holds a fresh token (the common reconcile: verify, compare, keep).
//!
//! `cargo bench --bench tokens`. A plain loop, no harness: the numbers are for orders of
//! magnitude (how many QdrantAccessTokens one operator replica can re-sign after a key rotation).

use std::hint::black_box;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use secure_qdrant_operator::api_keys::generate_key;
use secure_qdrant_operator::crd::QdrantAccessToken;
use secure_qdrant_operator::tokens::{
    InstanceInfo, TokenEndpoints, mint, plan_token, token_annotations, token_secret,
    validate_token_spec,
};

const SPEC: &str = "
apiVersion: secureqdrant.dev/v1alpha1
kind: QdrantAccessToken
metadata: {name: frontend, namespace: search, uid: 0b8e5a3c-3f0e-4b7e-9a64-1c2d3e4f5a6b}
spec:
  qdrantRef: {name: vectors}
  access:
    collections: [{collection: docs, access: r}, {collection: users, access: rw}]
  valueExists: {collection: tokens, matches: [{key: token_id, value: frontend-1}]}
";

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let resource: QdrantAccessToken = serde_yaml_ng::from_str(SPEC).expect("the spec parses");
    let info = InstanceInfo {
        exists: true,
        jwt_rbac: true,
        allow_manage_tokens: false,
    };
    let token = validate_token_spec(&resource, &info).expect("the spec is valid");
    let key = generate_key().expect("the OS has randomness");
    let now: Timestamp = "2030-01-01T00:00:00Z".parse().expect("a timestamp");
    let claims = token.claims(now.checked_add(token.lifetime).expect("in range"));

    let minted = rate(Duration::from_secs(2), || {
        black_box(mint(black_box(&claims), &key).expect("signs"));
    });
    println!("mint:          {minted:>10.0} tokens/s");

    let jwt = mint(&claims, &key).expect("signs");
    let endpoints = TokenEndpoints {
        url: "https://vectors.search.svc:6333".into(),
        grpc_url: "https://vectors.search.svc:6334".into(),
        ca_crt: None,
        client_certificate: None,
    };
    let secret = token_secret(&token, &jwt, &endpoints, token_annotations(&token, &key));
    let planned = rate(Duration::from_secs(2), || {
        let plan = plan_token(black_box(now), Some(&secret), &token, &key);
        assert!(!plan.mint_now());
        black_box(plan);
    });
    println!("plan (keep):   {planned:>10.0} decisions/s");
}
