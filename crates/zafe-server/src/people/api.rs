//! HTTP handlers for people's routes (the table is `sys::ROUTES`):
//!
//! | route | access |
//! |---|---|
//! | `GET/POST sys/setup` | public |
//! | `POST auth/user/login`, `auth/user/refresh`, `auth/user/register` | public |
//! | `POST auth/user/logout`, `GET auth/user/self`, `POST auth/user/password`, `GET auth/user/sessions` | a person's session |
//! | `sys/users`, `sys/users/<id or email>` | sudo (server administrators) |
//!
//! A failed password login always answers 400 `{"errors": ["invalid email
//! or password"]}`, whether the account is unknown, the password wrong, the
//! account disabled or the attempt rate-limited, and takes about as long.

use std::sync::Arc;

use serde_json::{Value, json};
use zafe_engine::Status;

use super::password::{self, Password};
use super::sessions::{self, Issued, Origin, Refreshed};
use super::users::{self, User};
use super::{config::RegistrationMode, setup};
use crate::barrier::BarrierError;
use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};

/// A user key that never exists (the nil UUID is never issued).
const NO_SUCH_USER: &str = "sys/people/user/00000000-0000-0000-0000-000000000000";

/// The one answer to every failed password login.
pub(crate) const LOGIN_REFUSED: &str = "invalid email or password";

/// People's endpoints, one per route in `sys::ROUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `sys/setup`: whether first-run setup is still needed (read), and
    /// completing it with the setup token, which creates the first
    /// administrator (write) (public).
    Setup,
    /// `auth/user/login`: email and password, then a second factor if
    /// the account has one (public).
    Login,
    /// `auth/user/refresh`: a refresh token for a new pair (public).
    Refresh,
    /// `auth/user/register`: people creating their own account, with an
    /// invitation or an allowed email domain, as `[auth.registration]`
    /// permits (public).
    Register,
    /// `auth/user/logout`: ends the caller's session family.
    Logout,
    /// `auth/user/self`: the caller's own account.
    SelfInfo,
    /// `auth/user/password`: the caller changes their password.
    Password,
    /// `auth/user/sessions`: the caller's sessions.
    Sessions,
    /// `sys/users`: list and create accounts (sudo).
    Users,
    /// `sys/users/<id or email>`: one account (sudo).
    User,
}

/// Serves one people route; `sys::dispatch` calls it after the core has
/// checked the route's access level (`caller` is `None` on public routes).
pub(crate) async fn handle(
    core: &Arc<Core>,
    endpoint: Endpoint,
    rest: &str,
    req: Request,
    caller: Option<Caller>,
) -> Result<Response> {
    match (endpoint, req.operation) {
        (Endpoint::Setup, Operation::Read) => Ok(Response::Json(
            Status::OK,
            json!({ "setup_required": setup::required(core).await? }),
        )),
        (Endpoint::Setup, _) => complete_setup(core, &req).await,
        (Endpoint::Login, _) => login(core, &req).await,
        (Endpoint::Refresh, _) => refresh(core, &req).await,
        (Endpoint::Register, _) => register(core, &req).await,
        (Endpoint::Logout, _) => {
            let me = session_caller(caller.as_ref())?;
            sessions::revoke_family(&core.barrier, &me.session_id).await?;
            tracing::info!(request_id = %req.request_id, user_id = %me.user_id, "logged out");
            Ok(Response::NoContent)
        }
        (Endpoint::SelfInfo, _) => {
            let me = session_caller(caller.as_ref())?;
            let (user, _) = users::read(&core.barrier, &me.user_id)
                .await?
                .ok_or(Error::PermissionDenied)?;
            let mut data = user.to_json();
            data["session_id"] = json!(me.session_id);
            Ok(Response::data(data))
        }
        (Endpoint::Password, _) => change_own_password(core, &req, caller.as_ref()).await,
        (Endpoint::Sessions, _) => {
            let me = session_caller(caller.as_ref())?;
            let list = sessions::list_for_user(&core.barrier, &me.user_id, core.now_secs()).await?;
            let data: Vec<Value> = list
                .iter()
                .map(|f| f.to_json(Some(&me.session_id)))
                .collect();
            Ok(Response::data(json!({ "sessions": data })))
        }
        (Endpoint::Users, Operation::Write) => create_user(core, &req, caller.as_ref()).await,
        (Endpoint::Users, _) => list_users(core).await,
        (Endpoint::User, op) => user(core, &req, rest.trim_end_matches('/'), op).await,
    }
}

fn session_caller(caller: Option<&Caller>) -> Result<&super::UserCaller> {
    caller.and_then(|c| c.person()).ok_or_else(|| {
        Error::bad_request("this endpoint needs a person's session token (zafe login --email)")
    })
}

/// A required string field.
fn string_field<'a>(req: &'a Request, name: &str) -> Result<&'a str> {
    match req.field(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Error::bad_request(format!("{name} is required"))),
        Some(_) => Err(Error::bad_request(format!("{name} must be a string"))),
    }
}

fn optional_string<'a>(req: &'a Request, name: &str) -> Result<Option<&'a str>> {
    match req.field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::bad_request(format!("{name} must be a string"))),
    }
}

fn optional_bool(req: &Request, name: &str) -> Result<Option<bool>> {
    match req.field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::bad_request(format!("{name} must be true or false"))),
    }
}

fn origin(req: &Request, method: &'static str) -> Origin {
    Origin {
        client_ip: req.client_ip,
        user_agent: req.user_agent.clone(),
        method,
    }
}

/// The Vault-shaped login answer: the tokens, shown once.
/// `now`: Unix seconds, by the core's clock.
pub(crate) fn auth_reply(user: &User, issued: &Issued, now: i64) -> Response {
    let policies: Vec<String> = if user.admin {
        vec!["root".into()]
    } else {
        user.policies.clone()
    };
    let auth = json!({
        "client_token": issued.access_token.as_str(),
        "refresh_token": issued.refresh_token.as_str(),
        "accessor": issued.session_id,
        "session_id": issued.session_id,
        "lease_duration": (issued.access_expires_at - now).max(0),
        "refresh_expires_in": (issued.refresh_expires_at - now).max(0),
        "renewable": false,
        "policies": policies,
        "token_policies": policies,
        "metadata": { "user_id": user.id, "email": user.email },
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
    });
    Response::Vault {
        status: Status::OK,
        data: None,
        auth: Some(auth),
        warnings: Vec::new(),
    }
}

/// Checks an email and password (R-AUTH-2, R-AUTH-3) and returns the
/// account. Every failure is the same [`LOGIN_REFUSED`], after about the
/// same time. This is the step a second factor follows.
pub(crate) async fn verify_password_login(
    core: &Core,
    raw_email: &str,
    password: &Password,
    client_ip: std::net::IpAddr,
) -> Result<User> {
    let refused = || Error::bad_request(LOGIN_REFUSED);
    if !core.config.password_login_enabled() {
        return Err(Error::bad_request(
            "password login is disabled on this server",
        ));
    }
    // Not an address any account can have: the same answer, normalised as
    // far as it goes so that the limits still key on it.
    let email =
        users::normalize_email(raw_email).unwrap_or_else(|_| raw_email.trim().to_lowercase());
    if password.expose().len() > password::MAX_PASSWORD_BYTES {
        return Err(refused());
    }
    let hasher = &core.people.hasher;
    if let Err(reason) = core.people.limits.check(&email, client_ip) {
        tracing::warn!(%client_ip, ?reason, "login attempt refused by the rate limit");
        // As long as a verification would have taken, without the work.
        tokio::time::sleep(hasher.typical_verify_time()).await;
        return Err(refused());
    }
    let pepper = core.password_pepper()?;
    let key = core.token_key()?;
    let found = users::find_by_email(&core.barrier, &key, &email).await?;
    // The same storage work either way: a known address costs two reads
    // that find something (index, user), an unknown one a read that finds
    // nothing, which costs more (the read cache keeps only what exists).
    // So each side does the other's kind of read too: two hits, one miss.
    if found.is_some() {
        let _ = core.barrier.get(NO_SUCH_USER).await?;
    } else {
        let _ = core.barrier.get(crate::mounts::TABLE_KEY).await?;
        let _ = core.barrier.get(crate::mounts::TABLE_KEY).await?;
    }
    let verified = match &found {
        Some((user, _)) if user.password_hash.is_some() => {
            let phc = user.password_hash.as_deref().expect("checked");
            hasher.verify(&pepper, password, phc).await? && !user.disabled
        }
        // The same Argon2 work as for a real account.
        _ => {
            hasher.verify_dummy(&pepper, password).await?;
            false
        }
    };
    let Some((user, _)) = found.filter(|_| verified) else {
        core.people.limits.failed(&email, client_ip);
        return Err(refused());
    };
    core.people.limits.succeeded(&email, client_ip);
    let phc = user.password_hash.clone().unwrap_or_default();
    if hasher.needs_rehash(&phc) {
        // Parameters changed since this hash was made: re-hash now that we
        // have the password. Losing a race with a password change is fine.
        let fresh = hasher.hash(&pepper, password).await?;
        let result = users::update(&core.barrier, &user.id, core.now_secs(), |u| {
            if u.password_hash.as_deref() == Some(phc.as_str()) {
                u.password_hash = Some(fresh.clone());
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(user_id = %user.id, error = %e, "could not re-hash a password");
        }
    }
    Ok(user)
}

async fn login(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let email = string_field(req, "email")?;
    let password = Password::new(string_field(req, "password")?);
    let user = verify_password_login(core, email, &password, req.client_ip).await?;
    // R-AUTH-9: with TOTP on, a code (or a recovery code) too.
    if let Some(mfa_required) = super::totp::second_factor(core, req, &user).await? {
        return Ok(mfa_required);
    }
    sessions::sweep_expired(&core.barrier, &user.id, core.now_secs()).await?;
    let issued = sessions::issue(
        &core.barrier,
        &core.token_key()?,
        &core.config.auth.sessions,
        &user,
        &origin(req, "password"),
        core.now_secs(),
    )
    .await?;
    tracing::info!(request_id = %req.request_id, user_id = %user.id, session_id = %issued.session_id, "logged in with a password");
    Ok(auth_reply(&user, &issued, core.now_secs()))
}

async fn refresh(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let presented = string_field(req, "refresh_token")?;
    let key = core.token_key()?;
    match sessions::refresh(
        &core.barrier,
        &key,
        &core.config.auth.sessions,
        presented,
        core.now_secs(),
    )
    .await?
    {
        Refreshed::Rotated(issued) => {
            let (user, _) = match sessions_user(core, &issued).await? {
                Some(u) => u,
                None => return Err(Error::bad_request("invalid or expired refresh token")),
            };
            Ok(auth_reply(&user, &issued, core.now_secs()))
        }
        Refreshed::Invalid => Err(Error::bad_request("invalid or expired refresh token")),
        Refreshed::Reused {
            session_id,
            user_id,
        } => {
            // The audit entry of this request records the message below.
            tracing::warn!(
                request_id = %req.request_id,
                %session_id,
                %user_id,
                client_ip = %req.client_ip,
                "a rotated refresh token was used again: the whole session was revoked"
            );
            Err(Error::bad_request(
                "refresh token re-use detected: this session has been revoked; log in again",
            ))
        }
    }
}

async fn sessions_user(core: &Core, issued: &Issued) -> Result<Option<(User, i64)>> {
    let key = core.token_key()?;
    match sessions::authenticate(&core.barrier, &key, &issued.access_token, core.now_secs()).await?
    {
        Some(entry) => {
            let id = entry
                .person()
                .map(|u| u.user_id.clone())
                .unwrap_or_default();
            users::read(&core.barrier, &id).await
        }
        None => Ok(None),
    }
}

async fn complete_setup(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let token = string_field(req, "token")?;
    let email = users::normalize_email(string_field(req, "email")?)?;
    let password = Password::new(string_field(req, "password")?);
    let display_name = optional_string(req, "display_name")?;
    if let Some(name) = display_name {
        users::check_display_name(name)?;
    }
    let key = core.token_key()?;
    // Check the token before any expensive work.
    setup::consume_writes(core, &key, token).await?;
    if !setup::required(core).await? {
        return Err(Error::bad_request(setup::SETUP_REFUSED));
    }
    password::check_policy(password.expose(), &email)?;
    let phc = core
        .people
        .hasher
        .hash(&core.password_pepper()?, &password)
        .await?;
    let mut user = User::new(&email, display_name, Some(phc), core.now_secs());
    user.admin = true;
    // The operator holding the setup link chose this address.
    user.email_verified = true;
    // Read again after hashing: the commit is conditional on exactly this
    // generation of the setup record, so of two racing setups one fails.
    let mut writes = setup::consume_writes(core, &key, token).await?;
    writes.extend(users::create_writes(&key, &user));
    setup::commit_consuming(core, writes, setup::SETUP_REFUSED).await?;
    tracing::warn!(request_id = %req.request_id, user_id = %user.id, client_ip = %req.client_ip, "first administrator created with the setup link");
    let issued = sessions::issue(
        &core.barrier,
        &key,
        &core.config.auth.sessions,
        &user,
        &origin(req, "setup"),
        core.now_secs(),
    )
    .await?;
    Ok(auth_reply(&user, &issued, core.now_secs()))
}

async fn register(core: &Arc<Core>, req: &Request) -> Result<Response> {
    if !core.config.password_login_enabled() {
        return Err(Error::bad_request(
            "password accounts are disabled on this server: log in with OIDC (zafe login --oidc)",
        ));
    }
    let registration = &core.config.auth.registration;
    if registration.mode == RegistrationMode::Off {
        return Err(Error::bad_request(
            "registration is off on this server: ask an administrator for an account",
        ));
    }
    let email = users::normalize_email(string_field(req, "email")?)?;
    let password = Password::new(string_field(req, "password")?);
    let display_name = optional_string(req, "display_name")?;
    if let Some(name) = display_name {
        users::check_display_name(name)?;
    }
    // Registration is public and hashes a password: without the login
    // limits (per client address, per address typed) anyone could keep the
    // server's CPUs busy with Argon2 (R-AUTH-3).
    if let Err(reason) = core.people.limits.check(&email, req.client_ip) {
        tracing::warn!(client_ip = %req.client_ip, ?reason, "registration refused by the rate limit");
        return Err(Error::TooManyRequests(
            "too many attempts from this address; try again later".into(),
        ));
    }
    let key = core.token_key()?;
    let invited = optional_string(req, "invite_token")?.is_some();
    if !invited && setup::required(core).await? {
        // The first account must be the administrator made with the setup
        // link; a stranger registering first would also end the link (R-AUTH-13).
        return Err(Error::bad_request(
            "no administrator exists yet: the first account is created with the setup link",
        ));
    }
    let consume = match optional_string(req, "invite_token")? {
        Some(invite) => setup::consume_invite_writes(core, &key, invite, &email).await?,
        None if registration.allows_domain_of(&email) => Vec::new(),
        None if registration.mode == RegistrationMode::Invite => {
            return Err(Error::bad_request("registration needs an invitation"));
        }
        None => {
            return Err(Error::bad_request(
                "this email domain may not register here; ask an administrator for an invitation",
            ));
        }
    };
    password::check_policy(password.expose(), &email)?;
    let phc = core
        .people
        .hasher
        .hash(&core.password_pepper()?, &password)
        .await?;
    let mut user = User::new(&email, display_name, Some(phc), core.now_secs());
    // An invitation was sent to this address (and is bound to it), so its
    // use proves the address; a self-registration proves nothing.
    user.email_verified = invited;
    let mut writes = consume;
    writes.extend(users::create_writes(&key, &user));
    if invited {
        // An invitation names its address and proves intent: its holder
        // may be told plainly what went wrong.
        setup::commit_consuming(core, writes, setup::INVITE_REFUSED).await?;
        tracing::info!(request_id = %req.request_id, user_id = %user.id, "account registered with an invitation");
    } else {
        // Self-registration answers the same whether or not the address
        // already had an account (after the same Argon2 work), so it cannot
        // be used to find out who has one (R-AUTH-3). An existing account is
        // left exactly as it was.
        match core.barrier.commit(writes).await {
            Ok(()) => {
                tracing::info!(request_id = %req.request_id, user_id = %user.id, "account registered")
            }
            Err(BarrierError::Conflict { .. }) => {
                tracing::info!(request_id = %req.request_id, "registration of an address that already has an account; nothing changed")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Response::data(json!({
        "email": email,
        "message": "registration received: log in with this address and password. An address that already had an account is not changed.",
    })))
}

async fn change_own_password(
    core: &Arc<Core>,
    req: &Request,
    caller: Option<&Caller>,
) -> Result<Response> {
    let me = session_caller(caller)?;
    let current = Password::new(string_field(req, "current_password")?);
    let new = Password::new(string_field(req, "new_password")?);
    // The same checks as a login: a stolen session cannot guess its way to
    // the password any faster.
    verify_password_login(core, &me.email, &current, req.client_ip)
        .await
        .map_err(|e| match e {
            Error::BadRequest(_) => Error::bad_request("the current password is wrong"),
            other => other,
        })?;
    password::check_policy(new.expose(), &me.email)?;
    let ended = set_password(core, &me.user_id, &new, Some(&me.session_id)).await?;
    tracing::info!(request_id = %req.request_id, user_id = %me.user_id, ended, "password changed; other sessions ended");
    Ok(Response::data(json!({ "sessions_ended": ended })))
}

/// Stores a new password and ends every session of the user but `keep`.
async fn set_password(
    core: &Core,
    user_id: &str,
    new: &Password,
    keep: Option<&str>,
) -> Result<usize> {
    let phc = core
        .people
        .hasher
        .hash(&core.password_pepper()?, new)
        .await?;
    users::update(&core.barrier, user_id, core.now_secs(), |u| {
        u.password_hash = Some(phc.clone());
        u.password_changed_at = Some(core.now_secs());
        Ok(())
    })
    .await?;
    sessions::revoke_all_for_user(&core.barrier, user_id, keep).await
}

async fn list_users(core: &Arc<Core>) -> Result<Response> {
    let all = users::list(&core.barrier, crate::engine::MAX_LIST).await?;
    let keys: Vec<&str> = all.iter().map(|u| u.id.as_str()).collect();
    let info: serde_json::Map<String, Value> = all
        .iter()
        .map(|u| {
            (
                u.id.clone(),
                json!({ "email": u.email, "display_name": u.display_name, "admin": u.admin, "disabled": u.disabled }),
            )
        })
        .collect();
    Ok(Response::data(json!({ "keys": keys, "key_info": info })))
}

fn policies_field(req: &Request) -> Result<Option<Vec<String>>> {
    let list = match req.field("policies") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| Error::bad_request("policies must be strings"))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(Value::String(s)) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Some(_) => return Err(Error::bad_request("policies must be a list of names")),
    };
    if list.iter().any(|p| p == "root") {
        return Err(Error::bad_request(
            "the root policy cannot be given to a person: make them an administrator (admin=true)",
        ));
    }
    Ok(Some(list))
}

async fn create_user(core: &Arc<Core>, req: &Request, caller: Option<&Caller>) -> Result<Response> {
    let email = users::normalize_email(string_field(req, "email")?)?;
    let key = core.token_key()?;
    if optional_bool(req, "invite")? == Some(true) {
        if core.config.auth.registration.mode == RegistrationMode::Off {
            return Err(Error::bad_request(
                "registration is off, so an invitation could not be used: create the account \
                 (zafe user create), or set [auth.registration] mode = \"invite\"",
            ));
        }
        let ttl = match req.field("ttl") {
            None | Some(Value::Null) => core.config.auth.sessions.invite_ttl_secs,
            Some(v) => crate::mounts::parse_ttl(v)? as i64,
        };
        if ttl <= 0 {
            return Err(Error::bad_request("ttl must be greater than zero"));
        }
        if users::find_by_email(&core.barrier, &key, &email)
            .await?
            .is_some()
        {
            return Err(Error::bad_request(
                "an account with this email address already exists",
            ));
        }
        let created_by = caller
            .map(|c| c.token().display_name.clone())
            .unwrap_or_default();
        let (token, invite) = setup::create_invite(core, &email, ttl, &created_by).await?;
        let url = setup::setup_url(core, "").replace("/ui/setup#token=", "/ui/register#invite=");
        return Ok(Response::data(json!({
            "email": invite.email,
            "invite_token": token.as_str(),
            "url": format!("{url}{}", token.as_str()),
            "expire_time": crate::tokens::rfc3339(invite.expires_at),
        })));
    }
    let display_name = optional_string(req, "display_name")?;
    if let Some(name) = display_name {
        users::check_display_name(name)?;
    }
    let phc = match optional_string(req, "password")? {
        Some(p) => {
            let password = Password::new(p);
            password::check_policy(password.expose(), &email)?;
            Some(
                core.people
                    .hasher
                    .hash(&core.password_pepper()?, &password)
                    .await?,
            )
        }
        None => None,
    };
    let mut user = User::new(&email, display_name, phc, core.now_secs());
    // An administrator chose this address for this person.
    user.email_verified = true;
    user.admin = optional_bool(req, "admin")?.unwrap_or(false);
    user.policies = policies_field(req)?.unwrap_or_default();
    users::create(&core.barrier, &key, &user).await?;
    tracing::info!(request_id = %req.request_id, user_id = %user.id, admin = user.admin, "account created by an administrator");
    Ok(Response::data(user.to_json()))
}

async fn user(core: &Arc<Core>, req: &Request, which: &str, op: Operation) -> Result<Response> {
    let key = core.token_key()?;
    let (found, _) = users::find(&core.barrier, &key, which)
        .await?
        .ok_or_else(|| Error::NotFound("no such user".into()))?;
    match op {
        Operation::Read => {
            let mut data = found.to_json();
            data["sessions"] = json!(
                sessions::list_for_user(&core.barrier, &found.id, core.now_secs())
                    .await?
                    .iter()
                    .map(|f| f.to_json(None))
                    .collect::<Vec<_>>()
            );
            Ok(Response::data(data))
        }
        Operation::Delete => {
            // The deletion commits only if the other administrator it relies
            // on is unchanged (two administrators deleting each other at once:
            // one fails, retries and is refused).
            let mut deleted = false;
            for _ in 0..8 {
                let mut writes = users::delete_writes(&key, &found);
                if found.admin && !found.disabled {
                    let (witness, generation) = users::another_admin(&core.barrier, &found.id)
                        .await?
                        .ok_or_else(users::last_admin)?;
                    writes.push(users::witness_write(&witness, generation));
                }
                match core.barrier.commit(writes).await {
                    Ok(()) => {
                        deleted = true;
                        break;
                    }
                    Err(BarrierError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if !deleted {
                return Err(Error::Conflict {
                    key: users::user_key(&found.id),
                });
            }
            sessions::revoke_all_for_user(&core.barrier, &found.id, None).await?;
            crate::projects::forget_person(core, &found.id).await?;
            tracing::info!(request_id = %req.request_id, user_id = %found.id, "account deleted");
            Ok(Response::NoContent)
        }
        Operation::Write => {
            let display_name = optional_string(req, "display_name")?;
            if let Some(name) = display_name {
                users::check_display_name(name)?;
            }
            let admin = optional_bool(req, "admin")?;
            let disabled = optional_bool(req, "disabled")?;
            // R-AUTH-9: an administrator can only turn a lost second factor
            // off (the person then enrols again), never on or read it.
            let totp_off = match optional_bool(req, "totp_enabled")? {
                Some(true) => {
                    return Err(Error::bad_request(
                        "totp_enabled can only be set to false: people enrol themselves",
                    ));
                }
                Some(false) => true,
                None => false,
            };
            let policies = policies_field(req)?;
            let password = optional_string(req, "password")?.map(Password::new);
            if let Some(p) = &password {
                password::check_policy(p.expose(), &found.email)?;
            }
            // The last-admin check and the change are one conditional commit.
            let updated =
                users::update_keeping_an_admin(&core.barrier, &found.id, core.now_secs(), |u| {
                    if let Some(name) = display_name {
                        u.display_name = name.to_string();
                    }
                    if let Some(a) = admin {
                        u.admin = a;
                    }
                    if let Some(d) = disabled {
                        u.disabled = d;
                    }
                    if let Some(p) = &policies {
                        u.policies = p.clone();
                    }
                    if totp_off {
                        u.totp = None;
                    }
                    Ok(())
                })
                .await?;
            if let Some(p) = &password {
                set_password(core, &found.id, p, None).await?;
            } else if disabled == Some(true) {
                sessions::revoke_all_for_user(&core.barrier, &found.id, None).await?;
            }
            tracing::info!(request_id = %req.request_id, user_id = %found.id, "account updated by an administrator");
            Ok(Response::data(updated.to_json()))
        }
        _ => Err(Error::MethodNotAllowed("unsupported operation".into())),
    }
}
