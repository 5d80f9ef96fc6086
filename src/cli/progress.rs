//! Progress of long transfers and conversions: one bar per blob or layer on a terminal,
//! a log line per event otherwise (so logs of non-interactive runs stay readable).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use super::format;

/// Per-blob progress: bars on a terminal, one log line per blob event otherwise.
pub(crate) struct Reporter {
    bars: Option<(
        indicatif::MultiProgress,
        Mutex<HashMap<String, indicatif::ProgressBar>>,
    )>,
}

impl Reporter {
    pub(crate) fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            bars: tty.then(|| (indicatif::MultiProgress::new(), Mutex::new(HashMap::new()))),
        }
    }

    pub(crate) fn start(&self, label: String, key: &str, size: u64, offset: u64) {
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(indicatif::ProgressBar::new(size));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:<26} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
                    )
                    .expect("invariant: valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(label);
                bar.set_position(offset);
                bars.lock()
                    .expect("invariant: not poisoned")
                    .insert(key.to_owned(), bar);
            }
            None if offset > 0 && offset < size => {
                eprintln!(
                    "{label}: resuming at {} of {}",
                    format::size(offset),
                    format::size(size)
                );
            }
            None => {}
        }
    }

    pub(crate) fn advance(&self, key: &str, n: u64) {
        if let Some((_, bars)) = &self.bars
            && let Some(b) = bars.lock().expect("invariant: not poisoned").get(key)
        {
            b.inc(n);
        }
    }

    pub(crate) fn message(&self, key: &str, label: &str, msg: &str) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(b) = bars.lock().expect("invariant: not poisoned").get(key) {
                    b.set_message(msg.to_owned());
                }
            }
            None => eprintln!("{label}: {msg}"),
        }
    }

    pub(crate) fn finish(&self, key: &str, label: &str, msg: &str) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(b) = bars.lock().expect("invariant: not poisoned").get(key) {
                    b.set_position(b.length().unwrap_or(0));
                    b.finish_with_message(msg.to_owned());
                }
            }
            None => eprintln!("{label}: {msg}"),
        }
    }
}
