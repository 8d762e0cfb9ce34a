//! Who is asking.

/// The authenticated caller of a request, as engines see it: a name to record and nothing that
/// would let an engine act as the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A token: the root token, a child token, an AppRole login.
    Token {
        /// The token's accessor; empty for a token that has none (root at init).
        accessor: String,
        /// Its display name.
        display_name: String,
    },
    /// A person, through a session.
    Person {
        /// The person's email address, as they sign in.
        email: String,
    },
    /// A service account, through one of its tokens.
    ServiceAccount {
        /// The account's name.
        name: String,
    },
    /// A host agent, through its token.
    Agent {
        /// The project it belongs to.
        project: String,
        /// Its name in the project.
        name: String,
    },
}

impl Caller {
    /// How records and audit entries name the caller: a person's email, `service-account:<name>`,
    /// `agent:<project>/<name>`, or a token's display name and accessor.
    pub fn actor(&self) -> String {
        match self {
            Caller::Person { email } => email.clone(),
            Caller::ServiceAccount { name } => format!("service-account:{name}"),
            Caller::Agent { project, name } => format!("agent:{project}/{name}"),
            Caller::Token {
                accessor,
                display_name,
            } if accessor.is_empty() => display_name.clone(),
            Caller::Token {
                accessor,
                display_name,
            } => format!("{display_name} ({accessor})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_name_people_accounts_and_tokens() {
        let person = Caller::Person {
            email: "ada@example.com".into(),
        };
        assert_eq!(person.actor(), "ada@example.com");
        let account = Caller::ServiceAccount { name: "ci".into() };
        assert_eq!(account.actor(), "service-account:ci");
        let agent = Caller::Agent {
            project: "myapp".into(),
            name: "web-1".into(),
        };
        assert_eq!(agent.actor(), "agent:myapp/web-1");
        let token = Caller::Token {
            accessor: "acc1".into(),
            display_name: "approle".into(),
        };
        assert_eq!(token.actor(), "approle (acc1)");
        let root = Caller::Token {
            accessor: String::new(),
            display_name: "root".into(),
        };
        assert_eq!(root.actor(), "root");
    }
}
