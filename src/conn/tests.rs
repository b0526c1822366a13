//! Unit tests of the connection state machine, driven over in-memory streams.
use super::*;
use crate::config::Config;
use std::collections::VecDeque;
use std::io;

/// Bytes in, in the given pieces (then `WouldBlock`); everything written is kept.
struct Mem {
    input: VecDeque<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(front) = self.input.front_mut() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = front.len().min(buf.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.drain(..n);
        if front.is_empty() {
            self.input.pop_front();
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds `pieces` one readiness event at a time, as the loop would; returns what was written.
fn run(pieces: &[&[u8]]) -> (String, bool) {
    let config = Config::from_lookup(|_| None).unwrap();
    let (mut ctx, _poll) = Ctx::standalone(config).unwrap();
    let id = ConnId { worker: 0, token: 0, generation: 1 };
    let mem = Mem { input: VecDeque::new(), output: Vec::new() };
    let mut conn = Conn::new(mem, id, &mut ctx);
    let mut closed = false;
    for piece in pieces {
        conn.stream.input.push_back(piece.to_vec());
        conn.can_read = true;
        if conn.drive(&mut ctx) == Next::Close {
            closed = true;
            break;
        }
    }
    (String::from_utf8_lossy(&conn.stream.output).into_owned(), closed)
}

#[test]
fn pipelined_requests_in_any_split_answer_in_order() {
    let wire = b"GET /ping HTTP/1.1\r\n\r\nPOST /rep/nobody HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /keys HTTP/1.1\r\n\r\n";
    for cut in 1..wire.len() {
        let (out, closed) = run(&[&wire[..cut], &wire[cut..]]);
        assert!(!closed, "cut {cut}");
        // Bodies end without a newline: find each status line by its prefix.
        let statuses: Vec<&str> =
            out.match_indices("HTTP/1.1 ").filter_map(|(i, _)| out[i..].lines().next()).collect();
        assert_eq!(
            statuses,
            ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 204 No Content"],
            "cut {cut}: {out}"
        );
    }
}

#[test]
fn garbage_gets_400_and_closes() {
    let (out, closed) = run(&[b"NOT HTTP AT ALL\r\n\r\n"]);
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(out.contains("Connection: close"));
    assert!(closed);
}
