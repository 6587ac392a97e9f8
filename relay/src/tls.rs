//! HTTPS: the certificate the relay serves, from files (reloaded when they change) or
//! self-signed and kept in a directory for a LAN. An HTTPS page (a telescope UI) can only call
//! an `https://` relay: browsers block plain HTTP from it as mixed content.

use crate::config::TlsConfig;
use axum_server::tls_rustls::RustlsConfig;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often certificate files are checked for a change (certbot, cert-manager and friends
/// replace them in place).
const RELOAD_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate as the relay serves it: the PEM it loads and what it prints.
#[derive(Clone)]
pub struct Certificate {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// SHA-256 of the leaf certificate (what browsers show as the fingerprint).
    pub sha256: String,
    /// SHA-256 of the leaf's public key, base64: stays the same when a kept key is re-issued;
    /// the form of HPKP pins and of Chromium's `--ignore-certificate-errors-spki-list`.
    pub spki_sha256: String,
    /// Seconds since the Unix epoch when the leaf expires.
    pub not_after: i64,
    /// DNS names and addresses the leaf is valid for.
    pub names: Vec<String>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Certificate").field("sha256", &self.sha256).field("names", &self.names).finish()
    }
}

impl Certificate {
    /// Parses a PEM chain and key, checking that the key is usable and belongs to the leaf.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>, origin: &Path) -> Result<Self, TlsError> {
        let leaf = pem_blocks(&cert_pem).into_iter().find(|p| p.tag() == "CERTIFICATE").ok_or_else(|| TlsError::NoCertificate(origin.to_owned()))?;
        let der = leaf.contents();
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Invalid(origin.to_owned(), format!("not an X.509 certificate: {e}")))?;
        let spki = x509.public_key().raw;
        let key = rcgen::KeyPair::from_pem(&String::from_utf8_lossy(&key_pem))
            .map_err(|e| TlsError::Invalid(origin.to_owned(), format!("the key does not parse: {e}")))?;
        if key.public_key_der() != spki {
            return Err(TlsError::Invalid(origin.to_owned(), "the key does not belong to the first certificate".into()));
        }
        let mut names = Vec::new();
        if let Ok(Some(san)) = x509.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => names.extend(ip_from_bytes(b).map(|ip| ip.to_string())),
                    _ => {}
                }
            }
        }
        Ok(Self {
            sha256: colon_hex(&Sha256::digest(der)),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki)),
            not_after: x509.validity().not_after.timestamp(),
            names,
            cert_pem,
            key_pem,
        })
    }

    /// Reads certificate and key files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read(cert.to_owned(), e))?;
        let key_pem = std::fs::read(key).map_err(|e| TlsError::Read(key.to_owned(), e))?;
        Self::from_pem(cert_pem, key_pem, cert)
    }

    /// The self-signed certificate kept in `dir`: made on first use, re-issued (same key, so
    /// the SPKI fingerprint stays) when `names` are not all in it any more.
    pub fn self_signed(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        if let Ok(kept) = Self::from_files(&cert_path, &key_path) {
            if names.iter().all(|n| kept.names.contains(n)) {
                return Ok(kept);
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.to_owned(), e))?;
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| TlsError::Invalid(key_path.clone(), e.to_string()))?,
            Err(_) => {
                let key = rcgen::KeyPair::generate()?;
                write_private(&key_path, key.serialize_pem().as_bytes())?;
                key
            }
        };
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "Scopecast relay (self-signed)");
        let cert = params.self_signed(&key)?;
        std::fs::write(&cert_path, cert.pem()).map_err(|e| TlsError::Write(cert_path.clone(), e))?;
        Self::from_pem(cert.pem().into_bytes(), key.serialize_pem().into_bytes(), &cert_path)
    }
}

/// The names a self-signed certificate for this machine should carry: loopback, the host
/// name (and its `.local` mDNS form), every address of a real interface, and `extra`.
pub fn local_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_owned());
            if !host.contains('.') {
                names.push(format!("{host}.local"));
            }
        }
    }
    names.extend(crate::webrtc::local_addresses().into_iter().map(|ip| ip.to_string()));
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Loads the certificate the configuration names, making the self-signed one if needed (for
/// this machine's names, the configured ones and `advertised`: the ICE host names and
/// addresses, which are how viewers from outside reach the relay).
pub fn load(config: &TlsConfig, advertised: &[String]) -> Result<Certificate, TlsError> {
    match config {
        TlsConfig::Files { cert, key } => Certificate::from_files(cert, key),
        TlsConfig::SelfSigned { dir, names } => {
            let extra: Vec<String> = names.iter().chain(advertised).cloned().collect();
            Certificate::self_signed(dir, &local_names(&extra))
        }
    }
}

/// The rustls configuration the HTTPS server uses (HTTP/1.1 and HTTP/2 by ALPN).
pub async fn server_config(cert: &Certificate) -> std::io::Result<RustlsConfig> {
    RustlsConfig::from_pem(cert.cert_pem.clone(), cert.key_pem.clone()).await
}

/// Watches certificate files and swaps a changed pair in for new connections. A pair that
/// does not load (a half-written file, a key that does not match yet) keeps the old one and is
/// tried again at the next change. Self-signed certificates do not change while running.
pub fn spawn_reloader(config: &TlsConfig, rustls: RustlsConfig) -> Option<tokio::task::JoinHandle<()>> {
    let TlsConfig::Files { cert, key } = config.clone() else { return None };
    Some(tokio::spawn(async move {
        let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: (Option<SystemTime>, Option<SystemTime>) = (stamp(&cert), stamp(&key));
        loop {
            tokio::time::sleep(RELOAD_POLL).await;
            let now = (stamp(&cert), stamp(&key));
            if now == seen {
                continue;
            }
            match Certificate::from_files(&cert, &key) {
                Ok(loaded) => match rustls.reload_from_pem(loaded.cert_pem.clone(), loaded.key_pem.clone()).await {
                    Ok(()) => {
                        seen = now;
                        tracing::info!(sha256 = %loaded.sha256, "TLS certificate reloaded from {}", cert.display());
                    }
                    Err(e) => tracing::warn!("TLS certificate {} not reloaded: {e}", cert.display()),
                },
                // Tried again on the next poll: the other file of the pair may still be coming.
                Err(e) => tracing::warn!("TLS certificate not reloaded yet: {e}"),
            }
        }
    }))
}

fn pem_blocks(bytes: &[u8]) -> Vec<pem::Pem> {
    pem::parse_many(bytes).unwrap_or_default()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).and_then(|mut f| f.write_all(bytes)).map_err(|e| TlsError::Write(path.to_owned(), e))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("scopecast-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_self_signed_certificate_is_kept_and_reissued_with_the_same_key_when_names_change() {
        let dir = temp_dir("keep");
        let first = Certificate::self_signed(&dir, &["localhost".into(), "10.0.0.5".into()]).expect("made");
        assert_eq!(first.names, ["localhost", "10.0.0.5"]);
        assert_eq!(first.sha256.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("key.pem")).expect("key").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private to its owner");
        }
        let again = Certificate::self_signed(&dir, &["10.0.0.5".into()]).expect("kept");
        assert_eq!(again.sha256, first.sha256, "names already covered: the same certificate");
        let moved = Certificate::self_signed(&dir, &["localhost".into(), "10.0.0.9".into()]).expect("re-issued");
        assert_ne!(moved.sha256, first.sha256);
        assert_eq!(moved.spki_sha256, first.spki_sha256, "same key: pins survive");
        assert!(moved.names.contains(&"10.0.0.9".to_owned()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_of_another_certificate_or_garbage_is_refused_with_the_file_named() {
        let (a, b) = (temp_dir("a"), temp_dir("b"));
        let ca = Certificate::self_signed(&a, &["localhost".into()]).expect("a");
        let cb = Certificate::self_signed(&b, &["localhost".into()]).expect("b");
        let mixed = Certificate::from_pem(ca.cert_pem.clone(), cb.key_pem.clone(), Path::new("site.pem")).expect_err("mismatch");
        assert!(mixed.to_string().contains("site.pem") && mixed.to_string().contains("does not belong"), "{mixed}");
        let none = Certificate::from_pem(b"hello".to_vec(), ca.key_pem.clone(), Path::new("x.pem")).expect_err("no cert");
        assert!(matches!(none, TlsError::NoCertificate(_)), "{none}");
        let bad_key =
            Certificate::from_pem(ca.cert_pem.clone(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(), Path::new("k.pem"))
                .expect_err("bad key");
        assert!(bad_key.to_string().contains("key does not parse"), "{bad_key}");
        let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
    }

    #[test]
    fn local_names_cover_loopback_and_extra_names_once() {
        let names = local_names(&["scope.example.org".into(), "localhost".into()]);
        assert_eq!(&names[..3], ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(names.iter().filter(|n| *n == "localhost").count(), 1);
        assert!(names.contains(&"scope.example.org".to_owned()));
    }
}
