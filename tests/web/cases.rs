//! The end-to-end cases, the same for both apps (`main.rs` runs each against each app).
//! Every refusal sits beside the same request succeeding for the one it is meant for.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Harness, WEBHOOK_SECRET};

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

pub async fn health_and_missing_or_bad_tokens_are_401(h: &Harness) {
    let (status, body) = h.call(Method::GET, "/health", None, None, &[]).await;
    assert_eq!((status, body), (OK, json!({"status": "ok"})));
    let (status, body) = h.call(Method::GET, "/api/projects", None, None, &[]).await;
    assert_eq!((status.as_u16(), code(&body)), (401, "missing_token"));
    let (status, body) = h.get("/api/projects", "not-a-token").await;
    assert_eq!((status.as_u16(), code(&body)), (401, "malformed_token"));
    // The __session cookie works where there is no Authorization header.
    let token = h.token("user_alice", None).await;
    let cookie = format!("__session={token}");
    let (status, body) = h
        .call(
            Method::GET,
            "/api/me/organizations",
            None,
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(status, OK, "{body}");
    assert_eq!(body["user_id"], "user_alice");
}

pub async fn each_organization_sees_only_its_own_projects(h: &Harness) {
    let (_, alice) = h.onboard("user_alice", "Acme").await;
    let (_, bob) = h.onboard("user_bob", "Globex").await;
    h.project(&alice, "Rocket skates").await;
    h.project(&alice, "Giant magnet").await;
    h.project(&bob, "Doomsday device").await;
    assert_eq!(
        h.project_names(&alice).await,
        ["Rocket skates", "Giant magnet"]
    );
    assert_eq!(h.project_names(&bob).await, ["Doomsday device"]);
}

pub async fn a_tampered_or_expired_token_is_401(h: &Harness) {
    let (_, alice) = h.onboard("user_alice", "Acme").await;
    assert_eq!(h.get("/api/projects", &alice).await.0, OK);
    // Swap the payload for one naming bob; the signature no longer matches.
    let parts: Vec<&str> = alice.split('.').collect();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("user_bob");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(claims.to_string()),
        parts[2]
    );
    let (status, body) = h.get("/api/projects", &forged).await;
    assert_eq!((status.as_u16(), code(&body)), (401, "bad_signature"));
    // The same claims, expired a minute ago, signed by the right key.
    let mut expired = h.claims("user_alice", None, -60);
    expired["nbf"] = json!(shared_now() - 120);
    let (status, body) = h.get("/api/me/organizations", &h.sign(&expired)).await;
    assert_eq!((status.as_u16(), code(&body)), (401, "token_expired"));
}

fn shared_now() -> i64 {
    crate::shared::unix_now()
}

pub async fn another_organizations_project_id_is_404(h: &Harness) {
    let (_, alice) = h.onboard("user_alice", "Acme").await;
    let (_, bob) = h.onboard("user_bob", "Globex").await;
    let id = h.project(&alice, "Rocket skates").await;
    let path = format!("/api/projects/{id}");
    assert_eq!(h.get(&path, &alice).await.0, OK);
    let (status, body) = h.get(&path, &bob).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"));
    // Bob is an owner, so the delete passes the role check and still finds nothing.
    assert_eq!(h.delete(&path, &bob).await.0.as_u16(), 404);
    assert_eq!(h.get(&path, &alice).await.0, OK);
}

pub async fn an_organization_id_in_body_query_or_header_never_widens_access(h: &Harness) {
    let (acme, alice) = h.onboard("user_alice", "Acme").await;
    let (globex, bob) = h.onboard("user_bob", "Globex").await;
    h.project(&bob, "Doomsday device").await;
    let globex_uuid = pg_tenancy::OrgId::from_external_id(&globex).to_string();
    let smuggle = [
        ("x-org-id", globex_uuid.as_str()),
        ("x-organization-id", globex.as_str()),
    ];
    let query = format!("?org_id={globex_uuid}&organization_id={globex}");
    let body = json!({ "name": "Smuggled", "organization_id": globex_uuid, "org_id": globex });
    let (status, made) = h
        .call(
            Method::POST,
            &format!("/api/projects{query}"),
            Some(&alice),
            Some(&body),
            &smuggle,
        )
        .await;
    assert_eq!(status, CREATED, "{made}");
    let (status, list) = h
        .call(
            Method::GET,
            &format!("/api/projects{query}"),
            Some(&alice),
            None,
            &smuggle,
        )
        .await;
    assert_eq!(status, OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Smuggled"], "alice sees Acme's project only");
    assert_eq!(h.project_names(&bob).await, ["Doomsday device"]);
    let _ = acme;
}

pub async fn a_member_cannot_do_admin_actions(h: &Harness) {
    let (acme, alice) = h.onboard("user_alice", "Acme").await;
    let (status, _) = h
        .post(
            "/api/members",
            &alice,
            json!({"user_id": "user_carol", "role": "member"}),
        )
        .await;
    assert_eq!(status, CREATED);
    let carol = h.token("user_carol", Some(&acme)).await;
    let id = h.project(&alice, "Rocket skates").await;
    // Members read and create.
    assert_eq!(h.get(&format!("/api/projects/{id}"), &carol).await.0, OK);
    h.project(&carol, "Carol's").await;
    assert_eq!(h.get("/api/members", &carol).await.0, OK);
    // Admin actions: 403 each.
    for (method, path, body) in [
        (Method::DELETE, format!("/api/projects/{id}"), None),
        (
            Method::POST,
            "/api/members".to_owned(),
            Some(json!({"user_id": "user_dave", "role": "member"})),
        ),
        (Method::DELETE, "/api/members/user_alice".to_owned(), None),
    ] {
        let (status, answer) = h
            .call(method.clone(), &path, Some(&carol), body.as_ref(), &[])
            .await;
        assert_eq!(
            (status.as_u16(), code(&answer)),
            (403, "insufficient_role"),
            "{method} {path}"
        );
    }
    // The same actions by the owner succeed.
    assert_eq!(h.delete(&format!("/api/projects/{id}"), &alice).await.0, OK);
}

pub async fn an_admin_cannot_grant_owner(h: &Harness) {
    let (acme, alice) = h.onboard("user_alice", "Acme").await;
    let add = |user: &str, role: &str| json!({"user_id": user, "role": role});
    assert_eq!(
        h.post("/api/members", &alice, add("user_dave", "admin"))
            .await
            .0,
        CREATED
    );
    let dave = h.token("user_dave", Some(&acme)).await;
    let (status, body) = h
        .post("/api/members", &dave, add("user_erin", "owner"))
        .await;
    assert_eq!((status.as_u16(), code(&body)), (403, "insufficient_role"));
    assert_eq!(
        h.post("/api/members", &dave, add("user_erin", "member"))
            .await
            .0,
        CREATED
    );
    // The owner may.
    assert_eq!(
        h.post("/api/members", &alice, add("user_fay", "owner"))
            .await
            .0,
        CREATED
    );
    // A member may not even add a member.
    let erin = h.token("user_erin", Some(&acme)).await;
    let (status, _) = h
        .post("/api/members", &erin, add("user_gus", "member"))
        .await;
    assert_eq!(status.as_u16(), 403);
}

pub async fn switching_to_an_organization_the_user_is_not_in_is_refused(h: &Harness) {
    let (_, alice) = h.onboard("user_alice", "Acme").await;
    let (globex, _bob) = h.onboard("user_bob", "Globex").await;
    // The issuer (like Clerk) will not make it active...
    let body = json!({"user_id": "user_alice", "org_id": globex});
    let (status, answer) = h
        .call(Method::POST, "/dev/token", None, Some(&body), &[])
        .await;
    assert_eq!((status.as_u16(), code(&answer)), (403, "not_a_member"));
    // ...and a validly signed token naming it without a membership claim gets nowhere.
    let mut claims = h.claims("user_alice", None, 60);
    claims["o"] = json!({ "id": globex });
    let (status, answer) = h.get("/api/projects", &h.sign(&claims)).await;
    assert_eq!((status.as_u16(), code(&answer)), (403, "not_a_member"));
    assert_eq!(h.get("/api/projects", &alice).await.0, OK);
}

pub async fn a_session_without_an_organization_gets_onboarding_answers(h: &Harness) {
    let personal = h.token("user_zoe", None).await;
    let (status, body) = h.get("/api/projects", &personal).await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (403, "no_active_organization")
    );
    let (status, body) = h.get("/api/me/organizations", &personal).await;
    assert_eq!(status, OK);
    assert_eq!(body["organizations"], json!([]));
    h.onboard("user_zoe", "Zoe's").await;
    let (_, body) = h.get("/api/me/organizations", &personal).await;
    assert_eq!(body["organizations"][0]["name"], "Zoe's");
    assert_eq!(body["organizations"][0]["role"], "owner");
}

pub async fn malformed_ids_and_bodies_are_refused_in_json(h: &Harness) {
    let (_, alice) = h.onboard("user_alice", "Acme").await;
    for (method, path, body, status, error) in [
        (
            Method::GET,
            "/api/projects/not-a-uuid",
            None,
            400,
            "bad_request",
        ),
        (
            Method::DELETE,
            "/api/projects/1%27%20OR%201=1",
            None,
            400,
            "bad_request",
        ),
        // JSON of the wrong shape.
        (
            Method::POST,
            "/api/projects",
            Some(json!("a string")),
            422,
            "invalid_body",
        ),
        (
            Method::POST,
            "/api/projects",
            Some(json!({"title": "no name"})),
            422,
            "invalid_body",
        ),
        // The right shape, values the API refuses.
        (
            Method::POST,
            "/api/projects",
            Some(json!({"name": ""})),
            400,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/members",
            Some(json!({"user_id": "a'b", "role": "member"})),
            400,
            "invalid_user_id",
        ),
        (
            Method::POST,
            "/api/members",
            Some(json!({"user_id": "user_x", "role": "god"})),
            400,
            "invalid_role",
        ),
        (
            Method::POST,
            "/api/organizations",
            Some(json!({"name": "X", "slug": "Bad Slug"})),
            400,
            "bad_request",
        ),
    ] {
        let (got, answer) = h
            .call(method.clone(), path, Some(&alice), body.as_ref(), &[])
            .await;
        assert_eq!(
            (got.as_u16(), code(&answer)),
            (status, error),
            "{method} {path} {body:?}: {answer}"
        );
        assert!(answer["message"].is_string(), "{answer}");
    }
    // Bodies that are not JSON of any shape: cut short, not UTF-8, without the JSON content
    // type, over the 2 MiB limit; and a NUL byte in a name, which the database refuses.
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(3 << 20));
    let json = Some("application/json");
    for (body, content_type, status, error) in [
        (&b"{"[..], json, 400, "malformed_body"),
        (b"{\"name\": \"\xff\xfe\"}", json, 400, "malformed_body"),
        (b"{\"name\": \"ok\"}", None, 415, "unsupported_media_type"),
        (
            b"{\"name\": \"ok\"}",
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (big.as_bytes(), json, 413, "payload_too_large"),
        (b"{\"name\": \"a\\u0000b\"}", json, 400, "bad_request"),
    ] {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/projects", h.base))
            .bearer_auth(&alice)
            .body(body.to_vec());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        assert_eq!(
            (got, code(&answer)),
            (status, error),
            "{shown} {content_type:?}: {answer}"
        );
    }
    assert!(h.project_names(&alice).await.is_empty(), "nothing written");
    // A token that is not UTF-8 (bytes a header may carry) is a 401.
    let response = reqwest::Client::new()
        .get(format!("{}/api/projects", h.base))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

fn clerk_event(kind: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/data/clerk-events/{kind}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A membership event for `user` in organization `org` (Clerk ids), with fresh membership id.
fn membership_created(org: &str, user: &str, role: &str) -> Vec<u8> {
    let mut event = clerk_event("organizationMembership.created");
    event["data"]["id"] = json!(format!("orgmem_{user}"));
    event["data"]["role"] = json!(role);
    event["data"]["organization"]["id"] = json!(org);
    event["data"]["organization"]["slug"] = json!(org.to_lowercase().replace('_', "-"));
    event["data"]["public_user_data"]["user_id"] = json!(user);
    event.to_string().into_bytes()
}

pub async fn a_webhook_creates_a_membership_that_then_works_and_a_replay_changes_nothing(
    h: &Harness,
) {
    let body = membership_created("org_hooli", "user_hank", "org:admin");
    let (status, answer) = h.webhook("msg_1", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, OK, "{answer}");
    assert_eq!(answer["outcome"], "Applied");
    let hank = h.token("user_hank", Some("org_hooli")).await;
    let id = h.project(&hank, "Pied Piper").await;
    assert_eq!(h.project_names(&hank).await, ["Pied Piper"]);
    // Admin, as the event said: may delete.
    assert_eq!(h.get("/api/members", &hank).await.0, OK);
    // The same delivery again: 200, nothing changed.
    let (status, answer) = h.webhook("msg_1", &body, WEBHOOK_SECRET).await;
    assert_eq!(
        (status, answer["outcome"].clone()),
        (OK, json!("Duplicate"))
    );
    let (_, members) = h.get("/api/members", &hank).await;
    assert_eq!(members, json!([{"user_id": "user_hank", "role": "admin"}]));
    assert_eq!(h.delete(&format!("/api/projects/{id}"), &hank).await.0, OK);
}

pub async fn a_forged_webhook_is_400_and_writes_nothing(h: &Harness) {
    let body = membership_created("org_initech", "user_ivan", "org:admin");
    let (status, answer) = h
        .webhook(
            "msg_forged",
            &body,
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .await;
    assert_eq!((status.as_u16(), code(&answer)), (400, "invalid_webhook"));
    let ivan = h.token("user_ivan", None).await;
    let (_, mine) = h.get("/api/me/organizations", &ivan).await;
    assert_eq!(mine["organizations"], json!([]), "nothing written");
    // The same body, signed: applied.
    let (status, _) = h.webhook("msg_real", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, OK);
    let (_, mine) = h.get("/api/me/organizations", &ivan).await;
    assert_eq!(mine["organizations"][0]["external_id"], "org_initech");
}

pub async fn an_oversized_webhook_is_413(h: &Harness) {
    let mut body = membership_created("org_big", "user_big", "org:member");
    body.pop();
    body.extend(std::iter::repeat_n(b' ', 1024 * 1024));
    body.push(b'}');
    let (status, answer) = h.webhook("msg_big", &body, WEBHOOK_SECRET).await;
    assert_eq!((status.as_u16(), code(&answer)), (413, "payload_too_large"));
    // Just under the limit (and signed) goes through.
    let mut body = membership_created("org_big", "user_big", "org:member");
    let pad = 1024 * 1024 - body.len();
    body.pop();
    body.extend(std::iter::repeat_n(b' ', pad));
    body.push(b'}');
    assert_eq!(body.len(), 1024 * 1024);
    assert_eq!(h.webhook("msg_big2", &body, WEBHOOK_SECRET).await.0, OK);
}

pub async fn a_membership_the_token_claims_before_the_webhook_is_applied_unless_removed_since(
    h: &Harness,
) {
    let (acme, alice) = h.onboard("user_alice", "Acme").await;
    // Clerk added jack a moment ago; the webhook has not arrived. His token says so.
    let jack = h.sign(&h.claims("user_jack", Some((&acme, "member")), 60));
    assert_eq!(h.project_names(&jack).await, Vec::<String>::new());
    let (_, members) = h.get("/api/members", &alice).await;
    assert!(
        members
            .as_array()
            .unwrap()
            .contains(&json!({"user_id": "user_jack", "role": "member"}))
    );
    // A token cannot make an owner: an "owner" claim lands as admin at most.
    let kim = h.sign(&h.claims("user_kim", Some((&acme, "owner")), 60));
    assert_eq!(h.get("/api/projects", &kim).await.0, OK);
    let (_, members) = h.get("/api/members", &alice).await;
    let kim_role = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "user_kim")
        .unwrap()["role"]
        .clone();
    assert_eq!(kim_role, "member", "an unknown role key maps to member");
    // Removed after the token was issued: the same token no longer gets in.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(h.delete("/api/members/user_jack", &alice).await.0, OK);
    let (status, body) = h.get("/api/projects", &jack).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "not_a_member"));
    // Nor does a token issued after it: Clerk still lists jack, but a removal made in the
    // application stands until Clerk confirms a newer membership (docs/web.md, "Where
    // membership truth lives").
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = h.sign(&h.claims("user_jack", Some((&acme, "member")), 60));
    let (status, body) = h.get("/api/projects", &again).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "not_a_member"));
    // Positive control: kim, claimed the same way and not removed, still gets in.
    assert_eq!(h.get("/api/projects", &kim).await.0, OK);
}

/// A role event for `key` granting `permissions` (ids derived from the keys), at `version`.
fn role_event(key: &str, permissions: &[&str], version: i64) -> Vec<u8> {
    let mut event = clerk_event("role.updated");
    event["data"]["id"] = json!(format!("role_{}", key.replace(':', "_")));
    event["data"]["key"] = json!(key);
    event["data"]["updated_at"] = json!(version);
    event["data"]["permissions"] = permissions
        .iter()
        .map(|p| {
            json!({"object": "permission", "id": format!("perm_{}", p.replace(':', "_")),
                   "name": p, "key": p, "description": null, "type": "custom",
                   "created_at": 1, "updated_at": 1})
        })
        .collect();
    event.to_string().into_bytes()
}

/// `POST /api/invoices` needs `org:invoices:write`, checked twice: the application reads the
/// token's permissions (Clerk's v2 encoding), the table's policy the role's as the database
/// holds them at the write. Allowed for the role that grants it; refused 403 for a member
/// whose role does not (after one lookup); and refused 403 by the database, with the same
/// token, once a role event has taken the permission away. Every member reads.
pub async fn a_permission_guards_invoice_writes_and_follows_the_role_by_webhook(h: &Harness) {
    let org = "org_initech";
    for (id, body) in [
        (
            "msg_role",
            role_event("org:billing", &["org:invoices:write"], 10),
        ),
        (
            "msg_m1",
            membership_created(org, "user_bill", "org:billing"),
        ),
        (
            "msg_m2",
            membership_created(org, "user_milton", "org:member"),
        ),
    ] {
        let (status, answer) = h.webhook(id, &body, WEBHOOK_SECRET).await;
        assert_eq!((status, answer["outcome"].clone()), (OK, json!("Applied")));
    }
    // A token as Clerk issues it: the organization's feature `invoices`, permission `write`.
    let token = |user: &str, role: &str, fpm: &str| {
        let mut claims = h.claims(user, Some((org, role)), 600);
        claims["fea"] = json!("o:invoices");
        claims["o"]["per"] = json!("write");
        claims["o"]["fpm"] = json!(fpm);
        h.sign(&claims)
    };
    let (bill, milton) = (
        token("user_bill", "billing", "1"),
        token("user_milton", "member", "0"),
    );
    let invoice = json!({"number": "INV-1", "amount_cents": 1200});
    let (status, body) = h.post("/api/invoices", &bill, invoice.clone()).await;
    assert_eq!(status, CREATED, "{body}");
    let (status, body) = h.post("/api/invoices", &milton, invoice.clone()).await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (403, "missing_permission"),
        "{body}"
    );
    // A token stating the permission for a role that does not grant it: the application's
    // check passes, the database's refuses.
    let claims_it = token("user_milton", "member", "1");
    let (status, body) = h.post("/api/invoices", &claims_it, invoice.clone()).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "forbidden"), "{body}");
    // Every member reads.
    let (status, list) = h.get("/api/invoices", &milton).await;
    assert_eq!(status, OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // The role loses the permission: bill's token still states it, the database refuses.
    let (status, _) = h
        .webhook(
            "msg_role2",
            &role_event("org:billing", &[], 11),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(status, OK);
    let (status, body) = h.post("/api/invoices", &bill, invoice.clone()).await;
    assert_eq!((status.as_u16(), code(&body)), (403, "forbidden"), "{body}");
    // And gets it back: the same token writes again.
    let (status, _) = h
        .webhook(
            "msg_role3",
            &role_event("org:billing", &["org:invoices:write"], 12),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(status, OK);
    let (status, body) = h.post("/api/invoices", &bill, invoice).await;
    assert_eq!(status, CREATED, "{body}");
    let (_, list) = h.get("/api/invoices", &milton).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}
