//! The config file: `$KCAP_CONFIG`, else `$XDG_CONFIG_HOME/kcap/config.toml`, else
//! `~/.config/kcap/config.toml`. TOML, written with mode 0600 (it holds the token).
//!
//! Only top-level keys of [`super::settings::SETTINGS`] are read; tables (such as `[redact]`,
//! which the redaction module reads) and their contents are left alone, and `kcap config set`
//! keeps them, with every comment, as they were.

use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Value};

use super::settings::{setting, validate, Kind, SETTINGS};

/// Where the config file is (it need not exist).
pub fn config_path() -> PathBuf {
    if let Some(path) = super::non_empty_env("KCAP_CONFIG") {
        return path.into();
    }
    if let Some(dir) = super::non_empty_env("XDG_CONFIG_HOME") {
        return Path::new(&dir).join("kcap").join("config.toml");
    }
    super::home_dir().join(".config/kcap/config.toml")
}

/// A loaded config file: its top-level values, and what was wrong with it.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// Where it was looked for.
    pub path: PathBuf,
    /// Whether it exists.
    pub exists: bool,
    /// Its permission bits, when it exists.
    pub mode: Option<u32>,
    doc: DocumentMut,
    /// The file exists but is not TOML: saving would lose it, so [`ConfigFile::save`] refuses.
    unparsable: bool,
    /// Problems found while reading: unreadable, not TOML, unknown keys, bad values. The file's
    /// other values are still used; `kcap doctor` reports these.
    pub problems: Vec<String>,
}

impl ConfigFile {
    /// Reads the file at [`config_path`]; a missing file is an empty config, not an error.
    pub fn load() -> ConfigFile {
        Self::load_from(&config_path())
    }

    /// Reads the file at `path`.
    pub fn load_from(path: &Path) -> ConfigFile {
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            ..ConfigFile::default()
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return file,
            Err(e) => {
                file.exists = path.exists();
                file.problems.push(format!("cannot read {}: {e}", path.display()));
                return file;
            }
        };
        file.exists = true;
        file.mode = mode_of(path);
        match text.parse::<DocumentMut>() {
            Ok(doc) => file.doc = doc,
            Err(e) => {
                file.unparsable = true;
                file.problems.push(format!(
                    "{} is not valid TOML (its values are ignored): {}",
                    path.display(),
                    e.to_string().trim()
                ));
                return file;
            }
        }
        for (key, item) in file.doc.iter() {
            if item.is_table() || item.is_array_of_tables() {
                continue; // another module's table, e.g. [redact]
            }
            match setting(key) {
                None => file.problems.push(format!(
                    "unknown key `{key}` ignored (known: {})",
                    SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>().join(", ")
                )),
                Some(s) => match text_of(item) {
                    Some(v) => {
                        if let Err(e) = validate(s, &v) {
                            file.problems.push(format!("{e} (ignored)"));
                        }
                    }
                    None => file
                        .problems
                        .push(format!("`{key}` must be a string or a whole number (ignored)")),
                },
            }
        }
        file
    }

    /// The file's value for a known key, as text; `None` when absent or invalid.
    pub fn get(&self, key: &str) -> Option<String> {
        let s = setting(key)?;
        let v = text_of(self.doc.get(key)?)?;
        validate(s, &v).ok().map(|()| v).filter(|v| !v.is_empty())
    }

    /// Sets `key` to `value` (checked and typed as the setting wants) in memory.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let s = setting(key).ok_or_else(|| {
            format!(
                "unknown key `{key}` (known: {})",
                SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>().join(", ")
            )
        })?;
        validate(s, value)?;
        let item = match s.kind {
            Kind::Number => Value::from(value.parse::<i64>().map_err(|e| format!("{key}: {e}"))?),
            _ => Value::from(value),
        };
        self.doc.insert(key, Item::Value(item));
        Ok(())
    }

    /// Removes `key`; true when it was there.
    pub fn unset(&mut self, key: &str) -> Result<bool, String> {
        setting(key).ok_or_else(|| format!("unknown key `{key}`"))?;
        Ok(self.doc.remove(key).is_some())
    }

    /// Writes the file atomically with mode 0600 (its folder 0700 when created), keeping every
    /// table and comment it had.
    pub fn save(&self) -> Result<(), String> {
        if self.unparsable {
            return Err(format!(
                "{} is not valid TOML: fix or remove it first (it was left as it is)",
                self.path.display()
            ));
        }
        let target = self.target()?;
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let temp = dir.join(format!(".config.toml.{}.tmp", std::process::id()));
        // A leftover of an earlier process with this pid; the temp file is then created anew
        // (never opened through a link someone put in its place).
        let _ = std::fs::remove_file(&temp);
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&temp)?;
            f.write_all(self.doc.to_string().as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot write {}: {e}", temp.display())
        })?;
        std::fs::rename(&temp, &target).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot replace {}: {e}", target.display())
        })
    }

    /// The file [`ConfigFile::save`] replaces: the config path itself, or, when that is a
    /// symlink (a dotfiles repository), the file it points to, so that the link survives and the
    /// value lands where the user keeps it. A link to nothing is refused rather than replaced.
    fn target(&self) -> Result<PathBuf, String> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(&self.path).map_err(|e| {
                format!(
                    "{} is a symbolic link to a file that cannot be reached ({e}): fix or \
                         remove the link (it was left as it is)",
                    self.path.display()
                )
            }),
            _ => Ok(self.path.clone()),
        }
    }
}

/// A string or integer value as text.
fn text_of(item: &Item) -> Option<String> {
    match item.as_value()? {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        _ => None,
    }
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn mode_of(_: &Path) -> Option<u32> {
    None
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_known_keys_ignores_tables_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# mine\nurl = \"https://kcap.example.com\"\npoll_ms = 100\nulr = \"typo\"\nbatch_lines = \"many\"\n\n[redact]\nallow = [\"x\"]\n",
        )
        .unwrap();
        let file = ConfigFile::load_from(&path);
        assert_eq!(file.get("url").as_deref(), Some("https://kcap.example.com"));
        assert_eq!(file.get("poll_ms").as_deref(), Some("100"));
        assert_eq!(file.get("batch_lines"), None);
        assert_eq!(file.problems.len(), 2, "{:?}", file.problems);
        assert!(file.problems[0].contains("unknown key `ulr`"));
        assert!(file.problems[1].contains("batch_lines"));
    }

    #[test]
    fn set_keeps_tables_and_comments_and_writes_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "# keep me\n[redact]\nallow = [\"x\"]\n").unwrap();
        let mut file = ConfigFile::load_from(&path);
        file.set("url", "http://localhost:5108").unwrap();
        file.set("poll_ms", "50").unwrap();
        assert!(file.set("poll_ms", "soon").is_err());
        assert!(file.set("nope", "1").is_err());
        file.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# keep me") && text.contains("[redact]") && text.contains("allow = [\"x\"]"));
        assert!(text.contains("poll_ms = 50"), "{text}");
        let again = ConfigFile::load_from(&path);
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        assert_eq!(again.get("url").as_deref(), Some("http://localhost:5108"));
        assert_eq!(again.mode, Some(0o600));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_config_is_written_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let dotfiles = dir.path().join("dotfiles");
        std::fs::create_dir_all(&dotfiles).unwrap();
        let real = dotfiles.join("kcap.toml");
        std::fs::write(&real, "# mine\nurl = \"http://a.example\"\n").unwrap();
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut file = ConfigFile::load_from(&link);
        file.set("poll_ms", "50").unwrap();
        file.save().unwrap();
        assert!(
            std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
            "the link was replaced"
        );
        let text = std::fs::read_to_string(&real).unwrap();
        assert!(text.contains("# mine") && text.contains("poll_ms = 50"), "{text}");

        let dangling = dir.path().join("dangling.toml");
        std::os::unix::fs::symlink(dir.path().join("nowhere/x.toml"), &dangling).unwrap();
        let mut file = ConfigFile::load_from(&dangling);
        file.set("poll_ms", "50").unwrap();
        assert!(file.save().unwrap_err().contains("symbolic link"));
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn garbage_is_a_problem_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "url = [unclosed\n\u{0}").unwrap();
        let file = ConfigFile::load_from(&path);
        assert!(file.exists);
        assert_eq!(file.get("url"), None);
        assert!(file.problems[0].contains("not valid TOML"), "{:?}", file.problems);
        assert!(file.save().unwrap_err().contains("fix or remove"));
        assert_eq!(std::fs::read(&path).unwrap(), b"url = [unclosed\n\0");
        let missing = ConfigFile::load_from(&dir.path().join("absent.toml"));
        assert!(!missing.exists && missing.problems.is_empty());
    }
}
