//! Finds the configuration, the data directory, the store and the pepper —
//! the same way for every subcommand, so the CLI manages the store of a
//! running server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use gatehouse_authn::Pepper;
use gatehouse_store::{SqliteStore, Store};

use crate::cli::GlobalArgs;
use crate::config::Config;

pub const DATABASE_FILE: &str = "gatehouse.db";
pub const PEPPER_FILE: &str = "pepper";
pub const PEPPER_ENV_DEFAULT: &str = "GATEHOUSE_PEPPER";

pub struct Context {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub data_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("gatehouse");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/gatehouse");
    }
    PathBuf::from("gatehouse-data")
}

impl Context {
    pub fn load(global: &GlobalArgs) -> anyhow::Result<Context> {
        let config = match &global.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let data_dir = global
            .data_dir
            .clone()
            .or_else(|| config.storage.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        Ok(Context {
            config,
            config_path: global.config.clone(),
            data_dir,
        })
    }

    /// Creates the data directory (owner-only) if needed.
    pub fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {}", self.data_dir.display()))?;
        }
        Ok(())
    }

    pub fn in_data_dir(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.data_dir.join(path)
        }
    }

    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        self.ensure_data_dir()?;
        let path = self.data_dir.join(DATABASE_FILE);
        let store = SqliteStore::open(&path)
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        Ok(Arc::new(store))
    }

    /// The pepper from the configured environment variable or file; the
    /// default file is created (owner-only) on first use.
    pub fn pepper(&self) -> anyhow::Result<Pepper> {
        let env_name = self
            .config
            .auth
            .pepper_env
            .clone()
            .unwrap_or_else(|| PEPPER_ENV_DEFAULT.to_string());
        if let Ok(value) = std::env::var(&env_name) {
            return decode_pepper(value.trim())
                .with_context(|| format!("environment variable {env_name}"));
        }
        if self.config.auth.pepper_env.is_some() {
            bail!("auth.pepper_env names {env_name}, which is not set");
        }
        let path = match &self.config.auth.pepper_file {
            Some(path) => return read_pepper_file(&self.in_data_dir(path)),
            None => self.data_dir.join(PEPPER_FILE),
        };
        if !path.exists() {
            create_pepper_file(&path)?;
        }
        read_pepper_file(&path)
    }
}

fn decode_pepper(hex_text: &str) -> anyhow::Result<Pepper> {
    let bytes = hex::decode(hex_text).context("the pepper must be hex")?;
    Pepper::new(bytes).map_err(anyhow::Error::msg)
}

fn read_pepper_file(path: &Path) -> anyhow::Result<Pepper> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pepper file {}", path.display()))?;
    decode_pepper(text.trim()).with_context(|| format!("pepper file {}", path.display()))
}

fn create_pepper_file(path: &Path) -> anyhow::Result<()> {
    let pepper = Pepper::generate().context("no randomness for the pepper")?;
    let mut options = std::fs::OpenOptions::new();
    // create_new: if another process won the race, its pepper is used.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(hex::encode(pepper.as_bytes()).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new pepper");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}
