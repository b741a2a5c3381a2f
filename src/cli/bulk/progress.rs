//! Progress of a bulk run on stderr: a bar on a terminal, a plain line every
//! few seconds otherwise (a CI log or `tee` gets lines, not redraws).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where a run stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Rows in the file.
    pub total: u64,
    /// Confirmed by the broker (this run and earlier ones).
    pub published: u64,
    /// With a terminal event.
    pub finished: u64,
    /// Finished but not well (failed, partially failed, rejected).
    pub bad: u64,
}

impl Counts {
    fn line(&self) -> String {
        format!(
            "{} of {} finished ({} not ok), {} published",
            self.finished, self.total, self.bad, self.published
        )
    }
}

/// The progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    last: Option<Instant>,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:32}] {pos}/{len} finished  {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, last: None }
    }

    /// Shows `counts` (plain lines: at most every few seconds).
    pub fn update(&mut self, counts: Counts) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(counts.finished);
                bar.set_message(format!(
                    "{} published, {} not ok",
                    counts.published, counts.bad
                ));
            }
            None => {
                if self.last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    self.last = Some(Instant::now());
                    eprintln!("progress: {}", counts.line());
                }
            }
        }
    }

    /// Clears the bar (or prints a last plain line) before the summary.
    pub fn finish(&mut self, counts: Counts) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("progress: {}", counts.line()),
        }
    }

    /// Prints a line without tearing the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}
