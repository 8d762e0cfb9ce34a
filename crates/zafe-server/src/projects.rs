//! Projects, their environments and their members (R-ACL-2, R-KV-2;
//! docs/design/people-and-workflow.md).
//!
//! A project is a named slice of one KV v2 mount: its secrets live at
//! `<mount>/data/<slug>/<env>/<KEY>`. People are members of a project with
//! one role; a role is an HCL policy template over the project's paths
//! ([`Role::policy_hcl`]), compiled by the one policy engine through
//! `AclCache::acl_for_generated` (in `policies`). `Core::authorize`
//! builds a person's ACL per request from [`grants_for`] (one read) plus the
//! extra policies an administrator gave them.
//!
//! Records behind the barrier:
//!
//! ```text
//! sys/projects/project/<slug>              the project (its generation orders every membership change)
//! sys/projects/id/<uuid>                   project id → slug
//! sys/projects/tag/<tag>/<slug>            projects by tag (service-account scopes)
//! sys/projects/member/<slug>/<user_id>     a membership: role, email, added by/at
//! sys/projects/user/<user_id>              the same memberships by person: what the ACL is built from
//! ```
//!
//! Every change is one atomic commit that also rewrites the project record
//! at the generation it was read at, so two concurrent changes to one
//! project cannot both commit: two creations of a slug, or two admins
//! removing each other (the last admin always stays).
//!
//! A person who is not a member (and not a server administrator) gets the
//! same 404, [`hidden`], for everything about a project, whether it exists
//! or not: existence is not revealed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_engine::Status;

use crate::barrier::{BarrierError, Expect, Write};
use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::engine::MAX_LIST;
use crate::error::{Error, Result};
use crate::policies::Capability;

const PROJECT_PREFIX: &str = "sys/projects/project/";
const ID_PREFIX: &str = "sys/projects/id/";
const TAG_PREFIX: &str = "sys/projects/tag/";
const MEMBER_PREFIX: &str = "sys/projects/member/";
const USER_PREFIX: &str = "sys/projects/user/";

/// Environments a project gets when the request names none.
pub const DEFAULT_ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];
/// The KV mount a project lives on unless it names another.
pub const DEFAULT_MOUNT: &str = "secret";
const MAX_ENVIRONMENTS: usize = 64;
const MAX_TAGS: usize = 32;
/// Retries of a commit that lost to a concurrent change of the same project.
const MAX_ATTEMPTS: usize = 32;
/// A purge walks at most this many secrets (it is refused beyond, with
/// nothing deleted, rather than half done).
const MAX_PURGE: usize = 100_000;

/// The KV v2 endpoints whose second segment is a project slug.
const KV_ENDPOINTS: [&str; 5] = ["data", "metadata", "delete", "undelete", "destroy"];

/// The one answer for a project that does not exist or that the caller may
/// not know about. Both cases must stay byte-for-byte identical.
/// The project rule the core holds (see [`crate::core::ProjectRule`]).
pub fn rule() -> Arc<dyn crate::core::ProjectRule> {
    Arc::new(Rule)
}

struct Rule;

#[async_trait::async_trait]
impl crate::core::ProjectRule for Rule {
    async fn role_policies(&self, core: &Core, user_id: &str) -> Result<Vec<(String, String)>> {
        Ok(grants_for(core, user_id)
            .await?
            .iter()
            .map(Grant::policy)
            .collect())
    }

    async fn check_visible(
        &self,
        core: &Core,
        user_id: &str,
        path: &str,
        router: Option<&crate::mounts::Router>,
    ) -> Result<()> {
        let Some(slug) = slug_in_path(path, router) else {
            return Ok(());
        };
        if grants_for(core, user_id)
            .await?
            .iter()
            .any(|g| g.slug == slug)
        {
            Ok(())
        } else {
            Err(hidden())
        }
    }

    async fn agent_acl(
        &self,
        core: &Core,
        agent: &crate::agents::Agent,
    ) -> Result<zafe_core::policy::Acl> {
        let mut current = agent.clone();
        let mount = match read(core, &agent.project).await? {
            Some((project, _)) if project.id == agent.project_id => {
                current
                    .environments
                    .retain(|e| project.environments.contains(e));
                project.mount
            }
            // Deleted, or deleted and created again under the same name.
            _ => {
                current.environments.clear();
                DEFAULT_MOUNT.to_string()
            }
        };
        crate::agents::policy(&current, &mount)
    }

    async fn account_acl(
        &self,
        core: &Core,
        account: &crate::service_accounts::ServiceAccount,
    ) -> Result<zafe_core::policy::Acl> {
        service_account_acl(core, account).await
    }
}

/// The one answer for a project a person may not know about: the same 404 whether it exists
/// or not.
pub fn hidden() -> Error {
    Error::NotFound("no such project".into())
}

// ---- roles --------------------------------------------------------------------

/// A role on a project, weakest first: each grants everything the previous does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and lists the project's secrets.
    Readonly,
    /// Also writes secrets.
    Member,
    /// Also deletes and destroys them, and manages environments.
    Operator,
    /// Also manages members and the project itself.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 4] = [Role::Readonly, Role::Member, Role::Operator, Role::Admin];

    /// The name used in the API and in policies (`readonly`, `member`, `operator`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::Member => "member",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// A role from its name; a 400 naming the roles otherwise.
    pub fn parse(text: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "unknown role {text:?}: use admin, operator, member or readonly"
                ))
            })
    }

    /// The role's policy over project `slug` on KV mount `mount` (both
    /// validated: `validate_slug`, and a mount path of the mount table).
    pub fn policy_hcl(self, slug: &str, mount: &str) -> String {
        let (m, p) = (mount.trim_end_matches('/'), slug);
        let mut hcl = format!(
            "# role readonly\n\
             path \"{m}/data/{p}/*\" {{ capabilities = [\"read\"] }}\n\
             path \"{m}/metadata/{p}/*\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"sys/projects/{p}\" {{ capabilities = [\"read\"] }}\n\
             path \"sys/projects/{p}/environments\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"sys/projects/{p}/environments/*\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"sys/projects/{p}/members\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"sys/projects/{p}/members/*\" {{ capabilities = [\"read\", \"list\"] }}\n"
        );
        if self >= Role::Member {
            hcl.push_str(&format!(
                "# role member\n\
                 path \"{m}/data/{p}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\"] }}\n\
                 path \"{m}/delete/{p}/*\" {{ capabilities = [\"create\", \"update\"] }}\n\
                 path \"{m}/undelete/{p}/*\" {{ capabilities = [\"create\", \"update\"] }}\n"
            ));
        }
        if self >= Role::Operator {
            hcl.push_str(&format!(
                "# role operator\n\
                 path \"{m}/destroy/{p}/*\" {{ capabilities = [\"create\", \"update\"] }}\n\
                 path \"{m}/metadata/{p}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\"] }}\n\
                 path \"sys/projects/{p}/environments/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }}\n\
                 path \"sys/projects/{p}/environments\" {{ capabilities = [\"create\", \"read\", \"update\", \"list\"] }}\n"
            ));
        }
        if self >= Role::Admin {
            hcl.push_str(&format!(
                "# role admin\n\
                 path \"sys/projects/{p}\" {{ capabilities = [\"read\", \"delete\"] }}\n\
                 path \"sys/projects/{p}/members\" {{ capabilities = [\"create\", \"read\", \"update\", \"list\"] }}\n\
                 path \"sys/projects/{p}/members/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }}\n\
                 path \"sys/agents/{p}\" {{ capabilities = [\"read\", \"list\"] }}\n\
                 path \"sys/agents/{p}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }}\n"
            ));
        }
        hcl
    }
}

/// One membership as the ACL sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The project.
    pub slug: String,
    /// Its KV mount, without a trailing slash.
    pub mount: String,
    /// The person's role on it.
    pub role: Role,
}

impl Grant {
    /// (policy name, HCL) for the policy engine.
    pub fn policy(&self) -> (String, String) {
        (
            format!("project-{}-{}", self.slug, self.role.name()),
            self.role.policy_hcl(&self.slug, &self.mount),
        )
    }
}

// ---- records ------------------------------------------------------------------

/// A project: a folder of secrets on a KV mount, with environments, tags and members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    /// A random uuid, never reused (service-account scopes can name it: `project-id:<uuid>`).
    pub id: String,
    /// Its unique name: lower-case letters, digits and dashes; the folder on the mount.
    pub slug: String,
    /// The KV v2 mount, without a trailing slash.
    pub mount: String,
    /// Its environments (`dev`, `prod`, ...): folders under the project.
    pub environments: Vec<String>,
    /// Tags, which service-account scopes can name (`tag:<tag>`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who created it: an email, or a token's display name and accessor.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A person's role on a project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    /// The person's account id.
    pub user_id: String,
    /// Their email, lower-cased, as shown in member lists.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Who added them (an actor name, never a token).
    pub added_by: String,
    /// When, in Unix seconds.
    pub added_at: i64,
}

/// A person's memberships, by slug: the one record read per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserMemberships {
    projects: BTreeMap<String, UserGrant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserGrant {
    role: Role,
    mount: String,
}

fn project_key(slug: &str) -> String {
    format!("{PROJECT_PREFIX}{slug}")
}

fn member_key(slug: &str, user_id: &str) -> String {
    format!("{MEMBER_PREFIX}{slug}/{user_id}")
}

fn user_key(user_id: &str) -> String {
    format!("{USER_PREFIX}{user_id}")
}

fn tag_key(tag: &str, slug: &str) -> String {
    format!("{TAG_PREFIX}{tag}/{slug}")
}

/// `[a-z0-9][a-z0-9_-]{0,62}`: slugs, environment names and tags.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

fn validate_name(name: &str, what: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid {what} {name:?}: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

/// Who did something, for records: a person's email, else the token's
/// display name and accessor. Never a token.
pub fn actor(caller: &Caller) -> String {
    caller.engine_caller().actor()
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|_| Error::Integrity {
        key: key.to_string(),
    })
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialisable")
}

/// A project and the generation of its record.
pub async fn read(core: &Core, slug: &str) -> Result<Option<(Project, i64)>> {
    if !is_valid_name(slug) {
        return Ok(None);
    }
    let key = project_key(slug);
    Ok(match core.barrier.get(&key).await? {
        Some(record) => Some((parse(&key, &record.value)?, record.generation)),
        None => None,
    })
}

async fn read_user(core: &Core, user_id: &str) -> Result<(UserMemberships, Expect)> {
    let key = user_key(user_id);
    Ok(match core.barrier.get(&key).await? {
        Some(record) => (
            parse(&key, &record.value)?,
            Expect::Generation(record.generation),
        ),
        None => (UserMemberships::default(), Expect::Absent),
    })
}

/// A person's memberships, read from storage on every call: nothing is
/// cached, so a removed member loses access with the next request.
pub async fn grants_for(core: &Core, user_id: &str) -> Result<Vec<Grant>> {
    let (memberships, _) = read_user(core, user_id).await?;
    Ok(memberships
        .projects
        .into_iter()
        .map(|(slug, g)| Grant {
            slug,
            mount: g.mount,
            role: g.role,
        })
        .collect())
}

async fn read_member(core: &Core, slug: &str, user_id: &str) -> Result<Option<(Membership, i64)>> {
    let key = member_key(slug, user_id);
    Ok(match core.barrier.get(&key).await? {
        Some(record) => Some((parse(&key, &record.value)?, record.generation)),
        None => None,
    })
}

/// Every member of a project (bounded by what a project may hold).
async fn members(core: &Core, slug: &str) -> Result<Vec<Membership>> {
    let prefix = format!("{MEMBER_PREFIX}{slug}/");
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let ids = core.barrier.list(&prefix, &after, 500).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in &ids {
            if let Some((m, _)) = read_member(core, slug, id).await? {
                out.push(m);
            }
        }
        after = last;
    }
    Ok(out)
}

/// The project named in a request path, if the path is about one: the
/// project routes, and the KV v2 endpoints of a KV mount.
pub fn slug_in_path<'p>(path: &'p str, router: Option<&crate::mounts::Router>) -> Option<&'p str> {
    if let Some(rest) = path
        .strip_prefix("sys/projects/")
        .or_else(|| path.strip_prefix("sys/agents/"))
    {
        return rest.split('/').next().filter(|s| !s.is_empty());
    }
    let (mounted, rel) = router?.resolve(path)?;
    if mounted.entry.kind != "kv" {
        return None;
    }
    let mut segments = rel.split('/');
    let endpoint = segments.next()?;
    if !KV_ENDPOINTS.contains(&endpoint) {
        return None;
    }
    segments.next().filter(|s| !s.is_empty())
}

/// A service account's ACL (read and list only): its project scopes
/// resolved against the registry now, so that a scope follows the
/// project's mount, id and tags as they are at this request.
pub async fn service_account_acl(
    core: &Core,
    account: &crate::service_accounts::ServiceAccount,
) -> Result<zafe_core::policy::Acl> {
    use crate::service_accounts::{self as sa, Scope};
    let scopes = account
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let mut projects: Vec<(String, String)> = Vec::new();
    for scope in &scopes {
        let slugs: Vec<String> = match scope {
            Scope::Project(slug) => {
                let mount = read(core, slug)
                    .await?
                    .map_or_else(|| DEFAULT_MOUNT.to_string(), |(p, _)| p.mount);
                projects.push((slug.clone(), mount));
                continue;
            }
            Scope::ProjectId(id) => {
                let key = format!("{ID_PREFIX}{id}");
                match core.barrier.get(&key).await? {
                    Some(record) => {
                        let index: Value = parse(&key, &record.value)?;
                        index["slug"]
                            .as_str()
                            .map(str::to_string)
                            .into_iter()
                            .collect()
                    }
                    None => Vec::new(),
                }
            }
            Scope::Tag(tag) => {
                core.barrier
                    .list(&format!("{TAG_PREFIX}{tag}/"), "", MAX_LIST)
                    .await?
            }
            Scope::Path(_) => continue,
        };
        for slug in slugs {
            if let Some((p, _)) = read(core, &slug).await? {
                projects.push((p.slug, p.mount));
            }
        }
    }
    sa::compile(account, &sa::policy_for(&projects, &scopes))
}

// ---- HTTP ---------------------------------------------------------------------

fn project_json(project: &Project, role: Option<Role>) -> Value {
    json!({
        "id": project.id,
        "slug": project.slug,
        "mount": project.mount,
        "environments": project.environments,
        "tags": project.tags,
        "created_by": project.created_by,
        "created_time": crate::tokens::rfc3339(project.created_at),
        "role": role.map(Role::name),
    })
}

fn member_json(m: &Membership) -> Value {
    json!({
        "user_id": m.user_id,
        "email": m.email,
        "role": m.role.name(),
        "added_by": m.added_by,
        "added_time": crate::tokens::rfc3339(m.added_at),
    })
}

/// Page size and start from `?limit=` and `?after=`, clamped (R-ACL-3).
fn page(req: &Request) -> Result<(usize, String)> {
    let limit = match req.query("limit") {
        None | Some("") => MAX_LIST,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Error::bad_request("limit must be a positive integer"))?
            .clamp(1, MAX_LIST),
    };
    Ok((limit, req.query("after").unwrap_or_default().to_string()))
}

/// `sys/projects`: the projects the caller can see (members their own,
/// server administrators and holders of `list` on `sys/projects` all), and
/// creation.
pub async fn handle_root(core: &Arc<Core>, req: &Request, caller: &Caller) -> Result<Response> {
    match req.operation {
        Operation::Write => create(core, req, caller).await,
        _ => list_visible(core, req, caller).await,
    }
}

async fn list_visible(core: &Arc<Core>, req: &Request, caller: &Caller) -> Result<Response> {
    let (limit, after) = page(req)?;
    let sees_all = core
        .authorize(caller, "sys/projects", Capability::List, false)
        .await
        .is_ok();
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    if let Some(user) = caller.person() {
        for grant in grants_for(core, &user.user_id).await? {
            roles.insert(grant.slug, grant.role);
        }
    }
    let mut slugs: Vec<String> = if sees_all {
        core.barrier.list(PROJECT_PREFIX, &after, limit + 1).await?
    } else if caller.person().is_some() {
        roles
            .keys()
            .filter(|s| s.as_str() > after.as_str())
            .take(limit + 1)
            .cloned()
            .collect()
    } else {
        return Err(Error::PermissionDenied);
    };
    let truncated = slugs.len() > limit;
    slugs.truncate(limit);
    let mut projects = serde_json::Map::new();
    for slug in &slugs {
        if let Some((p, _)) = read(core, slug).await? {
            projects.insert(slug.clone(), project_json(&p, roles.get(slug).copied()));
        }
    }
    let warnings = truncated.then(|| {
        vec![format!(
            "only the first {limit} projects are listed; continue with ?after={}",
            slugs.last().map(String::as_str).unwrap_or_default()
        )]
    });
    Ok(Response::Vault {
        status: Status::OK,
        data: Some(json!({ "keys": projects.keys().collect::<Vec<_>>(), "projects": projects })),
        auth: None,
        warnings: warnings.unwrap_or_default(),
    })
}

fn string_list(req: &Request, field: &str, max: usize) -> Result<Option<Vec<String>>> {
    let items: Vec<String> = match req.field(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::bad_request(format!("{field} must be a list of names")))
            })
            .collect::<Result<_>>()?,
        Some(Value::String(s)) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Some(_) => {
            return Err(Error::bad_request(format!(
                "{field} must be a list of names"
            )));
        }
    };
    if items.len() > max {
        return Err(Error::bad_request(format!(
            "at most {max} {field} are allowed"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(Some(out))
}

/// The KV v2 mount a project lives on: an existing `kv` mount.
async fn check_mount(core: &Arc<Core>, raw: &str) -> Result<String> {
    let mount = raw.trim_matches('/');
    let router = core.router().await?;
    let ok = router
        .entries()
        .any(|e| e.path.trim_end_matches('/') == mount && e.kind == "kv" && !e.auth);
    if mount.is_empty() || !ok {
        return Err(Error::bad_request(format!(
            "mount {raw:?} is not a KV v2 secrets engine: enable one with `zafe secrets enable --path {mount} kv`, or leave mount out for {DEFAULT_MOUNT}"
        )));
    }
    Ok(mount.to_string())
}

/// A new project's creator becomes the admin of `<mount>/<slug>/`, with
/// read, write and purge over everything in it. When that folder already
/// holds secrets (written by KV clients, AppRole applications, another
/// team), creating the project must not hand them over (R-ACL-2, R-ACL-4):
/// only a caller who can already list the folder and read every secret in
/// it under their current ACL (root, a server administrator, its owners)
/// may wrap it in a project. Everyone else gets a 409 saying why, without
/// learning what the folder holds.
async fn refuse_foreign_secrets(
    core: &Arc<Core>,
    req: &Request,
    caller: &Caller,
    mount: &str,
    slug: &str,
) -> Result<()> {
    if caller.is_root() {
        return Ok(());
    }
    let kv = KvAccess::new(core, req, caller, mount).await?;
    let taken = || {
        Error::StateConflict(format!(
            "{mount}/{slug}/ already holds secrets that you cannot read and list: ask a server administrator to create project {slug}, or choose another slug"
        ))
    };
    // A folder too big to walk is not an empty one.
    let secrets = kv.walk(slug).await.map_err(|_| taken())?;
    if secrets.is_empty() {
        return Ok(());
    }
    core.authorize(
        caller,
        &format!("{mount}/metadata/{slug}/"),
        Capability::List,
        false,
    )
    .await
    .map_err(|_| taken())?;
    for path in &secrets {
        core.authorize(
            caller,
            &format!("{mount}/data/{path}"),
            Capability::Read,
            false,
        )
        .await
        .map_err(|_| taken())?;
    }
    Ok(())
}

/// `POST sys/projects {slug, environments?, mount?, tags?}`: server
/// administrators and holders of `create` on `sys/projects`. A person who
/// creates a project becomes its admin in the same commit.
async fn create(core: &Arc<Core>, req: &Request, caller: &Caller) -> Result<Response> {
    core.authorize(caller, "sys/projects", Capability::Create, false)
        .await?;
    let slug = req
        .field("slug")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_request("slug is required"))?
        .to_string();
    validate_name(&slug, "project slug")?;
    let environments = string_list(req, "environments", MAX_ENVIRONMENTS)?
        .unwrap_or_else(|| DEFAULT_ENVIRONMENTS.iter().map(|s| s.to_string()).collect());
    if environments.is_empty() {
        return Err(Error::bad_request(
            "a project needs at least one environment",
        ));
    }
    for env in &environments {
        validate_name(env, "environment name")?;
    }
    let tags = string_list(req, "tags", MAX_TAGS)?.unwrap_or_default();
    for tag in &tags {
        validate_name(tag, "tag")?;
    }
    let mount = match req.field("mount") {
        None | Some(Value::Null) => DEFAULT_MOUNT.to_string(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(Error::bad_request("mount must be a string")),
    };
    let mount = check_mount(core, &mount).await?;
    refuse_foreign_secrets(core, req, caller, &mount, &slug).await?;
    let project = Project {
        id: uuid::Uuid::new_v4().to_string(),
        slug: slug.clone(),
        mount: mount.clone(),
        environments,
        tags,
        created_by: actor(caller),
        created_at: core.now_secs(),
    };
    for _ in 0..MAX_ATTEMPTS {
        let mut writes = vec![
            Write::Put {
                key: project_key(&slug),
                value: to_bytes(&project),
                expect: Expect::Absent,
            },
            Write::Put {
                key: format!("{ID_PREFIX}{}", project.id),
                value: to_bytes(&json!({ "slug": slug })),
                expect: Expect::Absent,
            },
        ];
        for tag in &project.tags {
            writes.push(Write::Put {
                key: tag_key(tag, &slug),
                value: b"{}".to_vec(),
                expect: Expect::Absent,
            });
        }
        if let Some(user) = caller.person() {
            let membership = Membership {
                user_id: user.user_id.clone(),
                email: user.email.clone(),
                role: Role::Admin,
                added_by: user.email.clone(),
                added_at: project.created_at,
            };
            writes.push(Write::Put {
                key: member_key(&slug, &user.user_id),
                value: to_bytes(&membership),
                expect: Expect::Absent,
            });
            let (mut mine, expect) = read_user(core, &user.user_id).await?;
            mine.projects.insert(
                slug.clone(),
                UserGrant {
                    role: Role::Admin,
                    mount: mount.clone(),
                },
            );
            writes.push(Write::Put {
                key: user_key(&user.user_id),
                value: to_bytes(&mine),
                expect,
            });
        }
        match core.barrier.commit(writes).await {
            Ok(()) => {
                tracing::info!(request_id = %req.request_id, project = %slug, "project created");
                return Ok(Response::data(project_json(
                    &project,
                    caller.person().map(|_| Role::Admin),
                )));
            }
            Err(BarrierError::Conflict { .. }) => {
                if read(core, &slug).await?.is_some() {
                    return Err(Error::StateConflict(format!(
                        "project {slug} already exists"
                    )));
                }
                // The creator's own membership record changed meanwhile.
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        key: project_key(&slug),
    })
}

/// `sys/projects/<slug>...`. The core has already authorised the request
/// against the path (a non-member got [`hidden`] there).
pub async fn handle(
    core: &Arc<Core>,
    req: &Request,
    rest: &str,
    caller: &Caller,
) -> Result<Response> {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let slug = parts[0];
    let Some((project, _)) = read(core, slug).await? else {
        return Err(hidden());
    };
    use Operation::*;
    match (&parts[1..], req.operation) {
        ([], Read) => {
            let role = match caller.person() {
                Some(user) => read_member(core, slug, &user.user_id)
                    .await?
                    .map(|(m, _)| m.role),
                None => None,
            };
            Ok(Response::data(project_json(&project, role)))
        }
        ([], Delete) => {
            delete_project(core, req, caller, slug).await?;
            Ok(Response::NoContent)
        }
        (["environments"], Read | List) => Ok(Response::data(
            json!({ "keys": project.environments, "environments": project.environments }),
        )),
        (["environments"], Write) => {
            let env = req
                .field("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::bad_request("name is required"))?
                .to_string();
            add_environment(core, slug, &env).await?;
            Ok(Response::NoContent)
        }
        (["environments", env], Read) => {
            if project.environments.iter().any(|e| e == env) {
                Ok(Response::data(json!({ "name": env, "project": slug })))
            } else {
                Err(Error::NotFound(format!(
                    "project {slug} has no environment {env}"
                )))
            }
        }
        (["environments", env], Write) => {
            add_environment(core, slug, env).await?;
            Ok(Response::NoContent)
        }
        (["environments", env], Delete) => {
            remove_environment(core, req, caller, slug, env).await?;
            Ok(Response::NoContent)
        }
        (["members"], Read | List) => {
            let members = members(core, slug).await?;
            let (limit, after) = page(req)?;
            let mut by_email: Vec<&Membership> = members
                .iter()
                .filter(|m| m.email.as_str() > after.as_str())
                .collect();
            by_email.sort_by(|a, b| a.email.cmp(&b.email));
            by_email.truncate(limit);
            Ok(Response::data(json!({
                "keys": by_email.iter().map(|m| &m.email).collect::<Vec<_>>(),
                "members": by_email.iter().map(|m| member_json(m)).collect::<Vec<_>>(),
            })))
        }
        (["members", who], Read) => {
            let member = find_member(core, slug, who).await?.ok_or_else(|| {
                Error::NotFound(format!("{who} is not a member of project {slug}"))
            })?;
            Ok(Response::data(member_json(&member)))
        }
        (["members", who], Write) => {
            let role = Role::parse(
                req.field("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::bad_request("role is required"))?,
            )?;
            let (user_id, email) = match find_member(core, slug, who).await? {
                Some(m) => (m.user_id, m.email),
                None => find_user(core, who).await?.ok_or_else(|| {
                    Error::NotFound(format!("no user {who}: invite or create them first"))
                })?,
            };
            let member = set_member(core, slug, &user_id, &email, Some(role), &actor(caller))
                .await?
                .expect("a role was given");
            Ok(Response::data(member_json(&member)))
        }
        (["members", who], Delete) => {
            let member = find_member(core, slug, who).await?.ok_or_else(|| {
                Error::NotFound(format!("{who} is not a member of project {slug}"))
            })?;
            set_member(
                core,
                slug,
                &member.user_id,
                &member.email,
                None,
                &actor(caller),
            )
            .await?;
            Ok(Response::NoContent)
        }
        _ => Err(Error::NotFound("unsupported path".into())),
    }
}

/// A member by user id or by email (any case).
async fn find_member(core: &Core, slug: &str, who: &str) -> Result<Option<Membership>> {
    if who.contains('@') {
        let email = who.to_lowercase();
        Ok(members(core, slug)
            .await?
            .into_iter()
            .find(|m| m.email == email))
    } else if who.is_empty() || who.contains(['/', '\0']) {
        Ok(None)
    } else {
        Ok(read_member(core, slug, who).await?.map(|(m, _)| m))
    }
}

/// (user id, email) of an existing, enabled person, by user id or email.
async fn find_user(core: &Core, who: &str) -> Result<Option<(String, String)>> {
    if who.contains('@') && crate::people::users::normalize_email(who).is_err() {
        return Ok(None);
    }
    let key = core.token_key()?;
    Ok(crate::people::users::find(&core.barrier, &key, who)
        .await?
        .filter(|(user, _)| !user.disabled)
        .map(|(user, _)| (user.id, user.email)))
}

/// Adds a member, changes their role, or (`role: None`) removes them, in one
/// commit with the project record at the generation read, so that the
/// project always keeps an admin. Returns the membership as it now is.
pub async fn set_member(
    core: &Core,
    slug: &str,
    user_id: &str,
    email: &str,
    role: Option<Role>,
    by: &str,
) -> Result<Option<Membership>> {
    for _ in 0..MAX_ATTEMPTS {
        let Some((project, project_generation)) = read(core, slug).await? else {
            return Err(hidden());
        };
        let current = read_member(core, slug, user_id).await?;
        let was_admin = current.as_ref().is_some_and(|(m, _)| m.role == Role::Admin);
        if was_admin && role != Some(Role::Admin) {
            let admins = members(core, slug)
                .await?
                .iter()
                .filter(|m| m.role == Role::Admin)
                .count();
            if admins <= 1 {
                return Err(Error::StateConflict(format!(
                    "{email} is the last admin of project {slug}: make someone else admin first"
                )));
            }
        }
        let (mut mine, user_expect) = read_user(core, user_id).await?;
        let mut writes = vec![Write::Put {
            key: project_key(slug),
            value: to_bytes(&project),
            expect: Expect::Generation(project_generation),
        }];
        let member_expect = current.as_ref().map(|(_, g)| Expect::Generation(*g));
        let result = match role {
            Some(role) => {
                let membership = Membership {
                    user_id: user_id.to_string(),
                    email: email.to_lowercase(),
                    role,
                    added_by: current
                        .as_ref()
                        .map_or_else(|| by.to_string(), |(m, _)| m.added_by.clone()),
                    added_at: current
                        .as_ref()
                        .map_or_else(|| core.now_secs(), |(m, _)| m.added_at),
                };
                writes.push(Write::Put {
                    key: member_key(slug, user_id),
                    value: to_bytes(&membership),
                    expect: member_expect.unwrap_or(Expect::Absent),
                });
                mine.projects.insert(
                    slug.to_string(),
                    UserGrant {
                        role,
                        mount: project.mount.clone(),
                    },
                );
                Some(membership)
            }
            None => {
                if current.is_none() {
                    return Ok(None);
                }
                writes.push(Write::Delete {
                    key: member_key(slug, user_id),
                    expect: member_expect,
                });
                mine.projects.remove(slug);
                None
            }
        };
        writes.push(Write::Put {
            key: user_key(user_id),
            value: to_bytes(&mine),
            expect: user_expect,
        });
        match core.barrier.commit(writes).await {
            Ok(()) => {
                tracing::info!(project = %slug, %user_id, role = role.map(Role::name).unwrap_or("removed"), "membership changed");
                return Ok(result);
            }
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        key: project_key(slug),
    })
}

/// Removes every membership of a person whose account was deleted. No
/// last-admin rule here: a deleted account administers nothing, and server
/// administrators can still manage the project.
pub async fn forget_person(core: &Core, user_id: &str) -> Result<()> {
    for grant in grants_for(core, user_id).await? {
        let mut done = false;
        for _ in 0..MAX_ATTEMPTS {
            let (mut mine, user_expect) = read_user(core, user_id).await?;
            mine.projects.remove(&grant.slug);
            let mut writes = vec![
                Write::Delete {
                    key: member_key(&grant.slug, user_id),
                    expect: None,
                },
                Write::Put {
                    key: user_key(user_id),
                    value: to_bytes(&mine),
                    expect: user_expect,
                },
            ];
            if let Some((project, generation)) = read(core, &grant.slug).await? {
                writes.push(Write::Put {
                    key: project_key(&grant.slug),
                    value: to_bytes(&project),
                    expect: Expect::Generation(generation),
                });
            }
            match core.barrier.commit(writes).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(BarrierError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !done {
            return Err(Error::Conflict {
                key: project_key(&grant.slug),
            });
        }
    }
    Ok(core.barrier.delete(&user_key(user_id)).await?)
}

/// Rewrites the project record with `change`, compare-and-swap, retried.
async fn update_project<F>(core: &Core, slug: &str, mut change: F) -> Result<Project>
where
    F: FnMut(&mut Project) -> Result<()>,
{
    for _ in 0..MAX_ATTEMPTS {
        let Some((mut project, generation)) = read(core, slug).await? else {
            return Err(hidden());
        };
        change(&mut project)?;
        match core
            .barrier
            .put(
                &project_key(slug),
                &to_bytes(&project),
                Expect::Generation(generation),
            )
            .await
        {
            Ok(_) => return Ok(project),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        key: project_key(slug),
    })
}

async fn add_environment(core: &Core, slug: &str, env: &str) -> Result<()> {
    validate_name(env, "environment name")?;
    update_project(core, slug, |p| {
        if p.environments.iter().any(|e| e == env) {
            return Err(Error::StateConflict(format!(
                "project {slug} already has an environment {env}"
            )));
        }
        if p.environments.len() >= MAX_ENVIRONMENTS {
            return Err(Error::bad_request(format!(
                "a project has at most {MAX_ENVIRONMENTS} environments"
            )));
        }
        p.environments.push(env.to_string());
        Ok(())
    })
    .await
    .map(|_| ())
}

/// Removes an environment from the registry. Its secrets are deleted too
/// with `?purge=true`; without, an environment that still holds secrets is
/// refused (409), so that nothing is left behind where a later environment
/// of the same name would find it.
async fn remove_environment(
    core: &Arc<Core>,
    req: &Request,
    caller: &Caller,
    slug: &str,
    env: &str,
) -> Result<()> {
    let Some((project, _)) = read(core, slug).await? else {
        return Err(hidden());
    };
    if !project.environments.iter().any(|e| e == env) {
        return Err(Error::NotFound(format!(
            "project {slug} has no environment {env}"
        )));
    }
    let folder = format!("{slug}/{env}");
    clear_secrets(core, req, caller, &project, &folder).await?;
    update_project(core, slug, |p| {
        p.environments.retain(|e| e != env);
        Ok(())
    })
    .await
    .map(|_| ())
}

/// Refuses when `folder` of the project's mount holds secrets, or, with
/// `?purge=true`, deletes them all (every version and the metadata).
async fn clear_secrets(
    core: &Arc<Core>,
    req: &Request,
    caller: &Caller,
    project: &Project,
    folder: &str,
) -> Result<()> {
    let purge = matches!(req.query("purge"), Some("true" | "1"));
    let kv = KvAccess::new(core, req, caller, &project.mount).await?;
    let secrets = kv.walk(folder).await?;
    if secrets.is_empty() {
        return Ok(());
    }
    if !purge {
        return Err(Error::StateConflict(format!(
            "{folder} still holds {} secret(s): delete them first, or add ?purge=true (zafe: --purge) to delete them with it",
            secrets.len()
        )));
    }
    for path in &secrets {
        kv.call(Operation::Delete, &format!("metadata/{path}"), &[])
            .await?;
    }
    tracing::warn!(request_id = %req.request_id, %folder, count = secrets.len(), "purged secrets");
    Ok(())
}

/// Deletes a project: its registry records and memberships, and its
/// secrets only with `?purge=true` (refused while it has secrets without).
async fn delete_project(
    core: &Arc<Core>,
    req: &Request,
    caller: &Caller,
    slug: &str,
) -> Result<()> {
    let Some((project, _)) = read(core, slug).await? else {
        return Err(hidden());
    };
    clear_secrets(core, req, caller, &project, slug).await?;
    for _ in 0..MAX_ATTEMPTS {
        let Some((project, generation)) = read(core, slug).await? else {
            return Ok(());
        };
        let mut writes = vec![
            Write::Delete {
                key: project_key(slug),
                expect: Some(Expect::Generation(generation)),
            },
            Write::Delete {
                key: format!("{ID_PREFIX}{}", project.id),
                expect: None,
            },
        ];
        for tag in &project.tags {
            writes.push(Write::Delete {
                key: tag_key(tag, slug),
                expect: None,
            });
        }
        for member in members(core, slug).await? {
            writes.push(Write::Delete {
                key: member_key(slug, &member.user_id),
                expect: None,
            });
            let (mut mine, expect) = read_user(core, &member.user_id).await?;
            mine.projects.remove(slug);
            writes.push(Write::Put {
                key: user_key(&member.user_id),
                value: to_bytes(&mine),
                expect,
            });
        }
        match core.barrier.commit(writes).await {
            Ok(()) => {
                tracing::info!(request_id = %req.request_id, project = %slug, "project deleted");
                return Ok(());
            }
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        key: project_key(slug),
    })
}

/// The project's KV mount, used through the engine's own interface (so the
/// KV storage layout stays the engine's business).
struct KvAccess<'a> {
    core: &'a Arc<Core>,
    req: &'a Request,
    caller: &'a Caller,
    mounted: crate::mounts::Mounted,
}

impl<'a> KvAccess<'a> {
    async fn new(
        core: &'a Arc<Core>,
        req: &'a Request,
        caller: &'a Caller,
        mount: &str,
    ) -> Result<Self> {
        let router = core.router().await?;
        let mounted = router
            .entries()
            .find(|e| e.path.trim_end_matches('/') == mount)
            .and_then(|e| router.resolve(&e.path).map(|(m, _)| m.clone()))
            .filter(|m| m.entry.kind == "kv")
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "the project's mount {mount} is no longer a KV v2 secrets engine"
                ))
            })?;
        Ok(Self {
            core,
            req,
            caller,
            mounted,
        })
    }

    async fn call(
        &self,
        operation: Operation,
        rel: &str,
        query: &[(&str, String)],
    ) -> Result<Response> {
        let request = Request {
            operation,
            path: format!("{}{rel}", self.mounted.entry.path),
            body: None,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            token: None,
            client_ip: self.req.client_ip,
            request_id: self.req.request_id.clone(),
            user_agent: None,
            wrap_ttl: None,
        };
        self.core
            .call_engine(&self.mounted, self.caller, &request, rel)
            .await
    }

    /// Every secret under `folder`, as paths relative to the mount.
    async fn walk(&self, folder: &str) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut pending = vec![folder.to_string()];
        while let Some(dir) = pending.pop() {
            let mut after = String::new();
            loop {
                let reply = self
                    .call(
                        Operation::List,
                        &format!("metadata/{dir}/"),
                        &[("after", after.clone())],
                    )
                    .await?;
                let keys: Vec<String> = match reply {
                    Response::Vault {
                        status: Status::OK,
                        data: Some(data),
                        ..
                    } => data["keys"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                let Some(last) = keys.last().cloned() else {
                    break;
                };
                for key in keys {
                    match key.strip_suffix('/') {
                        Some(sub) => pending.push(format!("{dir}/{sub}")),
                        None => found.push(format!("{dir}/{key}")),
                    }
                    if found.len() > MAX_PURGE {
                        return Err(Error::bad_request(format!(
                            "{folder} holds more than {MAX_PURGE} secrets: delete them in parts first"
                        )));
                    }
                }
                after = last;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_core::policy::{Acl, Policy};

    #[test]
    fn names_follow_the_grammar() {
        for good in ["a", "0", "my-app", "my_app", "a1", &"a".repeat(63)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a b",
            "a/b",
            "ä",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    fn acl(role: Role) -> Acl {
        let (name, hcl) = Grant {
            slug: "myapp".into(),
            mount: "secret".into(),
            role,
        }
        .policy();
        Acl::new([&Policy::parse(&name, &hcl).unwrap()])
    }

    #[test]
    fn every_role_template_compiles_and_roles_nest() {
        use Capability::*;
        let cases: &[(&str, Capability, Role)] = &[
            ("secret/data/myapp/dev/KEY", Read, Role::Readonly),
            ("secret/metadata/myapp/dev/", List, Role::Readonly),
            ("sys/projects/myapp", Read, Role::Readonly),
            ("sys/projects/myapp/members/", List, Role::Readonly),
            ("secret/data/myapp/dev/KEY", Create, Role::Member),
            ("secret/data/myapp/dev/KEY", Update, Role::Member),
            ("secret/delete/myapp/dev/KEY", Update, Role::Member),
            ("secret/destroy/myapp/dev/KEY", Update, Role::Operator),
            ("secret/metadata/myapp/dev/KEY", Delete, Role::Operator),
            ("sys/projects/myapp/environments/qa", Update, Role::Operator),
            ("sys/projects/myapp/members/x", Update, Role::Admin),
            ("sys/projects/myapp", Delete, Role::Admin),
        ];
        for role in Role::ALL {
            let acl = acl(role);
            for (path, cap, least) in cases {
                assert_eq!(
                    acl.allows(path, *cap),
                    role >= *least,
                    "{role:?} {cap:?} {path}"
                );
            }
            // Nothing outside the project, ever.
            assert!(!acl.allows("secret/data/other/dev/KEY", Read));
            assert!(!acl.allows("sys/projects/other", Read));
            assert!(!acl.allows("sys/projects/myapp2", Read));
            assert!(!acl.allows("secret/data/myapp2/dev/KEY", Read));
        }
    }

    #[test]
    fn project_paths_are_recognised() {
        assert_eq!(slug_in_path("sys/projects/a/members/x", None), Some("a"));
        assert_eq!(slug_in_path("sys/projects/a", None), Some("a"));
        assert_eq!(slug_in_path("sys/projects", None), None);
        assert_eq!(slug_in_path("secret/data/a/dev/K", None), None);
    }
}
