//! The Prometheus text exposition format (version 0.0.4), as much of it as the server needs.
//!
//! A scrape body is a sequence of metric families. Each starts with `# HELP name text` and
//! `# TYPE name counter|gauge` and is followed by all its samples, one per line:
//! `name{label="value",...} number`. Label values escape `\`, `"` and newlines; help text
//! escapes `\` and newlines. Counters end in `_total` and only grow (they restart at zero
//! with the server). See <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::fmt::{Display, Write};

/// The `Content-Type` of a body in this format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Kind of a metric family.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// A scrape body being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts the family `name`: its samples must follow before the next family starts.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub(crate) fn sample<L: AsRef<str>>(
        &mut self,
        name: &str,
        labels: &[(&str, L)],
        value: impl Display,
    ) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, label_value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(label), "label name {label}");
                if index > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                push_escaped(&mut self.text, label_value.as_ref());
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// The finished body.
    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

/// Metric and label names: `[a-zA-Z_][a-zA-Z0-9_]*` (ours never need the `:` of recording
/// rules).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn push_escaped(text: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_follow_the_text_format() {
        let mut body = Exposition::default();
        body.family("ringlog_x_total", Kind::Counter, "Things.\nAnd a \\ slash");
        body.sample("ringlog_x_total", &[] as &[(&str, &str)], 3);
        body.sample(
            "ringlog_x_total",
            &[("group", "a\"b\\c\nd"), ("partition", "7")],
            -1,
        );
        body.family("ringlog_y", Kind::Gauge, "A level.");
        body.sample("ringlog_y", &[("topic", "t")], 2.5);
        assert_eq!(
            body.into_text(),
            "# HELP ringlog_x_total Things.\\nAnd a \\\\ slash\n\
             # TYPE ringlog_x_total counter\n\
             ringlog_x_total 3\n\
             ringlog_x_total{group=\"a\\\"b\\\\c\\nd\",partition=\"7\"} -1\n\
             # HELP ringlog_y A level.\n\
             # TYPE ringlog_y gauge\n\
             ringlog_y{topic=\"t\"} 2.5\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("ringlog_partition_size_bytes"));
        assert!(valid_name("_x9"));
        assert!(!valid_name("9x"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
