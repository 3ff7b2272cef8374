//! The users file: ids, emails, argon2id PHC strings, roles, disabled, `mfa`.
//! Reloaded when it changes; an invalid new version keeps the last good one and logs an error.

use crate::secret::Secret;
use arc_swap::ArcSwap;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersWire {
    #[serde(default)]
    users: BTreeMap<String, UserWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserWire {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    disabled: bool,
    /// `required` or `optional` (the default).
    mfa: Option<MfaWire>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum MfaWire {
    Required,
    Optional,
}

/// One account.
#[derive(Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: Secret<String>,
    pub roles: Vec<String>,
    pub disabled: bool,
    /// `mfa: required`: the user signs in with a code, and enrols before anything else.
    pub mfa_required: bool,
}

/// A parsed users file.
#[derive(Default)]
pub struct Users {
    by_email: HashMap<String, Arc<User>>,
    by_id: HashMap<String, Arc<User>>,
    /// Some user has `mfa: required` (checked per request only then).
    any_mfa_required: bool,
}

/// Why the users file could not be taken. The variants differ in whose fault it is, which
/// decides what a message names first.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file `users.file` names cannot be read: the config key is at fault, so callers put
    /// the config file's name in front.
    #[error("users.file: cannot read {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but its content is wrong; the message names that file and the key
    /// (`users.alice.password`), so it stands on its own.
    #[error("{}: {key}: {message}", .file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// Parse users-file text; errors name the file and the key (`users.alice.password`).
pub fn parse(text: &str, file: &Path) -> Result<Users, UsersError> {
    let invalid = |key: String, message: &str| UsersError::Invalid {
        file: file.to_path_buf(),
        key,
        message: message.to_string(),
    };
    let de = serde_yaml::Deserializer::from_str(text);
    let wire: UsersWire = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        invalid(path, msg.split(" at line ").next().unwrap_or(&msg))
    })?;
    let mut users = Users::default();
    for (id, u) in wire.users {
        let key = format!("users.{id}");
        if id.trim().is_empty() {
            return Err(invalid("users".into(), "a user id must not be empty"));
        }
        if id.chars().any(char::is_control) {
            return Err(invalid(
                "users".into(),
                "a user id must not contain control characters",
            ));
        }
        match argon2::PasswordHash::new(&u.password) {
            Ok(h) if h.algorithm.as_str() == "argon2id" => {
                if is_published_password(&u.password, &h) {
                    return Err(invalid(
                        format!("{key}.password"),
                        "is a password published in portcullis's examples; set a new one with `portcullis hash-password`",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    format!("{key}.password"),
                    "not an argon2id PHC string (create one with `portcullis hash-password`)",
                ))
            }
        }
        let email = u.email.trim().to_ascii_lowercase();
        if !email.contains('@') {
            return Err(invalid(format!("{key}.email"), "not an email address"));
        }
        let user = Arc::new(User {
            id: id.clone(),
            email: email.clone(),
            password_hash: Secret::new(u.password),
            roles: u.roles,
            disabled: u.disabled,
            mfa_required: u.mfa == Some(MfaWire::Required),
        });
        if users.by_email.insert(email.clone(), user.clone()).is_some() {
            return Err(invalid(
                format!("{key}.email"),
                &format!("{email} belongs to two users"),
            ));
        }
        users.any_mfa_required |= user.mfa_required;
        users.by_id.insert(id, user);
    }
    Ok(users)
}

/// Hashes already verified not to match a published password, so that a reload verifies only
/// the hashes that changed (one argon2 verification each).
static CHECKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Does this hash accept a password printed in portcullis's examples?
fn is_published_password(phc: &str, hash: &argon2::PasswordHash<'_>) -> bool {
    use argon2::PasswordVerifier;
    if crate::secret::PUBLISHED_PASSWORD_HASHES.contains(&phc) {
        return true;
    }
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if checked.as_ref().is_some_and(|c| c.contains(phc)) {
        return false;
    }
    let hit = crate::secret::PUBLISHED_PASSWORDS.iter().any(|p| {
        argon2::Argon2::default()
            .verify_password(p.as_bytes(), hash)
            .is_ok()
    });
    if !hit {
        checked
            .get_or_insert_with(HashSet::new)
            .insert(phc.to_string());
    }
    hit
}

/// The live user directory.
pub struct UserDirectory {
    path: PathBuf,
    current: ArcSwap<Users>,
    seen: Mutex<Option<SystemTime>>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl UserDirectory {
    /// Load the file. A missing file is an error only when `required`.
    pub fn load(path: &Path, required: bool) -> Result<Self, UsersError> {
        let users = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text, path)?,
            Err(source) if required || source.kind() != std::io::ErrorKind::NotFound => {
                return Err(UsersError::Unreadable {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(_) => Users::default(),
        };
        Ok(UserDirectory {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(users),
            seen: Mutex::new(mtime(path)),
        })
    }

    pub fn by_email(&self, email: &str) -> Option<Arc<User>> {
        self.current
            .load()
            .by_email
            .get(&email.trim().to_ascii_lowercase())
            .cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<User>> {
        self.current.load().by_id.get(id).cloned()
    }

    /// Every user id in the file.
    pub fn ids(&self) -> Vec<String> {
        self.current.load().by_id.keys().cloned().collect()
    }

    /// Does some user have `mfa: required`?
    pub fn any_mfa_required(&self) -> bool {
        self.current.load().any_mfa_required
    }

    pub fn len(&self) -> usize {
        self.current.load().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reload when the file's modification time changed. An invalid version is logged and
    /// the last good one stays.
    pub fn reload_if_changed(&self) -> Reload {
        let now = mtime(&self.path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))
            .and_then(|t| parse(&t, &self.path).map_err(|e| e.to_string()))
        {
            Ok(users) => {
                tracing::info!(target: "portcullis::users", users = users.by_id.len(), "users file reloaded");
                let old = self.current.swap(Arc::new(users));
                let new = self.current.load();
                let ended = old
                    .by_id
                    .iter()
                    .filter(|(id, was)| match new.by_id.get(*id) {
                        None => true,
                        Some(now) => now.disabled && !was.disabled,
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                Reload::Loaded { ended }
            }
            Err(e) => {
                tracing::error!(target: "portcullis::users", error = %e, "users file invalid; keeping the last good version");
                Reload::Invalid
            }
        }
    }
}

/// What a look at the users file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Invalid,
    /// A new version is in use; `ended` are the users it removed or disabled.
    Loaded {
        ended: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn parses_and_names_bad_keys() {
        let ok = format!("users:\n  alice: {{ email: Alice@Example.com, password: \"{HASH}\", roles: [admin] }}\n");
        let u = parse(&ok, Path::new("u.yaml")).unwrap();
        assert_eq!(u.by_email["alice@example.com"].roles, vec!["admin"]);
        let e = parse(
            "users:\n  bob: { email: b@x, password: plain }\n",
            Path::new("u.yaml"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.starts_with("u.yaml: users.bob.password: not an argon2id"),
            "{e}"
        );
        let e = parse(
            "users:\n  bob: { email: b@x, pasword: x }\n",
            Path::new("u.yaml"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("users.bob") && e.contains("pasword"), "{e}");
    }

    #[test]
    fn published_passwords_are_refused() {
        for published in crate::secret::PUBLISHED_PASSWORD_HASHES {
            let text =
                format!("users:\n  alice: {{ email: a@x.test, password: \"{published}\" }}\n");
            let e = parse(&text, Path::new("u.yaml")).err().unwrap().to_string();
            assert!(
                e.starts_with("u.yaml: users.alice.password: is a password published"),
                "{e}"
            );
        }
        // The same password hashed again with another salt.
        let rehashed = crate::auth::password::hash_password(crate::secret::PUBLISHED_PASSWORDS[0]);
        let text = format!("users:\n  bob: {{ email: b@x.test, password: \"{rehashed}\" }}\n");
        let e = parse(&text, Path::new("u.yaml")).err().unwrap().to_string();
        assert!(
            e.contains("users.bob.password: is a password published"),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_is_the_config_keys_fault() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing.yaml");
        assert!(UserDirectory::load(&p, false).unwrap().is_empty());
        let e = UserDirectory::load(&p, true).err().unwrap();
        assert!(matches!(e, UsersError::Unreadable { .. }), "{e}");
        assert!(e.to_string().starts_with("users.file: cannot read "), "{e}");
    }

    #[test]
    fn invalid_reload_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.yaml");
        std::fs::write(
            &p,
            format!("users:\n  alice: {{ email: a@x.test, password: \"{HASH}\" }}\n"),
        )
        .unwrap();
        let d = UserDirectory::load(&p, true).unwrap();
        std::fs::write(&p, "users: [not, a, map]\n").unwrap();
        // Force a different mtime even on coarse file systems.
        *d.seen.lock().unwrap() = None;
        assert_eq!(d.reload_if_changed(), Reload::Invalid);
        assert!(d.by_email("a@x.test").is_some());
        std::fs::write(
            &p,
            format!("users:\n  bob: {{ email: b@x.test, password: \"{HASH}\" }}\n"),
        )
        .unwrap();
        *d.seen.lock().unwrap() = None;
        assert_eq!(
            d.reload_if_changed(),
            Reload::Loaded {
                ended: vec!["alice".into()]
            }
        );
        assert!(d.by_email("a@x.test").is_none() && d.by_id("bob").is_some());
    }
}
