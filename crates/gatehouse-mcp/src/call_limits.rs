//! The policy's rate limits on tool calls: per (principal, tool), per
//! tenant and per (principal, role). Checked after the policy permitted a call, so refused
//! calls do not use up a caller's budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_authz::{Policy, RateLimit, Target};
use gatehouse_core::{Principal, RateLimiter, Timestamp, retry_after_secs};

/// Keys tracked per distinct limit; beyond that the limiter refuses new
/// keys rather than forget live windows.
const MAX_KEYS_PER_LIMIT: usize = 100_000;

/// One limiter per distinct (limit, window) in the policy, so a reload that
/// keeps a limit keeps its counts, and the number of limiters stays as
/// small as the policy.
#[derive(Default)]
pub struct CallLimits {
    limiters: Mutex<HashMap<(u32, i64), Arc<RateLimiter>>>,
}

impl CallLimits {
    fn limiter(&self, limit: RateLimit) -> Option<Arc<RateLimiter>> {
        let mut limiters = self.limiters.lock().ok()?;
        Some(Arc::clone(
            limiters
                .entry((limit.limit, limit.window_ms))
                .or_insert_with(|| {
                    Arc::new(RateLimiter::new(
                        limit.limit,
                        limit.window_ms,
                        MAX_KEYS_PER_LIMIT,
                    ))
                }),
        ))
    }

    fn attempt(&self, limit: RateLimit, key: &str, now: Timestamp) -> Result<(), u64> {
        // A poisoned table refuses: failing open would lift every limit.
        let limiter = self
            .limiter(limit)
            .ok_or(retry_after_secs(limit.window_ms))?;
        limiter.attempt(key, now).map_err(retry_after_secs)
    }

    /// Counts one permitted call; `Err(seconds)` when a limit is exceeded.
    pub fn check(
        &self,
        policy: &Policy,
        principal: &Principal,
        target: &Target<'_>,
        now: Timestamp,
    ) -> Result<(), u64> {
        // Most policies set no limits: then no limiter is made or locked.
        let (limits, counted) = policy.rate_limits_for(target);
        for limit in limits {
            let key = format!("{}\u{1f}tool\u{1f}{counted}", principal.limit_key());
            self.attempt(limit, &key, now)?;
        }
        for role in &principal.roles {
            if let Some(limit) = policy.role_rate_limit(role) {
                let key = format!("{}\u{1f}role\u{1f}{role}", principal.limit_key());
                self.attempt(limit, &key, now)?;
            }
        }
        // A tenant's budget is shared by all of its callers: counted last,
        // so a call a caller's own limits refuse takes nothing from the
        // others' share.
        if let Some(limit) = policy.tenant_rate_limit(&principal.tenant) {
            let key = format!("tenant\u{1f}{}", principal.tenant);
            self.attempt(limit, &key, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{CredentialKind, CredentialRef};

    fn member(human: &str) -> Principal {
        Principal {
            tenant: "acme".into(),
            human: Some(human.into()),
            agent: "agent".into(),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: human.into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        }
    }

    /// One member's calls refused by their own role limit take nothing
    /// from the tenant's budget, which every member shares.
    #[test]
    fn a_callers_own_refusals_spend_nothing_of_the_tenants_budget() {
        let policy = Policy::from_toml(&format!(
            "{}\n[role_limits.reader]\nrate_limit = \"1/min\"\n[tenants.acme]\nrate_limit = \"3/min\"\n",
            gatehouse_authz::DEFAULT_POLICY_TOML
        ))
        .unwrap();
        let limits = CallLimits::default();
        let target = Target::tool("whoami");
        let now = Timestamp(1_000_000);
        let (alice, bob) = (member("alice"), member("bob"));
        assert!(limits.check(&policy, &alice, &target, now).is_ok());
        for _ in 0..5 {
            assert!(limits.check(&policy, &alice, &target, now).is_err());
        }
        assert!(limits.check(&policy, &bob, &target, now).is_ok());
    }
}
