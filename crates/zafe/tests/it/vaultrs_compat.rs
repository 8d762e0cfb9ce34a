//! An unmodified third-party Vault client, `vaultrs`, against a real
//! `zafe server` on 127.0.0.1 (R-KV-1, R-KV-3, R-AUTH-10, R-AUTH-11).
//!
//! vaultrs deserialises every response into strict structs: a field Vault
//! always sends and Zafe leaves out (in health, mounts, token lookups, key
//! reads...) fails the call, so each call here checks the response shape as
//! well as the behaviour.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use crate::support::{Server, free_addr, install_crypto_provider, start_dev_server};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use vaultrs::api::auth::approle::requests::{GenerateNewSecretIDRequest, SetAppRoleRequest};
use vaultrs::api::kv2::requests::{SetSecretMetadataRequest, SetSecretRequestOptions};
use vaultrs::api::sys::requests::EnableEngineRequest;
use vaultrs::api::token::requests::CreateTokenRequest;
use vaultrs::api::transit::requests::{CreateKeyRequest, RandomBytesSource};
use vaultrs::api::transit::{KeyType, OutputFormat};
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::sys::ServerStatus;

/// Every test is bounded: a hung server fails the test instead of hanging CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time limit");
}

fn client(server: &Server, token: &str) -> VaultClient {
    install_crypto_provider();
    VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(server.url(""))
            .token(token)
            .timeout(Some(Duration::from_secs(20)))
            .verify(false)
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn dev_server(token: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_dev_server(token, dir.path().join("zafe.log"));
    (dir, server)
}

/// The HTTP status of a failed call, if the server answered.
fn status_of(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. } => Some(*code),
        // rustify's ServerResponseError { code, .. } (rustify is not a
        // direct dependency, so read it from the Debug form).
        other => {
            let text = format!("{other:?}");
            let rest = &text[text.find("code: ")? + 6..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        }
    }
}

#[tokio::test]
async fn sys_health_and_status() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        // Health deserialises into vaultrs's strict struct.
        let health = vaultrs::sys::health(&root).await.expect("sys/health");
        assert!(health.initialized);
        assert!(!health.sealed);
        assert!(!health.standby);
        assert!(!health.version.is_empty());
        assert!(health.server_time_utc > 0);
        assert!(matches!(
            vaultrs::sys::status(&root).await.unwrap(),
            ServerStatus::OK
        ));
        assert!(matches!(root.status().await.unwrap(), ServerStatus::OK));
    })
    .await;
}

#[tokio::test]
async fn sys_mounts() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        let mounts = vaultrs::sys::mount::list(&root).await.expect("sys/mounts");
        let secret = mounts.get("secret/").expect("secret/ is mounted");
        assert_eq!(secret.mount_type, "kv");
        assert_eq!(
            secret
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .map(String::as_str),
            Some("2")
        );
        vaultrs::sys::mount::enable(
            &root,
            "vrs-kv",
            "kv",
            Some(
                EnableEngineRequest::builder()
                    .description("vaultrs")
                    .options(HashMap::from([("version".to_string(), "2".to_string())])),
            ),
        )
        .await
        .expect("enable kv");
        vaultrs::sys::mount::enable(&root, "vrs-transit", "transit", None)
            .await
            .expect("enable transit");
        let one = vaultrs::sys::mount::get_configuration_of_a_secret_engine(&root, "vrs-kv")
            .await
            .expect("sys/mounts/vrs-kv");
        assert_eq!(one.mount_type, "kv");
        assert_eq!(one.description, "vaultrs");
        let mounts = vaultrs::sys::mount::list(&root).await.unwrap();
        assert_eq!(mounts["vrs-transit/"].mount_type, "transit");
        vaultrs::sys::mount::disable(&root, "vrs-transit")
            .await
            .expect("disable");
        assert!(
            !vaultrs::sys::mount::list(&root)
                .await
                .unwrap()
                .contains_key("vrs-transit/")
        );
    })
    .await;
}

#[tokio::test]
async fn sys_auth_methods() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        // vaultrs requires config.token_type on every entry, as Vault sends it.
        vaultrs::sys::auth::enable(&root, "vrs-approle", "approle", None)
            .await
            .expect("enable approle");
        let auths = vaultrs::sys::auth::list(&root)
            .await
            .expect("sys/auth deserialises");
        assert_eq!(auths["token/"].mount_type, "token");
        assert_eq!(auths["vrs-approle/"].mount_type, "approle");
        vaultrs::sys::auth::disable(&root, "vrs-approle")
            .await
            .expect("disable approle");
    })
    .await;
}

#[tokio::test]
async fn sys_policies() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        // vaultrs uses the legacy sys/policy endpoints.
        let text = "path \"secret/data/vrs/*\" {\n  capabilities = [\"read\"]\n}\n";
        vaultrs::sys::policy::set(&root, "vrs-reader", text)
            .await
            .expect("set policy");
        let read = vaultrs::sys::policy::read(&root, "vrs-reader")
            .await
            .expect("read policy");
        assert_eq!(read.name, "vrs-reader");
        assert_eq!(read.rules, text);
        let list = vaultrs::sys::policy::list(&root)
            .await
            .expect("list policies");
        assert!(list.policies.contains(&"vrs-reader".to_string()));
        assert!(list.policies.contains(&"root".to_string()));
        vaultrs::sys::policy::delete(&root, "vrs-reader")
            .await
            .expect("delete policy");
        let err = vaultrs::sys::policy::read(&root, "vrs-reader")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(404), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn sys_init_unseal_seal_on_a_non_dev_server() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = crate::support::config_file(dir.path(), addr, "", "");
    let server = Server::start_config(&cfg, &[], addr, dir.path().join("zafe.log"));
    let anon = client(&server, "");
    bounded(async {
        assert!(matches!(
            vaultrs::sys::status(&anon).await.unwrap(),
            ServerStatus::UNINITIALIZED
        ));
        let init = vaultrs::sys::start_initialization(&anon, 5, 3, None)
            .await
            .expect("sys/init");
        assert_eq!(init.keys.len(), 5);
        assert_eq!(init.keys_base64.len(), 5);
        assert!(matches!(
            vaultrs::sys::status(&anon).await.unwrap(),
            ServerStatus::SEALED
        ));

        let progress = vaultrs::sys::unseal(&anon, Some(init.keys[0].clone()), None, None)
            .await
            .expect("unseal 1");
        assert!(progress.sealed);
        assert_eq!(
            (progress.threshold, progress.n_shares, progress.progress),
            (3, 5, 1)
        );
        let reset = vaultrs::sys::unseal(&anon, None, Some(true), None)
            .await
            .expect("reset");
        assert_eq!(reset.progress, 0);
        let mut last = None;
        for key in &init.keys[1..4] {
            last = Some(
                vaultrs::sys::unseal(&anon, Some(key.clone()), None, None)
                    .await
                    .expect("unseal"),
            );
        }
        assert!(!last.unwrap().sealed);
        assert!(matches!(
            vaultrs::sys::status(&anon).await.unwrap(),
            ServerStatus::OK
        ));

        let root = client(&server, &init.root_token);
        vaultrs::kv2::set(&root, "secret", "kept", &HashMap::from([("v", "1")]))
            .await
            .expect("write");
        vaultrs::sys::seal(&root).await.expect("sys/seal");
        assert!(matches!(
            vaultrs::sys::status(&anon).await.unwrap(),
            ServerStatus::SEALED
        ));
        let err = vaultrs::kv2::read::<HashMap<String, String>>(&root, "secret", "kept")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(503), "{err:?}");
        for key in &init.keys_base64[2..5] {
            vaultrs::sys::unseal(&anon, Some(key.clone()), None, None)
                .await
                .expect("unseal with base64 keys");
        }
        let kept: HashMap<String, String> = vaultrs::kv2::read(&root, "secret", "kept")
            .await
            .expect("read after unseal");
        assert_eq!(kept["v"], "1");
    })
    .await;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Creds {
    user: String,
    password: String,
}

#[tokio::test]
async fn kv2_set_read_list_metadata_delete() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        let v1 = Creds {
            user: "app".into(),
            password: "one".into(),
        };
        let meta = vaultrs::kv2::set(&root, "secret", "vrs/db", &v1)
            .await
            .expect("kv2 set");
        assert_eq!(meta.version, 1);
        assert!(!meta.destroyed);
        let read: Creds = vaultrs::kv2::read(&root, "secret", "vrs/db")
            .await
            .expect("kv2 read");
        assert_eq!(read, v1);

        let v2 = Creds {
            user: "app".into(),
            password: "two".into(),
        };
        // Check-and-set: the wrong version is refused, the right one accepted.
        let err = vaultrs::kv2::set_with_options(
            &root,
            "secret",
            "vrs/db",
            &v2,
            SetSecretRequestOptions { cas: 7 },
        )
        .await
        .unwrap_err();
        assert_eq!(status_of(&err), Some(400), "{err:?}");
        let meta = vaultrs::kv2::set_with_options(
            &root,
            "secret",
            "vrs/db",
            &v2,
            SetSecretRequestOptions { cas: 1 },
        )
        .await
        .expect("cas write");
        assert_eq!(meta.version, 2);
        let old: Creds = vaultrs::kv2::read_version(&root, "secret", "vrs/db", 1)
            .await
            .expect("read version 1");
        assert_eq!(old, v1);

        vaultrs::kv2::set(&root, "secret", "vrs/api", &HashMap::from([("k", "v")]))
            .await
            .unwrap();
        vaultrs::kv2::set(
            &root,
            "secret",
            "vrs/nested/x",
            &HashMap::from([("k", "v")]),
        )
        .await
        .unwrap();
        let mut keys = vaultrs::kv2::list(&root, "secret", "vrs")
            .await
            .expect("kv2 list");
        keys.sort();
        assert_eq!(keys, ["api", "db", "nested/"]);

        vaultrs::kv2::set_metadata(
            &root,
            "secret",
            "vrs/db",
            Some(
                SetSecretMetadataRequest::builder()
                    .max_versions(5u64)
                    .custom_metadata(HashMap::from([("owner".to_string(), "team-a".to_string())])),
            ),
        )
        .await
        .expect("set metadata");
        let md = vaultrs::kv2::read_metadata(&root, "secret", "vrs/db")
            .await
            .expect("read metadata");
        assert_eq!(md.current_version, 2);
        assert_eq!(md.max_versions, 5);
        assert_eq!(md.custom_metadata.unwrap()["owner"], "team-a");
        assert_eq!(md.versions.len(), 2);

        // Soft delete, undelete, destroy.
        vaultrs::kv2::delete_latest(&root, "secret", "vrs/db")
            .await
            .expect("delete latest");
        let err = vaultrs::kv2::read::<Creds>(&root, "secret", "vrs/db")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(404), "{err:?}");
        vaultrs::kv2::undelete_versions(&root, "secret", "vrs/db", vec![2])
            .await
            .expect("undelete");
        assert_eq!(
            vaultrs::kv2::read::<Creds>(&root, "secret", "vrs/db")
                .await
                .unwrap(),
            v2
        );
        vaultrs::kv2::delete_versions(&root, "secret", "vrs/db", vec![1])
            .await
            .expect("delete versions");
        vaultrs::kv2::destroy_versions(&root, "secret", "vrs/db", vec![1])
            .await
            .expect("destroy");
        let md = vaultrs::kv2::read_metadata(&root, "secret", "vrs/db")
            .await
            .unwrap();
        assert!(md.versions["1"].destroyed);

        // The mount configuration.
        vaultrs::kv2::config::set(
            &root,
            "secret",
            Some(
                vaultrs::api::kv2::requests::SetConfigurationRequest::builder().max_versions(4u64),
            ),
        )
        .await
        .expect("kv2 config set");
        assert_eq!(
            vaultrs::kv2::config::read(&root, "secret")
                .await
                .expect("kv2 config read")
                .max_versions,
            4
        );

        vaultrs::kv2::delete_metadata(&root, "secret", "vrs/db")
            .await
            .expect("delete metadata");
        let err = vaultrs::kv2::read_metadata(&root, "secret", "vrs/db")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(404), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn transit_keys_encrypt_decrypt_sign() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        vaultrs::sys::mount::enable(&root, "transit", "transit", None)
            .await
            .unwrap();
        vaultrs::transit::key::create(&root, "transit", "vrs-aes", None)
            .await
            .expect("create key");
        let key = vaultrs::transit::key::read(&root, "transit", "vrs-aes")
            .await
            .expect("read key deserialises");
        assert!(matches!(key.key_type, KeyType::Aes256Gcm96));
        assert!(key.supports_encryption);
        let keys = vaultrs::transit::key::list(&root, "transit")
            .await
            .expect("list keys");
        assert!(keys.keys.contains(&"vrs-aes".to_string()));

        let plaintext = B64.encode(b"the payload");
        let enc = vaultrs::transit::data::encrypt(&root, "transit", "vrs-aes", &plaintext, None)
            .await
            .expect("encrypt");
        assert!(
            enc.ciphertext.starts_with("vault:v1:"),
            "{}",
            enc.ciphertext
        );
        let dec =
            vaultrs::transit::data::decrypt(&root, "transit", "vrs-aes", &enc.ciphertext, None)
                .await
                .expect("decrypt");
        assert_eq!(dec.plaintext, plaintext);

        vaultrs::transit::key::rotate(&root, "transit", "vrs-aes")
            .await
            .expect("rotate");
        let rewrapped =
            vaultrs::transit::data::rewrap(&root, "transit", "vrs-aes", &enc.ciphertext, None)
                .await
                .expect("rewrap");
        assert!(rewrapped.ciphertext.starts_with("vault:v2:"));
        let dec = vaultrs::transit::data::decrypt(
            &root,
            "transit",
            "vrs-aes",
            &rewrapped.ciphertext,
            None,
        )
        .await
        .unwrap();
        assert_eq!(dec.plaintext, plaintext);

        let random = vaultrs::transit::generate::random_bytes(
            &root,
            "transit",
            OutputFormat::Base64,
            RandomBytesSource::Platform,
            None,
        )
        .await
        .expect("random bytes");
        assert_eq!(B64.decode(random.random_bytes).unwrap().len(), 32);
        let hash = vaultrs::transit::generate::hash(&root, "transit", &B64.encode(b"abc"), None)
            .await
            .expect("hash");
        assert_eq!(
            hash.sum,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mac = vaultrs::transit::generate::hmac(&root, "transit", "vrs-aes", &plaintext, None)
            .await
            .expect("hmac");
        assert!(mac.hmac.starts_with("vault:v2:"));

        vaultrs::transit::key::create(
            &root,
            "transit",
            "vrs-ed",
            Some(CreateKeyRequest::builder().key_type(KeyType::Ed25519)),
        )
        .await
        .expect("create ed25519");
        let key = vaultrs::transit::key::read(&root, "transit", "vrs-ed")
            .await
            .expect("read ed25519 key deserialises");
        assert!(key.supports_signing);
        let sig = vaultrs::transit::data::sign(&root, "transit", "vrs-ed", &plaintext, None)
            .await
            .expect("sign");
        assert!(sig.signature.starts_with("vault:v1:"));
        let ok = vaultrs::transit::data::verify(
            &root,
            "transit",
            "vrs-ed",
            &plaintext,
            Some(
                vaultrs::api::transit::requests::VerifySignedDataRequest::builder()
                    .signature(sig.signature.clone()),
            ),
        )
        .await
        .expect("verify");
        assert!(ok.valid);
        let bad = vaultrs::transit::data::verify(
            &root,
            "transit",
            "vrs-ed",
            &B64.encode(b"forged"),
            Some(
                vaultrs::api::transit::requests::VerifySignedDataRequest::builder()
                    .signature(sig.signature),
            ),
        )
        .await
        .expect("verify forged");
        assert!(!bad.valid);

        vaultrs::transit::key::update(
            &root,
            "transit",
            "vrs-aes",
            Some(
                vaultrs::api::transit::requests::UpdateKeyConfigurationRequest::builder()
                    .deletion_allowed(true),
            ),
        )
        .await
        .expect("update key config");
        vaultrs::transit::key::delete(&root, "transit", "vrs-aes")
            .await
            .expect("delete key");
        let err = vaultrs::transit::key::read(&root, "transit", "vrs-aes")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(404), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn tokens_create_lookup_renew_revoke() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        vaultrs::sys::policy::set(
            &root,
            "vrs-reader",
            "path \"secret/data/vrs/*\" { capabilities = [\"read\"] }",
        )
        .await
        .unwrap();
        let auth = vaultrs::token::new(
            &root,
            Some(
                CreateTokenRequest::builder()
                    .policies(vec!["vrs-reader".to_string()])
                    .ttl("1h")
                    .meta(HashMap::from([("app".to_string(), "x".to_string())])),
            ),
        )
        .await
        .expect("token create");
        assert!(!auth.client_token.is_empty());
        assert_eq!(auth.lease_duration, 3600);
        let mut policies = auth.policies.clone();
        policies.sort();
        assert_eq!(policies, ["default", "vrs-reader"]);

        let looked = vaultrs::token::lookup(&root, &auth.client_token)
            .await
            .expect("lookup deserialises");
        assert_eq!(looked.id, auth.client_token);
        assert_eq!(looked.accessor, auth.accessor);
        assert!(!looked.orphan);
        let by_accessor = vaultrs::token::lookup_accessor(&root, &auth.accessor)
            .await
            .expect("lookup-accessor");
        assert_eq!(by_accessor.id, "");

        let mut me = client(&server, &auth.client_token);
        let me_info = vaultrs::token::lookup_self(&me).await.expect("lookup-self");
        assert_eq!(me_info.id, auth.client_token);
        assert!(me_info.ttl > 0 && me_info.ttl <= 3600);
        let renewed = vaultrs::token::renew_self(&me, Some("30m"))
            .await
            .expect("renew-self");
        assert!(renewed.lease_duration > 0 && renewed.lease_duration <= 1800);

        let orphan = vaultrs::token::new_orphan(&root, None)
            .await
            .expect("create-orphan");
        assert!(orphan.orphan);

        vaultrs::token::revoke_self(&me).await.expect("revoke-self");
        let err = vaultrs::token::lookup_self(&me).await.unwrap_err();
        assert_eq!(status_of(&err), Some(403), "{err:?}");

        let other = vaultrs::token::new(&root, None).await.unwrap();
        vaultrs::token::revoke_accessor(&root, &other.accessor)
            .await
            .expect("revoke-accessor");
        me.set_token(&other.client_token);
        assert!(vaultrs::token::lookup_self(&me).await.is_err());
        vaultrs::token::revoke(&root, &orphan.client_token)
            .await
            .expect("revoke");
        assert!(
            vaultrs::token::lookup(&root, &orphan.client_token)
                .await
                .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn approle_login() {
    let (_dir, server) = dev_server("vaultrs-root");
    let root = client(&server, "vaultrs-root");
    bounded(async {
        vaultrs::sys::auth::enable(&root, "approle", "approle", None)
            .await
            .unwrap();
        vaultrs::sys::policy::set(
            &root,
            "vrs-app",
            "path \"secret/data/app/*\" { capabilities = [\"read\"] }",
        )
        .await
        .unwrap();
        vaultrs::kv2::set(
            &root,
            "secret",
            "app/config",
            &HashMap::from([("db", "postgres://")]),
        )
        .await
        .unwrap();
        vaultrs::auth::approle::role::set(
            &root,
            "approle",
            "vrs-role",
            Some(
                SetAppRoleRequest::builder()
                    .token_policies(vec!["vrs-app".to_string()])
                    .token_ttl("20m"),
            ),
        )
        .await
        .expect("role set");
        let role = vaultrs::auth::approle::role::read(&root, "approle", "vrs-role")
            .await
            .expect("role read deserialises");
        assert_eq!(role.token_policies, ["vrs-app"]);
        assert_eq!(role.token_ttl, 1200);
        let roles = vaultrs::auth::approle::role::list(&root, "approle")
            .await
            .expect("role list");
        assert!(roles.keys.contains(&"vrs-role".to_string()));
        let role_id = vaultrs::auth::approle::role::read_id(&root, "approle", "vrs-role")
            .await
            .expect("role-id")
            .role_id;
        let secret = vaultrs::auth::approle::role::secret::generate(
            &root,
            "approle",
            "vrs-role",
            Some(GenerateNewSecretIDRequest::builder().metadata("{\"host\":\"ci\"}")),
        )
        .await
        .expect("secret-id");

        let mut app = client(&server, "");
        let auth = vaultrs::auth::approle::login(&app, "approle", &role_id, &secret.secret_id)
            .await
            .expect("approle login");
        assert_eq!(auth.lease_duration, 1200);
        let mut policies = auth.policies.clone();
        policies.sort();
        assert_eq!(policies, ["default", "vrs-app"]);
        app.set_token(&auth.client_token);
        let config: HashMap<String, String> = vaultrs::kv2::read(&app, "secret", "app/config")
            .await
            .expect("read with the approle token");
        assert_eq!(config["db"], "postgres://");
        let err = vaultrs::kv2::set(&app, "secret", "app/config", &HashMap::from([("db", "x")]))
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(403), "{err:?}");

        let err = vaultrs::auth::approle::login(
            &client(&server, ""),
            "approle",
            &role_id,
            "wrong-secret-id-value",
        )
        .await
        .unwrap_err();
        assert_eq!(status_of(&err), Some(400), "{err:?}");
    })
    .await;
}
