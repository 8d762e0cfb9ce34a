//! OIDC login (R-AUTH-8, R-OPS-5) through the real router.
//!
//! Two identity providers:
//! - a real one, `oidc-provider` under node (tests/oidc/provider.mjs), found
//!   by discovery, signing with RS256: a person logs in end to end;
//! - a token endpoint in this test, with the signing keys in a `jwks_file`:
//!   the ID tokens it hands out are crafted here to be wrong in exactly one
//!   way each (issuer, audience, expiry, `alg: none`, another key, HMAC with
//!   the public key, nonce), and every one must be refused.

use std::sync::{Arc, Mutex};

use crate::common::*;
use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use zafe_server::Config;
use zafe_server::people::oidc::{Oidc, OidcConfig, pkce_challenge};

const REDIRECT: &str = "http://127.0.0.1:53682/callback";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn unsealed_with_oidc(config: OidcConfig, secret: Option<&str>) -> (Harness, String) {
    unsealed_with_oidc_and(config, secret, true).await
}

/// As [`unsealed_with_oidc`]; `with_admin: false` leaves the server without
/// any account (the setup link still pending).
async fn unsealed_with_oidc_and(
    config: OidcConfig,
    secret: Option<&str>,
    with_admin: bool,
) -> (Harness, String) {
    let mut server_config = Config {
        oidc: Some(config.clone()),
        ..Config::default()
    };
    // People with a verified address at example.com may get an account.
    server_config.auth.registration =
        toml::from_str("mode = \"domains\"\ndomains = [\"example.com\"]").unwrap();
    let (h, root) = unsealed_with(server_config).await;
    h.core.set_oidc(
        Oidc::new(
            config,
            secret.map(|s| zeroize::Zeroizing::new(s.to_string())),
        )
        .unwrap(),
    );
    if !with_admin {
        return (h, root);
    }
    // Accounts are made by OIDC logins only once an administrator exists
    // (the first account comes from the setup link).
    create_user(
        &h,
        &root,
        json!({"email": "admin@example.com", "password": "the administrator's passphrase 1", "admin": true}),
    )
    .await;
    (h, root)
}

/// A login as the CLI starts it: (answer's auth_url, verifier, client nonce).
struct Started {
    auth_url: url::Url,
    state: String,
    nonce: String,
    verifier: String,
    client_nonce: String,
}

async fn start_login(h: &Harness, redirect: &str) -> Started {
    let verifier = b64(&rand_bytes::<48>());
    let client_nonce = b64(&rand_bytes::<24>());
    let a = h
        .call(
            "POST",
            "/v1/auth/oidc/auth_url",
            None,
            Some(json!({
                "redirect_uri": redirect,
                "client_nonce": client_nonce,
                "code_challenge": pkce_challenge(&verifier),
                "code_challenge_method": "S256",
            })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let auth_url = url::Url::parse(a.json["data"]["auth_url"].as_str().unwrap()).unwrap();
    let q = |n: &str| crate::oidc_provider::param(&auth_url, n).unwrap();
    assert_eq!(q("code_challenge"), pkce_challenge(&verifier));
    assert_eq!(q("code_challenge_method"), "S256");
    assert_eq!(q("redirect_uri"), redirect);
    assert_eq!(q("response_type"), "code");
    Started {
        state: q("state"),
        nonce: q("nonce"),
        auth_url,
        verifier,
        client_nonce,
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    zafe_core::crypto::random_bytes::<N>()
}

async fn finish_login(h: &Harness, s: &Started, code: &str, redirect: &str) -> Answer {
    h.call(
        "POST",
        "/v1/auth/oidc/callback",
        None,
        Some(json!({
            "state": s.state,
            "code": code,
            "code_verifier": s.verifier,
            "redirect_uri": redirect,
            "client_nonce": s.client_nonce,
        })),
    )
    .await
}

/// The session in a login answer works: it names the person.
async fn assert_session_for(h: &Harness, a: &Answer, email: &str) -> String {
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let token = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("zafe_at_"), "{token}");
    assert!(
        a.json["auth"]["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("zafe_rt_")
    );
    let me = h
        .call("GET", "/v1/auth/user/self", Some(&token), None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.json);
    assert_eq!(me.json["data"]["email"], email);
    me.json["data"]["id"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------
// The real provider.

fn real_provider_config(issuer: &str, secret_file: &std::path::Path) -> OidcConfig {
    toml::from_str(&format!(
        r#"
        issuer = "{issuer}"
        client_id = "{}"
        client_secret_file = "{}"
        scopes = ["openid", "email", "profile", "groups"]
        groups_claim = "groups"
        link_by_verified_email = true
        [group_roles]
        eng = ["myapp:member"]
        "#,
        crate::oidc_provider::CLIENT_ID,
        secret_file.display()
    ))
    .unwrap()
}

fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("oidc-client-secret");
    std::fs::write(&path, crate::oidc_provider::CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

// R-AUTH-8: a person logs in through a real OpenID provider (discovery,
// PKCE, the code exchanged with the client secret, an RS256 ID token checked
// against the provider's JWKS) and gets a working session; the second login
// finds the same account by (issuer, subject).
#[tokio::test]
async fn a_person_logs_in_through_a_real_provider() {
    let Some(provider) = crate::oidc_provider::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = real_provider_config(&provider.issuer, &secret_file(&dir));
    let (h, _root) = unsealed_with_oidc(config, Some(crate::oidc_provider::CLIENT_SECRET)).await;

    let s = start_login(&h, REDIRECT).await;
    assert!(s.auth_url.as_str().starts_with(&provider.issuer));
    let back = crate::oidc_provider::follow_login(s.auth_url.as_str(), REDIRECT).await;
    assert_eq!(
        crate::oidc_provider::param(&back, "state").unwrap(),
        s.state
    );
    let code = crate::oidc_provider::param(&back, "code").unwrap();
    let a = finish_login(&h, &s, &code, REDIRECT).await;
    let first = assert_session_for(&h, &a, "alice@example.com").await;
    assert_eq!(
        a.json["auth"]["metadata"]["oidc_roles"],
        json!(["myapp:member"])
    );

    // The state is used up: the same callback again is refused.
    let again = finish_login(&h, &s, &code, REDIRECT).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{:?}", again.json);
    assert!(
        again.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("already used")
    );

    let s = start_login(&h, REDIRECT).await;
    let back = crate::oidc_provider::follow_login(s.auth_url.as_str(), REDIRECT).await;
    let code = crate::oidc_provider::param(&back, "code").unwrap();
    let a = finish_login(&h, &s, &code, REDIRECT).await;
    assert_eq!(assert_session_for(&h, &a, "alice@example.com").await, first);
}

// R-AUTH-8: an existing account is linked by email only when the provider
// says the email is verified ("bob" has email_verified = false).
#[tokio::test]
async fn unverified_email_does_not_link_to_an_existing_account() {
    let Some(provider) = crate::oidc_provider::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = real_provider_config(&provider.issuer, &secret_file(&dir));
    let (h, root) = unsealed_with_oidc(config, Some(crate::oidc_provider::CLIENT_SECRET)).await;
    let created = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&root),
            Some(
                json!({"email": "bob@example.com", "password": "correct horse battery staple 42"}),
            ),
        )
        .await;
    assert!(created.status.is_success(), "{:?}", created.json);

    let mut login_hint = start_login(&h, REDIRECT).await;
    login_hint
        .auth_url
        .query_pairs_mut()
        .append_pair("login_hint", "bob");
    let back = crate::oidc_provider::follow_login(login_hint.auth_url.as_str(), REDIRECT).await;
    let code = crate::oidc_provider::param(&back, "code").unwrap();
    let a = finish_login(&h, &login_hint, &code, REDIRECT).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert!(
        a.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("not verified"),
        "{:?}",
        a.json
    );
    assert!(a.json["auth"].is_null());
}

// ---------------------------------------------------------------------------
// Crafted ID tokens from a token endpoint of our own.

struct Keys {
    ed_pkcs8: Vec<u8>,
    ed_jwk: Value,
    ec_pkcs8: Vec<u8>,
    ec_jwk: Value,
}

fn keys() -> Keys {
    let rng = ring::rand::SystemRandom::new();
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let ed = Ed25519KeyPair::from_pkcs8(&ed_pkcs8).unwrap();
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(ed.public_key().as_ref()), "kid": "ed", "alg": "EdDSA", "use": "sig"});
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let ec = EcdsaKeyPair::from_pkcs8(alg, &ec_pkcs8, &rng).unwrap();
    let point = ec.public_key().as_ref();
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]), "kid": "ec"});
    Keys {
        ed_pkcs8,
        ed_jwk,
        ec_pkcs8,
        ec_jwk,
    }
}

/// A token endpoint that answers with whatever ID token the test put in,
/// and counts its calls.
struct FakeIdp {
    issuer: String,
    id_token: Arc<Mutex<String>>,
    calls: Arc<Mutex<usize>>,
}

async fn fake_idp() -> FakeIdp {
    let id_token = Arc::new(Mutex::new(String::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let (t, c) = (id_token.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let (t, c) = (t.clone(), c.clone());
            async move {
                *c.lock().unwrap() += 1;
                assert!(body.contains("code_verifier="), "PKCE verifier sent on");
                axum::Json(json!({"id_token": *t.lock().unwrap(), "token_type": "Bearer", "access_token": "x"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeIdp {
        issuer: format!("http://{addr}"),
        id_token,
        calls,
    }
}

async fn crafted_setup(keys: &Keys) -> (Harness, FakeIdp, tempfile::TempDir, String) {
    crafted_setup_with(keys, true).await
}

async fn crafted_setup_with(
    keys: &Keys,
    with_admin: bool,
) -> (Harness, FakeIdp, tempfile::TempDir, String) {
    let idp = fake_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [keys.ed_jwk, keys.ec_jwk]}).to_string(),
    )
    .unwrap();
    let config: OidcConfig = toml::from_str(&format!(
        r#"
        issuer = "{iss}"
        client_id = "zafe"
        jwks_file = "{jwks}"
        authorization_endpoint = "{iss}/authorize"
        token_endpoint = "{iss}/token"
        link_by_verified_email = true
        "#,
        iss = idp.issuer,
        jwks = jwks.display()
    ))
    .unwrap();
    let (h, root) =
        unsealed_with_oidc_and(config, Some("s3cret-for-the-token-endpoint"), with_admin).await;
    (h, idp, dir, root)
}

fn claims(idp: &FakeIdp, nonce: &str, sub: &str) -> Value {
    let t = now();
    json!({
        "iss": idp.issuer, "aud": "zafe", "sub": sub, "nonce": nonce,
        "iat": t, "exp": t + 300,
        "email": format!("{sub}@example.com"), "email_verified": true,
    })
}

fn sign_ed(keys: &Keys, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&keys.ed_pkcs8)).unwrap()
}

/// Runs a login whose ID token is `make(nonce)`; returns the answer.
async fn login_with(h: &Harness, idp: &FakeIdp, make: impl FnOnce(&str) -> String) -> Answer {
    let s = start_login(h, REDIRECT).await;
    *idp.id_token.lock().unwrap() = make(&s.nonce);
    finish_login(h, &s, "any-code", REDIRECT).await
}

fn assert_refused(a: &Answer, why: &str) {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{why}: {:?}", a.json);
    let message = a.json["errors"][0].as_str().unwrap_or_default();
    assert!(
        message.starts_with("OIDC login refused") && message.contains(why),
        "expected a refusal mentioning {why:?}, got {message:?}"
    );
    assert!(a.json["auth"].is_null());
}

// R-AUTH-8: correctly signed tokens (EdDSA, ES256) are accepted, within the
// allowed clock skew too.
#[tokio::test]
async fn well_formed_tokens_are_accepted() {
    let keys = keys();
    let (h, idp, _dir, _root) = crafted_setup(&keys).await;
    let a = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "erin"))).await;
    assert_session_for(&h, &a, "erin@example.com").await;
    let a = login_with(&h, &idp, |n| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec".into());
        let key = EncodingKey::from_ec_der(&keys.ec_pkcs8);
        jsonwebtoken::encode(&header, &claims(&idp, n, "frank"), &key).unwrap()
    })
    .await;
    assert_session_for(&h, &a, "frank@example.com").await;
    // Expired 30 s ago: inside the default 60 s skew.
    let a = login_with(&h, &idp, |n| {
        let mut c = claims(&idp, n, "erin");
        c["exp"] = json!(now() - 30);
        sign_ed(&keys, &c)
    })
    .await;
    assert_session_for(&h, &a, "erin@example.com").await;
}

// R-AUTH-8: every way an ID token can be wrong is refused.
#[tokio::test]
async fn wrong_id_tokens_are_refused() {
    let keys = keys();
    let (h, idp, _dir, _root) = crafted_setup(&keys).await;
    type Edit = fn(&mut Value);
    let claim_edits: Vec<(&str, Edit)> = vec![
        ("another issuer", |c| {
            c["iss"] = json!("https://evil.example.com")
        }),
        ("another audience", |c| c["aud"] = json!("someone-else")),
        ("expired", |c| c["exp"] = json!(now() - 3600)),
        ("not valid yet", |c| c["nbf"] = json!(now() + 3600)),
        ("issued in the future", |c| c["iat"] = json!(now() + 3600)),
        ("nonce", |c| c["nonce"] = json!("another-login")),
        ("nonce", |c| {
            c.as_object_mut().unwrap().remove("nonce");
        }),
        ("required claim", |c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        ("another client", |c| c["azp"] = json!("other-client")),
        ("several audiences", |c| c["aud"] = json!(["zafe", "other"])),
    ];
    for (why, edit) in claim_edits {
        let a = login_with(&h, &idp, |n| {
            let mut c = claims(&idp, n, "mallory");
            edit(&mut c);
            sign_ed(&keys, &c)
        })
        .await;
        assert_refused(&a, why);
    }
    // alg: none, no signature.
    let a = login_with(&h, &idp, |n| {
        let header = b64(br#"{"alg":"none","kid":"ed"}"#);
        let body = b64(claims(&idp, n, "mallory").to_string().as_bytes());
        format!("{header}.{body}.")
    })
    .await;
    assert_refused(&a, "malformed or uses an unsupported algorithm");
    // The right kid, another key.
    let a = login_with(&h, &idp, |n| {
        let rng = ring::rand::SystemRandom::new();
        let other = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("ed".into());
        let key = EncodingKey::from_ed_der(other.as_ref());
        jsonwebtoken::encode(&header, &claims(&idp, n, "mallory"), &key).unwrap()
    })
    .await;
    assert_refused(&a, "signature is not valid");
    // HS256 keyed with the public key (algorithm confusion).
    let a = login_with(&h, &idp, |n| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed".into());
        let public = keys.ed_jwk["x"].as_str().unwrap().as_bytes();
        let key = EncodingKey::from_secret(public);
        jsonwebtoken::encode(&header, &claims(&idp, n, "mallory"), &key).unwrap()
    })
    .await;
    assert_refused(&a, "algorithm");
    // A key id the IdP does not have.
    let a = login_with(&h, &idp, |n| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("unknown-kid".into());
        let key = EncodingKey::from_ed_der(&keys.ed_pkcs8);
        jsonwebtoken::encode(&header, &claims(&idp, n, "mallory"), &key).unwrap()
    })
    .await;
    assert_refused(&a, "no key");
    // None of them made an account.
    let any = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "mallory"))).await;
    assert_session_for(&h, &any, "mallory@example.com").await;
}

// The state is single use, bound to its redirect URI, client nonce and PKCE
// verifier; a bad verifier is refused before the IdP is called at all.
#[tokio::test]
async fn state_is_single_use_and_bound_to_the_client() {
    let keys = keys();
    let (h, idp, _dir, _root) = crafted_setup(&keys).await;

    let s = start_login(&h, REDIRECT).await;
    *idp.id_token.lock().unwrap() = sign_ed(&keys, &claims(&idp, &s.nonce, "grace"));
    let a = finish_login(&h, &s, "code", REDIRECT).await;
    assert_session_for(&h, &a, "grace@example.com").await;
    let replay = finish_login(&h, &s, "code", REDIRECT).await;
    assert_refused(&replay, "already used");
    assert_eq!(
        *idp.calls.lock().unwrap(),
        1,
        "a replayed state never reaches the IdP"
    );

    let mut s = start_login(&h, REDIRECT).await;
    s.verifier = b64(&rand_bytes::<48>());
    assert_refused(
        &finish_login(&h, &s, "code", REDIRECT).await,
        "code_verifier",
    );
    // ... and the state is gone even after a failed try.
    let a = finish_login(&h, &s, "code", REDIRECT).await;
    assert_refused(&a, "already used");

    let mut s = start_login(&h, REDIRECT).await;
    s.client_nonce = b64(&rand_bytes::<24>());
    assert_refused(
        &finish_login(&h, &s, "code", REDIRECT).await,
        "client_nonce",
    );

    let s = start_login(&h, REDIRECT).await;
    let other = "http://127.0.0.1:1/callback";
    assert_refused(&finish_login(&h, &s, "code", other).await, "redirect_uri");
    assert_eq!(*idp.calls.lock().unwrap(), 1);

    let unknown = Started {
        state: b64(&rand_bytes::<32>()),
        ..start_login(&h, REDIRECT).await
    };
    assert_refused(
        &finish_login(&h, &unknown, "code", REDIRECT).await,
        "already used",
    );
}

// R-OPS-5: the server never fetches a URL a client names; redirect URIs
// outside the allowlist are refused outright.
#[tokio::test]
async fn redirect_uris_outside_the_allowlist_are_refused() {
    let keys = keys();
    let (h, idp, _dir, _root) = crafted_setup(&keys).await;
    for bad in [
        "http://127.0.0.1:53682/other",
        "http://169.254.169.254:80/callback",
        "https://evil.example.com/callback",
        "http://localhost.evil.example.com:1/callback",
        "not a url",
    ] {
        let a = h
            .call(
                "POST",
                "/v1/auth/oidc/auth_url",
                None,
                Some(json!({
                    "redirect_uri": bad,
                    "client_nonce": "0123456789abcdef0123",
                    "code_challenge": pkce_challenge(&"v".repeat(43)),
                })),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", a.json);
    }
    assert_eq!(*idp.calls.lock().unwrap(), 0);
    // A plain challenge is refused: S256 only.
    let a = h
        .call(
            "POST",
            "/v1/auth/oidc/auth_url",
            None,
            Some(json!({
                "redirect_uri": REDIRECT,
                "client_nonce": "0123456789abcdef0123",
                "code_challenge": "v".repeat(43),
                "code_challenge_method": "plain",
            })),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
}

// Without [oidc] the routes say so, and a configuration without an issuer
// or with an unbounded skew does not start.
#[tokio::test]
async fn oidc_off_and_bad_configurations() {
    let (h, _) = unsealed().await;
    let a = h
        .call("POST", "/v1/auth/oidc/auth_url", None, Some(json!({})))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("not configured")
    );

    let bad: Config = toml::from_str("[oidc]\nissuer = \"\"\nclient_id = \"zafe\"").unwrap();
    assert!(bad.validate().is_err());
    let bad: Config = toml::from_str(
        "[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"zafe\"\nclock_skew_secs = 3600",
    )
    .unwrap();
    assert!(bad.validate().is_err());
    // The client secret never shows in Debug output.
    let dir = tempfile::tempdir().unwrap();
    let path = secret_file(&dir);
    let config: Config = toml::from_str(&format!(
        "[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"zafe\"\nclient_secret_file = \"{}\"",
        path.display()
    ))
    .unwrap();
    let secrets = config.secrets(&|_: &str| None).unwrap();
    assert!(secrets.oidc_client_secret.is_some());
    let oidc = Oidc::new(config.oidc.clone().unwrap(), secrets.oidc_client_secret).unwrap();
    assert!(!format!("{oidc:?} {config:?}").contains(crate::oidc_provider::CLIENT_SECRET));
}

// R-AUTH-8: `[oidc] password_login = false` turns internal passwords off;
// an identity whose address may not register gets no account.
#[tokio::test]
async fn oidc_only_deployments_refuse_passwords() {
    let keys = keys();
    let idp = fake_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [keys.ed_jwk]}).to_string()).unwrap();
    let config: OidcConfig = toml::from_str(&format!(
        r#"
        issuer = "{iss}"
        client_id = "zafe"
        jwks_file = "{jwks}"
        authorization_endpoint = "{iss}/authorize"
        token_endpoint = "{iss}/token"
        password_login = false
        "#,
        iss = idp.issuer,
        jwks = jwks.display()
    ))
    .unwrap();
    let (h, root) = unsealed_with_oidc(config, None).await;
    let created = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&root),
            Some(
                json!({"email": "pat@example.com", "password": "correct horse battery staple 42"}),
            ),
        )
        .await;
    assert!(created.status.is_success(), "{:?}", created.json);
    let login = h
        .call(
            "POST",
            "/v1/auth/user/login",
            None,
            Some(
                json!({"email": "pat@example.com", "password": "correct horse battery staple 42"}),
            ),
        )
        .await;
    assert_eq!(login.status, StatusCode::BAD_REQUEST, "{:?}", login.json);
    assert!(login.json["auth"].is_null());
    assert!(
        login.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("disabled")
    );

    // Not linked (linking by email is off by default), not created.
    let a = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "pat"))).await;
    assert_refused(&a, "not linked");
    let mut other = claims(&idp, "", "quinn");
    other["email"] = json!("quinn@elsewhere.example.org");
    let a = login_with(&h, &idp, |n| {
        other["nonce"] = json!(n);
        sign_ed(&keys, &other)
    })
    .await;
    assert_refused(&a, "registration does not allow");
}

// R-AUTH-8: with linking on, a verified email links the first login to the
// existing account (the same id); later logins go by (issuer, subject), even
// when the IdP's email changes.
#[tokio::test]
async fn a_verified_email_links_to_the_existing_account() {
    let keys = keys();
    let (h, idp, _dir, root) = crafted_setup(&keys).await;
    let created = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&root),
            Some(
                json!({"email": "vic@example.com", "password": "correct horse battery staple 42"}),
            ),
        )
        .await;
    assert!(created.status.is_success(), "{:?}", created.json);
    let a = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "vic"))).await;
    let linked = assert_session_for(&h, &a, "vic@example.com").await;
    let existing = h
        .call("GET", "/v1/sys/users/vic@example.com", Some(&root), None)
        .await;
    assert_eq!(
        existing.json["data"]["id"],
        linked.as_str(),
        "{:?}",
        existing.json
    );
    assert_eq!(existing.json["data"]["oidc_links"][0]["subject"], "vic");
    let a = login_with(&h, &idp, |n| {
        let mut c = claims(&idp, n, "vic");
        c["email"] = json!("victoria@example.com");
        sign_ed(&keys, &c)
    })
    .await;
    assert_eq!(assert_session_for(&h, &a, "vic@example.com").await, linked);
}

// R-AUTH-8: a self-registered account never proved its address, so the real
// owner's OIDC login must not link to it (account takeover): the login is
// refused with a clear error, no link is written and no second account is
// made. An invited account (the invitation proves the address) does link.
#[tokio::test]
async fn a_self_registered_account_is_not_linked_by_email() {
    let keys = keys();
    let (h, idp, _dir, root) = crafted_setup(&keys).await;
    let registered = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(json!({"email": "mallory@example.com", "password": "an attacker's own passphrase 7"})),
        )
        .await;
    assert!(registered.status.is_success(), "{:?}", registered.json);
    let a = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "mallory"))).await;
    assert_refused(&a, "never verified");
    let account = h
        .call(
            "GET",
            "/v1/sys/users/mallory@example.com",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(account.json["data"]["email_verified"], false);
    assert_eq!(account.json["data"]["oidc_links"], json!([]));
    let users = h.call("LIST", "/v1/sys/users", Some(&root), None).await;
    // The administrator and the registered account only.
    assert_eq!(
        users.json["data"]["keys"].as_array().map(Vec::len),
        Some(2),
        "{:?}",
        users.json
    );

    // An invited account proved its address: it links.
    let invite = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&root),
            Some(json!({"email": "ivy@example.com", "invite": true})),
        )
        .await;
    assert!(invite.status.is_success(), "{:?}", invite.json);
    let token = invite.json["data"]["invite_token"].as_str().unwrap();
    let registered = h
        .call(
            "POST",
            "/v1/auth/user/register",
            None,
            Some(json!({"email": "ivy@example.com", "password": "an invited passphrase 42", "invite_token": token})),
        )
        .await;
    assert!(registered.status.is_success(), "{:?}", registered.json);
    let a = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "ivy"))).await;
    assert_session_for(&h, &a, "ivy@example.com").await;
}

// R-AUTH-13: while no account exists, an OIDC login creates none: the first
// account is the administrator made with the setup link, which would
// otherwise stop working.
#[tokio::test]
async fn oidc_creates_no_account_before_the_first_administrator() {
    let keys = keys();
    let (h, idp, _dir, root) = crafted_setup_with(&keys, false).await;
    let a = login_with(&h, &idp, |n| sign_ed(&keys, &claims(&idp, n, "erin"))).await;
    assert_refused(&a, "no administrator exists yet");
    let users = h.call("LIST", "/v1/sys/users", Some(&root), None).await;
    assert!(
        users.json["data"]["keys"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{:?}",
        users.json
    );
    assert_eq!(
        h.call("GET", "/v1/sys/setup", None, None).await.json,
        json!({"setup_required": true})
    );
}

// R-AUTH-9: an account with TOTP on cannot skip it by logging in with OIDC:
// without a code the callback answers `mfa_required` (and no session); a
// wrong code is refused; with a valid code (here a recovery code) it works.
#[tokio::test]
async fn oidc_logins_into_a_totp_account_need_the_code() {
    let keys = keys();
    let (h, idp, _dir, root) = crafted_setup(&keys).await;
    let password = "correct horse battery staple 42";
    let created = h
        .call(
            "POST",
            "/v1/sys/users",
            Some(&root),
            Some(json!({"email": "tess@example.com", "password": password})),
        )
        .await;
    assert!(created.status.is_success(), "{:?}", created.json);
    let a = h
        .call(
            "POST",
            "/v1/auth/user/login",
            None,
            Some(json!({"email": "tess@example.com", "password": password})),
        )
        .await;
    let session = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let a = h
        .call(
            "POST",
            "/v1/auth/user/totp/enroll",
            Some(&session),
            Some(json!({"password": password})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let secret = a.json["data"]["secret"].as_str().unwrap();
    let app = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        totp_rs::Secret::Encoded(secret.into()).to_bytes().unwrap(),
        None,
        "tess".into(),
    )
    .unwrap();
    let a = h
        .call(
            "POST",
            "/v1/auth/user/totp/confirm",
            Some(&session),
            Some(json!({"code": app.generate(now() as u64)})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let recovery = a.json["data"]["recovery_codes"][0]
        .as_str()
        .unwrap()
        .to_string();

    let oidc_login = |code: Option<&str>| {
        let code = code.map(str::to_string);
        let (h, idp, keys) = (&h, &idp, &keys);
        async move {
            let s = start_login(h, REDIRECT).await;
            *idp.id_token.lock().unwrap() = sign_ed(keys, &claims(idp, &s.nonce, "tess"));
            let mut body = json!({
                "state": s.state,
                "code": "any-code",
                "code_verifier": s.verifier,
                "redirect_uri": REDIRECT,
                "client_nonce": s.client_nonce,
            });
            if let Some(code) = code {
                body["totp_code"] = json!(code);
            }
            h.call("POST", "/v1/auth/oidc/callback", None, Some(body))
                .await
        }
    };
    let a = oidc_login(None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert_eq!(a.json["mfa_required"], true, "{:?}", a.json);
    assert!(a.json["auth"].is_null());
    let a = oidc_login(Some("not-a-code")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert!(a.json["auth"].is_null());
    let a = oidc_login(Some(&recovery)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert!(a.json["auth"]["client_token"].as_str().is_some());
}

// Starting logins is rate-limited per client address (each one stores a
// pending state).
#[tokio::test]
async fn starting_logins_is_rate_limited() {
    let keys = keys();
    let (h, _idp, _dir, _root) = crafted_setup(&keys).await;
    let mut limited = false;
    for _ in 0..40 {
        let a = h
            .call(
                "POST",
                "/v1/auth/oidc/auth_url",
                None,
                Some(json!({
                    "redirect_uri": REDIRECT,
                    "client_nonce": "0123456789abcdef0123",
                    "code_challenge": pkce_challenge(&"v".repeat(43)),
                })),
            )
            .await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    }
    assert!(
        limited,
        "40 logins started from one address within a second"
    );
}
