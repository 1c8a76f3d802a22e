//! Test certificates for SIP over TLS (RFC 3261 §26.2, port 5061), made when a run first needs
//! them and never written to disk: one certificate authority per process, and a server
//! certificate per address it serves, signed by it. Servers present their certificate; clients
//! trust the authority and check the server's IP address against the certificate's subject
//! alternative name, as a phone provisioned with its operator's CA does.
//!
//! Nothing here is secret beyond the run: the keys live in memory only (rcgen, ring).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};

/// The run's certificate authority.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        what: format!("TLS test certificates: {what}: {e}"),
        source: std::io::ErrorKind::Other.into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn authority() -> Result<&'static Authority> {
    static CA: OnceLock<std::result::Result<Authority, String>> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(
            DnType::CommonName,
            "sip-nat-harness test CA (this run only)",
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Authority { cert, key })
    })
    .as_ref()
    .map_err(|e| tls_error("make the authority", e))
}

/// What a TLS server at `ip` presents: a certificate for that address, signed by the run's
/// authority.
pub fn server_config(ip: IpAddr) -> Result<Arc<rustls::ServerConfig>> {
    let ca = authority()?;
    let key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
    let mut params =
        CertificateParams::new(vec![ip.to_string()]).map_err(|e| tls_error("server name", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, ip.to_string());
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .map_err(|e| tls_error("sign the server certificate", e))?;
    let chain = vec![cert.der().clone(), ca.cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("server protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("server certificate", e))?;
    Ok(Arc::new(config))
}

/// What a TLS client trusts: the run's authority only.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>> {
    let ca = authority()?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert.der().to_vec()))
        .map_err(|e| tls_error("trust the authority", e))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("client protocol versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves what `from` has to send into `to` and lets `to` process it; whether `to` accepted.
    fn pump<A, B>(
        from: &mut rustls::ConnectionCommon<A>,
        to: &mut rustls::ConnectionCommon<B>,
    ) -> bool {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let _ = to.read_tls(&mut &buf[..]);
        to.process_new_packets().is_ok()
    }

    /// Runs a client and a server handshake against each other in memory; whether it completed.
    fn handshake(client: Arc<rustls::ClientConfig>, to: IpAddr, server_ip: IpAddr) -> bool {
        let name = rustls::pki_types::ServerName::IpAddress(to.into());
        let mut c = rustls::ClientConnection::new(client, name).unwrap();
        let mut s = rustls::ServerConnection::new(server_config(server_ip).unwrap()).unwrap();
        for _ in 0..8 {
            if !pump(&mut c, &mut s) || !pump(&mut s, &mut c) {
                return false;
            }
        }
        !c.is_handshaking() && !s.is_handshaking()
    }

    #[test]
    fn a_client_trusting_the_run_authority_accepts_a_server_certificate_for_its_address_only() {
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let other: IpAddr = "203.0.113.11".parse().unwrap();
        let client = client_config().expect("client config");
        assert!(handshake(client.clone(), ip, ip));
        assert!(
            !handshake(client, other, ip),
            "a certificate for another address must be refused"
        );
    }
}
