//! `opentrunk serve`: binds the SIP listeners and the API, runs the switch, drains on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use engine::admission::Admitter;
use engine::registrar::Registrar;
use engine::switch::{CallPlumbing, CallTimers, Control, Core, SwitchConfig};
use engine::webhooks::{WebhookConfig, Webhooks};
use engine::{TlsSettings, Transports};
use serde_json::json;
use tracing::{error, info, warn};
use trunking::registrar::RegistrarRules;

use crate::records::CdrWriterConfig;

use crate::config::Config;

const STARTING: u8 = 0;
const UP: u8 = 1;
const DRAINING: u8 = 2;

/// Runs until drained; returns the process exit code.
pub async fn serve(config: Config) -> i32 {
    match run(config).await {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            1
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let health = Arc::new(AtomicU8::new(STARTING));
    let node_id = crate::cluster::node_id();
    info!(node = %node_id, "node starting");
    let store = store::Store::open(&config.database_url).await.map_err(|e| format!("store: {e}"))?;
    info!(backend = ?store.backend(), "store open");
    // The configuration the switch will read on its hot path, kept current from the store.
    let snapshot = store.keep_snapshot().await.map_err(|e| format!("store: {e}"))?;
    match store.ensure_admin_key(config.admin_api_key.as_deref()).await.map_err(|e| format!("store: {e}"))? {
        store::AdminKey::Generated(key) => {
            // Shown this once, on standard output; only its hash is kept.
            println!("Operator API key (shown once, store it now): {key}");
        }
        store::AdminKey::Configured | store::AdminKey::Existing => {}
    }
    // The call rules: the numbering plan (compiled once), the policy kept current with the
    // stored configuration, the channel counters.
    let plan = tokio::task::spawn_blocking(|| Arc::new(trunking::numbering::NumberingPlan::new()))
        .await
        .map_err(|e| e.to_string())?;
    let counters = Arc::new(crate::cluster::counters(&config, &node_id).await?);
    tokio::spawn(crate::cluster::keep_counters(counters.clone()));
    // Nonces are HMACs under the deployment's key, kept in the store: a challenge one node
    // issues is answered at any node, and survives restarts.
    let algorithms = config.digest_algorithms()?;
    let nonce_key = crate::cluster::digest_nonce_key(&store).await.map_err(|e| format!("digest nonce key: {e}"))?;
    let digest_realm = || {
        trunking::digest::DigestRealm::new(
            api::connections_common::digest::REALM,
            nonce_key,
            trunking::digest::DEFAULT_NONCE_LIFETIME_MS,
        )
        .with_algorithms(&algorithms)
    };
    let realm = digest_realm();
    let resolver = |what: &str| {
        let located = if config.sip.dns_servers.is_empty() {
            engine::Locator::system()
        } else {
            config
                .dns_servers()
                .and_then(|s| engine::Locator::with_nameservers(s).map_err(|e| e.to_string()))
                .map_err(engine::LocateError::Other)
        };
        match located {
            Ok(l) => Some(l),
            Err(e) => {
                warn!("DNS resolver unavailable ({e}): {what} named by DNS are unreachable");
                None
            }
        }
    };
    let locator = resolver("carriers' gateways and FQDN connections");
    // The hosts that are us in a Request-URI (SIP URI calls): the domain, the advertised
    // host, the listeners' addresses.
    let specs = config.listeners()?;
    let spec_addrs: Vec<_> = specs.iter().map(|l| (l.kind, l.addr)).collect();
    let mut equivalent_hosts: Vec<Arc<str>> = vec![advertised_host(&config, &spec_addrs).as_str().into()];
    for (_, addr) in &spec_addrs {
        if !addr.ip().is_unspecified() && !equivalent_hosts.iter().any(|h| **h == addr.ip().to_string()) {
            equivalent_hosts.push(addr.ip().to_string().as_str().into());
        }
    }
    let uri_calling = trunking::config::UriCallingSettings {
        domain: config.sip.domain.as_str().into(),
        equivalent_hosts,
        ..trunking::config::UriCallingSettings::default()
    };
    let source = crate::calls::PolicySource {
        store: store.clone(),
        plan,
        resolver: resolver("FQDN connections' sources").map(Arc::new),
        settings: api::policy::OperatorSettings { uri_calling, call_rates: config.limits.call_rates() },
    };
    let (first, inputs) = source.first(&snapshot).await;
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(Arc::new(first));
    tokio::spawn(source.keep(snapshot.clone(), policy_tx, inputs));
    // The registrar: credential connections' devices register here; their bindings are kept
    // in memory for calls and written to the store.
    let registrar_realm = digest_realm();
    let (binding_tx, binding_rx) = tokio::sync::mpsc::unbounded_channel();
    let registrar = Arc::new(
        Registrar::new(policy_rx.clone(), RegistrarRules::default(), registrar_realm).with_changes(binding_tx),
    );
    crate::registrations::restore(&store, &snapshot.current(), &registrar).await;
    tokio::spawn(crate::registrations::keep(store.clone(), registrar.clone(), binding_rx, node_id.clone()));
    tokio::spawn(crate::registrations::follow(store.clone(), snapshot.clone(), registrar.clone(), node_id.clone()));
    let admitter =
        Arc::new(Admitter::new(policy_rx, counters.clone(), realm, locator).with_registrar(registrar.clone()));

    let limits = config.transport_limits();
    let tls = TlsSettings { server: tls_server(&config)?, client: None };
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(limits.inbound_queue);
    let transports =
        Transports::bind(&config.listeners()?, tls, limits, in_tx).await.map_err(|e| format!("SIP: {e}"))?;

    let mut switch = SwitchConfig::default();
    switch.timers.t1 = Duration::from_millis(config.sip.t1_ms);
    switch.timers.t2 = Duration::from_millis(config.sip.t2_ms);
    switch.timers.t4 = Duration::from_millis(config.sip.t4_ms);
    switch.policy.max_message_size = config.sip.max_message_size;
    switch.max_transactions = config.sip.max_transactions;
    switch.spread_from = config.sip.spread_from;
    switch.calls = CallTimers {
        timeout_1xx: Duration::from_secs(config.calls.timeout_1xx_secs),
        timeout_2xx: Duration::from_secs(config.calls.timeout_2xx_secs),
        max_duration: Duration::from_secs(config.calls.max_duration_secs),
    };
    switch.listeners = transports.listeners().iter().map(|l| (l.kind, l.addr)).collect();
    switch.local_host = advertised_host(&config, &switch.listeners);
    info!(host = %switch.local_host, "advertising this address to peers");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let cores = Core::shards(switch, seed ^ u64::from(std::process::id()), config.sip.cores);
    let stats = cores[0].stats();

    // Around the calls: live calls for the API, webhooks, call records.
    let signing_key = api::public_key::webhook_signing_key(&store).await.map_err(|e| format!("webhook key: {e}"))?;
    let (webhooks, webhook_driver) =
        Webhooks::start(WebhookConfig::default(), signing_key).map_err(|e| format!("webhooks: {e}"))?;
    // Call records, and the journal of open calls that lets another node (or this one's next
    // start) write the records of calls this node was carrying when it died.
    let journal = crate::records::start_journal(store.clone(), node_id.clone(), config.cluster.lease_ttl());
    let (records, record_writer) = crate::records::start(store.clone(), CdrWriterConfig::new(spool_path(&config)));
    let records = journal.journaling(records);
    let journal_stats = journal.stats_reader();
    let live = Arc::new(api::LiveCallTable::new());
    let (notice_tx, notice_rx) = tokio::sync::mpsc::unbounded_channel();
    let services = crate::calls::CallServices {
        live: live.clone(),
        webhooks: Some(webhooks.clone()),
        records: records.clone(),
        counters: counters.clone(),
        handled: Arc::new(Default::default()),
    };
    let notices = tokio::spawn(crate::calls::handle_notices(notice_rx, services));

    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(16);
    // UAC connections: the switch keeps each registered to its PBX, following the configuration.
    tokio::spawn(crate::calls::keep_uac_connections(snapshot.clone(), ctl_tx.clone()));
    let drain = Duration::from_secs(config.sip.drain_timeout_secs);
    let plumbing = CallPlumbing {
        admitter: admitter.clone(),
        notices: notice_tx,
        registrar: Some(registrar),
        locator: resolver("UAC connections' registrars").map(Arc::new),
    };
    let driver = tokio::spawn(engine::switch::run_sharded(cores, transports.clone(), in_rx, ctl_rx, drain, plumbing));

    let api = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .map_err(|e| format!("API {}: {e}", config.api.listen))?;
    info!(listener = %api.local_addr().map_err(|e| e.to_string())?, "API listener up");
    let metrics = crate::metrics::Metrics {
        stats,
        transports: transports.clone(),
        snapshot,
        admitter,
        records,
        webhooks,
        store: store.stats(),
        extra: vec![
            Box::new(move |e: &mut crate::metrics::Exposition| e.flat(journal_stats.stats().families())),
            crate::cluster::counter_metrics(counters.clone()),
        ],
    };
    let app = Router::new()
        .route("/health", get(health_handler))
        .with_state(health.clone())
        .merge(Router::new().route("/metrics", get(crate::metrics::metrics_handler)).with_state(Arc::new(metrics)))
        .merge(api::router(api::ApiState::with_live_calls(Arc::new(store.clone()), live)));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(api, app).await {
            error!("API: {e}");
        }
    });
    health.store(UP, Ordering::SeqCst);

    shutdown_signal().await;
    info!("SIGTERM: draining (new INVITEs get 503)");
    health.store(DRAINING, Ordering::SeqCst);
    let _ = ctl_tx.send(Control::Drain).await;
    let stats = driver.await.map_err(|e| e.to_string())?;
    info!(?stats, "switch stopped");
    // Every call's notice is handled before the records and webhooks are flushed.
    let _ = notices.await;
    let written = record_writer.shutdown().await;
    info!(?written, "call records flushed");
    let journaled = journal.shutdown().await;
    info!(?journaled, "open-call journal closed");
    let delivered = webhook_driver.shutdown(Duration::from_secs(5)).await;
    info!(?delivered, "webhooks flushed");
    Ok(())
}

/// The host peers reach us at: the configured one, else the first listener's address, else
/// (a wildcard listener) this host's primary address.
fn advertised_host(config: &Config, listeners: &[(engine::TransportKind, std::net::SocketAddr)]) -> String {
    if let Some(a) = &config.sip.advertise {
        return a.clone();
    }
    let ip = listeners.first().map(|l| l.1.ip());
    match ip {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => primary_address().unwrap_or_else(|| "127.0.0.1".to_owned()),
    }
}

/// The address this host sends from toward the world: a UDP socket "connected" to a
/// documentation address (nothing is sent) learns the route's source address.
fn primary_address() -> Option<String> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

/// Where call records that cannot be stored at shutdown are kept: beside an SQLite file, else
/// in the working directory.
fn spool_path(config: &Config) -> std::path::PathBuf {
    match config.database_url.strip_prefix("sqlite://") {
        Some(path) => std::path::PathBuf::from(format!("{}.cdr-spool", path.split('?').next().unwrap_or(path))),
        None => std::path::PathBuf::from("opentrunk.cdr-spool"),
    }
}

async fn health_handler(State(h): State<Arc<AtomicU8>>) -> (StatusCode, Json<serde_json::Value>) {
    match h.load(Ordering::SeqCst) {
        UP => (StatusCode::OK, Json(json!({"status": "ok"}))),
        DRAINING => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))),
        _ => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting"}))),
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen for SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn tls_server(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.sip.tls_cert, &config.sip.tls_key) else { return Ok(None) };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(Some(Arc::new(cfg)))
}
