//! Mutual TLS to a Docker daemon: checking the certificate files up front
//! (bollard would silently send no client certificate), and turning TLS
//! failures into one line that says which file to look at.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::DockerHost;

/// ca.pem, cert.pem and key.pem of a `DOCKER_CERT_PATH` directory.
#[derive(Clone, Debug)]
pub struct Files {
    /// The CA that signed the daemon's certificate.
    pub ca: PathBuf,
    /// kite's client certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Files {
    /// Where the files are, for messages.
    fn dir(&self) -> &Path {
        self.ca.parent().unwrap_or(Path::new("."))
    }

    /// Checks that the three files exist and parse: the CA and client
    /// certificates, and exactly one private key.
    pub fn load(dir: &Path, host: &DockerHost) -> Result<Files> {
        let files = Files {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let for_host = || format!("(TLS files for the Docker daemon at {host})");
        for (path, what) in [
            (&files.ca, "CA certificate"),
            (&files.cert, "client certificate"),
        ] {
            let pem = std::fs::read(path).with_context(|| {
                format!("cannot read the {what} {} {}", path.display(), for_host())
            })?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
                .with_context(|| format!("the {what} does not parse {}", for_host()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate {}", path.display(), for_host());
            }
        }
        let pem = std::fs::read(&files.key).with_context(|| {
            format!(
                "cannot read the private key {} {}",
                files.key.display(),
                for_host()
            )
        })?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{} holds no usable PEM private key ({e}) {}",
                files.key.display(),
                for_host()
            )
        })?;
        Ok(files)
    }
}

/// Installs rustls's process-wide crypto provider (aws-lc-rs, the one the
/// AWS SDK uses), which bollard's client-certificate code asks for.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A hint for a TLS failure, or None when `err` is not one.
pub fn explain(err: &bollard::errors::Error, files: &Files, host: &DockerHost) -> Option<String> {
    let dir = files.dir().display();
    let Some(tls) = find_rustls_error(err) else {
        // hyper's connect errors may hide the typed rustls error behind
        // their own boxes: read the message instead.
        let chain = error_chain(err);
        let hint = if chain.contains("UnknownIssuer") || chain.contains("BadSignature") {
            format!(
                "its certificate is not signed by the CA in {} (wrong ca.pem in {dir}?)",
                files.ca.display()
            )
        } else if chain.contains("NotValidForName") {
            format!("its certificate is not valid for the address kite dialled ({host})")
        } else if chain.contains("received fatal alert") {
            format!(
                "it rejected kite's client certificate: is {} signed by the CA the daemon \
                 trusts, and {} its key (in {dir})? ({chain})",
                files.cert.display(),
                files.key.display()
            )
        } else if chain.contains("invalid peer certificate") {
            format!("its certificate is not acceptable: {chain}")
        } else {
            return None;
        };
        return Some(format!("TLS handshake failed: {hint}"));
    };
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match tls {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "its certificate is not signed by the CA in {} (wrong ca.pem in {dir}?)",
            files.ca.display()
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "its certificate is not valid for the address kite dialled ({host}); it needs that \
             name or IP among its subject alternative names"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "its certificate has expired".to_owned()
        }
        E::AlertReceived(
            a @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::DecryptError
            | A::CertificateUnknown
            | A::AccessDenied),
        ) => format!(
            "it rejected kite's client certificate ({a:?}): is {} signed by the CA the daemon \
             trusts, and {} its key (in {dir})?",
            files.cert.display(),
            files.key.display()
        ),
        other => format!("TLS failed: {other}"),
    };
    Some(format!("TLS handshake failed: {hint}"))
}

/// The messages of an error and its sources, deduplicated, on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The rustls error somewhere in the chain: io::Error hides its inner
/// error from `source()`, so look inside each io::Error too.
fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        cur = e.source();
    }
    None
}
