//! How long issuing certificate material takes: a CA, a serving certificate, a same-key CA
//! renewal, and one full `converge` of a fresh instance (CA + leaf + bundle).
//!
//! `cargo bench --bench tls_issue` (or `-- 500` for another iteration count).

use std::hint::black_box;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use secure_qdrant_operator::tls::{
    CaInput, CaSubject, Jitter, TlsInputs, TlsPolicy, converge, issue_ca, issue_leaf, renew_ca,
    serving_dns_names,
};

fn time<T>(label: &str, n: u32, mut f: impl FnMut() -> T) {
    // Warm up (page in, initialise ring's CPU feature detection).
    for _ in 0..n.min(10) {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    let total = start.elapsed();
    let per = total / n;
    println!(
        "{label:<40} {n:>6} ops  {:>10.1} µs/op  {:>10.0} ops/s",
        per.as_secs_f64() * 1e6,
        n as f64 / total.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    assert!(per < Duration::from_secs(1), "{label} is unreasonably slow");
}

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let now = Timestamp::now();
    let subject = CaSubject::new("search", "vectors");
    let year = SignedDuration::from_hours(8760);
    let ninety_days = SignedDuration::from_hours(2160);
    let names = serving_dns_names("vectors", "search", "cluster.local", &[]);

    time("issue_ca (P-256)", n, || {
        issue_ca(&subject, year, now).unwrap()
    });
    let ca = issue_ca(&subject, year, now).unwrap();
    time("renew_ca (same key)", n, || {
        renew_ca(&ca, year, now).unwrap()
    });
    time("issue_leaf (P-256, 10 SANs)", n, || {
        issue_leaf(&ca, &names, ninety_days, now).unwrap()
    });
    time("converge: fresh instance (CA + leaf)", n, || {
        converge(&TlsInputs {
            policy: TlsPolicy::default(),
            subject: subject.clone(),
            jitter: Jitter::for_instance("search", "vectors", "uid"),
            dns_names: names.clone(),
            ca: CaInput::Managed {
                secret: None,
                rotation_requested: None,
                rotation_handled: None,
            },
            published: None,
            recorded_phase: None,
            rolled_out: None,
            clients_on_current: true,
            now,
        })
        .unwrap()
    });
    let first = converge(&TlsInputs {
        policy: TlsPolicy::default(),
        subject: subject.clone(),
        jitter: Jitter::NONE,
        dns_names: names.clone(),
        ca: CaInput::Managed {
            secret: None,
            rotation_requested: None,
            rotation_handled: None,
        },
        published: None,
        recorded_phase: None,
        rolled_out: None,
        clients_on_current: true,
        now,
    })
    .unwrap();
    let ca_data = first.ca_change.as_ref().unwrap().secret_data();
    let tls_data = first.published.to_secret_data();
    let annotations = first.published.annotations();
    let phase = annotations.values().next().cloned();
    time("converge: steady state (parse + decide)", n, || {
        let out = converge(&TlsInputs {
            policy: TlsPolicy::default(),
            subject: subject.clone(),
            jitter: Jitter::NONE,
            dns_names: names.clone(),
            ca: CaInput::Managed {
                secret: Some(&ca_data),
                rotation_requested: None,
                rotation_handled: None,
            },
            published: Some(&tls_data),
            recorded_phase: phase.as_deref(),
            rolled_out: None,
            clients_on_current: true,
            now,
        })
        .unwrap();
        assert!(!out.tls_changed);
        out
    });
}
