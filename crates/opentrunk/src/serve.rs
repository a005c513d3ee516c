//! `opentrunk serve`: binds the SIP listeners and the API, runs the switch, drains on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use engine::switch::{Control, Core, SwitchConfig, SwitchStats};
use engine::{TlsSettings, Transports};
use serde_json::json;
use tracing::{error, info};

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
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let core = Core::new(switch, seed ^ u64::from(std::process::id()));
    let stats = core.stats();
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(1);
    let drain = Duration::from_secs(config.sip.drain_timeout_secs);
    let driver = tokio::spawn(engine::switch::run(core, transports.clone(), in_rx, ctl_rx, drain));

    let api = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .map_err(|e| format!("API {}: {e}", config.api.listen))?;
    info!(listener = %api.local_addr().map_err(|e| e.to_string())?, "API listener up");
    let app = Router::new()
        .route("/health", get(health_handler))
        .with_state(health.clone())
        .merge(Router::new().route("/metrics", get(metrics_handler)).with_state((stats, transports.clone(), snapshot)))
        .merge(api::router(api::ApiState::new(std::sync::Arc::new(store.clone()))));
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
    info!(?stats, "stopped");
    Ok(())
}

async fn health_handler(State(h): State<Arc<AtomicU8>>) -> (StatusCode, Json<serde_json::Value>) {
    match h.load(Ordering::SeqCst) {
        UP => (StatusCode::OK, Json(json!({"status": "ok"}))),
        DRAINING => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))),
        _ => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting"}))),
    }
}

/// Prometheus text exposition of the switch's counters.
async fn metrics_handler(
    State((stats, transports, snapshot)): State<(Arc<SwitchStats>, Transports, store::SnapshotHandle)>,
) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2048);
    let extra = [
        ("opentrunk_sip_connections", "gauge", "open stream connections", transports.connection_count() as u64),
        (
            "opentrunk_sip_datagrams_dropped_total",
            "counter",
            "datagrams dropped: switch queue full",
            transports.dropped_datagrams(),
        ),
        (
            "opentrunk_config_generation",
            "gauge",
            "reloads of the configuration snapshot",
            snapshot.current().generation,
        ),
        (
            "opentrunk_config_resources",
            "gauge",
            "resources in the configuration snapshot",
            snapshot.current().len() as u64,
        ),
    ];
    for (name, kind, help, value) in stats.families().into_iter().chain(extra) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
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
