//! `deploy/` against the worker it deploys (issue 20): the ConfigMap's TOML loads
//! with the worker's own settings code, the pod's grace period outlasts the worker's
//! shutdown grace, the secrets it reads sit where the Deployment mounts them, and
//! every alert's runbook link lands on a section of docs/operations.md.
//! (Schemas and promtool: deploy/check.sh.)

use lifecycle_worker::settings::Settings;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of the first `key: value` line of a YAML file, as text.
fn yaml_scalar(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the manifest"))
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// The `*_file` settings of worker.toml, as (key, path).
fn secret_files(toml: &str) -> Vec<(String, String)> {
    toml.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let key = key.trim();
            key.ends_with("_file")
                .then(|| (key.to_owned(), value.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

#[test]
fn the_configmap_toml_is_valid_worker_settings() {
    let toml = read("deploy/kubernetes/worker.toml");
    let files = secret_files(&toml);
    assert!(
        files.iter().any(|(k, _)| k == "url_file")
            && files.iter().any(|(k, _)| k == "command_keys_file"),
        "the broker URL and the command keys come from files: {files:?}"
    );
    // The real paths exist only in the pod: point each at a stand-in file with a
    // well-formed value, through the same environment overrides the worker reads.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("amqp-url");
    std::fs::write(&url, "amqps://worker:pw@rabbit.internal:5671/ops\n").expect("write");
    let keys = dir.path().join("command-keys");
    std::fs::write(&keys, "publisher-a:secret-a\n").expect("write");
    let env = [
        ("LIFECYCLE__AMQP__URL_FILE", &url),
        ("LIFECYCLE__SECURITY__COMMAND_KEYS_FILE", &keys),
    ]
    .map(|(k, v)| (k.to_owned(), v.display().to_string()));
    let settings = Settings::load(&[repo("deploy/kubernetes/worker.toml")], env)
        .unwrap_or_else(|e| panic!("deploy/kubernetes/worker.toml: {e}"));
    assert_eq!(
        settings.http.listen.to_string(),
        "0.0.0.0:9464",
        "probes and Prometheus reach the pod's address"
    );
    assert!(settings.security.require_signed_commands);

    let deployment = read("deploy/kubernetes/deployment.yaml");
    let grace_s: u64 = yaml_scalar(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .expect("a number");
    assert!(
        grace_s * 1000 > settings.worker.shutdown_grace_ms,
        "terminationGracePeriodSeconds {grace_s} s must outlast worker.shutdown_grace_ms {} ms",
        settings.worker.shutdown_grace_ms
    );
    let port = settings.http.listen.port().to_string();
    assert_eq!(yaml_scalar(&deployment, "containerPort"), port);
    assert_eq!(
        yaml_scalar(&read("deploy/kubernetes/service.yaml"), "port"),
        port
    );
}

#[test]
fn secrets_are_read_from_the_mounted_secret() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let mount = deployment
        .lines()
        .skip_while(|l| !l.contains("name: secrets"))
        .find_map(|l| l.trim().strip_prefix("mountPath:"))
        .expect("the secrets volume is mounted")
        .trim()
        .to_owned();
    for (key, path) in secret_files(&read("deploy/kubernetes/worker.toml")) {
        assert!(
            path.starts_with(&format!("{mount}/")),
            "{key} = {path} is outside the Secret's mount {mount}"
        );
    }
    assert!(
        !deployment.contains("secretKeyRef"),
        "secrets are files, not environment variables"
    );
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_runbook_link_lands_on_a_section() {
    let operations = read("docs/operations.md");
    let anchors: Vec<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect();
    let alerts = read("deploy/prometheus/alerts.yaml");
    let mut links = 0;
    for line in alerts.lines() {
        let Some(url) = line.trim().strip_prefix("runbook_url:") else {
            continue;
        };
        let url = url.trim().trim_matches('"');
        let anchor = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("runbook_url {url} is not into docs/operations.md"));
        assert!(
            anchors.iter().any(|a| a == anchor),
            "runbook_url {url}: no such section in docs/operations.md"
        );
        links += 1;
    }
    let alert_count = alerts.matches("- alert:").count();
    assert_eq!(links, alert_count, "every alert has a runbook_url");
    assert!(alert_count >= 6);
}

/// The init container's command line, run as the pod would run it (the config
/// path pointing at the repository's copy, nothing reachable): `check` accepts
/// the settings and fails its checks (exit 1), it does not refuse them (exit 2).
#[test]
fn the_preflight_command_line_runs_with_the_configmap() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let args_line = deployment
        .lines()
        .find(|l| l.trim().starts_with("args: [\"check\""))
        .expect("the init container's args");
    let inline = args_line.trim().trim_start_matches("args:").trim();
    let args: Vec<String> = serde_json::from_str(inline).expect("a flow list of strings");
    let config = repo("deploy/kubernetes/worker.toml").display().to_string();
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == "/etc/lifecycle-worker/worker.toml" {
                config.clone()
            } else {
                a
            }
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("amqp-url");
    std::fs::write(&url, "amqp://nobody:pw@127.0.0.1:1/%2f\n").expect("write");
    let keys = dir.path().join("command-keys");
    std::fs::write(&keys, "publisher-a:secret-a\n").expect("write");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lifecycle-worker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LIFECYCLE__") || k.starts_with("ALIBABA_CLOUD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(&args)
        .env("LIFECYCLE__AMQP__URL_FILE", &url)
        .env("LIFECYCLE__SECURITY__COMMAND_KEYS_FILE", &keys)
        .env("LIFECYCLE__ECS__ENDPOINT", "http://127.0.0.1:1")
        .env("LIFECYCLE__STS__ENDPOINT", "http://127.0.0.1:1")
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "preflight-test")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "preflight-secret")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("HOME", dir.path())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "checks fail (nothing is reachable), settings accepted:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("FAIL"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("preflight-secret") && !stderr.contains("preflight-secret"));
}
