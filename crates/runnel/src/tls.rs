//! TLS for Postgres clients: the server's certificate chain and private key, read once at
//! start-up into a rustls configuration (ring provider). A key file that others can read, or
//! a file that does not parse, stops the start-up with a message naming it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use runnel_pgwire::rustls::pki_types::pem::PemObject;
use runnel_pgwire::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use runnel_pgwire::rustls::{crypto, ServerConfig};
use runnel_pgwire::TlsAcceptor;

/// What [`load`] gives: the acceptor, and the certificate chain's PEM (for SCRAM channel
/// binding).
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    pub certificate_pem: Vec<u8>,
}

/// Reads `cert` (PEM, the server's certificate first, then its chain) and `key` (PEM,
/// PKCS#8, PKCS#1 or SEC1).
pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, String> {
    let certificate_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    check_key_permissions(key)?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{} holds no PEM private key: {e}", key.display()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| {
                format!(
                    "the key in {} does not fit the certificate in {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?;
    // Clients that start TLS directly (libpq's sslnegotiation=direct) name this protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificate_pem,
    })
}

/// A private key readable by the group or others is refused, as Postgres refuses it.
fn check_key_permissions(key: &Path) -> Result<(), String> {
    let metadata =
        std::fs::metadata(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "private key file {} has group or world access; it must have permissions u=rw \
             (0600) or less",
            key.display()
        ));
    }
    Ok(())
}
