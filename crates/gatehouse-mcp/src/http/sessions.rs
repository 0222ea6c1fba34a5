//! Binds each MCP session to the principal that created it, and to the
//! task grant declared at `initialize`, if any. A session id presented by
//! anyone else is answered as if it did not exist.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gatehouse_core::TaskGrant;

/// Above this many bindings, idle ones are pruned on insert.
const PRUNE_ABOVE: usize = 1024;
/// Hard cap: new sessions are refused beyond it.
pub const MAX_SESSIONS: usize = 100_000;

struct Binding {
    subject: String,
    last_seen: Instant,
    grant: Option<TaskGrant>,
}

pub struct SessionBindings {
    idle_timeout: Duration,
    map: Mutex<HashMap<String, Binding>>,
}

/// What a request's session id means for its principal.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// No binding: a new or unknown session (rmcp answers unknown ones with 404).
    Unbound,
    /// The caller's own session, with the task grant it was declared with.
    Owned(Option<TaskGrant>),
    /// Bound to someone else.
    Foreign,
}

impl SessionBindings {
    pub fn new(idle_timeout: Duration) -> Self {
        SessionBindings {
            idle_timeout,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, session: &str, subject: &str) -> SessionCheck {
        let Ok(mut map) = self.map.lock() else {
            return SessionCheck::Foreign;
        };
        match map.get_mut(session) {
            None => SessionCheck::Unbound,
            Some(b) if b.subject == subject => {
                b.last_seen = Instant::now();
                SessionCheck::Owned(b.grant.clone())
            }
            Some(_) => SessionCheck::Foreign,
        }
    }

    /// Returns false when the table is full.
    pub fn bind(&self, session: &str, subject: &str, grant: Option<TaskGrant>) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        if map.len() > PRUNE_ABOVE {
            let idle = self.idle_timeout;
            map.retain(|_, b| b.last_seen.elapsed() < idle);
        }
        if map.len() >= MAX_SESSIONS {
            return false;
        }
        map.insert(
            session.to_string(),
            Binding {
                subject: subject.to_string(),
                last_seen: Instant::now(),
                grant,
            },
        );
        true
    }

    pub fn unbind(&self, session: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_its_creator() {
        let bindings = SessionBindings::new(Duration::from_secs(60));
        assert_eq!(bindings.check("s1", "alice"), SessionCheck::Unbound);
        assert!(bindings.bind("s1", "alice", None));
        assert_eq!(bindings.check("s1", "alice"), SessionCheck::Owned(None));
        assert_eq!(bindings.check("s1", "bob"), SessionCheck::Foreign);
        bindings.unbind("s1");
        assert_eq!(bindings.check("s1", "bob"), SessionCheck::Unbound);
    }

    #[test]
    fn a_session_keeps_the_task_grant_it_was_declared_with() {
        let bindings = SessionBindings::new(Duration::from_secs(60));
        let grant = TaskGrant {
            id: "tg_1".into(),
            task: "research".into(),
            tools: vec!["read_file".into()],
            expires_at: gatehouse_core::Timestamp(1),
        };
        assert!(bindings.bind("s1", "alice", Some(grant.clone())));
        assert_eq!(
            bindings.check("s1", "alice"),
            SessionCheck::Owned(Some(grant))
        );
    }
}
