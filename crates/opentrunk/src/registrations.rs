//! The registrar's bindings in the store: every change written (so a restart, and the other
//! nodes, know who is registered), the stored ones restored at start, other nodes' changes
//! followed, and expired ones swept. The switch answers REGISTERs from memory; nothing here is on a call's path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use engine::registrar::{BindingChange, Registrar};
use store::{Registration, RegistrationWrite, Store};
use tokio::sync::mpsc;
use tracing::warn;
use trunking::registrar::{Binding, Flow};
use trunking::routing::Transport;
use trunking::time::Timestamp;

/// Binding changes written in one transaction at most.
const MAX_BATCH: usize = 1024;

/// How long the first change of a batch waits for others before they are written. A REGISTER
/// storm makes thousands of changes a second, and a commit each cost more than the REGISTER
/// (SQLite syncs its log at every commit); the switch answers from memory, so only a restart
/// or another node sees a binding this much later.
const GATHER: Duration = Duration::from_millis(50);

/// How often expired bindings are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

fn to_row(b: &Binding, account_id: &str, node: &str) -> Registration {
    Registration {
        connection_id: b.connection_id.to_string(),
        binding_key: Registration::key_of(&b.contact, b.instance.as_deref(), b.reg_id),
        account_id: account_id.to_owned(),
        username: b.username.to_string(),
        contact: b.contact.clone(),
        instance: b.instance.clone(),
        reg_id: b.reg_id,
        q: b.q,
        path: b.path.clone(),
        call_id: b.call_id.clone(),
        cseq: b.cseq,
        source_ip: b.source.address.ip().to_string(),
        source_port: b.source.address.port(),
        transport: b.source.transport.as_str().to_owned(),
        nat: b.nat,
        user_agent: b.user_agent.clone(),
        node: Some(node.to_owned()),
        registered_at: b.registered_at.as_millis() as i64,
        updated_at: b.updated_at.as_millis() as i64,
        expires_at: b.expires_at.as_millis() as i64,
    }
}

fn from_row(r: Registration) -> Option<Binding> {
    let ip = r.source_ip.parse().ok()?;
    let ms = |v: i64| Timestamp(u64::try_from(v).unwrap_or(0));
    Some(Binding {
        connection_id: r.connection_id.as_str().into(),
        username: r.username.as_str().into(),
        contact: r.contact,
        instance: r.instance,
        reg_id: r.reg_id,
        q: r.q,
        path: r.path,
        call_id: r.call_id,
        cseq: r.cseq,
        source: Flow {
            address: SocketAddr::new(ip, r.source_port),
            transport: Transport::from_token(&r.transport).unwrap_or(Transport::Udp),
        },
        nat: r.nat,
        user_agent: r.user_agent,
        registered_at: ms(r.registered_at),
        updated_at: ms(r.updated_at),
        expires_at: ms(r.expires_at),
    })
}

/// The stored bindings of every credential connection in `snapshot` that have not expired.
pub async fn restore(store: &Store, snapshot: &store::Snapshot, registrar: &Registrar) {
    let mut restored = Vec::new();
    for c in snapshot.of_kind(api::policy::CREDENTIAL_CONNECTION_KIND) {
        match stored(store, &c.id).await {
            Ok(bindings) => restored.extend(bindings),
            Err(e) => warn!(connection = %c.id, "registrations not restored: {e}"),
        }
    }
    registrar.restore(restored);
}

/// A connection's stored bindings that have not expired.
async fn stored(store: &Store, connection_id: &str) -> Result<Vec<Binding>, store::StoreError> {
    use store::Repository;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let rows = store.list_registrations(connection_id).await?;
    Ok(rows.into_iter().filter(|r| r.expires_at > now).filter_map(from_row).collect())
}

/// Follows the bindings other nodes write (cluster mode, PostgreSQL): a call for a device that
/// registered at another node finds it here too, and a REGISTER refreshing it here is decided
/// against the binding the other node accepted.
pub async fn follow(store: Store, snapshot: store::SnapshotHandle, registrar: Arc<Registrar>, node: String) {
    let mut notices = store.registration_notices();
    while let Some(notice) = notices.recv().await {
        match notice {
            store::RegistrationNotice::Changed { node: Some(from), .. } if from == node => {}
            store::RegistrationNotice::Changed { connection_id, .. } => match stored(&store, &connection_id).await {
                Ok(bindings) => registrar.replace(&connection_id, bindings),
                Err(e) => warn!(connection = %connection_id, "registrations of another node not read: {e}"),
            },
            store::RegistrationNotice::Resync => {
                for c in snapshot.current().of_kind(api::policy::CREDENTIAL_CONNECTION_KIND) {
                    match stored(&store, &c.id).await {
                        Ok(bindings) => registrar.replace(&c.id, bindings),
                        Err(e) => warn!(connection = %c.id, "registrations not read again: {e}"),
                    }
                }
            }
        }
    }
}

/// Writes every change of the bindings, and sweeps expired ones, until the registrar is gone.
/// `node` names this node in what it writes (other nodes skip their own changes).
pub async fn keep(
    store: Store,
    registrar: Arc<Registrar>,
    mut changes: mpsc::UnboundedReceiver<BindingChange>,
    node: String,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            n = changes.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                let closed = gather(&mut changes, &mut batch).await;
                let writes = coalesce(batch.drain(..), &node);
                if let Err(e) = store.write_registrations(&writes, Some(&node)).await {
                    warn!(bindings = writes.len(), "registrations not stored: {e}");
                }
                if closed {
                    return;
                }
            }
            _ = sweep.tick() => {
                registrar.expire(SystemTime::now());
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                if let Err(e) = store.expire_registrations(now).await {
                    warn!("expired registrations not swept from the store: {e}");
                }
            }
        }
    }
}

/// Adds to `batch` what arrives within [`GATHER`], up to [`MAX_BATCH`]; true when the
/// registrar is gone (nothing more will come).
async fn gather(changes: &mut mpsc::UnboundedReceiver<BindingChange>, batch: &mut Vec<BindingChange>) -> bool {
    let until = tokio::time::Instant::now() + GATHER;
    while batch.len() < MAX_BATCH {
        tokio::select! {
            n = changes.recv_many(batch, MAX_BATCH - batch.len()) => if n == 0 {
                return true;
            },
            () = tokio::time::sleep_until(until) => return false,
        }
    }
    false
}

/// The registrar's changes as writes, the last change of each binding only (a refresh that
/// follows a refresh of the same binding replaces it), in the order of those last changes.
fn coalesce(changes: impl Iterator<Item = BindingChange>, node: &str) -> Vec<RegistrationWrite> {
    let mut writes: Vec<Option<RegistrationWrite>> = Vec::new();
    let mut at: HashMap<(String, String), usize> = HashMap::new();
    for change in changes {
        let upserts =
            change.bound.iter().map(|b| RegistrationWrite::Upsert(Box::new(to_row(b, &change.account_id, node))));
        let removals = change.removed.iter().map(|b| RegistrationWrite::Remove {
            connection_id: b.connection_id.to_string(),
            binding_key: Registration::key_of(&b.contact, b.instance.as_deref(), b.reg_id),
        });
        for write in upserts.chain(removals) {
            let (c, k) = write.binding();
            if let Some(superseded) = at.insert((c.to_owned(), k.to_owned()), writes.len()) {
                writes[superseded] = None;
            }
            writes.push(Some(write));
        }
    }
    writes.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, cseq: u32) -> Binding {
        Binding {
            connection_id: "conn-1".into(),
            username: "alice".into(),
            contact: contact.into(),
            instance: None,
            reg_id: None,
            q: None,
            path: Vec::new(),
            call_id: "reg-1@192.168.1.20".into(),
            cseq,
            source: Flow { address: "203.0.113.9:40123".parse().unwrap(), transport: Transport::Udp },
            nat: false,
            user_agent: None,
            registered_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_700_000_060_000),
            expires_at: Timestamp(1_700_003_660_000),
        }
    }

    /// Changes that arrive within the window share one write; one after it waits for the
    /// next; the registrar's end is reported with what was gathered.
    #[tokio::test(start_paused = true)]
    async fn changes_within_the_window_are_gathered_into_one_write() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let change = |cseq| BindingChange {
            account_id: "acct-1".into(),
            bound: vec![binding("sip:a@192.0.2.1", cseq)],
            removed: vec![],
        };
        let feeder = {
            let tx = tx.clone();
            tokio::spawn(async move {
                for cseq in 2..=4 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    tx.send(change(cseq)).unwrap();
                }
                // Past the window of a batch started at 0 ms.
                tokio::time::sleep(GATHER).await;
                tx.send(change(5)).unwrap();
            })
        };
        let mut batch = vec![change(1)];
        assert!(!gather(&mut rx, &mut batch).await);
        assert_eq!(batch.iter().map(|c| c.bound[0].cseq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        feeder.await.unwrap();
        drop(tx);
        let mut next = Vec::new();
        assert!(gather(&mut rx, &mut next).await, "the registrar is gone");
        assert_eq!(next.iter().map(|c| c.bound[0].cseq).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn queued_changes_keep_the_last_change_of_each_binding_in_order() {
        let change =
            |bound: Vec<Binding>, removed: Vec<Binding>| BindingChange { account_id: "acct-1".into(), bound, removed };
        let (a, b, c) = ("sip:a@192.0.2.1", "sip:b@192.0.2.2", "sip:c@192.0.2.3");
        let changes = vec![
            change(vec![binding(a, 1)], vec![]),
            change(vec![binding(b, 1)], vec![]),
            change(vec![binding(a, 2)], vec![]),
            change(vec![], vec![binding(b, 1)]),
            change(vec![binding(c, 1)], vec![]),
            change(vec![], vec![binding(c, 1)]),
            change(vec![binding(c, 2)], vec![]),
        ];
        let writes = coalesce(changes.into_iter(), "node-1");
        let seen: Vec<(&str, Option<u32>)> = writes
            .iter()
            .map(|w| match w {
                RegistrationWrite::Upsert(r) => (r.contact.as_str(), Some(r.cseq)),
                RegistrationWrite::Remove { binding_key, .. } => (binding_key.as_str(), None),
            })
            .collect();
        // a refreshed (its second refresh only), b removed, c removed then bound again.
        assert_eq!(seen, [(a, Some(2)), (b, None), (c, Some(2))]);
        assert!(writes.iter().all(|w| w.binding().0 == "conn-1"));
    }

    #[test]
    fn a_binding_survives_the_store_unchanged() {
        let b = Binding {
            connection_id: "conn-1".into(),
            username: "alice".into(),
            contact: "sip:alice@192.168.1.20:5060".into(),
            instance: Some("\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\"".into()),
            reg_id: Some(1),
            q: Some(500),
            path: vec!["<sip:edge.example.net;lr>".into()],
            call_id: "reg-1@192.168.1.20".into(),
            cseq: 7,
            source: Flow { address: "203.0.113.9:40123".parse().unwrap(), transport: Transport::Tcp },
            nat: true,
            user_agent: Some("baresip".into()),
            registered_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_700_000_060_000),
            expires_at: Timestamp(1_700_003_660_000),
        };
        let row = to_row(&b, "acct-1", "node-1");
        assert_eq!(row.account_id, "acct-1");
        assert_eq!(from_row(row), Some(b));
    }
}
