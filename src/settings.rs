//! Typed, validated settings, loaded in layers.
//!
//! Order (later wins): the defaults in `config/default.toml` (compiled in, so the
//! binary runs from any directory), each `--config FILE` in the order given, then
//! `LIFECYCLE__SECTION__KEY` environment variables. Everything is checked here,
//! at start-up, so a typo fails fast with the key's name instead of surfacing as
//! a strange failure in the middle of an incident.

pub mod lists;

pub use crate::auth::scopes::KeyScopes;
use crate::ecs::sign::SignatureVersion;
use crate::secret::Secret;
use config::{Config, Environment, File, FileFormat};
pub use lists::{AccountRoles, CommandKeys, Delays, StringList};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in defaults, documented in the file itself.
pub const DEFAULTS_TOML: &str = include_str!("../config/default.toml");

/// Why settings could not be loaded; the message always names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A `--config` file that does not exist or cannot be read.
    #[error("config file {path}: {reason}")]
    File {
        /// The path as given on the command line.
        path: PathBuf,
        /// What went wrong reading it.
        reason: String,
    },
    /// A value that is unknown, of the wrong type or out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `amqp.prefetch` (env: `LIFECYCLE__AMQP__PREFETCH`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SettingsError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Every setting of the worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The broker connection.
    pub amqp: AmqpSettings,
    /// Names of exchanges and queues.
    pub topology: TopologySettings,
    /// The ECS OpenAPI client.
    pub ecs: EcsSettings,
    /// The STS endpoint (for role sessions).
    pub sts: StsSettings,
    /// Where the default credential chain looks.
    pub credentials: CredentialSettings,
    /// The health and metrics listener.
    pub http: HttpSettings,
    /// Concurrency and shutdown.
    pub worker: WorkerSettings,
    /// Immediate and delayed retries.
    pub retry: RetrySettings,
    /// What commands are allowed to do.
    pub security: SecuritySettings,
    /// Leak-alert defaults.
    pub leak_alert: LeakAlertSettings,
    /// Multi-account role mapping.
    pub accounts: AccountSettings,
    /// Logging.
    pub telemetry: TelemetrySettings,
    /// The embedded simulator for local runs.
    pub simulator: SimulatorSettings,
}

/// Broker connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// Broker URL, or several nodes' URLs of one cluster comma-separated;
    /// may carry a password, so it is a [`Secret`].
    pub url: Secret,
    /// A file holding the broker URL, instead of `url`.
    pub url_file: String,
    /// PEM CA bundle to verify an `amqps://` broker (empty: system roots).
    pub tls_ca_file: String,
    /// PEM client certificate for brokers that authenticate clients by certificate.
    pub tls_client_cert_file: String,
    /// PEM (PKCS#8) key of the client certificate.
    pub tls_client_key_file: String,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// Queue type for command and retry queues.
    pub queue_type: QueueType,
    /// First reconnect wait.
    pub reconnect_initial_ms: u64,
    /// Longest reconnect wait.
    pub reconnect_max_ms: u64,
    /// One connection attempt's limit (TCP, TLS and the AMQP handshake
    /// together): lapin's own connect can wait forever on a broker that
    /// accepts TCP but never finishes the handshake.
    pub connect_timeout_ms: u64,
    /// AMQP heartbeat, seconds: a node that hangs without closing its
    /// sockets is given up after two of them (0 turns heartbeats off).
    pub heartbeat_s: u16,
}

/// RabbitMQ queue flavour: quorum queues replicate (the production default),
/// classic queues exist for single-node development brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// `x-queue-type: quorum`.
    Quorum,
    /// `x-queue-type: classic`.
    Classic,
}

/// Exchange and queue names (contract section 2 gives the defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySettings {
    /// Topic exchange publishers send commands to.
    pub command_exchange: String,
    /// Queue bound with key `decommission`.
    pub decommission_queue: String,
    /// Queue bound with key `leak-alert`.
    pub leak_alert_queue: String,
    /// Topic exchange events go to (routing key = event type).
    pub event_exchange: String,
    /// Exchange dead letters go to.
    pub dead_letter_exchange: String,
    /// Queue holding dead letters for inspection and replay.
    pub dead_letter_queue: String,
    /// Prefix of the delayed-retry queues.
    pub retry_queue_prefix: String,
}

/// ECS client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsSettings {
    /// Endpoint override; empty for the regional endpoints.
    pub endpoint: String,
    /// Signature scheme.
    pub signature: SignatureVersion,
    /// TCP/TLS connect timeout.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout.
    pub request_timeout_ms: u64,
    /// Permit plain http:// to non-loopback hosts.
    pub allow_insecure_endpoint: bool,
    /// Client-side limit on ECS calls per second, per region (0: none).
    pub max_calls_per_second: u32,
    /// Calls allowed at once above that pace.
    pub rate_burst: u32,
    /// Explicit AccessKey id (wins over the credential chain).
    pub access_key_id: String,
    /// Explicit AccessKey secret.
    pub access_key_secret: Secret,
    /// Explicit STS token.
    pub security_token: Secret,
    /// A file holding the AccessKey secret, instead of `access_key_secret`.
    pub access_key_secret_file: String,
    /// A file holding the STS token, instead of `security_token`.
    pub security_token_file: String,
}

/// STS settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsSettings {
    /// STS endpoint, scheme included.
    pub endpoint: String,
}

/// Default credential chain settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// The ECS metadata service (instance RAM role), scheme included.
    pub metadata_endpoint: String,
}

/// Health/metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// Worker concurrency and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Commands carried out at once.
    pub concurrency: u32,
    /// Grace period for in-flight commands on shutdown.
    pub shutdown_grace_ms: u64,
}

/// Retry settings (contract section 4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First backoff interval.
    pub initial_interval_ms: u64,
    /// Longest backoff interval.
    pub max_interval_ms: u64,
    /// Immediate-retry budget per step.
    pub max_elapsed_ms: u64,
    /// Delays of the retry queues, in order.
    pub redelivery_delays: Delays,
}

/// Command admission rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Regions commands may name.
    pub allowed_regions: StringList,
    /// Reject commands without a valid HMAC signature header.
    pub require_signed_commands: bool,
    /// Publisher keys, `key_id:secret`.
    pub command_keys: CommandKeys,
    /// A file holding the publisher keys (same format), instead of `command_keys`.
    pub command_keys_file: String,
    /// A signed command's timestamp may be this far from the worker's clock,
    /// either way (commands the worker holds in its retry stages excepted).
    pub max_command_age_s: u64,
    /// What each publisher key may ask for (`key_id=kind:region:account|...`).
    pub key_scopes: KeyScopes,
    /// AMQP `user_id`s allowed to publish commands (empty: any). RabbitMQ
    /// checks `user_id` against the connection's user, so this cannot be forged.
    pub allowed_publishers: StringList,
    /// Most instances one command may deregister (`all_matches`, quarantine).
    pub max_instances_per_command: u32,
    /// Instance-id patterns (`*` globs) commands may act on (empty: any).
    pub allowed_instance_ids: StringList,
    /// Activation-id patterns commands may act on (empty: any).
    pub allowed_activation_ids: StringList,
}

/// Leak-alert defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakAlertSettings {
    /// Default for the command's `delete_if_unused`.
    pub delete_if_unused: bool,
}

/// Account → role mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// `account_id=role_arn` pairs.
    pub roles: AccountRoles,
}

/// Logging format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `auto`, `text` or `json`.
    pub log_format: LogFormat,
    /// OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`;
    /// empty (the default): no OpenTelemetry export.
    #[serde(default)]
    pub otlp_endpoint: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The in-process simulator used by `config/local.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Start it and point the ECS client at it.
    pub enabled: bool,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Seed file (JSON); empty for an empty simulator.
    pub seed_file: String,
}

impl Settings {
    /// Loads defaults, then `files`, then the `LIFECYCLE__*` entries of `env`.
    ///
    /// `env` is passed in (rather than read from the process) so tests can
    /// exercise precedence without mutating global state.
    pub fn load(
        files: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        for path in files {
            let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            // Parse here so a syntax error names the file rather than "configuration".
            toml_check(path, &text)?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("LIFECYCLE__"))
            .collect();
        for key in env.keys() {
            if key.trim_start_matches("LIFECYCLE__").split("__").count() != 2 {
                return Err(SettingsError::invalid(
                    key,
                    "expected LIFECYCLE__<SECTION>__<KEY>",
                ));
            }
        }
        builder = builder.add_source(
            Environment::with_prefix("LIFECYCLE")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env.into_iter().collect())),
        );
        let config = builder
            .build()
            .map_err(|e| SettingsError::invalid("configuration", e.to_string()))?;
        let mut settings: Settings = config.try_deserialize().map_err(from_config_error)?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Secrets may come from files (`*_file` keys) so they need not sit in
    /// the environment; a file replaces the inline value, and giving both is
    /// an error (which one was meant?).
    fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        fn read(key: &str, path: &str, inline_set: bool) -> Result<Option<String>, SettingsError> {
            if path.is_empty() {
                return Ok(None);
            }
            if inline_set {
                return Err(SettingsError::invalid(
                    key,
                    "set either the value or its _file, not both",
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
                path: PathBuf::from(path),
                reason: format!("{key}: {e}"),
            })?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        if let Some(v) = read(
            "ecs.access_key_secret_file",
            &self.ecs.access_key_secret_file,
            !self.ecs.access_key_secret.is_empty(),
        )? {
            self.ecs.access_key_secret = Secret::new(v);
        }
        if let Some(v) = read(
            "ecs.security_token_file",
            &self.ecs.security_token_file,
            !self.ecs.security_token.is_empty(),
        )? {
            self.ecs.security_token = Secret::new(v);
        }
        if let Some(v) = read("amqp.url_file", &self.amqp.url_file, false)? {
            self.amqp.url = Secret::new(v);
        }
        if let Some(v) = read(
            "security.command_keys_file",
            &self.security.command_keys_file,
            !self.security.command_keys.is_empty(),
        )? {
            // One key per line or comma-separated, as in the variable.
            let joined = v.lines().collect::<Vec<_>>().join(",");
            self.security.command_keys = CommandKeys::parse(&joined)
                .map_err(|reason| SettingsError::invalid("security.command_keys_file", reason))?;
        }
        Ok(())
    }

    /// Range and cross-field checks that serde types cannot express.
    fn validate(&self) -> Result<(), SettingsError> {
        let nodes: Vec<&str> = self.amqp.url.expose().split(',').map(str::trim).collect();
        if nodes
            .iter()
            .any(|url| !(url.starts_with("amqp://") || url.starts_with("amqps://")))
        {
            return Err(SettingsError::invalid(
                "amqp.url",
                "each comma-separated node must start with amqp:// or amqps://",
            ));
        }
        positive("amqp.prefetch", u64::from(self.amqp.prefetch))?;
        if self.amqp.tls_client_cert_file.is_empty() != self.amqp.tls_client_key_file.is_empty() {
            return Err(SettingsError::invalid(
                "amqp.tls_client_key_file",
                "a client certificate needs both amqp.tls_client_cert_file and amqp.tls_client_key_file",
            ));
        }
        for (key, path) in [
            ("amqp.tls_ca_file", &self.amqp.tls_ca_file),
            ("amqp.tls_client_cert_file", &self.amqp.tls_client_cert_file),
            ("amqp.tls_client_key_file", &self.amqp.tls_client_key_file),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                return Err(SettingsError::invalid(
                    key,
                    format!("{path} is not a readable file"),
                ));
            }
        }
        positive("amqp.reconnect_initial_ms", self.amqp.reconnect_initial_ms)?;
        positive("amqp.connect_timeout_ms", self.amqp.connect_timeout_ms)?;
        if self.amqp.reconnect_max_ms < self.amqp.reconnect_initial_ms {
            return Err(SettingsError::invalid(
                "amqp.reconnect_max_ms",
                "must be at least amqp.reconnect_initial_ms",
            ));
        }
        positive("worker.concurrency", u64::from(self.worker.concurrency))?;
        positive("retry.initial_interval_ms", self.retry.initial_interval_ms)?;
        if self.retry.max_interval_ms < self.retry.initial_interval_ms {
            return Err(SettingsError::invalid(
                "retry.max_interval_ms",
                "must be at least retry.initial_interval_ms",
            ));
        }
        positive("ecs.connect_timeout_ms", self.ecs.connect_timeout_ms)?;
        positive("ecs.request_timeout_ms", self.ecs.request_timeout_ms)?;
        if !self.ecs.endpoint.is_empty() {
            check_endpoint(
                "ecs.endpoint",
                &self.ecs.endpoint,
                self.ecs.allow_insecure_endpoint,
            )?;
        }
        check_endpoint(
            "sts.endpoint",
            &self.sts.endpoint,
            self.ecs.allow_insecure_endpoint,
        )?;
        if url::Url::parse(&self.credentials.metadata_endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .is_none()
        {
            return Err(SettingsError::invalid(
                "credentials.metadata_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        if self.security.allowed_regions.is_empty() {
            return Err(SettingsError::invalid(
                "security.allowed_regions",
                "must name at least one region",
            ));
        }
        positive(
            "security.max_instances_per_command",
            u64::from(self.security.max_instances_per_command),
        )?;
        if self.security.require_signed_commands && self.security.command_keys.is_empty() {
            return Err(SettingsError::invalid(
                "security.command_keys",
                "required when security.require_signed_commands is true",
            ));
        }
        self.validate_signing()?;
        let names = [
            ("topology.command_exchange", &self.topology.command_exchange),
            (
                "topology.decommission_queue",
                &self.topology.decommission_queue,
            ),
            ("topology.leak_alert_queue", &self.topology.leak_alert_queue),
            ("topology.event_exchange", &self.topology.event_exchange),
            (
                "topology.dead_letter_exchange",
                &self.topology.dead_letter_exchange,
            ),
            (
                "topology.dead_letter_queue",
                &self.topology.dead_letter_queue,
            ),
            (
                "topology.retry_queue_prefix",
                &self.topology.retry_queue_prefix,
            ),
        ];
        for (key, name) in names {
            if name.is_empty() || name.len() > 200 || name.starts_with("amq.") {
                return Err(SettingsError::invalid(
                    key,
                    "must be 1-200 characters and not start with amq.",
                ));
            }
        }
        if self.simulator.enabled && !self.simulator.seed_file.is_empty() {
            let seed = Path::new(&self.simulator.seed_file);
            if !seed.is_file() {
                return Err(SettingsError::invalid(
                    "simulator.seed_file",
                    format!("{} is not a readable file", seed.display()),
                ));
            }
        }
        Ok(())
    }

    /// Signed-command settings that only make sense together.
    fn validate_signing(&self) -> Result<(), SettingsError> {
        let security = &self.security;
        positive("security.max_command_age_s", security.max_command_age_s)?;
        if security.key_scopes.is_empty() {
            return Ok(());
        }
        if !security.require_signed_commands {
            return Err(SettingsError::invalid(
                "security.key_scopes",
                "limits signed keys: it needs security.require_signed_commands = true",
            ));
        }
        // A scope under a misspelt key id would leave the real key unlimited.
        if let Some(key) = security
            .key_scopes
            .key_ids()
            .find(|k| crate::auth::key(&security.command_keys.0, k).is_none())
        {
            return Err(SettingsError::invalid(
                "security.key_scopes",
                format!("key {key:?} is not in security.command_keys"),
            ));
        }
        Ok(())
    }

    /// The immediate-retry budget per step.
    pub fn max_elapsed(&self) -> Duration {
        Duration::from_millis(self.retry.max_elapsed_ms)
    }
}

fn positive(key: &str, value: u64) -> Result<(), SettingsError> {
    if value == 0 {
        return Err(SettingsError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// Endpoints carry signed credentials: https, or http to loopback (the simulator),
/// or http anywhere only when explicitly allowed.
fn check_endpoint(key: &str, value: &str, allow_insecure: bool) -> Result<(), SettingsError> {
    let url = url::Url::parse(value)
        .map_err(|e| SettingsError::invalid(key, format!("not a URL ({e})")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure || is_loopback(&url) => Ok(()),
        "http" => Err(SettingsError::invalid(
            key,
            "plain http:// to a non-loopback host needs ecs.allow_insecure_endpoint = true",
        )),
        other => Err(SettingsError::invalid(
            key,
            format!("unsupported scheme {other}:// (use https://)"),
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn toml_check(path: &Path, text: &str) -> Result<(), SettingsError> {
    Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()
        .map(|_| ())
        .map_err(|e| SettingsError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// config's messages say "unknown field `x`" or "... for key `a.b`"; make sure the
/// message starts with the key so operators see what to fix.
fn from_config_error(e: config::ConfigError) -> SettingsError {
    let text = e.to_string();
    let key = text
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
        .or_else(|| {
            text.split("unknown field `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "configuration".to_owned());
    SettingsError::Invalid { key, reason: text }
}

#[cfg(test)]
#[path = "settings/signing_tests.rs"]
mod signing_tests;
#[cfg(test)]
mod tests;
