//! HTTPS listeners: certificates from PEM files, the one for the name the client asks for (SNI)
//! chosen at each handshake, TLS 1.2 and 1.3 only (pingora's rustls acceptor), ALPN offering h2
//! and http/1.1. New certificate files are taken up without a restart: when a file changes
//! (checked every second) and on SIGHUP. Open connections keep the certificate they were made
//! with; a file that does not load leaves the last good certificates in force, with a WARN and
//! `strangler_tls_reloads_total{result="rejected"}`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use prometheus::IntCounterVec;
use tracing::{debug, info, warn};

/// One certificate and the names it serves (its DNS subject alternative names, or its common
/// name when it has none).
#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads one certificate chain and key; the error names the file and says what is wrong.
pub fn load(f: &CertFiles) -> Result<(), String> {
    read(f).map(|_| ())
}

fn read(f: &CertFiles) -> Result<Entry, String> {
    pingora::tls::install_default_crypto_provider();
    let shown = |p: &Path| p.display().to_string();
    for p in [&f.cert, &f.key] {
        std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", shown(p)))?;
    }
    let (certs, key) =
        pingora::tls::load_certs_and_key_files(&f.cert.to_string_lossy(), &f.key.to_string_lossy())
            .map_err(|e| format!("cannot read {} / {}: {e}", shown(&f.cert), shown(&f.key)))?
            .ok_or_else(|| {
                format!(
                    "no PEM certificate in {} or no PEM private key in {}",
                    shown(&f.cert),
                    shown(&f.key)
                )
            })?;
    let provider = pingora::tls::CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider".to_string())?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: not a usable private key: {e}", shown(&f.key)))?;
    let names = names_of(&certs[0]).map_err(|e| format!("{}: {e}", shown(&f.cert)))?;
    let key = CertifiedKey::new(certs, signer);
    key.keys_match()
        .map_err(|e| format!("{} does not match {}: {e}", shown(&f.key), shown(&f.cert)))?;
    Ok(Entry {
        names,
        key: Arc::new(key),
    })
}

/// The DNS names a certificate is for, lowercase.
fn names_of(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_lowercase)),
        );
    }
    Ok(names)
}

/// Whether certificate name `pattern` (`shop.example`, `*.example`) covers `host`.
fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The certificates of one TLS listener, swapped whole when their files change.
pub struct Certs {
    files: Vec<CertFiles>,
    current: ArcSwap<Vec<Entry>>,
    /// The files' modification times when last read.
    stamps: Mutex<Vec<Option<SystemTime>>>,
    /// The last read failed: read once more at the next check even if nothing changed (a
    /// certificate and key replaced one after the other can be caught in between).
    retry: std::sync::atomic::AtomicBool,
    reloads: IntCounterVec,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").field("files", &self.files).finish()
    }
}

impl Certs {
    pub fn load(files: &[CertFiles], reloads: IntCounterVec) -> Result<Arc<Certs>, String> {
        let entries = files.iter().map(read).collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Certs {
            stamps: Mutex::new(stamps(files)),
            files: files.to_vec(),
            current: ArcSwap::from_pointee(entries),
            retry: std::sync::atomic::AtomicBool::new(false),
            reloads,
        }))
    }

    /// Reads the files again if any changed since they were last read (or whatever, `force`).
    pub fn reload(&self, force: bool, why: &str) {
        use std::sync::atomic::Ordering;
        let now = stamps(&self.files);
        let retry = self.retry.swap(false, Ordering::Relaxed);
        {
            let mut last = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if !force && !retry && *last == now {
                return;
            }
            *last = now;
        }
        match self.files.iter().map(read).collect::<Result<Vec<_>, _>>() {
            Ok(entries) => {
                let names: Vec<&str> = entries
                    .iter()
                    .flat_map(|e| e.names.iter().map(String::as_str))
                    .collect();
                info!(trigger = why, names = ?names, "TLS certificates loaded");
                self.current.store(Arc::new(entries));
                self.reloads.with_label_values(&["ok"]).inc();
            }
            Err(e) if !retry => {
                debug!(trigger = why, error = %e, "TLS certificates not read; trying once more");
                self.retry.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(trigger = why, error = %e, "TLS certificates not reloaded; the last ones stay in force");
                self.reloads.with_label_values(&["rejected"]).inc();
            }
        }
    }

    /// The certificate for `sni`: a name it covers exactly, then a wildcard one, then the first
    /// (also for clients that send no name).
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let all = self.current.load();
        let host = sni.map(str::to_ascii_lowercase);
        let by = |wild: bool| {
            let host = host.as_deref()?;
            all.iter().find(|e| {
                e.names
                    .iter()
                    .any(|n| n.starts_with("*.") == wild && covers(n, host))
            })
        };
        by(false)
            .or_else(|| by(true))
            .or_else(|| all.first())
            .map(|e| Arc::clone(&e.key))
    }
}

fn stamps(files: &[CertFiles]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .flat_map(|f| [&f.cert, &f.key])
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// rustls asks this for a certificate at each handshake.
#[derive(Debug)]
pub struct Resolver(pub Arc<Certs>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

/// Checks every listener's files once a second for the life of the process.
pub fn watch(all: Vec<Arc<Certs>>) {
    if all.is_empty() {
        return;
    }
    std::thread::Builder::new()
        .name("strangler tls".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                for c in &all {
                    c.reload(false, "file change");
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(
            |e| warn!(error = %e, "Cannot watch TLS certificate files; reload them with SIGHUP"),
        );
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn names_cover_hosts_exactly_or_by_one_wildcard_label() {
        assert!(covers("shop.example", "shop.example"));
        assert!(!covers("shop.example", "www.shop.example"));
        assert!(covers("*.example", "shop.example"));
        assert!(!covers("*.example", "a.shop.example"));
        assert!(!covers("*.example", "example"));
        assert!(!covers("*.example", ".example"));
    }
}
