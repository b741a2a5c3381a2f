use super::*;

fn defaults() -> Defaults {
    Defaults {
        kind: None,
        region: None,
        dry_run: false,
        id_prefix: "bulk".into(),
    }
}

fn csv(text: &str) -> Result<Vec<Row>, Vec<Problem>> {
    read(
        text.as_bytes(),
        Format::Csv,
        &defaults(),
        &Policy::default(),
    )
}

fn body(row: &Row) -> Value {
    serde_json::from_slice(&row.body).expect("json body")
}

const CSV: &str = "\
kind,region_id,instance_id,activation_id,quarantine,reason
decommission,cn-hangzhou,mi-hz01web0001,,,offboarding ticket 7
\"leak-alert\",cn-beijing,,4ECEEE12-56F1-4FBC-9AB1-890F12340002,,\"two
lines\"
leak-alert,cn-beijing,,4ECEEE12-56F1-4FBC-9AB1-890F12340001,suspicious,
";

#[test]
fn csv_rows_become_the_bodies_the_worker_parses() {
    let rows = csv(CSV).expect("valid");
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].line, rows[0].kind), (2, CommandKind::Decommission));
    assert_eq!((rows[1].line, rows[1].kind), (3, CommandKind::LeakAlert));
    assert_eq!(
        (rows[2].line, rows[2].kind),
        (5, CommandKind::LeakAlert),
        "after a quoted newline"
    );
    let first = body(&rows[0]);
    assert_eq!(first["instance_id"], "mi-hz01web0001");
    assert_eq!(first["reason"], "offboarding ticket 7");
    assert_eq!(first["command_id"], rows[0].command_id.as_str());
    assert!(
        first.get("activation_id").is_none(),
        "empty cells are absent"
    );
    assert!(
        first.get("kind").is_none(),
        "kind is the routing key, not a field"
    );
    assert_eq!(body(&rows[1])["reason"], "two\nlines");
    assert_eq!(body(&rows[2])["quarantine"], "suspicious");
}

#[test]
fn csv_problems_name_the_line_they_start_on() {
    let no_activation = CSV.replace("4ECEEE12-56F1-4FBC-9AB1-890F12340001", "");
    let problems = csv(&no_activation).expect_err("invalid");
    assert_eq!(
        (problems[0].line, problems[0].field.as_str()),
        (5, "activation_id")
    );
    let short = CSV.replace(
        "leak-alert,cn-beijing,,4ECEEE12-56F1-4FBC-9AB1-890F12340001,suspicious,",
        "leak-alert",
    );
    let problems = csv(&short).expect_err("a short record");
    assert_eq!((problems[0].line, problems[0].field.as_str()), (5, "row"));
}

#[test]
fn derived_ids_follow_the_content_not_the_line() {
    let rows = csv(CSV).expect("valid");
    let again = csv(CSV).expect("valid");
    assert_eq!(rows, again, "the same file gives the same ids");
    assert!(rows[0].command_id.starts_with("bulk-"));
    assert_eq!(rows[0].command_id.len(), "bulk-".len() + 24);
    assert_ne!(rows[1].command_id, rows[2].command_id);
    // Moving a row keeps its id; changing it gives another.
    let moved = "kind,region_id,instance_id\n\
                 decommission,cn-hangzhou,mi-other\n\
                 decommission,cn-hangzhou,mi-hz01web0001\n";
    let moved = csv(moved).expect("valid");
    let plain = csv("kind,region_id,instance_id\ndecommission,cn-hangzhou,mi-hz01web0001\n")
        .expect("valid");
    assert_eq!(moved[1].command_id, plain[0].command_id);
    assert_ne!(moved[0].command_id, plain[0].command_id);
    // A dry run is another command than the real one.
    let dry = read(
        b"kind,region_id,instance_id\ndecommission,cn-hangzhou,mi-hz01web0001\n",
        Format::Csv,
        &Defaults {
            dry_run: true,
            ..defaults()
        },
        &Policy::default(),
    )
    .expect("valid");
    assert_ne!(dry[0].command_id, plain[0].command_id);
    assert_eq!(body(&dry[0])["dry_run"], true);
}

#[test]
fn a_given_command_id_is_kept() {
    let rows =
        csv("kind,region_id,instance_id,command_id\ndecommission,cn-hangzhou,mi-a1,offboard-42\n")
            .expect("valid");
    assert_eq!(rows[0].command_id, "offboard-42");
}

#[test]
fn every_problem_names_its_line_and_field() {
    let text = "\
kind,region_id,instance_id,all_matches
decommission,cn-hangzhou,mi-ok01,
decommission,cn-hangzhou,not-an-instance,
decommission,us-east-1,mi-ok02,
frobnicate,cn-hangzhou,mi-ok03,
decommission,cn-hangzhou,mi-ok04,maybe
";
    let problems = csv(text).expect_err("invalid");
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        shown
            .iter()
            .any(|p| p.starts_with("line 6: all_matches: \"maybe\" is not true or false")),
        "{shown:#?}"
    );
    let problems = csv(&text.replace(",maybe", ",")).expect_err("invalid");
    let at = |line: u64| {
        problems
            .iter()
            .filter(|p| p.line == line)
            .collect::<Vec<_>>()
    };
    assert!(at(2).is_empty(), "{problems:#?}");
    assert_eq!(at(3)[0].field, "instance_id", "{problems:#?}");
    assert_eq!(at(4)[0].field, "region_id", "{problems:#?}");
    assert_eq!(at(5)[0].field, "kind", "{problems:#?}");
}

#[test]
fn unknown_columns_and_duplicate_rows_are_refused() {
    let problems =
        csv("kind,region,instance_id\ndecommission,cn-hangzhou,mi-a1\n").expect_err("typo");
    assert_eq!(
        (problems[0].line, problems[0].field.as_str()),
        (1, "region")
    );
    assert!(
        problems[0].problem.contains("region_id"),
        "lists the known fields"
    );

    let problems = csv("kind,region_id,instance_id\n\
                        decommission,cn-hangzhou,mi-a1\n\
                        decommission,cn-hangzhou,mi-a2\n\
                        decommission,cn-hangzhou,mi-a1\n")
    .expect_err("duplicate");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 4);
    assert!(problems[0].problem.contains("line 2"), "{}", problems[0]);

    assert_eq!(csv("kind,region_id\n").expect_err("empty")[0].field, "file");
}

#[test]
fn json_lines_with_defaults_from_the_command_line() {
    let text = "\
{\"instance_id\": \"mi-a1\", \"requested_by\": \"ops\"}

{\"instance_id\": \"mi-a2\", \"region_id\": \"cn-shanghai\", \"all_matches\": true}
";
    let d = Defaults {
        kind: Some(CommandKind::Decommission),
        region: Some("cn-beijing".into()),
        ..defaults()
    };
    let rows = read(text.as_bytes(), Format::Jsonl, &d, &Policy::default()).expect("valid");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].line, 3);
    assert_eq!(body(&rows[0])["region_id"], "cn-beijing");
    assert_eq!(body(&rows[1])["region_id"], "cn-shanghai");
    assert_eq!(body(&rows[1])["all_matches"], true);

    let bad = "{\"instance_id\": 7}\n[1]\n{\"kind\": \"decommission\", \"instance\": \"mi-a\"}\nnot json\n";
    let problems = read(bad.as_bytes(), Format::Jsonl, &d, &Policy::default()).expect_err("bad");
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(shown[0], "line 1: instance_id: must be a string");
    assert_eq!(shown[1], "line 2: row: is not a JSON object");
    assert!(
        shown[2].starts_with("line 3: instance: unknown field"),
        "{shown:#?}"
    );
    assert!(
        shown[3].starts_with("line 4: row: is not JSON"),
        "{shown:#?}"
    );
}

#[test]
fn the_format_follows_the_name_then_the_content() {
    assert_eq!(Format::detect(Path::new("a.CSV"), b"{"), Format::Csv);
    assert_eq!(
        Format::detect(Path::new("a.ndjson"), b"kind"),
        Format::Jsonl
    );
    assert_eq!(
        Format::detect(Path::new("hosts"), b"  {\"a\":1}"),
        Format::Jsonl
    );
    assert_eq!(
        Format::detect(Path::new("hosts"), b"kind,region_id"),
        Format::Csv
    );
}

#[test]
fn id_prefixes_follow_the_command_id_rules() {
    assert!(check_id_prefix("offboarding-2026.12").is_ok());
    assert!(check_id_prefix("").is_err());
    assert!(check_id_prefix("has space").is_err());
    assert!(check_id_prefix(&"x".repeat(33)).is_err());
}
