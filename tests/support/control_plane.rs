//! A real Kubernetes control plane under the tests: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok, built from Go modules by `tests/control-plane/build.sh` and started
//! by its multi-call binary (`control-plane up`). One per test binary, started lazily on first
//! use; it stops when the test binary exits (it watches its standard input, which this process
//! holds open). Each test takes a fresh namespace, labelled for the "restricted" Pod Security
//! Standard, and a `kube::Client` as admin. The operator runs as its real binary, authenticated
//! with a TokenRequest token of the chart's ServiceAccount, with the chart's RBAC (rendered by
//! the Helm SDK) applied: cluster-wide, or for `watchNamespaces`.
//!
//! No fallback: when Go or the build is missing, the first test that needs the control plane
//! fails with the build's output.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `control-plane up` writes once everything is ready.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub ca_file: PathBuf,
    pub admin_token: String,
    pub audit_log: PathBuf,
    pub log_dir: PathBuf,
    pub pid: u32,
    pub children: BTreeMap<String, u32>,
    pub ports: Vec<u16>,
    pub nodes: Vec<String>,
    pub storage_class: String,
}

/// A running control plane.
pub struct ControlPlane {
    pub state: State,
    child: Mutex<Child>,
    /// Held open for the life of this process: its end tells `control-plane up` to stop.
    _stdin: Mutex<ChildStdin>,
}

/// Where build.sh puts the binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CONTROL_PLANE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/control-plane"))
}

/// Builds the control plane once per test binary (a no-op when up to date); panics with the
/// build's output when it fails: these tests never fall back to the in-memory API server.
pub fn build() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let started = Instant::now();
            let out = Command::new("bash")
                .arg(repo().join("tests/control-plane/build.sh"))
                .output()
                .expect("bash runs tests/control-plane/build.sh");
            assert!(
                out.status.success(),
                "tests/control-plane/build.sh failed (Go >= 1.26 and the Go module proxy are \
                 needed):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "control plane built (or up to date) in {:.1?}",
                started.elapsed()
            );
            bin_dir()
        })
        .clone()
}

/// The control-plane multi-call binary.
pub fn binary() -> PathBuf {
    build().join("control-plane")
}

/// The control plane of this test binary, started on first use.
pub fn get() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| start(&[]).unwrap_or_else(|e| panic!("{e}")))
}

/// Starts a control plane (`control-plane up ARGS --exit-on-stdin-eof`); waits until it is ready.
pub fn start(args: &[&str]) -> Result<ControlPlane, String> {
    let bin = binary();
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("up")
        .args(args)
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{} does not start: {e}", bin.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("ready ").map(PathBuf::from));
        let _ = tx.send(ready);
        // Keep draining: the control plane must never block on a full pipe.
        for _ in lines {}
    });
    let state_file = match rx.recv_timeout(Duration::from_secs(600)) {
        Ok(Some(path)) => path,
        Ok(None) => {
            let status = child.wait().ok();
            return Err(format!(
                "control-plane up exited before it was ready ({status:?}); its stderr above says why"
            ));
        }
        Err(_) => {
            let _ = child.kill();
            return Err("control-plane up: not ready after 600 s".to_owned());
        }
    };
    let state: State = serde_json::from_slice(
        &std::fs::read(&state_file).map_err(|e| format!("{}: {e}", state_file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", state_file.display()))?;
    eprintln!(
        "control plane ready in {:.1?} at {} ({})",
        started.elapsed(),
        state.server,
        state.dir.display()
    );
    Ok(ControlPlane {
        state,
        child: Mutex::new(child),
        _stdin: Mutex::new(stdin),
    })
}

impl ControlPlane {
    /// The pid of `control-plane up`.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Waits for `control-plane up` to exit (after a signal); its exit code.
    pub fn wait(&self) -> Option<i32> {
        self.child.lock().unwrap().wait().expect("reaped").code()
    }

    /// SIGKILLs `control-plane up` (its standard input stays open: no graceful stop) and
    /// reaps it.
    pub fn sigkill(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL
        child.wait().expect("reaped");
    }

    /// A client as admin (system:masters), for the runtime of the calling test.
    pub async fn admin(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.state.kubeconfig).expect("admin kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("admin kubeconfig loads");
        // Told apart from the operator's requests in the audit log.
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(TEST_USER_AGENT),
        ));
        Client::try_from(config).expect("admin client")
    }

    /// `kubectl ARGS` against this control plane as admin (kubectl built from the same
    /// Kubernetes module); returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary())
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&self.state.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A fresh namespace named `prefix-N-<pid>`, enforcing the "restricted" Pod Security
    /// Standard.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            N.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
        name
    }

    /// Deletes a namespace (the namespace controller removes what is in it).
    pub async fn delete_namespace(&self, client: &Client, name: &str) {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }

    /// The audit log so far, one JSON event per line.
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.state.audit_log).expect("audit log");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Installs the CRDs (crds/secure-qdrant-operator.yaml) by server-side apply; waits until
    /// they are Established.
    pub async fn install_crds(&self, client: &Client) {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        let text = std::fs::read_to_string(repo().join("crds/secure-qdrant-operator.yaml"))
            .expect("crds/secure-qdrant-operator.yaml");
        let mut names = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let crd: CustomResourceDefinition =
                serde::Deserialize::deserialize(doc).expect("a CRD document");
            let name = crd.metadata.name.clone().expect("named CRD");
            api.patch(&name, &apply_params(), &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("the real API server refuses CRD {name}: {e}"));
            names.push(name);
        }
        for name in names {
            eventually(Duration::from_secs(60), || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established
                        .then_some(())
                        .ok_or_else(|| format!("CRD {name} not Established"))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The admin client's User-Agent.
pub const TEST_USER_AGENT: &str = "secure-qdrant-operator-tests";

/// Server-side apply as the tests' field manager.
pub fn apply_params() -> PatchParams {
    PatchParams::apply("secure-qdrant-operator-tests").force()
}

/// Polls `f` every 200 ms until it succeeds or `limit` passes; returns the last error then.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("not after {limit:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// [`eventually`] for a test that cannot go on without it: a failure panics naming `what`,
/// with the operator's log (`log`, read only then).
pub async fn eventually_or_panic<T, F, Fut>(
    limit: Duration,
    what: &str,
    f: F,
    log: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    match eventually(limit, f).await {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}\noperator log:\n{}", log()),
    }
}

/// How the chart is installed: RBAC for every namespace, or only for `watchNamespaces`.
#[derive(Debug, Clone)]
pub enum Scope {
    ClusterWide,
    Namespaces(Vec<String>),
}

/// The operator binary running as the chart's ServiceAccount.
pub struct Operator {
    child: Child,
    pub release: String,
    pub namespace: String,
    pub service_account: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// The user name the API server sees for the operator.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the operator's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Renders the chart (Helm SDK, tests/tools/helm_render.py) as release `release` in
/// `namespace` with `values`; returns the YAML stream.
pub fn render_chart_text(values: &Value, release: &str, namespace: &str) -> String {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./tests/tools/setup.sh (./tests/run.sh does it for you)",
        python.display()
    );
    let out = Command::new(python)
        .arg(repo().join("tests/tools/helm_render.py"))
        .args(["render", "--values", &values.to_string()])
        .args(["--name", release, "--namespace", namespace])
        .output()
        .expect("helm_render.py runs");
    assert!(
        out.status.success(),
        "the chart does not render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The chart's documents (see `render_chart_text`). Mind YAML 1.1 octals such as `0444`: they
/// read as strings here; send those documents with `kubectl apply` instead.
pub fn render_chart(values: &Value, release: &str, namespace: &str) -> Vec<Value> {
    let text = render_chart_text(values, release, namespace);
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// Applies the chart's ServiceAccount and RBAC objects (rendered for `scope`) as admin.
pub async fn apply_chart_rbac(client: &Client, docs: &[Value]) {
    async fn apply<K>(api: Api<K>, doc: &Value)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize,
        K: serde::de::DeserializeOwned,
    {
        let obj: K = serde_json::from_value(doc.clone()).expect("a chart object");
        let name = doc["metadata"]["name"].as_str().expect("named").to_owned();
        api.patch(&name, &apply_params(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", doc["kind"]));
    }
    for doc in docs {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let c = client.clone();
        match doc["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => apply(Api::<ServiceAccount>::namespaced(c, ns), doc).await,
            "ClusterRole" => apply(Api::<ClusterRole>::all(c), doc).await,
            "ClusterRoleBinding" => apply(Api::<ClusterRoleBinding>::all(c), doc).await,
            "Role" => apply(Api::<Role>::namespaced(c, ns), doc).await,
            "RoleBinding" => apply(Api::<RoleBinding>::namespaced(c, ns), doc).await,
            _ => {}
        }
    }
}

/// A token for a ServiceAccount from the TokenRequest API (one hour).
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let got: TokenRequest = api
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
    got.status.expect("a token").token
}

/// A kubeconfig for `token` against this control plane.
pub fn token_kubeconfig(state: &State, token: &str, namespace: &str) -> String {
    use base64::Engine;
    if state.server.starts_with("http://") {
        // A fault proxy on loopback: plain HTTP, the token forwarded to the real API server.
        return format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: cp\n    cluster:\n      server: {}\n\
             users:\n  - name: sa\n    user:\n      token: {token}\n\
             contexts:\n  - name: sa\n    context:\n      cluster: cp\n      user: sa\n      \
             namespace: {namespace}\ncurrent-context: sa\n",
            state.server
        );
    }
    let ca = std::fs::read(&state.ca_file).expect("CA file");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n  - name: cp\n    cluster:\n      server: {}\n      \
         certificate-authority-data: {}\nusers:\n  - name: sa\n    user:\n      token: {token}\n\
         contexts:\n  - name: sa\n    context:\n      cluster: cp\n      user: sa\n      \
         namespace: {namespace}\ncurrent-context: sa\n",
        state.server,
        base64::engine::general_purpose::STANDARD.encode(ca)
    )
}

impl ControlPlane {
    /// Installs the chart's RBAC for `scope` as a new release (its own namespace, ServiceAccount
    /// and, cluster-wide, its own ClusterRole) and runs the operator binary with a token of that
    /// ServiceAccount. Waits until the audit log shows it watching (or listing) SecureQdrants.
    pub async fn start_operator(&self, client: &Client, scope: Scope) -> Operator {
        self.start_operator_at(client, scope, &self.state.server.clone())
            .await
    }

    /// `start_operator`, talking to the API server at `server` (e.g. a fault proxy's URL, which
    /// forwards the operator's token to the real API server).
    pub async fn start_operator_at(&self, client: &Client, scope: Scope, server: &str) -> Operator {
        let namespace = self.namespace(client, "sqo").await;
        let release = format!("sqo-{namespace}");
        let values = match &scope {
            Scope::ClusterWide => json!({}),
            Scope::Namespaces(list) => json!({ "watchNamespaces": list }),
        };
        let docs = render_chart(&values, &release, &namespace);
        let service_account = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("the chart has a ServiceAccount")
            .to_owned();
        apply_chart_rbac(client, &docs).await;
        let token = service_account_token(client, &namespace, &service_account).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut state = self.state.clone();
        state.server = server.to_owned();
        std::fs::write(&kubeconfig, token_kubeconfig(&state, &token, &namespace)).unwrap();
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secure-qdrant-operator"));
        cmd.args(["run", "--log-format", "text", "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("LOG_LEVEL", "secure_qdrant_operator=debug,info")
            .env("POD_NAMESPACE", &namespace)
            .env_remove("HTTP_ADDR")
            .env_remove("WATCH_NAMESPACES")
            .env_remove("POD_NAME")
            .env_remove("CLUSTER_DOMAIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Scope::Namespaces(list) = &scope {
            cmd.arg("--namespaces").arg(list.join(","));
        }
        // The operator dies with the thread that started it (the test's), even when this test
        // binary is killed and Drop never runs.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("the operator binary starts");
        let op = Operator {
            child,
            release,
            namespace,
            service_account,
            log,
            _dir: dir,
        };
        let user = op.username();
        eventually(Duration::from_secs(60), || {
            let seen = self.audit_events().iter().any(|e| {
                e["user"]["username"] == user.as_str()
                    && e["objectRef"]["resource"] == "secureqdrants"
                    && (e["verb"] == "watch" || e["verb"] == "list")
            });
            async move {
                seen.then_some(())
                    .ok_or_else(|| "the operator does not watch SecureQdrants yet".to_owned())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
        op
    }
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // state is the field after the parenthesised command name
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Whether something listens on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// The loopback address process `pid` listens on (TCP, IPv4), from /proc: its socket inodes
/// (`/proc/<pid>/fd`) matched against the listening sockets of `/proc/<pid>/net/tcp`.
pub fn listening_on_loopback(pid: u32) -> Result<String, String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| e.to_string())?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(l.to_owned())
        })
        .collect();
    let table =
        std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).map_err(|e| e.to_string())?;
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    let ports: Vec<u16> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]))
        .filter_map(|f| {
            let port = f[1].strip_prefix("0100007F:")?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect();
    match ports[..] {
        [port] => Ok(format!("127.0.0.1:{port}")),
        _ => Err(format!("listening on loopback ports {ports:?}")),
    }
}

/// A path in the repository.
pub fn repo_file_path(path: impl AsRef<Path>) -> PathBuf {
    repo().join(path.as_ref())
}

/// Reads a YAML file of the repository.
pub fn repo_file(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(repo().join(path.as_ref())).expect("readable repository file")
}
