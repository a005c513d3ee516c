//! The core's UAC registrations: for each `uac_connection`, opentrunk registers itself to the
//! customer's PBX (`crate::uac::UacRegistration` decides what to send); the core runs its
//! REGISTERs as client transactions, its timers on the core's wheel, and hands out what needs the
//! outside world (RFC 3263 lookups) and what changed (registered, failed, expired).

use std::collections::HashMap;
use std::time::Instant;

use sip::transaction::{ClientEvent, TransactionKey};
use tracing::debug;

use super::calls::{ClientRole, Dest};
use super::{Core, Due};
use crate::dns::{LocateError, Target};
use crate::uac::{RequestFailure, UacAction, UacEvent, UacIds, UacLocal, UacRegistration, UacSettings};

pub(super) struct UacEntry {
    connection_id: String,
    account_id: String,
    reg: UacRegistration,
    /// The REGISTER in flight.
    txn: Option<TransactionKey>,
    /// Removed from the configuration: unregistering, then gone.
    retiring: bool,
}

/// A UAC connection to keep registered: whose it is, and its settings.
#[derive(Clone, Debug)]
pub struct UacConnection {
    pub connection_id: String,
    pub account_id: String,
    pub settings: UacSettings,
}

/// A change of one UAC connection's registration, for the registrar and the API.
#[derive(Clone, Debug)]
pub struct UacChange {
    pub connection_id: String,
    pub account_id: String,
    pub event: UacEvent,
    /// Where the binding is in force now, and the address of record registered there.
    pub bound: Option<(Target, String)>,
}

impl Core {
    /// The UAC connections to keep registered, with their settings: new ones start, removed
    /// ones unregister, changed ones unregister and start again with the new settings.
    pub fn set_uac_connections(&mut self, wanted: Vec<UacConnection>, now: Instant) {
        let wanted: HashMap<String, UacConnection> = wanted.into_iter().map(|c| (c.connection_id.clone(), c)).collect();
        let ids: Vec<u64> = self.uacs.keys().copied().collect();
        let mut kept = std::collections::HashSet::new();
        for id in ids {
            let Some(e) = self.uacs.get_mut(&id) else { continue };
            if e.retiring {
                continue;
            }
            match wanted.get(&e.connection_id) {
                Some(c) if &c.settings == e.reg.settings() => {
                    kept.insert(e.connection_id.clone());
                }
                _ => {
                    e.retiring = true;
                    e.reg.unregister(now);
                    self.drive_uac(id, now);
                }
            }
        }
        for (connection_id, UacConnection { account_id, settings, .. }) in wanted {
            if kept.contains(&connection_id) {
                continue;
            }
            let local = UacLocal { host_port: self.config.sent_by(settings.transport), transport: settings.transport };
            let ids = UacIds { call_id: self.new_call_id(), from_tag: self.new_tag(), cnonce: self.new_tag() };
            let id = self.next_call;
            self.next_call += 1;
            let reg = UacRegistration::new(settings, local, ids);
            self.uacs.insert(id, UacEntry { connection_id, account_id, reg, txn: None, retiring: false });
            self.drive_uac(id, now);
        }
    }

    /// RFC 3263 lookups a registration needs: (its id, the URI). Answer with
    /// [`Core::uac_located`].
    pub fn poll_uac_locate(&mut self) -> Option<(u64, String)> {
        self.uac_locates.pop_front()
    }

    pub fn uac_located(&mut self, id: u64, located: Result<Vec<Target>, LocateError>, now: Instant) {
        if let Some(e) = self.uacs.get_mut(&id) {
            e.reg.handle_targets(located, now);
        }
        self.drive_uac(id, now);
    }

    pub fn poll_uac_change(&mut self) -> Option<UacChange> {
        self.uac_changes.pop_front()
    }

    /// Every UAC registration unregisters (the switch stops).
    pub fn unregister_uacs(&mut self, now: Instant) {
        self.set_uac_connections(Vec::new(), now);
    }

    pub(super) fn drive_uac(&mut self, id: u64, now: Instant) {
        let Some(mut e) = self.uacs.remove(&id) else { return };
        while let Some(action) = e.reg.poll_action() {
            match action {
                UacAction::Locate { uri } => self.uac_locates.push_back((id, uri)),
                UacAction::Register { request, target } => {
                    let dest = Dest::to_target(&target, self.config.listener(target.kind));
                    // A new REGISTER takes over from one still running (its answers no longer count).
                    if let Some(old) = e.txn.take() {
                        self.clients.remove(&old);
                    }
                    let request = self.with_via(request, target.kind);
                    match self.start_client_as_is(request, dest, ClientRole::Uac { uac: id }, now) {
                        Some(key) => e.txn = Some(key),
                        None => e.reg.handle_request_failed(RequestFailure::Transport, now),
                    }
                }
            }
        }
        while let Some(event) = e.reg.poll_event() {
            debug!(connection = %e.connection_id, ?event, "UAC registration");
            let bound = e.reg.bound_target().map(|t| (t.clone(), e.reg.aor().to_owned()));
            self.uac_changes.push_back(UacChange {
                connection_id: e.connection_id.clone(),
                account_id: e.account_id.clone(),
                event,
                bound,
            });
        }
        if e.retiring && e.reg.state() == crate::uac::UacState::Stopped {
            if let Some(old) = e.txn.take() {
                self.clients.remove(&old);
                self.publish_client_count();
            }
            return;
        }
        if let Some(at) = e.reg.poll_timeout() {
            self.timers.push(at, Due::Uac(id));
        }
        self.uacs.insert(id, e);
    }

    pub(super) fn uac_timeout(&mut self, id: u64, now: Instant) {
        let Some(e) = self.uacs.get_mut(&id) else { return };
        if e.reg.poll_timeout().is_some_and(|t| t <= now) {
            e.reg.handle_timeout(now);
            self.drive_uac(id, now);
        }
    }

    /// A REGISTER's client transaction spoke.
    pub(super) fn uac_client_event(&mut self, id: u64, key: &TransactionKey, event: ClientEvent, now: Instant) {
        let Some(e) = self.uacs.get_mut(&id) else { return };
        if e.txn.as_ref() != Some(key) {
            return; // a REGISTER given up on
        }
        match event {
            ClientEvent::Final(m) => {
                e.txn = None;
                e.reg.handle_response(&m, now);
            }
            ClientEvent::Timeout => {
                e.txn = None;
                e.reg.handle_request_failed(RequestFailure::Timeout, now);
            }
            ClientEvent::TransportError => {
                e.txn = None;
                e.reg.handle_request_failed(RequestFailure::Transport, now);
            }
            ClientEvent::Provisional(_) | ClientEvent::Terminated => return,
        }
        self.drive_uac(id, now);
    }

    /// UAC registrations alive (for the drain: they unregister before the switch stops).
    pub fn uac_registrations(&self) -> usize {
        self.uacs.len()
    }
}
