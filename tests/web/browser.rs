//! A journey through the axum app's page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), driven over WebDriver: sign-in, onboarding,
//! projects, a member's forbidden action, and an isolation check across two organizations.
//! Saves `browser-journey.png` in cargo's `target/tmp` (`CARGO_TARGET_TMPDIR`).
//!
//! Without `/usr/bin/chromedriver` the tests print `SKIPPED <test>: <reason>` on stderr (seen
//! with `cargo test -- --nocapture`) and pass, unless `TENANCY_REQUIRE_BROWSER` is set (as
//! `.ci/run` sets it), when they fail.
//!
//! ChromeDriver and the dozen Chromium processes it starts are stopped with their test, passed
//! or failed (`support::process`): both tests here check that none remains.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::Harness;
use crate::support::process::ProcessTree;
use crate::support::skip::skip_or_fail;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser is here; says so, or fails under `TENANCY_REQUIRE_BROWSER`, when not.
fn browser_available() -> bool {
    let here = std::path::Path::new(CHROMEDRIVER).exists();
    if !here {
        skip_or_fail(
            "TENANCY_REQUIRE_BROWSER",
            &format!("{CHROMEDRIVER} is not installed (apt-get install chromium chromium-driver)"),
        );
    }
    here
}

/// ChromeDriver with one browser session. Fields drop in order: the processes stop before
/// their profile directory is removed.
struct Driver {
    process: ProcessTree,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = tempfile::tempdir().unwrap();
        // Chromium's configuration and crash reports go to the run's directory, not ~/.config.
        let process = ProcessTree::spawn(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .env("XDG_CONFIG_HOME", profile.path())
                .env("XDG_CACHE_HOME", profile.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // As root, without a sandbox; no background networking (this machine has none).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let answer: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Driver {
            process,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.send(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self
                .send(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.send(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.send(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.send(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let v = self
            .send(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().unwrap_or("").to_owned()
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        let id = self.find(css).await;
        let v = self
            .send(
                reqwest::Method::GET,
                &format!("/element/{id}/attribute/{name}"),
                None,
            )
            .await;
        v.as_str().unwrap_or("").to_owned()
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never matched; last: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let v = self.send(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    async fn sign_in(&self, user: &str) {
        self.fill("#user", user).await;
        self.click("#signin").await;
        self.wait_text("#status", |t| t.contains(user)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_in_a_real_browser_from_sign_in_to_an_isolation_check() {
    if !browser_available() {
        return;
    }
    let h = Harness::axum().await;
    let d = Driver::start().await;
    d.goto(&format!("{}/", h.base)).await;

    // Alice signs in, has no organization yet, creates Acme and a project in it.
    d.sign_in("user_alice").await;
    d.wait_text("#whoami", |t| t.starts_with("0 organization"))
        .await;
    d.fill("#org-name", "Acme").await;
    d.click("#create-org").await;
    d.wait_text("#active-org", |t| t == "in Acme").await;
    d.fill("#project-name", "Rocket skates").await;
    d.click("#create-project").await;
    d.wait_text("#projects", |t| t.contains("Rocket skates"))
        .await;
    let acme_project = d.attribute("#projects li[data-id]", "data-id").await;
    // Alice adds Carol as a member.
    d.fill("#member-user", "user_carol").await;
    d.click("#add-member").await;
    d.wait_text("#members", |t| t.contains("user_carol: member"))
        .await;

    // Bob signs in, creates Globex: its list does not show Acme's project, and Acme's project
    // id, opened from Globex, is not found.
    d.sign_in("user_bob").await;
    d.fill("#org-name", "Globex").await;
    d.click("#create-org").await;
    d.wait_text("#active-org", |t| t == "in Globex").await;
    d.fill("#project-name", "Doomsday device").await;
    d.click("#create-project").await;
    let projects = d
        .wait_text("#projects", |t| t.contains("Doomsday device"))
        .await;
    assert!(!projects.contains("Rocket skates"), "{projects}");
    d.fill("#lookup-id", &acme_project).await;
    d.click("#lookup").await;
    d.wait_text("#lookup-result", |t| t == "404 not_found")
        .await;

    // Carol switches to Acme (her only organization), sees its project, and is refused a delete.
    d.sign_in("user_carol").await;
    d.wait_text("#orgs", |t| t.contains("Acme (member)")).await;
    d.click("#orgs li button.switch").await;
    d.wait_text("#active-org", |t| t == "in Acme").await;
    let projects = d
        .wait_text("#projects", |t| t.contains("Rocket skates"))
        .await;
    assert!(!projects.contains("Doomsday device"), "{projects}");
    d.click("#projects li button.delete").await;
    let error = d.wait_text("#error", |t| t.starts_with("403")).await;
    assert!(error.contains("insufficient_role"), "{error}");
    // The project is still there, and the page says why plainly.
    assert!(d.text("#projects").await.contains("Rocket skates"));

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-journey.png");
    d.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // No process of the run outlives it. Positive control: while the browser runs, the scan
    // finds ChromeDriver and Chromium's renderers.
    let mark = d.process.mark();
    let running = mark.survivors();
    assert!(
        running.iter().any(|p| p.contains(CHROMEDRIVER))
            && running.iter().any(|p| p.contains("--type=renderer")),
        "{running:#?}"
    );
    drop(d);
    assert_eq!(mark.survivors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_browser_test_leaves_no_browser_process() {
    if !browser_available() {
        return;
    }
    let (sender, mark) = tokio::sync::oneshot::channel();
    let failed = tokio::spawn(async move {
        let d = Driver::start().await;
        d.goto("about:blank").await;
        let _ = sender.send(d.process.mark());
        panic!("a forced failure while the browser runs");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    let mark = mark.await.unwrap();
    assert_eq!(mark.survivors(), Vec::<String>::new());
}
