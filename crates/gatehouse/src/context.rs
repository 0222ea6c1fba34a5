//! Finds the configuration, the data directory, the store and the pepper —
//! the same way for every subcommand, so the CLI manages the store of a
//! running server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use gatehouse_authn::Pepper;
use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::MasterKey;
use gatehouse_store::{PostgresStore, SqliteStore, Store};

use crate::cli::GlobalArgs;
use crate::config::{Config, StorageBackend};

pub const DATABASE_FILE: &str = "gatehouse.db";
pub const PEPPER_FILE: &str = "pepper";
pub const PEPPER_ENV_DEFAULT: &str = "GATEHOUSE_PEPPER";
pub const MASTER_KEY_FILE: &str = "master.key";
pub const MASTER_KEY_ENV_DEFAULT: &str = "GATEHOUSE_MASTER_KEY";

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

    /// The server's public origin as the configuration gives it (what
    /// `serve` uses unless `--public-url` or `--listen` override it), for
    /// commands that print URLs: `server.public_url`, else the listen address.
    pub fn public_origin(&self) -> String {
        match &self.config.server.public_url {
            Some(url) => url.origin().ascii_serialization(),
            None => format!("http://{}", self.config.server.listen),
        }
    }

    /// The audit log of a command (`approvals decide`, `grants revoke`, …):
    /// the database, the JSON-lines file and, when configured, syslog; its
    /// records form a chain of their own for this run.
    pub fn command_audit_log(
        &self,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<(
        gatehouse_audit::AuditLog,
        gatehouse_audit::AuditWriterHandle,
    )> {
        let path = self.in_data_dir(&self.config.audit.file);
        let syslog = self.syslog_settings()?;
        gatehouse_audit::AuditLog::start_with(
            store,
            gatehouse_audit::AuditOptions {
                file: Some(path.clone()),
                fsync: self.config.audit.fsync,
                chain: gatehouse_audit::Chain::for_run(),
                rotation: None,
                syslog,
            },
        )
        .with_context(|| format!("cannot open the audit file {}", path.display()))
    }

    /// Ends a command's audit log: signs a checkpoint of the chain it
    /// wrote (without one, a chain's records could be rewritten and
    /// re-hashed unnoticed) and waits until everything is written. A
    /// command that cannot sign (no signing key yet, or a master key that
    /// cannot open it) says so and goes on: its records are chained, only
    /// not signed.
    pub async fn close_command_audit_log(
        &self,
        store: &Arc<dyn Store>,
        audit: gatehouse_audit::AuditLog,
        writer: gatehouse_audit::AuditWriterHandle,
    ) {
        if let Err(e) = self.sign_command_checkpoint(store, &audit).await {
            tracing::warn!(error = %e, "this command's audit records are chained but not signed");
        }
        drop(audit);
        writer.wait().await;
    }

    async fn sign_command_checkpoint(
        &self,
        store: &Arc<dyn Store>,
        audit: &gatehouse_audit::AuditLog,
    ) -> anyhow::Result<()> {
        let now = SystemClock.now();
        // Said plainly, since the key ring's own error is deliberately vague.
        let keys = store.signing_keys().await?;
        let schedule =
            gatehouse_store::signing_schedule(&keys, now, gatehouse_authn::REPLACED_KEY_TRUST_MS);
        if schedule.signer.is_none() {
            bail!("no signing key is active yet (a server makes one when it first starts)");
        }
        let signer = crate::runtime::KeyRingSigner {
            keys: gatehouse_oauth::KeyRing::new(Arc::clone(store), self.existing_master_key()?),
            issuer: self.public_origin(),
        };
        gatehouse_audit::sign_checkpoint(audit, &signer, now, 0)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot sign with the store's signing key ({e}); is this the servers' master key?"
                )
            })?;
        Ok(())
    }

    /// Raises alerts from a command (the lifecycle's warnings): listed,
    /// and queued for the webhook when one is configured (a server
    /// delivers it; the command does not wait for that).
    pub fn command_alerts(&self, store: Arc<dyn Store>) -> gatehouse_alerts::Alerts {
        let alerts = gatehouse_alerts::Alerts::new(store);
        if self.config.alerts.webhook.is_some() {
            alerts.with_webhook(Arc::new(tokio::sync::Notify::new()))
        } else {
            alerts
        }
    }

    /// The syslog sink's settings, when `[audit.syslog]` is configured
    /// (its TLS files read again: they may have been replaced since the
    /// configuration was checked).
    pub fn syslog_settings(&self) -> anyhow::Result<Option<gatehouse_audit::SyslogSettings>> {
        let dir = self
            .config_path
            .as_deref()
            .map_or(Path::new(""), crate::config::config_dir);
        self.config
            .audit
            .syslog
            .as_ref()
            .map(|s| s.settings(dir))
            .transpose()
            .map_err(|e| anyhow::anyhow!("invalid configuration: audit.syslog: {e}"))
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
        if self.config.storage.backend == StorageBackend::Postgres {
            let var = self
                .config
                .storage
                .postgres_url_env
                .as_deref()
                .context("storage.postgres_url_env is not set")?;
            let url = std::env::var(var).with_context(|| {
                format!("environment variable {var} (the PostgreSQL URL) is not set")
            })?;
            // The URL may hold a password: name the variable, never the URL.
            let store = PostgresStore::connect(&url)
                .await
                .with_context(|| format!("cannot open the PostgreSQL database named by {var}"))?;
            return Ok(Arc::new(store));
        }
        let path = self.data_dir.join(DATABASE_FILE);
        let store = SqliteStore::open(&path)
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        Ok(Arc::new(store))
    }

    /// The pepper from the configured environment variable or file; the
    /// default file is created (owner-only) on first use.
    pub fn pepper(&self) -> anyhow::Result<Pepper> {
        self.pepper_with(Create::IfMissing)
    }

    fn pepper_with(&self, create: Create) -> anyhow::Result<Pepper> {
        let auth = &self.config.auth;
        let hex_text = self.secret_hex(
            auth.pepper_env.as_deref(),
            PEPPER_ENV_DEFAULT,
            auth.pepper_file.as_deref(),
            PEPPER_FILE,
            create,
        )?;
        let bytes = hex::decode(hex_text.trim()).context("the pepper must be hex")?;
        Pepper::new(bytes).map_err(anyhow::Error::msg)
    }

    /// The pepper, checked against the one the store's credentials are
    /// hashed with (a keyed hash of a fixed text, kept in the store by the
    /// first server or command that hashes anything). A command run from a
    /// shell without the servers' `GATEHOUSE_PEPPER` would otherwise make a
    /// pepper file of its own and issue keys and secrets that never work,
    /// or rotate a leaked client secret to one that never validates; a
    /// server started with another pepper would refuse every credential.
    /// Refused with a clear error instead, before anything is written.
    pub async fn servers_pepper(&self, store: &Arc<dyn Store>) -> anyhow::Result<Pepper> {
        let stored = store.setting(PEPPER_CHECK_TENANT, PEPPER_CHECK_KEY).await?;
        let Some(stored) = stored else {
            let pepper = self.pepper()?;
            store
                .put_setting(
                    PEPPER_CHECK_TENANT,
                    PEPPER_CHECK_KEY,
                    &pepper.hash(PEPPER_CHECK_TEXT),
                )
                .await?;
            return Ok(pepper);
        };
        let pepper = self
            .pepper_with(Create::Never)
            .context("the store's credentials are hashed with a pepper, and there is none here")?;
        if !pepper.verify(PEPPER_CHECK_TEXT, &stored) {
            bail!(
                "the pepper here is not the one the store's credentials are hashed with: run this \
                 where the servers' pepper is (or set the variable auth.pepper_env names, \
                 GATEHOUSE_PEPPER by default, to it)"
            );
        }
        Ok(pepper)
    }

    /// The master key that seals the authorization server's signing keys.
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        self.master_key_with(Create::IfMissing)
    }

    /// The master key, only where one already is: never makes the default
    /// file (a command signing its audit chain must not leave a stray key
    /// next to servers that take theirs from the environment).
    pub fn existing_master_key(&self) -> anyhow::Result<MasterKey> {
        self.master_key_with(Create::Never)
    }

    /// The servers' master key, for whatever seals something the servers
    /// must open (a start, `secrets set`, `keys rotate-signing`,
    /// `revoke-signing --force`): the one at hand (never a new file), and
    /// only if it opens a signing key or a tenant secret the store holds. A
    /// shell without the servers' `GATEHOUSE_MASTER_KEY` would otherwise
    /// seal with a key nobody else has (every server would stop issuing
    /// tokens, or fail the calls needing the secret). A store with nothing
    /// sealed yet takes the master key as `master_key` does.
    pub async fn servers_master_key(&self, store: &dyn Store) -> anyhow::Result<MasterKey> {
        // Signing keys and tenant secrets alike tell the servers' key (a
        // stdio-only store has secrets and no signing key).
        let keys = store.signing_keys().await?;
        let sealed = store.sealed_secrets().await?;
        if keys.is_empty() && sealed.is_empty() {
            return self.master_key();
        }
        let master = self.existing_master_key().context(
            "keys or secrets sealed with the servers' master key are already stored, and there is \
             no master key here",
        )?;
        let opens_one = keys.iter().any(|k| master.opens(k))
            || sealed.iter().any(|(tenant, name, value)| {
                gatehouse_core::SecretCipher::open(&master, tenant, name, value).is_ok()
            });
        if !opens_one {
            bail!(
                "this master key opens none of the keys and secrets already stored, so the servers \
                 could not use anything sealed with it: run this where the servers' master key is \
                 (GATEHOUSE_MASTER_KEY, or the configured oauth.master_key_env or master_key_file)"
            );
        }
        Ok(master)
    }

    fn master_key_with(&self, create: Create) -> anyhow::Result<MasterKey> {
        let oauth = &self.config.oauth;
        let hex_text = self.secret_hex(
            oauth.master_key_env.as_deref(),
            MASTER_KEY_ENV_DEFAULT,
            oauth.master_key_file.as_deref(),
            MASTER_KEY_FILE,
            create,
        )?;
        MasterKey::from_hex(&hex_text).map_err(|e| anyhow::anyhow!("master key: {e}"))
    }

    /// A 32-byte secret as hex: from the configured environment variable (or
    /// `default_env`), else the configured file, else `<data-dir>/<default_file>`,
    /// which is created on first use.
    fn secret_hex(
        &self,
        env: Option<&str>,
        default_env: &str,
        file: Option<&Path>,
        default_file: &str,
        create: Create,
    ) -> anyhow::Result<String> {
        let env_name = env.unwrap_or(default_env);
        if let Ok(value) = std::env::var(env_name) {
            return Ok(value.trim().to_string());
        }
        if env.is_some() {
            bail!("the configured environment variable {env_name} is not set");
        }
        if let Some(path) = file {
            return read_secret_file(&self.in_data_dir(path));
        }
        let path = self.data_dir.join(default_file);
        if !path.exists() {
            if create == Create::Never {
                bail!("{env_name} is not set and there is no {}", path.display());
            }
            create_secret_file(&path)?;
        }
        read_secret_file(&path)
    }
}

/// Where the pepper's check is kept: a settings row under a tenant name no
/// tenant can have (names are refused with control characters).
const PEPPER_CHECK_TENANT: &str = "\u{1f}gatehouse";
const PEPPER_CHECK_KEY: &str = "pepper_check";
/// What the check is a keyed hash of.
const PEPPER_CHECK_TEXT: &[u8] = b"gatehouse pepper check v1";

/// Whether a missing default secret file is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    IfMissing,
    Never,
}

fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(warning) = permission_warning(meta.permissions().mode()) {
            tracing::warn!(path = %path.display(), "{warning}");
        }
    }
    Ok(text.trim().to_string())
}

/// What is wrong with a secret file's mode, if anything: readable or
/// writable by every user of the machine (group access is left alone: a
/// secret mounted for a service group is common). Gatehouse makes its own
/// files owner-only; this is for one configured by hand.
fn permission_warning(mode: u32) -> Option<&'static str> {
    if mode & 0o006 != 0 {
        Some("this secret file can be read or written by every user of this machine; chmod o-rw it")
    } else {
        None
    }
}

/// Writes 32 random bytes as hex to a new owner-only file.
fn create_secret_file(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    // create_new: if another process won the race, its secret is used.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(hex::encode(bytes).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new secret file");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

#[cfg(test)]
mod secret_file_tests {
    use super::permission_warning;

    #[test]
    fn a_secret_file_open_to_everyone_is_named() {
        assert!(permission_warning(0o100644).is_some());
        assert!(permission_warning(0o100602).is_some());
        assert!(permission_warning(0o100600).is_none());
        assert!(permission_warning(0o100640).is_none());
    }
}
