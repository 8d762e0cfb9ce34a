//! `POST sys/resolve`: many `zafe://` references in one request (R-DEV-3).
//!
//! ```text
//! POST /v1/sys/resolve  {"references": ["zafe://app/dev/DB_URL", ...]}
//! 200 {"data": {"values": {"zafe://app/dev/DB_URL": "..."}}}
//! ```
//!
//! Each reference is parsed by the one parser (`zafe_core::reference`),
//! authorised on its own KV data path (`<mount>/data/<path>`, capability
//! `read`) through [`Core::authorize`], so service accounts may resolve what
//! they may read, and read by a `GET data/<path>` request to the mounted KV
//! engine (the core never imports an engine): there is no second way to
//! read a secret. All or nothing: if any reference is forbidden (403) or
//! missing (404), the answer names those references and carries no value at
//! all. Authorisation is decided for every reference before anything is
//! read, so a forbidden reference never tells whether it exists. A person
//! asking for a project they are not a member of gets the project paths'
//! 404 (the design note: a project's existence is not revealed): the
//! reference is named among the missing ones, and never read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use zafe_core::reference::{DEFAULT_PROJECT_MOUNT, KvLocation, Reference};

use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};
use crate::policies::Capability;
use zafe_engine::Status;

/// The most references one request may resolve.
pub const MAX_REFERENCES: usize = 1000;

/// How many references an error message names before "and N more".
const NAMED_IN_ERRORS: usize = 20;

/// Serves `sys/resolve` for an authenticated `caller`: every reference in
/// the body parsed, authorized, then read, all or nothing (see the module
/// docs). A body that is not `{"references": [strings]}`, more than
/// [`MAX_REFERENCES`] references or a malformed one is a 400 before
/// anything is read; forbidden references a 403 that names them; missing
/// ones (or ones in a project the person may not see) a 404 that names
/// them. The answer maps each reference, as spelled in the request, to its
/// value; only names, never values, go to the audit entry.
pub(crate) async fn resolve(core: &Arc<Core>, req: &Request, caller: &Caller) -> Result<Response> {
    let texts = reference_texts(req)?;
    if texts.len() > MAX_REFERENCES {
        return Err(Error::bad_request(format!(
            "at most {MAX_REFERENCES} references can be resolved in one request"
        )));
    }
    // Parse everything first: a malformed reference fails the request
    // before any read. Identical references (in any spelling) are read once.
    let mut unique: BTreeMap<Reference, Vec<&str>> = BTreeMap::new();
    for (index, text) in texts.iter().enumerate() {
        let reference = Reference::parse(text).map_err(|error| {
            Error::bad_request(format!(
                "references[{index}] is not a valid reference: {error}"
            ))
        })?;
        unique.entry(reference).or_default().push(text);
    }
    // The audit entry names every secret this request asks for (references
    // are names, never values), whether it is then allowed, denied or missing.
    crate::audit::note_resources(unique.keys().map(Reference::to_string));

    let mut located = Vec::with_capacity(unique.len());
    let mut forbidden = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    let mut mounts: BTreeMap<String, String> = BTreeMap::new();
    for reference in unique.keys() {
        let mount = match reference.project_slug() {
            Some(slug) => match mounts.get(slug) {
                Some(mount) => mount.clone(),
                None => {
                    let mount = project_mount(core, slug).await?;
                    mounts.insert(slug.to_string(), mount.clone());
                    mount
                }
            },
            None => String::new(),
        };
        let location = reference.kv_location(&mount);
        let acl_path = format!("{}/data/{}", location.mount, location.path);
        match core
            .authorize(caller, &acl_path, Capability::Read, false)
            .await
        {
            Ok(()) => located.push((reference, location)),
            Err(Error::PermissionDenied) => {
                forbidden.insert(reference.to_string());
            }
            // A person who is not a member of the reference's project: the
            // project's existence is hidden (R-ACL-2), so the reference is
            // reported like a missing one, and never read.
            Err(Error::NotFound(_)) => {
                hidden.insert(reference.to_string());
            }
            Err(other) => return Err(other),
        }
    }
    if !forbidden.is_empty() {
        return Err(Error::Denied(format!(
            "permission denied for {}",
            name_references(&forbidden)
        )));
    }

    let router = core.router().await?;
    let mut values = Map::new();
    let mut missing = hidden;
    for (reference, location) in located {
        match read_field(core, req, caller, &router, &location).await? {
            Some(value) => {
                for text in &unique[reference] {
                    values.insert((*text).to_string(), Value::String(value.clone()));
                }
            }
            None => {
                missing.insert(reference.to_string());
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::NotFound(format!(
            "no value for {}",
            name_references(&missing)
        )));
    }
    Ok(Response::data(json!({ "values": values })))
}

/// `{"references": [strings]}`, nothing else.
fn reference_texts(req: &Request) -> Result<Vec<&str>> {
    let invalid = || Error::bad_request("the body must be {\"references\": [\"zafe://...\", ...]}");
    let list = req
        .field("references")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    list.iter()
        .map(|item| item.as_str().ok_or_else(invalid))
        .collect()
}

/// The mount a project lives on, from the project registry; projects that
/// are not registered (secrets written at the project layout by hand or by
/// Vault clients) are on the default mount.
async fn project_mount(core: &Core, slug: &str) -> Result<String> {
    Ok(match crate::projects::read(core, slug).await? {
        Some((project, _)) => project.mount.trim_matches('/').to_string(),
        None => DEFAULT_PROJECT_MOUNT.to_string(),
    })
}

/// The text of one field of one version, if the mount is a KV mount, the
/// version is live and the field exists. Strings are returned as they are,
/// other JSON values as compact JSON text.
async fn read_field(
    core: &Arc<Core>,
    req: &Request,
    caller: &Caller,
    router: &crate::mounts::Router,
    location: &KvLocation,
) -> Result<Option<String>> {
    let mount_path = format!("{}/", location.mount);
    let Some((mounted, rest)) = router.resolve(&mount_path) else {
        return Ok(None);
    };
    if mounted.entry.kind != "kv" || !rest.is_empty() {
        return Ok(None);
    }
    // Read through the mounted KV engine, as `GET data/<path>` would: one way to read a secret.
    let request = Request {
        operation: Operation::Read,
        path: format!("{mount_path}data/{}", location.path),
        body: None,
        query: location
            .version
            .map(|v| vec![("version".to_string(), v.to_string())])
            .unwrap_or_default(),
        token: None,
        client_ip: req.client_ip,
        request_id: req.request_id.clone(),
        user_agent: None,
        wrap_ttl: None,
    };
    let rel = format!("data/{}", location.path);
    let response = match core.call_engine(mounted, caller, &request, &rel).await {
        Ok(response) => response,
        // A path the engine refuses holds no value, as a path with nothing there.
        Err(Error::BadRequest(_) | Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Response::Vault {
        status: Status::OK,
        data: Some(version),
        ..
    } = response
    else {
        return Ok(None);
    };
    Ok(version["data"]
        .get(&location.field)
        .map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }))
}

fn name_references(references: &BTreeSet<String>) -> String {
    let mut named: Vec<&str> = references
        .iter()
        .take(NAMED_IN_ERRORS)
        .map(String::as_str)
        .collect();
    let more = references.len().saturating_sub(NAMED_IN_ERRORS);
    let more_text;
    if more > 0 {
        more_text = format!("and {more} more");
        named.push(&more_text);
    }
    named.join(", ")
}
