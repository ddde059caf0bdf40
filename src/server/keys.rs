//! The keys `ebsnap serve` accepts (`serve --keys FILE`, reloaded on SIGHUP): each an
//! access key id and secret that clients sign with, a role (what the key may do) and an
//! owner (whose snapshots it sees). See docs/server.md, "Keys and roles".
//!
//! The file holds secrets, so it is read only if no one but its owner (this user or
//! root) can read or change it, as OpenSSH treats a private key; and no secret ever
//! reaches a log line, an error or a `Debug` output.

use super::sigv4::Credentials;
use super::OWNER_ID;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What a key may do (docs/server.md, "Roles").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, on every owner's snapshots.
    Admin,
    /// Append-only: back up and restore, never delete a snapshot or ebsnap's tags.
    Backup,
    /// List, get and describe.
    Read,
}

/// One accepted key. `Debug` shows the id, never the secret.
#[derive(Clone)]
pub struct Key {
    pub credentials: Credentials,
    pub role: Role,
    /// The 12-digit account id whose snapshots the key sees and starts.
    pub owner: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("access_key_id", &self.credentials.access_key_id)
            .field("role", &self.role)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The key of `EBSNAP_ACCESS_KEY_ID`/`EBSNAP_SECRET_ACCESS_KEY`: an admin, owner
    /// [`OWNER_ID`] (the owner of everything before keys had owners).
    pub fn admin(credentials: Credentials) -> Key {
        Key {
            credentials,
            role: Role::Admin,
            owner: OWNER_ID.to_owned(),
        }
    }
}

/// A keys file that cannot be used, with the file (and the line and key) at fault.
#[derive(Debug, thiserror::Error)]
#[error("keys file {path}{place}: {message}")]
pub struct KeysError {
    path: PathBuf,
    /// `:LINE` or `:LINE: KEY`, where known.
    place: String,
    message: String,
}

/// The keys file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    key: Vec<toml::Spanned<Entry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    access_key_id: toml::Spanned<String>,
    secret_access_key: toml::Spanned<String>,
    role: Role,
    owner: toml::Spanned<String>,
}

/// A field at fault: its name, where it is, and why.
type Fault = (&'static str, std::ops::Range<usize>, String);

/// A set of keys, by access key id.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    by_id: HashMap<String, Arc<Key>>,
}

impl KeySet {
    /// One key.
    pub fn single(key: Key) -> KeySet {
        let mut set = KeySet::default();
        set.by_id
            .insert(key.credentials.access_key_id.clone(), Arc::new(key));
        set
    }

    /// The key with this access key id.
    pub fn get(&self, access_key_id: &str) -> Option<&Arc<Key>> {
        self.by_id.get(access_key_id)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<Key>> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Reads `text`, the contents of the keys file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<KeySet, KeysError> {
        let at = |span: Option<std::ops::Range<usize>>, key: &str, message: &str| {
            keys_error(path, text, span, key, message)
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| at(e.span(), "", e.message()))?;
        let file: File = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = crate::tomlfile::key_path(e.path());
            let inner = e.into_inner();
            at(inner.span(), &key, inner.message())
        })?;
        let mut set = KeySet::default();
        for (n, entry) in file.key.into_iter().enumerate() {
            let name = format!("key[{n}]");
            let id_span = entry.get_ref().access_key_id.span();
            let key = checked(entry.into_inner())
                .map_err(|(field, span, why)| at(Some(span), &format!("{name}.{field}"), &why))?;
            let id = key.credentials.access_key_id.clone();
            if set.by_id.insert(id.clone(), Arc::new(key)).is_some() {
                let why = format!("access_key_id {id} is given twice");
                return Err(at(Some(id_span), &format!("{name}.access_key_id"), &why));
            }
        }
        Ok(set)
    }

    /// Adds `key` (the environment's admin key) to a set read from `path`.
    fn with(mut self, key: &Key, path: &Path) -> Result<KeySet, KeysError> {
        let id = &key.credentials.access_key_id;
        if self.by_id.contains_key(id) {
            let message = format!("access_key_id {id} is also EBSNAP_ACCESS_KEY_ID's");
            return Err(keys_error(path, "", None, "", &message));
        }
        self.by_id.insert(id.clone(), Arc::new(key.clone()));
        Ok(self)
    }
}

/// An entry checked: a non-empty id and secret, a 12-digit owner.
fn checked(entry: Entry) -> Result<Key, Fault> {
    let (id, secret, owner) = (&entry.access_key_id, &entry.secret_access_key, &entry.owner);
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    // A '/' would end the id early in a SigV4 Credential (ID/date/region/...).
    if !printable(id.get_ref()) || id.get_ref().contains('/') {
        let why = "an access key id is printable ASCII, without spaces or '/'";
        return Err(("access_key_id", id.span(), why.to_owned()));
    }
    if secret.get_ref().is_empty() {
        return Err((
            "secret_access_key",
            secret.span(),
            "the secret is empty".into(),
        ));
    }
    let digits = owner.get_ref().bytes().all(|b| b.is_ascii_digit());
    if owner.get_ref().len() != 12 || !digits {
        let why = format!(
            "an owner is a 12-digit account id, not {:?}",
            owner.get_ref()
        );
        return Err(("owner", owner.span(), why));
    }
    Ok(Key {
        credentials: Credentials {
            access_key_id: entry.access_key_id.into_inner(),
            secret_access_key: entry.secret_access_key.into_inner(),
        },
        role: entry.role,
        owner: entry.owner.into_inner(),
    })
}

fn keys_error(
    path: &Path,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    key: &str,
    message: &str,
) -> KeysError {
    let mut place = span.map_or(String::new(), |s| {
        format!(":{}", crate::tomlfile::line_of(text, s.start))
    });
    if !key.is_empty() {
        place += &format!(": {key}");
    }
    // toml's messages quote the offending text; on a line holding a secret that text
    // could be the secret, so only the first line (toml's summary) is kept.
    let message = message.lines().next().unwrap_or("").to_owned();
    KeysError {
        path: path.to_owned(),
        place,
        message,
    }
}

/// The keys file's text, if only its owner can read or change it and that owner is
/// this user or root. Checked on the descriptor that is read, so the file cannot be
/// swapped between the check and the read.
pub fn read_private(path: &Path) -> Result<String, KeysError> {
    use std::os::unix::fs::MetadataExt;
    let fail = |message: String| keys_error(path, "", None, "", &message);
    crate::sys::read_checked(
        path,
        |e| fail(e.to_string()),
        |meta| match exposed(meta.uid(), meta.mode(), crate::sys::euid()) {
            Some(why) => Err(fail(why)),
            None => Ok(()),
        },
    )
}

/// Why a keys file of owner `uid` and `mode` is not private to user `me`, if it is not.
pub fn exposed(uid: u32, mode: u32, me: u32) -> Option<String> {
    if uid != me && uid != 0 {
        return Some(format!(
            "it belongs to uid {uid}; it holds secrets and must belong to this user or to root"
        ));
    }
    (mode & 0o077 != 0).then(|| {
        format!(
            "it holds secrets but its group or others have access (mode {:03o}): chmod 600 it",
            mode & 0o777
        )
    })
}

/// The keys a server accepts now: those of the keys file, if any, and the
/// environment's admin key. Replaced whole on reload: a request looks its key up once,
/// in the set of the moment, and a request that began under the old set finishes under it.
#[derive(Debug)]
pub struct Keys {
    file: Option<PathBuf>,
    admin: Option<Key>,
    current: RwLock<Arc<KeySet>>,
}

impl Keys {
    /// The keys of `file` (if given) and `admin` (if given); at least one key.
    pub fn load(file: Option<PathBuf>, admin: Option<Key>) -> Result<Keys, KeysError> {
        let set = read_set(file.as_deref(), admin.as_ref())?;
        Ok(Keys {
            file,
            admin,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// A server with one (admin) key.
    pub fn single(admin: Key) -> Keys {
        Keys {
            file: None,
            current: RwLock::new(Arc::new(KeySet::single(admin.clone()))),
            admin: Some(admin),
        }
    }

    /// The key set of the moment.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The keys file, if there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the keys file again: a valid one replaces the set at once (returning its
    /// size), an invalid one leaves the set as it was.
    pub fn reload(&self) -> Result<usize, KeysError> {
        let set = read_set(self.file.as_deref(), self.admin.as_ref())?;
        let count = set.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(count)
    }
}

fn read_set(file: Option<&Path>, admin: Option<&Key>) -> Result<KeySet, KeysError> {
    let Some(path) = file else {
        return Ok(admin.cloned().map(KeySet::single).unwrap_or_default());
    };
    let set = KeySet::parse(path, &read_private(path)?)?;
    let set = match admin {
        Some(key) => set.with(key, path)?,
        None => set,
    };
    if set.is_empty() {
        return Err(keys_error(path, "", None, "", "it holds no [[key]]"));
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
