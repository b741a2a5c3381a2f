use super::*;
use crate::command::{Action, CommandKind};
use crate::playbook::fake::{FakeCloud, activation, api_error, command, instance, retrier};
use crate::playbook::{Attempts, Fate, Run};

const USED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234AAAA";
const UNUSED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234BBBB";

fn world() -> FakeCloud {
    FakeCloud::new(
        vec![
            instance("mi-old1", "db-1", USED, "2026-01-01T00:00:00Z"),
            instance("mi-new1", "db-2", USED, "2026-11-20T10:00:00Z"),
            instance("mi-new2", "db-3", USED, "2026-11-21T10:00:00Z"),
        ],
        vec![activation(USED, 3), activation(UNUSED, 0)],
    )
}

async fn go(cloud: &FakeCloud, json: &str) -> Report {
    let c = command(CommandKind::LeakAlert, json);
    let r = retrier();
    let Action::LeakAlert(alert) = &c.action else {
        panic!("not a leak alert")
    };
    run(Run::new(&c, cloud, &r, Attempts::new()), alert).await
}

fn kinds(r: &Report) -> Vec<EventType> {
    r.events.iter().map(|e| e.kind).collect()
}

#[tokio::test(start_paused = true)]
async fn unused_code_is_disabled_then_deleted() {
    let cloud = world();
    let r = go(
        &cloud,
        &format!(r#"{{"command_id":"l-1","region_id":"cn-hangzhou","activation_id":"{UNUSED}"}}"#),
    )
    .await;
    assert!(
        matches!(r.fate, Fate::Completed(Outcome::Succeeded)),
        "{:?}",
        r.fate
    );
    assert_eq!(
        kinds(&r),
        [
            EventType::ActivationDisabled,
            EventType::ActivationDeleted,
            EventType::ActivationExposureReport
        ]
    );
    assert_eq!(cloud.calls(ApiAction::DeleteActivation), [UNUSED]);
}

#[tokio::test(start_paused = true)]
async fn used_code_is_not_deleted_and_suspicious_ones_are_quarantined() {
    let cloud = world();
    let r = go(
        &cloud,
        &format!(r#"{{"command_id":"l-2","region_id":"cn-hangzhou","activation_id":"{USED}","detected_at":"2026-11-20T00:00:00Z","quarantine":"suspicious"}}"#),
    )
    .await;
    assert!(
        matches!(r.fate, Fate::Completed(Outcome::Succeeded)),
        "{:?}",
        r.fate
    );
    assert!(cloud.calls(ApiAction::DeleteActivation).is_empty());
    assert_eq!(
        kinds(&r),
        [
            EventType::ActivationDisabled,
            EventType::ActivationDeleteSkipped,
            EventType::InstanceDeregistered,
            EventType::InstanceDeregistered,
            EventType::ActivationExposureReport
        ]
    );
    assert!(
        cloud.has_instance("mi-old1"),
        "registered before the leak: kept"
    );
    assert!(!cloud.has_instance("mi-new1") && !cloud.has_instance("mi-new2"));
    let report = r.events.last().expect("report");
    assert_eq!(report.detail.get("suspicious_count"), Some(2.into()));
    let instances = report.detail.get("instances").expect("instances");
    let instances = instances.as_array().expect("an array");
    assert_eq!(instances.len(), 3);
    let old = instances
        .iter()
        .find(|i| i["InstanceId"] == "mi-old1")
        .expect("old");
    assert_eq!(old["suspicious"], false);
    assert_eq!(old["quarantine"], "not_requested");
    let new = instances
        .iter()
        .find(|i| i["InstanceId"] == "mi-new1")
        .expect("new");
    assert_eq!(new["quarantine"], "deregistered");
}

#[tokio::test(start_paused = true)]
async fn a_later_failure_does_not_hide_the_disable() {
    let cloud = world();
    cloud.fail(
        ApiAction::DeleteActivation,
        1,
        api_error(403, "Operation.Forbidden"),
    );
    let r = go(
        &cloud,
        &format!(r#"{{"command_id":"l-3","region_id":"cn-hangzhou","activation_id":"{UNUSED}"}}"#),
    )
    .await;
    assert!(
        matches!(r.fate, Fate::Completed(Outcome::PartiallyFailed)),
        "{:?}",
        r.fate
    );
    assert_eq!(
        kinds(&r),
        [
            EventType::ActivationDisabled,
            EventType::ActivationDeleteFailed,
            EventType::ActivationExposureReport
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_code_fails_disable_but_still_reports() {
    let cloud = world();
    let r = go(&cloud, r#"{"command_id":"l-4","region_id":"cn-hangzhou","activation_id":"00000000-0000-0000-0000-000000000000"}"#).await;
    assert!(
        matches!(r.fate, Fate::Completed(Outcome::PartiallyFailed)),
        "{:?}",
        r.fate
    );
    assert_eq!(kinds(&r)[0], EventType::ActivationDisableFailed);
    assert_eq!(
        r.first_error.as_ref().map(|e| e.code.as_str()),
        Some("ActivationId.NotFound")
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_reads_and_reports_but_changes_nothing() {
    let cloud = world();
    let r = go(
        &cloud,
        &format!(r#"{{"command_id":"l-5","region_id":"cn-hangzhou","activation_id":"{USED}","quarantine":"all","dry_run":true}}"#),
    )
    .await;
    assert!(
        matches!(r.fate, Fate::Completed(Outcome::DryRun)),
        "{:?}",
        r.fate
    );
    assert!(cloud.calls(ApiAction::DisableActivation).is_empty());
    assert!(cloud.calls(ApiAction::DeregisterManagedInstance).is_empty());
    assert_eq!(cloud.calls(ApiAction::DescribeActivations).len(), 1);
    assert!(cloud.has_instance("mi-old1"));
    assert!(
        r.events
            .iter()
            .all(|e| e.outcome == Outcome::DryRun || e.outcome == Outcome::Skipped)
    );
}

#[tokio::test(start_paused = true)]
async fn quarantine_over_the_limit_is_refused_whole() {
    let cloud = world();
    let json = format!(
        r#"{{"command_id":"l-6","region_id":"cn-hangzhou","activation_id":"{USED}","quarantine":"all"}}"#
    );
    let c = command(CommandKind::LeakAlert, &json);
    let r = retrier();
    let Action::LeakAlert(alert) = &c.action else {
        panic!("not a leak alert")
    };
    let limits = crate::limits::Limits {
        max_instances: 2,
        ..crate::limits::Limits::default()
    };
    let report = run(
        Run::new(&c, &cloud, &r, Attempts::new()).limits(limits),
        alert,
    )
    .await;
    assert!(
        matches!(report.fate, Fate::Completed(Outcome::PartiallyFailed)),
        "{:?}",
        report.fate
    );
    assert!(cloud.calls(ApiAction::DeregisterManagedInstance).is_empty());
    assert_eq!(
        cloud.calls(ApiAction::DisableActivation).len(),
        1,
        "the code is still shut off"
    );
    let exposure = report.events.last().expect("report");
    assert!(
        exposure
            .detail
            .get("instances")
            .expect("instances")
            .as_array()
            .expect("instances")
            .iter()
            .all(|i| i["quarantine"] == "refused")
    );
}

/// Records what was announced and how many API calls had been made by then.
struct Recorder<'a> {
    cloud: &'a FakeCloud,
    announced: std::sync::Mutex<Vec<(EventType, usize)>>,
    works: bool,
}

impl crate::playbook::Announce for Recorder<'_> {
    fn announce<'b>(&'b self, event: &'b Event) -> futures::future::BoxFuture<'b, bool> {
        let calls = self.cloud.world.lock().map(|w| w.calls.len()).unwrap_or(0);
        self.announced
            .lock()
            .expect("lock")
            .push((event.kind, calls));
        Box::pin(async move { self.works })
    }
}

/// Containment is announced when the code is disabled, before the exposure
/// report and quarantine make their calls; if the announcement cannot be
/// published, the event goes out with the settlement instead.
#[tokio::test(start_paused = true)]
async fn the_disabled_code_is_announced_before_the_exposure_report() {
    for works in [true, false] {
        let cloud = world();
        let recorder = Recorder {
            cloud: &cloud,
            announced: std::sync::Mutex::new(Vec::new()),
            works,
        };
        let c = command(
            CommandKind::LeakAlert,
            &format!(
                r#"{{"command_id":"l-9","region_id":"cn-hangzhou","activation_id":"{USED}","quarantine":"all"}}"#
            ),
        );
        let r = retrier();
        let Action::LeakAlert(alert) = &c.action else {
            panic!("not a leak alert")
        };
        let report = run(
            Run::new(&c, &cloud, &r, Attempts::new()).announcer(&recorder),
            alert,
        )
        .await;
        assert!(matches!(report.fate, Fate::Completed(Outcome::Succeeded)));
        let announced = recorder.announced.into_inner().expect("lock");
        // Announced after its one call (DisableActivation), before any other.
        assert_eq!(announced, [(EventType::ActivationDisabled, 1)]);
        assert_eq!(cloud.calls(ApiAction::DeregisterManagedInstance).len(), 3);
        let settled = kinds(&report).contains(&EventType::ActivationDisabled);
        assert_eq!(
            settled, !works,
            "published once: now, or with the settlement"
        );
    }
}
