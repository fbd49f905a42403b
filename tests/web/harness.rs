//! Starts either example app on `127.0.0.1:0` (in `--dev` mode, with a webhook secret) and
//! talks to it over real HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::shared::{self, App, Options};

/// The webhook secret the apps under test accept (a test value, not a real one).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running app.
pub struct Harness {
    pub base: String,
    pub app: Arc<App>,
    client: reqwest::Client,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

fn options() -> Options {
    Options {
        dev: true,
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        webhook_secret: Some(WEBHOOK_SECRET.to_owned()),
        announce: false,
    }
}

impl Harness {
    fn new(base: String, app: Arc<App>, stop: Box<dyn FnOnce() + Send>) -> Harness {
        Harness {
            base,
            app,
            client: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    /// `axum_app`, served on the test's runtime.
    pub async fn axum() -> Harness {
        let started = shared::start(options()).await.expect("start axum_app");
        let listener = tokio::net::TcpListener::from_std(started.listener).unwrap();
        let app = started.app.clone();
        let base = app.base_url.clone();
        let database = started.database;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = crate::axum_app::router(app.clone());
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            drop(database);
        });
        Harness::new(
            base,
            app,
            Box::new(move || {
                let _ = tx.send(());
            }),
        )
    }

    /// `actix_app`, in an actix system on a thread of its own (as its `main` runs it).
    pub async fn actix() -> Harness {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let started = shared::start(options()).await.expect("start actix_app");
                let app = started.app.clone();
                let for_workers = app.clone();
                let server = actix_web::HttpServer::new(move || {
                    actix_web::App::new()
                        .configure(crate::actix_app::configure(for_workers.clone()))
                })
                .workers(2)
                .disable_signals()
                .listen(started.listener)
                .unwrap()
                .run();
                tx.send((app, server.handle())).unwrap();
                server.await.unwrap();
                drop(started.database);
            });
        });
        let (app, handle) = tokio::task::spawn_blocking(move || rx.recv().unwrap())
            .await
            .unwrap();
        let base = app.base_url.clone();
        Harness::new(
            base,
            app,
            Box::new(move || {
                // Stopping is asynchronous; the system thread ends with it.
                drop(handle.stop(false));
            }),
        )
    }

    /// Sends a request; the answer's status and JSON body (`null` when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(&body), &[])
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None, &[])
            .await
    }

    /// A token from `POST /dev/token` (`org`: a Clerk-style organization id).
    pub async fn token(&self, user: &str, org: Option<&str>) -> String {
        let body = json!({ "user_id": user, "org_id": org });
        let (status, answer) = self
            .call(Method::POST, "/dev/token", None, Some(&body), &[])
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "dev token for {user} in {org:?}: {answer}"
        );
        answer["token"].as_str().unwrap().to_owned()
    }

    /// A token signed with the app's dev key for arbitrary claims.
    pub fn sign(&self, claims: &Value) -> String {
        self.app.dev.as_ref().unwrap().sign(claims)
    }

    /// The app's claims for `user` with `org` = (id, role) active.
    pub fn claims(&self, user: &str, org: Option<(&str, &str)>, lifetime: i64) -> Value {
        let org = org.map(|(id, role)| (id, role, None));
        self.app.dev.as_ref().unwrap().claims(user, org, lifetime)
    }

    /// Onboards `user` with a new organization `name`: its Clerk-style id and the owner's
    /// token with it active.
    pub async fn onboard(&self, user: &str, name: &str) -> (String, String) {
        let personal = self.token(user, None).await;
        let (status, org) = self
            .post("/api/organizations", &personal, json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{org}");
        let external = org["external_id"].as_str().unwrap().to_owned();
        let token = self.token(user, Some(&external)).await;
        (external, token)
    }

    /// Creates a project; its id.
    pub async fn project(&self, token: &str, name: &str) -> String {
        let (status, p) = self
            .post("/api/projects", token, json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        p["id"].as_str().unwrap().to_owned()
    }

    /// The names of the projects `token` lists.
    pub async fn project_names(&self, token: &str) -> Vec<String> {
        let (status, list) = self.get("/api/projects", token).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Posts a webhook delivery with the given id and timestamp, signed with `secret`.
    pub async fn webhook(&self, id: &str, body: &[u8], secret: &str) -> (StatusCode, Value) {
        let now = shared::unix_now();
        let signature = pg_tenancy::webhook::Verifier::new(secret)
            .unwrap()
            .sign(id, now, body);
        let response = self
            .client
            .post(format!("{}/webhooks/clerk", self.base))
            .header("svix-id", id)
            .header("svix-timestamp", now.to_string())
            .header("svix-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
