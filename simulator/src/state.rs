//! The simulator's memory between runs: the ingest token of each simulated vehicle, per server.
//!
//! A token is shown only when a vehicle is created or its token rotated, so without this file
//! every start would have to rotate every token.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct SimState {
    /// Keyed by server base URL: the same vehicle name on another server is another vehicle.
    #[serde(default)]
    servers: BTreeMap<String, ServerState>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ServerState {
    /// Keyed by vehicle name.
    #[serde(default)]
    vehicles: BTreeMap<String, SavedVehicle>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SavedVehicle {
    id: i64,
    ingest_token: String,
}

impl fmt::Debug for SavedVehicle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedVehicle")
            .field("id", &self.id)
            .field("ingest_token", &"<redacted>")
            .finish()
    }
}

/// The state file of one run, scoped to the server it talks to.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    server: String,
    state: SimState,
}

impl StateFile {
    /// Reads the file; a missing file is an empty state. An unreadable one is set aside with a
    /// warning rather than stopping the demo: losing it only costs a token rotation.
    pub fn load(path: &Path, server: &str) -> Self {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "ignoring unreadable state file {}: {e}; tokens will be rotated",
                    path.display()
                );
                SimState::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimState::default(),
            Err(e) => {
                tracing::warn!(
                    "cannot read state file {}: {e}; tokens will be rotated",
                    path.display()
                );
                SimState::default()
            }
        };
        Self {
            path: path.to_owned(),
            server: server.to_owned(),
            state,
        }
    }

    /// The saved token of the vehicle `name`, if it was saved for this very vehicle id (a
    /// reset database reuses names with new ids).
    pub fn token(&self, name: &str, vehicle_id: i64) -> Option<&str> {
        self.state
            .servers
            .get(&self.server)?
            .vehicles
            .get(name)
            .filter(|v| v.id == vehicle_id)
            .map(|v| v.ingest_token.as_str())
    }

    /// Records a vehicle's token and writes the file.
    pub fn remember(&mut self, name: &str, vehicle_id: i64, token: &str) -> anyhow::Result<()> {
        self.state
            .servers
            .entry(self.server.clone())
            .or_default()
            .vehicles
            .insert(
                name.to_owned(),
                SavedVehicle {
                    id: vehicle_id,
                    ingest_token: token.to_owned(),
                },
            );
        self.save()
            .with_context(|| format!("cannot write state file {}", self.path.display()))
    }

    /// Writes to a temporary file and renames it over the old one, so a crash mid-write never
    /// leaves a truncated file; the file holds credentials, so only its owner may read it.
    fn save(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&self.state)?)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        std::env::temp_dir().join(format!("waymark-sim-{name}-{}-{nanos}", std::process::id()))
    }

    #[test]
    fn tokens_survive_a_restart_and_stay_per_server_and_per_id() {
        let dir = scratch_dir("state");
        let path = dir.join("nested").join("sim-state.json");
        let mut state = StateFile::load(&path, "http://a/");
        assert_eq!(state.token("Car Munich", 1), None);
        state.remember("Car Munich", 1, "tok-1").unwrap();

        let reloaded = StateFile::load(&path, "http://a/");
        assert_eq!(reloaded.token("Car Munich", 1), Some("tok-1"));
        assert_eq!(
            reloaded.token("Car Munich", 2),
            None,
            "a new id means a new vehicle"
        );
        assert_eq!(
            StateFile::load(&path, "http://b/").token("Car Munich", 1),
            None
        );
        assert!(!format!("{reloaded:?}").contains("tok-1"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the token file is private");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_file_is_ignored() {
        let dir = scratch_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sim-state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let mut state = StateFile::load(&path, "http://a/");
        assert_eq!(state.token("x", 1), None);
        state.remember("x", 1, "t").unwrap();
        assert_eq!(StateFile::load(&path, "http://a/").token("x", 1), Some("t"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
