//! Keeps `docs/schemas/*.schema.json` honest: the JSON Schemas of the events
//! (and commands) are checked against what the worker really publishes.
//!
//! - `schema_examples_are_valid`: every schema compiles (2020-12, refs
//!   resolved from the files alone, no network), its examples validate, and
//!   the event schemas are closed (an unknown top-level field fails).
//! - `real_events_match_their_schemas`: the worker binary against RabbitMQ and
//!   the in-process simulator (see `tests/e2e/support/mod.rs`) runs a scenario set
//!   that produces every event type; each collected event is validated against
//!   the schema of its type, and a few semantic points are asserted on the way.

use crate::support::*;
use jsonschema::{Draft, Registry, Resource, Validator};
use lapin::BasicProperties;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const URN: &str = "urn:lifecycle-worker:schema:";

const EVENT_TYPES: [&str; 10] = [
    "instance.deregistered",
    "instance.deregistration_failed",
    "activation.disabled",
    "activation.disable_failed",
    "activation.deleted",
    "activation.delete_skipped",
    "activation.delete_failed",
    "activation.exposure_report",
    "command.completed",
    "command.rejected",
];

/// Every schema file of `docs/schemas`, keyed by its `$id`.
fn schema_files() -> BTreeMap<String, Value> {
    let dir = format!("{}/docs/schemas", env!("CARGO_MANIFEST_DIR"));
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("docs/schemas readable") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".schema.json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("schema readable");
        let schema: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        let id = schema["$id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no $id"))
            .to_owned();
        let stem = name.trim_end_matches(".schema.json");
        assert_eq!(id, format!("{URN}{stem}"), "$id of {name} follows its name");
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        out.insert(id, schema);
    }
    out
}

/// Validators for every schema, `$ref`s resolved against the files only.
struct Schemas {
    validators: BTreeMap<String, Validator>,
    files: BTreeMap<String, Value>,
}

impl Schemas {
    fn load() -> Schemas {
        let files = schema_files();
        let registry = Registry::new()
            .extend(
                files
                    .iter()
                    .map(|(id, s)| (id.clone(), Resource::from_contents(s.clone()))),
            )
            .expect("schema ids are URIs")
            .prepare()
            .expect("schemas register");
        let validators = files
            .iter()
            .map(|(id, schema)| {
                let v = jsonschema::options()
                    .with_draft(Draft::Draft202012)
                    .should_validate_formats(true)
                    .with_registry(&registry)
                    .build(schema)
                    .unwrap_or_else(|e| panic!("{id} does not compile: {e}"));
                (id.trim_start_matches(URN).to_owned(), v)
            })
            .collect();
        Schemas { validators, files }
    }

    /// The validation errors of `instance` against schema `name` (e.g. `event.command.completed`).
    fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        let v = self
            .validators
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        v.iter_errors(instance)
            .map(|e| format!("at {}: {e}", e.instance_path()))
            .collect()
    }

    fn assert_valid(&self, name: &str, instance: &Value) {
        let errors = self.errors(name, instance);
        assert!(
            errors.is_empty(),
            "{name} refuses\n{}\n{errors:#?}",
            serde_json::to_string_pretty(instance).unwrap_or_default()
        );
    }
}

#[test]
fn schema_examples_are_valid() {
    let schemas = Schemas::load();
    for ty in EVENT_TYPES {
        assert!(
            schemas.validators.contains_key(&format!("event.{ty}")),
            "docs/schemas/event.{ty}.schema.json is missing"
        );
    }
    assert!(schemas.validators.contains_key("event.common"));
    for (id, schema) in &schemas.files {
        let name = id.trim_start_matches(URN);
        let examples = schema["examples"].as_array().cloned().unwrap_or_default();
        if name.starts_with("event.") && name != "event.common" {
            assert!(!examples.is_empty(), "{name} has an example");
        }
        for example in &examples {
            schemas.assert_valid(name, example);
            if name.starts_with("event.") {
                // Closed at the top level, and the common envelope is enforced.
                let mut extra = example.clone();
                extra["unexpected"] = json!(1);
                assert!(!schemas.errors(name, &extra).is_empty(), "{name} is open");
                let mut no_id = example.clone();
                no_id.as_object_mut().map(|o| o.remove("event_id"));
                assert!(!schemas.errors(name, &no_id).is_empty(), "{name}: event_id");
                let mut wrong_type = example.clone();
                wrong_type["type"] = json!("command.bogus");
                assert!(
                    !schemas.errors(name, &wrong_type).is_empty(),
                    "{name}: type"
                );
            }
        }
    }
    // An event of one type never passes another type's schema.
    for ty in EVENT_TYPES {
        let example = &schemas.files[&format!("{URN}event.{ty}")]["examples"][0];
        for other in EVENT_TYPES.iter().filter(|o| **o != ty) {
            assert!(
                !schemas
                    .errors(&format!("event.{other}"), example)
                    .is_empty(),
                "the {ty} example passes event.{other}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The end-to-end scenario set.

const ACT_USED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234A001";
const ACT_UNUSED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234A002";
const ACT_UNUSED_DRY: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234A003";
const ACT_DELETE_FAILS: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234A004";
const ACT_UNKNOWN: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234AFFF";
const DETECTED_AT: &str = "2026-11-01T00:00:00Z";

fn seed() -> Value {
    let mut instances: Vec<Value> = (0..3).map(|i| instance_json(&inst(i), None)).collect();
    let host = |id: &str, hostname: &str| {
        let mut v = instance_json(id, None);
        v["Hostname"] = json!(hostname);
        v
    };
    instances.push(host("mi-dupa", "dup.example.internal"));
    instances.push(host("mi-dupb", "DUP.example.internal."));
    instances.push(host("mi-twina", "twin.example.internal"));
    instances.push(host("mi-twinb", "twin.example.internal"));
    // Registered with the used code: one before the leak, one after, one with
    // no registration time (suspicious: it cannot be shown to predate the leak).
    let mut old = instance_json("mi-usedold", Some(ACT_USED));
    old["RegistrationTime"] = json!("2026-10-01T00:00:00Z");
    let mut new = instance_json("mi-usednew", Some(ACT_USED));
    new["RegistrationTime"] = json!("2026-11-05T00:00:00Z");
    new["Tags"] = json!([{"TagKey": "team", "TagValue": "web"}]);
    let mut untimed = instance_json("mi-usednotime", Some(ACT_USED));
    untimed
        .as_object_mut()
        .map(|o| o.remove("RegistrationTime"));
    instances.extend([old, new, untimed]);
    json!({
        "Instances": instances,
        "Activations": [
            activation_json(ACT_USED, 3),
            activation_json(ACT_UNUSED, 0),
            activation_json(ACT_UNUSED_DRY, 0),
            activation_json(ACT_DELETE_FAILS, 0),
        ],
    })
}

/// A command the test sends and what it expects back.
struct Sent {
    id: String,
    kind: &'static str,
    body: Value,
}

impl Sent {
    fn new(kind: &'static str, prefix: &str, fields: Value) -> Sent {
        let id = new_id(prefix);
        let mut body = json!({"command_id": id, "region_id": REGION});
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        Sent { id, kind, body }
    }

    async fn send(&self, env: &Env) {
        let bytes = serde_json::to_vec(&self.body).expect("json");
        env.send_json(self.kind, &bytes).await;
    }
}

async fn send_all(env: &Env, schemas: &Schemas, commands: &[&Sent]) {
    for c in commands {
        // What we send is what the command schemas accept.
        schemas.assert_valid(&format!("command.{}", c.kind), &c.body);
        c.send(env).await;
    }
}

async fn wait_completed(env: &Env, commands: &[&Sent]) -> Vec<Ev> {
    env.wait_for("command.completed of each command", T, |evs| {
        commands.iter().all(|c| {
            evs.iter()
                .any(|e| e.command_id() == c.id && e.ty() == "command.completed")
        })
    })
    .await
}

fn event<'a>(evs: &'a [Ev], command: &Sent, ty: &str) -> Vec<&'a Ev> {
    evs.iter()
        .filter(|e| e.command_id() == command.id && e.ty() == ty)
        .collect()
}

fn one<'a>(evs: &'a [Ev], command: &Sent, ty: &str) -> &'a Ev {
    let found = event(evs, command, ty);
    assert_eq!(
        found.len(),
        1,
        "exactly one {ty} for {}: {:#?}",
        command.id,
        evs.iter()
            .filter(|e| e.command_id() == command.id)
            .map(|e| &e.body)
            .collect::<Vec<_>>()
    );
    found[0]
}

fn outcome_of(evs: &[Ev], command: &Sent) -> String {
    one(evs, command, "command.completed").outcome().to_owned()
}

const MUTATING: [&str; 3] = [
    "DeregisterManagedInstance",
    "DisableActivation",
    "DeleteActivation",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_events_match_their_schemas() {
    let started = Instant::now();
    let schemas = Schemas::load();
    let env = Env::new(seed()).await;
    let _worker = env.start_worker(&[]).await;

    // Phase 1: dry runs, alone, so the API log shows they changed nothing.
    let dry_decommission = Sent::new(
        "decommission",
        "dry-dec",
        json!({"instance_id": inst(0), "dry_run": true}),
    );
    let dry_hostname = Sent::new(
        "decommission",
        "dry-host",
        json!({"hostname": "twin.example.internal", "all_matches": true, "dry_run": true}),
    );
    let dry_leak_used = Sent::new(
        "leak-alert",
        "dry-used",
        json!({"activation_id": ACT_USED, "quarantine": "all", "dry_run": true,
               "reason": "leak drill", "requested_by": "schema-test"}),
    );
    let dry_leak_unused = Sent::new(
        "leak-alert",
        "dry-unused",
        json!({"activation_id": ACT_UNUSED_DRY, "dry_run": true}),
    );
    let dry = [
        &dry_decommission,
        &dry_hostname,
        &dry_leak_used,
        &dry_leak_unused,
    ];
    send_all(&env, &schemas, &dry).await;
    let evs = wait_completed(&env, &dry).await;
    let reqs = env.requests().await;
    let mutating: Vec<&Value> = reqs
        .iter()
        .filter(|r| MUTATING.iter().any(|a| r["action"] == *a))
        .collect();
    assert!(
        mutating.is_empty(),
        "dry runs made mutating calls: {mutating:#?}"
    );
    assert!(!reqs.is_empty(), "dry runs read through the API");
    for c in dry {
        assert_eq!(outcome_of(&evs, c), "dry_run", "{}", c.id);
    }
    assert_eq!(
        event(&evs, &dry_hostname, "instance.deregistered").len(),
        2,
        "all_matches dry run reports both twins"
    );
    let report = &one(&evs, &dry_leak_used, "activation.exposure_report").body;
    assert_eq!(report["detected_at"], Value::Null);
    assert_eq!(report["instance_count"], 3);
    assert_eq!(report["suspicious_count"], 0, "no detected_at: no evidence");
    for item in report["instances"].as_array().expect("instances") {
        assert_eq!(item["suspicious"], false, "{item}");
        assert_eq!(item["quarantine"], "would_deregister", "{item}");
    }
    assert_eq!(
        one(&evs, &dry_leak_unused, "activation.deleted").outcome(),
        "dry_run"
    );
    assert_eq!(
        one(&evs, &dry_leak_used, "activation.delete_skipped").body["reason"],
        "in_use"
    );

    // Phase 2: injected permanent failures, for the two *_failed events that
    // only a refusing API produces (the faults are consumed by these commands
    // alone: nothing else deregisters or deletes meanwhile).
    env.set_faults(json!({"fail_next": [
        {"action": "DeleteActivation", "count": 1, "code": "Operation.Forbidden", "status": 403},
        {"action": "DeregisterManagedInstance", "count": 1, "code": "Operation.Forbidden", "status": 403},
    ]}))
    .await;
    let delete_fails = Sent::new(
        "leak-alert",
        "del-fail",
        json!({"activation_id": ACT_DELETE_FAILS}),
    );
    let dereg_fails = Sent::new(
        "decommission",
        "dereg-fail",
        json!({"instance_id": inst(2)}),
    );
    let faulty = [&delete_fails, &dereg_fails];
    send_all(&env, &schemas, &faulty).await;
    let evs = wait_completed(&env, &faulty).await;
    env.sim_send(reqwest::Method::DELETE, "/_sim/faults", None)
        .await;
    assert_eq!(outcome_of(&evs, &delete_fails), "partially_failed");
    let failed = one(&evs, &delete_fails, "activation.delete_failed");
    assert_eq!(failed.body["error"]["code"], "Operation.Forbidden");
    assert_eq!(failed.body["error"]["http_status"], 403);
    assert_eq!(failed.body["error"]["retryable"], false);
    assert_eq!(outcome_of(&evs, &dereg_fails), "failed");
    let failed = one(&evs, &dereg_fails, "instance.deregistration_failed");
    assert_eq!(failed.body["error"]["code"], "Operation.Forbidden");
    assert_eq!(failed.body["client_token"], dereg_fails.id.as_str());

    // Phase 3: the ordinary paths, concurrently.
    let by_id = Sent::new(
        "decommission",
        "by-id",
        json!({"instance_id": inst(1), "reason": "offboarded", "requested_by": "schema-test"}),
    );
    let unknown_id = Sent::new(
        "decommission",
        "unknown-id",
        json!({"instance_id": "mi-doesnotexist"}),
    );
    let ambiguous = Sent::new(
        "decommission",
        "ambiguous",
        json!({"hostname": "dup.example.internal"}),
    );
    let all_matches = Sent::new(
        "decommission",
        "all-matches",
        json!({"hostname": "TWIN.example.internal.", "all_matches": true}),
    );
    let nothing = Sent::new(
        "decommission",
        "nothing",
        json!({"machine_id": "no-such-machine"}),
    );
    let leak_unused = Sent::new("leak-alert", "unused", json!({"activation_id": ACT_UNUSED}));
    let leak_used = Sent::new(
        "leak-alert",
        "used",
        json!({"activation_id": ACT_USED, "detected_at": DETECTED_AT, "quarantine": "suspicious",
               "requested_by": "schema-test"}),
    );
    let leak_unknown = Sent::new(
        "leak-alert",
        "unknown-code",
        json!({"activation_id": ACT_UNKNOWN}),
    );
    let main = [
        &by_id,
        &unknown_id,
        &ambiguous,
        &all_matches,
        &nothing,
        &leak_unused,
        &leak_used,
        &leak_unknown,
    ];
    send_all(&env, &schemas, &main).await;

    // Rejections: garbage (with and without a message_id), missing fields,
    // an unknown account, a wrong content type.
    let json_props = || BasicProperties::default().with_content_type("application/json".into());
    let garbage_id = new_id("rej-garbage");
    env.publish(
        "decommission",
        b"\xff\xfenot json {",
        json_props().with_message_id(garbage_id.clone().into()),
    )
    .await;
    env.publish("leak-alert", b"[1, 2, 3]", json_props()).await;
    let missing = Sent::new(
        "decommission",
        "rej-missing",
        json!({"reason": "no target", "requested_by": "schema-test"}),
    );
    let mut missing_body = missing.body.clone();
    missing_body.as_object_mut().map(|o| o.remove("region_id"));
    assert!(
        !schemas
            .errors("command.decommission", &missing_body)
            .is_empty(),
        "the command schema refuses what the worker refuses"
    );
    env.send_json(
        "decommission",
        &serde_json::to_vec(&missing_body).expect("json"),
    )
    .await;
    let no_activation = Sent::new(
        "leak-alert",
        "rej-noact",
        json!({"account_id": "1234567890123"}),
    );
    assert!(
        !schemas
            .errors("command.leak-alert", &no_activation.body)
            .is_empty()
    );
    no_activation.send(&env).await;
    let wrong_ct = Sent::new("decommission", "rej-ct", json!({"instance_id": inst(0)}));
    env.publish(
        "decommission",
        &serde_json::to_vec(&wrong_ct.body).expect("json"),
        BasicProperties::default().with_content_type("text/plain".into()),
    )
    .await;
    let rejected_ids = [&garbage_id, &missing.id, &no_activation.id, &wrong_ct.id];

    let evs = env
        .wait_for("every terminal event", T, |evs| {
            let rejections = evs.iter().filter(|e| e.ty() == "command.rejected").count();
            rejections >= 5
                && main.iter().all(|c| {
                    evs.iter()
                        .any(|e| e.command_id() == c.id && e.ty() == "command.completed")
                })
        })
        .await;

    // Semantics of the main phase.
    assert_eq!(outcome_of(&evs, &by_id), "succeeded");
    let dereg = one(&evs, &by_id, "instance.deregistered");
    assert_eq!(
        dereg.body["audit"],
        json!({"reason": "offboarded", "requested_by": "schema-test"})
    );
    assert_eq!(dereg.body["instance"]["InstanceId"], inst(1).as_str());
    assert_eq!(outcome_of(&evs, &unknown_id), "succeeded");
    assert_eq!(
        one(&evs, &unknown_id, "instance.deregistered").outcome(),
        "already_done"
    );
    assert_eq!(outcome_of(&evs, &ambiguous), "failed");
    let done = one(&evs, &ambiguous, "command.completed");
    assert_eq!(done.body["error"]["code"], "AmbiguousTarget");
    assert_eq!(done.body["error"]["http_status"], Value::Null);
    assert!(event(&evs, &ambiguous, "instance.deregistered").is_empty());
    assert_eq!(outcome_of(&evs, &all_matches), "succeeded");
    let twins = event(&evs, &all_matches, "instance.deregistered");
    assert_eq!(twins.len(), 2);
    assert!(
        twins
            .iter()
            .all(|e| e.body["client_token"] != all_matches.id.as_str()),
        "several matches: per-instance tokens"
    );
    assert_eq!(outcome_of(&evs, &nothing), "succeeded");
    assert_eq!(
        one(&evs, &nothing, "command.completed").body["steps"][0]["outcome"],
        "already_done"
    );

    assert_eq!(outcome_of(&evs, &leak_unused), "succeeded");
    assert_eq!(
        one(&evs, &leak_unused, "activation.disabled").outcome(),
        "succeeded"
    );
    assert_eq!(
        one(&evs, &leak_unused, "activation.deleted").outcome(),
        "succeeded"
    );
    assert_eq!(outcome_of(&evs, &leak_used), "succeeded");
    assert_eq!(
        one(&evs, &leak_used, "activation.delete_skipped").body["reason"],
        "in_use"
    );
    let report = &one(&evs, &leak_used, "activation.exposure_report").body;
    assert_eq!(report["detected_at"], DETECTED_AT);
    assert_eq!(report["quarantine"], "suspicious");
    assert_eq!(report["instance_count"], 3);
    assert_eq!(report["suspicious_count"], 2);
    let verdicts: BTreeMap<&str, (bool, &str)> = report["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["InstanceId"].as_str().unwrap_or(""),
                (
                    i["suspicious"].as_bool().unwrap_or(false),
                    i["quarantine"].as_str().unwrap_or(""),
                ),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        BTreeMap::from([
            ("mi-usedold", (false, "not_requested")),
            ("mi-usednew", (true, "deregistered")),
            ("mi-usednotime", (true, "deregistered")),
        ]),
        "suspicious = registered at or after detected_at, or no registration time"
    );
    let quarantined: BTreeSet<&str> = event(&evs, &leak_used, "instance.deregistered")
        .iter()
        .map(|e| e.body["instance"]["InstanceId"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(quarantined, BTreeSet::from(["mi-usednew", "mi-usednotime"]));
    assert_eq!(outcome_of(&evs, &leak_unknown), "partially_failed");
    let failed = one(&evs, &leak_unknown, "activation.disable_failed");
    assert_eq!(failed.body["error"]["code"], "ActivationId.NotFound");
    assert_eq!(failed.body["error"]["http_status"], 404);

    // Rejections: one each, with what could be read.
    let rejections: Vec<&Ev> = evs
        .iter()
        .filter(|e| e.ty() == "command.rejected")
        .collect();
    assert_eq!(rejections.len(), 5, "{rejections:#?}");
    for id in rejected_ids {
        assert_eq!(
            rejections.iter().filter(|e| e.command_id() == id).count(),
            1,
            "one rejection for {id}"
        );
    }
    assert_eq!(
        rejections
            .iter()
            .filter(|e| e.body["command_id"].is_null())
            .count(),
        1,
        "the garbage without any id is rejected with command_id null"
    );
    let r = rejections
        .iter()
        .find(|e| e.command_id() == missing.id)
        .expect("missing-field rejection");
    assert_eq!(r.body["reason"], "invalid_fields");
    assert_eq!(r.body["audit"]["requested_by"], "schema-test");
    let r = rejections
        .iter()
        .find(|e| e.command_id() == no_activation.id)
        .expect("leak-alert rejection");
    assert_eq!(r.body["account_id"], "1234567890123");
    assert_eq!(r.body["command_kind"], "leak-alert");

    // Every event: routing key = type, valid against its type's schema.
    let evs = env.events();
    if let Ok(path) = std::env::var("LIFECYCLE_TEST_DUMP_EVENTS") {
        // For a person reviewing the schemas: every event collected, as JSON lines.
        let lines: Vec<String> = evs.iter().map(|e| e.body.to_string()).collect();
        std::fs::write(path, lines.join("\n")).expect("dump events");
    }
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for e in &evs {
        assert_eq!(e.routing_key, e.ty(), "routing key = type");
        seen.insert(e.ty().to_owned());
        let errors = schemas.errors(&format!("event.{}", e.ty()), &e.body);
        if !errors.is_empty() {
            failures.push(format!(
                "{}\n{errors:#?}",
                serde_json::to_string_pretty(&e.body).unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} events do not match their schema:\n{}",
        failures.len(),
        evs.len(),
        failures.join("\n\n")
    );
    let missing_types: Vec<&str> = EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| !seen.contains(*t))
        .collect();
    assert!(missing_types.is_empty(), "never emitted: {missing_types:?}");

    // Per command: its id and kind on every event, exactly one terminal
    // event, and it comes last.
    let all: Vec<&Sent> = dry.iter().chain(&faulty).chain(&main).copied().collect();
    for c in all {
        let mine: Vec<&Ev> = evs.iter().filter(|e| e.command_id() == c.id).collect();
        assert!(!mine.is_empty(), "{}: no events", c.id);
        for e in &mine {
            assert_eq!(e.body["command_kind"], c.kind, "{:?}", e.body);
            assert_eq!(e.body["region_id"], REGION);
            assert_eq!(
                e.body["dry_run"],
                c.body["dry_run"].as_bool().unwrap_or(false)
            );
        }
        let terminal: Vec<usize> = mine
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ty() == "command.completed" || e.ty() == "command.rejected")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            terminal,
            [mine.len() - 1],
            "{}: command.completed once, last: {:?}",
            c.id,
            mine.iter().map(|e| e.ty()).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "validated {} events of {} types in {:?}",
        evs.len(),
        seen.len(),
        started.elapsed()
    );
}

/// The schema lists exactly the worker's rejection reasons.
#[test]
fn rejection_reasons_are_the_workers() {
    let files = schema_files();
    let schema = &files[&format!("{URN}event.command.rejected")];
    let listed: BTreeSet<&str> = schema["properties"]["reason"]["enum"]
        .as_array()
        .expect("an enum of reasons")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ours: BTreeSet<&str> = lifecycle_worker::command::RejectReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(listed, ours);
}
