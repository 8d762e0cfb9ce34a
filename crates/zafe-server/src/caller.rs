//! Who an authenticated request runs as.
//!
//! The token store's [`TokenEntry`] is a stored record and only that; what kind of caller a
//! request has (a token, a person's session, a service account) is this enum, and the core's
//! decisions match on it. Engines see less: `Caller::engine_caller`, a name to record.

use crate::people::UserCaller;
use crate::service_accounts::ServiceAccount;
use crate::tokens::TokenEntry;

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A token of the token store: the root token, a child token, an AppRole login.
    Token(TokenEntry),
    /// A person, through a session.
    Person(Person),
    /// A service account, through one of its tokens.
    ServiceAccount(AccountCaller),
    /// A host agent, through its token.
    Agent(AgentCaller),
}

/// A host agent, for one request.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    /// The agent: its environments decide what it may read.
    pub agent: crate::agents::Agent,
    /// Its token as Vault's token lookups show it; never stored in the token store.
    pub token: TokenEntry,
}

/// A person's session, for one request.
#[derive(Debug, Clone)]
pub struct Person {
    /// Whose session it is.
    pub(crate) user: UserCaller,
    /// The session's access token as Vault's token lookups show it: `root` for a server
    /// administrator, otherwise the person's extra policies (project roles are added by
    /// `Core::authorize`); never stored in the token store.
    pub(crate) session: TokenEntry,
}

/// A service account, for one request.
#[derive(Debug, Clone)]
pub struct AccountCaller {
    /// The account: its scopes decide what it may read.
    pub(crate) account: ServiceAccount,
    /// Its token as Vault's token lookups show it; never stored in the token store.
    pub(crate) token: TokenEntry,
}

impl Caller {
    /// The token the caller presented, as lookups and audit entries show it.
    pub(crate) fn token(&self) -> &TokenEntry {
        match self {
            Caller::Token(entry) => entry,
            Caller::Person(person) => &person.session,
            Caller::ServiceAccount(account) => &account.token,
            Caller::Agent(agent) => &agent.token,
        }
    }

    /// Whether the caller holds the `root` policy (root tokens, administrators' sessions).
    pub(crate) fn is_root(&self) -> bool {
        self.token().is_root()
    }

    /// The person, for a session.
    pub(crate) fn person(&self) -> Option<&UserCaller> {
        match self {
            Caller::Person(person) => Some(&person.user),
            _ => None,
        }
    }

    /// The account, for a service account.
    pub(crate) fn service_account(&self) -> Option<&ServiceAccount> {
        match self {
            Caller::ServiceAccount(account) => Some(&account.account),
            _ => None,
        }
    }

    /// The agent, for a host agent.
    pub(crate) fn agent(&self) -> Option<&crate::agents::Agent> {
        match self {
            Caller::Agent(agent) => Some(&agent.agent),
            _ => None,
        }
    }

    /// The caller as an engine sees it: a name, nothing to act with.
    pub(crate) fn engine_caller(&self) -> zafe_engine::Caller {
        match self {
            Caller::Person(person) => zafe_engine::Caller::Person {
                email: person.user.email.clone(),
            },
            Caller::ServiceAccount(account) => zafe_engine::Caller::ServiceAccount {
                name: account.account.name.clone(),
            },
            Caller::Agent(agent) => zafe_engine::Caller::Agent {
                project: agent.agent.project.clone(),
                name: agent.agent.name.clone(),
            },
            Caller::Token(entry) => zafe_engine::Caller::Token {
                accessor: entry.accessor.clone(),
                display_name: entry.display_name.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(accessor: &str, display_name: &str, policies: &[&str]) -> TokenEntry {
        TokenEntry {
            accessor: accessor.into(),
            display_name: display_name.into(),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            ..TokenEntry::default()
        }
    }

    // Each kind of caller names itself to engines by what it is, and is root only through
    // the `root` policy of the token it presented.
    #[test]
    fn each_kind_of_caller_names_itself() {
        let token = Caller::Token(entry("acc", "approle", &["default"]));
        assert_eq!(token.engine_caller().actor(), "approle (acc)");
        assert!(token.person().is_none() && !token.is_root());

        let person = Caller::Person(Person {
            user: UserCaller {
                user_id: "u1".into(),
                email: "ada@example.com".into(),
                admin: true,
                session_id: "s1".into(),
            },
            session: entry("s1", "user-ada@example.com", &["root"]),
        });
        assert_eq!(person.engine_caller().actor(), "ada@example.com");
        assert_eq!(person.person().unwrap().user_id, "u1");
        assert!(person.is_root());
        assert_eq!(person.token().accessor, "s1");

        let account = Caller::ServiceAccount(AccountCaller {
            account: ServiceAccount {
                name: "ci".into(),
                description: String::new(),
                scopes: vec![],
                allowed_cidrs: vec![],
                expires_at: None,
                created_at: 0,
                tokens: vec![],
            },
            token: entry("acc2", "service-account-ci", &[]),
        });
        assert_eq!(account.engine_caller().actor(), "service-account:ci");
        assert_eq!(account.service_account().unwrap().name, "ci");
        assert!(account.person().is_none() && !account.is_root());
    }
}
