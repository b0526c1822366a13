//! TLS on a NATS link: rustls's `ClientConnection` in its sans-IO form, between the socket and
//! the link's plaintext buffers (`rx` in, `tx` out), and the client settings it verifies with.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::conn::buffer::{Buffer, Io, OutQueue, classify};

/// Socket reads in one `read` that give no plaintext (handshake records, a peer sending empty
/// records): bounds one call's work; `Progress(0)` tells the caller to read on.
const MAX_RECORD_READS: usize = 16;

/// Records rustls may hold encrypted and unsent: 64 KiB (its own default, set here so the bound
/// is ours) is four full records, enough to keep the socket busy. Plaintext moves from `tx` only
/// while there is room, so the rest of a burst waits in `tx`, under `max_outgoing`.
const TLS_BUFFER: usize = 64 * 1024;

/// The client settings: trust `ca` (from `ESUB_CLUSTER_CA`) alone when given, else the bundled
/// Mozilla roots (`webpki-roots`: built in, so trust is the same on every host and in a bare
/// container that has no system store); the `ring` provider; TLS 1.2 and 1.3; no client
/// certificate.
pub fn client_config(ca: Option<RootCertStore>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots =
        ca.unwrap_or_else(|| RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file, for `client_config`; `Err` says what is wrong with it.
pub fn load_roots(path: &str) -> Result<RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("bad PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("bad certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(roots)
}

/// A TLS error as the `io::Error` the link reports (`Reason::from` turns it into `Reason::Tls`).
pub fn error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

pub(super) struct Tls {
    conn: ClientConnection,
}

impl Tls {
    /// Starts a handshake with `host` (checked against the server's certificate); the
    /// ClientHello waits for the next `flush`.
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Tls, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host:?} is not a TLS server name"))?;
        let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(Tls { conn })
    }

    /// Whether records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Until the handshake is done, plaintext stays in the link's queue.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Queues a `close_notify` for the last `flush`.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Moves plaintext into `rx` (which may hold up to `cap` bytes): what rustls already
    /// decrypted first, else one or more socket reads until some arrives. Like a plain read:
    /// `Progress(n)` (0: nothing yet, call again), `WouldBlock` (the socket is empty, or `rx` is
    /// full), `Eof` (the server closed, cleanly or not), `Fatal` (a TLS error among them).
    pub fn read(&mut self, sock: &mut impl Read, rx: &mut Buffer, cap: usize) -> Io {
        for _ in 0..MAX_RECORD_READS {
            match rx.read_from(&mut self.conn.reader(), cap) {
                Io::WouldBlock if rx.len() < cap => {}
                Io::Fatal(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Io::Eof,
                done => return done,
            }
            match classify(self.conn.read_tls(sock)) {
                Io::Progress(_) | Io::Eof => {}
                blocked_or_dead => return blocked_or_dead,
            }
            if let Err(e) = self.conn.process_new_packets() {
                // The alert rustls queued goes out with the last flush, if it can.
                return Io::Fatal(error(e));
            }
        }
        Io::Progress(0)
    }

    /// Writes records to `sock` and moves plaintext from `tx` into rustls (not before the
    /// handshake is done, so `tx` holds it meanwhile) until both are empty or the socket is
    /// full (`Ok(true)`: wait for writable). `Err` when the link is dead.
    pub fn flush(&mut self, sock: &mut impl Write, tx: &mut OutQueue) -> Result<bool, Io> {
        loop {
            if self.conn.wants_write() {
                match classify(self.conn.write_tls(sock)) {
                    Io::Progress(_) => continue,
                    Io::WouldBlock => return Ok(true),
                    dead => return Err(dead),
                }
            }
            if tx.is_empty() || self.conn.is_handshaking() {
                return Ok(false);
            }
            match tx.write_to(&mut self.conn.writer()) {
                Io::Progress(_) => {}
                // Rustls took nothing: its records are at `TLS_BUFFER` (written out above, so
                // only a zero-length front could do this; stop rather than spin).
                Io::Eof | Io::WouldBlock if !self.conn.wants_write() => return Ok(false),
                Io::Eof | Io::WouldBlock => {}
                Io::Fatal(e) => return Err(Io::Fatal(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_come_from_a_pem_file_or_the_bundle() {
        let dir = std::env::temp_dir().join(format!("esub-tls-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = ca.self_signed(&key).unwrap();
        let (one, key_pem) = (cert.pem(), key.serialize_pem());
        let two = format!("{one}\n{one}");
        let rows: &[(&str, &[u8], Result<usize, &str>)] = &[
            ("one.pem", one.as_bytes(), Ok(1)),
            ("two.pem", two.as_bytes(), Ok(2)),
            ("empty.pem", b"", Err("no CERTIFICATE block")),
            ("key.pem", key_pem.as_bytes(), Err("no CERTIFICATE block")),
            (
                "junk.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                Err("bad certificate"),
            ),
        ];
        for (name, text, want) in rows {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let got = load_roots(path.to_str().unwrap()).map(|r| r.len());
            match (got, want) {
                (Ok(n), Ok(w)) => assert_eq!(n, *w, "{name}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
        assert!(load_roots(dir.join("missing.pem").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(client_config(None).is_ok());
        assert!(Tls::new(client_config(None).unwrap(), "a b").is_err());
        assert!(Tls::new(client_config(None).unwrap(), "::1").is_ok());
    }
}
