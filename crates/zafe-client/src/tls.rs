//! TLS for the client: the usual certificate checks, plus, once the server
//! has proven its identity on a connection, a pin on that connection's TLS
//! key.
//!
//! Why the pin: the identity proof is checked on one connection, but tokens
//! travel on later ones. Without the pin, any certificate the trust store
//! accepts (a corporate interception CA, a mis-issued certificate) would do
//! for those later connections, and the proof would have protected nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::Resumption;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// The process-wide rustls provider: ring, unless someone installed one.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: either is usable.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The CA certificates in `ca_cert` if given (as `VAULT_CACERT` does, they
/// replace the defaults rather than add to them), else the Mozilla roots.
pub(crate) fn root_store(ca_cert: Option<&Path>) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_cert else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(Arc::new(roots));
    };
    let fail = |reason: String| Error::CaCert {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate file: {e}")))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable certificate in it".into()));
    }
    Ok(Arc::new(roots))
}

/// SHA-256 of the SubjectPublicKeyInfo of a DER certificate, as the server
/// signs it in its identity proof.
pub(crate) fn spki_hash(cert_der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(zafe_core::identity::spki_sha256(
        cert.tbs_certificate.subject_pki.raw,
    ))
}

/// Builds the rustls configuration for one of the client's two HTTP
/// clients. With `pinned_spki`, a certificate is accepted only if it passes
/// the normal checks *and* carries that key; `rejected` records a pin
/// failure so the caller can explain it instead of a bare TLS error.
pub(crate) fn client_config(
    roots: Arc<RootCertStore>,
    pinned_spki: Option<[u8; 32]>,
    rejected: Arc<AtomicBool>,
) -> Result<rustls::ClientConfig> {
    let provider = crypto_provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("TLS verifier: {e}")))?;
    let verifier = PinnedVerifier {
        inner,
        pinned_spki,
        rejected,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // A resumed session skips certificate verification, and the pin with it.
    // Connections are few and long-lived, so full handshakes cost little.
    config.resumption = Resumption::disabled();
    // reqwest leaves ALPN to a preconfigured config.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned_spki: Option<[u8; 32]>,
    rejected: Arc<AtomicBool>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some(pinned) = &self.pinned_spki {
            let seen = spki_hash(end_entity).ok_or(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ))?;
            // Both hashes are public; no need for a constant-time compare.
            if &seen != pinned {
                self.rejected.store(true, Ordering::Relaxed);
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> rcgen::CertifiedKey {
        rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap()
    }

    fn verifier(
        ca: &rcgen::CertifiedKey,
        pinned_spki: Option<[u8; 32]>,
    ) -> (PinnedVerifier, Arc<AtomicBool>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let roots = root_store(Some(&path)).unwrap();
        let rejected = Arc::new(AtomicBool::new(false));
        let inner = WebPkiServerVerifier::builder_with_provider(roots, crypto_provider())
            .build()
            .unwrap();
        let v = PinnedVerifier {
            inner,
            pinned_spki,
            rejected: rejected.clone(),
        };
        (v, rejected)
    }

    fn verify(
        v: &PinnedVerifier,
        cert: &rcgen::CertifiedKey,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from("zafe.test").unwrap();
        v.verify_server_cert(cert.cert.der(), &[], &name, &[], UnixTime::now())
    }

    // The hash is over the SubjectPublicKeyInfo, the same bytes the server
    // signs in its identity proof.
    #[test]
    fn the_spki_hash_is_the_hash_of_the_public_key_info() {
        let cert = self_signed("zafe.test");
        let expected = zafe_core::identity::spki_sha256(&cert.key_pair.public_key_der());
        assert_eq!(spki_hash(cert.cert.der()), Some(expected));
        assert_eq!(spki_hash(b"not a certificate"), None);
    }

    // R-ID-3: after verification, only the verified TLS key is accepted,
    // even from a certificate the trust store accepts.
    #[test]
    fn the_verifier_accepts_only_the_pinned_key() {
        let cert = self_signed("zafe.test");
        let pinned = spki_hash(cert.cert.der());

        let (unpinned, _) = verifier(&cert, None);
        assert!(verify(&unpinned, &cert).is_ok());

        let (v, rejected) = verifier(&cert, pinned);
        assert!(verify(&v, &cert).is_ok());
        assert!(!rejected.load(Ordering::Relaxed));

        let (v, rejected) = verifier(&cert, Some([0; 32]));
        assert!(verify(&v, &cert).is_err());
        assert!(rejected.load(Ordering::Relaxed));

        // The pin does not replace normal verification: an untrusted
        // certificate is refused whatever its key.
        let stranger = self_signed("zafe.test");
        let (v, rejected) = verifier(&cert, spki_hash(stranger.cert.der()));
        assert!(verify(&v, &stranger).is_err());
        assert!(!rejected.load(Ordering::Relaxed));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "nothing here\n").unwrap();
        assert!(matches!(root_store(Some(&path)), Err(Error::CaCert { .. })));
        assert!(matches!(
            root_store(Some(&dir.path().join("missing.pem"))),
            Err(Error::CaCert { .. })
        ));
        assert!(!root_store(None).unwrap().is_empty());
    }
}
