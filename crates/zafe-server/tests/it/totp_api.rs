//! TOTP second factor (R-AUTH-9) through the real router: enrol, confirm,
//! login with `mfa_required`, replay, recovery codes, disable, rate limit,
//! and the secret never shown again.

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

const PASSWORD: &str = "correct horse battery staple 42";

fn now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64
}

/// An unsealed server with one password account; returns (harness, root,
/// the person's session token, their id).
async fn person(email: &str) -> (Harness, String, String, String) {
    let (h, root) = unsealed().await;
    create_user(&h, &root, json!({"email": email, "password": PASSWORD})).await;
    let a = password_login(&h, email, PASSWORD, None).await;
    let token = client_token(&a);
    let id = a.json["auth"]["metadata"]["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    (h, root, token, id)
}

async fn totp_call(h: &Harness, token: &str, what: &str, body: Value) -> Answer {
    h.call(
        "POST",
        &format!("/v1/auth/user/totp/{what}"),
        Some(token),
        Some(body),
    )
    .await
}

/// Enrols and confirms; returns (the app's TOTP, recovery codes, the
/// enrolment's base32 secret).
async fn enable(h: &Harness, token: &str) -> (TOTP, Vec<String>, String) {
    let a = totp_call(h, token, "enroll", json!({"password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let uri = a.json["data"]["otpauth_uri"].as_str().unwrap();
    let secret = a.json["data"]["secret"].as_str().unwrap().to_string();
    assert!(uri.starts_with("otpauth://totp/Zafe:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")) && uri.contains("issuer=Zafe"));
    let app = TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        Secret::Encoded(secret.clone()).to_bytes().unwrap(),
        None,
        "person".into(),
    )
    .unwrap();
    let a = totp_call(h, token, "confirm", json!({"code": app.generate(now())})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let codes: Vec<String> = a.json["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    (app, codes, secret)
}

// R-AUTH-9: after a correct password a code is required; without one the
// answer is mfa_required (and only after the right password).
#[tokio::test]
async fn login_requires_a_code_once_totp_is_on() {
    let (h, _root, token, _) = person("tia@example.com").await;
    // Enrolment needs the password, and is not in force until confirmed.
    let a = totp_call(&h, &token, "enroll", json!({})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = totp_call(
        &h,
        &token,
        "enroll",
        json!({"password": "wrong password here"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = totp_call(&h, &token, "enroll", json!({"password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        password_login(&h, "tia@example.com", PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
    let a = totp_call(&h, &token, "confirm", json!({"code": "000000"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);

    let (app, _codes, _) = enable(&h, &token).await;
    let a = password_login(&h, "tia@example.com", PASSWORD, None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert_eq!(a.json["mfa_required"], true);
    assert!(a.json["auth"].is_null());
    // A wrong password says nothing about a second factor.
    let a = password_login(&h, "tia@example.com", "not the password at all", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json.get("mfa_required").is_none(), "{:?}", a.json);
    let a = password_login(
        &h,
        "tia@example.com",
        "not the password at all",
        Some(&app.generate(now() + 30)),
    )
    .await;
    assert!(a.json["auth"].is_null());

    let a = password_login(&h, "tia@example.com", PASSWORD, Some("123456")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json["auth"].is_null());
    // The next step's code (one step of drift is allowed) logs in ...
    let code = app.generate(now() + 30);
    let a = password_login(&h, "tia@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert!(
        a.json["auth"]["client_token"]
            .as_str()
            .unwrap()
            .starts_with("zafe_at_")
    );
    // ... once: not again, and no older code either.
    let a = password_login(&h, "tia@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert!(
        a.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    let a = password_login(&h, "tia@example.com", PASSWORD, Some(&app.generate(now()))).await;
    assert!(a.json["auth"].is_null(), "{:?}", a.json);
    // Two steps away is outside the window.
    let far = app.generate(now() + 90);
    let a = password_login(&h, "tia@example.com", PASSWORD, Some(&far)).await;
    assert!(a.json["auth"].is_null(), "{:?}", a.json);
}

// R-AUTH-9: a recovery code logs in once.
#[tokio::test]
async fn recovery_codes_work_once() {
    let (h, _root, token, _) = person("rae@example.com").await;
    let (_app, codes, _) = enable(&h, &token).await;
    let a = password_login(&h, "rae@example.com", PASSWORD, Some(&codes[3])).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let a = password_login(&h, "rae@example.com", PASSWORD, Some(&codes[3])).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert!(a.json["auth"].is_null());
    // Written differently (upper case, no dash) it is the same code.
    let other = codes[4].to_uppercase().replace('-', "");
    let a = password_login(&h, "rae@example.com", PASSWORD, Some(&other)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let me = h
        .call("GET", "/v1/auth/user/self", Some(&token), None)
        .await;
    assert_eq!(me.json["data"]["recovery_codes_left"], 8);
}

// The secret is returned at enrolment only: never by self or the admin API,
// and enrolling again over a confirmed factor is refused.
#[tokio::test]
async fn the_secret_is_never_shown_again() {
    let (h, root, token, id) = person("sol@example.com").await;
    let (_app, codes, secret) = enable(&h, &token).await;
    let me = h
        .call("GET", "/v1/auth/user/self", Some(&token), None)
        .await;
    assert_eq!(me.json["data"]["totp_enabled"], true);
    let admin = h
        .call("GET", &format!("/v1/sys/users/{id}"), Some(&root), None)
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{:?}", admin.json);
    for shown in [me.json.to_string(), admin.json.to_string()] {
        assert!(!shown.contains(&secret));
        assert!(!shown.contains(&codes[0]));
    }
    let a = totp_call(&h, &token, "enroll", json!({"password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    // Stored encrypted: the raw storage has no trace of it.
    let rows = h
        .core
        .backend()
        .keys("sys/people/", "", 10_000)
        .await
        .unwrap();
    for key in rows {
        let entry = h.core.backend().get(&key).await.unwrap().unwrap();
        let raw = String::from_utf8_lossy(&entry.value);
        assert!(!raw.contains(&secret) && !raw.contains("recovery"), "{key}");
    }
}

// Disabling needs a current code, a recovery code or the password.
#[tokio::test]
async fn disabling_needs_proof() {
    let (h, _root, token, _) = person("dee@example.com").await;
    let (app, _codes, _) = enable(&h, &token).await;
    let a = totp_call(&h, &token, "disable", json!({})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = totp_call(&h, &token, "disable", json!({"code": "000000"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = totp_call(
        &h,
        &token,
        "disable",
        json!({"password": "wrong password here"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        password_login(&h, "dee@example.com", PASSWORD, None)
            .await
            .json["mfa_required"],
        true
    );
    let a = totp_call(
        &h,
        &token,
        "disable",
        json!({"code": app.generate(now() + 30)}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        password_login(&h, "dee@example.com", PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
    // Password works too.
    let (_app, _, _) = enable(&h, &token).await;
    let a = totp_call(&h, &token, "disable", json!({"password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
}

// R-AUTH-9: guessing codes is rate-limited per account.
#[tokio::test]
async fn code_guessing_is_rate_limited() {
    let (h, _root, token, _) = person("gus@example.com").await;
    let (app, _codes, _) = enable(&h, &token).await;
    let mut limited = false;
    for guess in 0..8 {
        let a = password_login(
            &h,
            "gus@example.com",
            PASSWORD,
            Some(&format!("{guess:06}")),
        )
        .await;
        assert!(a.json["auth"].is_null());
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "eight wrong codes in a row were all checked");
    // While limited, even the right code is not checked.
    let a = password_login(
        &h,
        "gus@example.com",
        PASSWORD,
        Some(&app.generate(now() + 30)),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", a.json);
}

// Only a person's session can manage TOTP.
#[tokio::test]
async fn only_sessions_manage_totp() {
    let (h, root, _token, _) = person("ned@example.com").await;
    let a = totp_call(&h, &root, "enroll", json!({"password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    let a = h
        .call("POST", "/v1/auth/user/totp/enroll", None, Some(json!({})))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
}

// An administrator can turn a lost second factor off (never on).
#[tokio::test]
async fn administrators_can_reset_a_lost_second_factor() {
    let (h, root, token, id) = person("lou@example.com").await;
    enable(&h, &token).await;
    let path = format!("/v1/sys/users/{id}");
    let a = h
        .call(
            "POST",
            &path,
            Some(&root),
            Some(json!({"totp_enabled": true})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    // Not for people themselves: sys/users is for administrators.
    let a = h
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"totp_enabled": false})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
    assert_eq!(
        password_login(&h, "lou@example.com", PASSWORD, None)
            .await
            .json["mfa_required"],
        true
    );
    let a = h
        .call(
            "POST",
            &path,
            Some(&root),
            Some(json!({"totp_enabled": false})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["totp_enabled"], false);
    assert_eq!(
        password_login(&h, "lou@example.com", PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
}
