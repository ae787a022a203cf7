//! A mocked Kubernetes API server for the Lease calls (no API server can run here): it keeps
//! Leases as the real one does for GET, POST (409 when the Lease exists) and PUT (409 unless
//! the body carries the current `resourceVersion`), each write bumping the version, and can be
//! taken down (every call answers 503) to cut a client off.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Store {
    leases: Mutex<HashMap<String, (u64, Value)>>,
    down: AtomicBool,
    writes: Mutex<u64>,
    /// Every answer is held back this long after the request took effect.
    answer_delay: Mutex<std::time::Duration>,
    /// When the last write took effect.
    last_write: Mutex<Option<std::time::Instant>>,
}

fn status(code: StatusCode, reason: &str) -> Response {
    (
        code,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": reason, "reason": reason, "code": code.as_u16()}),
        ),
    )
        .into_response()
}

fn stored(version: u64, mut lease: Value) -> Value {
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    lease
}

async fn read_now(
    State(s): State<Arc<Store>>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    }
    match s.leases.lock().expect("lock").get(&name) {
        Some((v, lease)) => axum::Json(stored(*v, lease.clone())).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound"),
    }
}

async fn create_now(
    State(s): State<Arc<Store>>,
    UrlPath(_ns): UrlPath<String>,
    axum::Json(lease): axum::Json<Value>,
) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    }
    let name = lease["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut leases = s.leases.lock().expect("lock");
    if leases.contains_key(&name) {
        return status(StatusCode::CONFLICT, "AlreadyExists");
    }
    *s.writes.lock().expect("lock") += 1;
    *s.last_write.lock().expect("lock") = Some(std::time::Instant::now());
    leases.insert(name, (1, lease.clone()));
    (StatusCode::CREATED, axum::Json(stored(1, lease))).into_response()
}

async fn replace_now(
    State(s): State<Arc<Store>>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
    axum::Json(lease): axum::Json<Value>,
) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    }
    let mut leases = s.leases.lock().expect("lock");
    let Some((version, _)) = leases.get(&name) else {
        return status(StatusCode::NOT_FOUND, "NotFound");
    };
    if lease["metadata"]["resourceVersion"].as_str() != Some(version.to_string().as_str()) {
        return status(StatusCode::CONFLICT, "Conflict");
    }
    let next = version + 1;
    *s.writes.lock().expect("lock") += 1;
    *s.last_write.lock().expect("lock") = Some(std::time::Instant::now());
    leases.insert(name, (next, lease.clone()));
    axum::Json(stored(next, lease)).into_response()
}

/// The mock, serving until the runtime it was started on stops.
async fn delayed(s: &Store, answer: Response) -> Response {
    let delay = *s.answer_delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    answer
}

async fn read(State(s): State<Arc<Store>>, path: UrlPath<(String, String)>) -> Response {
    let answer = read_now(State(s.clone()), path).await;
    delayed(&s, answer).await
}

async fn create(
    State(s): State<Arc<Store>>,
    path: UrlPath<String>,
    body: axum::Json<Value>,
) -> Response {
    let answer = create_now(State(s.clone()), path, body).await;
    delayed(&s, answer).await
}

async fn replace(
    State(s): State<Arc<Store>>,
    path: UrlPath<(String, String)>,
    body: axum::Json<Value>,
) -> Response {
    let answer = replace_now(State(s.clone()), path, body).await;
    delayed(&s, answer).await
}

pub struct KubeApiMock {
    pub store: Arc<Store>,
    pub url: String,
}

impl KubeApiMock {
    /// Starts on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let store = Arc::new(Store::default());
        let app = Router::new()
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(read).put(replace),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                axum::routing::post(create),
            )
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { store, url }
    }

    /// Holds every answer back this long after the request took effect (a slow or hung API
    /// server: the write is made, the client learns of it late or never).
    pub fn set_answer_delay(&self, delay: std::time::Duration) {
        *self.store.answer_delay.lock().expect("lock") = delay;
    }

    /// When the last write took effect.
    pub fn last_write(&self) -> Option<std::time::Instant> {
        *self.store.last_write.lock().expect("lock")
    }

    /// Every call answers 503 while down.
    pub fn set_down(&self, down: bool) {
        self.store.down.store(down, Ordering::SeqCst);
    }

    /// Writes made so far (creates and replaces).
    pub fn writes(&self) -> u64 {
        *self.store.writes.lock().expect("lock")
    }

    /// The stored Lease `name`, as the server would return it.
    pub fn lease(&self, name: &str) -> Option<Value> {
        self.store
            .leases
            .lock()
            .expect("lock")
            .get(name)
            .map(|(v, l)| stored(*v, l.clone()))
    }

    /// The holder of Lease `name`, if any.
    pub fn holder(&self, name: &str) -> Option<String> {
        self.lease(name)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    /// Writes a kubeconfig naming this server, for clients that read `KUBECONFIG`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\n    namespace: markets\ncurrent-context: mock\nusers:\n- name: mock\n  user: {{}}\n",
            self.url
        );
        std::fs::write(path, text).expect("kubeconfig");
    }
}
