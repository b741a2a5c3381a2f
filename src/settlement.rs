//! How a delivery is settled, as a plan: which messages go out (step events,
//! the terminal event, a reply, a retry copy, a dead letter, each with its
//! headers) and how the delivery ends (acknowledged once every message is
//! confirmed, or put back on its queue unchanged).
//!
//! Pure: [`plan`] maps what processing produced to a [`Plan`]; the broker code
//! only executes it (`worker::settle`). Like vector's AMQP source, which maps a
//! delivery's status to ack or reject in a few lines, the whole "nothing is
//! lost" argument is one match below:
//!
//! | processing produced | messages | ending |
//! | --- | --- | --- |
//! | a rejection | dead letter, `command.rejected`, reply | ack after confirms |
//! | completed, succeeded / already done / dry run | step events, `command.completed`, reply | ack after confirms |
//! | completed, failed / partially failed | step events, dead letter, `command.completed`, reply | ack after confirms |
//! | stopped: redeliver to stage S | step events, retry copy to S (one more redelivery) | ack after confirms |
//! | stopped: park in stage S | step events, retry copy to S (one more park) | ack after confirms |
//! | stopped: requeue (shutdown) | none | requeue unchanged |

use crate::auth::seal::Sealer;
use crate::broker::publisher::Outgoing;
use crate::broker::topology::Topology;
use crate::command::{Command, CommandKind, Rejection};
use crate::decision::{Counters, Stop};
use crate::event::{Event, Outcome};
use crate::playbook::{Fate, Report};
use crate::retry::Stopped;
use crate::trace_context::TraceContext;
use lapin::BasicProperties;
use messages::DeadLetterInfo;

pub mod messages;

/// What processing a delivery produced.
#[derive(Debug)]
pub enum Processed<'a> {
    /// The command could not be authenticated, parsed or validated.
    Rejected {
        /// The queue's kind.
        kind: CommandKind,
        /// Why.
        rejection: &'a Rejection,
    },
    /// The command was carried out (completely or until it stopped).
    Ran {
        /// The command.
        command: &'a Command,
        /// What its playbook produced.
        report: &'a Report,
        /// The retry counters it arrived with.
        counters: Counters,
    },
}

/// The delivery as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Delivered<'a> {
    /// The body, byte for byte.
    pub body: &'a [u8],
    /// Its AMQP properties and headers.
    pub props: &'a BasicProperties,
    /// The command queue it came from.
    pub source_queue: &'a str,
    /// For a signed command that was authentic and in time: seals its retry
    /// copy and its dead letter (`auth::seal`).
    pub sealer: Option<&'a Sealer>,
}

/// How the delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Acknowledge once every message of the plan is confirmed.
    Ack,
    /// Put the delivery back on its queue as it was; nothing is published.
    Requeue,
}

/// What the settlement amounts to, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Rejected, with the reason code.
    Rejected(&'static str),
    /// Completed with this outcome.
    Completed(Outcome),
    /// Sent to a retry stage: `transient` or `credentials`, and the stage.
    Redelivered {
        /// `transient` or `credentials`.
        reason: &'static str,
        /// The retry stage (0-based).
        stage: usize,
    },
    /// Put back on its queue (shutdown).
    Requeued,
}

/// The settlement of one delivery.
#[derive(Debug)]
pub struct Plan {
    /// Published in this order, every one confirmed before the ack.
    pub messages: Vec<Outgoing>,
    /// How the delivery ends.
    pub ending: Ending,
    /// What it amounts to.
    pub summary: Summary,
}

/// Plans the settlement of one delivery.
pub fn plan(
    processed: &Processed<'_>,
    delivered: Delivered<'_>,
    topology: &Topology,
    trace: &TraceContext,
) -> Plan {
    let names = &topology.names;
    match processed {
        Processed::Rejected { kind, rejection } => {
            let event = Event::rejected(*kind, rejection);
            let summary: String = rejection
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.problem))
                .collect::<Vec<_>>()
                .join("; ");
            let reason = rejection.reason.as_str();
            let mut messages = vec![
                dead_letter(delivered, names, "rejected", reason, &summary, trace),
                messages::event(&names.event_exchange, &event, trace),
            ];
            messages.extend(messages::reply(delivered.props, &event, trace));
            Plan {
                messages,
                ending: Ending::Ack,
                summary: Summary::Rejected(reason),
            }
        }
        Processed::Ran {
            command,
            report,
            counters,
        } => ran(command, report, *counters, delivered, topology, trace),
    }
}

fn ran(
    command: &Command,
    report: &Report,
    counters: Counters,
    delivered: Delivered<'_>,
    topology: &Topology,
    trace: &TraceContext,
) -> Plan {
    let names = &topology.names;
    let step_events = || {
        report
            .events
            .iter()
            .map(|e| messages::event(&names.event_exchange, e, trace))
    };
    match &report.fate {
        Fate::Completed(outcome) => {
            let outcome = *outcome;
            let terminal = report.completed_event(command, outcome);
            let mut messages: Vec<Outgoing> = step_events().collect();
            if matches!(outcome, Outcome::Failed | Outcome::PartiallyFailed) {
                let (code, message) = report
                    .first_error
                    .as_ref()
                    .map_or(("Failed", "the command failed"), |e| {
                        (e.code.as_str(), e.message.as_str())
                    });
                messages.push(dead_letter(
                    delivered,
                    names,
                    outcome.as_str(),
                    code,
                    message,
                    trace,
                ));
            }
            messages.push(messages::event(&names.event_exchange, &terminal, trace));
            messages.extend(messages::reply(delivered.props, &terminal, trace));
            Plan {
                messages,
                ending: Ending::Ack,
                summary: Summary::Completed(outcome),
            }
        }
        Fate::Stopped(Stopped { stop, .. }) => {
            let (reason, stage, next) = match *stop {
                Stop::Requeue => {
                    return Plan {
                        messages: Vec::new(),
                        ending: Ending::Requeue,
                        summary: Summary::Requeued,
                    };
                }
                Stop::Redeliver { stage } => (
                    "transient",
                    stage,
                    Counters {
                        redeliveries: counters.redeliveries.saturating_add(1),
                        ..counters
                    },
                ),
                Stop::Park { stage } => (
                    "credentials",
                    stage,
                    Counters {
                        parks: counters.parks.saturating_add(1),
                        ..counters
                    },
                ),
            };
            let mut messages: Vec<Outgoing> = step_events().collect();
            messages.push(messages::retry_copy(
                &topology.stage(stage),
                delivered,
                next,
                &report.attempts,
                trace,
            ));
            Plan {
                messages,
                ending: Ending::Ack,
                summary: Summary::Redelivered { reason, stage },
            }
        }
    }
}

fn dead_letter(
    delivered: Delivered<'_>,
    names: &crate::settings::TopologySettings,
    reason: &str,
    code: &str,
    message: &str,
    trace: &TraceContext,
) -> Outgoing {
    messages::dead_letter(
        &names.dead_letter_exchange,
        delivered.body,
        delivered.props,
        &DeadLetterInfo {
            reason,
            code,
            message,
            source_queue: delivered.source_queue,
        },
        delivered.sealer,
        trace,
    )
}

#[cfg(test)]
#[path = "settlement/tests.rs"]
mod tests;
