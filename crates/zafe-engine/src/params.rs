//! Parsing of request fields shared by engines and the core: Vault's loose types (a number or a
//! string, a list or a comma-separated string), durations, policy names, CIDR blocks, page
//! sizes, and the TTL request of a new token.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::request::Request;

/// A field of the request body or query, as a string.
pub fn str_field<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.field(name)
        .and_then(Value::as_str)
        .or_else(|| req.query(name))
}

/// Clamps a caller's page size (R-ACL-3).
pub const MAX_LIST: usize = 1000;

/// A TTL as seconds or a Go-style duration string (`"1h30m"`, `"90s"`).
pub fn parse_ttl(v: &Value) -> Result<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| Error::bad_request("a TTL must be a non-negative number of seconds")),
        Value::String(s) => {
            parse_duration(s).ok_or_else(|| Error::bad_request(format!("invalid duration {s:?}")))
        }
        _ => Err(Error::bad_request(
            "a TTL must be seconds or a duration string",
        )),
    }
}

/// Go-style durations as Vault accepts them: `"300"`, `"300s"`, `"5m"`,
/// `"1h30m"`, `"2d"`. Returns seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() {
        return None;
    }
    Some(total)
}

/// Unix seconds as RFC 3339, as Vault prints times.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// What a caller asked for, and the limits that apply.
#[derive(Debug, Clone, Default)]
pub struct LifetimeRequest {
    /// Requested TTL; `None` or 0 takes the default.
    pub ttl: Option<i64>,
    /// A hard limit the caller set (seconds); 0 is none.
    pub explicit_max_ttl: i64,
    /// Periodic tokens: every renewal extends by this (seconds); 0 is not periodic.
    pub period: i64,
    /// Default TTL (mount or role); 0 is the system maximum (32 days).
    pub default_ttl: i64,
    /// Maximum TTL for non-periodic tokens (mount or role); 0 is
    /// the system maximum (32 days).
    pub max_ttl: i64,
    /// A root-policy token asked for without a TTL never expires, as in Vault.
    pub may_be_unlimited: bool,
}

fn field<'a>(req: &'a Request, name: &str) -> Option<&'a Value> {
    req.field(name).filter(|v| !v.is_null())
}

/// A string field; a number is taken as its decimal text. `null` is absent.
pub fn string(req: &Request, name: &str) -> Result<Option<String>> {
    match field(req, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Error::bad_request(format!("{name} must be a string"))),
    }
}

/// A boolean field: `true`/`false`, or the strings `"true"`, `"1"`, `"false"`, `"0"`, `""`.
pub fn boolean(req: &Request, name: &str) -> Result<Option<bool>> {
    match field(req, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s == "0" || s.is_empty() => {
            Ok(Some(false))
        }
        Some(_) => Err(Error::bad_request(format!("{name} must be true or false"))),
    }
}

/// A non-negative 32-bit integer, from a number or a string (`""` is 0).
pub fn uint(req: &Request, name: &str) -> Result<Option<u32>> {
    let bad = || Error::bad_request(format!("{name} must be a non-negative integer"));
    match field(req, name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(0)),
        Some(Value::String(s)) => s.trim().parse::<u32>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Seconds, from a number or a duration string. At most ten years.
pub fn duration(req: &Request, name: &str) -> Result<Option<i64>> {
    let Some(v) = field(req, name) else {
        return Ok(None);
    };
    let secs = parse_ttl(v).map_err(|_| {
        Error::bad_request(format!(
            "{name}: invalid duration (use seconds or a duration like \"90s\", \"15m\", \"1h30m\")"
        ))
    })?;
    if secs > 10 * 365 * 86400 {
        return Err(Error::bad_request(format!("{name} is too long")));
    }
    Ok(Some(secs as i64))
}

/// A list of strings: a JSON array or a comma-separated string.
pub fn string_list(req: &Request, name: &str) -> Result<Option<Vec<String>>> {
    let bad = || {
        Error::bad_request(format!(
            "{name} must be a list of strings or a comma-separated string"
        ))
    };
    let items: Vec<String> = match field(req, name) {
        None => return Ok(None),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_string()).ok_or_else(bad))
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad()),
    };
    let items: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
    if items.len() > 100 {
        return Err(Error::bad_request(format!("{name}: at most 100 entries")));
    }
    Ok(Some(items))
}

/// Policy names: trimmed, lower-cased (as Vault does), de-duplicated, sorted.
pub fn policies(req: &Request, name: &str) -> Result<Option<Vec<String>>> {
    let Some(list) = string_list(req, name)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        if p.len() > 128 || p.chars().any(|c| c.is_control() || c == '/' || c == '*') {
            return Err(Error::bad_request(format!(
                "{name}: invalid policy name {p:?}"
            )));
        }
        out.push(p.to_lowercase());
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// A map of strings: a JSON object, or a string holding one (AppRole's
/// `metadata`, as hvac sends it).
pub fn string_map(req: &Request, name: &str) -> Result<Option<BTreeMap<String, String>>> {
    let bad = || Error::bad_request(format!("{name} must be an object of strings"));
    let parsed;
    let object = match field(req, name) {
        None => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Some(BTreeMap::new())),
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|_| bad())?;
            &parsed
        }
        Some(v) => v,
    };
    let Value::Object(map) = object else {
        return Err(bad());
    };
    map.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(bad)
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// Metadata limits: it is copied into every token and lookup.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<()> {
    if meta.len() > 64
        || meta
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024)
    {
        return Err(Error::bad_request(
            "metadata: at most 64 keys, keys of 1 to 128 characters, values up to 1024",
        ));
    }
    Ok(())
}

/// CIDR blocks; a bare address is a /32 or /128.
pub fn cidrs(req: &Request, name: &str) -> Result<Option<Vec<IpNet>>> {
    let Some(list) = string_list(req, name)? else {
        return Ok(None);
    };
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| Error::bad_request(format!("{name}: invalid CIDR block {s:?}")))
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// `?limit=` for list endpoints, clamped to [`MAX_LIST`] (R-ACL-3).
pub fn page_limit(req: &Request) -> Result<usize> {
    match req.query("limit") {
        None => Ok(MAX_LIST),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.clamp(1, MAX_LIST))
            .map_err(|_| Error::bad_request("limit must be a positive integer")),
    }
}

/// Vault's warning for parameters an endpoint does not know.
pub fn unknown_fields(req: &Request, known: &[&str]) -> Option<String> {
    let object = req.body.as_ref()?.as_object()?;
    let mut unknown: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        return None;
    }
    unknown.sort();
    Some(format!(
        "Endpoint ignored these unrecognized parameters: [{}]",
        unknown.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::request::tests::request;

    // A string field comes from the body first, then from the query; a
    // body field that is not a string falls back to the query too.
    #[test]
    fn string_fields_come_from_the_body_then_the_query() {
        let req = request(
            Some(json!({"a": "body", "n": 5})),
            &[("a", "query"), ("n", "7"), ("q", "only")],
        );
        assert_eq!(str_field(&req, "a"), Some("body"));
        assert_eq!(str_field(&req, "n"), Some("7"));
        assert_eq!(str_field(&req, "q"), Some("only"));
        assert_eq!(str_field(&req, "missing"), None);
        assert_eq!(str_field(&request(None, &[("a", "q")]), "a"), Some("q"));
    }

    // R-ACL-3: at most 1000 keys per list call.
    #[test]
    fn list_pages_are_capped_at_1000() {
        assert_eq!(MAX_LIST, 1000);
        let req = request(None, &[("limit", "5000")]);
        assert_eq!(page_limit(&req).unwrap(), MAX_LIST);
        assert_eq!(page_limit(&request(None, &[("limit", "0")])).unwrap(), 1);
    }

    #[test]
    fn durations_are_go_style() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_ttl(&json!("2d")).unwrap(), 172800);
        assert!(parse_ttl(&json!(-1)).is_err());
    }
}
