use super::*;
use crate::command::{Action, CommandKind};
use crate::decision::{Counters, Stop};
use crate::playbook::fake::{FakeCloud, api_error, command, instance, retrier};
use crate::playbook::{Attempts, Fate, Run};
use crate::retry::Stopped;

fn world() -> FakeCloud {
    FakeCloud::new(
        vec![
            instance("mi-aaa1", "web-1.example.com", "A", "2026-01-01T00:00:00Z"),
            instance("mi-bbb2", "WEB-2", "A", "2026-01-01T00:00:00Z"),
            instance("mi-ccc3", "web-2", "A", "2026-01-01T00:00:00Z"),
        ],
        vec![],
    )
}

/// Runs the playbook; `last_chance`: on the processing past the last retry stage.
async fn go(cloud: &FakeCloud, json: &str, prior: Attempts, last_chance: bool) -> Report {
    let c = command(CommandKind::Decommission, json);
    let r = retrier();
    let Action::Decommission(order) = &c.action else {
        panic!("not a decommission")
    };
    run(
        Run::new(&c, cloud, &r, prior).counters(Counters {
            redeliveries: if last_chance { 3 } else { 0 },
            parks: 0,
        }),
        order,
    )
    .await
}

fn outcome(r: &Report) -> Outcome {
    match r.fate {
        Fate::Completed(o) => o,
        _ => panic!("not completed: {:?}", r.fate),
    }
}

#[tokio::test(start_paused = true)]
async fn by_instance_id_uses_command_id_as_client_token_without_lookup() {
    let cloud = world();
    let r = go(
        &cloud,
        r#"{"command_id":"c-1","region_id":"cn-hangzhou","instance_id":"mi-aaa1"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Succeeded);
    assert_eq!(
        cloud.calls(ApiAction::DeregisterManagedInstance),
        ["mi-aaa1|c-1"]
    );
    assert!(cloud.calls(ApiAction::DescribeManagedInstances).is_empty());
    assert!(!cloud.has_instance("mi-aaa1"));
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind, EventType::InstanceDeregistered);
    assert_eq!(r.events[0].attempts, Some(1));
    let term = r.completed_event(
        &command(
            CommandKind::Decommission,
            r#"{"command_id":"c-1","region_id":"cn-hangzhou","instance_id":"mi-aaa1"}"#,
        ),
        outcome(&r),
    );
    assert_eq!(term.kind, EventType::CommandCompleted);
}

#[tokio::test(start_paused = true)]
async fn gone_instance_is_already_done() {
    let cloud = world();
    let r = go(
        &cloud,
        r#"{"command_id":"c-2","region_id":"cn-hangzhou","instance_id":"mi-zzz9"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Succeeded);
    assert_eq!(r.events[0].outcome, Outcome::AlreadyDone);
}

#[tokio::test(start_paused = true)]
async fn hostname_matches_case_insensitively_and_ambiguity_is_refused() {
    let cloud = world();
    let r = go(
        &cloud,
        r#"{"command_id":"c-3","region_id":"cn-hangzhou","hostname":"web-2"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Failed);
    assert_eq!(
        r.first_error.as_ref().map(|e| e.code.as_str()),
        Some("AmbiguousTarget")
    );
    assert!(
        cloud.calls(ApiAction::DeregisterManagedInstance).is_empty(),
        "nothing deregistered"
    );
    // Paged through the whole region (3 instances, 2 per page).
    assert_eq!(cloud.calls(ApiAction::DescribeManagedInstances).len(), 2);

    let r = go(
        &cloud,
        r#"{"command_id":"c-4","region_id":"cn-hangzhou","hostname":"web-2.","all_matches":true}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Succeeded);
    let calls = cloud.calls(ApiAction::DeregisterManagedInstance);
    assert_eq!(calls.len(), 2);
    for call in &calls {
        let (id, token) = call.split_once('|').expect("id|token");
        assert_ne!(token, "c-4", "several instances: each gets a derived token");
        let expected = crate::command::client_token(
            &crate::command::CommandId::parse("c-4").expect("id"),
            &InstanceId::parse(id).expect("id"),
        );
        assert_eq!(token, expected);
        assert!(token.len() <= 64);
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_matching_is_already_done() {
    let cloud = world();
    let r = go(
        &cloud,
        r#"{"command_id":"c-5","region_id":"cn-hangzhou","ip":"192.0.2.7"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Succeeded);
    assert_eq!(r.steps[0].outcome, Outcome::AlreadyDone);
    assert!(r.events.is_empty());
}

#[tokio::test(start_paused = true)]
async fn dry_run_resolves_but_never_mutates() {
    let cloud = world();
    let r = go(
        &cloud,
        r#"{"command_id":"c-6","region_id":"cn-hangzhou","instance_id":"mi-aaa1","dry_run":true}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::DryRun);
    assert!(cloud.calls(ApiAction::DeregisterManagedInstance).is_empty());
    assert_eq!(cloud.calls(ApiAction::DescribeManagedInstances).len(), 1);
    assert!(cloud.has_instance("mi-aaa1"));
    assert_eq!(r.events[0].outcome, Outcome::DryRun);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_retry_then_redeliver_then_fail_on_last_chance() {
    let cloud = world();
    cloud.fail(
        ApiAction::DeregisterManagedInstance,
        2,
        api_error(500, "InternalError.Dispatch"),
    );
    let r = go(
        &cloud,
        r#"{"command_id":"c-7","region_id":"cn-hangzhou","instance_id":"mi-aaa1"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Succeeded);
    assert_eq!(r.events[0].attempts, Some(3));

    cloud.fail(
        ApiAction::DeregisterManagedInstance,
        100,
        api_error(503, "ServiceUnavailable"),
    );
    let r = go(
        &cloud,
        r#"{"command_id":"c-8","region_id":"cn-hangzhou","instance_id":"mi-bbb2"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert!(
        matches!(
            r.fate,
            Fate::Stopped(Stopped {
                stop: Stop::Redeliver { stage: 0 },
                ..
            })
        ),
        "{:?}",
        r.fate
    );
    let first = r.attempts["deregister:mi-bbb2"];
    assert!(first > 1);

    // The last stage: attempts add up across processings and the step fails for good.
    let r = go(
        &cloud,
        r#"{"command_id":"c-8","region_id":"cn-hangzhou","instance_id":"mi-bbb2"}"#,
        r.attempts.clone(),
        true,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Failed);
    assert_eq!(r.events[0].kind, EventType::InstanceDeregistrationFailed);
    let total = r.events[0].attempts.expect("attempts");
    assert!(total > first, "{total} > {first}");
    assert!(r.events[0].error.as_ref().is_some_and(|e| e.retryable));
}

#[tokio::test(start_paused = true)]
async fn credential_failures_park_and_never_fail() {
    let cloud = world();
    cloud.fail(
        ApiAction::DeregisterManagedInstance,
        1,
        api_error(404, "InvalidAccessKeyId.NotFound"),
    );
    let r = go(
        &cloud,
        r#"{"command_id":"c-9","region_id":"cn-hangzhou","instance_id":"mi-aaa1"}"#,
        Attempts::new(),
        true,
    )
    .await;
    // Even past the last stage: parked, never failed.
    assert!(
        matches!(
            r.fate,
            Fate::Stopped(Stopped {
                stop: Stop::Park { stage: 0 },
                ..
            })
        ),
        "{:?}",
        r.fate
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_fail_at_once() {
    let cloud = world();
    cloud.fail(
        ApiAction::DeregisterManagedInstance,
        1,
        api_error(403, "Operation.Forbidden"),
    );
    let r = go(
        &cloud,
        r#"{"command_id":"c-10","region_id":"cn-hangzhou","instance_id":"mi-aaa1"}"#,
        Attempts::new(),
        false,
    )
    .await;
    assert_eq!(outcome(&r), Outcome::Failed);
    assert_eq!(cloud.calls(ApiAction::DeregisterManagedInstance).len(), 1);
    assert_eq!(
        r.first_error.as_ref().map(|e| e.code.as_str()),
        Some("Operation.Forbidden")
    );
}

#[tokio::test(start_paused = true)]
async fn limits_refuse_too_many_and_disallowed_instances_without_calls() {
    use crate::limits::Limits;
    let cloud = world();
    let json =
        r#"{"command_id":"c-11","region_id":"cn-hangzhou","hostname":"web-2","all_matches":true}"#;
    let c = command(CommandKind::Decommission, json);
    let r = retrier();
    let Action::Decommission(order) = &c.action else {
        panic!("not a decommission")
    };
    let limits = Limits {
        max_instances: 1,
        ..Limits::default()
    };
    let report = run(
        Run::new(&c, &cloud, &r, Attempts::new()).limits(limits),
        order,
    )
    .await;
    assert_eq!(outcome(&report), Outcome::Failed);
    assert_eq!(
        report.first_error.as_ref().map(|e| e.code.as_str()),
        Some("TooManyInstances")
    );
    assert!(
        cloud.calls(ApiAction::DeregisterManagedInstance).is_empty(),
        "refused whole"
    );

    let limits = Limits {
        instance_patterns: vec!["mi-bbb*".into()],
        ..Limits::default()
    };
    let report = run(
        Run::new(&c, &cloud, &r, Attempts::new()).limits(limits),
        order,
    )
    .await;
    assert_eq!(outcome(&report), Outcome::PartiallyFailed);
    assert_eq!(cloud.calls(ApiAction::DeregisterManagedInstance).len(), 1);
    assert!(cloud.has_instance("mi-ccc3"), "not allowed: untouched");
    assert!(report.events.iter().any(|e| {
        e.kind == EventType::InstanceDeregistrationFailed
            && e.error
                .as_ref()
                .is_some_and(|x| x.code == "TargetNotAllowed")
    }));
}
