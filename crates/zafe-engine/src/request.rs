//! The request an engine (and the core) sees: no HTTP types, and a `Debug` that prints nothing
//! secret.

use std::net::IpAddr;

use serde_json::Value;

/// What a request asks to do, from its HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET`.
    Read,
    /// `LIST`, or `GET` with `?list=true`.
    List,
    /// `POST` and `PUT`.
    Write,
    /// `DELETE`.
    Delete,
    /// `PATCH` (JSON merge patch).
    Patch,
    /// `HEAD`: a read whose answer has no body.
    Head,
}

/// A request as the core sees it: no HTTP types beyond this point. Its `Debug` prints neither
/// the token nor the body (see [`RequestToken`] and [`RequestBody`]).
#[derive(Debug)]
pub struct Request {
    /// What the request asks to do.
    pub operation: Operation,
    /// Without the `/v1/` prefix.
    pub path: String,
    /// The JSON body, always an object when present.
    pub body: Option<RequestBody>,
    /// The query parameters, in order (repeated names kept).
    pub query: Vec<(String, String)>,
    /// The token the request carried, if any.
    pub token: Option<RequestToken>,
    /// The client's address, resolved through trusted proxies only (R-OPS-2).
    pub client_ip: IpAddr,
    /// The request id, shown in answers and logs.
    pub request_id: String,
    /// The `User-Agent` header, kept with a person's session.
    pub user_agent: Option<String>,
    /// `X-Vault-Wrap-TTL`, in seconds: the core answers with a single-use wrapping token
    /// instead of the response.
    pub wrap_ttl: Option<u64>,
}

/// The token a request carried. Its `Debug` prints `Token(..)`, never the token; the memory is
/// wiped when it is dropped. Read it with `as_str` or through `Deref<Target = str>`.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestToken(zeroize::Zeroizing<String>);

impl RequestToken {
    /// Takes ownership of the token; the memory is wiped on drop.
    pub fn new(token: String) -> Self {
        Self(zeroize::Zeroizing::new(token))
    }

    /// The token, to check it. Never log or return it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for RequestToken {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RequestToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A request's JSON body (always an object), with the length it had on the wire. Its `Debug`
/// prints that length only: bodies carry secret values, passwords and keys. Read it through
/// `Deref<Target = Value>` (`req.body.as_deref()` gives an `Option<&Value>`).
pub struct RequestBody {
    value: Value,
    len: usize,
}

impl RequestBody {
    /// `len`: the body's size in bytes as received (shown by `Debug`).
    pub fn new(value: Value, len: usize) -> Self {
        Self { value, len }
    }
}

impl std::ops::Deref for RequestBody {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.len)
    }
}

impl Request {
    /// The first query parameter called `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field of the JSON body.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.as_ref().and_then(|b| b.get(name))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) fn request(body: Option<Value>, query: &[(&str, &str)]) -> Request {
        Request {
            operation: Operation::Write,
            path: "secret/data/x".into(),
            body: body.map(|b| RequestBody::new(b, 0)),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            token: Some(RequestToken::new("zafe_s_secret-token".into())),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            request_id: "req-1".into(),
            user_agent: None,
            wrap_ttl: None,
        }
    }

    #[test]
    fn query_parameters_and_body_fields() {
        let req = request(
            Some(json!({"a": 1, "b": null})),
            &[("v", "1"), ("v", "2"), ("empty", "")],
        );
        // The first of repeated parameters; an empty one is still given.
        assert_eq!(req.query("v"), Some("1"));
        assert_eq!(req.query("empty"), Some(""));
        assert_eq!(req.query("V"), None);
        assert_eq!(req.field("a"), Some(&json!(1)));
        assert_eq!(req.field("b"), Some(&Value::Null));
        assert_eq!(req.field("c"), None);
        // No body, or a body that is not an object, has no fields.
        assert_eq!(request(None, &[]).field("a"), None);
        assert_eq!(request(Some(json!([1, 2])), &[]).field("a"), None);
    }

    // Debug of a request (in a log line, a panic message, a `dbg!`) prints neither the token
    // nor anything from the body.
    #[test]
    fn debug_of_a_request_prints_no_token_and_no_body() {
        let token = "zafe_s_t0ps3cr3tt0k3n";
        let raw = r#"{"data":{"password":"hunter2-sw0rdf1sh"}}"#;
        let request = Request {
            operation: Operation::Write,
            path: "secret/data/app".into(),
            body: Some(RequestBody::new(
                serde_json::from_str(raw).unwrap(),
                raw.len(),
            )),
            query: vec![],
            token: Some(RequestToken::new(token.into())),
            client_ip: "192.0.2.1".parse().unwrap(),
            request_id: "req-1".into(),
            user_agent: None,
            wrap_ttl: None,
        };
        for shown in [format!("{request:?}"), format!("{request:#?}")] {
            assert!(!shown.contains(token), "{shown}");
            assert!(!shown.contains("t0ps3cr3t"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("password"), "{shown}");
            assert!(shown.contains("Token(..)"), "{shown}");
            assert!(
                shown.contains(&format!("Body({} bytes)", raw.len())),
                "{shown}"
            );
            assert!(shown.contains("secret/data/app"), "{shown}");
        }
        // The values are still there for the code that needs them.
        assert_eq!(request.token.as_deref(), Some(token));
        assert_eq!(
            request.field("data").unwrap()["password"],
            "hunter2-sw0rdf1sh"
        );
    }
}
