//! Progress on long work (`bench`, `export create|download`, `reporting
//! rebuild`, `reconcile`), drawn on stderr and only when stderr is a
//! terminal: a script or a test capturing stderr sees nothing of it, and
//! stdout stays the command's answer alone.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TICK: Duration = Duration::from_millis(120);

fn drawn() -> bool {
    std::io::stderr().is_terminal()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A bar counting `len` steps of `message`.
pub fn bar(len: u64, message: &str) -> ProgressBar {
    if !drawn() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(style(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ));
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(TICK);
    bar
}

/// A spinner for one call whose length nobody knows in advance.
pub fn spinner(message: &str) -> ProgressBar {
    if !drawn() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(style("{spinner} {msg} [{elapsed_precise}]"));
    spinner.set_message(message.to_owned());
    spinner.enable_steady_tick(TICK);
    spinner
}

/// A spinner counting bytes received; its message names the current file.
pub fn bytes(message: &str) -> ProgressBar {
    if !drawn() {
        return ProgressBar::hidden();
    }
    let counter = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    counter.set_style(style(
        "{spinner} {msg} {bytes} ({bytes_per_sec}) [{elapsed_precise}]",
    ));
    counter.set_message(message.to_owned());
    counter.enable_steady_tick(TICK);
    counter
}
