//! The registrar service: `trunking::registrar`'s rules with the state they need (the bindings
//! of every credential connection, the nonces seen, the failed-attempt limiter) and the clock.
//! The switch core hands a REGISTER out and takes the answer back; the bindings live here, in
//! memory, for inbound calls to find ([`Registrations`]), and every change goes out as a
//! [`BindingChange`] for the platform to store (so they survive a restart, and other nodes see
//! them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use sip::Message;
use sip::headers::HeaderName;
use tokio::sync::{mpsc, watch};
use trunking::digest::{DigestRealm, ReplayGuard};
use trunking::inbound::Registrations;
use trunking::registrar::{
    Binding, FailedAuthLimiter, Guards, RegisterOutcome, RegisterRequest, RegistrarRules, register,
};
use trunking::routing::{RegisteredContact, Transport};
use trunking::trace::Trace;

use crate::admission::{Policy, timestamp};
use crate::transport::TransportKind;

/// A REGISTER waiting for its answer.
#[derive(Debug)]
pub struct RegistrationRequest {
    /// The switch's name for it.
    pub id: u64,
    pub message: Message,
    pub source: SocketAddr,
    pub transport: TransportKind,
}

/// How to answer a REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationAnswer {
    pub status: u16,
    pub phrase: &'static str,
    pub headers: Vec<(HeaderName, String)>,
}

/// What changed in one connection's bindings.
#[derive(Clone, Debug)]
pub struct BindingChange {
    pub account_id: String,
    /// Bindings made or refreshed.
    pub bound: Vec<Binding>,
    /// Bindings that went.
    pub removed: Vec<Binding>,
}

/// Bindings by connection id.
type BindingTable = HashMap<String, Vec<Binding>>;

pub struct Registrar {
    policy: watch::Receiver<Arc<Policy>>,
    rules: RegistrarRules,
    realm: DigestRealm,
    guards: Mutex<(ReplayGuard, FailedAuthLimiter)>,
    bindings: RwLock<BindingTable>,
    changes: Option<mpsc::UnboundedSender<BindingChange>>,
    /// UAC connections registered to their PBX: the address of record there, and where the
    /// binding is (calls for the connection go to it).
    uac: RwLock<HashMap<String, (String, crate::dns::Target)>>,
}

/// Nonce counts remembered at a time.
const REPLAY_CAPACITY: usize = 65_536;

impl Registrar {
    pub fn new(policy: watch::Receiver<Arc<Policy>>, rules: RegistrarRules, realm: DigestRealm) -> Registrar {
        Registrar {
            policy,
            rules,
            realm,
            guards: Mutex::new((ReplayGuard::new(REPLAY_CAPACITY), FailedAuthLimiter::default())),
            bindings: RwLock::new(HashMap::new()),
            changes: None,
            uac: RwLock::new(HashMap::new()),
        }
    }

    /// Where every change of the bindings goes.
    pub fn with_changes(mut self, changes: mpsc::UnboundedSender<BindingChange>) -> Registrar {
        self.changes = Some(changes);
        self
    }

    /// Bindings known from before (the store's, at start).
    pub fn restore(&self, restored: Vec<Binding>) {
        let mut table = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        for b in restored {
            table.entry(b.connection_id.to_string()).or_default().push(b);
        }
    }

    /// Another node changed a connection's bindings: `stored` (the store's, unexpired) replace
    /// this node's. Bindings are the store's truth, so this node's next REGISTER for the
    /// connection is decided against what any node last accepted.
    pub fn replace(&self, connection_id: &str, stored: Vec<Binding>) {
        let mut table = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        if stored.is_empty() {
            table.remove(connection_id);
        } else {
            table.insert(connection_id.to_owned(), stored);
        }
    }

    /// Answers one REGISTER at wall-clock time `now`.
    pub fn handle(&self, req: &RegistrationRequest, now: SystemTime) -> RegistrationAnswer {
        let policy = self.policy.borrow().clone();
        let config = &*policy.config;
        let now = timestamp(now);
        let transport = match req.transport {
            TransportKind::Udp => Transport::Udp,
            TransportKind::Tcp => Transport::Tcp,
            TransportKind::Tls => Transport::Tls,
        };
        let facts = RegisterRequest::of(&req.message, req.source, transport);
        // The AOR names the connection; its bindings are what the rules decide against.
        let connection_id = req
            .message
            .to()
            .ok()
            .and_then(|t| t.user().map(str::to_owned))
            .and_then(|user| config.connection_of_user(&user).map(|c| config.connection(c).id.to_string()));
        let current: Vec<Binding> = connection_id
            .as_ref()
            .and_then(|id| self.bindings.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned())
            .unwrap_or_default();
        let mut trace = Trace::new();
        let outcome = {
            let mut g = self.guards.lock().unwrap_or_else(|p| p.into_inner());
            let (replay, limiter) = &mut *g;
            replay.prune(now);
            register(
                config,
                &self.rules,
                &facts,
                Guards { realm: &self.realm, replay, limiter },
                &current,
                now,
                &mut trace,
            )
        };
        match outcome {
            RegisterOutcome::Accepted(registered) => {
                let headers = registered.headers(now);
                let id = registered.connection_id.to_string();
                let account_id = config.connection(registered.connection).account_id.to_string();
                {
                    let mut table = self.bindings.write().unwrap_or_else(|p| p.into_inner());
                    if registered.bindings.is_empty() {
                        table.remove(&id);
                    } else {
                        table.insert(id, registered.bindings.clone());
                    }
                }
                if let Some(tx) = &self.changes {
                    let _ =
                        tx.send(BindingChange { account_id, bound: registered.bindings, removed: registered.removed });
                }
                RegistrationAnswer { status: 200, phrase: "OK", headers }
            }
            RegisterOutcome::Challenge { stale } => RegistrationAnswer {
                status: 401,
                phrase: "Unauthorized",
                headers: self
                    .realm
                    .challenges(now, stale)
                    .into_iter()
                    .map(|c| (HeaderName::WwwAuthenticate, c))
                    .collect(),
            },
            RegisterOutcome::Rejected(refusal) => {
                RegistrationAnswer { status: refusal.status(), phrase: refusal.phrase(), headers: refusal.headers() }
            }
        }
    }

    /// Drops bindings expired at `now`; returns them (for the store).
    pub fn expire(&self, now: SystemTime) -> Vec<Binding> {
        let now = timestamp(now);
        let mut gone = Vec::new();
        let mut table = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, list| {
            list.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    gone.push(b.clone());
                }
                live
            });
            !list.is_empty()
        });
        gone
    }

    /// A UAC connection's registration changed: while a binding is in force, calls for the
    /// connection go to the PBX it is at, addressed to the address of record.
    pub fn uac_changed(&self, change: &crate::switch::UacChange) {
        let previous = {
            let mut uac = self.uac.write().unwrap_or_else(|p| p.into_inner());
            match &change.bound {
                Some((target, aor)) => uac.insert(change.connection_id.clone(), (aor.clone(), target.clone())),
                None => uac.remove(&change.connection_id),
            }
        };
        // Stored as the connection's one binding: what the registration-status endpoints read.
        let Some(tx) = &self.changes else { return };
        let account_id = change.account_id.clone();
        let now = SystemTime::now();
        let binding = |aor: &str, target: &crate::dns::Target, expires_in: std::time::Duration| Binding {
            connection_id: change.connection_id.as_str().into(),
            username: aor.trim_start_matches("sip:").split('@').next().unwrap_or_default().into(),
            contact: aor.to_owned(),
            instance: None,
            reg_id: None,
            q: None,
            path: Vec::new(),
            call_id: String::new(),
            cseq: 0,
            source: trunking::registrar::Flow {
                address: target.addr,
                transport: match target.kind {
                    TransportKind::Udp => Transport::Udp,
                    TransportKind::Tcp => Transport::Tcp,
                    TransportKind::Tls => Transport::Tls,
                },
            },
            nat: false,
            user_agent: None,
            registered_at: timestamp(now),
            updated_at: timestamp(now),
            expires_at: timestamp(now + expires_in),
        };
        let change = match (&change.bound, &change.event, previous) {
            (Some((target, aor)), crate::uac::UacEvent::Registered { expires_at }, _) => {
                let left = expires_at.saturating_duration_since(std::time::Instant::now());
                BindingChange { account_id, bound: vec![binding(aor, target, left)], removed: Vec::new() }
            }
            (None, _, Some((aor, target))) => BindingChange {
                account_id,
                bound: Vec::new(),
                removed: vec![binding(&aor, &target, Default::default())],
            },
            _ => return,
        };
        let _ = tx.send(change);
    }

    /// Where a registered contact of `connection_id` is reached: the flow its REGISTER came
    /// over when the contact is behind NAT (or the PBX a UAC connection is registered at),
    /// `None` when the contact is reachable as written.
    pub fn flow(&self, connection_id: &str, contact: &str) -> Option<(SocketAddr, TransportKind)> {
        if let Some((aor, target)) = self.uac.read().unwrap_or_else(|p| p.into_inner()).get(connection_id)
            && aor == contact
        {
            return Some((target.addr, target.kind));
        }
        let table = self.bindings.read().unwrap_or_else(|p| p.into_inner());
        let b = table.get(connection_id)?.iter().find(|b| b.contact == contact)?;
        let flow = b.received()?;
        let kind = match flow.transport {
            Transport::Udp => TransportKind::Udp,
            Transport::Tcp => TransportKind::Tcp,
            Transport::Tls => TransportKind::Tls,
        };
        Some((flow.address, kind))
    }

    /// Bindings held now, in all.
    pub fn len(&self) -> usize {
        self.bindings.read().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registrations for Registrar {
    fn contacts(&self, connection_id: &str) -> Vec<RegisteredContact> {
        let now = timestamp(SystemTime::now());
        if let Some((aor, _)) = self.uac.read().unwrap_or_else(|p| p.into_inner()).get(connection_id) {
            return vec![RegisteredContact { uri: aor.clone(), q: None, registered_at: now }];
        }
        let table = self.bindings.read().unwrap_or_else(|p| p.into_inner());
        table
            .get(connection_id)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .map(|b| RegisteredContact { uri: b.contact.clone(), q: b.q, registered_at: b.registered_at })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").field("bindings", &self.len()).finish_non_exhaustive()
    }
}
