//! How many 2026-07-28 `subscriptions/listen` streams are open: per person
//! (`Principal::limit_key`) and in all. Each stream may watch up to
//! `MAX_WATCHES` resources, each watch a gate-2 decision, an audit record
//! and possibly a subscription (for a 2026-07-28 upstream, an outbound
//! stream of its own); without a bound, one reader key opened streams on
//! many connections until the gateway ran out of file descriptors.

// One module split into files: the parent's names are this file's.
use super::*;

/// Open listen streams one person (or one key without a person) may hold.
pub(super) const MAX_LISTENS_PER_PERSON: usize = 16;
/// Open listen streams in all.
pub(super) const MAX_LISTENS: usize = 10_000;

#[derive(Clone, Default)]
pub(super) struct ListenSlots(Arc<std::sync::Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    by_person: HashMap<String, usize>,
}

/// A taken slot; given back when dropped (the stream ended).
pub(super) struct ListenSlot {
    slots: ListenSlots,
    person: String,
}

impl ListenSlots {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for `person`'s stream, or the refusal.
    pub(super) fn take(&self, person: String) -> Result<ListenSlot, ErrorData> {
        let mut counts = self.counts();
        let theirs = counts.by_person.get(&person).copied().unwrap_or(0);
        if theirs >= MAX_LISTENS_PER_PERSON || counts.total >= MAX_LISTENS {
            return Err(ErrorData::invalid_request(
                format!(
                    "at most {MAX_LISTENS_PER_PERSON} subscriptions/listen streams may be open \
                     per person (and {MAX_LISTENS} in all); end one first"
                ),
                Some(json!({"reason": "too_many_subscriptions"})),
            ));
        }
        counts.total += 1;
        counts.by_person.insert(person.clone(), theirs + 1);
        Ok(ListenSlot {
            slots: self.clone(),
            person,
        })
    }
}

impl Drop for ListenSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_person.get_mut(&self.person) {
            *n -= 1;
            if *n == 0 {
                counts.by_person.remove(&self.person);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_holds_a_bounded_number_of_streams_and_gets_them_back() {
        let slots = ListenSlots::default();
        let held: Vec<ListenSlot> = (0..MAX_LISTENS_PER_PERSON)
            .map(|_| slots.take("acme\u{1f}alice".into()).unwrap())
            .collect();
        let refused = slots.take("acme\u{1f}alice".into()).err().unwrap();
        assert_eq!(
            refused.data.unwrap()["reason"],
            json!("too_many_subscriptions")
        );
        // Others are not held up, and a stream that ends frees its slot.
        assert!(slots.take("acme\u{1f}bob".into()).is_ok());
        drop(held);
        let _again = slots.take("acme\u{1f}alice".into()).unwrap();
        assert_eq!(slots.counts().total, 1);
    }
}
