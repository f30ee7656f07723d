//! TLS 1.3 with mutual authentication by key, not by certificate authority: every
//! connection's two sides present a self-signed certificate made from their long-lived
//! key ([`crate::identity`]). A certificate is accepted when it is self-consistent (its
//! own signature verifies with its own key) and the other side proves it holds that key
//! by signing the handshake (checked with the provider's algorithms; nothing here skips
//! a check). The other side's identity is then the [`Fingerprint`] of its key, checked
//! against the one expected where one is (a pinned index, the sharer of a search hit).
//! `net` runs the handshakes; this module only builds the configurations.

use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::identity::Identity;
use crate::protocol::Fingerprint;

/// The name every client asks for; certificates name no host, so it is not checked.
pub const SERVER_NAME: &str = "napster";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The fingerprint of the key in a certificate, when it parses.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Option<Fingerprint> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(Fingerprint::of_public_key(
        parsed.subject_public_key_info().as_ref(),
    ))
}

/// Refuse a certificate that is not self-signed by its own key, or out of its validity.
fn self_consistent(
    cert: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    algs: &WebPkiSupportedAlgorithms,
    usage: webpki::KeyUsage,
) -> Result<(), rustls::Error> {
    let refuse = |why: String| {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(Refusal(why)),
        )))
    };
    if !intermediates.is_empty() {
        return Err(refuse(
            "a napster presents its own certificate alone".into(),
        ));
    }
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| refuse(format!("the certificate does not parse: {e}")))?;
    let anchor = webpki::anchor_from_trusted_cert(cert)
        .map_err(|e| refuse(format!("the certificate does not parse: {e}")))?;
    parsed
        .verify_for_usage(algs.all, &[anchor], &[], now, usage, None, None)
        .map_err(|e| {
            refuse(format!(
                "the certificate is not signed by its own key ({e}); it is not a napster's"
            ))
        })?;
    Ok(())
}

/// Why a certificate was refused, worded for a person.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// A server's check of client certificates: any self-consistent key, proven.
#[derive(Debug)]
struct AnyKey {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self_consistent(
            end_entity,
            intermediates,
            now,
            &self.algs,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A client's check of the server: a self-consistent key, proven, and the expected
/// one when one is expected. Records the key seen, for messages and pinning.
#[derive(Debug)]
pub struct ServerKey {
    algs: WebPkiSupportedAlgorithms,
    expected: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
}

impl ServerKey {
    /// The key the server presented, once the handshake got that far.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock()
    }
}

impl ServerCertVerifier for ServerKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self_consistent(
            end_entity,
            intermediates,
            now,
            &self.algs,
            webpki::KeyUsage::server_auth(),
        )?;
        let fingerprint = fingerprint_of(end_entity).ok_or_else(|| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        *self.seen.lock() = Some(fingerprint);
        match self.expected {
            Some(expected) if expected != fingerprint => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(Refusal(format!(
                    "it proved key {fingerprint}, not the expected {expected}"
                ))))),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Presents one certificate, always.
#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesClientCert for Always {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Always {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The configuration of a server presenting `identity` and requiring a client key.
pub fn server_config(identity: &Identity) -> Arc<ServerConfig> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider speaks TLS 1.3")
        .with_client_cert_verifier(Arc::new(AnyKey { algs }))
        .with_cert_resolver(Arc::new(Always(identity.certified_key())));
    // The index never speaks first on a peer session; tickets would be speaking first.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Arc::new(config)
}

/// The configuration of a client presenting `identity` to a server that must prove
/// `expected` (any key when `None`), and the check that records what it proved.
pub fn client_config(
    identity: &Identity,
    expected: Option<Fingerprint>,
) -> (Arc<ClientConfig>, Arc<ServerKey>) {
    let provider = provider();
    let check = Arc::new(ServerKey {
        algs: provider.signature_verification_algorithms,
        expected,
        seen: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider speaks TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(check.clone())
        .with_client_cert_resolver(Arc::new(Always(identity.certified_key())));
    config.resumption = Resumption::disabled();
    (Arc::new(config), check)
}
