//! `Secret<T>`: a value that must never reach a log line or an error message.

use std::fmt;

/// Signing secrets that have been printed in portcullis's example configurations and
/// documentation. Anyone can forge tokens with them, so `check` and `serve` refuse them.
pub const PUBLISHED_SECRETS: &[&str] = &[
    "change-me-to-32-or-more-random-bytes!",
    "local-development-secret-32-bytes!!",
];

/// Passwords that have been printed in portcullis's examples: a users file may not accept them.
pub const PUBLISHED_PASSWORDS: &[&str] = &["correct horse battery staple"];

/// Password hashes that have shipped in the example users file (recognized without hashing).
pub const PUBLISHED_PASSWORD_HASHES: &[&str] = &[
    "$argon2id$v=19$m=19456,t=2,p=1$m3WahXG8U/sT5UwOxZqhEg$M162uO5UQrEMyyHAAnIYNLBKjgoD0JZ+pSObNz+avDQ",
];

/// Wraps keys, passwords, tokens and credential-bearing URLs. `Debug` and `Display` print
/// `[redacted]`; the value is reachable only through [`Secret::expose`], which makes every
/// use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The wrapped value. Call sites should be few and obvious.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
    }
}

#[cfg(test)]
mod published_tests {
    use super::*;

    /// Every signing secret written in the shipped configurations and the README is either a
    /// required `${VAR}` (no default) or listed above, so that `check` refuses it.
    #[test]
    fn shipped_examples_hold_no_usable_secret() {
        let shipped = [
            (
                "portcullis.example.yaml",
                include_str!("../config/portcullis.example.yaml"),
            ),
            ("portcullis.yaml", include_str!("../config/portcullis.yaml")),
            ("README.md", include_str!("../README.md")),
        ];
        for (name, text) in shipped {
            for line in text.lines() {
                let Some((_, rest)) = line.split_once("secret: \"") else {
                    continue;
                };
                let value = rest.split('"').next().unwrap_or(rest);
                let required_var = value.starts_with("${") && !value.contains(":-");
                assert!(
                    required_var || PUBLISHED_SECRETS.contains(&value),
                    "{name}: the secret {value:?} is neither a required variable nor refused"
                );
            }
        }
    }
}
