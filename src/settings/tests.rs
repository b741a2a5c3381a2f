use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn err_text(pairs: &[(&str, &str)]) -> String {
    match Settings::load(&[], env(pairs)) {
        Ok(_) => panic!("expected an error for {pairs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_match_the_contract() {
    let s = Settings::load(&[], env(&[])).expect("defaults load");
    assert_eq!(s.amqp.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(s.http.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(s.ecs.signature, SignatureVersion::Acs3HmacSha256);
    assert_eq!(s.amqp.queue_type, QueueType::Quorum);
    assert_eq!(
        s.security.allowed_regions.0,
        ["cn-hangzhou", "cn-beijing", "cn-shanghai"]
    );
    assert_eq!(
        s.retry.redelivery_delays.as_slice(),
        [
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(1800)
        ]
    );
    assert_eq!(s.retry.initial_interval_ms, 200);
    assert_eq!(s.retry.max_interval_ms, 5000);
    assert_eq!(s.retry.max_elapsed_ms, 30000);
    assert!(s.leak_alert.delete_if_unused);
    assert_eq!(s.topology.command_exchange, "lifecycle.commands");
}

#[test]
fn environment_overrides_with_lists_and_spaces() {
    let s = Settings::load(
        &[],
        env(&[
            ("LIFECYCLE__AMQP__PREFETCH", "7"),
            ("LIFECYCLE__WORKER__CONCURRENCY", "3"),
            (
                "LIFECYCLE__SECURITY__ALLOWED_REGIONS",
                " cn-hangzhou , eu-central-1 ",
            ),
            ("LIFECYCLE__RETRY__REDELIVERY_DELAYS", "250ms, 2s"),
            ("LIFECYCLE__ECS__SIGNATURE", "hmac-sha1"),
            ("LIFECYCLE__ECS__ENDPOINT", "http://127.0.0.1:8080"),
            (
                "LIFECYCLE__ACCOUNTS__ROLES",
                "1234=acs:ram::1234:role/worker, 99=acs:ram::99:role/x",
            ),
            ("UNRELATED", "ignored"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.amqp.prefetch, 7);
    assert_eq!(s.worker.concurrency, 3);
    assert_eq!(
        s.security.allowed_regions.0,
        ["cn-hangzhou", "eu-central-1"]
    );
    assert_eq!(
        s.retry.redelivery_delays.as_slice(),
        [Duration::from_millis(250), Duration::from_secs(2)]
    );
    assert_eq!(s.ecs.signature, SignatureVersion::RpcHmacSha1);
    assert_eq!(s.accounts.roles.0.len(), 2);
}

#[test]
fn bad_values_name_their_key() {
    assert!(err_text(&[("LIFECYCLE__AMQP__PREFETCH", "abc")]).contains("amqp.prefetch"));
    assert!(err_text(&[("LIFECYCLE__AMQP__PREFETCH", "0")]).contains("amqp.prefetch"));
    assert!(err_text(&[("LIFECYCLE__WORKER__CONCURRENCY", "-1")]).contains("concurrency"));
    assert!(err_text(&[("LIFECYCLE__AMQP__PREFECH", "1")]).contains("prefech"));
    assert!(err_text(&[("LIFECYCLE__NOPE__X", "1")]).contains("nope"));
    assert!(err_text(&[("LIFECYCLE__ECS__SIGNATURE", "md5")]).contains("signature"));
    assert!(
        err_text(&[("LIFECYCLE__RETRY__REDELIVERY_DELAYS", "30")]).contains("redelivery_delays")
    );
    assert!(err_text(&[("LIFECYCLE__HTTP__LISTEN", "nowhere")]).contains("http.listen"));
    assert!(
        err_text(&[("LIFECYCLE__ECS__ENDPOINT", "http://ecs.example.com")])
            .contains("ecs.endpoint")
    );
    assert!(err_text(&[("LIFECYCLE__AMQP__URL", "http://x")]).contains("amqp.url"));
    assert!(err_text(&[("LIFECYCLE__AMQP__URL", "amqp://a:5672/%2f,b:5672")]).contains("amqp.url"));
    assert!(err_text(&[("LIFECYCLE__AMQP__HEARTBEAT_S", "-1")]).contains("heartbeat_s"));
    assert!(err_text(&[("LIFECYCLE__AMQP", "x")]).contains("LIFECYCLE__AMQP"));
    assert!(
        err_text(&[("LIFECYCLE__ACCOUNTS__ROLES", "12=acs:ram::13:role/x")])
            .contains("accounts.roles")
    );
}

#[test]
fn command_key_errors_do_not_echo_secrets() {
    let text = err_text(&[("LIFECYCLE__SECURITY__COMMAND_KEYS", "k1-oops-topsecret")]);
    assert!(text.contains("command_keys"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
}

#[test]
fn secrets_are_redacted_in_debug() {
    let s = Settings::load(
        &[],
        env(&[
            ("LIFECYCLE__ECS__ACCESS_KEY_SECRET", "the-secret-value"),
            ("LIFECYCLE__SECURITY__COMMAND_KEYS", "k1:key-secret-value"),
            ("LIFECYCLE__AMQP__URL", "amqp://u:broker-password@h/%2f"),
        ]),
    )
    .expect("loads");
    let shown = format!("{s:?}");
    for secret in ["the-secret-value", "key-secret-value", "broker-password"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
}

#[test]
fn files_layer_in_order_and_missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "[amqp]\nprefetch = 10\n[worker]\nconcurrency = 5\n").expect("write");
    std::fs::write(&b, "[amqp]\nprefetch = 20\n").expect("write");
    let s = Settings::load(
        &[a.clone(), b.clone()],
        env(&[("LIFECYCLE__WORKER__CONCURRENCY", "9")]),
    )
    .expect("loads");
    assert_eq!(s.amqp.prefetch, 20);
    assert_eq!(s.worker.concurrency, 9);

    let missing = dir.path().join("missing.toml");
    let e = Settings::load(&[missing], env(&[])).expect_err("missing file");
    assert!(e.to_string().contains("missing.toml"));

    std::fs::write(&a, "[amqp\nprefetch = ").expect("write");
    let e = Settings::load(&[a], env(&[])).expect_err("bad toml");
    assert!(e.to_string().contains("a.toml"));

    std::fs::write(&b, "[amqp]\nprefetchh = 3\n").expect("write");
    let e = Settings::load(&[b], env(&[])).expect_err("unknown key");
    assert!(e.to_string().contains("prefetchh"));
}

#[test]
fn durations_round_trip_into_queue_names() {
    for s in ["30s", "5m", "30m", "1h", "1500ms"] {
        let d = lists::parse_duration(s).expect("parses");
        assert_eq!(lists::format_duration(d), s);
    }
    assert!(lists::parse_duration("0s").is_err());
    assert!(lists::parse_duration("s").is_err());
    assert!(lists::parse_duration("5 m").is_err());
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    let keys = dir.path().join("keys");
    std::fs::write(&secret, "from-file-secret\n").expect("write");
    std::fs::write(&keys, "k1:one\nk2:two\n").expect("write");
    let s = Settings::load(
        &[],
        env(&[
            (
                "LIFECYCLE__ECS__ACCESS_KEY_SECRET_FILE",
                secret.to_str().expect("utf-8"),
            ),
            (
                "LIFECYCLE__SECURITY__COMMAND_KEYS_FILE",
                keys.to_str().expect("utf-8"),
            ),
        ]),
    )
    .expect("loads");
    assert_eq!(s.ecs.access_key_secret.expose(), "from-file-secret");
    assert_eq!(s.security.command_keys.0.len(), 2);
    assert_eq!(s.security.command_keys.0[1].1.expose(), "two");

    let both = err_text(&[
        ("LIFECYCLE__ECS__ACCESS_KEY_SECRET", "inline"),
        (
            "LIFECYCLE__ECS__ACCESS_KEY_SECRET_FILE",
            secret.to_str().expect("utf-8"),
        ),
    ]);
    assert!(both.contains("ecs.access_key_secret_file"), "{both}");
    let missing = err_text(&[(
        "LIFECYCLE__SECURITY__COMMAND_KEYS_FILE",
        "/nonexistent/keys",
    )]);
    assert!(missing.contains("/nonexistent/keys"), "{missing}");
    std::fs::write(&keys, "k1-without-secret-topsecret\n").expect("write");
    let bad = err_text(&[(
        "LIFECYCLE__SECURITY__COMMAND_KEYS_FILE",
        keys.to_str().expect("utf-8"),
    )]);
    assert!(
        bad.contains("command_keys_file") && !bad.contains("topsecret"),
        "{bad}"
    );
}

#[test]
fn limits_settings() {
    let s = Settings::load(&[], env(&[])).expect("defaults");
    assert_eq!(s.security.max_instances_per_command, 20);
    assert!(s.security.allowed_publishers.is_empty());
    assert!(
        err_text(&[("LIFECYCLE__SECURITY__MAX_INSTANCES_PER_COMMAND", "0")])
            .contains("max_instances_per_command")
    );
}
