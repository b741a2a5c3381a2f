//! `security.max_command_age_s` and `security.key_scopes`: defaults, and
//! start-up errors that name the key and the bad part.

use super::*;

fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let env = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Settings::load(&[], env)
}

const SIGNED: [(&str, &str); 2] = [
    ("LIFECYCLE__SECURITY__REQUIRE_SIGNED_COMMANDS", "true"),
    ("LIFECYCLE__SECURITY__COMMAND_KEYS", "soc:s1, off:s2"),
];

fn with_scopes(scopes: &str) -> Result<Settings, SettingsError> {
    let mut pairs = SIGNED.to_vec();
    pairs.push(("LIFECYCLE__SECURITY__KEY_SCOPES", scopes));
    load(&pairs)
}

#[test]
fn defaults_are_five_minutes_and_no_scopes() {
    let s = load(&[]).expect("defaults");
    assert_eq!(s.security.max_command_age_s, 300);
    assert!(s.security.key_scopes.is_empty());
    let s = load(&[("LIFECYCLE__SECURITY__MAX_COMMAND_AGE_S", "2")]).expect("2 s");
    assert_eq!(s.security.max_command_age_s, 2);
}

#[test]
fn scopes_load_from_the_environment() {
    let s = with_scopes(
        "soc=leak-alert:*:*, off=decommission:cn-hangzhou:own|decommission:cn-beijing:own",
    )
    .expect("the contract's example");
    let ids: Vec<&str> = s.security.key_scopes.key_ids().collect();
    assert_eq!(ids, ["off", "soc"]);
}

#[test]
fn bad_values_name_the_setting_the_key_and_the_part() {
    let cases = [
        ("soc=leak-alert:*", "\"leak-alert:*\""),
        ("soc=leak-alert:*:*, off=decommision:*:own", "key \"off\""),
        (
            "soc=leak-alert:*:*, off=decommision:*:own",
            "\"decommision\"",
        ),
        ("off=decommission:*:me", "account \"me\""),
        ("soc", "\"soc\" is not key_id="),
    ];
    for (scopes, part) in cases {
        let e = with_scopes(scopes)
            .map(|_| ())
            .expect_err(scopes)
            .to_string();
        assert!(e.contains("security.key_scopes"), "{scopes}: {e}");
        assert!(e.contains(part), "{scopes}: {e}");
    }
    // A key id that no key has: its real key would ask for anything.
    let e = with_scopes("sco=leak-alert:*:*")
        .map(|_| ())
        .expect_err("typo")
        .to_string();
    assert!(
        e.contains("security.key_scopes") && e.contains("\"sco\""),
        "{e}"
    );
    assert!(!e.contains("s1") && !e.contains("s2"), "no secret: {e}");
    // Scopes without signatures would limit nothing.
    let e = load(&[
        ("LIFECYCLE__SECURITY__COMMAND_KEYS", "soc:s1"),
        ("LIFECYCLE__SECURITY__KEY_SCOPES", "soc=leak-alert:*:*"),
    ])
    .map(|_| ())
    .expect_err("unsigned")
    .to_string();
    assert!(e.contains("require_signed_commands"), "{e}");
    for age in ["0", "-1", "five"] {
        let e = load(&[("LIFECYCLE__SECURITY__MAX_COMMAND_AGE_S", age)])
            .map(|_| ())
            .expect_err(age)
            .to_string();
        assert!(e.contains("max_command_age_s"), "{age}: {e}");
    }
}
