//! People: user accounts, their sessions, and how they log in
//! (docs/design/people-and-workflow.md).

pub mod oidc;

/// Who a session belongs to, as the core sees it for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCaller {
    pub user_id: String,
    /// Lower-cased.
    pub email: String,
    /// A server administrator: the session carries the `root` policy.
    pub admin: bool,
    /// The session family the access token belongs to.
    pub session_id: String,
}
