//! The operator CLI end to end on the real broker (issue 20): `send --from-file`
//! with a 200-row file of mixed outcomes, a run killed part-way and resumed,
//! `events tail`, and `send --wait` for a person.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Writes a file into the test's directory; returns its path.
fn file(env: &Env, name: &str, text: &str) -> String {
    let path = env.tmp.path().join(name);
    std::fs::write(&path, text).expect("write the file");
    path.display().to_string()
}

/// The JSON lines a `--output json` run printed: per-row lines, then the summary.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Terminal events per command id among everything the test collected.
fn terminals(env: &Env) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for e in env.events() {
        if matches!(e.ty(), "command.completed" | "command.rejected") {
            *n.entry(e.command_id().to_owned()).or_default() += 1;
        }
    }
    n
}

/// DeregisterManagedInstance requests per instance id in the simulator's log.
async fn dereg_requests(env: &Env) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for r in env.requests().await {
        if r["action"] == "DeregisterManagedInstance" {
            let id = r["params"]["InstanceId"].as_str().unwrap_or("").to_owned();
            *n.entry(id).or_default() += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_rows_with_every_outcome() {
    // 145 instances to deregister, 15 pairs of instances sharing a hostname (a
    // decommission by that hostname is ambiguous: failed), 5 unused activation codes.
    let code = |i: usize| format!("4ECEEE12-56F1-4FBC-9AB1-{:012X}", 0xC0DE_0000 + i);
    let mut seed = seed_instances(145);
    for i in 0..15 {
        for twin in ["a", "b"] {
            let mut instance = instance_json(&format!("mi-dup{i:04}{twin}"), None);
            instance["Hostname"] = json!(format!("dup-{i}.example.internal"));
            seed["Instances"]
                .as_array_mut()
                .expect("instances")
                .push(instance);
        }
    }
    seed["Activations"] = json!(
        (0..5)
            .map(|i| activation_json(&code(i), 0))
            .collect::<Vec<_>>()
    );
    let env = Env::new(seed).await;
    // The worker refuses mi-blocked* (an allow-list the CLI's settings do not
    // have, as a stricter production config would): those rows are `rejected`.
    let _w = env
        .start_worker(&[(
            "LIFECYCLE__SECURITY__ALLOWED_INSTANCE_IDS",
            "mi-test*,mi-gone*,mi-dup*",
        )])
        .await;
    let mut csv = String::from("kind,region_id,instance_id,hostname,activation_id,requested_by\n");
    let mut expected: Vec<&str> = Vec::new();
    for i in 0..145 {
        csv.push_str(&format!("decommission,{REGION},{},,,ops\n", inst(i)));
        expected.push("succeeded");
    }
    for i in 0..5 {
        csv.push_str(&format!("leak-alert,{REGION},,,{},ops\n", code(i)));
        expected.push("succeeded");
    }
    for i in 0..20 {
        csv.push_str(&format!("decommission,{REGION},mi-gone{i:04},,,ops\n"));
        expected.push("already_done");
    }
    for i in 0..15 {
        csv.push_str(&format!(
            "decommission,{REGION},,dup-{i}.example.internal,,ops\n"
        ));
        expected.push("failed");
    }
    for i in 0..15 {
        csv.push_str(&format!("decommission,{REGION},mi-blocked{i:04},,,ops\n"));
        expected.push("rejected");
    }
    assert_eq!(expected.len(), 200);
    let path = file(&env, "offboarding.csv", &csv);
    let (code, stdout, stderr) = env
        .run_cli(&[
            "send",
            "--from-file",
            &path,
            "--rate",
            "500",
            "--timeout",
            "60",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(
        code,
        Some(1),
        "a failed row makes the exit code 1; stderr: {stderr}"
    );
    let lines = json_lines(&stdout);
    let (rows, summary) = lines.split_at(lines.len() - 1);
    let summary = &summary[0];
    assert_eq!(
        summary["summary"],
        json!({"succeeded": 150, "already_done": 20, "dry_run": 0, "partially_failed": 0,
               "failed": 15, "rejected": 15, "pending": 0, "not_sent": 0}),
        "{stdout}\n{stderr}"
    );
    // One line per row as it finished, each with the right outcome for its line.
    assert_eq!(rows.len(), 200, "{stdout}");
    let by_line: HashMap<u64, &Value> = rows
        .iter()
        .map(|r| (r["line"].as_u64().expect("line"), r))
        .collect();
    for (i, want) in expected.iter().enumerate() {
        let row = by_line[&(i as u64 + 2)];
        assert_eq!(row["result"], *want, "line {}: {row}", i + 2);
    }
    let not_ok = summary["not_ok"].as_array().expect("not_ok");
    assert_eq!(not_ok.len(), 30);
    assert!(
        not_ok
            .iter()
            .filter(|t| t["result"] == "failed")
            .all(|t| t["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("AmbiguousTarget")),
        "failed rows carry the error: {not_ok:#?}"
    );
    assert!(
        not_ok
            .iter()
            .filter(|t| t["result"] == "rejected")
            .all(|t| t["error"].as_str().unwrap_or("").contains("instance_id")),
        "rejected rows name the field: {not_ok:#?}"
    );
    // Each command ran once: one terminal event each, one deregistration each.
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| r["command_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 200);
    env.wait_for("every row's terminal event", T, |events| {
        let ended: HashSet<&str> = events
            .iter()
            .filter(|e| matches!(e.ty(), "command.completed" | "command.rejected"))
            .map(|e| e.command_id())
            .collect();
        ids.iter().all(|id| ended.contains(id.as_str()))
    })
    .await;
    let terminal = terminals(&env);
    for id in &ids {
        assert_eq!(terminal.get(id), Some(&1), "{id}");
    }
    let d = env.deregistrations().await;
    assert_eq!(d.len(), 145, "nothing ambiguous was deregistered: {d:?}");
    assert!(d.values().all(|n| *n == json!(1)), "{d:?}");
    // The run's reply queue is gone once every row is finished.
    let journal = std::fs::read_to_string(format!("{path}.journal")).expect("the journal");
    let reply_queue = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["entry"] == "reply_queue")
        .and_then(|e| e["name"].as_str().map(str::to_owned))
        .expect("the journal names the reply queue");
    assert!(reply_queue.starts_with("amq.gen-"), "{reply_queue}");
    let queues = env.list("queues", &["name"]).await;
    assert!(!queues.iter().any(|q| q[0] == reply_queue), "{queues:?}");
    // A second run publishes nothing: every row is in the journal.
    let before = env.requests().await.len();
    let (code, stdout, stderr) = env
        .run_cli(&["send", "--from-file", &path, "--output", "json"])
        .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("200 of 200 rows already published or finished"),
        "{stderr}"
    );
    assert_eq!(json_lines(&stdout).last(), Some(summary));
    assert_eq!(env.requests().await.len(), before, "nothing was sent again");
}

/// Reads the journal's `finished` entries.
fn finished_in(journal: &Path) -> Vec<String> {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["entry"] == "finished")
        .map(|e| e["command_id"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_without_doing_anything_twice() {
    let env = Env::new(seed_instances(200)).await;
    let _w = env.start_worker(&[]).await;
    // Slow API calls keep commands in flight when the run is killed.
    env.set_faults(json!({"latency_ms": 150})).await;
    let mut jsonl = String::new();
    for i in 0..200 {
        jsonl.push_str(&format!("{{\"instance_id\": \"{}\"}}\n", inst(i)));
    }
    let path = file(&env, "hosts.jsonl", &jsonl);
    let journal = env.tmp.path().join("hosts.jsonl.journal");
    let args = [
        "send",
        "decommission",
        "--region",
        REGION,
        "--from-file",
        &path,
        "--rate",
        "100",
        "--output",
        "json",
    ];
    let mut first = env
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("send runs");
    // Kill it (no chance to clean up) once 60 rows have finished.
    let deadline = Instant::now() + T;
    while finished_in(&journal).len() < 60 {
        assert!(
            Instant::now() < deadline,
            "no progress: {:?}",
            first.try_wait()
        );
        assert!(
            first.try_wait().expect("try_wait").is_none(),
            "send ended early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("kill");
    first.wait().expect("reaped");
    let done_first: HashSet<String> = finished_in(&journal).into_iter().collect();
    assert!(
        done_first.len() < 200,
        "killed part-way: {}",
        done_first.len()
    );
    let requests_first = dereg_requests(&env).await;
    eprintln!("killed with {} rows finished", done_first.len());

    env.set_faults(json!({"latency_ms": 0})).await;
    let (code, stdout, stderr) = env.run_cli(&args).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    eprintln!("second run stderr:\n{stderr}");
    let lines = json_lines(&stdout);
    let summary = lines.last().expect("summary");
    assert_eq!(summary["summary"]["succeeded"], 200, "{stdout}");
    // Every row has exactly one outcome in the journal.
    let finished = finished_in(&journal);
    let unique: HashSet<&String> = finished.iter().collect();
    assert_eq!((finished.len(), unique.len()), (200, 200), "{finished:?}");
    // No command was carried out twice: one deregistration per instance, and
    // the rows finished before the kill were not sent again.
    let d = env.deregistrations().await;
    assert_eq!(d.len(), 200);
    assert!(d.values().all(|n| *n == json!(1)), "{d:?}");
    let requests = dereg_requests(&env).await;
    let rows_before_kill: Vec<&String> = done_first.iter().collect();
    let ids_of_instances: HashMap<String, String> = env
        .requests()
        .await
        .iter()
        .filter(|r| r["action"] == "DeregisterManagedInstance")
        .map(|r| {
            (
                r["params"]["ClientToken"].as_str().unwrap_or("").to_owned(),
                r["params"]["InstanceId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for id in rows_before_kill {
        let instance = &ids_of_instances[id];
        assert_eq!(
            requests[instance], requests_first[instance],
            "{id} ({instance}) finished before the kill and was sent again"
        );
        assert_eq!(requests[instance], 1);
    }
    let terminal = terminals(&env);
    assert!(
        unique
            .iter()
            .all(|id| terminal.get(*id).copied().unwrap_or(0) >= 1)
    );
}

/// Waits for a line on the child's stderr that contains `what`.
fn wait_stderr(child: &mut Child, what: &str) {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(what) => return,
            Some(Ok(_)) => {}
            other => panic!("no {what:?} on stderr: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_follows_one_command_and_send_wait_speaks_to_a_person() {
    let env = Env::new(seed_instances(3)).await;
    let _w = env.start_worker(&[]).await;
    let id = new_id("tail");
    let other = new_id("other");
    let spawn = |args: &[&str]| {
        let mut child = env
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("events tail runs");
        wait_stderr(&mut child, "following");
        child
    };
    let all_of_one = spawn(&["events", "tail", "--command-id", &id, "--count", "2"]);
    let completions = spawn(&[
        "events",
        "tail",
        "--type",
        "command.completed",
        "--kind",
        "decommission",
        "--count",
        "1",
        "--output",
        "human",
    ]);
    env.send_json("decommission", &decommission(&other, &inst(1)))
        .await;
    env.wait_for("the other command", T, |e| {
        completed(e, &other, "succeeded")
    })
    .await;
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;

    let out = tokio::task::spawn_blocking(move || all_of_one.wait_with_output())
        .await
        .expect("join")
        .expect("tail ends after --count events");
    assert!(out.status.success());
    let events: Vec<Value> = json_lines(&String::from_utf8_lossy(&out.stdout));
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        ["instance.deregistered", "command.completed"],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e["command_id"] == id.as_str()));

    let out = tokio::task::spawn_blocking(move || completions.wait_with_output())
        .await
        .expect("join")
        .expect("tail ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "one event, one step line: {text}");
    assert!(
        text.contains("command.completed") && text.contains(&other) && text.contains("succeeded"),
        "{text}"
    );
    assert!(
        text.contains("DeregisterManagedInstance") && text.contains(&inst(1)),
        "{text}"
    );

    // send --wait: a person gets the outcome and the steps, a script the JSON.
    let (code, stdout, stderr) = env
        .run_cli(&[
            "send",
            "decommission",
            "--region",
            REGION,
            "--instance-id",
            &inst(2),
            "--wait",
            "30",
            "--output",
            "human",
        ])
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    assert!(
        lines.next().unwrap_or("").starts_with("sent decommission "),
        "{stdout}"
    );
    let event = lines.next().unwrap_or("");
    assert!(
        event.contains("command.completed") && event.contains("succeeded"),
        "{stdout}"
    );
    assert!(
        lines
            .next()
            .unwrap_or("")
            .contains("DeregisterManagedInstance"),
        "{stdout}"
    );
    let (code, stdout, _) = env
        .run_cli(&[
            "send",
            "decommission",
            "--region",
            REGION,
            "--instance-id",
            &inst(2),
            "--wait",
            "30",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, Some(0));
    let mut lines = stdout.lines();
    let sent = lines.next().expect("the id");
    let event: Value = serde_json::from_str(lines.next().expect("the event")).expect("JSON");
    assert_eq!(event["command_id"], sent);
    assert_eq!(event["type"], "command.completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_sends_nothing_and_names_every_problem() {
    let env = Env::new(seed_instances(1)).await;
    let path = file(
        &env,
        "bad.csv",
        &format!(
            "kind,region_id,instance_id\n\
             decommission,{REGION},{}\n\
             decommission,{REGION},web-1\n\
             reboot,{REGION},{}\n",
            inst(0),
            inst(0)
        ),
    );
    let (code, stdout, stderr) = env.run_cli(&["send", "--from-file", &path]).await;
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("bad.csv: line 3: instance_id:"), "{stderr}");
    assert!(stderr.contains("bad.csv: line 4: kind:"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    // Not even a connection was made: no worker runs here, and the command
    // exchange was never declared.
    assert!(
        env.list("exchanges", &["name"])
            .await
            .iter()
            .all(|e| e[0] != "lifecycle.commands")
    );
}
