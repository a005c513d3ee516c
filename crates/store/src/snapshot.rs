//! The configuration snapshot the switch reads on its hot path: every resource in memory,
//! replaced as a whole when the configuration changes, so a SIP message never waits on the
//! database. Changes made through this node's store are seen at once; on PostgreSQL every node
//! also LISTENs for the NOTIFY each write sends, so a change made through any node reaches all
//! of them within a second. A periodic reload covers notifications lost while a node's
//! listening connection was down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{Backend, Resource, Store, StoreError};

/// Every resource, by kind, as of one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every reload that found the configuration changed.
    pub generation: u64,
    by_kind: HashMap<String, Vec<Resource>>,
}

impl Snapshot {
    /// The resources of a kind (oldest first).
    pub fn of_kind(&self, kind: &str) -> &[Resource] {
        self.by_kind.get(kind).map_or(&[], Vec::as_slice)
    }

    pub fn get(&self, kind: &str, id: &str) -> Option<&Resource> {
        self.of_kind(kind).iter().find(|r| r.id == id)
    }

    pub fn len(&self) -> usize {
        self.by_kind.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether both hold the same resources, whatever their generations.
    pub fn same_resources(&self, other: &Snapshot) -> bool {
        self.by_kind == other.by_kind
    }
}

/// A live view of the snapshot: cheap to clone, `current()` never blocks.
#[derive(Clone)]
pub struct SnapshotHandle {
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl SnapshotHandle {
    pub fn current(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// Waits for the next snapshot (tests, and whoever derives data from it).
    pub async fn changed(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

/// How often the snapshot is reloaded even without a notification (published only if it
/// changed).
const SAFETY_RELOAD: Duration = Duration::from_secs(30);
/// Changes arriving together are folded into one reload.
const DEBOUNCE: Duration = Duration::from_millis(50);

impl Store {
    /// Marks a committed change for this node's snapshot keeper.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Every resource, read in one query.
    pub async fn load_snapshot(&self, generation: u64) -> Result<Snapshot, StoreError> {
        let _timing = self.stats.time(crate::Operation::SnapshotLoad);
        let rows: Vec<(String, String, String, String, String, String, String)> = sqlx::query_as(
            "SELECT kind, id, account_id, name, body, created_at, updated_at FROM resources ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_kind: HashMap<String, Vec<Resource>> = HashMap::new();
        for (kind, id, account_id, name, body, created_at, updated_at) in rows {
            by_kind.entry(kind.clone()).or_default().push(Resource {
                kind,
                id,
                account_id,
                name,
                body,
                created_at,
                updated_at,
            });
        }
        Ok(Snapshot { generation, by_kind })
    }

    /// Loads the snapshot and keeps it current in a background task.
    pub async fn keep_snapshot(&self) -> Result<SnapshotHandle, StoreError> {
        // Subscribe before the first load: a change committed in between is then seen as new
        // and reloaded, never lost until the safety reload.
        let local = self.changes.subscribe();
        let first = self.load_snapshot(1).await?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let store = self.clone();
        tokio::spawn(async move { store.snapshot_keeper(tx, local).await });
        Ok(SnapshotHandle { rx })
    }

    async fn snapshot_keeper(self, tx: watch::Sender<Arc<Snapshot>>, mut local: watch::Receiver<u64>) {
        let (remote_tx, mut remote) = tokio::sync::mpsc::channel::<()>(16);
        if self.backend == Backend::Postgres {
            tokio::spawn(listen_for_changes(self.url.clone(), remote_tx));
        }
        let mut generation = 1;
        loop {
            tokio::select! {
                r = local.changed() => if r.is_err() { return },
                Some(()) = remote.recv() => {}
                _ = tokio::time::sleep(SAFETY_RELOAD) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            local.borrow_and_update();
            while remote.try_recv().is_ok() {}
            match self.load_snapshot(generation + 1).await {
                // The periodic reload, or a write that changed nothing: what is derived from the
                // snapshot (the call policy, with every rate deck) is not rebuilt for nothing.
                Ok(s) if s.same_resources(&tx.borrow()) => debug!(generation, "configuration unchanged"),
                Ok(s) => {
                    generation += 1;
                    debug!(generation, resources = s.len(), "configuration snapshot reloaded");
                    if tx.send(Arc::new(s)).is_err() {
                        return; // nobody reads it any more
                    }
                }
                Err(e) => warn!(error = %e, "configuration snapshot reload failed; keeping the previous one"),
            }
        }
    }
}

/// LISTENs on PostgreSQL for configuration NOTIFYs from every node, reconnecting after errors.
async fn listen_for_changes(url: String, out: tokio::sync::mpsc::Sender<()>) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen("opentrunk_config").await {
                    warn!(error = %e, "LISTEN failed");
                } else {
                    // A reconnect may have missed notifications: reload once.
                    let _ = out.send(()).await;
                    loop {
                        match listener.recv().await {
                            Ok(_) => {
                                if out.send(()).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                warn!(error = %e, "configuration listener lost its connection");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "configuration listener cannot connect"),
        }
        if out.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
