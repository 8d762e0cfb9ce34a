//! HTTP status codes without HTTP types.

/// An HTTP status code, without HTTP types: the edge turns it into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u16);

impl Status {
    /// 200.
    pub const OK: Status = Status(200);
    /// 202: accepted, finishing in the background.
    pub const ACCEPTED: Status = Status(202);
    /// 204: done, nothing to say.
    pub const NO_CONTENT: Status = Status(204);
    /// 400.
    pub const BAD_REQUEST: Status = Status(400);
    /// 401.
    pub const UNAUTHORIZED: Status = Status(401);
    /// 403.
    pub const FORBIDDEN: Status = Status(403);
    /// 404.
    pub const NOT_FOUND: Status = Status(404);
    /// 405.
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 409.
    pub const CONFLICT: Status = Status(409);
    /// 412: a precondition (a required index or version) is not met yet.
    pub const PRECONDITION_FAILED: Status = Status(412);
    /// 413.
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    /// 429.
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    /// 500.
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    /// 502: an upstream (an identity provider) failed.
    pub const BAD_GATEWAY: Status = Status(502);
    /// 501: `sys/health` of an uninitialised server.
    pub const NOT_IMPLEMENTED: Status = Status(501);
    /// 503.
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    /// A status from its number; `None` outside 100..=999 (what HTTP can carry).
    pub const fn new(code: u16) -> Option<Status> {
        if code >= 100 && code <= 999 {
            Some(Status(code))
        } else {
            None
        }
    }

    /// The number.
    pub const fn code(self) -> u16 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_http_codes_only() {
        assert_eq!(Status::new(200), Some(Status::OK));
        assert_eq!(Status::new(599).map(Status::code), Some(599));
        assert_eq!(Status::new(999).map(Status::code), Some(999));
        assert_eq!(Status::new(99), None);
        assert_eq!(Status::new(1000), None);
        assert_eq!(Status::new(0), None);
    }
}
