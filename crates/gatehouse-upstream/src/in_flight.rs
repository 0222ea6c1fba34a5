//! Which call each request on an upstream connection belongs to, so that
//! what the upstream says about a request reaches that request's caller
//! and nobody else.

// Log messages are deprecated by SEP-2577 (2026-07-28), and still the
// 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use rmcp::model::{
    ClientRequest, GetExtensions, GetMeta, ProgressToken, RequestId, ServerNotification,
};

use crate::relay::{Relay, Relayed};

/// The requests in flight on one connection (by the id rmcp gave each),
/// with where the upstream's messages about each go.
///
/// A request is known here before its first byte reaches the upstream
/// (the gateway's transport registers it as it sends it), so whatever the
/// upstream says about it, however fast, finds its call. A request the
/// gateway stopped waiting for (cancelled, timed out) stays known, with
/// nowhere to relay to, until the upstream answers it or for the
/// upstream's call timeout: the upstream may still be working on it (the
/// spec lets it finish and asks it not to answer), and a message of its
/// that names no request must not be taken for another caller's.
pub(crate) struct InFlight {
    calls: Mutex<Calls>,
    /// How long an abandoned, unanswered request is remembered.
    grace: Duration,
}

#[derive(Default)]
struct Calls {
    next_ticket: u64,
    /// Requests handed to rmcp, not yet on the wire, by ticket.
    waiting: HashMap<u64, Entry>,
    /// Requests on the wire, by the id rmcp gave them.
    sent: HashMap<RequestId, Entry>,
    /// How many of `waiting` and `sent` were abandoned.
    abandoned: usize,
    /// More abandoned requests went unanswered than are remembered: until
    /// then no message that names no request is attributed to any call.
    unattributable_until: Option<Instant>,
}

struct Entry {
    ticket: u64,
    progress_token: Option<ProgressToken>,
    relay: Option<Relay>,
    /// When the gateway stopped waiting for the answer.
    abandoned_at: Option<Instant>,
}

/// Abandoned, unanswered requests remembered per connection.
const MAX_ABANDONED: usize = 256;

/// The tag rmcp carries from the gateway's request to the transport, in
/// the request's extensions (never serialized).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TicketTag(u64);

impl InFlight {
    pub(crate) fn new(grace: Duration) -> InFlight {
        InFlight {
            calls: Mutex::default(),
            grace,
        }
    }

    /// The calls, without the abandoned requests whose time is up.
    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if calls.abandoned > 0 {
            let grace = self.grace;
            let live = |e: &Entry| e.abandoned_at.is_none_or(|at| now < at + grace);
            let before = calls.sent.len() + calls.waiting.len();
            calls.sent.retain(|_, e| live(e));
            calls.waiting.retain(|_, e| live(e));
            let expired = before - calls.sent.len() - calls.waiting.len();
            calls.abandoned -= expired;
        }
        if calls.unattributable_until.is_some_and(|until| until <= now) {
            calls.unattributable_until = None;
        }
        calls
    }

    /// A ticket for a request about to be sent for `relay`; the request
    /// carries its tag, and the ticket tracks the request until it drops.
    pub(crate) fn ticket(self: &Arc<Self>, relay: Option<Relay>) -> Ticket {
        let mut calls = self.lock();
        calls.next_ticket += 1;
        let number = calls.next_ticket;
        calls.waiting.insert(
            number,
            Entry {
                ticket: number,
                progress_token: None,
                relay,
                abandoned_at: None,
            },
        );
        Ticket {
            in_flight: self.clone(),
            number,
            answered: false,
        }
    }

    /// The transport is about to send `request` as `id`: from now on the
    /// upstream's messages about it reach its call.
    pub(crate) fn on_the_wire(&self, id: &RequestId, request: &ClientRequest) {
        let Some(TicketTag(number)) = request.extensions().get::<TicketTag>().copied() else {
            return;
        };
        let mut calls = self.lock();
        if let Some(mut entry) = calls.waiting.remove(&number) {
            entry.progress_token = request.get_meta().get_progress_token();
            calls.sent.insert(id.clone(), entry);
        }
    }

    /// The upstream answered request `id`. An abandoned request is
    /// forgotten now (a live one when its call ends).
    pub(crate) fn answered(&self, id: &RequestId) {
        let mut calls = self.lock();
        if calls.sent.get(id).is_some_and(|e| e.abandoned_at.is_some()) {
            calls.sent.remove(id);
            calls.abandoned -= 1;
        }
    }

    /// The call of ticket `number` ended. Unless it was answered, its
    /// request may be on its way to the upstream still (rmcp queues it) or
    /// at work there: it is remembered as abandoned.
    fn ended(&self, number: u64, answered: bool) {
        let mut calls = self.lock();
        let id = calls
            .sent
            .iter()
            .find(|(_, e)| e.ticket == number)
            .map(|(id, _)| id.clone());
        if answered {
            calls.waiting.remove(&number);
            if let Some(id) = id {
                calls.sent.remove(&id);
            }
            return;
        }
        let now = Instant::now();
        let entry = match &id {
            Some(id) => calls.sent.get_mut(id),
            None => calls.waiting.get_mut(&number),
        };
        let Some(entry) = entry else {
            return;
        };
        entry.abandoned_at = Some(now);
        entry.relay = None;
        calls.abandoned += 1;
        if calls.abandoned > MAX_ABANDONED {
            calls.sent.retain(|_, e| e.abandoned_at.is_none());
            calls.waiting.retain(|_, e| e.abandoned_at.is_none());
            calls.abandoned = 0;
            calls.unattributable_until = Some(now + self.grace);
            tracing::warn!(
                "an upstream left too many cancelled requests unanswered; messages that name no request are not relayed on this connection for a while"
            );
        }
    }

    /// The call a progress token was given to. rmcp gives every request its
    /// own token, so the upstream can only name the call it was given.
    fn by_token(&self, token: &ProgressToken) -> Option<Relay> {
        self.lock()
            .sent
            .values()
            .find(|e| e.progress_token.as_ref() == Some(token))
            .and_then(|e| e.relay.clone())
    }

    /// The call a message that names no request belongs to, when that is
    /// unambiguous: the one request on the wire. `Err` when there are
    /// several (or none), an abandoned one among them.
    pub(crate) fn only(&self) -> Result<Option<Relay>, usize> {
        let calls = self.lock();
        match calls.sent.len() {
            1 if calls.unattributable_until.is_none() => {
                Ok(calls.sent.values().next().and_then(|e| e.relay.clone()))
            }
            n => Err(n),
        }
    }

    pub(crate) fn by_id(&self, id: &RequestId) -> Option<Option<Relay>> {
        self.lock().sent.get(id).map(|e| e.relay.clone())
    }

    /// Tracks request `id` as on the wire for `relay`, until the guard
    /// drops (answered).
    #[cfg(test)]
    pub(crate) fn track(self: &Arc<Self>, id: RequestId, relay: Relay) -> impl Sized + use<> {
        let mut ticket = self.ticket(Some(relay));
        let mut request = ClientRequest::PingRequest(Default::default());
        request.extensions_mut().insert(ticket.tag());
        self.on_the_wire(&id, &request);
        ticket.answered();
        ticket
    }

    /// The upstream closed the response stream of request `id` before
    /// answering it: its caller is told (advisory, never waited for).
    pub(crate) fn paused(&self, id: &RequestId) {
        if let Some(Some(relay)) = self.by_id(id) {
            let _ = relay.sender.try_send(Relayed::Paused);
        }
    }
}

/// One request's place in [`InFlight`], from before it is sent until its
/// call ends; unless marked answered, the request counts as abandoned.
pub(crate) struct Ticket {
    in_flight: Arc<InFlight>,
    number: u64,
    answered: bool,
}

impl Ticket {
    pub(crate) fn tag(&self) -> TicketTag {
        TicketTag(self.number)
    }

    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.in_flight.ended(self.number, self.answered);
    }
}

impl InFlight {
    /// Relays a progress or log message to the call it belongs to. Progress
    /// names its call by the token; a log message names none, so it goes
    /// to the caller only when exactly one request is in flight (else it
    /// stays in Gatehouse's log).
    pub(crate) fn relay(&self, notification: &ServerNotification) {
        match notification {
            ServerNotification::ProgressNotification(progress) => {
                if let Some(relay) = self.by_token(&progress.params.progress_token)
                    && relay.accepts.progress
                {
                    // Advisory: dropped rather than waited for.
                    let _ = relay
                        .sender
                        .try_send(Relayed::Progress(progress.params.clone()));
                }
            }
            ServerNotification::LoggingMessageNotification(log) => match self.only() {
                Ok(Some(relay)) if relay.accepts.logs => {
                    let _ = relay.sender.try_send(Relayed::Log(log.params.clone()));
                }
                _ => tracing::debug!(level = ?log.params.level, "upstream log message not relayed"),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{
        LoggingLevel, LoggingMessageNotification, LoggingMessageNotificationParam, NumberOrString,
        PingRequest, ProgressNotification, ProgressNotificationParam,
    };

    use super::*;
    use crate::relay::Accepts;

    const ALL: Accepts = Accepts {
        progress: true,
        logs: true,
        sampling: true,
        elicitation: true,
    };

    const GRACE: Duration = Duration::from_secs(30);

    fn in_flight() -> Arc<InFlight> {
        Arc::new(InFlight::new(GRACE))
    }

    fn relay() -> (Relay, tokio::sync::mpsc::Receiver<Relayed>) {
        Relay::channel(ALL)
    }

    /// The request as rmcp hands it to the transport: tagged with the
    /// ticket and with the progress token rmcp chose.
    fn sent(in_flight: &InFlight, ticket: &Ticket, id: i64, token: i64) {
        let mut request = ClientRequest::PingRequest(PingRequest::default());
        request.extensions_mut().insert(ticket.tag());
        request
            .get_meta_mut()
            .set_progress_token(ProgressToken(NumberOrString::Number(token)));
        in_flight.on_the_wire(&RequestId::Number(id), &request);
    }

    fn log() -> ServerNotification {
        ServerNotification::LoggingMessageNotification(LoggingMessageNotification::new(
            LoggingMessageNotificationParam::new(LoggingLevel::Info, "a line".into()),
        ))
    }

    fn progress(token: i64) -> ServerNotification {
        ServerNotification::ProgressNotification(ProgressNotification::new(
            ProgressNotificationParam::new(ProgressToken(NumberOrString::Number(token)), 1.0),
        ))
    }

    #[test]
    fn a_request_belongs_to_its_call_from_the_moment_it_is_sent() {
        let in_flight = in_flight();
        let (relay, mut received) = relay();
        let ticket = in_flight.ticket(Some(relay));
        // Not on the wire yet: the upstream cannot be talking about it.
        assert!(in_flight.only().is_err());
        sent(&in_flight, &ticket, 5, 50);
        // rmcp has not returned the request's handle yet, and the
        // upstream's first messages already find their call.
        assert!(in_flight.by_id(&RequestId::Number(5)).unwrap().is_some());
        assert!(in_flight.only().unwrap().is_some());
        in_flight.relay(&progress(50));
        in_flight.relay(&log());
        assert!(matches!(received.try_recv(), Ok(Relayed::Progress(_))));
        assert!(matches!(received.try_recv(), Ok(Relayed::Log(_))));
    }

    #[test]
    fn an_answered_call_is_forgotten() {
        let in_flight = in_flight();
        let (relay, _received) = relay();
        let mut ticket = in_flight.ticket(Some(relay));
        sent(&in_flight, &ticket, 1, 10);
        ticket.answered();
        drop(ticket);
        assert!(in_flight.by_id(&RequestId::Number(1)).is_none());
        assert_eq!(in_flight.only().err(), Some(0));
    }

    #[test]
    fn an_abandoned_request_keeps_its_messages_from_reaching_the_next_caller() {
        let in_flight = in_flight();
        let (first, mut first_received) = relay();
        let ticket = in_flight.ticket(Some(first));
        sent(&in_flight, &ticket, 1, 10);
        // The first caller cancels; the upstream may still be at work.
        drop(ticket);
        let (second, mut second_received) = relay();
        let second_ticket = in_flight.ticket(Some(second));
        sent(&in_flight, &second_ticket, 2, 20);

        // A log line names no request: it could be the abandoned one's.
        in_flight.relay(&log());
        assert!(second_received.try_recv().is_err());
        assert!(first_received.try_recv().is_err());
        assert_eq!(in_flight.only().err(), Some(2));
        // A request on the abandoned request's stream reaches nobody.
        assert!(in_flight.by_id(&RequestId::Number(1)).unwrap().is_none());
        // Progress names its request: the second call still gets its own.
        in_flight.relay(&progress(20));
        assert!(matches!(
            second_received.try_recv(),
            Ok(Relayed::Progress(_))
        ));
        in_flight.relay(&progress(10));
        assert!(first_received.try_recv().is_err());

        // The upstream answers the abandoned request after all: the
        // second call is now the only one.
        in_flight.answered(&RequestId::Number(1));
        in_flight.relay(&log());
        assert!(matches!(second_received.try_recv(), Ok(Relayed::Log(_))));
    }

    #[test]
    fn an_answer_does_not_forget_a_call_still_waiting_for_it() {
        let in_flight = in_flight();
        let (relay, _received) = relay();
        let _ticket = in_flight.ticket(Some(relay));
        sent(&in_flight, &_ticket, 3, 30);
        // The transport sees the answer before the call has taken it.
        in_flight.answered(&RequestId::Number(3));
        assert!(in_flight.by_id(&RequestId::Number(3)).unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_abandoned_before_it_reached_the_wire_is_remembered_when_it_does() {
        let in_flight = in_flight();
        let ticket = in_flight.ticket(None);
        let tag = ticket.tag();
        // The caller cancels while rmcp still holds the request...
        drop(ticket);
        // ...which rmcp then sends all the same.
        let mut request = ClientRequest::PingRequest(PingRequest::default());
        request.extensions_mut().insert(tag);
        in_flight.on_the_wire(&RequestId::Number(1), &request);
        let (relay, _received) = relay();
        let live = in_flight.ticket(Some(relay));
        sent(&in_flight, &live, 2, 20);
        assert_eq!(in_flight.only().err(), Some(2));
        // A request rmcp never sends is forgotten after the grace period.
        drop(in_flight.ticket(None));
        tokio::time::advance(GRACE).await;
        let calls = in_flight.lock();
        assert!(calls.waiting.is_empty());
        assert_eq!(calls.abandoned, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_is_remembered_for_the_call_timeout() {
        let in_flight = in_flight();
        let ticket = in_flight.ticket(None);
        sent(&in_flight, &ticket, 1, 10);
        drop(ticket);
        let (relay, mut received) = relay();
        let live = in_flight.ticket(Some(relay));
        sent(&in_flight, &live, 2, 20);
        tokio::time::advance(GRACE - Duration::from_millis(1)).await;
        in_flight.relay(&log());
        assert!(received.try_recv().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        in_flight.relay(&log());
        assert!(matches!(received.try_recv(), Ok(Relayed::Log(_))));
        assert_eq!(in_flight.lock().abandoned, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_unanswered_abandoned_requests_stop_attribution_for_a_while() {
        let in_flight = in_flight();
        for id in 0..=MAX_ABANDONED as i64 {
            let ticket = in_flight.ticket(None);
            sent(&in_flight, &ticket, id, id);
        }
        // Memory stays bounded...
        assert!(in_flight.lock().sent.len() <= MAX_ABANDONED);
        // ...and a lone live call is still not taken for the owner of a
        // message that names no request.
        let (relay, mut received) = relay();
        let ticket = in_flight.ticket(Some(relay));
        sent(&in_flight, &ticket, 10_000, 10_000);
        assert!(in_flight.only().is_err());
        in_flight.relay(&log());
        assert!(received.try_recv().is_err());
        // Its own request id still finds it.
        assert!(
            in_flight
                .by_id(&RequestId::Number(10_000))
                .unwrap()
                .is_some()
        );
        tokio::time::advance(GRACE).await;
        assert!(in_flight.only().unwrap().is_some());
    }
}
