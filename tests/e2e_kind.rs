//! The kind end-to-end suite (issue 6): a real cluster with a NetworkPolicy-enforcing CNI
//! (Calico), the operator installed from its Helm chart, and real Qdrant pods. `tests/e2e/kind.sh`
//! sets all of that up and runs this file with `E2E_KIND=1 cargo test --test e2e_kind --
//! --include-ignored`.
//!
//! Each test that needs the cluster is `#[ignore]`d with the reason "needs a kind cluster
//! (tests/e2e/kind.sh): checks that …", so a plain `cargo test` lists it as ignored, saying what
//! it would check. Run with `--ignored` but without `E2E_KIND=1`, such a test fails.
//!
//! Each test works in a fresh namespace with a random name (deleted at the end; kept with
//! `E2E_KEEP=1`) and reaches Qdrant the way an application does: from client pods inside the
//! cluster, so the NetworkPolicies apply. A probe pod (curl) runs a script whose `check` calls
//! print `RESULT <label> <http code> <curl exit code>`; the test parses those lines. `000` is
//! curl's code for "no HTTP response at all" (refused, timed out, TLS failure).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use secure_qdrant_operator::crd::{Phase, QdrantAccessToken, SecureQdrant};

/// The variable that turns the suite on.
const ENABLE: &str = "E2E_KIND";
/// The client image (override with `E2E_CURL_IMAGE`; kind.sh preloads it).
const CURL_IMAGE: &str = "curlimages/curl:8.11.1";
/// A host on the internet, by address (a Qdrant pod has no DNS either). `E2E_INTERNET_URL`.
const INTERNET_URL: &str = "https://1.1.1.1";
/// How long a new SecureQdrant may take to become Ready (image pulls, volumes, 3 peers).
const READY_TIMEOUT: Duration = Duration::from_secs(480);
/// How long a probe pod may take (image pull included).
const PROBE_TIMEOUT: Duration = Duration::from_secs(180);
/// Defined once for every script: `check LABEL CURL-ARGS...` prints one RESULT line.
const CHECK: &str = r#"check() {
  label="$1"; shift
  code=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 5 --max-time 20 "$@")
  rc=$?
  echo "RESULT $label $code $rc"
}
"#;
/// A small collection body.
const COLLECTION: &str = r#"{"vectors":{"size":4,"distance":"Dot"}}"#;
/// One point for it.
const POINTS: &str = r#"{"points":[{"id":1,"vector":[0.1,0.2,0.3,0.4],"payload":{"k":"v"}}]}"#;

// =============================================================================================
// Tests
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that a SecureQdrant with default \
     settings becomes Ready: phase Ready, Ready, Reconciled and CertificateReady True, every \
     replica ready, endpoints and Secret names in status"]
async fn a_secure_qdrant_becomes_ready() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance("db", json!({})).await;
    let sq = ns.wait_ready("db").await;

    let status = sq.status.as_ref().expect("status");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.replicas, Some(1));
    assert_eq!(status.ready_replicas, Some(1));
    for type_ in ["Ready", "Reconciled", "CertificateReady"] {
        assert_eq!(
            condition(&sq, type_).as_deref(),
            Some("True"),
            "{type_}: {:?}",
            status.conditions
        );
    }
    let endpoints = status.endpoints.as_ref().expect("endpoints");
    assert_eq!(endpoints.rest, format!("https://db.{}.svc:6333", ns.name));
    assert_eq!(endpoints.grpc, format!("https://db.{}.svc:6334", ns.name));
    let secrets = status.secrets.as_ref().expect("secret names");
    assert_eq!(secrets.api_key, "db-api-key");
    assert_eq!(secrets.tls.as_deref(), Some("db-tls"));
    let sts: StatefulSet = ns
        .api::<StatefulSet>()
        .get("db")
        .await
        .expect("StatefulSet");
    assert_eq!(sts.status.and_then(|s| s.ready_replicas), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that REST answers over TLS only \
     (plain HTTP gets no HTTP response), the certificate verifies against the instance CA for \
     the Service name, and only with a key (401 without one or with a wrong one)"]
async fn rest_answers_over_tls_only_and_only_with_a_key() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance("db", json!({})).await;
    let sq = ns.wait_ready("db").await;
    let url = rest_url(&sq);
    let plain = url.replacen("https://", "http://", 1);

    let run = ns
        .run(
            Probe::new(
                "tls-and-keys",
                format!(
                    r#"check with-key --cacert /tls/ca.crt -H "api-key: $API_KEY" "{url}/collections"
check without-key --cacert /tls/ca.crt "{url}/collections"
check wrong-key --cacert /tls/ca.crt -H "api-key: not-the-key" "{url}/collections"
check plain-http -H "api-key: $API_KEY" "{plain}/collections"
check untrusted -H "api-key: $API_KEY" "{url}/collections"
"#
                ),
            )
            .env_from_secret("API_KEY", "db-api-key", "api-key")
            .mount("db-tls", "/tls"),
        )
        .await;
    run.expect("with-key", "200");
    run.expect("without-key", "401");
    run.expect("wrong-key", "401");
    // Nothing answers HTTP on the REST port without TLS.
    run.expect_no_response("plain-http");
    // The certificate is not trusted without the instance's CA (curl exit 60: verify failed).
    run.expect_no_response("untrusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that the read-only API key reads \
     (200) but cannot create a collection (403), which the full key then can (200)"]
async fn the_read_only_key_cannot_write() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance("db", json!({})).await;
    let sq = ns.wait_ready("db").await;
    let url = rest_url(&sq);
    let json = "-H content-type:application/json";
    let run = ns
        .run(
            Probe::new(
                "read-only",
                format!(
                    r#"check ro-read --cacert /tls/ca.crt -H "api-key: $RO_KEY" "{url}/collections"
check ro-create -X PUT --cacert /tls/ca.crt -H "api-key: $RO_KEY" {json} -d '{COLLECTION}' "{url}/collections/e2e"
check ro-missing --cacert /tls/ca.crt -H "api-key: $RO_KEY" "{url}/collections/e2e"
check full-create -X PUT --cacert /tls/ca.crt -H "api-key: $API_KEY" {json} -d '{COLLECTION}' "{url}/collections/e2e"
check ro-upsert -X PUT --cacert /tls/ca.crt -H "api-key: $RO_KEY" {json} -d '{POINTS}' "{url}/collections/e2e/points?wait=true"
check ro-delete -X DELETE --cacert /tls/ca.crt -H "api-key: $RO_KEY" "{url}/collections/e2e"
check ro-sees --cacert /tls/ca.crt -H "api-key: $RO_KEY" "{url}/collections/e2e"
"#
                ),
            )
            .env_from_secret("API_KEY", "db-api-key", "api-key")
            .env_from_secret("RO_KEY", "db-api-key", "read-only-api-key")
            .mount("db-tls", "/tls"),
        )
        .await;
    run.expect("ro-read", "200");
    run.expect("ro-create", "403");
    // The refused create really created nothing.
    run.expect("ro-missing", "404");
    run.expect("full-create", "200");
    run.expect("ro-upsert", "403");
    run.expect("ro-delete", "403");
    run.expect("ro-sees", "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that a QdrantAccessToken for `docs: \
     r` becomes Ready; its Secret's token, url and ca.crt let a client read `docs` (200) but not \
     write it, read `other`, create or delete collections or call /cluster (403); a tampered \
     token gets 401"]
async fn an_access_token_reads_its_collection_and_nothing_else() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance("db", json!({})).await;
    let sq = ns.wait_ready("db").await;
    let url = rest_url(&sq);
    let json = "-H content-type:application/json";

    // Two collections, one point, with the full key.
    let setup = ns
        .run(
            Probe::new(
                "setup",
                format!(
                    r#"for c in docs other; do
  check "create-$c" -X PUT --cacert /tls/ca.crt -H "api-key: $API_KEY" {json} -d '{COLLECTION}' "{url}/collections/$c"
  check "upsert-$c" -X PUT --cacert /tls/ca.crt -H "api-key: $API_KEY" {json} -d '{POINTS}' "{url}/collections/$c/points?wait=true"
done
"#
                ),
            )
            .env_from_secret("API_KEY", "db-api-key", "api-key")
            .mount("db-tls", "/tls"),
        )
        .await;
    for label in ["create-docs", "create-other", "upsert-docs", "upsert-other"] {
        setup.expect(label, "200");
    }

    ns.create_object(&json!({
        "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "QdrantAccessToken",
        "metadata": {"name": "reader", "namespace": ns.name},
        "spec": {"qdrantRef": {"name": "db"},
                 "access": {"collections": [{"collection": "docs", "access": "r"}]},
                 "lifetime": "1h"}
    }))
    .await;
    wait_token_ready(&ns, "reader").await;
    let secret: Secret = ns
        .api::<Secret>()
        .get("reader-qdrant-token")
        .await
        .expect("token Secret");
    let stored_url = secret
        .data
        .as_ref()
        .and_then(|d| d.get("url"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    assert_eq!(stored_url.as_deref(), Some(url.as_str()));

    // The application's view: only the mounted token Secret.
    let auth = r#"-H "authorization: Bearer $TOKEN" --cacert /token/ca.crt"#;
    let run = ns
        .run(
            Probe::new(
                "token",
                format!(
                    r#"TOKEN=$(cat /token/token); URL=$(cat /token/url)
check docs-info {auth} "$URL/collections/docs"
check docs-scroll -X POST {auth} {json} -d '{{"limit":10}}' "$URL/collections/docs/points/scroll"
check docs-upsert -X PUT {auth} {json} -d '{POINTS}' "$URL/collections/docs/points?wait=true"
check other-info {auth} "$URL/collections/other"
check other-scroll -X POST {auth} {json} -d '{{"limit":10}}' "$URL/collections/other/points/scroll"
check create -X PUT {auth} {json} -d '{COLLECTION}' "$URL/collections/new"
check delete-docs -X DELETE {auth} "$URL/collections/docs"
check cluster {auth} "$URL/cluster"
check tampered -H "authorization: Bearer ${{TOKEN%.*}}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" --cacert /token/ca.crt "$URL/collections/docs"
"#
                ),
            )
            .mount("reader-qdrant-token", "/token"),
        )
        .await;
    run.expect("docs-info", "200");
    run.expect("docs-scroll", "200");
    for label in [
        "docs-upsert",
        "other-info",
        "other-scroll",
        "create",
        "delete-docs",
        "cluster",
    ] {
        run.expect(label, "403");
    }
    run.expect("tampered", "401");
}

/// Waits until the QdrantAccessToken `name` is Ready.
async fn wait_token_ready(ns: &TestNamespace, name: &str) {
    let tokens = ns.api::<QdrantAccessToken>();
    poll(
        &format!("QdrantAccessToken {name} Ready"),
        PROBE_TIMEOUT,
        async || {
            let qat = tokens.get(name).await.map_err(|e| e.to_string())?;
            let ready = qat
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" => Ok(()),
                other => Err(format!("Ready: {other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that with \
     spec.tls.clientCertificates the instance becomes Ready (TCP probes), and REST answers a \
     client presenting the tls.crt/tls.key of its QdrantAccessToken Secret (200), refuses the \
     TLS handshake without a client certificate, and still wants the token (401)"]
async fn with_client_certificates_rest_needs_the_one_in_the_token_secret() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance("db", json!({"tls": {"clientCertificates": true}}))
        .await;
    ns.wait_ready("db").await;
    ns.create_object(&json!({
        "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "QdrantAccessToken",
        "metadata": {"name": "app", "namespace": ns.name},
        "spec": {"qdrantRef": {"name": "db"}, "access": {"global": "r"}, "lifetime": "1h"}
    }))
    .await;
    wait_token_ready(&ns, "app").await;
    let cert = "--cacert /token/ca.crt --cert /token/tls.crt --key /token/tls.key";
    let run = ns
        .run(
            Probe::new(
                "client-certificates",
                format!(
                    r#"TOKEN=$(cat /token/token); URL=$(cat /token/url)
check with-cert {cert} -H "authorization: Bearer $TOKEN" "$URL/collections"
check without-cert --cacert /token/ca.crt -H "authorization: Bearer $TOKEN" "$URL/collections"
check cert-without-token {cert} "$URL/collections"
"#
                ),
            )
            .mount("app-qdrant-token", "/token"),
        )
        .await;
    run.expect("with-cert", "200");
    run.expect_no_response("without-cert");
    run.expect("cert-without-token", "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that with spec.network.clients = \
     pods labelled e2e-role=client, such a pod gets 200 while a pod of the same namespace \
     without that label and a pod of another namespace cannot even connect"]
async fn a_pod_outside_the_listed_clients_cannot_connect() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    let elsewhere = TestNamespace::create(&client).await;
    ns.create_instance(
        "db",
        json!({"network": {"clients": [{"podSelector": {"matchLabels": {"e2e-role": "client"}}}]}}),
    )
    .await;
    let sq = ns.wait_ready("db").await;
    let url = rest_url(&sq);
    let script =
        format!(r#"check connect --cacert /tls/ca.crt -H "api-key: $API_KEY" "{url}/collections""#);
    let probe = |name: &str| {
        Probe::new(name, script.clone())
            .env_from_secret("API_KEY", "db-api-key", "api-key")
            .mount("db-tls", "/tls")
    };
    let allowed = ns.run(probe("listed").label("e2e-role", "client")).await;
    allowed.expect("connect", "200");
    let outsider = ns.run(probe("unlisted").label("e2e-role", "other")).await;
    outsider.expect_no_response("connect");
    assert_eq!(
        outsider.curl_exit("connect"),
        28,
        "expected a connect timeout (dropped by the policy), not a refusal"
    );
    // Another namespace has neither the Secrets nor the access: only the connection is tried.
    let foreign = elsewhere
        .run(Probe::new(
            "foreign",
            format!(r#"check connect -k "{url}/healthz""#),
        ))
        .await;
    foreign.expect_no_response("connect");
    assert_eq!(foreign.curl_exit("connect"), 28);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that from inside a Qdrant pod's \
     network namespace (an ephemeral curl container) nothing is reachable: an internet address, \
     a name (no DNS), the Kubernetes API; while a plain pod of the same namespace does reach the \
     internet (so the check means something)"]
async fn a_qdrant_pod_cannot_reach_the_internet() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance("db", json!({})).await;
    ns.wait_ready("db").await;
    let internet = std::env::var("E2E_INTERNET_URL").unwrap_or_else(|_| INTERNET_URL.to_owned());
    let kubernetes: Service = Api::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .expect("the kubernetes Service");
    let apiserver = kubernetes
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the API server's ClusterIP");
    let script = format!(
        r#"check internet -k "{internet}"
check dns-name -k https://example.com
check apiserver -k "https://{apiserver}:443/version"
"#
    );

    // The control: without the operator's policies the cluster reaches the internet.
    let control = ns.run(Probe::new("control", script.clone())).await;
    assert_eq!(
        control.curl_exit("internet"),
        0,
        "a plain pod cannot reach {internet}: this cluster has no internet access, so the \
         check below would prove nothing (set E2E_INTERNET_URL to a reachable address)"
    );
    assert_eq!(
        control.curl_exit("dns-name"),
        0,
        "a plain pod cannot resolve names"
    );
    assert_eq!(
        control.curl_exit("apiserver"),
        0,
        "a plain pod cannot reach the API server"
    );

    let run = ns.run_in_pod("db-0", "egress-probe", &script).await;
    run.expect_no_response("internet");
    run.expect_no_response("dns-name");
    run.expect_no_response("apiserver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that with certificateLifetime 1h \
     and renewBefore 50m, a three-node instance gets a new certificate within ten minutes and \
     rolls every pod onto it, while a client looping over the Service (a new TLS connection each \
     time) sees no failed request"]
async fn a_short_certificate_lifetime_rotates_without_failed_requests() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    // Renewal 10 minutes after issue (minus a jitter of at most 3), so a roll of three pods
    // finishes well before the next one.
    ns.create_instance(
        "db",
        json!({"replicas": 3, "tls": {"certificateLifetime": "1h", "renewBefore": "50m"}}),
    )
    .await;
    let sq = ns.wait_ready("db").await;
    let url = rest_url(&sq);

    // The client: a new connection every 0.3 s, one TICK line per request.
    let looper = looping_client(
        "looper",
        &format!(r#"--cacert /tls/ca.crt -H "api-key: $API_KEY" "{url}/collections""#),
    )
    .env_from_secret("API_KEY", "db-api-key", "api-key")
    .mount("db-tls", "/tls");
    start_looping_client(&ns, &looper).await;

    let (mut not_after, mut renewal) = certificate_times(&ns).await;
    if renewal.as_second() < Timestamp::now().as_second() + 60 {
        // The instance became Ready late: let this renewal pass, and watch the next one.
        wait_renewed(&ns, &not_after, renewal).await;
        wait_rolled(&ns, renewal).await;
        (not_after, renewal) = certificate_times(&ns).await;
    }
    let old_crt = secret_text(&ns, "db-tls", "tls.crt").await;
    let started = ticks(&ns.log("looper", None).await)
        .first()
        .map(|t| t.at)
        .expect("a first request");

    // The certificate is renewed at its renewal time, and every pod is replaced, one at a
    // time, by one that mounts it.
    wait_renewed(&ns, &not_after, renewal).await;
    assert_ne!(
        secret_text(&ns, "db-tls", "tls.crt").await,
        old_crt,
        "status changed but the TLS Secret did not"
    );
    wait_rolled(&ns, renewal).await;
    ns.wait_ready("db").await;
    let rolled_at = Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(10)).await;

    let ticks: Vec<Tick> = ticks(&ns.log("looper", None).await)
        .into_iter()
        .filter(|t| t.at >= started)
        .collect();
    let pod = ns.api::<Pod>().get("looper").await.expect("looper pod");
    let restarts = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().map(|c| c.restart_count))
        .unwrap_or_default();
    assert_eq!(restarts, 0, "the client restarted: its log is incomplete");
    assert!(
        ticks.len() >= 100,
        "too few requests to judge the roll: {}",
        ticks.len()
    );
    assert!(
        ticks.first().is_some_and(|t| t.at < renewal.as_second())
            && ticks.last().is_some_and(|t| t.at > rolled_at),
        "the client did not run across the whole roll"
    );
    assert_all_served(&ticks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (tests/e2e/kind.sh): checks that an API-key rotation of a \
     three-node instance (annotation, 1m grace period) walks the phases Introduced, Swapped and \
     Promoted and ends with the new key only, while an application looping with its \
     QdrantAccessToken (re-read from the mounted Secret each time) sees no failed request; \
     afterwards every pod lists the same three peers, the new key gets 200 and the old one 401"]
async fn an_api_key_rotation_keeps_the_peers_together_and_token_clients_served() {
    let client = cluster().await;
    let ns = TestNamespace::create(&client).await;
    ns.create_instance(
        "db",
        json!({"replicas": 3, "auth": {"keyRotationGracePeriod": "1m"}}),
    )
    .await;
    ns.wait_ready("db").await;
    ns.create_typed::<QdrantAccessToken>(&json!({
        "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "QdrantAccessToken",
        "metadata": {"name": "app"},
        "spec": {"qdrantRef": {"name": "db"}, "access": {"global": "r"}}
    }))
    .await;
    wait_token_ready(&ns, "app").await;
    let old = secret_text(&ns, "db-api-key", "api-key").await;
    // The old key, kept for the check at the end (a Secret of the test's own namespace).
    ns.create_object(&json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "old-key"},
        "stringData": {"key": old}
    }))
    .await;

    // The application: a new connection every 0.3 s, with the token as the Secret holds it now.
    let looper = looping_client(
        "app",
        r#"--cacert /token/ca.crt -H "Authorization: Bearer $(cat /token/token)" "$(cat /token/url)/collections""#,
    )
    .mount("app-qdrant-token", "/token");
    start_looping_client(&ns, &looper).await;

    // Rotate, and record the phases the API-key Secret goes through.
    let started = Timestamp::now().as_second();
    ns.api::<SecureQdrant>()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "secureqdrant.dev/rotate-api-key": "e2e-1"}}})),
        )
        .await
        .expect("rotation requested");
    let secrets = ns.api::<Secret>();
    let mut phases: Vec<String> = Vec::new();
    poll("the rotation to finish", 3 * READY_TIMEOUT, async || {
        let secret = secrets.get("db-api-key").await.map_err(|e| e.to_string())?;
        let phase = secret
            .annotations()
            .get("secureqdrant.dev/api-key-rotation-phase")
            .cloned();
        if let Some(phase) = &phase
            && phases.last() != Some(phase)
        {
            phases.push(phase.clone());
        }
        let data = secret.data.unwrap_or_default();
        let current = data
            .get("api-key")
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        let done = phase.is_none()
            && !data.contains_key("next-api-key")
            && current.is_some_and(|k| k != old);
        done.then_some(())
            .ok_or_else(|| format!("phase {phase:?}, phases so far {phases:?}"))
    })
    .await;
    assert_eq!(phases, ["Introduced", "Swapped", "Promoted"]);
    ns.wait_ready("db").await;
    let finished = Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(10)).await;

    // The application was served throughout.
    let ticks: Vec<Tick> = ticks(&ns.log("app", None).await)
        .into_iter()
        .filter(|t| t.at >= started)
        .collect();
    assert!(
        ticks.last().is_some_and(|t| t.at > finished),
        "the application did not run across the whole rotation"
    );
    assert_all_served(&ticks);

    // One cluster: every pod lists the same three peers. The new key works, the old one not.
    let peers = ns
        .run(
            Probe::new(
                "peers",
                format!(
                    r#"for i in 0 1 2; do
  echo "CLUSTER db-$i $(curl -s --max-time 5 --cacert /tls/ca.crt -H "api-key: $API_KEY" https://db-$i.db-headless.{ns}.svc:6333/cluster)"
done
check new-key --cacert /tls/ca.crt -H "api-key: $API_KEY" "https://db.{ns}.svc:6333/collections"
check old-key --cacert /tls/ca.crt -H "api-key: $OLD_KEY" "https://db.{ns}.svc:6333/collections"
"#,
                    ns = ns.name
                ),
            )
            .env_from_secret("API_KEY", "db-api-key", "api-key")
            .env_from_secret("OLD_KEY", "old-key", "key")
            .mount("db-tls", "/tls"),
        )
        .await;
    peers.expect("new-key", "200");
    peers.expect("old-key", "401");
    let views: Vec<std::collections::BTreeSet<String>> = peers
        .log
        .lines()
        .filter_map(|l| l.strip_prefix("CLUSTER "))
        .map(|l| {
            let (pod, body) = l.split_once(' ').unwrap_or((l, ""));
            let v: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{pod}: GET /cluster: {e}: {body}"));
            assert_eq!(v["result"]["status"], "enabled", "{pod}: {v}");
            v["result"]["peers"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(views.len(), 3, "{}", peers.log);
    for view in &views {
        assert_eq!(view.len(), 3, "a pod sees {view:?}");
        assert_eq!(view, &views[0], "the pods disagree on the peers");
    }
}

/// A client that sends one request (`curl_args`) on a new connection every 0.3 s, forever, and
/// prints a TICK line (time, HTTP code, curl exit) for each (see [`ticks`]).
fn looping_client(name: &str, curl_args: &str) -> Probe {
    Probe::new(
        name,
        format!(
            r#"while true; do
  code=$(curl -s -o /dev/null -w '%{{http_code}}' --connect-timeout 3 --max-time 5 {curl_args})
  rc=$?
  echo "TICK $(date +%s) $code $rc"
  sleep 0.3
done"#
        ),
    )
}

/// Every request of a [`looping_client`] got a 200.
fn assert_all_served(ticks: &[Tick]) {
    let failed: Vec<&Tick> = ticks.iter().filter(|t| t.code != "200").collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rotation; first ones: {:?}",
        failed.len(),
        ticks.len(),
        &failed[..failed.len().min(10)]
    );
}

/// Starts a [`looping_client`] and waits for its first successful request.
async fn start_looping_client(ns: &TestNamespace, client: &Probe) {
    ns.start(client).await;
    poll(
        &format!("{}'s first success", client.name),
        PROBE_TIMEOUT,
        async || {
            let log = ns.log(&client.name, None).await;
            ticks(&log)
                .iter()
                .any(|t| t.code == "200")
                .then_some(())
                .ok_or_else(|| format!("no successful request yet:\n{log}"))
        },
    )
    .await;
}

/// `status.certificate`: notAfter (as written) and renewalTime of the serving certificate.
async fn certificate_times(ns: &TestNamespace) -> (String, Timestamp) {
    let sq = ns
        .api::<SecureQdrant>()
        .get("db")
        .await
        .expect("SecureQdrant");
    let cert = sq
        .status
        .and_then(|s| s.certificate)
        .expect("status.certificate");
    let renewal = cert
        .renewal_time
        .as_deref()
        .expect("renewalTime")
        .parse()
        .expect("an RFC 3339 renewalTime");
    (cert.not_after.expect("notAfter"), renewal)
}

/// Waits until status shows a certificate other than the one with `not_after` (due at
/// `renewal`).
async fn wait_renewed(ns: &TestNamespace, not_after: &str, renewal: Timestamp) {
    let wait = Duration::from_secs(Timestamp::now().duration_until(renewal).as_secs().max(0) as u64)
        + Duration::from_secs(300);
    let sqs = ns.api::<SecureQdrant>();
    poll("a renewed certificate", wait, async || {
        let sq = sqs.get("db").await.map_err(|e| e.to_string())?;
        let now = sq
            .status
            .and_then(|s| s.certificate)
            .and_then(|c| c.not_after);
        (now.as_deref() != Some(not_after))
            .then_some(())
            .ok_or_else(|| format!("notAfter still {now:?}"))
    })
    .await;
}

/// Waits until the StatefulSet `db` has rolled out completely and each of its 3 pods was
/// created after `since`.
async fn wait_rolled(ns: &TestNamespace, since: Timestamp) {
    let statefulsets = ns.api::<StatefulSet>();
    let pods = ns.api::<Pod>();
    poll("the StatefulSet rolled", READY_TIMEOUT, async || {
        let sts = statefulsets.get("db").await.map_err(|e| e.to_string())?;
        let status = sts.status.clone().unwrap_or_default();
        let rolled = status.observed_generation == sts.metadata.generation
            && status.update_revision.is_some()
            && status.current_revision == status.update_revision
            && status.updated_replicas == Some(3)
            && status.ready_replicas == Some(3);
        if !rolled {
            return Err(format!("StatefulSet status: {status:?}"));
        }
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=db"))
            .await
            .map_err(|e| e.to_string())?;
        let stale: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.creation_timestamp().is_none_or(|t| t.0 < since))
            .map(|p| p.name_any())
            .collect();
        if stale.is_empty() && list.items.len() == 3 {
            Ok(())
        } else {
            Err(format!("pods from before the renewal: {stale:?}"))
        }
    })
    .await;
}

// =============================================================================================
// Harness
// =============================================================================================

/// A client for the kind cluster. Panics unless the suite is enabled (`E2E_KIND=1`, which
/// tests/e2e/kind.sh sets together with the kubeconfig of the cluster it made): `--ignored`
/// alone does not point these tests at whatever cluster the current kubeconfig names, and a
/// test that cannot check anything fails rather than passes.
async fn cluster() -> Client {
    assert_eq!(
        std::env::var(ENABLE).as_deref(),
        Ok("1"),
        "this test needs the kind cluster of tests/e2e/kind.sh, which runs it with {ENABLE}=1"
    );
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for the kind cluster (tests/e2e/kind.sh sets one up)");
    Api::<SecureQdrant>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .expect("the SecureQdrant CRD is installed (install the chart: tests/e2e/kind.sh)");
    client
}

/// A namespace with a random name, deleted when dropped (unless `E2E_KEEP=1`).
struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    async fn create(client: &Client) -> TestNamespace {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).expect("random bytes");
        let name = format!("sq-e2e-{}", hex::encode(bytes));
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"secureqdrant.dev/e2e": "true"}}
        }))
        .expect("a Namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        println!("namespace {name}");
        TestNamespace {
            client: client.clone(),
            name,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates a SecureQdrant or QdrantAccessToken given as JSON.
    async fn create_object(&self, obj: &Value) {
        let kind = obj["kind"].as_str().unwrap_or_default();
        match kind {
            "SecureQdrant" => self.create_typed::<SecureQdrant>(obj).await,
            "QdrantAccessToken" => self.create_typed::<QdrantAccessToken>(obj).await,
            other => panic!("create: unexpected kind {other}"),
        }
    }

    async fn create_typed<K>(&self, obj: &Value)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let typed: K = serde_json::from_value(obj.clone()).expect("a valid object");
        self.api::<K>()
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", obj["metadata"]["name"]));
    }

    /// A SecureQdrant sized for kind (1Gi volumes, small requests) with `spec` on top.
    async fn create_instance(&self, name: &str, spec: Value) {
        let mut full = json!({
            "storage": {"size": "1Gi"},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                          "limits": {"memory": "1Gi"}}
        });
        merge(&mut full, spec);
        self.create_object(&json!({
            "apiVersion": "secureqdrant.dev/v1alpha1", "kind": "SecureQdrant",
            "metadata": {"name": name, "namespace": self.name}, "spec": full
        }))
        .await;
    }

    /// Waits until the SecureQdrant is Ready for its current generation.
    async fn wait_ready(&self, name: &str) -> SecureQdrant {
        let api = self.api::<SecureQdrant>();
        let what = format!("SecureQdrant {}/{name} Ready", self.name);
        let result = poll_result(READY_TIMEOUT, async || {
            let sq = api.get(name).await.map_err(|e| e.to_string())?;
            let status = sq.status.as_ref().ok_or("no status yet")?;
            if status.phase == Some(Phase::Ready)
                && status.observed_generation == sq.metadata.generation
                && condition(&sq, "Ready").as_deref() == Some("True")
            {
                Ok(sq)
            } else {
                Err(format!(
                    "phase {:?}, conditions {:?}",
                    status.phase, status.conditions
                ))
            }
        })
        .await;
        match result {
            Ok(sq) => sq,
            Err(e) => panic!("{what}: {e}\npods:\n{}", self.describe_pods().await),
        }
    }

    /// Runs a probe pod to completion; returns its RESULT lines.
    async fn run(&self, probe: Probe) -> ProbeRun {
        self.start(&probe).await;
        let pods = self.api::<Pod>();
        let what = format!("probe {} finished", probe.name);
        let pod = poll(&what, PROBE_TIMEOUT, async || {
            let pod = pods.get(&probe.name).await.map_err(|e| e.to_string())?;
            match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Succeeded" | "Failed") => Ok(pod),
                phase => Err(format!("phase {phase:?}")),
            }
        })
        .await;
        let exit = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().cloned())
            .and_then(|c| c.state)
            .and_then(|s| s.terminated)
            .map(|t| t.exit_code);
        let log = self.log(&probe.name, None).await;
        let _ = pods.delete(&probe.name, &DeleteParams::background()).await;
        ProbeRun::parse(&probe.name, exit, log)
    }

    /// Creates a probe pod and waits until it runs (or already finished).
    async fn start(&self, probe: &Probe) {
        let pods = self.api::<Pod>();
        pods.create(&PostParams::default(), &probe.pod())
            .await
            .unwrap_or_else(|e| panic!("probe {} created: {e}", probe.name));
        let what = format!("probe {} started", probe.name);
        poll(&what, PROBE_TIMEOUT, async || {
            let pod = pods.get(&probe.name).await.map_err(|e| e.to_string())?;
            match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Running" | "Succeeded" | "Failed") => Ok(()),
                phase => Err(format!("phase {phase:?}")),
            }
        })
        .await;
    }

    /// Runs `script` in an ephemeral container of an existing pod (sharing its network
    /// namespace, so the pod's NetworkPolicies apply) and returns its RESULT lines.
    async fn run_in_pod(&self, pod: &str, container: &str, script: &str) -> ProbeRun {
        let pods = self.api::<Pod>();
        let patch = json!({"spec": {"ephemeralContainers": [{
            "name": container,
            "image": curl_image(),
            "command": ["sh", "-c", format!("{CHECK}{script}")],
            "securityContext": restricted(),
        }]}});
        pods.patch_ephemeral_containers(pod, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap_or_else(|e| panic!("ephemeral container added to {pod}: {e}"));
        let what = format!("ephemeral container {container} in {pod} finished");
        let exit = poll(&what, PROBE_TIMEOUT, async || {
            let p = pods.get(pod).await.map_err(|e| e.to_string())?;
            let state = p
                .status
                .and_then(|s| s.ephemeral_container_statuses)
                .and_then(|all| all.into_iter().find(|c| c.name == container))
                .and_then(|c| c.state);
            match state.and_then(|s| s.terminated) {
                Some(t) => Ok(t.exit_code),
                None => Err("still running".to_owned()),
            }
        })
        .await;
        let log = self.log(pod, Some(container)).await;
        ProbeRun::parse(container, Some(exit), log)
    }

    async fn log(&self, pod: &str, container: Option<&str>) -> String {
        let params = LogParams {
            container: container.map(str::to_owned),
            ..LogParams::default()
        };
        self.api::<Pod>()
            .logs(pod, &params)
            .await
            .unwrap_or_else(|e| panic!("log of {pod}: {e}"))
    }

    /// One line per pod: phase and why containers wait (for timeout messages).
    async fn describe_pods(&self) -> String {
        let Ok(list) = self.api::<Pod>().list(&ListParams::default()).await else {
            return "(pods could not be listed)".to_owned();
        };
        list.items
            .iter()
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                let waiting: Vec<String> = status
                    .container_statuses
                    .iter()
                    .flatten()
                    .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                    .collect();
                format!(
                    "  {} {:?} ready={:?} waiting={waiting:?}",
                    p.name_any(),
                    status.phase,
                    status
                        .conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == "Ready")
                        .map(|c| c.status.clone())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var("E2E_KEEP").as_deref() == Ok("1") {
            println!("kept namespace {} (E2E_KEEP=1)", self.name);
            return;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let _ = api.delete(&name, &DeleteParams::background()).await;
            })
        });
    }
}

/// A client pod: curl with `check` defined, optional labels, env from Secrets and Secret mounts.
struct Probe {
    name: String,
    script: String,
    labels: BTreeMap<String, String>,
    /// (variable, Secret, key)
    env: Vec<(String, String, String)>,
    /// (Secret, mount path)
    mounts: Vec<(String, String)>,
}

impl Probe {
    fn new(name: &str, script: impl Into<String>) -> Probe {
        Probe {
            name: name.to_owned(),
            script: script.into(),
            labels: BTreeMap::from([("app.kubernetes.io/name".to_owned(), "e2e-probe".to_owned())]),
            env: Vec::new(),
            mounts: Vec::new(),
        }
    }

    fn label(mut self, key: &str, value: &str) -> Probe {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    fn env_from_secret(mut self, var: &str, secret: &str, key: &str) -> Probe {
        self.env
            .push((var.to_owned(), secret.to_owned(), key.to_owned()));
        self
    }

    fn mount(mut self, secret: &str, path: &str) -> Probe {
        self.mounts.push((secret.to_owned(), path.to_owned()));
        self
    }

    fn pod(&self) -> Pod {
        let env: Vec<Value> = self
            .env
            .iter()
            .map(|(var, secret, key)| {
                json!({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
            })
            .collect();
        let volumes: Vec<Value> = self
            .mounts
            .iter()
            .enumerate()
            .map(|(i, (secret, _))| {
                json!({"name": format!("s{i}"), "secret": {"secretName": secret}})
            })
            .collect();
        let mounts: Vec<Value> = self
            .mounts
            .iter()
            .enumerate()
            .map(|(i, (_, path))| {
                json!({"name": format!("s{i}"), "mountPath": path, "readOnly": true})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 1,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 10001,
                                    "runAsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "curl",
                    "image": curl_image(),
                    "command": ["sh", "-c", format!("{CHECK}{}", self.script)],
                    "env": env,
                    "volumeMounts": mounts,
                    "securityContext": restricted(),
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                  "limits": {"memory": "64Mi"}}
                }],
                "volumes": volumes
            }
        }))
        .expect("a Pod")
    }
}

fn curl_image() -> String {
    std::env::var("E2E_CURL_IMAGE").unwrap_or_else(|_| CURL_IMAGE.to_owned())
}

/// A container security context that passes the "restricted" Pod Security Standard.
fn restricted() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
           "runAsNonRoot": true, "runAsUser": 10001,
           "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
}

/// What a probe printed: `label → (http code, curl exit code)`.
struct ProbeRun {
    name: String,
    exit: Option<i32>,
    log: String,
    results: BTreeMap<String, (String, i32)>,
}

impl ProbeRun {
    fn parse(name: &str, exit: Option<i32>, log: String) -> ProbeRun {
        let results = log
            .lines()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("RESULT ")?.split_whitespace();
                let label = parts.next()?.to_owned();
                let code = parts.next()?.to_owned();
                let rc = parts.next()?.parse().ok()?;
                Some((label, (code, rc)))
            })
            .collect();
        ProbeRun {
            name: name.to_owned(),
            exit,
            log,
            results,
        }
    }

    fn result(&self, label: &str) -> &(String, i32) {
        self.results.get(label).unwrap_or_else(|| {
            panic!(
                "probe {} printed no result for {label} (exit {:?}):\n{}",
                self.name, self.exit, self.log
            )
        })
    }

    /// The request got exactly this HTTP status.
    fn expect(&self, label: &str, code: &str) {
        let (got, rc) = self.result(label);
        assert_eq!(
            got, code,
            "{}: {label}: HTTP {got} (curl exit {rc}), expected {code}",
            self.name
        );
    }

    /// The request got no HTTP response at all (curl failed before one).
    fn expect_no_response(&self, label: &str) {
        let (got, rc) = self.result(label);
        assert!(
            got == "000" && *rc != 0,
            "{}: {label}: expected no HTTP response, got HTTP {got} (curl exit {rc})",
            self.name
        );
    }

    fn curl_exit(&self, label: &str) -> i32 {
        self.result(label).1
    }
}

/// One request of the looping client.
#[derive(Debug)]
struct Tick {
    at: i64,
    code: String,
    rc: i32,
}

fn ticks(log: &str) -> Vec<Tick> {
    log.lines()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("TICK ")?.split_whitespace();
            Some(Tick {
                at: parts.next()?.parse().ok()?,
                code: parts.next()?.to_owned(),
                rc: parts.next()?.parse().ok()?,
            })
        })
        .collect()
}

async fn secret_text(ns: &TestNamespace, name: &str, key: &str) -> String {
    let secret: Secret = ns
        .api::<Secret>()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    secret
        .data
        .and_then(|d| {
            d.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .unwrap_or_else(|| panic!("Secret {name} has no {key}"))
}

fn rest_url(sq: &SecureQdrant) -> String {
    sq.status
        .as_ref()
        .and_then(|s| s.endpoints.as_ref())
        .map(|e| e.rest.clone())
        .expect("status.endpoints.rest")
}

fn condition(sq: &SecureQdrant, type_: &str) -> Option<String> {
    sq.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// JSON merge of `patch` into `base` (objects merged key by key, anything else replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// Polls `check` every 2 s until it returns Ok, or panics with its last error after `timeout`.
async fn poll<T>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    poll_result(timeout, check)
        .await
        .unwrap_or_else(|e| panic!("timed out after {timeout:?} waiting for {what}: {e}"))
}

async fn poll_result<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

#[test]
fn results_and_ticks_parse() {
    let run = ProbeRun::parse(
        "p",
        Some(0),
        "noise\nRESULT a 200 0\nRESULT b 000 28\nRESULT broken\n".to_owned(),
    );
    run.expect("a", "200");
    run.expect_no_response("b");
    assert_eq!(run.curl_exit("b"), 28);
    assert!(!run.results.contains_key("broken"));
    let t = ticks("TICK 100 200 0\nTICK 101 000 7\nother\n");
    assert_eq!(t.len(), 2);
    assert_eq!((t[1].at, t[1].code.as_str(), t[1].rc), (101, "000", 7));
    let mut base = json!({"storage": {"size": "1Gi"}, "replicas": 1});
    merge(
        &mut base,
        json!({"replicas": 3, "storage": {"storageClassName": "x"}}),
    );
    assert_eq!(
        base,
        json!({"storage": {"size": "1Gi", "storageClassName": "x"}, "replicas": 3})
    );
}
