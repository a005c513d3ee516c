//! Configuration: a TOML file (`--config FILE`), then environment variables over it, then
//! defaults. The `OPENTRUNK_*` variable names are part of the operator contract.

use std::path::Path;
use std::time::Duration;

use engine::{ListenSpec, TransportLimits};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub api: ApiConfig,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Optional: cluster-wide counters.
    pub redis_url: Option<String>,
    /// The operator's API key.
    pub admin_api_key: Option<String>,
    pub log: LogConfig,
    pub calls: CallsConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
}

/// Call rates (token buckets): a source address's and an account's new calls per second and
/// burst. 0 for either number of a pair: no limit of that kind.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub calls_per_second_per_source: u32,
    pub burst_per_source: u32,
    pub calls_per_second_per_account: u32,
    pub burst_per_account: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let source = trunking::call_rate::CallRateLimits::DEFAULT_PER_SOURCE;
        LimitsConfig {
            calls_per_second_per_source: source.per_second(),
            burst_per_source: source.burst(),
            calls_per_second_per_account: 0,
            burst_per_account: 0,
        }
    }
}

impl LimitsConfig {
    pub fn call_rates(&self) -> trunking::call_rate::CallRateLimits {
        use trunking::call_rate::CallRate;
        trunking::call_rate::CallRateLimits {
            per_source: CallRate::new(self.calls_per_second_per_source, self.burst_per_source),
            per_account: CallRate::new(self.calls_per_second_per_account, self.burst_per_account),
        }
    }
}

/// Many nodes, one platform (`redis_url` and a PostgreSQL `database_url` set).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long a node that stops answering keeps its channels counted, and how old its last
    /// heartbeat must be before another node closes its open calls' records. Every node of a
    /// cluster must use the same value.
    pub lease_ttl_secs: u64,
    /// The prefix of every Redis key, so two deployments (or tests) can share one Redis.
    pub redis_key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { lease_ttl_secs: 30, redis_key_prefix: "ot:".into() }
    }
}

impl ClusterConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

/// How long calls may wait for their peers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// No provisional answer (above 100) from a route within this: the next route is tried.
    pub timeout_1xx_secs: u64,
    /// No final answer within this: the call ends `408`.
    pub timeout_2xx_secs: u64,
    /// An answered call with no signalling for this long is torn down (BYE on both legs).
    pub max_duration_secs: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig { timeout_1xx_secs: 3, timeout_2xx_secs: 90, max_duration_secs: 14_400 }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// `udp:IP:PORT`, `tcp:IP:PORT`, `tls:IP:PORT`.
    pub listen: Vec<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// RFC 3261 timers in milliseconds.
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub max_message_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout_secs: u64,
    /// How long SIGTERM waits for running transactions before exiting anyway.
    pub drain_timeout_secs: u64,
    /// Live transactions beyond which new requests get 503.
    pub max_transactions: usize,
    /// Switch cores: threads of their own (apart from the runtime of the API, call records and
    /// webhooks) that each handle the calls dealt to them, the first reading the listeners, keeping new calls while it keeps up and dealing them round the cores when
    /// it falls behind (`spread_from`). One by default: on two vCPUs shared with the peers a
    /// second costs nothing at 500 calls/s (it is dealt almost no calls) but 4-15% more CPU per
    /// call at 2,000/s, and there bought no shorter tail (`docs/performance.md`, fifteenth
    /// round); on a host with CPUs to spare it takes bursts in parallel.
    pub cores: usize,
    /// With several cores: the datagrams a turn of the first core must hold for new calls to
    /// be dealt round the cores; in shorter turns they stay on the first, which costs no
    /// hand-off. 1 deals every call.
    pub spread_from: usize,
    /// The address carriers and customers reach us at (Via, Contact), when the listeners'
    /// own is not it (a wildcard listener, NAT); default: the first listener's, or this
    /// host's primary address for a wildcard one.
    pub advertise: Option<String>,
    /// DNS servers (`IP:PORT`) for locating gateways and customers' FQDNs (RFC 3263); empty:
    /// the system's resolver (`/etc/resolv.conf`).
    pub dns_servers: Vec<String>,
    /// The platform's SIP domain: `sip:user@<domain>` reaches a credential connection's devices
    /// (SIP URI calling).
    pub domain: String,
    /// Digest algorithms our challenges offer, in order (`MD5`, `SHA-256`). MD5 alone by
    /// default: some deployed devices give up on a challenge set that names an algorithm they
    /// do not know.
    pub digest_algorithms: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human-readable) or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `engine=debug,info`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sip: SipConfig::default(),
            api: ApiConfig::default(),
            database_url: "sqlite://opentrunk.db".into(),
            redis_url: None,
            admin_api_key: None,
            log: LogConfig::default(),
            calls: CallsConfig::default(),
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let limits = TransportLimits::default();
        SipConfig {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            tls_cert: None,
            tls_key: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            max_message_size: limits.max_message_size,
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            drain_timeout_secs: 32,
            max_transactions: 200_000,
            cores: 1,
            spread_from: engine::switch::SPREAD_FROM,
            advertise: None,
            dns_servers: Vec::new(),
            domain: "sip.opentrunk.local".into(),
            digest_algorithms: vec!["MD5".into()],
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: "127.0.0.1:8080".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into(), level: "info".into() }
    }
}

impl Config {
    /// Loads the file (if any), applies `env`, and validates.
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut c = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => Config::default(),
        };
        let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        if let Some(v) = set(env("OPENTRUNK_SIP_LISTEN")) {
            c.sip.listen = v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = set(env("OPENTRUNK_SIP_ADVERTISE")) {
            c.sip.advertise = Some(v);
        }
        if let Some(v) = set(env("OPENTRUNK_DNS_SERVERS")) {
            c.sip.dns_servers = v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = set(env("OPENTRUNK_API_LISTEN")) {
            c.api.listen = v;
        }
        if let Some(v) = set(env("OPENTRUNK_DATABASE_URL")) {
            c.database_url = v;
        }
        if let Some(v) = set(env("OPENTRUNK_REDIS_URL")) {
            c.redis_url = Some(v);
        }
        if let Some(v) = set(env("OPENTRUNK_ADMIN_API_KEY")) {
            c.admin_api_key = Some(v);
        }
        if let Some(v) = set(env("OPENTRUNK_TLS_CERT")) {
            c.sip.tls_cert = Some(v);
        }
        if let Some(v) = set(env("OPENTRUNK_TLS_KEY")) {
            c.sip.tls_key = Some(v);
        }
        if let Some(v) = set(env("OPENTRUNK_LOG_FORMAT")) {
            c.log.format = v;
        }
        if let Some(v) = set(env("OPENTRUNK_LOG")) {
            c.log.level = v;
        }
        if let Some(v) = set(env("OPENTRUNK_LEASE_TTL_SECS")) {
            c.cluster.lease_ttl_secs =
                v.trim().parse().map_err(|_| format!("OPENTRUNK_LEASE_TTL_SECS `{v}`: seconds"))?;
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        let specs = self.listeners()?;
        if specs.is_empty() {
            return Err("sip.listen: at least one listener is needed".into());
        }
        if specs.iter().any(|s| s.kind == engine::TransportKind::Tls)
            && (self.sip.tls_cert.is_none() || self.sip.tls_key.is_none())
        {
            return Err("a tls: listener needs OPENTRUNK_TLS_CERT and OPENTRUNK_TLS_KEY".into());
        }
        self.api
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("api.listen `{}`: {e}", self.api.listen))?;
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(format!("log.format `{}`: expected text or json", self.log.format));
        }
        if self.calls.timeout_1xx_secs == 0 || self.calls.timeout_2xx_secs == 0 || self.calls.max_duration_secs == 0 {
            return Err("calls: timeout_1xx_secs, timeout_2xx_secs and max_duration_secs must be above 0".into());
        }
        self.dns_servers()?;
        if self.digest_algorithms()?.is_empty() {
            return Err("sip.digest_algorithms: at least one".into());
        }
        if !(1..=64).contains(&self.sip.cores) {
            return Err("sip.cores: 1 to 64".into());
        }
        if !(1..=256).contains(&self.sip.spread_from) {
            return Err("sip.spread_from: 1 to 256".into());
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err("sip timers: need 0 < t1_ms <= t2_ms".into());
        }
        if self.cluster.lease_ttl_secs < 3 {
            // Leases are refreshed every third of the TTL: below 3 s that is under a second.
            return Err("cluster.lease_ttl_secs: at least 3".into());
        }
        if self.redis_url.is_some() && self.database_url.starts_with("sqlite:") {
            return Err("redis_url with an SQLite database: a cluster's nodes share one PostgreSQL \
                        (OPENTRUNK_DATABASE_URL=postgres://...); one node needs no Redis"
                .into());
        }
        Ok(())
    }

    pub fn dns_servers(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.sip
            .dns_servers
            .iter()
            .map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("sip.dns_servers `{s}`: expected IP or IP:PORT"))
            })
            .collect()
    }

    pub fn digest_algorithms(&self) -> Result<Vec<trunking::digest::DigestAlgorithm>, String> {
        self.sip
            .digest_algorithms
            .iter()
            .map(|a| {
                trunking::digest::DigestAlgorithm::parse(a)
                    .ok_or_else(|| format!("sip.digest_algorithms `{a}`: expected MD5 or SHA-256"))
            })
            .collect()
    }

    pub fn listeners(&self) -> Result<Vec<ListenSpec>, String> {
        self.sip.listen.iter().map(|s| s.parse()).collect()
    }

    pub fn transport_limits(&self) -> TransportLimits {
        TransportLimits {
            max_message_size: self.sip.max_message_size,
            max_connections: self.sip.max_connections,
            max_connections_per_ip: self.sip.max_connections_per_ip,
            idle_timeout: Duration::from_secs(self.sip.idle_timeout_secs),
            ..TransportLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load(None, |_| None).unwrap();
        assert_eq!(c.sip.listen, vec!["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]);
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://opentrunk.db");
        assert_eq!(c.redis_url, None);
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("ot-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[sip]\nlisten = [\"udp:127.0.0.1:5070\"]\nt1_ms = 250\n[api]\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "OPENTRUNK_API_LISTEN" => Some("127.0.0.1:9100".to_owned()),
            "OPENTRUNK_REDIS_URL" => Some("redis://127.0.0.1:6379".to_owned()),
            "OPENTRUNK_DATABASE_URL" => Some("postgres://db.example.net/opentrunk".to_owned()),
            "OPENTRUNK_LEASE_TTL_SECS" => Some("12".to_owned()),
            _ => None,
        };
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.sip.listen, vec!["udp:127.0.0.1:5070"]);
        assert_eq!(c.sip.t1_ms, 250);
        assert_eq!(c.api.listen, "127.0.0.1:9100");
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(c.cluster.lease_ttl(), Duration::from_secs(12));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_configuration_is_refused() {
        let env = |v: &'static str| move |k: &str| (k == "OPENTRUNK_SIP_LISTEN").then(|| v.to_owned());
        assert!(Config::load(None, env("udp:nowhere")).is_err());
        assert!(Config::load(None, env("sctp:127.0.0.1:5060")).is_err());
        assert!(Config::load(None, env("tls:127.0.0.1:5061")).unwrap_err().contains("TLS_CERT"));
        assert!(Config::load(None, env("udp:127.0.0.1:5060,tcp:[::1]:5060")).is_ok());
        // A cluster shares one PostgreSQL; leases need time to be refreshed.
        let redis_on_sqlite = |k: &str| (k == "OPENTRUNK_REDIS_URL").then(|| "redis://127.0.0.1".to_owned());
        assert!(Config::load(None, redis_on_sqlite).unwrap_err().contains("PostgreSQL"));
        let short = |k: &str| (k == "OPENTRUNK_LEASE_TTL_SECS").then(|| "1".to_owned());
        assert!(Config::load(None, short).unwrap_err().contains("lease_ttl_secs"));
    }

    #[test]
    fn call_timeouts_and_the_advertised_host() {
        let file = std::env::temp_dir().join(format!("ot-config-calls-{}.toml", std::process::id()));
        std::fs::write(&file, "[calls]\ntimeout_1xx_secs = 2\ntimeout_2xx_secs = 30\n").unwrap();
        let advertise = |k: &str| (k == "OPENTRUNK_SIP_ADVERTISE").then(|| "sbc.example.net".to_owned());
        let c = Config::load(Some(&file), advertise).unwrap();
        assert_eq!((c.calls.timeout_1xx_secs, c.calls.timeout_2xx_secs, c.calls.max_duration_secs), (2, 30, 14_400));
        assert_eq!(c.sip.advertise.as_deref(), Some("sbc.example.net"));
        let dns = |k: &str| (k == "OPENTRUNK_DNS_SERVERS").then(|| "127.0.0.1:5353, ::1".to_owned());
        let c = Config::load(None, dns).unwrap();
        assert_eq!(c.dns_servers().unwrap(), ["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert!(Config::load(None, |k: &str| (k == "OPENTRUNK_DNS_SERVERS").then(|| "resolver".to_owned())).is_err());
        std::fs::write(&file, "[sip]\ndigest_algorithms = [\"SHA-256\", \"MD5\"]\n").unwrap();
        let c = Config::load(Some(&file), |_| None).unwrap();
        use trunking::digest::DigestAlgorithm::{Md5, Sha256};
        assert_eq!(c.digest_algorithms().unwrap(), [Sha256, Md5]);
        std::fs::write(&file, "[sip]\ndigest_algorithms = [\"SHA-512\"]\n").unwrap();
        assert!(Config::load(Some(&file), |_| None).is_err());
        std::fs::write(&file, "[calls]\ntimeout_2xx_secs = 0\n").unwrap();
        assert!(Config::load(Some(&file), |_| None).unwrap_err().contains("calls"));
        std::fs::write(&file, "[calls]\nring_forever = true\n").unwrap();
        assert!(Config::load(Some(&file), |_| None).is_err(), "unknown keys are refused");
        std::fs::remove_file(&file).ok();
    }
}
