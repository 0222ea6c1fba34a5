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

/// One counted call: its limiter, key and window (its start).
type Taken = (Arc<RateLimiter>, String, i64);

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

    /// Counts one call under `limit` for `key`, noting it in `taken` so
    /// that it can be given back.
    fn attempt(
        &self,
        limit: RateLimit,
        key: String,
        now: Timestamp,
        taken: &mut Vec<Taken>,
    ) -> Result<(), u64> {
        // A poisoned table refuses: failing open would lift every limit.
        let limiter = self
            .limiter(limit)
            .ok_or(retry_after_secs(limit.window_ms))?;
        let window = limiter
            .attempt_in_window(&key, now)
            .map_err(retry_after_secs)?;
        taken.push((limiter, key, window));
        Ok(())
    }

    /// Counts one permitted call; `Err(seconds)` when a limit is exceeded.
    /// A refused call counts under none of them: what the limits checked
    /// before the one that refused took is given back (a per-tool limit
    /// was spent by calls a role limit refused).
    pub fn check(
        &self,
        policy: &Policy,
        principal: &Principal,
        target: &Target<'_>,
        now: Timestamp,
    ) -> Result<(), u64> {
        let mut taken = Vec::new();
        let checked = self.check_each(policy, principal, target, now, &mut taken);
        if checked.is_err() {
            for (limiter, key, window) in taken {
                limiter.refund(&key, window);
            }
        }
        checked
    }

    fn check_each(
        &self,
        policy: &Policy,
        principal: &Principal,
        target: &Target<'_>,
        now: Timestamp,
        taken: &mut Vec<Taken>,
    ) -> Result<(), u64> {
        // Most policies set no limits: then no limiter is made or locked.
        let (limits, counted) = policy.rate_limits_for(target);
        for limit in limits {
            let key = format!("{}\u{1f}tool\u{1f}{counted}", principal.limit_key());
            self.attempt(limit, key, now, taken)?;
        }
        for role in &principal.roles {
            if let Some(limit) = policy.role_rate_limit(role) {
                let key = format!("{}\u{1f}role\u{1f}{role}", principal.limit_key());
                self.attempt(limit, key, now, taken)?;
            }
        }
        // A tenant's budget is shared by all of its callers: counted last,
        // so a call a caller's own limits refuse takes nothing from the
        // others' share.
        if let Some(limit) = policy.tenant_rate_limit(&principal.tenant) {
            let key = format!("tenant\u{1f}{}", principal.tenant);
            self.attempt(limit, key, now, taken)?;
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

    /// A call a role limit refused spent the tool's own limit (checked
    /// first): an hour's budget went to calls that never ran.
    #[test]
    fn a_call_one_limit_refuses_spends_none_of_the_others() {
        let policy = Policy::from_toml(
            "version = 1\n[roles.reader]\n[tools.whoami]\nscope = \"tools:read\"\n\
             roles = [\"reader\"]\nrate_limit = \"2/hour\"\n\
             [role_limits.reader]\nrate_limit = \"1/min\"\n",
        )
        .unwrap();
        let limits = CallLimits::default();
        let target = Target::tool("whoami");
        let alice = member("alice");
        let now = Timestamp(1_000_000);
        assert!(limits.check(&policy, &alice, &target, now).is_ok());
        // Refused by the role's minute, three times.
        for _ in 0..3 {
            assert!(limits.check(&policy, &alice, &target, now).is_err());
        }
        // The next minute: the tool's hour still has its second call.
        let later = now.plus_millis(61_000);
        assert!(limits.check(&policy, &alice, &target, later).is_ok());
        let after = now.plus_millis(122_000);
        assert!(limits.check(&policy, &alice, &target, after).is_err());
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
