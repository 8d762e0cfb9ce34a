//! People over the real HTTP router and a real core (R-AUTH-2..6, R-AUTH-8,
//! R-AUTH-13): first-run setup, password accounts, sessions, rate limits.

use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};
use zafe_core::secret::SecretKey;
use zafe_server::Config;

const ADMIN: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-passphrase-for-tests";
const ALICE: &str = "alice@example.com";
const ALICE_PASSWORD: &str = "alice-has-a-long-passphrase";

/// [`people_config`]; client addresses come from X-Forwarded-For in these tests.
fn config() -> Config {
    Config {
        trusted_proxies: behind_proxy().trusted_proxies,
        ..people_config()
    }
}

/// A server whose first administrator exists; returns their access token.
async fn with_admin(config: Config) -> (Harness, String, String) {
    let (h, root) = auto_unsealed(config).await;
    let admin = first_admin(&h, ADMIN, ADMIN_PASSWORD).await;
    (h, root, admin)
}

async fn login_from(h: &Harness, ip: &str, email: &str, password: &str) -> Answer {
    h.call_from(
        ip,
        "POST",
        "/v1/auth/user/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

async fn login(h: &Harness, email: &str, password: &str) -> (String, String) {
    let a = login_from(h, "192.0.2.10", email, password).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    (
        a.json["auth"]["client_token"].as_str().unwrap().to_string(),
        a.json["auth"]["refresh_token"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

async fn create_alice(h: &Harness, admin: &str) -> String {
    create_user(
        h,
        admin,
        json!({"email": ALICE, "password": ALICE_PASSWORD, "display_name": "Alice"}),
    )
    .await
}

async fn status_with(h: &Harness, token: &str) -> StatusCode {
    h.call("GET", "/v1/auth/user/self", Some(token), None)
        .await
        .status
}

async fn refresh(h: &Harness, refresh_token: &str) -> Answer {
    h.call(
        "POST",
        "/v1/auth/user/refresh",
        None,
        Some(json!({ "refresh_token": refresh_token })),
    )
    .await
}

fn refused() -> Value {
    json!({"errors": ["invalid email or password"]})
}

// R-AUTH-13: the link creates exactly one administrator, once; the
// administrator's session carries root; no default credentials exist.
#[tokio::test]
async fn the_setup_link_creates_the_first_admin_once() {
    let (h, _root) = auto_unsealed(config()).await;
    let a = h.call("GET", "/v1/sys/setup", None, None).await;
    assert_eq!(a.json, json!({"setup_required": true}));
    // Nothing logs in before setup: there are no default credentials.
    for (email, password) in [("admin", "admin"), ("admin@localhost", "admin-admin-admin")] {
        let a = login_from(&h, "192.0.2.1", email, password).await;
        assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    }
    let token = setup_token(&h).await;
    assert!(token.starts_with("zafe_su_"));
    let body = |token: &str| json!({"token": token, "email": ADMIN, "password": ADMIN_PASSWORD});
    let forged = zafe_core::token::generate(zafe_core::token::TokenKind::Setup);
    for bad in [forged.as_str(), "zafe_su_nope", ""] {
        let a = h.call("POST", "/v1/sys/setup", None, Some(body(bad))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            a.json["errors"][0],
            "the setup token is invalid, expired or already used"
        );
    }
    // A weak password is refused and does not use the link up.
    let a = h
        .call(
            "POST",
            "/v1/sys/setup",
            None,
            Some(json!({"token": token, "email": ADMIN, "password": "password1234"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    let a = h
        .call("POST", "/v1/sys/setup", None, Some(body(&token)))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let auth = &a.json["auth"];
    let access = auth["client_token"].as_str().unwrap();
    assert!(access.starts_with("zafe_at_"));
    assert!(
        auth["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("zafe_rt_")
    );
    assert_eq!(auth["policies"], json!(["root"]));
    assert_eq!(auth["lease_duration"], 900);
    // The administrator may do what root may.
    let a = h
        .call(
            "POST",
            "/v1/secret/data/app",
            Some(access),
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    // A session cannot mint tokens (R-AUTH-4/6): they would outlive logout,
    // password change and disabling, and an administrator's session would
    // mint non-expiring root tokens. Every creation endpoint refuses.
    for path in [
        "/v1/auth/token/create",
        "/v1/auth/token/create-orphan",
        "/v1/auth/token/create/some-role",
    ] {
        let a = h
            .call(
                "POST",
                path,
                Some(access),
                Some(json!({"policies": ["default"], "ttl": "1h"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.json);
        assert!(
            a.json["errors"][0]
                .as_str()
                .unwrap()
                .contains("session cannot create tokens"),
            "{}",
            a.json
        );
    }
    assert_eq!(
        h.call("GET", "/v1/sys/users", Some(access), None)
            .await
            .json["data"]["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Single use, and no new link once an account exists.
    let a = h
        .call("POST", "/v1/sys/setup", None, Some(body(&token)))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call("GET", "/v1/sys/setup", None, None).await.json,
        json!({"setup_required": false})
    );
    assert!(
        zafe_server::people::setup::new_setup_token(&h.core)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_setup_link_expires() {
    let mut c = config();
    // Three seconds: the fresh link made below must still be usable on a
    // loaded machine; expiry is checked in whole seconds, so wait past the
    // next boundary.
    c.auth.sessions.setup_token_ttl_secs = 3;
    let (h, _) = auto_unsealed(c).await;
    let token = setup_token(&h).await;
    h.clock.advance(Duration::from_millis(4100));
    let a = h
        .call(
            "POST",
            "/v1/sys/setup",
            None,
            Some(json!({"token": token, "email": ADMIN, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call("GET", "/v1/sys/setup", None, None).await.json,
        json!({"setup_required": true})
    );
    // A new link (a restart makes one) replaces it and works.
    let fresh = setup_token(&h).await;
    let a = h
        .call(
            "POST",
            "/v1/sys/setup",
            None,
            Some(json!({"token": fresh, "email": ADMIN, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}

// Two setups racing with the same link: exactly one administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_setups_create_exactly_one_admin() {
    for _round in 0..3 {
        let (h, root) = auto_unsealed(config()).await;
        let token = setup_token(&h).await;
        let h = std::sync::Arc::new(h);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let h = h.clone();
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                h.call(
                    "POST",
                    "/v1/sys/setup",
                    None,
                    Some(json!({"token": token, "email": format!("admin{i}@example.com"), "password": ADMIN_PASSWORD})),
                )
                .await
                .status
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let status = t.await.unwrap();
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{status}"
            );
            ok += usize::from(status == StatusCode::OK);
        }
        assert_eq!(ok, 1);
        let a = h.call("GET", "/v1/sys/users", Some(&root), None).await;
        assert_eq!(a.json["data"]["keys"].as_array().unwrap().len(), 1);
    }
}

// R-AUTH-4, R-AUTH-6: refresh rotates both tokens; the old ones die; logout
// ends the session.
#[tokio::test]
async fn refresh_rotates_both_tokens_and_logout_ends_the_session() {
    let (h, _root, admin) = with_admin(config()).await;
    create_alice(&h, &admin).await;
    let (access1, refresh1) = login(&h, ALICE, ALICE_PASSWORD).await;
    let a = h
        .call("GET", "/v1/auth/user/self", Some(&access1), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["data"]["email"], ALICE);
    assert!(a.json["data"].get("password_hash").is_none());
    // Not an administrator: no policies, so no secrets and no sudo routes.
    // (A KV path is about project `app`, of which she is no member: 404,
    // as for a project that does not exist; see roles_api.rs.)
    assert_eq!(
        h.call("GET", "/v1/secret/data/app", Some(&access1), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("GET", "/v1/sys/users", Some(&access1), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let a = refresh(&h, &refresh1).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let access2 = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let refresh2 = a.json["auth"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(access1, access2);
    assert_ne!(refresh1, refresh2);
    assert_eq!(status_with(&h, &access1).await, StatusCode::FORBIDDEN);
    assert_eq!(status_with(&h, &access2).await, StatusCode::OK);

    // No policy, not even `default`, for someone without roles or grants.
    assert_eq!(
        h.call("GET", "/v1/auth/token/lookup-self", Some(&access2), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let a = h
        .call("POST", "/v1/auth/user/logout", Some(&access2), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(status_with(&h, &access2).await, StatusCode::FORBIDDEN);
    assert_eq!(refresh(&h, &refresh2).await.status, StatusCode::BAD_REQUEST);
    // Vault clients see a sensible lookup-self, and `vault token revoke
    // -self` with a session ends the session (an administrator's here).
    let (access3, refresh3) = login(&h, ADMIN, ADMIN_PASSWORD).await;
    let a = h
        .call("GET", "/v1/auth/token/lookup-self", Some(&access3), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["data"]["display_name"], format!("user-{ADMIN}"));
    assert!(a.json["data"]["ttl"].as_i64().unwrap() > 800);
    let a = h
        .call("POST", "/v1/auth/token/revoke-self", Some(&access3), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(status_with(&h, &access3).await, StatusCode::FORBIDDEN);
    assert_eq!(refresh(&h, &refresh3).await.status, StatusCode::BAD_REQUEST);
    // A Vault-style token cannot log out a session it does not have.
    assert_eq!(
        h.call("POST", "/v1/auth/user/logout", Some(&_root), None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn access_tokens_expire() {
    let mut c = config();
    // Three seconds: long enough that a loaded machine still uses the token
    // once before it expires, short enough for a test.
    c.auth.sessions.access_ttl_secs = 3;
    let (h, _root, admin) = with_admin(c).await;
    create_alice(&h, &admin).await;
    let (access, refresh_token) = login(&h, ALICE, ALICE_PASSWORD).await;
    assert_eq!(status_with(&h, &access).await, StatusCode::OK);
    // Expiry is checked in whole seconds: move past the next boundary.
    h.clock.advance(Duration::from_millis(4100));
    assert_eq!(status_with(&h, &access).await, StatusCode::FORBIDDEN);
    let a = refresh(&h, &refresh_token).await;
    assert_eq!(a.status, StatusCode::OK);
    let fresh = a.json["auth"]["client_token"].as_str().unwrap();
    assert_eq!(status_with(&h, fresh).await, StatusCode::OK);
}

// R-AUTH-4 (+): a rotated refresh token used again revokes the whole family,
// including the access token the legitimate refresh produced, and the
// audit log says so without holding any token in the clear.
#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family() {
    let (h, root, admin) = with_admin(config()).await;
    create_alice(&h, &admin).await;
    let (access1, refresh1) = login(&h, ALICE, ALICE_PASSWORD).await;
    let (other_access, _) = login(&h, ALICE, ALICE_PASSWORD).await;
    let a = refresh(&h, &refresh1).await;
    let access2 = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let refresh2 = a.json["auth"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    // The thief replays the old refresh token.
    let a = refresh(&h, &refresh1).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["errors"][0].as_str().unwrap().contains("re-use"),
        "{}",
        a.json
    );
    assert_eq!(status_with(&h, &access2).await, StatusCode::FORBIDDEN);
    assert_eq!(refresh(&h, &refresh2).await.status, StatusCode::BAD_REQUEST);
    // Another session of the same person is not touched.
    assert_eq!(status_with(&h, &other_access).await, StatusCode::OK);

    let a = h
        .call("GET", "/v1/sys/audit-log/export", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let text = match &a.json {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert!(
        text.lines()
            .any(|l| l.contains("auth/user/refresh") && l.contains("re-use detected")),
        "the re-use is audited"
    );
    for secret in [
        &access1,
        &refresh1,
        &access2,
        &refresh2,
        &admin,
        &other_access,
    ] {
        assert!(!text.contains(secret.as_str()), "a token in the audit log");
    }
    assert!(!text.contains(ALICE_PASSWORD) && !text.contains(ADMIN_PASSWORD));
}

// R-AUTH-4: an access token counts only while its family exists and names
// it as the current access token. A revocation racing a refresh could leave
// the refreshed access token's record behind without a family; that record
// must not authenticate. Simulated deterministically by removing the family
// (as a revocation that missed the record would) and by pointing the family
// at another access token; a revocation after a refresh kills the new token.
#[tokio::test]
async fn an_access_token_without_its_family_does_not_authenticate() {
    let (h, _root, admin) = with_admin(config()).await;
    create_alice(&h, &admin).await;
    let barrier = &h.core.barrier;
    let before = barrier.list("sys/people/family/", "", 100).await.unwrap();
    let (access, _) = login(&h, ALICE, ALICE_PASSWORD).await;
    let session_id = barrier
        .list("sys/people/family/", "", 100)
        .await
        .unwrap()
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the new session's family");
    assert_eq!(status_with(&h, &access).await, StatusCode::OK);
    let family_key = format!("sys/people/family/{session_id}");
    let record = barrier.get(&family_key).await.unwrap().unwrap();

    // The family names another access token: this one is dead.
    let mut family: Value = serde_json::from_slice(&record.value).unwrap();
    family["access_hash"] = json!("0".repeat(64));
    barrier
        .put(
            &family_key,
            &serde_json::to_vec(&family).unwrap(),
            zafe_server::barrier::Expect::Generation(record.generation),
        )
        .await
        .unwrap();
    assert_eq!(status_with(&h, &access).await, StatusCode::FORBIDDEN);

    // No family at all (the access record is still there): dead too.
    barrier.delete(&family_key).await.unwrap();
    assert_eq!(status_with(&h, &access).await, StatusCode::FORBIDDEN);

    // Refresh, then log out with the refreshed token: it dies, as does the
    // refresh token.
    let (_, refresh1) = login(&h, ALICE, ALICE_PASSWORD).await;
    let a = refresh(&h, &refresh1).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let access2 = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let refresh2 = a.json["auth"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(status_with(&h, &access2).await, StatusCode::OK);
    let a = h
        .call("POST", "/v1/auth/user/logout", Some(&access2), None)
        .await;
    assert!(a.status.is_success(), "{}", a.json);
    assert_eq!(status_with(&h, &access2).await, StatusCode::FORBIDDEN);
    assert_eq!(refresh(&h, &refresh2).await.status, StatusCode::BAD_REQUEST);
}

// R-AUTH-6 (CP): changing a password ends every other session.
#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let (h, _root, admin) = with_admin(config()).await;
    create_alice(&h, &admin).await;
    let (laptop, _) = login(&h, ALICE, ALICE_PASSWORD).await;
    let (phone, phone_refresh) = login(&h, ALICE, ALICE_PASSWORD).await;
    let a = h
        .call("GET", "/v1/auth/user/sessions", Some(&laptop), None)
        .await;
    assert_eq!(a.json["data"]["sessions"].as_array().unwrap().len(), 2);

    let new_password = "a-new-and-longer-passphrase";
    let a = h
        .call(
            "POST",
            "/v1/auth/user/password",
            Some(&laptop),
            Some(json!({"current_password": "wrong-password-here", "new_password": new_password})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(status_with(&h, &phone).await, StatusCode::OK);
    let a = h
        .call(
            "POST",
            "/v1/auth/user/password",
            Some(&laptop),
            Some(json!({"current_password": ALICE_PASSWORD, "new_password": new_password})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["data"]["sessions_ended"], 1);
    assert_eq!(status_with(&h, &laptop).await, StatusCode::OK);
    assert_eq!(status_with(&h, &phone).await, StatusCode::FORBIDDEN);
    assert_eq!(
        refresh(&h, &phone_refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    let a = login_from(&h, "192.0.2.10", ALICE, ALICE_PASSWORD).await;
    assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    login(&h, ALICE, new_password).await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// R-AUTH-3: an unknown account and a wrong password cannot be told apart,
// by answer or by time (lessons.md: 248 ms against 2 ms). Samples are
// interleaved so load on the machine hits both sides alike.
#[tokio::test]
async fn unknown_users_and_wrong_passwords_take_the_same_time() {
    let mut c = config();
    // Costly enough that Argon2 dominates, as it does in production.
    c.auth.password.m_cost = 4096;
    c.auth.password.t_cost = 2;
    let (h, _root, admin) = with_admin(c).await;
    create_alice(&h, &admin).await;
    // Warm-up: the dummy hash is made on first use.
    login_from(&h, "192.0.2.1", "nobody@example.com", "whatever-password").await;
    login_from(&h, "192.0.2.1", ALICE, "wrong-password-1").await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let t = Instant::now();
        let a = login_from(
            &h,
            "192.0.2.1",
            &format!("nobody{i}@example.com"),
            "some-wrong-password",
        )
        .await;
        unknown.push(t.elapsed());
        assert_eq!((a.status, &a.json), (StatusCode::BAD_REQUEST, &refused()));
        let t = Instant::now();
        let a = login_from(&h, "192.0.2.1", ALICE, "some-wrong-password").await;
        wrong.push(t.elapsed());
        assert_eq!((a.status, &a.json), (StatusCode::BAD_REQUEST, &refused()));
    }
    let (u, w) = (median(unknown), median(wrong));
    let gap = u.abs_diff(w).as_secs_f64() / u.max(w).as_secs_f64();
    eprintln!("median login time: unknown account {u:?}, wrong password {w:?}");
    assert!(gap < 0.10, "unknown {u:?} vs wrong password {w:?}");
    // And the work is real Argon2, not a shortcut for both.
    assert!(u > Duration::from_millis(2), "{u:?}");
    // A disabled account answers the same way.
    let a = h
        .call(
            "POST",
            &format!("/v1/sys/users/{ALICE}"),
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = login_from(&h, "192.0.2.1", ALICE, ALICE_PASSWORD).await;
    assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
}

// R-AUTH-3: a credential-stuffing flood engages the limits (even the right
// password is refused from the attackers' addresses, with the same answer),
// and the account's owner can still log in from their own address; a new
// address gets in after a bounded wait once the flood stops.
#[tokio::test]
async fn credential_stuffing_is_limited_without_locking_the_owner_out() {
    let mut c = config();
    c.auth.password.per_ip_per_minute = 20;
    c.auth.password.per_account_per_minute = 30;
    c.auth.password.backoff_after_failures = 3;
    c.auth.password.max_backoff_secs = 2;
    let (h, _root, admin) = with_admin(c).await;
    create_alice(&h, &admin).await;
    let owner = "198.51.100.7";
    login_from(&h, owner, ALICE, ALICE_PASSWORD).await;

    // One attacker address: back-off, then the per-address limit.
    for _ in 0..25 {
        let a = login_from(&h, "203.0.113.1", ALICE, "guess-guess-guess").await;
        assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    }
    let a = login_from(&h, "203.0.113.1", ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        (a.status, a.json),
        (StatusCode::BAD_REQUEST, refused()),
        "the limit engaged: even the right password is refused from there"
    );
    // Many attacker addresses: the account's own limit engages.
    for i in 2..60u8 {
        login_from(&h, &format!("203.0.113.{i}"), ALICE, "guess-guess-guess").await;
    }
    let a = login_from(&h, "203.0.113.200", ALICE, ALICE_PASSWORD).await;
    assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    // The owner, from their usual address, is not locked out.
    let a = login_from(&h, owner, ALICE, ALICE_PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    // Another account from a clean address is unaffected.
    let a = login_from(&h, "192.0.2.77", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    // Once the flood stops, a new address waits at most one refill of the
    // account's limit (2 s), and the attacker's address one refill of the
    // address limit (3 s): the back-off is capped, it does not grow forever.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let a = login_from(&h, "192.0.2.50", ALICE, ALICE_PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = login_from(&h, "203.0.113.1", ALICE, ALICE_PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}

// Admin user management (sudo only), the last-administrator guard,
// disabling, and the password policy.
#[tokio::test]
async fn administrators_manage_accounts() {
    let (h, root, admin) = with_admin(config()).await;
    let alice_id = create_alice(&h, &admin).await;
    let (alice, _) = login(&h, ALICE, ALICE_PASSWORD).await;
    // Taken email, bad email, weak password, root policy: clear 400s.
    for body in [
        json!({"email": "ALICE@example.com", "password": "another-good-passphrase"}),
        json!({"email": "not-an-email", "password": "another-good-passphrase"}),
        json!({"email": "bob@example.com", "password": "short"}),
        json!({"email": "bob@example.com", "password": "bob@example.com"}),
        json!({"email": "bob@example.com", "password": "qwertyuiop123"}),
        json!({"email": "bob@example.com", "policies": ["root"]}),
    ] {
        let a = h
            .call("POST", "/v1/sys/users", Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body} {}", a.json);
    }
    // Non-administrators are refused everything under sys/users.
    for (method, path) in [
        ("GET", "/v1/sys/users".to_string()),
        ("DELETE", format!("/v1/sys/users/{alice_id}")),
    ] {
        assert_eq!(
            h.call(method, &path, Some(&alice), None).await.status,
            StatusCode::FORBIDDEN
        );
    }
    let a = h
        .call("GET", &format!("/v1/sys/users/{ALICE}"), Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["id"], alice_id);
    assert_eq!(a.json["data"]["sessions"].as_array().unwrap().len(), 1);
    // Disabling ends the sessions at once.
    let a = h
        .call(
            "POST",
            &format!("/v1/sys/users/{alice_id}"),
            Some(&admin),
            Some(json!({"disabled": true, "policies": ["default"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["data"]["policies"], json!(["default"]));
    assert_eq!(status_with(&h, &alice).await, StatusCode::FORBIDDEN);
    // The last administrator cannot remove themselves.
    let me = h
        .call("GET", "/v1/auth/user/self", Some(&admin), None)
        .await
        .json["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, body) in [("DELETE", None), ("POST", Some(json!({"admin": false})))] {
        let a = h
            .call(method, &format!("/v1/sys/users/{me}"), Some(&admin), body)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    }
    // An administrator resets a password: every session of that user ends.
    h.call(
        "POST",
        &format!("/v1/sys/users/{alice_id}"),
        Some(&admin),
        Some(json!({"disabled": false})),
    )
    .await;
    let (alice, _) = login(&h, ALICE, ALICE_PASSWORD).await;
    let a = h
        .call(
            "POST",
            &format!("/v1/sys/users/{alice_id}"),
            Some(&admin),
            Some(json!({"password": "reset-by-the-admin-123"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(status_with(&h, &alice).await, StatusCode::FORBIDDEN);
    let (alice, _) = login(&h, ALICE, "reset-by-the-admin-123").await;
    let a = h
        .call(
            "DELETE",
            &format!("/v1/sys/users/{alice_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(status_with(&h, &alice).await, StatusCode::FORBIDDEN);
    let a = login_from(&h, "192.0.2.10", ALICE, "reset-by-the-admin-123").await;
    assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    assert_eq!(
        h.call(
            "GET",
            &format!("/v1/sys/users/{alice_id}"),
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // The email is free again.
    create_alice(&h, &admin).await;
}

// R-AUTH-8: registration is off by default; invitations are single use and
// bound to their address; domains mode admits only listed domains.
#[tokio::test]
async fn registration_obeys_its_mode() {
    let register = |email: &str, invite: Option<&str>| json!({"email": email, "password": "a-registration-passphrase", "invite_token": invite});
    let (h, _root, admin) = with_admin(config()).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register("bob@example.com", None)),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("registration is off")
    );

    // With registration off, an invitation could never be used: refused.
    let a = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&admin),
            Some(json!({"email": "bob@example.com", "invite": true})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);

    let mut c = config();
    c.auth.registration.mode = zafe_server::people::config::RegistrationMode::Domains;
    c.auth.registration.domains = vec!["corp.example".into()];
    let (h, _root, admin2) = with_admin(c).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register("eve@elsewhere.example", None)),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register("Dana@Corp.Example", None)),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let first_answer = a.json.clone();
    login(&h, "dana@corp.example", "a-registration-passphrase").await;
    // One account per address, and the answer does not say whether the
    // address had one (R-AUTH-3): the same status and body; the existing
    // account is unchanged (its password still works, the new one does not).
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(json!({"email": "dana@corp.example", "password": "another-registration-passphrase"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(
        (
            a.json["data"].clone(),
            a.json
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        ),
        (
            first_answer["data"].clone(),
            first_answer
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        ),
    );
    assert!(a.json["data"].get("id").is_none() && a.json["data"].get("admin").is_none());
    login(&h, "dana@corp.example", "a-registration-passphrase").await;
    assert_eq!(
        login_from(
            &h,
            "192.0.2.10",
            "dana@corp.example",
            "another-registration-passphrase"
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );

    // An invitation: for its address only, once.
    let a = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&admin2),
            Some(json!({"email": "eve@elsewhere.example", "invite": true})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let invite = a.json["data"]["invite_token"].as_str().unwrap().to_string();
    assert!(invite.starts_with("zafe_iv_"));
    assert!(
        a.json["data"]["url"]
            .as_str()
            .unwrap()
            .contains("#invite=zafe_iv_")
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register("mallory@elsewhere.example", Some(&invite))),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register("eve@elsewhere.example", Some(&invite))),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register("eve@elsewhere.example", Some(&invite))),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json["errors"][0],
        "the invitation is invalid, expired or already used"
    );
}

// R-AUTH-2: when the Argon2 parameters change, a login re-hashes the
// password with the new ones; the pepper is part of every hash.
#[tokio::test]
async fn logins_rehash_passwords_made_with_old_parameters() {
    use zafe_server::core::{Core, CoreParts};
    let backend: std::sync::Arc<dyn zafe_storage::Backend> =
        std::sync::Arc::new(zafe_storage::sqlite::SqliteBackend::memory().await.unwrap());
    let master = SecretKey::generate();
    let start = |m_cost: u32| {
        let backend = backend.clone();
        let master = master.duplicate();
        async move {
            let mut c = config();
            c.auth.password.m_cost = m_cost;
            let clock = std::sync::Arc::new(zafe_engine::ManualClock::starting_now());
            let core = Core::new(CoreParts {
                config: c,
                clock: clock.clone(),
                projects: zafe_server::projects::rule(),
                engines: zafe_engines::build,
                backend,
                identity: zafe_core::identity::IdentityKey::generate(),
                master_key: Some(master),
                token_pepper: None,
                tls_spki: None,
                proxy_spki: None,
            })
            .await
            .unwrap();
            if core.is_initialized().await.unwrap() {
                core.unseal_with_master_key().await.unwrap();
            }
            let app = zafe_server::http::router(core.clone());
            Harness { core, app, clock }
        }
    };
    let old = start(1024).await;
    old.init(1, 1).await;
    let token = setup_token(&old).await;
    let a = old
        .call(
            "POST",
            "/v1/sys/setup",
            None,
            Some(json!({"token": token, "email": ADMIN, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let stored_hash = |h: &Harness| {
        let core = h.core.clone();
        async move {
            let users = zafe_server::people::users::list(&core.barrier, 10)
                .await
                .unwrap();
            users[0].password_hash.clone().unwrap()
        }
    };
    assert!(stored_hash(&old).await.contains("m=1024,"));
    drop(old);
    let new = start(2048).await;
    login(&new, ADMIN, ADMIN_PASSWORD).await;
    let rehashed = stored_hash(&new).await;
    assert!(rehashed.contains("m=2048,"), "{rehashed}");
    login(&new, ADMIN, ADMIN_PASSWORD).await;
}

// Session tokens are stored only as keyed hashes: nothing in storage holds
// one in the clear, and forged or altered tokens are refused.
#[tokio::test]
async fn session_tokens_are_stored_only_as_hashes() {
    let (h, _root, admin) = with_admin(config()).await;
    create_alice(&h, &admin).await;
    let (access, refresh_token) = login(&h, ALICE, ALICE_PASSWORD).await;
    let keys = h
        .core
        .backend()
        .keys("sys/people/", "", 10_000)
        .await
        .unwrap();
    for key in &keys {
        let entry = h.core.backend().get(key).await.unwrap().unwrap();
        for token in [&access, &refresh_token] {
            let raw = token.as_bytes();
            assert!(!key.contains(token.as_str()));
            assert!(!entry.value.windows(raw.len()).any(|w| w == raw));
        }
    }
    assert!(keys.len() >= 6, "{keys:?}");
    // One changed character: refused (the checksum), as is a refresh token
    // used as an access token.
    let mut altered = access.clone();
    altered.replace_range(10..11, if &access[10..11] == "A" { "B" } else { "A" });
    assert_eq!(status_with(&h, &altered).await, StatusCode::FORBIDDEN);
    assert_eq!(status_with(&h, &refresh_token).await, StatusCode::FORBIDDEN);
    assert_eq!(refresh(&h, &access).await.status, StatusCode::BAD_REQUEST);
}

// Two administrators demoted (or deleted) at the same moment, each request
// seeing the other still an administrator: the check and the change are one
// conditional commit, so one of them fails and the server keeps an
// administrator. Many rounds, on two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_administrators_cannot_demote_each_other_at_once() {
    let (h, root, admin) = with_admin(config()).await;
    let second = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&admin),
            Some(json!({"email": ALICE, "password": ALICE_PASSWORD, "admin": true})),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.json);
    let h = std::sync::Arc::new(h);
    let active_admins = |h: std::sync::Arc<Harness>, root: String| async move {
        let mut n = 0;
        for email in [ADMIN, ALICE] {
            let a = h
                .call("GET", &format!("/v1/sys/users/{email}"), Some(&root), None)
                .await;
            if a.json["data"]["admin"] == true && a.json["data"]["disabled"] == false {
                n += 1;
            }
        }
        n
    };
    for round in 0..12 {
        // Demote in even rounds, disable in odd ones.
        let change = if round % 2 == 0 {
            json!({"admin": false})
        } else {
            json!({"disabled": true})
        };
        let tasks: Vec<_> = [ADMIN, ALICE]
            .into_iter()
            .map(|email| {
                let (h, root, change) = (h.clone(), root.clone(), change.clone());
                tokio::spawn(async move {
                    h.call(
                        "POST",
                        &format!("/v1/sys/users/{email}"),
                        Some(&root),
                        Some(change),
                    )
                    .await
                    .status
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap() == StatusCode::OK);
        }
        assert_eq!(ok, 1, "round {round}: exactly one change may win");
        assert_eq!(
            active_admins(h.clone(), root.clone()).await,
            1,
            "round {round}"
        );
        for email in [ADMIN, ALICE] {
            let a = h
                .call(
                    "POST",
                    &format!("/v1/sys/users/{email}"),
                    Some(&root),
                    Some(json!({"admin": true, "disabled": false})),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.json);
        }
    }
    // Deleting each other at once: one account stays, an administrator.
    let tasks: Vec<_> = [ADMIN, ALICE]
        .into_iter()
        .map(|email| {
            let (h, root) = (h.clone(), root.clone());
            tokio::spawn(async move {
                h.call(
                    "DELETE",
                    &format!("/v1/sys/users/{email}"),
                    Some(&root),
                    None,
                )
                .await
                .status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap().is_success());
    }
    assert_eq!(ok, 1);
    let a = h.call("LIST", "/v1/sys/users", Some(&root), None).await;
    assert_eq!(
        a.json["data"]["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.json
    );
}

// R-AUTH-3: registration is rate-limited per client address before any
// password is hashed (it is public: an unauthenticated Argon2 flood).
#[tokio::test]
async fn registration_is_rate_limited_before_hashing() {
    let mut c = config();
    c.auth.registration.mode = zafe_server::people::config::RegistrationMode::Domains;
    c.auth.registration.domains = vec!["corp.example".into()];
    c.auth.password.per_ip_per_minute = 3;
    let (h, root, _admin) = with_admin(c).await;
    let register = |i: usize| json!({"email": format!("user{i}@corp.example"), "password": "a-registration-passphrase"});
    for i in 0..3 {
        let a = h
            .call_from(
                "198.51.100.7",
                "POST",
                "/v1/auth/user/register",
                None,
                Some(register(i)),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    }
    let a = h
        .call_from(
            "198.51.100.7",
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register(3)),
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.json);
    assert!(
        a.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("too many attempts")
    );
    // Nothing was made for the refused attempt; another address goes on.
    let a = h
        .call("GET", "/v1/sys/users/user3@corp.example", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.json);
    let a = h
        .call_from(
            "198.51.100.8",
            "POST",
            "/v1/auth/user/register",
            None,
            Some(register(3)),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}

// R-AUTH-13: while no account exists, self-registration is refused: the first
// account is the administrator made with the setup link, which must not die
// because a stranger registered first.
#[tokio::test]
async fn self_registration_waits_for_the_first_administrator() {
    let mut c = config();
    c.auth.registration.mode = zafe_server::people::config::RegistrationMode::Domains;
    c.auth.registration.domains = vec!["corp.example".into()];
    let (h, _root) = auto_unsealed(c).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(json!({"email": "first@corp.example", "password": "a-registration-passphrase"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    assert!(
        a.json["errors"][0].as_str().unwrap().contains("setup link"),
        "{}",
        a.json
    );
    assert_eq!(
        h.call("GET", "/v1/sys/setup", None, None).await.json,
        json!({"setup_required": true})
    );
}

// Racing registrations of one address: exactly one account (the email index
// is created Absent-only in the same commit as the account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_of_one_address_create_one_account() {
    let mut c = config();
    c.auth.registration.mode = zafe_server::people::config::RegistrationMode::Domains;
    c.auth.registration.domains = vec!["corp.example".into()];
    let (h, root, _admin) = with_admin(c).await;
    let h = std::sync::Arc::new(h);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                h.call(
                    "POST",
                    "/v1/auth/user/register",
                    None,
                    Some(json!({"email": if i % 2 == 0 { "Same@corp.example" } else { "same@CORP.example" }, "password": "a-registration-passphrase"})),
                )
                .await
                .status
            })
        })
        .collect();
    // Every attempt gets the same answer (existence is not revealed)...
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    // ...and exactly one account exists besides the administrator.
    let a = h.call("GET", "/v1/sys/users", Some(&root), None).await;
    assert_eq!(a.json["data"]["keys"].as_array().unwrap().len(), 2);
}

// Malformed and oversized input gets a clear 400 and changes nothing; an
// oversized password is refused without being hashed.
#[tokio::test]
async fn malformed_login_input_is_refused_clearly() {
    let (h, _root, _admin) = with_admin(config()).await;
    for (body, message) in [
        (json!({"password": "x"}), "email is required"),
        (json!({"email": ADMIN}), "password is required"),
        (
            json!({"email": ADMIN, "password": 12}),
            "password must be a string",
        ),
        (
            json!({"email": ["a"], "password": "x"}),
            "email must be a string",
        ),
    ] {
        let a = h
            .call("POST", "/v1/auth/user/login", None, Some(body))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.json["errors"][0], message);
    }
    let huge = "p".repeat(100_000);
    let a = login_from(&h, "192.0.2.3", ADMIN, &huge).await;
    assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    let a = login_from(
        &h,
        "192.0.2.3",
        &format!("{}@example.com", "a".repeat(5000)),
        "whatever-password",
    )
    .await;
    assert_eq!((a.status, a.json), (StatusCode::BAD_REQUEST, refused()));
    let a = h
        .call(
            "POST",
            "/v1/auth/user/refresh",
            None,
            Some(json!({"refresh_token": "zafe_rt_garbage"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // The real password still works.
    login(&h, ADMIN, ADMIN_PASSWORD).await;
}

// R-AUTH-8 (issue item 9): an address that looks like an existing one is
// not a second account. Addresses are NFKC-normalised (full-width letters
// are the same address) and a local part or domain that mixes scripts
// (`racе` with a Cyrillic е) or is written wholly in another script to look
// like a Latin one (`расе`) is refused; ordinary accented addresses work.
#[tokio::test]
async fn look_alike_addresses_are_not_second_accounts() {
    let (h, _root, admin) = with_admin(config()).await;
    let create = |email: &str| {
        let (h, admin) = (&h, admin.clone());
        let body = json!({"email": email, "password": "a-long-enough-passphrase"});
        async move {
            h.call("POST", "/v1/sys/users", Some(&admin), Some(body))
                .await
        }
    };
    let a = create("race@example.com").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    for look_alike in [
        "rac\u{0435}@example.com", // Cyrillic е in the local part
        "race@ex\u{0430}mple.com", // Cyrillic а in the domain
        "\u{0440}\u{0430}\u{0441}\u{0435}@example.com", // расе: all Cyrillic, reads "pace"
        "\u{FF52}\u{FF41}\u{FF43}\u{FF45}@example.com", // full-width ｒａｃｅ: NFKC is race
        "RACE@EXAMPLE.COM",
    ] {
        let a = create(look_alike).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{look_alike}: {}",
            a.json
        );
    }
    let a = h.call("GET", "/v1/sys/users", Some(&admin), None).await;
    assert_eq!(
        a.json["data"]["keys"].as_array().map(Vec::len),
        Some(2),
        "only the administrator and race@: {}",
        a.json
    );
    // Real addresses outside ASCII still work, normalised.
    let a = create("jos\u{0065}\u{0301}@example.com").await; // e + combining acute
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["data"]["email"], "jos\u{00E9}@example.com");
    let a = create("\u{0438}\u{0432}\u{0430}\u{043D}@example.com").await; // иван
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}
