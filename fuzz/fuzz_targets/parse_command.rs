//! Command parsing must never panic, whatever the bytes and properties, and
//! every accepted command must survive a round trip through its JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifecycle_worker::command::{CommandKind, Envelope, Policy, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = if selector & 1 == 0 {
        CommandKind::Decommission
    } else {
        CommandKind::LeakAlert
    };
    let content_type = match (selector >> 1) & 3 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/json; charset=utf-8"),
        _ => Some("text/plain"),
    };
    let message_id = (selector & 8 != 0).then_some("fuzz-message-id");
    let mut policy = Policy::default();
    policy.known_accounts.insert("1234567890".into());
    let envelope = Envelope {
        kind,
        body,
        content_type,
        message_id,
    };
    if let Ok(command) = parse(&envelope, &policy) {
        let json = command.to_json().expect("an accepted command serializes");
        let again = Envelope {
            kind,
            body: json.as_bytes(),
            content_type: Some("application/json"),
            message_id: None,
        };
        assert_eq!(parse(&again, &policy).as_ref(), Ok(&command));
    }
});
